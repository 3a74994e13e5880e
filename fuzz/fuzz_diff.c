/* Fuzz target: differential checks between the two wires and the two
 * directions of each codec.
 *
 * Input: a legacy JSON line (without its '\n') if the first byte is '{',
 * else one v2 frame body. ('{' as a protobuf key would be field 15 with the
 * deprecated start-group wire type, which no Envelope uses, so no v2 input
 * worth fuzzing is lost.)
 *
 * v2 input:
 *  1. decode -> frame encode -> decode is the identity (packed bytes).
 *  2. If the type exists on the legacy wire (everything but HELLO and
 *     GOODBYE): legacy encoding either succeeds or fails with
 *     POSP2P_ERR_INVAL (a string that is not UTF-8, an embedded JSON text
 *     that is not a JSON object) or POSP2P_ERR_RANGE (a time outside years
 *     0000..9999, an amount beyond 2^53 minor units, microseconds above 999).
 *     A line it writes always decodes, and encoding that result again gives
 *     the same line byte for byte (v2 -> legacy is a projection).
 *  3. If the message is one the legacy wire carries without loss
 *     (legacy_lossless below), v2 -> legacy -> v2 gives back the same
 *     message. JSON texts (OpaquePayload.json, CartSync.legacy_json) are
 *     re-serialized compactly on the way, by design, so they are compared
 *     by step 2's fixpoint instead of byte for byte here.
 *
 * Legacy input:
 *  4. legacy decode -> v2 frame -> v2 decode gives the same message, and
 *     encoding it back to legacy and decoding that gives it again (up to
 *     "priority":null coming back as 5, see fuzz_same_envelope_legacy): a
 *     message that came from the legacy wire always survives both wires. */
#include "fuzz_common.h"
#include "posp2p/legacy.h"

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define ENV(x) POSP2P__V2__ENVELOPE__##x

/* ---- What the legacy wire carries without loss -------------------------
 * From the protocol brief (LEGACY-*) and legacy.c. Lost or changed on the
 * way through the legacy wire, so excluded from the exact comparison:
 *  - HELLO and GOODBYE (not on the legacy wire at all);
 *  - unknown fields (JSON has no place for them);
 *  - an absent priority (legacy always writes one: absent comes back as 5);
 *  - to_device_type (no legacy key: sent as a broadcast);
 *  - an UNSPECIFIED device type in deviceInfo/discovery (written as the
 *    reader's fallback, secondaryPOS);
 *  - Heartbeat.sequence and OrderStatus.sequence (no legacy key);
 *  - Error.requirement and Error.ref_message_id (no legacy key), a
 *    legacy_code next to a known code (the code's name wins), and a
 *    legacy_code that is itself an ErrorCode name (read back as that code);
 *  - an opaque type without payload or with empty JSON (written as {},
 *    read back as the text "{}");
 *  - a CartSync with typed fields (written as an object, read back as
 *    legacy_json);
 *  - OrderForward.currency (no legacy key), target_delivery_time_us without
 *    a target time, an amount with more than 15 significant digits (a double
 *    cannot hold it), and a currency_exponent other than the smallest one in
 *    2..9 that makes every amount exact (the decoder's choice, LEGACY-10). */

static int digits_of(uint64_t u) {
  int n = 0;
  do {
    n++;
    u /= 10;
  } while (u != 0);
  return n;
}

/* Fold one amount into *need (the exponent the legacy decoder would pick);
 * false if a double cannot carry it exactly. */
static bool amount_fits(int64_t minor, uint32_t e, int *need) {
  uint64_t u = minor < 0 ? 0u - (uint64_t)minor : (uint64_t)minor;
  if (u > (UINT64_C(1) << 53))
    return false;
  if (u == 0)
    return true;
  int tz = 0;
  while (u % 10 == 0) {
    u /= 10;
    tz++;
  }
  if (digits_of(u) > 15)
    return false;
  int scale = (int)e - tz;
  if (scale > *need)
    *need = scale;
  return true;
}

/* Every amount of an order that is present, in the order the legacy
 * encoder writes them; stops at the first one for which fn returns false. */
