/* Envelope encode, decode and validation beyond protobuf (SPEC.md MSG-*,
 * HELLO-*). Every rule that rejects input names the requirement it enforces
 * so that an error report can quote it. */
/* strnlen (POSIX.1-2008). */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include <jansson.h>

#include "internal.h"

#define ENV_CASE(x) POSP2P__V2__ENVELOPE__##x
#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x

void posp2p_envelope_init(posp2p_envelope *e) {
  posp2p__v2__envelope__init(e);
}

uint32_t posp2p_envelope_priority(const posp2p_envelope *e) {
  return e->opt_priority_case == ENV_CASE(OPT_PRIORITY_PRIORITY)
             ? e->priority
             : POSP2P_PRIORITY_DEFAULT;
}

/* Character classes for UUID text: 1 = hex digit, 2 = '-'. */
static const uint8_t uuid_class[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['-'] = 2,
};

/* The class each of the 36 positions must have (8-4-4-4-12). */
static const uint8_t uuid_shape[POSP2P_UUID_LEN] = {
    1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1,
    2, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* Every message carries two or three ids, so this runs several times per
 * frame. It is table-driven without data-dependent branches: with random
 * ids a per-character branch mispredicts often enough to dominate the
 * decode of a small frame (bench/README.md). */
POSP2P__NO_COVERAGE bool posp2p_uuid_valid(const char *s) {
  if (s == NULL || strnlen(s, POSP2P_UUID_LEN + 1) != POSP2P_UUID_LEN)
    return false;
  const unsigned char *u = (const unsigned char *)s;
  unsigned bad = 0;
  for (size_t i = 0; i < POSP2P_UUID_LEN; i++)
    bad |= (unsigned)(uuid_class[u[i]] ^ uuid_shape[i]);
  return bad == 0;
}

POSP2P__NO_COVERAGE void posp2p_uuid_format(const uint8_t rnd[16],
                                            char out[POSP2P_UUID_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  uint8_t b[16];
  memcpy(b, rnd, 16);
  b[6] = (uint8_t)((b[6] & 0x0F) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
  size_t o = 0;
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 0x0F];
  }
  out[o] = '\0';
}

/* ---- String checks on the wire -----------------------------------------
 * protobuf-c hands string fields back as NUL-terminated C strings and does
 * not check UTF-8, so a string carrying U+0000 would be silently truncated
 * and invalid UTF-8 passed on. These rules (FRAME-7, MSG-22) can only be
 * checked on the encoded bytes: after a successful unpack we walk the body
 * once more, guided by the descriptors, and look at every string field. */

#define WIRE_MAX_DEPTH 16

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF)
 * without NUL, in one pass. Returns the offset of the first bad byte (and
 * *nul says whether it is a NUL), or n if all are valid. Runs of ASCII are
 * checked eight bytes at a time: ids and most names are ASCII, and this
 * pass reads every string byte of every frame; hence also always inlined
 * (the inner loop of the wire scan and of the fast path below). */
__attribute__((always_inline)) static inline size_t string_check(const uint8_t *s, size_t n,
                                                                bool *nul) {
  const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  size_t i = 0;
  *nul = false;
  while (i < n) {
    if (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, sizeof(w));
      /* No byte >= 0x80 and no zero byte (the classic haszero test). */
      if (((w | ((w - ones) & ~w)) & highs) == 0) {
        i += 8;
        continue;
      }
    }
    uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c == 0) {
      *nul = true;
      return i;
    } else if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return n;
}

