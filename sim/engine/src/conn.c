/* Connections: lifecycle, the bounded outbound queue, the handshake on both
 * wires, framing of received bytes, and per-connection timers.
 *
 * Lifetime: a connection is created by posp2p_peer_conn_accept or
 * posp2p_peer_connect and lives until the transport calls
 * posp2p_peer_conn_closed (or a connect request fails synchronously). The
 * struct is then moved to the zombie list and freed when the outermost
 * public call returns, so pointers held by callers higher up the stack (a
 * frame loop, a tick loop) stay valid while callbacks run. */
#include <stdio.h>
#include <string.h>

#include "peer_int.h"
#include "mutant.h"

static uint32_t conn_hash_key(posp2p_conn_id id) {
  return posp2p__hash_bytes(&id, sizeof id);
}
static uint32_t conn_hash(const void *e) {
  return conn_hash_key(((const posp2p__conn *)e)->id);
}
static bool conn_eq(const void *e, const void *key) {
  return ((const posp2p__conn *)e)->id == *(const posp2p_conn_id *)key;
}

#if POSP2P_MUTANT(wedge_on_oversize)
/* Process-wide, which is enough for a daemon that runs one engine. */
static bool mutant_wedged;
#endif

posp2p__conn *posp2p__conn_find(const posp2p_peer *p, posp2p_conn_id id) {
  posp2p__conn *c = posp2p__htab_find(&p->conn_by_id, conn_hash_key(id), &id, conn_eq);
  return c != NULL && !c->dead ? c : NULL;
}

static posp2p__conn *conn_new(posp2p_peer *p, const posp2p_addr *remote,
                              bool outgoing, uint64_t now) {
  posp2p__conn *c = posp2p__calloc(p, sizeof *c);
  if (c == NULL) return NULL;
  c->id = p->next_conn_id++;
  if (posp2p__htab_insert(&p->conn_by_id, &p->alloc, conn_hash_key(c->id), c, conn_hash) != 0) {
    posp2p__free(p, c);
    return NULL;
  }
  c->remote = *remote;
  c->outgoing = outgoing;
  c->created_ms = POSP2P_MUTANT(no_handshake_deadline) ? now + 3600000u : now;
  c->last_heard_ms = now;
  c->peer_max_frame = POSP2P_MAX_FRAME_DEFAULT;
  c->peer_heartbeat_ms = POSP2P_HEARTBEAT_MS_DEFAULT;
  c->peer_timeout_ms = POSP2P_TIMEOUT_MS_DEFAULT;
  posp2p__timer_init(&c->timer, POSP2P__TIMER_CONN);
  c->next = p->conns;
  if (p->conns) p->conns->prev = c;
  p->conns = c;
  p->nconns++;
  posp2p__conns_changed(p);
  return c;
}

static void conn_free(posp2p_peer *p, posp2p__conn *c) {
  posp2p__qitem *q = c->qhead;
  while (q != NULL) {
    posp2p__qitem *n = q->next;
    posp2p__blob_unref(p, q->blob);
    posp2p__free(p, q);
    q = n;
  }
  if (c->framer_init) posp2p_framer_free(&c->framer);
  if (c->ndjson_init) posp2p_ndjson_free(&c->ndjson);
  posp2p__free(p, c);
}

/* Unlink c from the live structures; it becomes a zombie. */
static void conn_unlink(posp2p_peer *p, posp2p__conn *c) {
  c->dead = true;
  posp2p__timer_stop(p, &c->timer);
  posp2p__htab_remove(&p->conn_by_id, conn_hash(c), c);
  if (c->prev)
    c->prev->next = c->next;
  else
    p->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  p->nconns--;
  c->zombie_next = p->zombies;
  p->zombies = c;
  posp2p__conns_changed(p);
}

void posp2p__reap(posp2p_peer *p) {
  while (p->zombies != NULL) {
    posp2p__conn *c = p->zombies;
    p->zombies = c->zombie_next;
    conn_free(p, c);
  }
}

void posp2p__conn_free_all(posp2p_peer *p) {
  while (p->conns != NULL) {
    posp2p__conn *c = p->conns;
    p->conns = c->next;
    conn_free(p, c);
  }
  p->nconns = 0;
  posp2p__reap(p);
}

/* ---- Outbound queue ----------------------------------------------------------- */

static size_t item_len(const posp2p__qitem *q) {
  return (size_t)q->hdr_len + q->blob->len;
}

bool posp2p__conn_has_room(const posp2p_peer *p, const posp2p__conn *c,
                           size_t bytes, posp2p__qclass cls) {
  size_t cap = p->cfg.max_queue_bytes;
  if (cls == Q_CONTROL) cap *= 2;
  return c->queued <= cap && bytes <= cap - c->queued;
}

bool posp2p__conn_has_unsent(const posp2p__conn *c, const posp2p__blob *body) {
  for (const posp2p__qitem *q = c->qhead; q != NULL; q = q->next)
    if (q->blob == body && q->off == 0 && !q->pinned) return true;
  return false;
}

static void want_write(posp2p_peer *p, posp2p__conn *c) {
  if (c->want_write_armed) return;
  c->want_write_armed = true;
  if (p->cb.conn_want_write != NULL) p->cb.conn_want_write(p, c->id, p->user_data);
}

/* Queue hdr ++ blob (takes a reference to blob). Ordering: never ahead of
 * bytes already handed to the transport, never ahead of an earlier frame of
 * the same originator (ROUTE ordering), otherwise higher priority first. */
static int queue_push(posp2p_peer *p, posp2p__conn *c, posp2p__blob *blob,
                      const uint8_t *hdr, uint8_t hdr_len, uint8_t prio,
                      uint32_t origin) {
  posp2p__qitem *q = posp2p__calloc(p, sizeof *q);
  if (q == NULL) return POSP2P_ERR_NOMEM;
  q->blob = posp2p__blob_ref(blob);
  if (hdr_len) memcpy(q->hdr, hdr, hdr_len);
  q->hdr_len = hdr_len;
  q->prio = prio;
  q->origin = origin;
  posp2p__qitem *after = NULL;
  if (c->qtail == NULL || c->qtail->prio >= prio || c->qtail->origin == origin ||
      c->qtail->pinned) {
    after = c->qtail;
  } else {
    for (posp2p__qitem *it = c->qhead; it != NULL; it = it->next)
      if (it->pinned || it->off > 0 || it->prio >= prio || it->origin == origin) after = it;
  }
  if (after == NULL) {
    q->next = c->qhead;
    c->qhead = q;
  } else {
    q->next = after->next;
    after->next = q;
  }
  if (q->next == NULL) c->qtail = q;
  c->queued += item_len(q);
  c->last_out_ms = p->now;
  p->stats.frames_out++;
  want_write(p, c);
  return 0;
}

size_t posp2p__conn_frame_size(const posp2p__conn *c, size_t body_len) {
  if (c->wire == POSP2P_PEER_WIRE_LEGACY) return body_len * 2 + 512; /* JSON estimate */
  uint8_t tmp[5];
  return body_len + posp2p_varint_encode((uint32_t)body_len, tmp);
}

static uint32_t origin_of(const posp2p_envelope *e) {
  const char *f = e->from_device_id ? e->from_device_id : "";
  return posp2p__hash_bytes(f, strlen(f));
}

static int queue_v2_body(posp2p_peer *p, posp2p__conn *c, posp2p__blob *body,
                         uint8_t prio, uint32_t origin, posp2p__qclass cls) {
  if (body->len > c->peer_max_frame) return POSP2P_ERR_FRAME_TOO_LARGE;
  uint8_t hdr[5];
  size_t hl = posp2p_varint_encode(body->len, hdr);
  if (!posp2p__conn_has_room(p, c, hl + body->len, cls)) return POSP2P_ERR_QUEUE_FULL;
  return queue_push(p, c, body, hdr, (uint8_t)hl, prio, origin);
}

static int queue_legacy(posp2p_peer *p, posp2p__conn *c, const posp2p_envelope *e,
                        uint8_t prio, uint32_t origin, posp2p__qclass cls) {
  posp2p_buf buf;
  posp2p_buf_init(&buf, (size_t)p->cfg.max_frame + 1, &p->alloc);
  posp2p_error err;
  int rc = posp2p_legacy_encode(e, &p->legacy_opts, &buf, &err);
  if (rc == POSP2P_ERR_NOSPACE) rc = POSP2P_ERR_FRAME_TOO_LARGE;
  if (rc == 0 && !posp2p__conn_has_room(p, c, buf.len, cls)) rc = POSP2P_ERR_QUEUE_FULL;
  if (rc == 0) {
    posp2p__blob *b = posp2p__blob_new(p, buf.data, buf.len);
    if (b == NULL) {
      rc = POSP2P_ERR_NOMEM;
    } else {
      rc = queue_push(p, c, b, NULL, 0, prio, origin);
      posp2p__blob_unref(p, b);
    }
  }
  posp2p_buf_free(&buf);
  return rc;
}

