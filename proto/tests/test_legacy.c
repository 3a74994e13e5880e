/* Legacy JSON wire: NDJSON splitting, legacy <-> v2 conversion, byte-exact
 * round trips, malformed input, timestamps, amounts, Dart number format,
 * discovery datagrams and allocation failure. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "internal.h"
#include "json_emit.h"
#include "posp2p/legacy.h"
#include "ptest.h"

#define MID "11111111-1111-4111-8111-111111111111"
#define DEV_A "22222222-2222-4222-8222-222222222222"
#define DEV_B "33333333-3333-4333-8333-333333333333"
#define TS "2026-02-22T10:15:30.123"

/* A complete legacy line (without '\n') of the given type and payload. */
#define HDR(type)                                                              \
  "{\"messageId\":\"" MID "\",\"messageType\":\"" type                         \
  "\",\"fromDeviceId\":\"" DEV_A "\",\"toDeviceId\":\"" DEV_B                  \
  "\",\"timestamp\":\"" TS "\",\"payload\":"
#define TAIL(prio) ",\"priority\":" #prio ",\"acknowledged\":null}"
#define MSG(type, payload, prio) HDR(type) payload TAIL(prio)

#define ITEM(price, disc)                                                      \
  "{\"productId\":\"p1\",\"productName\":\"Pizza\",\"price\":" price           \
  ",\"quantity\":2,\"modifiers\":[\"extra cheese\"],\"variant\":null,"         \
  "\"notes\":null,\"discountPerItem\":" disc "}"
#define ORDER(items, subtotal, total)                                          \
  "{\"orderId\":\"ORD-1\",\"items\":[" items "],\"subtotal\":" subtotal        \
  ",\"tax\":null,\"serviceCharge\":null,\"discount\":null,\"total\":" total    \
  ",\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","                  \
  "\"tableNumber\":null,\"customerName\":null,\"specialInstructions\":null,"   \
  "\"targetDeliveryTime\":null}"

static const posp2p_legacy_opts utc = {0};

/* ---- helpers ---------------------------------------------------------- */

/* Does buf[0..len) contain needle? (Encoder output is not NUL-terminated.) */
static bool contains(const uint8_t *buf, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(buf + i, needle, n) == 0)
      return true;
  return false;
}

static int decode_str(const char *line, posp2p_envelope **e,
                      posp2p_error *err) {
  return posp2p_legacy_decode((const uint8_t *)line, strlen(line), &utc, NULL,
                              e, err);
}

/* legacy -> v2 -> legacy must give back line + "\n" byte for byte. */
static int roundtrip(const uint8_t *line, size_t len) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  posp2p_buf out;
  int ok = 0;
  int rv = posp2p_legacy_decode(line, len, &utc, NULL, &e, &err);
  if (rv != 0) {
    fprintf(stderr, "  decode: %s %s\n", posp2p_err_name(rv), err.message);
    return 0;
  }
  posp2p_buf_init(&out, 1u << 22, NULL);
  rv = posp2p_legacy_encode(e, &utc, &out, &err);
  if (rv != 0) {
    fprintf(stderr, "  encode: %s %s\n", posp2p_err_name(rv), err.message);
  } else if (out.len != len + 1 || memcmp(out.data, line, len) != 0 ||
             out.data[len] != '\n') {
    fprintf(stderr, "  round trip differs:\n  in:  %.*s\n  out: %.*s", (int)len,
            (const char *)line, (int)out.len, (const char *)out.data);
  } else {
    ok = 1;
  }
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
  return ok;
}

static int roundtrip_str(const char *line) {
  return roundtrip((const uint8_t *)line, strlen(line));
}

static char *read_file(const char *rel, size_t *len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", POSP2P_VECTORS_DIR, rel);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf != NULL) {
    buf[n] = '\0';
    *len = (size_t)n;
  }
  return buf;
}

/* ---- NDJSON splitter ----------------------------------------------------- */

#define MAX_LINES 8
typedef struct {
  char text[MAX_LINES][512];
  size_t len[MAX_LINES];
  uint64_t offset[MAX_LINES];
  int n;
  int err;
  bool zero_copy; /* every line came back as a pointer into the input */
} collected;

/* Feed p[0..n) and collect the lines that come out. */
static void feed(posp2p_ndjson *s, const uint8_t *p, size_t n, collected *c) {
  while (n > 0 && c->err == 0) {
    size_t used = 0;
    posp2p_frame fr;
    posp2p_error err;
    int rv = posp2p_ndjson_next(s, p, n, &used, &fr, &err);
    if (rv < 0) {
      c->err = rv;
      return;
    }
    if (rv == 1 && c->n < MAX_LINES) {
      if (fr.data < p || fr.data >= p + n)
        c->zero_copy = false;
      memcpy(c->text[c->n], fr.data, fr.len);
      c->len[c->n] = fr.len;
      c->offset[c->n] = fr.offset;
      c->n++;
    }
    p += used;
    n -= used;
  }
}

/* Two messages with multi-byte UTF-8 (2, 3 and 4 bytes), a CRLF ending,
 * empty lines (bare and CRLF) between them. */
static const char split_stream[] = "\n" MSG(
    "heartbeat", "{}",
    2) "\r\n"
       "\r\n\n" MSG("warning",
                    "{\"text\":\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\"}",
                    5) "\n";

static void expect_split_lines(const collected *c) {
  static const char l1[] = MSG("heartbeat", "{}", 2);
  static const char l2[] = MSG(
      "warning", "{\"text\":\"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80\"}", 5);
  PT_EQ_INT(c->err, 0);
  PT_EQ_INT(c->n, 2);
  if (c->n != 2)
    return;
  PT_EQ_INT(c->len[0], sizeof(l1) - 1);
  PT_EQ_MEM(c->text[0], l1, sizeof(l1) - 1);
  PT_EQ_INT(c->offset[0], 1);
  PT_EQ_INT(c->len[1], sizeof(l2) - 1);
  PT_EQ_MEM(c->text[1], l2, sizeof(l2) - 1);
  PT_EQ_INT(c->offset[1], 1 + sizeof(l1) - 1 + 2 + 3);
}

PTEST(ndjson_every_split_point) {
  size_t n = sizeof(split_stream) - 1;
  for (size_t k = 0; k <= n; k++) {
    posp2p_ndjson s;
    collected c = {.n = 0, .err = 0, .zero_copy = true};
    posp2p_error err;
    posp2p_ndjson_init(&s, 4096, NULL);
    feed(&s, (const uint8_t *)split_stream, k, &c);
    feed(&s, (const uint8_t *)split_stream + k, n - k, &c);
    expect_split_lines(&c);
    PT_EQ_INT(posp2p_ndjson_finish(&s, &err), 0);
    posp2p_ndjson_free(&s);
  }
}

PTEST(ndjson_one_byte_at_a_time) {
  size_t n = sizeof(split_stream) - 1;
  posp2p_ndjson s;
  collected c = {.n = 0, .err = 0, .zero_copy = true};
  posp2p_error err;
  posp2p_ndjson_init(&s, 4096, NULL);
  for (size_t i = 0; i < n; i++)
    feed(&s, (const uint8_t *)split_stream + i, 1, &c);
  expect_split_lines(&c);
  PT_EQ_INT(posp2p_ndjson_finish(&s, &err), 0);
  posp2p_ndjson_free(&s);
}

PTEST(ndjson_whole_lines_are_not_copied) {
  posp2p_ndjson s;
  collected c = {.n = 0, .err = 0, .zero_copy = true};
  posp2p_ndjson_init(&s, 4096, NULL);
  feed(&s, (const uint8_t *)split_stream, sizeof(split_stream) - 1, &c);
  expect_split_lines(&c);
  PT_CHECK(c.zero_copy);
  posp2p_ndjson_free(&s);
}

PTEST(ndjson_every_split_point_decodes) {
  /* The pieces reassembled from any split decode to the same messages. */
  size_t n = sizeof(split_stream) - 1;
  for (size_t k = 0; k <= n; k += 7) {
    posp2p_ndjson s;
    collected c = {.n = 0, .err = 0, .zero_copy = true};
    posp2p_ndjson_init(&s, 4096, NULL);
    feed(&s, (const uint8_t *)split_stream, k, &c);
    feed(&s, (const uint8_t *)split_stream + k, n - k, &c);
    PT_EQ_INT(c.n, 2);
    for (int i = 0; i < c.n; i++)
      PT_CHECK(roundtrip((uint8_t *)c.text[i], c.len[i]));
    posp2p_ndjson_free(&s);
  }
}

/* Feed the whole input and return the first error (0 if none). */
static int first_error(const char *in, size_t n, uint32_t max_line,
                       posp2p_error *err) {
  posp2p_ndjson s;
  int rv = 0;
  posp2p_ndjson_init(&s, max_line, NULL);
  while (n > 0) {
    size_t used;
    posp2p_frame fr;
    rv = posp2p_ndjson_next(&s, (const uint8_t *)in, n, &used, &fr, err);
    if (rv < 0)
      break;
    rv = 0;
    in += used;
    n -= used;
  }
  posp2p_ndjson_free(&s);
  return rv;
}

PTEST(ndjson_line_length_limit) {
  /* max_line counts the bytes before the terminator; a "\r" of "\r\n" is
   * not part of the line. */
  static const struct {
    const char *in;
    int err;
    uint64_t offset;
  } cases[] = {
      {"0123456789abcdef\n", 0, 0},
      {"0123456789abcdef\r\n", 0, 0},
      {"0123456789abcdefg\n", POSP2P_ERR_LINE_TOO_LONG, 16},
      {"0123456789abcdefg", POSP2P_ERR_LINE_TOO_LONG, 16},
      {"{}\n0123456789abcdef\rX\n", POSP2P_ERR_LINE_TOO_LONG, 19},
      {"0123456789abcdef\r\r\n", POSP2P_ERR_LINE_TOO_LONG, 16},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t n = strlen(cases[i].in);
    /* Whole, and one byte at a time (the error must come no later). */
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      posp2p_ndjson s;
      collected c = {.n = 0, .err = 0, .zero_copy = true};
      posp2p_ndjson_init(&s, 16, NULL);
      if (bytewise) {
        for (size_t j = 0; j < n; j++)
          feed(&s, (const uint8_t *)cases[i].in + j, 1, &c);
      } else {
        feed(&s, (const uint8_t *)cases[i].in, n, &c);
      }
      PT_EQ_INT(c.err, cases[i].err);
      if (cases[i].err != 0) {
        posp2p_error err;
        size_t used;
        posp2p_frame fr;
        /* Sticky: the stream stays failed. */
        PT_EQ_INT(posp2p_ndjson_next(&s, (const uint8_t *)"{}\n", 3, &used, &fr,
                                     &err),
                  cases[i].err);
        PT_EQ_INT(posp2p_ndjson_finish(&s, &err), cases[i].err);
        /* The offset of the first byte beyond the limit. */
        PT_EQ_INT(first_error(cases[i].in, n, 16, &err), cases[i].err);
        PT_EQ_INT(err.offset, cases[i].offset);
        PT_EQ_STR(err.requirement, "LEGACY-3");
      } else {
        PT_EQ_INT(c.n, 1);
        PT_EQ_INT(c.len[0], 16);
      }
      posp2p_ndjson_free(&s);
    }
  }
}

/* A NUL byte rejects its line (LEGACY-5) but not the stream (LEGACY-9):
 * the splitter returns the line, the decoder refuses it, the next line is
 * fine. */
PTEST(ndjson_nul_byte) {
  static const char in[] = "{}\n{\"a\":\"x\0y\"}\n{}\n";
  posp2p_ndjson s;
  posp2p_error err;
  posp2p_frame fr;
  size_t used, pos = 0;
  posp2p_legacy_opts opts0 = {0};
  posp2p_envelope *e = NULL;
  posp2p_ndjson_init(&s, 4096, NULL);
  PT_EQ_INT(posp2p_ndjson_next(&s, (const uint8_t *)in, sizeof(in) - 1, &used,
                               &fr, &err),
            1);
  PT_EQ_INT(fr.len, 2);
  pos += used;
  PT_EQ_INT(posp2p_ndjson_next(&s, (const uint8_t *)in + pos,
                               sizeof(in) - 1 - pos, &used, &fr, &err),
            1);
  PT_EQ_INT(fr.len, 11);
  PT_EQ_INT(fr.offset, 3);
  PT_EQ_INT(posp2p_legacy_decode(fr.data, fr.len, &opts0, NULL, &e, &err),
            POSP2P_ERR_JSON_NUL);
  PT_EQ_INT(err.offset, 7);
  PT_CHECK(e == NULL);
  pos += used;
  PT_EQ_INT(posp2p_ndjson_next(&s, (const uint8_t *)in + pos,
                               sizeof(in) - 1 - pos, &used, &fr, &err),
            1);
  PT_EQ_INT(fr.len, 2);
  posp2p_ndjson_free(&s);
}

