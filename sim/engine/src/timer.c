/* Binary min-heap of timers ordered by due time.
 *
 * Every connection, outbox entry and reconnect owns one embedded timer, so
 * posp2p_peer_next_deadline is O(1) and a tick costs O(log n) per expired
 * timer however many connections the main POS has. Timers with equal due
 * times fire in no particular order; nothing in the engine depends on it. */
#include "peer_int.h"

static void heap_swap(posp2p__heap *h, uint32_t a, uint32_t b) {
  posp2p__timer *t = h->v[a];
  h->v[a] = h->v[b];
  h->v[b] = t;
  h->v[a]->idx = a;
  h->v[b]->idx = b;
}

static void heap_up(posp2p__heap *h, uint32_t i) {
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (h->v[parent]->due <= h->v[i]->due) break;
    heap_swap(h, i, parent);
    i = parent;
  }
}

static void heap_down(posp2p__heap *h, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < h->len && h->v[l]->due < h->v[m]->due) m = l;
    if (r < h->len && h->v[r]->due < h->v[m]->due) m = r;
    if (m == i) break;
    heap_swap(h, i, m);
    i = m;
  }
}

void posp2p__timer_init(posp2p__timer *t, posp2p__timer_kind kind) {
  t->due = 0;
  t->idx = UINT32_MAX;
  t->kind = (uint8_t)kind;
}

int posp2p__timer_set(posp2p_peer *p, posp2p__timer *t, uint64_t due) {
  posp2p__heap *h = &p->timers;
  if (t->idx != UINT32_MAX) {
    uint64_t old = t->due;
    t->due = due;
    if (due < old)
      heap_up(h, t->idx);
    else
      heap_down(h, t->idx);
    return 0;
  }
  if (h->len == h->cap) {
    uint32_t cap = h->cap ? h->cap * 2 : 8;
    posp2p__timer **v = posp2p__alloc(p, (size_t)cap * sizeof *v);
    if (v == NULL) return POSP2P_ERR_NOMEM;
    for (uint32_t i = 0; i < h->len; i++) v[i] = h->v[i];
    posp2p__free(p, h->v);
    h->v = v;
    h->cap = cap;
  }
  t->due = due;
  t->idx = h->len;
  h->v[h->len++] = t;
  heap_up(h, t->idx);
  return 0;
}

void posp2p__timer_stop(posp2p_peer *p, posp2p__timer *t) {
  posp2p__heap *h = &p->timers;
  if (t->idx == UINT32_MAX) return;
  if (t->idx >= h->len || h->v[t->idx] != t) {
    /* Heap already emptied (posp2p_peer_del tears down in any order). */
    t->idx = UINT32_MAX;
    return;
  }
  uint32_t i = t->idx;
  h->len--;
  if (i != h->len) {
    h->v[i] = h->v[h->len];
    h->v[i]->idx = i;
    heap_up(h, i);
    heap_down(h, h->v[i]->idx);
  }
  t->idx = UINT32_MAX;
}

posp2p__timer *posp2p__heap_top(const posp2p__heap *h) {
  return h->len ? h->v[0] : NULL;
}

void posp2p__heap_free(posp2p__heap *h, const ProtobufCAllocator *a) {
  posp2p_mem_free(a, h->v);
  h->v = NULL;
  h->len = h->cap = 0;
}
