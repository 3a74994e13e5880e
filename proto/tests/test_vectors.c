/* Golden vectors (proto/vectors/INDEX.tsv) through the C codec.
 *
 * For every vector: decode it whole, fed in two pieces split at every byte
 * boundary, and one byte at a time, and check that each feeding gives the
 * same result (the same messages, compared by their protobuf-c packing, or
 * the same error code at the same stream offset) and that the result is the
 * expected one. Then: a v2 frame re-encodes (posp2p_frame_encode) to the
 * same bytes; a legacy line decodes to the v2 vector of the same name and
 * re-encodes (posp2p_legacy_encode) to the same bytes unless INDEX.tsv flags
 * it noroundtrip; discovery datagrams likewise with posp2p_disc_*.
 * A noncanonical v2 frame (legal, but not what a canonical encoder writes)
 * must re-encode to a frame that decodes to the same message. A knowndiff
 * vector (protobuf-c disagrees with Google's protobuf, which gives the
 * expected result) only gets the split checks, and a note on stderr. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posp2p/codec.h"
#include "posp2p/legacy.h"
#include "ptest.h"

#ifndef POSP2P_VECTORS_DIR
#error "POSP2P_VECTORS_DIR must name proto/vectors"
#endif

#define MAX_VECTORS 1024
#define PACKED_MAX (64u * 1024u * 1024u)

/* A failed check naming the vector it concerns. */
#define VFAIL(v, ...)                                              \
  do {                                                             \
    fprintf(stderr, "  %s:%d: %s: ", __FILE__, __LINE__, (v)->path); \
    fprintf(stderr, __VA_ARGS__);                                  \
    fputc('\n', stderr);                                           \
    ptest_failed_checks++;                                         \
  } while (0)

typedef struct {
  char path[256];     /* relative to POSP2P_VECTORS_DIR, e.g. "v2/x.bin" */
  char name[256];     /* file name without directory and extension */
  char expected[64];  /* "ok" or a posp2p_err name */
  bool noroundtrip;  /* legacy line the encoder writes differently */
  bool noncanonical; /* v2 frame a canonical encoder would write differently */
  bool knowndiff;    /* protobuf-c disagrees with Google's protobuf */
  bool is_v2;         /* directory v2/ (else legacy/) */
  bool is_disc;       /* file name starts with disc_ */
} vector;

static vector vectors[MAX_VECTORS];
static int nvectors = -1;

static uint8_t *read_file(const char *rel, size_t *len) {
  char full[512];
  snprintf(full, sizeof(full), "%s/%s", POSP2P_VECTORS_DIR, rel);
  FILE *fp = fopen(full, "rb");
  if (fp == NULL) return NULL;
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (buf == NULL) break;
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, fp);
    if (got == 0) break;
    n += got;
  }
  fclose(fp);
  *len = n;
  return buf;
}

/* Parse INDEX.tsv once: path TAB description TAB expected [TAB flags]. */
static int load_index(void) {
  if (nvectors >= 0) return nvectors;
  nvectors = 0;
  size_t len;
  uint8_t *data = read_file("INDEX.tsv", &len);
  if (data == NULL) {
    PT_FAIL_("cannot read %s/INDEX.tsv", POSP2P_VECTORS_DIR);
    return 0;
  }
  char *text = (char *)data;
  size_t pos = 0;
  while (pos < len) {
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    text[end] = '\0';
    char *line = text + pos;
    pos = end + 1;
    if (line[0] == '#' || line[0] == '\0') continue;
    char *cols[4] = {NULL, NULL, NULL, NULL};
    int nc = 0;
    char *s = line;
    while (nc < 4) {
      cols[nc++] = s;
      char *tab = strchr(s, '\t');
      if (tab == NULL) break;
      *tab = '\0';
      s = tab + 1;
    }
    if (nc < 3) {
      PT_FAIL_("INDEX.tsv row with %d columns: %s", nc, line);
      continue;
    }
    if (nvectors == MAX_VECTORS) {
      PT_FAIL_("more than %d vectors", MAX_VECTORS);
      break;
    }
    vector *v = &vectors[nvectors++];
    snprintf(v->path, sizeof(v->path), "%s", cols[0]);
    snprintf(v->expected, sizeof(v->expected), "%s", cols[2]);
    v->noroundtrip = nc > 3 && strstr(cols[3], "noroundtrip") != NULL;
    v->noncanonical = nc > 3 && strstr(cols[3], "noncanonical") != NULL;
    v->knowndiff = nc > 3 && strstr(cols[3], "knowndiff") != NULL;
    v->is_v2 = strncmp(v->path, "v2/", 3) == 0;
    const char *base = strrchr(v->path, '/');
    base = base ? base + 1 : v->path;
    snprintf(v->name, sizeof(v->name), "%s", base);
    char *dot = strrchr(v->name, '.');
    if (dot) *dot = '\0';
    v->is_disc = strncmp(v->name, "disc_", 5) == 0;
  }
  free(data);
  return nvectors;
}

