/* Message handling on ready connections and the application's send.
 *
 * Routing (ROUTE-*): a client talks to the main POS; the main POS delivers
 * what is addressed to it, relays directed messages unchanged (the received
 * frame body is forwarded as is when both sides speak v2), and takes custody
 * of broadcasts and by-type messages: it acknowledges them to the
 * originator and tracks one outbox entry per recipient until each acks. */
#include <string.h>

#include "peer_int.h"
#include "mutant.h"

/* ---- Small helpers ------------------------------------------------------------ */

bool posp2p__type_acked(int t) {
  switch (t) {
  case MT(ORDER_FORWARD):
  case MT(ORDER_STATUS):
  case MT(ORDER_CANCEL):
  case MT(ORDER_SYNC):
  case MT(CART_SYNC):
  case MT(PRODUCT_SYNC):
  case MT(CONFIG_SYNC):
  case MT(DEVICE_INFO):
  case MT(SERVER_MODE):
  case MT(BROADCAST_UPDATE):
  case MT(DEVICE_COMMAND):
  case MT(DEVICE_RESPONSE):
  case MT(WARNING):
    return true;
  default:
    return false;
  }
}

/* The priorities the legacy reference assigns (MSG priority defaults). */
uint32_t posp2p__type_default_priority(int t) {
  switch (t) {
  case MT(DISCOVERY): return 8;
  case MT(HEARTBEAT): return 2;
  case MT(ACKNOWLEDGEMENT): return 3;
  case MT(ERROR): return 9;
  case MT(ORDER_FORWARD): return 9;
  case MT(ORDER_STATUS): return 8;
  case MT(ORDER_CANCEL): return 9;
  default: return 5;
  }
}

void posp2p__env_prepare(posp2p_peer *p, posp2p_envelope *e, int type,
                         char mid[POSP2P_UUID_LEN + 1], uint64_t now) {
  posp2p__v2__envelope__init(e);
  uint8_t rnd[16];
  p->cb.rand(p, rnd, sizeof rnd, p->user_data);
  posp2p_uuid_format(rnd, mid);
  e->message_id = mid;
  e->message_type = (Posp2p__V2__MessageType)type;
  e->from_device_id = p->id_txt;
  uint64_t wall = posp2p__wall_ms(p, now);
  e->timestamp_ms = (int64_t)(wall > INT64_MAX ? INT64_MAX : wall);
  e->opt_priority_case = POSP2P__V2__ENVELOPE__OPT_PRIORITY_PRIORITY;
  e->priority = posp2p__type_default_priority(type);
}

posp2p__blob *posp2p__env_pack(posp2p_peer *p, const posp2p_envelope *e) {
  size_t n = posp2p__v2__envelope__get_packed_size(e);
  posp2p__blob *b = posp2p__blob_new(p, NULL, n);
  if (b == NULL) return NULL;
  posp2p__v2__envelope__pack(e, b->data);
  return b;
}

static bool has_to(const posp2p_envelope *e) {
  return e->opt_to_device_id_case == POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
}

static bool has_type(const posp2p_envelope *e) {
  return e->opt_to_device_type_case == POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
}

static uint32_t origin_hash(const char *from) {
  return posp2p__hash_bytes(from, strlen(from));
}

posp2p__conn *posp2p__main_conn(posp2p_peer *p) {
  for (posp2p__conn *c = p->conns; c != NULL; c = c->next)
    if (c->state == POSP2P_CONN_READY && c->dev != NULL && c->dev->conn == c &&
        c->dev->pub.type == DT(MAIN_POS))
      return c;
  return NULL;
}

posp2p__conn *posp2p__route_conn(posp2p_peer *p, const posp2p__uuid *rcpt,
                                 bool allow_via_main) {
  posp2p__device *d = posp2p__dev_find(p, rcpt);
  if (d != NULL && d->conn != NULL && d->conn->state == POSP2P_CONN_READY) return d->conn;
  if (allow_via_main && !p->is_main) return posp2p__main_conn(p);
  return NULL;
}

