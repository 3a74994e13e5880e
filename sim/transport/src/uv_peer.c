/* The libuv transport: context, peer lifecycle, TCP connections, timer.
 *
 * Invariants:
 *  - Every libuv handle a peer owns (listener, UDP socket, timer, one per
 *    connection) is counted in up->live from uv_*_init until its close_cb.
 *    The peer (and its engine) is freed only in the close_cb that brings
 *    live to 0 while the state is CLOSING; the timer is closed only by
 *    close_all, so that close_cb always comes from the loop and never from
 *    inside an engine call (posp2p_peer_del must not run inside one).
 *  - A connection's engine id is valid from conn_accept / conn_connect
 *    until the posp2p_peer_conn_closed we call in its close_cb
 *    (POSP2P__UV_CONN_NOTIFY). The bytes handed to uv_write are pinned by
 *    the engine until conn_consumed or conn_closed, so they are never copied.
 *  - After every input to the engine the timer is re-armed from
 *    posp2p_peer_next_deadline (posp2p__uv_rearm). */
#include <stdio.h>
#include <string.h>

#include "uv_int.h"

static void timer_cb(uv_timer_t *t);
static void close_all(posp2p_uv_peer *up);

/* ---- Context ---------------------------------------------------------------- */

int posp2p_uv_ctx_new(posp2p_uv_ctx **out, uv_loop_t *loop) {
  if (out == NULL || loop == NULL) return POSP2P_ERR_INVAL;
  *out = NULL;
  posp2p_uv_ctx *ctx = POSP2P__UV_CALLOC(sizeof(*ctx));
  if (ctx == NULL) return POSP2P_ERR_NOMEM;
  ctx->rbuf = POSP2P__UV_MALLOC(POSP2P__UV_RBUF_SIZE);
  if (ctx->rbuf == NULL) {
    POSP2P__UV_FREE(ctx);
    return POSP2P_ERR_NOMEM;
  }
  ctx->loop = loop;
  ctx->rnd_pos = POSP2P__UV_RND_POOL; /* empty: filled on first use */
  *out = ctx;
  return 0;
}

int posp2p_uv_ctx_del(posp2p_uv_ctx *ctx) {
  if (ctx == NULL) return 0;
  if (ctx->npeers != 0 || ctx->nrcv != 0 || ctx->nrcv_closing != 0 ||
      ctx->tick_handles_open || ctx->tick_handles_closing != 0)
    return POSP2P_ERR_STATE;
  POSP2P__UV_FREE(ctx->rbuf);
  POSP2P__UV_FREE(ctx);
  return 0;
}

uv_loop_t *posp2p_uv_ctx_loop(const posp2p_uv_ctx *ctx) { return ctx->loop; }
size_t posp2p_uv_ctx_peer_count(const posp2p_uv_ctx *ctx) { return ctx->npeers; }
size_t posp2p_uv_ctx_receiver_count(const posp2p_uv_ctx *ctx) {
  return ctx->nrcv + ctx->nrcv_closing;
}

void posp2p__uv_rbuf_get(posp2p_uv_ctx *ctx, uv_buf_t *buf) {
  if (!ctx->rbuf_busy) {
    ctx->rbuf_busy = true;
    *buf = uv_buf_init((char *)ctx->rbuf, POSP2P__UV_RBUF_SIZE);
    return;
  }
  /* Re-entered while the shared buffer is in use: give a private one
   * (released by posp2p__uv_release_buf). A NULL base makes libuv report
   * UV_ENOBUFS to the read callback. */
  char *p = POSP2P__UV_MALLOC(POSP2P__UV_RBUF_SIZE);
  *buf = uv_buf_init(p, p ? POSP2P__UV_RBUF_SIZE : 0);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  posp2p__uv_conn *c = h->data;
  (void)suggested;
  posp2p__uv_rbuf_get(c->up->ctx, buf);
}

void posp2p__uv_release_buf(posp2p_uv_ctx *ctx, const uv_buf_t *buf) {
  if (buf->base == NULL) return;
  if ((uint8_t *)buf->base == ctx->rbuf) ctx->rbuf_busy = false;
  else POSP2P__UV_FREE(buf->base);
}

/* ---- Warnings, timer ---------------------------------------------------------- */

