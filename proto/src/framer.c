/* Connection preface, wire detection and the length-delimited frame stream
 * decoder (SPEC.md CONN-*, FRAME-*). */
#include <string.h>

#include "posp2p/codec.h"

const uint8_t posp2p_preface_magic[7] = {0xFF, 'P', 'O', 'S', 'P', '2', 'P'};

posp2p_wire posp2p_wire_detect(uint8_t first_byte) {
  switch (first_byte) {
  case 0xFF:
    return POSP2P_WIRE_V2;
  case '{':
  case ' ':
  case '\t':
  case '\r':
  case '\n':
    return POSP2P_WIRE_LEGACY;
  default:
    return POSP2P_WIRE_UNKNOWN;
  }
}

void posp2p_preface_encode(uint8_t out[POSP2P_PREFACE_LEN], uint8_t version) {
  memcpy(out, posp2p_preface_magic, sizeof(posp2p_preface_magic));
  out[sizeof(posp2p_preface_magic)] = version;
}

int posp2p_preface_parse(const uint8_t *p, size_t n, uint8_t *version,
                         posp2p_error *err) {
  size_t magic_len = sizeof(posp2p_preface_magic);
  size_t check = n < magic_len ? n : magic_len;
  for (size_t i = 0; i < check; i++) {
    if (p[i] != posp2p_preface_magic[i])
      return posp2p_error_set(err, POSP2P_ERR_BAD_PREFACE, i, "CONN-5",
                              "preface byte %zu is 0x%02x, expected 0x%02x", i,
                              p[i], posp2p_preface_magic[i]);
  }
  if (n < POSP2P_PREFACE_LEN) return 0;
  *version = p[magic_len];
  return 1;
}

size_t posp2p_varint_encode(uint32_t v, uint8_t out[5]) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

void posp2p_framer_init(posp2p_framer *f, uint32_t max_frame,
                        const ProtobufCAllocator *a) {
  memset(f, 0, sizeof(*f));
  f->max_frame = max_frame ? max_frame : POSP2P_MAX_FRAME_DEFAULT;
  f->alloc = a;
  posp2p_buf_init(&f->body, f->max_frame, a);
}

void posp2p_framer_free(posp2p_framer *f) { posp2p_buf_free(&f->body); }

/* Decode the varint held in hdr[0..hdr_len). Returns 1 when complete with
 * *value set, 0 when more bytes are needed, or POSP2P_ERR_VARINT. A length
 * needs at most 5 bytes (35 bits); the fifth byte may carry only 4 bits. */
static int varint_decode(const uint8_t *hdr, size_t hdr_len, uint32_t *value) {
  uint64_t v = 0;
  for (size_t i = 0; i < hdr_len; i++) {
    v |= (uint64_t)(hdr[i] & 0x7F) << (7 * i);
    if ((hdr[i] & 0x80) == 0) {
      if (v > UINT32_MAX) return POSP2P_ERR_VARINT;
      *value = (uint32_t)v;
      return 1;
    }
    if (i == 4) return POSP2P_ERR_VARINT;
  }
  return 0;
}

static int framer_fail(posp2p_framer *f, int code) {
  f->failed = code;
  return code;
}

int posp2p_framer_next(posp2p_framer *f, const uint8_t *data, size_t len,
                       size_t *consumed, posp2p_frame *out, posp2p_error *err) {
  size_t pos = 0;
  *consumed = 0;
  if (f->failed)
    return posp2p_error_set(err, f->failed, f->offset, "FRAME-9",
                            "frame stream already failed: %s",
                            posp2p_strerror(f->failed));
  while (pos < len) {
    if (!f->in_body) {
      /* Length prefix: collect bytes until the varint ends. */
      if (f->hdr_len == 0) f->frame_offset = f->offset;
      uint64_t prefix_offset = f->frame_offset;
      f->hdr[f->hdr_len++] = data[pos++];
      f->offset++;
      uint32_t body_len = 0;
      int rv = varint_decode(f->hdr, f->hdr_len, &body_len);
      if (rv < 0) {
        *consumed = pos;
        posp2p_error_set(err, rv, prefix_offset, "FRAME-6",
                         "length prefix at offset %llu is longer than 5 bytes "
                         "or exceeds 2^32-1",
                         (unsigned long long)prefix_offset);
        return framer_fail(f, rv);
      }
      if (rv == 0) continue;
      /* Check the announced size before buffering a single body byte. */
      if (body_len > f->max_frame) {
        *consumed = pos;
        posp2p_error_set(err, POSP2P_ERR_FRAME_TOO_LARGE, prefix_offset,
                         "FRAME-4",
                         "frame at offset %llu announces %u bytes, above the "
                         "maximum frame size %u",
                         (unsigned long long)prefix_offset, body_len,
                         f->max_frame);
        return framer_fail(f, POSP2P_ERR_FRAME_TOO_LARGE);
      }
      f->hdr_len = 0;
      f->body_len = body_len;
      f->in_body = true;
      f->body.len = 0;
      if (body_len == 0) {
        f->in_body = false;
        out->data = (const uint8_t *)"";
        out->len = 0;
        out->offset = prefix_offset;
        *consumed = pos;
        return 1;
      }
    }
    /* Body. Zero-copy when nothing was buffered and the whole body is in
     * this input; otherwise accumulate. */
    size_t have = f->body.len;
    size_t want = f->body_len - have;
    size_t avail = len - pos;
    if (have == 0 && avail >= want) {
      out->data = data + pos;
      out->len = want;
      pos += want;
      f->offset += want;
      f->in_body = false;
      out->offset = f->frame_offset;
      *consumed = pos;
      return 1;
    }
    size_t take = avail < want ? avail : want;
    int rv = posp2p_buf_append(&f->body, data + pos, take);
    if (rv != POSP2P_OK) {
      *consumed = pos;
      posp2p_error_set(err, POSP2P_ERR_NOMEM, f->offset, "",
                       "cannot buffer %u-byte frame", f->body_len);
      return framer_fail(f, POSP2P_ERR_NOMEM);
    }
    pos += take;
    f->offset += take;
    if (f->body.len == f->body_len) {
      out->data = f->body.data;
      out->len = f->body.len;
      out->offset = f->frame_offset;
      f->in_body = false;
      /* body.len is reset when the next frame starts, after the caller has
       * used out->data. */
      *consumed = pos;
      return 1;
    }
  }
  *consumed = pos;
  return 0;
}

int posp2p_framer_finish(const posp2p_framer *f, posp2p_error *err) {
  if (f->in_body || f->hdr_len > 0)
    return posp2p_error_set(err, POSP2P_ERR_TRUNCATED, f->offset, "FRAME-13",
                            "stream ended inside a frame (%s, %zu of %u body "
                            "bytes)",
                            f->in_body ? "body" : "length prefix",
                            f->in_body ? f->body.len : (size_t)0, f->body_len);
  return 0;
}
