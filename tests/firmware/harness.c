/*
 * Host harness for firmware_bridge/firmware/garden_node/gc_frame.c.
 *
 * tests/firmware/test_c_framing.py builds this with gc_frame.c and drives it
 * over stdin/stdout, one mode per run:
 *
 *   harness crc        each input line is hex bytes; prints their CRC as 4 hex digits
 *   harness format     each input line is one of
 *                        m <int32 thousandths>     gc_format_milli
 *                        f <C99 hex float>         gc_milli_from_double, then format
 *                        r <num> <den>             gc_milli_from_ratio, then format
 *                      and prints the text, or !<status>
 *   harness encode     each input line is a frame spec; prints the framed line as
 *                      sent (ending \r\n), or !<status> on a refusal:
 *                        D <node> <seq> [key=i:<int> | key=m:<milli> | key=f:<hexfloat>
 *                                        | key=na | key=na:<code>] ...
 *                        R <node> <seq> ...   the same as a replay (GR)
 *                        H <node> <seq> <fw> <s1;s2;...> <interval_s> [key=<text>] ...
 *                        A <node> <seq> OK  |  A <node> <seq> ERR <reason>
 *                      "~" stands for an empty string (node, fw, sensors, code, reason).
 *   harness decode     raw bytes on stdin are one stream, fed a byte at a time
 *                      to the receiver; prints one line per event (see below)
 *   harness streams    each input line is hex bytes of an independent stream;
 *                      prints its events, then "end"
 *   harness node <id> <interval_s> [<key;key;...>]
 *                      garden_node.ino's logic, one event per input line; prints
 *                      what the node sends, then "#interval <n>" at the end:
 *                        R <hex>   bytes from the host, fed to the receiver: an ack
 *                                  for each command to this node; a GK for this node
 *                                  drops the kept readings up to its seq
 *                        D <value> ...  a reading, one value per key (i:<int> |
 *                                  m:<milli> | f:<hexfloat> | na | na:<code>): sent as GD
 *                                  with the next seq, and kept (or "!<status>")
 *                        P         the host came back: every kept reading as GR
 *                        S         the host came back: start the replay, send nothing
 *                        N         the next GR of the replay under way, or "#none"
 *                        B         a reboot: seq back to 0, nothing kept
 *                        K         "#kept <seq> <seq> ...", oldest first
 *                      The keys default to the sketch's sm0;st0;at0;rh0;lx0;tk0;bt0.
 *
 * Events: a reject reason ("noise", "truncated", "crc_mismatch", "bad_seq", ...),
 * "other\t<type>" for a good GD/GR/GH/GA line, "stored\t<node>\t<seq>" for a GK,
 * or for a command
 *   cmd\t<node>\t<seq>\t<verb>\t<n_args>\t<-|=interval text>\t<ok:<n>|err:<reason>>
 * where the last field is what a node would answer (gc_command_interval).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc_frame.h"

#define MAX_INPUT (1L << 20)
#define MAX_TOKENS 512

static char input[MAX_INPUT];
static unsigned char bytes[MAX_INPUT / 2 + 1];

/* One line of stdin into input, without its '\n'; -1 at end of input. */
static long read_line(void)
{
    long n = 0;
    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 1 >= MAX_INPUT) {
            fprintf(stderr, "harness: input line too long\n");
            exit(2);
        }
        input[n++] = (char)c;
    }
    if (c == EOF && n == 0) return -1;
    input[n] = '\0';
    return n;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    fprintf(stderr, "harness: bad hex digit %c\n", c);
    exit(2);
}

static size_t unhex(const char *text, long len)
{
    long i;
    if (len % 2) {
        fprintf(stderr, "harness: odd hex length\n");
        exit(2);
    }
    for (i = 0; i < len; i += 2) {
        bytes[i / 2] = (unsigned char)(hex_digit(text[i]) * 16 + hex_digit(text[i + 1]));
    }
    return (size_t)(len / 2);
}

/* Split input on single spaces, in place. */
static int tokenize(char *line, char **tok)
{
    int n = 0;
    char *p = line;
    while (*p && n < MAX_TOKENS) {
        tok[n++] = p;
        while (*p && *p != ' ') p++;
        if (*p) *p++ = '\0';
    }
    return n;
}

static const char *arg(const char *tok)
{
    return strcmp(tok, "~") == 0 ? "" : tok;
}

static void fail_usage(const char *what)
{
    fprintf(stderr, "harness: bad spec: %s\n", what);
    exit(2);
}

/* ------------------------------------------------------------------- modes */

