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

int main(int argc, char **argv) { return ptest_main(argc, argv); }
