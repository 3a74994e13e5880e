/* posp2p-bench-relay: relay throughput (issue 7, section 3).
 *
 * Ours: a main POS relaying orders from one sender (a secondary POS) to N
 * tablets, every device a posp2p_uv peer with its own 127.B.x.y address,
 * all on one uv_loop in one thread. "directed": order k goes to tablet
 * k % N (sender -> main -> tablet), the tablet's ACKNOWLEDGEMENT travels
 * back through the main POS to the sender (end-to-end ack). "fanout": one
 * order to every tablet by type; the main POS takes custody (acks the
 * sender) and collects one ack per tablet.
 *
 * Baseline, same run, same topology and frame sizes: a minimal libuv relay
 * moving length-prefixed blobs. The sender writes order-sized frames to the
 * relay, the relay forwards each to its tablet (or to all), each tablet
 * answers with an ack-sized frame, which the relay forwards to the sender
 * (directed) or consumes after acking the sender once (fanout). No
 * encoding, routing tables, dedup, outbox or timers: what is left is
 * libuv, the kernel's loopback and memcpy. Both sides write what one read
 * callback produced for one connection with one uv_write.
 *
 * Both keep a fixed window of orders in flight (deliveries not yet acked),
 * count deliveries at the tablets over timed repeats and take the latency
 * from the send to the end-to-end ack. Frame sizes are the ones our wire
 * produced (bytes/frames at the tablets), so the baseline moves the same
 * bytes. Never fails on a threshold. Network safety: only 127.0.0.0/8, a
 * time limit on every phase. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "messages.h"
#include "posp2p/uv.h"

#ifndef POSP2P_BENCH_BUILD_TYPE
#define POSP2P_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef POSP2P_BENCH_C_FLAGS
#define POSP2P_BENCH_C_FLAGS ""
#endif
#ifndef POSP2P_BENCH_SANITIZE
#define POSP2P_BENCH_SANITIZE 0
#endif

#define RING 65536u    /* send times by sequence; > any window */
#define MAX_TABLETS 1000u
#define MAX_REPEATS 32
#define GOAL_MIN 0.7

typedef enum { MODE_DIRECTED = 0, MODE_FANOUT = 1 } relay_mode;