/* The splitter's only content-independent error is the length limit, at
 * the same offset whatever the split, NUL bytes or not (fuzz_legacy
 * regression k4). */
PTEST(ndjson_nul_and_length_order) {
  static const struct {
    const char *in;
    size_t len;
    int code;
    uint64_t offset;
  } cases[] = {
      {"0123456789abcdeX\0\n", 18, POSP2P_ERR_LINE_TOO_LONG, 16},
      {"0123456789abcdefXY\0\n", 20, POSP2P_ERR_LINE_TOO_LONG, 16},
      {"0123456789abcdef\0", 17, POSP2P_ERR_LINE_TOO_LONG, 16},
      {"0123456789abcde\0xyz\n", 20, POSP2P_ERR_LINE_TOO_LONG, 16},
      {"{}\n0123456789ab\0cdefg", 21, POSP2P_ERR_LINE_TOO_LONG, 19},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (size_t k = 0; k <= cases[i].len; k++) {
      /* two pieces split at k */
      posp2p_ndjson s;
      posp2p_error err = {0};
      int rv = 0;
      size_t piece[2] = {k, cases[i].len - k}, base = 0;
      posp2p_ndjson_init(&s, 16, NULL);
      for (int p = 0; p < 2 && rv >= 0; p++) {
        const uint8_t *d = (const uint8_t *)cases[i].in + base;
        size_t left = piece[p];
        while (left > 0) {
          size_t used;
          posp2p_frame fr;
          rv = posp2p_ndjson_next(&s, d, left, &used, &fr, &err);
          if (rv < 0)
            break;
          d += used;
          left -= used;
        }
        base += piece[p];
      }
      if (rv != cases[i].code || err.offset != cases[i].offset)
        PT_FAIL_("case %zu split %zu: %s at %llu, want %s at %llu", i, k,
                 posp2p_err_name(rv), (unsigned long long)err.offset,
                 posp2p_err_name(cases[i].code),
                 (unsigned long long)cases[i].offset);
      posp2p_ndjson_free(&s);
    }
  }
}

PTEST(ndjson_truncated_at_end) {
  posp2p_ndjson s;
  posp2p_error err;
  collected c = {.n = 0, .err = 0, .zero_copy = true};
  posp2p_ndjson_init(&s, 4096, NULL);
  feed(&s, (const uint8_t *)"{}\n{\"a\"", 7, &c);
  PT_EQ_INT(c.n, 1);
  PT_EQ_INT(posp2p_ndjson_finish(&s, &err), POSP2P_ERR_TRUNCATED);
  feed(&s, (const uint8_t *)":1}\r", 4, &c);
  PT_EQ_INT(posp2p_ndjson_finish(&s, &err),
            POSP2P_ERR_TRUNCATED); /* a lone '\r' */
  feed(&s, (const uint8_t *)"\n", 1, &c);
  PT_EQ_INT(c.n, 2);
  PT_EQ_INT(c.len[1], 7);
  PT_EQ_INT(posp2p_ndjson_finish(&s, &err), 0);
  posp2p_ndjson_free(&s);
}

/* ---- round trips --------------------------------------------------------- */

/* One line per legacy message type, in the exact form the reference writes,
 * with nulls, UTF-8 and escapes where they occur. */
static const char *const typed_lines[] = {
    MSG("discovery",
        "{\"deviceName\":\"Main "
        "POS\",\"deviceType\":\"P2PDeviceType.mainPOS\",\"port\":8766}",
        8),
    MSG("acknowledgement", "{\"acknowledgedMessageId\":\"" DEV_B "\"}", 3),
    MSG("heartbeat", "{}", 2),
    MSG("orderForward",
        "{\"orderId\":\"ORD-9\",\"items\":[" ITEM(
            "12.5",
            "null") ","
                    "{\"productId\":\"p2\",\"productName\":\"Caf\xc3\xa9 "
                    "\\\"au\\\" lait\",\"price\":3.75,"
                    "\"quantity\":1,\"modifiers\":[],\"variant\":\"medium\","
                    "\"notes\":\"hot\\n\","
                    "\"discountPerItem\":0.25}],\"subtotal\":28.75,\"tax\":2.3,"
                    "\"serviceCharge\":0.0,"
                    "\"discount\":1.0,\"total\":30.05,\"orderStatus\":\"sent_"
                    "to_kitchen\","
                    "\"destination\":\"kitchenDisplay\",\"tableNumber\":12,"
                    "\"customerName\":\"Zo\xc3\xab\","
                    "\"specialInstructions\":\"\xf0\x9f\x8e\x82\","
                    "\"targetDeliveryTime\":"
                    "\"2026-02-22T10:45:00.000250\"}",
        9),
    MSG("orderStatus",
        "{\"orderId\":\"ORD-9\",\"newStatus\":\"ready\",\"statusReason\":null,"
        "\"estimatedTime\":0}",
        8),
    MSG("orderCancel",
        "{\"orderId\":\"ORD-9\",\"reason\":\"\",\"refund\":false}", 9),
    MSG("orderSync", "{\"orders\":[{\"id\":1,\"total\":94.16}],\"full\":true}",
        5),
    MSG("cartSync",
        "{\"cartId\":\"c1\",\"items\":[],\"total\":0.0,\"customer\":null}", 5),
    MSG("productSync",
        "{\"products\":[],\"stock\":-3,\"price\":1e-7,\"big\":1e+21}", 0),
    MSG("configSync",
        "{\"a\":{\"b\":{\"c\":[1,2.5,\"x\",null,true]}},\"tiny\":5e-324}", 5),
    MSG("deviceInfo",
        "{\"deviceName\":\"KDS "
        "\xe3\x82\xad\",\"deviceType\":\"P2PDeviceType.kds\",\"port\":0}",
        5),
    MSG("serverMode", "{\"mode\":\"server\",\"since\":\"" TS "\"}", 5),
    MSG("broadcastUpdate",
        "{\"message\":\"tab\\there\\u0001 \\\\ \\\"q\\\" /\"}", 10),
    MSG("deviceCommand", "{\"command\":\"reload\",\"args\":{\"delay\":3}}", 5),
    MSG("deviceResponse", "{}", 5),
    MSG("error",
        "{\"errorCode\":\"PRINTER_OFFLINE\",\"errorDescription\":\"out of "
        "paper\"}",
        9),
    MSG("error",
        "{\"errorCode\":\"QUEUE_FULL\",\"errorDescription\":\"x\","
        "\"errorDetails\":\"d\"}",
        9),
    MSG("warning", "{\"warning\":\"low paper\",\"level\":2}", 5),
    /* broadcast, 26-char timestamp, acknowledged true */
    "{\"messageId\":\"" MID
    "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
    "\",\"toDeviceId\":null,\"timestamp\":\"2024-02-29T23:59:59.999999\","
    "\"payload\":{},"
    "\"priority\":2,\"acknowledged\":true}",
};

PTEST(roundtrip_every_message_type) {
  for (size_t i = 0; i < sizeof(typed_lines) / sizeof(typed_lines[0]); i++) {
    if (!roundtrip_str(typed_lines[i]))
      PT_FAIL_("typed_lines[%zu] did not round-trip", i);
  }
}

PTEST(decode_maps_fields) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(decode_str(typed_lines[3], &e, &err), 0);
  if (e == NULL)
    return;
  PT_EQ_STR(e->message_id, MID);
  PT_EQ_INT(e->message_type,
            POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD);
  PT_EQ_STR(e->to_device_id, DEV_B);
  PT_EQ_INT(e->timestamp_ms, INT64_C(1771755330123));
  PT_EQ_INT(e->timestamp_us, 0);
  PT_EQ_INT(e->priority, 9);
  PT_EQ_INT(e->opt_acknowledged_case,
            POSP2P__V2__ENVELOPE__OPT_ACKNOWLEDGED__NOT_SET);
  const Posp2p__V2__OrderForward *of = e->order_forward;
  PT_EQ_INT(of->currency_exponent, 2);
  PT_EQ_STR(of->currency, "");
  PT_EQ_INT(of->n_items, 2);
  PT_EQ_INT(of->items[0]->price_minor, 1250);
  PT_EQ_INT(of->items[0]->n_modifiers, 1);
  PT_EQ_STR(of->items[0]->modifiers[0], "extra cheese");
  PT_EQ_INT(of->items[0]->opt_variant_case,
            POSP2P__V2__ORDER_ITEM__OPT_VARIANT__NOT_SET);
  PT_EQ_INT(of->items[0]->opt_discount_per_item_minor_case, 0);
  PT_EQ_STR(of->items[1]->product_name, "Caf\xc3\xa9 \"au\" lait");
  PT_EQ_STR(of->items[1]->notes, "hot\n");
  PT_EQ_INT(of->items[1]->discount_per_item_minor, 25);
  PT_EQ_INT(of->subtotal_minor, 2875);
  PT_EQ_INT(of->tax_minor, 230);
  PT_EQ_INT(
      of->opt_service_charge_minor_case,
      POSP2P__V2__ORDER_FORWARD__OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR);
  PT_EQ_INT(of->service_charge_minor, 0);
  PT_EQ_INT(of->discount_minor, 100);
  PT_EQ_INT(of->total_minor, 3005);
  PT_EQ_INT(of->order_status,
            POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SENT_TO_KITCHEN);
  PT_EQ_INT(of->destination,
            POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY);
  PT_EQ_INT(of->table_number, 12);
  PT_EQ_STR(of->customer_name, "Zo\xc3\xab");
  PT_EQ_INT(of->target_delivery_time_ms, INT64_C(1771757100000));
  PT_EQ_INT(of->target_delivery_time_us, 250);
  posp2p_envelope_free(e, NULL);
}

PTEST(decode_error_codes) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(decode_str(typed_lines[15], &e, &err), 0);
  if (e != NULL) {
    PT_EQ_INT(e->error->code, POSP2P__V2__ERROR_CODE__ERROR_CODE_UNSPECIFIED);
    PT_EQ_STR(e->error->legacy_code, "PRINTER_OFFLINE");
    PT_EQ_INT(e->error->opt_details_case,
              POSP2P__V2__ERROR__OPT_DETAILS__NOT_SET);
    posp2p_envelope_free(e, NULL);
  }
  PT_EQ_INT(decode_str(typed_lines[16], &e, &err), 0);
  if (e != NULL) {
    PT_EQ_INT(e->error->code, POSP2P__V2__ERROR_CODE__ERROR_CODE_QUEUE_FULL);
    PT_EQ_STR(e->error->legacy_code, "");
    PT_EQ_STR(e->error->details, "d");
    posp2p_envelope_free(e, NULL);
  }
  /* "UNSPECIFIED" and "" are not codes: kept verbatim, written back. */
  PT_CHECK(roundtrip_str(
      MSG("error", "{\"errorCode\":\"UNSPECIFIED\",\"errorDescription\":\"\"}",
          9)));
  PT_CHECK(roundtrip_str(
      MSG("error", "{\"errorCode\":\"\",\"errorDescription\":\"\"}", 9)));
}

