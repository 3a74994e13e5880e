/* Internal declarations of the service API (not installed). Names are
 * posp2p__api_*. */
#ifndef POSP2P_API_INT_H
#define POSP2P_API_INT_H

#include "posp2p/service.h"

/* Every allocation goes through the process-wide posp2p allocator hook. */
#define API_MALLOC(n) posp2p_mem_alloc(NULL, (n))
#define API_CALLOC(n) posp2p_mem_calloc(NULL, (n))
#define API_FREE(p) posp2p_mem_free(NULL, (p))

/* A string-keyed hash map (open addressing, linear probing, backward-shift
 * deletion, so no tombstones). Keys are not copied: each key must stay
 * valid, unchanged, while its entry is in the map (callers point it into
 * the value they store). */
typedef struct {
  const char *key;
  void *value;
  uint32_t hash;
} posp2p__api_slot;

typedef struct {
  posp2p__api_slot *slots;
  size_t cap;  /* power of two, or 0 */
  size_t count;
} posp2p__api_map;

void *posp2p__api_map_get(const posp2p__api_map *m, const char *key);
/* Insert or replace. Errors: POSP2P_ERR_NOMEM. */
int posp2p__api_map_put(posp2p__api_map *m, const char *key, void *value);
/* Remove; returns the value that was stored, or NULL. */
void *posp2p__api_map_del(posp2p__api_map *m, const char *key);
void posp2p__api_map_free(posp2p__api_map *m);

/* A copy of s (NULL for NULL) through the allocator. */
char *posp2p__api_strdup(const char *s);

#endif /* POSP2P_API_INT_H */
