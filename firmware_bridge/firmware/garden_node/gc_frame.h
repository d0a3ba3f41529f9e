/*
 * gc_frame: the Garden Commons node line protocol, node side, in plain C99.
 *
 * The source of truth for the wire format is firmware_bridge/line_protocol.py;
 * tests/firmware/test_c_framing.py checks this code against it byte for byte.
 *
 * A line is  $<body>*<CRC16>\r\n  where the CRC is CRC-16/CCITT-FALSE (poly
 * 0x1021, init 0xFFFF, no reflection, no final xor) over the body bytes,
 * written as four upper-case hex digits. A line is at most GC_MAX_LINE bytes,
 * '$' to '\n' included.
 *
 *   $GD,1,<node>,<seq>,sm0=412,st0=14.5,...       data      (node -> host)
 *   $GR,1,<node>,<seq>,sm0=412,st0=14.5,...       replay    (node -> host): a GD sent again
 *   $GH,1,<node>,<seq>,fw=..,sensors=a;b,interval_s=N  hello (node -> host)
 *   $GC,<node>,<seq>,SET,interval_s=600           command   (host -> node)
 *   $GA,<node>,<seq>,OK  |  $GA,<node>,<seq>,ERR,<reason>   ack (node -> host)
 *   $GK,<node>,<seq>                              stored    (host -> node): readings
 *                                                 up to <seq> are safe; forget them
 *
 * No malloc, no stdio, no Arduino headers: the same file builds into the
 * sketch and into the host test harness. Integers are sized explicitly, so
 * the code is correct with a 16-bit int (AVR) as with a 32-bit one.
 */
#ifndef GC_FRAME_H
#define GC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GC_PROTO_VERSION 1
#define GC_MAX_LINE 256     /* bytes, '$' to '\n' included */
#define GC_TRAILER_LEN 7    /* "*XXXX\r\n" */
#define GC_BODY_MAX (GC_MAX_LINE - 1 - GC_TRAILER_LEN) /* 248: what fits between '$' and '*' */
#define GC_NODE_ID_MAX 32   /* [A-Za-z0-9_-]{1,32} */
#define GC_KEY_MAX 16       /* [a-z][a-z0-9_]{0,15} */
#define GC_CODE_MAX 12      /* na:<code>, [a-z][a-z0-9_]{0,11} */
#define GC_REASON_MAX 32    /* ack ERR reason, [a-z][a-z0-9_]{0,31} */
#define GC_VERB_MAX 8       /* command verb, [A-Z]{2,8} */
#define GC_NUMBER_MAX 13    /* "-2147483.648" and its NUL */
#define GC_INTERVAL_MIN 1UL
#define GC_INTERVAL_MAX 86400UL

/* ------------------------------------------------------------------ CRC */

/* CRC-16/CCITT-FALSE. Check value: gc_crc16("123456789", 9) == 0x29B1. */
uint16_t gc_crc16(const uint8_t *data, size_t len);
uint16_t gc_crc16_update(uint16_t crc, uint8_t byte); /* start from 0xFFFF */

/* -------------------------------------------------------------- numbers */

/*
 * Numbers travel as text with no exponent: integers bare, anything else with
 * up to three decimals and the trailing zeros stripped. Python's
 * format_number(v) is the reference.
 *
 * The formatter works from a long integer of thousandths ("milli"), so it
 * never depends on a libc's float printf (AVR's has none by default, and
 * dtostrf rounds its own way): gc_format_milli(m) prints exactly what
 * format_number(m / 1000) prints, for every int32_t m.
 *
 * ROUNDING RULE. A value with more than three decimals is rounded to
 * thousandths HALF TO EVEN, applied to the exact value. Python's
 * f"{v:.3f}" does the same to the exact binary value of a double, so
 * gc_milli_from_double(v) then gc_format_milli() prints what format_number(v)
 * prints, for every finite double whose thousandths fit in an int32_t. This
 * is not a detail: a DS18B20 reads in 1/16 degC steps, and 14.0625 is an
 * exact tie that format_number prints as "14.062" (round half up would give
 * "14.063").
 *
 * gc_milli_from_ratio(num, den) rounds the exact quotient num/den the same
 * way; that equals format_number(num / den) whenever num/den is exact in
 * binary (den a power of two) or is not a tie; for a tie with another den,
 * Python rounds the nearest double instead of the exact quotient.
 */