PTEST(decode_unknown_type_becomes_error) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(
      decode_str(MSG("broadcast", "{ \"text\" : \"h\\u0069\", \"n\":1.50}", 5),
                 &e, &err),
      0);
  if (e == NULL)
    return;
  PT_EQ_INT(e->message_type, POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ERROR);
  PT_EQ_INT(e->error->code,
            POSP2P__V2__ERROR_CODE__ERROR_CODE_UNKNOWN_MESSAGE_TYPE);
  PT_EQ_STR(e->error->description, "broadcast");
  /* compact, in the form a Dart sender writes the same values */
  PT_EQ_STR(e->error->details, "{\"text\":\"hi\",\"n\":1.5}");
  posp2p_envelope_free(e, NULL);
  /* v2-only names are unknown on the legacy wire too. */
  PT_EQ_INT(decode_str(MSG("hello", "{}", 5), &e, &err), 0);
  if (e != NULL) {
    PT_EQ_INT(e->message_type, POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ERROR);
    PT_EQ_STR(e->error->description, "hello");
    posp2p_envelope_free(e, NULL);
  }
}

PTEST(decode_enum_fallbacks) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(decode_str(MSG("deviceInfo",
                           "{\"deviceName\":\"T\",\"deviceType\":"
                           "\"P2PDeviceType.toaster\",\"port\":1}",
                           5),
                       &e, &err),
            0);
  if (e != NULL) {
    PT_EQ_INT(e->device_info->device_type,
              POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS);
    posp2p_envelope_free(e, NULL);
  }
  /* A bare role name is not a spelling either (LEGACY-33). */
  PT_EQ_INT(
      decode_str(MSG("deviceInfo",
                     "{\"deviceName\":\"T\",\"deviceType\":\"kds\",\"port\":1}",
                     5),
                 &e, &err),
      0);
  if (e != NULL) {
    PT_EQ_INT(e->device_info->device_type,
              POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS);
    posp2p_envelope_free(e, NULL);
  }
  PT_EQ_INT(decode_str(MSG("orderStatus",
                           "{\"orderId\":\"o\",\"newStatus\":\"delivered\","
                           "\"statusReason\":null,"
                           "\"estimatedTime\":null}",
                           8),
                       &e, &err),
            0);
  if (e != NULL) {
    PT_EQ_INT(e->order_status->new_status,
              POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PENDING);
    posp2p_envelope_free(e, NULL);
  }
  static const char fwd[] = MSG(
      "orderForward",
      "{\"orderId\":\"o\",\"items\":[],\"subtotal\":0.0,\"tax\":null,"
      "\"serviceCharge\":null,"
      "\"discount\":null,\"total\":0.0,\"orderStatus\":\"cancelled\","
      "\"destination\":\"moon\","
      "\"tableNumber\":null,\"customerName\":null,\"specialInstructions\":null,"
      "\"targetDeliveryTime\":null}",
      9);
  PT_EQ_INT(decode_str(fwd, &e, &err), 0);
  if (e != NULL) {
    PT_EQ_INT(e->order_forward->destination,
              POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS);
    PT_EQ_INT(e->order_forward->order_status,
              POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_CANCELLED);
    posp2p_envelope_free(e, NULL);
  }
}

PTEST(decode_nulls_and_absent_keys) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  /* Nullable keys may be left out; that is the same as null. */
  static const char line[] =
      "{\"messageId\":\"" MID
      "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
      "\",\"timestamp\":\"" TS "\",\"payload\":{},\"unknownKey\":[1]}";
  PT_EQ_INT(decode_str(line, &e, &err), 0);
  if (e == NULL)
    return;
  PT_EQ_INT(e->opt_to_device_id_case,
            POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID__NOT_SET);
  PT_EQ_INT(e->opt_priority_case, POSP2P__V2__ENVELOPE__OPT_PRIORITY__NOT_SET);
  PT_EQ_INT(e->opt_acknowledged_case,
            POSP2P__V2__ENVELOPE__OPT_ACKNOWLEDGED__NOT_SET);
  /* Written back the way the reference writes it: nulls and priority 5. */
  posp2p_buf out;
  posp2p_buf_init(&out, 4096, NULL);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  static const char want[] =
      "{\"messageId\":\"" MID
      "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
      "\",\"toDeviceId\":null,\"timestamp\":\"" TS
      "\",\"payload\":{},\"priority\":5,"
      "\"acknowledged\":null}\n";
  PT_EQ_INT(out.len, sizeof(want) - 1);
  PT_EQ_MEM(out.data, want, sizeof(want) - 1);
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
}

PTEST(decode_missing_payload_is_empty_object) {
  static const char line[] =
      "{\"messageId\":\"" MID
      "\",\"messageType\":\"%s\",\"fromDeviceId\":\"" DEV_A
      "\",\"timestamp\":\"" TS "\"}";
  static const char *const types[] = {"heartbeat", "warning", "cartSync",
                                      "noSuchType"};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    char buf[512];
    posp2p_envelope *e = NULL;
    posp2p_error err;
    snprintf(buf, sizeof buf, line, types[i]);
    PT_EQ_INT(decode_str(buf, &e, &err), 0);
    if (e == NULL)
      continue;
    if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_OPAQUE)
      PT_EQ_STR(e->opaque->json, "{}");
    else if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_CART_SYNC)
      PT_EQ_STR(e->cart_sync->legacy_json, "{}");
    else if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ERROR)
      PT_EQ_STR(e->error->details, "{}");
    else
      PT_EQ_INT(e->payload_case, POSP2P__V2__ENVELOPE__PAYLOAD_HEARTBEAT);
    posp2p_envelope_free(e, NULL);
  }
}

PTEST(opaque_empty_object_is_kept) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(decode_str(MSG("warning", "{}", 5), &e, &err), 0);
  if (e == NULL)
    return;
  PT_EQ_INT(e->payload_case, POSP2P__V2__ENVELOPE__PAYLOAD_OPAQUE);
  PT_EQ_STR(e->opaque->json, "{}");
  /* A v2 opaque message without payload is written as {} too. */
  posp2p__v2__opaque_payload__free_unpacked(e->opaque, NULL);
  e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD__NOT_SET;
  posp2p_buf out;
  posp2p_buf_init(&out, 4096, NULL);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  static const char want[] = MSG("warning", "{}", 5) "\n";
  PT_EQ_INT(out.len, sizeof(want) - 1);
  PT_EQ_MEM(out.data, want, sizeof(want) - 1);
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
}

/* Every golden legacy vector: decodes to exactly the v2 vector of the same
 * name, and (unless flagged noroundtrip) encodes back to the same bytes.
 * Negative vectors report the error named in INDEX.tsv. */
PTEST(golden_vectors) {
  size_t ilen;
  char *index = read_file("INDEX.tsv", &ilen);
  int checked = 0;
  PT_CHECK(index != NULL);
  if (index == NULL)
    return;
  for (char *line = strtok(index, "\n"); line != NULL;
       line = strtok(NULL, "\n")) {
    char path[256], desc[512], expected[64], flags[64] = "";
    if (line[0] == '#' || strncmp(line, "legacy/", 7) != 0)
      continue;
    if (sscanf(line, "%255[^\t]\t%511[^\t]\t%63[^\t]\t%63[^\t]", path, desc,
               expected, flags) < 3)
      continue;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(strlen(path) - 12), path + 7);
    size_t len, blen = 0;
    char *data = read_file(path, &len);
    char v2path[300];
    snprintf(v2path, sizeof v2path, "v2/%s.bin", name);
    char *bin = strcmp(expected, "ok") == 0 ? read_file(v2path, &blen) : NULL;
    PT_CHECK(data != NULL);
    if (data == NULL)
      continue;
    posp2p_error err = {0};
    int rv;
    if (strncmp(name, "disc_", 5) == 0) {
      posp2p_disc *m = NULL;
      posp2p_wire wire;
      rv = posp2p_disc_decode((uint8_t *)data, len, NULL, &m, &wire, &err);
      if (rv == 0) {
        PT_EQ_INT(wire, POSP2P_WIRE_LEGACY);
        size_t n = posp2p__v2__discovery_datagram__get_packed_size(m);
        uint8_t *pk = malloc(n + 1);
        posp2p__v2__discovery_datagram__pack(m, pk);
        if (bin == NULL || blen != n + POSP2P_DISC_MAGIC_LEN ||
            memcmp(bin + POSP2P_DISC_MAGIC_LEN, pk, n) != 0)
          PT_FAIL_("%s: decoded datagram differs from %s", path, v2path);
        free(pk);
        posp2p_buf out;
        posp2p_buf_init(&out, 4096, NULL);
        PT_EQ_INT(posp2p_disc_encode(m, POSP2P_WIRE_LEGACY, &out, &err), 0);
        if (out.len != len || memcmp(out.data, data, len) != 0)
          PT_FAIL_("%s: re-encoded datagram differs: %.*s", path, (int)out.len,
                   (char *)out.data);
        posp2p_buf_free(&out);
        posp2p_disc_free(m, NULL);
      }
    } else {
      /* Through the splitter, as on a connection. */
      posp2p_ndjson s;
      posp2p_frame fr;
      size_t used = 0;
      posp2p_envelope *e = NULL;
      posp2p_ndjson_init(&s, POSP2P_MAX_FRAME_DEFAULT, NULL);
      rv = posp2p_ndjson_next(&s, (uint8_t *)data, len, &used, &fr, &err);
      if (rv == 0)
        rv = posp2p_ndjson_finish(&s, &err);
      if (rv == 1)
        rv = posp2p_legacy_decode(fr.data, fr.len, &utc, NULL, &e, &err);
      if (rv == 0) {
        size_t n = posp2p__v2__envelope__get_packed_size(e);
        uint8_t *pk = malloc(n + 1);
        uint8_t hdr[5];
        size_t hl = posp2p_varint_encode((uint32_t)n, hdr);
        posp2p__v2__envelope__pack(e, pk);
        if (bin == NULL || blen != hl + n || memcmp(bin + hl, pk, n) != 0)
          PT_FAIL_("%s: decoded envelope differs from %s", path, v2path);
        free(pk);
        if (strstr(flags, "noroundtrip") == NULL && !roundtrip(fr.data, fr.len))
          PT_FAIL_("%s: no byte-exact round trip", path);
        posp2p_envelope_free(e, NULL);
      }
      posp2p_ndjson_free(&s);
    }
    const char *got = rv == 0 ? "ok" : posp2p_err_name(rv);
    if (strcmp(got, expected) != 0)
      PT_FAIL_("%s: expected %s, got %s (%s)", path, expected, got,
               rv ? err.message : "");
    checked++;
    free(data);
    free(bin);
  }
  free(index);
  PT_CHECK(checked >= 40);
}

/* ---- malformed input ----------------------------------------------------- */

typedef struct {
  const char *name;
  const char *line;
  size_t len; /* 0: strlen */
  int code;
} bad_case;

#define BAD(name, line, code)                                                  \
  { name, line, 0, code }
#define BADN(name, line, code)                                                 \
  { name, line, sizeof(line) - 1, code }

