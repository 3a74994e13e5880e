/* The legacy FlutterPOS wire (protocol version 1): newline-delimited JSON
 * lines and JSON discovery datagrams, converted to and from the v2 Envelope
 * (SPEC.md LEGACY-*).
 *
 * Decoding is two steps. A lexical guard (guard_scan) first walks the raw
 * bytes once and finds the things jansson either does not check, reports
 * with a vague position, or checks with a looser limit: NUL bytes, "\u0000"
 * escapes, ill-formed UTF-8, unpaired surrogate escapes and nesting deeper
 * than POSP2P_JSON_MAX_DEPTH. jansson then parses the line (strict: no
 * duplicate keys, nothing after the value). The error reported is always
 * the first one in the line, so the error code does not depend on which of
 * the two checks looked first. The parsed tree is then mapped key by key,
 * with the key path and the requirement in every error message.
 *
 * Encoding writes through the json_emit writer, which reproduces Dart's
 * jsonEncode byte for byte; together with the amount and timestamp rules
 * below that makes legacy -> v2 -> legacy byte-exact for everything the
 * reference implementation writes. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "json_emit.h"

/* SPEC.md requirement ids quoted in error reports. */
#define REQ_LF "LEGACY-1"         /* a message is one line ended by '\n' */
#define REQ_LINE_MAX "LEGACY-3"   /* line length limit */
#define REQ_DEPTH "LEGACY-4"      /* nesting depth */
#define REQ_TEXT "LEGACY-5"       /* UTF-8, no NUL, no \u0000 */
#define REQ_OBJECT "LEGACY-8"     /* exactly one object, no duplicate keys */
#define REQ_V2_ONLY "LEGACY-16"   /* no HELLO or GOODBYE on the legacy wire */
#define REQ_ENVELOPE "LEGACY-20"  /* the envelope keys the encoder writes */
#define REQ_INVALID "LEGACY-22"   /* missing keys, JSON types, integer ranges */
#define REQ_STRINGS "LEGACY-25"   /* encoder output is UTF-8 JSON */
#define REQ_PAYLOADS "LEGACY-26"  /* the payload each type carries */
#define REQ_OPAQUE "LEGACY-30"    /* free-form payloads */
#define REQ_CART "LEGACY-31"      /* cartSync */
#define REQ_AMOUNT "LEGACY-38"    /* amount precision and range */
#define REQ_TIME "LEGACY-39"      /* timestamp text */
#define REQ_TIME_OUT "LEGACY-41"  /* timestamp the encoder can write */
#define REQ_DISC_REQ "LEGACY-42"  /* legacy discovery request */
#define REQ_DISC_RESP "LEGACY-44" /* legacy discovery response */
#define REQ_DISC_OUT "LEGACY-45"  /* legacy datagram encoding */
#define REQ_DISC_SIZE "DISC-2"    /* datagram size */

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define ENV(x) POSP2P__V2__ENVELOPE__##x
/* Presence (oneof case) values of the payload messages. */
#define OF_CASE(x) POSP2P__V2__ORDER_FORWARD__##x
#define ITEM_CASE(x) POSP2P__V2__ORDER_ITEM__##x
#define STATUS_CASE(x) POSP2P__V2__ORDER_STATUS__##x
#define ERROR_CASE(x) POSP2P__V2__ERROR__##x

/* Dart writes device types as the enum's toString(): "P2PDeviceType.kds". */
#define DEVICE_TYPE_PREFIX "P2PDeviceType."
#define DEVICE_TYPE_PREFIX_LEN (sizeof(DEVICE_TYPE_PREFIX) - 1)

/* The wire version a legacy discovery datagram speaks (DiscoveryDatagram
 * supported_versions). */
#define LEGACY_WIRE_VERSION 1u

#define PORT_MAX 65535
/* Amounts must stay exactly representable as doubles: |minor| <= 2^53. */
#define AMOUNT_MINOR_MAX (UINT64_C(1) << 53)
/* The smallest currency exponent the decoder picks (cents). */
#define AMOUNT_MIN_EXPONENT 2

#define MS_PER_SECOND INT64_C(1000)
#define MS_PER_MINUTE INT64_C(60000)
#define MS_PER_DAY INT64_C(86400000)
#define TIME_LEN_MS 23 /* "YYYY-MM-DDTHH:MM:SS.mmm" */
#define TIME_LEN_US 26 /* "YYYY-MM-DDTHH:MM:SS.mmmuuu" */
#define TIME_YEAR_MAX 9999
#define TIME_SHOW_MAX 40 /* longest bad timestamp quoted in an error */

/* Longest key path kept for error messages ("payload.items[123].price"),
 * and the most steps it can have (payload.items[i].modifiers[j] is 5). */
#define PATH_MAX_LEN 96
#define PATH_MAX_DEPTH 8

/* Embedded JSON (opaque payloads, cartSync, metadata) is re-serialized into
 * a buffer that needs no cap of its own: its size is bounded by the line it
 * came from (every number grows to at most ~24 characters). */
#define EMBEDDED_JSON_MAX ((size_t)SIZE_MAX / 2)

static const ProtobufCAllocator *alloc_or_default(const ProtobufCAllocator *a) {
  return a != NULL ? a : posp2p_mem_default();
}

/* ==== NDJSON line splitter ================================================ */

/* The partial-line buffer holds the bytes [line_offset, offset) of the line
 * being assembled. When a line assembled there is handed to the caller,
 * line_offset is moved to offset while the bytes stay until the next call
 * (the caller's pointer must remain valid until then); that breaks the
 * equation and marks the buffer content as already returned. */
static bool ndjson_pending(const posp2p_ndjson *s) {
  return s->line.len > 0 && s->line_offset + s->line.len == s->offset;
}

void posp2p_ndjson_init(posp2p_ndjson *s, uint32_t max_line,
                        const ProtobufCAllocator *a) {
  memset(s, 0, sizeof(*s));
  s->max_line = max_line ? max_line : POSP2P_MAX_FRAME_DEFAULT;
  /* One byte of slack for the '\r' of a "\r\n" terminator, which is not
   * part of the line but arrives before we can know it ends one. */
  posp2p_buf_init(&s->line, (size_t)s->max_line + 1, a);
}

void posp2p_ndjson_free(posp2p_ndjson *s) {
  posp2p_buf_free(&s->line);
}

/* The requirement a sticky splitter error broke. */
static const char *ndjson_req(int code) {
  switch (code) {
  case POSP2P_ERR_LINE_TOO_LONG: return REQ_LINE_MAX;
  default: return "";
  }
}

static int ndjson_fail(posp2p_ndjson *s, posp2p_error *err, int code,
                       uint64_t offset, const char *req, const char *what) {
  s->failed = code;
  return posp2p_error_set(err, code, offset, req, "%s", what);
}

int posp2p_ndjson_next(posp2p_ndjson *s, const uint8_t *data, size_t len,
                       size_t *consumed, posp2p_frame *out, posp2p_error *err) {
  size_t pos = 0;

  *consumed = 0;
  if (s->failed)
    return posp2p_error_set(err, s->failed, s->offset, ndjson_req(s->failed),
                            "line stream already failed: %s",
                            posp2p_strerror(s->failed));
  if (!ndjson_pending(s))
    s->line.len = 0;

  while (pos < len) {
    const uint8_t *start = data + pos;
    size_t avail = len - pos;
    const uint8_t *nl = memchr(start, '\n', avail);
    size_t seg = nl != NULL ? (size_t)(nl - start) : avail;
    size_t have = s->line.len;

    if (have == 0)
      s->line_offset = s->offset;

    /* A NUL byte is not a splitter error: the line it is in is rejected by
     * posp2p_legacy_decode (LEGACY-5) while the stream goes on (LEGACY-9),
     * because the next '\n' still ends the line. Only the length limit
     * breaks the stream (LEGACY-3). */

    /* Line length without its terminator. Without a '\n' yet, a final '\r'
     * may still turn out to be half of "\r\n", so it is not counted. */
    size_t total = have + seg;
    uint8_t last =
        seg > 0 ? start[seg - 1] : (have > 0 ? s->line.data[have - 1] : 0);
    size_t content = total > 0 && last == '\r' ? total - 1 : total;
    if (content > s->max_line) {
      uint64_t at = s->line_offset + s->max_line;
      *consumed = pos + seg;
      s->offset += seg;
      char msg[POSP2P_ERROR_MSG_MAX];
      snprintf(msg, sizeof msg,
               "line starting at stream offset %llu is longer than %u bytes",
               (unsigned long long)s->line_offset, s->max_line);
      return ndjson_fail(s, err, POSP2P_ERR_LINE_TOO_LONG, at, REQ_LINE_MAX,
                         msg);
    }

    if (nl == NULL) {
      /* Partial line: keep it until its '\n' arrives. */
      int rv = posp2p_buf_append(&s->line, start, seg);
      if (rv != POSP2P_OK) {
        *consumed = pos;
        return ndjson_fail(s, err, rv, s->offset, "",
                           "cannot buffer a partial line");
      }
      pos += seg;
      s->offset += seg;
      break;
    }

    const uint8_t *line;
    if (have == 0) {
      line = start; /* whole line in this input: no copy */
    } else {
      int rv = posp2p_buf_append(&s->line, start, seg);
      if (rv != POSP2P_OK) {
        *consumed = pos;
        return ndjson_fail(s, err, rv, s->offset, "",
                           "cannot buffer a partial line");
      }
      line = s->line.data;
    }
    pos += seg + 1;
    s->offset += seg + 1;
    if (content == 0) {
      /* Empty line (LEGACY-2): skip it. */
      s->line.len = 0;
      continue;
    }
    out->data = line;
    out->len = content;
    out->offset = s->line_offset;
    /* Marks a buffered line as returned (see ndjson_pending). */
    s->line_offset = s->offset;
    *consumed = pos;
    return 1;
  }
  *consumed = pos;
  return 0;
}

int posp2p_ndjson_finish(const posp2p_ndjson *s, posp2p_error *err) {
  if (s->failed)
    return posp2p_error_set(err, s->failed, s->offset, ndjson_req(s->failed),
                            "line stream already failed: %s",
                            posp2p_strerror(s->failed));
  if (ndjson_pending(s))
    return posp2p_error_set(err, POSP2P_ERR_TRUNCATED, s->offset, REQ_LF,
                            "stream ended inside a line (%zu bytes from "
                            "offset %llu without '\\n')",
                            s->line.len, (unsigned long long)s->line_offset);
  return 0;
}