static int wire_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v) {
  uint64_t r = 0;
  for (unsigned shift = 0; shift < 64 && *pos < n; shift += 7) {
    uint8_t b = p[(*pos)++];
    r |= (uint64_t)(b & 0x7F) << shift;
    if ((b & 0x80) == 0) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

int posp2p__wire_scan(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                      size_t n, uint64_t base, int depth, posp2p_error *err) {
  size_t pos = 0;
  if (depth > WIRE_MAX_DEPTH)
    return posp2p_error_set(err, POSP2P_ERR_PROTOBUF, base, "FRAME-7",
                            "messages nested deeper than %d", WIRE_MAX_DEPTH);
  while (pos < n) {
    uint64_t tag, len;
    size_t tag_at = pos;
    if (wire_varint(p, n, &pos, &tag) != 0) break;
    /* Field number 0 does not exist. protobuf-c rejects it only when the
     * key is written in its minimal form, so a re-encoded message could
     * fail to decode again; reject every form here. */
    if ((tag >> 3) == 0)
      return posp2p_error_set(err, POSP2P_ERR_PROTOBUF, base + tag_at,
                              "FRAME-7", "%s has a field with number 0",
                              d->short_name);
    switch (tag & 7) {
    case 0:
      if (wire_varint(p, n, &pos, &len) != 0) return 0;
      continue;
    case 1:
      pos += 8;
      continue;
    case 5:
      pos += 4;
      continue;
    case 2:
      break;
    default:
      return 0; /* groups: protobuf-c already accepted or skipped them */
    }
    if (wire_varint(p, n, &pos, &len) != 0 || len > n - pos) return 0;
    const ProtobufCFieldDescriptor *f =
        tag >> 3 <= UINT32_MAX
            ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))
            : NULL;
    if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
      bool nul;
      size_t bad = string_check(p + pos, (size_t)len, &nul);
      if (bad != len && nul)
        return posp2p_error_set(err, POSP2P_ERR_RANGE, base + pos + bad,
                                "MSG-22", "string field %s.%s contains U+0000",
                                d->short_name, f->name);
      if (bad != len)
        return posp2p_error_set(err, POSP2P_ERR_PROTOBUF, base + pos + bad,
                                "FRAME-7",
                                "string field %s.%s is not valid UTF-8 "
                                "(byte 0x%02x)",
                                d->short_name, f->name, p[pos + bad]);
    } else if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
      int rv = posp2p__wire_scan(f->descriptor, p + pos, (size_t)len,
                                 base + pos, depth + 1, err);
      if (rv != 0) return rv;
    }
    pos += (size_t)len;
  }
  return 0;
}

/* ---- Validation ---------------------------------------------------------- */

static int check_uuid(const char *v, const char *field, const char *req,
                      posp2p_error *err) {
  if (v == NULL || v[0] == '\0')
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, req,
                            "%s is missing", field);
  if (!posp2p_uuid_valid(v))
    return posp2p_error_set(err, POSP2P_ERR_BAD_ID, 0, req,
                            "%s \"%.40s\" is not a canonical UUID", field, v);
  return 0;
}

static int check_nonempty(const char *v, const char *field, const char *req,
                          posp2p_error *err) {
  if (v == NULL || v[0] == '\0')
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, req,
                            "%s is missing", field);
  return 0;
}

static int check_enum(const ProtobufCEnumDescriptor *d, int v,
                      const char *field, const char *req, posp2p_error *err) {
  if (protobuf_c_enum_descriptor_get_value(d, v) == NULL)
    return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, req,
                            "%s has value %d, outside enum %s", field, v,
                            d->short_name);
  return 0;
}

/* MSG-14, MSG-31: an opaque JSON field holds exactly one JSON object. */
static int check_json_object(const char *v, const char *field, const char *req,
                             posp2p_error *err) {
  json_error_t jerr;
  json_t *j = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
  int ok = j != NULL && json_is_object(j);
  json_decref(j);
  if (!ok)
    return posp2p_error_set(err, POSP2P_ERR_PAYLOAD, 0, req,
                            "%s is not one JSON object%s%s", field,
                            j ? "" : ": ", j ? "" : jerr.text);
  return 0;
}

static int validate_hello(const Posp2p__V2__Hello *h, posp2p_error *err) {
  int rv;
  if ((rv = check_uuid(h->device_id, "hello.device_id", "HELLO-4", err))) return rv;
  if ((rv = check_enum(&posp2p__v2__device_type__descriptor, (int)h->device_type,
                       "hello.device_type", "HELLO-5", err)))
    return rv;
  if (h->device_type == POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED)
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, "HELLO-5",
                            "hello.device_type is unspecified");
  if (h->listen_port > 65535)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "HELLO-6",
                            "hello.listen_port %u is above 65535",
                            h->listen_port);
  if (h->n_supported_versions == 0)
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, "HELLO-7",
                            "hello.supported_versions is empty");
  if (h->heartbeat_interval_ms == 0)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "HELLO-8",
                            "hello.heartbeat_interval_ms is 0");
  if (h->device_timeout_ms <= h->heartbeat_interval_ms)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "HELLO-9",
                            "hello.device_timeout_ms %u is not above "
                            "heartbeat_interval_ms %u",
                            h->device_timeout_ms, h->heartbeat_interval_ms);
  if (h->max_frame_size < POSP2P_MAX_FRAME_MIN)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "HELLO-10",
                            "hello.max_frame_size %u is below the minimum %u",
                            h->max_frame_size, POSP2P_MAX_FRAME_MIN);
  return 0;
}

