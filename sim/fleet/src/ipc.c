#include "ipc.h"

#include <stdlib.h>
#include <string.h>

enum { T_RECS = 1, T_VIOL, T_STATS, T_LOG, T_DONE, T_CMD };

#define MAX_FRAME (64u * 1024u * 1024u)

typedef struct {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} wbuf;

static void write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req->data);
}

static void pipe_write(uv_pipe_t *p, uint8_t type, const void *a, size_t alen, const void *b,
                       size_t blen) {
  if (uv_is_closing((uv_handle_t *)p)) return;
  size_t n = 5 + alen + blen;
  wbuf *wb = malloc(sizeof(*wb) + n);
  if (wb == NULL) return;
  uint32_t len = (uint32_t)(1 + alen + blen);
  memcpy(wb->data, &len, 4);
  wb->data[4] = type;
  if (alen) memcpy(wb->data + 5, a, alen);
  if (blen) memcpy(wb->data + 5 + alen, b, blen);
  wb->len = n;
  wb->req.data = wb;
  uv_buf_t buf = uv_buf_init((char *)wb->data, (unsigned)n);
  if (uv_write(&wb->req, (uv_stream_t *)p, &buf, 1, write_cb) < 0) free(wb);
}

/* A growable byte buffer for incoming frames. */
typedef struct {
  uint8_t *d;
  size_t len, cap;
} rbuf;

static int rbuf_add(rbuf *r, const void *d, size_t n) {
  if (r->len + n > r->cap) {
    size_t nc = r->cap ? r->cap : 65536;
    while (nc < r->len + n) nc *= 2;
    uint8_t *nd = realloc(r->d, nc);
    if (nd == NULL) return -1;
    r->d = nd;
    r->cap = nc;
  }
  memcpy(r->d + r->len, d, n);
  r->len += n;
  return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  size_t n = suggested < 65536 ? 65536 : suggested;
  buf->base = malloc(n);
  buf->len = buf->base ? n : 0;
}

/* ---- Worker side ----------------------------------------------------------------- */

struct fl_ipc_w {
  uv_pipe_t pipe;
  void (*on_cmd)(int cmd, void *ud);
  void *ud;
  rbuf in;
  void (*on_closed)(void *ud);
  uv_shutdown_t sreq;
  bool closing;
};

static void w_records(void *ud, const fl_rec *r, size_t n) {
  fl_ipc_w *w = ud;
  pipe_write(&w->pipe, T_RECS, r, n * sizeof(*r), NULL, 0);
}

static void w_violation(void *ud, int kind, uint32_t dev, uint32_t peer, uint64_t t_ms,
                        const char *text) {
  fl_ipc_w *w = ud;
  struct {
    int32_t kind;
    uint32_t dev, peer;
    uint64_t t;
  } h = {kind, dev, peer, t_ms};
  pipe_write(&w->pipe, T_VIOL, &h, sizeof(h), text, strlen(text));
}

static void w_stats(void *ud, const fl_wstats *s) {
  fl_ipc_w *w = ud;
  /* Header (worker, time, counters, gauges) then each histogram sparse. */
  size_t cap = sizeof(int32_t) + 8 + sizeof(s->c) + sizeof(s->g);
  for (int i = 0; i < FL_NHISTS; i++) {
    size_t nz = 0;
    fl_hist_sparse(&s->h[i], NULL, NULL, 0, &nz);
    cap += 5 * 8 + nz * 12;
  }
  uint8_t *b = malloc(cap);
  if (b == NULL) return;
  size_t o = 0;
  int32_t wk = s->worker;
  memcpy(b + o, &wk, 4);
  o += 4;
  memcpy(b + o, &s->t_ms, 8);
  o += 8;
  memcpy(b + o, s->c, sizeof(s->c));
  o += sizeof(s->c);
  memcpy(b + o, s->g, sizeof(s->g));
  o += sizeof(s->g);
  for (int i = 0; i < FL_NHISTS; i++) {
    const fl_hist *h = &s->h[i];
    uint64_t hdr[5] = {h->count, h->min, h->max, h->sum, 0};
    size_t nz = 0;
    for (size_t k = 0; k < FL_HIST_NBUCKETS; k++) nz += h->counts[k] != 0;
    hdr[4] = nz;
    memcpy(b + o, hdr, sizeof(hdr));
    o += sizeof(hdr);
    for (size_t k = 0; k < FL_HIST_NBUCKETS; k++) {
      if (h->counts[k] == 0) continue;
      uint32_t idx = (uint32_t)k;
      memcpy(b + o, &idx, 4);
      memcpy(b + o + 4, &h->counts[k], 8);
      o += 12;
    }
  }
  pipe_write(&w->pipe, T_STATS, b, o, NULL, 0);
  free(b);
}