static bool expect_ok(const vector *v) { return strcmp(v->expected, "ok") == 0; }

/* ---- Stream decoding under a feeding schedule ---------------------------- */

static const posp2p_legacy_opts legacy_opts = {0};

typedef struct {
  int code;          /* 0 or the first error */
  uint64_t offset;   /* stream offset of the error */
  char message[POSP2P_ERROR_MSG_MAX];
  size_t nmsgs;
  posp2p_buf packed; /* concatenated protobuf-c packings of the messages */
} result;

static void result_init(result *r) {
  memset(r, 0, sizeof(*r));
  posp2p_buf_init(&r->packed, PACKED_MAX, NULL);
}

static void result_free(result *r) { posp2p_buf_free(&r->packed); }

static void result_fail(result *r, const posp2p_error *err, uint64_t base) {
  r->code = err->code;
  r->offset = base + err->offset;
  snprintf(r->message, sizeof(r->message), "%s", err->message);
}

/* Decoding is a pure function of the frame body or line bytes, so the
 * result for bytes already seen is reused: with every split point of a
 * 30 KB line the tests would otherwise spend minutes re-parsing identical
 * input. What the schedules exercise is the framer and the line splitter,
 * which must hand over identical bytes at identical offsets. */
typedef struct {
  bool valid;
  bool legacy;
  posp2p_buf key;
  int code;
  uint64_t offset; /* relative to the unit's first byte */
  char message[POSP2P_ERROR_MSG_MAX];
  posp2p_buf packed;
} decode_cache;

static decode_cache cache;

static void cache_reset(void) {
  if (cache.key.max == 0) {
    posp2p_buf_init(&cache.key, PACKED_MAX, NULL);
    posp2p_buf_init(&cache.packed, PACKED_MAX, NULL);
  }
  cache.valid = false;
}

/* Decode one frame body (legacy: one line) whose first byte is at stream
 * offset base, and add the outcome to r. */
static void decode_unit(bool legacy, const uint8_t *p, size_t n, uint64_t base,
                        result *r) {
  if (cache.key.max == 0) cache_reset();
  if (!(cache.valid && cache.legacy == legacy && cache.key.len == n &&
        (n == 0 || memcmp(cache.key.data, p, n) == 0))) {
    posp2p_envelope *e = NULL;
    posp2p_error err;
    memset(&err, 0, sizeof(err));
    int rv = legacy ? posp2p_legacy_decode(p, n, &legacy_opts, NULL, &e, &err)
                    : posp2p_envelope_decode(p, n, NULL, &e, &err);
    cache.valid = false;
    cache.legacy = legacy;
    cache.key.len = 0;
    cache.packed.len = 0;
    cache.code = rv;
    cache.offset = err.offset;
    snprintf(cache.message, sizeof(cache.message), "%s", rv ? err.message : "");
    if (rv == 0) {
      size_t sz = protobuf_c_message_get_packed_size(&e->base);
      if (posp2p_buf_reserve(&cache.packed, sz) == 0)
        cache.packed.len = protobuf_c_message_pack(&e->base, cache.packed.data);
      else
        cache.code = POSP2P_ERR_NOMEM;
      posp2p_envelope_free(e, NULL);
    }
    if (posp2p_buf_append(&cache.key, p, n) == 0) cache.valid = true;
  }
  if (cache.code != 0) {
    r->code = cache.code;
    r->offset = base + cache.offset;
    snprintf(r->message, sizeof(r->message), "%s", cache.message);
    return;
  }
  if (posp2p_buf_append(&r->packed, cache.packed.data, cache.packed.len) != 0) {
    r->code = POSP2P_ERR_NOMEM;
    return;
  }
  r->nmsgs++;
}

