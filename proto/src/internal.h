/* Internal declarations shared between codec source files. Not installed. */
#ifndef POSP2P_CODEC_INTERNAL_H
#define POSP2P_CODEC_INTERNAL_H

#include "posp2p/codec.h"
#include "posp2p/legacy.h"

/* Legacy discovery datagrams (LEGACY-42..45): JSON object, no newline.
 * Implemented in legacy.c, called from disc.c. */
int posp2p__legacy_disc_decode(const uint8_t *d, size_t n,
                               const ProtobufCAllocator *a, posp2p_disc **out,
                               posp2p_error *err);
int posp2p__legacy_disc_encode(const posp2p_disc *m, posp2p_buf *out,
                               posp2p_error *err);

/* Checks on the encoded bytes of a message that protobuf-c does not make
 * (envelope.c): strings are UTF-8 without NUL (FRAME-7, MSG-22), no field
 * number 0. base is added to reported offsets. */
int posp2p__wire_scan(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                      size_t n, uint64_t base, int depth, posp2p_error *err);

/* The two halves of posp2p_envelope_unpack (envelope.c), apart for the
 * differential fuzz target. fast: 1 and *out set when it took the body
 * (a HEARTBEAT or ACKNOWLEDGEMENT Envelope the general path would accept
 * unchanged), 0 when the general path must decode it, -1 out of memory.
 * general: protobuf-c's unpack and the wire scan. */
int posp2p__envelope_fast_unpack(const uint8_t *buf, size_t len, const ProtobufCAllocator *a,
                                 posp2p_envelope **out);
int posp2p__envelope_unpack_general(const uint8_t *buf, size_t len,
                                    const ProtobufCAllocator *a, posp2p_envelope **out,
                                    posp2p_error *err);

#endif
