/* posp2p-sim: a fleet of virtual POS devices with traffic, faults, a
 * correctness checker and reports. See sim/fleet/README.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "agg.h"
#include "checker.h"
#include "config.h"
#include "fleet.h"
#include "ipc.h"
#include "plan.h"
#include "report.h"

#ifndef POSP2P_SOURCE_DIR
#define POSP2P_SOURCE_DIR "."
#endif

static const char *prog = "posp2p-sim";

/* ---- Usage -------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
"Usage: %s [OPTIONS]\n"
"Run a fleet of virtual POS devices (posp2p engines on real sockets) with\n"
"open-loop order traffic, protocol-aware faults and a correctness checker.\n"
"Without a scenario it runs the built-in default scenario (1 main POS, 200\n"
"tablets, 2 secondary POS, 4 KDS, 4 customer displays, 20 s on loopback).\n"
"\n"
"Scenario\n"
"  -s, --scenario FILE     scenario file (sim/scenarios/*.scn)\n"
"      --set SEC.KEY=VAL   override one scenario value, e.g. --set\n"
"                          traffic.order_rate=1/s (repeatable, applied in order)\n"
"  -d, --duration DUR      traffic duration (run.duration), e.g. 30s\n"
"      --seed N            seed of the traffic schedule (run.seed)\n"
"      --tablets N         ordering tablets (fleet.tablets)\n"
"      --kds N             kitchen displays (fleet.kds)\n"
"      --displays N        customer displays (fleet.customer_displays)\n"
"      --secondary N       secondary POS (fleet.secondary_pos)\n"
"      --order-rate RATE   orders per tablet, e.g. 0.5/s or 20/min\n"
"      --max-duration DUR  hard cap on the whole run (watchdog)\n"
"Fleet and network\n"
"      --mode MODE         loopback (default) or netns (needs root and ip)\n"
"      --workers N|auto    worker processes (0 = this process; auto)\n"
"      --target HOST[:PORT]  no main POS in the fleet: clients connect to this\n"
"                          one (127.0.0.0/8 in loopback mode)\n"
"      --wire v2|legacy    wire the clients speak (default v2)\n"
"      --ip-base 127.X.0.0 first device address in loopback mode (127.20.0.0)\n"
"      --discovery-port N  UDP discovery port (8765)\n"
"      --data-port N       TCP data port (8766)\n"
"      --netns-script PATH namespace script (default: the source tree's\n"
"                          scripts/netns.sh, or $POSP2P_NETNS_SCRIPT)\n"
"Output\n"
"      --report FILE       JSON report (config, seed, counters, histograms,\n"
"                          time series, violations)\n"
"      --progress / --no-progress   live line on stderr (default: on a TTY)\n"
"  -q, --quiet             no summary (errors and violations only)\n"
"  -v, --verbose           also worker info messages (kills, restarts)\n"
"      --check             check the scenario and print the plan, run nothing\n"
"  -h, --help              this text\n"
"\n"
"Exit status: 0 no violations, 1 violations found, 2 bad option or scenario\n"
"(the message names file:line and field), 3 runtime failure (address in use,\n"
"namespace setup failed, watchdog).\n",
          prog);
}

enum {
  OPT_SET = 256, OPT_SEED, OPT_TABLETS, OPT_KDS, OPT_DISPLAYS, OPT_SECONDARY, OPT_RATE,
  OPT_MAXDUR, OPT_MODE, OPT_WORKERS, OPT_TARGET, OPT_WIRE, OPT_IPBASE, OPT_DPORT, OPT_TPORT,
  OPT_REPORT, OPT_PROGRESS, OPT_NOPROGRESS, OPT_CHECK, OPT_SCRIPT
};

static const struct option long_opts[] = {
    {"scenario", required_argument, NULL, 's'},
    {"set", required_argument, NULL, OPT_SET},
    {"duration", required_argument, NULL, 'd'},
    {"seed", required_argument, NULL, OPT_SEED},
    {"tablets", required_argument, NULL, OPT_TABLETS},
    {"kds", required_argument, NULL, OPT_KDS},
    {"displays", required_argument, NULL, OPT_DISPLAYS},
    {"secondary", required_argument, NULL, OPT_SECONDARY},
    {"order-rate", required_argument, NULL, OPT_RATE},
    {"max-duration", required_argument, NULL, OPT_MAXDUR},
    {"mode", required_argument, NULL, OPT_MODE},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"target", required_argument, NULL, OPT_TARGET},
    {"wire", required_argument, NULL, OPT_WIRE},
    {"ip-base", required_argument, NULL, OPT_IPBASE},
    {"discovery-port", required_argument, NULL, OPT_DPORT},
    {"data-port", required_argument, NULL, OPT_TPORT},
    {"netns-script", required_argument, NULL, OPT_SCRIPT},
    {"report", required_argument, NULL, OPT_REPORT},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"no-progress", no_argument, NULL, OPT_NOPROGRESS},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"check", no_argument, NULL, OPT_CHECK},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* ---- The run ------------------------------------------------------------------------ */