static void die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("posp2p-bench-relay: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Latency samples ---------------------------------------------------- */

typedef struct {
  uint32_t *us;
  size_t n, cap;
} samples;

static void samples_add(samples *s, uint64_t ns) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 65536;
    uint32_t *p = realloc(s->us, cap * sizeof(*p));
    if (p == NULL) return; /* drop the sample rather than the run */
    s->us = p;
    s->cap = cap;
  }
  uint64_t us = ns / 1000u;
  s->us[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static double samples_pct(samples *s, double q) {
  if (s->n == 0) return 0;
  size_t i = (size_t)ceil(q * (double)s->n);
  if (i > 0) i--;
  if (i >= s->n) i = s->n - 1;
  return s->us[i];
}

/* ---- Shared run state (one run of one side at a time) ---------------------- */

typedef struct {
  relay_mode mode;
  unsigned tablets;
  unsigned window;
  uint64_t seq;               /* next order to send */
  uint64_t inflight;          /* deliveries not yet acked end to end */
  bool sending;
  bool measuring;
  uint64_t delivered;         /* orders delivered at tablets */
  uint64_t send_ns[RING];
  uint16_t remaining[RING];   /* fanout: tablet acks still due */
  samples lat;
} run_state;

static run_state R;

static void ack_seq(uint64_t seq, uint64_t t) {
  uint32_t slot = (uint32_t)(seq % RING);
  if (R.measuring) samples_add(&R.lat, t - R.send_ns[slot]);
  if (R.inflight > 0) R.inflight--;
}

/* ---- Ours: posp2p_uv --------------------------------------------------------- */

typedef struct {
  posp2p_uv_peer *up;
  int role; /* 0 main, 1 sender, 2 tablet */
  bool ready;
  bool closed;
  char id[POSP2P_UUID_LEN + 1];
} dev;

static struct {
  uv_loop_t *loop;
  posp2p_uv_ctx *ctx;
  dev main, sender;
  dev *tab;
  unsigned ready;
  unsigned closed;
  unsigned ndev;
  char run_prefix[9];
  posp2p_envelope *order; /* template: payload from bench/codec/messages.c */
  int send_errors;
  int queue_full;
} O;

/* Message ids carry the sequence number in their last 12 hex digits, so an
 * ACK finds its send time without a map: "rrrrrrrr-0000-4000-8000-SSSSSSSSSSSS". */
static void make_mid(uint64_t seq, char out[POSP2P_UUID_LEN + 1]) {
  snprintf(out, POSP2P_UUID_LEN + 1, "%s-0000-4000-8000-%012" PRIx64, O.run_prefix,
           seq & 0xffffffffffffu);
}

static bool parse_mid(const char *mid, uint64_t *seq) {
  if (mid == NULL || strlen(mid) != POSP2P_UUID_LEN) return false;
  if (strncmp(mid, O.run_prefix, 8) != 0) return false;
  char *end = NULL;
  unsigned long long v = strtoull(mid + 24, &end, 16);
  if (end == NULL || *end != '\0') return false;
  *seq = v;
  return true;
}

static void ours_pump(void) {
  while (R.sending && R.inflight + (R.mode == MODE_FANOUT ? R.tablets : 1) <= R.window) {
    char mid[POSP2P_UUID_LEN + 1];
    make_mid(R.seq, mid);
    posp2p_envelope e = *O.order;
    e.message_id = mid;
    e.from_device_id = (char *)"";
    if (R.mode == MODE_DIRECTED) {
      e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
      e.to_device_id = O.tab[R.seq % R.tablets].id;
      e.opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE__NOT_SET;
    } else {
      e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID__NOT_SET;
      e.to_device_id = NULL;
      e.opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
      e.to_device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET;
    }
    uint32_t slot = (uint32_t)(R.seq % RING);
    R.send_ns[slot] = now_ns();
    int rc = posp2p_uv_peer_send(O.sender.up, &e, NULL);
    if (rc == POSP2P_ERR_QUEUE_FULL) {
      O.queue_full++;
      return; /* DRAINED or the next ack pumps again */
    }
    if (rc < 0) {
      if (O.send_errors++ == 0)
        fprintf(stderr, "posp2p-bench-relay: send: %s\n", posp2p_uv_strerror(rc));
      R.sending = false;
      return;
    }
    R.remaining[slot] = (uint16_t)R.tablets;
    R.inflight += R.mode == MODE_FANOUT ? R.tablets : 1;
    R.seq++;
  }
}

static void on_event(posp2p_uv_peer *up, const posp2p_peer_event *ev, void *ud) {
  (void)up;
  dev *d = ud;
  switch (ev->type) {
  case POSP2P_PEER_EV_CONN_READY:
    if (d->role != 0 && !d->ready) {
      d->ready = true;
      O.ready++;
    }
    break;
  case POSP2P_PEER_EV_MESSAGE:
    if (d->role == 2) R.delivered++;
    break;
  case POSP2P_PEER_EV_ACK: {
    uint64_t seq;
    if (!parse_mid(ev->message_id, &seq)) break;
    if (R.mode == MODE_DIRECTED && d->role == 1) {
      ack_seq(seq, now_ns());
    } else if (R.mode == MODE_FANOUT && d->role == 0 && ev->custody) {
      /* Each tablet's ack at the main POS ends one delivery. */
      ack_seq(seq, now_ns());
    }
    break;
  }
  case POSP2P_PEER_EV_DELIVERY_FAILED:
    fprintf(stderr, "posp2p-bench-relay: delivery failed: %s\n", ev->text);
    if (R.inflight > 0) R.inflight--;
    break;
  case POSP2P_PEER_EV_VIOLATION:
    fprintf(stderr, "posp2p-bench-relay: violation: %s\n", ev->text);
    break;
  default:
    break;
  }
}

static void on_closed(posp2p_uv_peer *up, void *ud) {
  (void)up;
  dev *d = ud;
  d->closed = true;
  O.closed++;
}

static void on_warning(posp2p_uv_peer *up, int code, const char *text, void *ud) {
  (void)up;
  (void)code;
  (void)ud;
  fprintf(stderr, "posp2p-bench-relay: transport: %s\n", text);
}

static void check_cb(uv_check_t *h) {
  (void)h;
  ours_pump();
}

static void tick_cb(uv_timer_t *t) { (void)t; }

/* Run the loop until cond() or the deadline; false on timeout. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void), double seconds) {
  uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
  while (!cond()) {
    if (now_ns() >= end) return false;
    uv_run(loop, UV_RUN_ONCE);
  }
  return true;
}

static bool all_ready(void) { return O.ready == R.tablets + 1; }
static bool all_closed(void) { return O.closed == O.ndev; }
static bool drained(void) { return R.inflight == 0; }
static uint64_t g_until;
static bool time_up(void) { return now_ns() >= g_until; }

static void make_dev(dev *d, int role, uint32_t ip, const posp2p_uv_opts *base,
                     unsigned tablets) {
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_type = role == 0   ? POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS
                    : role == 1 ? POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS
                                : POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET;
  cfg.device_name = role == 0 ? "main" : role == 1 ? "sender" : "tablet";
  cfg.announce_interval_ms = 0;
  cfg.max_connections = tablets + 16;
  cfg.max_devices = tablets + 16;
  posp2p_uv_opts o = *base;
  o.bind_ip = ip;
  o.tcp_port = 0;
  o.tcp_listen = role == 0;
  o.udp = false;
  posp2p_uv_callbacks cb = {on_event, on_closed, on_warning};
  posp2p_uv_error err;
  memset(&err, 0, sizeof(err));
  d->role = role;
  int rc = posp2p_uv_peer_new(&d->up, O.ctx, &cfg, NULL, &o, &cb, d, &err);
  if (rc < 0) die("peer: %s", err.message);
  snprintf(d->id, sizeof(d->id), "%s", posp2p_peer_device_id(posp2p_uv_peer_engine(d->up)));
  if (posp2p_uv_peer_start(d->up, &err) < 0) die("start: %s", err.message);
  O.ndev++;
}

typedef struct {
  double rates[MAX_REPEATS];
  int nrates;
  double p50_us, p99_us;
  uint64_t lat_n;
  double order_frame_bytes, ack_frame_bytes;
  uint64_t relayed;
} side_result;

static uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

static void measure(uv_loop_t *loop, int repeats, double seconds, double warmup,
                    side_result *res, void (*pump)(void)) {
  R.sending = true;
  pump();
  g_until = now_ns() + (uint64_t)(warmup * 1e9);
  run_until(loop, time_up, warmup + 1);
  R.measuring = true;
  for (int r = 0; r < repeats; r++) {
    uint64_t d0 = R.delivered, t0 = now_ns();
    g_until = t0 + (uint64_t)(seconds * 1e9);
    run_until(loop, time_up, seconds + 1);
    uint64_t t1 = now_ns();
    res->rates[res->nrates++] = (double)(R.delivered - d0) / ((double)(t1 - t0) / 1e9);
  }
  R.measuring = false;
  R.sending = false;
  if (!run_until(loop, drained, 10))
    fprintf(stderr, "posp2p-bench-relay: %" PRIu64 " deliveries not acked after 10 s\n",
            R.inflight);
  qsort(R.lat.us, R.lat.n, sizeof(uint32_t), cmp_u32);
  res->p50_us = samples_pct(&R.lat, 0.50);
  res->p99_us = samples_pct(&R.lat, 0.99);
  res->lat_n = R.lat.n;
}

static void reset_run(relay_mode mode, unsigned tablets, unsigned window) {
  free(R.lat.us);
  memset(&R, 0, sizeof(R));
  R.mode = mode;
  R.tablets = tablets;
  R.window = window;
}

static void run_ours(relay_mode mode, unsigned tablets, unsigned window, int repeats,
                     double seconds, double warmup, unsigned block,
                     posp2p_envelope *order, side_result *res) {
  reset_run(mode, tablets, window);
  memset(&O, 0, sizeof(O));
  O.order = order;
  uint8_t rnd[4];
  posp2p_uv_random(rnd, sizeof(rnd));
  snprintf(O.run_prefix, sizeof(O.run_prefix), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
           rnd[3]);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) die("uv_loop_init");
  O.loop = &loop;
  if (posp2p_uv_ctx_new(&O.ctx, &loop) < 0) die("ctx");
  posp2p_uv_opts base;
  posp2p_uv_opts_init(&base);
  make_dev(&O.main, 0, ip4(127, block, 0, 1), &base, tablets);
  posp2p_addr to = posp2p_uv_peer_tcp_addr(O.main.up);
  make_dev(&O.sender, 1, ip4(127, block, 0, 2), &base, tablets);
  O.tab = calloc(tablets, sizeof(dev));
  if (O.tab == NULL) die("out of memory");
  for (unsigned i = 0; i < tablets; i++)
    make_dev(&O.tab[i], 2, ip4(127, block, 1 + i / 200, 1 + i % 200), &base, tablets);
  posp2p_conn_id cid;
  if (posp2p_uv_peer_connect(O.sender.up, &to, POSP2P_PEER_WIRE_V2, NULL, &cid) < 0)
    die("connect");
  for (unsigned i = 0; i < tablets; i++)
    if (posp2p_uv_peer_connect(O.tab[i].up, &to, POSP2P_PEER_WIRE_V2, NULL, &cid) < 0)
      die("connect");
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, tick_cb, 50, 50);
  uv_check_t check;
  uv_check_init(&loop, &check);
  uv_check_start(&check, check_cb);
  if (!run_until(&loop, all_ready, 10)) die("ours: only %u of %u clients ready", O.ready,
                                             tablets + 1);
  /* The main POS must know every tablet before the first directed order. */
  g_until = now_ns() + 100000000u;
  run_until(&loop, time_up, 1);

  measure(&loop, repeats, seconds, warmup, res, ours_pump);

  uint64_t bin = 0, fin = 0, bout = 0, fout = 0;
  for (unsigned i = 0; i < tablets; i++) {
    const posp2p_peer_stats *s = posp2p_peer_stats_get(posp2p_uv_peer_engine(O.tab[i].up));
    bin += s->bytes_in;
    fin += s->frames_in;
    bout += s->bytes_out;
    fout += s->frames_out;
  }
  res->order_frame_bytes = fin ? (double)bin / (double)fin : 0;
  res->ack_frame_bytes = fout ? (double)bout / (double)fout : 0;
  res->relayed = posp2p_peer_stats_get(posp2p_uv_peer_engine(O.main.up))->relayed;

  uv_check_stop(&check);
  uv_close((uv_handle_t *)&check, NULL);
  uv_close((uv_handle_t *)&tick, NULL);
  posp2p_uv_peer_shutdown(O.sender.up, "done", 1000);
  for (unsigned i = 0; i < tablets; i++) posp2p_uv_peer_shutdown(O.tab[i].up, "done", 1000);
  posp2p_uv_peer_shutdown(O.main.up, "done", 1000);
  if (!run_until(&loop, all_closed, 5)) die("ours: peers did not close");
  uv_run(&loop, UV_RUN_DEFAULT);
  if (posp2p_uv_ctx_del(O.ctx) < 0) die("ctx_del");
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) die("uv_loop_close: handles left");
  free(O.tab);
}

