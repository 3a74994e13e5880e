/* The fault interposer (see fault.h). Invariants:
 *  - Bytes of one connection reach the engine in arrival order, except
 *    frames a fault drops, duplicates or holds for reordering; FIFO-held
 *    items (delays, and everything that arrives behind them) keep their
 *    relative order because their release times never decrease.
 *  - A connection's state is freed when the engine reports it closed; if
 *    that happens while the interposer is inside an engine call for it
 *    (busy), the free waits until the call returns.
 *  - Only whole frames are ever dropped, so the engine's framing stays
 *    intact; a frame that cannot be parsed turns the connection into raw
 *    pass-through for the engine to judge. */
#include "fault.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checker.h"
#include "rng.h"

int __real_posp2p_peer_conn_recv(posp2p_peer *p, posp2p_conn_id id, const uint8_t *data,
                                 size_t len, uint64_t now_ms);
int __wrap_posp2p_peer_conn_recv(posp2p_peer *p, posp2p_conn_id id, const uint8_t *data,
                                 size_t len, uint64_t now_ms);
int __real_posp2p_peer_datagram_recv(posp2p_peer *p, const posp2p_addr *from,
                                     const uint8_t *data, size_t len, uint64_t now_ms);
int __wrap_posp2p_peer_datagram_recv(posp2p_peer *p, const posp2p_addr *from,
                                     const uint8_t *data, size_t len, uint64_t now_ms);
int __real_uv_read_start(uv_stream_t *s, uv_alloc_cb a, uv_read_cb r);
int __wrap_uv_read_start(uv_stream_t *s, uv_alloc_cb a, uv_read_cb r);

#define GATE_STOP (256u * 1024u)   /* stop reading above this */
#define GATE_RESUME (64u * 1024u)  /* resume below this */
#define MAX_SLOW_FRAME (2u * 1024u * 1024u)
#define TICK_MS 5u
#define WATCH_MS 250u

enum { W_UNKNOWN = 0, W_LEGACY = 1, W_V2 = 2, W_RAW = 3 };

typedef struct item {
  struct item *next;
  uint64_t release; /* uv_now ms */
  uint64_t seq;
  bool fifo;
  bool frame;       /* a whole frame (counts as heard) */
  size_t len;
  uint8_t data[];
} item;

struct fi_eng;
typedef struct fi_conn {
  struct fi_eng *e;
  posp2p_conn_id id;
  struct fi_conn *enext, *eprev;   /* engine's list */
  struct fi_conn *anext, *aprev;   /* active list (queued or gated) */
  bool active;
  uint32_t remote;                 /* device index, FL_NO_DEV unknown */
  /* gate */
  uint8_t *gate;
  size_t gate_len, gate_cap;
  double tokens;
  uint64_t tok_t;
  /* framing */
  uint8_t wire, pre_left;
  bool in_frame, slow, have_len;
  uint8_t hdr_len;
  uint64_t body_len, body_have;
  uint8_t *fbuf;
  size_t flen, fcap;
  /* held items, sorted by (release, seq) */
  item *q;
  size_t qn, qbytes;
  uint64_t fifo_release;
  /* watchdog */
  bool ready, reported;
  uint64_t last_frame_ms;
  uint32_t timeout_ms;
  int busy;
  bool dead;
  uv_stream_t *stream;
  bool read_stopped;
} fi_conn;

typedef struct fi_eng {
  posp2p_peer *eng;
  posp2p_uv_peer *up;
  uint32_t dev;
  fi_conn *conns;
} fi_eng;

typedef struct {
  uv_alloc_cb alloc;
  uv_read_cb read;
  fi_conn *conn;
} stream_ent;

static struct {
  bool on;
  uv_loop_t *loop;
  const fl_plan *plan;
  const fl_config *cfg;
  uint64_t t0;
  fl_fi_callbacks cb;
  fl_kmap engs, conns, streams;
  fi_conn *active;
  uv_timer_t tick, watch;
  bool tick_open, tick_running, watch_open;
  fl_rng rng;
  fl_fi_stats st;
  bool final;
  bool any_frame_faults, any_gate_faults, any_disc_faults;
  uv_stream_t *cur_stream;
  uint64_t seq;
} G;

static uint64_t now_ms(void) { return uv_now(G.loop); }
static uint64_t run_ms(void) {
  uint64_t n = now_ms();
  return n > G.t0 ? n - G.t0 : 0;
}

static bool active_at(const fl_fault *f, uint64_t t) {
  return t >= f->start_ms && t < f->end_ms;
}

static bool hits(size_t f, uint32_t dev) {
  return dev != FL_NO_DEV && fl_plan_fault_hits(G.plan, f, dev);
}

static bool type_ok(const fl_fault *f, int type) {
  return f->types == 0 || (type >= 0 && type < 64 && (f->types >> type) & 1u);
}

