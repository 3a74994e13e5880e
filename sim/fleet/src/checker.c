#include "checker.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posp2p/codec.h"

/* Per (message, recipient) state. */
enum {
  RC_EXPECTED = 1, /* named by the sender's SEND (directed, or the main POS
                      for a client's by-type message) */
  RC_ACKED = 2,
  RC_FAILED = 4,
  RC_IGNORED = 8   /* the application dropped it (test fault) */
};

typedef struct {
  uint32_t dev;
  uint16_t delivered, stale;
  uint8_t flags;
} rcpt_t;

typedef struct {
  uint8_t mid[16];
  uint32_t sender;     /* FL_NO_DEV until the SEND is seen */
  uint32_t originator; /* from deliveries, when no SEND */
  uint8_t mtype, flags, status;
  uint64_t order, t_send;
  rcpt_t *r;
  uint32_t nr, cap;
} msg_t;

typedef struct {
  uint64_t seq;
  int rank;
} status_t;

struct fl_checker {
  const fl_plan *plan;
  uint32_t max_listed;
  bool protocol_is_violation;
  fl_kmap msgs;
  fl_kmap status;      /* (order, dev, originator) -> status_t */
  uint8_t *down;       /* per device: currently down */
  fl_violation *list;
  size_t nlist;
  fl_violation *warn;
  size_t nwarn;
  size_t count[FL_V_NKINDS];
  size_t total;
  fl_check_summary sum;
  bool finished;
  uint64_t t_end, window; /* messages sent after t_end - window may be in flight */
};

static const char *const vnames[FL_V_NKINDS] = {
    "duplicate_delivery", "lost",           "unresolved",      "status_out_of_order",
    "misrouted",          "phantom",        "message_id_reused",
    "silent_device_not_disconnected",       "premature_timeout", "protocol"};

const char *fl_vkind_name(fl_vkind k) { return k < FL_V_NKINDS ? vnames[k] : "?"; }

uint64_t fl_order_key(uint32_t dev, uint32_t n) {
  return ((uint64_t)(dev + 1u) << 32) | n;
}

void fl_order_text(uint64_t key, char out[32]) {
  if (key == 0) out[0] = '\0';
  else if (key >> 63) snprintf(out, 32, "x%" PRIx64, key & INT64_MAX);
  else snprintf(out, 32, "o%u-%u", (unsigned)((key >> 32) - 1u), (unsigned)(key & 0xffffffffu));
}

fl_checker *fl_checker_new(const fl_plan *plan, uint32_t max_listed,
                           bool protocol_is_violation) {
  fl_checker *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->plan = plan;
  c->max_listed = max_listed;
  c->protocol_is_violation = protocol_is_violation;
  fl_kmap_init(&c->msgs);
  fl_kmap_init(&c->status);
  c->down = calloc((size_t)plan->n + 2, 1);
  c->list = calloc(max_listed ? max_listed : 1, sizeof(*c->list));
  c->warn = calloc(max_listed ? max_listed : 1, sizeof(*c->warn));
  if (c->down == NULL || c->list == NULL || c->warn == NULL) {
    fl_checker_free(c);
    return NULL;
  }
  return c;
}

void fl_checker_free(fl_checker *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->msgs.cap; i++) {
    msg_t *m = c->msgs.slots[i].val;
    if (m == NULL) continue;
    free(m->r);
    free(m);
  }
  fl_kmap_free(&c->msgs);
  for (size_t i = 0; i < c->status.cap; i++) free(c->status.slots[i].val);
  fl_kmap_free(&c->status);
  free(c->down);
  free(c->list);
  free(c->warn);
  free(c);
}

static const char *dname(const fl_checker *c, uint32_t idx) {
  if (idx == FL_NO_DEV || idx > c->plan->n) return "?";
  return c->plan->dev[idx].name;
}

static void add_violation(fl_checker *c, fl_vkind k, const msg_t *m, uint32_t dev,
                          uint32_t peer, uint64_t t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 7, 8)))
#endif
    ;