/* Feeding schedule: bytewise, or two pieces [0, split) and [split, len). */
typedef struct {
  bool bytewise;
  size_t split;
} schedule;

static size_t piece_end(const schedule *s, size_t start, size_t len) {
  if (s->bytewise) return start + 1 < len ? start + 1 : len;
  return start < s->split ? s->split : len;
}

static void decode_v2_stream(const uint8_t *d, size_t len, const schedule *s,
                             result *r) {
  posp2p_framer fr;
  posp2p_error err;
  memset(&err, 0, sizeof(err));
  posp2p_framer_init(&fr, POSP2P_MAX_FRAME_DEFAULT, NULL);
  size_t start = 0;
  bool first = true;
  /* Every piece is fed, including an empty first piece when split == 0. */
  while (r->code == 0 && (start < len || first)) {
    size_t end = piece_end(s, start, len);
    first = false;
    size_t pos = start;
    for (;;) {
      size_t used = 0;
      posp2p_frame frm;
      int rv = posp2p_framer_next(&fr, d + pos, end - pos, &used, &frm, &err);
      pos += used;
      if (rv < 0) {
        result_fail(r, &err, 0);
        break;
      }
      if (rv == 0) {
        if (pos != end) {
          r->code = POSP2P_ERR_STATE;
          snprintf(r->message, sizeof(r->message),
                   "framer returned 0 with %zu bytes unconsumed", end - pos);
        }
        break;
      }
      uint8_t hdr[5];
      uint64_t body_off =
          frm.offset + posp2p_varint_encode((uint32_t)frm.len, hdr);
      decode_unit(false, frm.data, frm.len, body_off, r);
      if (r->code != 0) break;
    }
    start = end;
  }
  if (r->code == 0 && posp2p_framer_finish(&fr, &err) < 0)
    result_fail(r, &err, 0);
  posp2p_framer_free(&fr);
}

static void decode_legacy_stream(const uint8_t *d, size_t len,
                                 const schedule *s, result *r) {
  posp2p_ndjson nd;
  posp2p_error err;
  memset(&err, 0, sizeof(err));
  posp2p_ndjson_init(&nd, POSP2P_MAX_FRAME_DEFAULT, NULL);
  size_t start = 0;
  bool first = true;
  while (r->code == 0 && (start < len || first)) {
    size_t end = piece_end(s, start, len);
    first = false;
    size_t pos = start;
    for (;;) {
      size_t used = 0;
      posp2p_frame line;
      int rv = posp2p_ndjson_next(&nd, d + pos, end - pos, &used, &line, &err);
      pos += used;
      if (rv < 0) {
        result_fail(r, &err, 0);
        break;
      }
      if (rv == 0) {
        if (pos != end) {
          r->code = POSP2P_ERR_STATE;
          snprintf(r->message, sizeof(r->message),
                   "splitter returned 0 with %zu bytes unconsumed", end - pos);
        }
        break;
      }
      decode_unit(true, line.data, line.len, line.offset, r);
      if (r->code != 0) break;
    }
    start = end;
  }
  if (r->code == 0 && posp2p_ndjson_finish(&nd, &err) < 0)
    result_fail(r, &err, 0);
  posp2p_ndjson_free(&nd);
}

typedef void (*stream_fn)(const uint8_t *, size_t, const schedule *, result *);

static bool same_result(const result *a, const result *b) {
  return a->code == b->code && a->offset == b->offset &&
         a->nmsgs == b->nmsgs && a->packed.len == b->packed.len &&
         (a->packed.len == 0 ||
          memcmp(a->packed.data, b->packed.data, a->packed.len) == 0);
}

/* Decode whole into *whole, then check every other schedule against it.
 * Returns the number of schedules that disagreed. */
static int check_schedules(const vector *v, const uint8_t *d, size_t len,
                           stream_fn fn, result *whole) {
  schedule s = {false, len};
  int bad = 0;
  cache_reset();
  fn(d, len, &s, whole);
  for (size_t split = 0; split <= len + 1; split++) {
    result r;
    result_init(&r);
    schedule t = {split > len, split};  /* split == len + 1: bytewise */
    fn(d, len, &t, &r);
    if (!same_result(&r, whole)) {
      if (bad++ < 3)
        VFAIL(v, "%s: %s (offset %llu, %zu msgs) != whole: %s (offset %llu, "
              "%zu msgs)",
              t.bytewise ? "byte at a time" : "split", posp2p_err_name(r.code),
              (unsigned long long)r.offset, r.nmsgs,
              posp2p_err_name(whole->code), (unsigned long long)whole->offset,
              whole->nmsgs);
      if (!t.bytewise && bad <= 3)
        fprintf(stderr, "    (split at byte %zu of %zu)\n", split, len);
    }
    result_free(&r);
  }
  return bad;
}