/* ==== Timestamps ========================================================== */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): exact integer arithmetic, no time zone, no libc. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* Inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int64_t *m, int64_t *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int64_t m) {
  static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Read n decimal digits at s; -1 if any is not a digit. */
static int64_t read_digits(const char *s, size_t n) {
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* Local time range the 4-digit-year text form can express. */
static int64_t time_local_min(void) {
  return days_from_civil(0, 1, 1) * MS_PER_DAY;
}
static int64_t time_local_max(void) {
  return days_from_civil(TIME_YEAR_MAX + 1, 1, 1) * MS_PER_DAY - 1;
}

int posp2p_legacy_time_parse(const char *s, size_t n,
                             int32_t utc_offset_minutes, int64_t *ms,
                             uint32_t *us, posp2p_error *err) {
  /* Layout of "YYYY-MM-DDTHH:MM:SS.mmm[uuu]": the separators and where each
   * digit group starts. Everything else must be a digit. */
  static const struct {
    size_t at;
    char c;
  } seps[] = {{4, '-'}, {7, '-'}, {10, 'T'}, {13, ':'}, {16, ':'}, {19, '.'}};

  if (n != TIME_LEN_MS && n != TIME_LEN_US)
    return posp2p_error_set(err, POSP2P_ERR_TIMESTAMP,
                            n < TIME_LEN_MS ? n : TIME_LEN_MS, REQ_TIME,
                            "timestamp \"%.*s\" is %zu characters, not "
                            "YYYY-MM-DDTHH:MM:SS.mmm[uuu] (no zone suffix)",
                            (int)(n < TIME_SHOW_MAX ? n : TIME_SHOW_MAX), s, n);
  size_t sep = 0;
  for (size_t i = 0; i < n; i++) {
    if (sep < sizeof(seps) / sizeof(seps[0]) && i == seps[sep].at) {
      if (s[i] != seps[sep].c)
        return posp2p_error_set(err, POSP2P_ERR_TIMESTAMP, i, REQ_TIME,
                                "timestamp \"%.*s\": expected '%c' at "
                                "position %zu",
                                (int)n, s, seps[sep].c, i);
      sep++;
    } else if (s[i] < '0' || s[i] > '9') {
      return posp2p_error_set(err, POSP2P_ERR_TIMESTAMP, i, REQ_TIME,
                              "timestamp \"%.*s\": expected a digit at "
                              "position %zu",
                              (int)n, s, i);
    }
  }
  int64_t year = read_digits(s, 4), mon = read_digits(s + 5, 2),
          day = read_digits(s + 8, 2), hour = read_digits(s + 11, 2),
          min = read_digits(s + 14, 2), sec = read_digits(s + 17, 2),
          milli = read_digits(s + 20, 3);
  int64_t micro = n == TIME_LEN_US ? read_digits(s + 23, 3) : 0;

  const char *bad = NULL;
  size_t bad_at = 0;
  if (mon < 1 || mon > 12) {
    bad = "month";
    bad_at = 5;
  } else if (day < 1 || day > days_in_month(year, mon)) {
    bad = "day";
    bad_at = 8;
  } else if (hour > 23) {
    bad = "hour";
    bad_at = 11;
  } else if (min > 59) {
    bad = "minute";
    bad_at = 14;
  } else if (sec > 59) {
    /* Dart's DateTime has no leap seconds. */
    bad = "second";
    bad_at = 17;
  }
  if (bad != NULL)
    return posp2p_error_set(err, POSP2P_ERR_TIMESTAMP, bad_at, REQ_TIME,
                            "timestamp \"%.*s\": %s out of range", (int)n, s,
                            bad);

  int64_t local = days_from_civil(year, mon, day) * MS_PER_DAY +
                  ((hour * 60 + min) * 60 + sec) * MS_PER_SECOND + milli;
  *ms = local - (int64_t)utc_offset_minutes * MS_PER_MINUTE;
  *us = (uint32_t)micro;
  return 0;
}

size_t posp2p_legacy_time_format(int64_t ms, uint32_t us,
                                 int32_t utc_offset_minutes, char out[32]) {
  int64_t shift = (int64_t)utc_offset_minutes * MS_PER_MINUTE;

  if (us > 999)
    return 0;
  /* ms + shift, refusing anything outside years 0000..9999 without ever
   * overflowing int64. */
  if (ms < time_local_min() - shift || ms > time_local_max() - shift)
    return 0;
  int64_t local = ms + shift;

  int64_t days = local / MS_PER_DAY;
  int64_t rem = local % MS_PER_DAY;
  if (rem < 0) {
    rem += MS_PER_DAY;
    days--;
  }
  int64_t y, m, d;
  civil_from_days(days, &y, &m, &d);
  int64_t milli = rem % MS_PER_SECOND;
  int64_t secs = rem / MS_PER_SECOND;
  int n = snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03d", (int)y,
                   (int)m, (int)d, (int)(secs / 3600), (int)(secs / 60 % 60),
                   (int)(secs % 60), (int)milli);
  if (us != 0)
    n += snprintf(out + n, (size_t)(32 - n), "%03u", us);
  return (size_t)n;
}

/* ==== JSON parsing ======================================================== */

static int hex4(const uint8_t *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], h;
    if (c >= '0' && c <= '9') {
      h = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      h = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      h = c - 'A' + 10;
    } else {
      return -1;
    }
    v = v * 16 + h;
  }
  return v;
}

/* Decode the "\uXXXX" escape at p[0] (p[0] == '\\', p[1] == 'u') if its
 * digits are there; -1 otherwise (jansson reports the malformed escape). */
static int escape_at(const uint8_t *p, size_t avail) {
  if (avail < 6 || p[0] != '\\' || p[1] != 'u')
    return -1;
  return hex4(p + 2);
}

#define SURROGATE_HI_MIN 0xD800
#define SURROGATE_HI_MAX 0xDBFF
#define SURROGATE_LO_MIN 0xDC00
#define SURROGATE_LO_MAX 0xDFFF
#define ESCAPE_LEN 6 /* "\uXXXX" */
#define STRINGIFY(x) #x
#define STRINGIFY_VALUE(x) STRINGIFY(x)
#define DEPTH_TEXT STRINGIFY_VALUE(POSP2P_JSON_MAX_DEPTH)

typedef struct {
  int code;        /* 0 when the text passed */
  size_t offset;   /* first offending byte */
  const char *req; /* requirement it breaks */
  const char *what;
} guard_result;

/* Byte classes for guard_scan. Most bytes of a legacy line are plain
 * (neither structural nor special), and the scan runs on every line a
 * device receives, so it skips runs of them with one table lookup per byte
 * instead of a chain of comparisons. */
enum {
  G_PLAIN = 0,
  G_NUL,   /* 0x00 */
  G_HIGH,  /* 0x80..0xFF: start of a UTF-8 sequence (or garbage) */
  G_QUOTE, /* '"' */
  G_BSLASH,
  G_OPEN,  /* '{' '[' */
  G_CLOSE, /* '}' ']' */
};

/* Designated initialisers for 0x80..0xFF without the GNU range extension. */
#define G_HIGH8(b)                                                             \
  [(b)] = G_HIGH, [(b) + 1] = G_HIGH, [(b) + 2] = G_HIGH, [(b) + 3] = G_HIGH,  \
  [(b) + 4] = G_HIGH, [(b) + 5] = G_HIGH, [(b) + 6] = G_HIGH,                  \
  [(b) + 7] = G_HIGH
#define G_HIGH64(b)                                                            \
  G_HIGH8(b), G_HIGH8((b) + 8), G_HIGH8((b) + 16), G_HIGH8((b) + 24),          \
      G_HIGH8((b) + 32), G_HIGH8((b) + 40), G_HIGH8((b) + 48),                 \
      G_HIGH8((b) + 56)

static const uint8_t guard_class[256] = {
    [0] = G_NUL,
    ['"'] = G_QUOTE,
    ['\\'] = G_BSLASH,
    ['{'] = G_OPEN,
    ['['] = G_OPEN,
    ['}'] = G_CLOSE,
    [']'] = G_CLOSE,
    G_HIGH64(0x80),
    G_HIGH64(0xC0),
};

/* Index of the first byte at or after i that is not G_PLAIN, or n. */
POSP2P__NO_COVERAGE static size_t guard_skip_plain(const uint8_t *p, size_t i,
                                                   size_t n) {
  while (i < n && guard_class[p[i]] == G_PLAIN)
    i++;
  return i;
}

/* One pass over the raw text: NUL bytes, "\u0000", ill-formed UTF-8, lone
 * surrogate escapes (which no UTF-8 string can hold) and nesting depth. It
 * tracks strings exactly as JSON defines them, so brackets inside strings
 * do not count; on text that is not JSON its verdict may be wrong, but then
 * jansson reports an earlier error (see json_parse). */
static guard_result guard_scan(const uint8_t *p, size_t n) {
  guard_result g = {0, 0, NULL, NULL};
  bool in_str = false;
  int depth = 0;
  size_t i = 0;

  for (;;) {
    i = guard_skip_plain(p, i, n);
    if (i >= n)
      break;
    switch (guard_class[p[i]]) {
    case G_NUL:
      g = (guard_result){POSP2P_ERR_JSON_NUL, i, REQ_TEXT, "NUL byte"};
      return g;
    case G_HIGH: {
      size_t len = posp2p__json_utf8_seq(p + i, n - i);
      if (len == 0) {
        g = (guard_result){POSP2P_ERR_JSON_UTF8, i, REQ_TEXT,
                           "ill-formed UTF-8 sequence"};
        return g;
      }
      i += len;
      continue;
    }
    case G_QUOTE:
      in_str = !in_str;
      break;
    case G_BSLASH:
      if (!in_str || i + 1 >= n)
        break;
      if (p[i + 1] == 'u') {
        int cp = escape_at(p + i, n - i);
        if (cp == 0) {
          g = (guard_result){POSP2P_ERR_JSON_NUL, i, REQ_TEXT,
                             "\\u0000 in a string (C strings cannot hold it)"};
          return g;
        }
        if (cp >= SURROGATE_HI_MIN && cp <= SURROGATE_HI_MAX) {
          /* escape_at succeeded, so n - i >= ESCAPE_LEN */
          int lo = escape_at(p + i + ESCAPE_LEN, n - i - ESCAPE_LEN);
          if (lo < SURROGATE_LO_MIN || lo > SURROGATE_LO_MAX) {
            g = (guard_result){POSP2P_ERR_JSON_UTF8, i, REQ_TEXT,
                               "unpaired surrogate escape"};
            return g;
          }
          i += 2 * ESCAPE_LEN;
          continue;
        }
        if (cp >= SURROGATE_LO_MIN && cp <= SURROGATE_LO_MAX) {
          g = (guard_result){POSP2P_ERR_JSON_UTF8, i, REQ_TEXT,
                             "unpaired surrogate escape"};
          return g;
        }
        i += cp < 0 ? 2 : ESCAPE_LEN;
        continue;
      }
      if (p[i + 1] != 0 && p[i + 1] < 0x80u) {
        i += 2; /* the escaped character cannot end the string */
        continue;
      }
      break;
    case G_OPEN:
      if (!in_str && ++depth > POSP2P_JSON_MAX_DEPTH) {
        g = (guard_result){POSP2P_ERR_JSON_DEPTH, i, REQ_DEPTH,
                           "JSON nested deeper than " DEPTH_TEXT " levels"};
        return g;
      }
      break;
    case G_CLOSE:
      if (!in_str && depth > 0)
        depth--;
      break;
    }
    i++;
  }
  return g;
}

