/* Fuzz target: the legacy NDJSON wire (SPEC.md LEGACY-*): the line
 * splitter and the JSON <-> Envelope conversion.
 *
 * Input: one selector byte (fuzz_common.h: chunking mode; bit 7 set = a
 * 4096-byte line cap and a UTC offset of +05:30, else the default 1 MiB cap
 * and offset 0) followed by the bytes of a legacy TCP stream.
 *
 * Invariants:
 *  - the chunked run gives exactly the lines of the whole-buffer run
 *    (offset, length, bytes) and then the same outcome (error code and
 *    offset, or posp2p_ndjson_finish result): LEGACY-1, lines split at any
 *    byte, including inside a UTF-8 character or between '\r' and '\n';
 *  - lines are non-empty, at most the cap, contain no '\n', and in the
 *    whole-buffer run point into the input (zero copy);
 *  - each of the first CONVERT_LINES lines goes through
 *    posp2p_legacy_decode; an accepted message
 *    validates, posp2p_legacy_encode succeeds and writes exactly one line,
 *    that line decodes to a message that packs to the same protobuf bytes
 *    (one exception: "priority":null, absent on v2, comes back as 5; see
 *    fuzz_same_envelope_legacy), and encoding that message again gives the
 *    same line byte for byte (legacy -> v2 -> legacy is exact for what the
 *    encoder writes);
 *  - for the first line: decoding and encoding it again with one
 *    allocation failing fails with POSP2P_ERR_NOMEM, without a message,
 *    output or leak. */
#include "fuzz_common.h"
#include "posp2p/legacy.h"

#define SMALL_CAP POSP2P_MAX_FRAME_MIN
#define SMALL_CAP_OFFSET_MIN 330 /* +05:30: a non-whole-hour zone */
/* Lines per input that get the full conversion round trip (four JSON
 * conversions each). Inputs of dozens of lines would otherwise cost
 * milliseconds each; more lines add nothing a new input cannot, while the
 * splitter still sees every line. */
#define CONVERT_LINES 2

typedef struct {
  uint64_t offset;
  size_t len;
  const uint8_t *data;
} ref_line;

typedef struct {
  size_t nlines;
  int rv;
  uint64_t err_offset;
  int finish;
} outcome;

static void check_line(const posp2p_frame *ln, uint32_t cap) {
  FUZZ_CHECK(ln->len > 0 && ln->len <= cap);
  FUZZ_CHECK(memchr(ln->data, '\n', ln->len) == NULL);
}

/* Decode and encode again with one allocation failing (fuzz_common.h):
 * both must fail with POSP2P_ERR_NOMEM and leave nothing behind. jansson's
 * own allocations are not routed through the allocator, so only the
 * codec's are failed. */
static void fail_allocations(const uint8_t *line, size_t len,
                             const posp2p_legacy_opts *opts,
                             const posp2p_envelope *e, size_t decode_allocs) {
  posp2p_error err;
  fuzz_alloc failing;
  if (decode_allocs > 0) {
    posp2p_envelope *ef = NULL;
    fuzz_alloc_init(&failing, fuzz_fail_point(line, len, decode_allocs));
    FUZZ_CHECK(posp2p_legacy_decode(line, len, opts, &failing.base, &ef,
                                    &err) == POSP2P_ERR_NOMEM);
    FUZZ_CHECK(ef == NULL);
  }
  /* The encoder allocates only to grow its output buffer. */
  posp2p_buf out;
  fuzz_alloc counting;
  fuzz_alloc_init(&counting, 0);
  posp2p_buf_init(&out, FUZZ_OUT_MAX, &counting.base);
  FUZZ_CHECK(posp2p_legacy_encode(e, opts, &out, &err) == 0);
  posp2p_buf_free(&out);
  if (counting.count == 0)
    return;
  fuzz_alloc_init(&failing, fuzz_fail_point(line, len, counting.count));
  posp2p_buf_init(&out, FUZZ_OUT_MAX, &failing.base);
  FUZZ_CHECK(posp2p_legacy_encode(e, opts, &out, &err) == POSP2P_ERR_NOMEM);
  FUZZ_CHECK(out.len == 0);
  posp2p_buf_free(&out);
}

static void convert(const uint8_t *line, size_t len,
                    const posp2p_legacy_opts *opts, bool fail_allocs) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  fuzz_alloc counting;
  fuzz_alloc_init(&counting, 0);
  int rv = posp2p_legacy_decode(line, len, opts, &counting.base, &e, &err);
  if (rv != 0) {
    FUZZ_CHECK(e == NULL);
    fuzz_check_error(rv, &err);
    return;
  }
  size_t decode_allocs = counting.count;
  FUZZ_CHECK(e != NULL);
  FUZZ_CHECK(posp2p_envelope_validate(e, &err) == 0);
  FUZZ_CHECK(fuzz_strings_valid(&e->base));

  posp2p_buf l1, l2;
  posp2p_buf_init(&l1, FUZZ_OUT_MAX, NULL);
  posp2p_buf_init(&l2, FUZZ_OUT_MAX, NULL);
  FUZZ_CHECK(posp2p_legacy_encode(e, opts, &l1, &err) == 0);
  FUZZ_CHECK(l1.len >= 2 && l1.data[l1.len - 1] == '\n');
  FUZZ_CHECK(memchr(l1.data, '\n', l1.len - 1) == NULL);
  FUZZ_CHECK(l1.data[0] == '{');

  posp2p_envelope *e2 = NULL;
  FUZZ_CHECK(posp2p_legacy_decode(l1.data, l1.len - 1, opts, NULL, &e2, &err) ==
             0);
  FUZZ_CHECK(fuzz_same_envelope_legacy(e, e2));
  FUZZ_CHECK(posp2p_legacy_encode(e2, opts, &l2, &err) == 0);
  FUZZ_CHECK(l2.len == l1.len && memcmp(l1.data, l2.data, l1.len) == 0);

  posp2p_envelope_free(e2, NULL);
  posp2p_buf_free(&l2);
  posp2p_buf_free(&l1);
  if (fail_allocs)
    fail_allocations(line, len, opts, e, decode_allocs);
  posp2p_envelope_free(e, &counting.base);
}