static bool each_amount(const Posp2p__V2__OrderForward *o,
                        bool (*fn)(int64_t minor, uint32_t e, int *acc),
                        int *acc) {
  uint32_t e = o->currency_exponent;
  for (size_t i = 0; i < o->n_items; i++) {
    const Posp2p__V2__OrderItem *it = o->items[i];
    if (!fn(it->price_minor, e, acc))
      return false;
    if (it->opt_discount_per_item_minor_case ==
            POSP2P__V2__ORDER_ITEM__OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR &&
        !fn(it->discount_per_item_minor, e, acc))
      return false;
  }
  if (!fn(o->subtotal_minor, e, acc))
    return false;
  if (o->opt_tax_minor_case ==
          POSP2P__V2__ORDER_FORWARD__OPT_TAX_MINOR_TAX_MINOR &&
      !fn(o->tax_minor, e, acc))
    return false;
  if (o->opt_service_charge_minor_case ==
          POSP2P__V2__ORDER_FORWARD__OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR &&
      !fn(o->service_charge_minor, e, acc))
    return false;
  if (o->opt_discount_minor_case ==
          POSP2P__V2__ORDER_FORWARD__OPT_DISCOUNT_MINOR_DISCOUNT_MINOR &&
      !fn(o->discount_minor, e, acc))
    return false;
  return fn(o->total_minor, e, acc);
}

static bool order_lossless(const Posp2p__V2__OrderForward *o) {
  int need = 2;
  if (o->currency[0] != '\0')
    return false;
  if (!each_amount(o, amount_fits, &need))
    return false;
  if ((int)o->currency_exponent != need)
    return false;
  if (o->opt_target_delivery_time_ms_case !=
          POSP2P__V2__ORDER_FORWARD__OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS &&
      o->target_delivery_time_us != 0)
    return false;
  return true;
}

static bool legacy_lossless(const posp2p_envelope *e) {
  if (fuzz_has_unknown(&e->base))
    return false;
  if (e->opt_priority_case != ENV(OPT_PRIORITY_PRIORITY))
    return false;
  if (e->opt_to_device_type_case != ENV(OPT_TO_DEVICE_TYPE__NOT_SET))
    return false;
  switch (e->payload_case) {
  case ENV(PAYLOAD_DEVICE_INFO): return e->device_info->device_type != 0;
  case ENV(PAYLOAD_DISCOVERY): return e->discovery->device_type != 0;
  case ENV(PAYLOAD_HEARTBEAT): return e->heartbeat->sequence == 0;
  case ENV(PAYLOAD_ORDER_STATUS): return e->order_status->sequence == 0;
  case ENV(PAYLOAD_ERROR): {
    const Posp2p__V2__Error *er = e->error;
    if (er->requirement[0] != '\0' || er->ref_message_id[0] != '\0')
      return false;
    if (er->code != 0)
      return er->legacy_code[0] == '\0';
    return posp2p_error_code_from_name(er->legacy_code,
                                       strlen(er->legacy_code)) <= 0;
  }
  case ENV(PAYLOAD_ORDER_FORWARD): return order_lossless(e->order_forward);
  case ENV(PAYLOAD_CART_SYNC): {
    const Posp2p__V2__CartSync *c = e->cart_sync;
    return c->legacy_json[0] != '\0' && c->cart_id[0] == '\0' &&
           c->n_items == 0 && c->total_minor == 0 && c->currency_exponent == 0;
  }
  case ENV(PAYLOAD_OPAQUE): return e->opaque->json[0] != '\0';
  case ENV(PAYLOAD__NOT_SET): return false; /* opaque type without payload */
  default: return true;
  }
}

/* The JSON text fields of e, which the legacy wire re-serializes. */
static char **json_text(posp2p_envelope *e) {
  if (e->payload_case == ENV(PAYLOAD_OPAQUE))
    return &e->opaque->json;
  if (e->payload_case == ENV(PAYLOAD_CART_SYNC))
    return &e->cart_sync->legacy_json;
  return NULL;
}

/* a and b equal apart from their JSON text (same payload kind assumed). */
static bool same_but_json(posp2p_envelope *a, posp2p_envelope *b) {
  char **ta = json_text(a), **tb = json_text(b);
  if ((ta == NULL) != (tb == NULL))
    return false;
  char *saved = NULL;
  if (ta != NULL) {
    saved = *ta;
    *ta = *tb;
  }
  bool same = fuzz_same_envelope(a, b);
  if (ta != NULL)
    *ta = saved;
  return same;
}

/* ---- v2 round trip --------------------------------------------------------
 */

