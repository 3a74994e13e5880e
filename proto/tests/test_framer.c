/* Frame stream decoder: split-anywhere, limits, malformed prefixes. */
#include "posp2p/codec.h"
#include "ptest.h"

/* Build a stream of n frames with bodies of varied sizes (0, 1, 127, 128,
 * 300, 16384 ...) so that 1-, 2- and 3-byte length prefixes all occur. */
static const size_t body_sizes[] = {0, 1, 5, 127, 128, 300, 16383, 16384, 70000};
#define NBODIES (sizeof(body_sizes) / sizeof(body_sizes[0]))

static size_t build_stream(uint8_t *out) {
  size_t o = 0;
  for (size_t i = 0; i < NBODIES; i++) {
    o += posp2p_varint_encode((uint32_t)body_sizes[i], out + o);
    for (size_t j = 0; j < body_sizes[i]; j++)
      out[o++] = (uint8_t)(i * 31 + j * 7);
  }
  return o;
}

static int check_body(size_t idx, const posp2p_frame *fr) {
  if (idx >= NBODIES || fr->len != body_sizes[idx]) return 0;
  for (size_t j = 0; j < fr->len; j++)
    if (fr->data[j] != (uint8_t)(idx * 31 + j * 7)) return 0;
  return 1;
}

/* Feed `stream` in chunks of `chunk` bytes (0: first `split` bytes, then the
 * rest) and count the frames that come out intact. */
static size_t feed(const uint8_t *stream, size_t len, size_t split,
                   size_t chunk) {
  posp2p_framer f;
  posp2p_error err;
  size_t got = 0, pos = 0;
  posp2p_framer_init(&f, 1u << 20, NULL);
  while (pos < len) {
    size_t n = chunk ? chunk : (pos < split ? split - pos : len - pos);
    if (n > len - pos) n = len - pos;
    const uint8_t *p = stream + pos;
    size_t left = n;
    while (left > 0) {
      size_t used = 0;
      posp2p_frame fr;
      int rv = posp2p_framer_next(&f, p, left, &used, &fr, &err);
      if (rv < 0) {
        posp2p_framer_free(&f);
        return (size_t)-1;
      }
      if (rv == 1) {
        if (!check_body(got, &fr)) {
          posp2p_framer_free(&f);
          return (size_t)-1;
        }
        got++;
      }
      p += used;
      left -= used;
    }
    pos += n;
  }
  if (posp2p_framer_finish(&f, &err) != 0) got = (size_t)-1;
  posp2p_framer_free(&f);
  return got;
}

static uint8_t stream_buf[200000];

PTEST(whole_stream) {
  size_t len = build_stream(stream_buf);
  PT_EQ_INT(feed(stream_buf, len, len, 0), NBODIES);
}

PTEST(one_byte_at_a_time) {
  size_t len = build_stream(stream_buf);
  PT_EQ_INT(feed(stream_buf, len, 0, 1), NBODIES);
}

PTEST(every_split_point_of_small_frames) {
  /* All frames but the last two (to keep the test quick): every split. */
  size_t len = 0;
  for (size_t i = 0; i < 6; i++) {
    len += posp2p_varint_encode((uint32_t)body_sizes[i], stream_buf + len);
    for (size_t j = 0; j < body_sizes[i]; j++)
      stream_buf[len++] = (uint8_t)(i * 31 + j * 7);
  }
  for (size_t split = 0; split <= len; split++) {
    posp2p_framer f;
    posp2p_error err;
    size_t got = 0;
    posp2p_framer_init(&f, 1u << 20, NULL);
    const uint8_t *pieces[2] = {stream_buf, stream_buf + split};
    size_t lens[2] = {split, len - split};
    for (int k = 0; k < 2; k++) {
      const uint8_t *p = pieces[k];
      size_t left = lens[k];
      while (left > 0) {
        size_t used;
        posp2p_frame fr;
        int rv = posp2p_framer_next(&f, p, left, &used, &fr, &err);
        PT_CHECK(rv >= 0);
        if (rv < 0) break;
        if (rv == 1) {
          PT_CHECK(check_body(got, &fr));
          got++;
        }
        p += used;
        left -= used;
      }
    }
    PT_EQ_INT(got, 6);
    PT_EQ_INT(posp2p_framer_finish(&f, &err), 0);
    posp2p_framer_free(&f);
  }
}

