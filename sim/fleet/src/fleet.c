/* The worker: devices, their applications, the event schedule.
 *
 * Time: every process shares the run start t0 on the uv_now clock
 * (CLOCK_MONOTONIC in ms), so run time means the same in every worker.
 * Latencies use uv_hrtime (the same clock in ns) and are measured from the
 * time a message was meant to be sent: the arrival time in the open-loop
 * schedule for orders and carts, the decision time for statuses. A device
 * that is disconnected, down or pushed back keeps the message in its
 * application queue, and the wait counts (coordinated omission).
 *
 * Order lifecycle (order_route = main, the default):
 *   tablet  --ORDER_FORWARD-->  main POS        (directed, acked end to end)
 *   main    --ORDER_FORWARD-->  each KDS        (directed; one is the owner)
 *   main    --ORDER_STATUS(sent_to_kitchen)--> tablet
 *   owner KDS --ORDER_STATUS(preparing, ready)--> main
 *   main    --ORDER_STATUS(preparing, ready, served, completed)--> tablet
 *   main    --ORDER_STATUS(ready, completed)--> customer displays (by type)
 *   tablet  --ORDER_CANCEL--> main --ORDER_CANCEL--> KDS, CANCELLED --> tablet
 *   tablet  --CART_SYNC--> customer displays (by type: main POS custody)
 * With order_route = kds (and in target mode, where the main POS is not
 * ours) tablets send orders and cancels to the KDS by type, and the owner
 * KDS sends every status to the tablet directly (relayed by the main POS).
 * Each originator numbers its ORDER_STATUS messages per order (ROUTE-10). */
#include "fleet.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "kmap.h"
#include "memstore.h"
#include "posp2p/uv.h"
#include "rng.h"

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define OS(x) POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_##x

/* ---- Application messages ---------------------------------------------------------- */

enum {
  APP_ORDER = 1, /* tablet: new order */
  APP_CART,      /* tablet: cart sync to the displays */
  APP_CANCEL,    /* tablet: cancel an order */
  APP_STATUS,    /* main / KDS: a status update */
  APP_FORWARD,   /* main: order to one KDS */
  APP_KCANCEL    /* main: cancel to one KDS */
};

typedef struct {
  uint8_t kind, status;
  bool owner;        /* APP_FORWARD: this KDS drives the lifecycle */
  uint32_t to;       /* device index, FL_NO_DEV: by type */
  int to_type;       /* device type for by-type sends */
  uint64_t order;
  uint64_t seq;
  uint64_t intended_ns;
  uint32_t items;
  uint32_t origin;   /* the tablet of the order */
} app_msg;

typedef struct {
  app_msg *buf;
  uint32_t head, len, cap;
} appq;

/* ---- Orders as each role sees them ---------------------------------------------------- */

typedef struct {
  uint64_t key;
  uint32_t origin;       /* tablet */
  uint32_t owner;        /* main: the KDS driving it; FL_NO_DEV none */
  uint64_t intended_ns;  /* when the tablet meant to send it */
  uint64_t seq;          /* last status sequence this device used */
  uint32_t items;
  uint8_t status;        /* furthest status reached */
  bool cancelled, done, owner_flag, open, arrived;
} ord;

/* ---- Devices ---------------------------------------------------------------------- */

enum { DEV_OFF = 0, DEV_UP = 1, DEV_CLOSING = 2 };

typedef struct fl_dev {
  const fl_pdev *pd;
  struct fl_worker *w;
  posp2p_uv_peer *up;
  posp2p_peer *eng;
  uint8_t state;
  bool ever_started, ever_connected, connected, connect_requested, main_known;
  posp2p_conn_id main_conn;
  posp2p_addr main_addr;
  uint64_t start_ms, lost_ms;
  bool waiting_first_ready;
  fl_memstore *store;
  fl_rng rng_order, rng_cart, rng_biz;
  uint32_t order_n, cart_n;
  appq q;
  bool in_flush;
  bool restart_pending;
  uint64_t restart_at;
  posp2p_peer_stats retired;
} fl_dev;

/* ---- Schedule: one min-heap of events per worker ----------------------------------------- */

enum {
  EV_START = 1, EV_ORDER, EV_CART, EV_CANCEL, EV_PREP, EV_READY, EV_SERVE, EV_COMPLETE,
  EV_KILL, EV_RESTART, EV_DISCOVER, EV_FALLBACK
};

typedef struct {
  uint64_t due;  /* run ms */
  uint64_t seq;
  uint64_t order;
  uint32_t dev;  /* global index */
  uint32_t aux;
  uint8_t kind;
} hev;

typedef struct {
  uint8_t mid[16];
  uint64_t intended_ns;
  uint64_t order;
  uint8_t kind;
} pend;

struct fl_worker {
  uv_loop_t *loop;
  const fl_plan *plan;
  const fl_config *cfg;
  int id;
  uint64_t t0, t0_ns;
  fl_sink sink;
  posp2p_uv_ctx *ctx;
  fl_dev *devs;
  uint32_t ndev;
  int32_t *local;             /* global index -> local, -1 */
  hev *heap;
  size_t nheap, capheap;
  uint64_t hseq;
  uv_timer_t timer, stats_timer, flush_timer;
  bool timers_open;
  fl_kmap orders;             /* (order, device) -> ord */
  fl_kmap pending;            /* message id -> pend */
  fl_dev **flushq;            /* devices with queued app messages */
  size_t nflush, capflush;
  fl_rec *recs;
  size_t nrecs, caprecs;
  uint64_t c[FL_NCOUNTERS];
  fl_hist h[FL_NHISTS];
  bool shutting, aborting, done_sent, fatal;
  uint32_t closing_left;
  uint64_t lifecycles_open;
  uint64_t lifecycle_events; /* EV_PREP..EV_COMPLETE in the heap */
  uint64_t warn_logged;
};

static uint64_t run_ms(const fl_worker *w) {
  uint64_t n = uv_now(w->loop);
  return n > w->t0 ? n - w->t0 : 0;
}

static uint64_t now_ns(void) { return uv_hrtime(); }

