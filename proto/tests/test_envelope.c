/* Envelope encode/decode/validation, UUIDs, names, the arena. */
#include "posp2p/codec.h"
#include "internal.h"
#include "ptest.h"

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define ENV(x) POSP2P__V2__ENVELOPE__##x

static const char *ID1 = "0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01";
static const char *ID2 = "6f1e2d3c-4b5a-4978-8675-0a1b2c3d4e5f";
static const char *ID3 = "123e4567-e89b-42d3-a456-426614174000";

/* A valid acknowledgement to start each mutation from. */
typedef struct {
  posp2p_envelope e;
  Posp2p__V2__Acknowledgement ack;
} ack_msg;

static void make_ack(ack_msg *m) {
  posp2p_envelope_init(&m->e);
  posp2p__v2__acknowledgement__init(&m->ack);
  m->e.message_id = (char *)ID1;
  m->e.from_device_id = (char *)ID2;
  m->e.message_type = MT(ACKNOWLEDGEMENT);
  m->e.timestamp_ms = 1771755330123;
  m->e.opt_to_device_id_case = ENV(OPT_TO_DEVICE_ID_TO_DEVICE_ID);
  m->e.to_device_id = (char *)ID3;
  m->ack.acknowledged_message_id = (char *)ID3;
  m->e.payload_case = ENV(PAYLOAD_ACKNOWLEDGEMENT);
  m->e.acknowledgement = &m->ack;
}

/* Encode as a frame, then decode through framer + decode + validate. */
static int roundtrip(const posp2p_envelope *e, posp2p_envelope **out,
                     posp2p_error *err) {
  posp2p_buf b;
  posp2p_framer f;
  posp2p_frame fr;
  size_t used;
  posp2p_buf_init(&b, 1u << 20, NULL);
  int rv = posp2p_frame_encode(e, 0, &b, err);
  if (rv == 0) {
    posp2p_framer_init(&f, 0, NULL);
    rv = posp2p_framer_next(&f, b.data, b.len, &used, &fr, err);
    if (rv == 1) rv = posp2p_envelope_decode(fr.data, fr.len, NULL, out, err);
    else if (rv == 0) rv = POSP2P_ERR_TRUNCATED;
    posp2p_framer_free(&f);
  }
  posp2p_buf_free(&b);
  return rv;
}

PTEST(valid_ack_roundtrip) {
  ack_msg m;
  posp2p_envelope *d = NULL;
  posp2p_error err;
  make_ack(&m);
  PT_EQ_INT(posp2p_envelope_validate(&m.e, &err), 0);
  PT_EQ_INT(roundtrip(&m.e, &d, &err), 0);
  PT_CHECK(d != NULL);
  if (d) {
    PT_EQ_STR(d->message_id, ID1);
    PT_EQ_STR(d->to_device_id, ID3);
    PT_EQ_INT(d->timestamp_ms, 1771755330123);
    PT_EQ_INT(d->payload_case, ENV(PAYLOAD_ACKNOWLEDGEMENT));
    PT_EQ_STR(d->acknowledgement->acknowledged_message_id, ID3);
    PT_EQ_INT(posp2p_envelope_priority(d), 5);
    PT_EQ_INT(d->opt_acknowledged_case, ENV(OPT_ACKNOWLEDGED__NOT_SET));
  }
  posp2p_envelope_free(d, NULL);
}

PTEST(priority_zero_is_present) {
  ack_msg m;
  posp2p_envelope *d = NULL;
  make_ack(&m);
  m.e.opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  m.e.priority = 0;
  PT_EQ_INT(roundtrip(&m.e, &d, NULL), 0);
  if (d) {
    PT_EQ_INT(d->opt_priority_case, ENV(OPT_PRIORITY_PRIORITY));
    PT_EQ_INT(posp2p_envelope_priority(d), 0);
  }
  posp2p_envelope_free(d, NULL);
}

/* Each case mutates a valid ack; validate must fail with code and rule. */
typedef struct {
  const char *name;
  void (*mutate)(ack_msg *);
  int code;
  const char *req;
} bad_case;