static int validate_order_forward(const Posp2p__V2__OrderForward *o,
                                  posp2p_error *err) {
  int rv;
  if ((rv = check_nonempty(o->order_id, "order_forward.order_id", "MSG-24", err)))
    return rv;
  if ((rv = check_enum(&posp2p__v2__order_status_code__descriptor,
                       (int)o->order_status, "order_forward.order_status", "MSG-24",
                       err)))
    return rv;
  if ((rv = check_enum(&posp2p__v2__destination__descriptor, (int)o->destination,
                       "order_forward.destination", "MSG-24", err)))
    return rv;
  if (o->currency_exponent > 9)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MONEY-3",
                            "order_forward.currency_exponent %u is above 9",
                            o->currency_exponent);
  if (o->currency[0] != '\0' &&
      !(strlen(o->currency) == 3 && o->currency[0] >= 'A' &&
        o->currency[0] <= 'Z' && o->currency[1] >= 'A' &&
        o->currency[1] <= 'Z' && o->currency[2] >= 'A' &&
        o->currency[2] <= 'Z'))
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MONEY-4",
                            "order_forward.currency \"%.16s\" is not an ISO "
                            "4217 code",
                            o->currency);
  if (o->opt_target_delivery_time_ms_case ==
          POSP2P__V2__ORDER_FORWARD__OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS &&
      o->target_delivery_time_ms < 0)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "TIME-2",
                            "order_forward.target_delivery_time_ms is "
                            "negative");
  if (o->target_delivery_time_us > 999)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "TIME-3",
                            "order_forward.target_delivery_time_us %u is "
                            "above 999",
                            o->target_delivery_time_us);
  for (size_t i = 0; i < o->n_items; i++) {
    const Posp2p__V2__OrderItem *it = o->items[i];
    if (it->quantity < 0)
      return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MSG-25",
                              "order_forward.items[%zu].quantity %d is "
                              "negative",
                              i, it->quantity);
  }
  return 0;
}

/* Which payload each typed message type must carry; opaque types may carry
 * an OpaquePayload or nothing. */
static int expected_payload(int type) {
  switch (type) {
  case MT(HELLO): return ENV_CASE(PAYLOAD_HELLO);
  case MT(GOODBYE): return ENV_CASE(PAYLOAD_GOODBYE);
  case MT(DEVICE_INFO): return ENV_CASE(PAYLOAD_DEVICE_INFO);
  case MT(DISCOVERY): return ENV_CASE(PAYLOAD_DISCOVERY);
  case MT(ORDER_FORWARD): return ENV_CASE(PAYLOAD_ORDER_FORWARD);
  case MT(ORDER_STATUS): return ENV_CASE(PAYLOAD_ORDER_STATUS);
  case MT(ORDER_CANCEL): return ENV_CASE(PAYLOAD_ORDER_CANCEL);
  case MT(CART_SYNC): return ENV_CASE(PAYLOAD_CART_SYNC);
  case MT(HEARTBEAT): return ENV_CASE(PAYLOAD_HEARTBEAT);
  case MT(ACKNOWLEDGEMENT): return ENV_CASE(PAYLOAD_ACKNOWLEDGEMENT);
  case MT(ERROR): return ENV_CASE(PAYLOAD_ERROR);
  default: return ENV_CASE(PAYLOAD_OPAQUE);
  }
}

