#include "agg.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NOPEN 8 /* seconds whose order_ack histograms are still open */

typedef struct {
  uint64_t c[FL_NCOUNTERS];
  uint64_t g[FL_NGAUGES];
  int64_t bin;           /* second its gauges were last added to, -1 none */
  uint64_t last_t;
  bool seen, done;
  int status;
} wstate;

struct fl_agg {
  const fl_plan *plan;
  const fl_config *cfg;
  fl_checker *chk;
  int nworkers; /* reporting units (1 when in-process) */
  int verbosity;
  wstate *ws;
  fl_hist h[FL_NHISTS];
  fl_sec *sec;
  size_t nsec, capsec;
  fl_hist open_h[NOPEN];
  int64_t open_t[NOPEN];
  uint64_t peak[FL_NGAUGES], wpeak[FL_NGAUGES];
  int done, status;
  bool tty;
};

const char *const fl_counter_names[FL_NCOUNTERS] = {
#define N_(n) #n,
    FL_COUNTERS(N_)
#undef N_
};
const char *const fl_gauge_names[FL_NGAUGES] = {
#define N_(n) #n,
    FL_GAUGES(N_)
#undef N_
};
const char *const fl_hist_names[FL_NHISTS] = {
#define N_(n) #n,
    FL_HISTS(N_)
#undef N_
};

fl_agg *fl_agg_new(const fl_plan *plan, const fl_config *cfg, fl_checker *chk, int nworkers,
                   int verbosity) {
  fl_agg *a = calloc(1, sizeof(*a));
  if (a == NULL) return NULL;
  a->plan = plan;
  a->cfg = cfg;
  a->chk = chk;
  a->nworkers = nworkers > 0 ? nworkers : 1;
  a->verbosity = verbosity;
  a->ws = calloc((size_t)a->nworkers, sizeof(*a->ws));
  if (a->ws == NULL) {
    free(a);
    return NULL;
  }
  for (int i = 0; i < a->nworkers; i++) a->ws[i].bin = -1;
  for (int i = 0; i < FL_NHISTS; i++) fl_hist_init(&a->h[i]);
  for (int i = 0; i < NOPEN; i++) {
    fl_hist_init(&a->open_h[i]);
    a->open_t[i] = -1;
  }
  return a;
}

void fl_agg_free(fl_agg *a) {
  if (a == NULL) return;
  free(a->ws);
  free(a->sec);
  free(a);
}

static fl_sec *sec_get(fl_agg *a, uint64_t t_s) {
  if (t_s >= a->nsec) {
    if (t_s >= 1000000) return NULL;
    size_t need = (size_t)t_s + 1;
    if (need > a->capsec) {
      size_t nc = a->capsec ? a->capsec : 64;
      while (nc < need) nc *= 2;
      fl_sec *ns = realloc(a->sec, nc * sizeof(*ns));
      if (ns == NULL) return NULL;
      a->sec = ns;
      a->capsec = nc;
    }
    memset(a->sec + a->nsec, 0, (need - a->nsec) * sizeof(*a->sec));
    for (size_t i = a->nsec; i < need; i++) a->sec[i].t_s = i;
    a->nsec = need;
  }
  return &a->sec[t_s];
}

static void close_open(fl_agg *a, int slot) {
  if (a->open_t[slot] < 0) return;
  fl_sec *s = sec_get(a, (uint64_t)a->open_t[slot]);
  const fl_hist *h = &a->open_h[slot];
  if (s != NULL && h->count > 0) {
    s->ack_count = h->count;
    s->ack_p50_us = fl_hist_quantile(h, 0.5);
    s->ack_p99_us = fl_hist_quantile(h, 0.99);
    s->ack_max_us = h->max;
  }
  fl_hist_reset(&a->open_h[slot]);
  a->open_t[slot] = -1;
}

static void a_records(void *ud, const fl_rec *r, size_t n) {
  fl_agg *a = ud;
  for (size_t i = 0; i < n; i++) fl_checker_add(a->chk, &r[i]);
}

static void a_violation(void *ud, int kind, uint32_t dev, uint32_t peer, uint64_t t_ms,
                        const char *text) {
  fl_agg *a = ud;
  fl_checker_report(a->chk, (fl_vkind)kind, dev, peer, t_ms, text);
}

static void a_stats(void *ud, const fl_wstats *s) {
  fl_agg *a = ud;
  int wk = a->nworkers == 1 ? 0 : s->worker;
  if (wk < 0 || wk >= a->nworkers) return;
  wstate *w = &a->ws[wk];
  uint64_t t_s = (s->t_ms + 500) / 1000;
  fl_sec *sec = sec_get(a, t_s);
  if (sec != NULL) {
    for (int i = 0; i < FL_NCOUNTERS; i++)
      sec->c[i] += s->c[i] >= w->c[i] ? s->c[i] - w->c[i] : 0;
    /* A worker counts once per second: a second report in the same second
     * (the final one, say) replaces its gauges. */
    if (w->bin == (int64_t)t_s) {
      for (int i = 0; i < FL_NGAUGES; i++) sec->g[i] -= w->g[i];
    } else {
      sec->reports++;
    }
    for (int i = 0; i < FL_NGAUGES; i++) sec->g[i] += s->g[i];
    w->bin = (int64_t)t_s;
    for (int i = 0; i < FL_NGAUGES; i++)
      if (sec->g[i] > a->peak[i]) a->peak[i] = sec->g[i];
    int slot = (int)(t_s % NOPEN);
    if (a->open_t[slot] != (int64_t)t_s) {
      close_open(a, slot);
      a->open_t[slot] = (int64_t)t_s;
    }
    fl_hist_merge(&a->open_h[slot], &s->h[FL_H_order_ack]);
  }
  memcpy(w->c, s->c, sizeof(w->c));
  memcpy(w->g, s->g, sizeof(w->g));
  for (int i = 0; i < FL_NGAUGES; i++)
    if (s->g[i] > a->wpeak[i]) a->wpeak[i] = s->g[i];
  w->last_t = s->t_ms;
  w->seen = true;
  for (int i = 0; i < FL_NHISTS; i++) fl_hist_merge(&a->h[i], &s->h[i]);
}