/* ---- Baseline: raw libuv, length-prefixed blobs -------------------------- */

enum { B_RELAY_SIDE = 0, B_SENDER = 1, B_TABLET = 2 };

typedef struct bconn {
  uv_tcp_t tcp;
  int role;          /* of the remote (relay side) or of this client */
  bool relay_side;   /* accepted by the relay */
  int index;         /* tablet index */
  bool known;        /* relay side: first frame (the "hello") seen */
  uint8_t *rbuf;
  size_t rlen, rcap;
  uint8_t *obuf;     /* pending output, flushed with one uv_write */
  size_t olen, ocap;
  bool dirty;
  struct bconn *next_dirty;
} bconn;

typedef struct {
  uv_write_t req;
  uint8_t *buf;
} bwrite;

static struct {
  uv_loop_t *loop;
  uv_tcp_t listener;
  bconn *sender;          /* client side */
  bconn *tab;             /* client side, N */
  bconn **r_tab;          /* relay side, by index */
  bconn *r_sender;        /* relay side */
  bconn *accepted[MAX_TABLETS + 2];
  unsigned naccepted;
  unsigned known;
  unsigned connected;
  size_t order_bytes, ack_bytes; /* frame sizes including the 4-byte prefix */
  bconn *dirty;
  unsigned open_handles;
} B;

