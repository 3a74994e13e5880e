/* The control channel of posp2p-peer (brief: control-protocol.md): JSON
 * command lines on stdin, replies and events as JSON lines on stdout. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define CONTROL_MAX_LINE (16u * 1024u * 1024u)

/* ---- Output ---------------------------------------------------------------- */

void control_emit(pdaemon *d, json_t *ev) {
  if (ev == NULL) return;
  if (!d->ready_printed) {
    json_array_append_new(d->held_events, ev);
    return;
  }
  json_print_line(ev);
  json_decref(ev);
}

void control_flush_held(pdaemon *d) {
  size_t i;
  json_t *ev;
  json_array_foreach(d->held_events, i, ev) json_print_line(ev);
  json_array_clear(d->held_events);
}

static json_t *reply_new(const char *cmd, json_t *req, bool ok) {
  json_t *o = json_object();
  json_object_set_new(o, "reply", cmd ? json_string(cmd) : json_null());
  json_object_set(o, "req", req ? req : json_null());
  json_object_set_new(o, "ok", json_boolean(ok));
  return o;
}

/* extra (may be NULL) is an object whose members are appended; stolen. */
static void reply_ok(const char *cmd, json_t *req, json_t *extra) {
  json_t *o = reply_new(cmd, req, true);
  if (extra != NULL) {
    json_object_update(o, extra);
    json_decref(extra);
  }
  json_print_line(o);
  json_decref(o);
}

static void reply_err(const char *cmd, json_t *req, int code, const char *fmt,
                      ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void reply_err(const char *cmd, json_t *req, int code, const char *fmt,
                      ...) {
  char text[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  json_t *o = reply_new(cmd, req, false);
  json_object_set_new(o, "error", json_string(posp2p_uv_err_name(code)));
  json_object_set_new(o, "text", json_string(text));
  json_print_line(o);
  json_decref(o);
}

/* ---- Sent orders (seed getSentOrders) ---------------------------------------
 * One record per order sent. "recipients" are the devices the engine
 * tracks for it (its outbox entries right after the send: the destination,
 * or for a broadcast / by-type order every matching connected device at the
 * main POS and the main POS itself at a client, ACK-13, ACK-16); each ends
 * in "acked_by" or "failed", and "pending" lists those still waiting. The
 * state follows from the three lists (order_state). */

static bool id_in(json_t *arr, const char *id) {
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) if (strcmp(json_string_value(v), id) == 0) return true;
  return false;
}

static void id_remove(json_t *arr, const char *id) {
  for (size_t i = 0; i < json_array_size(arr); i++)
    if (strcmp(json_string_value(json_array_get(arr, i)), id) == 0) {
      json_array_remove(arr, i);
      return;
    }
}

/* pending: nobody answered yet; partial: some acknowledged, others still
 * pending; acked: every recipient acknowledged; failed: nothing pending and
 * at least one recipient failed (acked_by says who got it anyway);
 * no_recipients: there was nobody to send it to (a broadcast or by-type
 * order while no matching device was connected). */
static void order_state(json_t *o) {
  size_t pending = json_array_size(json_object_get(o, "pending"));
  size_t acked = json_array_size(json_object_get(o, "acked_by"));
  size_t failed = json_array_size(json_object_get(o, "failed"));
  const char *st = pending ? (acked ? "partial" : "pending")
                   : failed ? "failed"
                   : acked  ? "acked"
                            : "no_recipients";
  json_object_set_new(o, "state", json_string(st));
}

static json_t *order_record(pdaemon *d, const char *mid, const char *order_id,
                            const char *to, int to_type, bool restored) {
  const char *tt = to_type ? posp2p_device_type_name(to_type) : NULL;
  json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:s, s:[], s:[], s:[], s:[], s:I, s:b}",
                        "message_id", mid, "order_id", order_id ? order_id : "",
                        "to", to ? json_string(to) : json_null(), "to_type",
                        tt ? json_string(tt) : json_null(), "state", "pending",
                        "recipients", "pending", "acked_by", "failed", "sent_t_ms",
                        (json_int_t)daemon_t_ms(d), "restored", restored);
  if (o != NULL) json_object_set_new(d->orders, mid, o);
  return o;
}

