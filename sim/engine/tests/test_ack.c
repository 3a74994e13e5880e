/* engine.ack: ACK-* acknowledgement, retransmission, retry limit, dedup,
 * and ROUTE-9 status sequencing. */
#include <stdio.h>

#include "engine_test.h"

typedef struct {
  int drop_type;      /* message type to act on */
  int drop_count;     /* how many to drop (-1: all) */
  int dup_count;      /* how many to duplicate */
  int seen;           /* frames of drop_type seen */
} hook_state;

static tn_action hook(tn_net *net, tn_node *from, tn_node *to, const posp2p_envelope *e,
                      uint64_t *delay, void *ud) {
  (void)net;
  (void)from;
  (void)to;
  (void)delay;
  hook_state *s = ud;
  if (e == NULL || (int)e->message_type != s->drop_type) return TN_DELIVER;
  s->seen++;
  if (s->drop_count != 0) {
    if (s->drop_count > 0) s->drop_count--;
    return TN_DROP;
  }
  if (s->dup_count > 0) {
    s->dup_count--;
    return TN_DUPLICATE;
  }
  return TN_DELIVER;
}

static void pair(tn_net **net, tn_node **m, tn_node **t) {
  *net = tn_new();
  *m = tn_add_type(*net, MAIN, "main");
  *t = tn_add_type(*net, TABLET, "tablet");
  tn_connect(*net, *t, *m, POSP2P_PEER_WIRE_V2);
}

PTEST(directed_order_is_delivered_once_and_acked) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-7", mid), 0);
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 1);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  const tn_event *a = tn_find(m, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(a != NULL);
  if (a) {
    PT_EQ_STR(a->message_id, mid);
    PT_EQ_STR(a->device_id, posp2p_peer_device_id(t->p));
    PT_EQ_INT(a->attempts, 1);
    PT_CHECK(!a->custody);
  }
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 0);
  /* Nothing further happens for the whole retransmission schedule. */
  tn_run_for(net, 70000);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->retransmissions, 0);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DELIVERY_FAILED), 0);
  tn_free(net);
}

PTEST(dropped_frame_is_retransmitted_then_acked) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  hook_state s = {.drop_type = MT(ORDER_FORWARD), .drop_count = 1};
  net->hook = hook;
  net->hook_ud = &s;
  uint64_t t0 = net->now;
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-1", mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 0);
  tn_run_until(net, t0 + 1999);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 0);
  tn_run_until(net, t0 + 2000); /* ACK-7: ack timeout 2000 ms */
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(s.seen, 2);
  const tn_event *a = tn_find(m, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(a != NULL && a->attempts == 2);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->retransmissions, 1);
  tn_run_for(net, 60000);
  PT_EQ_INT(s.seen, 2);
  tn_free(net);
}

PTEST(retry_limit_ends_in_delivery_failed_on_schedule) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  /* Keep the connection alive (heartbeats flow) while orders are lost. */
  hook_state s = {.drop_type = MT(ORDER_FORWARD), .drop_count = -1};
  net->hook = hook;
  net->hook_ud = &s;
  uint64_t t0 = net->now;
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-x", mid), 0);
  /* 2000 + 4000 + 8000 + 16000 + 16000 + 16000 (ACK-8 cap) = 62000 */
  tn_run_until(net, t0 + 61999);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DELIVERY_FAILED), 0);
  PT_EQ_INT(s.seen, 6); /* the original and max_retries = 5 retransmissions */
  tn_run_until(net, t0 + 62000);
  const tn_event *f = tn_find(m, POSP2P_PEER_EV_DELIVERY_FAILED, 0);
  PT_CHECK(f != NULL);
  if (f) {
    PT_EQ_STR(f->message_id, mid);
    PT_EQ_INT(f->code, POSP2P_ERR_RETRY_LIMIT);
    PT_EQ_INT(f->attempts, 6);
    PT_EQ_INT(f->at, t0 + 62000);
  }
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 0);
  tn_run_for(net, 60000);
  PT_EQ_INT(s.seen, 6);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DELIVERY_FAILED), 1);
  tn_free(net);
}

PTEST(duplicate_is_delivered_once_and_acked_twice) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  hook_state s = {.drop_type = MT(ORDER_FORWARD), .dup_count = 1};
  net->hook = hook;
  net->hook_ud = &s;
  uint64_t acks_before = posp2p_peer_stats_get(t->p)->acks_sent;
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-d", NULL), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->duplicates, 1);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->acks_sent - acks_before, 2); /* ACK-6 */
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1); /* second ack matches nothing (ACK-24) */
  tn_free(net);
}

PTEST(lost_ack_causes_retransmission_that_is_not_redelivered) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  hook_state s = {.drop_type = MT(ACKNOWLEDGEMENT), .drop_count = 1};
  net->hook = hook;
  net->hook_ud = &s;
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-a", NULL), 0);
  tn_run_for(net, 2500);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->duplicates, 1);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 0);
  tn_free(net);
}

PTEST(dedup_survives_a_new_connection) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  /* The ack is lost, the connection drops, the retransmission arrives on
   * a new connection (ACK-20) and must not be delivered again. */
  hook_state s = {.drop_type = MT(ACKNOWLEDGEMENT), .drop_count = 1};
  net->hook = hook;
  net->hook_ud = &s;
  PT_EQ_INT(tn_send_order(t, posp2p_peer_device_id(m->p), 0, "order-r", NULL), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  posp2p_conn_id c = posp2p_peer_device_find(t->p, posp2p_peer_device_id(m->p))->conn;
  posp2p_peer_conn_close(t->p, c, "reboot", net->now);
  tn_pump(net);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_run_for(net, 3000);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->duplicates, 1);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ACK), 1);
  tn_free(net);
}

