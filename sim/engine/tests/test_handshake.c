/* engine.handshake: CONN-* and HELLO-* on virtual time, no sockets. */
#include <string.h>

#include "ptest.h"
#include "testnet.h"

#define MAIN POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS
#define TABLET POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET
#define KDS POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS
#define EC(x) POSP2P__V2__ERROR_CODE__ERROR_CODE_##x
#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x

static const uint8_t PREFACE[8] = {0xFF, 'P', 'O', 'S', 'P', '2', 'P', 2};

/* Decode what the engine wrote on a raw link: expects its preface first. */
static size_t take_envs(tn_net *net, tn_link *l, bool *pre_ok, posp2p_envelope ***envs,
                        size_t *nbytes) {
  size_t n;
  uint8_t *b = tn_raw_take(net, l, &n);
  if (nbytes) *nbytes = n;
  size_t k = tn_decode_stream(b, n, true, pre_ok, envs);
  free(b);
  return k;
}

PTEST(v2_handshake_completes_both_sides) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  posp2p_conn_id c = tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  PT_CHECK(c != 0);
  PT_EQ_INT(tn_count(t, POSP2P_PEER_EV_CONN_READY), 1);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_CONN_READY), 1);
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, posp2p_peer_device_id(t->p));
  PT_CHECK(d != NULL);
  if (d) {
    PT_EQ_INT(d->status, POSP2P_DEV_CONNECTED);
    PT_EQ_INT(d->type, TABLET);
    PT_EQ_STR(d->name, "tablet");
    PT_EQ_INT(d->addr.ip, t->addr.ip);
  }
  const posp2p_peer_device *dm = posp2p_peer_device_find(t->p, posp2p_peer_device_id(m->p));
  PT_CHECK(dm != NULL && dm->status == POSP2P_DEV_CONNECTED && dm->type == MAIN);
  posp2p_conn_info info;
  PT_EQ_INT(posp2p_peer_conn_info(t->p, c, &info), 0);
  PT_EQ_INT(info.selected_version, 2);
  PT_EQ_INT(info.state, POSP2P_CONN_READY);
  PT_EQ_STR(info.device_id, posp2p_peer_device_id(m->p));
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->violations, 0);
  tn_free(net);
}

PTEST(server_answers_preface_then_hello_with_selected_version) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  /* CONN-10: preface and HELLO in one write. */
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  uint32_t versions[3] = {1, 2, 3};
  tn_hello(&e, &h, tn_uuid(7), TABLET, versions, 3);
  uint8_t buf[512];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  bool pre = false;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->message_type, MT(HELLO));
    PT_EQ_INT(envs[0]->hello->selected_version, 2);
    PT_EQ_STR(envs[0]->hello->device_id, posp2p_peer_device_id(m->p));
    PT_EQ_STR(envs[0]->from_device_id, posp2p_peer_device_id(m->p));
  }
  tn_free_envs(envs, k);
  PT_CHECK(!tn_raw_closed(l));
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_CONN_READY), 1);
  tn_free(net);
}

PTEST(no_common_version_errors_and_closes) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  uint32_t versions[1] = {3};
  tn_hello(&e, &h, tn_uuid(7), TABLET, versions, 1);
  uint8_t buf[512];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  bool pre = false;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->message_type, MT(ERROR));
    PT_EQ_INT(envs[0]->error->code, EC(UNSUPPORTED_VERSION));
    PT_EQ_STR(envs[0]->error->requirement, "CONN-12");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_CONN_READY), 0);
  const tn_event *v = tn_last(m, POSP2P_PEER_EV_VIOLATION);
  PT_CHECK(v != NULL && v->error_code == EC(UNSUPPORTED_VERSION) && v->closing);
  tn_free(net);
}

PTEST(preface_version_below_2_gets_preface_then_error) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  uint8_t pre1[8];
  memcpy(pre1, PREFACE, 8);
  pre1[7] = 1;
  tn_raw_send(net, l, pre1, 8);
  bool pre = false;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k >= 1) PT_EQ_INT(envs[0]->error->code, EC(UNSUPPORTED_VERSION));
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(bad_magic_closes_without_a_byte) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  const uint8_t bad[8] = {0xFF, 'P', 'O', 'S', 'X', '2', 'P', 2};
  tn_raw_send(net, l, bad, 8);
  size_t n;
  uint8_t *b = tn_raw_take(net, l, &n);
  free(b);
  PT_EQ_INT(n, 0);
  PT_CHECK(tn_raw_closed(l));
  const tn_event *v = tn_last(m, POSP2P_PEER_EV_VIOLATION);
  PT_CHECK(v != NULL);
  if (v) PT_EQ_STR(v->requirement, "CONN-5");
  tn_free(net);
}