static void order_add_recipient(json_t *o, const char *id) {
  if (id_in(json_object_get(o, "recipients"), id)) return;
  json_array_append_new(json_object_get(o, "recipients"), json_string(id));
  json_array_append_new(json_object_get(o, "pending"), json_string(id));
}

/* Right after the send: the recipients are the engine's outbox entries. */
static void order_sent(pdaemon *d, json_t *o, const char *mid) {
  posp2p_peer *p = posp2p_uv_peer_engine(d->up);
  size_t n = posp2p_peer_outbox_recipients(p, mid, NULL, 0);
  const char **ids = n ? calloc(n, sizeof(*ids)) : NULL;
  if (ids != NULL) {
    n = posp2p_peer_outbox_recipients(p, mid, ids, n);
    for (size_t i = 0; i < n; i++) order_add_recipient(o, ids[i]);
  }
  free(ids);
  order_state(o);
}

void control_order_restored(const posp2p_peer_outbox_rec *rec,
                            const posp2p_envelope *env, void *user_data) {
  pdaemon *d = user_data;
  if (env->message_type != POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD ||
      env->payload_case != POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD || rec->custody)
    return;
  /* One outbox record per recipient still pending. */
  json_t *o = json_object_get(d->orders, rec->message_id);
  if (o == NULL) {
    const char *to = env->opt_to_device_id_case ? env->to_device_id : NULL;
    int tt = env->opt_to_device_type_case ? (int)env->to_device_type : 0;
    o = order_record(d, rec->message_id, env->order_forward->order_id, to, tt, true);
    if (o == NULL) return;
  }
  order_add_recipient(o, rec->recipient_id);
  order_state(o);
}

static void order_update(pdaemon *d, const posp2p_peer_event *ev, bool acked) {
  json_t *o = json_object_get(d->orders, ev->message_id);
  if (o == NULL || ev->custody) return;
  const char *id = ev->device_id ? ev->device_id : "";
  json_t *done = json_object_get(o, acked ? "acked_by" : "failed");
  if (!id_in(done, id)) json_array_append_new(done, json_string(id));
  id_remove(json_object_get(o, "pending"), id);
  json_object_set_new(o, "attempts", json_integer(ev->attempts));
  order_state(o);
}

/* ---- Events ------------------------------------------------------------------- */

static void add_message(pdaemon *d, json_t *o, const posp2p_envelope *m) {
  const char *type = posp2p_message_type_name((int)m->message_type);
  json_object_set_new(o, "type", json_string(type ? type : "unknown"));
  json_object_set_new(o, "message_id", json_string(m->message_id));
  json_object_set_new(o, "from", json_string(m->from_device_id));
  json_object_set_new(o, "to", m->opt_to_device_id_case
                                   ? json_string(m->to_device_id)
                                   : json_null());
  if (m->opt_to_device_type_case) {
    const char *tt = posp2p_device_type_name((int)m->to_device_type);
    json_object_set_new(o, "to_type", tt ? json_string(tt) : json_null());
  }
  json_object_set_new(o, "timestamp_ms", json_integer(m->timestamp_ms));
  json_object_set_new(o, "priority",
                      json_integer(posp2p_envelope_priority(m)));
  if (m->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS)
    json_object_set_new(o, "sequence",
                        json_integer((json_int_t)m->order_status->sequence));
  posp2p_error err;
  memset(&err, 0, sizeof(err));
  json_t *pl = json_legacy_payload(m, &d->legacy, &err);
  if (pl != NULL) {
    json_object_set_new(o, "payload", pl);
  } else {
    json_object_set_new(o, "payload", json_null());
    json_object_set_new(o, "payload_error", json_string(err.message));
  }
}