static void logf_(fl_worker *w, int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void logf_(fl_worker *w, int level, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (w->sink.log) w->sink.log(w->sink.ud, level, buf);
}

/* ---- Heap ------------------------------------------------------------------------------ */

static bool hless(const hev *a, const hev *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void timer_cb(uv_timer_t *t);

static void heap_arm(fl_worker *w) {
  if (!w->timers_open) return;
  if (w->nheap == 0) {
    uv_timer_stop(&w->timer);
    return;
  }
  uint64_t due = w->heap[0].due, now = run_ms(w);
  uv_timer_start(&w->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void heap_push(fl_worker *w, uint8_t kind, uint64_t due, uint32_t dev, uint64_t order,
                      uint32_t aux) {
  if (w->nheap == w->capheap) {
    size_t nc = w->capheap ? w->capheap * 2 : 1024;
    hev *nh = realloc(w->heap, nc * sizeof(*nh));
    if (nh == NULL) return;
    w->heap = nh;
    w->capheap = nc;
  }
  hev e = {due, ++w->hseq, order, dev, aux, kind};
  size_t i = w->nheap++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!hless(&e, &w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = e;
  if (kind >= EV_PREP && kind <= EV_COMPLETE) w->lifecycle_events++;
  if (i == 0) heap_arm(w);
}

static hev heap_pop(fl_worker *w) {
  hev top = w->heap[0];
  hev last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const hev *best = &last;
    if (l < n && hless(&w->heap[l], best)) {
      m = l;
      best = &w->heap[l];
    }
    if (r < n && hless(&w->heap[r], best)) m = r;
    if (m == i) break;
    w->heap[i] = w->heap[m];
    i = m;
  }
  if (n > 0) w->heap[i] = last;
  if (top.kind >= EV_PREP && top.kind <= EV_COMPLETE) w->lifecycle_events--;
  return top;
}

/* ---- Records --------------------------------------------------------------------------- */

static void rec_flush(fl_worker *w) {
  if (w->nrecs == 0) return;
  if (w->sink.records) w->sink.records(w->sink.ud, w->recs, w->nrecs);
  w->nrecs = 0;
}

static void rec_push(fl_worker *w, const fl_rec *r) {
  if (w->nrecs == w->caprecs) {
    if (w->caprecs >= 4096) rec_flush(w);
    if (w->nrecs == w->caprecs) {
      size_t nc = w->caprecs ? w->caprecs * 2 : 256;
      fl_rec *nr = realloc(w->recs, nc * sizeof(*nr));
      if (nr == NULL) {
        rec_flush(w);
        return;
      }
      w->recs = nr;
      w->caprecs = nc;
    }
  }
  w->recs[w->nrecs++] = *r;
}

static void rec_simple(fl_worker *w, uint8_t kind, uint32_t dev) {
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = kind;
  r.dev = dev;
  r.peer = FL_NO_DEV;
  r.t_ms = run_ms(w);
  rec_push(w, &r);
}

static void fi_violation(int kind, uint32_t dev, uint32_t peer, const char *text, void *ud) {
  fl_worker *w = ud;
  if (w->sink.violation) w->sink.violation(w->sink.ud, kind, dev, peer, run_ms(w), text);
}

/* ---- Helpers ---------------------------------------------------------------------------- */

static fl_dev *dev_local(fl_worker *w, uint32_t idx) {
  if (idx == FL_NO_DEV || idx >= w->plan->n || w->local[idx] < 0) return NULL;
  return &w->devs[w->local[idx]];
}

static uint32_t idx_of_id(fl_worker *w, const char *id) {
  return id ? fl_plan_by_id(w->plan, id) : FL_NO_DEV;
}

static uint64_t order_key_parse(const char *s) {
  unsigned dev, n;
  char tail;
  if (s && sscanf(s, "o%u-%u%c", &dev, &n, &tail) == 2) return fl_order_key(dev, n);
  /* Someone else's order id: a stable hash, top bit set. */
  uint64_t h = UINT64_C(1469598103934665603);
  for (const char *p = s ? s : ""; *p; p++) h = (h ^ (uint8_t)*p) * UINT64_C(1099511628211);
  return h | (UINT64_C(1) << 63);
}

static ord *ord_get(fl_worker *w, uint64_t key, uint32_t dev, bool create) {
  fl_key k = fl_key_u64(key, dev);
  ord *o = fl_kmap_get(&w->orders, &k);
  if (o != NULL || !create) return o;
  o = calloc(1, sizeof(*o));
  if (o == NULL) return NULL;
  o->key = key;
  o->origin = FL_NO_DEV;
  o->owner = FL_NO_DEV;
  if (fl_kmap_put(&w->orders, &k, o) < 0) {
    free(o);
    return NULL;
  }
  return o;
}

static void ord_del(fl_worker *w, uint64_t key, uint32_t dev) {
  fl_key k = fl_key_u64(key, dev);
  free(fl_kmap_del(&w->orders, &k));
}

static uint64_t drange(fl_rng *r, uint64_t lo, uint64_t hi) { return fl_rng_range(r, lo, hi); }

static void lifecycle_open(fl_worker *w, ord *o) {
  if (o->open) return;
  o->open = true;
  w->lifecycles_open++;
  w->c[FL_C_lifecycles_started]++;
}

static void lifecycle_close(fl_worker *w, ord *o, bool cancelled) {
  if (!o->open) return;
  o->open = false;
  w->lifecycles_open--;
  w->c[cancelled ? FL_C_lifecycles_cancelled : FL_C_lifecycles_completed]++;
}

/* "sim t=<ns> own=<0|1>" in special_instructions / status_reason. */
static uint64_t sim_t(const char *s) {
  unsigned long long t = 0;
  if (s && sscanf(s, "sim t=%llu", &t) == 1) return t;
  return 0;
}

static void hist_since(fl_worker *w, int h, uint64_t intended_ns) {
  if (intended_ns == 0) return;
  uint64_t n = now_ns();
  fl_hist_record(&w->h[h], n > intended_ns ? (n - intended_ns) / 1000u : 0);
}

/* ---- Sending --------------------------------------------------------------------------- */

enum { SEND_OK = 0, SEND_RETRY = 1, SEND_REFUSED = 2 };

static const char *const products[] = {"Flat white", "Margherita", "Caesar salad",
                                       "Club sandwich", "Lemonade", "Tiramisu",
                                       "Fries", "Soup of the day"};

/* Build and send one application message. Returns SEND_OK, SEND_RETRY
 * (keep it queued: not connected, pushed back) or SEND_REFUSED (the engine
 * said no for good: recipient offline, unknown...). */
static int try_send(fl_dev *d, const app_msg *m) {
  fl_worker *w = d->w;
  const fl_plan *pl = w->plan;
  if (d->state != DEV_UP || d->up == NULL) return SEND_RETRY;
  bool is_main = d->pd->role == FL_ROLE_MAIN;
  if (!is_main && !d->connected) return SEND_RETRY;

  posp2p_envelope e;
  posp2p_envelope_init(&e);
  char order_id[32];
  fl_order_text(m->order, order_id);
  char note[96];
  snprintf(note, sizeof(note), "sim t=%" PRIu64 " own=%d", m->intended_ns, m->owner ? 1 : 0);
  const char *to_id = NULL;
  uint32_t to = m->to;
  if (to != FL_NO_DEV) {
    if (to > pl->n) return SEND_REFUSED;
    to_id = pl->dev[to].id;
    if (to_id[0] == '(') to_id = NULL; /* external main not identified yet */
  }
  if (to_id != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = (char *)to_id;
  } else {
    int tt = m->to_type ? m->to_type : FL_ROLE_MAIN;
    e.opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    e.to_device_type = (Posp2p__V2__DeviceType)tt;
  }

  Posp2p__V2__OrderForward of = POSP2P__V2__ORDER_FORWARD__INIT;
  Posp2p__V2__OrderItem items[16];
  Posp2p__V2__OrderItem *itemp[16];
  Posp2p__V2__OrderStatus os = POSP2P__V2__ORDER_STATUS__INIT;
  Posp2p__V2__OrderCancel oc = POSP2P__V2__ORDER_CANCEL__INIT;
  Posp2p__V2__CartSync cs = POSP2P__V2__CART_SYNC__INIT;
  Posp2p__V2__CartItem citems[8];
  Posp2p__V2__CartItem *citemp[8];
  char pid[16][16];
  char cart_id[40];
  int mtype = 0;

  switch (m->kind) {
  case APP_ORDER:
  case APP_FORWARD: {
    mtype = MT(ORDER_FORWARD);
    uint32_t n = m->items ? m->items : 1;
    if (n > 16) n = 16;
    int64_t sub = 0;
    for (uint32_t i = 0; i < n; i++) {
      Posp2p__V2__OrderItem it = POSP2P__V2__ORDER_ITEM__INIT;
      uint32_t p = (uint32_t)((m->order + i * 7u) % 8u);
      snprintf(pid[i], sizeof(pid[i]), "p-%u", p + 1u);
      it.product_id = pid[i];
      it.product_name = (char *)products[p];
      it.price_minor = 350 + (int64_t)p * 125;
      it.quantity = (int32_t)(1 + (m->order + i) % 3u);
      sub += it.price_minor * it.quantity;
      items[i] = it;
      itemp[i] = &items[i];
    }
    of.order_id = order_id;
    of.n_items = n;
    of.items = itemp;
    of.subtotal_minor = sub;
    of.opt_tax_minor_case = POSP2P__V2__ORDER_FORWARD__OPT_TAX_MINOR_TAX_MINOR;
    of.tax_minor = sub / 10;
    of.total_minor = sub + sub / 10;
    of.currency_exponent = 2;
    of.currency = "EUR";
    of.order_status = m->kind == APP_ORDER ? OS(PENDING) : OS(SENT_TO_KITCHEN);
    of.destination = POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY;
    of.opt_table_number_case = POSP2P__V2__ORDER_FORWARD__OPT_TABLE_NUMBER_TABLE_NUMBER;
    of.table_number = (int32_t)(1 + m->order % 40u);
    of.opt_special_instructions_case =
        POSP2P__V2__ORDER_FORWARD__OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS;
    of.special_instructions = note;
    e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
    e.order_forward = &of;
    break;
  }
  case APP_STATUS:
    mtype = MT(ORDER_STATUS);
    os.order_id = order_id;
    os.new_status = (Posp2p__V2__OrderStatusCode)m->status;
    os.sequence = m->seq;
    os.opt_status_reason_case = POSP2P__V2__ORDER_STATUS__OPT_STATUS_REASON_STATUS_REASON;
    os.status_reason = note;
    e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS;
    e.order_status = &os;
    break;
  case APP_CANCEL:
  case APP_KCANCEL:
    mtype = MT(ORDER_CANCEL);
    oc.order_id = order_id;
    oc.reason = "customer changed their mind";
    oc.refund = false;
    e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL;
    e.order_cancel = &oc;
    break;
  case APP_CART: {
    mtype = MT(CART_SYNC);
    uint32_t n = m->items ? m->items : 1;
    if (n > 8) n = 8;
    int64_t tot = 0;
    for (uint32_t i = 0; i < n; i++) {
      Posp2p__V2__CartItem it = POSP2P__V2__CART_ITEM__INIT;
      uint32_t p = (uint32_t)((m->order + i * 3u) % 8u);
      snprintf(pid[i], sizeof(pid[i]), "p-%u", p + 1u);
      it.product_id = pid[i];
      it.product_name = (char *)products[p];
      it.price_minor = 350 + (int64_t)p * 125;
      it.quantity = 1;
      tot += it.price_minor;
      citems[i] = it;
      citemp[i] = &citems[i];
    }
    snprintf(cart_id, sizeof(cart_id), "c%u-%" PRIu64, d->pd->idx, m->order);
    cs.cart_id = cart_id;
    cs.n_items = n;
    cs.items = citemp;
    cs.total_minor = tot;
    cs.currency_exponent = 2;
    e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_CART_SYNC;
    e.cart_sync = &cs;
    break;
  }
  default:
    return SEND_REFUSED;
  }
  e.message_type = (Posp2p__V2__MessageType)mtype;
  char mid[POSP2P_UUID_LEN + 1];
  int rc = posp2p_uv_peer_send(d->up, &e, mid);
  if (rc == POSP2P_ERR_NO_ROUTE || rc == POSP2P_ERR_QUEUE_FULL || rc == POSP2P_ERR_STATE ||
      rc == POSP2P_ERR_SHUTDOWN)
    return SEND_RETRY;
  if (rc < 0) {
    w->c[FL_C_msgs_refused]++;
    if (m->kind == APP_ORDER) w->c[FL_C_orders_refused]++;
    return SEND_REFUSED;
  }
  /* Sent: a checker record and, for directed messages and a client's
   * by-type messages (acked once by the main POS), a latency entry. */
  w->c[FL_C_msgs_sent]++;
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = FL_REC_SEND;
  r.mtype = (uint8_t)mtype;
  r.status = m->kind == APP_STATUS ? m->status : 0;
  r.dev = d->pd->idx;
  r.order = m->order;
  r.seq = m->seq;
  r.t_ms = run_ms(w);
  fl_uuid_parse(mid, r.mid);
  bool track = true;
  if (to_id != NULL) {
    r.peer = to;
  } else if (!is_main) {
    r.flags = FL_RF_BYTYPE | FL_RF_CLIENT;
    r.peer = pl->main_idx;
  } else {
    r.flags = FL_RF_BYTYPE;
    r.peer = FL_NO_DEV;
    track = false;
  }
  rec_push(w, &r);
  if (track) {
    pend *p = malloc(sizeof(*p));
    if (p != NULL) {
      memcpy(p->mid, r.mid, 16);
      p->intended_ns = m->intended_ns;
      p->order = m->order;
      p->kind = m->kind;
      fl_key k;
      memcpy(k.b, r.mid, 16);
      void *old = fl_kmap_get(&w->pending, &k);
      if (old) free(old);
      if (fl_kmap_put(&w->pending, &k, p) < 0) free(p);
    }
  }
  switch (m->kind) {
  case APP_ORDER: w->c[FL_C_orders_sent]++; break;
  case APP_CART: w->c[FL_C_carts_sent]++; break;
  case APP_CANCEL: w->c[FL_C_cancels_sent]++; break;
  case APP_STATUS: w->c[FL_C_statuses_sent]++; break;
  case APP_FORWARD: w->c[FL_C_kitchen_forwards_sent]++; break;
  default: break;
  }
  return SEND_OK;
}

static void flushq_add(fl_worker *w, fl_dev *d) {
  if (d->in_flush) return;
  if (w->nflush == w->capflush) {
    size_t nc = w->capflush ? w->capflush * 2 : 64;
    fl_dev **nf = realloc(w->flushq, nc * sizeof(*nf));
    if (nf == NULL) return;
    w->flushq = nf;
    w->capflush = nc;
  }
  w->flushq[w->nflush++] = d;
  d->in_flush = true;
}

static bool q_push(fl_worker *w, fl_dev *d, const app_msg *m) {
  appq *q = &d->q;
  if (q->len >= w->cfg->app_queue_max) {
    w->c[FL_C_app_queue_dropped]++;
    return false;
  }
  if (q->len == q->cap) {
    uint32_t nc = q->cap ? q->cap * 2 : 8;
    app_msg *nb = malloc(nc * sizeof(*nb));
    if (nb == NULL) return false;
    for (uint32_t i = 0; i < q->len; i++) nb[i] = q->buf[(q->head + i) % q->cap];
    free(q->buf);
    q->buf = nb;
    q->head = 0;
    q->cap = nc;
  }
  q->buf[(q->head + q->len) % q->cap] = *m;
  q->len++;
  w->c[FL_C_app_queued]++;
  flushq_add(w, d);
  return true;
}

/* Send queued messages in order until one must wait. */
static void q_flush(fl_dev *d) {
  appq *q = &d->q;
  while (q->len > 0) {
    app_msg *m = &q->buf[q->head];
    int r = try_send(d, m);
    if (r == SEND_RETRY) return;
    q->head = (q->head + 1) % q->cap;
    q->len--;
  }
}

/* Send now if nothing is queued before it, else queue behind. */
static int app_send(fl_dev *d, const app_msg *m) {
  if (d->q.len == 0) {
    int r = try_send(d, m);
    if (r != SEND_RETRY) return r;
  }
  return q_push(d->w, d, m) ? SEND_RETRY : SEND_REFUSED;
}

static void flush_cb(uv_timer_t *t) {
  fl_worker *w = t->data;
  size_t j = 0;
  for (size_t i = 0; i < w->nflush; i++) {
    fl_dev *d = w->flushq[i];
    q_flush(d);
    if (d->q.len > 0) w->flushq[j++] = d;
    else d->in_flush = false;
  }
  w->nflush = j;
  rec_flush(w);
}

/* ---- Lifecycle ----------------------------------------------------------------------------- */

static int role_count(const fl_worker *w, int role) { return (int)w->plan->count[role]; }

static void send_status(fl_dev *d, ord *o, uint32_t to, int status, uint64_t intended) {
  app_msg m = {0};
  m.kind = APP_STATUS;
  m.status = (uint8_t)status;
  m.to = to;
  m.order = o->key;
  m.seq = ++o->seq;
  m.intended_ns = intended;
  if (to == FL_NO_DEV) m.to_type = FL_ROLE_DISPLAY;
  (void)app_send(d, &m);
}

static void displays_status(fl_dev *d, ord *o, int status, uint64_t intended) {
  fl_worker *w = d->w;
  uint32_t nd = w->plan->count[FL_ROLE_DISPLAY];
  if (nd == 0) return;
  if (w->cfg->wire == POSP2P_PEER_WIRE_LEGACY && d->pd->role != FL_ROLE_MAIN) {
    /* The legacy wire cannot say "to every display" (to_device_type is
     * dropped and the message would reach every device): address each. */
    for (uint32_t i = 0; i < nd; i++)
      send_status(d, o, w->plan->first[FL_ROLE_DISPLAY] + i, status, intended);
    return;
  }
  send_status(d, o, FL_NO_DEV, status, intended);
}

static void schedule_kitchen(fl_worker *w, fl_dev *d, ord *o) {
  uint64_t now = run_ms(w);
  uint64_t a = now + drange(&d->rng_biz, w->cfg->prep_delay_lo, w->cfg->prep_delay_hi);
  uint64_t b = a + drange(&d->rng_biz, w->cfg->prep_lo, w->cfg->prep_hi);
  heap_push(w, EV_PREP, a, d->pd->idx, o->key, 0);
  heap_push(w, EV_READY, b, d->pd->idx, o->key, 0);
}

/* Main POS: a tablet's order arrived. */
static void main_on_order(fl_dev *d, uint32_t from, uint64_t key, uint64_t t_int,
                          uint32_t items) {
  fl_worker *w = d->w;
  ord *o = ord_get(w, key, d->pd->idx, true);
  if (o == NULL || o->arrived) return;
  o->arrived = true;
  o->origin = from;
  o->intended_ns = t_int;
  o->items = items;
  uint64_t now = now_ns();
  if (o->cancelled) {
    /* The cancel overtook the order (a reorder fault): close it at once. */
    send_status(d, o, from, OS(CANCELLED), now);
    o->done = true;
    return;
  }
  lifecycle_open(w, o);
  uint32_t nk = w->plan->count[FL_ROLE_KDS];
  uint32_t start = nk ? (uint32_t)(key % nk) : 0;
  for (uint32_t i = 0; i < nk; i++) {
    uint32_t k = w->plan->first[FL_ROLE_KDS] + (start + i) % nk;
    app_msg m = {0};
    m.kind = APP_FORWARD;
    m.to = k;
    m.order = key;
    m.items = items;
    m.origin = from;
    m.intended_ns = t_int;
    m.owner = o->owner == FL_NO_DEV;
    int r = app_send(d, &m);
    if (r != SEND_REFUSED && o->owner == FL_NO_DEV) o->owner = k;
  }
  send_status(d, o, from, OS(SENT_TO_KITCHEN), now);
  o->status = OS(SENT_TO_KITCHEN);
  if (o->owner == FL_NO_DEV) {
    /* No kitchen screen took it: the kitchen works from the main POS. */
    w->c[FL_C_kitchen_fallbacks]++;
    schedule_kitchen(w, d, o);
  }
}

/* Main POS: a status from the kitchen (or its own fallback). */
static void main_on_kitchen_status(fl_dev *d, uint64_t key, int status, uint64_t intended) {
  fl_worker *w = d->w;
  ord *o = ord_get(w, key, d->pd->idx, false);
  if (o == NULL || o->cancelled || o->done || status <= o->status) return;
  o->status = (uint8_t)status;
  send_status(d, o, o->origin, status, intended);
  if (status == OS(READY)) {
    displays_status(d, o, status, intended);
    uint64_t at = run_ms(w) + drange(&d->rng_biz, w->cfg->serve_lo, w->cfg->serve_hi);
    heap_push(w, EV_SERVE, at, d->pd->idx, key, 0);
  }
}

/* KDS driving the whole lifecycle (order_route = kds): statuses go to the
 * tablet directly. */
static void kds_status_direct(fl_dev *d, ord *o, int status, uint64_t intended) {
  o->status = (uint8_t)status;
  send_status(d, o, o->origin, status, intended);
  if (status == OS(READY) || status == OS(COMPLETED)) displays_status(d, o, status, intended);
}

static void on_kitchen_order(fl_dev *d, uint32_t from, uint64_t key, bool owner,
                             uint32_t origin, uint64_t t_int) {
  fl_worker *w = d->w;
  w->c[FL_C_kitchen_deliveries]++;
  hist_since(w, FL_H_order_to_kitchen, t_int);
  (void)from;
  if (!owner) return;
  ord *o = ord_get(w, key, d->pd->idx, true);
  if (o == NULL || o->arrived) return;
  o->arrived = true;
  o->owner_flag = true;
  o->origin = origin;
  o->intended_ns = t_int;
  if (o->cancelled) {
    if (w->cfg->route == FL_ROUTE_KDS) kds_status_direct(d, o, OS(CANCELLED), now_ns());
    o->done = true;
    return;
  }
  if (w->cfg->route == FL_ROUTE_KDS) lifecycle_open(w, o);
  schedule_kitchen(w, d, o);
}

static uint32_t kds_owner_of(const fl_worker *w, uint64_t key) {
  uint32_t nk = w->plan->count[FL_ROLE_KDS];
  return nk ? w->plan->first[FL_ROLE_KDS] + (uint32_t)(key % nk) : FL_NO_DEV;
}

/* A heap event of the lifecycle. */
static void lifecycle_event(fl_worker *w, fl_dev *d, const hev *ev) {
  uint64_t intended = w->t0_ns + ev->due * 1000000u;
  bool is_main = d->pd->role == FL_ROLE_MAIN;
  ord *o = ord_get(w, ev->order, d->pd->idx, false);
  if (o == NULL || o->cancelled || o->done) return;
  switch (ev->kind) {
  case EV_PREP:
  case EV_READY: {
    int st = ev->kind == EV_PREP ? OS(PREPARING) : OS(READY);
    if (is_main) {
      main_on_kitchen_status(d, ev->order, st, intended);
    } else if (w->cfg->route == FL_ROUTE_KDS) {
      kds_status_direct(d, o, st, intended);
      if (st == OS(READY)) {
        uint64_t at = ev->due + drange(&d->rng_biz, w->cfg->serve_lo, w->cfg->serve_hi);
        heap_push(w, EV_SERVE, at, d->pd->idx, ev->order, 0);
      }
    } else {
      /* Report to the main POS. */
      send_status(d, o, w->plan->main_idx, st, intended);
      if (st == OS(READY)) {
        o->done = true;
        ord_del(w, ev->order, d->pd->idx);
      }
    }
    break;
  }
  case EV_SERVE:
    if (is_main) {
      o->status = OS(SERVED);
      send_status(d, o, o->origin, OS(SERVED), intended);
    } else {
      kds_status_direct(d, o, OS(SERVED), intended);
    }
    heap_push(w, EV_COMPLETE,
              ev->due + drange(&d->rng_biz, w->cfg->complete_lo, w->cfg->complete_hi),
              d->pd->idx, ev->order, 0);
    break;
  case EV_COMPLETE:
    if (is_main) {
      o->status = OS(COMPLETED);
      send_status(d, o, o->origin, OS(COMPLETED), intended);
      displays_status(d, o, OS(COMPLETED), intended);
    } else {
      kds_status_direct(d, o, OS(COMPLETED), intended);
    }
    o->done = true;
    lifecycle_close(w, o, false);
    ord_del(w, ev->order, d->pd->idx);
    break;
  default:
    break;
  }
}

static void on_cancel(fl_dev *d, uint64_t key) {
  fl_worker *w = d->w;
  bool is_main = d->pd->role == FL_ROLE_MAIN;
  ord *o = ord_get(w, key, d->pd->idx, true);
  if (o == NULL || o->cancelled || o->done) return;
  if (o->status >= OS(SERVED)) return; /* too late to cancel */
  o->cancelled = true;
  if (!o->arrived) return; /* the order itself comes later (reordered) */
  uint64_t now = now_ns();
  if (is_main) {
    send_status(d, o, o->origin, OS(CANCELLED), now);
    uint32_t nk = w->plan->count[FL_ROLE_KDS];
    for (uint32_t i = 0; i < nk; i++) {
      app_msg m = {0};
      m.kind = APP_KCANCEL;
      m.to = w->plan->first[FL_ROLE_KDS] + i;
      m.order = key;
      m.intended_ns = now;
      (void)app_send(d, &m);
    }
    displays_status(d, o, OS(CANCELLED), now);
    lifecycle_close(w, o, true);
    o->done = true;
  } else if (w->cfg->route == FL_ROUTE_KDS && o->owner_flag) {
    kds_status_direct(d, o, OS(CANCELLED), now);
    lifecycle_close(w, o, true);
    o->done = true;
  }
}

/* ---- Tablet traffic ----------------------------------------------------------------------- */

static double order_rate(const fl_worker *w, const fl_dev *d) {
  if (d->pd->role == FL_ROLE_TABLET) return w->cfg->order_rate;
  if (d->pd->role == FL_ROLE_SECONDARY) return w->cfg->secondary_rate;
  return 0;
}

static void schedule_next(fl_worker *w, fl_dev *d, uint8_t kind, double from_s) {
  double end = (double)w->cfg->duration_ms / 1000.0;
  double base = kind == EV_ORDER ? order_rate(w, d) : w->cfg->cart_rate;
  fl_rng *r = kind == EV_ORDER ? &d->rng_order : &d->rng_cart;
  double t = fl_poisson_next(r, from_s, end, base, fl_config_max_factor(w->cfg),
                             fl_config_rate_factor, w->cfg);
  if (t >= end) return;
  /* Keep the exact arrival (in us) for the intended send time. */
  uint64_t us = (uint64_t)(t * 1e6);
  heap_push(w, kind, us / 1000u, d->pd->idx, us, 0);
}

static void on_order_event(fl_worker *w, fl_dev *d, const hev *ev) {
  uint64_t us = ev->order;
  uint64_t intended = w->t0_ns + us * 1000u;
  /* Draw the order's content from the schedule stream whether or not it
   * is sent, so the schedule does not depend on what happened. */
  uint32_t n = ++d->order_n;
  uint32_t items = (uint32_t)fl_rng_range(&d->rng_order, w->cfg->items_lo, w->cfg->items_hi);
  bool cancel = fl_rng_chance(&d->rng_order, w->cfg->cancel_ratio);
  uint64_t cancel_after =
      fl_rng_range(&d->rng_order, w->cfg->cancel_after_lo, w->cfg->cancel_after_hi);
  schedule_next(w, d, EV_ORDER, (double)us / 1e6);
  w->c[FL_C_orders_generated]++;
  if (d->state != DEV_UP || w->shutting) {
    w->c[FL_C_orders_skipped_down]++;
    return;
  }
  uint64_t key = fl_order_key(d->pd->idx, n);
  ord *o = ord_get(w, key, d->pd->idx, true);
  if (o == NULL) return;
  o->intended_ns = intended;
  o->arrived = true;
  app_msg m = {0};
  m.kind = APP_ORDER;
  m.order = key;
  m.items = items;
  m.intended_ns = intended;
  m.origin = d->pd->idx;
  if (w->cfg->route == FL_ROUTE_MAIN) {
    m.to = w->plan->main_idx;
  } else {
    m.to = FL_NO_DEV;
    m.to_type = FL_ROLE_KDS;
  }
  (void)app_send(d, &m);
  if (cancel) heap_push(w, EV_CANCEL, ev->due + cancel_after, d->pd->idx, key, 0);
}

static void on_cart_event(fl_worker *w, fl_dev *d, const hev *ev) {
  uint64_t us = ev->order;
  uint32_t items = (uint32_t)fl_rng_range(&d->rng_cart, 1, 6);
  schedule_next(w, d, EV_CART, (double)us / 1e6);
  if (d->state != DEV_UP || w->shutting) return;
  app_msg m = {0};
  m.kind = APP_CART;
  m.order = ++d->cart_n;
  m.items = items;
  m.intended_ns = w->t0_ns + us * 1000u;
  if (role_count(w, FL_ROLE_DISPLAY) > 0) {
    m.to = FL_NO_DEV;
    m.to_type = FL_ROLE_DISPLAY;
  } else {
    m.to = w->plan->main_idx;
  }
  (void)app_send(d, &m);
}

static void on_cancel_event(fl_worker *w, fl_dev *d, const hev *ev) {
  ord *o = ord_get(w, ev->order, d->pd->idx, false);
  if (o == NULL || o->done || o->status >= OS(SERVED) || w->shutting) return;
  app_msg m = {0};
  m.kind = APP_CANCEL;
  m.order = ev->order;
  m.intended_ns = w->t0_ns + ev->due * 1000000u;
  if (w->cfg->route == FL_ROUTE_MAIN) {
    m.to = w->plan->main_idx;
  } else {
    m.to = FL_NO_DEV;
    m.to_type = FL_ROLE_KDS;
  }
  (void)app_send(d, &m);
}

/* ---- Engine events --------------------------------------------------------------------------- */

static void deliver_record(fl_worker *w, fl_dev *d, const posp2p_envelope *e, uint8_t kind,
                           uint64_t key) {
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = kind;
  r.mtype = (uint8_t)e->message_type;
  r.dev = d->pd->idx;
  r.peer = idx_of_id(w, e->from_device_id);
  r.order = key;
  r.t_ms = run_ms(w);
  if (e->message_type == MT(ORDER_STATUS) && e->order_status) {
    r.seq = e->order_status->sequence;
    r.status = (uint8_t)e->order_status->new_status;
  }
  fl_uuid_parse(e->message_id, r.mid);
  rec_push(w, &r);
}

static bool test_lose(fl_worker *w, fl_dev *d) {
  uint64_t t = run_ms(w);
  for (size_t f = 0; f < w->cfg->nfaults; f++) {
    const fl_fault *ft = &w->cfg->faults[f];
    if (ft->kind != FL_FAULT_TEST_LOSE || t < ft->start_ms || t >= ft->end_ms) continue;
    if (fl_plan_fault_hits(w->plan, f, d->pd->idx) && fl_rng_chance(&d->rng_biz, ft->rate))
      return true;
  }
  return false;
}

static uint64_t payload_order(const posp2p_envelope *e) {
  switch (e->payload_case) {
  case POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD: return order_key_parse(e->order_forward->order_id);
  case POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS: return order_key_parse(e->order_status->order_id);
  case POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL: return order_key_parse(e->order_cancel->order_id);
  default: return 0;
  }
}

static void on_message(fl_worker *w, fl_dev *d, const posp2p_envelope *e) {
  uint64_t key = payload_order(e);
  int role = d->pd->role;
  if (e->message_type == MT(ORDER_FORWARD) && role != FL_ROLE_MAIN && test_lose(w, d)) {
    /* Test fault: the application loses the order after the engine has
     * acknowledged it; the sender is never told. The checker must see it. */
    w->c[FL_C_fault_lost_by_app]++;
    deliver_record(w, d, e, FL_REC_IGNORE, key);
    return;
  }
  deliver_record(w, d, e, FL_REC_DELIVER, key);
  uint32_t from = idx_of_id(w, e->from_device_id);
  switch (e->message_type) {
  case MT(ORDER_FORWARD): {
    const Posp2p__V2__OrderForward *of = e->order_forward;
    const char *note = of->opt_special_instructions_case ? of->special_instructions : NULL;
    uint64_t t_int = sim_t(note);
    int own = 0;
    if (note) {
      const char *p = strstr(note, "own=");
      if (p) own = p[4] == '1';
    }
    if (role == FL_ROLE_MAIN) {
      main_on_order(d, from, key, t_int, (uint32_t)of->n_items);
    } else if (role == FL_ROLE_KDS) {
      bool owner;
      uint32_t origin = from;
      if (w->cfg->route == FL_ROUTE_MAIN && !w->plan->main_external) {
        owner = own != 0;
        origin = (uint32_t)((key >> 32) - 1u);
      } else {
        owner = kds_owner_of(w, key) == d->pd->idx;
      }
      if (key >> 63) origin = from;
      on_kitchen_order(d, from, key, owner, origin, t_int);
    }
    break;
  }
  case MT(ORDER_STATUS): {
    w->c[FL_C_statuses_delivered]++;
    const Posp2p__V2__OrderStatus *os = e->order_status;
    uint64_t t_int = sim_t(os->opt_status_reason_case ? os->status_reason : NULL);
    if (role == FL_ROLE_MAIN) {
      main_on_kitchen_status(d, key, (int)os->new_status, now_ns());
    } else if (role == FL_ROLE_TABLET || role == FL_ROLE_SECONDARY) {
      hist_since(w, FL_H_status, t_int);
      if (os->new_status == OS(COMPLETED) || os->new_status == OS(CANCELLED)) {
        ord *o = ord_get(w, key, d->pd->idx, false);
        if (o) ord_del(w, key, d->pd->idx);
      } else {
        ord *o = ord_get(w, key, d->pd->idx, false);
        if (o && os->new_status > o->status) o->status = (uint8_t)os->new_status;
      }
    } else if (role == FL_ROLE_DISPLAY) {
      hist_since(w, FL_H_status, t_int);
    }
    break;
  }
  case MT(ORDER_CANCEL):
    if (role == FL_ROLE_MAIN || role == FL_ROLE_KDS) on_cancel(d, key);
    break;
  default:
    break;
  }
}

static void on_ack_or_fail(fl_worker *w, fl_dev *d, const posp2p_peer_event *ev, bool ack) {
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = ack ? FL_REC_ACK : FL_REC_FAIL;
  r.dev = d->pd->idx;
  r.peer = idx_of_id(w, ev->device_id);
  r.flags = ev->custody ? FL_RF_CUSTODY : 0;
  r.t_ms = run_ms(w);
  if (!fl_uuid_parse(ev->message_id, r.mid)) return;
  fl_key k;
  memcpy(k.b, r.mid, 16);
  pend *p = ev->custody ? NULL : fl_kmap_del(&w->pending, &k);
  if (p != NULL) r.order = p->order;
  rec_push(w, &r);
  if (ack) w->c[FL_C_msgs_acked]++;
  else w->c[FL_C_msgs_failed]++;
  if (p == NULL) return;
  if (ack) {
    hist_since(w, FL_H_message_ack, p->intended_ns);
    if (p->kind == APP_ORDER) {
      w->c[FL_C_orders_acked]++;
      hist_since(w, FL_H_order_ack, p->intended_ns);
    } else if (p->kind == APP_CART) {
      w->c[FL_C_carts_acked]++;
      hist_since(w, FL_H_cart_ack, p->intended_ns);
    }
  } else {
    if (p->kind == APP_ORDER) w->c[FL_C_orders_failed]++;
    if (p->kind == APP_CART) w->c[FL_C_carts_failed]++;
    if (p->kind == APP_FORWARD && d->pd->role == FL_ROLE_MAIN) {
      /* The owner KDS never got the order: drive it from the main POS. */
      ord *o = ord_get(w, p->order, d->pd->idx, false);
      if (o && !o->cancelled && !o->done && o->owner == r.peer && o->status < OS(PREPARING)) {
        o->owner = d->pd->idx;
        w->c[FL_C_kitchen_fallbacks]++;
        schedule_kitchen(w, d, o);
      }
    }
  }
  free(p);
}

static void dev_connect_main(fl_dev *d);

static void on_event(posp2p_uv_peer *up, const posp2p_peer_event *ev, void *ud) {
  fl_dev *d = ud;
  fl_worker *w = d->w;
  (void)up;
  bool is_main = d->pd->role == FL_ROLE_MAIN;
  switch (ev->type) {
  case POSP2P_PEER_EV_DEVICE:
    if (!is_main && ev->device && ev->device->type == FL_ROLE_MAIN &&
        ev->device->addr.port != 0 && !d->connect_requested) {
      if (w->plan->main_external) {
        /* Target mode: the target answered discovery; now its id is known
         * and the connection can name it (the legacy wire needs that). */
        if (ev->device->addr.ip == w->cfg->target_ip) {
          fl_plan_set_external_id((fl_plan *)w->plan, ev->device->id);
          d->main_known = true;
          dev_connect_main(d);
        }
      } else if (idx_of_id(w, ev->device->id) == w->plan->main_idx) {
        d->main_known = true;
        d->main_addr = ev->device->addr;
        dev_connect_main(d);
      }
    }
    break;
  case POSP2P_PEER_EV_CONN_READY: {
    w->c[FL_C_conn_ready]++;
    uint32_t remote = ev->device ? idx_of_id(w, ev->device->id) : FL_NO_DEV;
    /* A client's only connection is to the main POS. On the legacy wire
     * the remote is identified by the first message it sends, which may
     * carry no device type (an acknowledgement). */
    bool to_main = !is_main && ev->device &&
                   (ev->device->type == FL_ROLE_MAIN || w->plan->main_external);
    if (to_main) {
      if (w->plan->main_external && ev->device->type == FL_ROLE_MAIN &&
          (remote == FL_NO_DEV || remote == w->plan->main_idx)) {
        fl_plan_set_external_id((fl_plan *)w->plan, ev->device->id);
        remote = w->plan->main_idx;
      } else if (w->plan->main_external) {
        remote = w->plan->main_idx;
      }
      d->connected = true;
      d->ever_connected = true;
      d->main_conn = ev->conn;
      if (d->waiting_first_ready) {
        d->waiting_first_ready = false;
        fl_hist_record(&w->h[FL_H_connect], (run_ms(w) - d->start_ms) * 1000u);
      } else if (d->lost_ms) {
        fl_hist_record(&w->h[FL_H_reconnect], (run_ms(w) - d->lost_ms) * 1000u);
      }
      d->lost_ms = 0;
      q_flush(d);
    }
    fl_fi_conn_ready(posp2p_uv_peer_engine(up), ev->conn, remote);
    break;
  }
  case POSP2P_PEER_EV_CONN_CLOSED:
    w->c[FL_C_conn_closed]++;
    fl_fi_conn_closed(posp2p_uv_peer_engine(up), ev->conn);
    if (!is_main && d->connected && ev->conn == d->main_conn) {
      d->connected = false;
      d->main_conn = 0;
      d->lost_ms = run_ms(w);
    }
    break;
  case POSP2P_PEER_EV_MESSAGE:
    if (ev->msg) on_message(w, d, ev->msg);
    break;
  case POSP2P_PEER_EV_STATUS_STALE:
    w->c[FL_C_statuses_stale]++;
    if (ev->msg) deliver_record(w, d, ev->msg, FL_REC_STALE, payload_order(ev->msg));
    break;
  case POSP2P_PEER_EV_ACK:
    on_ack_or_fail(w, d, ev, true);
    break;
  case POSP2P_PEER_EV_DELIVERY_FAILED:
    on_ack_or_fail(w, d, ev, false);
    break;
  case POSP2P_PEER_EV_DEVICE_TIMEOUT:
    w->c[FL_C_device_timeouts]++;
    fl_fi_conn_timeout(posp2p_uv_peer_engine(up), ev->conn);
    break;
  case POSP2P_PEER_EV_ERROR_RECEIVED:
    w->c[FL_C_errors_received]++;
    break;
  case POSP2P_PEER_EV_VIOLATION: {
    w->c[FL_C_protocol_violations]++;
    posp2p_conn_info info;
    uint32_t peer = FL_NO_DEV;
    if (posp2p_peer_conn_info(posp2p_uv_peer_engine(up), ev->conn, &info) == 0) {
      peer = idx_of_id(w, info.device_id);
      if (peer == FL_NO_DEV) peer = fl_plan_by_ip(w->plan, info.remote.ip);
    }
    char text[320];
    snprintf(text, sizeof(text), "%s: peer %s broke %s: %s%s", d->pd->name,
             peer != FL_NO_DEV ? w->plan->dev[peer].name : "(unidentified)",
             ev->requirement && ev->requirement[0] ? ev->requirement : "a rule", ev->text,
             ev->closing ? " (connection closed)" : "");
    if (w->sink.violation)
      w->sink.violation(w->sink.ud, FL_V_PROTOCOL, d->pd->idx, peer, run_ms(w), text);
    break;
  }
  case POSP2P_PEER_EV_BACKPRESSURE:
    w->c[FL_C_backpressure]++;
    break;
  case POSP2P_PEER_EV_DRAINED:
    q_flush(d);
    break;
  case POSP2P_PEER_EV_DATAGRAM_IGNORED:
    w->c[FL_C_datagrams_ignored]++;
    break;
  default:
    break;
  }
}

static void on_warning(posp2p_uv_peer *up, int code, const char *text, void *ud) {
  fl_dev *d = ud;
  fl_worker *w = d->w;
  (void)up;
  (void)code;
  w->c[FL_C_transport_warnings]++;
  if (w->warn_logged < 20) {
    w->warn_logged++;
    logf_(w, FL_LOG_WARN, "%s: %s%s", d->pd->name, text,
          w->warn_logged == 20 ? " (further transport warnings are only counted)" : "");
  }
}

static void stats_add(posp2p_peer_stats *a, const posp2p_peer_stats *b) {
  a->frames_in += b->frames_in;
  a->frames_out += b->frames_out;
  a->bytes_in += b->bytes_in;
  a->bytes_out += b->bytes_out;
  a->delivered += b->delivered;
  a->duplicates += b->duplicates;
  a->acks_sent += b->acks_sent;
  a->acks_received += b->acks_received;
  a->retransmissions += b->retransmissions;
  a->delivery_failed += b->delivery_failed;
  a->relayed += b->relayed;
  a->datagrams_in += b->datagrams_in;
  a->datagrams_out += b->datagrams_out;
}

static void worker_maybe_done(fl_worker *w);

static void on_closed(posp2p_uv_peer *up, void *ud) {
  fl_dev *d = ud;
  fl_worker *w = d->w;
  posp2p_peer *eng = posp2p_uv_peer_engine(up);
  stats_add(&d->retired, posp2p_peer_stats_get(eng));
  fl_fi_engine_gone(eng);
  d->up = NULL;
  d->eng = NULL;
  d->state = DEV_OFF;
  d->connected = false;
  if (w->shutting || w->aborting) {
    if (w->closing_left > 0) w->closing_left--;
    worker_maybe_done(w);
    return;
  }
  if (d->restart_pending) {
    uint64_t now = run_ms(w);
    heap_push(w, EV_RESTART, d->restart_at > now ? d->restart_at : now, d->pd->idx, 0, 0);
  }
}

/* ---- Device lifecycle -------------------------------------------------------------------------- */

static void dev_connect_main(fl_dev *d) {
  fl_worker *w = d->w;
  if (d->state != DEV_UP || d->connect_requested || !d->main_known) return;
  const char *expect = w->plan->dev[w->plan->main_idx].id;
  if (expect[0] == '(') expect = NULL; /* target not identified (yet) */
  posp2p_conn_id cid = 0;
  /* Set first: the engine reports the device as "connecting" from inside
   * the call, and that event must not start a second connection. */
  d->connect_requested = true;
  int rc = posp2p_uv_peer_connect(d->up, &d->main_addr, (posp2p_peer_wire)w->cfg->wire,
                                  expect, &cid);
  if (rc < 0) {
    /* The engine's reconnect timer retries. */
    logf_(w, FL_LOG_WARN, "%s: connect: %s", d->pd->name, posp2p_uv_strerror(rc));
  }
}

static int dev_start(fl_worker *w, fl_dev *d) {
  const fl_config *c = w->cfg;
  const fl_pdev *pd = d->pd;
  bool is_main = pd->role == FL_ROLE_MAIN;
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_id = pd->id;
  cfg.device_name = pd->name;
  cfg.device_type = pd->role;
  cfg.heartbeat_interval_ms = c->heartbeat_ms;
  cfg.device_timeout_ms = c->timeout_ms;
  cfg.ack_timeout_ms = c->ack_timeout_ms;
  cfg.ack_backoff_cap_ms = c->backoff_cap_ms;
  cfg.max_retries = c->max_retries;
  cfg.handshake_timeout_ms = c->handshake_ms;
  cfg.close_linger_ms = c->linger_ms;
  cfg.discovery_port = c->disc_port;
  uint32_t total = fl_config_total(c);
  if (is_main) {
    cfg.announce_interval_ms = c->announce_ms;
    cfg.max_connections = total + 64;
    cfg.max_devices = total + 64;
    cfg.reconnect_ms = 0;
  } else {
    cfg.announce_interval_ms = 0;
    cfg.reconnect_ms = c->reconnect_ms;
    cfg.max_devices = 64; /* clients only need the main POS */
    cfg.max_connections = 8;
    /* Discovery requests in the wire the clients speak. */
    if (c->wire == POSP2P_PEER_WIRE_LEGACY) cfg.wire = POSP2P_PEER_WIRE_LEGACY;
  }
  if (c->mode == FL_MODE_NETNS) cfg.broadcast_ip = c->subnet | 0xffffu;
  else cfg.broadcast_ip = 0x7fffffffu;
  posp2p_uv_opts o;
  posp2p_uv_opts_init(&o);
  o.bind_ip = pd->ip;
  o.tcp_port = c->data_port;
  o.tcp_listen = is_main;
  o.udp = c->discovery != FL_DISC_NONE || is_main;
  o.allow_lan = c->mode == FL_MODE_NETNS;
  o.netns_key = pd->ns >= 0 ? pd->ns : 0;
  posp2p_uv_callbacks cb = {on_event, on_closed, on_warning};
  posp2p_peer_store iface, *st = NULL;
  if (d->store != NULL) {
    fl_memstore_iface(d->store, &iface);
    st = &iface;
  }
  posp2p_uv_error err;
  memset(&err, 0, sizeof(err));
  int rc = posp2p_uv_peer_new(&d->up, w->ctx, &cfg, st, &o, &cb, d, &err);
  if (rc < 0) {
    w->c[FL_C_start_failures]++;
    logf_(w, FL_LOG_ERROR, "%s: cannot start: %s", pd->name, err.message);
    d->up = NULL;
    return rc;
  }
  d->eng = posp2p_uv_peer_engine(d->up);
  fl_fi_engine_add(d->eng, d->up, pd->idx);
  if (d->store != NULL) {
    fl_memstore_counts cnt;
    if (fl_memstore_restore(d->store, d->eng, uv_now(w->loop), &cnt) == 0)
      w->c[FL_C_store_restored] += cnt.outbox;
  }
  rc = posp2p_uv_peer_start(d->up, &err);
  if (rc < 0) {
    w->c[FL_C_start_failures]++;
    logf_(w, FL_LOG_ERROR, "%s: cannot start: %s", pd->name, err.message);
    posp2p_uv_peer_abort(d->up);
    d->state = DEV_CLOSING;
    return rc;
  }
  d->state = DEV_UP;
  d->connected = false;
  d->connect_requested = false;
  if (!is_main) {
    if (w->plan->main_external) {
      d->main_addr.ip = c->target_ip;
      d->main_addr.port = c->target_port;
      if (c->discovery == FL_DISC_NONE || d->ever_connected) {
        d->main_known = true;
      } else {
        /* Ask who is there first (to learn the target's id); connect
         * without it if the target does not answer. */
        heap_push(w, EV_DISCOVER, run_ms(w), pd->idx, 0, 0);
        heap_push(w, EV_FALLBACK, run_ms(w) + 3000u, pd->idx, 0, 0);
      }
    } else if (c->discovery == FL_DISC_NONE) {
      d->main_known = true;
      d->main_addr.ip = w->plan->dev[w->plan->main_idx].ip;
      d->main_addr.port = c->data_port;
    }
    if (d->main_known) {
      dev_connect_main(d);
    } else if (c->discovery == FL_DISC_REQUEST) {
      heap_push(w, EV_DISCOVER, run_ms(w), pd->idx, 0, 0);
    } else if (c->discovery == FL_DISC_AUTO) {
      uint64_t wait = 2u * (c->announce_ms ? c->announce_ms : 1000u) +
                      fl_rng_range(&d->rng_biz, 0, 1000);
      heap_push(w, EV_DISCOVER, run_ms(w) + wait, pd->idx, 0, 0);
    }
  }
  return 0;
}

static void dev_first_start(fl_worker *w, fl_dev *d) {
  d->ever_started = true;
  d->start_ms = run_ms(w);
  d->waiting_first_ready = d->pd->role != FL_ROLE_MAIN;
  if (dev_start(w, d) < 0) {
    if (d->pd->role == FL_ROLE_MAIN || w->cfg->mode == FL_MODE_LOOPBACK) {
      /* A device that cannot bind means a busy address: the run is void. */
      w->fatal = true;
    }
    return;
  }
  double from = (double)run_ms(w) / 1000.0;
  if (order_rate(w, d) > 0) schedule_next(w, d, EV_ORDER, from);
  if ((d->pd->role == FL_ROLE_TABLET || d->pd->role == FL_ROLE_SECONDARY) &&
      w->cfg->cart_rate > 0)
    schedule_next(w, d, EV_CART, from);
}

static void dev_kill(fl_worker *w, fl_dev *d, const fl_fault *f) {
  if (d->state != DEV_UP) return;
  w->c[FL_C_kills]++;
  rec_simple(w, FL_REC_DOWN, d->pd->idx);
  logf_(w, FL_LOG_INFO, "%s: %s (fault %s)", d->pd->name,
        f->graceful ? "shutting down" : "crashing", f->name);
  if (f->restart_after_ms != UINT64_MAX) {
    d->restart_pending = true;
    d->restart_at = run_ms(w) + f->restart_after_ms;
  }
  d->state = DEV_CLOSING;
  d->connected = false;
  if (f->graceful) {
    if (posp2p_uv_peer_shutdown(d->up, "restart", w->cfg->shutdown_ms) < 0)
      posp2p_uv_peer_abort(d->up);
  } else {
    posp2p_uv_peer_abort(d->up);
  }
}

static void dev_restart(fl_worker *w, fl_dev *d) {
  d->restart_pending = false;
  if (d->state != DEV_OFF || w->shutting) return;
  w->c[FL_C_restarts]++;
  rec_simple(w, FL_REC_UP, d->pd->idx);
  d->lost_ms = run_ms(w);
  logf_(w, FL_LOG_INFO, "%s: restarting", d->pd->name);
  if (dev_start(w, d) == 0) {
    if (d->q.len) flushq_add(w, d);
  }
}

/* ---- The schedule --------------------------------------------------------------------------- */

static void timer_cb(uv_timer_t *t) {
  fl_worker *w = t->data;
  uint64_t now = run_ms(w);
  int budget = 20000; /* keep the loop responsive under a burst */
  while (w->nheap > 0 && w->heap[0].due <= now && budget-- > 0) {
    hev ev = heap_pop(w);
    fl_dev *d = dev_local(w, ev.dev);
    if (d == NULL) continue;
    if (w->shutting && ev.kind != EV_PREP && ev.kind != EV_READY && ev.kind != EV_SERVE &&
        ev.kind != EV_COMPLETE)
      continue;
    switch (ev.kind) {
    case EV_START:
      if (!w->shutting) dev_first_start(w, d);
      break;
    case EV_ORDER: on_order_event(w, d, &ev); break;
    case EV_CART: on_cart_event(w, d, &ev); break;
    case EV_CANCEL: on_cancel_event(w, d, &ev); break;
    case EV_PREP:
    case EV_READY:
    case EV_SERVE:
    case EV_COMPLETE:
      lifecycle_event(w, d, &ev);
      break;
    case EV_KILL:
      if (ev.aux < w->cfg->nfaults) dev_kill(w, d, &w->cfg->faults[ev.aux]);
      break;
    case EV_RESTART: dev_restart(w, d); break;
    case EV_FALLBACK:
      if (d->state == DEV_UP && !d->connect_requested) {
        logf_(w, FL_LOG_INFO, "%s: the target did not answer discovery; connecting anyway",
              d->pd->name);
        d->main_known = true;
        dev_connect_main(d);
      }
      break;
    case EV_DISCOVER:
      if (d->state == DEV_UP && !d->connect_requested && !d->connected) {
        w->c[FL_C_discovery_requests]++;
        (void)posp2p_uv_peer_discover(d->up);
        uint64_t next = run_ms(w) + 1000u + fl_rng_range(&d->rng_biz, 0, 1000);
        heap_push(w, EV_DISCOVER, next, d->pd->idx, 0, 0);
      }
      break;
    default:
      break;
    }
  }
  rec_flush(w);
  heap_arm(w);
  if (w->fatal && !w->aborting) {
    logf_(w, FL_LOG_ERROR, "worker %d: a device failed to start; stopping", w->id);
    fl_worker_abort(w);
  }
}

/* ---- Stats --------------------------------------------------------------------------------- */

static uint64_t read_rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL) return 0;
  unsigned long size = 0, rss = 0;
  int n = fscanf(f, "%lu %lu", &size, &rss);
  fclose(f);
  if (n != 2) return 0;
  return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
}

static uint64_t count_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL) return 0;
  uint64_t n = 0;
  while (readdir(dir) != NULL) n++;
  closedir(dir);
  return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own fd */
}

