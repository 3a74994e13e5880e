/* Compact JSON writer and Dart-compatible number formatting, shared by the
 * legacy codec (legacy.c). Internal: not installed, names are posp2p__json_*.
 *
 * The writer produces exactly the bytes Dart's jsonEncode produces for the
 * same values: no whitespace, raw UTF-8, the same string escapes, doubles as
 * Dart's double.toString prints them. That is what makes the legacy round
 * trip (legacy -> v2 -> legacy) byte-exact. */
#ifndef POSP2P_JSON_EMIT_H
#define POSP2P_JSON_EMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/common.h"

/* Most significant digits an IEEE-754 binary64 ever needs to round-trip. */
#define POSP2P__JSON_DOUBLE_DIGITS 17
/* Buffer size for posp2p__json_format_double: sign, up to 21 integer digits
 * or "0." plus 5 zeros plus 17 digits, ".0" or an exponent, and the NUL. */
#define POSP2P__JSON_DOUBLE_MAX 32

/* A finite double as the shortest decimal that reads back as the same
 * double: value = (negative ? -1 : 1) * 0.DIGITS * 10^point. digits has no
 * leading or trailing zeros, except that zero is "0" with point 1. */
typedef struct {
  char digits[POSP2P__JSON_DOUBLE_DIGITS + 1]; /* NUL-terminated */
  int ndigits;
  int point;
  bool negative; /* also set for -0.0 */
} posp2p__json_decimal;

/* Shortest round-trip decimal of a finite v (Dart/Grisu "shortest" mode:
 * fewest digits, and of those the closest to v). */
void posp2p__json_shortest(double v, posp2p__json_decimal *d);

/* Write v as Dart's double.toString does: decimal notation with at least one
 * fraction digit while 1e-6 <= |v| < 1e21 ("9.0", "0.000001",
 * "100000000000000000000.0"), exponent notation outside ("1e-7", "1.5e+21").
 * Returns the length (without the NUL), or 0 if v is not finite. */
size_t posp2p__json_format_double(double v, char out[POSP2P__JSON_DOUBLE_MAX]);

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) starting at s[0], or 0 if the bytes
 * there are not one. n is the number of bytes available (>= 1). */
size_t posp2p__json_utf8_seq(const uint8_t *s, size_t n);

/* Offset of the first ill-formed UTF-8 sequence in s, or n if s is valid. */
size_t posp2p__json_utf8_check(const uint8_t *s, size_t n);

/* ---- Writer --------------------------------------------------------------
 * Appends to a posp2p_buf. Errors are sticky: the first failed append (or
 * invalid argument) is kept in err and every later call does nothing, so a
 * caller emits a whole document and checks err once. Commas are inserted
 * automatically; the caller only has to call begin/key/value/end in a
 * well-formed order. */
typedef struct {
  posp2p_buf *buf;
  int err;         /* 0, or the first posp2p_err that occurred */
  bool need_comma; /* a value was completed in the current container */
} posp2p__json_writer;

void posp2p__json_writer_init(posp2p__json_writer *w, posp2p_buf *buf);

void posp2p__json_object_begin(posp2p__json_writer *w);
void posp2p__json_object_end(posp2p__json_writer *w);
void posp2p__json_array_begin(posp2p__json_writer *w);
void posp2p__json_array_end(posp2p__json_writer *w);

/* An object key (escaped like a string) followed by ':'. */
void posp2p__json_key(posp2p__json_writer *w, const char *key, size_t n);

/* String value; s must be valid UTF-8 (POSP2P_ERR_INVAL otherwise). Escapes
 * '"', '\\' and control characters as Dart does (\b \t \n \f \r, else
 * \u00xx in lower case); everything else, non-ASCII included, is raw. */
void posp2p__json_string(posp2p__json_writer *w, const char *s, size_t n);
/* Same for a NUL-terminated string. */
void posp2p__json_cstring(posp2p__json_writer *w, const char *s);
void posp2p__json_int(posp2p__json_writer *w, int64_t v);
/* Dart double format; a non-finite v sets POSP2P_ERR_INVAL (JSON has no
 * NaN or Infinity, and Dart's jsonEncode refuses them too). */
void posp2p__json_double(posp2p__json_writer *w, double v);
void posp2p__json_bool(posp2p__json_writer *w, bool v);
void posp2p__json_null(posp2p__json_writer *w);

/* Write a parsed jansson value (declared through its struct tag so that
 * this header does not need jansson.h): objects with keys in their order,
 * integers as integers, reals as Dart doubles. */
struct json_t;
void posp2p__json_value(posp2p__json_writer *w, const struct json_t *v);

#endif /* POSP2P_JSON_EMIT_H */