/* Where jansson's error is: the start of the token it names ("... near
 * 'tru'"), else the last byte it read; the end of the input when the input
 * ended too early. jansson's position counts the bytes it consumed. */
static size_t jansson_offset(const json_error_t *je, size_t n) {
  size_t pos = je->position > 0 ? (size_t)je->position : 0;
  if (pos > n)
    pos = n;
  if (json_error_code(je) == json_error_premature_end_of_input)
    return pos;
  const char *near = strstr(je->text, " near '");
  size_t tlen = strlen(je->text);
  if (near != NULL && tlen > 0 && je->text[tlen - 1] == '\'') {
    size_t tok = (size_t)(je->text + tlen - 1 - (near + 7));
    if (tok > 0 && tok <= pos)
      return pos - tok;
  }
  return pos > 0 ? pos - 1 : 0;
}

static int jansson_code(const json_error_t *je) {
  switch (json_error_code(je)) {
  case json_error_out_of_memory: return POSP2P_ERR_NOMEM;
  case json_error_stack_overflow: return POSP2P_ERR_JSON_DEPTH;
  case json_error_invalid_utf8: return POSP2P_ERR_JSON_UTF8;
  case json_error_null_character:
  case json_error_null_byte_in_key: return POSP2P_ERR_JSON_NUL;
  case json_error_numeric_overflow: return POSP2P_ERR_JSON_NUMBER;
  default: return POSP2P_ERR_JSON_SYNTAX;
  }
}

static const char *jansson_req(int code) {
  switch (code) {
  case POSP2P_ERR_JSON_DEPTH: return REQ_DEPTH;
  case POSP2P_ERR_JSON_UTF8:
  case POSP2P_ERR_JSON_NUL: return REQ_TEXT;
  case POSP2P_ERR_JSON_NUMBER: return REQ_INVALID;
  case POSP2P_ERR_NOMEM: return "";
  default: return REQ_OBJECT;
  }
}

/* Parse one JSON text that must be an object. Returns 0 with *root set (the
 * caller decrefs it) or an error with err->offset inside p. */
static int json_parse(const uint8_t *p, size_t n, const char *what,
                      json_t **root, posp2p_error *err) {
  /* Duplicate keys are rejected: the reference reader would silently keep
   * the last one, and two readers keeping different ones is how
   * request-smuggling bugs start. Trailing data is rejected because
   * JSON_DISABLE_EOF_CHECK is not set. */
  const size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY;
  json_error_t je;
  guard_result g = guard_scan(p, n);

  *root = NULL;
  /* Parse only up to the guard's finding: an earlier syntax error wins,
   * and jansson never builds the over-deep part of the tree. */
  json_t *j =
      json_loadb((const char *)p, g.code != 0 ? g.offset : n, flags, &je);
  if (g.code != 0) {
    if (j != NULL ||
        json_error_code(&je) == json_error_premature_end_of_input) {
      json_decref(j);
      return posp2p_error_set(err, g.code, g.offset, g.req,
                              "%s: %s at byte %zu", what, g.what, g.offset);
    }
  }
  if (j == NULL) {
    int code = jansson_code(&je);
    size_t at = jansson_offset(&je, n);
    return posp2p_error_set(err, code, at, jansson_req(code),
                            "%s: %s at byte %zu", what, je.text, at);
  }
  if (!json_is_object(j)) {
    json_decref(j);
    return posp2p_error_set(err, POSP2P_ERR_JSON_TYPE, 0, REQ_OBJECT,
                            "%s: expected a JSON object", what);
  }
  *root = j;
  return 0;
}

/* ==== Embedded JSON text ================================================ */

/* Free-form objects (opaque payloads, cartSync, an unknown type's payload,
 * discovery metadata) are stored as compact JSON in the form Dart's
 * jsonEncode gives the same values: keys in the sender's order (jansson
 * keeps insertion order), integers as integers, reals in Dart's double
 * format, strings with Dart's escapes. Text a Dart sender wrote comes back
 * byte for byte; other senders' text is normalised to what a Dart receiver
 * would make of it. */

/* Compact text of v as a NUL-terminated string allocated from a; NULL when
 * out of memory. */
static char *json_compact(const ProtobufCAllocator *a, const json_t *v) {
  posp2p_buf b;
  posp2p__json_writer w;
  posp2p_buf_init(&b, EMBEDDED_JSON_MAX, a);
  posp2p__json_writer_init(&w, &b);
  posp2p__json_value(&w, v);
  if (w.err == 0 && posp2p_buf_append(&b, "", 1) == POSP2P_OK)
    return (char *)b.data;
  posp2p_buf_free(&b);
  return NULL;
}

/* Write the embedded JSON object text s (from a v2 peer) as a value, after
 * checking it with the same rules as a received line: whatever was put
 * there must not break the legacy line (a raw '\n' would end it) or its
 * receiver. */
static int emit_embedded(posp2p__json_writer *w, const char *s,
                         const char *what, const char *req, posp2p_error *err) {
  json_t *j;
  posp2p_error perr;
  if (json_parse((const uint8_t *)s, strlen(s), what, &j, &perr) != 0)
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, req, "cannot encode: %s",
                            perr.message);
  posp2p__json_value(w, j);
  json_decref(j);
  return 0;
}

/* ==== Decoding helpers ==================================================== */

/* One step of the key path: an object key, or an array index when key is
 * NULL. The path is rendered only when an error is reported. */
typedef struct {
  const char *key;
  size_t index;
} path_step;

typedef struct {
  const ProtobufCAllocator *a;
  posp2p_error *err;
  int32_t utc_offset;
  const char *req; /* requirement broken by a missing or mistyped key */
  path_step path[PATH_MAX_DEPTH]; /* where in the message the decoder is */
  size_t depth;
} decoder;

static void decoder_init(decoder *d, const ProtobufCAllocator *a,
                         int32_t utc_offset, const char *req,
                         posp2p_error *err) {
  d->a = a;
  d->err = err;
  d->utc_offset = utc_offset;
  d->req = req;
  d->depth = 0;
}

/* Descend into obj[key] (key != NULL) or arr[index]; returns the depth to
 * restore with path_pop. */
static size_t path_push(decoder *d, const char *key, size_t index) {
  size_t old = d->depth;
  if (d->depth < PATH_MAX_DEPTH) {
    d->path[d->depth].key = key;
    d->path[d->depth].index = index;
    d->depth++;
  }
  return old;
}

static void path_pop(decoder *d, size_t old) {
  d->depth = old;
}

/* "payload.items[3].price" for the current path plus key (if not NULL). */
static void path_render(const decoder *d, const char *key, char *out,
                        size_t size) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i <= d->depth && o < size; i++) {
    const char *k = i < d->depth ? d->path[i].key : key;
    int n;
    if (i == d->depth && key == NULL)
      break;
    if (k != NULL) {
      n = snprintf(out + o, size - o, "%s%s", o > 0 ? "." : "", k);
    } else {
      n = snprintf(out + o, size - o, "[%zu]", d->path[i].index);
    }
    if (n < 0)
      break;
    o += (size_t)n;
  }
}

#if defined(__GNUC__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif
static int fail(decoder *d, int code, const char *req, const char *key,
                const char *fmt, ...) PRINTF_LIKE(5, 6);

/* Error about obj[key] of the current object, or (key NULL) about the
 * current path itself. */
static int fail(decoder *d, int code, const char *req, const char *key,
                const char *fmt, ...) {
  char path[PATH_MAX_LEN], msg[POSP2P_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  path_render(d, key, path, sizeof path);
  return posp2p_error_set(d->err, code, 0, req, "%s: %s", path, msg);
}

static int fail_nomem(decoder *d) {
  return posp2p_error_set(d->err, POSP2P_ERR_NOMEM, 0, "", "out of memory");
}

/* Accepted JSON types of a key. */
enum {
  T_STRING = 1 << 0,
  T_INTEGER = 1 << 1,
  T_REAL = 1 << 2,
  T_BOOL = 1 << 3,
  T_OBJECT = 1 << 4,
  T_ARRAY = 1 << 5,
  T_NUMBER = T_INTEGER | T_REAL
};

typedef enum {
  REQUIRED, /* must be there and not null */
  NULLABLE  /* null or absent both mean "no value" (LEGACY-23, 16.8) */
} presence;

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "object";
  case JSON_ARRAY: return "array";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return "integer";
  case JSON_REAL: return "number";
  case JSON_TRUE:
  case JSON_FALSE: return "bool";
  default: return "null";
  }
}

static const char *want_name(int want) {
  switch (want) {
  case T_STRING: return "string";
  case T_INTEGER: return "integer";
  case T_NUMBER: return "number";
  case T_BOOL: return "bool";
  case T_OBJECT: return "object";
  default: return "array";
  }
}

static int type_bit(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_STRING: return T_STRING;
  case JSON_INTEGER: return T_INTEGER;
  case JSON_REAL: return T_REAL;
  case JSON_TRUE:
  case JSON_FALSE: return T_BOOL;
  case JSON_OBJECT: return T_OBJECT;
  case JSON_ARRAY: return T_ARRAY;
  default: return 0;
  }
}

/* obj[key] checked against the accepted types. *out is NULL when the key is
 * null or absent and that is allowed. */
static int field(decoder *d, const json_t *obj, const char *key, int want,
                 presence pr, json_t **out) {
  json_t *v = json_object_get(obj, key);
  *out = NULL;
  if (v == NULL || json_is_null(v)) {
    if (pr == NULLABLE)
      return 0;
    if (v == NULL)
      return fail(d, POSP2P_ERR_MISSING_FIELD, d->req, key, "missing");
    return fail(d, POSP2P_ERR_JSON_TYPE, d->req, key, "expected %s, got null",
                want_name(want));
  }
  if ((type_bit(v) & want) == 0)
    return fail(d, POSP2P_ERR_JSON_TYPE, d->req, key, "expected %s, got %s",
                want_name(want), type_name(v));
  *out = v;
  return 0;
}

/* String key copied into *dst (allocated from d->a). With NULLABLE, *set
 * tells whether a value was there. */
static int get_string(decoder *d, const json_t *obj, const char *key,
                      presence pr, char **dst, bool *set) {
  json_t *v;
  int rv = field(d, obj, key, T_STRING, pr, &v);
  if (set != NULL)
    *set = false;
  if (rv != 0 || v == NULL)
    return rv;
  char *s =
      posp2p_mem_strndup(d->a, json_string_value(v), json_string_length(v));
  if (s == NULL)
    return fail_nomem(d);
  *dst = s;
  if (set != NULL)
    *set = true;
  return 0;
}