int posp2p_envelope_validate(const posp2p_envelope *e, posp2p_error *err) {
  int rv;
  /* MSG-11: an unknown type is checked first, because it is answered with
   * its own error code (UNKNOWN_MESSAGE_TYPE) rather than INVALID_MESSAGE. */
  if (e->message_type != MT(UNSPECIFIED) &&
      (rv = check_enum(&posp2p__v2__message_type__descriptor, (int)e->message_type,
                       "message_type", "MSG-11", err)))
    return rv;
  if ((rv = check_uuid(e->message_id, "message_id", "MSG-1", err))) return rv;
  if ((rv = check_uuid(e->from_device_id, "from_device_id", "MSG-5", err)))
    return rv;
  if (e->message_type == MT(UNSPECIFIED))
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, "MSG-10",
                            "message_type is missing");
  if (e->opt_to_device_id_case == ENV_CASE(OPT_TO_DEVICE_ID_TO_DEVICE_ID)) {
    if ((rv = check_uuid(e->to_device_id, "to_device_id", "MSG-7", err)))
      return rv;
    if (e->opt_to_device_type_case == ENV_CASE(OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE))
      return posp2p_error_set(err, POSP2P_ERR_PAYLOAD, 0, "MSG-9",
                              "to_device_id and to_device_type are both set");
  }
  if (e->opt_to_device_type_case == ENV_CASE(OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE)) {
    if ((rv = check_enum(&posp2p__v2__device_type__descriptor,
                         (int)e->to_device_type, "to_device_type", "MSG-8", err)))
      return rv;
    if (e->to_device_type == POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED)
      return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "MSG-8",
                              "to_device_type is unspecified");
  }
  if (e->timestamp_ms < 0)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "TIME-2",
                            "timestamp_ms %lld is negative",
                            (long long)e->timestamp_ms);
  if (e->timestamp_us > 999)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "TIME-3",
                            "timestamp_us %u is above 999", e->timestamp_us);
  if (e->opt_priority_case == ENV_CASE(OPT_PRIORITY_PRIORITY) &&
      e->priority > POSP2P_PRIORITY_MAX)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MSG-15",
                            "priority %u is outside 0..10", e->priority);

  int want = expected_payload((int)e->message_type);
  if (want == ENV_CASE(PAYLOAD_OPAQUE)) {
    if (e->payload_case != ENV_CASE(PAYLOAD__NOT_SET) &&
        e->payload_case != ENV_CASE(PAYLOAD_OPAQUE))
      return posp2p_error_set(err, POSP2P_ERR_PAYLOAD, 0, "MSG-13",
                              "%s message carries a typed payload (field %d)",
                              posp2p_message_type_name((int)e->message_type),
                              (int)e->payload_case);
    if (e->payload_case == ENV_CASE(PAYLOAD_OPAQUE))
      return check_json_object(e->opaque->json, "opaque.json", "MSG-14", err);
    return 0;
  }
  if ((int)e->payload_case != want)
    return posp2p_error_set(err, POSP2P_ERR_PAYLOAD, 0, "MSG-12",
                            "%s message needs payload field %d, has %d",
                            posp2p_message_type_name((int)e->message_type), want,
                            (int)e->payload_case);

  switch (e->payload_case) {
  case ENV_CASE(PAYLOAD_HELLO):
    return validate_hello(e->hello, err);
  case ENV_CASE(PAYLOAD_DEVICE_INFO):
    if ((rv = check_enum(&posp2p__v2__device_type__descriptor,
                         (int)e->device_info->device_type, "device_info.device_type",
                         "MSG-28", err)))
      return rv;
    if (e->device_info->device_type ==
        POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED)
      return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "MSG-28",
                              "device_info.device_type is unspecified");
    if (e->device_info->port > 65535)
      return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MSG-28",
                              "device_info.port %u is above 65535",
                              e->device_info->port);
    return 0;
  case ENV_CASE(PAYLOAD_DISCOVERY):
    if ((rv = check_enum(&posp2p__v2__device_type__descriptor,
                         (int)e->discovery->device_type, "discovery.device_type",
                         "MSG-28", err)))
      return rv;
    if (e->discovery->device_type ==
        POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED)
      return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "MSG-28",
                              "discovery.device_type is unspecified");
    if (e->discovery->port > 65535)
      return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MSG-28",
                              "discovery.port %u is above 65535",
                              e->discovery->port);
    return 0;
  case ENV_CASE(PAYLOAD_ORDER_FORWARD):
    return validate_order_forward(e->order_forward, err);
  case ENV_CASE(PAYLOAD_ORDER_STATUS):
    if ((rv = check_nonempty(e->order_status->order_id,
                             "order_status.order_id", "MSG-26", err)))
      return rv;
    return check_enum(&posp2p__v2__order_status_code__descriptor,
                      (int)e->order_status->new_status, "order_status.new_status",
                      "MSG-26", err);
  case ENV_CASE(PAYLOAD_ORDER_CANCEL):
    return check_nonempty(e->order_cancel->order_id, "order_cancel.order_id",
                          "MSG-27", err);
  case ENV_CASE(PAYLOAD_CART_SYNC):
    if (e->cart_sync->currency_exponent > 9)
      return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MONEY-3",
                              "cart_sync.currency_exponent %u is above 9",
                              e->cart_sync->currency_exponent);
    for (size_t i = 0; i < e->cart_sync->n_items; i++)
      if (e->cart_sync->items[i]->quantity < 0)
        return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "MSG-25",
                                "cart_sync.items[%zu].quantity %d is negative",
                                i, e->cart_sync->items[i]->quantity);
    if (e->cart_sync->legacy_json[0] != '\0')
      return check_json_object(e->cart_sync->legacy_json,
                               "cart_sync.legacy_json", "MSG-31", err);
    return 0;
  case ENV_CASE(PAYLOAD_ACKNOWLEDGEMENT):
    return check_uuid(e->acknowledgement->acknowledged_message_id,
                      "acknowledgement.acknowledged_message_id", "MSG-23", err);
  case ENV_CASE(PAYLOAD_ERROR):
    return check_enum(&posp2p__v2__error_code__descriptor, (int)e->error->code,
                      "error.code", "MSG-29", err);
  default:
    return 0;
  }
}

