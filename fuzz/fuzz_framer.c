/* Fuzz target: the v2 frame stream decoder (SPEC.md FRAME-*).
 *
 * Input: one selector byte (fuzz_common.h: chunking mode; bit 7 set = the
 * smallest legal frame cap, 4096, else the default 1 MiB) followed by the
 * bytes of a stream as they would arrive after the preface.
 *
 * The stream is decoded twice: once as one buffer (the reference run), once
 * cut into feeds by the selected pattern. Invariants:
 *  - the chunked run produces exactly the reference frames (offset, length,
 *    bytes) and then the same outcome: the same error code at the same
 *    offset, or the same posp2p_framer_finish result (FRAME-9: frames split
 *    at any byte boundary);
 *  - a call that returns 0 consumed all of its input; a call that returns 1
 *    consumed exactly up to the end of the frame it returned;
 *  - in the reference run every frame arrived whole, so it points into the
 *    input (the zero-copy contract) right after a 1..5-byte prefix;
 *  - no frame is longer than the cap; errors are sticky;
 *  - the first DECODE_FRAMES frames go through posp2p_envelope_decode; an
 *    accepted envelope validates again;
 *  - the first 8 bytes, read as a connection preface, parse consistently
 *    (check_preface). */
#include "fuzz_common.h"

/* Frames per input that also go through posp2p_envelope_decode. Decoding
 * is fuzz_envelope's job; here it shows that frames cut out of a stream
 * decode, and decoding every frame of a long stream would halve exec/s. */
#define DECODE_FRAMES 4

typedef struct {
  uint64_t offset;
  size_t len;
  const uint8_t *data;
} ref_frame;

typedef struct {
  size_t nframes;
  int rv; /* 0 (stream ended cleanly at a frame boundary or not) or
             the framer error that stopped it */
  uint64_t err_offset;
  int finish; /* posp2p_framer_finish result when rv == 0 */
} outcome;

static void decode_body(const uint8_t *p, size_t n) {
  posp2p_envelope *e = NULL;
  posp2p_error err;
  int rv = posp2p_envelope_decode(p, n, NULL, &e, &err);
  if (rv == 0) {
    FUZZ_CHECK(e != NULL);
    FUZZ_CHECK(posp2p_envelope_validate(e, &err) == 0);
    posp2p_envelope_free(e, NULL);
  } else {
    FUZZ_CHECK(e == NULL);
    fuzz_check_error(rv, &err);
  }
}

/* After a stream error every later call fails the same way, consuming
 * nothing. */
static void check_sticky(posp2p_framer *f, int code) {
  static const uint8_t more[2] = {0x01, 0x00};
  size_t used = 7;
  posp2p_frame fr;
  posp2p_error err;
  FUZZ_CHECK(posp2p_framer_next(f, more, sizeof(more), &used, &fr, &err) ==
             code);
  FUZZ_CHECK(used == 0);
  FUZZ_CHECK(err.code == code);
}

static outcome run_whole(const uint8_t *s, size_t n, uint32_t cap,
                         ref_frame *frames) {
  outcome o = {0, 0, 0, 0};
  posp2p_framer f;
  posp2p_error err;
  size_t pos = 0;
  posp2p_framer_init(&f, cap, NULL);
  while (pos < n) {
    size_t used = 0;
    posp2p_frame fr;
    int rv = posp2p_framer_next(&f, s + pos, n - pos, &used, &fr, &err);
    FUZZ_CHECK(used <= n - pos);
    if (rv < 0) {
      fuzz_check_error(rv, &err);
      FUZZ_CHECK(rv == POSP2P_ERR_VARINT || rv == POSP2P_ERR_FRAME_TOO_LARGE);
      o.rv = rv;
      o.err_offset = err.offset;
      check_sticky(&f, rv);
      break;
    }
    if (rv == 0) {
      FUZZ_CHECK(used == n - pos);
      pos += used;
      break;
    }
    FUZZ_CHECK(rv == 1);
    pos += used;
    FUZZ_CHECK(fr.len <= cap);
    /* The frame ends exactly where this call stopped, after its prefix. */
    FUZZ_CHECK(fr.offset + fr.len < pos);
    uint64_t prefix = pos - fr.len - fr.offset;
    FUZZ_CHECK(prefix >= 1 && prefix <= 5);
    if (fr.len > 0)
      FUZZ_CHECK(fr.data == s + pos - fr.len);
    if (o.nframes > 0)
      FUZZ_CHECK(fr.offset > frames[o.nframes - 1].offset);
    frames[o.nframes].offset = fr.offset;
    frames[o.nframes].len = fr.len;
    frames[o.nframes].data = s + pos - fr.len;
    o.nframes++;
    if (o.nframes <= DECODE_FRAMES)
      decode_body(fr.data, fr.len);
  }
  if (o.rv == 0) {
    o.finish = posp2p_framer_finish(&f, &err);
    if (o.finish != 0) {
      fuzz_check_error(o.finish, &err);
      FUZZ_CHECK(o.finish == POSP2P_ERR_TRUNCATED);
    }
  }
  posp2p_framer_free(&f);
  return o;
}

