/*
 * gc_frame.c: see gc_frame.h. Plain C99, no malloc, no stdio.
 *
 * Every rule here mirrors one in firmware_bridge/line_protocol.py; the
 * comments name the Python they follow. tests/firmware/test_c_framing.py
 * holds the two to the same bytes.
 */
#include "gc_frame.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ================================================================== CRC */

uint16_t gc_crc16_update(uint16_t crc, uint8_t byte)
{
    uint8_t bit;
    crc ^= (uint16_t)((uint16_t)byte << 8);
    for (bit = 0; bit < 8; bit++) {
        if (crc & 0x8000u) {
            crc = (uint16_t)((uint16_t)(crc << 1) ^ 0x1021u);
        } else {
            crc = (uint16_t)(crc << 1);
        }
    }
    return crc;
}

uint16_t gc_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < len; i++) {
        crc = gc_crc16_update(crc, data[i]);
    }
    return crc;
}

/* ============================================================ character rules */

static int is_lower(uint8_t c) { return c >= 'a' && c <= 'z'; }
static int is_upper(uint8_t c) { return c >= 'A' && c <= 'Z'; }
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static int hex_value(uint8_t c)
{
    if (is_digit(c)) return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10; /* Python accepts lower case too */
    return -1;
}

/* [a-z][a-z0-9_]{0,max-1}: KEY_RE (16), ERROR_CODE_RE (12), REASON_RE (32). */
static int ident_ok(const char *s, size_t len, size_t max)
{
    size_t i;
    if (len < 1 || len > max || !is_lower((uint8_t)s[0])) return 0;
    for (i = 1; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (!is_lower(c) && !is_digit(c) && c != '_') return 0;
    }
    return 1;
}

/* NODE_ID_RE: [A-Za-z0-9_-]{1,32}. */
static int node_ok(const char *s, size_t len)
{
    size_t i;
    if (len < 1 || len > GC_NODE_ID_MAX) return 0;
    for (i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (!is_lower(c) && !is_upper(c) && !is_digit(c) && c != '_' && c != '-') return 0;
    }
    return 1;
}

/* strlen that stops looking past max: a missing NUL cannot run away. */
static size_t bounded_len(const char *s, size_t max)
{
    size_t n = 0;
    while (n <= max && s[n] != '\0') n++;
    return n;
}

/* ================================================================ numbers */

const char *gc_status_name(gc_status status)
{
    switch (status) {
    case GC_OK: return "ok";
    case GC_ERR_ARG: return "arg";
    case GC_ERR_RANGE: return "range";
    case GC_ERR_FULL: return "full";
    case GC_ERR_DUPLICATE: return "duplicate";
    case GC_ERR_STATE: return "state";
    }
    return "unknown";
}