/* String key returned as a pointer into the tree (no copy). */
static int peek_string(decoder *d, const json_t *obj, const char *key,
                       const char **s, size_t *n) {
  json_t *v;
  int rv = field(d, obj, key, T_STRING, REQUIRED, &v);
  if (rv != 0)
    return rv;
  *s = json_string_value(v);
  *n = json_string_length(v);
  return 0;
}

/* Integer key within [min, max] (the range of the field it maps to). */
static int get_int(decoder *d, const json_t *obj, const char *key, presence pr,
                   int64_t min, int64_t max, int64_t *dst, bool *set) {
  json_t *v;
  int rv = field(d, obj, key, T_INTEGER, pr, &v);
  if (set != NULL)
    *set = false;
  if (rv != 0 || v == NULL)
    return rv;
  json_int_t x = json_integer_value(v);
  if (x < min || x > max)
    return fail(d, POSP2P_ERR_RANGE, d->req, key, "%lld is outside %lld..%lld",
                (long long)x, (long long)min, (long long)max);
  *dst = x;
  if (set != NULL)
    *set = true;
  return 0;
}

static int get_bool(decoder *d, const json_t *obj, const char *key, presence pr,
                    protobuf_c_boolean *dst, bool *set) {
  json_t *v;
  int rv = field(d, obj, key, T_BOOL, pr, &v);
  if (set != NULL)
    *set = false;
  if (rv != 0 || v == NULL)
    return rv;
  *dst = json_is_true(v);
  if (set != NULL)
    *set = true;
  return 0;
}

/* The compact text of the object obj[key] into *dst (see emit_json). A
 * null or missing key leaves *dst alone. */
static int get_object_json(decoder *d, const json_t *obj, const char *key,
                           char **dst) {
  json_t *v;
  int rv = field(d, obj, key, T_OBJECT, NULLABLE, &v);
  if (rv != 0 || v == NULL)
    return rv;
  char *s = json_compact(d->a, v);
  if (s == NULL)
    return fail_nomem(d);
  *dst = s;
  return 0;
}

/* The compact text of payload p into *dst; "{}" when p is NULL because the
 * payload key is missing (LEGACY-23). */
static int payload_json(decoder *d, const json_t *p, char **dst) {
  char *s =
      p != NULL ? json_compact(d->a, p) : posp2p_mem_strndup(d->a, "{}", 2);
  if (s == NULL)
    return fail_nomem(d);
  *dst = s;
  return 0;
}

/* Exactly "P2PDeviceType.<role>" -> role; anything else, a bare role name
 * included, falls back to secondaryPOS as the reference reader does
 * (LEGACY-32, LEGACY-33). */
static Posp2p__V2__DeviceType device_type_parse(const char *s, size_t n) {
  int t = -1;
  if (n > DEVICE_TYPE_PREFIX_LEN &&
      memcmp(s, DEVICE_TYPE_PREFIX, DEVICE_TYPE_PREFIX_LEN) == 0)
    t = posp2p_device_type_from_name(s + DEVICE_TYPE_PREFIX_LEN,
                                     n - DEVICE_TYPE_PREFIX_LEN);
  return t > 0 ? (Posp2p__V2__DeviceType)t
               : POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS;
}

static int get_device_type(decoder *d, const json_t *obj, const char *key,
                           Posp2p__V2__DeviceType *dst) {
  const char *s;
  size_t n;
  int rv = peek_string(d, obj, key, &s, &n);
  if (rv == 0)
    *dst = device_type_parse(s, n);
  return rv;
}

static int get_order_status(decoder *d, const json_t *obj, const char *key,
                            Posp2p__V2__OrderStatusCode *dst) {
  const char *s;
  size_t n;
  int rv = peek_string(d, obj, key, &s, &n);
  if (rv != 0)
    return rv;
  int v = posp2p_order_status_from_name(s, n);
  *dst = v >= 0 ? (Posp2p__V2__OrderStatusCode)v
                : POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PENDING;
  return 0;
}

static int get_timestamp(decoder *d, const json_t *obj, const char *key,
                         presence pr, int64_t *ms, uint32_t *us, bool *set) {
  json_t *v;
  posp2p_error terr;
  int rv = field(d, obj, key, T_STRING, pr, &v);
  if (set != NULL)
    *set = false;
  if (rv != 0 || v == NULL)
    return rv;
  rv = posp2p_legacy_time_parse(json_string_value(v), json_string_length(v),
                                d->utc_offset, ms, us, &terr);
  if (rv != 0)
    return fail(d, rv, REQ_TIME, key, "%s", terr.message);
  if (set != NULL)
    *set = true;
  return 0;
}

/* Allocate an array of n pointers (NULL for n == 0). */
static int alloc_array(decoder *d, size_t n, size_t elem, void **dst) {
  *dst = NULL;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / elem)
    return fail_nomem(d);
  *dst = posp2p_mem_calloc(d->a, n * elem);
  return *dst != NULL ? 0 : fail_nomem(d);
}

/* Array of strings into (*dst, *count); *count grows as elements are copied
 * so that a failure halfway leaves a message protobuf-c can free. */
static int get_string_array(decoder *d, const json_t *obj, const char *key,
                            char ***dst, size_t *count) {
  json_t *arr;
  int rv = field(d, obj, key, T_ARRAY, REQUIRED, &arr);
  if (rv != 0)
    return rv;
  size_t n = json_array_size(arr);
  void *mem;
  if ((rv = alloc_array(d, n, sizeof(char *), &mem)) != 0)
    return rv;
  *dst = mem;
  *count = 0;
  size_t saved = path_push(d, key, 0);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_string(v)) {
      path_push(d, NULL, i);
      rv = fail(d, POSP2P_ERR_JSON_TYPE, d->req, NULL,
                "expected string, got %s", type_name(v));
      break;
    }
    char *s =
        posp2p_mem_strndup(d->a, json_string_value(v), json_string_length(v));
    if (s == NULL) {
      rv = fail_nomem(d);
      break;
    }
    (*dst)[(*count)++] = s;
  }
  path_pop(d, saved);
  return rv;
}

/* Allocate and initialise a sub-message. */
#define NEW_MSG(d, type, init_fn, dst)                                         \
  do {                                                                         \
    (dst) = posp2p_mem_alloc((d)->a, sizeof(type));                            \
    if ((dst) == NULL)                                                         \
      return fail_nomem(d);                                                    \
    init_fn(dst);                                                              \
  } while (0)

/* ==== Amounts ============================================================= */

/* An amount as exact decimal: value = (negative ? -1 : 1) * digits * 10^exp10,
 * digits without leading or trailing zeros ("0" for zero). */
typedef struct {
  char digits[24]; /* up to 19 digits of an int64, or 17 of a double */
  int ndigits;
  int exp10;
  bool negative;
} amount;

/* The amount's decimal text: for a JSON real, the shortest decimal that
 * reads back as the same double, which is the text Dart wrote (LEGACY-36);
 * for a JSON integer, its digits. Minor units are then computed from these
 * digits with integer arithmetic only. */
static void amount_from_json(const json_t *v, amount *am) {
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    uint64_t u = x < 0 ? 0u - (uint64_t)x : (uint64_t)x;
    am->negative = x < 0;
    am->ndigits =
        snprintf(am->digits, sizeof am->digits, "%llu", (unsigned long long)u);
    am->exp10 = 0;
  } else {
    posp2p__json_decimal dec;
    posp2p__json_shortest(json_real_value(v), &dec);
    memcpy(am->digits, dec.digits, (size_t)dec.ndigits + 1);
    am->ndigits = dec.ndigits;
    am->exp10 = dec.point - dec.ndigits;
    am->negative = dec.negative;
  }
  while (am->ndigits > 1 && am->digits[am->ndigits - 1] == '0') {
    am->digits[--am->ndigits] = '\0';
    am->exp10++;
  }
  if (am->ndigits == 1 && am->digits[0] == '0') {
    am->exp10 = 0;
    am->negative = false; /* int64 has no -0 */
  }
}

/* Fractional digits the amount needs. */
static int amount_scale(const amount *am) {
  return am->exp10 < 0 ? -am->exp10 : 0;
}

/* digits * 10^(exp10 + e), or false beyond 2^53. */
static bool amount_minor(const amount *am, int e, int64_t *minor) {
  uint64_t m = 0;
  for (int i = 0; i < am->ndigits; i++) {
    uint64_t dig = (uint64_t)(am->digits[i] - '0');
    if (m > (AMOUNT_MINOR_MAX - dig) / 10)
      return false;
    m = m * 10 + dig;
  }
  for (int k = 0; k < am->exp10 + e; k++) {
    if (m > AMOUNT_MINOR_MAX / 10)
      return false;
    m *= 10;
  }
  *minor = am->negative ? -(int64_t)m : (int64_t)m;
  return true;
}

/* Look at obj[key] as an amount; *present is false for null/absent. */
static int amount_field(decoder *d, const json_t *obj, const char *key,
                        presence pr, amount *am, bool *present) {
  json_t *v;
  int rv = field(d, obj, key, T_NUMBER, pr, &v);
  *present = false;
  if (rv != 0 || v == NULL)
    return rv;
  amount_from_json(v, am);
  *present = true;
  return 0;
}

/* Raise *e to what obj[key] needs. */
static int amount_scan(decoder *d, const json_t *obj, const char *key,
                       presence pr, int *e) {
  amount am;
  bool present;
  int rv = amount_field(d, obj, key, pr, &am, &present);
  if (rv != 0 || !present)
    return rv;
  int need = amount_scale(&am);
  if (need > POSP2P_LEGACY_MAX_EXPONENT)
    return fail(d, POSP2P_ERR_JSON_NUMBER, REQ_AMOUNT, key,
                "amount needs %d fractional digits, at most %d are supported",
                need, POSP2P_LEGACY_MAX_EXPONENT);
  if (need > *e)
    *e = need;
  return 0;
}

/* obj[key] in minor units at exponent e (already large enough). */
static int amount_get(decoder *d, const json_t *obj, const char *key,
                      presence pr, int e, int64_t *minor, bool *set) {
  amount am;
  bool present;
  int rv = amount_field(d, obj, key, pr, &am, &present);
  if (set != NULL)
    *set = false;
  if (rv != 0 || !present)
    return rv;
  if (!amount_minor(&am, e, minor))
    return fail(d, POSP2P_ERR_JSON_NUMBER, REQ_AMOUNT, key,
                "amount is outside +/-2^53 units of 10^-%d", e);
  if (set != NULL)
    *set = true;
  return 0;
}

/* ==== Payload decoding ==================================================== */