void control_on_event(pdaemon *d, const posp2p_peer_event *ev) {
  json_t *o = json_object();
  json_object_set_new(o, "event", json_string(posp2p_peer_event_name(ev->type)));
  json_object_set_new(o, "t_ms", json_integer((json_int_t)daemon_t_ms(d)));
  if (ev->conn != 0) json_object_set_new(o, "conn", json_integer((json_int_t)ev->conn));
  if (ev->device != NULL) json_object_set_new(o, "device", json_device(d, ev->device));
  switch (ev->type) {
  case POSP2P_PEER_EV_DEVICE:
    json_object_set_new(o, "prev_status",
                        json_string(posp2p_dev_status_name(ev->prev_status)));
    break;
  case POSP2P_PEER_EV_MESSAGE:
  case POSP2P_PEER_EV_ERROR_RECEIVED:
  case POSP2P_PEER_EV_STATUS_STALE:
    if (ev->msg != NULL) add_message(d, o, ev->msg);
    break;
  case POSP2P_PEER_EV_ACK:
  case POSP2P_PEER_EV_DELIVERY_FAILED:
    json_object_set_new(o, "message_id", json_string(ev->message_id ? ev->message_id : ""));
    json_object_set_new(o, "device_id", json_string(ev->device_id ? ev->device_id : ""));
    json_object_set_new(o, "attempts", json_integer(ev->attempts));
    json_object_set_new(o, "custody", json_boolean(ev->custody));
    if (ev->message_id != NULL)
      order_update(d, ev, ev->type == POSP2P_PEER_EV_ACK);
    break;
  case POSP2P_PEER_EV_VIOLATION: {
    const char *ec = ev->error_code ? posp2p_error_code_name(ev->error_code) : NULL;
    json_object_set_new(o, "requirement", json_string(ev->requirement ? ev->requirement : ""));
    json_object_set_new(o, "error_code", ec ? json_string(ec) : json_null());
    json_object_set_new(o, "closing", json_boolean(ev->closing));
    if (ev->message_id != NULL && ev->message_id[0] != '\0')
      json_object_set_new(o, "message_id", json_string(ev->message_id));
    break;
  }
  case POSP2P_PEER_EV_DATAGRAM_IGNORED: {
    char a[22];
    posp2p_uv_addr_format(&ev->from, a);
    json_object_set_new(o, "from", json_string(a));
    break;
  }
  case POSP2P_PEER_EV_SHUTDOWN_DONE: d->shutdown_done_printed = true; break;
  default: break;
  }
  if (ev->code != 0) json_object_set_new(o, "code", json_string(posp2p_uv_err_name(ev->code)));
  if (ev->text != NULL && ev->text[0] != '\0')
    json_object_set_new(o, "text", json_string(ev->text));
  if (d->o.log_level >= LOG_DEBUG) {
    char *s = json_text(o, NULL);
    daemon_log(d, LOG_DEBUG, "event %s", s ? s : "?");
    free(s);
  }
  control_emit(d, o);
}

/* ---- Commands ------------------------------------------------------------------ */

/* Optional string member: NULL if absent or null; *bad set if another type. */
static const char *opt_str(json_t *cmd, const char *key, bool *bad) {
  json_t *v = json_object_get(cmd, key);
  if (v == NULL || json_is_null(v)) return NULL;
  if (!json_is_string(v)) {
    *bad = true;
    return NULL;
  }
  return json_string_value(v);
}

static int next_seq(pdaemon *d, const char *order_id, uint64_t *seq) {
  int64_t v = 0;
  if (d->store != NULL) {
    char key[600];
    snprintf(key, sizeof(key), "status_seq:%s", order_id);
    int r = posp2p_store_kv_get(d->store, key, &v);
    if (r < 0) return r;
    r = posp2p_store_kv_put(d->store, key, v + 1);
    if (r < 0) return r;
  } else {
    json_t *cur = json_object_get(d->seqs, order_id);
    v = cur ? json_integer_value(cur) : 0;
    json_object_set_new(d->seqs, order_id, json_integer(v + 1));
  }
  *seq = (uint64_t)v + 1;
  return 0;
}

/* Resolve "to" / "to_type" of a command. Returns false after replying. */
static bool destination(const char *cmd_name, json_t *req, json_t *cmd,
                        const char **to, int *to_type) {
  bool bad = false;
  *to = opt_str(cmd, "to", &bad);
  const char *tt = opt_str(cmd, "to_type", &bad);
  *to_type = 0;
  if (bad) {
    reply_err(cmd_name, req, POSP2P_ERR_INVAL, "\"to\" and \"to_type\" must be strings or null");
    return false;
  }
  if (*to != NULL && tt != NULL) {
    reply_err(cmd_name, req, POSP2P_ERR_INVAL, "\"to\" and \"to_type\" are mutually exclusive");
    return false;
  }
  if (*to != NULL && !posp2p_uuid_valid(*to)) {
    reply_err(cmd_name, req, POSP2P_ERR_BAD_ID, "\"to\": '%s' is not a UUID", *to);
    return false;
  }
  if (tt != NULL) {
    *to_type = posp2p_device_type_from_name(tt, strlen(tt));
    if (*to_type <= 0) {
      reply_err(cmd_name, req, POSP2P_ERR_INVAL,
                "\"to_type\": unknown device type '%s' (expected mainPOS, "
                "orderingTablet, secondaryPOS, kds or customerDisplay)", tt);
      return false;
    }
  }
  return true;
}