static void m_no_id(ack_msg *m) { m->e.message_id = (char *)""; }
static void m_bad_id(ack_msg *m) { m->e.message_id = (char *)"not-a-uuid"; }
static void m_id_long(ack_msg *m) { m->e.message_id = (char *)"0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a011"; }
static void m_id_dash(ack_msg *m) { m->e.message_id = (char *)"0b5c1b0e4d0e-4a8e-9a55-2f6c1f3e7a01-"; }
static void m_no_from(ack_msg *m) { m->e.from_device_id = (char *)""; }
static void m_bad_to(ack_msg *m) { m->e.to_device_id = (char *)"kitchen"; }
static void m_no_type(ack_msg *m) { m->e.message_type = MT(UNSPECIFIED); }
static void m_enum(ack_msg *m) { m->e.message_type = (Posp2p__V2__MessageType)99; }
static void m_prio(ack_msg *m) {
  m->e.opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  m->e.priority = 11;
}
static void m_mismatch(ack_msg *m) { m->e.message_type = MT(ORDER_FORWARD); }
static void m_no_payload(ack_msg *m) { m->e.payload_case = ENV(PAYLOAD__NOT_SET); }
static void m_ack_id(ack_msg *m) { m->ack.acknowledged_message_id = (char *)"x"; }
static void m_both_targets(ack_msg *m) {
  m->e.opt_to_device_type_case = ENV(OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE);
  m->e.to_device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
}
static void m_neg_time(ack_msg *m) { m->e.timestamp_ms = -1; }
static void m_us(ack_msg *m) { m->e.timestamp_us = 1000; }

static const bad_case bad_cases[] = {
  {"missing message_id", m_no_id, POSP2P_ERR_MISSING_FIELD, "MSG-1"},
  {"message_id not a uuid", m_bad_id, POSP2P_ERR_BAD_ID, "MSG-1"},
  {"message_id too long", m_id_long, POSP2P_ERR_BAD_ID, "MSG-1"},
  {"message_id dashes misplaced", m_id_dash, POSP2P_ERR_BAD_ID, "MSG-1"},
  {"missing from_device_id", m_no_from, POSP2P_ERR_MISSING_FIELD, "MSG-5"},
  {"to_device_id not a uuid", m_bad_to, POSP2P_ERR_BAD_ID, "MSG-7"},
  {"message_type unspecified", m_no_type, POSP2P_ERR_MISSING_FIELD, "MSG-10"},
  {"message_type unknown enum", m_enum, POSP2P_ERR_ENUM, "MSG-11"},
  {"priority 11", m_prio, POSP2P_ERR_RANGE, "MSG-15"},
  {"payload of another type", m_mismatch, POSP2P_ERR_PAYLOAD, "MSG-12"},
  {"typed message without payload", m_no_payload, POSP2P_ERR_PAYLOAD, "MSG-12"},
  {"ack of a non-uuid", m_ack_id, POSP2P_ERR_BAD_ID, "MSG-23"},
  {"to_device_id and to_device_type", m_both_targets, POSP2P_ERR_PAYLOAD, "MSG-9"},
  {"negative timestamp", m_neg_time, POSP2P_ERR_RANGE, "TIME-2"},
  {"timestamp_us 1000", m_us, POSP2P_ERR_RANGE, "TIME-3"},
};

PTEST(validation_table) {
  for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
    ack_msg m;
    posp2p_error err;
    make_ack(&m);
    bad_cases[i].mutate(&m);
    int rv = posp2p_envelope_validate(&m.e, &err);
    if (rv != bad_cases[i].code || strcmp(err.requirement, bad_cases[i].req))
      PT_FAIL_("case \"%s\": got %s [%s] %s, want %s [%s]", bad_cases[i].name,
               posp2p_err_name(rv), rv ? err.requirement : "",
               rv ? err.message : "", posp2p_err_name(bad_cases[i].code),
               bad_cases[i].req);
    /* The same must hold after a trip through the wire, where it applies
     * (an out-of-range enum survives protobuf as an unknown value). */
    posp2p_envelope *d = NULL;
    int rv2 = roundtrip(&m.e, &d, &err);
    PT_EQ_INT(rv2, bad_cases[i].code);
    PT_CHECK(d == NULL);
    posp2p_envelope_free(d, NULL);
  }
}

