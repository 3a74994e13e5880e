/* Shared shorthands for the engine tests. */
#ifndef POSP2P_ENGINE_TEST_H
#define POSP2P_ENGINE_TEST_H

#include <stdlib.h>
#include <string.h>

#include "ptest.h"
#include "testnet.h"

#define MAIN POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS
#define TABLET POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET
#define SECONDARY POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS
#define KDS POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS
#define DISPLAY POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_CUSTOMER_DISPLAY
#define EC(x) POSP2P__V2__ERROR_CODE__ERROR_CODE_##x
#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x

static const uint8_t TEST_PREFACE[8] = {0xFF, 'P', 'O', 'S', 'P', '2', 'P', 2};

/* A raw v2 client that completed the handshake with `to` as device `id`;
 * the engine's preface and HELLO have been read. */
static inline tn_link *raw_v2_client(tn_net *net, tn_node *to, const char *id, int type) {
  tn_link *l = tn_raw_connect(net, to);
  posp2p_envelope e;
  Posp2p__V2__Hello h;
  tn_hello(&e, &h, id, type, NULL, 0);
  uint8_t buf[512];
  memcpy(buf, TEST_PREFACE, 8);
  size_t n = tn_frame(&e, buf + 8, sizeof buf - 8);
  tn_raw_send(net, l, buf, 8 + n);
  size_t nb;
  free(tn_raw_take(net, l, &nb));
  return l;
}

/* Read the frames the engine wrote to a raw link (no preface expected). */
static inline size_t raw_envs(tn_net *net, tn_link *l, posp2p_envelope ***envs) {
  size_t nb;
  uint8_t *b = tn_raw_take(net, l, &nb);
  size_t k = tn_decode_stream(b, nb, false, NULL, envs);
  free(b);
  return k;
}

static inline size_t count_type(posp2p_envelope **v, size_t n, int type) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if ((int)v[i]->message_type == type) k++;
  return k;
}

static inline const posp2p_envelope *first_type(posp2p_envelope **v, size_t n, int type) {
  for (size_t i = 0; i < n; i++)
    if ((int)v[i]->message_type == type) return v[i];
  return NULL;
}

static inline void raw_send_env(tn_net *net, tn_link *l, const posp2p_envelope *e) {
  uint8_t buf[4096];
  size_t n = tn_frame(e, buf, sizeof buf);
  tn_raw_send(net, l, buf, n);
}

/* A valid ORDER_FORWARD from `from` (hand-made, for raw remotes). */
static inline void make_order(posp2p_envelope *e, Posp2p__V2__OrderForward *of,
                              const char *mid, const char *from, const char *to,
                              const char *order_id) {
  posp2p_envelope_init(e);
  posp2p__v2__order_forward__init(of);
  e->message_id = (char *)mid;
  e->message_type = MT(ORDER_FORWARD);
  e->from_device_id = (char *)from;
  e->timestamp_ms = 1700000000000;
  if (to) {
    e->opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e->to_device_id = (char *)to;
  }
  of->order_id = (char *)order_id;
  of->currency_exponent = 2;
  e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
  e->order_forward = of;
}

#endif