static void b_append(bconn *c, const uint8_t *p, size_t n) {
  if (c->olen + n > c->ocap) {
    size_t cap = c->ocap ? c->ocap : 4096;
    while (cap < c->olen + n) cap *= 2;
    uint8_t *q = realloc(c->obuf, cap);
    if (q == NULL) die("out of memory");
    c->obuf = q;
    c->ocap = cap;
  }
  memcpy(c->obuf + c->olen, p, n);
  c->olen += n;
  if (!c->dirty) {
    c->dirty = true;
    c->next_dirty = B.dirty;
    B.dirty = c;
  }
}

static void b_write_cb(uv_write_t *req, int status) {
  bwrite *w = (bwrite *)req;
  if (status < 0 && status != UV_ECANCELED)
    fprintf(stderr, "posp2p-bench-relay: baseline write: %s\n", uv_strerror(status));
  free(w->buf);
  free(w);
}

static void b_flush(void) {
  while (B.dirty) {
    bconn *c = B.dirty;
    B.dirty = c->next_dirty;
    c->dirty = false;
    if (c->olen == 0) continue;
    bwrite *w = malloc(sizeof(*w));
    if (w == NULL) die("out of memory");
    w->buf = c->obuf;
    uv_buf_t b = uv_buf_init((char *)c->obuf, (unsigned)c->olen);
    c->obuf = NULL;
    c->olen = c->ocap = 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, b_write_cb) != 0) {
      free(w->buf);
      free(w);
    }
  }
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Frame: u32 body length, body. Order body: u16 destination (0xffff: every
 * tablet), u64 sequence, padding. Ack body: u64 sequence, padding. Hello
 * body: u8 role, u16 index. */
static uint8_t g_frame[1 << 20];

static void b_send_ack(bconn *to, uint64_t seq) {
  size_t n = B.ack_bytes;
  memset(g_frame, 0, n);
  put_u32(g_frame, (uint32_t)(n - 4));
  put_u64(g_frame + 4, seq);
  b_append(to, g_frame, n);
}

static void b_pump(void) {
  while (R.sending && R.inflight + (R.mode == MODE_FANOUT ? R.tablets : 1) <= R.window) {
    size_t n = B.order_bytes;
    memset(g_frame, 0x5a, n);
    put_u32(g_frame, (uint32_t)(n - 4));
    uint16_t dest = (uint16_t)(R.mode == MODE_FANOUT ? 0xffffu : R.seq % R.tablets);
    memcpy(g_frame + 4, &dest, 2);
    put_u64(g_frame + 6, R.seq);
    uint32_t slot = (uint32_t)(R.seq % RING);
    R.send_ns[slot] = now_ns();
    b_append(B.sender, g_frame, n);
    R.inflight += R.mode == MODE_FANOUT ? R.tablets : 1;
    R.seq++;
  }
  b_flush();
}

