/* Compact JSON writer and Dart-compatible double formatting. See
 * json_emit.h for the contract. */
#include <jansson.h>

#include "json_emit.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dart's double.toString (runtime/vm/double_conversion.cc) prints decimal
 * notation while the decimal exponent of the first significant digit lies in
 * [-6, 21), exponent notation otherwise. */
#define DART_DECIMAL_LOW (-6)
#define DART_DECIMAL_HIGH 21

/* Room for "%.16e" of any double: sign, 17 digits, '.', "e-308", NUL. */
#define SCI_BUF 40

/* ---- Shortest round-trip digits ----------------------------------------- */

/* Parse the output of "%.*e" for a positive finite value into d. */
static void sci_parse(const char *s, posp2p__json_decimal *d) {
  int n = 0;
  for (; *s != 'e'; s++) {
    if (*s != '.')
      d->digits[n++] = *s;
  }
  d->digits[n] = '\0';
  d->ndigits = n;
  /* "%.*e" writes one digit before the point, so 0.DIGITS * 10^point needs
   * point = exponent + 1. */
  d->point = atoi(s + 1) + 1;
}

/* The value d denotes, correctly rounded to a double by strtod. */
static double decimal_value(const posp2p__json_decimal *d) {
  char buf[SCI_BUF];
  snprintf(buf, sizeof buf, "0.%se%d", d->digits, d->point);
  return strtod(buf, NULL);
}

/* Add one unit in the last digit, carrying; "999" becomes "1" with the
 * point moved one place right. */
static void decimal_increment(posp2p__json_decimal *d) {
  int i = d->ndigits - 1;
  while (i >= 0 && d->digits[i] == '9')
    d->digits[i--] = '0';
  if (i >= 0) {
    d->digits[i]++;
  } else {
    d->digits[0] = '1';
    d->digits[1] = '\0';
    d->ndigits = 1;
    d->point++;
  }
}

static void decimal_strip(posp2p__json_decimal *d) {
  while (d->ndigits > 1 && d->digits[d->ndigits - 1] == '0')
    d->ndigits--;
  d->digits[d->ndigits] = '\0';
}

/* Largest k for which 10^k is an exact double (5^22 < 2^53). */
#define EXACT_POW10_MAX 22
/* Integers up to 2^53 are exact doubles. */
#define EXACT_INT_MAX 0x1p53

/* Fast path for the numbers money amounts are made of: a value that is
 * s / 10^k for a small integer s. For k = 0, 1, 2 ... while the grid of
 * k-fraction-digit decimals is still coarser than the spacing of doubles
 * around a, at most one such decimal can round to a, so the first one found
 * is both the shortest and the closest: exactly what the printf search
 * below would return. The check s / 10^k == a is exact because s and 10^k
 * are exact doubles and IEEE division rounds correctly, as strtod does.
 * Returns false (and the slow path runs) when the grid gets finer than the
 * doubles without a hit, e.g. for 0.1 + 0.2. */
static bool shortest_fast(double a, posp2p__json_decimal *d) {
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
  /* Excess precision (x87) would make the division check inexact. */
  (void)a;
  (void)d;
  return false;
#else
  int exp2;
  frexp(a, &exp2);
  double ulp = ldexp(1.0, exp2 - DBL_MANT_DIG);
  double scale = 1.0;
  for (int k = 0; k <= EXACT_POW10_MAX; k++, scale *= 10.0) {
    if (ulp * scale >= 1.0)
      return false;
    double p = a * scale;
    if (p > EXACT_INT_MAX)
      return false;
    /* a * scale is rounded, so the nearest integer may be one off. */
    double r = nearbyint(p);
    for (double s = r - 1.0; s <= r + 1.0; s += 1.0) {
      if (s <= 0.0 || s > EXACT_INT_MAX || s / scale != a)
        continue;
      char tmp[POSP2P__JSON_DOUBLE_DIGITS + 1];
      uint64_t u = (uint64_t)s;
      int n = 0;
      while (u > 0) {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
      }
      for (int i = 0; i < n; i++)
        d->digits[i] = tmp[n - 1 - i];
      d->digits[n] = '\0';
      d->ndigits = n;
      d->point = n - k;
      return true;
    }
  }
  return false;
#endif
}

void posp2p__json_shortest(double v, posp2p__json_decimal *d) {
  char buf[SCI_BUF];
  double a = fabs(v);

  d->negative = signbit(v) != 0;
  if (a == 0.0) {
    d->digits[0] = '0';
    d->digits[1] = '\0';
    d->ndigits = 1;
    d->point = 1;
    return;
  }
  if (shortest_fast(a, d)) {
    decimal_strip(d);
    return;
  }
  for (int prec = 1; prec <= POSP2P__JSON_DOUBLE_DIGITS; prec++) {
    snprintf(buf, sizeof buf, "%.*e", prec - 1, a);
    double r = strtod(buf, NULL);
    sci_parse(buf, d);
    if (r == a)
      break;
    /* printf gives the closest prec-digit decimal. When a is a power of two
     * the doubles below it are twice as dense as those above, so the
     * interval that rounds to a is lopsided: the closest candidate may fall
     * just below it while the next one up still rounds to a. Dart's
     * shortest mode picks that one, so must we. */
    int exp2;
    if (r < a && frexp(a, &exp2) == 0.5) {
      posp2p__json_decimal up = *d;
      decimal_increment(&up);
      if (decimal_value(&up) == a) {
        *d = up;
        break;
      }
    }
    /* 17 significant digits always round-trip, so the loop ends with d set
     * to a round-tripping candidate at the latest when prec == 17. */
  }
  decimal_strip(d);
}