posp2p__conn *posp2p__route_conn_dial(posp2p_peer *p, const posp2p__uuid *rcpt,
                                      bool allow_via_main) {
  posp2p__conn *c = posp2p__route_conn(p, rcpt, allow_via_main);
  if (c != NULL) return c;
  posp2p__device *d = posp2p__dev_find(p, rcpt);
  return posp2p__legacy_reachable(p, d) ? posp2p__legacy_dial(p, d) : NULL;
}

/* Calls fn for every legacy device of the type filter (-1: any) that
 * counts as connected without an open connection (LEGACY-14), except skip,
 * with the one-shot connection that reaches it (LEGACY-15). By index, and
 * re-reading the registry each time: opening a connection runs callbacks. */
static void each_dialled(posp2p_peer *p, const posp2p__uuid *skip, int type_filter,
                         void (*fn)(posp2p_peer *p, posp2p__conn *c, posp2p__device *d,
                                    void *ud),
                         void *ud) {
  for (uint32_t i = 0; i < p->ndevices; i++) {
    posp2p__device *d = p->devices[i];
    if (!posp2p__legacy_reachable(p, d)) continue;
    if (skip != NULL && memcmp(d->key.b, skip->b, 16) == 0) continue;
    if (type_filter >= 0 && d->pub.type != type_filter) continue;
    posp2p__conn *c = posp2p__legacy_dial(p, d);
    if (c != NULL && i < p->ndevices && p->devices[i] == d) fn(p, c, d, ud);
  }
}

static void backpressure(posp2p_peer *p, posp2p__conn *c) {
  if (c->backpressured) return;
  c->backpressured = true;
  posp2p_peer_event ev = {.type = POSP2P_PEER_EV_BACKPRESSURE,
                          .conn = c->id,
                          .device = c->dev ? &c->dev->pub : NULL,
                          .code = POSP2P_ERR_QUEUE_FULL,
                          .text = "outbound queue full"};
  posp2p__emit(p, &ev);
}

/* ACKNOWLEDGEMENT of mid to orig_id on c, from this device, or from
 * `as_id` when the main POS answers on a legacy device's behalf
 * (LEGACY-18). */
static void send_ack_as(posp2p_peer *p, posp2p__conn *c, const char *as_id,
                        const char *orig_id, const char *mid, uint64_t now) {
  posp2p_envelope e;
  char amid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(ACKNOWLEDGEMENT), amid, now);
  if (as_id != NULL) e.from_device_id = (char *)as_id;
  Posp2p__V2__Acknowledgement a;
  posp2p__v2__acknowledgement__init(&a);
  a.acknowledged_message_id = (char *)mid;
  e.payload_case = PL(ACKNOWLEDGEMENT);
  e.acknowledgement = &a;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = (char *)orig_id;
  /* The ack goes back the way the message came (towards the originator);
   * if that connection is closing, by the normal route. */
  if (c == NULL || c->dead || c->state != POSP2P_CONN_READY) {
    /* LEGACY-17: a legacy sender whose connection is gone gets it on a
     * new connection to its known address; with no address it is dropped. */
    posp2p__uuid o;
    if (!posp2p__uuid_parse(orig_id, &o)) return;
    c = posp2p__route_conn_dial(p, &o, true);
    if (c == NULL) return;
  }
  if (posp2p__conn_send_env(p, c, &e, NULL, Q_CONTROL) == 0) p->stats.acks_sent++;
}

void posp2p__send_ack(posp2p_peer *p, posp2p__conn *c, const char *orig_id,
                      const char *mid, uint64_t now) {
  send_ack_as(p, c, NULL, orig_id, mid, now);
}

/* ERROR to the sender of e (ROUTE: UNKNOWN_DEVICE, DEVICE_OFFLINE,
 * QUEUE_FULL). Never for an ERROR (no error loops). */
