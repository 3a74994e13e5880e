/* Fuzz target: Envelope decode and validation (SPEC.md MSG-*, HELLO-*).
 *
 * Input: one frame body (no length prefix).
 *
 * Invariants:
 *  - decode either fails with a known error recorded in err and no message,
 *    or returns a message that validates again;
 *  - an accepted message re-encodes with posp2p_frame_encode to a frame of
 *    exactly posp2p_frame_size bytes, which the framer returns as one frame
 *    and which decodes again (this time into an arena, so the arena
 *    allocator is fuzzed too) to a message that packs to identical bytes
 *    (decode -> encode -> decode is the identity, unknown fields included),
 *    twice into one arena with a reset in between;
 *  - decoding the input again with one of its allocations failing fails
 *    cleanly (error, no message, nothing leaked);
 *  - wherever the decoder's fast path (heartbeats, acknowledgements) takes
 *    a body, the general path (protobuf-c and the wire scan) takes it too
 *    and builds a message that packs to the same bytes with the same
 *    presence, payload case and message type. */
#include "fuzz_common.h"
#include "internal.h"

static void fast_vs_general(const uint8_t *data, size_t size) {
  const ProtobufCAllocator *a = posp2p_mem_default();
  posp2p_envelope *f = NULL, *g = NULL;
  posp2p_error err;
  int rc = posp2p__envelope_fast_unpack(data, size, a, &f);
  FUZZ_CHECK(rc == 0 || rc == 1);
  if (rc == 0) {
    FUZZ_CHECK(f == NULL);
    return;
  }
  FUZZ_CHECK(posp2p__envelope_unpack_general(data, size, a, &g, &err) == 0);
  FUZZ_CHECK(g != NULL && g->base.n_unknown_fields == 0);
  FUZZ_CHECK(fuzz_same_envelope(f, g));
  FUZZ_CHECK(f->payload_case == g->payload_case);
  FUZZ_CHECK(f->message_type == g->message_type);
  FUZZ_CHECK(f->opt_to_device_id_case == g->opt_to_device_id_case);
  FUZZ_CHECK(f->opt_priority_case == g->opt_priority_case);
  FUZZ_CHECK(f->opt_acknowledged_case == g->opt_acknowledged_case);
  FUZZ_CHECK(f->opt_to_device_type_case == g->opt_to_device_type_case);
  FUZZ_CHECK(f->timestamp_us == g->timestamp_us && f->timestamp_ms == g->timestamp_ms);
  posp2p_envelope_free(f, a);
  posp2p_envelope_free(g, a);
}

static void reencode(const posp2p_envelope *e) {
  posp2p_buf out;
  posp2p_error err;
  posp2p_buf_init(&out, FUZZ_OUT_MAX, NULL);
  /* A cap of UINT32_MAX: re-packing may legitimately grow a body (negative
   * enum values take 10 bytes), and the cap is not what is tested here. */
  FUZZ_CHECK(posp2p_frame_encode(e, UINT32_MAX, &out, &err) == 0);
  FUZZ_CHECK(out.len == posp2p_frame_size(e));

  posp2p_framer f;
  posp2p_frame fr;
  size_t used = 0;
  posp2p_framer_init(&f, UINT32_MAX, NULL);
  FUZZ_CHECK(posp2p_framer_next(&f, out.data, out.len, &used, &fr, &err) == 1);
  FUZZ_CHECK(used == out.len);
  FUZZ_CHECK(posp2p_framer_finish(&f, &err) == 0);

  /* Decode into an arena twice, resetting it in between: the second decode
   * reuses the first one's blocks (the steady state of a connection). */
  posp2p_arena arena;
  posp2p_arena_init(&arena, NULL, 1024);
  for (int round = 0; round < 2; round++) {
    posp2p_envelope *e2 = NULL;
    FUZZ_CHECK(
        posp2p_envelope_decode(fr.data, fr.len, &arena.base, &e2, &err) == 0);
    FUZZ_CHECK(fuzz_same_envelope(e, e2));
    FUZZ_CHECK(posp2p_envelope_priority(e2) == posp2p_envelope_priority(e));
    FUZZ_CHECK(posp2p_envelope_priority(e2) <= POSP2P_PRIORITY_MAX);
    posp2p_envelope_free(e2, &arena.base);
    posp2p_arena_reset(&arena);
  }
  posp2p_arena_free(&arena);
  posp2p_framer_free(&f);
  posp2p_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  fuzz_alloc counting;
  fuzz_alloc_init(&counting, 0);
  fast_vs_general(data, size);
  int rv = posp2p_envelope_decode(data, size, &counting.base, &e, &err);
  if (rv != 0) {
    FUZZ_CHECK(e == NULL);
    fuzz_check_error(rv, &err);
    return 0;
  }
  FUZZ_CHECK(e != NULL);
  FUZZ_CHECK(posp2p_envelope_validate(e, &err) == 0);
  FUZZ_CHECK(posp2p_message_type_name((int)e->message_type) != NULL);
  FUZZ_CHECK(fuzz_strings_valid(&e->base));
  reencode(e);
  posp2p_envelope_free(e, &counting.base);

  /* The same input with one allocation failing: an error, no message, no
   * leak. protobuf-c reports a failed allocation as a failed unpack. */
  if (counting.count > 0) {
    fuzz_alloc failing;
    fuzz_alloc_init(&failing, fuzz_fail_point(data, size, counting.count));
    posp2p_envelope *ef = NULL;
    rv = posp2p_envelope_decode(data, size, &failing.base, &ef, &err);
    FUZZ_CHECK(rv == POSP2P_ERR_PROTOBUF || rv == POSP2P_ERR_NOMEM);
    FUZZ_CHECK(ef == NULL);
  }
  return 0;
}