static char *put_zeros(char *p, int n) {
  for (int i = 0; i < n; i++)
    *p++ = '0';
  return p;
}

size_t posp2p__json_format_double(double v, char out[POSP2P__JSON_DOUBLE_MAX]) {
  posp2p__json_decimal d;
  char *p = out;

  if (!isfinite(v))
    return 0;
  posp2p__json_shortest(v, &d);
  if (d.negative)
    *p++ = '-';

  int exp10 = d.point - 1;
  if (exp10 >= DART_DECIMAL_LOW && exp10 < DART_DECIMAL_HIGH) {
    if (d.point <= 0) {
      /* 0.000ddd */
      *p++ = '0';
      *p++ = '.';
      p = put_zeros(p, -d.point);
      memcpy(p, d.digits, (size_t)d.ndigits);
      p += d.ndigits;
    } else if (d.point >= d.ndigits) {
      /* ddd000.0: Dart always shows a fraction digit on doubles */
      memcpy(p, d.digits, (size_t)d.ndigits);
      p += d.ndigits;
      p = put_zeros(p, d.point - d.ndigits);
      *p++ = '.';
      *p++ = '0';
    } else {
      /* dd.ddd */
      memcpy(p, d.digits, (size_t)d.point);
      p += d.point;
      *p++ = '.';
      memcpy(p, d.digits + d.point, (size_t)(d.ndigits - d.point));
      p += d.ndigits - d.point;
    }
    *p = '\0';
  } else {
    /* d.ddde+XX: no ".0" on a single digit and an explicit '+' on positive
     * exponents, as double-conversion's EMIT_POSITIVE_EXPONENT_SIGN does. */
    *p++ = d.digits[0];
    if (d.ndigits > 1) {
      *p++ = '.';
      memcpy(p, d.digits + 1, (size_t)(d.ndigits - 1));
      p += d.ndigits - 1;
    }
    p += snprintf(p, (size_t)(POSP2P__JSON_DOUBLE_MAX - (p - out)), "e%c%d",
                  exp10 < 0 ? '-' : '+', abs(exp10));
  }
  return (size_t)(p - out);
}

/* ---- UTF-8 ----------------------------------------------------------------
 */

static bool is_cont(uint8_t c) {
  return (c & 0xC0u) == 0x80u;
}

size_t posp2p__json_utf8_seq(const uint8_t *s, size_t n) {
  uint8_t c = s[0];

  if (c < 0x80u)
    return 1;
  /* The second byte's allowed range depends on the lead byte: that is how
   * RFC 3629 excludes overlong forms (E0, F0), surrogates (ED) and code
   * points above U+10FFFF (F4). C0, C1 and F5..FF never appear. */
  uint8_t lo = 0x80u, hi = 0xBFu;
  size_t len;
  if (c >= 0xC2u && c <= 0xDFu) {
    len = 2;
  } else if (c >= 0xE0u && c <= 0xEFu) {
    len = 3;
    if (c == 0xE0u)
      lo = 0xA0u;
    if (c == 0xEDu)
      hi = 0x9Fu;
  } else if (c >= 0xF0u && c <= 0xF4u) {
    len = 4;
    if (c == 0xF0u)
      lo = 0x90u;
    if (c == 0xF4u)
      hi = 0x8Fu;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++) {
    if (!is_cont(s[i]))
      return 0;
  }
  return len;
}

/* Index of the first byte at or after i that is not ASCII, or n. */
POSP2P__NO_COVERAGE static size_t ascii_skip(const uint8_t *s, size_t i,
                                             size_t n) {
  while (i < n && s[i] < 0x80u)
    i++;
  return i;
}

size_t posp2p__json_utf8_check(const uint8_t *s, size_t n) {
  size_t i = 0;
  for (;;) {
    i = ascii_skip(s, i, n);
    if (i >= n)
      break;
    size_t len = posp2p__json_utf8_seq(s + i, n - i);
    if (len == 0)
      return i;
    i += len;
  }
  return n;
}

/* ---- Writer -----------------------------------------------------------------
 */

void posp2p__json_writer_init(posp2p__json_writer *w, posp2p_buf *buf) {
  w->buf = buf;
  w->err = 0;
  w->need_comma = false;
}

static void put(posp2p__json_writer *w, const void *p, size_t n) {
  if (w->err != 0 || n == 0)
    return;
  int rc = posp2p_buf_append(w->buf, p, n);
  if (rc != 0)
    w->err = rc;
}

static void put_char(posp2p__json_writer *w, char c) {
  put(w, &c, 1);
}