static void route_error(posp2p_peer *p, posp2p__conn *c, const posp2p_envelope *e,
                        int code, const char *req, const char *desc) {
  if (e->message_type == MT(ERROR)) return;
  posp2p_envelope r;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &r, MT(ERROR), mid, p->now);
  Posp2p__V2__Error er;
  posp2p__v2__error__init(&er);
  er.code = (Posp2p__V2__ErrorCode)code;
  er.description = (char *)desc;
  er.requirement = (char *)req;
  er.ref_message_id = e->message_id;
  r.payload_case = PL(ERROR);
  r.error = &er;
  r.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  r.to_device_id = e->from_device_id;
  if (posp2p__conn_send_env(p, c, &r, NULL, Q_CONTROL) == 0) p->stats.errors_sent++;
}

/* Put e on c: as the received body when both speak v2 (forwarded
 * unchanged), else re-encoded. */
static int forward_on(posp2p_peer *p, posp2p__conn *c, const posp2p_envelope *e,
                      posp2p__blob *body, posp2p__qclass cls) {
  if (c->wire == POSP2P_PEER_WIRE_LEGACY || body == NULL)
    return posp2p__conn_send_env(p, c, e, NULL, cls);
  return posp2p__conn_send_env(p, c, e, body, cls);
}

/* ---- Local delivery ------------------------------------------------------------ */

static void deliver_local(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e, bool ack,
                          bool deliver) {
  posp2p__uuid from, mid;
  posp2p__uuid_parse(e->from_device_id, &from);
  posp2p__uuid_parse(e->message_id, &mid);
  posp2p_conn_id cid = c->id;
  int dup = posp2p__dedup_check_insert(p, &from, &mid, p->now, true, e->from_device_id,
                                       e->message_id);
  if (POSP2P_MUTANT(no_dedup)) dup = dup < 0 ? dup : 0;
  if (dup < 0) {
    /* Not recorded, so neither delivered nor acknowledged: the sender's
     * retransmission will try again. */
    posp2p_peer_event ev = {.type = POSP2P_PEER_EV_VIOLATION,
                            .conn = c->id,
                            .message_id = e->message_id,
                            .code = dup,
                            .text = "could not record the message id (store failed)"};
    posp2p__emit(p, &ev);
    return;
  }
  if (dup == 1) {
    p->stats.duplicates++;
  } else if (deliver) {
    bool fresh = true;
    if (e->message_type == MT(ORDER_STATUS) && e->order_status->sequence > 0)
      posp2p__status_accept(p, e->from_device_id, e->order_status->order_id, e->order_status->sequence, p->now,
                            &fresh);
    if (!fresh) {
      p->stats.status_stale++;
      posp2p_peer_event ev = {.type = POSP2P_PEER_EV_STATUS_STALE,
                              .conn = c->id,
                              .device = c->dev ? &c->dev->pub : NULL,
                              .msg = e,
                              .message_id = e->message_id,
                              .text = "order status sequence not newer than the last delivered"};
      posp2p__emit(p, &ev);
    } else {
      p->stats.delivered++;
      posp2p_peer_event ev = {.type = POSP2P_PEER_EV_MESSAGE,
                              .conn = c->id,
                              .device = c->dev ? &c->dev->pub : NULL,
                              .msg = e,
                              .message_id = e->message_id,
                              .device_id = e->from_device_id,
                              .text = posp2p_message_type_name((int)e->message_type)};
      posp2p__emit(p, &ev);
    }
  }
  /* The handler may have closed c; posp2p__send_ack then routes normally. */
  if (ack && !POSP2P_MUTANT(no_ack)) posp2p__send_ack(p, posp2p__conn_find(p, cid), e->from_device_id,
                                                e->message_id, p->now);
}

/* ---- Relay (main POS) ---------------------------------------------------------- */