void posp2p__uv_warn(posp2p_uv_peer *up, int code, const char *fmt, ...) {
  if (up->cb.on_warning == NULL) return;
  char text[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  up->cb.on_warning(up, code, text, up->user_data);
}

static uint64_t now_of(const posp2p_uv_peer *up) { return uv_now(up->ctx->loop); }

void posp2p__uv_rearm(posp2p_uv_peer *up) {
  if (!up->timer_open || up->state == POSP2P__UV_CLOSING) return;
  uint64_t now = now_of(up);
  uint64_t d = UINT64_MAX;
  if (up->state == POSP2P__UV_RUNNING || up->state == POSP2P__UV_SHUTTING)
    d = posp2p_peer_next_deadline(up->engine, now);
  if (up->hard_deadline < d) d = up->hard_deadline;
  if (d == UINT64_MAX) {
    if (up->armed != UINT64_MAX) uv_timer_stop(&up->timer);
    up->armed = UINT64_MAX;
    return;
  }
  if (d == up->armed && uv_is_active((uv_handle_t *)&up->timer)) return;
  uv_timer_start(&up->timer, timer_cb, d > now ? d - now : 0, 0);
  up->armed = d;
}

/* Why engine ticks are deferred: libuv runs expired timers BEFORE it polls
 * for I/O. A process that was stopped (SIGSTOP, a long GC in a co-located
 * app, a swapped-out VM) wakes with a device-timeout deadline in the past
 * and the peer's heartbeats already waiting in the socket buffer; ticking
 * in the timer callback would declare a live peer dead (HB-6) before
 * reading them. So the timer only marks the peer due; a per-loop idle
 * handle makes that iteration's poll non-blocking, and the per-loop check
 * handle, which runs right after the poll, ticks every due peer with the
 * input already delivered. */
static void check_cb(uv_check_t *h) {
  posp2p_uv_ctx *ctx = h->data;
  posp2p_uv_peer *list = ctx->due_head;
  ctx->due_head = NULL;
  uv_idle_stop(&ctx->idle);
  uv_check_stop(&ctx->check);
  while (list != NULL) {
    posp2p_uv_peer *up = list;
    list = up->due_next;
    up->due = false;
    up->due_next = NULL;
    if (up->state == POSP2P__UV_RUNNING || up->state == POSP2P__UV_SHUTTING) {
      int r = posp2p_peer_tick(up->engine, now_of(up));
      if (r < 0)
        posp2p__uv_warn(up, r, "tick: %s", posp2p_uv_strerror(r));
    }
    posp2p__uv_rearm(up);
  }
}

static void idle_cb(uv_idle_t *h) { (void)h; }

static void tick_handle_close_cb(uv_handle_t *h) {
  posp2p_uv_ctx *ctx = h->data;
  ctx->tick_handles_closing--;
}

/* Returns 0 when the tick is deferred to the check phase, or a libuv error
 * (the caller then ticks at once: late detection beats none). */
static int schedule_tick(posp2p_uv_peer *up) {
  posp2p_uv_ctx *ctx = up->ctx;
  if (!ctx->tick_handles_open) {
    int r = uv_check_init(ctx->loop, &ctx->check);
    if (r != 0) return r;
    r = uv_idle_init(ctx->loop, &ctx->idle);
    if (r != 0) {
      ctx->check.data = ctx;
      ctx->tick_handles_closing++;
      uv_close((uv_handle_t *)&ctx->check, tick_handle_close_cb);
      return r;
    }
    ctx->check.data = ctx;
    ctx->idle.data = ctx;
    ctx->tick_handles_open = true;
  }
  if (!up->due) {
    up->due = true;
    up->due_next = ctx->due_head;
    ctx->due_head = up;
  }
  uv_idle_start(&ctx->idle, idle_cb);
  uv_check_start(&ctx->check, check_cb);
  return 0;
}

static void unschedule_tick(posp2p_uv_peer *up) {
  if (!up->due) return;
  for (posp2p_uv_peer **pp = &up->ctx->due_head; *pp != NULL;
       pp = &(*pp)->due_next) {
    if (*pp == up) {
      *pp = up->due_next;
      break;
    }
  }
  up->due = false;
  up->due_next = NULL;
}

static void timer_cb(uv_timer_t *t) {
  posp2p_uv_peer *up = t->data;
  up->armed = UINT64_MAX;
  uint64_t now = now_of(up);
  if (up->state == POSP2P__UV_SHUTTING && now >= up->hard_deadline) {
    posp2p__uv_warn(up, POSP2P_ERR_TIMEOUT,
                    "shutdown deadline passed; closing connections now");
    close_all(up);
    return;
  }
  if (up->state != POSP2P__UV_RUNNING && up->state != POSP2P__UV_SHUTTING)
    return;
  int r = schedule_tick(up);
  if (r != 0) {
    posp2p__uv_warn(up, POSP2P_UV_CODE(r),
                    "cannot defer the tick (%s); ticking before reading input",
                    uv_strerror(r));
    r = posp2p_peer_tick(up->engine, now);
    if (r < 0) posp2p__uv_warn(up, r, "tick: %s", posp2p_uv_strerror(r));
    posp2p__uv_rearm(up);
  }
}

/* ---- Freeing ----------------------------------------------------------------- */

static void peer_free(posp2p_uv_peer *up) {
  posp2p_uv_ctx *ctx = up->ctx;
  if (!up->failed && up->cb.on_closed != NULL)
    up->cb.on_closed(up, up->user_data);
  posp2p_peer_del(up->engine);
  posp2p__uv_connmap_free(&up->conns);
  unschedule_tick(up);
  if (up->prev) up->prev->next = up->next;
  else ctx->peers = up->next;
  if (up->next) up->next->prev = up->prev;
  ctx->npeers--;
  POSP2P__UV_FREE(up);
  /* The last peer is gone: release the loop's tick handles so that the
   * loop can end and posp2p_uv_ctx_del can succeed. */
  if (ctx->npeers == 0 && ctx->tick_handles_open) {
    ctx->tick_handles_open = false;
    ctx->tick_handles_closing += 2;
    uv_close((uv_handle_t *)&ctx->check, tick_handle_close_cb);
    uv_close((uv_handle_t *)&ctx->idle, tick_handle_close_cb);
  }
}

void posp2p__uv_handle_closed(posp2p_uv_peer *up) {
  up->live--;
  if (up->live == 0 && up->state == POSP2P__UV_CLOSING) peer_free(up);
}

static void peer_handle_close_cb(uv_handle_t *h) {
  posp2p_uv_peer *up = h->data;
  if (h == (uv_handle_t *)&up->timer) up->timer_open = false;
  posp2p__uv_handle_closed(up);
}

/* The listener, UDP socket and timer store `up` in data. */
static void close_peer_handle(uv_handle_t *h, bool *open) {
  if (!*open) return;
  *open = false;
  uv_close(h, peer_handle_close_cb);
}

/* ---- Connections -------------------------------------------------------------- */

static void conn_close_cb(uv_handle_t *h) {
  posp2p__uv_conn *c = h->data;
  posp2p_uv_peer *up = c->up;
  if (c->flags & POSP2P__UV_CONN_MAPPED)
    posp2p__uv_connmap_del(&up->conns, c->id);
  if (c->flags & POSP2P__UV_CONN_NOTIFY) {
    int r = posp2p_peer_conn_closed(up->engine, c->id, c->close_code,
                                    now_of(up));
    (void)r; /* NO_CONN only if the engine already forgot it */
  }
  POSP2P__UV_FREE(c);
  posp2p__uv_rearm(up);
  posp2p__uv_handle_closed(up);
}

static void conn_begin_close(posp2p__uv_conn *c, int code) {
  if (c->flags & POSP2P__UV_CONN_CLOSING) return;
  c->flags |= POSP2P__UV_CONN_CLOSING;
  c->close_code = code;
  uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static posp2p__uv_conn *conn_alloc(posp2p_uv_peer *up, int *rc) {
  posp2p__uv_conn *c = POSP2P__UV_CALLOC(sizeof(*c));
  if (c == NULL) {
    *rc = POSP2P_ERR_NOMEM;
    return NULL;
  }
  int r = uv_tcp_init(up->ctx->loop, &c->tcp);
  if (r < 0) {
    POSP2P__UV_FREE(c);
    *rc = POSP2P_UV_CODE(r);
    return NULL;
  }
  c->up = up;
  c->tcp.data = c;
  up->live++;
  *rc = 0;
  return c;
}

static void write_cb(uv_write_t *req, int status);

/* Hand the engine's pending bytes to uv_write, unless a write is already in
 * flight (write_cb continues then). */
static void conn_flush(posp2p__uv_conn *c) {
  posp2p_uv_peer *up = c->up;
  if (c->writing != 0 || (c->flags & POSP2P__UV_CONN_CLOSING) ||
      !(c->flags & POSP2P__UV_CONN_ESTABLISHED) ||
      !(c->flags & POSP2P__UV_CONN_NOTIFY))
    return;
  posp2p_iov iov[POSP2P__UV_IOV_MAX];
  size_t niov = 0, total = 0;
  if (posp2p_peer_conn_pending(up->engine, c->id, iov, POSP2P__UV_IOV_MAX,
                               &niov, &total) < 0 ||
      niov == 0)
    return;
  uv_buf_t bufs[POSP2P__UV_IOV_MAX];
  size_t sum = 0;
  for (size_t i = 0; i < niov; i++) {
    bufs[i] = uv_buf_init((char *)(uintptr_t)iov[i].base, (unsigned)iov[i].len);
    sum += iov[i].len;
  }
  if (sum == 0) return;
  c->req.write.data = c;
  int r = uv_write(&c->req.write, (uv_stream_t *)&c->tcp, bufs,
                   (unsigned)niov, write_cb);
  if (r < 0) {
    conn_begin_close(c, posp2p__uv_close_code(r));
    return;
  }
  up->stats.writes++;
  c->writing = sum;
}

static void write_cb(uv_write_t *req, int status) {
  posp2p__uv_conn *c = req->data;
  posp2p_uv_peer *up = c->up;
  size_t n = c->writing;
  c->writing = 0;
  if (status == UV_ECANCELED) return; /* handle closing; close_cb follows */
  if (status < 0) {
    conn_begin_close(c, posp2p__uv_close_code(status));
    return;
  }
  if (c->flags & POSP2P__UV_CONN_NOTIFY)
    (void)posp2p_peer_conn_consumed(up->engine, c->id, n, now_of(up));
  conn_flush(c);
  posp2p__uv_rearm(up);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  posp2p__uv_conn *c = s->data;
  posp2p_uv_peer *up = c->up;
  if (nread > 0) {
    if (!(c->flags & POSP2P__UV_CONN_CLOSING)) {
      int r = posp2p_peer_conn_recv(up->engine, c->id, (const uint8_t *)buf->base,
                                    (size_t)nread, now_of(up));
      if (r == POSP2P_ERR_NO_CONN) {
        c->flags &= ~(unsigned)POSP2P__UV_CONN_NOTIFY;
        conn_begin_close(c, 0);
      }
    }
  } else if (nread == UV_EOF && (c->flags & POSP2P__UV_CONN_NOTIFY) &&
             !(c->flags & POSP2P__UV_CONN_CLOSING)) {
    /* The remote finished sending; libuv has stopped reading, but the
     * socket still writes. The engine writes out what it queued (a legacy
     * sender that half-closed still gets its acknowledgement, LEGACY-17)
     * and then asks for the close through cb_conn_close. */
    int r = posp2p_peer_conn_eof(up->engine, c->id, now_of(up));
    if (r == POSP2P_ERR_NO_CONN) c->flags &= ~(unsigned)POSP2P__UV_CONN_NOTIFY;
    if (r < 0) conn_begin_close(c, 0);
  } else if (nread < 0) {
    if (nread != UV_EOF) up->stats.read_errors++;
    conn_begin_close(c, posp2p__uv_close_code((int)nread));
  }
  posp2p__uv_release_buf(up->ctx, buf);
  posp2p__uv_rearm(up);
}

/* A connection became usable (accepted and registered, or connected). */
static void conn_established(posp2p__uv_conn *c) {
  c->flags |= POSP2P__UV_CONN_ESTABLISHED;
  (void)uv_tcp_nodelay(&c->tcp, 1);
  int r = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, read_cb);
  if (r < 0) {
    conn_begin_close(c, posp2p__uv_close_code(r));
  }
}

static void connection_cb(uv_stream_t *server, int status) {
  posp2p_uv_peer *up = server->data;
  if (status < 0) {
    posp2p__uv_warn(up, POSP2P_UV_CODE(status), "accept: %s",
                    uv_strerror(status));
    return;
  }
  int rc;
  posp2p__uv_conn *c = conn_alloc(up, &rc);
  if (c == NULL) {
    posp2p__uv_warn(up, rc, "accept: %s", posp2p_uv_strerror(rc));
    return;
  }
  int r = uv_accept(server, (uv_stream_t *)&c->tcp);
  if (r < 0) {
    posp2p__uv_warn(up, POSP2P_UV_CODE(r), "accept: %s", uv_strerror(r));
    conn_begin_close(c, 0);
    return;
  }
  up->stats.accepted++;
  if (up->state != POSP2P__UV_RUNNING) {
    conn_begin_close(c, 0);
    return;
  }
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  posp2p_addr remote = {0, 0};
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
    posp2p__uv_addr_from(&remote, (struct sockaddr *)&ss);
  posp2p_conn_id id = 0;
  r = posp2p_peer_conn_accept(up->engine, &remote, now_of(up), &id);
  if (r < 0) {
    conn_begin_close(c, 0);
    posp2p__uv_rearm(up);
    return;
  }
  c->id = id;
  c->flags |= POSP2P__UV_CONN_NOTIFY;
  r = posp2p__uv_connmap_put(&up->conns, c);
  if (r < 0) {
    conn_begin_close(c, r);
    posp2p__uv_rearm(up);
    return;
  }
  c->flags |= POSP2P__UV_CONN_MAPPED;
  conn_established(c);
  conn_flush(c); /* in case the engine queued bytes inside conn_accept */
  posp2p__uv_rearm(up);
}

static void connect_cb(uv_connect_t *req, int status) {
  posp2p__uv_conn *c = req->data;
  posp2p_uv_peer *up = c->up;
  if (status == UV_ECANCELED) return; /* closing; close_cb notifies */
  if (status < 0) {
    up->stats.connect_failed++;
    conn_begin_close(c, posp2p__uv_close_code(status));
    return;
  }
  conn_established(c);
  if (c->flags & POSP2P__UV_CONN_CLOSING) return;
  int r = posp2p_peer_conn_connected(up->engine, c->id, now_of(up));
  if (r < 0) {
    /* The engine no longer expects this connection. */
    if (r == POSP2P_ERR_NO_CONN) c->flags &= ~(unsigned)POSP2P__UV_CONN_NOTIFY;
    conn_begin_close(c, r);
  } else {
    conn_flush(c);
  }
  posp2p__uv_rearm(up);
}

static int cb_conn_connect(posp2p_peer *p, posp2p_conn_id id,
                           const posp2p_addr *to, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  if (up->state != POSP2P__UV_RUNNING) return POSP2P_UV_CODE(UV_ECANCELED);
  int rc;
  posp2p__uv_conn *c = conn_alloc(up, &rc);
  if (c == NULL) return rc;
  c->id = id;
  int r = 0;
  if (up->opts.bind_connects && up->opts.bind_ip != 0) {
    struct sockaddr_in src;
    posp2p__uv_sockaddr(&src, up->opts.bind_ip, 0);
    r = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
  }
  if (r == 0) {
    struct sockaddr_in dst;
    posp2p__uv_sockaddr(&dst, to->ip, to->port);
    c->req.connect.data = c;
    r = uv_tcp_connect(&c->req.connect, &c->tcp, (const struct sockaddr *)&dst,
                       connect_cb);
  }
  if (r == 0) r = posp2p__uv_connmap_put(&up->conns, c) < 0 ? UV_ENOMEM : 0;
  up->stats.connects++;
  if (r < 0) {
    char a[22];
    posp2p_uv_addr_format(to, a);
    posp2p__uv_warn(up, POSP2P_UV_CODE(r), "connect %s: %s", a, uv_strerror(r));
    up->stats.connect_failed++;
    /* The engine reports the failure itself: no conn_closed. */
    conn_begin_close(c, 0);
    return POSP2P_UV_CODE(r);
  }
  c->flags |= POSP2P__UV_CONN_NOTIFY | POSP2P__UV_CONN_MAPPED;
  return 0;
}

static void cb_conn_want_write(posp2p_peer *p, posp2p_conn_id id, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  posp2p__uv_conn *c = posp2p__uv_connmap_get(&up->conns, id);
  if (c != NULL) conn_flush(c);
}

static void cb_conn_close(posp2p_peer *p, posp2p_conn_id id, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  posp2p__uv_conn *c = posp2p__uv_connmap_get(&up->conns, id);
  if (c != NULL) conn_begin_close(c, 0);
}

static void cb_rand(posp2p_peer *p, uint8_t *buf, size_t len, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  posp2p__uv_ctx_rand(up->ctx, buf, len);
}

static uint64_t cb_wall_ms(posp2p_peer *p, void *ud) {
  (void)p;
  (void)ud;
  return posp2p_uv_wall_ms();
}

static void cb_on_event(posp2p_peer *p, const posp2p_peer_event *ev, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  if (up->cb.on_event != NULL) up->cb.on_event(up, ev, up->user_data);
  if (ev->type == POSP2P_PEER_EV_SHUTDOWN_DONE &&
      up->state == POSP2P__UV_SHUTTING)
    close_all(up);
}

/* ---- Peer lifecycle ------------------------------------------------------------ */

void posp2p_uv_opts_init(posp2p_uv_opts *o) {
  memset(o, 0, sizeof(*o));
  o->bind_ip = 0x7f000001u;
  o->tcp_port = POSP2P_DATA_PORT;
  o->tcp_listen = true;
  o->udp = true;
  o->bind_connects = true;
  o->tcp_backlog = 511;
}

static void close_all(posp2p_uv_peer *up) {
  if (up->state == POSP2P__UV_CLOSING) return;
  up->state = POSP2P__UV_CLOSING;
  posp2p__uv_rcv_leave(up);
  close_peer_handle((uv_handle_t *)&up->listener, &up->listener_open);
  close_peer_handle((uv_handle_t *)&up->udp, &up->udp_open);
  /* conn_begin_close only calls uv_close; the map changes in close_cb. */
  for (size_t i = 0; i < up->conns.cap; i++) {
    posp2p__uv_conn *c = up->conns.slots[i];
    if (c != NULL) conn_begin_close(c, POSP2P_ERR_SHUTDOWN);
  }
  if (up->timer_open) {
    up->timer_open = false;
    uv_close((uv_handle_t *)&up->timer, peer_handle_close_cb);
  }
}

static int listen_open(posp2p_uv_peer *up, posp2p_uv_error *err) {
  char a[22];
  posp2p_addr want = {up->opts.bind_ip, up->opts.tcp_port};
  posp2p_uv_addr_format(&want, a);
  int r = uv_tcp_init(up->ctx->loop, &up->listener);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "tcp %s: %s", a,
                              uv_strerror(r));
  up->listener.data = up;
  up->listener_open = true;
  up->live++;
  struct sockaddr_in sa;
  posp2p__uv_sockaddr(&sa, up->opts.bind_ip, up->opts.tcp_port);
  r = uv_tcp_bind(&up->listener, (const struct sockaddr *)&sa, 0);
  /* libuv defers EADDRINUSE from bind to listen. */
  if (r == 0)
    r = uv_listen((uv_stream_t *)&up->listener,
                  up->opts.tcp_backlog > 0 ? up->opts.tcp_backlog : 511,
                  connection_cb);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "bind tcp %s: %s", a,
                              uv_strerror(r));
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  r = uv_tcp_getsockname(&up->listener, (struct sockaddr *)&ss, &len);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "tcp %s: getsockname: %s",
                              a, uv_strerror(r));
  posp2p__uv_addr_from(&up->tcp_addr, (struct sockaddr *)&ss);
  return 0;
}

