/* engine.routing: ROUTE-* relay, broadcast, by-type, unknown/offline
 * targets, and ACK-13..17 broadcast custody at the main POS. */
#include <stdio.h>

#include "engine_test.h"

typedef struct {
  tn_node *to;     /* drop frames to this node */
  int type;
  int drop_count;
  int seen;
} drop_state;

static tn_action drop_hook(tn_net *net, tn_node *from, tn_node *to, const posp2p_envelope *e,
                           uint64_t *delay, void *ud) {
  (void)net;
  (void)from;
  (void)delay;
  drop_state *s = ud;
  if (e == NULL || to != s->to || (int)e->message_type != s->type) return TN_DELIVER;
  s->seen++;
  if (s->drop_count > 0) {
    s->drop_count--;
    return TN_DROP;
  }
  return TN_DELIVER;
}

typedef struct {
  tn_net *net;
  tn_node *m, *t1, *t2, *k;
} star;

static void star_up(star *s) {
  s->net = tn_new();
  s->m = tn_add_type(s->net, MAIN, "main");
  s->t1 = tn_add_type(s->net, TABLET, "tablet-1");
  s->t2 = tn_add_type(s->net, TABLET, "tablet-2");
  s->k = tn_add_type(s->net, KDS, "kds");
  tn_connect(s->net, s->t1, s->m, POSP2P_PEER_WIRE_V2);
  tn_connect(s->net, s->t2, s->m, POSP2P_PEER_WIRE_V2);
  tn_connect(s->net, s->k, s->m, POSP2P_PEER_WIRE_V2);
}

PTEST(relay_tablet_to_kds_via_main) {
  star s;
  star_up(&s);
  char mid[40];
  PT_EQ_INT(tn_send_order(s.t1, posp2p_peer_device_id(s.k->p), 0, "o-relay", mid), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  const tn_event *ev = tn_find(s.k, POSP2P_PEER_EV_MESSAGE, 0);
  PT_CHECK(ev != NULL);
  if (ev) {
    PT_EQ_STR(ev->from_id, posp2p_peer_device_id(s.t1->p)); /* ROUTE-2: unchanged */
    PT_EQ_STR(ev->message_id, mid);
  }
  const tn_event *a = tn_find(s.t1, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(a != NULL);
  if (a) PT_EQ_STR(a->device_id, posp2p_peer_device_id(s.k->p)); /* end to end */
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_MESSAGE), 0);
  PT_EQ_INT(posp2p_peer_stats_get(s.m->p)->acks_sent, 0); /* ROUTE-11 */
  PT_EQ_INT(posp2p_peer_stats_get(s.m->p)->relayed, 2);   /* order + ack */
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 0);
  tn_free(s.net);
}

PTEST(relay_forwards_every_retransmission) {
  star s;
  star_up(&s);
  drop_state d = {.to = s.t1, .type = MT(ACKNOWLEDGEMENT), .drop_count = 1};
  s.net->hook = drop_hook;
  s.net->hook_ud = &d;
  PT_EQ_INT(tn_send_order(s.t1, posp2p_peer_device_id(s.k->p), 0, "o", NULL), 0);
  tn_run_for(s.net, 2500);
  PT_EQ_INT(posp2p_peer_stats_get(s.m->p)->relayed, 4); /* 2 orders + 2 acks (ACK-21) */
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(s.k->p)->duplicates, 1);
  PT_EQ_INT(tn_count(s.t1, POSP2P_PEER_EV_ACK), 1);
  tn_free(s.net);
}

PTEST(broadcast_from_main_reaches_every_client_each_acks) {
  star s;
  star_up(&s);
  PT_EQ_INT(tn_send_order(s.m, NULL, 0, "o-all", NULL), 0);
  PT_EQ_INT(posp2p_peer_outbox_count(s.m->p), 3);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.t1, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 0); /* not to itself */
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_ACK), 3);
  PT_EQ_INT(posp2p_peer_outbox_count(s.m->p), 0);
  tn_free(s.net);
}

