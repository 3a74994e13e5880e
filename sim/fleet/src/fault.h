/* Protocol-aware fault injection: an interposer between the libuv
 * transport and the engine.
 *
 * posp2p-sim is linked with -Wl,--wrap for posp2p_peer_conn_recv,
 * posp2p_peer_datagram_recv and uv_read_start, so every byte the transport
 * hands an engine passes through here first, without changing either
 * component. Per connection the interposer
 *   - gates the raw byte stream: held back completely while the link is
 *     partitioned (released in order when the partition ends, as TCP would),
 *     or released at a byte rate for a slow reader; above a threshold it
 *     stops reading the socket so that TCP flow control pushes back on the
 *     sender, as a real slow or cut-off reader does;
 *   - cuts the stream into frames (v2: preface, then varint-delimited
 *     envelopes; legacy: lines) and, while a frame fault is active on the
 *     link, decides per frame and message type: drop, duplicate, delay
 *     (order kept) or reorder (held while later frames overtake it);
 *   - watches every open connection: a peer whose frames stopped reaching
 *     the engine must be marked disconnected within the engine's device
 *     timeout (plus slack), and never before it.
 * Faults apply on the receiving side: a link between a client and the main
 * POS is impaired in both directions when both ends are fleet devices; in
 * target mode only the fleet's side receives through the interposer. */
#ifndef FL_FAULT_H
#define FL_FAULT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "posp2p/uv.h"
#include "plan.h"

typedef struct {
  uint64_t frames_dropped, frames_duplicated, frames_delayed, frames_reordered;
  uint64_t bytes_gated, datagrams_dropped, read_stops;
  uint64_t held_frames, held_bytes; /* gauges */
} fl_fi_stats;

typedef struct {
  /* A violation the interposer found (silent device, early timeout). */
  void (*violation)(int kind, uint32_t dev, uint32_t peer, const char *text,
                    void *user_data);
  void *user_data;
} fl_fi_callbacks;

/* One interposer per process. t0_ms: run start on the uv_now clock. */
int fl_fi_init(uv_loop_t *loop, const fl_plan *plan, const fl_config *cfg,
               uint64_t t0_ms, const fl_fi_callbacks *cb);
/* Close the interposer's timers so that the loop can finish. */
void fl_fi_close_handles(void);
void fl_fi_close(void);  /* frees everything; call after the loop is done */

void fl_fi_engine_add(posp2p_peer *eng, posp2p_uv_peer *up, uint32_t dev);
void fl_fi_engine_gone(posp2p_peer *eng);
void fl_fi_conn_ready(posp2p_peer *eng, posp2p_conn_id conn, uint32_t remote);
void fl_fi_conn_closed(posp2p_peer *eng, posp2p_conn_id conn);
/* The engine timed out conn: checks it was silent long enough. */
void fl_fi_conn_timeout(posp2p_peer *eng, posp2p_conn_id conn);
/* Stop watching timeouts (final shutdown). */
void fl_fi_final(void);

void fl_fi_stats_get(fl_fi_stats *s);
/* Held frames or gated bytes remaining (for the drain). */
uint64_t fl_fi_pending(void);

#endif