int posp2p__conn_send_env(posp2p_peer *p, posp2p__conn *c,
                          const posp2p_envelope *e, posp2p__blob *v2body,
                          posp2p__qclass cls) {
  if (c->dead || c->state == POSP2P_CONN_CLOSING) return POSP2P_ERR_CONN_CLOSING;
  uint8_t prio = (uint8_t)posp2p_envelope_priority(e);
  /* CONN-20: GOODBYE is the last frame: priority 0 never passes anything. */
  if (e->message_type == MT(GOODBYE)) prio = 0;
  uint32_t origin = origin_of(e);
  if (c->wire == POSP2P_PEER_WIRE_LEGACY) return queue_legacy(p, c, e, prio, origin, cls);
  if (!c->can_frame) return POSP2P_ERR_STATE;
  if (v2body != NULL) return queue_v2_body(p, c, v2body, prio, origin, cls);
  posp2p__blob *b = posp2p__env_pack(p, e);
  if (b == NULL) return POSP2P_ERR_NOMEM;
  int rc = queue_v2_body(p, c, b, prio, origin, cls);
  posp2p__blob_unref(p, b);
  return rc;
}

int posp2p__conn_send_blob(posp2p_peer *p, posp2p__conn *c, posp2p__blob *body,
                           uint8_t prio, uint32_t origin, posp2p__qclass cls) {
  if (c->dead || c->state == POSP2P_CONN_CLOSING) return POSP2P_ERR_CONN_CLOSING;
  if (c->wire != POSP2P_PEER_WIRE_LEGACY) {
    if (!c->can_frame) return POSP2P_ERR_STATE;
    return queue_v2_body(p, c, body, prio, origin, cls);
  }
  /* Legacy: unpack with the plain allocator, not the decode arena, which
   * may hold the envelope a caller up the stack is still handling. */
  posp2p_envelope *e = posp2p__v2__envelope__unpack(&p->alloc, body->len, body->data);
  if (e == NULL) return POSP2P_ERR_PROTOBUF;
  int rc = queue_legacy(p, c, e, prio, origin, cls);
  posp2p__v2__envelope__free_unpacked(e, &p->alloc);
  return rc;
}

int posp2p_peer_conn_pending(posp2p_peer *p, posp2p_conn_id id, posp2p_iov *iov,
                             size_t iovmax, size_t *niov, size_t *total) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (niov) *niov = 0;
  if (total) *total = 0;
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  c->want_write_armed = false;
  size_t n = 0;
  for (posp2p__qitem *q = c->qhead; q != NULL && n < iovmax; q = q->next) {
    q->pinned = true;
    if (q->off < q->hdr_len) {
      iov[n].base = q->hdr + q->off;
      iov[n].len = (size_t)(q->hdr_len - q->off);
      n++;
      if (n == iovmax) break;
      if (q->blob->len) {
        iov[n].base = q->blob->data;
        iov[n].len = q->blob->len;
        n++;
      }
    } else {
      size_t o = q->off - q->hdr_len;
      iov[n].base = q->blob->data + o;
      iov[n].len = q->blob->len - o;
      n++;
    }
  }
  if (niov) *niov = n;
  if (total) *total = c->queued;
  return 0;
}

static void request_close(posp2p_peer *p, posp2p__conn *c);

int posp2p_peer_conn_consumed(posp2p_peer *p, posp2p_conn_id id, size_t n,
                              uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  if (n > c->queued) return POSP2P_ERR_INVAL;
  POSP2P__ENTER(p, now_ms);
  p->stats.bytes_out += n;
  c->queued -= n;
  while (n > 0 && c->qhead != NULL) {
    posp2p__qitem *q = c->qhead;
    size_t left = item_len(q) - q->off;
    if (n < left) {
      q->off += (uint32_t)n;
      break;
    }
    n -= left;
    c->qhead = q->next;
    if (c->qhead == NULL) c->qtail = NULL;
    posp2p__blob_unref(p, q->blob);
    posp2p__free(p, q);
  }
  if (c->backpressured && c->queued < p->cfg.max_queue_bytes / 2) {
    c->backpressured = false;
    posp2p_peer_event ev = {.type = POSP2P_PEER_EV_DRAINED,
                            .conn = c->id,
                            .device = c->dev ? &c->dev->pub : NULL,
                            .text = "queue drained"};
    posp2p__emit(p, &ev);
  }
  c->last_out_ms = now_ms;
  if (c->state == POSP2P_CONN_CLOSING && c->queued == 0) request_close(p, c);
  else if (c->oneshot && c->queued == 0 && !c->dead) posp2p__conn_timer_update(p, c);
  POSP2P__LEAVE(p);
  return 0;
}

/* ---- Closing --------------------------------------------------------------------- */

static void unbind_device(posp2p_peer *p, posp2p__conn *c, bool is_error) {
  posp2p__device *d = c->dev;
  if (d == NULL || d->conn != c) return;
  d->conn = NULL;
  d->pub.conn = 0;
  posp2p__dev_set_status(p, d, is_error ? POSP2P_DEV_ERROR : POSP2P_DEV_DISCONNECTED);
}

static void conn_gone(posp2p_peer *p, posp2p__conn *c, int code, const char *text,
                      bool is_error);

static void request_close(posp2p_peer *p, posp2p__conn *c) {
  if (c->close_requested || c->dead) return;
  c->close_requested = true;
  posp2p__timer_stop(p, &c->timer);
  if (p->cb.conn_close != NULL)
    p->cb.conn_close(p, c->id, p->user_data);
  else
    conn_gone(p, c, c->close_code, c->close_text, c->close_code_err != 0);
}

void posp2p__conn_start_close(posp2p_peer *p, posp2p__conn *c, int code,
                              const char *text, bool is_error) {
  if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
  bool connecting = c->state == POSP2P_CONN_CONNECTING;
  c->state = POSP2P_CONN_CLOSING;
  c->close_code = code;
  c->close_text = text;
  c->close_code_err = is_error ? 1 : 0;
  c->linger_ms = p->now + p->cfg.close_linger_ms;
  unbind_device(p, c, is_error);
  if (connecting || c->queued == 0)
    request_close(p, c);
  else
    posp2p__conn_timer_update(p, c);
}

static void reconnect_schedule(posp2p_peer *p, posp2p__reconnect *r);

static void conn_gone(posp2p_peer *p, posp2p__conn *c, int code, const char *text,
                      bool is_error) {
  if (c->dead) return;
  unbind_device(p, c, is_error);
  if (c->dev == NULL && c->has_expected) {
    /* An outgoing attempt that never identified its device (connect
     * failed, or closed before the HELLO): the CONNECTING status that
     * posp2p_peer_connect gave the expected device ends with it. */
    posp2p__device *d = posp2p__dev_find(p, &c->expected);
    if (d != NULL && d->conn == NULL && d->pub.status == POSP2P_DEV_CONNECTING)
      posp2p__dev_set_status(p, d, is_error ? POSP2P_DEV_ERROR : POSP2P_DEV_DISCONNECTED);
  }
  posp2p__reconnect *r = c->reconnect;
  c->reconnect = NULL;
  conn_unlink(p, c);
  posp2p_peer_event ev = {.type = POSP2P_PEER_EV_CONN_CLOSED,
                          .conn = c->id,
                          .device = c->dev ? &c->dev->pub : NULL,
                          .device_id = c->dev ? c->dev->pub.id : NULL,
                          .code = code,
                          .text = text ? text : ""};
  posp2p__emit(p, &ev);
  if (r != NULL) {
    r->conn = NULL;
    reconnect_schedule(p, r);
  }
  posp2p__check_shutdown_done(p);
}

int posp2p_peer_conn_closed(posp2p_peer *p, posp2p_conn_id id, int code,
                            uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  POSP2P__ENTER(p, now_ms);
  if (c->state == POSP2P_CONN_CLOSING) {
    conn_gone(p, c, c->close_code, c->close_text, c->close_code_err != 0);
  } else if (c->state == POSP2P_CONN_CONNECTING) {
    conn_gone(p, c, code ? code : POSP2P_ERR_PEER_CLOSED, "connect failed", true);
  } else {
    conn_gone(p, c, code ? code : POSP2P_ERR_PEER_CLOSED,
              code ? "connection reset" : "closed by remote", code != 0);
  }
  POSP2P__LEAVE(p);
  return 0;
}