static void b_frame(bconn *c, const uint8_t *f, size_t n) {
  const uint8_t *body = f + 4;
  size_t blen = n - 4;
  if (c->relay_side) {
    if (!c->known) {
      c->known = true;
      c->role = body[0];
      uint16_t idx;
      memcpy(&idx, body + 1, 2);
      c->index = idx;
      if (c->role == B_SENDER) B.r_sender = c;
      else B.r_tab[idx] = c;
      B.known++;
      return;
    }
    if (c->role == B_SENDER) {
      uint16_t dest;
      memcpy(&dest, body, 2);
      if (dest == 0xffff) {
        for (unsigned i = 0; i < R.tablets; i++) b_append(B.r_tab[i], f, n);
        b_send_ack(B.r_sender, get_u64(body + 2)); /* custody */
      } else {
        b_append(B.r_tab[dest % R.tablets], f, n);
      }
    } else { /* an ack from a tablet */
      if (R.mode == MODE_FANOUT) ack_seq(get_u64(body), now_ns());
      else b_append(B.r_sender, f, n);
    }
    return;
  }
  (void)blen;
  if (c->role == B_TABLET) {
    R.delivered++;
    b_send_ack(c, get_u64(body + 2));
  } else if (R.mode == MODE_DIRECTED) { /* sender: end-to-end ack */
    ack_seq(get_u64(body), now_ns());
  }
}

static void b_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  bconn *c = h->data;
  if (c->rcap - c->rlen < 65536) {
    size_t cap = c->rcap ? c->rcap * 2 : 131072;
    uint8_t *p = realloc(c->rbuf, cap);
    if (p == NULL) die("out of memory");
    c->rbuf = p;
    c->rcap = cap;
  }
  *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void b_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  bconn *c = s->data;
  if (nread <= 0) {
    if (nread < 0 && nread != UV_EOF)
      fprintf(stderr, "posp2p-bench-relay: baseline read: %s\n", uv_strerror((int)nread));
    if (nread < 0) uv_read_stop(s);
    return;
  }
  c->rlen += (size_t)nread;
  size_t off = 0;
  while (c->rlen - off >= 4) {
    size_t n = 4 + get_u32(c->rbuf + off);
    if (c->rlen - off < n) break;
    b_frame(c, c->rbuf + off, n);
    off += n;
  }
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
  b_flush();
}

static void b_on_accept(uv_stream_t *server, int status) {
  if (status < 0) die("baseline accept: %s", uv_strerror(status));
  bconn *c = calloc(1, sizeof(*c));
  if (c == NULL) die("out of memory");
  c->relay_side = true;
  uv_tcp_init(B.loop, &c->tcp);
  c->tcp.data = c;
  B.open_handles++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) die("uv_accept");
  uv_tcp_nodelay(&c->tcp, 1);
  B.accepted[B.naccepted++] = c;
  uv_read_start((uv_stream_t *)&c->tcp, b_alloc, b_read);
}

static void b_on_connect(uv_connect_t *req, int status) {
  bconn *c = req->data;
  free(req);
  if (status < 0) die("baseline connect: %s", uv_strerror(status));
  uv_tcp_nodelay(&c->tcp, 1);
  uint8_t hello[7];
  put_u32(hello, 3);
  hello[4] = (uint8_t)c->role;
  uint16_t idx = (uint16_t)c->index;
  memcpy(hello + 5, &idx, 2);
  b_append(c, hello, sizeof(hello));
  b_flush();
  uv_read_start((uv_stream_t *)&c->tcp, b_alloc, b_read);
  B.connected++;
}

static void b_connect(bconn *c, int role, int index, uint32_t ip, const struct sockaddr_in *to) {
  c->role = role;
  c->index = index;
  uv_tcp_init(B.loop, &c->tcp);
  c->tcp.data = c;
  B.open_handles++;
  struct sockaddr_in me;
  memset(&me, 0, sizeof(me));
  me.sin_family = AF_INET;
  me.sin_addr.s_addr = htonl(ip);
  if (uv_tcp_bind(&c->tcp, (const struct sockaddr *)&me, 0) != 0) die("baseline bind");
  uv_connect_t *req = malloc(sizeof(*req));
  if (req == NULL) die("out of memory");
  req->data = c;
  if (uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)to, b_on_connect) != 0)
    die("baseline connect");
}

static bool b_all_known(void) { return B.known == R.tablets + 1 && B.connected == R.tablets + 1; }
static bool b_closed(void) { return B.open_handles == 0; }

static void b_close_cb(uv_handle_t *h) {
  B.open_handles--;
  (void)h;
}

static void b_check_cb(uv_check_t *h) {
  (void)h;
  b_pump();
}

static void b_free(bconn *c) {
  free(c->rbuf);
  free(c->obuf);
}