PTEST(garbage_body) {
  static const uint8_t junk[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  posp2p_envelope *d = NULL;
  posp2p_error err;
  PT_EQ_INT(posp2p_envelope_decode(junk, sizeof(junk), NULL, &d, &err),
            POSP2P_ERR_PROTOBUF);
  PT_CHECK(d == NULL);
  /* An empty body is a valid protobuf but an invalid envelope. */
  PT_EQ_INT(posp2p_envelope_decode(junk, 0, NULL, &d, &err),
            POSP2P_ERR_MISSING_FIELD);
  /* Field 1 declared as 100 bytes, body ends after 2. */
  static const uint8_t trunc[] = {0x0A, 100, 'a', 'b'};
  PT_EQ_INT(posp2p_envelope_decode(trunc, sizeof(trunc), NULL, &d, &err),
            POSP2P_ERR_PROTOBUF);
}

PTEST(hello_rules) {
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  uint32_t versions[] = {2};
  posp2p_error err;
  posp2p_envelope_init(&e);
  posp2p__v2__hello__init(&h);
  e.message_id = (char *)ID1;
  e.from_device_id = (char *)ID2;
  e.message_type = MT(HELLO);
  e.payload_case = ENV(PAYLOAD_HELLO);
  e.hello = &h;
  h.device_id = (char *)ID2;
  h.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  h.listen_port = 8766;
  h.n_supported_versions = 1;
  h.supported_versions = versions;
  h.heartbeat_interval_ms = 15000;
  h.device_timeout_ms = 60000;
  h.max_frame_size = POSP2P_MAX_FRAME_DEFAULT;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), 0);
  h.max_frame_size = 100;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
  PT_EQ_STR(err.requirement, "HELLO-10");
  h.max_frame_size = POSP2P_MAX_FRAME_MIN;
  h.device_timeout_ms = 15000;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
  h.device_timeout_ms = 60000;
  h.n_supported_versions = 0;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_MISSING_FIELD);
  h.n_supported_versions = 1;
  h.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_MISSING_FIELD);
  h.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  h.device_id = (char *)"kds-1";
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_BAD_ID);
  PT_EQ_STR(err.requirement, "HELLO-4");
}

PTEST(opaque_types) {
  posp2p_envelope e;
  Posp2p__V2__OpaquePayload op;
  Posp2p__V2__Heartbeat hb;
  posp2p_envelope_init(&e);
  posp2p__v2__opaque_payload__init(&op);
  posp2p__v2__heartbeat__init(&hb);
  e.message_id = (char *)ID1;
  e.from_device_id = (char *)ID2;
  e.message_type = MT(PRODUCT_SYNC);
  PT_EQ_INT(posp2p_envelope_validate(&e, NULL), 0); /* no payload is fine */
  op.json = (char *)"{\"a\":1}";
  e.payload_case = ENV(PAYLOAD_OPAQUE);
  e.opaque = &op;
  PT_EQ_INT(posp2p_envelope_validate(&e, NULL), 0);
  e.payload_case = ENV(PAYLOAD_HEARTBEAT);
  e.heartbeat = &hb;
  PT_EQ_INT(posp2p_envelope_validate(&e, NULL), POSP2P_ERR_PAYLOAD);
}

PTEST(frame_encode_limit) {
  ack_msg m;
  posp2p_buf b;
  posp2p_error err;
  make_ack(&m);
  posp2p_buf_init(&b, 1u << 20, NULL);
  size_t need = posp2p_frame_size(&m.e);
  PT_EQ_INT(posp2p_frame_encode(&m.e, 0, &b, &err), 0);
  PT_EQ_INT(b.len, need);
  uint8_t hdr[5];
  size_t hlen = posp2p_varint_encode((uint32_t)(need - 2), hdr);
  PT_EQ_INT(hlen, 2); /* a 163-byte ack body needs a 2-byte prefix */
  PT_EQ_MEM(b.data, hdr, hlen);
  PT_EQ_INT(posp2p_frame_encode(&m.e, 10, &b, &err), POSP2P_ERR_FRAME_TOO_LARGE);
  PT_EQ_INT(b.len, need); /* nothing appended on failure */
  posp2p_buf_free(&b);
  posp2p_buf_init(&b, 8, NULL);
  PT_EQ_INT(posp2p_frame_encode(&m.e, 0, &b, &err), POSP2P_ERR_NOSPACE);
  posp2p_buf_free(&b);
}

PTEST(uuid) {
  uint8_t rnd[16];
  char out[POSP2P_UUID_LEN + 1];
  for (int i = 0; i < 16; i++) rnd[i] = (uint8_t)(0xF0 + i);
  posp2p_uuid_format(rnd, out);
  PT_CHECK(posp2p_uuid_valid(out));
  PT_EQ_INT(out[14], '4');
  PT_CHECK(out[19] == '8' || out[19] == '9' || out[19] == 'a' || out[19] == 'b');
  PT_CHECK(posp2p_uuid_valid("0B5C1B0E-4D0E-4A8E-9A55-2F6C1F3E7A01"));
  PT_CHECK(!posp2p_uuid_valid("0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a0g"));
  PT_CHECK(!posp2p_uuid_valid("{0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a0}"));
  PT_CHECK(!posp2p_uuid_valid(NULL));
  PT_CHECK(!posp2p_uuid_valid(""));
}