enum { ST_RUN = 0, ST_DRAIN, ST_SHUT, ST_DONE };

typedef struct {
  pid_t pid;
  int fd;
  fl_ipc_r *r;
  bool eof;
  int status;
} wproc;

typedef struct {
  fl_config cfg;
  fl_plan plan;
  fl_checker *chk;
  fl_agg *agg;
  uv_loop_t loop;
  bool loop_open;
  fl_worker *inproc;
  bool inproc_done;
  wproc *wk;
  int nw;            /* forked workers */
  uv_timer_t tick;
  uv_signal_t sigint, sigterm;
  uint64_t t0;
  int state;
  uint64_t traffic_end, shutdown_at, quiet_since;
  bool drained, watchdog, aborted;
  int signals;
  bool tty_progress, quiet;
  int verbosity;
  uint64_t last_progress_s;
  int64_t all_connected_ms;
  const char *report_path;
  const char *script;
  bool netns_up;
  pid_t owner;
  char notes_buf[FL_MAX_NOTES][200];
  size_t nnotes;
  uint8_t *netem_on;  /* per fault: applied */
  uint64_t shut_deadline;
} run_t;

static run_t R;

static void note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void note(const char *fmt, ...) {
  if (R.nnotes >= FL_MAX_NOTES) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(R.notes_buf[R.nnotes++], sizeof(R.notes_buf[0]), fmt, ap);
  va_end(ap);
}

/* Clears the progress line before a message, on a terminal. */
static const char *CL(void) { return R.tty_progress ? "\r\033[K" : ""; }

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

static uint64_t run_now(void) {
  uint64_t n = uv_now(&R.loop);
  return n > R.t0 ? n - R.t0 : 0;
}

/* ---- Namespaces ------------------------------------------------------------------------- */