static int decode_device_info(decoder *d, const json_t *p, char **name,
                              Posp2p__V2__DeviceType *type, uint32_t *port) {
  int64_t v = 0;
  int rv;
  if ((rv = get_string(d, p, "deviceName", REQUIRED, name, NULL)) != 0 ||
      (rv = get_device_type(d, p, "deviceType", type)) != 0 ||
      (rv = get_int(d, p, "port", REQUIRED, 0, PORT_MAX, &v, NULL)) != 0)
    return rv;
  *port = (uint32_t)v;
  return 0;
}

static const char *const order_amount_keys[] = {
    "subtotal", "tax", "serviceCharge", "discount", "total"};
/* subtotal and total are required, the other three nullable. */
static presence order_amount_presence(size_t i) {
  return i == 0 || i == 4 ? REQUIRED : NULLABLE;
}

/* The smallest exponent in 2..9 that makes every amount of the order an
 * integer number of minor units (LEGACY-36). */
static int order_exponent(decoder *d, const json_t *p, int *e) {
  json_t *items;
  int rv;
  *e = AMOUNT_MIN_EXPONENT;
  if ((rv = field(d, p, "items", T_ARRAY, REQUIRED, &items)) != 0)
    return rv;
  for (size_t i = 0; i < json_array_size(items); i++) {
    json_t *it = json_array_get(items, i);
    size_t saved = path_push(d, "items", 0);
    path_push(d, NULL, i);
    if (!json_is_object(it)) {
      rv = fail(d, POSP2P_ERR_JSON_TYPE, d->req, NULL,
                "expected object, got %s", type_name(it));
    } else if ((rv = amount_scan(d, it, "price", REQUIRED, e)) == 0) {
      rv = amount_scan(d, it, "discountPerItem", NULLABLE, e);
    }
    path_pop(d, saved);
    if (rv != 0)
      return rv;
  }
  for (size_t k = 0;
       k < sizeof(order_amount_keys) / sizeof(order_amount_keys[0]); k++) {
    if ((rv = amount_scan(d, p, order_amount_keys[k], order_amount_presence(k),
                          e)) != 0)
      return rv;
  }
  return 0;
}

static int decode_order_item(decoder *d, const json_t *it, int e,
                             Posp2p__V2__OrderItem *oi) {
  int64_t v = 0;
  bool set;
  int rv;
  if ((rv = get_string(d, it, "productId", REQUIRED, &oi->product_id, NULL)) !=
          0 ||
      (rv = get_string(d, it, "productName", REQUIRED, &oi->product_name,
                       NULL)) != 0 ||
      (rv = amount_get(d, it, "price", REQUIRED, e, &oi->price_minor, NULL)) !=
          0 ||
      (rv = get_int(d, it, "quantity", REQUIRED, 0, INT32_MAX, &v, NULL)) != 0)
    return rv;
  oi->quantity = (int32_t)v;
  if ((rv = get_string_array(d, it, "modifiers", &oi->modifiers,
                             &oi->n_modifiers)) != 0)
    return rv;
  if ((rv = get_string(d, it, "variant", NULLABLE, &oi->variant, &set)) != 0)
    return rv;
  if (set)
    oi->opt_variant_case = ITEM_CASE(OPT_VARIANT_VARIANT);
  if ((rv = get_string(d, it, "notes", NULLABLE, &oi->notes, &set)) != 0)
    return rv;
  if (set)
    oi->opt_notes_case = ITEM_CASE(OPT_NOTES_NOTES);
  if ((rv = amount_get(d, it, "discountPerItem", NULLABLE, e,
                       &oi->discount_per_item_minor, &set)) != 0)
    return rv;
  if (set)
    oi->opt_discount_per_item_minor_case =
        ITEM_CASE(OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR);
  return 0;
}

static int decode_order_forward(decoder *d, const json_t *p,
                                Posp2p__V2__OrderForward *of) {
  int e;
  int64_t v = 0;
  bool set;
  int rv;

  if ((rv = get_string(d, p, "orderId", REQUIRED, &of->order_id, NULL)) != 0)
    return rv;
  if ((rv = order_exponent(d, p, &e)) != 0)
    return rv;
  of->currency_exponent = (uint32_t)e;

  json_t *items = json_object_get(p, "items"); /* checked by order_exponent */
  size_t n = json_array_size(items);
  void *mem;
  if ((rv = alloc_array(d, n, sizeof(Posp2p__V2__OrderItem *), &mem)) != 0)
    return rv;
  of->items = mem;
  for (size_t i = 0; i < n; i++) {
    Posp2p__V2__OrderItem *oi;
    NEW_MSG(d, Posp2p__V2__OrderItem, posp2p__v2__order_item__init, oi);
    of->items[of->n_items++] = oi;
    size_t saved = path_push(d, "items", 0);
    path_push(d, NULL, i);
    rv = decode_order_item(d, json_array_get(items, i), e, oi);
    path_pop(d, saved);
    if (rv != 0)
      return rv;
  }

  if ((rv = amount_get(d, p, "subtotal", REQUIRED, e, &of->subtotal_minor,
                       NULL)) != 0)
    return rv;
  if ((rv = amount_get(d, p, "tax", NULLABLE, e, &of->tax_minor, &set)) != 0)
    return rv;
  if (set)
    of->opt_tax_minor_case = OF_CASE(OPT_TAX_MINOR_TAX_MINOR);
  if ((rv = amount_get(d, p, "serviceCharge", NULLABLE, e,
                       &of->service_charge_minor, &set)) != 0)
    return rv;
  if (set)
    of->opt_service_charge_minor_case =
        OF_CASE(OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR);
  if ((rv = amount_get(d, p, "discount", NULLABLE, e, &of->discount_minor,
                       &set)) != 0)
    return rv;
  if (set)
    of->opt_discount_minor_case = OF_CASE(OPT_DISCOUNT_MINOR_DISCOUNT_MINOR);
  if ((rv = amount_get(d, p, "total", REQUIRED, e, &of->total_minor, NULL)) !=
      0)
    return rv;

  if ((rv = get_order_status(d, p, "orderStatus", &of->order_status)) != 0)
    return rv;
  const char *s;
  size_t sn;
  if ((rv = peek_string(d, p, "destination", &s, &sn)) != 0)
    return rv;
  int dest = posp2p_destination_from_name(s, sn);
  of->destination = dest >= 0 ? (Posp2p__V2__Destination)dest
                              : POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS;

  if ((rv = get_int(d, p, "tableNumber", NULLABLE, INT32_MIN, INT32_MAX, &v,
                    &set)) != 0)
    return rv;
  if (set) {
    of->table_number = (int32_t)v;
    of->opt_table_number_case = OF_CASE(OPT_TABLE_NUMBER_TABLE_NUMBER);
  }
  if ((rv = get_string(d, p, "customerName", NULLABLE, &of->customer_name,
                       &set)) != 0)
    return rv;
  if (set)
    of->opt_customer_name_case = OF_CASE(OPT_CUSTOMER_NAME_CUSTOMER_NAME);
  if ((rv = get_string(d, p, "specialInstructions", NULLABLE,
                       &of->special_instructions, &set)) != 0)
    return rv;
  if (set)
    of->opt_special_instructions_case =
        OF_CASE(OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS);
  if ((rv = get_timestamp(d, p, "targetDeliveryTime", NULLABLE,
                          &of->target_delivery_time_ms,
                          &of->target_delivery_time_us, &set)) != 0)
    return rv;
  if (set)
    of->opt_target_delivery_time_ms_case =
        OF_CASE(OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS);
  return 0;
}

static int decode_order_status(decoder *d, const json_t *p,
                               Posp2p__V2__OrderStatus *st) {
  int64_t v = 0;
  bool set;
  int rv;
  if ((rv = get_string(d, p, "orderId", REQUIRED, &st->order_id, NULL)) != 0 ||
      (rv = get_order_status(d, p, "newStatus", &st->new_status)) != 0 ||
      (rv = get_string(d, p, "statusReason", NULLABLE, &st->status_reason,
                       &set)) != 0)
    return rv;
  if (set)
    st->opt_status_reason_case = STATUS_CASE(OPT_STATUS_REASON_STATUS_REASON);
  if ((rv = get_int(d, p, "estimatedTime", NULLABLE, INT32_MIN, INT32_MAX, &v,
                    &set)) != 0)
    return rv;
  if (set) {
    st->estimated_time_s = (int32_t)v;
    st->opt_estimated_time_s_case =
        STATUS_CASE(OPT_ESTIMATED_TIME_S_ESTIMATED_TIME_S);
  }
  return 0;
}

static int decode_error(decoder *d, const json_t *p, Posp2p__V2__Error *er) {
  const char *code;
  size_t n;
  bool set;
  int rv;
  if ((rv = peek_string(d, p, "errorCode", &code, &n)) != 0)
    return rv;
  /* A name of the ErrorCode enum becomes the code; any other text (also
   * "UNSPECIFIED" and "") is kept verbatim so that it is written back the
   * same (LEGACY-28). */
  int c = posp2p_error_code_from_name(code, n);
  if (c > 0) {
    er->code = (Posp2p__V2__ErrorCode)c;
  } else {
    char *text = posp2p_mem_strndup(d->a, code, n);
    if (text == NULL)
      return fail_nomem(d);
    er->legacy_code = text;
  }
  if ((rv = get_string(d, p, "errorDescription", REQUIRED, &er->description,
                       NULL)) != 0 ||
      (rv = get_string(d, p, "errorDetails", NULLABLE, &er->details, &set)) !=
          0)
    return rv;
  if (set)
    er->opt_details_case = ERROR_CASE(OPT_DETAILS_DETAILS);
  return 0;
}

/* An unknown messageType is treated as an error (LEGACY-6): the v2 message
 * is an ERROR UNKNOWN_MESSAGE_TYPE naming the type, with the payload kept
 * as compact JSON in details so that nothing the sender said is lost. */
static int decode_unknown_type(decoder *d, const json_t *type, const json_t *p,
                               Posp2p__V2__Error *er) {
  er->code = POSP2P__V2__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE_TYPE;
  char *name = posp2p_mem_strndup(d->a, json_string_value(type),
                                  json_string_length(type));
  if (name == NULL)
    return fail_nomem(d);
  er->description = name;
  int rv = payload_json(d, p, &er->details);
  if (rv == 0)
    er->opt_details_case = ERROR_CASE(OPT_DETAILS_DETAILS);
  return rv;
}

/* Legacy type name -> v2 type; -1 for names the legacy wire does not have
 * (hello and goodbye exist only on v2). */
static int legacy_type(const char *s, size_t n) {
  int t = posp2p_message_type_from_name(s, n);
  if (t == MT(HELLO) || t == MT(GOODBYE) || t == MT(UNSPECIFIED))
    return -1;
  return t;
}