static void w_log(void *ud, int level, const char *text) {
  fl_ipc_w *w = ud;
  int32_t lv = level;
  pipe_write(&w->pipe, T_LOG, &lv, 4, text, strlen(text));
}

static void w_done(void *ud, int status) {
  fl_ipc_w *w = ud;
  int32_t st = status;
  pipe_write(&w->pipe, T_DONE, &st, 4, NULL, 0);
}

static void w_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fl_ipc_w *w = s->data;
  if (nread > 0) {
    if (rbuf_add(&w->in, buf->base, (size_t)nread) == 0) {
      size_t o = 0;
      while (w->in.len - o >= 5) {
        uint32_t len;
        memcpy(&len, w->in.d + o, 4);
        if (len == 0 || len > 1024) {
          o = w->in.len;
          break;
        }
        if (w->in.len - o < 4 + (size_t)len) break;
        uint8_t type = w->in.d[o + 4];
        if (type == T_CMD && len >= 2 && w->on_cmd) w->on_cmd(w->in.d[o + 5], w->ud);
        o += 4 + len;
      }
      memmove(w->in.d, w->in.d + o, w->in.len - o);
      w->in.len -= o;
    }
  } else if (nread < 0) {
    /* The parent went away: abort. */
    uv_read_stop(s);
    if (w->on_cmd) w->on_cmd(FL_CMD_ABORT, w->ud);
  }
  free(buf->base);
}

fl_ipc_w *fl_ipc_w_new(uv_loop_t *loop, int fd, void (*on_cmd)(int cmd, void *ud), void *ud) {
  fl_ipc_w *w = calloc(1, sizeof(*w));
  if (w == NULL) return NULL;
  w->on_cmd = on_cmd;
  w->ud = ud;
  if (uv_pipe_init(loop, &w->pipe, 0) < 0 || uv_pipe_open(&w->pipe, fd) < 0) {
    free(w);
    return NULL;
  }
  w->pipe.data = w;
  uv_read_start((uv_stream_t *)&w->pipe, alloc_cb, w_read);
  return w;
}

fl_sink fl_ipc_w_sink(fl_ipc_w *w) {
  fl_sink s = {w_records, w_violation, w_stats, w_log, w_done, w};
  return s;
}

static void w_close_cb(uv_handle_t *h) {
  fl_ipc_w *w = h->data;
  if (w->on_closed) w->on_closed(w->ud);
}

static void w_shutdown_cb(uv_shutdown_t *req, int status) {
  fl_ipc_w *w = req->data;
  (void)status;
  uv_close((uv_handle_t *)&w->pipe, w_close_cb);
}

void fl_ipc_w_close(fl_ipc_w *w, void (*on_closed)(void *ud)) {
  if (w->closing) return;
  w->closing = true;
  w->on_closed = on_closed;
  uv_read_stop((uv_stream_t *)&w->pipe);
  w->sreq.data = w;
  if (uv_shutdown(&w->sreq, (uv_stream_t *)&w->pipe, w_shutdown_cb) < 0)
    uv_close((uv_handle_t *)&w->pipe, w_close_cb);
}

void fl_ipc_w_free(fl_ipc_w *w) {
  if (w == NULL) return;
  free(w->in.d);
  free(w);
}

/* ---- Parent side ------------------------------------------------------------------- */

struct fl_ipc_r {
  uv_pipe_t pipe;
  fl_sink sink;
  void (*on_eof)(fl_ipc_r *r, void *ud);
  void *ud;
  rbuf in;
  bool closed, eof;
};

static void decode_stats(fl_ipc_r *r, const uint8_t *p, size_t n) {
  fl_wstats *s = malloc(sizeof(*s));
  if (s == NULL) return;
  memset(s, 0, sizeof(*s));
  size_t o = 0;
  size_t head = 4 + 8 + sizeof(s->c) + sizeof(s->g);
  if (n < head) goto out;
  int32_t wk;
  memcpy(&wk, p, 4);
  s->worker = wk;
  memcpy(&s->t_ms, p + 4, 8);
  memcpy(s->c, p + 12, sizeof(s->c));
  memcpy(s->g, p + 12 + sizeof(s->c), sizeof(s->g));
  o = head;
  for (int i = 0; i < FL_NHISTS; i++) {
    fl_hist_init(&s->h[i]);
    uint64_t hdr[5];
    if (n - o < sizeof(hdr)) goto out;
    memcpy(hdr, p + o, sizeof(hdr));
    o += sizeof(hdr);
    if (hdr[4] > FL_HIST_NBUCKETS || (n - o) / 12 < hdr[4]) goto out;
    fl_hist *h = &s->h[i];
    for (uint64_t k = 0; k < hdr[4]; k++) {
      uint32_t idx;
      uint64_t cnt;
      memcpy(&idx, p + o, 4);
      memcpy(&cnt, p + o + 4, 8);
      o += 12;
      if (idx < FL_HIST_NBUCKETS) h->counts[idx] += cnt;
    }
    h->count = hdr[0];
    h->min = hdr[1];
    h->max = hdr[2];
    h->sum = hdr[3];
  }
  if (r->sink.stats) r->sink.stats(r->sink.ud, s);
out:
  free(s);
}