/* Convert a legacy-shaped payload and send it. On success replies with
 * "message_id" (and records orders); on failure replies with the error. */
static void send_legacy(pdaemon *d, const char *cmd_name, json_t *req,
                        const char *type, json_t *payload, const char *to,
                        int to_type, const char *seq_order_id) {
  posp2p_error err;
  memset(&err, 0, sizeof(err));
  posp2p_envelope *e = NULL;
  int r = json_envelope_from_legacy(d, type, payload, to, to_type, &e, &err);
  if (r != 0) {
    reply_err(cmd_name, req, r, "payload: %s", err.message[0] ? err.message : posp2p_strerror(r));
    return;
  }
  if (seq_order_id != NULL && e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS) {
    uint64_t seq = 0;
    r = next_seq(d, seq_order_id, &seq);
    if (r != 0) {
      posp2p_envelope_free(e, NULL);
      reply_err(cmd_name, req, r, "%s", posp2p_store_errmsg(d->store));
      return;
    }
    e->order_status->sequence = seq;
  }
  char mid[POSP2P_UUID_LEN + 1] = "";
  r = posp2p_uv_peer_send(d->up, e, mid);
  if (r != 0) {
    posp2p_envelope_free(e, NULL);
    reply_err(cmd_name, req, r, "send: %s%s%s", posp2p_uv_strerror(r),
              r == POSP2P_ERR_STORE && d->store ? ": " : "",
              r == POSP2P_ERR_STORE && d->store ? posp2p_store_errmsg(d->store) : "");
    return;
  }
  json_t *extra = json_pack("{s:s}", "message_id", mid);
  if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD) {
    json_t *o = order_record(d, mid, e->order_forward->order_id, to, to_type, false);
    if (o != NULL) order_sent(d, o, mid);
    json_object_set_new(extra, "order_id", json_string(e->order_forward->order_id));
  }
  if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS)
    json_object_set_new(extra, "sequence",
                        json_integer((json_int_t)e->order_status->sequence));
  posp2p_envelope_free(e, NULL);
  reply_ok(cmd_name, req, extra);
}

static void discover_close_cb(uv_handle_t *h) {
  discover_req *q = h->data;
  json_decref(q->req);
  free(q);
}

static void discover_unlink(discover_req *q) {
  pdaemon *d = q->d;
  if (q->prev) q->prev->next = q->next;
  else d->discovers = q->next;
  if (q->next) q->next->prev = q->prev;
}

static void discover_fire(uv_timer_t *t) {
  discover_req *q = t->data;
  pdaemon *d = q->d;
  discover_unlink(q);
  if (!d->closed) reply_ok("discover", q->req, json_pack("{s:o}", "devices", json_devices(d)));
  uv_close((uv_handle_t *)&q->timer, discover_close_cb);
}

void control_close_discovers(pdaemon *d) {
  while (d->discovers != NULL) {
    discover_req *q = d->discovers;
    discover_unlink(q);
    uv_close((uv_handle_t *)&q->timer, discover_close_cb);
  }
}

