/* Unit tests of the fleet simulator's building blocks: the histogram, the
 * arrival schedule, the scenario parser, the checker, the memory store and
 * the hash map. Run one with `./test_fleet NAME`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker.h"
#include "config.h"
#include "hist.h"
#include "kmap.h"
#include "memstore.h"
#include "plan.h"
#include "ptest.h"
#include "rng.h"

/* ---- Histogram ------------------------------------------------------------------ */

PTEST(hist_small_values_exact) {
  fl_hist h;
  fl_hist_init(&h);
  for (uint64_t v = 0; v < 100; v++) fl_hist_record(&h, v);
  PT_EQ_INT(h.count, 100);
  PT_EQ_INT(h.min, 0);
  PT_EQ_INT(h.max, 99);
  PT_EQ_INT(fl_hist_quantile(&h, 0.5), 49);
  PT_EQ_INT(fl_hist_quantile(&h, 0.9), 89);
  PT_EQ_INT(fl_hist_quantile(&h, 0.99), 98);
  PT_EQ_INT(fl_hist_quantile(&h, 1.0), 99);
  PT_EQ_INT(fl_hist_quantile(&h, 0.0), 0);
}

PTEST(hist_buckets_contiguous) {
  /* Every bucket starts right after the previous one ends, and every value
   * maps into the bucket whose range contains it. */
  for (size_t i = 1; i < FL_HIST_NBUCKETS; i++)
    PT_EQ_INT(fl_hist_bucket_lo(i), fl_hist_bucket_hi(i - 1) + 1);
  uint64_t probes[] = {0, 1, 127, 128, 129, 255, 256, 1000, 65535, 65536, 123456789,
                       FL_HIST_MAX};
  for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++) {
    size_t i = fl_hist_index(probes[k]);
    PT_CHECK(fl_hist_bucket_lo(i) <= probes[k] && probes[k] <= fl_hist_bucket_hi(i));
    /* Relative width below 1/64 above the exact range. */
    if (probes[k] >= FL_HIST_SUB)
      PT_CHECK((double)(fl_hist_bucket_hi(i) - fl_hist_bucket_lo(i) + 1) /
                   (double)fl_hist_bucket_lo(i) <= 1.0 / 64.0 + 1e-12);
  }
  PT_EQ_INT(fl_hist_index(UINT64_MAX), FL_HIST_NBUCKETS - 1);
}

PTEST(hist_percentiles_within_precision) {
  fl_hist h;
  fl_hist_init(&h);
  for (uint64_t v = 1; v <= 100000; v++) fl_hist_record(&h, v * 10);
  struct {
    double q;
    double want;
  } cases[] = {{0.5, 500000}, {0.9, 900000}, {0.99, 990000}, {0.999, 999000}, {0.9999, 999900}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    double got = (double)fl_hist_quantile(&h, cases[i].q);
    PT_CHECK(got >= cases[i].want);
    PT_CHECK(got <= cases[i].want * (1.0 + 1.0 / 64.0));
  }
  PT_EQ_INT(fl_hist_quantile(&h, 1.0), 1000000);
  PT_CHECK(fabs(fl_hist_mean(&h) - 500005.0) < 1e-6);
}

PTEST(hist_merge_equals_whole) {
  fl_hist a, b, whole;
  fl_hist_init(&a);
  fl_hist_init(&b);
  fl_hist_init(&whole);
  fl_rng r;
  fl_rng_seed(&r, 42, 0, 0);
  for (int i = 0; i < 20000; i++) {
    uint64_t v = fl_rng_range(&r, 0, 5000000);
    fl_hist_record(i % 3 ? &a : &b, v);
    fl_hist_record(&whole, v);
  }
  fl_hist m;
  fl_hist_init(&m);
  fl_hist_merge(&m, &a);
  fl_hist_merge(&m, &b);
  PT_EQ_INT(m.count, whole.count);
  PT_EQ_INT(m.min, whole.min);
  PT_EQ_INT(m.max, whole.max);
  PT_EQ_INT(m.sum, whole.sum);
  PT_CHECK(memcmp(m.counts, whole.counts, sizeof(m.counts)) == 0);
  double qs[] = {0.5, 0.9, 0.99, 0.999, 0.9999};
  for (size_t i = 0; i < 5; i++)
    PT_EQ_INT(fl_hist_quantile(&m, qs[i]), fl_hist_quantile(&whole, qs[i]));
  /* Merging an empty histogram changes nothing. */
  fl_hist e;
  fl_hist_init(&e);
  fl_hist_merge(&m, &e);
  PT_EQ_INT(m.min, whole.min);
}

