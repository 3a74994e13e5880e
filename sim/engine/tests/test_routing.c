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

static size_t raw_orders(tn_net *net, tn_link *l) {
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  size_t n = count_type(envs, k, MT(ORDER_FORWARD));
  tn_free_envs(envs, k);
  return n;
}

/* The main POS finds by-type recipients through an index of connections by
 * device type; it must follow every change: a connection closed, a new one,
 * and the same device id coming back as another type. */
PTEST(by_type_recipients_follow_connections_and_types) {
  star s;
  star_up(&s);
  char xid[40];
  snprintf(xid, sizeof xid, "%s", tn_uuid(90));
  tn_link *x = raw_v2_client(s.net, s.m, xid, TABLET);
  PT_EQ_INT(tn_send_order(s.m, NULL, KDS, "k-1", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(raw_orders(s.net, x), 0);
  PT_EQ_INT(tn_send_order(s.m, NULL, TABLET, "t-1", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(raw_orders(s.net, x), 1);
  PT_EQ_INT(tn_count_msg(s.t1, MT(ORDER_FORWARD)), 1);
  /* x leaves and comes back as a KDS under the same id. */
  tn_raw_close(s.net, x);
  tn_pump(s.net);
  tn_link *x2 = raw_v2_client(s.net, s.m, xid, KDS);
  PT_EQ_INT(tn_send_order(s.m, NULL, TABLET, "t-2", NULL), 0);
  PT_EQ_INT(tn_send_order(s.m, NULL, KDS, "k-2", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(raw_orders(s.net, x2), 1); /* k-2 only */
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 2);
  PT_EQ_INT(tn_count_msg(s.t2, MT(ORDER_FORWARD)), 2);
  /* A client's by-type message goes to the others of the type, not back. */
  PT_EQ_INT(tn_send_order(s.k, NULL, KDS, "k-3", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(raw_orders(s.net, x2), 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 2);
  PT_EQ_INT(tn_send_order(s.t2, NULL, KDS, "k-3b", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(raw_orders(s.net, x2), 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 3);
  /* The KDS node's connection closes: the next KDS message reaches x2 only. */
  const posp2p_peer_device *kd = posp2p_peer_device_find(s.m->p, posp2p_peer_device_id(s.k->p));
  PT_CHECK(kd != NULL && kd->conn != 0);
  PT_EQ_INT(posp2p_peer_conn_close(s.m->p, kd->conn, "test", s.net->now), 0);
  tn_pump(s.net);
  PT_CHECK(posp2p_peer_device_find(s.m->p, posp2p_peer_device_id(s.k->p))->conn == 0);
  PT_EQ_INT(tn_send_order(s.m, NULL, KDS, "k-4", NULL), 0);
  PT_EQ_INT(tn_send_order(s.t1, NULL, KDS, "k-5", NULL), 0);
  tn_pump(s.net);
  PT_EQ_INT(raw_orders(s.net, x2), 2);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 3);
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

/* MSG-6: what a client sends the main POS must carry the client's own id
 * (that of its HELLO). A frame claiming another originator is refused with
 * INVALID_MESSAGE naming MSG-6, neither delivered, relayed nor acked, and
 * the connection stays usable. An ERROR is dropped without a reply. */
PTEST(main_rejects_from_device_id_other_than_the_hello) {
  star s;
  star_up(&s);
  const char *mid_main = posp2p_peer_device_id(s.m->p);
  const char *kid = posp2p_peer_device_id(s.k->p);
  tn_link *l = raw_v2_client(s.net, s.m, tn_uuid(7), TABLET);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  /* To the main POS, claiming tablet-1 as its originator. */
  make_order(&e, &of, tn_uuid(71), posp2p_peer_device_id(s.t1->p), mid_main, "forged");
  raw_send_env(s.net, l, &e);
  /* To the KDS (would be relayed), claiming an unknown originator, and
   * upper-case: the comparison is of ids, not of texts (MSG-4). */
  make_order(&e, &of, tn_uuid(72), "BBBBBBBB-0000-4000-8000-0000000000FF", kid, "forged-2");
  raw_send_env(s.net, l, &e);
  posp2p_envelope **envs;
  size_t k = raw_envs(s.net, l, &envs);
  PT_EQ_INT(k, 2);
  PT_EQ_INT(count_type(envs, k, MT(ACKNOWLEDGEMENT)), 0);
  for (size_t i = 0; i < k; i++) {
    PT_EQ_INT(envs[i]->message_type, MT(ERROR));
    if (envs[i]->message_type != MT(ERROR)) continue;
    PT_EQ_INT(envs[i]->error->code, EC(INVALID_MESSAGE));
    PT_EQ_STR(envs[i]->error->requirement, "MSG-6");
    PT_EQ_STR(envs[i]->error->ref_message_id, tn_uuid(71 + (int)i));
    /* An ERROR about the connection's own peer (ERR-8). */
    PT_EQ_STR(envs[i]->to_device_id, tn_uuid(7));
  }
  tn_free_envs(envs, k);
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_MESSAGE), 0);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 0);
  PT_EQ_INT(posp2p_peer_stats_get(s.m->p)->relayed, 0);
  const tn_event *v = tn_last(s.m, POSP2P_PEER_EV_VIOLATION);
  PT_CHECK(v != NULL && strcmp(v->requirement, "MSG-6") == 0 && !v->closing);
  /* An ERROR with a forged originator: dropped, never answered (ERR-5). */
  posp2p_envelope er;
  Posp2p__V2__Error ep;
  posp2p_envelope_init(&er);
  posp2p__v2__error__init(&ep);
  er.message_id = (char *)tn_uuid(73);
  er.message_type = MT(ERROR);
  er.from_device_id = (char *)kid;
  er.timestamp_ms = 1;
  ep.code = EC(INTERNAL);
  ep.description = "forged";
  er.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ERROR;
  er.error = &ep;
  raw_send_env(s.net, l, &er);
  k = raw_envs(s.net, l, &envs);
  PT_EQ_INT(k, 0);
  tn_free_envs(envs, k);
  PT_EQ_INT(tn_count(s.m, POSP2P_PEER_EV_ERROR_RECEIVED), 0);
  /* The connection is still open and the client's own messages pass. */
  PT_CHECK(!tn_raw_closed(l));
  make_order(&e, &of, tn_uuid(74), tn_uuid(7), mid_main, "genuine");
  raw_send_env(s.net, l, &e);
  make_order(&e, &of, tn_uuid(75), tn_uuid(7), kid, "genuine-relayed");
  raw_send_env(s.net, l, &e);
  k = raw_envs(s.net, l, &envs);
  PT_EQ_INT(count_type(envs, k, MT(ACKNOWLEDGEMENT)), 2); /* the main's and the KDS's */
  PT_EQ_INT(count_type(envs, k, MT(ERROR)), 0);
  tn_free_envs(envs, k);
  PT_EQ_INT(tn_count_msg(s.m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(s.k, MT(ORDER_FORWARD)), 1);
  /* Relays keep the originator's id towards the clients (MSG-5): the KDS
   * saw the raw client as the originator, and its ack went back through. */
  const tn_event *got = tn_last(s.k, POSP2P_PEER_EV_MESSAGE);
  PT_CHECK(got != NULL && strcmp(got->from_id, tn_uuid(7)) == 0);
  tn_free(s.net);
}

/* posp2p_peer_outbox_recipients: who must still acknowledge a message. */
PTEST(outbox_recipients_follow_the_acks) {
  star s;
  star_up(&s);
  s.net->pause_links = true;
  char mid[40];
  PT_EQ_INT(tn_send_order(s.m, NULL, TABLET, "to-tablets", mid), 0);
  const char *ids[4];
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, mid, ids, 4), 2);
  bool t1 = false, t2 = false;
  for (int i = 0; i < 2; i++) {
    t1 |= strcmp(ids[i], posp2p_peer_device_id(s.t1->p)) == 0;
    t2 |= strcmp(ids[i], posp2p_peer_device_id(s.t2->p)) == 0;
  }
  PT_CHECK(t1 && t2);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, mid, NULL, 0), 2);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, mid, ids, 1), 2);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, "nope", ids, 4), 0);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, tn_uuid(1), ids, 4), 0);
  /* A client's broadcast is tracked as one entry: the main POS (ACK-16). */
  char cmid[40];
  PT_EQ_INT(tn_send_order(s.t1, NULL, 0, "from-tablet", cmid), 0);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.t1->p, cmid, ids, 4), 1);
  PT_EQ_STR(ids[0], posp2p_peer_device_id(s.m->p));
  s.net->pause_links = false;
  tn_pump(s.net);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.m->p, mid, ids, 4), 0);
  PT_EQ_INT(posp2p_peer_outbox_recipients(s.t1->p, cmid, ids, 4), 0);
  tn_free(s.net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
