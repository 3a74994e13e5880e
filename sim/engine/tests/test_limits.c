/* engine.limits: max connections (CONN-18), backpressure (ROUTE-16, the
 * per-connection queue cap), the peer's max_frame_size (FRAME-10), memory
 * of an idle peer. */
#include "engine_test.h"

PTEST(connections_beyond_the_limit_get_too_many_connections) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.max_connections = 2;
  tn_node *m = tn_add(net, &cfg);
  tn_link *a = raw_v2_client(net, m, tn_uuid(1), TABLET);
  tn_link *b = raw_v2_client(net, m, tn_uuid(2), TABLET);
  tn_link *c = tn_raw_connect(net, m);
  tn_raw_send(net, c, TEST_PREFACE, 8);
  size_t nb;
  uint8_t *bytes = tn_raw_take(net, c, &nb);
  bool pre;
  posp2p_envelope **envs;
  size_t k = tn_decode_stream(bytes, nb, true, &pre, &envs);
  free(bytes);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k) PT_EQ_INT(envs[0]->error->code, EC(TOO_MANY_CONNECTIONS));
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(c));
  PT_CHECK(!tn_raw_closed(a) && !tn_raw_closed(b));
  /* A legacy connection over the limit is closed without a byte (CONN-19). */
  tn_link *d = tn_raw_connect(net, m);
  tn_raw_send(net, d, "{", 1);
  bytes = tn_raw_take(net, d, &nb);
  free(bytes);
  PT_EQ_INT(nb, 0);
  PT_CHECK(tn_raw_closed(d));
  /* Once one leaves, a new one fits. */
  tn_raw_close(net, a);
  tn_link *e = raw_v2_client(net, m, tn_uuid(3), TABLET);
  PT_CHECK(!tn_raw_closed(e));
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_CONN_READY), 3);
  tn_free(net);
}

PTEST(full_queue_refuses_then_drains) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.max_frame = 4096;
  cfg.max_queue_bytes = 8192;
  tn_node *m = tn_add(net, &cfg);
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  net->pause_links = true; /* the tablet stops reading */
  int accepted = 0, rc = 0;
  for (int i = 0; i < 1000 && rc == 0; i++) {
    rc = tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-with-some-length", NULL);
    if (rc == 0) accepted++;
  }
  PT_EQ_INT(rc, POSP2P_ERR_QUEUE_FULL);
  PT_CHECK(accepted > 10 && accepted < 200);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_BACKPRESSURE), 1);
  /* Refused messages are not in the outbox. */
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), (size_t)accepted);
  net->pause_links = false;
  tn_pump(net);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DRAINED), 1);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), accepted);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), accepted);
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "again", NULL), 0);
  tn_free(net);
}

PTEST(relay_to_a_full_queue_answers_queue_full) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.max_frame = 4096;
  cfg.max_queue_bytes = 4200;
  tn_node *m = tn_add(net, &cfg);
  tn_node *k = tn_add_type(net, KDS, "kds");
  tn_connect(net, k, m, POSP2P_PEER_WIRE_V2);
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  /* Fill main's queue towards the KDS while the KDS does not read: main's
   * own messages first (the link pauses). */
  net->pause_links = true;
  while (tn_send_order(m, posp2p_peer_device_id(k->p), 0, "filler", NULL) == 0) {
  }
  net->pause_links = false;
  /* Deliver only the raw side's bytes: keep the KDS link paused by
   * sending while the main's queue is still full (no pump in between). */
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  char longid[300];
  memset(longid, 'L', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  make_order(&e, &of, tn_uuid(21), tn_uuid(7), posp2p_peer_device_id(k->p), longid);
  uint8_t buf[1024];
  size_t n = tn_frame(&e, buf, sizeof buf);
  posp2p_peer_conn_recv(m->p, tn_raw_conn(l), buf, n, net->now);
  posp2p_envelope **envs;
  size_t kk = raw_envs(net, l, &envs);
  const posp2p_envelope *er = first_type(envs, kk, MT(ERROR));
  PT_CHECK(er != NULL);
  if (er) {
    PT_EQ_INT(er->error->code, EC(QUEUE_FULL));
    PT_EQ_STR(er->error->ref_message_id, tn_uuid(21));
  }
  PT_EQ_INT(count_type(envs, kk, MT(ACKNOWLEDGEMENT)), 0);
  tn_free_envs(envs, kk);
  tn_free(net);
}

PTEST(send_above_the_peer_max_frame_is_refused) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  posp2p_peer_config cfg;
  tn_config(&cfg, TABLET, "tablet");
  cfg.max_frame = 4096; /* advertised in HELLO */
  cfg.max_queue_bytes = 1u << 20;
  tn_node *t = tn_add(net, &cfg);
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  static char big[6000];
  memset(big, 'x', sizeof big - 1);
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, big, NULL),
            POSP2P_ERR_FRAME_TOO_LARGE);
  PT_EQ_INT(posp2p_peer_outbox_count(m->p), 0);
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "small", NULL), 0);
  tn_free(net);
}

PTEST(idle_peer_with_one_connection_is_small) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_run_for(net, 60000); /* heartbeats flowed; queues are empty */
  size_t mem = posp2p_peer_memory(t->p);
  printf("idle tablet with one connection: %zu bytes\n", mem);
  PT_CHECK(mem < 12 * 1024);
  tn_free(net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