static const bad_case bad_cases[] = {
    /* syntax */
    BAD("empty", "", POSP2P_ERR_JSON_SYNTAX),
    BAD("truncated", MSG("heartbeat", "{", 2), POSP2P_ERR_JSON_SYNTAX),
    BAD("truncated_mid_string", "{\"messageId\":\"abc", POSP2P_ERR_JSON_SYNTAX),
    BAD("trailing_garbage", MSG("heartbeat", "{}", 2) " x",
        POSP2P_ERR_JSON_SYNTAX),
    BAD("two_objects", MSG("heartbeat", "{}", 2) MSG("heartbeat", "{}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    BAD("duplicate_key", MSG("heartbeat", "{\"a\":1,\"a\":2}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    BAD("single_quotes", "{'messageId':1}", POSP2P_ERR_JSON_SYNTAX),
    BAD("bad_literal", MSG("heartbeat", "{\"a\":tru}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    BAD("leading_zero", MSG("heartbeat", "{\"a\":01}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    BAD("nan", MSG("heartbeat", "{\"a\":NaN}", 2), POSP2P_ERR_JSON_SYNTAX),
    BAD("raw_control_char", MSG("heartbeat", "{\"a\":\"x\x01y\"}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    BAD("bad_escape", MSG("heartbeat", "{\"a\":\"\\x\"}", 2),
        POSP2P_ERR_JSON_SYNTAX),
    /* not an object */
    BAD("array", "[\"heartbeat\"]", POSP2P_ERR_JSON_TYPE),
    BAD("string", "\"heartbeat\"", POSP2P_ERR_JSON_TYPE),
    BAD("number", "42", POSP2P_ERR_JSON_TYPE),
    /* text */
    BAD("invalid_utf8", MSG("heartbeat", "{\"a\":\"caf\xc3\x28\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("invalid_utf8_key", MSG("heartbeat", "{\"\xff\":1}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("overlong_slash", MSG("heartbeat", "{\"a\":\"\xc0\xaf\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("overlong_3byte", MSG("heartbeat", "{\"a\":\"\xe0\x80\xaf\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("overlong_4byte", MSG("heartbeat", "{\"a\":\"\xf0\x80\x80\xaf\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("utf8_surrogate", MSG("heartbeat", "{\"a\":\"\xed\xa0\x80\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("utf8_above_10ffff",
        MSG("heartbeat", "{\"a\":\"\xf4\x90\x80\x80\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("utf8_truncated_seq", MSG("heartbeat", "{\"a\":\"\xe6\x97\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BAD("lone_high_surrogate_escape",
        MSG("heartbeat", "{\"a\":\"\\ud83d x\"}", 2), POSP2P_ERR_JSON_UTF8),
    BAD("lone_low_surrogate_escape", MSG("heartbeat", "{\"a\":\"\\uDE00\"}", 2),
        POSP2P_ERR_JSON_UTF8),
    BADN("raw_nul_in_string", MSG("heartbeat", "{\"a\":\"x\0y\"}", 2),
         POSP2P_ERR_JSON_NUL),
    BADN("raw_nul_after_object", MSG("heartbeat", "{}", 2) "\0",
         POSP2P_ERR_JSON_NUL),
    BAD("escaped_nul", MSG("heartbeat", "{\"a\":\"x\\u0000y\"}", 2),
        POSP2P_ERR_JSON_NUL),
    BAD("escaped_nul_in_key", MSG("heartbeat", "{\"\\u0000\":1}", 2),
        POSP2P_ERR_JSON_NUL),
    /* numbers */
    BAD("real_overflow", MSG("heartbeat", "{\"a\":1e400}", 2),
        POSP2P_ERR_JSON_NUMBER),
    BAD("int_beyond_int64", MSG("heartbeat", "{\"a\":9223372036854775808}", 2),
        POSP2P_ERR_JSON_NUMBER),
    BAD("int_beyond_int64_neg",
        MSG("heartbeat", "{\"a\":-9223372036854775809}", 2),
        POSP2P_ERR_JSON_NUMBER),
    BAD("amount_10_decimals",
        MSG("orderForward", ORDER(ITEM("0.0000000001", "null"), "0.0", "0.0"),
            9),
        POSP2P_ERR_JSON_NUMBER),
    BAD("amount_above_2_53",
        MSG("orderForward", ORDER(ITEM("1e20", "null"), "0.0", "0.0"), 9),
        POSP2P_ERR_JSON_NUMBER),
    BAD("amount_17_digits",
        MSG("orderForward",
            ORDER(ITEM("0.30000000000000004", "null"), "0.0", "0.0"), 9),
        POSP2P_ERR_JSON_NUMBER),
    /* wrong JSON types */
    BAD("messageId_number",
        "{\"messageId\":1,\"messageType\":\"heartbeat\",\"fromDeviceId\":"
        "\"" DEV_A "\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("messageType_null",
        "{\"messageId\":\"" MID
        "\",\"messageType\":null,\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("toDeviceId_number",
        "{\"messageId\":\"" MID
        "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":7,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("timestamp_number",
        "{\"messageId\":\"" MID
        "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"timestamp\":1771755330123,\"payload\":{},"
        "\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("payload_array", HDR("heartbeat") "[]" TAIL(2), POSP2P_ERR_JSON_TYPE),
    BAD("payload_null", HDR("heartbeat") "null" TAIL(2), POSP2P_ERR_JSON_TYPE),
    BAD("priority_string",
        HDR("heartbeat") "{}"
                         ",\"priority\":\"5\",\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("priority_real",
        HDR("heartbeat") "{}"
                         ",\"priority\":5.0,\"acknowledged\":null}",
        POSP2P_ERR_JSON_TYPE),
    BAD("acknowledged_string",
        HDR("heartbeat") "{}"
                         ",\"priority\":5,\"acknowledged\":\"no\"}",
        POSP2P_ERR_JSON_TYPE),
    BAD("port_string",
        MSG("deviceInfo",
            "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\","
            "\"port\":\"8766\"}",
            5),
        POSP2P_ERR_JSON_TYPE),
    BAD("deviceType_null",
        MSG("deviceInfo",
            "{\"deviceName\":\"x\",\"deviceType\":null,\"port\":1}", 5),
        POSP2P_ERR_JSON_TYPE),
    BAD("ack_id_number",
        MSG("acknowledgement", "{\"acknowledgedMessageId\":5}", 3),
        POSP2P_ERR_JSON_TYPE),
    BAD("price_string",
        MSG("orderForward", ORDER(ITEM("\"12.5\"", "null"), "0.0", "0.0"), 9),
        POSP2P_ERR_JSON_TYPE),
    BAD("quantity_real",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":[{\"productId\":\"p\","
            "\"productName\":\"P\",\"price\":1.0,"
            "\"quantity\":2.0,\"modifiers\":[],\"variant\":null,\"notes\":null,"
            "\"discountPerItem\":null}],"
            "\"subtotal\":2.0,\"tax\":null,\"serviceCharge\":null,\"discount\":"
            "null,\"total\":2.0,"
            "\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","
            "\"tableNumber\":null,"
            "\"customerName\":null,\"specialInstructions\":null,"
            "\"targetDeliveryTime\":null}",
            9),
        POSP2P_ERR_JSON_TYPE),
    BAD("modifier_number",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":[{\"productId\":\"p\","
            "\"productName\":\"P\",\"price\":1.0,"
            "\"quantity\":2,\"modifiers\":[\"a\",3],\"variant\":null,\"notes\":"
            "null,\"discountPerItem\":null}],"
            "\"subtotal\":2.0,\"tax\":null,\"serviceCharge\":null,\"discount\":"
            "null,\"total\":2.0,"
            "\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","
            "\"tableNumber\":null,"
            "\"customerName\":null,\"specialInstructions\":null,"
            "\"targetDeliveryTime\":null}",
            9),
        POSP2P_ERR_JSON_TYPE),
    BAD("items_object",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":{},\"subtotal\":2.0,\"tax\":null,"
            "\"serviceCharge\":null,"
            "\"discount\":null,\"total\":2.0,\"orderStatus\":\"pending\","
            "\"destination\":\"mainPOS\","
            "\"tableNumber\":null,\"customerName\":null,"
            "\"specialInstructions\":null,"
            "\"targetDeliveryTime\":null}",
            9),
        POSP2P_ERR_JSON_TYPE),
    BAD("item_not_object", MSG("orderForward", ORDER("1", "0.0", "0.0"), 9),
        POSP2P_ERR_JSON_TYPE),
    BAD("refund_string",
        MSG("orderCancel",
            "{\"orderId\":\"o\",\"reason\":\"r\",\"refund\":\"yes\"}", 9),
        POSP2P_ERR_JSON_TYPE),
    BAD("status_number",
        MSG("orderStatus",
            "{\"orderId\":\"o\",\"newStatus\":3,\"statusReason\":null,"
            "\"estimatedTime\":null}",
            8),
        POSP2P_ERR_JSON_TYPE),
    BAD("errorDetails_number",
        MSG("error",
            "{\"errorCode\":\"X\",\"errorDescription\":\"d\",\"errorDetails\":"
            "1}",
            9),
        POSP2P_ERR_JSON_TYPE),
    /* missing keys */
    BAD("missing_messageId",
        "{\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_messageType",
        "{\"messageId\":\"" MID "\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_fromDeviceId",
        "{\"messageId\":\"" MID "\",\"messageType\":\"heartbeat\","
        "\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_timestamp",
        "{\"messageId\":\"" MID
        "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"payload\":{},\"priority\":2,\"acknowledged\":"
        "null}",
        POSP2P_ERR_MISSING_FIELD),
    /* a missing payload is {} (LEGACY-23), so its required keys are missing */
    BAD("missing_payload_keys",
        "{\"messageId\":\"" MID
        "\",\"messageType\":\"orderCancel\",\"fromDeviceId\":\"" DEV_A
        "\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"priority\":2,\"acknowledged\":null}",
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_orderId",
        MSG("orderCancel", "{\"reason\":\"x\",\"refund\":true}", 9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_refund",
        MSG("orderCancel", "{\"orderId\":\"o\",\"reason\":\"x\"}", 9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_items",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"subtotal\":2.0,\"total\":2.0,\"orderStatus\":"
            "\"pending\","
            "\"destination\":\"mainPOS\"}",
            9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_price",
        MSG("orderForward",
            ORDER("{\"productId\":\"p\",\"productName\":\"P\","
                  "\"quantity\":1,\"modifiers\":[]}",
                  "0.0", "0.0"),
            9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_total",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":[],\"subtotal\":2.0,\"orderStatus\":"
            "\"pending\","
            "\"destination\":\"mainPOS\"}",
            9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_errorCode", MSG("error", "{\"errorDescription\":\"d\"}", 9),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_ack_id", MSG("acknowledgement", "{}", 3),
        POSP2P_ERR_MISSING_FIELD),
    BAD("missing_port",
        MSG("deviceInfo",
            "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\"}", 5),
        POSP2P_ERR_MISSING_FIELD),
    BAD("empty_orderId",
        MSG("orderCancel",
            "{\"orderId\":\"\",\"reason\":\"x\",\"refund\":true}", 9),
        POSP2P_ERR_MISSING_FIELD),
    /* ranges and ids (validation) */
    BAD("priority_11", HDR("heartbeat") "{}" TAIL(11), POSP2P_ERR_RANGE),
    BAD("priority_negative", HDR("heartbeat") "{}" TAIL(-1), POSP2P_ERR_RANGE),
    BAD("port_65536",
        MSG("deviceInfo",
            "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\","
            "\"port\":65536}",
            5),
        POSP2P_ERR_RANGE),
    BAD("quantity_negative",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":[{\"productId\":\"p\","
            "\"productName\":\"P\",\"price\":1.0,"
            "\"quantity\":-1,\"modifiers\":[],\"variant\":null,\"notes\":null,"
            "\"discountPerItem\":null}],"
            "\"subtotal\":2.0,\"tax\":null,\"serviceCharge\":null,\"discount\":"
            "null,\"total\":2.0,"
            "\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","
            "\"tableNumber\":null,"
            "\"customerName\":null,\"specialInstructions\":null,"
            "\"targetDeliveryTime\":null}",
            9),
        POSP2P_ERR_RANGE),
    BAD("tableNumber_beyond_int32",
        MSG("orderForward",
            "{\"orderId\":\"o\",\"items\":[],\"subtotal\":0.0,\"tax\":null,"
            "\"serviceCharge\":null,"
            "\"discount\":null,\"total\":0.0,\"orderStatus\":\"pending\","
            "\"destination\":\"mainPOS\","
            "\"tableNumber\":2147483648,\"customerName\":null,"
            "\"specialInstructions\":null,"
            "\"targetDeliveryTime\":null}",
            9),
        POSP2P_ERR_RANGE),
    BAD("estimatedTime_beyond_int32",
        MSG("orderStatus",
            "{\"orderId\":\"o\",\"newStatus\":\"ready\",\"statusReason\":null,"
            "\"estimatedTime\":99999999999}",
            8),
        POSP2P_ERR_RANGE),
    BAD("fromDeviceId_not_uuid",
        "{\"messageId\":\"" MID
        "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":"
        "\"device-1\",\"toDeviceId\":null,\"timestamp\":\"" TS
        "\",\"payload\":{},\"priority\":2,"
        "\"acknowledged\":null}",
        POSP2P_ERR_BAD_ID),
    BAD("ack_id_not_uuid",
        MSG("acknowledgement", "{\"acknowledgedMessageId\":\"x\"}", 3),
        POSP2P_ERR_BAD_ID),
};

/* Timestamp texts that must be rejected inside a message. */
static const char *const bad_timestamps[] = {
    "2026-13-22T10:15:30.123",  /* month 13 */
    "2026-00-22T10:15:30.123",  /* month 0 */
    "2026-02-30T10:15:30.123",  /* Feb 30 */
    "2023-02-29T10:15:30.123",  /* not a leap year */
    "1900-02-29T10:15:30.123",  /* century, not a leap year */
    "2026-04-31T10:15:30.123",  /* April has 30 days */
    "2026-02-00T10:15:30.123",  /* day 0 */
    "2026-02-22T24:00:00.000",  /* hour 24 */
    "2026-02-22T10:60:30.123",  /* minute 60 */
    "2026-02-22T10:15:60.123",  /* leap second */
    "2026-02-22T10:15:30",      /* missing fraction */
    "2026-02-22T10:15:30.12",   /* 2 fraction digits */
    "2026-02-22T10:15:30.1234", /* 4 fraction digits */
    "2026-02-22T10:15:30.123Z", /* zone suffix: rejected, the wire has none */
    "2026-02-22T10:15:30.123456Z",
    "2026-02-22T10:15:30.123+01:00",
    "2026-02-22 10:15:30.123", /* space instead of T */
    "2026-02-22t10:15:30.123", /* lower-case t */
    "+2026-02-22T10:15:30.123",
    "2026-2-22T10:15:30.1234", /* 23 chars but misplaced */
    "2026-02-22T10:15:30,123",
    "",
};

PTEST(malformed_table) {
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    const bad_case *c = &bad_cases[i];
    if (c->code == 0)
      continue;
    posp2p_envelope *e = NULL;
    posp2p_error err = {0};
    size_t len = c->len ? c->len : strlen(c->line);
    int rv = posp2p_legacy_decode((const uint8_t *)c->line, len, &utc, NULL, &e,
                                  &err);
    if (rv != c->code)
      PT_FAIL_("%s: expected %s, got %s (%s)", c->name,
               posp2p_err_name(c->code), posp2p_err_name(rv),
               rv ? err.message : "decoded");
    else if (err.message[0] == '\0' || err.requirement == NULL ||
             err.requirement[0] == '\0')
      PT_FAIL_("%s: error without message or requirement", c->name);
    PT_CHECK(e == NULL);
    if (e != NULL)
      posp2p_envelope_free(e, NULL);
  }
  for (size_t i = 0; i < sizeof(bad_timestamps) / sizeof(bad_timestamps[0]);
       i++) {
    char line[512];
    posp2p_envelope *e = NULL;
    posp2p_error err;
    snprintf(line, sizeof line,
             "{\"messageId\":\"" MID
             "\",\"messageType\":\"heartbeat\",\"fromDeviceId\":\"" DEV_A
             "\",\"toDeviceId\":null,\"timestamp\":\"%s\",\"payload\":{},"
             "\"priority\":2,"
             "\"acknowledged\":null}",
             bad_timestamps[i]);
    int rv = decode_str(line, &e, &err);
    if (rv != POSP2P_ERR_TIMESTAMP)
      PT_FAIL_("timestamp \"%s\": expected POSP2P_ERR_TIMESTAMP, got %s",
               bad_timestamps[i], posp2p_err_name(rv));
    else
      PT_EQ_STR(err.requirement, "LEGACY-39");
    if (e != NULL)
      posp2p_envelope_free(e, NULL);
  }
}

/* Keys whose value may be null or missing (LEGACY-23, LEGACY-27, 16.8). */
static bool nullable_key(const char *key) {
  static const char *const keys[] = {"toDeviceId",
                                     "priority",
                                     "acknowledged",
                                     "errorDetails",
                                     "tax",
                                     "serviceCharge",
                                     "discount",
                                     "tableNumber",
                                     "customerName",
                                     "specialInstructions",
                                     "targetDeliveryTime",
                                     "variant",
                                     "notes",
                                     "discountPerItem",
                                     "statusReason",
                                     "estimatedTime"};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    if (strcmp(keys[i], key) == 0)
      return true;
  return false;
}

/* A value of another JSON type than v. */
static json_t *wrong_type(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_STRING: return json_integer(7);
  case JSON_INTEGER:
  case JSON_REAL: return json_string("7");
  case JSON_TRUE:
  case JSON_FALSE: return json_string("true");
  case JSON_ARRAY: return json_object();
  case JSON_OBJECT: return json_array();
  default: return json_array(); /* null: neither a string nor a number */
  }
}

typedef struct {
  int checked;
} key_walk;

/* Decode root (as compact text) and expect code, with the key path in the
 * message. */
static void expect_decode(json_t *root, int code, const char *path,
                          key_walk *kw) {
  char *text = json_dumps(root, JSON_COMPACT);
  posp2p_envelope *e = NULL;
  posp2p_error err = {0};
  int rv = decode_str(text, &e, &err);
  if (rv != code)
    PT_FAIL_("%s: expected %s, got %s (%s)", path, posp2p_err_name(code),
             posp2p_err_name(rv), rv ? err.message : "decoded");
  else if (code != 0 && strncmp(err.message, path, strlen(path)) != 0)
    PT_FAIL_("%s: message does not name the key: %s", path, err.message);
  if (e != NULL)
    posp2p_envelope_free(e, NULL);
  free(text);
  kw->checked++;
}

/* For every key of obj (an object inside root at path): give it a value of
 * the wrong type (JSON_TYPE), and remove it (accepted for nullable keys,
 * MISSING_FIELD otherwise). Recurses into the payload and order items. */
static void walk_keys(json_t *root, json_t *obj, const char *path,
                      key_walk *kw) {
  /* Snapshot the keys: deleting and re-adding reorders the object. */
  char keys[32][32];
  size_t n = 0;
  const char *k;
  json_t *v;
  json_object_foreach(obj, k, v) {
    if (n < 32)
      snprintf(keys[n++], sizeof keys[0], "%s", k);
  }
  for (size_t i = 0; i < n; i++) {
    const char *key = keys[i];
    char sub[128];
    snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", key);
    v = json_incref(json_object_get(obj, key));
    json_object_set_new(obj, key, wrong_type(v));
    expect_decode(root, POSP2P_ERR_JSON_TYPE, sub, kw);
    if (strcmp(key, "payload") != 0) {
      /* (a missing payload is {}: tested on its own) */
      json_object_del(obj, key);
      expect_decode(root, nullable_key(key) ? 0 : POSP2P_ERR_MISSING_FIELD,
                    nullable_key(key) ? "" : sub, kw);
    }
    json_object_set(obj, key, v); /* restored (order does not matter) */
    if (json_is_object(v) && strcmp(key, "payload") == 0)
      walk_keys(root, v, sub, kw);
    if (json_is_array(v) && strcmp(key, "items") == 0 && json_array_size(v)) {
      char item[160];
      snprintf(item, sizeof item, "%s[0]", sub);
      walk_keys(root, json_array_get(v, 0), item, kw);
    }
    json_decref(v);
  }
}

/* Every key of every typed message: wrong JSON type and missing key. */
PTEST(every_key_type_and_presence) {
  static const size_t typed[] = {0, 1, 3, 4, 5, 10, 15, 16};
  key_walk kw = {0};
  for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
    json_t *root = json_loads(typed_lines[typed[i]], 0, NULL);
    PT_CHECK(root != NULL);
    if (root == NULL)
      continue;
    walk_keys(root, root, "", &kw);
    /* and the untouched message still decodes */
    expect_decode(root, 0, "", &kw);
    json_decref(root);
  }
  PT_CHECK(kw.checked > 150);
}

PTEST(error_messages_name_the_key_path) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  static const char line[] =
      MSG("orderForward",
          ORDER(ITEM("1.0", "null") "," ITEM("1.0", "null") "," ITEM(
                    "1.0", "null") "," ITEM("\"9\"", "null"),
                "0.0", "0.0"),
          9);
  PT_EQ_INT(decode_str(line, &e, &err), POSP2P_ERR_JSON_TYPE);
  PT_EQ_STR(err.message, "payload.items[3].price: expected number, got string");
  PT_EQ_STR(err.requirement, "LEGACY-22");
  static const char line2[] =
      MSG("orderForward",
          "{\"orderId\":\"o\",\"items\":[{\"productId\":\"p\",\"productName\":"
          "\"P\",\"price\":1.0,"
          "\"quantity\":2,\"modifiers\":[\"a\",3],\"variant\":null,\"notes\":"
          "null,\"discountPerItem\":null}],"
          "\"subtotal\":2.0,\"tax\":null,\"serviceCharge\":null,\"discount\":"
          "null,\"total\":2.0,"
          "\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","
          "\"tableNumber\":null,"
          "\"customerName\":null,\"specialInstructions\":null,"
          "\"targetDeliveryTime\":null}",
          9);
  PT_EQ_INT(decode_str(line2, &e, &err), POSP2P_ERR_JSON_TYPE);
  PT_EQ_STR(err.message,
            "payload.items[0].modifiers[1]: expected string, got integer");
  PT_EQ_INT(decode_str(MSG("orderForward",
                           ORDER(ITEM("1e-10", "null"), "0.0", "0.0"), 9),
                       &e, &err),
            POSP2P_ERR_JSON_NUMBER);
  PT_EQ_STR(err.requirement, "LEGACY-38");
  PT_CHECK(strncmp(err.message, "payload.items[0].price:", 23) == 0);
  PT_EQ_INT(
      decode_str(MSG("orderCancel", "{\"reason\":\"x\",\"refund\":true}", 9),
                 &e, &err),
      POSP2P_ERR_MISSING_FIELD);
  PT_EQ_STR(err.message, "payload.orderId: missing");
}

PTEST(error_offsets_point_at_the_bad_byte) {
  static const struct {
    const char *line;
    size_t len;
    int code;
    const char *marker; /* the offending byte is the first byte of this */
  } cases[] = {
      {MSG("heartbeat", "{}", 2) "  x", 0, POSP2P_ERR_JSON_SYNTAX, "x"},
      {MSG("heartbeat", "{\"a\":tru}", 2), 0, POSP2P_ERR_JSON_SYNTAX, "tru"},
      {MSG("heartbeat", "{\"a\":99999999999999999999}", 2), 0,
       POSP2P_ERR_JSON_NUMBER, "999"},
      {MSG("heartbeat", "{\"k\":\"ab\xc3\x28\"}", 2), 0, POSP2P_ERR_JSON_UTF8,
       "\xc3"},
      {MSG("heartbeat", "{\"k\":\"ab\\u0000\"}", 2), 0, POSP2P_ERR_JSON_NUL,
       "\\u0000"},
      {MSG("heartbeat", "{\"k\":\"a\0b\"}", 2),
       sizeof(MSG("heartbeat", "{\"k\":\"a\0b\"}", 2)) - 1, POSP2P_ERR_JSON_NUL,
       NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    posp2p_envelope *e = NULL;
    posp2p_error err;
    size_t len = cases[i].len ? cases[i].len : strlen(cases[i].line);
    PT_EQ_INT(posp2p_legacy_decode((const uint8_t *)cases[i].line, len, &utc,
                                   NULL, &e, &err),
              cases[i].code);
    size_t want =
        cases[i].marker != NULL
            ? (size_t)(strstr(cases[i].line, cases[i].marker) - cases[i].line)
            : strlen(cases[i].line); /* the NUL ends the C string */
    if (err.offset != want)
      PT_FAIL_("case %zu: offset %llu, want %zu", i,
               (unsigned long long)err.offset, want);
  }
  /* A truncated line: the error is where more input was needed. */
  static const char trunc[] = MSG("heartbeat", "{\"a\":", 2);
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(
      posp2p_legacy_decode((const uint8_t *)trunc, 40, &utc, NULL, &e, &err),
      POSP2P_ERR_JSON_SYNTAX);
  PT_EQ_INT(err.offset, 40);
}

/* Payload nested so that the whole message is `depth` levels deep. */
static char *nested_line(int depth, char open, char close) {
  size_t k = (size_t)depth - 2; /* envelope and payload objects */
  size_t cap = strlen(HDR("warning")) + 16 + 6 * k + strlen(TAIL(5));
  char *s = malloc(cap);
  size_t o = (size_t)sprintf(s, "%s{\"a\":", HDR("warning"));
  for (size_t i = 0; i + 1 < k; i++) {
    if (open == '{') {
      o += (size_t)sprintf(s + o, "{\"a\":");
    } else {
      s[o++] = open;
    }
  }
  o += (size_t)sprintf(s + o, "%c%c", open, close);
  for (size_t i = 0; i + 1 < k; i++)
    s[o++] = open == '{' ? '}' : close;
  o += (size_t)sprintf(s + o, "}%s", TAIL(5));
  return s;
}

PTEST(depth_limit) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  for (int brackets = 0; brackets < 2; brackets++) {
    char open = brackets ? '[' : '{', close = brackets ? ']' : '}';
    char *ok = nested_line(POSP2P_JSON_MAX_DEPTH, open, close);
    char *deep = nested_line(POSP2P_JSON_MAX_DEPTH + 1, open, close);
    char *huge = nested_line(10000, open, close);
    PT_EQ_INT(decode_str(ok, &e, &err), 0);
    if (e != NULL) {
      PT_CHECK(roundtrip_str(ok));
      posp2p_envelope_free(e, NULL);
    }
    PT_EQ_INT(decode_str(deep, &e, &err), POSP2P_ERR_JSON_DEPTH);
    PT_EQ_STR(err.requirement, "LEGACY-4");
    /* the bracket that opens level 33 */
    size_t want = strlen(HDR("warning")) + 5 + (brackets ? 30 : 5 * 30);
    PT_EQ_INT(err.offset, want);
    PT_EQ_INT(decode_str(huge, &e, &err), POSP2P_ERR_JSON_DEPTH);
    PT_EQ_INT(err.offset, want);
    free(ok);
    free(deep);
    free(huge);
  }
  /* Brackets inside strings do not count. */
  char buf[512];
  snprintf(buf, sizeof buf, MSG("warning", "{\"a\":\"%s\"}", 5),
           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"{{{{{{{{{{{{{{{{{{{{{{{"
           "{{{{{{{{{{{{{");
  PT_EQ_INT(decode_str(buf, &e, &err), 0);
  if (e != NULL)
    posp2p_envelope_free(e, NULL);
}

/* ---- timestamps ---------------------------------------------------------- */

PTEST(timestamp_parse_values) {
  static const struct {
    const char *text;
    int32_t offset;
    int64_t ms;
    uint32_t us;
  } cases[] = {
      {"1970-01-01T00:00:00.000", 0, 0, 0},
      {"1970-01-01T00:00:00.000001", 0, 0, 1},
      {"2026-02-22T10:15:30.123", 0, INT64_C(1771755330123), 0},
      {"2026-02-22T10:15:30.123456", 0, INT64_C(1771755330123), 456},
      {"2024-02-29T00:00:00.000", 0, INT64_C(1709164800000), 0}, /* leap year */
      {"2000-02-29T12:00:00.000", 0, INT64_C(951825600000),
       0}, /* 400-year leap */
      {"2024-12-31T23:59:59.999", 0, INT64_C(1735689599999), 0},
      {"0000-01-01T00:00:00.000", 0, INT64_C(-62167219200000), 0},
      {"9999-12-31T23:59:59.999999", 0, INT64_C(253402300799999), 999},
      {"1969-12-31T23:59:59.999", 0, -1, 0},
      /* local time at UTC+1 is one hour ahead of UTC */
      {"2026-02-22T10:15:30.123", 60, INT64_C(1771755330123) - 3600000, 0},
      /* UTC-5:30 */
      {"2026-02-22T10:15:30.123", -330, INT64_C(1771755330123) + 19800000, 0},
      /* crossing midnight and a leap day backwards: 2024-03-01 00:30 at UTC+2
       */
      {"2024-03-01T00:30:00.000", 120, INT64_C(1709253000000) - 7200000, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t ms = 0;
    uint32_t us = 0;
    posp2p_error err;
    int rv = posp2p_legacy_time_parse(cases[i].text, strlen(cases[i].text),
                                      cases[i].offset, &ms, &us, &err);
    PT_EQ_INT(rv, 0);
    if (ms != cases[i].ms || us != cases[i].us)
      PT_FAIL_("%s @%d: got %lld.%03u, want %lld.%03u", cases[i].text,
               cases[i].offset, (long long)ms, us, (long long)cases[i].ms,
               cases[i].us);
    char out[32];
    size_t n = posp2p_legacy_time_format(ms, us, cases[i].offset, out);
    PT_EQ_INT(n, strlen(cases[i].text));
    PT_EQ_STR(out, cases[i].text);
  }
}

PTEST(timestamp_rejects) {
  for (size_t i = 0; i < sizeof(bad_timestamps) / sizeof(bad_timestamps[0]);
       i++) {
    int64_t ms;
    uint32_t us;
    posp2p_error err;
    int rv = posp2p_legacy_time_parse(
        bad_timestamps[i], strlen(bad_timestamps[i]), 0, &ms, &us, &err);
    if (rv != POSP2P_ERR_TIMESTAMP)
      PT_FAIL_("\"%s\" accepted", bad_timestamps[i]);
  }
}

PTEST(timestamp_format_range) {
  char out[32];
  PT_EQ_INT(posp2p_legacy_time_format(INT64_C(253402300799999), 0, 0, out), 23);
  PT_EQ_INT(posp2p_legacy_time_format(INT64_C(253402300800000), 0, 0, out),
            0); /* year 10000 */
  PT_EQ_INT(posp2p_legacy_time_format(INT64_C(-62167219200001), 0, 0, out),
            0); /* year -1 */
  PT_EQ_INT(posp2p_legacy_time_format(INT64_MAX, 0, INT32_MAX, out), 0);
  PT_EQ_INT(posp2p_legacy_time_format(INT64_MIN, 0, INT32_MIN, out), 0);
  PT_EQ_INT(posp2p_legacy_time_format(0, 1000, 0, out), 0); /* us above 999 */
  /* The offset can move a valid UTC time out of range and back in. */
  PT_EQ_INT(posp2p_legacy_time_format(INT64_C(253402300799999), 0, 1, out), 0);
  PT_EQ_INT(posp2p_legacy_time_format(INT64_C(253402300800000), 0, -1, out),
            23);
  PT_EQ_STR(out, "9999-12-31T23:59:00.000");
  /* every day of four years (leap year included) formats and parses back */
  for (int64_t day = 19358; day < 19358 + 4 * 366; day++) {
    int64_t ms = day * INT64_C(86400000) + INT64_C(45296789), back;
    uint32_t us;
    posp2p_error err;
    size_t n = posp2p_legacy_time_format(ms, 0, 0, out);
    if (n != 23 || posp2p_legacy_time_parse(out, n, 0, &back, &us, &err) != 0 ||
        back != ms) {
      PT_FAIL_("day %lld: %s", (long long)day, out);
      break;
    }
  }
}

PTEST(timestamp_offset_in_messages) {
  posp2p_legacy_opts plus2 = {120};
  posp2p_envelope *e = NULL;
  posp2p_error err;
  static const char line[] = MSG("heartbeat", "{}", 2);
  PT_EQ_INT(posp2p_legacy_decode((const uint8_t *)line, strlen(line), &plus2,
                                 NULL, &e, &err),
            0);
  if (e == NULL)
    return;
  PT_EQ_INT(e->timestamp_ms, INT64_C(1771755330123) - 7200000);
  posp2p_buf out;
  posp2p_buf_init(&out, 4096, NULL);
  PT_EQ_INT(posp2p_legacy_encode(e, &plus2, &out, &err), 0);
  PT_EQ_INT(out.len, strlen(line) + 1);
  PT_EQ_MEM(out.data, line, strlen(line));
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
}

/* ---- amounts ------------------------------------------------------------ */

PTEST(amount_conversion) {
  static const struct {
    const char *price;   /* JSON text of the single item's price */
    uint32_t exponent;   /* expected currency_exponent */
    int64_t minor;       /* expected price_minor */
    const char *written; /* what the encoder writes back */
  } cases[] = {
      {"0.1", 2, 10, "0.1"},
      {"10.5", 2, 1050, "10.5"},
      {"9.0", 2, 900, "9.0"},
      {"0.0", 2, 0, "0.0"},
      {"-0.0", 2, 0, "0.0"},
      {"1e-7", 7, 1, "1e-7"},
      {"0.000001", 6, 1, "0.000001"},
      {"123456.789", 3, 123456789, "123456.789"},
      {"-2.5", 2, -250, "-2.5"},
      {"-0.005", 3, -5, "-0.005"},
      {"100", 2, 10000, "100.0"}, /* a JSON integer is accepted */
      {"-7", 2, -700, "-7.0"},
      {"1e2", 2, 10000, "100.0"},
      {"12.50", 2, 1250, "12.5"},
      {"0.123456789", 9, 123456789, "0.123456789"},
      {"90071992547409.92", 2, INT64_C(9007199254740992),
       "90071992547409.92"}, /* 2^53 */
      {"1e13", 2, INT64_C(1000000000000000), "10000000000000.0"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char line[1024], want[1024];
    posp2p_envelope *e = NULL;
    posp2p_error err;
    snprintf(line, sizeof line,
             MSG("orderForward",
                 "{\"orderId\":\"o\",\"items\":[{\"productId\":\"p\","
                 "\"productName\":\"P\",\"price\":%s,\"quantity\":1,"
                 "\"modifiers\":[],"
                 "\"variant\":null,\"notes\":null,\"discountPerItem\":null}],"
                 "\"subtotal\":0.0,"
                 "\"tax\":null,\"serviceCharge\":null,\"discount\":null,"
                 "\"total\":0.0,"
                 "\"orderStatus\":\"pending\",\"destination\":\"mainPOS\","
                 "\"tableNumber\":null,"
                 "\"customerName\":null,\"specialInstructions\":null,"
                 "\"targetDeliveryTime\":null}",
                 9),
             cases[i].price);
    snprintf(want, sizeof want, "%s", line);
    char *p = strstr(want, "\"price\":") + 8;
    memmove(p + strlen(cases[i].written), p + strlen(cases[i].price),
            strlen(p + strlen(cases[i].price)) + 1);
    memcpy(p, cases[i].written, strlen(cases[i].written));
    int rv = decode_str(line, &e, &err);
    if (rv != 0) {
      PT_FAIL_("price %s: %s", cases[i].price, err.message);
      continue;
    }
    const Posp2p__V2__OrderForward *of = e->order_forward;
    if (of->currency_exponent != cases[i].exponent ||
        of->items[0]->price_minor != cases[i].minor)
      PT_FAIL_("price %s: exponent %u minor %lld, want %u %lld", cases[i].price,
               of->currency_exponent, (long long)of->items[0]->price_minor,
               cases[i].exponent, (long long)cases[i].minor);
    posp2p_buf out;
    posp2p_buf_init(&out, 4096, NULL);
    PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
    if (out.len != strlen(want) + 1 ||
        memcmp(out.data, want, strlen(want)) != 0)
      PT_FAIL_("price %s written as %.*s", cases[i].price, (int)out.len,
               (char *)out.data);
    posp2p_buf_free(&out);
    posp2p_envelope_free(e, NULL);
  }
}

PTEST(amount_exponent_is_shared_by_the_order) {
  /* 0.005 needs 3 decimals, so every amount is in thousandths. */
  posp2p_envelope *e = NULL;
  posp2p_error err;
  static const char line[] =
      MSG("orderForward", ORDER(ITEM("12.5", "0.005"), "25.0", "24.99"), 9);
  PT_EQ_INT(decode_str(line, &e, &err), 0);
  if (e == NULL)
    return;
  PT_EQ_INT(e->order_forward->currency_exponent, 3);
  PT_EQ_INT(e->order_forward->items[0]->price_minor, 12500);
  PT_EQ_INT(e->order_forward->items[0]->discount_per_item_minor, 5);
  PT_EQ_INT(e->order_forward->subtotal_minor, 25000);
  PT_EQ_INT(e->order_forward->total_minor, 24990);
  posp2p_envelope_free(e, NULL);
  PT_CHECK(roundtrip_str(line));
}

/* ---- Dart double format -------------------------------------------------- */

PTEST(dart_double_format) {
  static const struct {
    double v;
    const char *text;
  } cases[] = {
      {9.0, "9.0"},
      {10.5, "10.5"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {0.1, "0.1"},
      {-0.5, "-0.5"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1e-6, "0.000001"},
      {1.5e-6, "0.0000015"},
      {1e-7, "1e-7"},
      {1.25e-7, "1.25e-7"},
      {123456.789, "123456.789"},
      {1e20, "100000000000000000000.0"},
      {1.2345678901234568e20, "123456789012345680000.0"},
      {1e21, "1e+21"},
      {1.5e21, "1.5e+21"},
      {-1e21, "-1e+21"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {9007199254740993.0, "9007199254740992.0"},
      {100.0, "100.0"},
      /* powers of two whose shortest digits lie above the value, which a
       * plain "%.*g until it round-trips" search gets wrong */
      {0x1p-24, "5.960464477539063e-8"},
      {0x1p-44, "5.684341886080802e-14"},
      {0x1p89, "6.189700196426902e+26"},
      {0x1p803, "5.334411546303884e+241"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char out[POSP2P__JSON_DOUBLE_MAX];
    size_t n = posp2p__json_format_double(cases[i].v, out);
    PT_EQ_INT(n, strlen(cases[i].text));
    PT_EQ_STR(out, cases[i].text);
    /* and the text reads back as the same double */
    PT_CHECK(strtod(out, NULL) == cases[i].v);
  }
  char out[POSP2P__JSON_DOUBLE_MAX];
  PT_EQ_INT(posp2p__json_format_double(NAN, out), 0);
  PT_EQ_INT(posp2p__json_format_double(INFINITY, out), 0);
}

PTEST(json_writer_escapes_like_dart) {
  posp2p_buf b;
  posp2p__json_writer w;
  posp2p_buf_init(&b, 4096, NULL);
  posp2p__json_writer_init(&w, &b);
  posp2p__json_object_begin(&w);
  posp2p__json_key(&w, "k\"", 2);
  static const char s[] =
      "q\" b\\ /\b\f\n\r\t\x01\x1f\x7f caf\xc3\xa9 \xf0\x9f\x98\x80";
  posp2p__json_string(&w, s, sizeof(s) - 1);
  posp2p__json_key(&w, "n", 1);
  posp2p__json_array_begin(&w);
  posp2p__json_int(&w, INT64_MIN);
  posp2p__json_double(&w, 2.0);
  posp2p__json_bool(&w, false);
  posp2p__json_null(&w);
  posp2p__json_array_begin(&w);
  posp2p__json_array_end(&w);
  posp2p__json_object_begin(&w);
  posp2p__json_object_end(&w);
  posp2p__json_array_end(&w);
  posp2p__json_object_end(&w);
  static const char want[] =
      "{\"k\\\"\":\"q\\\" b\\\\ /\\b\\f\\n\\r\\t\\u0001\\u001f\x7f caf\xc3\xa9 "
      "\xf0\x9f\x98\x80\","
      "\"n\":[-9223372036854775808,2.0,false,null,[],{}]}";
  PT_EQ_INT(w.err, 0);
  PT_EQ_INT(b.len, sizeof(want) - 1);
  PT_EQ_MEM(b.data, want, sizeof(want) - 1);
  /* invalid UTF-8 and non-finite numbers are refused, and stay refused */
  posp2p__json_string(&w, "\xc3\x28", 2);
  PT_EQ_INT(w.err, POSP2P_ERR_INVAL);
  size_t len = b.len;
  posp2p__json_null(&w);
  PT_EQ_INT(b.len, len);
  posp2p__json_writer_init(&w, &b);
  posp2p__json_double(&w, NAN);
  PT_EQ_INT(w.err, POSP2P_ERR_INVAL);
  posp2p_buf_free(&b);
}

PTEST(utf8_validator) {
  static const struct {
    const char *s;
    size_t bad; /* offset of the first ill-formed sequence, or strlen */
  } cases[] = {
      {"plain", 5},
      {"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf"
       "\xbf",
       18},
      {"a\x80", 1},        /* lone continuation */
      {"ab\xc1\xbf", 2},   /* overlong 2-byte */
      {"\xe0\x9f\xbf", 0}, /* overlong 3-byte */
      {"\xed\xbf\xbf", 0}, /* surrogate */
      {"\xf0\x8f\xbf\xbf", 0},
      {"\xf4\x90\x80\x80", 0},
      {"\xf5\x80\x80\x80", 0},
      {"x\xe6\x97", 1}, /* truncated at the end */
      {"\xe6\x97x", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    PT_EQ_INT(posp2p__json_utf8_check((const uint8_t *)cases[i].s,
                                      strlen(cases[i].s)),
              cases[i].bad);
}

/* ---- encoder ------------------------------------------------------------- */

static posp2p_envelope *decode_or_null(const char *line) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  if (decode_str(line, &e, &err) != 0)
    fprintf(stderr, "  decode: %s\n", err.message);
  return e;
}

PTEST(encode_rejects) {
  posp2p_error err;
  posp2p_buf out;
  posp2p_buf_init(&out, 1 << 16, NULL);
  posp2p_buf_append(&out, "keep", 4);

  posp2p_envelope *e = decode_or_null(MSG("heartbeat", "{}", 2));
  PT_CHECK(e != NULL);
  if (e == NULL)
    return;
  /* v2-only types */
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HELLO;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_GOODBYE;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  e->message_type = (Posp2p__V2__MessageType)99;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  /* payload that does not match the type */
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_WARNING;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HEARTBEAT;
  /* timestamp beyond year 9999 */
  e->timestamp_ms = INT64_C(253402300800000);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_RANGE);
  e->timestamp_ms = 0;
  /* invalid UTF-8 from a v2 peer must not reach the legacy wire */
  char bad_id[] = "\xc3\x28";
  char *saved = e->from_device_id;
  e->from_device_id = bad_id;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  e->from_device_id = saved;
  PT_EQ_INT(out.len, 4); /* nothing appended by any failed call */
  PT_EQ_MEM(out.data, "keep", 4);
  posp2p_envelope_free(e, NULL);

  /* amounts beyond 2^53 and exponents above 9 */
  e = decode_or_null(
      MSG("orderForward", ORDER(ITEM("1.0", "null"), "1.0", "1.0"), 9));
  PT_CHECK(e != NULL);
  if (e == NULL)
    return;
  e->order_forward->items[0]->price_minor = INT64_C(9007199254740993);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_RANGE);
  e->order_forward->items[0]->price_minor = -INT64_C(9007199254740992);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  e->order_forward->currency_exponent = 10;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_RANGE);
  /* At exponent 0 the receiver still reads cents, so 2^53 cents is the
   * limit (fuzz_diff regression k3): what is written must decode. */
  e->order_forward->currency_exponent = 0;
  e->order_forward->items[0]->price_minor = INT64_C(90071992547409);
  out.len = 4;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  if (out.len > 4) {
    posp2p_envelope *back = NULL;
    PT_EQ_INT(posp2p_legacy_decode(out.data + 4, out.len - 5, &utc, NULL, &back,
                                   &err),
              0);
    if (back != NULL) {
      PT_EQ_INT(back->order_forward->currency_exponent, 2);
      PT_EQ_INT(back->order_forward->items[0]->price_minor,
                INT64_C(9007199254740900));
      posp2p_envelope_free(back, NULL);
    }
  }
  out.len = 4;
  e->order_forward->items[0]->price_minor = INT64_C(90071992547410);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_RANGE);
  e->order_forward->currency_exponent = 1;
  e->order_forward->items[0]->price_minor = INT64_C(900719925474100);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_RANGE);
  posp2p_envelope_free(e, NULL);

  /* opaque JSON that is not an object, or would break the line */
  e = decode_or_null(MSG("warning", "{}", 5));
  PT_CHECK(e != NULL);
  if (e == NULL)
    return;
  static const char *const bad_json[] = {"[1]", "{\"a\":1} x", "{\"a\":\"\n\"}",
                                         "{\"a\":\"\xff\"}", "nope"};
  char *orig = e->opaque->json;
  for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
    e->opaque->json = (char *)bad_json[i];
    PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), POSP2P_ERR_INVAL);
  }
  /* embedded JSON is written in the compact Dart form */
  e->opaque->json = (char *)"{ \"a\" : [ 1 , 2.50 ] }";
  out.len = 0;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  PT_CHECK(out.len > 0 &&
           contains(out.data, out.len, "\"payload\":{\"a\":[1,2.5]},"));
  e->opaque->json = orig;
  posp2p_envelope_free(e, NULL);

  /* the buffer cap */
  posp2p_buf small;
  posp2p_buf_init(&small, 64, NULL);
  e = decode_or_null(MSG("heartbeat", "{}", 2));
  if (e != NULL) {
    PT_EQ_INT(posp2p_legacy_encode(e, &utc, &small, &err), POSP2P_ERR_NOSPACE);
    PT_EQ_INT(small.len, 0);
    posp2p_envelope_free(e, NULL);
  }
  posp2p_buf_free(&small);
  posp2p_buf_free(&out);
}

PTEST(encode_v2_only_values) {
  /* What a v2 sender can say and the legacy wire cannot name is written
   * as the legacy reader's fallback. */
  posp2p_envelope *e = decode_or_null(MSG(
      "deviceInfo",
      "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\",\"port\":1}",
      5));
  posp2p_error err;
  posp2p_buf out;
  if (e == NULL) {
    PT_FAIL_("decode failed");
    return;
  }
  posp2p_buf_init(&out, 4096, NULL);
  e->device_info->device_type =
      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED;
  e->opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID__NOT_SET;
  posp2p_mem_free(NULL, e->to_device_id);
  e->to_device_id = NULL;
  e->opt_to_device_type_case =
      POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
  e->to_device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  e->timestamp_us = 7;
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  static const char want[] =
      "{\"messageId\":\"" MID
      "\",\"messageType\":\"deviceInfo\",\"fromDeviceId\":\"" DEV_A
      "\",\"toDeviceId\":null,\"timestamp\":\"2026-02-22T10:15:30.123007\","
      "\"payload\":"
      "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.secondaryPOS\","
      "\"port\":1},"
      "\"priority\":5,\"acknowledged\":null}\n";
  PT_EQ_INT(out.len, sizeof(want) - 1);
  PT_EQ_MEM(out.data, want, sizeof(want) - 1);
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
}

PTEST(encode_cart_sync_without_legacy_json) {
  posp2p_envelope *e = decode_or_null(MSG("cartSync", "{}", 5));
  posp2p_error err;
  posp2p_buf out;
  if (e == NULL) {
    PT_FAIL_("decode failed");
    return;
  }
  Posp2p__V2__CartSync *cs = e->cart_sync;
  Posp2p__V2__CartItem item = POSP2P__V2__CART_ITEM__INIT;
  Posp2p__V2__CartItem *items[1] = {&item};
  char *mods[1] = {(char *)"hot"};
  char *orig = cs->legacy_json;
  item.product_id = (char *)"p";
  item.product_name = (char *)"P";
  item.price_minor = 1250;
  item.quantity = 2;
  item.n_modifiers = 1;
  item.modifiers = mods;
  cs->legacy_json = (char *)"";
  cs->cart_id = (char *)"c1";
  cs->n_items = 1;
  cs->items = items;
  cs->total_minor = 2500;
  cs->currency_exponent = 2;
  posp2p_buf_init(&out, 4096, NULL);
  PT_EQ_INT(posp2p_legacy_encode(e, &utc, &out, &err), 0);
  PT_CHECK(
      out.len > 0 &&
      contains(out.data, out.len,
               "\"payload\":{\"cartId\":\"c1\",\"items\":[{\"productId\":"
               "\"p\",\"productName\":"
               "\"P\",\"price\":12.5,\"quantity\":2,\"modifiers\":[\"hot\"]}"
               "],\"total\":25.0},"));
  cs->legacy_json = orig;
  cs->cart_id = (char *)protobuf_c_empty_string;
  cs->n_items = 0;
  cs->items = NULL;
  posp2p_buf_free(&out);
  posp2p_envelope_free(e, NULL);
}

/* ---- discovery datagrams ------------------------------------------------- */

PTEST(legacy_discovery) {
  static const char req[] = "{\"deviceName\":\"Tablet "
                            "\xc3\xa9\",\"deviceType\":\"P2PDeviceType."
                            "orderingTablet\",\"port\":8766}";
  static const char resp[] =
      "{\"deviceId\":\"" DEV_A
      "\",\"deviceName\":\"Main\",\"deviceType\":\"P2PDeviceType.mainPOS\","
      "\"ipAddress\":\"10.0.0.2\",\"port\":8766,\"hostname\":\"pos.local\","
      "\"metadata\":{\"v\":\"1\",\"n\":[1,2.5],\"x\":null}}";
  posp2p_disc *m = NULL;
  posp2p_error err;
  posp2p_buf out;
  posp2p_buf_init(&out, 4096, NULL);

  PT_EQ_INT(posp2p__legacy_disc_decode((const uint8_t *)req, strlen(req), NULL,
                                       &m, &err),
            0);
  if (m != NULL) {
    PT_EQ_INT(m->kind, POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST);
    PT_EQ_STR(m->device_id, "");
    PT_EQ_STR(m->device_name, "Tablet \xc3\xa9");
    PT_EQ_INT(m->device_type,
              POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET);
    PT_EQ_INT(m->tcp_port, 8766);
    PT_EQ_INT(m->n_supported_versions, 1);
    PT_EQ_INT(m->supported_versions[0], 1);
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), 0);
    PT_EQ_INT(out.len, strlen(req));
    PT_EQ_MEM(out.data, req, strlen(req));
    posp2p_disc_free(m, NULL);
  }
  PT_EQ_INT(posp2p__legacy_disc_decode((const uint8_t *)resp, strlen(resp),
                                       NULL, &m, &err),
            0);
  if (m != NULL) {
    PT_EQ_INT(m->kind, POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE);
    PT_EQ_STR(m->device_id, DEV_A);
    PT_EQ_STR(m->ip_address, "10.0.0.2");
    PT_EQ_STR(m->hostname, "pos.local");
    PT_EQ_STR(m->metadata_json, "{\"v\":\"1\",\"n\":[1,2.5],\"x\":null}");
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), 0);
    PT_EQ_INT(out.len, strlen(resp));
    PT_EQ_MEM(out.data, resp, strlen(resp));
    /* ANNOUNCE has no legacy form of its own: the response shape */
    m->kind = POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_ANNOUNCE;
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), 0);
    PT_EQ_INT(out.len, strlen(resp));
    /* empty metadata is written as {} */
    char *md = m->metadata_json;
    m->metadata_json = (char *)"";
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), 0);
    PT_CHECK(out.len > 0 && contains(out.data, out.len, "\"metadata\":{}}"));
    m->metadata_json = (char *)"[]";
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), POSP2P_ERR_INVAL);
    PT_EQ_INT(out.len, 0);
    m->metadata_json = md;
    m->kind = POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_UNSPECIFIED;
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), POSP2P_ERR_INVAL);
    /* above 1400 bytes */
    m->kind = POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE;
    char *name = m->device_name;
    char big[1500];
    memset(big, 'K', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    m->device_name = big;
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), POSP2P_ERR_NOSPACE);
    PT_EQ_INT(out.len, 0);
    m->device_name = name;
    posp2p_disc_free(m, NULL);
  }
  static const struct {
    const char *in;
    int code;
  } bad[] = {
      {"{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\",\"port\":"
       "\"1\"}",
       POSP2P_ERR_JSON_TYPE},
      {"{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\",\"port\":"
       "70000}",
       POSP2P_ERR_RANGE},
      {"{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\"}",
       POSP2P_ERR_MISSING_FIELD},
      {"{\"deviceName\":\"x\",\"deviceType\":", POSP2P_ERR_JSON_SYNTAX},
      {"[]", POSP2P_ERR_JSON_TYPE},
      {"{\"deviceId\":\"nope\",\"deviceName\":\"x\",\"deviceType\":"
       "\"P2PDeviceType.kds\","
       "\"ipAddress\":\"\",\"port\":1,\"hostname\":\"\",\"metadata\":{}}",
       POSP2P_ERR_BAD_ID},
      {"{\"deviceId\":\"" DEV_A
       "\",\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\","
       "\"ipAddress\":\"\",\"port\":1,\"hostname\":\"\",\"metadata\":[]}",
       POSP2P_ERR_JSON_TYPE},
      {"{\"deviceName\":\"\xc3\",\"deviceType\":\"k\",\"port\":1}",
       POSP2P_ERR_JSON_UTF8},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    m = NULL;
    int rv = posp2p__legacy_disc_decode((const uint8_t *)bad[i].in,
                                        strlen(bad[i].in), NULL, &m, &err);
    if (rv != bad[i].code)
      PT_FAIL_("datagram %zu: expected %s, got %s", i,
               posp2p_err_name(bad[i].code), posp2p_err_name(rv));
    PT_CHECK(m == NULL);
  }
  posp2p_buf_free(&out);
}