static void relay_directed(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e,
                           posp2p__blob **body, const posp2p__uuid *to) {
  posp2p__device *d = posp2p__dev_find(p, to);
  if (POSP2P_MUTANT(misroute) && d != NULL && c->dev != NULL) d = c->dev;
  if (d == NULL) {
    route_error(p, c, e, EC(UNKNOWN_DEVICE), REQ_ROUTE_UNKNOWN, "destination device unknown");
    return;
  }
  posp2p__conn *t = d->conn != NULL && d->conn->state == POSP2P_CONN_READY ? d->conn : NULL;
  if (t == NULL && posp2p__legacy_reachable(p, d)) {
    /* LEGACY-14, LEGACY-15: still connected, on a new connection. If it
     * cannot be opened the message is dropped; the originator retransmits. */
    t = posp2p__legacy_dial(p, d);
    if (t == NULL) return;
  }
  if (t == NULL) {
    route_error(p, c, e, EC(DEVICE_OFFLINE), REQ_ROUTE_OFFLINE,
                "destination device is not connected");
    return;
  }
  bool control = e->message_type == MT(ACKNOWLEDGEMENT) || e->message_type == MT(ERROR);
  if (t->wire == POSP2P_PEER_WIRE_LEGACY && !control) {
    /* LEGACY-18: a legacy device does not suppress duplicates, so a
     * retransmission of what it has already acknowledged (recorded when its
     * ack passed through, see posp2p__route_recv) is answered here. */
    posp2p__uuid from, mid;
    if (posp2p__uuid_parse(e->from_device_id, &from) &&
        posp2p__uuid_parse(e->message_id, &mid) && posp2p__dedup_contains(p, &from, &mid)) {
      p->stats.duplicates++;
      send_ack_as(p, c, d->pub.id, e->from_device_id, e->message_id, p->now);
      return;
    }
  }
  posp2p__qclass cls = control ? Q_CONTROL : Q_DATA;
  int rc = forward_on(p, t, e, *body, cls);
  if (rc == 0) {
    p->stats.relayed++;
  } else if (rc == POSP2P_ERR_QUEUE_FULL) {
    backpressure(p, t);
    route_error(p, c, e, EC(QUEUE_FULL), REQ_ROUTE_QUEUE, "destination queue full");
  } else if (rc == POSP2P_ERR_FRAME_TOO_LARGE) {
    route_error(p, c, e, EC(INVALID_MESSAGE), REQ_FRAME_PEER_MAX,
                "message exceeds the destination's max_frame_size");
  } else {
    route_error(p, c, e, EC(INTERNAL), "", posp2p_peer_strerror(rc));
  }
}

typedef struct {
  posp2p_envelope *e;
  posp2p__blob *body;
  posp2p__uuid mid;
  bool acked;
  uint8_t prio;
  uint32_t origin;
} fanout_ctx;

/* One recipient of a message in custody: send it and track it (ACK-13). */
static void fanout_one(posp2p_peer *p, posp2p__conn *t, posp2p__device *d, void *ud) {
  fanout_ctx *fc = ud;
  int rc = forward_on(p, t, fc->e, fc->body, Q_DATA);
  if (rc == 0) p->stats.relayed++;
  if (rc == POSP2P_ERR_QUEUE_FULL) backpressure(p, t);
  if (fc->acked)
    posp2p__obx_add(p, &fc->mid, &d->key, fc->body, fc->origin, fc->prio, true,
                    rc == 0 ? 1 : 0, rc != 0, true, p->now, NULL);
}

/* The candidates of a fan-out: the by-type index when there is a type and
 * the index can be used, else every connection. The caller filters. */
typedef struct {
  posp2p_peer *p;
  posp2p__conn **idx;
  size_t n, i;
  posp2p__conn *walk;
} cand_iter;

static void cand_begin(posp2p_peer *p, cand_iter *it, int type_filter) {
  it->p = p;
  it->i = 0;
  it->idx = type_filter >= 0 ? posp2p__conns_of_type(p, type_filter, &it->n) : NULL;
  it->walk = it->idx == NULL ? p->conns : NULL;
  if (it->idx != NULL) p->type_idx_busy++;
}

static posp2p__conn *cand_next(cand_iter *it) {
  if (it->idx != NULL) return it->i < it->n ? it->idx[it->i++] : NULL;
  posp2p__conn *c = it->walk;
  /* Step first: handling c may unlink it, which clears c->next. */
  if (c != NULL) it->walk = c->next;
  return c;
}

static void cand_end(cand_iter *it) {
  if (it->idx != NULL) it->p->type_idx_busy--;
}

/* A live, ready connection that is its device's current one, not the
 * originator's, and of the type when there is one. */