int posp2p_uv_peer_new(posp2p_uv_peer **out, posp2p_uv_ctx *ctx,
                       const posp2p_peer_config *cfg,
                       const posp2p_peer_store *store,
                       const posp2p_uv_opts *opts,
                       const posp2p_uv_callbacks *cb, void *user_data,
                       posp2p_uv_error *err) {
  if (out == NULL || ctx == NULL || cfg == NULL)
    return posp2p__uv_err_set(err, POSP2P_ERR_INVAL, "invalid argument");
  *out = NULL;
  posp2p_uv_opts o;
  if (opts != NULL) o = *opts;
  else posp2p_uv_opts_init(&o);
  if (o.bind_ip == 0) o.bind_connects = false;

  if (!o.allow_lan && !posp2p_uv_ip_is_loopback(cfg->broadcast_ip)) {
    char b[16];
    posp2p_uv_ip_format(cfg->broadcast_ip, b);
    return posp2p__uv_err_set(
        err, POSP2P_ERR_CONFIG,
        "broadcast address %s is outside 127.0.0.0/8 (allow it explicitly "
        "for a LAN or a network namespace)",
        b);
  }
  posp2p_error cerr;
  memset(&cerr, 0, sizeof(cerr));
  if (posp2p_peer_config_check(cfg, &cerr) < 0)
    return posp2p__uv_err_set(err, POSP2P_ERR_CONFIG, "config: %s",
                              cerr.message);

  posp2p_uv_peer *up = POSP2P__UV_CALLOC(sizeof(*up));
  if (up == NULL) return posp2p__uv_err_set(err, POSP2P_ERR_NOMEM, "out of memory");
  up->ctx = ctx;
  up->opts = o;
  up->user_data = user_data;
  if (cb != NULL) up->cb = *cb;
  up->armed = UINT64_MAX;
  up->hard_deadline = UINT64_MAX;
  up->broadcast_ip = cfg->broadcast_ip;
  up->disc_port = cfg->discovery_port;
  up->state = POSP2P__UV_NEW;
  up->next = ctx->peers;
  if (ctx->peers) ctx->peers->prev = up;
  ctx->peers = up;
  ctx->npeers++;

  int r = uv_timer_init(ctx->loop, &up->timer);
  if (r < 0) {
    /* Nothing is open yet: free synchronously. */
    up->failed = true;
    up->state = POSP2P__UV_CLOSING;
    up->live = 1;
    posp2p__uv_handle_closed(up);
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "timer: %s",
                              uv_strerror(r));
  }
  up->timer.data = up;
  up->timer_open = true;
  up->live++;

  if (o.tcp_listen) r = listen_open(up, err);
  if (r == 0 && o.udp) r = posp2p__uv_udp_open(up, err);
  if (r == 0) {
    posp2p_peer_config c = *cfg;
    c.listen_port = o.tcp_listen ? up->tcp_addr.port : 0;
    char ipbuf[16];
    if (c.ip_address == NULL || c.ip_address[0] == '\0') {
      posp2p_uv_ip_format(o.bind_ip, ipbuf);
      c.ip_address = ipbuf;
    }
    posp2p_peer_callbacks ecb;
    memset(&ecb, 0, sizeof(ecb));
    ecb.rand = cb_rand;
    ecb.wall_ms = cb_wall_ms;
    ecb.conn_want_write = cb_conn_want_write;
    ecb.conn_connect = cb_conn_connect;
    ecb.conn_close = cb_conn_close;
    ecb.send_datagram = posp2p__uv_send_datagram;
    ecb.on_event = cb_on_event;
    r = posp2p_peer_new(&up->engine, &c, &ecb, store, NULL, up);
    if (r < 0)
      posp2p__uv_err_set(err, r, "engine: %s", posp2p_peer_strerror(r));
  }
  if (r < 0) {
    up->failed = true;
    close_all(up);
    return r;
  }
  *out = up;
  return 0;
}