static bool link_hit(size_t f, uint32_t L, uint32_t R) {
  switch (G.cfg->faults[f].dir) {
  case FL_DIR_IN: return hits(f, L);
  case FL_DIR_OUT: return hits(f, R);
  default: return hits(f, L) || hits(f, R);
  }
}

static bool is_frame_kind(fl_fault_kind k) {
  return k == FL_FAULT_DROP || k == FL_FAULT_DELAY || k == FL_FAULT_DUPLICATE ||
         k == FL_FAULT_REORDER || k == FL_FAULT_WITHHOLD_ACKS ||
         k == FL_FAULT_WITHHOLD_HEARTBEATS || k == FL_FAULT_SILENCE;
}

/* ---- Setup ---------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t);
static void watch_cb(uv_timer_t *t);

int fl_fi_init(uv_loop_t *loop, const fl_plan *plan, const fl_config *cfg, uint64_t t0_ms,
               const fl_fi_callbacks *cb) {
  memset(&G, 0, sizeof(G));
  G.loop = loop;
  G.plan = plan;
  G.cfg = cfg;
  G.t0 = t0_ms;
  if (cb) G.cb = *cb;
  fl_kmap_init(&G.engs);
  fl_kmap_init(&G.conns);
  fl_kmap_init(&G.streams);
  fl_rng_seed(&G.rng, cfg->seed, 0xfa017u, (uint64_t)getpid());
  for (size_t i = 0; i < cfg->nfaults; i++) {
    fl_fault_kind k = cfg->faults[i].kind;
    if (is_frame_kind(k)) G.any_frame_faults = true;
    if (k == FL_FAULT_PARTITION || k == FL_FAULT_SLOW_READER) G.any_gate_faults = true;
    if (k == FL_FAULT_PARTITION || k == FL_FAULT_SILENCE || k == FL_FAULT_DROP)
      G.any_disc_faults = true;
  }
  if (uv_timer_init(loop, &G.tick) != 0 || uv_timer_init(loop, &G.watch) != 0) return -1;
  G.tick_open = G.watch_open = true;
  uv_unref((uv_handle_t *)&G.watch);
  uv_timer_start(&G.watch, watch_cb, WATCH_MS, WATCH_MS);
  G.on = true;
  return 0;
}

static void item_free_all(fi_conn *c) {
  for (item *it = c->q, *n; it; it = n) {
    n = it->next;
    free(it);
  }
  c->q = NULL;
  c->qn = c->qbytes = 0;
}

static void active_remove(fi_conn *c) {
  if (!c->active) return;
  if (c->aprev) c->aprev->anext = c->anext;
  else G.active = c->anext;
  if (c->anext) c->anext->aprev = c->aprev;
  c->anext = c->aprev = NULL;
  c->active = false;
}

static void active_add(fi_conn *c) {
  if (c->active) return;
  c->active = true;
  c->aprev = NULL;
  c->anext = G.active;
  if (G.active) G.active->aprev = c;
  G.active = c;
  if (!G.tick_running && G.tick_open) {
    G.tick_running = true;
    uv_timer_start(&G.tick, tick_cb, TICK_MS, TICK_MS);
  }
}

static void stream_unlink(fi_conn *c) {
  if (c->stream == NULL) return;
  fl_key k = fl_key_ptr(c->stream, 0);
  stream_ent *se = fl_kmap_get(&G.streams, &k);
  if (se && se->conn == c) se->conn = NULL;
  c->stream = NULL;
}

static void conn_free(fi_conn *c) {
  active_remove(c);
  stream_unlink(c);
  if (c->e != NULL) {
    if (c->eprev) c->eprev->enext = c->enext;
    else c->e->conns = c->enext;
    if (c->enext) c->enext->eprev = c->eprev;
  }
  fl_key k = fl_key_ptr(c->e ? (void *)c->e->eng : NULL, c->id);
  if (fl_kmap_get(&G.conns, &k) == c) fl_kmap_del(&G.conns, &k);
  item_free_all(c);
  free(c->gate);
  free(c->fbuf);
  free(c);
}

/* Mark dead; free now unless an engine call for it is on the stack. */
static void conn_kill(fi_conn *c) {
  c->dead = true;
  active_remove(c);
  if (c->busy == 0) conn_free(c);
}

static void close_cb(uv_handle_t *h) { (void)h; }