static void run_baseline(relay_mode mode, unsigned tablets, unsigned window, int repeats,
                         double seconds, double warmup, unsigned block, size_t order_bytes,
                         size_t ack_bytes, side_result *res) {
  reset_run(mode, tablets, window);
  memset(&B, 0, sizeof(B));
  B.order_bytes = order_bytes < 16 ? 16 : order_bytes;
  B.ack_bytes = ack_bytes < 16 ? 16 : ack_bytes;
  if (B.order_bytes > sizeof(g_frame)) B.order_bytes = sizeof(g_frame);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) die("uv_loop_init");
  B.loop = &loop;
  uv_tcp_init(&loop, &B.listener);
  B.open_handles++;
  struct sockaddr_in la;
  memset(&la, 0, sizeof(la));
  la.sin_family = AF_INET;
  la.sin_addr.s_addr = htonl(ip4(127, block, 0, 1));
  if (uv_tcp_bind(&B.listener, (const struct sockaddr *)&la, 0) != 0) die("baseline bind");
  if (uv_listen((uv_stream_t *)&B.listener, 1024, b_on_accept) != 0) die("baseline listen");
  int alen = sizeof(la);
  uv_tcp_getsockname(&B.listener, (struct sockaddr *)&la, &alen);
  B.r_tab = calloc(tablets, sizeof(bconn *));
  B.tab = calloc(tablets, sizeof(bconn));
  B.sender = calloc(1, sizeof(bconn));
  if (B.r_tab == NULL || B.tab == NULL || B.sender == NULL) die("out of memory");
  b_connect(B.sender, B_SENDER, 0, ip4(127, block, 0, 2), &la);
  for (unsigned i = 0; i < tablets; i++)
    b_connect(&B.tab[i], B_TABLET, (int)i, ip4(127, block, 1 + i / 200, 1 + i % 200), &la);
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, tick_cb, 50, 50);
  uv_check_t check;
  uv_check_init(&loop, &check);
  uv_check_start(&check, b_check_cb);
  if (!run_until(&loop, b_all_known, 10)) die("baseline: clients not connected");

  measure(&loop, repeats, seconds, warmup, res, b_pump);

  uv_check_stop(&check);
  uv_close((uv_handle_t *)&check, NULL);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_close((uv_handle_t *)&B.listener, b_close_cb);
  uv_close((uv_handle_t *)&B.sender->tcp, b_close_cb);
  for (unsigned i = 0; i < tablets; i++) uv_close((uv_handle_t *)&B.tab[i].tcp, b_close_cb);
  for (unsigned i = 0; i < B.naccepted; i++)
    uv_close((uv_handle_t *)&B.accepted[i]->tcp, b_close_cb);
  if (!run_until(&loop, b_closed, 5)) die("baseline: handles did not close");
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) die("uv_loop_close: handles left");
  b_free(B.sender);
  free(B.sender);
  for (unsigned i = 0; i < tablets; i++) b_free(&B.tab[i]);
  free(B.tab);
  for (unsigned i = 0; i < B.naccepted; i++) {
    b_free(B.accepted[i]);
    free(B.accepted[i]);
  }
  free(B.r_tab);
}

/* ---- Driver ------------------------------------------------------------------ */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  double median, min, max;
} stat3;

static stat3 stat_of(const double *v, int n) {
  double s[MAX_REPEATS];
  memcpy(s, v, (size_t)n * sizeof(double));
  qsort(s, (size_t)n, sizeof(double), cmp_d);
  stat3 r = {n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
  return r;
}

typedef struct {
  relay_mode mode;
  unsigned tablets;
  const char *message;
  size_t frame_bytes, ack_bytes;
  side_result ours, base;
  stat3 so, sb;
  double ratio;
} point;

static void usage(FILE *f) {
  fputs("usage: posp2p-bench-relay [--tablets LIST] [--messages LIST] [--modes LIST]\n"
        "                          [--window N] [--repeats N] [--seconds S]\n"
        "                          [--smoke] [--json FILE] [--help]\n"
        "\n"
        "The main POS relays orders from a sender to N tablets on loopback, with\n"
        "end-to-end acks (posp2p_uv, one loop), against a raw libuv relay moving\n"
        "frames of the same sizes over the same connections in the same run.\n"
        "\n"
        "  --tablets LIST    tablet counts (default 1,8,64)\n"
        "  --messages LIST   typical_order (10 items), large_order (200 items)\n"
        "                    (default both)\n"
        "  --modes LIST      directed (order k to tablet k%N, ack back to the sender)\n"
        "                    and/or fanout (by type to every tablet, custody at the\n"
        "                    main POS); default directed,fanout\n"
        "  --window N        deliveries in flight (default 256)\n"
        "  --repeats N       timed repeats per side (default 5)\n"
        "  --seconds S       length of one repeat (default 1.0)\n"
        "  --smoke           2 tablets, short repeats: checks that it runs\n"
        "  --json FILE       write results (schema posp2p-bench-relay/1)\n",
        f);
}

static bool in_list(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
    if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
  return false;
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if ((unsigned char)*s < 0x20) fputc(' ', f);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void cpu_model(char *out, size_t n) {
  snprintf(out, n, "?");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f == NULL) return;
  char line[256];
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *c = strchr(line, ':');
      if (c) {
        c += 2;
        c[strcspn(c, "\n")] = '\0';
        snprintf(out, n, "%s", c);
      }
      break;
    }
  }
  fclose(f);
}