static outcome run_whole(const uint8_t *s, size_t n, uint32_t cap,
                         const posp2p_legacy_opts *opts, ref_line *lines) {
  outcome o = {0, 0, 0, 0};
  posp2p_ndjson nd;
  posp2p_error err;
  size_t pos = 0;
  posp2p_ndjson_init(&nd, cap, NULL);
  while (pos < n) {
    size_t used = 0;
    posp2p_frame ln;
    int rv = posp2p_ndjson_next(&nd, s + pos, n - pos, &used, &ln, &err);
    FUZZ_CHECK(used <= n - pos);
    if (rv < 0) {
      fuzz_check_error(rv, &err);
      FUZZ_CHECK(rv == POSP2P_ERR_LINE_TOO_LONG);
      o.rv = rv;
      o.err_offset = err.offset;
      /* Sticky: the stream stays failed. */
      size_t used2 = 7;
      FUZZ_CHECK(posp2p_ndjson_next(&nd, (const uint8_t *)"{}\n", 3, &used2,
                                    &ln, &err) == rv);
      FUZZ_CHECK(used2 == 0);
      break;
    }
    if (rv == 0) {
      FUZZ_CHECK(used == n - pos);
      pos += used;
      break;
    }
    FUZZ_CHECK(rv == 1);
    check_line(&ln, cap);
    /* A line that arrives whole is not copied. */
    FUZZ_CHECK(ln.data >= s + pos && ln.data + ln.len <= s + pos + used);
    FUZZ_CHECK(ln.data == s + ln.offset);
    pos += used;
    if (o.nlines > 0)
      FUZZ_CHECK(ln.offset > lines[o.nlines - 1].offset);
    lines[o.nlines].offset = ln.offset;
    lines[o.nlines].len = ln.len;
    lines[o.nlines].data = ln.data;
    o.nlines++;
    if (o.nlines <= CONVERT_LINES)
      convert(ln.data, ln.len, opts, o.nlines == 1);
  }
  if (o.rv == 0) {
    o.finish = posp2p_ndjson_finish(&nd, &err);
    if (o.finish != 0) {
      fuzz_check_error(o.finish, &err);
      FUZZ_CHECK(o.finish == POSP2P_ERR_TRUNCATED);
    }
  }
  posp2p_ndjson_free(&nd);
  return o;
}

static outcome run_chunked(const uint8_t *s, size_t n, uint32_t cap,
                           uint8_t sel, const ref_line *lines, size_t nref) {
  outcome o = {0, 0, 0, 0};
  fuzz_chunker ch;
  posp2p_ndjson nd;
  posp2p_error err;
  size_t pos = 0;
  fuzz_chunker_init(&ch, sel);
  posp2p_ndjson_init(&nd, cap, NULL);
  while (pos < n && o.rv == 0) {
    size_t piece = fuzz_chunk_next(&ch, n - pos);
    const uint8_t *p = s + pos;
    size_t left = piece;
    while (left > 0) {
      size_t used = 0;
      posp2p_frame ln;
      int rv = posp2p_ndjson_next(&nd, p, left, &used, &ln, &err);
      FUZZ_CHECK(used <= left);
      if (rv < 0) {
        o.rv = rv;
        o.err_offset = err.offset;
        break;
      }
      if (rv == 0)
        FUZZ_CHECK(used == left);
      p += used;
      left -= used;
      if (rv == 1) {
        check_line(&ln, cap);
        FUZZ_CHECK(o.nlines < nref);
        const ref_line *r = &lines[o.nlines];
        FUZZ_CHECK(ln.offset == r->offset);
        FUZZ_CHECK(ln.len == r->len);
        FUZZ_CHECK(memcmp(ln.data, r->data, ln.len) == 0);
        o.nlines++;
      }
    }
    pos += piece;
  }
  if (o.rv == 0)
    o.finish = posp2p_ndjson_finish(&nd, &err);
  posp2p_ndjson_free(&nd);
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t sel = data[0];
  uint32_t cap = (sel & 0x80) ? SMALL_CAP : POSP2P_MAX_FRAME_DEFAULT;
  posp2p_legacy_opts opts = {(sel & 0x80) ? SMALL_CAP_OFFSET_MIN : 0};
  const uint8_t *s = data + 1;
  size_t n = size - 1;

  /* Every line takes at least two bytes (content and '\n'). See
   * fuzz_framer.c for why a static array. */
  static ref_line small[16384];
  ref_line *lines = small;
  if (n / 2 + 1 > sizeof(small) / sizeof(small[0])) {
    lines = malloc((n / 2 + 1) * sizeof(*lines));
    FUZZ_CHECK(lines != NULL);
  }
  outcome whole = run_whole(s, n, cap, &opts, lines);
  outcome chunked = run_chunked(s, n, cap, sel, lines, whole.nlines);
  FUZZ_CHECK(chunked.nlines == whole.nlines);
  FUZZ_CHECK(chunked.rv == whole.rv);
  FUZZ_CHECK(chunked.err_offset == whole.err_offset);
  FUZZ_CHECK(chunked.finish == whole.finish);
  if (lines != small)
    free(lines);
  return 0;
}