/* The remote finished sending (TCP FIN) but may still read. A complete
 * message is never lost to the half-close: everything received before it
 * has been handled, and what that produced (a legacy acknowledgement on a
 * one-message connection, LEGACY-11 and LEGACY-17) is still in the queue.
 * So EOF begins a graceful close on both wires: the queue is written out,
 * then the transport is asked to close (on v2 this is the CLOSING state of
 * SPEC 4.6 "TCP closed by peer": flush, no new frames). An incomplete frame
 * or line is discarded (FRAME-13). Messages for the device that arrive
 * later are not queued here: a legacy device is then reached on a new
 * connection (LEGACY-15, LEGACY-17). */
int posp2p_peer_conn_eof(posp2p_peer *p, posp2p_conn_id id, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  if (c->state == POSP2P_CONN_CONNECTING) return POSP2P_ERR_STATE;
  POSP2P__ENTER(p, now_ms);
  c->remote_eof = true;
  /* Already closing (our GOODBYE, a violation): that close goes on. */
  if (c->state != POSP2P_CONN_CLOSING)
    posp2p__conn_start_close(p, c, POSP2P_ERR_PEER_CLOSED, "closed by remote", false);
  POSP2P__LEAVE(p);
  return 0;
}

/* ---- Envelopes the connection layer sends --------------------------------------- */

static void send_error(posp2p_peer *p, posp2p__conn *c, int error_code,
                       const char *desc, const char *req, const char *ref) {
  if (c->wire == POSP2P_PEER_WIRE_V2 && !c->can_frame) return;
  if (c->wire == POSP2P_PEER_WIRE_AUTO) return;
  posp2p_envelope e;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(ERROR), mid, p->now);
  Posp2p__V2__Error er;
  posp2p__v2__error__init(&er);
  er.code = (Posp2p__V2__ErrorCode)error_code;
  er.description = (char *)desc;
  er.requirement = (char *)(req ? req : "");
  er.ref_message_id = (char *)(ref && posp2p_uuid_valid(ref) ? ref : "");
  e.payload_case = PL(ERROR);
  e.error = &er;
  if (c->dev != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = c->dev->pub.id;
  }
  if (posp2p__conn_send_env(p, c, &e, NULL, Q_CONTROL) == 0) p->stats.errors_sent++;
}

void posp2p__conn_violation(posp2p_peer *p, posp2p__conn *c, int error_code,
                            int err, const char *req, const char *ref_id,
                            bool close, const char *fmt, ...) {
  char text[POSP2P_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  p->stats.violations++;
  if (error_code != 0) send_error(p, c, error_code, text, req, ref_id);
  posp2p_peer_event ev = {.type = POSP2P_PEER_EV_VIOLATION,
                          .conn = c->id,
                          .device = c->dev ? &c->dev->pub : NULL,
                          .message_id = ref_id,
                          .code = err,
                          .error_code = error_code,
                          .requirement = req,
                          .text = text,
                          .closing = close};
  posp2p__emit(p, &ev);
  if (close) posp2p__conn_start_close(p, c, POSP2P_ERR_PROTOCOL, "protocol violation", true);
}

static int send_hello(posp2p_peer *p, posp2p__conn *c, uint32_t selected) {
  posp2p_envelope e;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(HELLO), mid, p->now);
  Posp2p__V2__Hello h;
  posp2p__v2__hello__init(&h);
  uint32_t versions[1] = {POSP2P_VERSION};
  /* HELLO-18: what applies to this device; "legacy" when it accepts the
   * legacy wire (section 16), i.e. unless it is configured v2-only. */
  char *caps_main[] = {"relay", "ack", "dedup", "legacy"};
  char *caps[] = {"ack", "dedup", "legacy"};
  size_t legacy_cap = p->cfg.wire != POSP2P_PEER_WIRE_V2 ? 1 : 0;
  h.device_id = p->id_txt;
  h.device_name = p->name;
  h.device_type = (Posp2p__V2__DeviceType)p->cfg.device_type;
  h.listen_port = p->cfg.listen_port;
  h.n_supported_versions = 1;
  h.supported_versions = versions;
  h.selected_version = selected;
  h.heartbeat_interval_ms = p->cfg.heartbeat_interval_ms;
  h.device_timeout_ms = p->cfg.device_timeout_ms;
  h.max_frame_size = p->cfg.max_frame;
  if (p->is_main) {
    h.n_capabilities = 3 + legacy_cap;
    h.capabilities = caps_main;
  } else {
    h.n_capabilities = 2 + legacy_cap;
    h.capabilities = caps;
  }
  e.payload_case = PL(HELLO);
  e.hello = &h;
  if (c->has_expected) {
    /* The HELLO is addressed when we know who we talk to; the first HELLO
     * of an accepted connection cannot be. */
  }
  return posp2p__conn_send_env(p, c, &e, NULL, Q_CONTROL);
}

static void send_goodbye(posp2p_peer *p, posp2p__conn *c, const char *reason) {
  if (c->goodbye_sent || c->wire != POSP2P_PEER_WIRE_V2 || c->state != POSP2P_CONN_READY)
    return;
  posp2p_envelope e;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(GOODBYE), mid, p->now);
  Posp2p__V2__Goodbye g;
  posp2p__v2__goodbye__init(&g);
  g.reason = (char *)(reason ? reason : "");
  e.payload_case = PL(GOODBYE);
  e.goodbye = &g;
  if (c->dev != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = c->dev->pub.id;
  }
  if (posp2p__conn_send_env(p, c, &e, NULL, Q_CONTROL) == 0) c->goodbye_sent = true;
}

static void send_heartbeat(posp2p_peer *p, posp2p__conn *c) {
  posp2p_envelope e;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(HEARTBEAT), mid, p->now);
  Posp2p__V2__Heartbeat hb;
  posp2p__v2__heartbeat__init(&hb);
  if (c->wire == POSP2P_PEER_WIRE_V2) hb.sequence = ++c->hb_seq;
  e.payload_case = PL(HEARTBEAT);
  e.heartbeat = &hb;
  if (c->dev != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = c->dev->pub.id;
  }
  if (posp2p__conn_send_env(p, c, &e, NULL, Q_CONTROL) == 0) p->stats.heartbeats_sent++;
}

static int send_device_info(posp2p_peer *p, posp2p__conn *c) {
  posp2p_envelope e;
  char mid[POSP2P_UUID_LEN + 1];
  posp2p__env_prepare(p, &e, MT(DEVICE_INFO), mid, p->now);
  Posp2p__V2__DeviceInfo di;
  posp2p__v2__device_info__init(&di);
  di.device_name = p->name;
  di.device_type = (Posp2p__V2__DeviceType)p->cfg.device_type;
  di.port = p->cfg.listen_port;
  e.payload_case = PL(DEVICE_INFO);
  e.device_info = &di;
  char to[POSP2P_UUID_LEN + 1];
  if (c->has_expected) {
    posp2p__uuid_text(&c->expected, to);
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = to;
  }
  /* Tracked in the outbox when the recipient is known: deviceInfo is an
   * acknowledged type and legacy devices answer it. */
  posp2p__blob *b = posp2p__env_pack(p, &e);
  if (b == NULL) return POSP2P_ERR_NOMEM;
  int rc = posp2p__conn_send_env(p, c, &e, b, Q_CONTROL);
  if (rc == 0 && c->has_expected) {
    posp2p__uuid m;
    posp2p__uuid_parse(mid, &m);
    posp2p__obx_add(p, &m, &c->expected, b, origin_of(&e), (uint8_t)posp2p_envelope_priority(&e),
                    false, 1, false, true, p->now, NULL);
  }
  posp2p__blob_unref(p, b);
  return rc;
}

/* HB-2: the smaller of our own interval and half the peer's timeout, so
 * that a peer with a short timeout never times us out. */
uint32_t posp2p__hb_interval(const posp2p_peer *p, const posp2p__conn *c) {
  uint32_t own = p->cfg.heartbeat_interval_ms;
  uint32_t half = c->peer_timeout_ms / 2;
  if (half < 1) half = 1;
  if (POSP2P_MUTANT(late_heartbeat)) return 3 * (own < half ? own : half);
  return own < half ? own : half;
}

/* ---- Binding and readiness ------------------------------------------------------------ */

posp2p__conn *posp2p__conn_bind(posp2p_peer *p, posp2p__conn *c, posp2p__device *d) {
  posp2p__conn *old = d->conn;
  d->conn = c;
  d->pub.conn = c->id;
  if (c->dev != d) posp2p__conns_changed(p);
  c->dev = d;
  return old != c ? old : NULL;
}