/* Encode e as a frame and decode it again; the caller frees the result. */
static posp2p_envelope *v2_roundtrip(const posp2p_envelope *e) {
  posp2p_buf out;
  posp2p_error err;
  posp2p_framer f;
  posp2p_frame fr;
  size_t used = 0;
  posp2p_envelope *e2 = NULL;
  posp2p_buf_init(&out, FUZZ_OUT_MAX, NULL);
  FUZZ_CHECK(posp2p_frame_encode(e, UINT32_MAX, &out, &err) == 0);
  posp2p_framer_init(&f, UINT32_MAX, NULL);
  FUZZ_CHECK(posp2p_framer_next(&f, out.data, out.len, &used, &fr, &err) == 1);
  FUZZ_CHECK(used == out.len);
  FUZZ_CHECK(posp2p_envelope_decode(fr.data, fr.len, NULL, &e2, &err) == 0);
  posp2p_framer_free(&f);
  posp2p_buf_free(&out);
  FUZZ_CHECK(fuzz_same_envelope(e, e2));
  return e2;
}

static void from_v2(const uint8_t *data, size_t size) {
  posp2p_envelope *e1 = NULL;
  posp2p_error err;
  int rv = posp2p_envelope_decode(data, size, NULL, &e1, &err);
  if (rv != 0) {
    fuzz_check_error(rv, &err);
    return;
  }
  posp2p_envelope_free(v2_roundtrip(e1), NULL);

  int t = (int)e1->message_type;
  if (t == MT(HELLO) || t == MT(GOODBYE)) {
    posp2p_buf l;
    posp2p_buf_init(&l, FUZZ_OUT_MAX, NULL);
    FUZZ_CHECK(posp2p_legacy_encode(e1, NULL, &l, &err) == POSP2P_ERR_INVAL);
    FUZZ_CHECK(l.len == 0);
    posp2p_buf_free(&l);
    posp2p_envelope_free(e1, NULL);
    return;
  }

  posp2p_buf l1, l2;
  posp2p_buf_init(&l1, FUZZ_OUT_MAX, NULL);
  posp2p_buf_init(&l2, FUZZ_OUT_MAX, NULL);
  rv = posp2p_legacy_encode(e1, NULL, &l1, &err);
  if (rv != 0) {
    fuzz_check_error(rv, &err);
    FUZZ_CHECK(rv == POSP2P_ERR_INVAL || rv == POSP2P_ERR_RANGE);
    FUZZ_CHECK(l1.len == 0);
  } else {
    FUZZ_CHECK(l1.len >= 2 && l1.data[l1.len - 1] == '\n');
    FUZZ_CHECK(memchr(l1.data, '\n', l1.len - 1) == NULL);
    posp2p_envelope *e3 = NULL;
    FUZZ_CHECK(
        posp2p_legacy_decode(l1.data, l1.len - 1, NULL, NULL, &e3, &err) == 0);
    FUZZ_CHECK(posp2p_legacy_encode(e3, NULL, &l2, &err) == 0);
    FUZZ_CHECK(l2.len == l1.len && memcmp(l1.data, l2.data, l1.len) == 0);
    if (legacy_lossless(e1))
      FUZZ_CHECK(same_but_json(e1, e3));
    posp2p_envelope_free(e3, NULL);
  }
  posp2p_buf_free(&l2);
  posp2p_buf_free(&l1);
  posp2p_envelope_free(e1, NULL);
}

/* ---- legacy round trip ----------------------------------------------------
 */

static void from_legacy(const uint8_t *data, size_t size) {
  posp2p_envelope *e1 = NULL;
  posp2p_error err;
  int rv = posp2p_legacy_decode(data, size, NULL, NULL, &e1, &err);
  if (rv != 0) {
    fuzz_check_error(rv, &err);
    return;
  }
  posp2p_envelope *e2 = v2_roundtrip(e1);
  posp2p_buf l;
  posp2p_buf_init(&l, FUZZ_OUT_MAX, NULL);
  FUZZ_CHECK(posp2p_legacy_encode(e2, NULL, &l, &err) == 0);
  posp2p_envelope *e3 = NULL;
  FUZZ_CHECK(l.len >= 2);
  FUZZ_CHECK(posp2p_legacy_decode(l.data, l.len - 1, NULL, NULL, &e3, &err) ==
             0);
  FUZZ_CHECK(fuzz_same_envelope_legacy(e1, e3));
  posp2p_envelope_free(e3, NULL);
  posp2p_buf_free(&l);
  posp2p_envelope_free(e2, NULL);
  posp2p_envelope_free(e1, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 0 && data[0] == '{') {
    from_legacy(data, size);
  } else {
    from_v2(data, size);
  }
  return 0;
}
