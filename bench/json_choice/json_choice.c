/* Which JSON parser for the legacy wire: jansson or cJSON?
 *
 * Standalone (not part of the CMake build):
 *
 *   cc -std=c11 -O2 -Wall -Wextra -o json_choice json_choice.c \
 *      -ljansson -lcjson
 *   ./json_choice            # full run
 *   ./json_choice --quick    # a tenth of the iterations
 *
 * Part 1 parses four legacy messages (heartbeat, acknowledgement, a typical
 * 10-item orderForward, a 200-item orderForward) many times with each
 * parser, each parse building the tree and freeing it, and prints the
 * median over 5 runs of the CPU time per message. The lines are built here
 * in the exact form the Dart reference writes them, so the program needs
 * no input files.
 *
 * Part 2 feeds a table of malformed lines to both parsers, each configured
 * as strictly as its API allows (jansson: JSON_REJECT_DUPLICATES, EOF check
 * on; cJSON: require_null_terminated), and prints which of them each one
 * rejects, and what each parser made of numbers it accepted.
 *
 * The results and the conclusion are recorded in README.md. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5
#define LINE_MAX_BYTES 65536

/* ---- the messages ------------------------------------------------------- */

#define ENVELOPE_FMT                                                           \
  "{\"messageId\":\"%s\",\"messageType\":\"%s\",\"fromDeviceId\":"             \
  "\"97cbbd02-21c3-46ec-84d8-30f20c8b2245\",\"toDeviceId\":"                   \
  "\"699c0038-232c-4e8c-884d-13b66f44d1f5\",\"timestamp\":"                    \
  "\"2026-02-22T10:15:30.123456\",\"payload\":%s,\"priority\":%d,"             \
  "\"acknowledged\":null}"
#define MSG_ID "990489a7-5cf8-4251-9fb7-b7e1678e147a"

typedef struct {
  char *buf;
  size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    b->cap = b->cap * 2 + (size_t)n + 64;
    b->buf = realloc(b->buf, b->cap);
    if (b->buf == NULL)
      abort();
  }
}

/* Amount text as Dart prints the doubles these prices are: "12.5", "3.0". */
static void sb_amount(sbuf *b, long cents) {
  if (cents % 10 == 0)
    sb_printf(b, "%ld.%ld", cents / 100, (cents % 100) / 10);
  else
    sb_printf(b, "%ld.%02ld", cents / 100, cents % 100);
}

static const char *const names[] = {
    "Margherita Pizza",
    "Caf\xc3\xa9 au lait",
    "\xe6\x97\xa5\xe6\x9c\xac\xe9\x85\x92 (sake)",
    "Ramen \xf0\x9f\x8d\x9c",
    "Caesar salad",
    "Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9"
    "e",
    "Sparkling water",
    "Burger",
    "Fries",
    "Espresso"};

/* An orderForward payload with n items (modifiers, variants, notes and
 * per-item discounts on some, nulls on the others). */
static char *order_payload(int n) {
  sbuf b = {malloc(256), 0, 256};
  long subtotal = 0;
  sb_printf(&b, "{\"orderId\":\"ORD-2026-%04d\",\"items\":[", n);
  for (int i = 0; i < n; i++) {
    long price = (i * 37L) % 2000 + 99;
    int qty = i % 5 + 1;
    subtotal += price * qty;
    sb_printf(&b,
              "%s{\"productId\":\"sku-%05d\",\"productName\":\"%s\",\"price\":",
              i ? "," : "", i, names[i % 10]);
    sb_amount(&b, price);
    sb_printf(&b, ",\"quantity\":%d,\"modifiers\":[", qty);
    for (int m = 0; m < i % 3; m++)
      sb_printf(&b, "%s\"modifier %d.%d\"", m ? "," : "", i, m);
    sb_printf(&b, "],\"variant\":%s,\"notes\":%s,\"discountPerItem\":",
              i % 2 ? "null" : "\"large\"",
              i % 5 == 0 ? "\"no onions, \\\"well\\\" done\"" : "null");
    if (i % 3 == 0)
      sb_amount(&b, 25 * (i % 4));
    else
      sb_printf(&b, "null");
    sb_printf(&b, "}");
  }
  sb_printf(&b, "],\"subtotal\":");
  sb_amount(&b, subtotal);
  sb_printf(
      &b, ",\"tax\":10.37,\"serviceCharge\":null,\"discount\":5.0,\"total\":");
  sb_amount(&b, subtotal + 1037 - 500);
  sb_printf(
      &b, ",\"orderStatus\":\"pending\",\"destination\":\"kitchenDisplay\","
          "\"tableNumber\":12,\"customerName\":\"Zo\xc3\xab \xf0\x9f\x98\x80\","
          "\"specialInstructions\":null,\"targetDeliveryTime\":"
          "\"2026-02-22T10:45:00.000\"}");
  return b.buf;
}

