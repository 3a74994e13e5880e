/* The parent's view of the run: totals and per-second series built from
 * the workers' snapshots, records fed to the checker, logs printed. */
#ifndef FL_AGG_H
#define FL_AGG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "checker.h"
#include "fleet.h"
#include "stats.h"

typedef struct {
  uint64_t t_s;                 /* second of the run (end of the interval) */
  uint64_t c[FL_NCOUNTERS];     /* counts during the second, all workers */
  uint64_t g[FL_NGAUGES];       /* gauges at the end of the second, summed */
  uint32_t reports;
  uint64_t ack_p50_us, ack_p99_us, ack_max_us, ack_count;
} fl_sec;

typedef struct fl_agg fl_agg;

fl_agg *fl_agg_new(const fl_plan *plan, const fl_config *cfg, fl_checker *chk,
                   int nworkers, int verbosity);
void fl_agg_free(fl_agg *a);
fl_sink fl_agg_sink(fl_agg *a);

/* Log lines first clear a progress line on the terminal. */
void fl_agg_set_tty(fl_agg *a, bool tty);
/* Call once the run is over: closes the open seconds. */
void fl_agg_finish(fl_agg *a);

uint64_t fl_agg_counter(const fl_agg *a, int c);
uint64_t fl_agg_gauge(const fl_agg *a, int g);
uint64_t fl_agg_gauge_peak(const fl_agg *a, int g);   /* max of the per-second sums */
uint64_t fl_agg_worker_peak(const fl_agg *a, int g);  /* max over workers and time */
const fl_hist *fl_agg_hist(const fl_agg *a, int h);
size_t fl_agg_nsec(const fl_agg *a);
const fl_sec *fl_agg_sec(const fl_agg *a, size_t i);
int fl_agg_workers_done(const fl_agg *a);
int fl_agg_status(const fl_agg *a);
/* Every worker has reported a snapshot at or after t_ms. */
bool fl_agg_reported_since(const fl_agg *a, uint64_t t_ms);

/* One progress line (no newline; the caller rewrites it with \r). */
void fl_agg_progress(const fl_agg *a, char *buf, size_t n, uint64_t t_ms);

#endif