static void stats_emit(fl_worker *w, bool final) {
  rec_flush(w);
  fl_wstats *s = malloc(sizeof(*s));
  if (s == NULL) return;
  memset(s, 0, sizeof(*s));
  s->worker = w->id;
  s->t_ms = run_ms(w);
  memcpy(s->c, w->c, sizeof(w->c));
  posp2p_peer_stats es;
  memset(&es, 0, sizeof(es));
  uint64_t outbox = 0, appq_len = 0, ebytes = 0, sbytes = 0, up = 0, conn = 0, mainc = 0;
  for (uint32_t i = 0; i < w->ndev; i++) {
    fl_dev *d = &w->devs[i];
    stats_add(&es, &d->retired);
    appq_len += d->q.len;
    if (d->store) sbytes += fl_memstore_bytes(d->store);
    if (d->eng == NULL) continue;
    stats_add(&es, posp2p_peer_stats_get(d->eng));
    outbox += posp2p_peer_outbox_count(d->eng);
    ebytes += posp2p_peer_memory(d->eng);
    if (d->state == DEV_UP) up++;
    if (d->connected) conn++;
    if (d->pd->role == FL_ROLE_MAIN) mainc += posp2p_peer_conn_count(d->eng);
  }
  s->c[FL_C_retransmissions] = es.retransmissions;
  s->c[FL_C_duplicates_suppressed] = es.duplicates;
  s->c[FL_C_frames_in] = es.frames_in;
  s->c[FL_C_frames_out] = es.frames_out;
  s->c[FL_C_bytes_in] = es.bytes_in;
  s->c[FL_C_bytes_out] = es.bytes_out;
  s->c[FL_C_datagrams_in] = es.datagrams_in;
  s->c[FL_C_datagrams_out] = es.datagrams_out;
  s->c[FL_C_engine_delivered] = es.delivered;
  s->c[FL_C_engine_acks_sent] = es.acks_sent;
  s->c[FL_C_engine_delivery_failed] = es.delivery_failed;
  fl_fi_stats fs;
  fl_fi_stats_get(&fs);
  s->c[FL_C_fault_frames_dropped] = fs.frames_dropped;
  s->c[FL_C_fault_frames_duplicated] = fs.frames_duplicated;
  s->c[FL_C_fault_frames_delayed] = fs.frames_delayed;
  s->c[FL_C_fault_frames_reordered] = fs.frames_reordered;
  s->c[FL_C_fault_bytes_gated] = fs.bytes_gated;
  s->c[FL_C_fault_datagrams_dropped] = fs.datagrams_dropped;
  s->c[FL_C_fault_read_stops] = fs.read_stops;
  s->g[FL_G_devices] = w->ndev;
  s->g[FL_G_devices_up] = up;
  s->g[FL_G_clients_connected] = conn;
  s->g[FL_G_main_connections] = mainc;
  s->g[FL_G_outbox] = outbox;
  s->g[FL_G_app_queue] = appq_len;
  s->g[FL_G_lifecycles_open] = w->lifecycles_open;
  s->g[FL_G_fault_held] = fl_fi_pending();
  s->g[FL_G_rss_kb] = read_rss_kb();
  s->g[FL_G_engine_bytes] = ebytes;
  s->g[FL_G_store_bytes] = sbytes;
  s->g[FL_G_pending_events] = w->nheap;
  s->g[FL_G_lifecycle_events] = w->lifecycle_events;
  if (final || s->t_ms < 60000 || (s->t_ms / 1000) % 10 == 0) s->g[FL_G_fds] = count_fds();
  memcpy(s->h, w->h, sizeof(w->h));
  for (int i = 0; i < FL_NHISTS; i++) fl_hist_reset(&w->h[i]);
  if (w->sink.stats) w->sink.stats(w->sink.ud, s);
  free(s);
}