/* Every value and every key is preceded by a comma unless it is the first
 * in its container. */
static void value_begin(posp2p__json_writer *w) {
  if (w->need_comma)
    put_char(w, ',');
}

void posp2p__json_object_begin(posp2p__json_writer *w) {
  value_begin(w);
  put_char(w, '{');
  w->need_comma = false;
}

void posp2p__json_object_end(posp2p__json_writer *w) {
  put_char(w, '}');
  w->need_comma = true;
}

void posp2p__json_array_begin(posp2p__json_writer *w) {
  value_begin(w);
  put_char(w, '[');
  w->need_comma = false;
}

void posp2p__json_array_end(posp2p__json_writer *w) {
  put_char(w, ']');
  w->need_comma = true;
}

/* The quoted, escaped string without the comma logic. */
/* Index of the first byte at or after i that a JSON string must escape,
 * or n. */
POSP2P__NO_COVERAGE static size_t unescaped_skip(const uint8_t *u, size_t i,
                                                 size_t n) {
  while (i < n && u[i] >= 0x20u && u[i] != '"' && u[i] != '\\')
    i++;
  return i;
}

static void put_string(posp2p__json_writer *w, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *u = (const uint8_t *)s;
  size_t run = 0; /* start of the pending run of bytes that need no escape */

  if (w->err != 0)
    return;
  if (posp2p__json_utf8_check(u, n) != n) {
    w->err = POSP2P_ERR_INVAL;
    return;
  }
  put_char(w, '"');
  for (size_t i = unescaped_skip(u, 0, n); i < n;
       i = unescaped_skip(u, i + 1, n)) {
    uint8_t c = u[i];
    char esc[6];
    size_t elen = 2;

    esc[0] = '\\';
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\t': esc[1] = 't'; break;
    case '\n': esc[1] = 'n'; break;
    case '\f': esc[1] = 'f'; break;
    case '\r': esc[1] = 'r'; break;
    default:
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 0x0Fu];
      elen = 6;
      break;
    }
    put(w, s + run, i - run);
    put(w, esc, elen);
    run = i + 1;
  }
  put(w, s + run, n - run);
  put_char(w, '"');
}

void posp2p__json_key(posp2p__json_writer *w, const char *key, size_t n) {
  value_begin(w);
  put_string(w, key, n);
  put_char(w, ':');
  w->need_comma = false;
}

void posp2p__json_string(posp2p__json_writer *w, const char *s, size_t n) {
  value_begin(w);
  put_string(w, s, n);
  w->need_comma = true;
}

void posp2p__json_cstring(posp2p__json_writer *w, const char *s) {
  posp2p__json_string(w, s, strlen(s));
}

void posp2p__json_int(posp2p__json_writer *w, int64_t v) {
  char buf[24]; /* "-9223372036854775808" and the NUL */
  int n = snprintf(buf, sizeof buf, "%" PRId64, v);
  value_begin(w);
  put(w, buf, (size_t)n);
  w->need_comma = true;
}

void posp2p__json_double(posp2p__json_writer *w, double v) {
  char buf[POSP2P__JSON_DOUBLE_MAX];
  size_t n = posp2p__json_format_double(v, buf);
  if (n == 0) {
    if (w->err == 0)
      w->err = POSP2P_ERR_INVAL;
    return;
  }
  value_begin(w);
  put(w, buf, n);
  w->need_comma = true;
}

void posp2p__json_bool(posp2p__json_writer *w, bool v) {
  value_begin(w);
  if (v) {
    put(w, "true", 4);
  } else {
    put(w, "false", 5);
  }
  w->need_comma = true;
}

void posp2p__json_null(posp2p__json_writer *w) {
  value_begin(w);
  put(w, "null", 4);
  w->need_comma = true;
}

/* Write a parsed jansson value compactly, keys in their order, numbers in
 * Dart form. Shared by the legacy codec and the posp2p-peer daemon. */
void posp2p__json_value(posp2p__json_writer *w, const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    posp2p__json_object_begin(w);
    for (void *it = json_object_iter((json_t *)v); it != NULL;
         it = json_object_iter_next((json_t *)v, it)) {
      posp2p__json_key(w, json_object_iter_key(it),
                       json_object_iter_key_len(it));
      posp2p__json_value(w, json_object_iter_value(it));
    }
    posp2p__json_object_end(w);
    break;
  }
  case JSON_ARRAY:
    posp2p__json_array_begin(w);
    for (size_t i = 0; i < json_array_size(v); i++)
      posp2p__json_value(w, json_array_get(v, i));
    posp2p__json_array_end(w);
    break;
  case JSON_STRING:
    posp2p__json_string(w, json_string_value(v), json_string_length(v));
    break;
  case JSON_INTEGER: posp2p__json_int(w, json_integer_value(v)); break;
  case JSON_REAL: posp2p__json_double(w, json_real_value(v)); break;
  case JSON_TRUE: posp2p__json_bool(w, true); break;
  case JSON_FALSE: posp2p__json_bool(w, false); break;
  case JSON_NULL: posp2p__json_null(w); break;
  }
}