static void cmd_discover(pdaemon *d, json_t *req, json_t *cmd) {
  json_t *tv = json_object_get(cmd, "timeout_ms");
  json_int_t timeout = 5000;
  if (tv != NULL && !json_is_null(tv)) {
    if (!json_is_integer(tv) || json_integer_value(tv) < 0 ||
        json_integer_value(tv) > 3600000) {
      reply_err("discover", req, POSP2P_ERR_INVAL, "\"timeout_ms\" must be an integer 0..3600000");
      return;
    }
    timeout = json_integer_value(tv);
  }
  int r = posp2p_uv_peer_discover(d->up);
  if (r != 0) {
    reply_err("discover", req, r, "discover: %s", posp2p_uv_strerror(r));
    return;
  }
  discover_req *q = calloc(1, sizeof(*q));
  if (q == NULL || uv_timer_init(d->loop, &q->timer) != 0) {
    free(q);
    reply_err("discover", req, POSP2P_ERR_NOMEM, "out of memory");
    return;
  }
  q->d = d;
  q->req = json_incref(req ? req : json_null());
  q->timer.data = q;
  q->next = d->discovers;
  if (d->discovers) d->discovers->prev = q;
  d->discovers = q;
  uv_timer_start(&q->timer, discover_fire, (uint64_t)timeout, 0);
}

static void cmd_connect(pdaemon *d, json_t *req, json_t *cmd) {
  bool bad = false;
  const char *addr = opt_str(cmd, "addr", &bad);
  const char *wire = opt_str(cmd, "wire", &bad);
  const char *dev = opt_str(cmd, "device_id", &bad);
  json_t *pv = json_object_get(cmd, "port");
  posp2p_addr to = {0, 0};
  if (bad || addr == NULL || posp2p_uv_ip_parse(addr, &to.ip) != 0) {
    reply_err("connect", req, POSP2P_ERR_INVAL, "\"addr\" must be an IPv4 address");
    return;
  }
  if (!json_is_integer(pv) || json_integer_value(pv) < 1 || json_integer_value(pv) > 65535) {
    reply_err("connect", req, POSP2P_ERR_INVAL, "\"port\" must be an integer 1..65535");
    return;
  }
  to.port = (uint16_t)json_integer_value(pv);
  posp2p_peer_wire w = POSP2P_PEER_WIRE_V2;
  if (wire != NULL) {
    if (strcmp(wire, "legacy") == 0) w = POSP2P_PEER_WIRE_LEGACY;
    else if (strcmp(wire, "v2") != 0) {
      reply_err("connect", req, POSP2P_ERR_INVAL, "\"wire\": expected v2 or legacy, got '%s'", wire);
      return;
    }
  }
  if (dev != NULL && !posp2p_uuid_valid(dev)) {
    reply_err("connect", req, POSP2P_ERR_BAD_ID, "\"device_id\": '%s' is not a UUID", dev);
    return;
  }
  posp2p_conn_id conn = 0;
  int r = posp2p_uv_peer_connect(d->up, &to, w, dev, &conn);
  if (r != 0) {
    reply_err("connect", req, r, "connect %s:%u: %s", addr, (unsigned)to.port,
              posp2p_uv_strerror(r));
    return;
  }
  reply_ok("connect", req, json_pack("{s:I}", "conn", (json_int_t)conn));
}

static void cmd_disconnect(pdaemon *d, json_t *req, json_t *cmd) {
  bool bad = false;
  json_t *cv = json_object_get(cmd, "conn");
  const char *reason = opt_str(cmd, "reason", &bad);
  if (!json_is_integer(cv) || bad) {
    reply_err("disconnect", req, POSP2P_ERR_INVAL, "\"conn\" must be a connection id");
    return;
  }
  int r = posp2p_uv_peer_conn_close(d->up, (posp2p_conn_id)json_integer_value(cv),
                                    reason ? reason : "closed by control");
  if (r != 0) reply_err("disconnect", req, r, "%s", posp2p_uv_strerror(r));
  else reply_ok("disconnect", req, NULL);
}

static void cmd_send(pdaemon *d, json_t *req, json_t *cmd) {
  const char *to;
  int to_type;
  bool bad = false;
  if (!destination("send", req, cmd, &to, &to_type)) return;
  const char *type = opt_str(cmd, "type", &bad);
  json_t *payload = json_object_get(cmd, "payload");
  if (bad || type == NULL) {
    reply_err("send", req, POSP2P_ERR_INVAL, "\"type\" (a message type name) is required");
    return;
  }
  if (payload != NULL && !json_is_object(payload) && !json_is_null(payload)) {
    reply_err("send", req, POSP2P_ERR_INVAL, "\"payload\" must be an object");
    return;
  }
  send_legacy(d, "send", req, type, json_is_object(payload) ? payload : NULL, to, to_type, NULL);
}

