/* A hash map from 16-byte keys (UUIDs, or small structs packed into 16
 * bytes) to pointers: open addressing, linear probing, backward-shift
 * deletion (no tombstones), power-of-two capacity kept under 70% load. */
#ifndef FL_KMAP_H
#define FL_KMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint8_t b[16];
} fl_key;

typedef struct {
  fl_key key;
  void *val; /* NULL marks an empty slot: values are never NULL */
} fl_kslot;

typedef struct {
  fl_kslot *slots;
  size_t cap, len;
} fl_kmap;

void fl_kmap_init(fl_kmap *m);
void fl_kmap_free(fl_kmap *m);
void *fl_kmap_get(const fl_kmap *m, const fl_key *k);
/* Insert or replace; val must not be NULL. Returns 0, or -1 on NOMEM. */
int fl_kmap_put(fl_kmap *m, const fl_key *k, void *val);
/* Remove; returns the old value or NULL. */
void *fl_kmap_del(fl_kmap *m, const fl_key *k);

/* Iterate: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].val) ... */

fl_key fl_key_u64(uint64_t a, uint64_t b);
fl_key fl_key_ptr(const void *p, uint64_t b);
/* Canonical UUID text (either case) -> 16 bytes. */
bool fl_uuid_parse(const char *s, uint8_t out[16]);
void fl_uuid_text(const uint8_t b[16], char out[37]);

#endif