/* ---- Decode / encode ---------------------------------------------------- */

/* ---- Fast path for heartbeats and acknowledgements ------------------------
 * They are most of the frames on a quiet network (every connection, every
 * interval, every message acknowledged), and protobuf-c's descriptor-driven
 * unpack plus the wire scan above cost about 6,000 instructions for one
 * (bench/README.md). This parser takes exactly the Envelopes whose fields
 * are envelope header fields and a HEARTBEAT or ACKNOWLEDGEMENT payload,
 * each at most once, with the wire type and a value protobuf-c stores
 * unchanged, and strings that pass the wire scan; for those it builds the
 * struct protobuf-c builds (same allocations, so posp2p_envelope_free and
 * the arena work unchanged; fuzz_envelope compares the two on every input
 * the fast path takes). Anything else (another payload, an unknown,
 * repeated or out-of-range field) goes to the general path, which also
 * produces every error. */

typedef struct {
  const uint8_t *p;
  size_t n, pos;
} fp_reader;

enum { FP_TAKE = 1, FP_PASS = 0, FP_NOMEM = -1 };

/* wire_varint, refusing a tenth byte with bits beyond 64 (which wire_varint
 * drops: fine for skipping, not for taking a value). */
static bool fp_varint(fp_reader *r, uint64_t *v) {
  size_t start = r->pos;
  return wire_varint(r->p, r->n, &r->pos, v) == 0 &&
         !(r->pos - start == 10 && r->p[r->pos - 1] > 1);
}

/* The next field's number and wire type; false at a key protobuf-c would
 * not read as one of ours. */
static bool fp_key(fp_reader *r, uint32_t *field, unsigned *wt) {
  uint64_t k;
  if (!fp_varint(r, &k) || (k >> 3) == 0 || (k >> 3) > 255) return false;
  *field = (uint32_t)(k >> 3);
  *wt = (unsigned)(k & 7u);
  return true;
}

/* A length-delimited field's bytes. */
static bool fp_bytes(fp_reader *r, const uint8_t **b, size_t *len) {
  uint64_t l;
  if (!fp_varint(r, &l) || l > r->n - r->pos) return false;
  *b = r->p + r->pos;
  *len = (size_t)l;
  r->pos += (size_t)l;
  return true;
}

/* A string field that passes the wire scan, copied as protobuf-c does. */
static int fp_string(fp_reader *r, const ProtobufCAllocator *a, char **out) {
  const uint8_t *b;
  size_t len;
  bool nul;
  if (!fp_bytes(r, &b, &len) || string_check(b, len, &nul) != len) return FP_PASS;
  char *s = posp2p_mem_alloc(a, len + 1);
  if (s == NULL) return FP_NOMEM;
  memcpy(s, b, len);
  s[len] = '\0';
  *out = s;
  return FP_TAKE;
}