static void dispatch(fl_ipc_r *r, uint8_t type, const uint8_t *p, size_t n) {
  const fl_sink *k = &r->sink;
  switch (type) {
  case T_RECS:
    if (k->records && n % sizeof(fl_rec) == 0 && n > 0) {
      fl_rec *recs = malloc(n);
      if (recs != NULL) {
        memcpy(recs, p, n);
        k->records(k->ud, recs, n / sizeof(fl_rec));
        free(recs);
      }
    }
    break;
  case T_VIOL: {
    struct {
      int32_t kind;
      uint32_t dev, peer;
      uint64_t t;
    } h;
    if (n < sizeof(h) || !k->violation) break;
    memcpy(&h, p, sizeof(h));
    size_t tl = n - sizeof(h);
    char *text = malloc(tl + 1);
    if (text == NULL) break;
    memcpy(text, p + sizeof(h), tl);
    text[tl] = '\0';
    k->violation(k->ud, h.kind, h.dev, h.peer, h.t, text);
    free(text);
    break;
  }
  case T_STATS:
    decode_stats(r, p, n);
    break;
  case T_LOG: {
    if (n < 4 || !k->log) break;
    int32_t lv;
    memcpy(&lv, p, 4);
    char *text = malloc(n - 4 + 1);
    if (text == NULL) break;
    memcpy(text, p + 4, n - 4);
    text[n - 4] = '\0';
    k->log(k->ud, lv, text);
    free(text);
    break;
  }
  case T_DONE: {
    if (n < 4 || !k->done) break;
    int32_t st;
    memcpy(&st, p, 4);
    k->done(k->ud, st);
    break;
  }
  default:
    break;
  }
}

static void r_eof(fl_ipc_r *r) {
  if (r->eof) return;
  r->eof = true;
  if (r->on_eof) r->on_eof(r, r->ud);
}

static void r_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  fl_ipc_r *r = s->data;
  if (nread > 0 && rbuf_add(&r->in, buf->base, (size_t)nread) == 0) {
    size_t o = 0;
    while (r->in.len - o >= 5) {
      uint32_t len;
      memcpy(&len, r->in.d + o, 4);
      if (len == 0 || len > MAX_FRAME) {
        o = r->in.len; /* corrupt stream: drop it */
        break;
      }
      if (r->in.len - o < 4 + (size_t)len) break;
      dispatch(r, r->in.d[o + 4], r->in.d + o + 5, len - 1);
      o += 4 + len;
    }
    memmove(r->in.d, r->in.d + o, r->in.len - o);
    r->in.len -= o;
  } else if (nread < 0) {
    uv_read_stop(s);
    r_eof(r);
  }
  free(buf->base);
}

fl_ipc_r *fl_ipc_r_new(uv_loop_t *loop, int fd, const fl_sink *sink,
                       void (*on_eof)(fl_ipc_r *r, void *ud), void *ud) {
  fl_ipc_r *r = calloc(1, sizeof(*r));
  if (r == NULL) return NULL;
  r->sink = *sink;
  r->on_eof = on_eof;
  r->ud = ud;
  if (uv_pipe_init(loop, &r->pipe, 0) < 0 || uv_pipe_open(&r->pipe, fd) < 0) {
    free(r);
    return NULL;
  }
  r->pipe.data = r;
  uv_read_start((uv_stream_t *)&r->pipe, alloc_cb, r_read);
  return r;
}

void fl_ipc_r_send_cmd(fl_ipc_r *r, int cmd) {
  if (r->closed) return;
  uint8_t c = (uint8_t)cmd;
  pipe_write(&r->pipe, T_CMD, &c, 1, NULL, 0);
}

static void r_close_cb(uv_handle_t *h) { (void)h; }

void fl_ipc_r_close(fl_ipc_r *r) {
  if (r->closed) return;
  r->closed = true;
  uv_close((uv_handle_t *)&r->pipe, r_close_cb);
}

void fl_ipc_r_free(fl_ipc_r *r) {
  if (r == NULL) return;
  free(r->in.d);
  free(r);
}