/* The expected outcome of a whole decode. */
static void check_expected(const vector *v, const result *whole) {
  if (expect_ok(v)) {
    if (whole->code != 0)
      VFAIL(v, "decode failed: %s at offset %llu: %s",
            posp2p_err_name(whole->code), (unsigned long long)whole->offset,
            whole->message);
    else if (whole->nmsgs != 1)
      VFAIL(v, "%zu messages, want 1", whole->nmsgs);
  } else if (strcmp(posp2p_err_name(whole->code), v->expected) != 0) {
    VFAIL(v, "got %s (%s), want %s",
          whole->code ? posp2p_err_name(whole->code) : "ok", whole->message,
          v->expected);
  }
}

/* The single frame body of a v2 vector file. */
static bool v2_body(const uint8_t *d, size_t len, const uint8_t **body,
                    size_t *blen) {
  uint64_t v = 0;
  for (size_t i = 0; i < len && i < 5; i++) {
    v |= (uint64_t)(d[i] & 0x7F) << (7 * i);
    if ((d[i] & 0x80) == 0) {
      if (i + 1 + v != len) return false;
      *body = d + i + 1;
      *blen = (size_t)v;
      return true;
    }
  }
  return false;
}

/* Decode v2/<name>.bin and return its packing in *out (for comparing with a
 * legacy decode). Returns false if there is no such vector or it fails. */
static bool twin_packing(const vector *v, posp2p_buf *out) {
  char rel[300];
  snprintf(rel, sizeof(rel), "v2/%s.bin", v->name);
  size_t len;
  uint8_t *d = read_file(rel, &len);
  if (d == NULL) {
    VFAIL(v, "no twin %s", rel);
    return false;
  }
  bool ok = false;
  posp2p_error err;
  if (v->is_disc) {
    /* The twin of a legacy datagram may not be a valid v2 datagram (legacy
     * requests carry no device id), so unpack without validation. */
    Posp2p__V2__DiscoveryDatagram *m =
        len >= POSP2P_DISC_MAGIC_LEN
            ? posp2p__v2__discovery_datagram__unpack(
                  NULL, len - POSP2P_DISC_MAGIC_LEN, d + POSP2P_DISC_MAGIC_LEN)
            : NULL;
    if (m != NULL) {
      size_t n = protobuf_c_message_get_packed_size(&m->base);
      if (posp2p_buf_reserve(out, n) == 0) {
        out->len = protobuf_c_message_pack(&m->base, out->data);
        ok = true;
      }
      posp2p__v2__discovery_datagram__free_unpacked(m, NULL);
    }
  } else {
    const uint8_t *body;
    size_t blen;
    posp2p_envelope *e = NULL;
    if (v2_body(d, len, &body, &blen) &&
        posp2p_envelope_decode(body, blen, NULL, &e, &err) == 0) {
      size_t n = protobuf_c_message_get_packed_size(&e->base);
      if (posp2p_buf_reserve(out, n) == 0) {
        out->len = protobuf_c_message_pack(&e->base, out->data);
        ok = true;
      }
      posp2p_envelope_free(e, NULL);
    }
  }
  if (!ok) VFAIL(v, "twin %s does not decode", rel);
  free(d);
  return ok;
}

static void check_twin(const vector *v, const uint8_t *packed, size_t len) {
  posp2p_buf twin;
  posp2p_buf_init(&twin, PACKED_MAX, NULL);
  if (twin_packing(v, &twin) &&
      (twin.len != len || memcmp(twin.data, packed, len) != 0))
    VFAIL(v, "legacy decode (%zu packed bytes) differs from v2/%s.bin (%zu)",
          len, v->name, twin.len);
  posp2p_buf_free(&twin);
}

static int count_vectors(bool v2, bool disc) {
  int n = 0;
  for (int i = 0; i < load_index(); i++)
    if (vectors[i].is_v2 == v2 && vectors[i].is_disc == disc) n++;
  return n;
}