/* p is the payload object, NULL when the key is missing (LEGACY-23). */
static int decode_payload(decoder *d, posp2p_envelope *e, const json_t *type,
                          const json_t *p) {
  size_t saved = path_push(d, "payload", 0);
  int rv = 0;
  int t = legacy_type(json_string_value(type), json_string_length(type));

  e->message_type = t >= 0 ? (Posp2p__V2__MessageType)t : MT(ERROR);
  switch (t) {
  case MT(DEVICE_INFO): {
    Posp2p__V2__DeviceInfo *m;
    NEW_MSG(d, Posp2p__V2__DeviceInfo, posp2p__v2__device_info__init, m);
    e->device_info = m;
    e->payload_case = ENV(PAYLOAD_DEVICE_INFO);
    rv = decode_device_info(d, p, &m->device_name, &m->device_type, &m->port);
    break;
  }
  case MT(DISCOVERY): {
    Posp2p__V2__Discovery *m;
    NEW_MSG(d, Posp2p__V2__Discovery, posp2p__v2__discovery__init, m);
    e->discovery = m;
    e->payload_case = ENV(PAYLOAD_DISCOVERY);
    rv = decode_device_info(d, p, &m->device_name, &m->device_type, &m->port);
    break;
  }
  case MT(HEARTBEAT): {
    /* The reference sends {}; other keys are ignored like unknown keys
     * everywhere else. */
    Posp2p__V2__Heartbeat *m;
    NEW_MSG(d, Posp2p__V2__Heartbeat, posp2p__v2__heartbeat__init, m);
    e->heartbeat = m;
    e->payload_case = ENV(PAYLOAD_HEARTBEAT);
    break;
  }
  case MT(ACKNOWLEDGEMENT): {
    Posp2p__V2__Acknowledgement *m;
    NEW_MSG(d, Posp2p__V2__Acknowledgement, posp2p__v2__acknowledgement__init,
            m);
    e->acknowledgement = m;
    e->payload_case = ENV(PAYLOAD_ACKNOWLEDGEMENT);
    rv = get_string(d, p, "acknowledgedMessageId", REQUIRED,
                    &m->acknowledged_message_id, NULL);
    break;
  }
  case MT(ORDER_FORWARD): {
    Posp2p__V2__OrderForward *m;
    NEW_MSG(d, Posp2p__V2__OrderForward, posp2p__v2__order_forward__init, m);
    e->order_forward = m;
    e->payload_case = ENV(PAYLOAD_ORDER_FORWARD);
    rv = decode_order_forward(d, p, m);
    break;
  }
  case MT(ORDER_STATUS): {
    Posp2p__V2__OrderStatus *m;
    NEW_MSG(d, Posp2p__V2__OrderStatus, posp2p__v2__order_status__init, m);
    e->order_status = m;
    e->payload_case = ENV(PAYLOAD_ORDER_STATUS);
    rv = decode_order_status(d, p, m);
    break;
  }
  case MT(ORDER_CANCEL): {
    Posp2p__V2__OrderCancel *m;
    NEW_MSG(d, Posp2p__V2__OrderCancel, posp2p__v2__order_cancel__init, m);
    e->order_cancel = m;
    e->payload_case = ENV(PAYLOAD_ORDER_CANCEL);
    if ((rv = get_string(d, p, "orderId", REQUIRED, &m->order_id, NULL)) == 0 &&
        (rv = get_string(d, p, "reason", REQUIRED, &m->reason, NULL)) == 0)
      rv = get_bool(d, p, "refund", REQUIRED, &m->refund, NULL);
    break;
  }
  case MT(CART_SYNC): {
    Posp2p__V2__CartSync *m;
    NEW_MSG(d, Posp2p__V2__CartSync, posp2p__v2__cart_sync__init, m);
    e->cart_sync = m;
    e->payload_case = ENV(PAYLOAD_CART_SYNC);
    rv = payload_json(d, p, &m->legacy_json);
    break;
  }
  case MT(ERROR): {
    Posp2p__V2__Error *m;
    NEW_MSG(d, Posp2p__V2__Error, posp2p__v2__error__init, m);
    e->error = m;
    e->payload_case = ENV(PAYLOAD_ERROR);
    rv = decode_error(d, p, m);
    break;
  }
  case -1: {
    Posp2p__V2__Error *m;
    NEW_MSG(d, Posp2p__V2__Error, posp2p__v2__error__init, m);
    e->error = m;
    e->payload_case = ENV(PAYLOAD_ERROR);
    rv = decode_unknown_type(d, type, p, m);
    break;
  }
  default: {
    /* orderSync, productSync, configSync, serverMode, broadcastUpdate,
     * deviceCommand, deviceResponse, warning: the object is kept as compact
     * JSON, "{}" included, so that the round trip writes back exactly what
     * a Dart sender wrote (LEGACY-30). */
    Posp2p__V2__OpaquePayload *m;
    NEW_MSG(d, Posp2p__V2__OpaquePayload, posp2p__v2__opaque_payload__init, m);
    e->opaque = m;
    e->payload_case = ENV(PAYLOAD_OPAQUE);
    rv = payload_json(d, p, &m->json);
    break;
  }
  }
  path_pop(d, saved);
  return rv;
}

static int decode_envelope(decoder *d, const json_t *root, posp2p_envelope *e) {
  json_t *type, *payload;
  int64_t v = 0;
  bool set;
  protobuf_c_boolean ack;
  int rv;

  if ((rv = get_string(d, root, "messageId", REQUIRED, &e->message_id, NULL)) !=
          0 ||
      (rv = field(d, root, "messageType", T_STRING, REQUIRED, &type)) != 0 ||
      (rv = get_string(d, root, "fromDeviceId", REQUIRED, &e->from_device_id,
                       NULL)) != 0 ||
      (rv = get_string(d, root, "toDeviceId", NULLABLE, &e->to_device_id,
                       &set)) != 0)
    return rv;
  if (set)
    e->opt_to_device_id_case = ENV(OPT_TO_DEVICE_ID_TO_DEVICE_ID);
  if ((rv = get_timestamp(d, root, "timestamp", REQUIRED, &e->timestamp_ms,
                          &e->timestamp_us, NULL)) != 0)
    return rv;
  /* A missing payload is {} (LEGACY-23); null is not an object. */
  payload = NULL;
  if (json_object_get(root, "payload") != NULL &&
      (rv = field(d, root, "payload", T_OBJECT, REQUIRED, &payload)) != 0)
    return rv;
  if ((rv = get_int(d, root, "priority", NULLABLE, 0, POSP2P_PRIORITY_MAX, &v,
                    &set)) != 0)
    return rv;
  if (set) {
    e->priority = (uint32_t)v;
    e->opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  }
  if ((rv = get_bool(d, root, "acknowledged", NULLABLE, &ack, &set)) != 0)
    return rv;
  if (set) {
    e->acknowledged = ack;
    e->opt_acknowledged_case = ENV(OPT_ACKNOWLEDGED_ACKNOWLEDGED);
  }
  return decode_payload(d, e, type, payload);
}

int posp2p_legacy_decode(const uint8_t *line, size_t len,
                         const posp2p_legacy_opts *opts,
                         const ProtobufCAllocator *a, posp2p_envelope **out,
                         posp2p_error *err) {
  decoder d;
  json_t *root;
  int rv;

  *out = NULL;
  a = alloc_or_default(a);
  if ((rv = json_parse(line, len, "legacy message", &root, err)) != 0)
    return rv;
  posp2p_envelope *e = posp2p_mem_alloc(a, sizeof(*e));
  if (e == NULL) {
    json_decref(root);
    return posp2p_error_set(err, POSP2P_ERR_NOMEM, 0, "", "out of memory");
  }
  posp2p_envelope_init(e);
  decoder_init(&d, a, opts != NULL ? opts->utc_offset_minutes : 0, REQ_INVALID,
               err);
  rv = decode_envelope(&d, root, e);
  json_decref(root);
  if (rv == 0)
    rv = posp2p_envelope_validate(e, err);
  if (rv != 0) {
    posp2p_envelope_free(e, a);
    return rv;
  }
  *out = e;
  return 0;
}

/* ==== Encoding ============================================================ */

typedef struct {
  posp2p__json_writer w;
  posp2p_error *err;
  int32_t utc_offset;
} encoder;

static void put_key(encoder *en, const char *key) {
  posp2p__json_key(&en->w, key, strlen(key));
}

static void put_opt_string(encoder *en, const char *key, bool set,
                           const char *s) {
  put_key(en, key);
  if (set) {
    posp2p__json_cstring(&en->w, s);
  } else {
    posp2p__json_null(&en->w);
  }
}

static void put_device_type(encoder *en, const char *key, int type) {
  char buf[64];
  const char *name = posp2p_device_type_name(type);
  /* A value the legacy wire cannot name is written as the reader's own
   * fallback, so the receiver ends up with what it would assume anyway. */
  snprintf(buf, sizeof buf, "%s%s", DEVICE_TYPE_PREFIX,
           name != NULL ? name : "secondaryPOS");
  put_key(en, key);
  posp2p__json_cstring(&en->w, buf);
}

/* minor / 10^e as the double Dart would hold, written as Dart prints it.
 * The division is done in decimal (minor's digits with a point inserted)
 * and rounded once by strtod, so it is the double nearest the exact value:
 * the one the decoder's amount text came from. */
static int put_amount(encoder *en, const char *key, int64_t minor, uint32_t e) {
  uint64_t u = minor < 0 ? 0u - (uint64_t)minor : (uint64_t)minor;
  /* The receiver reads the amount back at exponent 2 or more (LEGACY-36),
   * so at exponents 0 and 1 it must fit 2^53 units of 10^-2 too, or the
   * decoder would reject the line this encoder wrote. */
  uint64_t limit = AMOUNT_MINOR_MAX;
  for (uint32_t k = e; k < AMOUNT_MIN_EXPONENT; k++)
    limit /= 10;
  if (u > limit)
    return posp2p_error_set(en->err, POSP2P_ERR_RANGE, 0, REQ_AMOUNT,
                            "%s: %lld units of 10^-%u cannot be carried "
                            "exactly by a legacy double (limit 2^53 units of "
                            "10^-%u)",
                            key, (long long)minor, e,
                            e > AMOUNT_MIN_EXPONENT ? e : AMOUNT_MIN_EXPONENT);
  char digits[24], text[48];
  int nd = snprintf(digits, sizeof digits, "%llu", (unsigned long long)u);
  int ie = (int)e;
  /* "-" + integer part (at least "0") + "." + e fraction digits */
  int intlen = nd > ie ? nd - ie : 0;
  int o = snprintf(text, sizeof text, "%s%.*s.", minor < 0 ? "-" : "",
                   intlen > 0 ? intlen : 1, intlen > 0 ? digits : "0");
  for (int k = 0; k < ie - nd; k++)
    text[o++] = '0';
  snprintf(text + o, sizeof text - (size_t)o, "%s", digits + intlen);
  put_key(en, key);
  posp2p__json_double(&en->w, strtod(text, NULL));
  return 0;
}