static int run_cmd(char *const argv[], bool quiet_out) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (quiet_out) {
      int fd = open("/dev/null", O_WRONLY);
      if (fd >= 0) {
        dup2(fd, 1);
        close(fd);
      }
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void netns_down(void) {
  if (!R.netns_up || getpid() != R.owner) return;
  R.netns_up = false;
  char *argv[] = {"bash", (char *)R.script, "down", "--prefix", R.cfg.netns_prefix, NULL};
  (void)run_cmd(argv, true);
}

static void on_exit_cleanup(void) { netns_down(); }

static int netns_up(void) {
  char count[16], per[16], sub[16];
  snprintf(count, sizeof(count), "%u", R.cfg.namespaces);
  uint32_t maxper = 0, cnt[256] = {0};
  for (uint32_t i = 0; i < R.plan.n; i++)
    if (++cnt[R.plan.dev[i].ns] > maxper) maxper = cnt[R.plan.dev[i].ns];
  snprintf(per, sizeof(per), "%u", maxper);
  snprintf(sub, sizeof(sub), "10.%u", (R.cfg.subnet >> 16) & 255u);
  char *argv[] = {"bash", (char *)R.script, "up", "--prefix", R.cfg.netns_prefix,
                  "--count", count, "--addrs", per, "--subnet", sub, NULL};
  R.netns_up = true; /* tear down whatever part was made, even on failure */
  int rc = run_cmd(argv, true);
  if (rc != 0) {
    fprintf(stderr, "%s: error: namespace setup failed (%s up exited %d)\n", prog, R.script, rc);
    return -1;
  }
  return 0;
}

static int enter_netns(int ns) {
  char path[128];
  snprintf(path, sizeof(path), "/var/run/netns/%s-%d", R.cfg.netns_prefix, ns);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = setns(fd, CLONE_NEWNET);
  close(fd);
  return rc;
}

/* tc on both ends of a namespace's link. */
static int tc_apply(int ns, const char *qdisc_args, bool del) {
  char nsname[40], hub[40], hdev[16];
  snprintf(nsname, sizeof(nsname), "%s-%d", R.cfg.netns_prefix, ns);
  snprintf(hub, sizeof(hub), "%s-hub", R.cfg.netns_prefix);
  snprintf(hdev, sizeof(hdev), "h%d", ns);
  int worst = 0;
  for (int side = 0; side < 2; side++) {
    char args[256];
    snprintf(args, sizeof(args), "%s", qdisc_args ? qdisc_args : "");
    char *argv[32];
    int k = 0;
    argv[k++] = "tc";
    argv[k++] = "-n";
    argv[k++] = side == 0 ? nsname : hub;
    argv[k++] = "qdisc";
    argv[k++] = del ? "del" : "replace";
    argv[k++] = "dev";
    argv[k++] = side == 0 ? "eth0" : hdev;
    argv[k++] = "root";
    if (!del)
      for (char *save = NULL, *t = strtok_r(args, " ", &save); t && k < 30;
           t = strtok_r(NULL, " ", &save))
        argv[k++] = t;
    argv[k] = NULL;
    int rc = run_cmd(argv, true);
    if (rc > worst) worst = rc;
  }
  return worst;
}

static void netem_tick(uint64_t t) {
  if (R.cfg.mode != FL_MODE_NETNS) return;
  for (size_t f = 0; f < R.cfg.nfaults; f++) {
    const fl_fault *ft = &R.cfg.faults[f];
    if (ft->kind != FL_FAULT_NETEM && ft->kind != FL_FAULT_RATE_LIMIT) continue;
    bool want = t >= ft->start_ms && t < ft->end_ms && R.state < ST_SHUT;
    if (want == (R.netem_on[f] == 1) || R.netem_on[f] == 2) continue;
    char args[200];
    if (ft->kind == FL_FAULT_NETEM) snprintf(args, sizeof(args), "netem %s", ft->netem);
    else
      snprintf(args, sizeof(args), "tbf rate %" PRIu64 "bit burst 32kbit latency 400ms",
               ft->bytes_per_s * 8u);
    bool nsmask[256] = {false};
    for (uint32_t i = 0; i < R.plan.n; i++)
      if (fl_plan_fault_hits(&R.plan, f, i)) nsmask[R.plan.dev[i].ns] = true;
    int worst = 0;
    for (int ns = 0; ns < R.plan.nns; ns++)
      if (nsmask[ns]) {
        int rc = tc_apply(ns, args, !want);
        if (rc > worst) worst = rc;
      }
    if (want && worst != 0) {
      R.netem_on[f] = 2;
      note("fault %s not applied: 'tc qdisc replace ... %s' failed (%s)", ft->name, args,
           ft->kind == FL_FAULT_NETEM ? "this kernel has no sch_netem" : "tc failed");
      fprintf(stderr, "%s%s: warning: %s\n", CL(), prog, R.notes_buf[R.nnotes - 1]);
      for (int ns = 0; ns < R.plan.nns; ns++)
        if (nsmask[ns]) (void)tc_apply(ns, NULL, true);
      continue;
    }
    R.netem_on[f] = want ? 1 : 0;
  }
}

/* ---- Workers ---------------------------------------------------------------------------- */

static void child_closed(void *ud) { (void)ud; }

typedef struct {
  fl_worker *w;
  fl_ipc_w *ipc;
  int status;
  bool done;
} child_t;

static child_t C;

static void child_cmd(int cmd, void *ud) {
  (void)ud;
  if (cmd == FL_CMD_SHUTDOWN) fl_worker_shutdown(C.w);
  else fl_worker_abort(C.w);
}

static void child_done(void *ud, int status) {
  (void)ud;
  C.status = status;
  C.done = true;
}

/* Wraps the pipe sink to learn when the worker is done. */
static fl_sink C_pipe;
static void cw_records(void *ud, const fl_rec *r, size_t n) { C_pipe.records(ud, r, n); }
static void cw_viol(void *ud, int k, uint32_t d, uint32_t p, uint64_t t, const char *x) {
  C_pipe.violation(ud, k, d, p, t, x);
}
static void cw_stats(void *ud, const fl_wstats *s) { C_pipe.stats(ud, s); }
static void cw_log(void *ud, int l, const char *x) { C_pipe.log(ud, l, x); }
static void cw_done(void *ud, int status) {
  C_pipe.done(ud, status);
  child_done(ud, status);
  fl_worker_close(C.w);
  fl_ipc_w_close(C.ipc, child_closed);
}

static int worker_main(int id, int fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != R.owner) _exit(3);
  signal(SIGINT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  sigset_t all;
  sigemptyset(&all);
  sigaddset(&all, SIGINT);
  sigaddset(&all, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &all, NULL);
  /* Last resort: the parent's watchdog should stop us long before. */
  alarm((unsigned)(R.cfg.max_duration_ms / 1000u + 30u));
  if (R.cfg.mode == FL_MODE_NETNS && enter_netns(id) < 0) {
    fprintf(stderr, "%s: worker %d: cannot enter namespace %s-%d: %s\n", prog, id,
            R.cfg.netns_prefix, id, strerror(errno));
    _exit(3);
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) _exit(3);
  memset(&C, 0, sizeof(C));
  C.ipc = fl_ipc_w_new(&loop, fd, child_cmd, NULL);
  if (C.ipc == NULL) _exit(3);
  C_pipe = fl_ipc_w_sink(C.ipc);
  fl_sink s = {cw_records, cw_viol, cw_stats, cw_log, cw_done, C_pipe.ud};
  C.w = fl_worker_new(&loop, &R.plan, &R.cfg, id, R.t0, &s);
  if (C.w == NULL || fl_worker_start(C.w) < 0) {
    fprintf(stderr, "%s: worker %d: cannot start\n", prog, id);
    _exit(3);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  int status = C.done ? C.status : 3;
  fl_worker_free(C.w);
  fl_ipc_w_free(C.ipc);
  (void)uv_loop_close(&loop);
  fl_checker_free(R.chk);
  fl_plan_free(&R.plan);
  free(R.netem_on);
  exit(status);
}

static int fork_workers(void) {
  R.wk = calloc((size_t)R.nw, sizeof(*R.wk));
  int *fds = calloc((size_t)R.nw, sizeof(int));
  if (R.wk == NULL || fds == NULL) return -1;
  fflush(NULL);
  for (int i = 0; i < R.nw; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
      free(fds);
      return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
      free(fds);
      return -1;
    }
    if (pid == 0) {
      close(sv[0]);
      for (int j = 0; j < i; j++) close(fds[j]);
      free(fds);
      int wfd = sv[1];
      R.nw = 0;
      free(R.wk);
      R.wk = NULL;
      worker_main(i, wfd);
    }
    close(sv[1]);
    fds[i] = sv[0];
    R.wk[i].pid = pid;
  }
  for (int i = 0; i < R.nw; i++) R.wk[i].fd = fds[i];
  free(fds);
  return 0;
}

/* ---- Parent control --------------------------------------------------------------------- */

static bool all_done(void) {
  if (R.inproc) return R.inproc_done;
  for (int i = 0; i < R.nw; i++)
    if (!R.wk[i].eof) return false;
  return true;
}

static void begin_shutdown(void) {
  if (R.state >= ST_SHUT) return;
  R.state = ST_SHUT;
  R.shutdown_at = run_now();
  R.shut_deadline = R.shutdown_at + R.cfg.shutdown_ms + 10000u;
  if (R.inproc) fl_worker_shutdown(R.inproc);
  for (int i = 0; i < R.nw; i++)
    if (!R.wk[i].eof) fl_ipc_r_send_cmd(R.wk[i].r, FL_CMD_SHUTDOWN);
  netem_tick(run_now());
}

static void abort_all(void) {
  R.aborted = true;
  if (R.state < ST_SHUT) {
    R.state = ST_SHUT;
    R.shutdown_at = run_now();
  }
  R.shut_deadline = run_now() + 3000u;
  if (R.inproc) fl_worker_abort(R.inproc);
  for (int i = 0; i < R.nw; i++)
    if (!R.wk[i].eof) fl_ipc_r_send_cmd(R.wk[i].r, FL_CMD_ABORT);
}

static void finish_loop(void) {
  if (R.state == ST_DONE) return;
  R.state = ST_DONE;
  uv_timer_stop(&R.tick);
  uv_close((uv_handle_t *)&R.tick, NULL);
  uv_close((uv_handle_t *)&R.sigint, NULL);
  uv_close((uv_handle_t *)&R.sigterm, NULL);
  if (R.inproc) fl_worker_close(R.inproc);
  for (int i = 0; i < R.nw; i++) fl_ipc_r_close(R.wk[i].r);
}

static void tick_cb(uv_timer_t *t) {
  (void)t;
  uint64_t now = run_now();
  /* Progress, once a second. */
  if (R.tty_progress && now / 1000u != R.last_progress_s && R.state < ST_DONE) {
    R.last_progress_s = now / 1000u;
    char line[400];
    fl_agg_progress(R.agg, line, sizeof(line), now);
    fprintf(stderr, "\r\033[K%s%s", line,
            R.state == ST_DRAIN ? " | draining" : R.state == ST_SHUT ? " | stopping" : "");
    fflush(stderr);
  }
  /* First time every client is connected. */
  if (R.all_connected_ms < 0) {
    uint64_t clients = R.plan.n - (R.plan.main_external ? 0 : R.cfg.n[FL_ROLE_MAIN]);
    if (clients > 0 && fl_agg_gauge(R.agg, FL_G_clients_connected) >= clients) {
      /* The gauge is sampled once a second: take the snapshot time. */
      size_t n = fl_agg_nsec(R.agg);
      for (size_t i = 0; i < n; i++) {
        const fl_sec *s = fl_agg_sec(R.agg, i);
        if (s->g[FL_G_clients_connected] >= clients) {
          R.all_connected_ms = (int64_t)s->t_s * 1000;
          break;
        }
      }
      if (R.all_connected_ms < 0) R.all_connected_ms = (int64_t)now;
    }
  }
  netem_tick(now);
  if (now >= R.cfg.max_duration_ms && !R.watchdog) {
    R.watchdog = true;
    fprintf(stderr, "%s%s: error: watchdog: the run exceeded its hard cap of %.0fs; "
                    "stopping\n", CL(), prog, (double)R.cfg.max_duration_ms / 1000.0);
    abort_all();
  }
  switch (R.state) {
  case ST_RUN:
    if (fl_agg_status(R.agg) == 3 || fl_agg_counter(R.agg, FL_C_start_failures) > 0) {
      fprintf(stderr, "%s%s: error: devices failed to start; stopping\n", CL(), prog);
      R.aborted = true;
      begin_shutdown();
      break;
    }
    if (now >= R.cfg.duration_ms) {
      R.state = ST_DRAIN;
      R.traffic_end = now;
      R.quiet_since = 0;
    }
    break;
  case ST_DRAIN: {
    bool quiet = fl_agg_reported_since(R.agg, R.traffic_end) &&
                 fl_agg_gauge(R.agg, FL_G_outbox) == 0 &&
                 fl_agg_gauge(R.agg, FL_G_app_queue) == 0 &&
                 fl_agg_gauge(R.agg, FL_G_lifecycle_events) == 0 &&
                 fl_agg_gauge(R.agg, FL_G_fault_held) == 0;
    if (!quiet) R.quiet_since = 0;
    else if (R.quiet_since == 0) R.quiet_since = now;
    if (quiet && now - R.quiet_since >= 1200) {
      R.drained = true;
      begin_shutdown();
    } else if (now >= R.traffic_end + R.cfg.drain_ms) {
      begin_shutdown();
    }
    break;
  }
  case ST_SHUT:
    if (all_done()) {
      finish_loop();
    } else if (now >= R.shut_deadline) {
      if (!R.aborted) {
        fprintf(stderr, "%s%s: warning: devices did not stop in time; aborting them\n", CL(), prog);
        abort_all();
      } else {
        for (int i = 0; i < R.nw; i++)
          if (!R.wk[i].eof && R.wk[i].pid > 0) kill(R.wk[i].pid, SIGKILL);
        finish_loop();
      }
    }
    break;
  default:
    break;
  }
}

static void signal_cb(uv_signal_t *h, int signum) {
  (void)h;
  R.signals++;
  if (R.signals == 1) {
    fprintf(stderr, "%s%s: %s: stopping (again to abort)\n", CL(), prog, strsignal(signum));
    R.aborted = true;
    begin_shutdown();
  } else {
    abort_all();
  }
}

/* In-process worker: learn when it is done. */
static fl_sink A_sink;
static void ip_done(void *ud, int status) {
  A_sink.done(ud, status);
  R.inproc_done = true;
}

static void on_eof(fl_ipc_r *r, void *ud) {
  wproc *w = ud;
  (void)r;
  w->eof = true;
  if (R.state < ST_SHUT) {
    fprintf(stderr, "%s%s: error: a worker process ended unexpectedly\n", CL(), prog);
    R.aborted = true;
    begin_shutdown();
  }
}

/* ---- Options ------------------------------------------------------------------------------- */

static int flag_set(const char *flag, const char *key, const char *val) {
  char buf[600];
  snprintf(buf, sizeof(buf), "%s=%s", key, val);
  fl_cfg_err err;
  if (fl_config_set(&R.cfg, buf, &err) == 0) return 0;
  /* "--set k=v: k: message" -> "--flag: message" */
  const char *m = strstr(err.msg, key);
  if (m) m = strstr(m + strlen(key), key);
  if (m && strncmp(m + strlen(key), ": ", 2) == 0) m += strlen(key) + 2;
  else m = err.msg;
  fprintf(stderr, "%s: error: %s: %s\n", prog, flag, m);
  return -1;
}

static uint64_t rss_self_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)ru.ru_maxrss;
}

