#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

void fl_plan_device_id(uint64_t seed, uint32_t idx, uint8_t out[16]) {
  uint64_t st = seed ^ UINT64_C(0x5157504F53503250) ^ ((uint64_t)idx << 20);
  uint64_t a = fl_splitmix64(&st), b = fl_splitmix64(&st);
  memcpy(out, &a, 8);
  memcpy(out + 8, &b, 8);
  out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
  out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

int fl_plan_auto_workers(const fl_config *c) {
  uint32_t total = fl_config_total(c);
  if (c->mode == FL_MODE_NETNS) return (int)c->namespaces;
  if (total <= 300) return 0;
  uint32_t clients = total - c->n[FL_ROLE_MAIN];
  /* One worker for the main POS (and the kitchen and displays), the
   * clients split so that each worker stays far below the 20,000
   * descriptor limit (two per client: its TCP connection and its UDP
   * socket). */
  int w = 1 + (int)((clients + 3999) / 4000);
  if (w < 2) w = 2;
  return w;
}

static void put_idx(fl_kmap *m, const fl_key *k, uint32_t idx) {
  (void)fl_kmap_put(m, k, (void *)(uintptr_t)(idx + 1u));
}

static uint32_t get_idx(const fl_kmap *m, const fl_key *k) {
  void *v = fl_kmap_get(m, k);
  return v ? (uint32_t)((uintptr_t)v - 1u) : FL_NO_DEV;
}

static bool sel_hits(const fl_plan *p, const fl_sel *s, const fl_pdev *d) {
  for (size_t i = 0; i < s->n; i++) {
    const fl_sel_item *it = &s->items[i];
    if (it->role == 0) return true;
    if (it->role == -1) {
      if (d->role != FL_ROLE_MAIN) return true;
      continue;
    }
    if (it->role != d->role) continue;
    if (it->fraction > 0) {
      uint32_t k = (uint32_t)ceil(it->fraction * (double)p->count[d->role]);
      if (d->role_idx < k) return true;
    } else if (d->role_idx >= it->lo && d->role_idx <= it->hi) {
      return true;
    }
  }
  return false;
}

int fl_plan_build(fl_plan *p, const fl_config *c, int workers) {
  memset(p, 0, sizeof(*p));
  p->cfg = c;
  p->nworkers = workers;
  p->nns = c->mode == FL_MODE_NETNS ? (int)c->namespaces : 0;
  fl_kmap_init(&p->by_id);
  fl_kmap_init(&p->by_ip);
  static const int order[] = {FL_ROLE_MAIN, FL_ROLE_KDS, FL_ROLE_DISPLAY,
                              FL_ROLE_SECONDARY, FL_ROLE_TABLET};
  uint32_t n = 0;
  for (size_t k = 0; k < 5; k++) {
    p->first[order[k]] = n;
    p->count[order[k]] = c->n[order[k]];
    n += c->n[order[k]];
  }
  p->n = n;
  p->dev = calloc((size_t)n + 1, sizeof(*p->dev));
  if (p->dev == NULL) return -1;
  p->main_external = c->has_target;
  p->main_idx = c->has_target ? n : (c->n[FL_ROLE_MAIN] ? p->first[FL_ROLE_MAIN] : FL_NO_DEV);

  /* Namespace groups: namespace 0 holds the main POS and the other
   * stationary devices (up to 250), the rest are spread in blocks. */
  uint32_t non_tablet = n - c->n[FL_ROLE_TABLET];
  uint32_t ns_slots[256] = {0};
  for (uint32_t i = 0; i < n; i++) {
    fl_pdev *d = &p->dev[i];
    d->idx = i;
    for (size_t k = 0; k < 5; k++) {
      int r = order[k];
      if (i >= p->first[r] && i < p->first[r] + p->count[r]) {
        d->role = r;
        d->role_idx = i - p->first[r];
      }
    }
    fl_plan_device_id(c->seed, i, d->idb);
    fl_uuid_text(d->idb, d->id);
    snprintf(d->name, sizeof(d->name), "%s-%u", fl_role_short(d->role), d->role_idx);
    d->ns = -1;
    if (c->mode == FL_MODE_NETNS) {
      int nsn = (int)c->namespaces;
      int ns;
      if (i < non_tablet && i < 250) {
        ns = 0;
      } else {
        /* Tablets (and overflow) in contiguous blocks over 1..nsn-1. */
        uint32_t rest = n - (non_tablet < 250 ? non_tablet : 250);
        uint32_t j = i - (non_tablet < 250 ? non_tablet : 250);
        uint32_t per = (rest + (uint32_t)(nsn - 1) - 1) / (uint32_t)(nsn - 1);
        if (per == 0) per = 1;
        ns = 1 + (int)(j / per);
        if (ns >= nsn) ns = nsn - 1;
      }
      d->ns = ns;
      uint32_t slot = ns_slots[ns]++;
      d->ip = c->subnet | ((uint32_t)(ns + 1) << 8) | (slot + 1);
      d->worker = ns;
    } else {
      uint32_t a = ((c->ip_base >> 16) & 0xffu) + i / 62500u;
      uint32_t b = (i / 250u) % 250u;
      d->ip = (127u << 24) | (a << 16) | (b << 8) | (i % 250u + 1u);
      if (workers <= 1) {
        d->worker = 0;
      } else if (d->role != FL_ROLE_TABLET) {
        d->worker = 0;
      } else {
        uint32_t nt = c->n[FL_ROLE_TABLET];
        uint32_t per = (nt + (uint32_t)(workers - 1) - 1) / (uint32_t)(workers - 1);
        d->worker = 1 + (int)(d->role_idx / (per ? per : 1));
        if (d->worker >= workers) d->worker = workers - 1;
      }
    }
    fl_key kid;
    memcpy(kid.b, d->idb, 16);
    put_idx(&p->by_id, &kid, i);
    fl_key kip = fl_key_u64(d->ip, 0);
    put_idx(&p->by_ip, &kip, i);
  }
  if (c->has_target) {
    fl_pdev *d = &p->dev[n];
    d->idx = n;
    d->role = FL_ROLE_MAIN;
    d->worker = -1;
    d->ns = -1;
    d->ip = c->target_ip;
    snprintf(d->name, sizeof(d->name), "target-main");
    snprintf(d->id, sizeof(d->id), "(unknown)");
    fl_key kip = fl_key_u64(d->ip, 0);
    put_idx(&p->by_ip, &kip, n);
  }
  for (size_t f = 0; f < c->nfaults; f++) {
    p->fault_mask[f] = calloc((size_t)n + 1, 1);
    if (p->fault_mask[f] == NULL) return -1;
    const fl_fault *ft = &c->faults[f];
    for (uint32_t i = 0; i < n; i++) {
      if (!sel_hits(p, &ft->devices, &p->dev[i])) continue;
      p->fault_mask[f][i] = 1;
      if ((ft->kind == FL_FAULT_KILL || ft->kind == FL_FAULT_MAIN_RESTART) &&
          c->store == FL_STORE_AUTO)
        p->dev[i].store = true;
    }
  }
  if (c->store == FL_STORE_ALL)
    for (uint32_t i = 0; i < n; i++) p->dev[i].store = true;
  return 0;
}

void fl_plan_free(fl_plan *p) {
  free(p->dev);
  for (size_t f = 0; f < FL_MAX_FAULTS; f++) free(p->fault_mask[f]);
  fl_kmap_free(&p->by_id);
  fl_kmap_free(&p->by_ip);
  memset(p, 0, sizeof(*p));
}

uint32_t fl_plan_by_idb(const fl_plan *p, const uint8_t idb[16]) {
  fl_key k;
  memcpy(k.b, idb, 16);
  return get_idx(&p->by_id, &k);
}

uint32_t fl_plan_by_id(const fl_plan *p, const char *id) {
  uint8_t b[16];
  if (!fl_uuid_parse(id, b)) return FL_NO_DEV;
  return fl_plan_by_idb(p, b);
}

uint32_t fl_plan_by_ip(const fl_plan *p, uint32_t ip) {
  fl_key k = fl_key_u64(ip, 0);
  return get_idx(&p->by_ip, &k);
}

void fl_plan_set_external_id(fl_plan *p, const char *id) {
  if (!p->main_external) return;
  fl_pdev *d = &p->dev[p->n];
  uint8_t b[16];
  if (!fl_uuid_parse(id, b)) return;
  if (memcmp(d->idb, b, 16) == 0 && d->id[0] != '(') return;
  memcpy(d->idb, b, 16);
  fl_uuid_text(b, d->id);
  fl_key k;
  memcpy(k.b, b, 16);
  put_idx(&p->by_id, &k, p->n);
}

bool fl_plan_fault_hits(const fl_plan *p, size_t fault, uint32_t idx) {
  if (fault >= FL_MAX_FAULTS || p->fault_mask[fault] == NULL || idx > p->n) return false;
  return p->fault_mask[fault][idx] != 0;
}