static bool fanout_target(const posp2p__conn *t, const posp2p__conn *c,
                          const posp2p__uuid *from, int type_filter) {
  if (t == c || t->dead || t->state != POSP2P_CONN_READY || t->dev == NULL ||
      t->dev->conn != t)
    return false;
  if (memcmp(t->dev->key.b, from->b, 16) == 0) return false;
  return type_filter < 0 || t->dev->pub.type == type_filter;
}

/* Broadcast or by-type at the main POS: deliver locally when it is a
 * recipient, acknowledge to the originator (custody), and fan out to every
 * other connected device of the type with one outbox entry each. */
static void custody_fanout(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e,
                           posp2p__blob **body, bool local, int type_filter) {
  posp2p__uuid from, mid;
  posp2p__uuid_parse(e->from_device_id, &from);
  posp2p__uuid_parse(e->message_id, &mid);
  bool acked = posp2p__type_acked((int)e->message_type) || c->wire == POSP2P_PEER_WIRE_LEGACY;
  posp2p_conn_id cid = c->id;
  if (posp2p__dedup_contains(p, &from, &mid)) {
    /* ACK-22: already in custody: acknowledge again, nothing else. */
    p->stats.duplicates++;
    if (acked) posp2p__send_ack(p, c, e->from_device_id, e->message_id, p->now);
    return;
  }
  /* ROUTE-16: if some recipient's queue cannot take it, refuse the whole
   * message (no ack, not recorded) so that the originator retransmits. */
  size_t need = (size_t)(*body ? (*body)->len : posp2p__v2__envelope__get_packed_size(e));
  cand_iter it;
  cand_begin(p, &it, type_filter);
  for (posp2p__conn *t; (t = cand_next(&it)) != NULL;) {
    if (!fanout_target(t, c, &from, type_filter)) continue;
    if (!posp2p__conn_has_room(p, t, posp2p__conn_frame_size(t, need), Q_DATA)) {
      cand_end(&it);
      backpressure(p, t);
      route_error(p, c, e, EC(QUEUE_FULL), REQ_ROUTE_QUEUE, "a recipient's queue is full");
      return;
    }
  }
  cand_end(&it);
  int dup = posp2p__dedup_check_insert(p, &from, &mid, p->now, true, e->from_device_id,
                                       e->message_id);
  if (dup < 0) return;
  if (dup == 1) {
    p->stats.duplicates++;
    if (acked) posp2p__send_ack(p, c, e->from_device_id, e->message_id, p->now);
    return;
  }
  if (*body == NULL || c->wire == POSP2P_PEER_WIRE_LEGACY) {
    posp2p__blob_unref(p, *body);
    *body = posp2p__env_pack(p, e);
    if (*body == NULL) return;
  }
  fanout_ctx fc = {.e = e, .body = *body, .mid = mid, .acked = acked,
                    .prio = (uint8_t)posp2p_envelope_priority(e),
                    .origin = origin_hash(e->from_device_id)};
  cand_begin(p, &it, type_filter);
  for (posp2p__conn *t; (t = cand_next(&it)) != NULL;)
    if (fanout_target(t, c, &from, type_filter)) fanout_one(p, t, t->dev, &fc);
  cand_end(&it);
  /* Legacy recipients without an open connection (LEGACY-14, LEGACY-15). */
  each_dialled(p, &from, type_filter, fanout_one, &fc);
  if (local) {
    p->stats.delivered++;
    posp2p_peer_event ev = {.type = POSP2P_PEER_EV_MESSAGE,
                            .conn = c->id,
                            .device = c->dev ? &c->dev->pub : NULL,
                            .msg = e,
                            .message_id = e->message_id,
                            .device_id = e->from_device_id,
                            .text = posp2p_message_type_name((int)e->message_type)};
    posp2p__emit(p, &ev);
  }
  if (acked) posp2p__send_ack(p, posp2p__conn_find(p, cid), e->from_device_id, e->message_id,
                              p->now);
}

/* ---- Receive dispatch ------------------------------------------------------------- */