static void a_log(void *ud, int level, const char *text) {
  fl_agg *a = ud;
  if (level > a->verbosity) return;
  fprintf(stderr, "%sposp2p-sim: %s%s\n", a->tty ? "\r\033[K" : "",
          level == FL_LOG_ERROR ? "error: " : level == FL_LOG_WARN ? "warning: " : "", text);
}

static void a_done(void *ud, int status) {
  fl_agg *a = ud;
  a->done++;
  if (status > a->status) a->status = status;
}

fl_sink fl_agg_sink(fl_agg *a) {
  fl_sink s = {a_records, a_violation, a_stats, a_log, a_done, a};
  return s;
}

void fl_agg_set_tty(fl_agg *a, bool tty) { a->tty = tty; }

void fl_agg_finish(fl_agg *a) {
  for (int i = 0; i < NOPEN; i++) close_open(a, i);
}

uint64_t fl_agg_counter(const fl_agg *a, int c) {
  uint64_t t = 0;
  for (int i = 0; i < a->nworkers; i++) t += a->ws[i].c[c];
  return t;
}

uint64_t fl_agg_gauge(const fl_agg *a, int g) {
  uint64_t t = 0;
  for (int i = 0; i < a->nworkers; i++) t += a->ws[i].g[g];
  return t;
}

uint64_t fl_agg_gauge_peak(const fl_agg *a, int g) { return a->peak[g]; }
uint64_t fl_agg_worker_peak(const fl_agg *a, int g) { return a->wpeak[g]; }
const fl_hist *fl_agg_hist(const fl_agg *a, int h) { return &a->h[h]; }
size_t fl_agg_nsec(const fl_agg *a) { return a->nsec; }
const fl_sec *fl_agg_sec(const fl_agg *a, size_t i) { return i < a->nsec ? &a->sec[i] : NULL; }
int fl_agg_workers_done(const fl_agg *a) { return a->done; }
int fl_agg_status(const fl_agg *a) { return a->status; }

bool fl_agg_reported_since(const fl_agg *a, uint64_t t_ms) {
  for (int i = 0; i < a->nworkers; i++)
    if (!a->ws[i].seen || a->ws[i].last_t < t_ms) return false;
  return true;
}

void fl_agg_progress(const fl_agg *a, char *buf, size_t n, uint64_t t_ms) {
  /* The latest second every worker has reported. */
  const fl_sec *s = NULL;
  for (size_t i = a->nsec; i-- > 0;) {
    if (a->sec[i].reports >= (uint32_t)a->nworkers) {
      s = &a->sec[i];
      break;
    }
  }
  uint64_t devices = fl_agg_gauge(a, FL_G_devices);
  uint64_t up = fl_agg_gauge(a, FL_G_devices_up);
  uint64_t conn = fl_agg_gauge(a, FL_G_clients_connected);
  uint64_t failed = fl_agg_counter(a, FL_C_msgs_failed);
  size_t viol = fl_checker_count(a->chk);
  char p99[32] = "-";
  int slot = s ? (int)(s->t_s % NOPEN) : 0;
  if (s != NULL && a->open_t[slot] == (int64_t)s->t_s && a->open_h[slot].count > 0)
    snprintf(p99, sizeof(p99), "%.1fms",
             (double)fl_hist_quantile(&a->open_h[slot], 0.99) / 1000.0);
  else if (s != NULL && s->ack_count > 0)
    snprintf(p99, sizeof(p99), "%.1fms", (double)s->ack_p99_us / 1000.0);
  else if (a->h[FL_H_order_ack].count > 0)
    snprintf(p99, sizeof(p99), "%.1fms",
             (double)fl_hist_quantile(&a->h[FL_H_order_ack], 0.99) / 1000.0);
  snprintf(buf, n,
           "[%5.1fs] up %" PRIu64 "/%" PRIu64 ", connected %" PRIu64
           " | orders %" PRIu64 "/s, acked %" PRIu64 "/s (total %" PRIu64
           ") | p99 %s | retx %" PRIu64 " | failed %" PRIu64 " | violations %zu",
           (double)t_ms / 1000.0, up, devices, conn, s ? s->c[FL_C_orders_sent] : 0,
           s ? s->c[FL_C_orders_acked] : 0, fl_agg_counter(a, FL_C_orders_acked), p99,
           fl_agg_counter(a, FL_C_retransmissions), failed, viol);
}