static int mode_crc(void)
{
    long n;
    while ((n = read_line()) >= 0) {
        size_t len = unhex(input, n);
        printf("%04X\n", (unsigned)gc_crc16(bytes, len));
    }
    return 0;
}

static int mode_format(void)
{
    char out[GC_NUMBER_MAX];
    char *tok[MAX_TOKENS];
    while (read_line() >= 0) {
        int n = tokenize(input, tok);
        int32_t milli = 0;
        gc_status status = GC_OK;
        if (n == 2 && strcmp(tok[0], "m") == 0) {
            milli = (int32_t)strtol(tok[1], NULL, 10);
        } else if (n == 2 && strcmp(tok[0], "f") == 0) {
            status = gc_milli_from_double(strtod(tok[1], NULL), &milli);
        } else if (n == 3 && strcmp(tok[0], "r") == 0) {
            status = gc_milli_from_ratio((int32_t)strtol(tok[1], NULL, 10),
                                         (int32_t)strtol(tok[2], NULL, 10), &milli);
        } else {
            fail_usage(tok[0]);
        }
        if (status != GC_OK) {
            printf("!%s\n", gc_status_name(status));
        } else if (gc_format_milli(out, sizeof out, milli) == 0) {
            printf("!cap\n");
        } else {
            printf("%s\n", out);
        }
    }
    return 0;
}

static gc_status encode_data(char **tok, int n, gc_line *line, gc_kind kind)
{
    int i;
    gc_status status = gc_begin(line, kind, arg(tok[1]), (uint32_t)strtoul(tok[2], NULL, 10));
    for (i = 3; i < n; i++) {
        char *key = tok[i];
        char *value = strchr(key, '=');
        if (value == NULL) fail_usage(key);
        *value++ = '\0';
        if (strncmp(value, "i:", 2) == 0) {
            status = gc_append_int(line, key, (int32_t)strtol(value + 2, NULL, 10));
        } else if (strncmp(value, "m:", 2) == 0) {
            status = gc_append_milli(line, key, (int32_t)strtol(value + 2, NULL, 10));
        } else if (strncmp(value, "f:", 2) == 0) {
            status = gc_append_double(line, key, strtod(value + 2, NULL));
        } else if (strcmp(value, "na") == 0) {
            status = gc_append_na(line, key, NULL);
        } else if (strncmp(value, "na:", 3) == 0) {
            status = gc_append_na(line, key, arg(value + 3));
        } else {
            fail_usage(value);
        }
    }
    (void)status; /* sticky: gc_finish reports the first error */
    return gc_finish(line);
}

static gc_status encode_hello(char **tok, int n, gc_line *line)
{
    const char *sensors[64];
    uint8_t n_sensors = 0;
    char *p;
    int i;
    if (n < 6) fail_usage("hello needs node seq fw sensors interval");
    gc_begin(line, GC_HELLO, arg(tok[1]), (uint32_t)strtoul(tok[2], NULL, 10));
    p = tok[4];
    if (strcmp(p, "~") != 0) {
        for (;;) {
            char *semi = strchr(p, ';');
            if (n_sensors == 64) fail_usage("too many sensors");
            sensors[n_sensors++] = p;
            if (semi == NULL) break;
            *semi = '\0';
            p = semi + 1;
        }
    }
    gc_append_hello(line, arg(tok[3]), sensors, n_sensors, (uint32_t)strtoul(tok[5], NULL, 10));
    for (i = 6; i < n; i++) {
        char *value = strchr(tok[i], '=');
        if (value == NULL) fail_usage(tok[i]);
        *value++ = '\0';
        gc_append_text(line, tok[i], value);
    }
    return gc_finish(line);
}

static int mode_encode(void)
{
    char *tok[MAX_TOKENS];
    static gc_line line;
    while (read_line() >= 0) {
        int n = tokenize(input, tok);
        gc_status status;
        if (n < 3) fail_usage("too few tokens");
        if (strcmp(tok[0], "D") == 0) {
            status = encode_data(tok, n, &line, GC_DATA);
        } else if (strcmp(tok[0], "R") == 0) {
            status = encode_data(tok, n, &line, GC_REPLAY);
        } else if (strcmp(tok[0], "H") == 0) {
            status = encode_hello(tok, n, &line);
        } else if (strcmp(tok[0], "A") == 0 && n == 4 && strcmp(tok[3], "OK") == 0) {
            status = gc_build_ack(&line, arg(tok[1]), (uint32_t)strtoul(tok[2], NULL, 10), NULL);
        } else if (strcmp(tok[0], "A") == 0 && n == 5 && strcmp(tok[3], "ERR") == 0) {
            status = gc_build_ack(&line, arg(tok[1]), (uint32_t)strtoul(tok[2], NULL, 10),
                                  arg(tok[4]));
        } else {
            fail_usage(tok[0]);
            return 2;
        }
        if (status == GC_OK) {
            fwrite(line.buf, 1, line.len, stdout);
        } else {
            printf("!%s\n", gc_status_name(status));
        }
    }
    return 0;
}