/* ---- Tests ---------------------------------------------------------------- */

/* True if name is the posp2p_err_name of some error code. */
static bool is_err_name(const char *name) {
  for (int code = -1; code >= -300; code--)
    if (strcmp(posp2p_err_name(code), name) == 0) return true;
  return false;
}

PTEST(index_is_readable) {
  PT_CHECK(load_index() >= 50);
  PT_CHECK(count_vectors(true, false) >= 20);
  PT_CHECK(count_vectors(false, false) >= 20);
  PT_CHECK(count_vectors(true, true) >= 3);
  PT_CHECK(count_vectors(false, true) >= 3);
  for (int i = 0; i < load_index(); i++) {
    const vector *v = &vectors[i];
    size_t len;
    uint8_t *d = read_file(v->path, &len);
    if (d == NULL) VFAIL(v, "cannot read the file");
    free(d);
    if (!expect_ok(v) && !is_err_name(v->expected))
      VFAIL(v, "expected result %s is not a posp2p_err name", v->expected);
  }
}

PTEST(v2_frames) {
  int n = 0;
  for (int i = 0; i < load_index(); i++) {
    const vector *v = &vectors[i];
    if (!v->is_v2 || v->is_disc) continue;
    n++;
    size_t len;
    uint8_t *d = read_file(v->path, &len);
    if (d == NULL) continue;
    result whole;
    result_init(&whole);
    check_schedules(v, d, len, decode_v2_stream, &whole);
    if (v->knowndiff) {
      /* Expected is Google's result, which protobuf-c does not give yet;
       * the split checks above still apply. Say so, loudly. */
      fprintf(stderr, "  note: %s: known protobuf-c disagreement, C gives "
              "%s\n", v->path, whole.code ? posp2p_err_name(whole.code) : "ok");
      result_free(&whole);
      free(d);
      continue;
    }
    check_expected(v, &whole);
    if (expect_ok(v) && whole.code == 0) {
      /* Re-encode: same bytes as the vector. */
      const uint8_t *body;
      size_t blen;
      posp2p_envelope *e = NULL;
      posp2p_error err;
      if (!v2_body(d, len, &body, &blen) ||
          posp2p_envelope_decode(body, blen, NULL, &e, &err) != 0) {
        VFAIL(v, "whole-buffer decode failed");
      } else {
        posp2p_buf out;
        posp2p_buf_init(&out, PACKED_MAX, NULL);
        int rv = posp2p_frame_encode(e, POSP2P_MAX_FRAME_DEFAULT, &out, &err);
        if (rv != 0) {
          VFAIL(v, "posp2p_frame_encode: %s", posp2p_err_name(rv));
        } else if (v->noncanonical) {
          /* The canonical re-encoding decodes to the same message. */
          result again;
          result_init(&again);
          schedule s = {false, out.len};
          decode_v2_stream(out.data, out.len, &s, &again);
          if (!same_result(&again, &whole))
            VFAIL(v, "re-encoded frame decodes differently");
          result_free(&again);
          PT_EQ_INT(posp2p_frame_size(e), out.len);
        } else {
          if (out.len != len || memcmp(out.data, d, len) != 0)
            VFAIL(v, "re-encoded frame (%zu bytes) differs from the vector "
                  "(%zu bytes)", out.len, len);
          PT_EQ_INT(posp2p_frame_size(e), len);
        }
        posp2p_buf_free(&out);
        posp2p_envelope_free(e, NULL);
      }
    }
    result_free(&whole);
    free(d);
  }
  PT_CHECK(n >= 20);
}