static void add_violation(fl_checker *c, fl_vkind k, const msg_t *m, uint32_t dev,
                          uint32_t peer, uint64_t t, const char *fmt, ...) {
  bool warning = k == FL_V_PROTOCOL && !c->protocol_is_violation;
  if (!warning) {
    c->count[k]++;
    c->total++;
  }
  fl_violation *list = warning ? c->warn : c->list;
  size_t *n = warning ? &c->nwarn : &c->nlist;
  if (*n >= c->max_listed) return;
  fl_violation *v = &list[(*n)++];
  memset(v, 0, sizeof(*v));
  v->kind = k;
  v->dev = dev;
  v->peer = peer;
  v->t_ms = t;
  if (m != NULL) {
    fl_uuid_text(m->mid, v->mid);
    fl_order_text(m->order, v->order);
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->text, sizeof(v->text), fmt, ap);
  va_end(ap);
}

void fl_checker_report(fl_checker *c, fl_vkind kind, uint32_t dev, uint32_t peer,
                       uint64_t t_ms, const char *text) {
  if (kind == FL_V_PROTOCOL) c->sum.protocol_events++;
  add_violation(c, kind, NULL, dev, peer, t_ms, "%s", text);
}

static msg_t *msg_get(fl_checker *c, const uint8_t mid[16]) {
  fl_key k;
  memcpy(k.b, mid, 16);
  msg_t *m = fl_kmap_get(&c->msgs, &k);
  if (m != NULL) return m;
  m = calloc(1, sizeof(*m));
  if (m == NULL) return NULL;
  memcpy(m->mid, mid, 16);
  m->sender = FL_NO_DEV;
  m->originator = FL_NO_DEV;
  if (fl_kmap_put(&c->msgs, &k, m) < 0) {
    free(m);
    return NULL;
  }
  c->sum.messages++;
  return m;
}

static rcpt_t *rcpt_get(fl_checker *c, msg_t *m, uint32_t dev) {
  for (uint32_t i = 0; i < m->nr; i++)
    if (m->r[i].dev == dev) return &m->r[i];
  if (m->nr == m->cap) {
    uint32_t ncap = m->cap ? m->cap * 2 : 1;
    rcpt_t *nr = realloc(m->r, ncap * sizeof(*nr));
    if (nr == NULL) return NULL;
    m->r = nr;
    m->cap = ncap;
  }
  rcpt_t *r = &m->r[m->nr++];
  memset(r, 0, sizeof(*r));
  r->dev = dev;
  c->sum.recipients++;
  return r;
}

static int status_rank(int s) {
  /* pending < sent_to_kitchen < preparing < ready < served < completed;
   * cancelled ends an order at any point. */
  return s == 6 ? 100 : s;
}

static void check_status(fl_checker *c, const fl_rec *r, msg_t *m) {
  if (r->order == 0) return;
  /* Key: order key, recipient and originator. */
  fl_key k = fl_key_u64(r->order, ((uint64_t)r->dev << 32) | r->peer);
  status_t *st = fl_kmap_get(&c->status, &k);
  if (st == NULL) {
    st = calloc(1, sizeof(*st));
    if (st == NULL || fl_kmap_put(&c->status, &k, st) < 0) {
      free(st);
      return;
    }
    st->rank = -1;
  }
  int rank = status_rank(r->status);
  if (r->seq != 0 && r->seq <= st->seq) {
    add_violation(c, FL_V_OUT_OF_ORDER, m, r->dev, r->peer, r->t_ms,
                  "%s delivered status '%s' (sequence %" PRIu64 ") from %s after "
                  "sequence %" PRIu64 " (ROUTE-9)",
                  dname(c, r->dev), posp2p_order_status_name(r->status), r->seq,
                  dname(c, r->peer), st->seq);
  } else if (rank <= st->rank && st->rank != 100) {
    add_violation(c, FL_V_OUT_OF_ORDER, m, r->dev, r->peer, r->t_ms,
                  "%s delivered status '%s' from %s after a later status of the "
                  "lifecycle (sequence %" PRIu64 ")",
                  dname(c, r->dev), posp2p_order_status_name(r->status),
                  dname(c, r->peer), r->seq);
  } else if (st->rank == 100) {
    add_violation(c, FL_V_OUT_OF_ORDER, m, r->dev, r->peer, r->t_ms,
                  "%s delivered status '%s' from %s after the order was cancelled",
                  dname(c, r->dev), posp2p_order_status_name(r->status),
                  dname(c, r->peer));
  }
  if (r->seq > st->seq) st->seq = r->seq;
  if (rank > st->rank) st->rank = rank;
}

