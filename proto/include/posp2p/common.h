/* posp2p common definitions: error codes, error details, the allocator hook
 * and a capped growable buffer. Shared by the codec, the engine and tools. */
#ifndef POSP2P_COMMON_H
#define POSP2P_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. Every function that can fail returns 0 or one of these
 * (negative). Codes from -100 down describe bad *input* (peer's fault);
 * codes above describe the caller's or the process's problem.
 * Reserved ranges: -1..-199 here (the codec), -200..-299 the engine
 * (posp2p/peer.h, posp2p_peer_strerror), below -1000 libuv codes carried by
 * the transport (posp2p/uv.h, posp2p_uv_strerror). */
typedef enum {
  POSP2P_OK = 0,
  POSP2P_ERR_NOMEM = -1,          /* allocator returned NULL */
  POSP2P_ERR_INVAL = -2,          /* invalid argument from the caller */
  POSP2P_ERR_NOSPACE = -3,        /* output would exceed the buffer's cap */
  POSP2P_ERR_STATE = -4,          /* call not valid in the object's state */

  /* v2 framing (SPEC.md FRAME-*) */
  POSP2P_ERR_BAD_PREFACE = -100,  /* connection preface magic mismatch */
  POSP2P_ERR_VERSION = -101,      /* no protocol version in common */
  POSP2P_ERR_VARINT = -102,       /* length prefix longer than 5 bytes or > 2^32-1 */
  POSP2P_ERR_FRAME_TOO_LARGE = -103, /* length prefix above the maximum frame size */
  POSP2P_ERR_TRUNCATED = -104,    /* input ended inside a frame or line */
  POSP2P_ERR_PROTOBUF = -105,     /* frame body is not a valid Envelope */

  /* validation beyond protobuf (SPEC.md MSG-*) */
  POSP2P_ERR_MISSING_FIELD = -120,
  POSP2P_ERR_BAD_ID = -121,       /* message or device id is not a canonical UUID */
  POSP2P_ERR_RANGE = -122,        /* number outside its allowed range */
  POSP2P_ERR_ENUM = -123,         /* enum value outside the schema */
  POSP2P_ERR_PAYLOAD = -124,      /* payload does not match message_type */

  /* legacy JSON wire (SPEC.md LEGACY-*) */
  POSP2P_ERR_JSON_SYNTAX = -140,  /* not JSON, or trailing garbage after the object */
  POSP2P_ERR_JSON_UTF8 = -141,    /* invalid UTF-8 */
  POSP2P_ERR_JSON_TYPE = -142,    /* a key has the wrong JSON type */
  POSP2P_ERR_JSON_DEPTH = -143,   /* nesting deeper than POSP2P_JSON_MAX_DEPTH */
  POSP2P_ERR_JSON_NUMBER = -144,  /* number out of range or not representable */
  POSP2P_ERR_JSON_NUL = -145,     /* NUL byte in a line or string */
  POSP2P_ERR_LINE_TOO_LONG = -146,/* line above the maximum frame size */
  POSP2P_ERR_TIMESTAMP = -147,    /* not a legacy ISO-8601 timestamp */

  /* discovery datagrams (SPEC.md DISC-*) */
  POSP2P_ERR_DATAGRAM = -160      /* not a discovery datagram of either wire */
} posp2p_err;

/* Longest message text kept in a posp2p_error. */
#define POSP2P_ERROR_MSG_MAX 192

/* Details of a failure: what, where (byte offset into the input stream or
 * buffer) and which SPEC.md requirement the input violates. */
typedef struct {
  int code;                 /* a posp2p_err value */
  uint64_t offset;          /* offset of the offending byte, if known */
  const char *requirement;  /* static SPEC.md id such as "FRAME-4", or "" */
  char message[POSP2P_ERROR_MSG_MAX];
} posp2p_error;

/* Static name of an error code, e.g. "POSP2P_ERR_VARINT". */
const char *posp2p_err_name(int code);
/* Static one-line description of an error code. */
const char *posp2p_strerror(int code);

/* Fill *err (if non-NULL) and return code. message is printf-style. */
int posp2p_error_set(posp2p_error *err, int code, uint64_t offset,
                     const char *requirement, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Internal, for posp2p's own sources, its engine and its fuzz harnesses:
 * marks a branch-free byte loop (hashing, id formatting, skipping plain
 * bytes) or a harness's own bookkeeping that libFuzzer's comparison tracing
 * should leave out; it would otherwise record every byte of every input
 * (clang >= 13). Not inlined: the instrumentation pass runs after inlining
 * and would trace the loop in its caller. Callers' branches on the result
 * stay traced. */
#if defined(__clang__) && __clang_major__ >= 13
#define POSP2P__NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))
#else
#define POSP2P__NO_COVERAGE
#endif

/* ---- Allocation --------------------------------------------------------
 * All allocation in posp2p goes through a ProtobufCAllocator, so that the
 * generated protobuf-c code, the codec and the engine share one hook. A
 * NULL allocator argument means the process default, which is malloc/free
 * unless replaced with posp2p_mem_set_default() before any other call.
 * posp2p_mem_set_default also installs the default as jansson's allocator
 * (json_set_alloc_funcs; NULL restores malloc/free): jansson, which parses
 * legacy JSON, has one allocator per process, so an application that uses
 * jansson itself shares it, and jansson's allocations go to the default even
 * when a call is given another allocator (an arena). */
const ProtobufCAllocator *posp2p_mem_default(void);
void posp2p_mem_set_default(const ProtobufCAllocator *a);
void *posp2p_mem_alloc(const ProtobufCAllocator *a, size_t n);
void *posp2p_mem_calloc(const ProtobufCAllocator *a, size_t n);
void posp2p_mem_free(const ProtobufCAllocator *a, void *p);
char *posp2p_mem_strndup(const ProtobufCAllocator *a, const char *s, size_t n);

/* A bump arena usable as a ProtobufCAllocator: frees are no-ops, reset
 * releases everything at once. Blocks come from the parent allocator; after
 * the first message the arena reuses its blocks, so steady-state decoding
 * allocates nothing. */
typedef struct posp2p_arena_block posp2p_arena_block;
typedef struct {
  ProtobufCAllocator base; /* pass &arena->base to protobuf-c and the codec */
  const ProtobufCAllocator *parent;
  posp2p_arena_block *blocks;
  posp2p_arena_block *cur;
  size_t block_size;
} posp2p_arena;

void posp2p_arena_init(posp2p_arena *arena, const ProtobufCAllocator *parent,
                       size_t block_size);
void posp2p_arena_reset(posp2p_arena *arena);
/* Reset, and give back to the parent every block after the first `keep`
 * (keep 0: all of them; the arena stays usable and allocates again on
 * demand). For long-lived arenas that should not hold on to what their
 * largest message once needed. */
void posp2p_arena_trim(posp2p_arena *arena, size_t keep);
void posp2p_arena_free(posp2p_arena *arena);

/* ---- A growable byte buffer with a hard cap ---------------------------- */
typedef struct {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t max;  /* never grows beyond this; POSP2P_ERR_NOSPACE instead */
  const ProtobufCAllocator *alloc;
} posp2p_buf;

void posp2p_buf_init(posp2p_buf *b, size_t max, const ProtobufCAllocator *a);
void posp2p_buf_free(posp2p_buf *b);
/* Errors: POSP2P_ERR_NOSPACE, POSP2P_ERR_NOMEM. */
int posp2p_buf_reserve(posp2p_buf *b, size_t extra);
int posp2p_buf_append(posp2p_buf *b, const void *p, size_t n);
/* Drop the first n bytes (n <= len). */
void posp2p_buf_consume(posp2p_buf *b, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_COMMON_H */