static char *envelope(const char *type, const char *payload, int prio) {
  sbuf b = {malloc(256), 0, 256};
  sb_printf(&b, ENVELOPE_FMT, MSG_ID, type, payload, prio);
  return b.buf;
}

/* ---- timing ------------------------------------------------------------- */

/* CPU time of this thread: the benchmark machine is shared, and wall time
 * would also count other processes' time slices. */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef bool (*parse_fn)(const char *s, size_t n);

static bool parse_jansson(const char *s, size_t n) {
  json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
  json_decref(j);
  return j != NULL;
}

static bool parse_cjson(const char *s, size_t n) {
  /* n + 1: require_null_terminated needs the NUL inside the length. */
  cJSON *j = cJSON_ParseWithLengthOpts(s, n + 1, NULL, 1);
  cJSON_Delete(j);
  return j != NULL;
}

/* Median over RUNS runs of the CPU time per parse, in ns. */
static double bench(parse_fn fn, const char *s, size_t n, long iters) {
  double per[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
      if (!fn(s, n)) {
        fprintf(stderr, "benchmark input rejected\n");
        exit(1);
      }
    }
    per[r] = (now_ns() - t0) / (double)iters;
  }
  qsort(per, RUNS, sizeof per[0], cmp_double);
  return per[RUNS / 2];
}

/* ---- malformed inputs --------------------------------------------------- */

typedef struct {
  const char *name;
  const char *text;
  size_t len; /* 0: strlen */
} bad_input;

#define IN(name, text)                                                         \
  { name, text, 0 }
#define INN(name, text)                                                        \
  { name, text, sizeof(text) - 1 }

static const bad_input bad[] = {
    IN("truncated", "{\"a\":[1,2"),
    IN("trailing garbage", "{\"a\":1} x"),
    IN("two objects", "{\"a\":1}{\"b\":2}"),
    IN("duplicate key", "{\"a\":1,\"a\":2}"),
    IN("trailing comma", "{\"a\":1,}"),
    IN("single quotes", "{'a':1}"),
    IN("leading zero", "{\"a\":01}"),
    IN("NaN", "{\"a\":NaN}"),
    IN("bad escape \\x", "{\"a\":\"\\x41\"}"),
    IN("raw control char", "{\"a\":\"x\x01y\"}"),
    IN("invalid UTF-8 (C3 28)", "{\"a\":\"caf\xc3\x28\"}"),
    IN("overlong UTF-8 (C0 AF)", "{\"a\":\"\xc0\xaf\"}"),
    IN("UTF-8 surrogate (ED A0 80)", "{\"a\":\"\xed\xa0\x80\"}"),
    IN("UTF-8 above U+10FFFF", "{\"a\":\"\xf4\x90\x80\x80\"}"),
    IN("lone surrogate \\ud800", "{\"a\":\"\\ud800\"}"),
    INN("raw NUL in string", "{\"a\":\"x\0y\"}"),
    IN("\\u0000 in string", "{\"a\":\"x\\u0000y\"}"),
    IN("1e400", "{\"a\":1e400}"),
    IN("integer beyond int64", "{\"a\":99999999999999999999}"),
    IN("not an object", "[1,2]"),
};

/* Deep nesting: 33 and 10000 levels of arrays in an object. */
static char *nested(int depth) {
  char *s = malloc((size_t)depth * 2 + 16);
  size_t o = 0;
  o += (size_t)sprintf(s, "{\"a\":");
  for (int i = 0; i < depth - 1; i++)
    s[o++] = '[';
  for (int i = 0; i < depth - 1; i++)
    s[o++] = ']';
  s[o++] = '}';
  s[o] = '\0';
  return s;
}