void fl_fi_close(void) {
  if (!G.on) return;
  for (size_t i = 0; i < G.conns.cap; i++) {
    fi_conn *c = G.conns.slots[i].val;
    if (c == NULL) continue;
    G.conns.slots[i].val = NULL;
    c->e = NULL;
    c->active = false;
    c->stream = NULL;
    item_free_all(c);
    free(c->gate);
    free(c->fbuf);
    free(c);
  }
  fl_kmap_free(&G.conns);
  for (size_t i = 0; i < G.engs.cap; i++) free(G.engs.slots[i].val);
  fl_kmap_free(&G.engs);
  for (size_t i = 0; i < G.streams.cap; i++) free(G.streams.slots[i].val);
  fl_kmap_free(&G.streams);
  G.on = false;
}

void fl_fi_close_handles(void) {
  if (G.tick_open) {
    G.tick_open = false;
    uv_close((uv_handle_t *)&G.tick, close_cb);
  }
  if (G.watch_open) {
    G.watch_open = false;
    uv_close((uv_handle_t *)&G.watch, close_cb);
  }
}

void fl_fi_engine_add(posp2p_peer *eng, posp2p_uv_peer *up, uint32_t dev) {
  if (!G.on) return;
  fi_eng *e = calloc(1, sizeof(*e));
  if (e == NULL) return;
  e->eng = eng;
  e->up = up;
  e->dev = dev;
  fl_key k = fl_key_ptr(eng, 0);
  fi_eng *old = fl_kmap_get(&G.engs, &k);
  if (old) free(old);
  if (fl_kmap_put(&G.engs, &k, e) < 0) free(e);
}

static fi_eng *eng_get(const posp2p_peer *eng) {
  fl_key k = fl_key_ptr(eng, 0);
  return fl_kmap_get(&G.engs, &k);
}

void fl_fi_engine_gone(posp2p_peer *eng) {
  if (!G.on) return;
  fl_key k = fl_key_ptr(eng, 0);
  fi_eng *e = fl_kmap_del(&G.engs, &k);
  if (e == NULL) return;
  while (e->conns) {
    fi_conn *c = e->conns;
    e->conns = c->enext;
    c->eprev = c->enext = NULL;
    fl_key ck = fl_key_ptr(eng, c->id);
    if (fl_kmap_get(&G.conns, &ck) == c) fl_kmap_del(&G.conns, &ck);
    c->e = NULL;
    if (c->busy == 0) conn_free(c);
    else c->dead = true;
  }
  free(e);
}

static fi_conn *conn_find(const posp2p_peer *eng, posp2p_conn_id id) {
  fl_key k = fl_key_ptr(eng, id);
  return fl_kmap_get(&G.conns, &k);
}

static fi_conn *conn_get(fi_eng *e, posp2p_conn_id id) {
  fi_conn *c = conn_find(e->eng, id);
  if (c != NULL) return c;
  c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->e = e;
  c->id = id;
  c->remote = FL_NO_DEV;
  posp2p_conn_info info;
  if (posp2p_peer_conn_info(e->eng, id, &info) == 0) {
    if (info.device_id[0]) c->remote = fl_plan_by_id(G.plan, info.device_id);
    if (c->remote == FL_NO_DEV) c->remote = fl_plan_by_ip(G.plan, info.remote.ip);
  }
  c->timeout_ms = posp2p_peer_config_get(e->eng)->device_timeout_ms;
  c->tok_t = now_ms();
  fl_key k = fl_key_ptr(e->eng, id);
  if (fl_kmap_put(&G.conns, &k, c) < 0) {
    free(c);
    return NULL;
  }
  c->enext = e->conns;
  if (e->conns) e->conns->eprev = c;
  e->conns = c;
  return c;
}

void fl_fi_conn_ready(posp2p_peer *eng, posp2p_conn_id conn, uint32_t remote) {
  if (!G.on) return;
  fi_eng *e = eng_get(eng);
  if (e == NULL) return;
  fi_conn *c = conn_get(e, conn);
  if (c == NULL) return;
  if (remote != FL_NO_DEV) c->remote = remote;
  c->ready = true;
  c->reported = false;
  c->last_frame_ms = now_ms();
}

void fl_fi_conn_closed(posp2p_peer *eng, posp2p_conn_id conn) {
  if (!G.on) return;
  fi_conn *c = conn_find(eng, conn);
  if (c != NULL) conn_kill(c);
}

void fl_fi_final(void) { G.final = true; }

static const char *dname(uint32_t idx) {
  if (idx == FL_NO_DEV || idx > G.plan->n) return "an unidentified peer";
  return G.plan->dev[idx].name;
}

void fl_fi_conn_timeout(posp2p_peer *eng, posp2p_conn_id conn) {
  if (!G.on || G.final) return;
  fi_conn *c = conn_find(eng, conn);
  if (c == NULL || !c->ready || c->wire != W_V2) return;
  uint64_t silent = now_ms() - c->last_frame_ms;
  if (silent + 2 < c->timeout_ms && G.cb.violation) {
    char text[256];
    snprintf(text, sizeof(text),
             "%s timed out %s after %" PRIu64 " ms without a frame; its device "
             "timeout is %u ms (HB-6)",
             dname(c->e->dev), dname(c->remote), silent, c->timeout_ms);
    G.cb.violation(FL_V_EARLY_TIMEOUT, c->e->dev, c->remote, text, G.cb.user_data);
  }
  c->reported = true;
}