posp2p_peer *posp2p_uv_peer_engine(posp2p_uv_peer *up) { return up->engine; }
void *posp2p_uv_peer_user_data(const posp2p_uv_peer *up) { return up->user_data; }
posp2p_uv_ctx *posp2p_uv_peer_ctx(const posp2p_uv_peer *up) { return up->ctx; }
posp2p_addr posp2p_uv_peer_tcp_addr(const posp2p_uv_peer *up) { return up->tcp_addr; }
posp2p_addr posp2p_uv_peer_udp_addr(const posp2p_uv_peer *up) { return up->udp_addr; }
uint64_t posp2p_uv_peer_now(const posp2p_uv_peer *up) { return now_of(up); }
const posp2p_uv_stats *posp2p_uv_peer_stats(const posp2p_uv_peer *up) {
  return &up->stats;
}
void posp2p_uv_peer_kick(posp2p_uv_peer *up) { posp2p__uv_rearm(up); }

int posp2p_uv_peer_start(posp2p_uv_peer *up, posp2p_uv_error *err) {
  if (up->state != POSP2P__UV_NEW)
    return posp2p__uv_err_set(err, POSP2P_ERR_STATE, "peer already started");
  int r = 0;
  if (up->udp_open) r = posp2p__uv_udp_start(up, err);
  if (r < 0) return r;
  up->state = POSP2P__UV_RUNNING;
  r = posp2p_peer_start(up->engine, now_of(up));
  if (r < 0) {
    up->state = POSP2P__UV_NEW;
    return posp2p__uv_err_set(err, r, "engine start: %s",
                              posp2p_peer_strerror(r));
  }
  posp2p__uv_rearm(up);
  return 0;
}