PTEST(names_roundtrip) {
  for (int t = 0; t < 64; t++) {
    const char *n = posp2p_message_type_name(t);
    if (n) PT_EQ_INT(posp2p_message_type_from_name(n, strlen(n)), t);
  }
  PT_EQ_STR(posp2p_message_type_name(MT(ORDER_FORWARD)), "orderForward");
  PT_EQ_STR(posp2p_device_type_name(POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS), "kds");
  PT_EQ_STR(posp2p_order_status_name(1), "sent_to_kitchen");
  PT_EQ_STR(posp2p_destination_name(3), "kitchenDisplay");
  PT_EQ_INT(posp2p_error_code_from_name("FRAME_TOO_LARGE", 15), 2);
  PT_EQ_INT(posp2p_device_type_from_name("kdsx", 4), -1);
  PT_EQ_INT(posp2p_device_type_from_name("kdsx", 3), 4);
  PT_CHECK(posp2p_message_type_name(0) == NULL);
}

/* Counting allocator: shows that decoding into a reset arena stops
 * allocating after the first message. */
static size_t n_allocs, n_live;
static void *count_alloc(void *ud, size_t n) {
  (void)ud;
  n_allocs++;
  n_live++;
  return malloc(n);
}
static void count_free(void *ud, void *p) {
  (void)ud;
  if (p != NULL) n_live--;
  free(p);
}

PTEST(arena_steady_state_allocation_free) {
  ProtobufCAllocator counting = {count_alloc, count_free, NULL};
  posp2p_arena arena;
  ack_msg m;
  posp2p_buf b;
  make_ack(&m);
  posp2p_buf_init(&b, 1024, NULL);
  PT_EQ_INT(posp2p_frame_encode(&m.e, 0, &b, NULL), 0);
  posp2p_arena_init(&arena, &counting, 4096);
  n_allocs = 0;
  size_t hlen = b.data[0] & 0x80 ? 2 : 1;
  int failures = 0;
  for (int i = 0; i < 1000; i++) {
    posp2p_envelope *d = NULL;
    posp2p_arena_reset(&arena);
    if (posp2p_envelope_decode(b.data + hlen, b.len - hlen, &arena.base, &d,
                               NULL) != 0)
      failures++;
    if (i == 0) PT_EQ_INT(n_allocs, 1);
  }
  PT_EQ_INT(failures, 0);
  PT_EQ_INT(n_allocs, 1);
  posp2p_arena_free(&arena);
  posp2p_buf_free(&b);
}

/* posp2p_arena_trim gives back the blocks beyond `keep` and the arena
 * still works afterwards. */
PTEST(arena_trim_releases_blocks) {
  ProtobufCAllocator live = {count_alloc, count_free, NULL};
  posp2p_arena arena;
  posp2p_arena_init(&arena, &live, 256);
  n_live = 0;
  for (int i = 0; i < 5; i++) PT_CHECK(arena.base.alloc(&arena, 200) != NULL);
  PT_EQ_INT(n_live, 5);
  posp2p_arena_trim(&arena, 1);
  PT_EQ_INT(n_live, 1);
  /* The kept block is reused: no new allocation. */
  PT_CHECK(arena.base.alloc(&arena, 200) != NULL);
  PT_EQ_INT(n_live, 1);
  PT_CHECK(arena.base.alloc(&arena, 1000) != NULL); /* an oversize block */
  PT_EQ_INT(n_live, 2);
  posp2p_arena_trim(&arena, 0);
  PT_EQ_INT(n_live, 0);
  PT_CHECK(arena.base.alloc(&arena, 16) != NULL);
  PT_EQ_INT(n_live, 1);
  posp2p_arena_trim(&arena, 3); /* more than it has: only a reset */
  PT_EQ_INT(n_live, 1);
  posp2p_arena_free(&arena);
  PT_EQ_INT(n_live, 0);
}

/* The decoder's fast path takes heartbeats and acks and builds what the
 * general path builds; everything else it leaves to the general path
 * (fuzz_envelope compares the two on every input). */
static int fast(const uint8_t *b, size_t n) {
  posp2p_envelope *e = NULL;
  int rc = posp2p__envelope_fast_unpack(b, n, posp2p_mem_default(), &e);
  posp2p_envelope_free(e, NULL);
  return rc;
}