static void watch_cb(uv_timer_t *t) {
  (void)t;
  if (G.final) return;
  uint64_t now = now_ms();
  uint64_t slack_fixed = G.cfg->slack_ms;
  for (size_t i = 0; i < G.conns.cap; i++) {
    fi_conn *c = G.conns.slots[i].val;
    if (c == NULL || !c->ready || c->reported || c->dead || c->wire != W_V2) continue;
    uint64_t slack = slack_fixed + (uint64_t)(G.cfg->slack_ratio * c->timeout_ms);
    uint64_t silent = now - c->last_frame_ms;
    if (silent <= c->timeout_ms + slack) continue;
    c->reported = true;
    if (G.cb.violation) {
      char text[256];
      snprintf(text, sizeof(text),
               "%s heard no frame from %s for %" PRIu64 " ms but did not mark it "
               "disconnected (device timeout %u ms + slack %" PRIu64 " ms, HB-6)",
               dname(c->e ? c->e->dev : FL_NO_DEV), dname(c->remote), silent,
               c->timeout_ms, slack);
      G.cb.violation(FL_V_NOT_DISCONNECTED, c->e ? c->e->dev : FL_NO_DEV, c->remote,
                     text, G.cb.user_data);
    }
  }
}

/* ---- Passing bytes to the engine ----------------------------------------------- */

static void kick(fi_conn *c) {
  if (c->e && c->e->up) posp2p_uv_peer_kick(c->e->up);
}

/* Hand bytes to the engine now. frames: complete frames in them. */
static int engine_feed(fi_conn *c, const uint8_t *d, size_t n, size_t frames) {
  if (c->dead || c->e == NULL || n == 0) return 0;
  uint64_t now = now_ms();
  int rc = __real_posp2p_peer_conn_recv(c->e->eng, c->id, d, n, now);
  if (frames > 0) c->last_frame_ms = now;
  return rc;
}

static bool queue_has_fifo(const fi_conn *c) { return c->fifo_release > now_ms() && c->q; }

static void enqueue(fi_conn *c, const uint8_t *d, size_t n, uint64_t release, bool fifo,
                    bool frame) {
  item *it = malloc(sizeof(*it) + n);
  if (it == NULL) return;
  it->release = release;
  it->seq = ++G.seq;
  it->fifo = fifo;
  it->frame = frame;
  it->len = n;
  memcpy(it->data, d, n);
  if (fifo && release > c->fifo_release) c->fifo_release = release;
  item **pp = &c->q;
  while (*pp && ((*pp)->release < release ||
                 ((*pp)->release == release && (*pp)->seq < it->seq)))
    pp = &(*pp)->next;
  it->next = *pp;
  *pp = it;
  c->qn++;
  c->qbytes += n;
  active_add(c);
}

/* Pass bytes, behind any FIFO-held items. */
static int pass(fi_conn *c, const uint8_t *d, size_t n, size_t frames) {
  if (queue_has_fifo(c)) {
    enqueue(c, d, n, c->fifo_release, true, frames > 0);
    return 0;
  }
  return engine_feed(c, d, n, frames);
}

/* ---- Frame decisions --------------------------------------------------------------- */

/* message_type (field 2, varint) of an Envelope body; -1 if not found. */
static int v2_type(const uint8_t *b, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint64_t tag = 0;
    unsigned sh = 0;
    while (i < n && sh < 64) {
      uint8_t x = b[i++];
      tag |= (uint64_t)(x & 0x7f) << sh;
      sh += 7;
      if (!(x & 0x80)) break;
    }
    unsigned wt = (unsigned)(tag & 7), field = (unsigned)(tag >> 3);
    uint64_t v = 0;
    switch (wt) {
    case 0:
      sh = 0;
      while (i < n && sh < 64) {
        uint8_t x = b[i++];
        v |= (uint64_t)(x & 0x7f) << sh;
        sh += 7;
        if (!(x & 0x80)) break;
      }
      if (field == 2) return v < 64 ? (int)v : -1;
      break;
    case 1: i += 8; break;
    case 5: i += 4; break;
    case 2:
      sh = 0;
      while (i < n && sh < 64) {
        uint8_t x = b[i++];
        v |= (uint64_t)(x & 0x7f) << sh;
        sh += 7;
        if (!(x & 0x80)) break;
      }
      if (v > n - i) return -1;
      i += (size_t)v;
      break;
    default: return -1;
    }
  }
  return -1;
}