PTEST(hist_sparse_roundtrip) {
  fl_hist h, r;
  fl_hist_init(&h);
  fl_hist_init(&r);
  for (uint64_t v = 0; v < 5000000; v += 777) fl_hist_record_n(&h, v, v % 5 + 1);
  uint32_t idx[FL_HIST_NBUCKETS];
  uint64_t cnt[FL_HIST_NBUCKETS];
  size_t total = 0;
  size_t n = fl_hist_sparse(&h, idx, cnt, FL_HIST_NBUCKETS, &total);
  PT_EQ_INT(n, total);
  fl_hist_add_sparse(&r, idx, cnt, n, h.count, h.min, h.max, h.sum);
  PT_CHECK(memcmp(&h, &r, sizeof(h)) == 0);
  /* A short output buffer reports how many were needed. */
  PT_EQ_INT(fl_hist_sparse(&h, idx, cnt, 3, &total), 3);
  PT_EQ_INT(total, n);
}

PTEST(hist_empty_and_clamped) {
  fl_hist h;
  fl_hist_init(&h);
  PT_EQ_INT(fl_hist_quantile(&h, 0.99), 0);
  fl_hist_record(&h, UINT64_C(1) << 50);
  PT_EQ_INT(h.max, UINT64_C(1) << 50);
  PT_EQ_INT(fl_hist_quantile(&h, 0.5), UINT64_C(1) << 50);
}

/* ---- Schedule ---------------------------------------------------------------------- */

static size_t arrivals(uint64_t seed, uint32_t dev, const fl_config *c, double *out,
                       size_t max) {
  fl_rng r;
  fl_rng_seed(&r, seed, dev, 1);
  double t = 0, end = (double)c->duration_ms / 1000.0;
  size_t n = 0;
  for (;;) {
    t = fl_poisson_next(&r, t, end, c->order_rate, fl_config_max_factor(c),
                        fl_config_rate_factor, c);
    if (t >= end || n == max) break;
    out[n++] = t;
  }
  return n;
}

PTEST(sched_repeatable_by_seed) {
  fl_config c;
  fl_config_defaults(&c);
  c.duration_ms = 600000;
  c.order_rate = 2.0;
  static double a[4096], b[4096], d[4096];
  size_t na = arrivals(7, 3, &c, a, 4096);
  size_t nb = arrivals(7, 3, &c, b, 4096);
  size_t nd = arrivals(8, 3, &c, d, 4096);
  PT_CHECK(na > 100);
  PT_EQ_INT(na, nb);
  PT_CHECK(memcmp(a, b, na * sizeof(double)) == 0);
  /* Another seed or another device: another schedule. */
  PT_CHECK(nd != na || memcmp(a, d, na * sizeof(double)) != 0);
  size_t ne = arrivals(7, 4, &c, d, 4096);
  PT_CHECK(ne != na || memcmp(a, d, na * sizeof(double)) != 0);
}