static void cmd_send_order(pdaemon *d, json_t *req, json_t *cmd) {
  const char *to;
  int to_type;
  if (!destination("send_order", req, cmd, &to, &to_type)) return;
  json_t *order = json_object_get(cmd, "order");
  if (!json_is_object(order)) {
    reply_err("send_order", req, POSP2P_ERR_INVAL,
              "\"order\" (a legacy orderForward payload object) is required");
    return;
  }
  send_legacy(d, "send_order", req, "orderForward", order, to, to_type, NULL);
}

static void cmd_send_status(pdaemon *d, json_t *req, json_t *cmd) {
  const char *to;
  int to_type;
  bool bad = false;
  if (!destination("send_status", req, cmd, &to, &to_type)) return;
  const char *order_id = opt_str(cmd, "order_id", &bad);
  const char *status = opt_str(cmd, "status", &bad);
  const char *reason = opt_str(cmd, "reason", &bad);
  json_t *eta = json_object_get(cmd, "estimated_time");
  if (bad || order_id == NULL || status == NULL ||
      (eta != NULL && !json_is_null(eta) && !json_is_integer(eta))) {
    reply_err("send_status", req, POSP2P_ERR_INVAL,
              "\"order_id\" and \"status\" strings are required; \"reason\" "
              "string and \"estimated_time\" integer seconds are optional");
    return;
  }
  if (posp2p_order_status_from_name(status, strlen(status)) < 0) {
    reply_err("send_status", req, POSP2P_ERR_INVAL,
              "\"status\": unknown order status '%s'", status);
    return;
  }
  json_t *payload = json_pack("{s:s, s:s, s:o, s:O}", "orderId", order_id,
                              "newStatus", status, "statusReason",
                              reason ? json_string(reason) : json_null(),
                              "estimatedTime", eta ? eta : json_null());
  send_legacy(d, "send_status", req, "orderStatus", payload, to, to_type, order_id);
  json_decref(payload);
}

static void cmd_cancel(pdaemon *d, json_t *req, json_t *cmd) {
  const char *to;
  int to_type;
  bool bad = false;
  if (!destination("cancel", req, cmd, &to, &to_type)) return;
  const char *order_id = opt_str(cmd, "order_id", &bad);
  const char *reason = opt_str(cmd, "reason", &bad);
  json_t *refund = json_object_get(cmd, "refund");
  if (bad || order_id == NULL || (refund != NULL && !json_is_boolean(refund))) {
    reply_err("cancel", req, POSP2P_ERR_INVAL,
              "\"order_id\" string is required; \"reason\" string and "
              "\"refund\" bool are optional");
    return;
  }
  json_t *payload = json_pack("{s:s, s:s, s:b}", "orderId", order_id, "reason",
                              reason ? reason : "", "refund",
                              refund ? json_is_true(refund) : 0);
  send_legacy(d, "cancel", req, "orderCancel", payload, to, to_type, NULL);
  json_decref(payload);
}

static json_t *stats_json(pdaemon *d) {
  posp2p_peer *p = posp2p_uv_peer_engine(d->up);
  const posp2p_peer_stats *s = posp2p_peer_stats_get(p);
  const posp2p_uv_stats *u = posp2p_uv_peer_stats(d->up);
#define U(x) (json_int_t)(x)
  json_t *o = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
      "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
      "frames_in", U(s->frames_in), "frames_out", U(s->frames_out),
      "bytes_in", U(s->bytes_in), "bytes_out", U(s->bytes_out), "delivered",
      U(s->delivered), "duplicates", U(s->duplicates), "acks_sent",
      U(s->acks_sent), "acks_received", U(s->acks_received), "retransmissions",
      U(s->retransmissions), "delivery_failed", U(s->delivery_failed),
      "relayed", U(s->relayed), "errors_sent", U(s->errors_sent),
      "errors_received", U(s->errors_received), "violations", U(s->violations),
      "heartbeats_sent", U(s->heartbeats_sent), "heartbeats_received",
      U(s->heartbeats_received), "datagrams_in", U(s->datagrams_in),
      "datagrams_out", U(s->datagrams_out), "datagrams_ignored",
      U(s->datagrams_ignored), "datagrams_own", U(s->datagrams_own),
      "disc_rate_limited", U(s->disc_rate_limited), "status_stale",
      U(s->status_stale), "outbox", U(posp2p_peer_outbox_count(p)));
  if (o == NULL) return json_object();
  json_object_set_new(o, "connections", json_integer(U(posp2p_peer_conn_count(p))));
  json_object_set_new(o, "devices", json_integer(U(posp2p_peer_device_count(p))));
  json_object_set_new(o, "memory", json_integer(U(posp2p_peer_memory(p))));
  json_t *t = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "accepted",
                        U(u->accepted), "connects", U(u->connects),
                        "connect_failed", U(u->connect_failed), "read_errors",
                        U(u->read_errors), "writes", U(u->writes),
                        "datagrams_sent", U(u->datagrams_sent),
                        "datagrams_dropped", U(u->datagrams_dropped),
                        "datagrams_received", U(u->datagrams_received));
  if (t != NULL) json_object_set_new(o, "transport", t);