static outcome run_chunked(const uint8_t *s, size_t n, uint32_t cap,
                           uint8_t sel, const ref_frame *frames, size_t nref) {
  outcome o = {0, 0, 0, 0};
  fuzz_chunker ch;
  posp2p_framer f;
  posp2p_error err;
  size_t pos = 0;
  fuzz_chunker_init(&ch, sel);
  posp2p_framer_init(&f, cap, NULL);
  while (pos < n && o.rv == 0) {
    size_t piece = fuzz_chunk_next(&ch, n - pos);
    const uint8_t *p = s + pos;
    size_t left = piece;
    while (left > 0) {
      size_t used = 0;
      posp2p_frame fr;
      int rv = posp2p_framer_next(&f, p, left, &used, &fr, &err);
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
        FUZZ_CHECK(o.nframes < nref);
        const ref_frame *r = &frames[o.nframes];
        FUZZ_CHECK(fr.offset == r->offset);
        FUZZ_CHECK(fr.len == r->len);
        FUZZ_CHECK(fr.len == 0 || memcmp(fr.data, r->data, fr.len) == 0);
        o.nframes++;
      }
    }
    pos += piece;
  }
  if (o.rv == 0)
    o.finish = posp2p_framer_finish(&f, &err);
  posp2p_framer_free(&f);
  return o;
}

/* The connection start, on the same bytes: posp2p_preface_parse of the
 * first min(n, 8) bytes and of a shorter prefix (its length taken from the
 * selector) agree (a bad byte is reported at the same offset however much
 * follows, "need more" only while all bytes so far match, 1 only with all 8
 * bytes); a valid preface re-encodes to the same bytes and
 * posp2p_wire_detect calls it v2. */
static int parse_prefix(const uint8_t *s, size_t k, uint8_t *version,
                        uint64_t *bad) {
  posp2p_error err;
  int rv = posp2p_preface_parse(s, k, version, &err);
  if (rv < 0) {
    fuzz_check_error(rv, &err);
    FUZZ_CHECK(rv == POSP2P_ERR_BAD_PREFACE);
    FUZZ_CHECK(err.offset < k && err.offset < POSP2P_PREFACE_LEN - 1);
    *bad = err.offset;
  } else {
    FUZZ_CHECK(rv == (k == POSP2P_PREFACE_LEN ? 1 : 0));
  }
  return rv;
}

static void check_preface(const uint8_t *s, size_t n, uint8_t sel) {
  size_t full = n < POSP2P_PREFACE_LEN ? n : POSP2P_PREFACE_LEN;
  size_t part = (size_t)(sel >> 3) % (full + 1);
  uint8_t version = 0, v2 = 0;
  uint64_t bad_full = 0, bad_part = 0;
  int rv_full = parse_prefix(s, full, &version, &bad_full);
  int rv_part = parse_prefix(s, part, &v2, &bad_part);
  if (rv_part < 0)
    FUZZ_CHECK(rv_full < 0 && bad_full == bad_part);
  if (rv_full < 0 && bad_full < part)
    FUZZ_CHECK(rv_part < 0);
  if (rv_full == 1) {
    uint8_t again[POSP2P_PREFACE_LEN];
    posp2p_preface_encode(again, version);
    FUZZ_CHECK(memcmp(again, s, POSP2P_PREFACE_LEN) == 0);
    FUZZ_CHECK(posp2p_wire_detect(s[0]) == POSP2P_WIRE_V2);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t sel = data[0];
  uint32_t cap = (sel & 0x80) ? POSP2P_MAX_FRAME_MIN : POSP2P_MAX_FRAME_DEFAULT;
  const uint8_t *s = data + 1;
  size_t n = size - 1;

  /* Every frame takes at least one byte (its prefix), so n + 1 records
   * suffice. A static array covers max_len; only longer inputs (replay of a
   * hand-made file) allocate, which keeps ASan's large-allocation cost out
   * of the fuzzing loop. */
  static ref_frame small[16384];
  ref_frame *frames = small;
  if (n + 1 > sizeof(small) / sizeof(small[0])) {
    frames = malloc((n + 1) * sizeof(*frames));
    FUZZ_CHECK(frames != NULL);
  }
  check_preface(s, n, sel);
  outcome whole = run_whole(s, n, cap, frames);
  outcome chunked = run_chunked(s, n, cap, sel, frames, whole.nframes);
  FUZZ_CHECK(chunked.nframes == whole.nframes);
  FUZZ_CHECK(chunked.rv == whole.rv);
  FUZZ_CHECK(chunked.err_offset == whole.err_offset);
  FUZZ_CHECK(chunked.finish == whole.finish);
  if (frames != small)
    free(frames);
  return 0;
}