static double cpu_all(void) {
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                  b.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
  memset(&R, 0, sizeof(R));
  R.owner = getpid();
  R.all_connected_ms = -1;
  R.verbosity = FL_LOG_WARN;
  fl_config_defaults(&R.cfg);
  R.script = getenv("POSP2P_NETNS_SCRIPT");
  if (R.script == NULL) R.script = POSP2P_SOURCE_DIR "/scripts/netns.sh";
  int progress = -1;
  bool check_only = false;
  const char *shortopts = "s:d:qvh";

  /* Pass 1: the scenario file comes first, whatever its position. */
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, shortopts, long_opts, NULL)) != -1) {
    if (ch == 'h') {
      usage(stdout);
      return 0;
    }
    if (ch == 's') {
      fl_cfg_err err;
      if (fl_config_load_file(&R.cfg, optarg, &err) < 0) {
        fprintf(stderr, "%s: error: %s\n", prog, err.msg);
        return 2;
      }
    }
  }
  /* Pass 2: everything else, in order. */
  optind = 1;
  opterr = 1;
  while ((ch = getopt_long(argc, argv, shortopts, long_opts, NULL)) != -1) {
    int rc = 0;
    switch (ch) {
    case 's': break;
    case OPT_SET: {
      fl_cfg_err err;
      if (fl_config_set(&R.cfg, optarg, &err) < 0) {
        fprintf(stderr, "%s: error: %s\n", prog, err.msg);
        rc = -1;
      }
      break;
    }
    case 'd': rc = flag_set("--duration", "run.duration", optarg); break;
    case OPT_SEED: rc = flag_set("--seed", "run.seed", optarg); break;
    case OPT_TABLETS: rc = flag_set("--tablets", "fleet.tablets", optarg); break;
    case OPT_KDS: rc = flag_set("--kds", "fleet.kds", optarg); break;
    case OPT_DISPLAYS: rc = flag_set("--displays", "fleet.customer_displays", optarg); break;
    case OPT_SECONDARY: rc = flag_set("--secondary", "fleet.secondary_pos", optarg); break;
    case OPT_RATE: rc = flag_set("--order-rate", "traffic.order_rate", optarg); break;
    case OPT_MAXDUR: rc = flag_set("--max-duration", "run.max_duration", optarg); break;
    case OPT_MODE: rc = flag_set("--mode", "fleet.mode", optarg); break;
    case OPT_WORKERS: rc = flag_set("--workers", "run.workers", optarg); break;
    case OPT_TARGET: rc = flag_set("--target", "network.target", optarg); break;
    case OPT_WIRE: rc = flag_set("--wire", "network.wire", optarg); break;
    case OPT_IPBASE: rc = flag_set("--ip-base", "network.ip_base", optarg); break;
    case OPT_DPORT: rc = flag_set("--discovery-port", "network.discovery_port", optarg); break;
    case OPT_TPORT: rc = flag_set("--data-port", "network.data_port", optarg); break;
    case OPT_SCRIPT: R.script = optarg; break;
    case OPT_REPORT: R.report_path = optarg; break;
    case OPT_PROGRESS: progress = 1; break;
    case OPT_NOPROGRESS: progress = 0; break;
    case 'q': R.quiet = true; break;
    case 'v': R.verbosity = FL_LOG_INFO; break;
    case OPT_CHECK: check_only = true; break;
    default:
      fprintf(stderr, "Try '%s --help'.\n", prog);
      return 2;
    }
    if (rc < 0) return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "%s: error: unexpected argument '%s'\nTry '%s --help'.\n", prog,
            argv[optind], prog);
    return 2;
  }
  fl_cfg_err err;
  if (fl_config_check(&R.cfg, &err) < 0) {
    fprintf(stderr, "%s: error: %s\n", prog, err.msg);
    return 2;
  }
  int workers = R.cfg.workers >= 0 ? R.cfg.workers : fl_plan_auto_workers(&R.cfg);
  if (R.cfg.mode == FL_MODE_NETNS) workers = (int)R.cfg.namespaces;
  if (fl_plan_build(&R.plan, &R.cfg, workers) < 0) {
    fprintf(stderr, "%s: error: out of memory\n", prog);
    return 3;
  }
  uint32_t total = fl_config_total(&R.cfg);
  if (check_only) {
    printf("%s: scenario '%s' is valid: %u devices, %d worker process%s, %zu phases, %zu "
           "faults, duration %.1fs, drain up to %.1fs, hard cap %.1fs\n",
           prog, R.cfg.name, total, workers, workers == 1 ? "" : "es", R.cfg.nphases,
           R.cfg.nfaults, (double)R.cfg.duration_ms / 1000.0, (double)R.cfg.drain_ms / 1000.0,
           (double)R.cfg.max_duration_ms / 1000.0);
    fl_plan_free(&R.plan);
    return 0;
  }
  R.tty_progress = progress == 1 || (progress == -1 && isatty(2) && !R.quiet);
  R.netem_on = calloc(FL_MAX_FAULTS, 1);

  if (R.cfg.mode == FL_MODE_NETNS) {
    if (geteuid() != 0) {
      fprintf(stderr, "%s: error: netns mode needs root (creating network namespaces)\n", prog);
      fl_plan_free(&R.plan);
      free(R.netem_on);
      return 3;
    }
    /* Every client address outside the main POS's namespace takes an
     * entry in the main POS's ARP table, and every namespace one for the
     * main POS. The kernel's neighbour table is shared by all namespaces
     * and holds gc_thresh3 entries; past that, entries are refused and
     * connections fail. */
    uint32_t outside = 0;
    for (uint32_t i = 0; i < R.plan.n; i++) outside += R.plan.dev[i].ns != 0;
    unsigned long thresh = 0;
    FILE *gf = fopen("/proc/sys/net/ipv4/neigh/default/gc_thresh3", "r");
    if (gf != NULL) {
      if (fscanf(gf, "%lu", &thresh) != 1) thresh = 0;
      fclose(gf);
    }
    unsigned long need = (unsigned long)outside + (unsigned long)R.plan.nns + 16u;
    if (thresh > 0 && need > thresh) {
      fprintf(stderr,
              "%s: error: netns mode: %u devices outside the main POS's namespace need "
              "about %lu neighbour (ARP) entries, but the kernel's table, shared by every "
              "namespace, holds %lu (net.ipv4.neigh.default.gc_thresh3); use fewer "
              "devices or raise that limit\n",
              prog, outside, need, thresh);
      fl_plan_free(&R.plan);
      free(R.netem_on);
      return 3;
    }
    if (access(R.script, R_OK) != 0) {
      fprintf(stderr, "%s: error: namespace script %s: %s\n", prog, R.script, strerror(errno));
      fl_plan_free(&R.plan);
      free(R.netem_on);
      return 3;
    }
    atexit(on_exit_cleanup);
    /* Hold SIGINT and SIGTERM until the loop's handlers are in place, so
     * that an interrupt cannot kill us between creating the namespaces and
     * being able to tear them down (the workers unblock their own). */
    sigset_t hold;
    sigemptyset(&hold);
    sigaddset(&hold, SIGINT);
    sigaddset(&hold, SIGTERM);
    sigprocmask(SIG_BLOCK, &hold, NULL);
    if (netns_up() < 0) {
      netns_down();
      fl_plan_free(&R.plan);
      free(R.netem_on);
      return 3;
    }
  }

  R.chk = fl_checker_new(&R.plan, R.cfg.max_listed, R.cfg.nfaults == 0);
  if (R.chk == NULL) return 3;
  uint64_t wall0;
  {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    wall0 = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
  }
  double t_start = (double)uv_hrtime() / 1e9;
  /* The run starts after the workers had time to fork and bind. */
  R.t0 = mono_ms() + 300u + total / 20u;
  R.nw = workers;
  signal(SIGPIPE, SIG_IGN);
  if (R.nw > 0 && fork_workers() < 0) {
    fprintf(stderr, "%s: error: cannot start worker processes: %s\n", prog, strerror(errno));
    return 3;
  }
  if (uv_loop_init(&R.loop) != 0) return 3;
  R.loop_open = true;
  R.agg = fl_agg_new(&R.plan, &R.cfg, R.chk, R.nw, R.verbosity);
  if (R.agg == NULL) return 3;
  A_sink = fl_agg_sink(R.agg);
  fl_agg_set_tty(R.agg, R.tty_progress);
  if (R.nw == 0) {
    fl_sink s = A_sink;
    s.done = ip_done;
    R.inproc = fl_worker_new(&R.loop, &R.plan, &R.cfg, 0, R.t0, &s);
    if (R.inproc == NULL || fl_worker_start(R.inproc) < 0) {
      fprintf(stderr, "%s: error: cannot start the fleet\n", prog);
      return 3;
    }
  } else {
    for (int i = 0; i < R.nw; i++) {
      R.wk[i].r = fl_ipc_r_new(&R.loop, R.wk[i].fd, &A_sink, on_eof, &R.wk[i]);
      if (R.wk[i].r == NULL) {
        fprintf(stderr, "%s: error: cannot read worker %d\n", prog, i);
        return 3;
      }
    }
  }
  uv_timer_init(&R.loop, &R.tick);
  uv_timer_start(&R.tick, tick_cb, 100, 100);
  uv_signal_init(&R.loop, &R.sigint);
  uv_signal_init(&R.loop, &R.sigterm);
  uv_signal_start(&R.sigint, signal_cb, SIGINT);
  uv_signal_start(&R.sigterm, signal_cb, SIGTERM);
  sigset_t all;
  sigemptyset(&all);
  sigaddset(&all, SIGINT);
  sigaddset(&all, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &all, NULL);
  /* Parent watchdog in case its own loop stalls. */
  alarm((unsigned)(R.cfg.max_duration_ms / 1000u + 60u));

  uv_run(&R.loop, UV_RUN_DEFAULT);
  alarm(0);
  if (R.tty_progress) fputc('\n', stderr);

  for (int i = 0; i < R.nw; i++) {
    int st = 0;
    if (R.wk[i].pid > 0 && waitpid(R.wk[i].pid, &st, 0) == R.wk[i].pid)
      R.wk[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 3;
  }
  netns_down();

  fl_agg_finish(R.agg);
  uint64_t sched = 0, w = R.cfg.ack_timeout_ms, maxdown = 0;
  for (uint32_t i = 0; i <= R.cfg.max_retries; i++) {
    sched += w;
    w = w * 2 > R.cfg.backoff_cap_ms ? R.cfg.backoff_cap_ms : w * 2;
  }
  for (size_t f = 0; f < R.cfg.nfaults; f++) {
    const fl_fault *ft = &R.cfg.faults[f];
    if ((ft->kind == FL_FAULT_KILL || ft->kind == FL_FAULT_MAIN_RESTART) &&
        ft->restart_after_ms != UINT64_MAX && ft->restart_after_ms > maxdown)
      maxdown = ft->restart_after_ms;
    if (ft->kind == FL_FAULT_PARTITION && ft->end_ms != UINT64_MAX &&
        ft->end_ms - ft->start_ms > maxdown)
      maxdown = ft->end_ms - ft->start_ms;
  }
  fl_checker_set_window(R.chk, R.shutdown_at, sched + maxdown + 2000u);
  /* The message checks need every record: a worker that was killed before
   * it reported its last ones would make deliveries look lost. */
  int expected_done = R.nw > 0 ? R.nw : 1;
  bool complete = fl_agg_workers_done(R.agg) >= expected_done;
  if (complete) {
    fl_checker_finish(R.chk);
  } else {
    note("checker incomplete: %d of %d worker(s) did not report their last records; "
         "message checks skipped",
         expected_done - fl_agg_workers_done(R.agg), expected_done);
  }

  int code = 0;
  bool runtime_fail = R.watchdog || fl_agg_status(R.agg) == 3 ||
                      fl_agg_counter(R.agg, FL_C_start_failures) > 0;
  for (int i = 0; i < R.nw; i++)
    if (R.wk[i].status != 0) runtime_fail = true;
  if (runtime_fail) code = 3;
  else if (fl_checker_count(R.chk) > 0) code = 1;
  if (R.signals > 0 && code == 0) code = 1;

  fl_report_in in;
  memset(&in, 0, sizeof(in));
  in.cfg = &R.cfg;
  in.plan = &R.plan;
  in.agg = R.agg;
  in.chk = R.chk;
  in.workers = R.nw;
  in.wall_start_ms = wall0;
  in.elapsed_s = (double)uv_hrtime() / 1e9 - t_start;
  in.traffic_end_ms = R.traffic_end ? R.traffic_end : R.shutdown_at;
  in.shutdown_ms = R.shutdown_at;
  in.all_connected_ms = R.all_connected_ms;
  in.drained = R.drained;
  in.watchdog = R.watchdog;
  in.exit_code = code;
  in.cpu_s = cpu_all();
  in.parent_rss_kb = rss_self_kb();
  if (R.signals > 0) note("interrupted by a signal: the results are partial");
  for (size_t i = 0; i < R.nnotes; i++) in.notes[in.nnotes++] = R.notes_buf[i];
  if (!R.quiet || fl_checker_count(R.chk) > 0) fl_report_summary(&in, stdout);
  fflush(stdout);
  if (R.report_path != NULL) {
    char e[300];
    if (fl_report_json(&in, R.report_path, e, sizeof(e)) < 0) {
      fprintf(stderr, "%s: error: %s\n", prog, e);
      if (code == 0) code = 3;
    }
  }

  if (R.inproc) fl_worker_free(R.inproc);
  for (int i = 0; i < R.nw; i++) fl_ipc_r_free(R.wk[i].r);
  free(R.wk);
  (void)uv_loop_close(&R.loop);
  fl_agg_free(R.agg);
  fl_checker_free(R.chk);
  fl_plan_free(&R.plan);
  free(R.netem_on);
  return code;
}