static int running(const posp2p_uv_peer *up) {
  return up->state == POSP2P__UV_RUNNING ? 0 : POSP2P_ERR_STATE;
}

int posp2p_uv_peer_send(posp2p_uv_peer *up, const posp2p_envelope *msg,
                        char message_id_out[POSP2P_UUID_LEN + 1]) {
  int r = running(up);
  if (r < 0) return r;
  r = posp2p_peer_send(up->engine, msg, now_of(up), message_id_out);
  posp2p__uv_rearm(up);
  return r;
}

int posp2p_uv_peer_connect(posp2p_uv_peer *up, const posp2p_addr *to,
                           posp2p_peer_wire wire, const char *expected_id,
                           posp2p_conn_id *out) {
  int r = running(up);
  if (r < 0) return r;
  r = posp2p_peer_connect(up->engine, to, wire, expected_id, now_of(up), out);
  posp2p__uv_rearm(up);
  return r;
}

int posp2p_uv_peer_connect_stop(posp2p_uv_peer *up, const posp2p_addr *to,
                                const char *reason) {
  if (up->state != POSP2P__UV_RUNNING && up->state != POSP2P__UV_SHUTTING)
    return POSP2P_ERR_STATE;
  int r = posp2p_peer_connect_stop(up->engine, to, reason, now_of(up));
  posp2p__uv_rearm(up);
  return r;
}