/* ---- By-type index --------------------------------------------------------------- */

/* A counting sort of `conns` by device type: O(connections) after a
 * change, then O(recipients) per by-type message. Cart syncs to "every
 * customer display" at 10,000 clients walked 10,000 connections twice per
 * message without it (sim/fleet/README.md). */
static int type_idx_build(posp2p_peer *p) {
  size_t count[POSP2P__DEVICE_TYPES] = {0};
  size_t total = 0;
  for (posp2p__conn *c = p->conns; c != NULL; c = c->next) {
    if (c->dev == NULL || c->dev->pub.type < 0 || c->dev->pub.type >= POSP2P__DEVICE_TYPES)
      continue;
    count[c->dev->pub.type]++;
    total++;
  }
  if (total > p->type_idx_cap) {
    size_t cap = p->type_idx_cap ? p->type_idx_cap : 16;
    while (cap < total) cap *= 2;
    posp2p__conn **v = posp2p__alloc(p, cap * sizeof *v);
    if (v == NULL) return POSP2P_ERR_NOMEM;
    posp2p__free(p, p->type_idx);
    p->type_idx = v;
    p->type_idx_cap = cap;
  }
  size_t fill[POSP2P__DEVICE_TYPES];
  p->type_idx_off[0] = 0;
  for (int t = 0; t < POSP2P__DEVICE_TYPES; t++) {
    p->type_idx_off[t + 1] = p->type_idx_off[t] + count[t];
    fill[t] = p->type_idx_off[t];
  }
  for (posp2p__conn *c = p->conns; c != NULL; c = c->next) {
    if (c->dev == NULL || c->dev->pub.type < 0 || c->dev->pub.type >= POSP2P__DEVICE_TYPES)
      continue;
    p->type_idx[fill[c->dev->pub.type]++] = c;
  }
  p->type_idx_gen = p->conn_gen;
  return 0;
}

posp2p__conn **posp2p__conns_of_type(posp2p_peer *p, int type, size_t *n) {
  *n = 0;
  if (type < 0 || type >= POSP2P__DEVICE_TYPES) return NULL;
  if (p->type_idx_gen != p->conn_gen || p->type_idx_gen == 0) {
    /* Rebuilding under an iterating caller would move its array. */
    if (p->type_idx_busy > 0 || type_idx_build(p) != 0) return NULL;
  }
  *n = p->type_idx_off[type + 1] - p->type_idx_off[type];
  return p->type_idx + p->type_idx_off[type];
}

void posp2p__conns_changed(posp2p_peer *p) { p->conn_gen++; }

void posp2p__type_idx_free(posp2p_peer *p) {
  posp2p__free(p, p->type_idx);
  p->type_idx = NULL;
  p->type_idx_cap = 0;
  p->type_idx_gen = 0;
}

void posp2p__conn_ready(posp2p_peer *p, posp2p__conn *c) {
  c->state = POSP2P_CONN_READY;
  c->hs = HS_NONE;
  /* A one-shot legacy connection is closed once idle: no heartbeats. */
  c->next_hb_ms = c->oneshot ? UINT64_MAX : p->now + posp2p__hb_interval(p, c);
  if (c->reconnect != NULL) c->reconnect->delay_ms = p->cfg.reconnect_ms;
  posp2p__conn_timer_update(p, c);
  if (c->dev != NULL) {
    posp2p__device *d = c->dev;
    d->pub.last_seen_ms = p->now;
    posp2p__dev_update(p, d, false, NULL, -1, NULL, POSP2P_DEV_CONNECTED, (int)c->wire);
    if (c->dead || c->state != POSP2P_CONN_READY) return;
    posp2p_peer_event ev = {.type = POSP2P_PEER_EV_CONN_READY,
                            .conn = c->id,
                            .device = &d->pub,
                            .device_id = d->pub.id,
                            .text = c->wire == POSP2P_PEER_WIRE_LEGACY ? "legacy" : "v2"};
    posp2p__emit(p, &ev);
    if (c->dead || c->state != POSP2P_CONN_READY) return;
    posp2p__obx_flush_for(p, c);
  }
}

/* ---- Creation ------------------------------------------------------------------------- */

int posp2p_peer_conn_accept(posp2p_peer *p, const posp2p_addr *remote,
                            uint64_t now_ms, posp2p_conn_id *out) {
  if (p == NULL || remote == NULL || out == NULL) return POSP2P_ERR_INVAL;
  *out = 0;
  if (p->shutting_down) return POSP2P_ERR_SHUTDOWN;
  POSP2P__ENTER(p, now_ms);
  int rc = 0;
  posp2p__conn *c = conn_new(p, remote, false, now_ms);
  if (c == NULL) {
    rc = POSP2P_ERR_NOMEM;
  } else {
    c->state = POSP2P_CONN_HANDSHAKE;
    c->wire = p->cfg.wire;
    c->hs = p->cfg.wire == POSP2P_PEER_WIRE_AUTO ? HS_DETECT
            : p->cfg.wire == POSP2P_PEER_WIRE_V2 ? HS_PREFACE
                                                 : HS_DETECT;
    /* Counted after insertion: this connection is one of nconns. */
    c->over_limit = p->nconns > p->cfg.max_connections;
    posp2p__conn_timer_update(p, c);
    *out = c->id;
  }
  POSP2P__LEAVE(p);
  return rc;
}

static int connect_internal(posp2p_peer *p, const posp2p_addr *to, posp2p_peer_wire wire,
                            const posp2p__uuid *expected, posp2p__reconnect *r,
                            posp2p_conn_id *out) {
  posp2p__conn *c = conn_new(p, to, true, p->now);
  if (c == NULL) return POSP2P_ERR_NOMEM;
  c->state = POSP2P_CONN_CONNECTING;
  c->wire = wire == POSP2P_PEER_WIRE_LEGACY ? POSP2P_PEER_WIRE_LEGACY : POSP2P_PEER_WIRE_V2;
  if (expected != NULL) {
    c->has_expected = true;
    c->expected = *expected;
    bool created;
    posp2p__device *d = posp2p__dev_get(p, expected, &created);
    if (d != NULL && d->conn == NULL) {
      posp2p_addr a = *to;
      posp2p__dev_update(p, d, created, NULL, -1, &a, POSP2P_DEV_CONNECTING, (int)c->wire);
    }
  }
  c->reconnect = r;
  if (r != NULL) r->conn = c;
  posp2p__conn_timer_update(p, c);
  posp2p_conn_id id = c->id;
  if (out) *out = id;
  if (p->cb.conn_connect != NULL) {
    int rc = p->cb.conn_connect(p, id, to, p->user_data);
    if (rc < 0) {
      c = posp2p__conn_find(p, id);
      if (c != NULL) {
        if (c->reconnect == r) c->reconnect = NULL; /* caller decides */
        if (r != NULL) r->conn = NULL;
        conn_gone(p, c, rc, "connect request failed", true);
      }
      return rc;
    }
  }
  return 0;
}

int posp2p_peer_connect(posp2p_peer *p, const posp2p_addr *to, posp2p_peer_wire wire,
                        const char *expected_id, uint64_t now_ms, posp2p_conn_id *out) {
  if (p == NULL || to == NULL || to->port == 0) return POSP2P_ERR_INVAL;
  if (out) *out = 0;
  posp2p__uuid exp;
  if (expected_id != NULL && !posp2p__uuid_parse(expected_id, &exp)) return POSP2P_ERR_INVAL;
  if (expected_id != NULL && memcmp(exp.b, p->id.b, 16) == 0) return POSP2P_ERR_INVAL;
  if (p->shutting_down) return POSP2P_ERR_SHUTDOWN;
  POSP2P__ENTER(p, now_ms);
  posp2p__reconnect *r = NULL;
  if (p->cfg.reconnect_ms != 0) {
    r = posp2p__calloc(p, sizeof *r);
    if (r != NULL) {
      posp2p__timer_init(&r->timer, POSP2P__TIMER_RECONNECT);
      r->to = *to;
      r->wire = wire;
      r->has_expected = expected_id != NULL;
      if (expected_id != NULL) r->expected = exp;
      r->delay_ms = p->cfg.reconnect_ms;
      r->next = p->reconnects;
      if (p->reconnects) p->reconnects->prev = r;
      p->reconnects = r;
    }
  }
  int rc = connect_internal(p, to, wire, expected_id ? &exp : NULL, r, out);
  if (rc < 0 && r != NULL && r->conn == NULL) reconnect_schedule(p, r);
  POSP2P__LEAVE(p);
  return rc;
}