static int legacy_type(const uint8_t *b, size_t n) {
  static const char pat[] = "\"messageType\":\"";
  size_t m = sizeof(pat) - 1;
  for (size_t i = 0; i + m < n; i++) {
    if (memcmp(b + i, pat, m) != 0) continue;
    size_t s = i + m, e = s;
    while (e < n && b[e] != '"') e++;
    int t = posp2p_message_type_from_name((const char *)b + s, e - s);
    return t > 0 ? t : -1;
  }
  return -1;
}

static bool frame_faults_active(const fi_conn *c, uint64_t t) {
  if (!G.any_frame_faults || c->e == NULL) return false;
  for (size_t f = 0; f < G.cfg->nfaults; f++) {
    const fl_fault *ft = &G.cfg->faults[f];
    if (!is_frame_kind(ft->kind) || !active_at(ft, t)) continue;
    if (hits(f, c->e->dev) || hits(f, c->remote)) return true;
  }
  return false;
}

static int frame_done(fi_conn *c, const uint8_t *d, size_t n, int type) {
  uint64_t t = run_ms();
  uint32_t L = c->e ? c->e->dev : FL_NO_DEV, R = c->remote;
  bool drop = false, dup = false, reorder = false;
  uint64_t delay = 0, hold = 0;
  for (size_t f = 0; f < G.cfg->nfaults && !drop; f++) {
    const fl_fault *ft = &G.cfg->faults[f];
    if (!is_frame_kind(ft->kind) || !active_at(ft, t)) continue;
    switch (ft->kind) {
    case FL_FAULT_DROP:
      if (link_hit(f, L, R) && type_ok(ft, type) && fl_rng_chance(&G.rng, ft->rate))
        drop = true;
      break;
    case FL_FAULT_WITHHOLD_ACKS:
      if (hits(f, R) && type == POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ACKNOWLEDGEMENT &&
          fl_rng_chance(&G.rng, ft->rate > 0 ? ft->rate : 1.0))
        drop = true;
      break;
    case FL_FAULT_WITHHOLD_HEARTBEATS:
      if (hits(f, R) && type == POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HEARTBEAT &&
          fl_rng_chance(&G.rng, ft->rate > 0 ? ft->rate : 1.0))
        drop = true;
      break;
    case FL_FAULT_SILENCE:
      if (hits(f, R)) drop = true;
      break;
    case FL_FAULT_DUPLICATE:
      if (link_hit(f, L, R) && type_ok(ft, type) && fl_rng_chance(&G.rng, ft->rate))
        dup = true;
      break;
    case FL_FAULT_DELAY:
      if (link_hit(f, L, R) && type_ok(ft, type) && fl_rng_chance(&G.rng, ft->rate)) {
        uint64_t dl = ft->delay_ms;
        if (ft->jitter_ms) dl += fl_rng_range(&G.rng, 0, ft->jitter_ms);
        if (dl > delay) delay = dl;
      }
      break;
    case FL_FAULT_REORDER:
      if (link_hit(f, L, R) && type_ok(ft, type) && fl_rng_chance(&G.rng, ft->rate)) {
        reorder = true;
        hold = ft->delay_ms;
      }
      break;
    default:
      break;
    }
  }
  if (drop) {
    G.st.frames_dropped++;
    return 0;
  }
  uint64_t now = now_ms();
  int rc = 0;
  int copies = dup ? 2 : 1;
  if (dup) G.st.frames_duplicated++;
  for (int k = 0; k < copies; k++) {
    if (reorder) {
      G.st.frames_reordered += k == 0;
      enqueue(c, d, n, now + hold, false, true);
    } else if (delay > 0) {
      G.st.frames_delayed += k == 0;
      uint64_t rel = now + delay;
      if (rel < c->fifo_release) rel = c->fifo_release;
      enqueue(c, d, n, rel, true, true);
    } else {
      int r = pass(c, d, n, 1);
      if (r < 0) rc = r;
      if (c->dead) break;
    }
  }
  return rc;
}

static bool fbuf_append(fi_conn *c, const uint8_t *d, size_t n) {
  if (c->flen + n > c->fcap) {
    size_t nc = c->fcap ? c->fcap : 256;
    while (nc < c->flen + n) nc *= 2;
    uint8_t *nb = realloc(c->fbuf, nc);
    if (nb == NULL) return false;
    c->fbuf = nb;
    c->fcap = nc;
  }
  memcpy(c->fbuf + c->flen, d, n);
  c->flen += n;
  return true;
}

/* Give up framing: pass what is buffered and everything after raw. */
static int go_raw(fi_conn *c) {
  c->wire = W_RAW;
  int rc = 0;
  if (c->flen) rc = pass(c, c->fbuf, c->flen, 0);
  c->flen = 0;
  c->in_frame = false;
  return rc;
}