/* Digits of v, most significant first, into tmp (>= 10 bytes); returns the count. */
static uint8_t u32_digits(char *tmp, uint32_t v)
{
    char rev[10];
    uint8_t n = 0, i;
    do {
        rev[n++] = (char)('0' + (uint8_t)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    for (i = 0; i < n; i++) tmp[i] = rev[n - 1u - i];
    return n;
}

/* |v| as uint32_t, INT32_MIN included. */
static uint32_t magnitude(int32_t v)
{
    return v < 0 ? (uint32_t)0u - (uint32_t)v : (uint32_t)v;
}

size_t gc_format_int(char *out, size_t cap, int32_t value)
{
    char tmp[12];
    size_t n = 0;
    if (value < 0) tmp[n++] = '-';
    n += u32_digits(tmp + n, magnitude(value));
    if (cap < n + 1u) return 0;
    memcpy(out, tmp, n);
    out[n] = '\0';
    return n;
}

/*
 * format_number(m / 1000): the whole part bare, then '.' and the thousandths
 * with trailing zeros stripped, nothing after the point if they are all zero.
 * Zero is "0", never "-0" (Python turns "-0" into "0").
 */
size_t gc_format_milli(char *out, size_t cap, int32_t milli)
{
    char tmp[GC_NUMBER_MAX];
    uint32_t mag = magnitude(milli);
    uint32_t frac = mag % 1000u;
    size_t n = 0;
    if (milli < 0) tmp[n++] = '-'; /* milli != 0 here, so never "-0" */
    n += u32_digits(tmp + n, mag / 1000u);
    if (frac != 0u) {
        tmp[n++] = '.';
        tmp[n++] = (char)('0' + (uint8_t)(frac / 100u));
        frac %= 100u;
        if (frac != 0u) {
            tmp[n++] = (char)('0' + (uint8_t)(frac / 10u));
            frac %= 10u;
            if (frac != 0u) tmp[n++] = (char)('0' + (uint8_t)frac);
        }
    }
    if (cap < n + 1u) return 0;
    memcpy(out, tmp, n);
    out[n] = '\0';
    return n;
}

/* q + (rem / 2^shift), half to even, for 1 <= shift <= 63. */
static uint64_t shift_round_even(uint64_t x, unsigned shift)
{
    uint64_t q = x >> shift;
    uint64_t rem = x & (((uint64_t)1 << shift) - 1u);
    uint64_t half = (uint64_t)1 << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return q;
}

/*
 * Exact: |value| = m * 2^-shift with m an integer of DBL_MANT_DIG bits
 * (frexp and ldexp only move the exponent), so |value| * 1000 =
 * (m * 1000) * 2^-shift, and m * 1000 fits in 64 bits for both a 53-bit
 * (host) and a 24-bit (AVR) double. Rounding that with integer shifts is
 * the half-to-even rounding Python's "%.3f" applies to the same double.
 */
gc_status gc_milli_from_double(double value, int32_t *milli)
{
    int exp2;
    double frac;
    uint64_t m, q;
    int shift;

    if (!isfinite(value)) return GC_ERR_RANGE;
    if (value == 0.0) {
        *milli = 0; /* -0.0 too: format_number(-0.0) is "0" */
        return GC_OK;
    }
    frac = frexp(fabs(value), &exp2); /* |value| = frac * 2^exp2, 0.5 <= frac < 1 */
    if (exp2 > 22) return GC_ERR_RANGE; /* |value| >= 2^22 > INT32_MAX / 1000 */
    m = (uint64_t)ldexp(frac, DBL_MANT_DIG);
    shift = DBL_MANT_DIG - exp2; /* >= 2: |value| < 2^22 */
    if (shift > 63) {
        q = 0; /* m * 1000 < 2^63 <= half of 2^shift: rounds to zero */
    } else {
        q = shift_round_even(m * 1000u, (unsigned)shift);
    }
    if (q > (uint64_t)INT32_MAX) return GC_ERR_RANGE;
    *milli = value < 0.0 ? -(int32_t)q : (int32_t)q;
    return GC_OK;
}

gc_status gc_milli_from_ratio(int32_t num, int32_t den, int32_t *milli)
{
    uint64_t n, d, q, r;
    int negative;
    if (den == 0) return GC_ERR_RANGE;
    negative = (num < 0) != (den < 0);
    n = (uint64_t)magnitude(num) * 1000u;
    d = (uint64_t)magnitude(den);
    q = n / d;
    r = n % d;
    if (2u * r > d || (2u * r == d && (q & 1u))) q++;
    if (q > (uint64_t)INT32_MAX) return GC_ERR_RANGE;
    *milli = (negative && q != 0u) ? -(int32_t)q : (int32_t)q;
    return GC_OK;
}

/* =========================================================== line builder */

/* Room for the body: '$' and the body, leaving the trailer its 7 bytes. */
#define BODY_END (GC_MAX_LINE - GC_TRAILER_LEN)

static gc_status fail(gc_line *line, gc_status status)
{
    if (line->status == GC_OK) line->status = (uint8_t)status;
    return (gc_status)line->status;
}

/* Start a line that is refused from the outset: every later call returns status. */
static gc_status refuse(gc_line *line, gc_status status)
{
    line->len = 0;
    line->status = GC_OK;
    line->open = 1;
    line->buf[0] = '\0';
    return fail(line, status);
}

static gc_status check_open(gc_line *line)
{
    if (line->status != GC_OK) return (gc_status)line->status;
    if (!line->open) return fail(line, GC_ERR_STATE);
    return GC_OK;
}

/* Raw copy; the caller has checked the room. */
static void put(gc_line *line, const char *s, size_t n)
{
    memcpy(line->buf + line->len, s, n);
    line->len = (uint16_t)(line->len + n);
}

/* Is ",<key>=" in the line? Values never hold ',', the header never '=':
 * only a pair's start can match. */
static int has_key(const gc_line *line, const char *key, size_t klen)
{
    size_t i;
    for (i = 0; i + klen + 2u <= line->len; i++) {
        if (line->buf[i] == ',' && line->buf[i + 1u + klen] == '='
            && memcmp(line->buf + i + 1u, key, klen) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Check everything for ",<key>=<value of vlen bytes>", then write ",<key>=". */
static gc_status begin_pair(gc_line *line, const char *key, size_t vlen)
{
    gc_status status = check_open(line);
    size_t klen;
    if (status != GC_OK) return status;
    if (key == NULL) return fail(line, GC_ERR_ARG);
    klen = bounded_len(key, GC_KEY_MAX);
    if (!ident_ok(key, klen, GC_KEY_MAX)) return fail(line, GC_ERR_ARG);
    if (has_key(line, key, klen)) return fail(line, GC_ERR_DUPLICATE);
    if ((size_t)line->len + 2u + klen + vlen > (size_t)BODY_END) return fail(line, GC_ERR_FULL);
    put(line, ",", 1);
    put(line, key, klen);
    put(line, "=", 1);
    return GC_OK;
}

static gc_status append_pair(gc_line *line, const char *key, const char *value, size_t vlen)
{
    gc_status status = begin_pair(line, key, vlen);
    if (status == GC_OK) put(line, value, vlen);
    return status;
}

/* "$<type>[,1],<node>,<seq>"; node checked against NODE_ID_RE. */
static gc_status start(gc_line *line, const char *type, int with_proto, const char *node_id,
                       uint32_t seq)
{
    char digits[10];
    uint8_t n;
    size_t nlen;
    line->len = 0;
    line->status = GC_OK;
    line->open = 1;
    line->buf[0] = '\0';
    if (node_id == NULL) return fail(line, GC_ERR_ARG);
    nlen = bounded_len(node_id, GC_NODE_ID_MAX);
    if (!node_ok(node_id, nlen)) return fail(line, GC_ERR_ARG);
    put(line, "$", 1);
    put(line, type, 2);
    if (with_proto) put(line, ",1", 2); /* GC_PROTO_VERSION */
    put(line, ",", 1);
    put(line, node_id, nlen);
    put(line, ",", 1);
    n = u32_digits(digits, seq);
    put(line, digits, n); /* at most 49 bytes so far: always fits */
    return GC_OK;
}

gc_status gc_begin(gc_line *line, gc_kind kind, const char *node_id, uint32_t seq)
{
    if (kind == GC_DATA) return start(line, "GD", 1, node_id, seq);
    if (kind == GC_HELLO) return start(line, "GH", 1, node_id, seq);
    if (kind == GC_REPLAY) return start(line, "GR", 1, node_id, seq); /* encode_data(replay=True) */
    return refuse(line, GC_ERR_ARG);
}

gc_status gc_append_int(gc_line *line, const char *key, int32_t value)
{
    char text[12];
    size_t n = gc_format_int(text, sizeof text, value);
    return append_pair(line, key, text, n);
}

gc_status gc_append_milli(gc_line *line, const char *key, int32_t milli)
{
    char text[GC_NUMBER_MAX];
    size_t n = gc_format_milli(text, sizeof text, milli);
    return append_pair(line, key, text, n);
}

gc_status gc_append_double(gc_line *line, const char *key, double value)
{
    int32_t milli;
    gc_status status = check_open(line);
    if (status != GC_OK) return status;
    if (gc_milli_from_double(value, &milli) != GC_OK) return fail(line, GC_ERR_RANGE);
    return gc_append_milli(line, key, milli);
}

gc_status gc_append_na(gc_line *line, const char *key, const char *code)
{
    char text[3 + GC_CODE_MAX];
    size_t clen;
    if (code == NULL || strcmp(code, "unknown") == 0) {
        return append_pair(line, key, "na", 2); /* _format_value: "unknown" is bare na */
    }
    clen = bounded_len(code, GC_CODE_MAX);
    if (!ident_ok(code, clen, GC_CODE_MAX)) {
        if (check_open(line) != GC_OK) return (gc_status)line->status;
        return fail(line, GC_ERR_ARG);
    }
    memcpy(text, "na:", 3);
    memcpy(text + 3, code, clen);
    return append_pair(line, key, text, 3u + clen);
}

/* A value Python's parser takes back unchanged, that no framing byte hides in. */
static int text_ok(const char *s, size_t len)
{
    size_t i;
    if (len < 1) return 0;
    for (i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20u || c > 0x7Eu || c == ',' || c == '$' || c == '*') return 0;
    }
    return 1;
}

gc_status gc_append_text(gc_line *line, const char *key, const char *text)
{
    size_t len;
    if (text == NULL) return check_open(line) != GC_OK ? (gc_status)line->status
                                                         : fail(line, GC_ERR_ARG);
    len = bounded_len(text, GC_BODY_MAX);
    if (!text_ok(text, len)) {
        if (check_open(line) != GC_OK) return (gc_status)line->status;
        return fail(line, GC_ERR_ARG); /* (a valid text too long for a line: GC_ERR_FULL below) */
    }
    return append_pair(line, key, text, len);
}

gc_status gc_append_hello(gc_line *line, const char *fw, const char *const *sensors,
                          uint8_t n_sensors, uint32_t interval_s)
{
    char digits[10];
    size_t vlen = 0;
    uint8_t i, n;
    gc_status status = gc_append_text(line, "fw", fw);
    if (status != GC_OK) return status;
    if (sensors == NULL || n_sensors == 0u) return fail(line, GC_ERR_ARG);
    for (i = 0; i < n_sensors; i++) {
        size_t klen;
        if (sensors[i] == NULL) return fail(line, GC_ERR_ARG);
        klen = bounded_len(sensors[i], GC_KEY_MAX);
        if (!ident_ok(sensors[i], klen, GC_KEY_MAX)) return fail(line, GC_ERR_ARG);
        vlen += klen + (i ? 1u : 0u);
    }
    status = begin_pair(line, "sensors", vlen);
    if (status != GC_OK) return status;
    for (i = 0; i < n_sensors; i++) {
        if (i) put(line, ";", 1);
        put(line, sensors[i], strlen(sensors[i]));
    }
    n = u32_digits(digits, interval_s);
    return append_pair(line, "interval_s", digits, n);
}

gc_status gc_finish(gc_line *line)
{
    static const char hex[] = "0123456789ABCDEF";
    uint16_t crc;
    char trailer[GC_TRAILER_LEN];
    gc_status status = check_open(line);
    if (status != GC_OK) return status;
    crc = gc_crc16((const uint8_t *)line->buf + 1, (size_t)line->len - 1u);
    trailer[0] = '*';
    trailer[1] = hex[(crc >> 12) & 0xFu];
    trailer[2] = hex[(crc >> 8) & 0xFu];
    trailer[3] = hex[(crc >> 4) & 0xFu];
    trailer[4] = hex[crc & 0xFu];
    trailer[5] = '\r';
    trailer[6] = '\n';
    put(line, trailer, GC_TRAILER_LEN); /* begin_pair kept this room */
    line->buf[line->len] = '\0';
    line->open = 0;
    return GC_OK;
}

gc_status gc_build_ack(gc_line *line, const char *node_id, uint32_t seq, const char *reason)
{
    gc_status status = start(line, "GA", 0, node_id, seq);
    size_t rlen;
    if (status != GC_OK) return status;
    if (reason == NULL) {
        put(line, ",OK", 3);
    } else {
        rlen = bounded_len(reason, GC_REASON_MAX);
        if (!ident_ok(reason, rlen, GC_REASON_MAX)) return fail(line, GC_ERR_ARG);
        put(line, ",ERR,", 5);
        put(line, reason, rlen); /* at most 49 + 5 + 32 bytes: fits */
    }
    return gc_finish(line);
}

/* ========================================================= line receiver */

void gc_rx_init(gc_rx *rx)
{
    rx->len = 0;
    rx->body_len = 0;
    rx->in_frame = 0;
    rx->overflow = 0;
    rx->noise = 0;
    rx->buf[0] = '\0';
}

static void start_frame(gc_rx *rx)
{
    rx->buf[0] = '$';
    rx->len = 1;
    rx->in_frame = 1;
    rx->overflow = 0;
}

/* bytes.isspace(): what FrameDecoder does not count as noise. */
static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0x0Bu || c == 0x0Cu;
}

/* parse_line on buf[0..len), which starts with '$' and ends with '\n'. */
static gc_rx_event check_line(gc_rx *rx)
{
    const uint8_t *b = (const uint8_t *)rx->buf;
    uint16_t end = rx->len; /* text = b[0..end): rstrip(b"\r\n") */
    uint16_t i, star = 0, body_len;
    uint16_t crc = 0, want = 0;
    int found = 0;

    while (end > 1u && (b[end - 1u] == '\r' || b[end - 1u] == '\n')) end--;
    for (i = 1; i < end; i++) {
        if (b[i] == '*') {
            star = i;
            found = 1;
        }
    }
    if (!found || end - star != 5u) return GC_RX_NO_CHECKSUM;
    for (i = (uint16_t)(star + 1u); i < end; i++) {
        int h = hex_value(b[i]);
        if (h < 0) return GC_RX_NO_CHECKSUM;
        want = (uint16_t)((uint16_t)(want << 4) | (uint16_t)h);
    }
    body_len = (uint16_t)(star - 1u);
    for (i = 1; i < star; i++) {
        if (b[i] < 0x20u || b[i] > 0x7Eu) return GC_RX_NOT_ASCII;
    }
    crc = gc_crc16(b + 1, body_len);
    if (crc != want) return GC_RX_CRC_MISMATCH;
    rx->buf[star] = '\0';
    rx->body_len = body_len;
    return GC_RX_LINE;
}

gc_rx_event gc_rx_feed(gc_rx *rx, uint8_t byte)
{
    gc_rx_event event = GC_RX_NONE;
    if (!rx->in_frame) {
        /* Outside a frame: one NOISE per line that held anything but white
         * space, reported at its '\n' or at the '$' that ends it. */
        if (byte == '$' || byte == '\n') {
            if (rx->noise) event = GC_RX_NOISE;
            rx->noise = 0;
            if (byte == '$') start_frame(rx);
        } else if (!is_space(byte)) {
            rx->noise = 1;
        }
        return event;
    }
    if (byte == '$') {
        /* A new frame starts: the unfinished one is lost, and only it. */
        event = rx->overflow ? GC_RX_TOO_LONG : GC_RX_TRUNCATED;
        start_frame(rx);
        return event;
    }
    if (!rx->overflow) {
        if (rx->len < GC_MAX_LINE) {
            rx->buf[rx->len++] = (char)byte;
        } else {
            rx->overflow = 1; /* keep dropping until the line ends */
        }
    }
    if (byte == '\n') {
        rx->in_frame = 0;
        if (rx->overflow) {
            rx->overflow = 0;
            return GC_RX_TOO_LONG;
        }
        return check_line(rx);
    }
    return GC_RX_NONE;
}

gc_rx_event gc_rx_flush(gc_rx *rx)
{
    gc_rx_event event = GC_RX_NONE;
    if (rx->in_frame) {
        event = GC_RX_TRUNCATED; /* even one that overflowed, as FrameDecoder.flush */
    } else if (rx->noise) {
        event = GC_RX_NOISE;
    }
    gc_rx_init(rx);
    return event;
}

const char *gc_rx_body(const gc_rx *rx)
{
    return rx->buf + 1;
}

const char *gc_rx_event_name(gc_rx_event event)
{
    switch (event) {
    case GC_RX_NONE: return "none";
    case GC_RX_LINE: return "line";
    case GC_RX_NOISE: return "noise";
    case GC_RX_TOO_LONG: return "too_long";
    case GC_RX_TRUNCATED: return "truncated";
    case GC_RX_NOT_ASCII: return "not_ascii";
    case GC_RX_NO_CHECKSUM: return "no_checksum";
    case GC_RX_CRC_MISMATCH: return "crc_mismatch";
    }
    return "unknown";
}

/* ======================================================= command parsing */

const char *gc_cmd_status_name(gc_cmd_status status)
{
    switch (status) {
    case GC_CMD_OK: return "ok";
    case GC_CMD_STORED: return "stored";
    case GC_CMD_NOT_COMMAND: return "not_command";
    case GC_CMD_UNKNOWN_TYPE: return "unknown_type";
    case GC_CMD_BAD_FIELD: return "bad_field";
    case GC_CMD_BAD_NODE_ID: return "bad_node_id";
    case GC_CMD_BAD_SEQ: return "bad_seq";
    case GC_CMD_DUPLICATE_KEY: return "duplicate_key";
    }
    return "unknown";
}

/* The field starting at s (ends at ',' or end). */
static size_t field_len(const char *s, const char *end)
{
    const char *p = s;
    while (p < end && *p != ',') p++;
    return (size_t)(p - s);
}

static int same(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* _parse_seq: 1 to 10 ASCII digits, at most 2^32 - 1 (leading zeros allowed). */
static int parse_seq(const char *s, size_t len, uint32_t *seq)
{
    uint64_t v = 0;
    size_t i;
    if (len < 1 || len > 10) return 0;
    for (i = 0; i < len; i++) {
        if (!is_digit((uint8_t)s[i])) return 0;
        v = v * 10u + (uint64_t)(s[i] - '0');
    }
    if (v > 0xFFFFFFFFu) return 0;
    *seq = (uint32_t)v;
    return 1;
}

/* The key of the pair at s: up to the first '=' (the caller checked there is one). */
static size_t key_len(const char *s, size_t flen)
{
    size_t k = 0;
    while (k < flen && s[k] != '=') k++;
    return k;
}

/*
 * parse_body for a GK line: exactly three fields ("GK takes a node and a
 * seq") -> bad_field, then node -> bad_node_id, then seq -> bad_seq.
 */
static gc_cmd_status parse_stored(const char *body, const char *end, size_t n_fields,
                                  gc_command *cmd)
{
    const char *node, *seq_text;
    size_t node_len, seq_len;
    uint32_t seq;
    if (n_fields != 3) return GC_CMD_BAD_FIELD;
    node = body + 3; /* past "GK," */
    node_len = field_len(node, end);
    seq_text = node + node_len + 1u;
    seq_len = (size_t)(end - seq_text);
    if (!node_ok(node, node_len)) return GC_CMD_BAD_NODE_ID;
    if (!parse_seq(seq_text, seq_len, &seq)) return GC_CMD_BAD_SEQ;
    memcpy(cmd->node_id, node, node_len);
    cmd->node_id[node_len] = '\0';
    cmd->seq = seq;
    cmd->verb[0] = '\0';
    cmd->n_args = 0;
    cmd->interval_text = NULL;
    cmd->interval_len = 0;
    return GC_CMD_STORED;
}

/*
 * parse_body for a GC line:
 *   fields = body.split(","); fewer than 4 -> bad_field;
 *   node (NODE_ID_RE) -> bad_node_id; seq -> bad_seq; verb [A-Z]{2,8} -> bad_field;
 *   then each key=value pair in order: no '=', a bad key or an empty value ->
 *   bad_field, a key seen before -> duplicate_key.
 */
gc_cmd_status gc_parse_command(const char *body, size_t len, gc_command *cmd)
{
    const char *end = body + len;
    const char *p = body, *pairs, *q;
    const char *field[4];
    size_t flen[4];
    size_t n_fields = 1, i;
    gc_command out;

    for (q = body; q < end; q++) {
        if (*q == ',') n_fields++;
    }
    flen[0] = field_len(body, end);
    if (same(body, flen[0], "GK")) return parse_stored(body, end, n_fields, cmd);
    if (!same(body, flen[0], "GC")) {
        if (same(body, flen[0], "GD") || same(body, flen[0], "GR") || same(body, flen[0], "GH")
            || same(body, flen[0], "GA")) {
            return GC_CMD_NOT_COMMAND;
        }
        return GC_CMD_UNKNOWN_TYPE;
    }
    if (n_fields < 4) return GC_CMD_BAD_FIELD;
    for (i = 0; i < 4; i++) {
        field[i] = p;
        flen[i] = field_len(p, end);
        if (i < 3) p += flen[i] + 1u; /* past the ',' that n_fields promised */
    }
    if (!node_ok(field[1], flen[1])) return GC_CMD_BAD_NODE_ID;
    if (!parse_seq(field[2], flen[2], &out.seq)) return GC_CMD_BAD_SEQ;
    if (flen[3] < 2 || flen[3] > GC_VERB_MAX) return GC_CMD_BAD_FIELD;
    for (i = 0; i < flen[3]; i++) {
        if (!is_upper((uint8_t)field[3][i])) return GC_CMD_BAD_FIELD;
    }

    out.n_args = 0;
    out.interval_text = NULL;
    out.interval_len = 0;
    pairs = n_fields > 4 ? field[3] + flen[3] + 1u : end;
    for (p = pairs; n_fields > 4 && p <= end; p += field_len(p, end) + 1u) {
        size_t fl = field_len(p, end);
        size_t kl = key_len(p, fl);
        const char *r;
        if (kl == fl || !ident_ok(p, kl, GC_KEY_MAX) || kl + 1u == fl) return GC_CMD_BAD_FIELD;
        for (r = pairs; r < p; r += field_len(r, end) + 1u) {
            size_t rkl = key_len(r, field_len(r, end));
            if (rkl == kl && memcmp(r, p, kl) == 0) return GC_CMD_DUPLICATE_KEY;
        }
        if (same(p, kl, "interval_s")) {
            out.interval_text = p + kl + 1u;
            out.interval_len = (uint8_t)(fl - kl - 1u); /* < GC_BODY_MAX: fits */
        }
        out.n_args++;
        if (p + fl == end) break;
    }

    memcpy(out.node_id, field[1], flen[1]);
    out.node_id[flen[1]] = '\0';
    memcpy(out.verb, field[3], flen[3]);
    out.verb[flen[3]] = '\0';
    *cmd = out;
    return GC_CMD_OK;
}

const char *gc_command_interval(const gc_command *cmd, uint32_t *interval_s)
{
    uint32_t v = 0;
    uint8_t i;
    if (strcmp(cmd->verb, "SET") != 0 || cmd->n_args != 1u || cmd->interval_text == NULL) {
        return "unknown_command";
    }
    for (i = 0; i < cmd->interval_len; i++) {
        uint8_t c = (uint8_t)cmd->interval_text[i];
        if (!is_digit(c)) return "bad_value";
        if (v <= GC_INTERVAL_MAX) v = v * 10u + (uint32_t)(c - '0'); /* stops growing once too big */
    }
    if (cmd->interval_len == 0u || v < GC_INTERVAL_MIN || v > GC_INTERVAL_MAX) return "bad_value";
    *interval_s = v;
    return NULL;
}

/* ===================================================== store and forward */

gc_status gc_build_reading(gc_line *line, gc_kind kind, const char *node_id, uint32_t seq,
                           const char *const *keys, const gc_value *values, uint8_t n)
{
    uint8_t i;
    if ((kind != GC_DATA && kind != GC_REPLAY) || keys == NULL || values == NULL) {
        return refuse(line, GC_ERR_ARG);
    }
    gc_begin(line, kind, node_id, seq);
    for (i = 0; i < n; i++) {
        if (values[i].fail != NULL) {
            gc_append_na(line, keys[i], values[i].fail);
        } else {
            gc_append_milli(line, keys[i], values[i].milli);
        }
    }
    return gc_finish(line); /* the first error, if an append failed: errors are sticky */
}

gc_status gc_store_init(gc_store *store, const char *node_id, const char *const *keys,
                        uint8_t n_keys)
{
    store->node_id = node_id;
    store->keys = keys;
    store->n_keys = 0;
    gc_store_clear(store);
    if (node_id == NULL || keys == NULL || n_keys == 0u || n_keys > GC_READING_VALUES) {
        return GC_ERR_ARG; /* n_keys 0: gc_store_send builds nothing and keeps nothing */
    }
    store->n_keys = n_keys;
    return GC_OK;
}

void gc_store_clear(gc_store *store)
{
    store->head = 0;
    store->count = 0;
    store->replaying = 0;
    store->replay_next = 0;
    store->replay_last = 0;
}

static const gc_kept *kept_at(const gc_store *store, uint8_t i)
{
    return &store->slot[((unsigned)store->head + i) % GC_UNSTORED_MAX];
}

static void drop_oldest(gc_store *store)
{
    store->head = (uint8_t)(((unsigned)store->head + 1u) % GC_UNSTORED_MAX);
    store->count--;
}

/* The one place a kept reading becomes a line: its GD and its GR differ only in type. */
static gc_status build_kept(const gc_store *store, const gc_kept *kept, gc_kind kind,
                            gc_line *line)
{
    gc_value_mask bit = 1;
    uint8_t i;
    gc_begin(line, kind, store->node_id, kept->seq);
    for (i = 0; i < store->n_keys; i++, bit = (gc_value_mask)(bit << 1)) {
        if (kept->failed & bit) {
            gc_append_na(line, store->keys[i], kept->v[i].fail);
        } else {
            gc_append_milli(line, store->keys[i], kept->v[i].milli);
        }
    }
    return gc_finish(line);
}

gc_status gc_store_send(gc_store *store, gc_line *line, uint32_t seq, const gc_value *values)
{
    gc_kept kept;
    gc_value_mask bit = 1;
    uint8_t i;
    gc_status status;
    if (store->n_keys == 0u || values == NULL) return refuse(line, GC_ERR_STATE);
    kept.seq = seq;
    kept.failed = 0;
    for (i = 0; i < store->n_keys; i++, bit = (gc_value_mask)(bit << 1)) {
        if (values[i].fail != NULL) {
            kept.v[i].fail = values[i].fail;
            kept.failed = (gc_value_mask)(kept.failed | bit);
        } else {
            kept.v[i].milli = values[i].milli;
        }
    }
    status = build_kept(store, &kept, GC_DATA, line);
    if (status != GC_OK) return status; /* not sent, so nothing to keep */
    if (store->count > 0u && seq <= kept_at(store, (uint8_t)(store->count - 1u))->seq) {
        gc_store_clear(store);
    }
    if (store->count == GC_UNSTORED_MAX) drop_oldest(store); /* full: the oldest goes */
    store->slot[((unsigned)store->head + store->count) % GC_UNSTORED_MAX] = kept;
    store->count++;
    return GC_OK;
}

/* Seqs grow along the ring, so the readings up to seq are the oldest ones (SimNode.receive). */
uint8_t gc_store_stored(gc_store *store, uint32_t seq)
{
    uint8_t dropped = 0;
    while (store->count > 0u && kept_at(store, 0)->seq <= seq) {
        drop_oldest(store);
        dropped++;
    }
    return dropped;
}

uint8_t gc_store_count(const gc_store *store)
{
    return store->count;
}

uint32_t gc_store_seq(const gc_store *store, uint8_t i)
{
    return i < store->count ? kept_at(store, i)->seq : 0u;
}

void gc_store_replay_start(gc_store *store)
{
    store->replaying = store->count > 0u;
    if (store->replaying) {
        store->replay_next = kept_at(store, 0)->seq;
        store->replay_last = kept_at(store, (uint8_t)(store->count - 1u))->seq;
    }
}

gc_status gc_store_replay_next(gc_store *store, gc_line *line)
{
    uint8_t i;
    for (i = 0; store->replaying && i < store->count; i++) {
        const gc_kept *kept = kept_at(store, i);
        if (kept->seq < store->replay_next) continue; /* sent already in this replay */
        if (kept->seq > store->replay_last) break;    /* sent after the replay started */
        if (kept->seq == store->replay_last) {
            store->replaying = 0; /* this is the last one */
        } else {
            store->replay_next = kept->seq + 1u; /* < replay_last: cannot wrap */
        }
        /* It was built as a GD, so it builds as a GR: same values, same length. */
        if (build_kept(store, kept, GC_REPLAY, line) == GC_OK) return GC_OK;
    }
    store->replaying = 0;
    return GC_ERR_STATE;
}