typedef enum {
    GC_OK = 0,
    GC_ERR_ARG,       /* a node id, key, code, reason or text breaks its rule */
    GC_ERR_RANGE,     /* a number the protocol (or an int32_t of thousandths) cannot carry */
    GC_ERR_FULL,      /* the line would pass GC_MAX_LINE bytes */
    GC_ERR_DUPLICATE, /* this key is already in the frame */
    GC_ERR_STATE      /* append before gc_begin, or after gc_finish */
} gc_status;

const char *gc_status_name(gc_status status); /* "ok", "arg", "range", "full", ... */

/* Print thousandths; returns the length (no NUL counted), or 0 if cap is too small. */
size_t gc_format_milli(char *out, size_t cap, int32_t milli);
/* Print an integer; returns the length, or 0 if cap is too small. */
size_t gc_format_int(char *out, size_t cap, int32_t value);

/* A finite double to thousandths, half to even. GC_ERR_RANGE if not finite or too big. */
gc_status gc_milli_from_double(double value, int32_t *milli);
/* num/den to thousandths, half to even. GC_ERR_RANGE if den is 0 or the result is too big. */
gc_status gc_milli_from_ratio(int32_t num, int32_t den, int32_t *milli);

/* --------------------------------------------------------- line builder */

typedef enum { GC_DATA, GC_HELLO, GC_REPLAY } gc_kind; /* GD, GH, GR */

/*
 * One outgoing line. Errors are sticky: after the first failed append every
 * later call returns that error and gc_finish refuses the line, so a caller
 * may chain appends and check once. A line that would pass GC_MAX_LINE is
 * refused whole (GC_ERR_FULL), never cut.
 */
typedef struct {
    char buf[GC_MAX_LINE + 1]; /* the line, NUL-terminated after gc_finish */
    uint16_t len;              /* bytes in buf */
    uint8_t status;            /* gc_status: first error, sticky */
    uint8_t open;              /* 1 between gc_begin and gc_finish */
} gc_line;

/* "$GD,1,<node>,<seq>", "$GH,1,<node>,<seq>" or "$GR,1,<node>,<seq>". */
gc_status gc_begin(gc_line *line, gc_kind kind, const char *node_id, uint32_t seq);
gc_status gc_append_int(gc_line *line, const char *key, int32_t value);
gc_status gc_append_milli(gc_line *line, const char *key, int32_t milli);
gc_status gc_append_double(gc_line *line, const char *key, double value);
/* key=na, or key=na:<code>. A NULL code, or "unknown", is sent as bare "na". */
gc_status gc_append_na(gc_line *line, const char *key, const char *code);
/* key=<text>: printable ASCII without ',', '$' or '*', not empty (hello fields). */
gc_status gc_append_text(gc_line *line, const char *key, const char *text);
/* The hello's three fields: fw=<fw>,sensors=<k1;k2;...>,interval_s=<n>. */
gc_status gc_append_hello(gc_line *line, const char *fw, const char *const *sensors,
                          uint8_t n_sensors, uint32_t interval_s);
/* Append "*XXXX\r\n". On GC_OK, line->buf holds line->len bytes to send. */
gc_status gc_finish(gc_line *line);

/* A whole ack: "$GA,<node>,<seq>,OK" when reason is NULL, else ",ERR,<reason>". */
gc_status gc_build_ack(gc_line *line, const char *node_id, uint32_t seq, const char *reason);

/* -------------------------------------------------------- line receiver */

/*
 * What feeding one byte produced. Exactly what the Python FrameDecoder yields
 * for the same stream, however it is chunked: GC_RX_LINE for a line that
 * passed the framing and CRC checks (parse it with gc_parse_command, which
 * gives the rest of the verdict), the others are its RejectReasons. One byte
 * yields at most one event.
 */