/* Framing over bytes that passed the gate. */
static int feed(fi_conn *c, const uint8_t *d, size_t n) {
  int rc = 0;
  uint64_t t = run_ms();
  while (n > 0 && !c->dead) {
    if (c->wire == W_UNKNOWN) {
      posp2p_wire w = posp2p_wire_detect(d[0]);
      c->wire = w == POSP2P_WIRE_V2 ? W_V2 : w == POSP2P_WIRE_LEGACY ? W_LEGACY : W_RAW;
      if (c->wire == W_V2) c->pre_left = POSP2P_PREFACE_LEN;
    }
    if (c->wire == W_RAW) return pass(c, d, n, 0);
    if (c->wire == W_V2 && c->pre_left > 0) {
      size_t k = n < c->pre_left ? n : c->pre_left;
      int r = pass(c, d, k, 0);
      if (r < 0) rc = r;
      c->pre_left = (uint8_t)(c->pre_left - k);
      d += k;
      n -= k;
      continue;
    }
    if (!c->in_frame) {
      c->in_frame = true;
      c->slow = frame_faults_active(c, t) || queue_has_fifo(c);
      c->have_len = false;
      c->hdr_len = 0;
      c->body_len = c->body_have = 0;
      c->flen = 0;
    }
    if (!c->slow) {
      /* Fast path: find where the current frame ends, pass that span. */
      size_t span = 0;
      bool done = false;
      if (c->wire == W_V2) {
        while (span < n && !c->have_len) {
          uint8_t x = d[span++];
          c->body_len |= (uint64_t)(x & 0x7f) << (7 * c->hdr_len);
          c->hdr_len++;
          if (!(x & 0x80)) c->have_len = true;
          else if (c->hdr_len == 5) {
            /* Broken length prefix: the engine will close; stop framing. */
            int r = pass(c, d, n, 0);
            c->wire = W_RAW;
            return r < 0 ? r : rc;
          }
        }
        if (c->have_len) {
          uint64_t need = c->body_len - c->body_have;
          uint64_t avail = n - span;
          uint64_t take = need < avail ? need : avail;
          span += (size_t)take;
          c->body_have += take;
          done = c->body_have == c->body_len;
        }
      } else {
        const uint8_t *nl = memchr(d, '\n', n);
        span = nl ? (size_t)(nl - d) + 1 : n;
        done = nl != NULL;
      }
      int r = pass(c, d, span, done ? 1 : 0);
      if (r < 0) rc = r;
      d += span;
      n -= span;
      if (done) c->in_frame = false;
      continue;
    }
    /* Slow path: buffer the whole frame, then decide. */
    if (c->wire == W_V2) {
      size_t used = 0;
      while (used < n && !c->have_len) {
        uint8_t x = d[used++];
        c->body_len |= (uint64_t)(x & 0x7f) << (7 * c->hdr_len);
        c->hdr_len++;
        if (!fbuf_append(c, &x, 1)) return go_raw(c);
        if (!(x & 0x80)) c->have_len = true;
        else if (c->hdr_len == 5) {
          int r = go_raw(c);
          int r2 = pass(c, d + used, n - used, 0);
          return r < 0 ? r : r2 < 0 ? r2 : rc;
        }
      }
      if (c->have_len && c->body_len > MAX_SLOW_FRAME) {
        int r = go_raw(c);
        int r2 = pass(c, d + used, n - used, 0);
        return r < 0 ? r : r2 < 0 ? r2 : rc;
      }
      if (c->have_len) {
        uint64_t need = c->body_len - c->body_have;
        uint64_t avail = n - used;
        size_t take = (size_t)(need < avail ? need : avail);
        if (!fbuf_append(c, d + used, take)) return go_raw(c);
        used += take;
        c->body_have += take;
        if (c->body_have == c->body_len) {
          c->in_frame = false;
          int type = v2_type(c->fbuf + c->hdr_len, c->flen - c->hdr_len);
          size_t fl = c->flen;
          c->flen = 0;
          c->busy++;
          int r = frame_done(c, c->fbuf, fl, type);
          c->busy--;
          if (r < 0) rc = r;
        }
      }
      d += used;
      n -= used;
    } else {
      const uint8_t *nl = memchr(d, '\n', n);
      size_t span = nl ? (size_t)(nl - d) + 1 : n;
      if (c->flen + span > MAX_SLOW_FRAME) {
        int r = go_raw(c);
        int r2 = pass(c, d, n, 0);
        return r < 0 ? r : r2 < 0 ? r2 : rc;
      }
      if (!fbuf_append(c, d, span)) return go_raw(c);
      d += span;
      n -= span;
      if (nl) {
        c->in_frame = false;
        int type = legacy_type(c->fbuf, c->flen);
        size_t fl = c->flen;
        c->flen = 0;
        c->busy++;
        int r = frame_done(c, c->fbuf, fl, type);
        c->busy--;
        if (r < 0) rc = r;
      }
    }
  }
  return rc;
}