PTEST(fast_path_takes_acks_and_heartbeats_only) {
  ack_msg m;
  make_ack(&m);
  uint8_t body[512];
  size_t n = posp2p__v2__envelope__pack(&m.e, body);
  PT_EQ_INT(fast(body, n), 1);
  posp2p_envelope *f = NULL, *g = NULL;
  posp2p_error err;
  PT_EQ_INT(posp2p__envelope_fast_unpack(body, n, posp2p_mem_default(), &f), 1);
  PT_EQ_INT(posp2p__envelope_unpack_general(body, n, posp2p_mem_default(), &g, &err), 0);
  PT_EQ_STR(f->acknowledgement->acknowledged_message_id, g->acknowledgement->acknowledged_message_id);
  PT_EQ_STR(f->to_device_id, g->to_device_id);
  PT_EQ_INT(f->opt_to_device_id_case, g->opt_to_device_id_case);
  PT_EQ_INT(f->opt_priority_case, ENV(OPT_PRIORITY__NOT_SET));
  PT_EQ_INT(posp2p_envelope_validate(f, &err), 0);
  posp2p_envelope_free(f, NULL);
  posp2p_envelope_free(g, NULL);

  /* A heartbeat with priority and sequence. */
  Posp2p__V2__Heartbeat hb;
  posp2p__v2__heartbeat__init(&hb);
  hb.sequence = 1234567;
  m.e.message_type = MT(HEARTBEAT);
  m.e.payload_case = ENV(PAYLOAD_HEARTBEAT);
  m.e.heartbeat = &hb;
  m.e.opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  m.e.priority = 2;
  n = posp2p__v2__envelope__pack(&m.e, body);
  PT_EQ_INT(posp2p__envelope_fast_unpack(body, n, posp2p_mem_default(), &f), 1);
  PT_EQ_INT(f->heartbeat->sequence, 1234567);
  PT_EQ_INT(f->priority, 2);
  posp2p_envelope_free(f, NULL);

  /* Left to the general path: a field twice, a type beyond int32, a bool
   * of 2, a string that is not UTF-8, no payload, an unknown field. */
  uint8_t twice[600];
  memcpy(twice, body, n);
  memcpy(twice + n, body, 38); /* message_id again */
  PT_EQ_INT(fast(twice, n + 38), 0);
  const uint8_t big_type[] = {0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0xC2, 0x01, 0x00};
  PT_EQ_INT(fast(big_type, sizeof big_type), 0);
  const uint8_t bool2[] = {0x38, 0x02, 0xC2, 0x01, 0x00};
  PT_EQ_INT(fast(bool2, sizeof bool2), 0);
  const uint8_t latin1[] = {0x0A, 0x01, 0xE9, 0xC2, 0x01, 0x00};
  PT_EQ_INT(fast(latin1, sizeof latin1), 0);
  PT_CHECK(posp2p_envelope_unpack(latin1, sizeof latin1, NULL, &g, &err) ==
           POSP2P_ERR_PROTOBUF);
  posp2p_envelope_free(g, NULL);
  const uint8_t no_payload[] = {0x10, 0x09};
  PT_EQ_INT(fast(no_payload, sizeof no_payload), 0);
  const uint8_t unknown[] = {0xC2, 0x01, 0x00, 0xC0, 0x3E, 0x01}; /* field 1000 */
  PT_EQ_INT(fast(unknown, sizeof unknown), 0);
  const uint8_t order[] = {0xA2, 0x01, 0x00}; /* an (empty) order_forward */
  PT_EQ_INT(fast(order, sizeof order), 0);
}

PTEST(errors_have_names) {
  PT_EQ_STR(posp2p_err_name(POSP2P_ERR_VARINT), "POSP2P_ERR_VARINT");
  PT_EQ_STR(posp2p_err_name(12345), "POSP2P_ERR_UNKNOWN");
  PT_CHECK(strlen(posp2p_strerror(POSP2P_ERR_FRAME_TOO_LARGE)) > 0);
}


/* Raw-byte rules that protobuf-c cannot see: NUL and invalid UTF-8 inside a
 * string field (MSG-22, FRAME-7). */