void posp2p__route_recv(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e,
                        const uint8_t *body, size_t body_len, uint64_t now) {
  (void)now;
  posp2p__uuid to;
  bool directed = has_to(e) && posp2p__uuid_parse(e->to_device_id, &to);
  bool to_me = directed && memcmp(to.b, p->id.b, 16) == 0;
  bool legacy = c->wire == POSP2P_PEER_WIRE_LEGACY;
  posp2p__blob *blob = NULL;
  if (body != NULL && p->is_main) {
    blob = posp2p__blob_new(p, body, body_len);
    if (blob == NULL) return;
  }
  switch ((int)e->message_type) {
  case MT(HEARTBEAT):
    p->stats.heartbeats_received++;
    /* Legacy devices acknowledge everything but acknowledgements (LEGACY);
     * on v2 heartbeats are not acknowledged (HB). */
    if (legacy) posp2p__send_ack(p, c, e->from_device_id, e->message_id, p->now);
    break;
  case MT(GOODBYE):
    if (!directed || to_me)
      posp2p__conn_start_close(p, c, 0, "goodbye received", false);
    break;
  case MT(ACKNOWLEDGEMENT): {
    p->stats.acks_received++;
    posp2p__uuid acked, from;
    if (!posp2p__uuid_parse(e->acknowledgement->acknowledged_message_id, &acked) ||
        !posp2p__uuid_parse(e->from_device_id, &from))
      break;
    if (!directed || to_me) {
      posp2p__obx_acked(p, &acked, &from, true);
    } else if (p->is_main) {
      /* Acks for broadcasts in our custody pass through on their way to
       * the originator: they end our per-recipient tracking too. */
      posp2p__obx_acked(p, &acked, &from, false);
      /* LEGACY-18: remember what a legacy device has acknowledged, keyed
       * like the duplicate filter (originator, message id), so that a
       * retransmission is acknowledged here instead of relayed again. */
      if (legacy) (void)posp2p__dedup_check_insert(p, &to, &acked, p->now, false, NULL, NULL);
      relay_directed(p, c, e, &blob, &to);
    }
    break;
  }
  case MT(ERROR):
    p->stats.errors_received++;
    if (legacy) posp2p__send_ack(p, c, e->from_device_id, e->message_id, p->now);
    if (!directed || to_me) {
      posp2p_peer_event ev = {.type = POSP2P_PEER_EV_ERROR_RECEIVED,
                              .conn = c->id,
                              .device = c->dev ? &c->dev->pub : NULL,
                              .msg = e,
                              .message_id = e->error->ref_message_id,
                              .code = POSP2P_ERR_REMOTE_ERROR,
                              .error_code = (int)e->error->code,
                              .requirement = e->error->requirement,
                              .text = e->error->description};
      posp2p__emit(p, &ev);
      posp2p__uuid ref;
      /* ACK-11 (ends retransmission) vs ACK-12 (QUEUE_FULL: keep going). */
      int code = e->error->code == EC(UNKNOWN_DEVICE)         ? POSP2P_ERR_UNKNOWN_DEVICE
                 : e->error->code == EC(DEVICE_OFFLINE)       ? POSP2P_ERR_DEVICE_OFFLINE
                 : e->error->code == EC(INVALID_MESSAGE)      ? POSP2P_ERR_REMOTE_ERROR
                 : e->error->code == EC(UNKNOWN_MESSAGE_TYPE) ? POSP2P_ERR_REMOTE_ERROR
                                                              : 0;
      if (code != 0 && posp2p__uuid_parse(e->error->ref_message_id, &ref))
        posp2p__obx_fail_mid(p, &ref, code);
    } else if (p->is_main) {
      relay_directed(p, c, e, &blob, &to);
    }
    break;
  default: {
    bool acked = posp2p__type_acked((int)e->message_type) || legacy;
    if (directed) {
      if (to_me)
        deliver_local(p, c, e, acked, true);
      else if (p->is_main)
        relay_directed(p, c, e, &blob, &to);
      else
        route_error(p, c, e, EC(UNKNOWN_DEVICE), REQ_ROUTE_UNKNOWN,
                    "this device does not relay; destination is not this device");
      (void)REQ_ROUTE_NOT_MINE;
    } else if (has_type(e)) {
      bool mine = (int)e->to_device_type == p->cfg.device_type;
      if (p->is_main)
        custody_fanout(p, c, e, &blob, mine, (int)e->to_device_type);
      else if (mine)
        deliver_local(p, c, e, acked, true);
    } else {
      if (p->is_main)
        custody_fanout(p, c, e, &blob, true, -1);
      else
        deliver_local(p, c, e, acked, true);
    }
    break;
  }
  }
  posp2p__blob_unref(p, blob);
}