/* ---- The gate ------------------------------------------------------------------------ */

static bool partitioned(const fi_conn *c, uint64_t t) {
  if (!G.any_gate_faults || c->e == NULL) return false;
  for (size_t f = 0; f < G.cfg->nfaults; f++) {
    const fl_fault *ft = &G.cfg->faults[f];
    if (ft->kind != FL_FAULT_PARTITION || !active_at(ft, t)) continue;
    if (hits(f, c->e->dev) || hits(f, c->remote)) return true;
  }
  return false;
}

static uint64_t slow_rate(const fi_conn *c, uint64_t t) {
  if (!G.any_gate_faults || c->e == NULL) return 0;
  uint64_t rate = 0;
  for (size_t f = 0; f < G.cfg->nfaults; f++) {
    const fl_fault *ft = &G.cfg->faults[f];
    if (ft->kind != FL_FAULT_SLOW_READER || !active_at(ft, t)) continue;
    if (hits(f, c->e->dev) && (rate == 0 || ft->bytes_per_s < rate)) rate = ft->bytes_per_s;
  }
  return rate;
}

static void tramp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void read_control(fi_conn *c) {
  if (c->stream == NULL || c->dead || uv_is_closing((uv_handle_t *)c->stream)) return;
  if (!c->read_stopped && c->gate_len > GATE_STOP) {
    if (uv_read_stop(c->stream) == 0) {
      c->read_stopped = true;
      G.st.read_stops++;
    }
  } else if (c->read_stopped && c->gate_len < GATE_RESUME) {
    fl_key k = fl_key_ptr(c->stream, 0);
    stream_ent *se = fl_kmap_get(&G.streams, &k);
    if (se != NULL && __real_uv_read_start(c->stream, se->alloc, tramp_read) == 0)
      c->read_stopped = false;
  }
}

static bool gate_append(fi_conn *c, const uint8_t *d, size_t n) {
  if (c->gate_len + n > c->gate_cap) {
    size_t nc = c->gate_cap ? c->gate_cap : 4096;
    while (nc < c->gate_len + n) nc *= 2;
    uint8_t *ng = realloc(c->gate, nc);
    if (ng == NULL) return false;
    c->gate = ng;
    c->gate_cap = nc;
  }
  memcpy(c->gate + c->gate_len, d, n);
  c->gate_len += n;
  G.st.bytes_gated += n;
  return true;
}

/* Release gated bytes as the gate allows. */
static int gate_release(fi_conn *c) {
  if (c->gate_len == 0) return 0;
  uint64_t t = run_ms();
  if (partitioned(c, t)) return 0;
  uint64_t rate = slow_rate(c, t);
  size_t n = c->gate_len;
  uint64_t now = now_ms();
  if (rate > 0) {
    c->tokens += (double)rate * (double)(now - c->tok_t) / 1000.0;
    double cap = (double)rate > 65536.0 ? (double)rate : 65536.0;
    if (c->tokens > cap) c->tokens = cap;
    c->tok_t = now;
    if ((double)n > c->tokens) n = (size_t)c->tokens;
    if (n == 0) return 0;
    c->tokens -= (double)n;
  }
  /* Feed from a copy: the engine call may re-enter and append. */
  uint8_t *chunk = malloc(n);
  if (chunk == NULL) return 0;
  memcpy(chunk, c->gate, n);
  memmove(c->gate, c->gate + n, c->gate_len - n);
  c->gate_len -= n;
  int rc = feed(c, chunk, n);
  free(chunk);
  return rc;
}

/* ---- Wrapped entry points ------------------------------------------------------------ */

int __wrap_posp2p_peer_conn_recv(posp2p_peer *p, posp2p_conn_id id, const uint8_t *data,
                                 size_t len, uint64_t now_ms_arg) {
  if (!G.on) return __real_posp2p_peer_conn_recv(p, id, data, len, now_ms_arg);
  fi_eng *e = eng_get(p);
  if (e == NULL) return __real_posp2p_peer_conn_recv(p, id, data, len, now_ms_arg);
  fi_conn *c = conn_get(e, id);
  if (c == NULL) return __real_posp2p_peer_conn_recv(p, id, data, len, now_ms_arg);
  if (G.cur_stream != NULL && c->stream == NULL) {
    fl_key k = fl_key_ptr(G.cur_stream, 0);
    stream_ent *se = fl_kmap_get(&G.streams, &k);
    if (se != NULL) {
      c->stream = G.cur_stream;
      se->conn = c;
    }
  }
  c->busy++;
  int rc;
  uint64_t t = run_ms();
  if (c->gate_len > 0 || partitioned(c, t) || slow_rate(c, t) > 0) {
    if (!gate_append(c, data, len)) rc = 0;
    rc = gate_release(c);
    if (c->gate_len > 0) active_add(c);
    read_control(c);
  } else {
    rc = feed(c, data, len);
  }
  c->busy--;
  if (c->dead && c->busy == 0) {
    conn_free(c);
    return rc == POSP2P_ERR_NO_CONN ? rc : 0;
  }
  return rc;
}