PTEST(sched_poisson_rate_and_phases) {
  fl_config c;
  fl_config_defaults(&c);
  c.traffic_start_ms = 0;
  c.ramp_ms = 0;
  c.duration_ms = 1000000; /* 1000 s at 2/s: about 2000 arrivals */
  c.order_rate = 2.0;
  static double a[8192];
  size_t n = arrivals(1, 0, &c, a, 8192);
  PT_CHECK(n > 1800 && n < 2200); /* mean 2000, sd ~45 */
  /* Exponential gaps: mean 0.5 s, and the coefficient of variation near 1. */
  double sum = 0, sq = 0;
  for (size_t i = 1; i < n; i++) {
    double g = a[i] - a[i - 1];
    sum += g;
    sq += g * g;
  }
  double mean = sum / (double)(n - 1), var = sq / (double)(n - 1) - mean * mean;
  PT_CHECK(fabs(mean - 0.5) < 0.05);
  PT_CHECK(fabs(sqrt(var) / mean - 1.0) < 0.1);
  /* Phases: nothing outside them, four times as many in a 4x phase. */
  fl_config_defaults(&c);
  c.traffic_start_ms = 0;
  c.ramp_ms = 0;
  c.duration_ms = 400000;
  c.order_rate = 1.0;
  c.nphases = 2;
  c.phases[0] = (fl_phase){"slow", 0, 100000, 1.0};
  c.phases[1] = (fl_phase){"rush", 200000, 300000, 4.0};
  n = arrivals(5, 1, &c, a, 8192);
  size_t slow = 0, rush = 0, other = 0;
  for (size_t i = 0; i < n; i++) {
    if (a[i] < 100) slow++;
    else if (a[i] >= 200 && a[i] < 300) rush++;
    else other++;
  }
  PT_EQ_INT(other, 0);
  PT_CHECK(slow > 70 && slow < 130);
  PT_CHECK(rush > 340 && rush < 460);
}

/* ---- Scenario parser ------------------------------------------------------------------ */

static const char *parse_err(const char *text) {
  static fl_cfg_err err;
  fl_config c;
  fl_config_defaults(&c);
  memset(&err, 0, sizeof(err));
  if (fl_config_load_text(&c, "t.scn", text, &err) == 0) {
    if (fl_config_check(&c, &err) == 0) return "";
  }
  return err.msg;
}