int posp2p_uv_peer_discover(posp2p_uv_peer *up) {
  int r = running(up);
  if (r < 0) return r;
  r = posp2p_peer_discover(up->engine, now_of(up));
  posp2p__uv_rearm(up);
  return r;
}

int posp2p_uv_peer_conn_close(posp2p_uv_peer *up, posp2p_conn_id conn,
                              const char *reason) {
  if (up->state != POSP2P__UV_RUNNING && up->state != POSP2P__UV_SHUTTING)
    return POSP2P_ERR_STATE;
  int r = posp2p_peer_conn_close(up->engine, conn, reason, now_of(up));
  posp2p__uv_rearm(up);
  return r;
}

int posp2p_uv_peer_shutdown(posp2p_uv_peer *up, const char *reason,
                            uint32_t deadline_ms) {
  if (up->state == POSP2P__UV_NEW) {
    close_all(up);
    return 0;
  }
  if (up->state != POSP2P__UV_RUNNING) return POSP2P_ERR_STATE;
  up->state = POSP2P__UV_SHUTTING;
  up->hard_deadline = now_of(up) + deadline_ms;
  /* Stop accepting connections and datagrams at once. */
  posp2p__uv_rcv_leave(up);
  close_peer_handle((uv_handle_t *)&up->listener, &up->listener_open);
  close_peer_handle((uv_handle_t *)&up->udp, &up->udp_open);
  int r = posp2p_peer_shutdown(up->engine, reason ? reason : "shutdown",
                               now_of(up));
  if (r < 0 && up->state == POSP2P__UV_SHUTTING) close_all(up);
  posp2p__uv_rearm(up);
  return 0;
}

void posp2p_uv_peer_abort(posp2p_uv_peer *up) { close_all(up); }