int __wrap_posp2p_peer_datagram_recv(posp2p_peer *p, const posp2p_addr *from,
                                     const uint8_t *data, size_t len, uint64_t now_arg) {
  if (G.on && G.any_disc_faults && from != NULL) {
    fi_eng *e = eng_get(p);
    if (e != NULL) {
      uint64_t t = run_ms();
      uint32_t S = fl_plan_by_ip(G.plan, from->ip);
      for (size_t f = 0; f < G.cfg->nfaults; f++) {
        const fl_fault *ft = &G.cfg->faults[f];
        if (!active_at(ft, t)) continue;
        bool drop = false;
        if (ft->kind == FL_FAULT_PARTITION) drop = hits(f, e->dev) || hits(f, S);
        else if (ft->kind == FL_FAULT_SILENCE) drop = hits(f, S);
        else if (ft->kind == FL_FAULT_DROP)
          drop = link_hit(f, e->dev, S) &&
                 type_ok(ft, POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DISCOVERY) &&
                 fl_rng_chance(&G.rng, ft->rate);
        if (drop) {
          G.st.datagrams_dropped++;
          return 0;
        }
      }
    }
  }
  return __real_posp2p_peer_datagram_recv(p, from, data, len, now_arg);
}

static void tramp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fl_key k = fl_key_ptr(s, 0);
  stream_ent *se = fl_kmap_get(&G.streams, &k);
  if (se == NULL) return; /* cannot happen: installed with the entry */
  uv_read_cb real = se->read;
  uv_stream_t *saved = G.cur_stream;
  G.cur_stream = s;
  real(s, nread, buf);
  G.cur_stream = saved;
  if (nread < 0) {
    /* The stream is closing: forget it. */
    se = fl_kmap_del(&G.streams, &k);
    if (se != NULL) {
      if (se->conn != NULL && se->conn->stream == s) se->conn->stream = NULL;
      free(se);
    }
  }
}

int __wrap_uv_read_start(uv_stream_t *s, uv_alloc_cb a, uv_read_cb r) {
  if (!G.on) return __real_uv_read_start(s, a, r);
  fl_key k = fl_key_ptr(s, 0);
  stream_ent *se = fl_kmap_get(&G.streams, &k);
  if (se == NULL) {
    se = calloc(1, sizeof(*se));
    if (se == NULL || fl_kmap_put(&G.streams, &k, se) < 0) {
      free(se);
      return __real_uv_read_start(s, a, r);
    }
  }
  se->alloc = a;
  se->read = r;
  se->conn = NULL; /* a new stream at a reused address */
  return __real_uv_read_start(s, a, tramp_read);
}

/* ---- Tick: release held items and gated bytes ---------------------------------------- */

static void tick_cb(uv_timer_t *t) {
  (void)t;
  uint64_t now = now_ms();
  fi_conn *next;
  for (fi_conn *c = G.active; c; c = next) {
    c->busy++;
    if (c->gate_len > 0) {
      (void)gate_release(c);
      read_control(c);
    }
    while (!c->dead && c->q && c->q->release <= now) {
      item *it = c->q;
      c->q = it->next;
      c->qn--;
      c->qbytes -= it->len;
      if (c->q == NULL) c->fifo_release = 0;
      (void)engine_feed(c, it->data, it->len, it->frame ? 1 : 0);
      free(it);
    }
    if (!c->dead) kick(c);
    next = c->anext;
    c->busy--;
    if (c->dead) {
      if (c->busy == 0) conn_free(c);
    } else if (c->q == NULL && c->gate_len == 0) {
      active_remove(c);
    }
  }
  if (G.active == NULL && G.tick_running) {
    G.tick_running = false;
    uv_timer_stop(&G.tick);
  }
}

void fl_fi_stats_get(fl_fi_stats *s) {
  *s = G.st;
  s->held_frames = s->held_bytes = 0;
  for (fi_conn *c = G.active; c; c = c->anext) {
    s->held_frames += c->qn;
    s->held_bytes += c->qbytes + c->gate_len;
  }
}

uint64_t fl_fi_pending(void) {
  uint64_t n = 0;
  for (fi_conn *c = G.active; c; c = c->anext) n += c->qn + (c->gate_len > 0);
  return n;
}