typedef enum {
    GC_RX_NONE = 0,     /* nothing complete yet */
    GC_RX_LINE,         /* a whole line with a good CRC: gc_rx_body() */
    GC_RX_NOISE,        /* a line of bytes outside any frame, not all white space */
    GC_RX_TOO_LONG,     /* no line end within GC_MAX_LINE bytes */
    GC_RX_TRUNCATED,    /* a '$' (or the end of the stream) came before the line end */
    GC_RX_NOT_ASCII,    /* a byte outside 0x20..0x7E in the body */
    GC_RX_NO_CHECKSUM,  /* no "*XXXX" right before the line end */
    GC_RX_CRC_MISMATCH
} gc_rx_event;

typedef struct {
    char buf[GC_MAX_LINE + 1]; /* the line so far, from '$' */
    uint16_t len;              /* bytes kept in buf (at most GC_MAX_LINE) */
    uint16_t body_len;         /* after GC_RX_LINE: body length */
    uint8_t in_frame;          /* a '$' was seen and its line has not ended */
    uint8_t overflow;          /* this line passed GC_MAX_LINE: drop to its end */
    uint8_t noise;             /* outside a frame: this line held visible bytes */
} gc_rx;

void gc_rx_init(gc_rx *rx);
gc_rx_event gc_rx_feed(gc_rx *rx, uint8_t byte);
/* End of stream (port closed, or a host test's input ended). */
gc_rx_event gc_rx_flush(gc_rx *rx);
/* After GC_RX_LINE: the NUL-terminated body, valid until the next gc_rx_feed. */
const char *gc_rx_body(const gc_rx *rx);
/* "noise", "too_long", ... as in Python's RejectReason; "line"; "none". */
const char *gc_rx_event_name(gc_rx_event event);

/* ------------------------------------------------------ command parsing */

typedef enum {
    GC_CMD_OK = 0,        /* a good GC line: a command */
    GC_CMD_STORED,        /* a good GK line: cmd->node_id and cmd->seq are set, no verb, no args */
    GC_CMD_NOT_COMMAND,   /* a GD, GR, GH or GA line: not for a node (not checked further) */
    GC_CMD_UNKNOWN_TYPE,
    GC_CMD_BAD_FIELD,
    GC_CMD_BAD_NODE_ID,
    GC_CMD_BAD_SEQ,
    GC_CMD_DUPLICATE_KEY
} gc_cmd_status;

typedef struct {
    char node_id[GC_NODE_ID_MAX + 1];
    uint32_t seq;
    char verb[GC_VERB_MAX + 1];
    uint8_t n_args;              /* key=value pairs after the verb */
    const char *interval_text;   /* the interval_s value, in the body; NULL if absent */
    uint8_t interval_len;        /* its length (not NUL-terminated in place) */
} gc_command;

/*
 * Parse a body as Python's parse_body does. A GC line gives GC_CMD_OK, a GK
 * line GC_CMD_STORED (GK takes exactly a node and a seq: any other field count
 * is bad_field, then the node and the seq are checked, in that order); cmd is
 * filled only for those two. A caller that only looks for GC_CMD_OK ignores
 * GK, as a node without store and forward should.
 */
gc_cmd_status gc_parse_command(const char *body, size_t len, gc_command *cmd);
const char *gc_cmd_status_name(gc_cmd_status status); /* "ok", "bad_field", ... */

/*
 * What a node does with a command addressed to it (the simulator's rules):
 * SET with exactly one argument, interval_s, all digits, in
 * GC_INTERVAL_MIN..GC_INTERVAL_MAX -> returns NULL and sets *interval_s (ack
 * OK); any other verb or set of arguments -> "unknown_command"; a bad number
 * -> "bad_value". The returned reason goes into gc_build_ack.
 */
const char *gc_command_interval(const gc_command *cmd, uint32_t *interval_s);

/* ---------------------------------------------------- store and forward */

/*
 * A reading is not safe until the host has stored it, so the node keeps each
 * one it sends until a GK for it arrives, and sends what is still kept again,
 * oldest first, as GR lines when the host comes back (docs/protocol.md, "Store
 * and forward"). A reboot empties the store; when it is full, the oldest goes.
 *
 * Compact form. A kept reading is its seq and its values (thousandths, or a
 * pointer to a failure code), not the line's text: for the sketch's seven
 * values that is 33 bytes on an AVR against about 95 for the line, so eight
 * take 264 bytes of an ATmega328P's 2048 where eight lines would take over
 * 750 (and a slot that fits any line, 2 KB). The GR line is rebuilt from the
 * values by the code that built the GD line, so it carries the same text.
 *
 * GC_UNSTORED_MAX readings are kept: 8 on an AVR, 64 elsewhere (an ESP32 has
 * RAM to spare). GC_READING_VALUES is the most values a reading has: the
 * sketch's seven sensors. Change either with a compiler flag (-D), never with
 * a #define in the sketch: gc_frame.c must see the same values.
 */
