/* engine.heartbeat: HB-* heartbeats at the interval and the device timeout
 * after silence, on compressed timers. */
#include "engine_test.h"

static tn_node *from_filter;
static tn_action silence(tn_net *net, tn_node *from, tn_node *to, const posp2p_envelope *e,
                         uint64_t *delay, void *ud) {
  (void)net;
  (void)to;
  (void)e;
  (void)delay;
  (void)ud;
  return from == from_filter ? TN_DROP : TN_DELIVER;
}

static tn_action drop_heartbeats(tn_net *net, tn_node *from, tn_node *to,
                                 const posp2p_envelope *e, uint64_t *delay, void *ud) {
  (void)net;
  (void)to;
  (void)delay;
  (void)ud;
  return from == from_filter && e && e->message_type == MT(HEARTBEAT) ? TN_DROP : TN_DELIVER;
}

static tn_node *add(tn_net *net, int type, const char *name, uint32_t hb, uint32_t to) {
  posp2p_peer_config cfg;
  tn_config(&cfg, type, name);
  cfg.heartbeat_interval_ms = hb;
  cfg.device_timeout_ms = to;
  return tn_add(net, &cfg);
}

PTEST(heartbeats_at_the_interval_both_ways) {
  tn_net *net = tn_new();
  tn_node *m = add(net, MAIN, "main", 1000, 5000);
  tn_node *t = add(net, TABLET, "tablet", 1000, 5000);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  uint64_t t0 = net->now;
  tn_run_until(net, t0 + 999);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->heartbeats_sent, 0);
  tn_run_until(net, t0 + 1000); /* HB-5: first one after one interval */
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->heartbeats_sent, 1);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->heartbeats_sent, 1);
  tn_run_until(net, t0 + 10000);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->heartbeats_sent, 10);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->heartbeats_received, 10);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->heartbeats_received, 10);
  /* Connected all along; heartbeats are not acked on v2 (ACK-2). */
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DEVICE_TIMEOUT), 0);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->acks_sent, 0);
  tn_free(net);
}

PTEST(heartbeat_interval_follows_half_the_peer_timeout) {
  tn_net *net = tn_new();
  tn_node *m = add(net, MAIN, "main", 15000, 60000);
  tn_node *t = add(net, TABLET, "tablet", 1000, 4000);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_run_for(net, 20000);
  /* HB-2: min(15000, 4000 / 2) = 2000 ms */
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->heartbeats_sent, 10);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_DEVICE_TIMEOUT), 0);
  tn_free(net);
}

PTEST(silence_times_out_and_marks_disconnected) {
  tn_net *net = tn_new();
  tn_node *m = add(net, MAIN, "main", 1000, 5000);
  tn_node *t = add(net, TABLET, "tablet", 1000, 5000);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  from_filter = t; /* the tablet goes silent (half-open connection) */
  net->hook = silence;
  uint64_t t0 = net->now;
  tn_run_until(net, t0 + 4999);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DEVICE_TIMEOUT), 0);
  tn_run_until(net, t0 + 5000); /* HB-6 */
  const tn_event *to = tn_find(m, POSP2P_PEER_EV_DEVICE_TIMEOUT, 0);
  PT_CHECK(to != NULL);
  if (to) {
    PT_EQ_STR(to->device_id, posp2p_peer_device_id(t->p));
    PT_EQ_INT(to->at, t0 + 5000);
  }
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, posp2p_peer_device_id(t->p));
  PT_CHECK(d != NULL && d->status == POSP2P_DEV_DISCONNECTED && d->conn == 0);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  const tn_event *ce = tn_last(m, POSP2P_PEER_EV_CONN_CLOSED);
  PT_CHECK(ce != NULL && ce->code == POSP2P_ERR_TIMEOUT);
  /* The tablet got the GOODBYE "timeout" (HB-7) and is disconnected too. */
  PT_EQ_INT(posp2p_peer_conn_count(t->p), 0);
  tn_free(net);
}

PTEST(any_frame_restarts_the_timeout) {
  tn_net *net = tn_new();
  tn_node *m = add(net, MAIN, "main", 1000, 5000);
  tn_node *t = add(net, TABLET, "tablet", 1000, 5000);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  /* The tablet's heartbeats are lost; orders every 3000 ms (HB-8: any
   * frame counts) keep the link up, and the main POS's acks keep the
   * tablet's side up. */
  from_filter = t;
  net->hook = drop_heartbeats;
  for (int i = 0; i < 5; i++) {
    tn_run_for(net, 3000);
    PT_EQ_INT(tn_send_order(t, posp2p_peer_device_id(m->p), 0, "o", NULL), 0);
  }
  tn_run_for(net, 1000);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DEVICE_TIMEOUT), 0);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 5);
  /* Then silence: the timeout fires 5000 ms after the last order. */
  tn_run_for(net, 4100);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DEVICE_TIMEOUT), 1);
  tn_free(net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