PTEST(broadcast_from_client_via_main_with_custody) {
  star s;
  star_up(&s);
  char mid[40];
  PT_EQ_INT(tn_send_order(s.t1, NULL, 0, "o-b", mid), 0);
  PT_EQ_INT(posp2p_peer_outbox_count(s.t1->p), 1);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 1);  /* ROUTE-3: main delivers */
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t1, MT(ORDER_FORWARD)), 0); /* not back to originator */
  const tn_event *a = tn_find(s.t1, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(a != NULL);
  if (a) PT_EQ_STR(a->device_id, posp2p_peer_device_id(s.m->p)); /* ACK-16 */
  PT_EQ_INT(tn_count(s.t1, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_ACK), 2); /* ACK-15: custody acks */
  const tn_event *ca = tn_find(s.m, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(ca != NULL && ca->custody);
  PT_EQ_INT(posp2p_peer_outbox_count(s.m->p), 0);
  PT_EQ_INT(posp2p_peer_outbox_count(s.t1->p), 0);
  tn_free(s.net);
}

PTEST(custody_retransmits_to_a_recipient_that_did_not_ack) {
  star s;
  star_up(&s);
  drop_state d = {.to = s.k, .type = MT(ORDER_FORWARD), .drop_count = 1};
  s.net->hook = drop_hook;
  s.net->hook_ud = &d;
  PT_EQ_INT(tn_send_order(s.t1, NULL, 0, "o-c", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(tn_count(s.t1, POSP2P_PEER_EV_ACK), 1); /* custody taken at once */
  tn_run_for(s.net, 2000);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 1); /* not sent again */
  PT_EQ_INT(posp2p_peer_stats_get(s.t2->p)->duplicates, 0);
  PT_EQ_INT(posp2p_peer_outbox_count(s.m->p), 0);
  tn_free(s.net);
}

PTEST(retransmitted_client_broadcast_is_reacked_not_refanned) {
  star s;
  star_up(&s);
  drop_state d = {.to = s.t1, .type = MT(ACKNOWLEDGEMENT), .drop_count = 1};
  s.net->hook = drop_hook;
  s.net->hook_ud = &d;
  PT_EQ_INT(tn_send_order(s.t1, NULL, 0, "o-r", NULL), 0);
  tn_run_for(s.net, 2500);
  PT_EQ_INT(tn_count(s.t1, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(s.k->p)->frames_in > 0, 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(s.k->p)->duplicates, 0); /* ACK-22: not sent again */
  tn_free(s.net);
}

PTEST(by_type_from_main_and_from_client) {
  star s;
  star_up(&s);
  PT_EQ_INT(tn_send_order(s.m, NULL, KDS, "o-kds", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t1, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_ACK), 1);
  /* From a client: main relays to the tablets except the originator, acks
   * (custody) but does not deliver (ROUTE-4). */
  PT_EQ_INT(tn_send_order(s.t1, NULL, TABLET, "o-tab", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t1, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count(s.t1, POSP2P_PEER_EV_ACK), 1);
  /* To the main POS type: delivered locally only. */
  PT_EQ_INT(tn_send_order(s.t1, NULL, MAIN, "o-main", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 1);
  tn_free(s.net);
}

PTEST(unknown_and_offline_targets) {
  star s;
  star_up(&s);
  /* At the main POS itself: synchronous errors. */
  PT_EQ_INT(tn_send_order(s.m, tn_uuid(4242), 0, "o", NULL), POSP2P_ERR_UNKNOWN_DEVICE);
  /* The KDS leaves; it is known but offline (HB-10, ROUTE-6). */
  const char *kid = posp2p_peer_device_id(s.k->p);
  posp2p_conn_id kc = posp2p_peer_device_find(s.k->p, posp2p_peer_device_id(s.m->p))->conn;
  posp2p_peer_conn_close(s.k->p, kc, "off", s.net->now);
  tn_pump(s.net);
  PT_EQ_INT(posp2p_peer_device_find(s.m->p, kid)->status, POSP2P_DEV_DISCONNECTED);
  PT_EQ_INT(tn_send_order(s.m, kid, 0, "o", NULL), POSP2P_ERR_DEVICE_OFFLINE);
  char mid[40];
  PT_EQ_INT(tn_send_order(s.t1, kid, 0, "o-off", mid), 0);
  tn_pump(s.net);
  const tn_event *f = tn_find(s.t1, POSP2P_PEER_EV_DELIVERY_FAILED, 0);
  PT_CHECK(f != NULL);
  if (f) {
    PT_EQ_INT(f->code, POSP2P_ERR_DEVICE_OFFLINE);
    PT_EQ_STR(f->message_id, mid);
  }
  const tn_event *er = tn_find(s.t1, POSP2P_PEER_EV_ERROR_RECEIVED, 0);
  PT_CHECK(er != NULL && er->err_code_in_msg == EC(DEVICE_OFFLINE));
  /* A client without a route at all. */
  tn_node *lone = tn_add_type(s.net, DISPLAY, "display");
  PT_EQ_INT(tn_send_order(lone, kid, 0, "o", NULL), POSP2P_ERR_NO_ROUTE);
  tn_free(s.net);
}

PTEST(ordering_from_one_originator_is_kept) {
  star s;
  star_up(&s);
  const char *kid = posp2p_peer_device_id(s.k->p);
  for (int i = 1; i <= 20; i++) {
    char oid[16];
    snprintf(oid, sizeof oid, "o-%02d", i);
    PT_EQ_INT(tn_send_order(s.t1, kid, 0, oid, NULL), 0);
  }
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 20);
  for (int i = 0; i < 20; i++) {
    const tn_event *e = tn_find(s.k, POSP2P_PEER_EV_MESSAGE, (size_t)i);
    char oid[16];
    snprintf(oid, sizeof oid, "o-%02d", i + 1);
    PT_CHECK(e != NULL);
    if (e) PT_EQ_STR(e->order_id, oid);
  }
  tn_free(s.net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
