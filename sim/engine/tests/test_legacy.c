/* engine.legacy: the legacy JSON wire (LEGACY-*), auto-detection on
 * accept (CONN-3), handshake by deviceInfo, orders and acks. */
#include <stdio.h>

#include "engine_test.h"
#include "posp2p/legacy.h"

static size_t legacy_line(const posp2p_envelope *e, char *out, size_t cap) {
  posp2p_buf b;
  posp2p_buf_init(&b, 1 << 20, NULL);
  posp2p_error err;
  posp2p_legacy_opts o = {0};
  size_t n = 0;
  if (posp2p_legacy_encode(e, &o, &b, &err) == 0 && b.len < cap) {
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    n = b.len;
  }
  posp2p_buf_free(&b);
  return n;
}

static char *take_text(tn_net *net, tn_link *l) {
  size_t n;
  uint8_t *b = tn_raw_take(net, l, &n);
  char *s = malloc(n + 1);
  memcpy(s, b, n);
  s[n] = '\0';
  free(b);
  return s;
}

PTEST(legacy_connection_deviceinfo_orders_and_acks_both_ways) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main"); /* wire AUTO */
  tn_node *t = tn_add_type(net, TABLET, "old-tablet");
  posp2p_conn_id c = 0;
  PT_EQ_INT(posp2p_peer_connect(t->p, &m->addr, POSP2P_PEER_WIRE_LEGACY,
                                posp2p_peer_device_id(m->p), net->now, &c), 0);
  tn_pump(net);
  /* The main POS detected legacy from '{', delivered deviceInfo, acked it. */
  PT_EQ_INT(tn_count_msg(m, MT(DEVICE_INFO)), 1);
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, posp2p_peer_device_id(t->p));
  PT_CHECK(d != NULL);
  if (d) {
    PT_EQ_INT(d->wire, POSP2P_PEER_WIRE_LEGACY);
    PT_EQ_INT(d->type, TABLET);
    PT_EQ_STR(d->name, "old-tablet");
    PT_EQ_INT(d->status, POSP2P_DEV_CONNECTED);
  }
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ACK), 1); /* the deviceInfo's ack */
  posp2p_conn_info info;
  PT_EQ_INT(posp2p_peer_conn_info(t->p, c, &info), 0);
  PT_EQ_INT(info.wire, POSP2P_PEER_WIRE_LEGACY);
  PT_EQ_INT(info.selected_version, 1);
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "legacy-order", mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  const tn_event *ev = tn_find(t, POSP2P_PEER_EV_MESSAGE, 0);
  PT_CHECK(ev != NULL);
  if (ev) {
    PT_EQ_STR(ev->message_id, mid);
    PT_EQ_STR(ev->order_id, "legacy-order");
  }
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(tn_send_order(t, posp2p_peer_device_id(m->p), 0, "from-legacy", NULL), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ACK), 2);
  /* Heartbeats are acknowledged on the legacy wire (LEGACY-17). */
  uint64_t acks = posp2p_peer_stats_get(m->p)->acks_sent;
  tn_run_for(net, 15000);
  PT_CHECK(posp2p_peer_stats_get(m->p)->acks_sent > acks);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->violations, 0);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->violations, 0);
  tn_free(net);
}

PTEST(raw_legacy_line_is_delivered_and_acked_in_json) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(31), tn_uuid(30), posp2p_peer_device_id(m->p), "json-order");
  char line[4096];
  size_t n = legacy_line(&e, line, sizeof line);
  PT_CHECK(n > 0 && line[0] == '{' && line[n - 1] == '\n');
  net->chunk = 3;
  tn_raw_send(net, l, line, n);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  char *out = take_text(net, l);
  PT_CHECK(strstr(out, "\"messageType\":\"acknowledgement\"") != NULL);
  PT_CHECK(strstr(out, tn_uuid(31)) != NULL);
  PT_CHECK(out[0] == '{');
  free(out);
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, tn_uuid(30));
  PT_CHECK(d != NULL && d->wire == POSP2P_PEER_WIRE_LEGACY);
  tn_free(net);
}