/* ---- allocation ---------------------------------------------------------- */

typedef struct {
  ProtobufCAllocator base;
  long fail_at; /* the allocation with this index fails; -1: none */
  long count;
  long live;
} failing_alloc;

static void *fa_alloc(void *ud, size_t n) {
  failing_alloc *f = ud;
  if (f->count++ == f->fail_at)
    return NULL;
  f->live++;
  return malloc(n);
}

static void fa_free(void *ud, void *p) {
  failing_alloc *f = ud;
  if (p != NULL)
    f->live--;
  free(p);
}

/* Fail each allocation in turn: every failure must give POSP2P_ERR_NOMEM
 * and leave nothing allocated. */
static void check_alloc_failures(const char *line) {
  size_t len = strlen(line);
  for (long k = 0;; k++) {
    failing_alloc fa = {{fa_alloc, fa_free, NULL}, k, 0, 0};
    fa.base.allocator_data = &fa;
    posp2p_envelope *e = NULL;
    posp2p_error err;
    int rv = posp2p_legacy_decode((const uint8_t *)line, len, &utc, &fa.base,
                                  &e, &err);
    if (rv == 0) {
      /* and encoding with a buffer on the same allocator */
      for (long j = 0;; j++) {
        failing_alloc fb = {{fa_alloc, fa_free, NULL}, j, 0, 0};
        fb.base.allocator_data = &fb;
        posp2p_buf out;
        posp2p_buf_init(&out, 1u << 20, &fb.base);
        int erv = posp2p_legacy_encode(e, &utc, &out, &err);
        posp2p_buf_free(&out);
        PT_EQ_INT(fb.live, 0);
        if (erv == 0)
          break;
        PT_EQ_INT(erv, POSP2P_ERR_NOMEM);
        if (erv != POSP2P_ERR_NOMEM || j > 64)
          break;
      }
      posp2p_envelope_free(e, &fa.base);
      PT_EQ_INT(fa.live, 0);
      PT_CHECK(k > 0);
      return;
    }
    PT_EQ_INT(rv, POSP2P_ERR_NOMEM);
    PT_EQ_INT(fa.live, 0);
    if (rv != POSP2P_ERR_NOMEM || k > 100000)
      return;
  }
}

