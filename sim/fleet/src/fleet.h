/* A worker: the fleet devices of one process on one uv_loop. Each device is
 * a real posp2p engine with real sockets (posp2p_uv), driven by a small
 * application (tablet, main POS, KDS, customer display) that generates
 * the open-loop traffic and the order lifecycle, turns engine events into
 * checker records, and measures latencies. Output goes to a sink: the
 * parent's aggregator directly (in-process) or a pipe (forked worker). */
#ifndef FL_FLEET_H
#define FL_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "checker.h"
#include "plan.h"
#include "stats.h"

enum { FL_LOG_ERROR = 0, FL_LOG_WARN = 1, FL_LOG_INFO = 2 };

typedef struct {
  void (*records)(void *ud, const fl_rec *r, size_t n);
  void (*violation)(void *ud, int kind, uint32_t dev, uint32_t peer, uint64_t t_ms,
                    const char *text);
  void (*stats)(void *ud, const fl_wstats *s);
  void (*log)(void *ud, int level, const char *text);
  /* Every device is closed after fl_worker_shutdown/abort; status 0, or 3
   * after a fatal error (a device could not bind). */
  void (*done)(void *ud, int status);
  void *ud;
} fl_sink;

typedef struct fl_worker fl_worker;

/* t0_ms: run start on the uv_now clock (same in every process). */
fl_worker *fl_worker_new(uv_loop_t *loop, const fl_plan *plan, const fl_config *cfg,
                         int id, uint64_t t0_ms, const fl_sink *sink);
/* Schedule the devices' start, the traffic and the faults. Returns 0 or
 * -1 (out of memory, or the interposer could not start). */
int fl_worker_start(fl_worker *w);
/* End of the run: stop traffic, close every device gracefully (GOODBYE),
 * send the last stats, then sink->done. */
void fl_worker_shutdown(fl_worker *w);
/* Close every device at once, without GOODBYE. */
void fl_worker_abort(fl_worker *w);
/* After done: close the worker's own handles (run the loop afterwards),
 * then free. */
void fl_worker_close(fl_worker *w);
void fl_worker_free(fl_worker *w);

#endif
