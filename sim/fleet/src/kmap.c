#include "kmap.h"

#include <stdlib.h>
#include <string.h>

void fl_kmap_init(fl_kmap *m) { memset(m, 0, sizeof(*m)); }

void fl_kmap_free(fl_kmap *m) {
  free(m->slots);
  memset(m, 0, sizeof(*m));
}

static uint64_t hash(const fl_key *k) {
  uint64_t a, b;
  memcpy(&a, k->b, 8);
  memcpy(&b, k->b + 8, 8);
  uint64_t h = a * UINT64_C(0x9E3779B97F4A7C15) ^ (b + UINT64_C(0x632BE59BD9B4E019));
  h ^= h >> 29;
  h *= UINT64_C(0xBF58476D1CE4E5B9);
  h ^= h >> 32;
  return h;
}

static bool eq(const fl_key *a, const fl_key *b) { return memcmp(a->b, b->b, 16) == 0; }

void *fl_kmap_get(const fl_kmap *m, const fl_key *k) {
  if (m->cap == 0) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = hash(k) & mask;; i = (i + 1) & mask) {
    if (m->slots[i].val == NULL) return NULL;
    if (eq(&m->slots[i].key, k)) return m->slots[i].val;
  }
}

static int grow(fl_kmap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 16;
  fl_kslot *ns = calloc(ncap, sizeof(*ns));
  if (ns == NULL) return -1;
  size_t mask = ncap - 1;
  for (size_t j = 0; j < m->cap; j++) {
    if (m->slots[j].val == NULL) continue;
    size_t i = hash(&m->slots[j].key) & mask;
    while (ns[i].val != NULL) i = (i + 1) & mask;
    ns[i] = m->slots[j];
  }
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

int fl_kmap_put(fl_kmap *m, const fl_key *k, void *val) {
  if ((m->len + 1) * 10 > m->cap * 7 && grow(m) < 0) return -1;
  size_t mask = m->cap - 1;
  for (size_t i = hash(k) & mask;; i = (i + 1) & mask) {
    if (m->slots[i].val == NULL) {
      m->slots[i].key = *k;
      m->slots[i].val = val;
      m->len++;
      return 0;
    }
    if (eq(&m->slots[i].key, k)) {
      m->slots[i].val = val;
      return 0;
    }
  }
}

void *fl_kmap_del(fl_kmap *m, const fl_key *k) {
  if (m->cap == 0) return NULL;
  size_t mask = m->cap - 1;
  size_t i = hash(k) & mask;
  for (;; i = (i + 1) & mask) {
    if (m->slots[i].val == NULL) return NULL;
    if (eq(&m->slots[i].key, k)) break;
  }
  void *old = m->slots[i].val;
  /* Backward shift: move later members of the probe run into the hole. */
  size_t hole = i;
  for (size_t j = (i + 1) & mask; m->slots[j].val != NULL; j = (j + 1) & mask) {
    size_t home = hash(&m->slots[j].key) & mask;
    /* j may move to hole if home is not in (hole, j] cyclically. */
    bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!in_range) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].val = NULL;
  m->len--;
  return old;
}

fl_key fl_key_u64(uint64_t a, uint64_t b) {
  fl_key k;
  memcpy(k.b, &a, 8);
  memcpy(k.b + 8, &b, 8);
  return k;
}

fl_key fl_key_ptr(const void *p, uint64_t b) { return fl_key_u64((uint64_t)(uintptr_t)p, b); }

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool fl_uuid_parse(const char *s, uint8_t out[16]) {
  if (s == NULL) return false;
  size_t j = 0;
  for (size_t i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
      continue;
    }
    int h = hexval(s[i]);
    if (h < 0) return false;
    if ((j & 1) == 0) out[j / 2] = (uint8_t)(h << 4);
    else out[j / 2] |= (uint8_t)h;
    j++;
  }
  return s[36] == '\0';
}

void fl_uuid_text(const uint8_t b[16], char out[37]) {
  static const char hx[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = hx[b[i] >> 4];
    out[o++] = hx[b[i] & 15];
  }
  out[o] = '\0';
}