PTEST(allocation_failures) {
  for (size_t i = 0; i < sizeof(typed_lines) / sizeof(typed_lines[0]); i++)
    check_alloc_failures(typed_lines[i]);
  check_alloc_failures(MSG("broadcast", "{\"x\":[1,2,{}]}", 5));
}

/* The default allocator also serves jansson (posp2p_mem_set_default), so
 * a legacy decode allocates nothing the hook does not see. */
static size_t hook_live, hook_calls;
static void *hook_alloc(void *ud, size_t n) {
  (void)ud;
  hook_calls++;
  hook_live++;
  return malloc(n);
}
static void hook_free(void *ud, void *p) {
  (void)ud;
  if (p != NULL) hook_live--;
  free(p);
}

PTEST(default_allocator_serves_jansson) {
  static const ProtobufCAllocator hook = {hook_alloc, hook_free, NULL};
  posp2p_arena arena;
  posp2p_mem_set_default(&hook);
  hook_calls = hook_live = 0;
  posp2p_arena_init(&arena, NULL, 1u << 16); /* its block from the hook too */
  posp2p_envelope *e = NULL;
  posp2p_error err;
  PT_EQ_INT(posp2p_legacy_decode((const uint8_t *)typed_lines[0], strlen(typed_lines[0]),
                                 &utc, &arena.base, &e, &err),
            0);
  /* One arena block; jansson's tree was built and freed through the hook. */
  PT_CHECK(hook_calls > 1);
  PT_EQ_INT(hook_live, 1);
  posp2p_arena_free(&arena);
  PT_EQ_INT(hook_live, 0);
  posp2p_mem_set_default(NULL);
}