PTEST(first_byte_of_no_wire_closes_silently) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  tn_raw_send(net, l, "GET / HTTP/1.1\r\n", 16);
  size_t n;
  uint8_t *b = tn_raw_take(net, l, &n);
  free(b);
  PT_EQ_INT(n, 0);
  PT_CHECK(tn_raw_closed(l));
  const tn_event *v = tn_last(m, POSP2P_PEER_EV_VIOLATION);
  PT_CHECK(v != NULL);
  if (v) PT_EQ_STR(v->requirement, "CONN-4");
  tn_free(net);
}

PTEST(frame_before_hello_is_handshake_required) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  Posp2p__V2__Heartbeat hb;
  posp2p__v2__heartbeat__init(&hb);
  e.message_id = (char *)tn_uuid(1);
  e.message_type = MT(HEARTBEAT);
  e.from_device_id = (char *)tn_uuid(2);
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_HEARTBEAT;
  e.heartbeat = &hb;
  uint8_t buf[256];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  bool pre;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->error->code, EC(HANDSHAKE_REQUIRED));
    PT_EQ_STR(envs[0]->error->requirement, "CONN-15");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(handshake_deadline_after_preface_sends_error) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.handshake_timeout_ms = 3000;
  tn_node *m = tn_add(net, &cfg);
  tn_link *l = tn_raw_connect(net, m);
  tn_raw_send(net, l, PREFACE, 8);
  tn_run_for(net, 2999);
  PT_CHECK(!tn_raw_closed(l));
  tn_run_for(net, 1);
  PT_CHECK(tn_raw_closed(l));
  bool pre;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_CHECK(pre);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->error->code, EC(HANDSHAKE_REQUIRED));
    PT_EQ_STR(envs[0]->error->requirement, "CONN-17");
  }
  tn_free_envs(envs, k);
  tn_free(net);
}

PTEST(handshake_deadline_without_preface_sends_nothing) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  tn_run_for(net, 10000);
  PT_CHECK(tn_raw_closed(l));
  size_t n;
  uint8_t *b = tn_raw_take(net, l, &n);
  free(b);
  PT_EQ_INT(n, 0);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  tn_free(net);
}

PTEST(invalid_hello_is_invalid_message_and_close) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  tn_hello(&e, &h, tn_uuid(7), TABLET, NULL, 0);
  h.max_frame_size = 100; /* HELLO-10 */
  uint8_t buf[512];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  bool pre;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->error->code, EC(INVALID_MESSAGE));
    PT_EQ_STR(envs[0]->error->ref_message_id, e.message_id);
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(second_hello_is_invalid_message_but_kept) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  tn_hello(&e, &h, tn_uuid(7), TABLET, NULL, 0);
  uint8_t buf[1024];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  tn_raw_send(net, l, buf + 8, n);
  bool pre;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_EQ_INT(k, 2);
  if (k >= 2) {
    PT_EQ_INT(envs[0]->message_type, MT(HELLO));
    PT_EQ_INT(envs[1]->error->code, EC(INVALID_MESSAGE));
    PT_EQ_STR(envs[1]->error->requirement, "HELLO-16");
  }
  tn_free_envs(envs, k);
  PT_CHECK(!tn_raw_closed(l));
  tn_free(net);
}

PTEST(hello_with_main_own_id_is_duplicate) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  tn_hello(&e, &h, posp2p_peer_device_id(m->p), TABLET, NULL, 0);
  uint8_t buf[512];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  bool pre;
  posp2p_envelope **envs;
  size_t k = take_envs(net, l, &pre, &envs, NULL);
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->error->code, EC(DUPLICATE_DEVICE_ID));
    PT_EQ_STR(envs[0]->error->requirement, "HELLO-14");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l));
  tn_free(net);
}

PTEST(duplicate_device_id_new_connection_wins) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_link *l1 = tn_raw_connect(net, m);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  tn_hello(&e, &h, tn_uuid(7), TABLET, NULL, 0);
  uint8_t buf[512];
  memcpy(buf, PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l1, buf, 8 + n);
  size_t nb;
  free(tn_raw_take(net, l1, &nb));
  tn_link *l2 = tn_raw_connect(net, m);
  tn_raw_send(net, l2, buf, 8 + n);
  bool pre;
  posp2p_envelope **envs;
  size_t k = 0;
  {
    uint8_t *b = tn_raw_take(net, l1, &nb);
    k = tn_decode_stream(b, nb, false, &pre, &envs);
    free(b);
  }
  PT_EQ_INT(k, 1);
  if (k >= 1) {
    PT_EQ_INT(envs[0]->error->code, EC(DUPLICATE_DEVICE_ID));
    PT_EQ_STR(envs[0]->error->requirement, "HELLO-13");
  }
  tn_free_envs(envs, k);
  PT_CHECK(tn_raw_closed(l1));
  PT_CHECK(!tn_raw_closed(l2));
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, tn_uuid(7));
  PT_CHECK(d != NULL && d->status == POSP2P_DEV_CONNECTED && d->conn == tn_raw_conn(l2));
  tn_free(net);
}

