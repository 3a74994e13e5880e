/* The messages the codec benchmark encodes and decodes: a heartbeat, an
 * acknowledgement, a typical 10-item order and a large 200-item order. They
 * are built field by field (not read from files) so that the benchmark does
 * not depend on anything but the schema, and they are the same on every run. */
#ifndef POSP2P_BENCH_MESSAGES_H
#define POSP2P_BENCH_MESSAGES_H

#include <stddef.h>

#include "posp2p/codec.h"

typedef enum {
  BENCH_MSG_HEARTBEAT = 0,
  BENCH_MSG_ACK,
  BENCH_MSG_TYPICAL,
  BENCH_MSG_LARGE,
  BENCH_MSG_COUNT
} bench_msg_kind;

/* Short name used in tables and JSON: "heartbeat", "ack", "typical_order",
 * "large_order". */
const char *bench_msg_name(bench_msg_kind k);
/* One-line description for the README and the JSON. */
const char *bench_msg_description(bench_msg_kind k);

/* Build message k with every string and sub-message allocated from arena
 * (which the caller frees). Returns NULL if the arena runs out of memory.
 * `serial` varies the ids and the order number so that a stream of messages
 * is not one repeated byte string; 0 gives the canonical message. */
posp2p_envelope *bench_msg_build(bench_msg_kind k, unsigned serial,
                                 posp2p_arena *arena);

#endif