static const char *verdict_jansson(const char *s, size_t n, char *note,
                                   size_t nsz) {
  json_error_t e;
  json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &e);
  note[0] = '\0';
  if (j == NULL) {
    snprintf(note, nsz, "%s", e.text);
    return "rejects";
  }
  json_t *a = json_object_get(j, "a");
  if (json_is_string(a))
    snprintf(note, nsz, "string of %zu bytes", json_string_length(a));
  else if (json_is_integer(a))
    snprintf(note, nsz, "integer %lld", (long long)json_integer_value(a));
  else if (json_is_real(a))
    snprintf(note, nsz, "real %.17g", json_real_value(a));
  json_decref(j);
  return "ACCEPTS";
}

static const char *verdict_cjson(const char *s, size_t n, char *note,
                                 size_t nsz) {
  /* cJSON needs the NUL terminator inside the length for the strict check. */
  char *copy = malloc(n + 1);
  memcpy(copy, s, n);
  copy[n] = '\0';
  cJSON *j = cJSON_ParseWithLengthOpts(copy, n + 1, NULL, 1);
  note[0] = '\0';
  const char *v = "rejects";
  if (j != NULL) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "a");
    if (cJSON_IsString(a))
      snprintf(note, nsz, "string of %zu bytes", strlen(a->valuestring));
    else if (cJSON_IsNumber(a))
      snprintf(note, nsz, "number %.17g", a->valuedouble);
    v = "ACCEPTS";
  }
  cJSON_Delete(j);
  free(copy);
  return v;
}

static void table_row(const char *name, const char *s, size_t n) {
  char nj[160], nc[160];
  const char *vj = verdict_jansson(s, n, nj, sizeof nj);
  const char *vc = verdict_cjson(s, n, nc, sizeof nc);
  printf("| %-28s | %-7s | %-7s | %s\n", name, vj, vc,
         strcmp(vj, "ACCEPTS") == 0 || strcmp(vc, "ACCEPTS") == 0
             ? (strcmp(vc, "ACCEPTS") == 0 ? nc : nj)
             : "");
}

int main(int argc, char **argv) {
  bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  long scale = quick ? 10 : 1;

  char *typical = order_payload(10), *large = order_payload(200);
  struct {
    const char *name;
    char *line;
    long iters;
  } msgs[] = {
      {"heartbeat", envelope("heartbeat", "{}", 2), 200000},
      {"acknowledgement",
       envelope("acknowledgement", "{\"acknowledgedMessageId\":\"" MSG_ID "\"}",
                3),
       200000},
      {"orderForward, 10 items", envelope("orderForward", typical, 9), 20000},
      {"orderForward, 200 items", envelope("orderForward", large, 9), 1000},
  };

  printf("jansson %s, cJSON %s\n\n", JANSSON_VERSION, cJSON_Version());
  printf(
      "Part 1: CPU ns per parse (tree built and freed), median of %d runs\n\n",
      RUNS);
  printf("| %-24s | %7s | %12s | %12s | %7s |\n", "message", "bytes",
         "jansson ns", "cJSON ns", "ratio");
  printf("|%s|%s|%s|%s|%s|\n", "--------------------------", "---------",
         "--------------", "--------------", "---------");
  for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
    size_t n = strlen(msgs[i].line);
    long it = msgs[i].iters / scale;
    double tj = bench(parse_jansson, msgs[i].line, n, it);
    double tc = bench(parse_cjson, msgs[i].line, n, it);
    printf("| %-24s | %7zu | %12.0f | %12.0f | %6.2fx |\n", msgs[i].name, n, tj,
           tc, tj / tc);
  }

  printf("\nPart 2: malformed input (strictest settings of each API)\n\n");
  printf("| %-28s | %-7s | %-7s | what an accepting parser made of it\n",
         "input", "jansson", "cJSON");
  printf("|------------------------------|---------|---------|------\n");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    table_row(bad[i].name, bad[i].text,
              bad[i].len ? bad[i].len : strlen(bad[i].text));
  char *d33 = nested(33), *d10k = nested(10000);
  table_row("nesting depth 33", d33, strlen(d33));
  table_row("nesting depth 10000", d10k, strlen(d10k));
  table_row("integer 2^53+1 (precision)", "{\"a\":9007199254740993}",
            strlen("{\"a\":9007199254740993}"));

  free(d33);
  free(d10k);
  for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
    free(msgs[i].line);
  free(typical);
  free(large);
  return 0;
}