int posp2p_peer_conn_connected(posp2p_peer *p, posp2p_conn_id id, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  if (c->state != POSP2P_CONN_CONNECTING) return POSP2P_ERR_STATE;
  POSP2P__ENTER(p, now_ms);
  c->state = POSP2P_CONN_HANDSHAKE;
  c->last_heard_ms = now_ms;
  if (c->wire == POSP2P_PEER_WIRE_LEGACY) {
    /* No handshake on the legacy wire: the deliberate connection opens with
     * deviceInfo and is usable at once (LEGACY). */
    posp2p_ndjson_init(&c->ndjson, p->cfg.max_frame, &p->alloc);
    c->ndjson_init = true;
    c->selected_version = 1;
    c->state = POSP2P_CONN_READY;
    /* LEGACY-13 asks for deviceInfo first on a long-lived connection; a
     * one-shot connection only carries what was queued for the device. */
    if (!c->oneshot) (void)send_device_info(p, c);
    if (c->has_expected) {
      bool created;
      posp2p__device *d = posp2p__dev_get(p, &c->expected, &created);
      if (d != NULL) {
        posp2p__conn *old = posp2p__conn_bind(p, c, d);
        (void)old;
        posp2p__conn_ready(p, c);
      }
    } else {
      c->hs = HS_LEGACY_FIRST;
      c->next_hb_ms = now_ms + p->cfg.heartbeat_interval_ms;
      posp2p__conn_timer_update(p, c);
    }
  } else {
    uint8_t pre[POSP2P_PREFACE_LEN];
    posp2p_preface_encode(pre, (uint8_t)POSP2P_VERSION);
    posp2p__blob *b = posp2p__blob_new(p, pre, sizeof pre);
    if (b != NULL) {
      queue_push(p, c, b, NULL, 0, 10, 0);
      posp2p__blob_unref(p, b);
    }
    c->can_frame = true;
    c->hs = HS_PREFACE;
    posp2p__conn_timer_update(p, c);
  }
  POSP2P__LEAVE(p);
  return 0;
}

/* Forget r: its timer, its place in the list, its link to an attempt. */
static void reconnect_free(posp2p_peer *p, posp2p__reconnect *r) {
  if (r->conn != NULL) r->conn->reconnect = NULL;
  posp2p__timer_stop(p, &r->timer);
  if (r->prev)
    r->prev->next = r->next;
  else
    p->reconnects = r->next;
  if (r->next) r->next->prev = r->prev;
  posp2p__free(p, r);
}

static void close_graceful(posp2p_peer *p, posp2p__conn *c, const char *reason) {
  if (c->reconnect != NULL) reconnect_free(p, c->reconnect);
  send_goodbye(p, c, reason);
  posp2p__conn_start_close(p, c, 0, reason ? reason : "closed", false);
}

int posp2p_peer_conn_close(posp2p_peer *p, posp2p_conn_id id, const char *reason,
                           uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  POSP2P__ENTER(p, now_ms);
  close_graceful(p, c, reason);
  POSP2P__LEAVE(p);
  return 0;
}

static bool addr_eq(const posp2p_addr *a, const posp2p_addr *b) {
  return a->ip == b->ip && a->port == b->port;
}

int posp2p_peer_connect_stop(posp2p_peer *p, const posp2p_addr *to, const char *reason,
                             uint64_t now_ms) {
  if (p == NULL || to == NULL) return POSP2P_ERR_INVAL;
  POSP2P__ENTER(p, now_ms);
  size_t n = 0;
  /* A reconnect either waits for its timer (no connection) or follows its
   * current attempt; both end here. */
  posp2p__reconnect *r = p->reconnects, *rnext;
  for (; r != NULL; r = rnext) {
    rnext = r->next;
    if (!addr_eq(&r->to, to)) continue;
    n++;
    posp2p__conn *c = r->conn;
    reconnect_free(p, r);
    if (c != NULL && !c->dead && c->state != POSP2P_CONN_CLOSING) close_graceful(p, c, reason);
    /* Closing may have run callbacks that changed the list. */
    rnext = p->reconnects;
  }
  /* Connections made without a reconnect (reconnect_ms 0). */
  posp2p__conn *c, *cnext;
  for (c = p->conns; c != NULL; c = cnext) {
    cnext = c->next;
    if (!c->outgoing || c->oneshot || c->dead || c->state == POSP2P_CONN_CLOSING ||
        !addr_eq(&c->remote, to))
      continue;
    n++;
    close_graceful(p, c, reason);
    cnext = p->conns;
  }
  POSP2P__LEAVE(p);
  return n ? 0 : POSP2P_ERR_NO_CONN;
}

/* ---- One-shot legacy connections (LEGACY-14, LEGACY-15) ---------------------------------
 * A legacy device is reached on the connection it opened while that is
 * open; once it closed it (the reference opens one connection per message)
 * the device still counts as connected for device_timeout_ms after its last
 * message, and what is sent to it meanwhile goes on a new connection to its
 * address: the source address of its last connection and the port of its
 * last deviceInfo or legacy discovery response (8766 if none). The
 * reference writes a message on such a connection and closes it; this
 * engine keeps it while there is traffic, so that the device can answer on
 * it (LEGACY-17) and several messages share it, and closes it after
 * ONESHOT_IDLE_MS of silence: the recipient's ack deadline (LEGACY-17). */
#define ONESHOT_IDLE_MS 1000u

static uint64_t oneshot_idle_due(const posp2p__conn *c) {
  uint64_t last = c->last_heard_ms > c->last_out_ms ? c->last_heard_ms : c->last_out_ms;
  return last + ONESHOT_IDLE_MS;
}

bool posp2p__legacy_reachable(const posp2p_peer *p, const posp2p__device *d) {
  if (d == NULL || d->conn != NULL || d->pub.wire != POSP2P_PEER_WIRE_LEGACY ||
      d->pub.addr.ip == 0)
    return false;
  uint64_t seen = d->pub.last_seen_ms;
  if (seen == 0 || seen > p->now) return false;
  return p->now - seen < p->cfg.device_timeout_ms;
}

posp2p__conn *posp2p__legacy_dial(posp2p_peer *p, posp2p__device *d) {
  if (!p->started || p->shutting_down) return NULL;
  for (posp2p__conn *c = p->conns; c != NULL; c = c->next)
    if (c->oneshot && !c->dead && c->state != POSP2P_CONN_CLOSING && !c->remote_eof &&
        memcmp(c->expected.b, d->key.b, 16) == 0)
      return c;
  if (p->nconns >= p->cfg.max_connections) return NULL;
  posp2p_addr to = {d->pub.addr.ip,
                    d->pub.addr.port ? d->pub.addr.port : (uint16_t)POSP2P_DATA_PORT};
  posp2p__conn *c = conn_new(p, &to, true, p->now);
  if (c == NULL) return NULL;
  c->state = POSP2P_CONN_CONNECTING;
  c->wire = POSP2P_PEER_WIRE_LEGACY;
  c->has_expected = true;
  c->expected = d->key;
  c->oneshot = true;
  posp2p__conn_timer_update(p, c);
  posp2p_conn_id id = c->id;
  if (p->cb.conn_connect != NULL) {
    int rc = p->cb.conn_connect(p, id, &to, p->user_data);
    if (rc < 0) {
      c = posp2p__conn_find(p, id);
      if (c != NULL) conn_gone(p, c, rc, "connect request failed", true);
      return NULL;
    }
  }
  return posp2p__conn_find(p, id);
}

/* ---- Reconnect --------------------------------------------------------------------------- */

static void reconnect_schedule(posp2p_peer *p, posp2p__reconnect *r) {
  if (p->shutting_down) return;
  posp2p__timer_set(p, &r->timer, p->now + r->delay_ms);
  uint64_t d = (uint64_t)r->delay_ms * 2;
  /* CONN-22: doubling up to 30 s. */
  if (d > 30000) d = 30000;
  if (d < p->cfg.reconnect_ms) d = p->cfg.reconnect_ms;
  r->delay_ms = (uint32_t)d;
}

void posp2p__reconnect_on_timer(posp2p_peer *p, posp2p__reconnect *r, uint64_t now) {
  (void)now;
  if (r->conn != NULL || p->shutting_down) return;
  /* Do not open a second connection to a device that already has one (it
   * may have connected to us meanwhile). */
  if (r->has_expected) {
    posp2p__device *d = posp2p__dev_find(p, &r->expected);
    if (d != NULL && d->conn != NULL) {
      reconnect_schedule(p, r);
      return;
    }
  }
  int rc = connect_internal(p, &r->to, r->wire, r->has_expected ? &r->expected : NULL, r, NULL);
  if (rc < 0 && r->conn == NULL) reconnect_schedule(p, r);
}