void fl_checker_add(fl_checker *c, const fl_rec *r) {
  if (r->kind == FL_REC_DOWN || r->kind == FL_REC_UP) {
    if (r->dev <= c->plan->n) c->down[r->dev] = r->kind == FL_REC_DOWN;
    return;
  }
  msg_t *m = msg_get(c, r->mid);
  if (m == NULL) return;
  rcpt_t *rc;
  switch (r->kind) {
  case FL_REC_SEND:
    if (m->sender != FL_NO_DEV) {
      add_violation(c, FL_V_ID_REUSED, m, r->dev, r->peer, r->t_ms,
                    "%s sent a new message with the id of an earlier one from %s (MSG-2)",
                    dname(c, r->dev), dname(c, m->sender));
      return;
    }
    m->sender = r->dev;
    m->mtype = r->mtype;
    m->flags = r->flags;
    m->order = r->order;
    m->status = r->status;
    m->t_send = r->t_ms;
    if (r->peer != FL_NO_DEV) {
      rc = rcpt_get(c, m, r->peer);
      if (rc) rc->flags |= RC_EXPECTED;
    }
    break;
  case FL_REC_ACK:
  case FL_REC_FAIL:
    rc = rcpt_get(c, m, r->peer);
    if (rc == NULL) return;
    if (r->kind == FL_REC_ACK) {
      rc->flags |= RC_ACKED;
      c->sum.acked++;
    } else {
      rc->flags |= RC_FAILED;
      c->sum.failed++;
    }
    if (m->order == 0) m->order = r->order;
    break;
  case FL_REC_DELIVER:
  case FL_REC_STALE:
  case FL_REC_IGNORE:
    rc = rcpt_get(c, m, r->dev);
    if (rc == NULL) return;
    if (m->originator == FL_NO_DEV) m->originator = r->peer;
    if (m->mtype == 0) m->mtype = r->mtype;
    if (m->order == 0) m->order = r->order;
    if (r->kind == FL_REC_IGNORE) {
      rc->flags |= RC_IGNORED;
      return;
    }
    if (r->kind == FL_REC_STALE) {
      rc->stale++;
      c->sum.stale++;
    } else {
      rc->delivered++;
      c->sum.delivered++;
      if (rc->delivered + rc->stale == 2)
        add_violation(c, FL_V_DUPLICATE, m, r->dev, r->peer, r->t_ms,
                      "%s delivered %s from %s twice (ACK-18)", dname(c, r->dev),
                      posp2p_message_type_name(r->mtype), dname(c, r->peer));
      if (r->mtype == POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS)
        check_status(c, r, m);
    }
    break;
  default:
    break;
  }
}

static bool is_fleet(const fl_checker *c, uint32_t idx) {
  return idx != FL_NO_DEV && idx < c->plan->n;
}