static void describe(gc_rx *rx, gc_rx_event event)
{
    gc_command cmd;
    gc_cmd_status status;
    const char *body;
    const char *reason;
    uint32_t interval = 0;
    if (event == GC_RX_NONE) return;
    if (event != GC_RX_LINE) {
        printf("%s\n", gc_rx_event_name(event));
        return;
    }
    body = gc_rx_body(rx);
    status = gc_parse_command(body, rx->body_len, &cmd);
    if (status == GC_CMD_NOT_COMMAND) {
        printf("other\t%.2s\n", body);
        return;
    }
    if (status == GC_CMD_STORED) {
        printf("stored\t%s\t%lu\n", cmd.node_id, (unsigned long)cmd.seq);
        return;
    }
    if (status != GC_CMD_OK) {
        printf("%s\n", gc_cmd_status_name(status));
        return;
    }
    printf("cmd\t%s\t%lu\t%s\t%u\t", cmd.node_id, (unsigned long)cmd.seq, cmd.verb,
           (unsigned)cmd.n_args);
    if (cmd.interval_text == NULL) {
        printf("-\t");
    } else {
        printf("=%.*s\t", (int)cmd.interval_len, cmd.interval_text);
    }
    reason = gc_command_interval(&cmd, &interval);
    if (reason == NULL) {
        printf("ok:%lu\n", (unsigned long)interval);
    } else {
        printf("err:%s\n", reason);
    }
}

static int mode_decode(void)
{
    static gc_rx rx;
    int c;
    gc_rx_init(&rx);
    while ((c = getchar()) != EOF) describe(&rx, gc_rx_feed(&rx, (uint8_t)c));
    describe(&rx, gc_rx_flush(&rx));
    return 0;
}

static int mode_streams(void)
{
    static gc_rx rx;
    long n;
    while ((n = read_line()) >= 0) {
        size_t len = unhex(input, n), i;
        gc_rx_init(&rx);
        for (i = 0; i < len; i++) describe(&rx, gc_rx_feed(&rx, bytes[i]));
        describe(&rx, gc_rx_flush(&rx));
        printf("end\n");
    }
    return 0;
}

/* ------------------------------------------------------------- node mode */

static gc_rx node_rx;
static gc_line node_tx;
static gc_store node_store;
static const char *node_id;
static uint32_t node_interval_s;
static uint32_t node_seq;

static void send(const gc_line *line)
{
    fwrite(line->buf, 1, line->len, stdout);
}

/* Failure codes live as long as the store keeps pointers to them: intern them. */
static const char *intern_code(const char *code)
{
    static char pool[64][GC_CODE_MAX + 2];
    static int used;
    int i;
    if (strlen(code) > GC_CODE_MAX) fail_usage(code);
    for (i = 0; i < used; i++) {
        if (strcmp(pool[i], code) == 0) return pool[i];
    }
    if (used == 64) fail_usage("too many failure codes");
    strcpy(pool[used], code);
    return pool[used++];
}

/* garden_node.ino's handle_line. */
static void node_line(void)
{
    gc_command cmd;
    const char *reason;
    uint32_t wanted = 0;
    gc_cmd_status status = gc_parse_command(gc_rx_body(&node_rx), node_rx.body_len, &cmd);
    if (status == GC_CMD_STORED) {
        if (strcmp(cmd.node_id, node_id) == 0) gc_store_stored(&node_store, cmd.seq);
        return;
    }
    if (status != GC_CMD_OK || strcmp(cmd.node_id, node_id) != 0) return;
    reason = gc_command_interval(&cmd, &wanted);
    if (reason == NULL) node_interval_s = wanted;
    if (gc_build_ack(&node_tx, node_id, cmd.seq, reason) == GC_OK) {
        send(&node_tx);
    } else {
        printf("!ack\n");
    }
}