void posp2p__reconnect_free_all(posp2p_peer *p) {
  while (p->reconnects != NULL) {
    posp2p__reconnect *r = p->reconnects;
    p->reconnects = r->next;
    posp2p__timer_stop(p, &r->timer);
    if (r->conn != NULL) r->conn->reconnect = NULL;
    posp2p__free(p, r);
  }
}

/* ---- Timers ------------------------------------------------------------------------------ */

void posp2p__conn_timer_update(posp2p_peer *p, posp2p__conn *c) {
  if (c->dead || c->close_requested) {
    posp2p__timer_stop(p, &c->timer);
    return;
  }
  uint64_t due;
  switch (c->state) {
  case POSP2P_CONN_CONNECTING:
  case POSP2P_CONN_HANDSHAKE:
    due = c->created_ms + p->cfg.handshake_timeout_ms;
    if (c->hs == HS_LEGACY_FIRST && c->outgoing && c->next_hb_ms < due) due = c->next_hb_ms;
    break;
  case POSP2P_CONN_READY: {
    uint64_t to = c->last_heard_ms + p->cfg.device_timeout_ms;
    due = c->next_hb_ms < to ? c->next_hb_ms : to;
    if (c->oneshot && c->queued == 0 && oneshot_idle_due(c) < due) due = oneshot_idle_due(c);
    break;
  }
  case POSP2P_CONN_CLOSING:
  default:
    due = c->linger_ms;
    break;
  }
  posp2p__timer_set(p, &c->timer, due);
}

void posp2p__conn_on_timer(posp2p_peer *p, posp2p__conn *c, uint64_t now) {
  if (c->dead) return;
  switch (c->state) {
  case POSP2P_CONN_CONNECTING:
    if (now >= c->created_ms + p->cfg.handshake_timeout_ms) {
      posp2p__conn_start_close(p, c, POSP2P_ERR_TIMEOUT, "connect timed out", true);
      return;
    }
    break;
  case POSP2P_CONN_HANDSHAKE:
    if (now >= c->created_ms + p->cfg.handshake_timeout_ms) {
      /* CONN-17: an ERROR only once both prefaces were exchanged. */
      if (c->wire == POSP2P_PEER_WIRE_V2 && c->hs == HS_HELLO) {
        posp2p__conn_violation(p, c, EC(HANDSHAKE_REQUIRED), POSP2P_ERR_TIMEOUT,
                               REQ_CONN_DEADLINE, NULL, true,
                               "handshake not completed within %u ms",
                               p->cfg.handshake_timeout_ms);
      } else {
        /* The wire is unknown (or legacy, which has no handshake error):
         * nothing can be said that the remote would understand. */
        posp2p__conn_violation(p, c, 0, POSP2P_ERR_TIMEOUT, REQ_CONN_DEADLINE, NULL, true,
                               "no valid first message within %u ms",
                               p->cfg.handshake_timeout_ms);
      }
      return;
    }
    break;
  case POSP2P_CONN_READY:
    if (now >= c->last_heard_ms + p->cfg.device_timeout_ms) {
      p->stats.violations += 0;
      if (c->dev != NULL) {
        posp2p_peer_event ev = {.type = POSP2P_PEER_EV_DEVICE_TIMEOUT,
                                .conn = c->id,
                                .device = &c->dev->pub,
                                .device_id = c->dev->pub.id,
                                .code = POSP2P_ERR_TIMEOUT,
                                .text = "device timed out"};
        posp2p__emit(p, &ev);
        if (c->dead || c->state != POSP2P_CONN_READY) return;
      }
      send_goodbye(p, c, "timeout");
      posp2p__conn_start_close(p, c, POSP2P_ERR_TIMEOUT, "device timeout", false);
      return;
    }
    if (c->oneshot && c->queued == 0 && now >= oneshot_idle_due(c)) {
      posp2p__conn_start_close(p, c, 0, "one-shot legacy connection idle", false);
      return;
    }
    if (now >= c->next_hb_ms) {
      send_heartbeat(p, c);
      c->next_hb_ms += posp2p__hb_interval(p, c);
      if (c->next_hb_ms <= now) c->next_hb_ms = now + posp2p__hb_interval(p, c);
    }
    break;
  case POSP2P_CONN_CLOSING:
    if (!c->close_requested && now >= c->linger_ms) {
      request_close(p, c);
      return;
    }
    break;
  }
  posp2p__conn_timer_update(p, c);
}

/* ---- Receiving ------------------------------------------------------------------------------ */

static bool is_legacy_error_line(const uint8_t *d, size_t n) {
  static const char pat[] = "\"messageType\":\"error\"";
  size_t m = sizeof pat - 1;
  for (size_t i = 0; i + m <= n; i++)
    if (memcmp(d + i, pat, m) == 0) return true;
  return false;
}

static void heard(posp2p_peer *p, posp2p__conn *c) {
  c->last_heard_ms = p->now;
  if (c->dev != NULL && c->dev->conn == c) c->dev->pub.last_seen_ms = p->now;
}

static void handle_hello(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e) {
  Posp2p__V2__Hello *h = e->hello;
  posp2p__uuid id, from;
  posp2p__uuid_parse(h->device_id, &id);
  if (!posp2p__uuid_parse(e->from_device_id, &from) || memcmp(from.b, id.b, 16) != 0) {
    posp2p__conn_violation(p, c, EC(INVALID_MESSAGE), POSP2P_ERR_BAD_ID, REQ_HELLO_FROM,
                           e->message_id, true, "from_device_id differs from hello.device_id");
    return;
  }
  if (memcmp(id.b, p->id.b, 16) == 0) {
    posp2p__conn_violation(p, c, EC(DUPLICATE_DEVICE_ID), POSP2P_ERR_PROTOCOL,
                           REQ_HELLO_OWN_ID, e->message_id, true,
                           "HELLO names this device's own id %s", h->device_id);
    return;
  }
  bool ours = false;
  uint32_t selected = 0;
  if (!c->outgoing) {
    for (size_t i = 0; i < h->n_supported_versions; i++)
      if (h->supported_versions[i] == POSP2P_VERSION) ours = true;
    selected = POSP2P_VERSION;
  } else {
    ours = h->selected_version == POSP2P_VERSION;
    selected = h->selected_version;
  }
  if (POSP2P_MUTANT(bad_version)) ours = true;
  if (!ours) {
    posp2p__conn_violation(p, c, EC(UNSUPPORTED_VERSION), POSP2P_ERR_VERSION,
                           c->outgoing ? REQ_CONN_SELECTED : REQ_CONN_NO_COMMON, e->message_id,
                           true,
                           c->outgoing ? "selected_version %u is not one this device speaks"
                                       : "no common protocol version (this device speaks %u)",
                           c->outgoing ? selected : POSP2P_VERSION);
    return;
  }
  c->selected_version = selected;
  c->peer_max_frame = h->max_frame_size;
  c->peer_heartbeat_ms = h->heartbeat_interval_ms;
  c->peer_timeout_ms = h->device_timeout_ms;
  bool created;
  posp2p__device *d = posp2p__dev_get(p, &id, &created);
  if (d == NULL) {
    posp2p__conn_violation(p, c, EC(INTERNAL), POSP2P_ERR_NOMEM, "", e->message_id, true,
                           "device registry full");
    return;
  }
  if (!c->outgoing && send_hello(p, c, selected) != 0) {
    posp2p__conn_start_close(p, c, POSP2P_ERR_NOMEM, "cannot queue HELLO", true);
    return;
  }
  posp2p_addr a = {c->remote.ip, (uint16_t)h->listen_port};
  posp2p__conn *old = posp2p__conn_bind(p, c, d);
  posp2p__dev_update(p, d, created, h->device_name, (int)h->device_type, &a, -1,
                     POSP2P_PEER_WIRE_V2);
  if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
  if (old != NULL && !old->dead && old->state != POSP2P_CONN_CLOSING) {
    /* New wins (CONN duplicate id): a rebooted device's old connection is
     * often half-open, so the newer claim is the live one. */
    posp2p__conn_violation(p, old, EC(DUPLICATE_DEVICE_ID), POSP2P_ERR_PROTOCOL,
                           REQ_CONN_DUPLICATE, NULL, true,
                           "device %s connected again on another connection", d->pub.id);
    if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
  }
  posp2p__conn_ready(p, c);
}

