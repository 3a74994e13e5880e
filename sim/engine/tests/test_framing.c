/* engine.framing: FRAME-* and MSG-30/MSG-11 handling on a live connection. */
#include "engine_test.h"

PTEST(frames_split_at_every_byte) {
  tn_net *net = tn_new();
  net->chunk = 1; /* every read is one byte, including inside varints */
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_CONN_READY), 1);
  char mid[40];
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "order-1", mid), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 1);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 1);
  const tn_event *ev = tn_find(t, POSP2P_PEER_EV_MESSAGE, 0);
  PT_CHECK(ev != NULL);
  if (ev) {
    PT_EQ_STR(ev->message_id, mid);
    PT_EQ_STR(ev->order_id, "order-1");
  }
  tn_free(net);
}

PTEST(several_frames_in_one_read) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  net->pause_links = true;
  for (int i = 0; i < 5; i++) PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "o", NULL), 0);
  net->pause_links = false;
  uint64_t before = posp2p_peer_stats_get(t->p)->frames_in;
  tn_pump(net);
  PT_EQ_INT(tn_count_msg(t, MT(ORDER_FORWARD)), 5);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->frames_in - before, 5);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_ACK), 5);
  tn_free(net);
}

PTEST(oversize_length_is_frame_too_large_and_close) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  size_t mem_before = posp2p_peer_memory(m->p);
  /* 2^31: far above 1 MiB; must be refused before any body byte. */
  const uint8_t big[5] = {0x80, 0x80, 0x80, 0x80, 0x08};
  tn_raw_send(net, l, big, 5);
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_EQ_INT(k, 1);
  if (k) {
    PT_EQ_INT(envs[0]->error->code, EC(FRAME_TOO_LARGE));
    PT_EQ_STR(envs[0]->error->requirement, "FRAME-4");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  PT_CHECK(posp2p_peer_memory(m->p) < mem_before + 4096);
  tn_free(net);
}

PTEST(garbage_varint_is_malformed_frame_and_close) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  const uint8_t g[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
  tn_raw_send(net, l, g, 6);
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_EQ_INT(k, 1);
  if (k) {
    PT_EQ_INT(envs[0]->error->code, EC(MALFORMED_FRAME));
    PT_EQ_STR(envs[0]->error->requirement, "FRAME-6");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(bad_body_is_malformed_but_connection_kept) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  /* A well-delimited body that is not protobuf (field 0, wire type 7). */
  const uint8_t bad[4] = {0x03, 0x07, 0xFF, 0xFF};
  tn_raw_send(net, l, bad, 4);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(11), tn_uuid(7), posp2p_peer_device_id(m->p), "o-after");
  raw_send_env(net, l, &e);
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_CHECK(!tn_raw_closed(l));
  const posp2p_envelope *err = first_type(envs, k, MT(ERROR));
  PT_CHECK(err != NULL && err->error->code == EC(MALFORMED_FRAME));
  const posp2p_envelope *ack = first_type(envs, k, MT(ACKNOWLEDGEMENT));
  PT_CHECK(ack != NULL);
  if (ack) PT_EQ_STR(ack->acknowledgement->acknowledged_message_id, tn_uuid(11));
  tn_free_envs(envs, k);
  PT_EQ_INT(tn_count_msg(m, MT(ORDER_FORWARD)), 1);
  tn_free(net);
}

PTEST(invalid_message_is_answered_not_delivered_not_acked) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(12), tn_uuid(7), posp2p_peer_device_id(m->p), "");
  raw_send_env(net, l, &e); /* empty order_id: MSG validation fails */
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_EQ_INT(k, 1);
  if (k) {
    PT_EQ_INT(envs[0]->error->code, EC(INVALID_MESSAGE));
    PT_EQ_STR(envs[0]->error->ref_message_id, tn_uuid(12));
    PT_CHECK(envs[0]->error->requirement[0] != '\0');
    PT_EQ_STR(envs[0]->to_device_id, tn_uuid(7));
  }
  tn_free_envs(envs, k);
  PT_CHECK(!tn_raw_closed(l));
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_MESSAGE), 0);
  tn_free(net);
}

PTEST(unknown_message_type_answered_and_kept) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  make_order(&e, &of, tn_uuid(13), tn_uuid(7), posp2p_peer_device_id(m->p), "o");
  e.message_type = (Posp2p__V2__MessageType)99;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD__NOT_SET;
  raw_send_env(net, l, &e);
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_EQ_INT(k, 1);
  if (k) {
    PT_EQ_INT(envs[0]->error->code, EC(UNKNOWN_MESSAGE_TYPE));
    PT_EQ_STR(envs[0]->error->ref_message_id, tn_uuid(13));
  }
  tn_free_envs(envs, k);
  PT_CHECK(!tn_raw_closed(l));
  tn_free(net);
}

PTEST(invalid_error_is_never_answered) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_id = (char *)tn_uuid(14);
  e.message_type = MT(ERROR);
  e.from_device_id = (char *)tn_uuid(7);
  /* no error payload: fails validation */
  raw_send_env(net, l, &e);
  posp2p_envelope **envs;
  size_t k = raw_envs(net, l, &envs);
  PT_EQ_INT(k, 0);
  tn_free_envs(envs, k);
  PT_CHECK(!tn_raw_closed(l));
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_VIOLATION), 1);
  tn_free(net);
}

PTEST(garbage_bytes_split_anywhere_do_not_crash) {
  /* Every prefix of a stream of garbage after the handshake: the engine
   * must answer with at most one error and keep its invariants. */
  for (size_t cut = 1; cut < 12; cut++) {
    tn_net *net = tn_new();
    net->chunk = cut;
    tn_node *m = tn_add_type(net, MAIN, "main");
    tn_link *l = raw_v2_client(net, m, tn_uuid(7), TABLET);
    const uint8_t g[] = {0x02, 0x08, 0x01, 0x05, 0x0a, 0x03, 'a', 'b', 'c', 0x00, 0x01, 0x7f};
    tn_raw_send(net, l, g, sizeof g);
    PT_CHECK(posp2p_peer_stats_get(m->p)->violations >= 1);
    tn_free(net);
  }
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