void fl_checker_finish(fl_checker *c) {
  if (c->finished) return;
  c->finished = true;
  uint32_t main_idx = c->plan->main_idx;
  for (size_t i = 0; i < c->msgs.cap; i++) {
    msg_t *m = c->msgs.slots[i].val;
    if (m == NULL) continue;
    const char *tname = posp2p_message_type_name(m->mtype);
    if (tname == NULL) tname = "message";
    if (m->sender == FL_NO_DEV) {
      /* Delivered but no SEND: only possible for devices outside the fleet. */
      /* Only messages the fleet's applications send are recorded; the
       * engine's own (deviceInfo on a legacy connection) are not. */
      bool app_type = m->mtype == 4 || m->mtype == 5 || m->mtype == 6 || m->mtype == 8;
      if (is_fleet(c, m->originator) && app_type)
        add_violation(c, FL_V_PHANTOM, m, m->nr ? m->r[0].dev : FL_NO_DEV, m->originator,
                      0, "%s delivered a %s from %s that %s never sent",
                      m->nr ? dname(c, m->r[0].dev) : "?", tname,
                      dname(c, m->originator), dname(c, m->originator));
      continue;
    }
    bool client_bytype = (m->flags & FL_RF_CLIENT) != 0;
    bool bytype = (m->flags & FL_RF_BYTYPE) != 0;
    for (uint32_t j = 0; j < m->nr; j++) {
      rcpt_t *r = &m->r[j];
      bool got = r->delivered + r->stale > 0 || (r->flags & RC_IGNORED);
      bool resolved = (r->flags & (RC_ACKED | RC_FAILED)) != 0;
      /* Who must report this recipient's outcome: the sender, or the main
       * POS for a client's by-type message (custody). */
      uint32_t tracker = m->sender;
      if (client_bytype && r->dev != main_idx) tracker = main_idx;
      bool final_rcpt = !(client_bytype && r->dev == main_idx);
      if (!bytype && !client_bytype && !(r->flags & RC_EXPECTED) && got) {
        add_violation(c, FL_V_MISROUTED, m, r->dev, m->sender, m->t_send,
                      "%s delivered a %s that %s addressed to another device",
                      dname(c, r->dev), tname, dname(c, m->sender));
        continue;
      }
      if ((r->flags & RC_ACKED) && !got && final_rcpt && is_fleet(c, r->dev)) {
        add_violation(c, FL_V_LOST, m, r->dev, m->sender, m->t_send,
                      "%s's %s was acknowledged by %s but never delivered there",
                      dname(c, m->sender), tname, dname(c, r->dev));
        continue;
      }
      if ((r->flags & RC_IGNORED) && (r->flags & RC_ACKED)) {
        add_violation(c, FL_V_LOST, m, r->dev, m->sender, m->t_send,
                      "%s's %s was acknowledged by %s, whose application never "
                      "received it",
                      dname(c, m->sender), tname, dname(c, r->dev));
        continue;
      }
      bool must_resolve = (r->flags & RC_EXPECTED) || got;
      if (must_resolve && !resolved) {
        if (!is_fleet(c, tracker)) {
          /* An external main POS reports nothing to us. */
        } else if (c->down[tracker]) {
          c->sum.abandoned++;
        } else if (c->window != 0 && m->t_send + c->window > c->t_end) {
          c->sum.in_flight++;
        } else {
          add_violation(c, FL_V_UNRESOLVED, m, r->dev, m->sender, m->t_send,
                        "%s's %s to %s: %s was never told whether it was "
                        "delivered (no acknowledgement, no delivery_failed)%s",
                        dname(c, m->sender), tname, dname(c, r->dev),
                        dname(c, tracker), got ? "; it was delivered" : "");
        }
      }
    }
  }
}

void fl_checker_set_window(fl_checker *c, uint64_t t_end_ms, uint64_t window_ms) {
  c->t_end = t_end_ms;
  c->window = window_ms;
}

size_t fl_checker_count(const fl_checker *c) { return c->total; }
size_t fl_checker_count_kind(const fl_checker *c, fl_vkind k) {
  return k < FL_V_NKINDS ? c->count[k] : 0;
}
size_t fl_checker_listed(const fl_checker *c) { return c->nlist; }
const fl_violation *fl_checker_at(const fl_checker *c, size_t i) {
  return i < c->nlist ? &c->list[i] : NULL;
}
const fl_check_summary *fl_checker_summary(const fl_checker *c) { return &c->sum; }
size_t fl_checker_warnings(const fl_checker *c) { return c->nwarn; }
const fl_violation *fl_checker_warning_at(const fl_checker *c, size_t i) {
  return i < c->nwarn ? &c->warn[i] : NULL;
}