/* One v2 frame body. */
static void handle_frame(posp2p_peer *p, posp2p__conn *c, const uint8_t *body, size_t len) {
  p->stats.frames_in++;
  heard(p, c);
  posp2p_envelope *e = NULL;
  posp2p_error err;
  memset(&err, 0, sizeof err);
  int rc = posp2p__decode(p, body, len, &e, &err);
  if (rc != 0) {
    if (e == NULL) {
      posp2p__conn_violation(p, c, EC(MALFORMED_FRAME), rc, err.requirement, NULL, false,
                             "frame body is not an Envelope: %s", err.message);
      return;
    }
    const char *ref = posp2p_uuid_valid(e->message_id) ? e->message_id : NULL;
    if (rc == POSP2P_ERR_PROTOBUF) {
      /* FRAME-7: unpacked, but a string is not UTF-8; still malformed. */
      posp2p__conn_violation(p, c, EC(MALFORMED_FRAME), rc, err.requirement, ref, false,
                             "frame body is not a valid Envelope: %s", err.message);
      return;
    }
    if (e->message_type == MT(ERROR)) {
      /* Never answer an ERROR with an ERROR (no error loops). */
      posp2p__conn_violation(p, c, POSP2P_MUTANT(error_loop) ? EC(INVALID_MESSAGE) : 0, rc, err.requirement, ref, false,
                             "invalid ERROR message: %s", err.message);
    } else if (e->message_type != MT(UNSPECIFIED) &&
               posp2p_message_type_name((int)e->message_type) == NULL) {
      posp2p__conn_violation(p, c, EC(UNKNOWN_MESSAGE_TYPE), rc, REQ_MSG_TYPE, ref, false,
                             "unknown message type %d", (int)e->message_type);
    } else if (e->message_type == MT(HELLO)) {
      posp2p__conn_violation(p, c, EC(INVALID_MESSAGE), rc,
                             err.requirement && err.requirement[0] ? err.requirement
                                                                   : REQ_HELLO_INVALID,
                             ref, true, "invalid HELLO: %s", err.message);
    } else {
      posp2p__conn_violation(p, c, EC(INVALID_MESSAGE), rc,
                             err.requirement && err.requirement[0] ? err.requirement
                                                                   : REQ_MSG_INVALID,
                             ref, false, "%s", err.message[0] ? err.message : posp2p_strerror(rc));
    }
    return;
  }
  if (c->hs == HS_HELLO) {
    if (e->message_type == MT(HELLO)) {
      handle_hello(p, c, e);
    } else if (e->message_type == MT(ERROR)) {
      /* CONN-16: the remote refuses the handshake (version, too many
       * connections); close without a reply. */
      p->stats.errors_received++;
      posp2p_peer_event ev = {.type = POSP2P_PEER_EV_ERROR_RECEIVED,
                              .conn = c->id,
                              .msg = e,
                              .code = POSP2P_ERR_REMOTE_ERROR,
                              .error_code = (int)e->error->code,
                              .requirement = e->error->requirement,
                              .text = e->error->description};
      posp2p__emit(p, &ev);
      posp2p__conn_start_close(p, c, POSP2P_ERR_REMOTE_ERROR, "handshake refused by remote", true);
    } else {
      posp2p__conn_violation(p, c, EC(HANDSHAKE_REQUIRED), POSP2P_ERR_STATE,
                             REQ_CONN_HANDSHAKE, e->message_id, true,
                             "%s before the HELLO exchange",
                             posp2p_message_type_name((int)e->message_type));
    }
    return;
  }
  if (e->message_type == MT(HELLO)) {
    posp2p__conn_violation(p, c, EC(INVALID_MESSAGE), POSP2P_ERR_STATE, REQ_CONN_HELLO,
                           e->message_id, false, "HELLO after the handshake");
    /* HELLO-16: otherwise ignored; it still counts as traffic (HB-8). */
    return;
  }
  if (p->is_main && !c->outgoing && c->dev != NULL) {
    /* MSG-6: a client sends the main POS only what it originates itself.
     * (Relayed frames keep their originator's id, but they travel from the
     * main POS to clients, never on this side of a client's connection.)
     * Rejected like any invalid message (MSG-30): not delivered, relayed
     * or acknowledged, the connection stays open; an ERROR is dropped
     * without a reply (ERR-5). */
    posp2p__uuid from;
    if (!posp2p__uuid_parse(e->from_device_id, &from) ||
        memcmp(from.b, c->dev->key.b, 16) != 0) {
      posp2p__conn_violation(p, c, e->message_type == MT(ERROR) ? 0 : EC(INVALID_MESSAGE),
                             POSP2P_ERR_BAD_ID, REQ_MSG_FROM, e->message_id, false,
                             "from_device_id %s is not %s, the device id of this "
                             "connection's HELLO",
                             e->from_device_id, c->dev->pub.id);
      return;
    }
  }
  posp2p__route_recv(p, c, e, body, len, p->now);
}

static void feed_v2(posp2p_peer *p, posp2p__conn *c, const uint8_t *data, size_t len) {
  while (len > 0 && !c->dead && c->state != POSP2P_CONN_CLOSING) {
    size_t used = 0;
    posp2p_frame fr;
    posp2p_error err;
    memset(&err, 0, sizeof err);
    int rc = posp2p_framer_next(&c->framer, data, len, &used, &fr, &err);
    data += used;
    len -= used;
    if (rc < 0) {
#if POSP2P_MUTANT(wedge_on_oversize)
      if (rc == POSP2P_ERR_FRAME_TOO_LARGE) mutant_wedged = true;
#endif
      if (rc == POSP2P_ERR_FRAME_TOO_LARGE)
        posp2p__conn_violation(p, c, EC(FRAME_TOO_LARGE), rc, REQ_FRAME_TOO_LARGE, NULL, true,
                               "%s", err.message);
      else if (rc == POSP2P_ERR_VARINT)
        posp2p__conn_violation(p, c, EC(MALFORMED_FRAME), rc, REQ_FRAME_VARINT, NULL, true,
                               "%s", err.message);
      else
        posp2p__conn_violation(p, c, EC(INTERNAL), rc, "", NULL, true, "%s",
                               posp2p_strerror(rc));
      return;
    }
    if (POSP2P_MUTANT(split_frame) && rc == 0) { posp2p_framer_free(&c->framer); posp2p_framer_init(&c->framer, p->cfg.max_frame, &p->alloc); }
    if (rc == 0) break;
    handle_frame(p, c, fr.data, fr.len);
    posp2p__arena_reset(p);
  }
}

static void handle_line(posp2p_peer *p, posp2p__conn *c, const uint8_t *line, size_t len) {
  p->stats.frames_in++;
  heard(p, c);
  if (!p->arena_init) {
    posp2p_arena_init(&p->arena, &p->alloc, 2048);
    p->arena_init = true;
  }
  posp2p_envelope *e = NULL;
  posp2p_error err;
  memset(&err, 0, sizeof err);
  int rc = posp2p_legacy_decode(line, len, &p->legacy_opts, &p->arena.base, &e, &err);
  if (rc != 0) {
    bool is_err = is_legacy_error_line(line, len);
    /* LEGACY-10: a line that is not JSON text (LEGACY-4, -5, -8) is
     * MALFORMED_FRAME; JSON with wrong or missing values (LEGACY-22) is
     * INVALID_MESSAGE. */
    const char *rq = err.requirement ? err.requirement : "";
    bool json = rc == POSP2P_ERR_JSON_SYNTAX || rc == POSP2P_ERR_JSON_UTF8 ||
                rc == POSP2P_ERR_JSON_DEPTH || rc == POSP2P_ERR_JSON_NUL ||
                strcmp(rq, "LEGACY-4") == 0 || strcmp(rq, "LEGACY-5") == 0 ||
                strcmp(rq, "LEGACY-8") == 0;
    posp2p__conn_violation(p, c, is_err ? 0 : json ? EC(MALFORMED_FRAME) : EC(INVALID_MESSAGE),
                           rc,
                           err.requirement && err.requirement[0] ? err.requirement
                           : json                                ? REQ_LEGACY_JSON
                                                                 : REQ_LEGACY_INVALID,
                           NULL, false,
                           "%s", err.message[0] ? err.message : posp2p_strerror(rc));
    return;
  }
  if (c->dev == NULL || c->hs == HS_LEGACY_FIRST) {
    posp2p__uuid id;
    posp2p__uuid_parse(e->from_device_id, &id);
    if (memcmp(id.b, p->id.b, 16) == 0) {
      posp2p__conn_violation(p, c, EC(DUPLICATE_DEVICE_ID), POSP2P_ERR_PROTOCOL,
                             REQ_CONN_DUPLICATE, e->message_id, true,
                             "legacy message claims this device's own id");
      return;
    }
    bool created;
    posp2p__device *d = posp2p__dev_get(p, &id, &created);
    if (d == NULL) {
      posp2p__conn_violation(p, c, EC(INTERNAL), POSP2P_ERR_NOMEM, "", e->message_id, true,
                             "device registry full");
      return;
    }
    /* Legacy senders often open one connection per message: the newest
     * connection becomes the device's route, older ones are left to end on
     * their own (no duplicate-id error on this wire). */
    posp2p__conn_bind(p, c, d);
    posp2p_addr a = {c->remote.ip, 0};
    if (e->message_type == MT(DEVICE_INFO))
      a.port = (uint16_t)e->device_info->port;
    posp2p__dev_update(p, d, created,
                       e->message_type == MT(DEVICE_INFO) ? e->device_info->device_name : NULL,
                       e->message_type == MT(DEVICE_INFO) ? (int)e->device_info->device_type
                                                          : -1,
                       &a, -1, POSP2P_PEER_WIRE_LEGACY);
    if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
    c->state = POSP2P_CONN_READY;
    posp2p__conn_ready(p, c);
    if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
  } else if (e->message_type == MT(DEVICE_INFO) && c->dev->conn == c) {
    posp2p_addr a = {c->remote.ip, (uint16_t)e->device_info->port};
    posp2p__dev_update(p, c->dev, false, e->device_info->device_name,
                       (int)e->device_info->device_type, &a, -1, -1);
    if (c->dead || c->state == POSP2P_CONN_CLOSING) return;
  }
  posp2p__route_recv(p, c, e, NULL, 0, p->now);
}