/* ---- Application send -------------------------------------------------------------- */

typedef struct {
  posp2p__conn *c;
  posp2p__uuid rcpt;
} target;

typedef struct {
  target *tg;
  size_t *ntg;
  size_t cap;
} targets_ctx;

static void add_target(posp2p_peer *p, posp2p__conn *c, posp2p__device *d, void *ud) {
  (void)p;
  targets_ctx *tc = ud;
  if (*tc->ntg >= tc->cap) return;
  tc->tg[*tc->ntg].c = c;
  tc->tg[*tc->ntg].rcpt = d->key;
  (*tc->ntg)++;
}

int posp2p_peer_send(posp2p_peer *p, const posp2p_envelope *msg, uint64_t now_ms,
                     char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (p == NULL || msg == NULL) return POSP2P_ERR_INVAL;
  if (p->shutting_down) return POSP2P_ERR_SHUTDOWN;
  int t = (int)msg->message_type;
  if (t == MT(UNSPECIFIED) || t == MT(HELLO) || t == MT(GOODBYE) || t == MT(HEARTBEAT) ||
      t == MT(ACKNOWLEDGEMENT) || posp2p_message_type_name(t) == NULL)
    return POSP2P_ERR_INVAL;
  if (has_to(msg) && has_type(msg)) return POSP2P_ERR_INVAL;
  posp2p__uuid to;
  if (has_to(msg)) {
    if (!posp2p__uuid_parse(msg->to_device_id, &to)) return POSP2P_ERR_BAD_ID;
    if (memcmp(to.b, p->id.b, 16) == 0) return POSP2P_ERR_INVAL;
  }
  posp2p_envelope e = *msg;
  char mid[POSP2P_UUID_LEN + 1];
  if (msg->message_id == NULL || msg->message_id[0] == '\0') {
    uint8_t rnd[16];
    p->cb.rand(p, rnd, sizeof rnd, p->user_data);
    posp2p_uuid_format(rnd, mid);
  } else {
    posp2p__uuid m;
    if (!posp2p__uuid_parse(msg->message_id, &m)) return POSP2P_ERR_BAD_ID;
    posp2p__uuid_text(&m, mid);
  }
  e.message_id = mid;
  e.from_device_id = p->id_txt;
  if (e.timestamp_ms == 0) {
    uint64_t wall = posp2p__wall_ms(p, now_ms);
    e.timestamp_ms = (int64_t)(wall > INT64_MAX ? INT64_MAX : wall);
    e.timestamp_us = 0;
  }
  if (e.opt_priority_case != POSP2P__V2__ENVELOPE__OPT_PRIORITY_PRIORITY) {
    e.opt_priority_case = POSP2P__V2__ENVELOPE__OPT_PRIORITY_PRIORITY;
    e.priority = posp2p__type_default_priority(t);
  }
  posp2p_error err;
  int rc = posp2p_envelope_validate(&e, &err);
  if (rc != 0) return rc;

  POSP2P__ENTER(p, now_ms);
  posp2p__blob *blob = posp2p__env_pack(p, &e);
  target one;
  target *tg = &one;
  size_t ntg = 0;
  bool acked = posp2p__type_acked(t);
  posp2p__uuid mid_u;
  posp2p__uuid_parse(mid, &mid_u);
  if (blob == NULL) {
    rc = POSP2P_ERR_NOMEM;
    goto out;
  }
  if (has_to(&e)) {
    posp2p__device *d = posp2p__dev_find(p, &to);
    posp2p__conn *c = posp2p__route_conn_dial(p, &to, true);
    if (c == NULL) {
      rc = !p->is_main ? POSP2P_ERR_NO_ROUTE
           : d == NULL ? POSP2P_ERR_UNKNOWN_DEVICE
                       : POSP2P_ERR_DEVICE_OFFLINE;
      goto out;
    }
    one.c = c;
    one.rcpt = to;
    ntg = 1;
  } else {
    int filter = has_type(&e) ? (int)e.to_device_type : -1;
    posp2p__conn *mc = p->is_main ? NULL : posp2p__main_conn(p);
    if (mc != NULL) {
      one.c = mc;
      one.rcpt = mc->dev->key;
      ntg = 1;
    } else {
      /* Every connection (of the type), plus every legacy device reached
       * on a one-shot connection (at most one per registry entry). */
      cand_iter it;
      cand_begin(p, &it, filter);
      size_t n = (it.idx != NULL ? it.n : p->nconns) + p->ndevices;
      tg = n ? posp2p__alloc(p, n * sizeof *tg) : &one;
      if (tg == NULL) {
        cand_end(&it);
        tg = &one;
        rc = POSP2P_ERR_NOMEM;
        goto out;
      }
      for (posp2p__conn *c; (c = cand_next(&it)) != NULL;) {
        if (c->dead || c->state != POSP2P_CONN_READY || c->dev == NULL || c->dev->conn != c)
          continue;
        if (filter >= 0 && c->dev->pub.type != filter) continue;
        tg[ntg].c = c;
        tg[ntg].rcpt = c->dev->key;
        ntg++;
      }
      cand_end(&it);
      if (p->is_main) {
        targets_ctx tc = {tg, &ntg, n};
        each_dialled(p, NULL, filter, add_target, &tc);
      }
      if (ntg == 0 && !p->is_main) {
        rc = POSP2P_ERR_NO_ROUTE;
        goto out;
      }
    }
  }
  /* Accept the message whole or not at all: check every target first. */
  for (size_t i = 0; i < ntg; i++) {
    posp2p__conn *c = tg[i].c;
    if (c->wire != POSP2P_PEER_WIRE_LEGACY && blob->len > c->peer_max_frame) {
      rc = POSP2P_ERR_FRAME_TOO_LARGE;
      goto out;
    }
    if (!posp2p__conn_has_room(p, c, posp2p__conn_frame_size(c, blob->len), Q_DATA)) {
      backpressure(p, c);
      rc = POSP2P_ERR_QUEUE_FULL;
      goto out;
    }
  }
  if (acked) {
    uint8_t prio = (uint8_t)e.priority;
    uint32_t origin = origin_hash(p->id_txt);
    for (size_t i = 0; i < ntg; i++) {
      rc = posp2p__obx_add(p, &mid_u, &tg[i].rcpt, blob, origin, prio, false, 1, false, true,
                           now_ms, NULL);
      if (rc != 0) {
        /* Roll back the entries already made for this message. */
        for (posp2p__obx *o = p->obx_tail, *prev; o != NULL; o = prev) {
          prev = o->prev;
          if (memcmp(o->mid.b, mid_u.b, 16) == 0) posp2p__obx_remove(p, o, true);
        }
        goto out;
      }
    }
  }
  for (size_t i = 0; i < ntg; i++) {
    int r2 = posp2p__conn_send_env(p, tg[i].c, &e, blob, Q_DATA);
    if (r2 != 0 && acked) {
      /* Room was checked; only a legacy encoding failure or NOMEM gets
       * here. The outbox entry retransmits later. */
      posp2p__obx *o = NULL;
      for (o = p->obx_tail; o != NULL; o = o->prev)
        if (memcmp(o->mid.b, mid_u.b, 16) == 0 && memcmp(o->rcpt.b, tg[i].rcpt.b, 16) == 0)
          break;
      if (o != NULL) {
        o->need_send = true;
        o->attempts = 0;
      }
    }
    if (r2 != 0 && !acked && ntg == 1) rc = r2;
  }
  if (message_id_out != NULL) memcpy(message_id_out, mid, sizeof mid);
out:
  if (tg != &one) posp2p__free(p, tg);
  posp2p__blob_unref(p, blob);
  POSP2P__LEAVE(p);
  return rc;
}