PTEST(various_chunk_sizes) {
  size_t len = build_stream(stream_buf);
  static const size_t chunks[] = {2, 3, 7, 64, 129, 4096, 65537};
  for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++)
    PT_EQ_INT(feed(stream_buf, len, 0, chunks[i]), NBODIES);
}

PTEST(zero_copy_when_whole) {
  uint8_t s[10] = {3, 'a', 'b', 'c'};
  posp2p_framer f;
  posp2p_frame fr;
  size_t used;
  posp2p_framer_init(&f, 0, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s, 4, &used, &fr, NULL), 1);
  PT_CHECK(fr.data == s + 1);
  PT_EQ_INT(fr.len, 3);
  PT_EQ_INT(used, 4);
  PT_EQ_INT(fr.offset, 0);
  posp2p_framer_free(&f);
}

PTEST(oversize_rejected_before_allocation) {
  /* Announce 4 GiB - 1; a correct framer fails on the prefix alone. */
  uint8_t s[5];
  size_t n = posp2p_varint_encode(UINT32_MAX, s);
  posp2p_framer f;
  posp2p_frame fr;
  posp2p_error err;
  size_t used;
  posp2p_framer_init(&f, 4096, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s, n, &used, &fr, &err),
            POSP2P_ERR_FRAME_TOO_LARGE);
  PT_EQ_STR(err.requirement, "FRAME-4");
  PT_EQ_INT(err.offset, 0);
  PT_CHECK(f.body.cap == 0); /* nothing was allocated for the body */
  /* Sticky: the stream stays failed. */
  PT_EQ_INT(posp2p_framer_next(&f, (const uint8_t *)"x", 1, &used, &fr, &err),
            POSP2P_ERR_FRAME_TOO_LARGE);
  posp2p_framer_free(&f);
}

PTEST(limit_is_inclusive) {
  uint8_t s[4096 + 5];
  size_t n = posp2p_varint_encode(4096, s);
  memset(s + n, 0x42, 4096);
  posp2p_framer f;
  posp2p_frame fr;
  size_t used;
  posp2p_framer_init(&f, 4096, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s, n + 4096, &used, &fr, NULL), 1);
  PT_EQ_INT(fr.len, 4096);
  n = posp2p_varint_encode(4097, s);
  PT_EQ_INT(posp2p_framer_next(&f, s, n, &used, &fr, NULL),
            POSP2P_ERR_FRAME_TOO_LARGE);
  posp2p_framer_free(&f);
}

PTEST(overlong_varint) {
  /* Six continuation bytes: longer than any 32-bit length. */
  static const uint8_t s[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  posp2p_framer f;
  posp2p_frame fr;
  posp2p_error err;
  size_t used;
  posp2p_framer_init(&f, 0, NULL);
  /* Two junk frames first so the offset is not trivially 0. */
  static const uint8_t ok[] = {1, 9, 0};
  PT_EQ_INT(posp2p_framer_next(&f, ok, 2, &used, &fr, NULL), 1);
  PT_EQ_INT(posp2p_framer_next(&f, ok + 2, 1, &used, &fr, NULL), 1);
  PT_EQ_INT(posp2p_framer_next(&f, s, sizeof(s), &used, &fr, &err),
            POSP2P_ERR_VARINT);
  PT_EQ_INT(err.offset, 3);
  PT_EQ_INT(used, 5);
  PT_EQ_STR(err.requirement, "FRAME-6");
  posp2p_framer_free(&f);
}

PTEST(varint_above_u32) {
  /* 5 bytes whose value is 2^32 (needs bit 32). */
  static const uint8_t s[] = {0x80, 0x80, 0x80, 0x80, 0x10};
  posp2p_framer f;
  posp2p_frame fr;
  size_t used;
  posp2p_framer_init(&f, UINT32_MAX, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s, sizeof(s), &used, &fr, NULL),
            POSP2P_ERR_VARINT);
  posp2p_framer_free(&f);
}

