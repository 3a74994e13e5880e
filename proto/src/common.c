/* Error names, error details, the allocator hook, the arena and the capped
 * buffer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "posp2p/common.h"

typedef struct {
  int code;
  const char *name;
  const char *text;
} err_entry;

static const err_entry err_table[] = {
  {POSP2P_OK, "POSP2P_OK", "success"},
  {POSP2P_ERR_NOMEM, "POSP2P_ERR_NOMEM", "out of memory"},
  {POSP2P_ERR_INVAL, "POSP2P_ERR_INVAL", "invalid argument"},
  {POSP2P_ERR_NOSPACE, "POSP2P_ERR_NOSPACE", "output exceeds the buffer limit"},
  {POSP2P_ERR_STATE, "POSP2P_ERR_STATE", "call not valid in this state"},
  {POSP2P_ERR_BAD_PREFACE, "POSP2P_ERR_BAD_PREFACE", "bad connection preface"},
  {POSP2P_ERR_VERSION, "POSP2P_ERR_VERSION", "unsupported protocol version"},
  {POSP2P_ERR_VARINT, "POSP2P_ERR_VARINT", "malformed varint length prefix"},
  {POSP2P_ERR_FRAME_TOO_LARGE, "POSP2P_ERR_FRAME_TOO_LARGE", "frame larger than the maximum frame size"},
  {POSP2P_ERR_TRUNCATED, "POSP2P_ERR_TRUNCATED", "input ended inside a frame"},
  {POSP2P_ERR_PROTOBUF, "POSP2P_ERR_PROTOBUF", "frame body is not a valid Envelope"},
  {POSP2P_ERR_MISSING_FIELD, "POSP2P_ERR_MISSING_FIELD", "required field missing"},
  {POSP2P_ERR_BAD_ID, "POSP2P_ERR_BAD_ID", "id is not a canonical UUID"},
  {POSP2P_ERR_RANGE, "POSP2P_ERR_RANGE", "value out of range"},
  {POSP2P_ERR_ENUM, "POSP2P_ERR_ENUM", "enum value outside the schema"},
  {POSP2P_ERR_PAYLOAD, "POSP2P_ERR_PAYLOAD", "payload does not match the message type"},
  {POSP2P_ERR_JSON_SYNTAX, "POSP2P_ERR_JSON_SYNTAX", "invalid JSON"},
  {POSP2P_ERR_JSON_UTF8, "POSP2P_ERR_JSON_UTF8", "invalid UTF-8"},
  {POSP2P_ERR_JSON_TYPE, "POSP2P_ERR_JSON_TYPE", "JSON value has the wrong type"},
  {POSP2P_ERR_JSON_DEPTH, "POSP2P_ERR_JSON_DEPTH", "JSON nested too deeply"},
  {POSP2P_ERR_JSON_NUMBER, "POSP2P_ERR_JSON_NUMBER", "JSON number out of range"},
  {POSP2P_ERR_JSON_NUL, "POSP2P_ERR_JSON_NUL", "NUL character in JSON"},
  {POSP2P_ERR_LINE_TOO_LONG, "POSP2P_ERR_LINE_TOO_LONG", "line longer than the maximum frame size"},
  {POSP2P_ERR_TIMESTAMP, "POSP2P_ERR_TIMESTAMP", "invalid legacy timestamp"},
  {POSP2P_ERR_DATAGRAM, "POSP2P_ERR_DATAGRAM", "not a discovery datagram"},
};

static const err_entry *err_find(int code) {
  for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
    if (err_table[i].code == code) return &err_table[i];
  return NULL;
}

const char *posp2p_err_name(int code) {
  const err_entry *e = err_find(code);
  return e ? e->name : "POSP2P_ERR_UNKNOWN";
}

const char *posp2p_strerror(int code) {
  const err_entry *e = err_find(code);
  return e ? e->text : "unknown error";
}

int posp2p_error_set(posp2p_error *err, int code, uint64_t offset,
                     const char *requirement, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    err->code = code;
    err->offset = offset;
    err->requirement = requirement ? requirement : "";
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- Allocation -------------------------------------------------------- */

static void *system_alloc(void *ud, size_t n) {
  (void)ud;
  return malloc(n);
}

static void system_free(void *ud, void *p) {
  (void)ud;
  free(p);
}

static const ProtobufCAllocator system_allocator = {system_alloc, system_free, NULL};
static const ProtobufCAllocator *default_allocator = &system_allocator;

const ProtobufCAllocator *posp2p_mem_default(void) { return default_allocator; }

/* jansson (the legacy JSON codec's parser) has one process-wide allocator
 * of its own; route it to the default too, so that the hook sees every
 * allocation the codec causes. */
static void *jansson_alloc(size_t n) {
  return default_allocator->alloc(default_allocator->allocator_data, n ? n : 1);
}

static void jansson_free(void *p) {
  if (p != NULL) default_allocator->free(default_allocator->allocator_data, p);
}

void posp2p_mem_set_default(const ProtobufCAllocator *a) {
  default_allocator = a ? a : &system_allocator;
  if (a != NULL)
    json_set_alloc_funcs(jansson_alloc, jansson_free);
  else
    json_set_alloc_funcs(malloc, free);
}