PTEST(scn_errors_name_file_line_field) {
  struct {
    const char *text, *want;
  } cases[] = {
      {"[faults.drop]\nkind = drop\ndevices = tablets\nrate = lots\n",
       "t.scn:4: faults.drop.rate: expected a number between 0 and 1 (or a percentage), got 'lots'"},
      {"# comment\n\n[fleet]\ntabletz = 3\n",
       "t.scn:4: fleet.tabletz: unknown key (did you mean 'tablets'?)"},
      {"[flete]\n", "t.scn:1: [flete]: unknown section"},
      {"[fleet]\ntablets = 3\ntablets = 4\n", "t.scn:3: fleet.tablets: set twice in this section"},
      {"[fleet]\ntablets\n", "t.scn:2: expected 'key = value' or a [section] header"},
      {"tablets = 3\n", "t.scn:1: tablets: key outside a section"},
      {"[fleet]\ntablets = -1\n", "t.scn:2: fleet.tablets: expected an integer between 0 and 60000, got '-1'"},
      {"[run]\nduration = 10 parsecs\n", "t.scn:2: run.duration: expected a duration"},
      {"[traffic]\norder_rate = fast\n", "t.scn:2: traffic.order_rate: expected a rate"},
      {"[faults.x]\ndevices = tablets\nrate = 0.1\n", "t.scn:1: faults.x: kind is required"},
      {"[faults.x]\nkind = explode\n", "t.scn:2: faults.x.kind: expected one of drop, delay"},
      {"[faults.x]\nkind = drop\ndevices = waiters\n", "t.scn:3: faults.x.devices: expected devices"},
      {"[faults.x]\nkind = drop\ndevices = tablets\n", "t.scn:1: faults.x.rate: is required"},
      {"[faults.x]\nkind = drop\ndevices = tablets[2-1]\nrate=1\n", "t.scn:3: faults.x.devices"},
      {"[faults.x]\nkind = drop\ndevices = tablets\nrate = 1\ntypes = order, soup\n",
       "t.scn:5: faults.x.types: expected message types"},
      {"[faults.x]\nkind = partition\ndevices = tablets\nstart = 5s\nend = 2s\n",
       "t.scn:1: faults.x.end: must be later than start"},
      {"[phases.rush]\nstart = 5s\n", "t.scn:1: phases.rush.end: must be later than start"},
      {"[phases.rush]\nstart=1s\nend=2s\nrate = 2y\n", "t.scn:4: phases.rush.rate: expected a rate factor"},
      {"[network]\ntarget = example.com\n", "t.scn:2: network.target: expected HOST:PORT"},
      {"[network]\nip_base = 10.0.0.0\n", "t.scn:2: network.ip_base: expected an address 127.X.0.0"},
      {"[timers]\nheartbeat = 10s\ndevice_timeout = 5s\n",
       "t.scn:3: timers.device_timeout: must be longer than timers.heartbeat"},
      {"[network]\ntarget = 192.168.1.10:8766\n",
       "t.scn:2: network.target: in loopback mode the target must be in 127.0.0.0/8"},
      {"[fleet]\nmain_pos = 0\n", "t.scn:2: fleet.main_pos: 0 needs a target main POS"},
      {"[faults.n]\nkind = netem\ndevices = all\nnetem = delay 10ms\n",
       "t.scn:2: faults.n.kind: netem works on namespace links only"},
      {"[fleet]\nkds = 3 # comment\n[fleet]\n", ""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *got = parse_err(cases[i].text);
    if (strncmp(got, cases[i].want, strlen(cases[i].want)) != 0 ||
        (cases[i].want[0] == '\0' && got[0] != '\0'))
      PT_FAIL_("case %zu: got \"%s\", want prefix \"%s\"", i, got, cases[i].want);
  }
}

PTEST(scn_values_and_set) {
  fl_config c;
  fl_config_defaults(&c);
  fl_cfg_err err;
  const char *text =
      "[run]\nduration = 1.5m\nseed = 99\n[traffic]\norder_rate = 30/min\ncancel_ratio = 5%\n"
      "prep_time = 1s..3s\nitems = 2..4\n[faults.w]\nkind = partition\ndevices = "
      "tablets[0-9], kds:50%, display[1]\nstart = 2s\nduration = 4s\n"
      "[faults.k]\nkind = kill\ndevices = tablet[3]\nat = 5s\nmode = graceful\ndowntime = 2s\n";
  PT_EQ_INT(fl_config_load_text(&c, "t.scn", text, &err), 0);
  PT_EQ_INT(c.duration_ms, 90000);
  PT_EQ_INT(c.seed, 99);
  PT_CHECK(fabs(c.order_rate - 0.5) < 1e-9);
  PT_CHECK(fabs(c.cancel_ratio - 0.05) < 1e-9);
  PT_EQ_INT(c.prep_lo, 1000);
  PT_EQ_INT(c.prep_hi, 3000);
  PT_EQ_INT(c.items_lo, 2);
  PT_EQ_INT(c.nfaults, 2);
  PT_EQ_INT(c.faults[0].start_ms, 2000);
  PT_EQ_INT(c.faults[0].end_ms, 6000);
  PT_EQ_INT(c.faults[0].devices.n, 3);
  PT_CHECK(c.faults[1].graceful);
  PT_EQ_INT(c.faults[1].restart_after_ms, 2000);
  PT_EQ_INT(fl_config_set(&c, "fleet.tablets=7", &err), 0);
  PT_EQ_INT(c.n[FL_ROLE_TABLET], 7);
  PT_EQ_INT(fl_config_set(&c, "faults.w.start=3s", &err), 0);
  PT_EQ_INT(c.faults[0].end_ms, 7000); /* duration kept, end recomputed */
  PT_CHECK(fl_config_set(&c, "fleet.tablets=lots", &err) < 0);
  PT_CHECK(strstr(err.msg, "--set fleet.tablets=lots: ") == err.msg);
  PT_CHECK(fl_config_set(&c, "notakey", &err) < 0);
  PT_EQ_INT(fl_config_check(&c, &err), 0);
  /* A plan resolves the selectors. */
  c.n[FL_ROLE_KDS] = 4;
  c.n[FL_ROLE_DISPLAY] = 2;
  fl_plan p;
  PT_EQ_INT(fl_plan_build(&p, &c, 0), 0);
  size_t hit = 0, kds = 0;
  for (uint32_t i = 0; i < p.n; i++) {
    if (!fl_plan_fault_hits(&p, 0, i)) continue;
    hit++;
    if (p.dev[i].role == FL_ROLE_KDS) kds++;
  }
  PT_EQ_INT(hit, 7 + 2 + 1); /* all 7 tablets (0-9), 2 of 4 KDS, display 1 */
  PT_EQ_INT(kds, 2);
  PT_CHECK(p.dev[p.first[FL_ROLE_TABLET] + 3].store); /* kill target keeps a store */
  PT_EQ_INT(fl_plan_by_id(&p, p.dev[5].id), 5);
  PT_EQ_INT(fl_plan_by_ip(&p, p.dev[5].ip), 5);
  fl_plan_free(&p);
}

PTEST(scn_shipped_scenarios_are_valid) {
  const char *names[] = {"default", "lunch-rush", "wifi-flap", "kitchen-outage",
                         "main-pos-restart", "loss"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    char path[512];
    snprintf(path, sizeof(path), "%s/sim/scenarios/%s.scn", POSP2P_SOURCE_DIR, names[i]);
    fl_config c;
    fl_config_defaults(&c);
    fl_cfg_err err;
    if (fl_config_load_file(&c, path, &err) < 0 || fl_config_check(&c, &err) < 0)
      PT_FAIL_("%s: %s", names[i], err.msg);
  }
  /* The built-in defaults are the default scenario. */
  fl_config a, b;
  fl_config_defaults(&a);
  fl_config_defaults(&b);
  fl_cfg_err err;
  char path[512];
  snprintf(path, sizeof(path), "%s/sim/scenarios/default.scn", POSP2P_SOURCE_DIR);
  PT_EQ_INT(fl_config_load_file(&b, path, &err), 0);
  PT_EQ_INT(memcmp(a.n, b.n, sizeof(a.n)), 0);
  PT_EQ_INT(a.duration_ms, b.duration_ms);
  PT_CHECK(a.order_rate == b.order_rate);
  PT_EQ_INT(a.timeout_ms, b.timeout_ms);
  PT_EQ_INT(a.announce_ms, b.announce_ms);
}

/* ---- Checker ------------------------------------------------------------------------- */

typedef struct {
  fl_config c;
  fl_plan p;
  fl_checker *k;
  uint32_t main, tab, kds, disp;
} ck_env;

static void ck_init(ck_env *e) {
  fl_config_defaults(&e->c);
  e->c.n[FL_ROLE_TABLET] = 2;
  e->c.n[FL_ROLE_KDS] = 1;
  e->c.n[FL_ROLE_DISPLAY] = 2;
  e->c.n[FL_ROLE_SECONDARY] = 0;
  fl_plan_build(&e->p, &e->c, 0);
  e->k = fl_checker_new(&e->p, 50, true);
  e->main = e->p.first[FL_ROLE_MAIN];
  e->tab = e->p.first[FL_ROLE_TABLET];
  e->kds = e->p.first[FL_ROLE_KDS];
  e->disp = e->p.first[FL_ROLE_DISPLAY];
}

static void ck_free(ck_env *e) {
  fl_checker_free(e->k);
  fl_plan_free(&e->p);
}

static void rec(ck_env *e, uint8_t kind, uint8_t mtype, uint32_t dev, uint32_t peer, int mid,
                uint8_t flags, uint8_t status, uint64_t seq) {
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = kind;
  r.mtype = mtype;
  r.dev = dev;
  r.peer = peer;
  r.flags = flags;
  r.status = status;
  r.seq = seq;
  r.order = fl_order_key(e->tab, 1);
  r.t_ms = 1000;
  memset(r.mid, 0, 16);
  r.mid[0] = (uint8_t)mid;
  r.mid[15] = 0x42;
  fl_checker_add(e->k, &r);
}

enum { OF = 4, OS = 5 };

PTEST(checker_clean_exchange) {
  ck_env e;
  ck_init(&e);
  /* tablet -> main, acked and delivered once; a duplicate receipt that the
   * engine suppressed shows no second delivery. */
  rec(&e, FL_REC_SEND, OF, e.tab, e.main, 1, 0, 0, 0);
  rec(&e, FL_REC_DELIVER, OF, e.main, e.tab, 1, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.tab, e.main, 1, 0, 0, 0);
  /* main -> kds failed after retries: fine whether or not delivered. */
  rec(&e, FL_REC_SEND, OF, e.main, e.kds, 2, 0, 0, 0);
  rec(&e, FL_REC_FAIL, 0, e.main, e.kds, 2, 0, 0, 0);
  /* main -> displays by type: two acks, two deliveries. */
  rec(&e, FL_REC_SEND, OS, e.main, FL_NO_DEV, 3, FL_RF_BYTYPE, 3, 1);
  rec(&e, FL_REC_DELIVER, OS, e.disp, e.main, 3, 0, 3, 1);
  rec(&e, FL_REC_DELIVER, OS, e.disp + 1, e.main, 3, 0, 3, 1);
  rec(&e, FL_REC_ACK, 0, e.main, e.disp, 3, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.disp + 1, 3, 0, 0, 0);
  /* tablet -> displays by type (custody): main acks the tablet and reports
   * each display. */
  rec(&e, FL_REC_SEND, 8, e.tab, e.main, 4, FL_RF_BYTYPE | FL_RF_CLIENT, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.tab, e.main, 4, 0, 0, 0);
  rec(&e, FL_REC_DELIVER, 8, e.disp, e.tab, 4, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.disp, 4, FL_RF_CUSTODY, 0, 0);
  fl_checker_finish(e.k);
  PT_EQ_INT(fl_checker_count(e.k), 0);
  PT_EQ_INT(fl_checker_summary(e.k)->messages, 4);
  ck_free(&e);
}

PTEST(checker_catches_duplicate) {
  ck_env e;
  ck_init(&e);
  rec(&e, FL_REC_SEND, OF, e.main, e.kds, 1, 0, 0, 0);
  rec(&e, FL_REC_DELIVER, OF, e.kds, e.main, 1, 0, 0, 0);
  rec(&e, FL_REC_DELIVER, OF, e.kds, e.main, 1, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.kds, 1, 0, 0, 0);
  fl_checker_finish(e.k);
  PT_EQ_INT(fl_checker_count(e.k), 1);
  PT_EQ_INT(fl_checker_count_kind(e.k, FL_V_DUPLICATE), 1);
  const fl_violation *v = fl_checker_at(e.k, 0);
  PT_CHECK(strstr(v->text, "kds-0 delivered orderForward from main-0 twice") != NULL);
  PT_EQ_STR(v->order, "o4-1"); /* tablet-0 is device 4 */
  PT_CHECK(strlen(v->mid) == 36);
  ck_free(&e);
}

PTEST(checker_catches_loss) {
  ck_env e;
  ck_init(&e);
  /* Acknowledged but never delivered. */
  rec(&e, FL_REC_SEND, OF, e.main, e.kds, 1, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.kds, 1, 0, 0, 0);
  /* Neither acknowledged nor failed: the sender was never told. */
  rec(&e, FL_REC_SEND, OF, e.tab, e.main, 2, 0, 0, 0);
  /* The application lost a message its engine acknowledged. */
  rec(&e, FL_REC_SEND, OF, e.main, e.kds, 3, 0, 0, 0);
  rec(&e, FL_REC_IGNORE, OF, e.kds, e.main, 3, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.kds, 3, 0, 0, 0);
  /* A delivery nobody sent. */
  rec(&e, FL_REC_DELIVER, OF, e.kds, e.main, 4, 0, 0, 0);
  fl_checker_finish(e.k);
  PT_EQ_INT(fl_checker_count_kind(e.k, FL_V_LOST), 2);
  PT_EQ_INT(fl_checker_count_kind(e.k, FL_V_UNRESOLVED), 1);
  PT_EQ_INT(fl_checker_count_kind(e.k, FL_V_PHANTOM), 1);
  PT_EQ_INT(fl_checker_count(e.k), 4);
  ck_free(&e);
}

PTEST(checker_catches_out_of_order) {
  ck_env e;
  ck_init(&e);
  /* Status 3 then status 2 (sequence going back) at the tablet. */
  rec(&e, FL_REC_SEND, OS, e.main, e.tab, 1, 0, 2, 2);
  rec(&e, FL_REC_SEND, OS, e.main, e.tab, 2, 0, 3, 3);
  rec(&e, FL_REC_DELIVER, OS, e.tab, e.main, 2, 0, 3, 3);
  rec(&e, FL_REC_DELIVER, OS, e.tab, e.main, 1, 0, 2, 2);
  rec(&e, FL_REC_ACK, 0, e.main, e.tab, 1, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.tab, 2, 0, 0, 0);
  /* Unsequenced statuses going backwards in the lifecycle. */
  rec(&e, FL_REC_SEND, OS, e.main, e.tab + 1, 3, 0, 4, 0);
  rec(&e, FL_REC_SEND, OS, e.main, e.tab + 1, 4, 0, 3, 0);
  rec(&e, FL_REC_DELIVER, OS, e.tab + 1, e.main, 3, 0, 4, 0);
  rec(&e, FL_REC_DELIVER, OS, e.tab + 1, e.main, 4, 0, 3, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.tab + 1, 3, 0, 0, 0);
  rec(&e, FL_REC_ACK, 0, e.main, e.tab + 1, 4, 0, 0, 0);
  /* A stale status the engine acked but did not deliver is fine. */
  rec(&e, FL_REC_SEND, OS, e.main, e.tab, 5, 0, 1, 1);
  rec(&e, FL_REC_STALE, OS, e.tab, e.main, 5, 0, 1, 1);
  rec(&e, FL_REC_ACK, 0, e.main, e.tab, 5, 0, 0, 0);
  fl_checker_finish(e.k);
  PT_EQ_INT(fl_checker_count_kind(e.k, FL_V_OUT_OF_ORDER), 2);
  PT_EQ_INT(fl_checker_count(e.k), 2);
  ck_free(&e);
}

PTEST(checker_down_sender_and_in_flight) {
  ck_env e;
  ck_init(&e);
  /* The sender crashed and never came back: abandoned, not a violation. */
  rec(&e, FL_REC_SEND, OF, e.tab, e.main, 1, 0, 0, 0);
  fl_rec r;
  memset(&r, 0, sizeof(r));
  r.kind = FL_REC_DOWN;
  r.dev = e.tab;
  fl_checker_add(e.k, &r);
  /* Sent just before the end: in flight. */
  rec(&e, FL_REC_SEND, OF, e.tab + 1, e.main, 2, 0, 0, 0);
  fl_checker_set_window(e.k, 2000, 5000);
  fl_checker_finish(e.k);
  PT_EQ_INT(fl_checker_count(e.k), 0);
  PT_EQ_INT(fl_checker_summary(e.k)->abandoned, 1);
  PT_EQ_INT(fl_checker_summary(e.k)->in_flight, 1);
  ck_free(&e);
}

PTEST(checker_reported_and_protocol_warnings) {
  ck_env e;
  ck_init(&e);
  fl_checker_report(e.k, FL_V_NOT_DISCONNECTED, e.main, e.tab, 5000, "silent");
  PT_EQ_INT(fl_checker_count(e.k), 1);
  fl_checker *w = fl_checker_new(&e.p, 10, false);
  fl_checker_report(w, FL_V_PROTOCOL, e.main, e.tab, 5000, "HELLO-13");
  PT_EQ_INT(fl_checker_count(w), 0);
  PT_EQ_INT(fl_checker_warnings(w), 1);
  fl_checker_free(w);
  ck_free(&e);
}

/* ---- Memory store ---------------------------------------------------------------------- */

static void rnd(posp2p_peer *p, uint8_t *buf, size_t len, void *ud) {
  (void)p;
  uint64_t *s = ud;
  for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(fl_splitmix64(s) >> 56);
}

PTEST(memstore_survives_restart) {
  uint64_t seed = 1;
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_type = FL_ROLE_TABLET;
  cfg.device_id = "11111111-2222-4333-8444-555555555555";
  posp2p_peer_callbacks cb;
  memset(&cb, 0, sizeof(cb));
  cb.rand = rnd;
  fl_memstore *s = fl_memstore_new(4096, 600000);
  posp2p_peer_store iface;
  fl_memstore_iface(s, &iface);
  posp2p_peer *p = NULL;
  PT_EQ_INT(posp2p_peer_new(&p, &cfg, &cb, &iface, NULL, &seed), 0);
  /* Feed the store directly, as the engine would. */
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_id = "aaaaaaaa-0000-4000-8000-000000000001";
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_CANCEL;
  e.from_device_id = (char *)cfg.device_id;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = "99999999-0000-4000-8000-000000000009";
  Posp2p__V2__OrderCancel oc = POSP2P__V2__ORDER_CANCEL__INIT;
  oc.order_id = "o1-1";
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL;
  e.order_cancel = &oc;
  uint8_t buf[512];
  size_t n = posp2p__v2__envelope__pack(&e, buf);
  posp2p_peer_outbox_rec rec1 = {e.message_id, e.to_device_id, buf, n, 2, false};
  PT_EQ_INT(iface.outbox_put(p, &rec1, s), 0);
  PT_EQ_INT(iface.outbox_put(p, &rec1, s), 0); /* replace, not add */
  PT_EQ_INT(iface.dedup_check_insert(p, e.to_device_id, "bbbbbbbb-0000-4000-8000-000000000002", s), 0);
  PT_EQ_INT(iface.dedup_check_insert(p, e.to_device_id, "bbbbbbbb-0000-4000-8000-000000000002", s), 1);
  fl_memstore_counts c;
  fl_memstore_counts_get(s, &c);
  PT_EQ_INT(c.outbox, 1);
  PT_EQ_INT(c.dedup, 1);
  posp2p_peer_del(p);
  /* A new engine for the same device gets everything back. */
  PT_EQ_INT(posp2p_peer_new(&p, &cfg, &cb, &iface, NULL, &seed), 0);
  PT_EQ_INT(fl_memstore_restore(s, p, 0, &c), 0);
  PT_EQ_INT(c.outbox, 1);
  PT_EQ_INT(c.dedup, 1);
  PT_EQ_INT(c.refused, 0);
  PT_EQ_INT(posp2p_peer_outbox_count(p), 1);
  PT_EQ_INT(iface.outbox_del(p, e.message_id, e.to_device_id, s), 0);
  fl_memstore_counts_get(s, &c);
  PT_EQ_INT(c.outbox, 0);
  posp2p_peer_del(p);
  fl_memstore_free(s);
}

/* ---- Hash map --------------------------------------------------------------------------- */

PTEST(kmap_matches_reference) {
  fl_kmap m;
  fl_kmap_init(&m);
  enum { N = 3000 };
  static int present[N];
  memset(present, 0, sizeof(present));
  fl_rng r;
  fl_rng_seed(&r, 3, 3, 3);
  for (int step = 0; step < 60000; step++) {
    int k = (int)fl_rng_range(&r, 0, N - 1);
    fl_key key = fl_key_u64((uint64_t)k * 7919u, 17);
    if (fl_rng_chance(&r, 0.5)) {
      PT_EQ_INT(fl_kmap_put(&m, &key, (void *)(uintptr_t)(k + 1)), 0);
      present[k] = 1;
    } else {
      void *old = fl_kmap_del(&m, &key);
      PT_CHECK((old != NULL) == (present[k] != 0));
      present[k] = 0;
    }
  }
  size_t count = 0;
  for (int k = 0; k < N; k++) {
    fl_key key = fl_key_u64((uint64_t)k * 7919u, 17);
    void *v = fl_kmap_get(&m, &key);
    PT_CHECK((v != NULL) == (present[k] != 0));
    if (v) PT_EQ_INT((uintptr_t)v, (uintptr_t)(k + 1));
    count += (size_t)present[k];
  }
  PT_EQ_INT(m.len, count);
  fl_kmap_free(&m);
  uint8_t b[16];
  char t[37];
  PT_CHECK(fl_uuid_parse("3B8F6C1A-2E4D-4A7B-9F0C-5D1E8A2B7C64", b));
  fl_uuid_text(b, t);
  PT_EQ_STR(t, "3b8f6c1a-2e4d-4a7b-9f0c-5d1e8a2b7c64");
  PT_CHECK(!fl_uuid_parse("3b8f6c1a-2e4d-4a7b-9f0c-5d1e8a2b7c6", b));
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
