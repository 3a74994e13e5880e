/* An in-memory posp2p_peer_store: the "disk" of a virtual device. It lives
 * in the simulator, outside the device's engine, so it survives a kill of
 * the device (crash or graceful) and is loaded into the engine of the
 * restarted device, exactly as a real device reloads its SQLite store
 * (sim/store). Only devices that a kill fault can hit get one. */
#ifndef FL_MEMSTORE_H
#define FL_MEMSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "posp2p/peer.h"

typedef struct fl_memstore fl_memstore;

fl_memstore *fl_memstore_new(uint32_t dedup_count, uint64_t dedup_window_ms);
void fl_memstore_free(fl_memstore *s);
void fl_memstore_iface(fl_memstore *s, posp2p_peer_store *iface);

typedef struct {
  size_t outbox, dedup, devices, refused;
} fl_memstore_counts;

/* Load everything into p (not started): registry, dedup ids, then the
 * outbox in the order entries were first stored. Rows the engine refuses
 * are counted in refused. Returns 0 or -1 (out of memory). */
int fl_memstore_restore(fl_memstore *s, posp2p_peer *p, uint64_t now_ms,
                        fl_memstore_counts *counts);
void fl_memstore_counts_get(const fl_memstore *s, fl_memstore_counts *c);
/* Bytes held, for the memory report. */
size_t fl_memstore_bytes(const fl_memstore *s);

#endif