/* garden_node.ino's send_data, with the values from the tokens (set_value's rules). */
static void node_reading(char **tok, int n)
{
    gc_value values[GC_READING_VALUES];
    gc_status status;
    int i;
    if (n - 1 != node_store.n_keys) fail_usage("one value per key");
    for (i = 1; i < n; i++) {
        gc_value *v = &values[i - 1];
        const char *text = tok[i];
        v->milli = 0;
        v->fail = NULL;
        if (strncmp(text, "i:", 2) == 0) {
            status = gc_milli_from_ratio((int32_t)strtol(text + 2, NULL, 10), 1, &v->milli);
        } else if (strncmp(text, "m:", 2) == 0) {
            status = GC_OK;
            v->milli = (int32_t)strtol(text + 2, NULL, 10);
        } else if (strncmp(text, "f:", 2) == 0) {
            status = gc_milli_from_double(strtod(text + 2, NULL), &v->milli);
        } else if (strcmp(text, "na") == 0) {
            status = GC_OK;
            v->fail = "unknown";
        } else if (strncmp(text, "na:", 3) == 0) {
            status = GC_OK;
            v->fail = intern_code(text + 3);
        } else {
            fail_usage(text);
            return;
        }
        if (status != GC_OK) v->fail = "range"; /* never a number it cannot carry */
    }
    node_seq++;
    status = gc_store_send(&node_store, &node_tx, node_seq, values);
    if (status == GC_OK) {
        send(&node_tx);
    } else {
        printf("!%s\n", gc_status_name(status));
    }
}

static int mode_node(const char *id, uint32_t interval_s, char *keys_text)
{
    static const char *keys[GC_READING_VALUES];
    char *tok[MAX_TOKENS];
    uint8_t n_keys = 0;
    long len;
    node_id = id;
    node_interval_s = interval_s;
    for (;;) {
        char *semi = strchr(keys_text, ';');
        if (n_keys == GC_READING_VALUES) fail_usage("too many keys");
        keys[n_keys++] = keys_text;
        if (semi == NULL) break;
        *semi = '\0';
        keys_text = semi + 1;
    }
    gc_rx_init(&node_rx);
    if (gc_store_init(&node_store, node_id, keys, n_keys) != GC_OK) fail_usage("store keys");
    while ((len = read_line()) >= 0) {
        int n = tokenize(input, tok);
        uint8_t i;
        if (n == 0) fail_usage("empty line");
        if (strcmp(tok[0], "R") == 0 && n == 2) {
            size_t count = unhex(tok[1], (long)strlen(tok[1])), k;
            for (k = 0; k < count; k++) {
                if (gc_rx_feed(&node_rx, bytes[k]) == GC_RX_LINE) node_line();
            }
        } else if (strcmp(tok[0], "D") == 0) {
            node_reading(tok, n);
        } else if (strcmp(tok[0], "P") == 0) {
            gc_store_replay_start(&node_store);
            while (gc_store_replay_next(&node_store, &node_tx) == GC_OK) send(&node_tx);
        } else if (strcmp(tok[0], "S") == 0) {
            gc_store_replay_start(&node_store);
        } else if (strcmp(tok[0], "N") == 0) {
            if (gc_store_replay_next(&node_store, &node_tx) == GC_OK) {
                send(&node_tx);
            } else {
                printf("#none\n");
            }
        } else if (strcmp(tok[0], "B") == 0) {
            node_seq = 0;
            gc_store_clear(&node_store);
        } else if (strcmp(tok[0], "K") == 0) {
            printf("#kept");
            for (i = 0; i < gc_store_count(&node_store); i++) {
                printf(" %lu", (unsigned long)gc_store_seq(&node_store, i));
            }
            printf("\n");
        } else {
            fail_usage(tok[0]);
        }
    }
    printf("#interval %lu\n", (unsigned long)node_interval_s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "crc") == 0) return mode_crc();
    if (argc == 2 && strcmp(argv[1], "format") == 0) return mode_format();
    if (argc == 2 && strcmp(argv[1], "encode") == 0) return mode_encode();
    if (argc == 2 && strcmp(argv[1], "decode") == 0) return mode_decode();
    if (argc == 2 && strcmp(argv[1], "streams") == 0) return mode_streams();
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "node") == 0) {
        static char sketch_keys[] = "sm0;st0;at0;rh0;lx0;tk0;bt0";
        return mode_node(argv[2], (uint32_t)strtoul(argv[3], NULL, 10),
                         argc == 5 ? argv[4] : sketch_keys);
    }
    fprintf(stderr, "usage: harness crc|format|encode|decode|streams"
                    "|node <id> <interval_s> [<key;key;...>]\n");
    return 2;
}