int main(int argc, char **argv) {
  const char *tablets_list = "1,8,64", *messages = "typical_order,large_order",
             *modes = "directed,fanout", *json = NULL;
  unsigned window = 256;
  int repeats = 5;
  double seconds = 1.0, warmup = 0.3;
  bool smoke = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--smoke")) smoke = true;
    else if (v == NULL) { usage(stderr); return 2; }
    else if (!strcmp(a, "--tablets")) { tablets_list = v; i++; }
    else if (!strcmp(a, "--messages")) { messages = v; i++; }
    else if (!strcmp(a, "--modes")) { modes = v; i++; }
    else if (!strcmp(a, "--window")) { window = (unsigned)strtoul(v, NULL, 10); i++; }
    else if (!strcmp(a, "--repeats")) { repeats = atoi(v); i++; }
    else if (!strcmp(a, "--seconds")) { seconds = atof(v); i++; }
    else if (!strcmp(a, "--json")) { json = v; i++; }
    else { usage(stderr); return 2; }
  }
  if (smoke) {
    tablets_list = "2";
    messages = "typical_order";
    repeats = 2;
    seconds = 0.2;
    warmup = 0.05;
    window = 32;
  }
  if (repeats < 1 || repeats > MAX_REPEATS || seconds <= 0 || window < 1 || window > RING / 2) {
    usage(stderr);
    return 2;
  }
  unsigned tl[16];
  int ntl = 0;
  for (const char *p = tablets_list; *p && ntl < 16;) {
    unsigned long t = strtoul(p, (char **)&p, 10);
    if (t < 1 || t > MAX_TABLETS) die("tablet counts are 1..%u", MAX_TABLETS);
    tl[ntl++] = (unsigned)t;
    if (*p == ',') p++;
    else if (*p) die("bad --tablets");
  }
  double load0[1];
  getloadavg(load0, 1);

  /* Distinct 127.B blocks per run so that TIME_WAIT sockets of one run never
   * collide with the next one's addresses. */
  unsigned block = 90 + (unsigned)(getpid() % 40);
  point pts[64];
  int np = 0;
  const bench_msg_kind kinds[2] = {BENCH_MSG_TYPICAL, BENCH_MSG_LARGE};
  for (int m = 0; m < 2; m++) {
    if (!in_list(messages, bench_msg_name(kinds[m]))) continue;
    posp2p_arena arena;
    posp2p_arena_init(&arena, NULL, 65536);
    posp2p_envelope *order = bench_msg_build(kinds[m], 1, &arena);
    if (order == NULL) die("cannot build %s", bench_msg_name(kinds[m]));
    for (int md = 0; md < 2; md++) {
      if (!in_list(modes, md == 0 ? "directed" : "fanout")) continue;
      for (int t = 0; t < ntl && np < 64; t++) {
        point *p = &pts[np++];
        memset(p, 0, sizeof(*p));
        p->mode = (relay_mode)md;
        p->tablets = tl[t];
        p->message = bench_msg_name(kinds[m]);
        unsigned w = window;
        if (p->mode == MODE_FANOUT && w < tl[t]) w = tl[t];
        fprintf(stderr, "relay: %s %s, %u tablets ...\n", p->message,
                md ? "fanout" : "directed", tl[t]);
        run_ours(p->mode, tl[t], w, repeats, seconds, warmup, block, order, &p->ours);
        block = 90 + (block - 90 + 1) % 40;
        p->frame_bytes = (size_t)llround(p->ours.order_frame_bytes);
        p->ack_bytes = (size_t)llround(p->ours.ack_frame_bytes);
        run_baseline(p->mode, tl[t], w, repeats, seconds, warmup, block, p->frame_bytes,
                     p->ack_bytes, &p->base);
        block = 90 + (block - 90 + 1) % 40;
        p->so = stat_of(p->ours.rates, p->ours.nrates);
        p->sb = stat_of(p->base.rates, p->base.nrates);
        p->ratio = p->sb.median > 0 ? p->so.median / p->sb.median : 0;
      }
    }
    posp2p_arena_free(&arena);
  }
  free(R.lat.us);
  R.lat.us = NULL;
  double load1[1];
  getloadavg(load1, 1);

  bool opt = strcmp(POSP2P_BENCH_BUILD_TYPE, "Release") == 0 ||
             strcmp(POSP2P_BENCH_BUILD_TYPE, "RelWithDebInfo") == 0;
  bool representative = opt && !POSP2P_BENCH_SANITIZE;
  printf("relay throughput: main POS relaying to N tablets vs raw libuv relay (%s%s)\n",
         POSP2P_BENCH_BUILD_TYPE, representative ? "" : ", NOT representative");
  printf("%-14s %-8s %7s %6s %6s %14s %14s %6s %18s %18s\n", "message", "mode", "tablets",
         "frameB", "ackB", "ours frames/s", "raw frames/s", "ratio", "ours p50/p99 us",
         "raw p50/p99 us");
  double worst = -1;
  for (int i = 0; i < np; i++) {
    point *p = &pts[i];
    printf("%-14s %-8s %7u %6zu %6zu %14.0f %14.0f %6.3f %8.0f/%-9.0f %8.0f/%-9.0f\n",
           p->message, p->mode ? "fanout" : "directed", p->tablets, p->frame_bytes,
           p->ack_bytes, p->so.median, p->sb.median, p->ratio, p->ours.p50_us,
           p->ours.p99_us, p->base.p50_us, p->base.p99_us);
    if (worst < 0 || p->ratio < worst) worst = p->ratio;
  }
  printf("goal: ours >= %.0f%% of the raw baseline: worst point %.3f -> %s\n", GOAL_MIN * 100,
         worst, worst >= GOAL_MIN ? "met" : "NOT met");

  if (json != NULL) {
    FILE *f = fopen(json, "w");
    if (f == NULL) die("cannot write %s", json);
    char cpu[200], date[40];
    cpu_model(cpu, sizeof(cpu));
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    struct utsname un;
    uname(&un);
    const char *rev = getenv("POSP2P_BENCH_GIT");
    fprintf(f, "{\n \"schema\": \"posp2p-bench-relay/1\",\n \"benchmark\": \"relay\",\n");
    fprintf(f, " \"date\": \"%s\",\n \"source_revision\": ", date);
    json_str(f, rev ? rev : "unknown");
    fprintf(f, ",\n \"machine\": {\"cpu_model\": ");
    json_str(f, cpu);
    fprintf(f, ", \"logical_cpus\": %ld, \"kernel\": ", sysconf(_SC_NPROCESSORS_ONLN));
    json_str(f, un.release);
    fprintf(f, ", \"load_avg_start\": %.2f, \"load_avg_end\": %.2f},\n", load0[0], load1[0]);
    fprintf(f, " \"build\": {\"build_type\": \"%s\", \"c_flags\": ", POSP2P_BENCH_BUILD_TYPE);
    json_str(f, POSP2P_BENCH_C_FLAGS);
    fprintf(f, ", \"optimized\": %s, \"sanitizers\": %s, \"representative\": %s, "
               "\"libuv_version\": \"%s\"},\n",
            opt ? "true" : "false", POSP2P_BENCH_SANITIZE ? "true" : "false",
            representative ? "true" : "false", uv_version_string());
    fprintf(f, " \"config\": {\"smoke\": %s, \"window\": %u, \"repeats\": %d, "
               "\"seconds_per_repeat\": %.3f, \"warmup_s\": %.3f, \"loops\": 1, "
               "\"threads\": 1, \"tablets\": \"%s\", \"messages\": \"%s\", \"modes\": \"%s\"},\n",
            smoke ? "true" : "false", window, repeats, seconds, warmup, tablets_list, messages,
            modes);
    fprintf(f, " \"points\": [");
    for (int i = 0; i < np; i++) {
      point *p = &pts[i];
      fprintf(f, "%s\n  {\"tablets\": %u, \"frame_bytes\": %zu, \"ack_frame_bytes\": %zu, "
                 "\"message\": \"%s\", \"mode\": \"%s\",\n"
                 "   \"ours_frames_per_s\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f},\n"
                 "   \"baseline_frames_per_s\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f},\n"
                 "   \"ratio\": %.4f, \"latency_us\": {\"p50\": %.0f, \"p99\": %.0f},\n"
                 "   \"baseline_latency_us\": {\"p50\": %.0f, \"p99\": %.0f},\n"
                 "   \"latency_samples\": %" PRIu64 ", \"main_relayed_frames\": %" PRIu64 "}",
              i ? "," : "", p->tablets, p->frame_bytes, p->ack_bytes, p->message,
              p->mode ? "fanout" : "directed", p->so.median, p->so.min, p->so.max,
              p->sb.median, p->sb.min, p->sb.max, p->ratio, p->ours.p50_us, p->ours.p99_us,
              p->base.p50_us, p->base.p99_us, p->ours.lat_n, p->ours.relayed);
    }
    fprintf(f, "\n ],\n \"goals\": {\"relay_vs_raw\": {\"value\": %.4f, \"goal_min\": %.1f, "
               "\"met\": %s, \"over\": \"worst point\"}}\n}\n",
            worst, GOAL_MIN, worst >= GOAL_MIN ? "true" : "false");
    fclose(f);
  }
  return 0;
}