/* Milliseconds until the next whole second of run time (the run may not
 * have started yet). */
static uint64_t until_next_second(const fl_worker *w) {
  uint64_t now = uv_now(w->loop);
  if (now < w->t0 + 1000u) return w->t0 + 1000u - now;
  uint64_t r = now - w->t0;
  return (r / 1000u + 1u) * 1000u - r;
}

static void stats_cb(uv_timer_t *t) {
  fl_worker *w = t->data;
  stats_emit(w, false);
  uv_timer_start(&w->stats_timer, stats_cb, until_next_second(w), 0);
}

static void worker_maybe_done(fl_worker *w) {
  if (w->done_sent || w->closing_left > 0) return;
  if (!w->shutting && !w->aborting) return;
  w->done_sent = true;
  stats_emit(w, true);
  if (w->sink.done) w->sink.done(w->sink.ud, w->fatal ? 3 : 0);
}

/* ---- Public API ------------------------------------------------------------------------------ */

fl_worker *fl_worker_new(uv_loop_t *loop, const fl_plan *plan, const fl_config *cfg, int id,
                         uint64_t t0_ms, const fl_sink *sink) {
  fl_worker *w = calloc(1, sizeof(*w));
  if (w == NULL) return NULL;
  w->loop = loop;
  w->plan = plan;
  w->cfg = cfg;
  w->id = id;
  w->t0 = t0_ms;
  w->t0_ns = t0_ms * 1000000u;
  if (sink) w->sink = *sink;
  fl_kmap_init(&w->orders);
  fl_kmap_init(&w->pending);
  for (int i = 0; i < FL_NHISTS; i++) fl_hist_init(&w->h[i]);
  w->local = malloc(((size_t)plan->n + 1) * sizeof(*w->local));
  if (w->local == NULL) {
    free(w);
    return NULL;
  }
  uint32_t n = 0;
  for (uint32_t i = 0; i < plan->n; i++) {
    bool mine = plan->nworkers == 0 || plan->dev[i].worker == id;
    w->local[i] = mine ? (int32_t)n++ : -1;
  }
  w->local[plan->n] = -1;
  w->ndev = n;
  w->devs = calloc(n ? n : 1, sizeof(*w->devs));
  if (w->devs == NULL) {
    free(w->local);
    free(w);
    return NULL;
  }
  for (uint32_t i = 0; i < plan->n; i++) {
    if (w->local[i] < 0) continue;
    fl_dev *d = &w->devs[w->local[i]];
    d->pd = &plan->dev[i];
    d->w = w;
    fl_rng_seed(&d->rng_order, cfg->seed, i, 1);
    fl_rng_seed(&d->rng_cart, cfg->seed, i, 2);
    fl_rng_seed(&d->rng_biz, cfg->seed, i, 3);
    if (d->pd->store) d->store = fl_memstore_new(4096, 600000);
  }
  return w;
}