PTEST(legacy_lines) {
  int n = 0;
  for (int i = 0; i < load_index(); i++) {
    const vector *v = &vectors[i];
    if (v->is_v2 || v->is_disc) continue;
    n++;
    size_t len;
    uint8_t *d = read_file(v->path, &len);
    if (d == NULL) continue;
    result whole;
    result_init(&whole);
    check_schedules(v, d, len, decode_legacy_stream, &whole);
    check_expected(v, &whole);
    if (expect_ok(v) && whole.code == 0 && whole.nmsgs == 1) {
      check_twin(v, whole.packed.data, whole.packed.len);
      /* legacy -> v2 -> legacy is byte-exact for what Dart writes. */
      posp2p_envelope *e = posp2p__v2__envelope__unpack(NULL, whole.packed.len,
                                                         whole.packed.data);
      if (e == NULL) {
        VFAIL(v, "cannot unpack the decoded envelope");
      } else if (!v->noroundtrip) {
        posp2p_buf out;
        posp2p_error err;
        posp2p_buf_init(&out, PACKED_MAX, NULL);
        int rv = posp2p_legacy_encode(e, &legacy_opts, &out, &err);
        if (rv != 0)
          VFAIL(v, "posp2p_legacy_encode: %s: %s", posp2p_err_name(rv),
                err.message);
        else if (out.len != len || memcmp(out.data, d, len) != 0)
          VFAIL(v, "re-encoded line differs:\n    got  %.*s\n    want %.*s",
                (int)out.len, (const char *)out.data, (int)len,
                (const char *)d);
        posp2p_buf_free(&out);
      }
      posp2p__v2__envelope__free_unpacked(e, NULL);
    }
    result_free(&whole);
    free(d);
  }
  PT_CHECK(n >= 20);
}

PTEST(discovery_datagrams) {
  int n = 0;
  for (int i = 0; i < load_index(); i++) {
    const vector *v = &vectors[i];
    if (!v->is_disc) continue;
    n++;
    size_t len;
    uint8_t *d = read_file(v->path, &len);
    if (d == NULL) continue;
    posp2p_disc *m = NULL;
    posp2p_wire wire = POSP2P_WIRE_UNKNOWN;
    posp2p_error err;
    memset(&err, 0, sizeof(err));
    int rv = posp2p_disc_decode(d, len, NULL, &m, &wire, &err);
    if (!expect_ok(v)) {
      if (rv == 0 || strcmp(posp2p_err_name(rv), v->expected) != 0)
        VFAIL(v, "got %s (%s), want %s", rv ? posp2p_err_name(rv) : "ok",
              err.message, v->expected);
    } else if (rv != 0) {
      VFAIL(v, "decode failed: %s at offset %llu: %s", posp2p_err_name(rv),
            (unsigned long long)err.offset, err.message);
    } else {
      posp2p_wire want = v->is_v2 ? POSP2P_WIRE_V2 : POSP2P_WIRE_LEGACY;
      if (wire != want) VFAIL(v, "detected wire %d, want %d", wire, want);
      posp2p_buf out;
      posp2p_buf_init(&out, PACKED_MAX, NULL);
      rv = posp2p_disc_encode(m, want, &out, &err);
      if (rv != 0)
        VFAIL(v, "posp2p_disc_encode: %s: %s", posp2p_err_name(rv),
              err.message);
      else if (out.len != len || memcmp(out.data, d, len) != 0)
        VFAIL(v, "re-encoded datagram (%zu bytes) differs (%zu bytes)",
              out.len, len);
      if (!v->is_v2) {
        size_t pn = protobuf_c_message_get_packed_size(&m->base);
        if (posp2p_buf_reserve(&out, pn) == 0) {
          out.len = protobuf_c_message_pack(&m->base, out.data);
          check_twin(v, out.data, out.len);
        }
      }
      posp2p_buf_free(&out);
      posp2p_disc_free(m, NULL);
    }
    free(d);
  }
  PT_CHECK(n >= 6);
}

/* The checks above can fail: a corrupted copy of a vector must not pass. */
PTEST(checks_can_fail) {
  const char *rel = "v2/order_forward_typical.bin";
  size_t len;
  uint8_t *d = read_file(rel, &len);
  PT_CHECK(d != NULL);
  if (d == NULL) return;
  result whole, cut;
  result_init(&whole);
  result_init(&cut);
  schedule s = {false, len};
  decode_v2_stream(d, len, &s, &whole);
  PT_EQ_INT(whole.code, 0);
  PT_EQ_INT(whole.nmsgs, 1);
  schedule short_s = {false, len - 1};
  decode_v2_stream(d, len - 1, &short_s, &cut);
  PT_EQ_INT(cut.code, POSP2P_ERR_TRUNCATED);
  PT_CHECK(!same_result(&whole, &cut));
  result_free(&cut);
  result_init(&cut);
  d[len - 1] ^= 0x01; /* currency_exponent 2 -> 3: still decodes */
  decode_v2_stream(d, len, &s, &cut);
  PT_EQ_INT(cut.code, 0);
  PT_CHECK(!same_result(&whole, &cut));
  result_free(&cut);
  result_free(&whole);
  free(d);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