static void feed_legacy(posp2p_peer *p, posp2p__conn *c, const uint8_t *data, size_t len) {
  while (len > 0 && !c->dead && c->state != POSP2P_CONN_CLOSING) {
    size_t used = 0;
    posp2p_frame fr;
    posp2p_error err;
    memset(&err, 0, sizeof err);
    int rc = posp2p_ndjson_next(&c->ndjson, data, len, &used, &fr, &err);
    data += used;
    len -= used;
    if (rc < 0) {
      int code = rc == POSP2P_ERR_LINE_TOO_LONG ? EC(FRAME_TOO_LARGE)
                 : rc == POSP2P_ERR_NOMEM       ? EC(INTERNAL)
                                                : EC(MALFORMED_FRAME);
      posp2p__conn_violation(p, c, code, rc, REQ_LEGACY_LINE, NULL, true, "%s",
                             err.message[0] ? err.message : posp2p_strerror(rc));
      return;
    }
    if (rc == 0) break;
    handle_line(p, c, fr.data, fr.len);
    posp2p__arena_reset(p);
  }
}

/* Server side: a complete, valid client preface arrived. */
static void preface_received(posp2p_peer *p, posp2p__conn *c, uint8_t version) {
#if POSP2P_MUTANT(wedge_on_oversize)
  if (mutant_wedged) return;
#endif
  posp2p_framer_init(&c->framer, POSP2P_MUTANT(ignore_max_frame) ? UINT32_MAX : p->cfg.max_frame, &p->alloc);
  c->framer_init = true;
  if (!c->outgoing) {
    uint8_t pre[POSP2P_PREFACE_LEN];
    posp2p_preface_encode(pre, (uint8_t)POSP2P_VERSION);
    posp2p__blob *b = posp2p__blob_new(p, pre, sizeof pre);
    if (b == NULL) {
      posp2p__conn_start_close(p, c, POSP2P_ERR_NOMEM, "out of memory", true);
      return;
    }
    queue_push(p, c, b, NULL, 0, 10, 0);
    posp2p__blob_unref(p, b);
    c->can_frame = true;
  }
  if (version < POSP2P_VERSION) {
    posp2p__conn_violation(p, c, EC(UNSUPPORTED_VERSION), POSP2P_ERR_VERSION,
                           c->outgoing ? REQ_CONN_VERSION_CLIENT : REQ_CONN_VERSION, NULL, true, "preface announces version %u, this device needs %u",
                           version, POSP2P_VERSION);
    return;
  }
  if (c->over_limit) {
    posp2p__conn_violation(p, c, EC(TOO_MANY_CONNECTIONS), POSP2P_ERR_STATE, REQ_CONN_MAX, NULL,
                           true, "more than %u connections", p->cfg.max_connections);
    return;
  }
  c->hs = HS_HELLO;
  if (c->outgoing && send_hello(p, c, 0) != 0)
    posp2p__conn_start_close(p, c, POSP2P_ERR_NOMEM, "cannot queue HELLO", true);
}

int posp2p_peer_conn_recv(posp2p_peer *p, posp2p_conn_id id, const uint8_t *data,
                          size_t len, uint64_t now_ms) {
  if (p == NULL || (data == NULL && len > 0)) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  if (c->state == POSP2P_CONN_CLOSING || len == 0) return 0;
  if (c->state == POSP2P_CONN_CONNECTING) return POSP2P_ERR_STATE;
  POSP2P__ENTER(p, now_ms);
  p->stats.bytes_in += len;
  while (len > 0 && !c->dead && c->state != POSP2P_CONN_CLOSING) {
    if (c->hs == HS_DETECT) {
      posp2p_wire w = posp2p_wire_detect(data[0]);
      bool ok = (w == POSP2P_WIRE_V2 && p->cfg.wire != POSP2P_PEER_WIRE_LEGACY) ||
                (w == POSP2P_WIRE_LEGACY && p->cfg.wire != POSP2P_PEER_WIRE_V2);
      if (!ok) {
        /* Neither wire (or not the configured one): the remote would not
         * understand an error, so close without a reply. */
        posp2p__conn_violation(p, c, 0, POSP2P_ERR_BAD_PREFACE, REQ_CONN_WIRE_DETECT, NULL,
                               true, "first byte 0x%02x starts no accepted wire", data[0]);
        break;
      }
      if (w == POSP2P_WIRE_V2) {
        c->wire = POSP2P_PEER_WIRE_V2;
        c->hs = HS_PREFACE;
      } else {
        c->wire = POSP2P_PEER_WIRE_LEGACY;
        c->selected_version = 1;
        c->hs = HS_LEGACY_FIRST;
        posp2p_ndjson_init(&c->ndjson, p->cfg.max_frame, &p->alloc);
        c->ndjson_init = true;
        if (c->over_limit) {
          /* CONN-19: no byte at all for a legacy connection over the limit. */
          posp2p__conn_violation(p, c, 0, POSP2P_ERR_STATE, REQ_CONN_MAX_LEGACY, NULL, true,
                                 "more than %u connections", p->cfg.max_connections);
          break;
        }
      }
      continue;
    }
    if (c->hs == HS_PREFACE) {
      size_t take = POSP2P_PREFACE_LEN - c->preface_len;
      if (take > len) take = len;
      memcpy(c->preface + c->preface_len, data, take);
      c->preface_len = (uint8_t)(c->preface_len + take);
      data += take;
      len -= take;
      uint8_t version = 0;
      posp2p_error err;
      memset(&err, 0, sizeof err);
      int rc = posp2p_preface_parse(c->preface, c->preface_len, &version, &err);
      if (rc < 0) {
        /* Bad magic: MUST NOT send a v2 frame to a non-v2 peer. */
        posp2p__conn_violation(p, c, 0, rc, REQ_CONN_PREFACE, NULL, true, "bad preface: %s",
                               err.message);
        break;
      }
      if (rc == 0) continue;
      preface_received(p, c, version);
      continue;
    }
    if (c->wire == POSP2P_PEER_WIRE_LEGACY) {
      feed_legacy(p, c, data, len);
    } else {
      feed_v2(p, c, data, len);
    }
    break;
  }
  if (!c->dead && c->state != POSP2P_CONN_CLOSING) posp2p__conn_timer_update(p, c);
  POSP2P__LEAVE(p);
  return 0;
}

/* ---- Queries ------------------------------------------------------------------------------- */

int posp2p_peer_conn_info(const posp2p_peer *p, posp2p_conn_id id, posp2p_conn_info *out) {
  if (p == NULL || out == NULL) return POSP2P_ERR_INVAL;
  posp2p__conn *c = posp2p__conn_find(p, id);
  if (c == NULL) return POSP2P_ERR_NO_CONN;
  memset(out, 0, sizeof *out);
  out->state = c->state;
  out->outgoing = c->outgoing;
  out->wire = c->wire;
  out->remote = c->remote;
  if (c->dev != NULL) memcpy(out->device_id, c->dev->pub.id, sizeof out->device_id);
  out->queued_bytes = c->queued;
  out->peer_max_frame = c->peer_max_frame;
  out->selected_version = c->selected_version;
  return 0;
}