PTEST(malformed_legacy_line_gets_error_line_and_connection_stays) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  tn_raw_send(net, l, "{\"messageId\": nope}\n", 20);
  char *out = take_text(net, l);
  PT_CHECK(strstr(out, "MALFORMED_FRAME") != NULL);
  PT_CHECK(strstr(out, "\"messageType\":\"error\"") != NULL);
  free(out);
  PT_CHECK(!tn_raw_closed(l));
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(41), tn_uuid(40), posp2p_peer_device_id(m->p), "after");
  char line[4096];
  size_t n = legacy_line(&e, line, sizeof line);
  tn_raw_send(net, l, "\r\n", 2); /* empty line ignored (LEGACY-2) */
  tn_raw_send(net, l, line, n);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_MESSAGE), 1);
  tn_free(net);
}

PTEST(v2_only_device_closes_legacy_without_a_byte) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.wire = POSP2P_PEER_WIRE_V2;
  tn_node *m = tn_add(net, &cfg);
  tn_link *l = tn_raw_connect(net, m);
  tn_raw_send(net, l, "{\"a\":1}\n", 8);
  size_t n;
  free(tn_raw_take(net, l, &n));
  PT_EQ_INT(n, 0);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(auto_detect_serves_both_wires_at_once) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *a = tn_add_type(net, TABLET, "v2-tablet");
  tn_node *b = tn_add_type(net, KDS, "legacy-kds");
  tn_connect(net, a, m, POSP2P_PEER_WIRE_V2);
  posp2p_peer_connect(b->p, &m->addr, POSP2P_PEER_WIRE_LEGACY, posp2p_peer_device_id(m->p),
                      net->now, NULL);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_device_find(m->p, posp2p_peer_device_id(a->p))->wire,
            POSP2P_PEER_WIRE_V2);
  PT_EQ_INT(posp2p_peer_device_find(m->p, posp2p_peer_device_id(b->p))->wire,
            POSP2P_PEER_WIRE_LEGACY);
  /* A v2 tablet's order to the legacy KDS is relayed and re-encoded. */
  PT_EQ_INT(tn_send_order(a, posp2p_peer_device_id(b->p), 0, "cross-wire", NULL), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(b, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count(a, POSP2P_PEER_EV_ACK), 1);
  tn_free(net);
}

/* LEGACY-18: a legacy device does not suppress duplicates, so the main POS
 * answers a retransmission of what it has already acknowledged with an
 * ACKNOWLEDGEMENT from that device's id instead of relaying it again; a v2
 * recipient still gets every retransmission (it filters them itself). */
PTEST(retransmission_to_legacy_device_that_acked_is_acked_by_main) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *b = tn_add_type(net, KDS, "legacy-kds");
  tn_node *v = tn_add_type(net, KDS, "v2-kds");
  posp2p_peer_connect(b->p, &m->addr, POSP2P_PEER_WIRE_LEGACY, posp2p_peer_device_id(m->p),
                      net->now, NULL);
  tn_connect(net, v, m, POSP2P_PEER_WIRE_V2);
  tn_pump(net);
  /* tn_uuid's buffers rotate: keep copies for the envelopes. */
  char tab[40], m70[40], m71[40];
  snprintf(tab, sizeof tab, "%s", tn_uuid(7));
  snprintf(m70, sizeof m70, "%s", tn_uuid(70));
  snprintf(m71, sizeof m71, "%s", tn_uuid(71));
  tn_link *l = raw_v2_client(net, m, tab, TABLET);
  const char *bid = posp2p_peer_device_id(b->p);
  posp2p_envelope e, e2;
  Posp2p__V2__OrderForward of, of2;
  make_order(&e, &of, m70, tab, bid, "retx-legacy");
  make_order(&e2, &of2, m71, tab, posp2p_peer_device_id(v->p), "retx-v2");
  for (int round = 0; round < 3; round++) {
    raw_send_env(net, l, &e);
    raw_send_env(net, l, &e2);
    tn_pump(net);
    posp2p_envelope **envs;
    size_t k = raw_envs(net, l, &envs);
    /* Each round: one ack per message, the legacy one from the KDS's id. */
    PT_EQ_INT(count_type(envs, k, MT(ACKNOWLEDGEMENT)), 2);
    for (size_t i = 0; i < k; i++) {
      if (envs[i]->message_type != MT(ACKNOWLEDGEMENT)) continue;
      const char *acked = envs[i]->acknowledgement->acknowledged_message_id;
      if (strcmp(acked, m70) == 0) PT_EQ_STR(envs[i]->from_device_id, bid);
      PT_EQ_STR(envs[i]->to_device_id, tab);
    }
    tn_free_envs(envs, k);
  }
  /* The legacy KDS was sent the order once (a real legacy device would
   * have delivered every copy it was sent) ... */
  PT_EQ_INT(tn_count_msg(b, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(b->p)->duplicates, 0);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->duplicates, 2);
  /* ... while the v2 KDS saw all three copies and delivered one (ACK-18). */
  PT_EQ_INT(tn_count_msg(v, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(v->p)->duplicates, 2);
  tn_free(net);
}

