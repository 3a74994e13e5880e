/* End of run: the human summary and the JSON report. */
#ifndef FL_REPORT_H
#define FL_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "agg.h"
#include "checker.h"
#include "config.h"
#include "plan.h"

#define FL_MAX_NOTES 16

typedef struct {
  const fl_config *cfg;
  const fl_plan *plan;
  const fl_agg *agg;
  const fl_checker *chk;
  int workers;
  uint64_t wall_start_ms;
  double elapsed_s;          /* wall time of the whole command */
  uint64_t traffic_end_ms;   /* run time when traffic stopped */
  uint64_t shutdown_ms;      /* run time when the final shutdown began */
  int64_t all_connected_ms;  /* run time when every client was first connected, -1 never */
  bool drained;              /* quiet before the drain limit */
  bool watchdog;             /* the hard cap fired */
  int exit_code;
  double cpu_s;              /* user + system, all processes */
  uint64_t parent_rss_kb;
  const char *notes[FL_MAX_NOTES];
  size_t nnotes;
} fl_report_in;

void fl_report_summary(const fl_report_in *in, FILE *out);
/* Write the JSON report; returns 0 or -1 with a message in err. */
int fl_report_json(const fl_report_in *in, const char *path, char *err, size_t n);

#endif
