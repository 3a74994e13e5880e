#include "memstore.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmap.h"

/* Outbox: message id -> entry with the envelope and one record per
 * recipient. Entries keep their insertion number so that a restore
 * replays them in the original order. */
typedef struct {
  uint8_t rcpt[16];
  uint32_t attempts;
  bool custody;
  uint64_t seq;
} obx_rcpt;

typedef struct {
  uint8_t mid[16];
  uint8_t *env;
  size_t env_len;
  obx_rcpt *r;
  size_t nr, cap;
} obx_ent;

/* Dedup: a FIFO of (originator, id, time) plus a membership map keyed by
 * the id (ids are random UUIDs; the originator is compared too). */
typedef struct dd_ent {
  uint8_t orig[16], mid[16];
  uint64_t t;
  struct dd_ent *next;
} dd_ent;

typedef struct {
  posp2p_peer_device dev;
  char name[128];
} reg_ent;

struct fl_memstore {
  fl_kmap obx;
  uint64_t obx_seq;
  size_t obx_count, bytes;
  fl_kmap dd;        /* mid -> dd_ent */
  fl_kmap dd_orig;   /* orig -> count (as integer + 1) */
  dd_ent *dd_head, *dd_tail;
  size_t dd_count;
  uint32_t dedup_count;
  uint64_t window_ms;
  fl_kmap reg;       /* id -> reg_ent */
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

fl_memstore *fl_memstore_new(uint32_t dedup_count, uint64_t dedup_window_ms) {
  fl_memstore *s = calloc(1, sizeof(*s));
  if (s == NULL) return NULL;
  fl_kmap_init(&s->obx);
  fl_kmap_init(&s->dd);
  fl_kmap_init(&s->dd_orig);
  fl_kmap_init(&s->reg);
  s->dedup_count = dedup_count ? dedup_count : 4096;
  s->window_ms = dedup_window_ms ? dedup_window_ms : 600000;
  return s;
}

static void obx_ent_free(obx_ent *e) {
  free(e->env);
  free(e->r);
  free(e);
}

void fl_memstore_free(fl_memstore *s) {
  if (s == NULL) return;
  for (size_t i = 0; i < s->obx.cap; i++)
    if (s->obx.slots[i].val) obx_ent_free(s->obx.slots[i].val);
  fl_kmap_free(&s->obx);
  for (dd_ent *d = s->dd_head, *n; d; d = n) {
    n = d->next;
    free(d);
  }
  fl_kmap_free(&s->dd);
  fl_kmap_free(&s->dd_orig);
  for (size_t i = 0; i < s->reg.cap; i++) free(s->reg.slots[i].val);
  fl_kmap_free(&s->reg);
  free(s);
}

static int cb_outbox_put(posp2p_peer *p, const posp2p_peer_outbox_rec *rec, void *ud) {
  fl_memstore *s = ud;
  (void)p;
  fl_key k;
  uint8_t rcpt[16];
  if (!fl_uuid_parse(rec->message_id, k.b) || !fl_uuid_parse(rec->recipient_id, rcpt))
    return POSP2P_ERR_INVAL;
  obx_ent *e = fl_kmap_get(&s->obx, &k);
  if (e == NULL) {
    e = calloc(1, sizeof(*e));
    if (e == NULL) return POSP2P_ERR_NOMEM;
    memcpy(e->mid, k.b, 16);
    e->env = malloc(rec->envelope_len ? rec->envelope_len : 1);
    if (e->env == NULL || fl_kmap_put(&s->obx, &k, e) < 0) {
      obx_ent_free(e);
      return POSP2P_ERR_NOMEM;
    }
    memcpy(e->env, rec->envelope, rec->envelope_len);
    e->env_len = rec->envelope_len;
    s->bytes += rec->envelope_len + sizeof(*e);
  }
  for (size_t i = 0; i < e->nr; i++) {
    if (memcmp(e->r[i].rcpt, rcpt, 16) == 0) {
      e->r[i].attempts = rec->attempts;
      e->r[i].custody = rec->custody;
      return 0;
    }
  }
  if (e->nr == e->cap) {
    size_t nc = e->cap ? e->cap * 2 : 1;
    obx_rcpt *nr = realloc(e->r, nc * sizeof(*nr));
    if (nr == NULL) return POSP2P_ERR_NOMEM;
    e->r = nr;
    e->cap = nc;
  }
  obx_rcpt *r = &e->r[e->nr++];
  memcpy(r->rcpt, rcpt, 16);
  r->attempts = rec->attempts;
  r->custody = rec->custody;
  r->seq = ++s->obx_seq;
  s->obx_count++;
  s->bytes += sizeof(*r);
  return 0;
}

static int cb_outbox_del(posp2p_peer *p, const char *mid, const char *rcpt_id, void *ud) {
  fl_memstore *s = ud;
  (void)p;
  fl_key k;
  uint8_t rcpt[16];
  if (!fl_uuid_parse(mid, k.b) || !fl_uuid_parse(rcpt_id, rcpt)) return 0;
  obx_ent *e = fl_kmap_get(&s->obx, &k);
  if (e == NULL) return 0;
  for (size_t i = 0; i < e->nr; i++) {
    if (memcmp(e->r[i].rcpt, rcpt, 16) != 0) continue;
    e->r[i] = e->r[--e->nr];
    s->obx_count--;
    s->bytes -= sizeof(obx_rcpt);
    break;
  }
  if (e->nr == 0) {
    fl_kmap_del(&s->obx, &k);
    s->bytes -= e->env_len + sizeof(*e);
    obx_ent_free(e);
  }
  return 0;
}

static size_t orig_count(fl_memstore *s, const uint8_t orig[16]) {
  fl_key k;
  memcpy(k.b, orig, 16);
  void *v = fl_kmap_get(&s->dd_orig, &k);
  return v ? (size_t)((uintptr_t)v - 1u) : 0;
}

static void orig_count_set(fl_memstore *s, const uint8_t orig[16], size_t n) {
  fl_key k;
  memcpy(k.b, orig, 16);
  if (n == 0) fl_kmap_del(&s->dd_orig, &k);
  else (void)fl_kmap_put(&s->dd_orig, &k, (void *)(uintptr_t)(n + 1u));
}

/* Forget ids older than the window whose originator keeps more than
 * dedup_count; stop at the first that must stay (the FIFO is in time
 * order, so this bounds the work and never drops a required id). */
static void dd_prune(fl_memstore *s, uint64_t now) {
  while (s->dd_head != NULL) {
    dd_ent *d = s->dd_head;
    if (d->t + s->window_ms > now) break;
    size_t n = orig_count(s, d->orig);
    if (n <= s->dedup_count) break;
    s->dd_head = d->next;
    if (s->dd_head == NULL) s->dd_tail = NULL;
    fl_key k;
    memcpy(k.b, d->mid, 16);
    if (fl_kmap_get(&s->dd, &k) == d) fl_kmap_del(&s->dd, &k);
    orig_count_set(s, d->orig, n - 1);
    s->dd_count--;
    s->bytes -= sizeof(*d);
    free(d);
  }
}

static int cb_dedup(posp2p_peer *p, const char *orig_id, const char *mid, void *ud) {
  fl_memstore *s = ud;
  (void)p;
  fl_key k;
  uint8_t orig[16];
  if (!fl_uuid_parse(mid, k.b) || !fl_uuid_parse(orig_id, orig)) return POSP2P_ERR_INVAL;
  dd_ent *have = fl_kmap_get(&s->dd, &k);
  if (have != NULL && memcmp(have->orig, orig, 16) == 0) return 1;
  dd_ent *d = calloc(1, sizeof(*d));
  if (d == NULL) return POSP2P_ERR_NOMEM;
  memcpy(d->orig, orig, 16);
  memcpy(d->mid, k.b, 16);
  d->t = mono_ms();
  if (fl_kmap_put(&s->dd, &k, d) < 0) {
    free(d);
    return POSP2P_ERR_NOMEM;
  }
  if (s->dd_tail) s->dd_tail->next = d;
  else s->dd_head = d;
  s->dd_tail = d;
  s->dd_count++;
  s->bytes += sizeof(*d);
  orig_count_set(s, orig, orig_count(s, orig) + 1);
  dd_prune(s, d->t);
  return 0;
}

static int cb_registry(posp2p_peer *p, const posp2p_peer_device *d, void *ud) {
  fl_memstore *s = ud;
  (void)p;
  fl_key k;
  if (!fl_uuid_parse(d->id, k.b)) return 0;
  reg_ent *e = fl_kmap_get(&s->reg, &k);
  if (e == NULL) {
    e = calloc(1, sizeof(*e));
    if (e == NULL || fl_kmap_put(&s->reg, &k, e) < 0) {
      free(e);
      return POSP2P_ERR_NOMEM;
    }
    s->bytes += sizeof(*e);
  }
  e->dev = *d;
  size_t nl = strlen(d->name ? d->name : "");
  if (nl >= sizeof(e->name)) nl = sizeof(e->name) - 1;
  memcpy(e->name, d->name ? d->name : "", nl);
  e->name[nl] = '\0';
  e->dev.name = e->name;
  return 0;
}

void fl_memstore_iface(fl_memstore *s, posp2p_peer_store *iface) {
  memset(iface, 0, sizeof(*iface));
  iface->outbox_put = cb_outbox_put;
  iface->outbox_del = cb_outbox_del;
  iface->dedup_check_insert = cb_dedup;
  iface->registry_put = cb_registry;
  iface->user_data = s;
}

typedef struct {
  obx_ent *e;
  size_t i;
  uint64_t seq;
} restore_item;

static int cmp_seq(const void *a, const void *b) {
  const restore_item *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int fl_memstore_restore(fl_memstore *s, posp2p_peer *p, uint64_t now_ms,
                        fl_memstore_counts *counts) {
  fl_memstore_counts c = {0, 0, 0, 0};
  for (size_t i = 0; i < s->reg.cap; i++) {
    reg_ent *e = s->reg.slots[i].val;
    if (e == NULL) continue;
    if (posp2p_peer_restore_device(p, &e->dev) == 0) c.devices++;
    else c.refused++;
  }
  dd_prune(s, mono_ms());
  for (dd_ent *d = s->dd_head; d; d = d->next) {
    char o[37], m[37];
    fl_uuid_text(d->orig, o);
    fl_uuid_text(d->mid, m);
    int r = posp2p_peer_restore_dedup(p, o, m, now_ms);
    if (r == POSP2P_ERR_NOMEM) return -1;
    if (r == 0) c.dedup++;
    else c.refused++;
  }
  restore_item *items = NULL;
  size_t n = 0;
  if (s->obx_count > 0) {
    items = malloc(s->obx_count * sizeof(*items));
    if (items == NULL) return -1;
    for (size_t i = 0; i < s->obx.cap; i++) {
      obx_ent *e = s->obx.slots[i].val;
      if (e == NULL) continue;
      for (size_t j = 0; j < e->nr && n < s->obx_count; j++)
        items[n++] = (restore_item){e, j, e->r[j].seq};
    }
    qsort(items, n, sizeof(*items), cmp_seq);
  }
  for (size_t i = 0; i < n; i++) {
    obx_ent *e = items[i].e;
    obx_rcpt *r = &e->r[items[i].i];
    char mid[37], rcpt[37];
    fl_uuid_text(e->mid, mid);
    fl_uuid_text(r->rcpt, rcpt);
    posp2p_peer_outbox_rec rec = {.message_id = mid,
                                  .recipient_id = rcpt,
                                  .envelope = e->env,
                                  .envelope_len = e->env_len,
                                  .attempts = r->attempts,
                                  .custody = r->custody};
    int rr = posp2p_peer_restore_outbox(p, &rec, now_ms);
    if (rr == POSP2P_ERR_NOMEM) {
      free(items);
      return -1;
    }
    if (rr == 0) c.outbox++;
    else c.refused++;
  }
  free(items);
  if (counts) *counts = c;
  return 0;
}

void fl_memstore_counts_get(const fl_memstore *s, fl_memstore_counts *c) {
  c->outbox = s->obx_count;
  c->dedup = s->dd_count;
  c->devices = s->reg.len;
  c->refused = 0;
}

size_t fl_memstore_bytes(const fl_memstore *s) { return s->bytes; }