/* LEGACY-11, LEGACY-17: a sender that writes one line and half-closes
 * (shutdown(SHUT_WR)) still reads the acknowledgement: the line and the
 * EOF arrive together, before the engine's queue is written out, and the
 * EOF must not throw the queued acknowledgement away. */
PTEST(half_closed_one_message_connection_gets_its_ack) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(51), tn_uuid(50), posp2p_peer_device_id(m->p), "one-shot");
  char line[4096];
  size_t n = legacy_line(&e, line, sizeof line);
  net->pause_links = true;
  tn_raw_send(net, l, line, n);
  tn_raw_shutdown(net, l);
  net->pause_links = false;
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  char *out = take_text(net, l);
  PT_CHECK(strstr(out, "\"messageType\":\"acknowledgement\"") != NULL);
  PT_CHECK(strstr(out, tn_uuid(51)) != NULL);
  free(out);
  /* Then the engine closes its side: the connection ended normally. */
  PT_CHECK(tn_raw_closed(l));
  const tn_event *cl = tn_last(m, POSP2P_PEER_EV_CONN_CLOSED);
  PT_CHECK(cl != NULL && cl->code == POSP2P_ERR_PEER_CLOSED);
  PT_EQ_INT(posp2p_peer_device_find(m->p, tn_uuid(50))->status, POSP2P_DEV_DISCONNECTED);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  tn_free(net);
}

/* EOF on the v2 wire is a close (SPEC 4.6: flush, no new frames). */
PTEST(eof_on_v2_closes_the_connection) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  PT_EQ_INT(posp2p_peer_device_find(m->p, tn_uuid(7))->status, POSP2P_DEV_CONNECTED);
  tn_raw_shutdown(net, l);
  PT_CHECK(tn_raw_closed(l));
  size_t nb;
  free(tn_raw_take(net, l, &nb));
  PT_EQ_INT(nb, 0); /* no GOODBYE in reply to the remote's close */
  PT_EQ_INT(posp2p_peer_device_find(m->p, tn_uuid(7))->status, POSP2P_DEV_DISCONNECTED);
  const tn_event *cl = tn_last(m, POSP2P_PEER_EV_CONN_CLOSED);
  PT_CHECK(cl != NULL && cl->code == POSP2P_ERR_PEER_CLOSED);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  tn_free(net);
}

/* A legacy KDS at its own address, listening on `port`, that announced
 * itself to the main POS with deviceInfo and then closed its connection. */
static tn_node *legacy_kds_gone(tn_net *net, tn_node *m, uint16_t port) {
  posp2p_peer_config cfg;
  tn_config(&cfg, KDS, "legacy-kds");
  cfg.wire = POSP2P_PEER_WIRE_LEGACY;
  cfg.listen_port = port;
  tn_node *k = tn_add(net, &cfg);
  posp2p_conn_id kc = 0;
  posp2p_peer_connect(k->p, &m->addr, POSP2P_PEER_WIRE_LEGACY, posp2p_peer_device_id(m->p),
                      net->now, &kc);
  tn_pump(net);
  posp2p_peer_conn_close(k->p, kc, "done", net->now);
  tn_pump(net);
  return k;
}

/* LEGACY-14, LEGACY-15: a legacy device whose connection is closed still
 * counts as connected for device_timeout_ms after its last message, and a
 * message for it goes on a new connection to the source address of its
 * last connection and the port of its deviceInfo; no DEVICE_OFFLINE. */