PTEST(decode_into_arena) {
  posp2p_arena arena;
  posp2p_arena_init(&arena, NULL, 4096);
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < sizeof(typed_lines) / sizeof(typed_lines[0]); i++) {
      posp2p_envelope *e = NULL;
      posp2p_error err;
      PT_EQ_INT(posp2p_legacy_decode((const uint8_t *)typed_lines[i],
                                     strlen(typed_lines[i]), &utc, &arena.base,
                                     &e, &err),
                0);
      posp2p_envelope_free(e, &arena.base);
    }
    posp2p_arena_reset(&arena);
  }
  posp2p_arena_free(&arena);
}

/* Missing or null metadata reads as {}, which is what the encoder writes
 * for it, so decode -> encode -> decode is stable (fuzz_disc regression
 * k2). */
PTEST(legacy_discovery_metadata_absent) {
  static const char *const in[] = {
      "{\"deviceId\":\"" DEV_A "\",\"deviceName\":\"M\",\"deviceType\":"
      "\"P2PDeviceType.mainPOS\",\"port\":1}",
      "{\"deviceId\":\"" DEV_A "\",\"deviceName\":\"M\",\"deviceType\":"
      "\"P2PDeviceType.mainPOS\",\"ipAddress\":null,\"port\":1,\"hostname\":"
      "null,\"metadata\":null}",
  };
  static const char want[] =
      "{\"deviceId\":\"" DEV_A "\",\"deviceName\":\"M\",\"deviceType\":"
      "\"P2PDeviceType.mainPOS\",\"ipAddress\":\"\",\"port\":1,\"hostname\":"
      "\"\",\"metadata\":{}}";
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
    posp2p_disc *m = NULL, *m2 = NULL;
    posp2p_error err;
    posp2p_buf out;
    posp2p_buf_init(&out, 4096, NULL);
    PT_EQ_INT(posp2p__legacy_disc_decode((const uint8_t *)in[i], strlen(in[i]),
                                         NULL, &m, &err),
              0);
    if (m == NULL)
      continue;
    PT_EQ_STR(m->metadata_json, "{}");
    PT_EQ_STR(m->ip_address, "");
    PT_EQ_INT(posp2p__legacy_disc_encode(m, &out, &err), 0);
    PT_EQ_INT(out.len, sizeof(want) - 1);
    PT_EQ_MEM(out.data, want, sizeof(want) - 1);
    PT_EQ_INT(posp2p__legacy_disc_decode(out.data, out.len, NULL, &m2, &err),
              0);
    if (m2 != NULL) {
      PT_EQ_STR(m2->metadata_json, m->metadata_json);
      posp2p_disc_free(m2, NULL);
    }
    posp2p_disc_free(m, NULL);
    posp2p_buf_free(&out);
  }
}

PTEST(disc_allocation_failures) {
  static const char resp[] =
      "{\"deviceId\":\"" DEV_A
      "\",\"deviceName\":\"Main\",\"deviceType\":\"P2PDeviceType.mainPOS\","
      "\"ipAddress\":\"10.0.0.2\",\"port\":8766,\"hostname\":\"pos.local\","
      "\"metadata\":{\"v\":1}}";
  for (long k = 0;; k++) {
    failing_alloc fa = {{fa_alloc, fa_free, NULL}, k, 0, 0};
    fa.base.allocator_data = &fa;
    posp2p_disc *m = NULL;
    posp2p_error err;
    int rv = posp2p__legacy_disc_decode((const uint8_t *)resp, strlen(resp),
                                        &fa.base, &m, &err);
    if (rv == 0) {
      posp2p_disc_free(m, &fa.base);
      PT_EQ_INT(fa.live, 0);
      break;
    }
    PT_EQ_INT(rv, POSP2P_ERR_NOMEM);
    PT_EQ_INT(fa.live, 0);
    if (rv != POSP2P_ERR_NOMEM || k > 1000)
      break;
  }
}

int main(int argc, char **argv) {
  return ptest_main(argc, argv);
}