static int put_opt_amount(encoder *en, const char *key, bool set, int64_t minor,
                          uint32_t e) {
  if (set)
    return put_amount(en, key, minor, e);
  put_key(en, key);
  posp2p__json_null(&en->w);
  return 0;
}

static int put_time(encoder *en, const char *key, int64_t ms, uint32_t us) {
  char buf[32];
  size_t n = posp2p_legacy_time_format(ms, us, en->utc_offset, buf);
  if (n == 0)
    return posp2p_error_set(en->err, POSP2P_ERR_RANGE, 0, REQ_TIME_OUT,
                            "%s: %lld ms + %u us is not a time in years "
                            "0000..9999",
                            key, (long long)ms, us);
  put_key(en, key);
  posp2p__json_string(&en->w, buf, n);
  return 0;
}

static void put_modifiers(encoder *en, char **mods, size_t n) {
  put_key(en, "modifiers");
  posp2p__json_array_begin(&en->w);
  for (size_t i = 0; i < n; i++)
    posp2p__json_cstring(&en->w, mods[i]);
  posp2p__json_array_end(&en->w);
}

static int encode_order_forward(encoder *en,
                                const Posp2p__V2__OrderForward *of) {
  uint32_t e = of->currency_exponent;
  int rv;
  if (e > POSP2P_LEGACY_MAX_EXPONENT)
    return posp2p_error_set(en->err, POSP2P_ERR_RANGE, 0, REQ_AMOUNT,
                            "currency_exponent %u is above %d", e,
                            POSP2P_LEGACY_MAX_EXPONENT);
  posp2p__json_object_begin(&en->w);
  put_key(en, "orderId");
  posp2p__json_cstring(&en->w, of->order_id);
  put_key(en, "items");
  posp2p__json_array_begin(&en->w);
  for (size_t i = 0; i < of->n_items; i++) {
    const Posp2p__V2__OrderItem *it = of->items[i];
    posp2p__json_object_begin(&en->w);
    put_key(en, "productId");
    posp2p__json_cstring(&en->w, it->product_id);
    put_key(en, "productName");
    posp2p__json_cstring(&en->w, it->product_name);
    if ((rv = put_amount(en, "price", it->price_minor, e)) != 0)
      return rv;
    put_key(en, "quantity");
    posp2p__json_int(&en->w, it->quantity);
    put_modifiers(en, it->modifiers, it->n_modifiers);
    put_opt_string(en, "variant",
                   it->opt_variant_case == ITEM_CASE(OPT_VARIANT_VARIANT),
                   it->variant);
    put_opt_string(en, "notes",
                   it->opt_notes_case == ITEM_CASE(OPT_NOTES_NOTES), it->notes);
    if ((rv = put_opt_amount(
             en, "discountPerItem",
             it->opt_discount_per_item_minor_case ==
                 ITEM_CASE(OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR),
             it->discount_per_item_minor, e)) != 0)
      return rv;
    posp2p__json_object_end(&en->w);
  }
  posp2p__json_array_end(&en->w);
  if ((rv = put_amount(en, "subtotal", of->subtotal_minor, e)) != 0 ||
      (rv = put_opt_amount(en, "tax",
                           of->opt_tax_minor_case ==
                               OF_CASE(OPT_TAX_MINOR_TAX_MINOR),
                           of->tax_minor, e)) != 0 ||
      (rv = put_opt_amount(
           en, "serviceCharge",
           of->opt_service_charge_minor_case ==
               OF_CASE(OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR),
           of->service_charge_minor, e)) != 0 ||
      (rv = put_opt_amount(en, "discount",
                           of->opt_discount_minor_case ==
                               OF_CASE(OPT_DISCOUNT_MINOR_DISCOUNT_MINOR),
                           of->discount_minor, e)) != 0 ||
      (rv = put_amount(en, "total", of->total_minor, e)) != 0)
    return rv;
  const char *status = posp2p_order_status_name((int)of->order_status);
  const char *dest = posp2p_destination_name((int)of->destination);
  put_key(en, "orderStatus");
  posp2p__json_cstring(&en->w, status != NULL ? status : "pending");
  put_key(en, "destination");
  posp2p__json_cstring(&en->w, dest != NULL ? dest : "mainPOS");
  put_key(en, "tableNumber");
  if (of->opt_table_number_case == OF_CASE(OPT_TABLE_NUMBER_TABLE_NUMBER)) {
    posp2p__json_int(&en->w, of->table_number);
  } else {
    posp2p__json_null(&en->w);
  }
  put_opt_string(en, "customerName",
                 of->opt_customer_name_case ==
                     OF_CASE(OPT_CUSTOMER_NAME_CUSTOMER_NAME),
                 of->customer_name);
  put_opt_string(en, "specialInstructions",
                 of->opt_special_instructions_case ==
                     OF_CASE(OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS),
                 of->special_instructions);
  if (of->opt_target_delivery_time_ms_case ==
      OF_CASE(OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS)) {
    if ((rv = put_time(en, "targetDeliveryTime", of->target_delivery_time_ms,
                       of->target_delivery_time_us)) != 0)
      return rv;
  } else {
    put_key(en, "targetDeliveryTime");
    posp2p__json_null(&en->w);
  }
  posp2p__json_object_end(&en->w);
  return 0;
}

/* A CartSync that did not come from the legacy wire has only the typed
 * fields; write them as the object a legacy cart would plausibly be. */
static int encode_cart_sync(encoder *en, const Posp2p__V2__CartSync *cs) {
  int rv;
  if (cs->legacy_json[0] != '\0')
    return emit_embedded(&en->w, cs->legacy_json, "cart_sync.legacy_json",
                         REQ_CART, en->err);
  if (cs->currency_exponent > POSP2P_LEGACY_MAX_EXPONENT)
    return posp2p_error_set(en->err, POSP2P_ERR_RANGE, 0, REQ_AMOUNT,
                            "cart_sync.currency_exponent %u is above %d",
                            cs->currency_exponent, POSP2P_LEGACY_MAX_EXPONENT);
  posp2p__json_object_begin(&en->w);
  put_key(en, "cartId");
  posp2p__json_cstring(&en->w, cs->cart_id);
  put_key(en, "items");
  posp2p__json_array_begin(&en->w);
  for (size_t i = 0; i < cs->n_items; i++) {
    const Posp2p__V2__CartItem *it = cs->items[i];
    posp2p__json_object_begin(&en->w);
    put_key(en, "productId");
    posp2p__json_cstring(&en->w, it->product_id);
    put_key(en, "productName");
    posp2p__json_cstring(&en->w, it->product_name);
    if ((rv = put_amount(en, "price", it->price_minor,
                         cs->currency_exponent)) != 0)
      return rv;
    put_key(en, "quantity");
    posp2p__json_int(&en->w, it->quantity);
    put_modifiers(en, it->modifiers, it->n_modifiers);
    posp2p__json_object_end(&en->w);
  }
  posp2p__json_array_end(&en->w);
  if ((rv = put_amount(en, "total", cs->total_minor, cs->currency_exponent)) !=
      0)
    return rv;
  posp2p__json_object_end(&en->w);
  return 0;
}

static int encode_error(encoder *en, const Posp2p__V2__Error *er) {
  const char *name = er->code != POSP2P__V2__ERROR_CODE__ERROR_CODE_UNSPECIFIED
                         ? posp2p_error_code_name((int)er->code)
                         : NULL;
  posp2p__json_object_begin(&en->w);
  put_key(en, "errorCode");
  posp2p__json_cstring(&en->w, name != NULL ? name : er->legacy_code);
  put_key(en, "errorDescription");
  posp2p__json_cstring(&en->w, er->description);
  /* Dart leaves errorDetails out when it has none (no null). */
  if (er->opt_details_case == ERROR_CASE(OPT_DETAILS_DETAILS)) {
    put_key(en, "errorDetails");
    posp2p__json_cstring(&en->w, er->details);
  }
  posp2p__json_object_end(&en->w);
  return 0;
}

static int payload_mismatch(encoder *en, const posp2p_envelope *e) {
  return posp2p_error_set(en->err, POSP2P_ERR_INVAL, 0, REQ_PAYLOADS,
                          "%s envelope carries payload field %d",
                          posp2p_message_type_name((int)e->message_type),
                          (int)e->payload_case);
}

static int encode_payload(encoder *en, const posp2p_envelope *e) {
  posp2p__json_writer *w = &en->w;
  switch (e->message_type) {
  case MT(DEVICE_INFO):
  case MT(DISCOVERY): {
    const char *name;
    int type;
    uint32_t port;
    if (e->message_type == MT(DEVICE_INFO) &&
        e->payload_case == ENV(PAYLOAD_DEVICE_INFO)) {
      name = e->device_info->device_name;
      type = (int)e->device_info->device_type;
      port = e->device_info->port;
    } else if (e->message_type == MT(DISCOVERY) &&
               e->payload_case == ENV(PAYLOAD_DISCOVERY)) {
      name = e->discovery->device_name;
      type = (int)e->discovery->device_type;
      port = e->discovery->port;
    } else {
      return payload_mismatch(en, e);
    }
    posp2p__json_object_begin(w);
    put_key(en, "deviceName");
    posp2p__json_cstring(w, name);
    put_device_type(en, "deviceType", type);
    put_key(en, "port");
    posp2p__json_int(w, port);
    posp2p__json_object_end(w);
    return 0;
  }
  case MT(HEARTBEAT):
    if (e->payload_case != ENV(PAYLOAD_HEARTBEAT))
      return payload_mismatch(en, e);
    posp2p__json_object_begin(w);
    posp2p__json_object_end(w);
    return 0;
  case MT(ACKNOWLEDGEMENT):
    if (e->payload_case != ENV(PAYLOAD_ACKNOWLEDGEMENT))
      return payload_mismatch(en, e);
    posp2p__json_object_begin(w);
    put_key(en, "acknowledgedMessageId");
    posp2p__json_cstring(w, e->acknowledgement->acknowledged_message_id);
    posp2p__json_object_end(w);
    return 0;
  case MT(ERROR):
    if (e->payload_case != ENV(PAYLOAD_ERROR))
      return payload_mismatch(en, e);
    return encode_error(en, e->error);
  case MT(ORDER_FORWARD):
    if (e->payload_case != ENV(PAYLOAD_ORDER_FORWARD))
      return payload_mismatch(en, e);
    return encode_order_forward(en, e->order_forward);
  case MT(ORDER_STATUS): {
    if (e->payload_case != ENV(PAYLOAD_ORDER_STATUS))
      return payload_mismatch(en, e);
    const Posp2p__V2__OrderStatus *st = e->order_status;
    const char *status = posp2p_order_status_name((int)st->new_status);
    posp2p__json_object_begin(w);
    put_key(en, "orderId");
    posp2p__json_cstring(w, st->order_id);
    put_key(en, "newStatus");
    posp2p__json_cstring(w, status != NULL ? status : "pending");
    put_opt_string(en, "statusReason",
                   st->opt_status_reason_case ==
                       STATUS_CASE(OPT_STATUS_REASON_STATUS_REASON),
                   st->status_reason);
    put_key(en, "estimatedTime");
    if (st->opt_estimated_time_s_case ==
        STATUS_CASE(OPT_ESTIMATED_TIME_S_ESTIMATED_TIME_S)) {
      posp2p__json_int(w, st->estimated_time_s);
    } else {
      posp2p__json_null(w);
    }
    posp2p__json_object_end(w);
    return 0;
  }
  case MT(ORDER_CANCEL): {
    if (e->payload_case != ENV(PAYLOAD_ORDER_CANCEL))
      return payload_mismatch(en, e);
    const Posp2p__V2__OrderCancel *oc = e->order_cancel;
    posp2p__json_object_begin(w);
    put_key(en, "orderId");
    posp2p__json_cstring(w, oc->order_id);
    put_key(en, "reason");
    posp2p__json_cstring(w, oc->reason);
    put_key(en, "refund");
    posp2p__json_bool(w, oc->refund);
    posp2p__json_object_end(w);
    return 0;
  }
  case MT(CART_SYNC):
    if (e->payload_case != ENV(PAYLOAD_CART_SYNC))
      return payload_mismatch(en, e);
    return encode_cart_sync(en, e->cart_sync);
  default:
    /* The opaque types: an OpaquePayload or nothing, which is {}. */
    if (e->payload_case == ENV(PAYLOAD_OPAQUE) && e->opaque->json[0] != '\0')
      return emit_embedded(w, e->opaque->json, "opaque.json", REQ_OPAQUE,
                           en->err);
    if (e->payload_case != ENV(PAYLOAD_OPAQUE) &&
        e->payload_case != ENV(PAYLOAD__NOT_SET))
      return payload_mismatch(en, e);
    posp2p__json_object_begin(w);
    posp2p__json_object_end(w);
    return 0;
  }
}

