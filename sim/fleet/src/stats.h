/* Counters, gauges and histograms a worker reports, by name. Counters are
 * cumulative since the worker started; gauges are current values;
 * histograms in a snapshot are the values recorded since the previous
 * snapshot, so the parent can keep both totals and per-second series. */
#ifndef FL_STATS_H
#define FL_STATS_H

#include <stdint.h>

#include "hist.h"

#define FL_COUNTERS(X)                                                              \
  X(orders_generated) X(orders_sent) X(orders_acked) X(orders_failed)               \
  X(orders_refused) X(orders_skipped_down) X(cancels_sent) X(carts_sent)            \
  X(carts_acked) X(carts_failed) X(statuses_sent) X(statuses_delivered)             \
  X(statuses_stale) X(kitchen_deliveries) X(kitchen_forwards_sent) X(msgs_sent)     \
  X(msgs_acked) X(msgs_failed) X(msgs_refused) X(app_queued) X(app_queue_dropped)   \
  X(lifecycles_started) X(lifecycles_completed) X(lifecycles_cancelled)             \
  X(kitchen_fallbacks) X(conn_ready) X(conn_closed) X(device_timeouts)              \
  X(backpressure) X(protocol_violations) X(errors_received) X(datagrams_ignored)    \
  X(transport_warnings) X(discovery_requests) X(kills) X(restarts)                  \
  X(start_failures) X(store_restored) X(retransmissions) X(duplicates_suppressed)   \
  X(frames_in) X(frames_out) X(bytes_in) X(bytes_out) X(datagrams_in)               \
  X(datagrams_out) X(engine_delivered) X(engine_acks_sent) X(engine_delivery_failed)\
  X(fault_frames_dropped) X(fault_frames_duplicated) X(fault_frames_delayed)        \
  X(fault_frames_reordered) X(fault_bytes_gated) X(fault_datagrams_dropped)         \
  X(fault_read_stops) X(fault_lost_by_app)

#define FL_GAUGES(X)                                                                \
  X(devices) X(devices_up) X(clients_connected) X(main_connections) X(outbox)       \
  X(app_queue) X(lifecycles_open) X(fault_held) X(rss_kb) X(engine_bytes)           \
  X(store_bytes) X(fds) X(pending_events) X(lifecycle_events)

#define FL_HISTS(X)                                                                 \
  X(order_ack) X(order_to_kitchen) X(status) X(cart_ack) X(message_ack)            \
  X(connect) X(reconnect)

#define FL_ENUM_(n) FL_C_##n,
enum { FL_COUNTERS(FL_ENUM_) FL_NCOUNTERS };
#undef FL_ENUM_
#define FL_ENUM_(n) FL_G_##n,
enum { FL_GAUGES(FL_ENUM_) FL_NGAUGES };
#undef FL_ENUM_
#define FL_ENUM_(n) FL_H_##n,
enum { FL_HISTS(FL_ENUM_) FL_NHISTS };
#undef FL_ENUM_

extern const char *const fl_counter_names[FL_NCOUNTERS];
extern const char *const fl_gauge_names[FL_NGAUGES];
extern const char *const fl_hist_names[FL_NHISTS];

typedef struct {
  int worker;
  uint64_t t_ms;                  /* run time of the snapshot */
  uint64_t c[FL_NCOUNTERS];
  uint64_t g[FL_NGAUGES];
  fl_hist h[FL_NHISTS];           /* since the previous snapshot */
} fl_wstats;

#endif
