/* posp2p-bench-codec: encode/decode speed and heap allocations of the posp2p
 * codec (v2 protobuf wire and legacy JSON wire) against Google's C++
 * protobuf on the same bytes, in the same process and the same run, plus
 * framing + decode throughput over long streams. See bench/README.md.
 *
 * Method: every measurement is one operation repeated `iters` times between
 * two CLOCK_MONOTONIC reads (the thread's CPU time is read too); `iters` is
 * calibrated (or given with --iterations), one repetition is thrown away as
 * warm-up, then the repetition is done --repeats times (at least 5) and the
 * median, minimum and maximum per-message times are reported. The
 * repetitions of all operations on one message (or one stream) run
 * round-robin, so that drift of a shared machine hits them alike, and our /
 * Google ratios are taken round by round. Allocations are counted in a
 * separate pass after the timed ones (steady state) and on the very first
 * call (cold). Nothing is pinned; everything runs on the calling thread. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "google_baseline.h"
#include "messages.h"
#include "posp2p/codec.h"
#if POSP2P_BENCH_HAVE_LEGACY
#include <jansson.h>

#include "posp2p/legacy.h"
#endif

#ifndef POSP2P_BENCH_BUILD_TYPE
#define POSP2P_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef POSP2P_BENCH_C_FLAGS
#define POSP2P_BENCH_C_FLAGS ""
#endif
#ifndef POSP2P_BENCH_SANITIZE
#define POSP2P_BENCH_SANITIZE 0
#endif

/* What the compiler tells us about this translation unit. The build type
 * string from CMake can lie (flags given by hand); these cannot. */
#if defined(__SANITIZE_ADDRESS__)
#define BENCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BENCH_ASAN 1
#endif
#endif
#ifndef BENCH_ASAN
#define BENCH_ASAN 0
#endif
#if defined(__OPTIMIZE__)
#define BENCH_OPTIMIZED 1
#else
#define BENCH_OPTIMIZED 0
#endif

#define SCHEMA_NAME "posp2p-bench-codec/1"
#define MIN_REPEATS 5
#define MAX_ROWS 96
#define MAX_STREAM_ROWS 32
#define STREAM_DISTINCT 64 /* distinct messages per stream before repeating */
#define GOAL_TYPICAL_DECODE_NS 250.0
#define GOAL_SMALL_FRAMES_PER_S 3e6

typedef int (*bench_op)(void *ctx, uint64_t iters);

/* Operations are called through pointers once per repetition; keeping them
 * out of line costs nothing and keeps them visible in profiles (callgrind
 * attributes the inner loop to the operation, not to a clone of measure). */
#if defined(__clang__)
#define BENCH_OP __attribute__((noinline))
#elif defined(__GNUC__)
#define BENCH_OP __attribute__((noinline, noclone))
#else
#define BENCH_OP
#endif

static volatile int64_t g_sink;

/* ---- Configuration ------------------------------------------------------- */

typedef struct {
  uint64_t iterations;  /* 0: calibrate */
  unsigned repeats;
  double min_time_ns;   /* calibration target per repetition */
  size_t arena_block;   /* posp2p_arena block size */
  size_t google_arena_block;
  size_t stream_bytes;  /* size of each framing stream */
  bool smoke;
  const char *json_path;
  const char *filter;   /* run only measurements whose label contains it */
} config;

/* ---- Counting allocator -------------------------------------------------- */

typedef struct {
  ProtobufCAllocator base;
  uint64_t allocs;
  uint64_t frees;
  uint64_t bytes;
} counting_alloc;

static void *counting_alloc_fn(void *ud, size_t n) {
  counting_alloc *c = ud;
  c->allocs++;
  c->bytes += n;
  return malloc(n);
}

static void counting_free_fn(void *ud, void *p) {
  counting_alloc *c = ud;
  if (p != NULL) c->frees++;
  free(p);
}

static counting_alloc g_counter = {
    {counting_alloc_fn, counting_free_fn, &g_counter}, 0, 0, 0};

#if POSP2P_BENCH_HAVE_LEGACY
/* The legacy decoder parses with jansson, which allocates through its own
 * hook (json_set_alloc_funcs), not through the ProtobufCAllocator the caller
 * passes. Count those too, or the legacy numbers would hide them. */
static uint64_t g_jansson_allocs;

static void *jansson_counting_malloc(size_t n) {
  g_jansson_allocs++;
  return malloc(n);
}

static void jansson_counting_free(void *p) { free(p); }
#endif

/* Heap allocations that bypass the ProtobufCAllocator: jansson's (legacy
 * decode) and libprotobuf's (through the replaced operator new). */
static uint64_t bypass_allocs(void) {
#if POSP2P_BENCH_HAVE_LEGACY
  return g_jansson_allocs + gb_alloc_count();
#else
  return gb_alloc_count();
#endif
}

/* Every heap allocation the benchmark can see. */
static uint64_t total_allocs(void) { return g_counter.allocs + bypass_allocs(); }