#ifndef GC_UNSTORED_MAX
#if defined(__AVR__)
#define GC_UNSTORED_MAX 8
#else
#define GC_UNSTORED_MAX 64
#endif
#endif
#ifndef GC_READING_VALUES
#define GC_READING_VALUES 7
#endif
#if GC_UNSTORED_MAX < 1 || GC_UNSTORED_MAX > 255
#error "GC_UNSTORED_MAX must be 1..255"
#endif
#if GC_READING_VALUES < 1 || GC_READING_VALUES > 16
#error "GC_READING_VALUES must be 1..16"
#endif

/* One value of a reading. */
typedef struct {
    int32_t milli;    /* the value in thousandths, when fail is NULL */
    const char *fail; /* else the failure code: sent as na:<fail>, "unknown" as bare na.
                         The store keeps the pointer: use a string literal. */
} gc_value;

/* A whole GD (kind GC_DATA) or GR (GC_REPLAY) line: key i = value i, in order. */
gc_status gc_build_reading(gc_line *line, gc_kind kind, const char *node_id, uint32_t seq,
                           const char *const *keys, const gc_value *values, uint8_t n);

#if GC_READING_VALUES <= 8
typedef uint8_t gc_value_mask;
#else
typedef uint16_t gc_value_mask;
#endif

typedef struct {
    uint32_t seq;
    union {
        int32_t milli;
        const char *fail;
    } v[GC_READING_VALUES];
    gc_value_mask failed; /* bit i: v[i] holds a failure code */
} gc_kept;

typedef struct {
    gc_kept slot[GC_UNSTORED_MAX]; /* a ring: slot[head] is the oldest */
    const char *node_id;
    const char *const *keys;
    uint8_t n_keys;
    uint8_t head;
    uint8_t count;
    uint8_t replaying;    /* a replay is under way */
    uint32_t replay_next; /* it sends the oldest kept reading with seq >= this */
    uint32_t replay_last; /* up to this one, the newest kept when it started */
} gc_store;

/* node_id and keys are kept, not copied. GC_ERR_ARG if n_keys is 0 or over GC_READING_VALUES. */
gc_status gc_store_init(gc_store *store, const char *node_id, const char *const *keys,
                        uint8_t n_keys);
/* Forget everything (a reboot does this too: the store is RAM). */
void gc_store_clear(gc_store *store);
/*
 * Build the GD line for a reading into line and, if it could be built, keep
 * the reading (the oldest goes if the store is full). Seqs must grow: a seq
 * at or below the newest kept one empties the store first (to the host that
 * is a new boot, and the ring stays in seq order).
 */
gc_status gc_store_send(gc_store *store, gc_line *line, uint32_t seq, const gc_value *values);
/* A GK for this node: forget every kept reading with a seq up to seq. Returns how many. */
uint8_t gc_store_stored(gc_store *store, uint32_t seq);
uint8_t gc_store_count(const gc_store *store);
/* The seq of kept reading i, 0 the oldest; i < gc_store_count(). */
uint32_t gc_store_seq(const gc_store *store, uint8_t i);
/*
 * The host came back: replay what is kept now, oldest first. Call
 * gc_store_replay_next once per pass of the main loop, so that GKs and
 * commands are read between GR lines: a reading a GK drops before its turn
 * is not sent, and readings sent after the start are not replayed (they
 * went out as GD while the host was there). Starting again restarts it.
 */
void gc_store_replay_start(gc_store *store);
/* Build the next GR line into line: GC_OK, or GC_ERR_STATE when there is none left. */
gc_status gc_store_replay_next(gc_store *store, gc_line *line);

#ifdef __cplusplus
}
#endif

#endif /* GC_FRAME_H */
