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

#endif