int fl_worker_start(fl_worker *w) {
  if (posp2p_uv_ctx_new(&w->ctx, w->loop) < 0) return -1;
  fl_fi_callbacks fcb = {fi_violation, w};
  if (fl_fi_init(w->loop, w->plan, w->cfg, w->t0, &fcb) < 0) return -1;
  uv_timer_init(w->loop, &w->timer);
  uv_timer_init(w->loop, &w->stats_timer);
  uv_timer_init(w->loop, &w->flush_timer);
  w->timer.data = w->stats_timer.data = w->flush_timer.data = w;
  w->timers_open = true;
  const fl_config *c = w->cfg;
  uint32_t clients = 0;
  for (uint32_t i = 0; i < w->plan->n; i++)
    if (w->plan->dev[i].role != FL_ROLE_MAIN) clients++;
  for (uint32_t i = 0; i < w->ndev; i++) {
    fl_dev *d = &w->devs[i];
    uint64_t at = 0;
    if (d->pd->role != FL_ROLE_MAIN) {
      /* Clients power on over start_spread, in index order. */
      uint32_t k = d->pd->idx - (w->plan->main_external ? 0 : 1);
      at = 100 + (clients ? c->start_spread_ms * k / clients : 0);
    }
    heap_push(w, EV_START, at, d->pd->idx, 0, 0);
  }
  for (size_t f = 0; f < c->nfaults; f++) {
    const fl_fault *ft = &c->faults[f];
    if (ft->kind != FL_FAULT_KILL && ft->kind != FL_FAULT_MAIN_RESTART) continue;
    for (uint32_t i = 0; i < w->ndev; i++)
      if (fl_plan_fault_hits(w->plan, f, w->devs[i].pd->idx))
        heap_push(w, EV_KILL, ft->start_ms, w->devs[i].pd->idx, 0, (uint32_t)f);
  }
  uv_timer_start(&w->stats_timer, stats_cb, until_next_second(w), 0);
  uv_timer_start(&w->flush_timer, flush_cb, 50, 50);
  heap_arm(w);
  return 0;
}