#undef U
  return o;
}

static void handle_line(pdaemon *d, const char *line, size_t len) {
  json_error_t jerr;
  json_t *cmd = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (cmd == NULL || !json_is_object(cmd)) {
    reply_err(NULL, NULL, POSP2P_ERR_JSON_SYNTAX, "not a JSON object: %s",
              cmd ? "another JSON value" : jerr.text);
    json_decref(cmd);
    return;
  }
  json_t *req = json_object_get(cmd, "req");
  json_t *cv = json_object_get(cmd, "cmd");
  const char *name = json_is_string(cv) ? json_string_value(cv) : NULL;
  if (name == NULL) {
    reply_err(NULL, req, POSP2P_ERR_INVAL, "missing \"cmd\"");
  } else if (d->shutting_down && strcmp(name, "shutdown") != 0 &&
             strcmp(name, "devices") != 0 && strcmp(name, "stats") != 0 &&
             strcmp(name, "orders") != 0) {
    reply_err(name, req, POSP2P_ERR_SHUTDOWN, "shutting down");
  } else if (strcmp(name, "discover") == 0) {
    cmd_discover(d, req, cmd);
  } else if (strcmp(name, "connect") == 0) {
    cmd_connect(d, req, cmd);
  } else if (strcmp(name, "disconnect") == 0) {
    cmd_disconnect(d, req, cmd);
  } else if (strcmp(name, "send") == 0) {
    cmd_send(d, req, cmd);
  } else if (strcmp(name, "send_order") == 0) {
    cmd_send_order(d, req, cmd);
  } else if (strcmp(name, "send_status") == 0) {
    cmd_send_status(d, req, cmd);
  } else if (strcmp(name, "cancel") == 0) {
    cmd_cancel(d, req, cmd);
  } else if (strcmp(name, "devices") == 0) {
    reply_ok(name, req, json_pack("{s:o}", "devices", json_devices(d)));
  } else if (strcmp(name, "orders") == 0) {
    json_t *a = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(d->orders, k, v) json_array_append(a, v);
    reply_ok(name, req, json_pack("{s:o}", "orders", a));
  } else if (strcmp(name, "stats") == 0) {
    reply_ok(name, req, json_pack("{s:o}", "stats", stats_json(d)));
  } else if (strcmp(name, "shutdown") == 0) {
    bool bad = false;
    const char *reason = opt_str(cmd, "reason", &bad);
    reply_ok(name, req, NULL);
    daemon_begin_shutdown(d, reason ? reason : "shutdown");
  } else {
    reply_err(name, req, POSP2P_ERR_INVAL,
              "unknown command '%s' (expected discover, connect, disconnect, "
              "send, send_order, send_status, cancel, devices, orders, stats "
              "or shutdown)",
              name);
  }
  json_decref(cmd);
}

/* ---- Reading stdin ------------------------------------------------------------- */

