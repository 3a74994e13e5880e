/* posp2p legacy profile: the FlutterPOS newline-delimited JSON wire
 * (protocol version 1). Converts to and from the v2 Envelope so that the
 * engine handles one message model. SPEC.md LEGACY-* is normative. */
#ifndef POSP2P_LEGACY_H
#define POSP2P_LEGACY_H

#include <stddef.h>
#include <stdint.h>

#include "posp2p/codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest JSON nesting accepted in a legacy message (LEGACY-4). */
#define POSP2P_JSON_MAX_DEPTH 32
/* Largest currency exponent used when converting double amounts. */
#define POSP2P_LEGACY_MAX_EXPONENT 9

typedef struct {
  /* Offset of the legacy device's local time from UTC, in minutes. Legacy
   * timestamps carry no zone; this is how they map to UTC milliseconds
   * (LEGACY-39..41). 0 treats them as UTC. */
  int32_t utc_offset_minutes;
} posp2p_legacy_opts;

/* ---- NDJSON line splitter ---------------------------------------------
 * Splits a byte stream at '\n'. A line may arrive in any number of pieces,
 * including splits inside a multi-byte UTF-8 character; a line that arrives
 * whole is returned as a pointer into the caller's input. A '\r' before the
 * '\n' is removed. Empty lines are skipped (LEGACY-2). */
typedef struct {
  uint32_t max_line;
  uint64_t offset;      /* stream offset of the next byte to be fed */
  uint64_t line_offset; /* stream offset of the line being assembled */
  posp2p_buf line;      /* partial line, only when split across feeds */
  int failed;
} posp2p_ndjson;

void posp2p_ndjson_init(posp2p_ndjson *s, uint32_t max_line,
                        const ProtobufCAllocator *a);
void posp2p_ndjson_free(posp2p_ndjson *s);

/* Same contract as posp2p_framer_next: returns 1 with *out set to one line
 * (without its terminator), 0 when input is used up, or an error that
 * breaks the stream: POSP2P_ERR_LINE_TOO_LONG (LEGACY-3), POSP2P_ERR_NOMEM.
 * A line with bad content (a NUL byte, invalid UTF-8) is still returned:
 * posp2p_legacy_decode rejects it and the stream goes on (LEGACY-9). */
int posp2p_ndjson_next(posp2p_ndjson *s, const uint8_t *data, size_t len,
                       size_t *consumed, posp2p_frame *out, posp2p_error *err);
/* POSP2P_ERR_TRUNCATED if a line was started and not terminated. */
int posp2p_ndjson_finish(const posp2p_ndjson *s, posp2p_error *err);

/* Decode one legacy JSON message (one line, without '\n') into a new v2
 * Envelope, then validate it with posp2p_envelope_validate. Unknown
 * messageType becomes MESSAGE_TYPE_ERROR with an UNKNOWN_MESSAGE_TYPE
 * Error payload naming the original type (LEGACY-6). Errors:
 * POSP2P_ERR_JSON_SYNTAX, POSP2P_ERR_JSON_UTF8, POSP2P_ERR_JSON_TYPE,
 * POSP2P_ERR_JSON_DEPTH, POSP2P_ERR_JSON_NUMBER, POSP2P_ERR_JSON_NUL,
 * POSP2P_ERR_MISSING_FIELD, POSP2P_ERR_TIMESTAMP, POSP2P_ERR_NOMEM and every
 * error of posp2p_envelope_validate. */
int posp2p_legacy_decode(const uint8_t *line, size_t len,
                         const posp2p_legacy_opts *opts,
                         const ProtobufCAllocator *a, posp2p_envelope **out,
                         posp2p_error *err);

/* Append e to out as one legacy line: compact JSON, keys in the legacy order,
 * explicit nulls, enum strings, amounts as doubles, then '\n'. Types the
 * legacy wire cannot carry (hello, goodbye) give POSP2P_ERR_INVAL. Other
 * errors: POSP2P_ERR_NOSPACE, POSP2P_ERR_NOMEM, POSP2P_ERR_RANGE. */
int posp2p_legacy_encode(const posp2p_envelope *e,
                         const posp2p_legacy_opts *opts, posp2p_buf *out,
                         posp2p_error *err);

/* Legacy timestamp text <-> UTC milliseconds + sub-millisecond microseconds.
 * Accepts "YYYY-MM-DDTHH:MM:SS.mmm" and "YYYY-MM-DDTHH:MM:SS.mmmuuu" (the two
 * forms Dart's toIso8601String writes); formats the same way, using the
 * 23-character form when us == 0. Errors: POSP2P_ERR_TIMESTAMP. */
int posp2p_legacy_time_parse(const char *s, size_t n, int32_t utc_offset_minutes,
                             int64_t *ms, uint32_t *us, posp2p_error *err);
/* Returns the length written (23 or 26), or 0 if ms is out of range. */
size_t posp2p_legacy_time_format(int64_t ms, uint32_t us,
                                 int32_t utc_offset_minutes, char out[32]);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_LEGACY_H */