/* ---- Clock and statistics ------------------------------------------------ */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct {
  double med, min, max;
} stat3;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static stat3 stats(double *v, unsigned n) {
  stat3 s;
  qsort(v, n, sizeof(double), cmp_double);
  s.min = v[0];
  s.max = v[n - 1];
  s.med = (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
  return s;
}

/* CPU time of this thread: unlike the wall clock it does not count the time
 * other processes had the core. Reported next to the wall-clock numbers so
 * that a run on a busy machine shows it. */
static double cpu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int timed(bench_op op, void *ctx, uint64_t iters, double *ns,
                 double *cpu) {
  double c0 = cpu_now_ns();
  double t0 = now_ns();
  int rv = op(ctx, iters);
  *ns = now_ns() - t0;
  *cpu = cpu_now_ns() - c0;
  return rv;
}

/* One measured operation. `unit` is the number of messages (frames) one op
 * iteration handles: 1 for per-message rows, a whole stream for framing. */
typedef struct {
  bench_op op;
  void *ctx;
  uint64_t unit;
  uint64_t n;         /* op iterations per repetition */
  unsigned nsamples;
  double wall[64];    /* ns per message (frame), per repetition, in round order */
  double cpu[64];
} timing;

/* Choose the repetition length (calibrated to --min-time-ms, or from
 * --iterations, which counts messages) and run one repetition of that
 * length as warm-up. */
static int calibrate(const config *cfg, timing *t) {
  uint64_t n;
  double w, c;
  if (cfg->iterations > 0) {
    n = (cfg->iterations + t->unit - 1) / t->unit;
    if (n == 0) n = 1;
  } else {
    n = 1;
    for (;;) {
      if (timed(t->op, t->ctx, n, &w, &c) != 0) return -1;
      if (w >= cfg->min_time_ns / 8 || n >= (UINT64_C(1) << 32)) break;
      n *= 4;
    }
    double scaled = (double)n * cfg->min_time_ns / (w > 1 ? w : 1);
    n = scaled < 1 ? 1 : (uint64_t)scaled;
  }
  t->n = n;
  return timed(t->op, t->ctx, n, &w, &c); /* warm-up at full length */
}

/* The repetitions, round-robin: round r times repetition r of every
 * operation in the group before any takes repetition r+1, starting with a
 * different one each round. On a shared machine whose speed drifts, every
 * operation of a group then sees the same conditions, and the ratio of two
 * of them is taken round by round (paired), not from two separate runs. */
static int run_rounds(const config *cfg, timing **ts, unsigned count) {
  unsigned reps = cfg->repeats < 64 ? cfg->repeats : 64;
  for (unsigned r = 0; r < reps; r++) {
    for (unsigned k = 0; k < count; k++) {
      timing *t = ts[(k + r) % count];
      double w, c;
      if (timed(t->op, t->ctx, t->n, &w, &c) != 0) return -1;
      double per = (double)t->n * (double)t->unit;
      t->wall[r] = w / per;
      t->cpu[r] = c / per;
    }
  }
  for (unsigned k = 0; k < count; k++) ts[k]->nsamples = reps;
  return 0;
}

static stat3 timing_stat(const timing *t, bool cpu) {
  double v[64];
  memcpy(v, cpu ? t->cpu : t->wall, t->nsamples * sizeof(double));
  return stats(v, t->nsamples);
}

/* Steady-state allocations per operation over k more calls: all of them,
 * those that bypassed the ProtobufCAllocator, and the bytes requested
 * through it. */
static double count_allocs(bench_op op, void *ctx, uint64_t k, double *bypass,
                           double *bytes) {
  uint64_t a0 = total_allocs(), x0 = bypass_allocs(), b0 = g_counter.bytes;
  if (op(ctx, k) != 0) return -1;
  *bytes = (double)(g_counter.bytes - b0) / (double)k;
  *bypass = (double)(bypass_allocs() - x0) / (double)k;
  return (double)(total_allocs() - a0) / (double)k;
}

/* ---- Results ------------------------------------------------------------- */

typedef struct {
  const char *message;
  const char *wire;    /* "v2" or "legacy" */
  const char *op;      /* "encode" or "decode" */
  const char *impl;    /* "posp2p", "protobuf-c" or "google-cpp" */
  const char *variant;
  const char *calls;   /* the exact call sequence that was timed */
  size_t bytes;        /* message bytes (v2 body or JSON line, no prefix/'\n') */
  timing t;
  uint64_t iters;
  stat3 ns;            /* wall clock */
  stat3 cpu_ns;        /* thread CPU time */
  double allocs;       /* steady state, per message */
  double bypass_allocs; /* of those, not through the ProtobufCAllocator */
  double alloc_bytes;  /* bytes requested through our allocator, per message */
  double first_allocs; /* first call on a fresh context */
} row;

typedef struct {
  const char *stream;
  const char *wire;
  const char *impl;
  const char *variant;
  const char *calls;
  uint64_t frames;     /* frames per pass */
  size_t bytes;        /* bytes per pass */
  timing t;
  uint64_t passes;
  stat3 fps;           /* frames per second */
  stat3 ns_frame;
  stat3 cpu_ns_frame;
  double allocs_per_frame;
} stream_row;

static row g_rows[MAX_ROWS];
static unsigned g_nrows;
static stream_row g_srows[MAX_STREAM_ROWS];
static unsigned g_nsrows;

/* ---- Our codec: per-message operations ----------------------------------- */

typedef struct {
  const posp2p_envelope *msg; /* for encode */
  const uint8_t *body;        /* v2 Envelope bytes */
  size_t body_len;
  const uint8_t *line;        /* legacy JSON line, no '\n' */
  size_t line_len;
  posp2p_arena arena;
  posp2p_buf out;
#if POSP2P_BENCH_HAVE_LEGACY
  posp2p_legacy_opts lopts;
#endif
  posp2p_error err;
} our_ctx;

static void report_codec_error(const char *what, const posp2p_error *err) {
  fprintf(stderr, "posp2p-bench-codec: %s failed: %s (%s) %s%s\n", what,
          posp2p_err_name(err->code), err->message,
          err->requirement[0] ? "requirement " : "", err->requirement);
}

BENCH_OP static int op_v2_encode(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    c->out.len = 0;
    if (posp2p_frame_encode(c->msg, 0, &c->out, &c->err) != 0) return -1;
    sink += c->out.data[c->out.len - 1];
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_pbc_pack(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    size_t n = posp2p__v2__envelope__pack(c->msg, c->out.data);
    sink += (int64_t)n;
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_v2_decode_malloc(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e;
    if (posp2p_envelope_decode(c->body, c->body_len, &g_counter.base, &e,
                               &c->err) != 0)
      return -1;
    sink += e->timestamp_ms;
    posp2p_envelope_free(e, &g_counter.base);
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_v2_decode_arena(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e;
    if (posp2p_envelope_decode(c->body, c->body_len, &c->arena.base, &e,
                               &c->err) != 0)
      return -1;
    sink += e->timestamp_ms;
    posp2p_arena_reset(&c->arena);
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_unpack_arena(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e;
    if (posp2p_envelope_unpack(c->body, c->body_len, &c->arena.base, &e,
                               &c->err) != 0)
      return -1;
    sink += e->timestamp_ms;
    posp2p_arena_reset(&c->arena);
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_pbc_unpack_arena(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e =
        posp2p__v2__envelope__unpack(&c->arena.base, c->body_len, c->body);
    if (e == NULL) return -1;
    sink += e->timestamp_ms;
    posp2p_arena_reset(&c->arena);
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_validate(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    if (posp2p_envelope_validate(c->msg, &c->err) != 0) return -1;
    sink++;
  }
  g_sink = sink;
  return 0;
}

#if POSP2P_BENCH_HAVE_LEGACY
BENCH_OP static int op_legacy_encode(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    c->out.len = 0;
    if (posp2p_legacy_encode(c->msg, &c->lopts, &c->out, &c->err) != 0)
      return -1;
    sink += c->out.data[0];
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_legacy_decode_malloc(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e;
    if (posp2p_legacy_decode(c->line, c->line_len, &c->lopts, &g_counter.base,
                             &e, &c->err) != 0)
      return -1;
    sink += e->timestamp_ms;
    posp2p_envelope_free(e, &g_counter.base);
  }
  g_sink = sink;
  return 0;
}

BENCH_OP static int op_legacy_decode_arena(void *p, uint64_t iters) {
  our_ctx *c = p;
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    posp2p_envelope *e;
    if (posp2p_legacy_decode(c->line, c->line_len, &c->lopts, &c->arena.base,
                             &e, &c->err) != 0)
      return -1;
    sink += e->timestamp_ms;
    posp2p_arena_reset(&c->arena);
  }
  g_sink = sink;
  return 0;
}
#endif

/* ---- Streams: framing + decode ------------------------------------------- */

typedef struct {
  const uint8_t *buf;
  size_t len;
  uint64_t frames;  /* counted by the last pass */
  int decode;       /* 0: split frames only */
  posp2p_arena arena;
#if POSP2P_BENCH_HAVE_LEGACY
  posp2p_legacy_opts lopts;
#endif
  posp2p_error err;
} stream_ctx;

BENCH_OP static int op_stream_v2(void *p, uint64_t iters) {
  stream_ctx *s = p;
  int64_t sink = 0;
  for (uint64_t it = 0; it < iters; it++) {
    posp2p_framer f;
    posp2p_framer_init(&f, 0, &g_counter.base);
    size_t pos = 0;
    uint64_t frames = 0;
    for (;;) {
      posp2p_frame fr;
      size_t used;
      int rv = posp2p_framer_next(&f, s->buf + pos, s->len - pos, &used, &fr,
                                  &s->err);
      pos += used;
      if (rv == 0) break;
      if (rv < 0) {
        posp2p_framer_free(&f);
        return -1;
      }
      frames++;
      if (s->decode) {
        posp2p_envelope *e;
        if (posp2p_envelope_decode(fr.data, fr.len, &s->arena.base, &e,
                                   &s->err) != 0) {
          posp2p_framer_free(&f);
          return -1;
        }
        sink += e->timestamp_ms;
        posp2p_arena_reset(&s->arena);
      } else {
        sink += (int64_t)fr.len;
      }
    }
    posp2p_framer_free(&f);
    s->frames = frames;
  }
  g_sink = sink;
  return 0;
}

#if POSP2P_BENCH_HAVE_LEGACY
BENCH_OP static int op_stream_legacy(void *p, uint64_t iters) {
  stream_ctx *s = p;
  int64_t sink = 0;
  for (uint64_t it = 0; it < iters; it++) {
    posp2p_ndjson nd;
    posp2p_ndjson_init(&nd, POSP2P_MAX_FRAME_DEFAULT, &g_counter.base);
    size_t pos = 0;
    uint64_t frames = 0;
    for (;;) {
      posp2p_frame fr;
      size_t used;
      int rv = posp2p_ndjson_next(&nd, s->buf + pos, s->len - pos, &used, &fr,
                                  &s->err);
      pos += used;
      if (rv == 0) break;
      if (rv < 0) {
        posp2p_ndjson_free(&nd);
        return -1;
      }
      frames++;
      if (s->decode) {
        posp2p_envelope *e;
        if (posp2p_legacy_decode(fr.data, fr.len, &s->lopts, &s->arena.base,
                                 &e, &s->err) != 0) {
          posp2p_ndjson_free(&nd);
          return -1;
        }
        sink += e->timestamp_ms;
        posp2p_arena_reset(&s->arena);
      } else {
        sink += (int64_t)fr.len;
      }
    }
    posp2p_ndjson_free(&nd);
    s->frames = frames;
  }
  g_sink = sink;
  return 0;
}
#endif

/* ---- The messages, encoded once ------------------------------------------ */

typedef struct {
  bench_msg_kind kind;
  posp2p_envelope *msg;
  uint8_t *body; /* v2 Envelope, no prefix */
  size_t body_len;
  size_t frame_len; /* with the varint prefix */
  uint8_t *line; /* legacy line, no '\n'; NULL without the legacy codec */
  size_t line_len;
  int google_identical; /* Google re-encodes our bytes byte for byte */
  size_t google_space;  /* Google's SpaceUsedLong of the parsed message */
} bench_message;

static bench_message g_msgs[BENCH_MSG_COUNT];
static posp2p_arena g_build_arena;

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (d != NULL && n) memcpy(d, p, n);
  return d;
}

/* Encode message (kind, serial) as a v2 frame (with prefix) appended to out,
 * or as a legacy line with '\n'. */
static int append_encoded(bench_msg_kind k, unsigned serial, int legacy,
                          posp2p_buf *out) {
  posp2p_error err;
  posp2p_envelope *e = bench_msg_build(k, serial, &g_build_arena);
  if (e == NULL) return POSP2P_ERR_NOMEM;
  int rv;
  if (!legacy) {
    rv = posp2p_frame_encode(e, 0, out, &err);
  } else {
#if POSP2P_BENCH_HAVE_LEGACY
    posp2p_legacy_opts lo = {0};
    rv = posp2p_legacy_encode(e, &lo, out, &err);
#else
    rv = POSP2P_ERR_INVAL;
    err.code = rv;
    snprintf(err.message, sizeof err.message, "no legacy codec");
    err.requirement = "";
#endif
  }
  if (rv != 0) report_codec_error(legacy ? "legacy encode" : "v2 encode", &err);
  return rv;
}

static int prepare_messages(void) {
  posp2p_arena_init(&g_build_arena, NULL, 1 << 16);
  for (int k = 0; k < BENCH_MSG_COUNT; k++) {
    bench_message *m = &g_msgs[k];
    posp2p_buf b;
    posp2p_error err;
    m->kind = (bench_msg_kind)k;
    m->msg = bench_msg_build(m->kind, 0, &g_build_arena);
    if (m->msg == NULL) return -1;
    if (posp2p_envelope_validate(m->msg, &err) != 0) {
      report_codec_error("validate of a benchmark message", &err);
      return -1;
    }
    posp2p_buf_init(&b, POSP2P_MAX_FRAME_DEFAULT + 8, NULL);
    if (posp2p_frame_encode(m->msg, 0, &b, &err) != 0) {
      report_codec_error("v2 encode", &err);
      posp2p_buf_free(&b);
      return -1;
    }
    uint8_t hdr[5];
    m->body_len = posp2p__v2__envelope__get_packed_size(m->msg);
    size_t hlen = posp2p_varint_encode((uint32_t)m->body_len, hdr);
    m->frame_len = b.len;
    m->body = dup_bytes(b.data + hlen, m->body_len);
    posp2p_buf_free(&b);
    if (m->body == NULL) return -1;
#if POSP2P_BENCH_HAVE_LEGACY
    posp2p_legacy_opts lo = {0};
    posp2p_buf_init(&b, POSP2P_MAX_FRAME_DEFAULT, NULL);
    if (posp2p_legacy_encode(m->msg, &lo, &b, &err) != 0) {
      report_codec_error("legacy encode", &err);
      posp2p_buf_free(&b);
      return -1;
    }
    m->line_len = b.len > 0 && b.data[b.len - 1] == '\n' ? b.len - 1 : b.len;
    m->line = dup_bytes(b.data, m->line_len);
    posp2p_buf_free(&b);
    if (m->line == NULL) return -1;
#endif
    gb_ctx *g = gb_new(m->body, m->body_len, 1 << 16);
    if (g == NULL) {
      fprintf(stderr, "posp2p-bench-codec: Google's protobuf does not parse "
                      "our %s bytes\n", bench_msg_name(m->kind));
      return -1;
    }
    m->google_identical = gb_reencode_identical(g);
    m->google_space = gb_space_used(g);
    gb_del(g);
  }
  return 0;
}

static void free_messages(void) {
  for (int k = 0; k < BENCH_MSG_COUNT; k++) {
    free(g_msgs[k].body);
    free(g_msgs[k].line);
  }
  posp2p_arena_free(&g_build_arena);
}

/* ---- Running the per-message measurements -------------------------------- */

/* Register one row: first call (its allocations), calibration, warm-up.
 * The timed repetitions run later, round-robin with the message's other
 * rows (finish_rows). */
static int add_row(const config *cfg, const bench_message *m, const char *wire,
                   const char *op_name, const char *impl, const char *variant,
                   const char *calls, bench_op op, void *ctx, size_t bytes) {
  char label[160];
  snprintf(label, sizeof label, "%s/%s/%s/%s/%s", bench_msg_name(m->kind),
           wire, op_name, impl, variant);
  if (cfg->filter != NULL && strstr(label, cfg->filter) == NULL) return 0;
  if (g_nrows >= MAX_ROWS) return -1;
  row *r = &g_rows[g_nrows];
  memset(r, 0, sizeof(*r));
  r->message = bench_msg_name(m->kind);
  r->wire = wire;
  r->op = op_name;
  r->impl = impl;
  r->variant = variant;
  r->calls = calls;
  r->bytes = bytes;
  r->t.op = op;
  r->t.ctx = ctx;
  r->t.unit = 1;
  uint64_t a0 = total_allocs();
  if (op(ctx, 1) != 0) goto fail;
  r->first_allocs = (double)(total_allocs() - a0);
  if (calibrate(cfg, &r->t) != 0) goto fail;
  g_nrows++;
  return 0;
fail:
  fprintf(stderr, "posp2p-bench-codec: %s %s %s %s/%s failed\n", r->message,
          wire, op_name, impl, variant);
  return -1;
}

/* Time rows [first, g_nrows) round-robin, then count their allocations. */
static int finish_rows(const config *cfg, unsigned first) {
  timing *ts[MAX_ROWS];
  unsigned count = g_nrows - first;
  if (count == 0) return 0;
  for (unsigned i = 0; i < count; i++) ts[i] = &g_rows[first + i].t;
  if (run_rounds(cfg, ts, count) != 0) return -1;
  for (unsigned i = first; i < g_nrows; i++) {
    row *r = &g_rows[i];
    r->iters = r->t.n;
    r->ns = timing_stat(&r->t, false);
    r->cpu_ns = timing_stat(&r->t, true);
    uint64_t k = r->iters < 1000 ? r->iters : 1000;
    if (k < 10) k = 10;
    r->allocs = count_allocs(r->t.op, r->t.ctx, k, &r->bypass_allocs,
                             &r->alloc_bytes);
    if (r->allocs < 0) return -1;
    if (!cfg->smoke)
      fprintf(stderr, "  %-13s %-6s %-6s %-10s %-14s %10.1f ns\n", r->message,
              r->wire, r->op, r->impl, r->variant, r->ns.med);
  }
  return 0;
}

static int run_message(const config *cfg, bench_message *m) {
  our_ctx c;
  int rv = -1;
  unsigned first = g_nrows;
  memset(&c, 0, sizeof c);
  c.msg = m->msg;
  c.body = m->body;
  c.body_len = m->body_len;
  c.line = m->line;
  c.line_len = m->line_len;
  posp2p_arena_init(&c.arena, &g_counter.base, cfg->arena_block);
  posp2p_buf_init(&c.out, POSP2P_MAX_FRAME_DEFAULT + 8, &g_counter.base);
  gb_ctx *g = gb_new(m->body, m->body_len, cfg->google_arena_block);
  if (g == NULL) goto out;
  if (posp2p_buf_reserve(&c.out, m->frame_len + 16) != 0) goto out;

  if (add_row(cfg, m, "v2", "encode", "posp2p", "frame_encode",
              "posp2p_frame_encode into a reused posp2p_buf (size pass, "
              "varint prefix, protobuf-c pack)",
              op_v2_encode, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "encode", "protobuf-c", "pack",
              "posp2p__v2__envelope__pack into a preallocated buffer (no "
              "size pass, no prefix): breakdown only",
              op_pbc_pack, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "encode", "google-cpp", "serialize",
              "Envelope::SerializeToArray (ByteSizeLong + serialize) into a "
              "reused buffer",
              gb_encode, g, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "posp2p", "malloc",
              "posp2p_envelope_decode (unpack + validate) with a counting "
              "malloc allocator, then posp2p_envelope_free",
              op_v2_decode_malloc, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "posp2p", "arena",
              "posp2p_envelope_decode (unpack + validate) into a posp2p_arena, "
              "then posp2p_arena_reset",
              op_v2_decode_arena, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "posp2p", "unpack-only",
              "posp2p_envelope_unpack (protobuf-c unpack + UTF-8/NUL scan of "
              "the strings, no validation) into the arena: breakdown only",
              op_unpack_arena, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "protobuf-c", "unpack+arena",
              "posp2p__v2__envelope__unpack into the arena, no validation: "
              "breakdown only",
              op_pbc_unpack_arena, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "posp2p", "validate-only",
              "posp2p_envelope_validate on a decoded message: breakdown only",
              op_validate, &c, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "google-cpp", "reuse",
              "Envelope::Clear + ParseFromArray on one reused message",
              gb_decode_reuse, g, m->body_len))
    goto out;
  if (add_row(cfg, m, "v2", "decode", "google-cpp", "arena",
              "Arena::CreateMessage<Envelope> + ParseFromArray, then "
              "Arena::Reset (initial block kept)",
              gb_decode_arena, g, m->body_len))
    goto out;
#if POSP2P_BENCH_HAVE_LEGACY
  if (add_row(cfg, m, "legacy", "encode", "posp2p", "buf",
              "posp2p_legacy_encode into a reused posp2p_buf",
              op_legacy_encode, &c, m->line_len))
    goto out;
  if (add_row(cfg, m, "legacy", "decode", "posp2p", "malloc",
              "posp2p_legacy_decode (parse + convert + validate) with a "
              "counting malloc allocator, then posp2p_envelope_free",
              op_legacy_decode_malloc, &c, m->line_len))
    goto out;
  if (add_row(cfg, m, "legacy", "decode", "posp2p", "arena",
              "posp2p_legacy_decode into a posp2p_arena, then "
              "posp2p_arena_reset",
              op_legacy_decode_arena, &c, m->line_len))
    goto out;
#endif
  if (finish_rows(cfg, first) != 0) goto out;
  rv = 0;
out:
  if (rv != 0 && c.err.code != 0) report_codec_error("operation", &c.err);
  gb_del(g);
  posp2p_buf_free(&c.out);
  posp2p_arena_free(&c.arena);
  return rv;
}

/* ---- Running the stream measurements ------------------------------------- */

typedef struct {
  const char *name;
  const char *description;
  bench_msg_kind pattern[8];
  unsigned npattern;
} stream_def;

static const stream_def g_streams[] = {
    {"heartbeat", "heartbeats only", {BENCH_MSG_HEARTBEAT}, 1},
    {"ack", "acknowledgements only", {BENCH_MSG_ACK}, 1},
    {"typical_order", "typical 10-item orders only", {BENCH_MSG_TYPICAL}, 1},
    {"mix",
     "per order: the order, its ack and four heartbeats",
     {BENCH_MSG_TYPICAL, BENCH_MSG_ACK, BENCH_MSG_HEARTBEAT,
      BENCH_MSG_HEARTBEAT, BENCH_MSG_HEARTBEAT, BENCH_MSG_HEARTBEAT},
     6},
};
#define NSTREAMS (sizeof(g_streams) / sizeof(g_streams[0]))

static int build_stream(const stream_def *d, int legacy, size_t target,
                        posp2p_buf *out, uint64_t *frames) {
  /* Encode STREAM_DISTINCT distinct rounds of the pattern, then repeat those
   * bytes until the stream is at least `target` long. */
  posp2p_buf_init(out, (size_t)1 << 30, NULL);
  uint64_t n = 0;
  for (unsigned s = 0; s < STREAM_DISTINCT && (out->len < target || s == 0);
       s++) {
    for (unsigned i = 0; i < d->npattern; i++) {
      if (append_encoded(d->pattern[i], s, legacy, out) != 0) return -1;
      n++;
    }
  }
  size_t unit = out->len;
  uint64_t unit_frames = n;
  while (out->len < target) {
    if (posp2p_buf_reserve(out, unit) != 0) return -1;
    memcpy(out->data + out->len, out->data, unit);
    out->len += unit;
    n += unit_frames;
  }
  *frames = n;
  return 0;
}

static int add_stream_row(const config *cfg, const stream_def *d,
                          const char *wire, const char *impl,
                          const char *variant, const char *calls, bench_op op,
                          void *ctx, uint64_t (*frames_of)(const void *ctx),
                          uint64_t frames_expected, size_t bytes) {
  char label[160];
  snprintf(label, sizeof label, "stream:%s/%s/%s/%s", d->name, wire, impl,
           variant);
  if (cfg->filter != NULL && strstr(label, cfg->filter) == NULL) return 0;
  if (g_nsrows >= MAX_STREAM_ROWS) return -1;
  stream_row *r = &g_srows[g_nsrows];
  memset(r, 0, sizeof(*r));
  r->stream = d->name;
  r->wire = wire;
  r->impl = impl;
  r->variant = variant;
  r->calls = calls;
  r->bytes = bytes;
  r->frames = frames_expected;
  r->t.op = op;
  r->t.ctx = ctx;
  r->t.unit = frames_expected;
  if (op(ctx, 1) != 0) goto fail;
  if (frames_of(ctx) != frames_expected) {
    fprintf(stderr, "posp2p-bench-codec: stream %s/%s: %" PRIu64
                    " frames, expected %" PRIu64 "\n",
            d->name, wire, frames_of(ctx), frames_expected);
    return -1;
  }
  if (calibrate(cfg, &r->t) != 0) goto fail;
  g_nsrows++;
  return 0;
fail:
  fprintf(stderr, "posp2p-bench-codec: stream %s %s %s/%s failed\n", d->name,
          wire, impl, variant);
  return -1;
}

static int finish_stream_rows(const config *cfg, unsigned first) {
  timing *ts[MAX_STREAM_ROWS];
  unsigned count = g_nsrows - first;
  if (count == 0) return 0;
  for (unsigned i = 0; i < count; i++) ts[i] = &g_srows[first + i].t;
  if (run_rounds(cfg, ts, count) != 0) return -1;
  for (unsigned i = first; i < g_nsrows; i++) {
    stream_row *r = &g_srows[i];
    r->passes = r->t.n;
    r->ns_frame = timing_stat(&r->t, false);
    r->cpu_ns_frame = timing_stat(&r->t, true);
    r->fps.med = 1e9 / r->ns_frame.med;
    r->fps.min = 1e9 / r->ns_frame.max; /* slowest repetition */
    r->fps.max = 1e9 / r->ns_frame.min;
    uint64_t a0 = total_allocs();
    if (r->t.op(r->t.ctx, 1) != 0) return -1;
    r->allocs_per_frame = (double)(total_allocs() - a0) / (double)r->frames;
    if (!cfg->smoke)
      fprintf(stderr, "  stream %-13s %-6s %-10s %-14s %10.0f frames/s\n",
              r->stream, r->wire, r->impl, r->variant, r->fps.med);
  }
  return 0;
}

static uint64_t our_stream_frames(const void *p) {
  return ((const stream_ctx *)p)->frames;
}

static uint64_t google_stream_frames(const void *p) {
  return gb_stream_frames((const gb_stream *)p);
}

/* With --filter, skip building streams that no selected label names. */
static bool stream_wanted(const config *cfg, const stream_def *d, int legacy) {
  static const char *const kinds[] = {"posp2p/framing-only",
                                      "posp2p/framing+decode",
                                      "google-cpp/framing+decode"};
  if (cfg->filter == NULL) return true;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    char label[160];
    snprintf(label, sizeof label, "stream:%s/%s/%s", d->name,
             legacy ? "legacy" : "v2", kinds[i]);
    if (strstr(label, cfg->filter) != NULL) return true;
  }
  return false;
}

static int run_stream(const config *cfg, const stream_def *d, int legacy) {
  posp2p_buf buf;
  uint64_t frames;
  int rv = -1;
  unsigned first = g_nsrows;
  gb_stream *g = NULL;
  /* One context per row: rows are timed round-robin. */
  stream_ctx split, dec;
  if (!stream_wanted(cfg, d, legacy)) return 0;
  memset(&split, 0, sizeof split);
  memset(&dec, 0, sizeof dec);
  posp2p_arena_init(&split.arena, &g_counter.base, cfg->arena_block);
  posp2p_arena_init(&dec.arena, &g_counter.base, cfg->arena_block);
  if (build_stream(d, legacy, cfg->stream_bytes, &buf, &frames) != 0) goto out;
  split.buf = dec.buf = buf.data;
  split.len = dec.len = buf.len;
  split.decode = 0;
  dec.decode = 1;
  if (!legacy) {
    if (add_stream_row(cfg, d, "v2", "posp2p", "framing-only",
                       "posp2p_framer_next over the stream (zero-copy)",
                       op_stream_v2, &split, our_stream_frames, frames,
                       buf.len))
      goto out;
    if (add_stream_row(cfg, d, "v2", "posp2p", "framing+decode",
                       "posp2p_framer_next + posp2p_envelope_decode into a "
                       "posp2p_arena + posp2p_arena_reset per frame",
                       op_stream_v2, &dec, our_stream_frames, frames, buf.len))
      goto out;
    g = gb_stream_new(buf.data, buf.len);
    if (add_stream_row(cfg, d, "v2", "google-cpp", "framing+decode",
                       "varint prefix read inline + Envelope::Clear + "
                       "ParseFromArray on one reused message",
                       gb_stream_decode, g, google_stream_frames, frames,
                       buf.len))
      goto out;
  } else {
#if POSP2P_BENCH_HAVE_LEGACY
    if (add_stream_row(cfg, d, "legacy", "posp2p", "framing-only",
                       "posp2p_ndjson_next over the stream (zero-copy)",
                       op_stream_legacy, &split, our_stream_frames, frames,
                       buf.len))
      goto out;
    if (add_stream_row(cfg, d, "legacy", "posp2p", "framing+decode",
                       "posp2p_ndjson_next + posp2p_legacy_decode into a "
                       "posp2p_arena + posp2p_arena_reset per line",
                       op_stream_legacy, &dec, our_stream_frames, frames,
                       buf.len))
      goto out;
#endif
  }
  if (finish_stream_rows(cfg, first) != 0) goto out;
  rv = 0;
out:
  if (rv != 0 && split.err.code != 0) report_codec_error("stream", &split.err);
  if (rv != 0 && dec.err.code != 0) report_codec_error("stream", &dec.err);
  if (g != NULL) gb_stream_del(g);
  posp2p_buf_free(&buf);
  posp2p_arena_free(&split.arena);
  posp2p_arena_free(&dec.arena);
  return rv;
}

/* ---- Machine and build description --------------------------------------- */

typedef struct {
  char cpu_model[128];
  unsigned cpus;
  char kernel[256];
  char date[32];
  double load_start[3];
  double load_end[3];
} machine_info;

static void read_cpu(machine_info *mi) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  snprintf(mi->cpu_model, sizeof mi->cpu_model, "unknown");
  mi->cpus = 0;
  if (f == NULL) return;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "processor", 9) == 0) mi->cpus++;
    if (strncmp(line, "model name", 10) == 0 && mi->cpus <= 1) {
      char *v = strchr(line, ':');
      if (v != NULL) {
        v++;
        while (*v == ' ' || *v == '\t') v++;
        size_t n = strcspn(v, "\n");
        snprintf(mi->cpu_model, sizeof mi->cpu_model, "%.*s", (int)n, v);
      }
    }
  }
  fclose(f);
}