PTEST(truncated_at_end) {
  static const uint8_t s[] = {10, 'a', 'b'};
  posp2p_framer f;
  posp2p_frame fr;
  posp2p_error err;
  size_t used;
  posp2p_framer_init(&f, 0, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s, sizeof(s), &used, &fr, NULL), 0);
  PT_EQ_INT(used, 3);
  PT_EQ_INT(posp2p_framer_finish(&f, &err), POSP2P_ERR_TRUNCATED);
  PT_EQ_INT(err.offset, 3);
  posp2p_framer_free(&f);
  /* Truncated inside the prefix. */
  static const uint8_t s2[] = {0x80};
  posp2p_framer_init(&f, 0, NULL);
  PT_EQ_INT(posp2p_framer_next(&f, s2, 1, &used, &fr, NULL), 0);
  PT_EQ_INT(posp2p_framer_finish(&f, &err), POSP2P_ERR_TRUNCATED);
  posp2p_framer_free(&f);
}

PTEST(varint_encode_sizes) {
  uint8_t b[5];
  PT_EQ_INT(posp2p_varint_encode(0, b), 1);
  PT_EQ_INT(posp2p_varint_encode(127, b), 1);
  PT_EQ_INT(posp2p_varint_encode(128, b), 2);
  PT_EQ_INT(b[0], 0x80);
  PT_EQ_INT(b[1], 0x01);
  PT_EQ_INT(posp2p_varint_encode(16384, b), 3);
  PT_EQ_INT(posp2p_varint_encode(UINT32_MAX, b), 5);
  PT_EQ_INT(b[4], 0x0F);
}

PTEST(preface) {
  uint8_t p[POSP2P_PREFACE_LEN];
  uint8_t v = 0;
  posp2p_error err;
  posp2p_preface_encode(p, 2);
  PT_EQ_INT(p[0], 0xFF);
  PT_EQ_INT(p[7], 2);
  for (size_t n = 0; n < POSP2P_PREFACE_LEN; n++)
    PT_EQ_INT(posp2p_preface_parse(p, n, &v, &err), 0);
  PT_EQ_INT(posp2p_preface_parse(p, POSP2P_PREFACE_LEN, &v, &err), 1);
  PT_EQ_INT(v, 2);
  p[3] = 'X';
  PT_EQ_INT(posp2p_preface_parse(p, 4, &v, &err), POSP2P_ERR_BAD_PREFACE);
  PT_EQ_INT(err.offset, 3);
  PT_EQ_INT(posp2p_preface_parse((const uint8_t *)"{\"m", 3, &v, &err),
            POSP2P_ERR_BAD_PREFACE);
  PT_EQ_INT(err.offset, 0);
}

PTEST(wire_detect) {
  PT_EQ_INT(posp2p_wire_detect(0xFF), POSP2P_WIRE_V2);
  PT_EQ_INT(posp2p_wire_detect('{'), POSP2P_WIRE_LEGACY);
  PT_EQ_INT(posp2p_wire_detect(' '), POSP2P_WIRE_LEGACY);
  PT_EQ_INT(posp2p_wire_detect('\n'), POSP2P_WIRE_LEGACY);
  PT_EQ_INT(posp2p_wire_detect('G'), POSP2P_WIRE_UNKNOWN); /* "GET /" */
  PT_EQ_INT(posp2p_wire_detect(0x16), POSP2P_WIRE_UNKNOWN); /* TLS */
  PT_EQ_INT(posp2p_wire_detect(0x00), POSP2P_WIRE_UNKNOWN);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