PTEST(graceful_close_sends_goodbye_and_marks_disconnected) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  posp2p_conn_id c = tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  PT_EQ_INT(posp2p_peer_conn_close(t->p, c, "bye", net->now), 0);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_conn_count(t->p), 0);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  const posp2p_peer_device *d = posp2p_peer_device_find(m->p, posp2p_peer_device_id(t->p));
  PT_CHECK(d != NULL && d->status == POSP2P_DEV_DISCONNECTED);
  const tn_event *ce = tn_last(m, POSP2P_PEER_EV_CONN_CLOSED);
  PT_CHECK(ce != NULL);
  if (ce) {
    PT_EQ_INT(ce->code, 0);
    PT_EQ_STR(ce->text, "goodbye received");
  }
  tn_free(net);
}

PTEST(shutdown_closes_everything) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  tn_node *k = tn_add_type(net, KDS, "kds");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  tn_connect(net, k, m, POSP2P_PEER_WIRE_V2);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 2);
  PT_EQ_INT(posp2p_peer_shutdown(m->p, "maintenance", net->now), 0);
  tn_pump(net);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_SHUTDOWN_DONE), 1);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  PT_EQ_INT(posp2p_peer_conn_count(t->p), 0);
  PT_EQ_INT(posp2p_peer_shutdown(m->p, "again", net->now), POSP2P_ERR_SHUTDOWN);
  PT_EQ_INT(tn_send_order(m, posp2p_peer_device_id(t->p), 0, "o", NULL), POSP2P_ERR_SHUTDOWN);
  tn_free(net);
}

static size_t conn_closed_count(const tn_node *n) { return tn_count(n, POSP2P_PEER_EV_CONN_CLOSED); }

/* A device that moved (a main POS back at another address): the client
 * stops reconnecting to the old address. And a failed attempt does not
 * leave the expected device "connecting" for ever. */
PTEST(connect_stop_ends_the_reconnects_to_an_address) {
  tn_net *net = tn_new();
  posp2p_peer_config cfg;
  tn_config(&cfg, TABLET, "tablet");
  cfg.reconnect_ms = 100;
  tn_node *t = tn_add(net, &cfg);
  posp2p_addr old = {0x7f0000c8u, 9999}; /* nobody there */
  posp2p_conn_id c = 0;
  PT_CHECK(posp2p_peer_connect(t->p, &old, POSP2P_PEER_WIRE_V2, tn_uuid(9), net->now, &c) < 0);
  const posp2p_peer_device *d = posp2p_peer_device_find(t->p, tn_uuid(9));
  PT_CHECK(d != NULL && d->status == POSP2P_DEV_ERROR);
  tn_run_for(net, 1000);
  size_t attempts = conn_closed_count(t);
  PT_CHECK(attempts >= 3);
  PT_EQ_INT(posp2p_peer_connect_stop(t->p, &old, "moved", net->now), 0);
  tn_run_for(net, 5000);
  PT_EQ_INT(conn_closed_count(t), attempts);
  PT_EQ_INT(posp2p_peer_connect_stop(t->p, &old, "moved", net->now), POSP2P_ERR_NO_CONN);
  PT_EQ_INT(posp2p_peer_connect_stop(t->p, NULL, "moved", net->now), POSP2P_ERR_INVAL);
  /* A live connection is closed gracefully and not reopened. */
  tn_node *m = tn_add_type(net, MAIN, "main");
  tn_connect(net, t, m, POSP2P_PEER_WIRE_V2);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 1);
  PT_EQ_INT(posp2p_peer_connect_stop(t->p, &m->addr, "moved", net->now), 0);
  tn_run_for(net, 3000);
  PT_EQ_INT(posp2p_peer_conn_count(m->p), 0);
  PT_EQ_INT(posp2p_peer_conn_count(t->p), 0);
  const tn_event *ce = tn_last(m, POSP2P_PEER_EV_CONN_CLOSED);
  PT_CHECK(ce != NULL && strcmp(ce->text, "goodbye received") == 0);
  tn_free(net);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
