/* String-keyed hash map for the service API (see api_int.h). The load
 * factor stays at or below 1/2, so probe sequences are short and a free
 * slot always exists. */
#include <string.h>

#include "api_int.h"

static uint32_t str_hash(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) {
    h ^= (uint8_t)*s;
    h *= 16777619u;
  }
  return h;
}

void *posp2p__api_map_get(const posp2p__api_map *m, const char *key) {
  if (m->cap == 0 || key == NULL) return NULL;
  uint32_t h = str_hash(key);
  for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    const posp2p__api_slot *sl = &m->slots[i];
    if (sl->key == NULL) return NULL;
    if (sl->hash == h && strcmp(sl->key, key) == 0) return sl->value;
  }
}

static void place(posp2p__api_slot *slots, size_t cap, const posp2p__api_slot *e) {
  size_t i = e->hash & (cap - 1);
  while (slots[i].key != NULL) i = (i + 1) & (cap - 1);
  slots[i] = *e;
}

static int grow(posp2p__api_map *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  posp2p__api_slot *ns = API_CALLOC(ncap * sizeof(*ns));
  if (ns == NULL) return POSP2P_ERR_NOMEM;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key != NULL) place(ns, ncap, &m->slots[i]);
  API_FREE(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

int posp2p__api_map_put(posp2p__api_map *m, const char *key, void *value) {
  if (key == NULL) return POSP2P_ERR_INVAL;
  uint32_t h = str_hash(key);
  if (m->cap != 0) {
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
      posp2p__api_slot *sl = &m->slots[i];
      if (sl->key == NULL) break;
      if (sl->hash == h && strcmp(sl->key, key) == 0) {
        sl->key = key; /* the new owner's copy of the same text */
        sl->value = value;
        return 0;
      }
    }
  }
  if ((m->count + 1) * 2 > m->cap) {
    int r = grow(m);
    if (r != 0) return r;
  }
  posp2p__api_slot e = {key, value, h};
  place(m->slots, m->cap, &e);
  m->count++;
  return 0;
}

void *posp2p__api_map_del(posp2p__api_map *m, const char *key) {
  if (m->cap == 0 || key == NULL) return NULL;
  uint32_t h = str_hash(key);
  size_t mask = m->cap - 1, i = h & mask;
  for (;; i = (i + 1) & mask) {
    posp2p__api_slot *sl = &m->slots[i];
    if (sl->key == NULL) return NULL;
    if (sl->hash == h && strcmp(sl->key, key) == 0) break;
  }
  void *value = m->slots[i].value;
  /* Backward-shift: move later members of the probe run into the hole
   * unless they already sit at or after their home slot. */
  size_t hole = i;
  for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
    size_t home = m->slots[j].hash & mask;
    bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
    if (movable) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].key = NULL;
  m->slots[hole].value = NULL;
  m->count--;
  return value;
}

void posp2p__api_map_free(posp2p__api_map *m) {
  API_FREE(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}

char *posp2p__api_strdup(const char *s) {
  if (s == NULL) return NULL;
  return posp2p_mem_strndup(NULL, s, strlen(s));
}