int posp2p_legacy_encode(const posp2p_envelope *e,
                         const posp2p_legacy_opts *opts, posp2p_buf *out,
                         posp2p_error *err) {
  encoder en;
  size_t start = out->len;
  int t = (int)e->message_type;
  int rv;

  if (t == MT(HELLO) || t == MT(GOODBYE))
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, REQ_V2_ONLY,
                            "%s messages cannot be carried by the legacy wire",
                            posp2p_message_type_name(t));
  if (t == MT(UNSPECIFIED) || posp2p_message_type_name(t) == NULL)
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, REQ_ENVELOPE,
                            "message_type %d has no legacy spelling", t);

  posp2p__json_writer_init(&en.w, out);
  en.err = err;
  en.utc_offset = opts != NULL ? opts->utc_offset_minutes : 0;

  /* Key order and explicit nulls exactly as the reference writes them.
   * to_device_type has no legacy equivalent: a by-type message reaches a
   * legacy device as a broadcast (toDeviceId null) on its connection. */
  posp2p__json_object_begin(&en.w);
  put_key(&en, "messageId");
  posp2p__json_cstring(&en.w, e->message_id);
  put_key(&en, "messageType");
  posp2p__json_cstring(&en.w, posp2p_message_type_name(t));
  put_key(&en, "fromDeviceId");
  posp2p__json_cstring(&en.w, e->from_device_id);
  put_opt_string(&en, "toDeviceId",
                 e->opt_to_device_id_case == ENV(OPT_TO_DEVICE_ID_TO_DEVICE_ID),
                 e->to_device_id);
  if ((rv = put_time(&en, "timestamp", e->timestamp_ms, e->timestamp_us)) != 0)
    goto fail;
  put_key(&en, "payload");
  if ((rv = encode_payload(&en, e)) != 0)
    goto fail;
  /* The reference always writes an integer priority; absent means the
   * default, 5. */
  put_key(&en, "priority");
  posp2p__json_int(&en.w, posp2p_envelope_priority(e));
  put_key(&en, "acknowledged");
  if (e->opt_acknowledged_case == ENV(OPT_ACKNOWLEDGED_ACKNOWLEDGED)) {
    posp2p__json_bool(&en.w, e->acknowledged);
  } else {
    posp2p__json_null(&en.w);
  }
  posp2p__json_object_end(&en.w);
  /* The terminator can be the byte that needs a larger buffer: keep the
   * buffer's own error (out of memory is not "no space"). */
  if (en.w.err == 0)
    en.w.err = posp2p_buf_append(out, "\n", 1);
  if (en.w.err != 0) {
    rv = en.w.err;
    posp2p_error_set(err, rv, 0, rv == POSP2P_ERR_INVAL ? REQ_STRINGS : "",
                     rv == POSP2P_ERR_INVAL
                         ? "cannot encode: a string field is not valid UTF-8"
                         : "cannot encode the legacy line: %s",
                     posp2p_strerror(rv));
    goto fail;
  }
  return 0;

fail:
  out->len = start; /* no partial line */
  return rv;
}

/* ==== Legacy discovery datagrams ========================================== */

int posp2p__legacy_disc_decode(const uint8_t *p, size_t n,
                               const ProtobufCAllocator *a, posp2p_disc **out,
                               posp2p_error *err) {
  decoder d;
  json_t *root;
  int64_t port = 0;
  int rv;

  *out = NULL;
  a = alloc_or_default(a);
  if ((rv = json_parse(p, n, "legacy discovery datagram", &root, err)) != 0)
    return rv;
  posp2p_disc *m = posp2p_mem_alloc(a, sizeof(*m));
  if (m == NULL) {
    json_decref(root);
    return posp2p_error_set(err, POSP2P_ERR_NOMEM, 0, "", "out of memory");
  }
  posp2p__v2__discovery_datagram__init(m);
  decoder_init(&d, a, 0, REQ_DISC_REQ, err);

  /* A legacy datagram speaks wire version 1 and nothing else. */
  m->supported_versions = posp2p_mem_alloc(a, sizeof(uint32_t));
  if (m->supported_versions == NULL) {
    rv = fail_nomem(&d);
    goto done;
  }
  m->supported_versions[0] = LEGACY_WIRE_VERSION;
  m->n_supported_versions = 1;

  /* Only a response names its device: that is how the two shapes differ. */
  bool response = json_object_get(root, "deviceId") != NULL;
  const char *req = response ? REQ_DISC_RESP : REQ_DISC_REQ;
  d.req = req;
  m->kind = response ? POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE
                     : POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST;
  if (response && (rv = get_string(&d, root, "deviceId", REQUIRED,
                                   &m->device_id, NULL)) != 0)
    goto done;
  if ((rv = get_string(&d, root, "deviceName", REQUIRED, &m->device_name,
                       NULL)) != 0 ||
      (rv = get_device_type(&d, root, "deviceType", &m->device_type)) != 0)
    goto done;
  if (response && (rv = get_string(&d, root, "ipAddress", NULLABLE,
                                   &m->ip_address, NULL)) != 0)
    goto done;
  if ((rv = get_int(&d, root, "port", REQUIRED, 0, PORT_MAX, &port, NULL)) != 0)
    goto done;
  m->tcp_port = (uint32_t)port;
  if (response &&
      ((rv = get_string(&d, root, "hostname", NULLABLE, &m->hostname, NULL)) !=
           0 ||
       (rv = get_object_json(&d, root, "metadata", &m->metadata_json)) != 0))
    goto done;
  /* Null or missing metadata reads as {}, which is what the encoder writes
   * for it: decode, encode, decode then gives the same datagram. */
  if (response && m->metadata_json[0] == '\0') {
    char *md = posp2p_mem_strndup(a, "{}", 2);
    if (md == NULL) {
      rv = fail_nomem(&d);
      goto done;
    }
    m->metadata_json = md;
  }
  if (response && !posp2p_uuid_valid(m->device_id))
    rv = posp2p_error_set(err, POSP2P_ERR_BAD_ID, 0, req,
                          "deviceId \"%.40s\" is not a canonical UUID",
                          m->device_id);

done:
  json_decref(root);
  if (rv != 0) {
    posp2p_disc_free(m, a);
    return rv;
  }
  *out = m;
  return 0;
}

int posp2p__legacy_disc_encode(const posp2p_disc *m, posp2p_buf *out,
                               posp2p_error *err) {
  encoder en;
  int rv = 0;
  bool response;

  out->len = 0;
  switch (m->kind) {
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST:
    response = false;
    break;
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE:
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_ANNOUNCE:
    /* The legacy wire has no announce; the response shape is the one its
     * listener records devices from. */
    response = true;
    break;
  default:
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, REQ_DISC_OUT,
                            "discovery kind %d has no legacy form",
                            (int)m->kind);
  }
  if (m->tcp_port > PORT_MAX)
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, REQ_DISC_OUT,
                            "tcp_port %u is above %d", m->tcp_port, PORT_MAX);

  posp2p__json_writer_init(&en.w, out);
  en.err = err;
  en.utc_offset = 0;
  posp2p__json_object_begin(&en.w);
  if (response) {
    put_key(&en, "deviceId");
    posp2p__json_cstring(&en.w, m->device_id);
  }
  put_key(&en, "deviceName");
  posp2p__json_cstring(&en.w, m->device_name);
  put_device_type(&en, "deviceType", (int)m->device_type);
  if (response) {
    put_key(&en, "ipAddress");
    posp2p__json_cstring(&en.w, m->ip_address);
  }
  put_key(&en, "port");
  posp2p__json_int(&en.w, m->tcp_port);
  if (response) {
    put_key(&en, "hostname");
    posp2p__json_cstring(&en.w, m->hostname);
    put_key(&en, "metadata");
    if (m->metadata_json[0] != '\0') {
      rv = emit_embedded(&en.w, m->metadata_json, "metadata_json", REQ_DISC_OUT,
                         err);
    } else {
      posp2p__json_object_begin(&en.w);
      posp2p__json_object_end(&en.w);
    }
  }
  posp2p__json_object_end(&en.w);
  if (rv == 0 && en.w.err != 0)
    rv = posp2p_error_set(
        err, en.w.err, 0, en.w.err == POSP2P_ERR_INVAL ? REQ_STRINGS : "",
        "cannot encode the legacy datagram: %s", posp2p_strerror(en.w.err));
  if (rv == 0 && out->len > POSP2P_DISC_MAX_DATAGRAM)
    rv = posp2p_error_set(err, POSP2P_ERR_NOSPACE, 0, REQ_DISC_SIZE,
                          "legacy datagram would be %zu bytes, above %u",
                          out->len, POSP2P_DISC_MAX_DATAGRAM);
  if (rv != 0)
    out->len = 0;
  return rv;
}