static int fp_heartbeat(const uint8_t *b, size_t n, const ProtobufCAllocator *a,
                        Posp2p__V2__Heartbeat **out) {
  fp_reader r = {b, n, 0};
  uint64_t seq = 0;
  bool seen = false;
  while (r.pos < r.n) {
    uint32_t f;
    unsigned wt;
    if (!fp_key(&r, &f, &wt) || f != 1 || wt != 0 || seen || !fp_varint(&r, &seq))
      return FP_PASS;
    seen = true;
  }
  Posp2p__V2__Heartbeat *h = posp2p_mem_alloc(a, sizeof *h);
  if (h == NULL) return FP_NOMEM;
  posp2p__v2__heartbeat__init(h);
  h->sequence = seq;
  *out = h;
  return FP_TAKE;
}

static int fp_ack(const uint8_t *b, size_t n, const ProtobufCAllocator *a,
                  Posp2p__V2__Acknowledgement **out) {
  Posp2p__V2__Acknowledgement *k = posp2p_mem_alloc(a, sizeof *k);
  if (k == NULL) return FP_NOMEM;
  posp2p__v2__acknowledgement__init(k);
  *out = k; /* freed with the envelope from here on */
  fp_reader r = {b, n, 0};
  bool seen = false;
  while (r.pos < r.n) {
    uint32_t f;
    unsigned wt;
    if (!fp_key(&r, &f, &wt) || f != 1 || wt != 2 || seen) return FP_PASS;
    int rc = fp_string(&r, a, &k->acknowledged_message_id);
    if (rc != FP_TAKE) return rc;
    seen = true;
  }
  return FP_TAKE;
}

/* One envelope field into e; FP_PASS for anything the general path must
 * see. `seen` has a bit per field number (1..9, 24, 25). */
static int fp_field(fp_reader *r, const ProtobufCAllocator *a, posp2p_envelope *e,
                    uint32_t *seen) {
  uint32_t f;
  unsigned wt;
  uint64_t v;
  if (!fp_key(r, &f, &wt) || (f > 9 && f != 24 && f != 25)) return FP_PASS;
  uint32_t bit = f <= 9 ? 1u << f : 1u << (f - 14); /* 24, 25 -> bits 10, 11 */
  if (*seen & bit) return FP_PASS;
  *seen |= bit;
  bool len_field = f == 1 || f == 3 || f == 4 || f >= 24;
  if (wt != (len_field ? 2u : 0u)) return FP_PASS;
  if (len_field && f < 24) {
    char **dst = f == 1 ? &e->message_id : f == 3 ? &e->from_device_id : &e->to_device_id;
    if (f == 4) e->opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    return fp_string(r, a, dst);
  }
  if (f >= 24) {
    const uint8_t *b;
    size_t n;
    if (*seen & (f == 24 ? 1u << 11 : 1u << 10)) return FP_PASS; /* two payloads */
    if (!fp_bytes(r, &b, &n)) return FP_PASS;
    if (f == 24) {
      e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_HEARTBEAT;
      return fp_heartbeat(b, n, a, &e->heartbeat);
    }
    e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ACKNOWLEDGEMENT;
    return fp_ack(b, n, a, &e->acknowledgement);
  }
  if (!fp_varint(r, &v)) return FP_PASS;
  switch (f) {
  case 2:
    /* Encoders write field 2 second: another type gives up here, before
     * anything else is copied (an ORDER_STATUS is small too). */
    if (v != POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HEARTBEAT &&
        v != POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ACKNOWLEDGEMENT)
      return FP_PASS;
    e->message_type = (Posp2p__V2__MessageType)v;
    break;
  case 5: e->timestamp_ms = (int64_t)v; break;
  case 6:
    if (v > UINT32_MAX) return FP_PASS;
    e->opt_priority_case = POSP2P__V2__ENVELOPE__OPT_PRIORITY_PRIORITY;
    e->priority = (uint32_t)v;
    break;
  case 7:
    if (v > 1) return FP_PASS;
    e->opt_acknowledged_case = POSP2P__V2__ENVELOPE__OPT_ACKNOWLEDGED_ACKNOWLEDGED;
    e->acknowledged = v != 0;
    break;
  case 8:
    if (v > INT32_MAX) return FP_PASS;
    e->opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    e->to_device_type = (Posp2p__V2__DeviceType)v;
    break;
  default: /* 9 */
    if (v > UINT32_MAX) return FP_PASS;
    e->timestamp_us = (uint32_t)v;
    break;
  }
  return FP_TAKE;
}