PTEST(string_bytes_checked_on_the_wire) {
  ack_msg m;
  posp2p_buf b;
  posp2p_envelope *d = NULL;
  posp2p_error err;
  make_ack(&m);
  posp2p_buf_init(&b, 1024, NULL);
  PT_EQ_INT(posp2p_frame_encode(&m.e, 0, &b, NULL), 0);
  size_t hlen = b.data[0] & 0x80 ? 2 : 1;
  uint8_t *body = b.data + hlen;
  size_t blen = b.len - hlen;
  /* body[0] = tag of field 1, body[1] = 36, body[2..] = message_id text. */
  PT_EQ_INT(body[0], 0x0A);
  PT_EQ_INT(body[1], 36);
  body[5] = 0x00;
  PT_EQ_INT(posp2p_envelope_decode(body, blen, NULL, &d, &err), POSP2P_ERR_RANGE);
  PT_EQ_STR(err.requirement, "MSG-22");
  PT_EQ_INT(err.offset, 5);
  body[5] = 0xC3; /* lead byte without its continuation */
  PT_EQ_INT(posp2p_envelope_decode(body, blen, NULL, &d, &err), POSP2P_ERR_PROTOBUF);
  PT_EQ_STR(err.requirement, "FRAME-7");
  body[5] = 0xED; body[6] = 0xA0; body[7] = 0x80; /* UTF-16 surrogate */
  PT_EQ_INT(posp2p_envelope_decode(body, blen, NULL, &d, &err), POSP2P_ERR_PROTOBUF);
  /* Valid two-byte UTF-8 passes the scan and fails only the UUID rule. */
  body[5] = 0xC3; body[6] = 0xA9; body[7] = '0';
  PT_EQ_INT(posp2p_envelope_decode(body, blen, NULL, &d, &err), POSP2P_ERR_BAD_ID);
  PT_EQ_STR(err.requirement, "MSG-1");
  PT_CHECK(d == NULL);
  posp2p_buf_free(&b);
}

PTEST(order_forward_rules) {
  posp2p_envelope e;
  Posp2p__V2__OrderForward o;
  posp2p_error err;
  posp2p_envelope_init(&e);
  posp2p__v2__order_forward__init(&o);
  e.message_id = (char *)ID1;
  e.from_device_id = (char *)ID2;
  e.message_type = MT(ORDER_FORWARD);
  e.payload_case = ENV(PAYLOAD_ORDER_FORWARD);
  e.order_forward = &o;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_MISSING_FIELD);
  PT_EQ_STR(err.requirement, "MSG-24");
  o.order_id = (char *)"ORD-1";
  o.currency = (char *)"EUR";
  o.currency_exponent = 2;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), 0);
  o.currency = (char *)"eur";
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
  PT_EQ_STR(err.requirement, "MONEY-4");
  o.currency = (char *)"";
  o.currency_exponent = 10;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
  PT_EQ_STR(err.requirement, "MONEY-3");
  o.currency_exponent = 2;
  o.destination = (Posp2p__V2__Destination)42;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_ENUM);
  o.destination = POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY;
  o.target_delivery_time_us = 1000;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
  PT_EQ_STR(err.requirement, "TIME-3");
}

PTEST(opaque_json_must_be_object) {
  posp2p_envelope e;
  Posp2p__V2__OpaquePayload op;
  posp2p_error err;
  posp2p_envelope_init(&e);
  posp2p__v2__opaque_payload__init(&op);
  e.message_id = (char *)ID1;
  e.from_device_id = (char *)ID2;
  e.message_type = MT(CONFIG_SYNC);
  e.payload_case = ENV(PAYLOAD_OPAQUE);
  e.opaque = &op;
  static const char *bad[] = {"", "[]", "1", "{\"a\":1", "{\"a\":1}{}", "{\"a\":1,\"a\":2}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    op.json = (char *)bad[i];
    PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_PAYLOAD);
    PT_EQ_STR(err.requirement, "MSG-14");
  }
  op.json = (char *)"{\"menu\":[1,2,{\"x\":null}]}";
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), 0);
}

PTEST(device_info_needs_a_role) {
  posp2p_envelope e;
  Posp2p__V2__DeviceInfo di;
  posp2p_error err;
  posp2p_envelope_init(&e);
  posp2p__v2__device_info__init(&di);
  e.message_id = (char *)ID1;
  e.from_device_id = (char *)ID2;
  e.message_type = MT(DEVICE_INFO);
  e.payload_case = ENV(PAYLOAD_DEVICE_INFO);
  e.device_info = &di;
  di.port = 8766;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_ENUM);
  PT_EQ_STR(err.requirement, "MSG-28");
  di.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), 0);
  di.port = 70000;
  PT_EQ_INT(posp2p_envelope_validate(&e, &err), POSP2P_ERR_RANGE);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
