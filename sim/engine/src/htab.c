/* Open-addressing hash table over void* entries (see peer_int.h).
 *
 * The table stores only pointers; hashing and key comparison are supplied
 * by the caller, so the same code indexes connections, devices, outbox
 * entries and dedup ids. Linear probing keeps lookups cache-friendly;
 * deletions leave tombstones that are dropped when the table is rebuilt. */
#include <string.h>

#include "peer_int.h"

char posp2p__htab_tomb_;

#define HTAB_MIN 8u

void *posp2p__htab_find(const posp2p__htab *t, uint32_t hash, const void *key,
                        posp2p__htab_eq eq) {
  if (t->cap == 0) return NULL;
  uint32_t mask = t->cap - 1;
  for (uint32_t i = hash & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
    void *e = t->slots[i];
    if (e == NULL) return NULL;
    if (e != POSP2P__HTAB_TOMB && eq(e, key)) return e;
  }
  return NULL;
}

static int htab_rebuild(posp2p__htab *t, const ProtobufCAllocator *a,
                        uint32_t cap, posp2p__htab_hash hf) {
  void **slots = posp2p_mem_calloc(a, (size_t)cap * sizeof(void *));
  if (slots == NULL) return POSP2P_ERR_NOMEM;
  uint32_t mask = cap - 1;
  for (uint32_t i = 0; i < t->cap; i++) {
    void *e = t->slots[i];
    if (e == NULL || e == POSP2P__HTAB_TOMB) continue;
    uint32_t j = hf(e) & mask;
    while (slots[j] != NULL) j = (j + 1) & mask;
    slots[j] = e;
  }
  posp2p_mem_free(a, t->slots);
  t->slots = slots;
  t->cap = cap;
  t->used = t->len;
  return 0;
}

int posp2p__htab_insert(posp2p__htab *t, const ProtobufCAllocator *a,
                        uint32_t hash, void *entry, posp2p__htab_hash hf) {
  /* Keep the load (entries plus tombstones) at or below 3/4 so that probe
   * sequences stay short and always end at an empty slot. */
  if ((t->used + 1) * 4 > t->cap * 3) {
    uint32_t cap = t->cap ? t->cap : HTAB_MIN;
    while ((t->len + 1) * 4 > cap * 3 / 2 && cap < (1u << 30)) cap *= 2;
    if ((t->len + 1) * 4 > cap * 3) return POSP2P_ERR_NOMEM;
    int rc = htab_rebuild(t, a, cap, hf);
    if (rc != 0) return rc;
  }
  uint32_t mask = t->cap - 1;
  uint32_t i = hash & mask;
  while (t->slots[i] != NULL && t->slots[i] != POSP2P__HTAB_TOMB)
    i = (i + 1) & mask;
  if (t->slots[i] == NULL) t->used++;
  t->slots[i] = entry;
  t->len++;
  return 0;
}

bool posp2p__htab_remove(posp2p__htab *t, uint32_t hash, const void *entry) {
  if (t->cap == 0) return false;
  uint32_t mask = t->cap - 1;
  for (uint32_t i = hash & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
    void *e = t->slots[i];
    if (e == NULL) return false;
    if (e == entry) {
      t->slots[i] = POSP2P__HTAB_TOMB;
      t->len--;
      return true;
    }
  }
  return false;
}

void posp2p__htab_free(posp2p__htab *t, const ProtobufCAllocator *a) {
  posp2p_mem_free(a, t->slots);
  memset(t, 0, sizeof *t);
}