int posp2p__envelope_fast_unpack(const uint8_t *buf, size_t len, const ProtobufCAllocator *a,
                                 posp2p_envelope **out) {
  *out = NULL;
  /* Heartbeats and acks are small; don't scan a big frame only to pass. */
  if (len > 512) return FP_PASS;
  posp2p_envelope *e = posp2p_mem_alloc(a, sizeof *e);
  if (e == NULL) return FP_NOMEM;
  posp2p__v2__envelope__init(e);
  fp_reader r = {buf, len, 0};
  uint32_t seen = 0;
  int rc = FP_TAKE;
  while (rc == FP_TAKE && r.pos < r.n) rc = fp_field(&r, a, e, &seen);
  if (rc == FP_TAKE && (seen & (3u << 10)) == 0) rc = FP_PASS; /* no payload */
  if (rc != FP_TAKE) {
    posp2p__v2__envelope__free_unpacked(e, (ProtobufCAllocator *)a);
    return rc;
  }
  *out = e;
  return FP_TAKE;
}

int posp2p__envelope_unpack_general(const uint8_t *buf, size_t len,
                                    const ProtobufCAllocator *a, posp2p_envelope **out,
                                    posp2p_error *err) {
  *out = posp2p__v2__envelope__unpack((ProtobufCAllocator *)a, len, buf);
  if (*out == NULL)
    return posp2p_error_set(err, POSP2P_ERR_PROTOBUF, 0, "FRAME-7",
                            "%zu-byte frame body is not a valid Envelope "
                            "(protobuf decoding failed)",
                            len);
  return posp2p__wire_scan(&posp2p__v2__envelope__descriptor, buf, len, 0, 0,
                           err);
}

int posp2p_envelope_unpack(const uint8_t *buf, size_t len,
                           const ProtobufCAllocator *a, posp2p_envelope **out,
                           posp2p_error *err) {
  if (a == NULL) a = posp2p_mem_default();
  int rc = posp2p__envelope_fast_unpack(buf, len, a, out);
  if (rc == FP_TAKE) return 0;
  if (rc == FP_NOMEM)
    return posp2p_error_set(err, POSP2P_ERR_NOMEM, 0, "",
                            "out of memory decoding a %zu-byte frame body", len);
  return posp2p__envelope_unpack_general(buf, len, a, out, err);
}

int posp2p_envelope_decode(const uint8_t *buf, size_t len,
                           const ProtobufCAllocator *a, posp2p_envelope **out,
                           posp2p_error *err) {
  posp2p_envelope *e = NULL;
  if (a == NULL) a = posp2p_mem_default();
  *out = NULL;
  int rv = posp2p_envelope_unpack(buf, len, a, &e, err);
  if (rv == 0) rv = posp2p_envelope_validate(e, err);
  if (rv != 0) {
    posp2p_envelope_free(e, a);
    return rv;
  }
  *out = e;
  return 0;
}

void posp2p_envelope_free(posp2p_envelope *e, const ProtobufCAllocator *a) {
  if (e == NULL) return;
  posp2p__v2__envelope__free_unpacked(
      e, (ProtobufCAllocator *)(a ? a : posp2p_mem_default()));
}

size_t posp2p_frame_size(const posp2p_envelope *e) {
  uint8_t tmp[5];
  size_t body = posp2p__v2__envelope__get_packed_size(e);
  if (body > UINT32_MAX) return body;
  return posp2p_varint_encode((uint32_t)body, tmp) + body;
}

int posp2p_frame_encode(const posp2p_envelope *e, uint32_t max_frame,
                        posp2p_buf *out, posp2p_error *err) {
  size_t body = posp2p__v2__envelope__get_packed_size(e);
  if (max_frame == 0) max_frame = POSP2P_MAX_FRAME_DEFAULT;
  if (body > max_frame)
    return posp2p_error_set(err, POSP2P_ERR_FRAME_TOO_LARGE, 0, "FRAME-10",
                            "encoded envelope is %zu bytes, above the peer's "
                            "maximum frame size %u",
                            body, max_frame);
  uint8_t hdr[5];
  size_t hlen = posp2p_varint_encode((uint32_t)body, hdr);
  int rv = posp2p_buf_reserve(out, hlen + body);
  if (rv != 0)
    return posp2p_error_set(err, rv, 0, "", "cannot append %zu-byte frame: %s",
                            hlen + body, posp2p_strerror(rv));
  memcpy(out->data + out->len, hdr, hlen);
  size_t packed = posp2p__v2__envelope__pack(e, out->data + out->len + hlen);
  out->len += hlen + packed;
  return 0;
}