void *posp2p_mem_alloc(const ProtobufCAllocator *a, size_t n) {
  if (a == NULL) a = default_allocator;
  return a->alloc(a->allocator_data, n ? n : 1);
}

void *posp2p_mem_calloc(const ProtobufCAllocator *a, size_t n) {
  void *p = posp2p_mem_alloc(a, n);
  if (p != NULL) memset(p, 0, n ? n : 1);
  return p;
}

void posp2p_mem_free(const ProtobufCAllocator *a, void *p) {
  if (p == NULL) return;
  if (a == NULL) a = default_allocator;
  a->free(a->allocator_data, p);
}

char *posp2p_mem_strndup(const ProtobufCAllocator *a, const char *s, size_t n) {
  char *p = posp2p_mem_alloc(a, n + 1);
  if (p == NULL) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* ---- Arena ---------------------------------------------------------------
 * Blocks form a list; reset rewinds to the first block and keeps them all,
 * so a workload whose per-message footprint is stable stops allocating from
 * the parent after the first message. Requests larger than the block size
 * get a block of their own, which is kept and reused like the others. */

struct posp2p_arena_block {
  posp2p_arena_block *next;
  size_t size;
  size_t used;
  max_align_t data[];
};

#define ARENA_ALIGN (sizeof(max_align_t))

static void *arena_alloc(void *ud, size_t n) {
  posp2p_arena *arena = ud;
  n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
  /* Try the current block, then the kept blocks after it. */
  for (posp2p_arena_block *b = arena->cur; b != NULL; b = b->next) {
    if (b->size - b->used >= n) {
      void *p = (char *)b->data + b->used;
      b->used += n;
      arena->cur = b;
      return p;
    }
    if (b->next != NULL) b->next->used = 0;
  }
  size_t size = n > arena->block_size ? n : arena->block_size;
  posp2p_arena_block *nb =
      posp2p_mem_alloc(arena->parent, sizeof(posp2p_arena_block) + size);
  if (nb == NULL) return NULL;
  nb->size = size;
  nb->used = n;
  nb->next = NULL;
  /* Append at the end so that reset order stays first-to-last. */
  if (arena->blocks == NULL) {
    arena->blocks = nb;
  } else {
    posp2p_arena_block *last = arena->cur ? arena->cur : arena->blocks;
    while (last->next != NULL) last = last->next;
    last->next = nb;
  }
  arena->cur = nb;
  return nb->data;
}

static void arena_free(void *ud, void *p) {
  /* Individual frees are no-ops: memory returns at reset. */
  (void)ud;
  (void)p;
}

void posp2p_arena_init(posp2p_arena *arena, const ProtobufCAllocator *parent,
                       size_t block_size) {
  arena->base.alloc = arena_alloc;
  arena->base.free = arena_free;
  arena->base.allocator_data = arena;
  arena->parent = parent;
  arena->blocks = NULL;
  arena->cur = NULL;
  arena->block_size = block_size ? block_size : 16384;
}

void posp2p_arena_reset(posp2p_arena *arena) {
  if (arena->blocks != NULL) arena->blocks->used = 0;
  arena->cur = arena->blocks;
}

void posp2p_arena_trim(posp2p_arena *arena, size_t keep) {
  posp2p_arena_block **link = &arena->blocks;
  for (size_t i = 0; i < keep && *link != NULL; i++) link = &(*link)->next;
  posp2p_arena_block *b = *link;
  *link = NULL;
  while (b != NULL) {
    posp2p_arena_block *next = b->next;
    posp2p_mem_free(arena->parent, b);
    b = next;
  }
  posp2p_arena_reset(arena);
}

void posp2p_arena_free(posp2p_arena *arena) {
  posp2p_arena_block *b = arena->blocks;
  while (b != NULL) {
    posp2p_arena_block *next = b->next;
    posp2p_mem_free(arena->parent, b);
    b = next;
  }
  arena->blocks = NULL;
  arena->cur = NULL;
}

/* ---- Capped buffer ------------------------------------------------------ */

void posp2p_buf_init(posp2p_buf *b, size_t max, const ProtobufCAllocator *a) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
  b->alloc = a;
}

void posp2p_buf_free(posp2p_buf *b) {
  posp2p_mem_free(b->alloc, b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

int posp2p_buf_reserve(posp2p_buf *b, size_t extra) {
  if (extra > b->max || b->len > b->max - extra) return POSP2P_ERR_NOSPACE;
  size_t need = b->len + extra;
  if (need <= b->cap) return POSP2P_OK;
  size_t ncap = b->cap ? b->cap : 64;
  while (ncap < need) ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
  if (ncap > b->max) ncap = b->max;
  uint8_t *nd = posp2p_mem_alloc(b->alloc, ncap);
  if (nd == NULL) return POSP2P_ERR_NOMEM;
  if (b->len) memcpy(nd, b->data, b->len);
  posp2p_mem_free(b->alloc, b->data);
  b->data = nd;
  b->cap = ncap;
  return POSP2P_OK;
}

int posp2p_buf_append(posp2p_buf *b, const void *p, size_t n) {
  int rv = posp2p_buf_reserve(b, n);
  if (rv != POSP2P_OK) return rv;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return POSP2P_OK;
}

void posp2p_buf_consume(posp2p_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}
