/* Fuzz target: discovery datagrams of both wires (SPEC.md DISC-*,
 * LEGACY-D*).
 *
 * Input: one UDP datagram, exactly as received (the first byte selects the
 * wire: 0xFF v2, '{' or JSON whitespace legacy).
 *
 * Invariants:
 *  - decode either fails with a known error and no message, or returns a
 *    message and names the wire that posp2p_wire_detect gives for the first
 *    byte; a v2 datagram validates (posp2p_disc_validate);
 *  - an accepted datagram re-encodes in the same wire (at most 1400 bytes,
 *    with the v2 magic and version when v2) and decodes again, in the same
 *    wire, to a message that packs to identical bytes.
 *    Allowed exception: a legacy datagram whose re-encoding is above 1400
 *    bytes (POSP2P_ERR_NOSPACE): the encoder writes every key of the shape,
 *    so a short datagram that omitted keys can grow past the limit;
 *  - decoding it again with one allocation failing fails cleanly (no
 *    message, nothing leaked). */
#include "fuzz_common.h"

static void reencode(const posp2p_disc *m, posp2p_wire wire) {
  posp2p_buf out;
  posp2p_error err;
  posp2p_buf_init(&out, FUZZ_OUT_MAX, NULL);
  int rv = posp2p_disc_encode(m, wire, &out, &err);
  if (rv != 0) {
    fuzz_check_error(rv, &err);
    FUZZ_CHECK(wire == POSP2P_WIRE_LEGACY && rv == POSP2P_ERR_NOSPACE);
    FUZZ_CHECK(out.len == 0);
    posp2p_buf_free(&out);
    return;
  }
  FUZZ_CHECK(out.len > 0 && out.len <= POSP2P_DISC_MAX_DATAGRAM);
  FUZZ_CHECK(posp2p_wire_detect(out.data[0]) == wire);
  if (wire == POSP2P_WIRE_V2) {
    FUZZ_CHECK(out.len >= POSP2P_DISC_MAGIC_LEN);
    FUZZ_CHECK(memcmp(out.data, posp2p_disc_magic, sizeof(posp2p_disc_magic)) ==
               0);
    FUZZ_CHECK(out.data[4] == POSP2P_VERSION);
  }

  posp2p_disc *m2 = NULL;
  posp2p_wire wire2 = POSP2P_WIRE_UNKNOWN;
  FUZZ_CHECK(posp2p_disc_decode(out.data, out.len, NULL, &m2, &wire2, &err) ==
             0);
  FUZZ_CHECK(wire2 == wire);
  FUZZ_CHECK(fuzz_same_disc(m, m2));
  posp2p_disc_free(m2, NULL);
  posp2p_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  posp2p_disc *m = NULL;
  posp2p_wire wire = POSP2P_WIRE_UNKNOWN;
  posp2p_error err;
  fuzz_alloc counting;
  fuzz_alloc_init(&counting, 0);
  int rv = posp2p_disc_decode(data, size, &counting.base, &m, &wire, &err);
  if (rv != 0) {
    FUZZ_CHECK(m == NULL);
    fuzz_check_error(rv, &err);
    return 0;
  }
  FUZZ_CHECK(m != NULL);
  FUZZ_CHECK(size > 0 && size <= POSP2P_DISC_MAX_DATAGRAM);
  FUZZ_CHECK(wire == posp2p_wire_detect(data[0]));
  FUZZ_CHECK(wire == POSP2P_WIRE_V2 || wire == POSP2P_WIRE_LEGACY);
  FUZZ_CHECK(fuzz_strings_valid(&m->base));
  if (wire == POSP2P_WIRE_V2)
    FUZZ_CHECK(posp2p_disc_validate(m, &err) == 0);
  reencode(m, wire);
  posp2p_disc_free(m, &counting.base);

  /* Again with one allocation failing: an error, no message, no leak. */
  if (counting.count == 0)
    return 0;
  fuzz_alloc failing;
  fuzz_alloc_init(&failing, fuzz_fail_point(data, size, counting.count));
  posp2p_disc *mf = NULL;
  rv = posp2p_disc_decode(data, size, &failing.base, &mf, &wire, &err);
  FUZZ_CHECK(rv == POSP2P_ERR_NOMEM || rv == POSP2P_ERR_PROTOBUF);
  FUZZ_CHECK(mf == NULL);
  return 0;
}
