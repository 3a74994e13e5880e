// Google C++ protobuf baseline for the codec benchmark. See
// google_baseline.h. The message classes come from protoc --cpp_out run on
// proto/posp2p.proto at build time (never committed).
#include "google_baseline.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <google/protobuf/arena.h>
#include <google/protobuf/stubs/common.h>

#include "posp2p.pb.h"

// ---- Allocation counter ---------------------------------------------------
// The benchmark runs on one thread, so a plain counter is enough and costs
// one add per allocation. Replacing the global operator new is allowed in a
// program and catches every allocation libprotobuf makes (its arena blocks
// included: the default block allocator is ::operator new).
static uint64_t g_new_calls = 0;

static void *counted_new(std::size_t n) {
  ++g_new_calls;
  return std::malloc(n ? n : 1);
}

void *operator new(std::size_t n) {
  void *p = counted_new(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void *operator new[](std::size_t n) {
  void *p = counted_new(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void *operator new(std::size_t n, const std::nothrow_t &) noexcept {
  return counted_new(n);
}
void *operator new[](std::size_t n, const std::nothrow_t &) noexcept {
  return counted_new(n);
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }
void operator delete(void *p, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept {
  std::free(p);
}

uint64_t gb_alloc_count(void) { return g_new_calls; }

// Keeps results alive so that the compiler cannot drop the work.
static volatile int64_t g_sink;

using posp2p::v2::Envelope;

struct gb_ctx {
  std::string bytes;
  Envelope reuse;
  std::unique_ptr<char[]> block;
  std::unique_ptr<google::protobuf::Arena> arena;
  std::vector<uint8_t> out;
};

gb_ctx *gb_new(const uint8_t *bytes, size_t len, size_t arena_block) {
  std::unique_ptr<gb_ctx> c(new gb_ctx);
  c->bytes.assign(reinterpret_cast<const char *>(bytes), len);
  if (!c->reuse.ParseFromString(c->bytes)) return nullptr;
  c->block.reset(new char[arena_block]);
  google::protobuf::ArenaOptions opts;
  opts.initial_block = c->block.get();
  opts.initial_block_size = arena_block;
  c->arena.reset(new google::protobuf::Arena(opts));
  c->out.resize(c->reuse.ByteSizeLong() + 16);
  return c.release();
}

void gb_del(gb_ctx *c) { delete c; }

int gb_decode_reuse(void *ctx, uint64_t iters) {
  gb_ctx *c = static_cast<gb_ctx *>(ctx);
  const char *data = c->bytes.data();
  int size = static_cast<int>(c->bytes.size());
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    c->reuse.Clear();
    if (!c->reuse.ParseFromArray(data, size)) return -1;
    sink += c->reuse.timestamp_ms();
  }
  g_sink = sink;
  return 0;
}

int gb_decode_arena(void *ctx, uint64_t iters) {
  gb_ctx *c = static_cast<gb_ctx *>(ctx);
  const char *data = c->bytes.data();
  int size = static_cast<int>(c->bytes.size());
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    Envelope *m = google::protobuf::Arena::CreateMessage<Envelope>(c->arena.get());
    if (!m->ParseFromArray(data, size)) return -1;
    sink += m->timestamp_ms();
    c->arena->Reset();
  }
  g_sink = sink;
  return 0;
}

int gb_encode(void *ctx, uint64_t iters) {
  gb_ctx *c = static_cast<gb_ctx *>(ctx);
  uint8_t *out = c->out.data();
  int cap = static_cast<int>(c->out.size());
  int64_t sink = 0;
  for (uint64_t i = 0; i < iters; i++) {
    if (!c->reuse.SerializeToArray(out, cap)) return -1;
    sink += out[0];
  }
  g_sink = sink;
  return 0;
}

int gb_reencode_identical(gb_ctx *c) {
  std::string again;
  if (!c->reuse.SerializeToString(&again)) return 0;
  return again == c->bytes ? 1 : 0;
}

size_t gb_space_used(gb_ctx *c) { return c->reuse.SpaceUsedLong(); }

// ---- Framing + decode ---------------------------------------------------

struct gb_stream {
  const uint8_t *buf;
  size_t len;
  Envelope msg;
  uint64_t frames;
};

gb_stream *gb_stream_new(const uint8_t *buf, size_t len) {
  gb_stream *s = new gb_stream;
  s->buf = buf;
  s->len = len;
  s->frames = 0;
  return s;
}

void gb_stream_del(gb_stream *s) { delete s; }

uint64_t gb_stream_frames(const gb_stream *s) { return s->frames; }

int gb_stream_decode(void *ctx, uint64_t iters) {
  gb_stream *s = static_cast<gb_stream *>(ctx);
  int64_t sink = 0;
  for (uint64_t it = 0; it < iters; it++) {
    size_t pos = 0;
    uint64_t frames = 0;
    while (pos < s->len) {
      // Varint length prefix, at most 5 bytes (as posp2p_framer reads it).
      uint32_t n = 0;
      int shift = 0;
      for (;;) {
        if (pos >= s->len || shift > 28) return -1;
        uint8_t b = s->buf[pos++];
        n |= static_cast<uint32_t>(b & 0x7F) << shift;
        if ((b & 0x80) == 0) break;
        shift += 7;
      }
      if (n > s->len - pos) return -1;
      s->msg.Clear();
      if (!s->msg.ParseFromArray(s->buf + pos, static_cast<int>(n))) return -1;
      sink += s->msg.timestamp_ms();
      pos += n;
      frames++;
    }
    s->frames = frames;
  }
  g_sink = sink;
  return 0;
}

const char *gb_version(void) {
  static const std::string v =
      google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION);
  return v.c_str();
}

const char *gb_compiler(void) { return __VERSION__; }

void gb_shutdown(void) { google::protobuf::ShutdownProtobufLibrary(); }