void fl_worker_shutdown(fl_worker *w) {
  if (w->shutting || w->aborting) return;
  w->shutting = true;
  fl_fi_final();
  w->nheap = 0;
  w->lifecycle_events = 0;
  w->closing_left = 0;
  for (uint32_t i = 0; i < w->ndev; i++) {
    fl_dev *d = &w->devs[i];
    d->restart_pending = false;
    if (d->up == NULL) continue;
    w->closing_left++;
    if (d->state == DEV_UP) {
      d->state = DEV_CLOSING;
      if (posp2p_uv_peer_shutdown(d->up, "shutdown", w->cfg->shutdown_ms) < 0)
        posp2p_uv_peer_abort(d->up);
    }
  }
  worker_maybe_done(w);
}

void fl_worker_abort(fl_worker *w) {
  if (w->aborting) return;
  bool was_shutting = w->shutting;
  w->aborting = true;
  fl_fi_final();
  w->nheap = 0;
  w->lifecycle_events = 0;
  if (!was_shutting) w->closing_left = 0;
  for (uint32_t i = 0; i < w->ndev; i++) {
    fl_dev *d = &w->devs[i];
    d->restart_pending = false;
    if (d->up == NULL) continue;
    if (!was_shutting) w->closing_left++;
    d->state = DEV_CLOSING;
    posp2p_uv_peer_abort(d->up);
  }
  worker_maybe_done(w);
}

static void noop_close(uv_handle_t *h) { (void)h; }

void fl_worker_close(fl_worker *w) {
  if (w->timers_open) {
    w->timers_open = false;
    uv_close((uv_handle_t *)&w->timer, noop_close);
    uv_close((uv_handle_t *)&w->stats_timer, noop_close);
    uv_close((uv_handle_t *)&w->flush_timer, noop_close);
  }
  fl_fi_close_handles();
}

void fl_worker_free(fl_worker *w) {
  if (w == NULL) return;
  if (w->ctx) (void)posp2p_uv_ctx_del(w->ctx);
  fl_fi_close();
  for (uint32_t i = 0; i < w->ndev; i++) {
    free(w->devs[i].q.buf);
    fl_memstore_free(w->devs[i].store);
  }
  for (size_t i = 0; i < w->orders.cap; i++) free(w->orders.slots[i].val);
  fl_kmap_free(&w->orders);
  for (size_t i = 0; i < w->pending.cap; i++) free(w->pending.slots[i].val);
  fl_kmap_free(&w->pending);
  free(w->flushq);
  free(w->recs);
  free(w->heap);
  free(w->devs);
  free(w->local);
  free(w);
}