static void feed(pdaemon *d, const char *data, size_t n) {
  while (n > 0) {
    const char *nl = memchr(data, '\n', n);
    size_t take = nl ? (size_t)(nl - data) : n;
    if (!d->in_discarding) {
      if (d->in_len + take > CONTROL_MAX_LINE) {
        d->in_discarding = true;
        d->in_len = 0;
        reply_err(NULL, NULL, POSP2P_ERR_LINE_TOO_LONG,
                  "command line longer than %u bytes ignored", CONTROL_MAX_LINE);
      } else {
        if (d->in_len + take > d->in_cap) {
          size_t nc = d->in_cap ? d->in_cap : 4096;
          while (nc < d->in_len + take) nc *= 2;
          char *nb = realloc(d->in_buf, nc);
          if (nb == NULL) {
            d->in_discarding = true;
            d->in_len = 0;
            reply_err(NULL, NULL, POSP2P_ERR_NOMEM, "out of memory reading a command");
            continue;
          }
          d->in_buf = nb;
          d->in_cap = nc;
        }
        memcpy(d->in_buf + d->in_len, data, take);
        d->in_len += take;
      }
    }
    if (nl == NULL) return;
    if (!d->in_discarding) {
      size_t len = d->in_len;
      if (len > 0 && d->in_buf[len - 1] == '\r') len--;
      d->in_len = 0;
      bool blank = true;
      for (size_t i = 0; i < len && blank; i++)
        if (d->in_buf[i] != ' ' && d->in_buf[i] != '\t') blank = false;
      if (!blank) handle_line(d, d->in_buf, len);
    }
    d->in_discarding = false;
    d->in_len = 0;
    data = nl + 1;
    n -= take + 1;
  }
}

static void in_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  char *p = malloc(65536);
  *buf = uv_buf_init(p, p ? 65536 : 0);
}

static void in_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pdaemon *d = s->data;
  if (nread > 0) feed(d, buf->base, (size_t)nread);
  free(buf->base);
  if (nread < 0) {
    if (nread != UV_EOF)
      daemon_log(d, LOG_WARN, "control: reading stdin: %s", uv_strerror((int)nread));
    else
      daemon_log(d, LOG_INFO, "control: end of input (the device keeps running)");
    control_close(d);
  }
}

static char file_buf[65536];
static void file_read_cb(uv_fs_t *req);

static void file_read_next(pdaemon *d) {
  uv_buf_t b = uv_buf_init(file_buf, sizeof(file_buf));
  d->in_fs.data = d;
  if (uv_fs_read(d->loop, &d->in_fs, 0, &b, 1, -1, file_read_cb) == 0)
    d->in_fs_busy = true;
}

static void file_read_cb(uv_fs_t *req) {
  pdaemon *d = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  d->in_fs_busy = false;
  if (n > 0) {
    feed(d, file_buf, (size_t)n);
    if (!d->closed && d->in_is_file) file_read_next(d);
    return;
  }
  d->in_is_file = false;
}

int control_open(pdaemon *d) {
  uv_handle_type t = uv_guess_handle(0);
  int r;
  if (t == UV_TTY) {
    r = uv_tty_init(d->loop, &d->in.tty, 0, 0);
  } else if (t == UV_NAMED_PIPE || t == UV_TCP || t == UV_UDP) {
    r = uv_pipe_init(d->loop, &d->in.pipe, 0);
    if (r == 0) {
      r = uv_pipe_open(&d->in.pipe, 0);
      if (r != 0) uv_close((uv_handle_t *)&d->in.pipe, NULL);
    }
  } else if (t == UV_FILE) {
    d->in_is_file = true;
    file_read_next(d);
    return 0;
  } else {
    daemon_log(d, LOG_WARN, "control: stdin is not readable; control channel disabled");
    return 0;
  }
  if (r != 0) {
    daemon_log(d, LOG_WARN, "control: cannot use stdin (%s); control channel disabled",
               uv_strerror(r));
    return 0;
  }
  d->in.pipe.data = d;
  d->in_open = true;
  r = uv_read_start((uv_stream_t *)&d->in.pipe, in_alloc, in_read);
  if (r != 0) {
    daemon_log(d, LOG_WARN, "control: reading stdin: %s", uv_strerror(r));
    control_close(d);
  }
  return 0;
}

void control_close(pdaemon *d) {
  d->in_is_file = false;
  if (d->in_fs_busy) uv_cancel((uv_req_t *)&d->in_fs);
  if (!d->in_open) return;
  d->in_open = false;
  uv_read_stop((uv_stream_t *)&d->in.pipe);
  uv_close((uv_handle_t *)&d->in.pipe, NULL);
}