PTEST(stale_status_sequence_is_acked_not_delivered) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  const char *tid = posp2p_peer_device_id(t->p);
  PT_EQ_INT(tn_send_status(m, tid, "o-1", 2, NULL), 0);
  PT_EQ_INT(tn_send_status(m, tid, "o-1", 1, NULL), 0);
  PT_EQ_INT(tn_send_status(m, tid, "o-1", 2, NULL), 0);
  PT_EQ_INT(tn_send_status(m, tid, "o-2", 1, NULL), 0);
  PT_EQ_INT(tn_send_status(m, tid, "o-1", 3, NULL), 0);
  PT_EQ_INT(tn_send_status(m, tid, "o-1", 0, NULL), 0); /* unsequenced */
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_STATUS)), 4);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_STATUS_STALE), 2);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 6);
  tn_free(net);
}

PTEST(unknown_target_error_ends_retransmission) {
  tn_net *net;
  tn_node *m, *t;
  pair(&net, &m, &t);
  char mid[40];
  PT_EQ_INT(tn_send_order(t, tn_uuid(999), 0, "o-u", mid), 0);
  tn_pump(net);
  const tn_event *f = tn_find(t, POSP2P_PEER_EV_DELIVERY_FAILED, 0);
  PT_CHECK(f != NULL);
  if (f) {
    PT_EQ_STR(f->message_id, mid);
    PT_EQ_INT(f->code, POSP2P_ERR_UNKNOWN_DEVICE);
    PT_EQ_INT(f->attempts, 1);
  }
  const tn_event *er = tn_find(t, POSP2P_PEER_EV_ERROR_RECEIVED, 0);
  PT_CHECK(er != NULL && er->err_code_in_msg == EC(UNKNOWN_DEVICE));
  if (er) PT_EQ_STR(er->ref_id, mid);
  PT_EQ_INT(posp2p_peer_outbox_count(t->p), 0);
  tn_run_for(net, 10000);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->retransmissions, 0);
  tn_free(net);
}

/* ---- Persistence interface ------------------------------------------------ */

static int puts_, dels, dedups;
static uint8_t saved_env[4096];
static size_t saved_len;
static char saved_mid[40], saved_rcpt[40];
static uint32_t saved_attempts;

static int st_put(posp2p_peer *p, const posp2p_peer_outbox_rec *r, void *ud) {
  (void)p;
  (void)ud;
  puts_++;
  if (r->envelope_len <= sizeof saved_env) {
    memcpy(saved_env, r->envelope, r->envelope_len);
    saved_len = r->envelope_len;
    snprintf(saved_mid, sizeof saved_mid, "%s", r->message_id);
    snprintf(saved_rcpt, sizeof saved_rcpt, "%s", r->recipient_id);
    saved_attempts = r->attempts;
  }
  return 0;
}
static int st_del(posp2p_peer *p, const char *mid, const char *rcpt, void *ud) {
  (void)p;
  (void)mid;
  (void)rcpt;
  (void)ud;
  dels++;
  return 0;
}
static int st_dedup(posp2p_peer *p, const char *o, const char *m, void *ud) {
  (void)p;
  (void)o;
  (void)m;
  (void)ud;
  dedups++;
  return 0;
}

static void restore(tn_node *n) {
  if (n->index != 0) return;
  posp2p_peer_outbox_rec r = {.message_id = saved_mid,
                              .recipient_id = saved_rcpt,
                              .envelope = saved_env,
                              .envelope_len = saved_len,
                              .attempts = saved_attempts};
  PT_EQ_INT(posp2p_peer_restore_outbox(n->p, &r, n->net->now), 0);
  PT_EQ_INT(posp2p_peer_restore_outbox(n->p, &r, n->net->now), POSP2P_ERR_DUPLICATE);
}

PTEST(store_records_outbox_and_restored_entry_is_resent_after_restart) {
  posp2p_peer_store st = {.outbox_put = st_put, .outbox_del = st_del,
                          .dedup_check_insert = st_dedup};
  tn_net *net = tn_new();
  net->store = &st;
  tn_node *m = tn_add_type(net, MAIN, "main");
  net->store = NULL;
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  net->pause_links = true;
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "survives", mid), 0);
  PT_EQ_INT(puts_, 1);
  PT_EQ_STR(saved_mid, mid);
  PT_EQ_STR(saved_rcpt, posp2p_peer_device_id(t->p));
  tn_free(net); /* "kill -9": the order never left */

  /* Restart: same device ids (deterministic per index), outbox restored. */
  net = tn_new();
  net->store = &st;
  net->before_start = restore;
  m = tn_add_type(net, MAIN, "main");
  net->store = NULL;
  net->before_start = NULL;
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 1);
  t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  const tn_event *ev = tn_find(t, POSP2P_PEER_EV_MESSAGE, 0);
  PT_CHECK(ev != NULL);
  if (ev) PT_EQ_STR(ev->message_id, mid);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(dels, 1);
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 0);
  /* The main POS's own deliveries go through dedup_check_insert. */
  PT_EQ_INT(tn_send_order(t, posp2p_peer_device_id(m->p), 0, "o", NULL), 0);
  tn_pump(net);
  PT_EQ_INT(dedups, 1);
  tn_free(net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