PTEST(message_for_legacy_device_without_connection_opens_one) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_node *k = legacy_kds_gone(net, m, 9100);
  const char *kid = posp2p_peer_device_id(k->p);
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, kid);
  PT_CHECK(d != NULL);
  if (d == NULL) return;
  PT_EQ_INT(d->conn, 0);
  PT_EQ_INT(d->wire, POSP2P_PEER_WIRE_LEGACY);
  PT_EQ_INT(d->addr.ip, k->addr.ip);
  PT_EQ_INT(d->addr.port, 9100);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 1);
  /* Relayed for the tablet. */
  char mid[40];
  PT_EQ_INT(tn_send_order(t, kid, 0, "to-legacy", mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(k, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count_msg(k, MT(DEVICE_INFO)), 0); /* a one-shot connection: no deviceInfo */
  const tn_event *a = tn_find(t, POSP2P_PEER_EV_ACK, 0);
  PT_CHECK(a != NULL && strcmp(a->message_id, mid) == 0 && strcmp(a->device_id, kid) == 0);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_DELIVERY_FAILED), 0);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ERROR_RECEIVED), 0);
  /* The main POS's own message shares the connection while it is open. */
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 2);
  PT_EQ_INT(tn_send_order(m, kid, 0, "from-main", mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(k, MT(ORDER_FORWARD)), 2);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 2);
  /* Idle: closed. */
  tn_run_for(net, 1500);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 1);
  PT_EQ_INT(posp2p_peer_conn_count(k->p), 0);
  /* A broadcast reaches it too (ROUTE-3 with LEGACY-14). */
  PT_EQ_INT(tn_send_status(m, NULL, "o-1", 1, mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(k, MT(ORDER_STATUS)), 1);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_STATUS)), 1);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 3);
  /* Silent for the device timeout: no longer connected (ROUTE-6). */
  tn_run_for(net, 61000);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 1);
  PT_EQ_INT(tn_send_order(m, kid, 0, "late", NULL), POSP2P_ERR_DEVICE_OFFLINE);
  PT_EQ_INT(tn_send_order(t, kid, 0, "late", mid), 0);
  tn_pump(net);
  const tn_event *f = tn_find(t, POSP2P_PEER_EV_DELIVERY_FAILED, 0);
  PT_CHECK(f != NULL && f->code == POSP2P_ERR_DEVICE_OFFLINE);
  PT_EQ_INT(tn_count_msg(k, MT(ORDER_FORWARD)), 2);
  tn_free(net);
}

/* A legacy device that cannot be reached on a new connection: the message
 * is not delivered, and the originator's retransmission tries again. */
PTEST(unreachable_legacy_device_is_retried_by_the_originator) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_link *l = tn_raw_connect(net, m); /* from 127.0.0.100: nobody listens there */
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(61), tn_uuid(60), posp2p_peer_device_id(m->p), "hello");
  char line[4096];
  size_t n = legacy_line(&e, line, sizeof line);
  tn_raw_send(net, l, line, n);
  tn_raw_close(net, l);
  char mid[40];
  PT_EQ_INT(tn_send_order(t, tn_uuid(60), 0, "to-gone", mid), 0);
  tn_run_for(net, 2500);
  PT_CHECK(posp2p_peer_stats_get(t->p)->retransmissions >= 1);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ERROR_RECEIVED), 0);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 1);
  tn_free(net);
}

typedef struct {
  tn_node *from;
  uint64_t delay;
} delay_acks;

static tn_action delay_acks_hook(tn_net *net, tn_node *from, tn_node *to,
                                 const posp2p_envelope *e, uint64_t *delay, void *ud) {
  (void)net;
  (void)to;
  delay_acks *s = ud;
  if (e == NULL || from != s->from || e->message_type != MT(ACKNOWLEDGEMENT)) return TN_DELIVER;
  *delay = s->delay;
  return TN_DELAY;
}

/* LEGACY-17: the acknowledgement for a legacy sender whose connection is
 * gone goes on a new connection to its known address (here: the end-to-end
 * ack of the v2 tablet, relayed by the main POS). */
PTEST(ack_for_legacy_sender_that_closed_goes_on_a_new_connection) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  posp2p_peer_config cfg;
  tn_config(&cfg, KDS, "legacy");
  cfg.wire = POSP2P_PEER_WIRE_LEGACY; /* listens on 8766, the default address */
  tn_node *k = tn_add(net, &cfg);
  delay_acks da = {t, 100};
  net->hook = delay_acks_hook;
  net->hook_ud = &da;
  /* A one-message connection from the legacy device's address. */
  tn_link *l = tn_raw_connect_from(net, m, k->addr.ip);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(81), posp2p_peer_device_id(k->p), posp2p_peer_device_id(t->p),
             "for-tablet");
  char line[4096];
  size_t n = legacy_line(&e, line, sizeof line);
  tn_raw_send(net, l, line, n);
  tn_raw_close(net, l);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(posp2p_peer_stats_get(k->p)->acks_received, 0);
  tn_run_for(net, 300);
  PT_EQ_INT(posp2p_peer_stats_get(k->p)->acks_received, 1);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_ERROR_RECEIVED), 0);
  tn_free(net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