static void read_load(double out[3]) {
  FILE *f = fopen("/proc/loadavg", "r");
  out[0] = out[1] = out[2] = -1;
  if (f == NULL) return;
  if (fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
    out[0] = out[1] = out[2] = -1;
  fclose(f);
}

static void machine_describe(machine_info *mi) {
  struct utsname u;
  read_cpu(mi);
  if (uname(&u) == 0)
    snprintf(mi->kernel, sizeof mi->kernel, "%s %s %s", u.sysname, u.release,
             u.machine);
  else
    snprintf(mi->kernel, sizeof mi->kernel, "unknown");
  time_t t = time(NULL);
  struct tm tmv;
  gmtime_r(&t, &tmv);
  strftime(mi->date, sizeof mi->date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  read_load(mi->load_start);
}

static bool representative(void) {
  return BENCH_OPTIMIZED && !BENCH_ASAN && !POSP2P_BENCH_SANITIZE;
}

static const char *sanitizers(void) {
  if (BENCH_ASAN || POSP2P_BENCH_SANITIZE) return "address,undefined";
  return "";
}

/* ---- Look-ups for ratios and goals --------------------------------------- */

static const row *find_row(const char *message, const char *wire,
                           const char *op, const char *impl,
                           const char *variant) {
  for (unsigned i = 0; i < g_nrows; i++) {
    const row *r = &g_rows[i];
    if (strcmp(r->message, message) == 0 && strcmp(r->wire, wire) == 0 &&
        strcmp(r->op, op) == 0 && strcmp(r->impl, impl) == 0 &&
        strcmp(r->variant, variant) == 0)
      return r;
  }
  return NULL;
}

static const stream_row *find_srow(const char *stream, const char *wire,
                                   const char *impl, const char *variant) {
  for (unsigned i = 0; i < g_nsrows; i++) {
    const stream_row *r = &g_srows[i];
    if (strcmp(r->stream, stream) == 0 && strcmp(r->wire, wire) == 0 &&
        strcmp(r->impl, impl) == 0 && strcmp(r->variant, variant) == 0)
      return r;
  }
  return NULL;
}

typedef struct {
  const char *op;
  const char *ours;    /* variant of impl "posp2p" */
  const char *theirs;  /* variant of impl "google-cpp" */
} ratio_def;

static const ratio_def g_ratio_defs[] = {
    {"encode", "frame_encode", "serialize"},
    {"decode", "arena", "arena"},
    {"decode", "arena", "reuse"},
    {"decode", "malloc", "reuse"},
    {"decode", "malloc", "arena"},
    /* Like for like: Google's parse also checks UTF-8 and validates
     * nothing else. */
    {"decode", "unpack-only", "arena"},
};
#define NRATIOS (sizeof(g_ratio_defs) / sizeof(g_ratio_defs[0]))

/* Our time / Google's, round by round (the two were timed in the same
 * rounds, see run_rounds): median, min and max of the per-round ratios.
 * Returns the median, or -1 if either row is missing. */
static double ratio_of3(const char *message, const ratio_def *d, stat3 *out) {
  const row *a = find_row(message, "v2", d->op, "posp2p", d->ours);
  const row *b = find_row(message, "v2", d->op, "google-cpp", d->theirs);
  if (a == NULL || b == NULL || a->t.nsamples == 0 ||
      a->t.nsamples != b->t.nsamples)
    return -1;
  double v[64];
  for (unsigned r = 0; r < a->t.nsamples; r++)
    v[r] = b->t.wall[r] > 0 ? a->t.wall[r] / b->t.wall[r] : 0;
  stat3 st = stats(v, a->t.nsamples);
  if (out != NULL) *out = st;
  return st.med;
}

static double ratio_of(const char *message, const ratio_def *d) {
  return ratio_of3(message, d, NULL);
}

static double mbps(size_t bytes, double ns) {
  return ns > 0 ? (double)bytes / ns * 1e3 : 0;
}

/* ---- Table --------------------------------------------------------------- */

static void print_table(FILE *o, const config *cfg, const machine_info *mi) {
  fprintf(o, "posp2p codec benchmark  %s\n", mi->date);
  fprintf(o, "cpu: %s (%u logical cpus)  kernel: %s\n", mi->cpu_model,
          mi->cpus, mi->kernel);
  fprintf(o, "build: %s, C flags \"%s\", C compiler %s, C++ compiler %s\n",
          POSP2P_BENCH_BUILD_TYPE, POSP2P_BENCH_C_FLAGS, __VERSION__,
          gb_compiler());
  const char *rev = getenv("POSP2P_BENCH_GIT");
  fprintf(o, "libs: protobuf-c %s, Google protobuf %s; source %s\n",
          protobuf_c_version(), gb_version(), rev != NULL ? rev : "unknown");
  fprintf(o, "load average: %.2f at start, %.2f at end; %u repetitions, "
             "median (min..max)%s\n",
          mi->load_start[0], mi->load_end[0], cfg->repeats,
          cfg->smoke ? "; SMOKE RUN (tiny sizes, numbers meaningless)" : "");
  if (!representative())
    fprintf(o, "\n*** NOT REPRESENTATIVE: built %s%s%s. Use the release build "
               "(scripts/bench.sh) for real numbers. ***\n",
            BENCH_OPTIMIZED ? "" : "without optimization",
            (!BENCH_OPTIMIZED && sanitizers()[0]) ? " and " : "",
            sanitizers()[0] ? "with sanitizers (ASan+UBSan)" : "");

  fprintf(o, "\nns/msg: wall-clock median over the repetitions; cpu ns: the "
             "same in thread CPU time\n(far below ns/msg: the process was "
             "descheduled); MB/s: message bytes "
             "(v2 Envelope without prefix,\nlegacy line without '\\n') per "
             "second; allocs: heap allocations per message in steady\nstate; "
             "bypass: of those, made outside the ProtobufCAllocator (jansson, "
             "C++ new);\n1st: allocations of the first call on a fresh "
             "context; ratios: our time / Google's, median over the rounds\n(all "
             "rows of a message are timed round-robin, so each round pairs "
             "them).\n");
  for (int k = 0; k < BENCH_MSG_COUNT; k++) {
    const bench_message *m = &g_msgs[k];
    const char *name = bench_msg_name(m->kind);
    fprintf(o, "\n== %s: v2 %zu B", name, m->body_len);
    if (m->line != NULL) fprintf(o, ", legacy JSON %zu B", m->line_len);
    fprintf(o, " (%s) ==\n", bench_msg_description(m->kind));
    fprintf(o, "%-6s %-6s %-10s %-14s %10s %21s %9s %9s %8s %7s %6s  %s\n",
            "wire", "op", "impl", "variant", "ns/msg", "(min..max)", "cpu ns",
            "MB/s", "allocs", "bypass", "1st", "vs Google C++ (ours/theirs)");
    for (unsigned i = 0; i < g_nrows; i++) {
      const row *r = &g_rows[i];
      if (strcmp(r->message, name) != 0) continue;
      char range[64];
      snprintf(range, sizeof range, "(%.1f..%.1f)", r->ns.min, r->ns.max);
      char ratio[96] = "";
      if (strcmp(r->impl, "posp2p") == 0 && strcmp(r->wire, "v2") == 0) {
        size_t off = 0;
        for (unsigned j = 0; j < NRATIOS; j++) {
          const ratio_def *d = &g_ratio_defs[j];
          if (strcmp(d->op, r->op) != 0 || strcmp(d->ours, r->variant) != 0)
            continue;
          double x = ratio_of(name, d);
          if (x < 0 || off >= sizeof ratio) continue;
          int w = snprintf(ratio + off, sizeof ratio - off, "%s%.2fx %s",
                           off ? ", " : "", x, d->theirs);
          if (w > 0) off += (size_t)w;
        }
      }
      fprintf(o, "%-6s %-6s %-10s %-14s %10.1f %21s %9.1f %9.1f %8.2f %7.2f %6.0f  %s\n",
              r->wire, r->op, r->impl, r->variant, r->ns.med, range,
              r->cpu_ns.med, mbps(r->bytes, r->ns.med), r->allocs,
              r->bypass_allocs, r->first_allocs, ratio);
    }
    fprintf(o, "Google re-encodes our v2 bytes identically: %s; Google "
               "SpaceUsedLong %zu B\n",
            m->google_identical ? "yes" : "NO", m->google_space);
  }

  fprintf(o, "\n== framing + decode on one core: streams of about %zu KiB ==\n",
          cfg->stream_bytes / 1024);
  fprintf(o, "%-13s %-6s %-10s %-14s %8s %12s %25s %9s %9s %8s %9s\n",
          "stream", "wire", "impl", "variant", "frames", "frames/s",
          "(min..max)", "ns/frame", "cpu ns/f", "MB/s", "allocs/f");
  for (unsigned i = 0; i < g_nsrows; i++) {
    const stream_row *r = &g_srows[i];
    char range[64];
    snprintf(range, sizeof range, "(%.0f..%.0f)", r->fps.min, r->fps.max);
    fprintf(o, "%-13s %-6s %-10s %-14s %8" PRIu64 " %12.0f %25s %9.1f %9.1f %8.1f %9.3f\n",
            r->stream, r->wire, r->impl, r->variant, r->frames, r->fps.med,
            range, r->ns_frame.med, r->cpu_ns_frame.med,
            mbps(r->bytes, r->ns_frame.med * (double)r->frames),
            r->allocs_per_frame);
  }
}

/* ---- Goals (reported, never asserted) ------------------------------------ */

typedef struct {
  double typical_decode_ns;       /* posp2p arena decode, median */
  double typical_vs_google;       /* ours (arena) / Google's best decode */
  double small_frames_per_s;      /* slower of heartbeat and ack streams */
} goals;

static goals compute_goals(void) {
  goals g = {-1, -1, -1};
  const row *ours = find_row("typical_order", "v2", "decode", "posp2p", "arena");
  const row *ga = find_row("typical_order", "v2", "decode", "google-cpp", "arena");
  const row *gr = find_row("typical_order", "v2", "decode", "google-cpp", "reuse");
  if (ours != NULL) g.typical_decode_ns = ours->ns.med;
  if (ours != NULL && ga != NULL && gr != NULL) {
    /* Against Google's faster variant, paired round by round. */
    ratio_def d = {"decode", "arena", ga->ns.med < gr->ns.med ? "arena" : "reuse"};
    g.typical_vs_google = ratio_of("typical_order", &d);
  }
  const stream_row *h = find_srow("heartbeat", "v2", "posp2p", "framing+decode");
  const stream_row *a = find_srow("ack", "v2", "posp2p", "framing+decode");
  if (h != NULL && a != NULL)
    g.small_frames_per_s = h->fps.med < a->fps.med ? h->fps.med : a->fps.med;
  return g;
}

static const char *goal_verdict(double v, double bound, bool is_max) {
  if (v < 0) return "not measured";
  return (is_max ? v <= bound : v >= bound) ? "met" : "NOT MET";
}

static void print_goals(FILE *o, const goals *g) {
  fprintf(o, "\n== goals (issue 7; reported, not enforced) ==\n");
  fprintf(o, "typical-order v2 decode (arena):   %8.1f ns   goal <= %.0f ns   %s\n",
          g->typical_decode_ns, GOAL_TYPICAL_DECODE_NS,
          goal_verdict(g->typical_decode_ns, GOAL_TYPICAL_DECODE_NS, true));
  fprintf(o, "  vs Google C++ (best of reuse/arena): %6.2fx   goal <= 1.00x   %s\n",
          g->typical_vs_google, goal_verdict(g->typical_vs_google, 1.0, true));
  fprintf(o, "framing+decode, small frames:   %11.0f frames/s   goal >= %.0f   %s\n",
          g->small_frames_per_s, GOAL_SMALL_FRAMES_PER_S,
          goal_verdict(g->small_frames_per_s, GOAL_SMALL_FRAMES_PER_S, false));
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_str(FILE *o, const char *s) {
  fputc('"', o);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      fputc('\\', o);
      fputc(*p, o);
    } else if (*p < 0x20) {
      fprintf(o, "\\u%04x", *p);
    } else {
      fputc(*p, o);
    }
  }
  fputc('"', o);
}

/* Numbers: JSON has no NaN or infinity; unknown values are null. */
static void json_num(FILE *o, double v) {
  if (v != v || v > 1e300 || v < -1e300)
    fputs("null", o);
  else
    fprintf(o, "%.6g", v);
}

static void json_stat(FILE *o, const stat3 *s) {
  fputs("{\"median\": ", o);
  json_num(o, s->med);
  fputs(", \"min\": ", o);
  json_num(o, s->min);
  fputs(", \"max\": ", o);
  json_num(o, s->max);
  fputc('}', o);
}

static void json_kv_str(FILE *o, const char *k, const char *v, bool comma) {
  fprintf(o, "\"%s\": ", k);
  json_str(o, v);
  if (comma) fputs(", ", o);
}

static void json_kv_num(FILE *o, const char *k, double v, bool comma) {
  fprintf(o, "\"%s\": ", k);
  json_num(o, v);
  if (comma) fputs(", ", o);
}

static void json_goal(FILE *o, double v, const char *bound_name, double bound,
                      bool is_max) {
  json_kv_num(o, "value", v < 0 ? NAN : v, true);
  json_kv_num(o, bound_name, bound, true);
  fprintf(o, "\"met\": %s",
          strcmp(goal_verdict(v, bound, is_max), "met") == 0 ? "true" : "false");
}

static int write_json(const char *path, const config *cfg,
                      const machine_info *mi, const goals *g) {
  FILE *o = fopen(path, "w");
  if (o == NULL) {
    fprintf(stderr, "posp2p-bench-codec: cannot write %s: %s\n", path,
            strerror(errno));
    return -1;
  }
  fputs("{\n  ", o);
  json_kv_str(o, "schema", SCHEMA_NAME, true);
  json_kv_str(o, "benchmark", "codec", true);
  json_kv_str(o, "date", mi->date, true);
  /* scripts/bench.sh passes the source revision (git describe --dirty). */
  const char *rev = getenv("POSP2P_BENCH_GIT");
  json_kv_str(o, "source_revision", rev != NULL ? rev : "unknown", false);
  fputs(",\n  \"machine\": {", o);
  json_kv_str(o, "cpu_model", mi->cpu_model, true);
  json_kv_num(o, "logical_cpus", mi->cpus, true);
  json_kv_str(o, "kernel", mi->kernel, true);
  fputs("\"load_avg_start\": ", o);
  json_num(o, mi->load_start[0]);
  fputs(", \"load_avg_end\": ", o);
  json_num(o, mi->load_end[0]);
  fputs("},\n  \"build\": {", o);
  json_kv_str(o, "build_type", POSP2P_BENCH_BUILD_TYPE, true);
  json_kv_str(o, "c_flags", POSP2P_BENCH_C_FLAGS, true);
  json_kv_str(o, "c_compiler", __VERSION__, true);
  json_kv_str(o, "cxx_compiler", gb_compiler(), true);
  fprintf(o, "\"optimized\": %s, ", BENCH_OPTIMIZED ? "true" : "false");
  json_kv_str(o, "sanitizers", sanitizers(), true);
  fprintf(o, "\"representative\": %s, ", representative() ? "true" : "false");
  json_kv_str(o, "protobuf_c_version", protobuf_c_version(), true);
  json_kv_str(o, "google_protobuf_version", gb_version(), false);
  fputs("},\n  \"config\": {", o);
  fprintf(o, "\"smoke\": %s, ", cfg->smoke ? "true" : "false");
  json_kv_num(o, "iterations", (double)cfg->iterations, true);
  json_kv_num(o, "repeats", cfg->repeats, true);
  json_kv_num(o, "min_time_ms", cfg->min_time_ns / 1e6, true);
  json_kv_num(o, "arena_block", (double)cfg->arena_block, true);
  json_kv_num(o, "google_arena_initial_block", (double)cfg->google_arena_block,
              true);
  json_kv_num(o, "stream_bytes", (double)cfg->stream_bytes, true);
  json_kv_str(o, "filter", cfg->filter ? cfg->filter : "", true);
  fprintf(o, "\"legacy_available\": %s}", POSP2P_BENCH_HAVE_LEGACY ? "true" : "false");

  fputs(",\n  \"messages\": [", o);
  for (int k = 0; k < BENCH_MSG_COUNT; k++) {
    const bench_message *m = &g_msgs[k];
    fprintf(o, "%s\n    {", k ? "," : "");
    json_kv_str(o, "name", bench_msg_name(m->kind), true);
    json_kv_str(o, "description", bench_msg_description(m->kind), true);
    json_kv_num(o, "v2_bytes", (double)m->body_len, true);
    json_kv_num(o, "v2_frame_bytes", (double)m->frame_len, true);
    fputs("\"legacy_bytes\": ", o);
    if (m->line != NULL)
      json_num(o, (double)m->line_len);
    else
      fputs("null", o);
    fprintf(o, ", \"google_reencode_identical\": %s, ",
            m->google_identical ? "true" : "false");
    json_kv_num(o, "google_space_used_bytes", (double)m->google_space, false);
    fputc('}', o);
  }
  fputs("\n  ],\n  \"results\": [", o);
  for (unsigned i = 0; i < g_nrows; i++) {
    const row *r = &g_rows[i];
    fprintf(o, "%s\n    {", i ? "," : "");
    json_kv_str(o, "message", r->message, true);
    json_kv_str(o, "wire", r->wire, true);
    json_kv_str(o, "op", r->op, true);
    json_kv_str(o, "impl", r->impl, true);
    json_kv_str(o, "variant", r->variant, true);
    json_kv_str(o, "calls", r->calls, true);
    json_kv_num(o, "bytes", (double)r->bytes, true);
    json_kv_num(o, "iterations", (double)r->iters, true);
    fputs("\"ns_per_msg\": ", o);
    json_stat(o, &r->ns);
    fputs(", \"cpu_ns_per_msg\": ", o);
    json_stat(o, &r->cpu_ns);
    stat3 mb = {mbps(r->bytes, r->ns.med), mbps(r->bytes, r->ns.max),
                mbps(r->bytes, r->ns.min)};
    fputs(", \"mb_per_s\": ", o);
    json_stat(o, &mb);
    fputs(", ", o);
    json_kv_num(o, "allocs_per_msg", r->allocs, true);
    json_kv_num(o, "allocs_bypassing_allocator_per_msg", r->bypass_allocs,
                true);
    json_kv_num(o, "alloc_bytes_per_msg", r->alloc_bytes, true);
    json_kv_num(o, "first_call_allocs", r->first_allocs, false);
    fputc('}', o);
  }
  fputs("\n  ],\n  \"ratios\": [", o);
  bool first = true;
  for (int k = 0; k < BENCH_MSG_COUNT; k++) {
    const char *name = bench_msg_name((bench_msg_kind)k);
    for (unsigned j = 0; j < NRATIOS; j++) {
      const ratio_def *d = &g_ratio_defs[j];
      stat3 st;
      double x = ratio_of3(name, d, &st);
      if (x < 0) continue;
      fprintf(o, "%s\n    {", first ? "" : ",");
      first = false;
      json_kv_str(o, "message", name, true);
      json_kv_str(o, "op", d->op, true);
      json_kv_str(o, "ours", d->ours, true);
      json_kv_str(o, "theirs", d->theirs, true);
      json_kv_num(o, "ours_over_theirs", x, true);
      fputs("\"paired_rounds\": ", o);
      json_stat(o, &st);
      fputc('}', o);
    }
  }
  fputs("\n  ],\n  \"framing\": [", o);
  for (unsigned i = 0; i < g_nsrows; i++) {
    const stream_row *r = &g_srows[i];
    fprintf(o, "%s\n    {", i ? "," : "");
    json_kv_str(o, "stream", r->stream, true);
    json_kv_str(o, "wire", r->wire, true);
    json_kv_str(o, "impl", r->impl, true);
    json_kv_str(o, "variant", r->variant, true);
    json_kv_str(o, "calls", r->calls, true);
    json_kv_num(o, "frames", (double)r->frames, true);
    json_kv_num(o, "bytes", (double)r->bytes, true);
    json_kv_num(o, "passes", (double)r->passes, true);
    fputs("\"frames_per_s\": ", o);
    json_stat(o, &r->fps);
    fputs(", \"ns_per_frame\": ", o);
    json_stat(o, &r->ns_frame);
    fputs(", \"cpu_ns_per_frame\": ", o);
    json_stat(o, &r->cpu_ns_frame);
    fputs(", ", o);
    json_kv_num(o, "mb_per_s",
                mbps(r->bytes, r->ns_frame.med * (double)r->frames), true);
    json_kv_num(o, "allocs_per_frame", r->allocs_per_frame, false);
    fputc('}', o);
  }
  fputs("\n  ],\n  \"streams\": [", o);
  for (unsigned i = 0; i < NSTREAMS; i++) {
    fprintf(o, "%s\n    {", i ? "," : "");
    json_kv_str(o, "name", g_streams[i].name, true);
    json_kv_str(o, "description", g_streams[i].description, false);
    fputc('}', o);
  }
  fputs("\n  ],\n  \"goals\": {\n    \"typical_decode_ns\": {", o);
  json_goal(o, g->typical_decode_ns, "goal_max", GOAL_TYPICAL_DECODE_NS, true);
  fputs("},\n    \"typical_decode_vs_google\": {", o);
  json_goal(o, g->typical_vs_google, "goal_max", 1.0, true);
  fputs("},\n    \"small_frames_per_s\": {", o);
  json_goal(o, g->small_frames_per_s, "goal_min", GOAL_SMALL_FRAMES_PER_S,
            false);
  fputs("}\n  }\n}\n", o);
  if (fclose(o) != 0) {
    fprintf(stderr, "posp2p-bench-codec: error writing %s\n", path);
    return -1;
  }
  return 0;
}

/* ---- Command line -------------------------------------------------------- */

static void usage(FILE *o) {
  fputs(
      "usage: posp2p-bench-codec [options]\n"
      "\n"
      "Encode/decode speed and heap allocations of the posp2p codec (v2 and\n"
      "legacy JSON wires) against Google's C++ protobuf on the same bytes,\n"
      "plus framing + decode frames/s on one core. Prints a table on stdout.\n"
      "\n"
      "  --iterations N    messages per repetition for every measurement\n"
      "                    (default: calibrated to --min-time-ms)\n"
      "  --repeats N       repetitions per measurement, median reported\n"
      "                    (default 7, at least 5)\n"
      "  --min-time-ms MS  calibration target per repetition (default 40)\n"
      "  --arena-block N   posp2p_arena block size in bytes (default 16384)\n"
      "  --stream-kib N    size of each framing stream (default 4096)\n"
      "  --smoke           tiny sizes for CI: checks it runs, numbers are\n"
      "                    meaningless\n"
      "  --json FILE       also write the results as JSON to FILE\n"
      "  --filter TEXT     run only the measurements whose label contains\n"
      "                    TEXT; labels are message/wire/op/impl/variant\n"
      "                    (typical_order/v2/decode/posp2p/arena) and\n"
      "                    stream:name/wire/impl/variant (for profiling)\n"
      "  --help            this text\n"
      "\n"
      "Numbers are only representative from an optimized build without\n"
      "sanitizers (scripts/bench.sh builds one); others are marked.\n",
      o);
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return -1;
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv, config *cfg) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    uint64_t v;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(a, "--smoke") == 0) {
      cfg->smoke = true;
    } else if (i + 1 < argc && strcmp(a, "--json") == 0) {
      cfg->json_path = argv[++i];
    } else if (i + 1 < argc && strcmp(a, "--filter") == 0) {
      cfg->filter = argv[++i];
    } else if (i + 1 < argc && strcmp(a, "--iterations") == 0 &&
               parse_u64(argv[i + 1], &v) == 0 && v > 0) {
      cfg->iterations = v;
      i++;
    } else if (i + 1 < argc && strcmp(a, "--repeats") == 0 &&
               parse_u64(argv[i + 1], &v) == 0 && v >= MIN_REPEATS && v <= 64) {
      cfg->repeats = (unsigned)v;
      i++;
    } else if (i + 1 < argc && strcmp(a, "--min-time-ms") == 0 &&
               parse_u64(argv[i + 1], &v) == 0 && v > 0 && v < 100000) {
      cfg->min_time_ns = (double)v * 1e6;
      i++;
    } else if (i + 1 < argc && strcmp(a, "--arena-block") == 0 &&
               parse_u64(argv[i + 1], &v) == 0 && v >= 256 && v <= (1u << 28)) {
      cfg->arena_block = (size_t)v;
      i++;
    } else if (i + 1 < argc && strcmp(a, "--stream-kib") == 0 &&
               parse_u64(argv[i + 1], &v) == 0 && v >= 1 && v <= (1u << 20)) {
      cfg->stream_bytes = (size_t)v * 1024;
      i++;
    } else {
      fprintf(stderr, "posp2p-bench-codec: bad argument \"%s\" (repeats must "
                      "be 5..64)\n\n", a);
      usage(stderr);
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  config cfg = {0};
  cfg.repeats = 7;
  cfg.min_time_ns = 40e6;
  cfg.arena_block = 16384;
  cfg.google_arena_block = 256 * 1024;
  cfg.stream_bytes = 4u << 20;
  bool stream_set = false;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--stream-kib") == 0) stream_set = true;
  if (parse_args(argc, argv, &cfg) != 0) return 2;
  if (cfg.smoke) {
    if (cfg.iterations == 0) cfg.iterations = 20;
    cfg.repeats = MIN_REPEATS;
    if (!stream_set) cfg.stream_bytes = 16 * 1024;
  }

#if POSP2P_BENCH_HAVE_LEGACY
  json_set_alloc_funcs(jansson_counting_malloc, jansson_counting_free);
#endif
  machine_info mi;
  memset(&mi, 0, sizeof mi);
  machine_describe(&mi);
  if (!representative())
    fprintf(stderr, "posp2p-bench-codec: warning: %s build%s: numbers are "
                    "not representative\n",
            BENCH_OPTIMIZED ? "optimized" : "unoptimized",
            sanitizers()[0] ? " with sanitizers" : "");

  int rv = 1;
  if (prepare_messages() != 0) goto done;
  for (int k = 0; k < BENCH_MSG_COUNT; k++)
    if (run_message(&cfg, &g_msgs[k]) != 0) goto done;
  for (unsigned i = 0; i < NSTREAMS; i++) {
    if (run_stream(&cfg, &g_streams[i], 0) != 0) goto done;
#if POSP2P_BENCH_HAVE_LEGACY
    if (run_stream(&cfg, &g_streams[i], 1) != 0) goto done;
#endif
  }
  read_load(mi.load_end);
  goals g = compute_goals();
  print_table(stdout, &cfg, &mi);
  print_goals(stdout, &g);
  fflush(stdout);
  if (cfg.json_path != NULL && write_json(cfg.json_path, &cfg, &mi, &g) != 0)
    goto done;
  rv = 0;
done:
  free_messages();
  gb_shutdown();
  return rv;
}
