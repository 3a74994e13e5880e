/* Acknowledgement machinery (ACK-*): the outbox of messages awaiting an
 * ack with retransmission and backoff, the dedup memory of delivered ids,
 * and the per-order status sequence (ROUTE ordering).
 *
 * One outbox entry exists per (message_id, recipient): a directed message
 * has one, a broadcast at the main POS one per recipient. Entries share the
 * packed envelope (a refcounted blob) and are kept in send order so that a
 * route that reappears gets them in the order they were written. */
#include <string.h>

#include "peer_int.h"
#include "mutant.h"

/* ---- Outbox ---------------------------------------------------------------- */

typedef struct {
  posp2p__uuid mid, rcpt;
} obx_key;

static uint32_t obx_hash_key(const obx_key *k) {
  return posp2p__hash_bytes(k, sizeof *k);
}
static uint32_t obx_hash(const void *e) {
  const posp2p__obx *o = e;
  obx_key k = {o->mid, o->rcpt};
  return obx_hash_key(&k);
}
static bool obx_eq(const void *e, const void *key) {
  const posp2p__obx *o = e;
  const obx_key *k = key;
  return memcmp(o->mid.b, k->mid.b, 16) == 0 && memcmp(o->rcpt.b, k->rcpt.b, 16) == 0;
}

static void obx_persist(posp2p_peer *p, posp2p__obx *o) {
  if (!p->has_store || p->store.outbox_put == NULL) return;
  posp2p_peer_outbox_rec rec = {.message_id = o->mid_txt,
                                .recipient_id = o->rcpt_txt,
                                .envelope = o->blob->data,
                                .envelope_len = o->blob->len,
                                .attempts = o->attempts,
                                .custody = o->custody};
  (void)p->store.outbox_put(p, &rec, p->store.user_data);
}

int posp2p__obx_add(posp2p_peer *p, const posp2p__uuid *mid, const posp2p__uuid *rcpt,
                    posp2p__blob *blob, uint32_t origin, uint8_t prio, bool custody,
                    uint32_t attempts, bool need_send, bool persist, uint64_t now,
                    posp2p__obx **out) {
  obx_key k = {*mid, *rcpt};
  if (posp2p__htab_find(&p->obx_by_key, obx_hash_key(&k), &k, obx_eq) != NULL)
    return POSP2P_ERR_DUPLICATE;
  posp2p__obx *o = posp2p__calloc(p, sizeof *o);
  if (o == NULL) return POSP2P_ERR_NOMEM;
  posp2p__timer_init(&o->timer, POSP2P__TIMER_OUTBOX);
  o->mid = *mid;
  o->rcpt = *rcpt;
  posp2p__uuid_text(mid, o->mid_txt);
  posp2p__uuid_text(rcpt, o->rcpt_txt);
  o->blob = posp2p__blob_ref(blob);
  o->origin = origin;
  o->prio = prio;
  o->custody = custody;
  o->attempts = attempts;
  o->need_send = need_send;
  o->backoff_ms = p->cfg.ack_timeout_ms;
  if (posp2p__htab_insert(&p->obx_by_key, &p->alloc, obx_hash_key(&k), o, obx_hash) != 0) {
    posp2p__blob_unref(p, o->blob);
    posp2p__free(p, o);
    return POSP2P_ERR_NOMEM;
  }
  if (persist && p->has_store && p->store.outbox_put != NULL) {
    posp2p_peer_outbox_rec rec = {.message_id = o->mid_txt,
                                  .recipient_id = o->rcpt_txt,
                                  .envelope = blob->data,
                                  .envelope_len = blob->len,
                                  .attempts = attempts,
                                  .custody = custody};
    if (p->store.outbox_put(p, &rec, p->store.user_data) < 0) {
      posp2p__htab_remove(&p->obx_by_key, obx_hash(o), o);
      posp2p__blob_unref(p, o->blob);
      posp2p__free(p, o);
      return POSP2P_ERR_STORE;
    }
  }
  o->prev = p->obx_tail;
  if (p->obx_tail)
    p->obx_tail->next = o;
  else
    p->obx_head = o;
  p->obx_tail = o;
  p->nobx++;
  if (p->started) posp2p__timer_set(p, &o->timer, now + o->backoff_ms);
  if (out) *out = o;
  return 0;
}

void posp2p__obx_remove(posp2p_peer *p, posp2p__obx *o, bool persist) {
  posp2p__timer_stop(p, &o->timer);
  posp2p__htab_remove(&p->obx_by_key, obx_hash(o), o);
  if (o->prev)
    o->prev->next = o->next;
  else
    p->obx_head = o->next;
  if (o->next)
    o->next->prev = o->prev;
  else
    p->obx_tail = o->prev;
  p->nobx--;
  if (persist && p->has_store && p->store.outbox_del != NULL)
    (void)p->store.outbox_del(p, o->mid_txt, o->rcpt_txt, p->store.user_data);
  posp2p__blob_unref(p, o->blob);
  posp2p__free(p, o);
}

static void obx_finish(posp2p_peer *p, posp2p__obx *o, posp2p_peer_event_type type, int code) {
  /* Copy what the event needs: the entry is freed before the callback so
   * that the application sees a consistent outbox from inside it. */
  char mid[POSP2P_UUID_LEN + 1], rcpt[POSP2P_UUID_LEN + 1];
  memcpy(mid, o->mid_txt, sizeof mid);
  memcpy(rcpt, o->rcpt_txt, sizeof rcpt);
  uint32_t attempts = o->attempts;
  bool custody = o->custody;
  posp2p__obx_remove(p, o, true);
  if (type == POSP2P_PEER_EV_DELIVERY_FAILED) p->stats.delivery_failed++;
  posp2p__device *d = posp2p__dev_find_text(p, rcpt);
  posp2p_peer_event ev = {.type = type,
                          .device = d ? &d->pub : NULL,
                          .message_id = mid,
                          .device_id = rcpt,
                          .code = code,
                          .attempts = attempts,
                          .custody = custody,
                          .text = type == POSP2P_PEER_EV_ACK ? "acknowledged"
                                                             : posp2p_peer_strerror(code)};
  posp2p__emit(p, &ev);
}

void posp2p__obx_acked(posp2p_peer *p, const posp2p__uuid *mid, const posp2p__uuid *from,
                       bool to_me) {
  obx_key k = {*mid, *from};
  posp2p__obx *o = posp2p__htab_find(&p->obx_by_key, obx_hash_key(&k), &k, obx_eq);
  if (o == NULL) return;
  /* An ack addressed to someone else only ends our custody tracking. */
  if (!to_me && !o->custody) return;
  obx_finish(p, o, POSP2P_PEER_EV_ACK, 0);
}

void posp2p__obx_fail_mid(posp2p_peer *p, const posp2p__uuid *mid, int code) {
  posp2p__obx *o = p->obx_head, *next;
  for (; o != NULL; o = next) {
    next = o->next;
    if (!o->custody && memcmp(o->mid.b, mid->b, 16) == 0) {
      obx_finish(p, o, POSP2P_PEER_EV_DELIVERY_FAILED, code);
      /* The callback may have changed the list; restart from the head. */
      next = p->obx_head;
    }
  }
}

bool posp2p__obx_transmit(posp2p_peer *p, posp2p__obx *o) {
  posp2p__conn *c = posp2p__route_conn_dial(p, &o->rcpt, !o->custody);
  if (c == NULL) {
    o->need_send = true;
    return false;
  }
  if (posp2p__conn_has_unsent(c, o->blob)) {
    /* The previous copy has not even left yet: a second one adds nothing. */
    o->need_send = false;
    return true;
  }
  int rc = posp2p__conn_send_blob(p, c, o->blob, o->prio, o->origin, Q_DATA);
  if (rc != 0) {
    o->need_send = true;
    return false;
  }
  o->attempts++;
  o->need_send = false;
  obx_persist(p, o);
  return true;
}

void posp2p__obx_on_timer(posp2p_peer *p, posp2p__obx *o, uint64_t now) {
  if (o->retries >= p->cfg.max_retries) {
    obx_finish(p, o, POSP2P_PEER_EV_DELIVERY_FAILED, POSP2P_ERR_RETRY_LIMIT);
    return;
  }
  o->retries++;
  p->stats.retransmissions++;
  if (!POSP2P_MUTANT(no_retransmit)) posp2p__obx_transmit(p, o);
  uint64_t b = (uint64_t)o->backoff_ms * 2;
  if (b > p->cfg.ack_backoff_cap_ms) b = p->cfg.ack_backoff_cap_ms;
  o->backoff_ms = (uint32_t)b;
  posp2p__timer_set(p, &o->timer, now + o->backoff_ms);
}

void posp2p__obx_flush_for(posp2p_peer *p, posp2p__conn *c) {
  for (posp2p__obx *o = p->obx_head; o != NULL; o = o->next) {
    if (!o->need_send) continue;
    if (posp2p__route_conn(p, &o->rcpt, !o->custody) != c) continue;
    if (!posp2p__obx_transmit(p, o)) break; /* queue full: keep the order */
  }
}

size_t posp2p_peer_outbox_recipients(const posp2p_peer *p, const char *message_id,
                                     const char **ids, size_t max) {
  posp2p__uuid mid;
  if (p == NULL || !posp2p__uuid_parse(message_id, &mid)) return 0;
  size_t n = 0;
  for (const posp2p__obx *o = p->obx_head; o != NULL; o = o->next) {
    if (memcmp(o->mid.b, mid.b, 16) != 0) continue;
    if (ids != NULL && n < max) ids[n] = o->rcpt_txt;
    n++;
  }
  return n;
}

void posp2p__obx_free_all(posp2p_peer *p) {
  while (p->obx_head != NULL) posp2p__obx_remove(p, p->obx_head, false);
  posp2p__htab_free(&p->obx_by_key, &p->alloc);
}

int posp2p_peer_restore_outbox(posp2p_peer *p, const posp2p_peer_outbox_rec *rec,
                               uint64_t now_ms) {
  if (p == NULL || rec == NULL || rec->envelope == NULL) return POSP2P_ERR_INVAL;
  if (p->started) return POSP2P_ERR_STATE;
  posp2p__uuid mid, rcpt;
  if (!posp2p__uuid_parse(rec->message_id, &mid) || !posp2p__uuid_parse(rec->recipient_id, &rcpt))
    return POSP2P_ERR_INVAL;
  posp2p_envelope *e =
      posp2p__v2__envelope__unpack(&p->alloc, rec->envelope_len, rec->envelope);
  if (e == NULL) return POSP2P_ERR_PROTOBUF;
  posp2p_error err;
  int rc = posp2p_envelope_validate(e, &err);
  posp2p__uuid emid, from;
  if (rc == 0 && (!posp2p__uuid_parse(e->message_id, &emid) ||
                  memcmp(emid.b, mid.b, 16) != 0 ||
                  !posp2p__uuid_parse(e->from_device_id, &from) ||
                  (!rec->custody && memcmp(from.b, p->id.b, 16) != 0)))
    rc = POSP2P_ERR_INVAL;
  uint8_t prio = rc == 0 ? (uint8_t)posp2p_envelope_priority(e) : 0;
  uint32_t origin = rc == 0 ? posp2p__hash_bytes(e->from_device_id, strlen(e->from_device_id)) : 0;
  posp2p__v2__envelope__free_unpacked(e, &p->alloc);
  if (rc != 0) return rc;
  posp2p__blob *b = posp2p__blob_new(p, rec->envelope, rec->envelope_len);
  if (b == NULL) return POSP2P_ERR_NOMEM;
  posp2p__obx *o = NULL;
  rc = posp2p__obx_add(p, &mid, &rcpt, b, origin, prio, rec->custody, rec->attempts, true,
                       false, now_ms, &o);
  posp2p__blob_unref(p, b);
  if (rc != 0) return rc;
  /* Continue the retransmission schedule where it stopped. */
  o->retries = rec->attempts > 0 ? rec->attempts - 1 : 0;
  if (o->retries > p->cfg.max_retries) o->retries = p->cfg.max_retries;
  for (uint32_t i = 0; i < o->retries && o->backoff_ms < p->cfg.ack_backoff_cap_ms; i++) {
    uint64_t x = (uint64_t)o->backoff_ms * 2;
    o->backoff_ms = (uint32_t)(x > p->cfg.ack_backoff_cap_ms ? p->cfg.ack_backoff_cap_ms : x);
  }
  return 0;
}

/* ---- Dedup ----------------------------------------------------------------------
 * Per originator, a FIFO of delivered ids in arrival order; a global set
 * for the membership test. An id is forgotten only when it is both older
 * than the window and beyond the newest dedup_count of its originator
 * (ACK dedup: "at least the window and at least the last 4096"). */

typedef struct posp2p__dedup_ent {
  posp2p__uuid orig, mid;
  uint64_t t;
  struct posp2p__dedup_ent *next;
} dedup_ent;

struct posp2p__dedup_orig {
  posp2p__uuid orig;
  dedup_ent *head, *tail;
  uint32_t count;
};

static uint32_t ent_hash(const void *e) {
  const dedup_ent *d = e;
  return posp2p__hash_bytes(&d->orig, 32);
}
static bool ent_eq(const void *e, const void *key) {
  return memcmp(&((const dedup_ent *)e)->orig, key, 32) == 0;
}
static uint32_t orig_hash(const void *e) {
  return posp2p__hash_bytes(((const posp2p__dedup_orig *)e)->orig.b, 16);
}
static bool orig_eq(const void *e, const void *key) {
  return memcmp(((const posp2p__dedup_orig *)e)->orig.b, key, 16) == 0;
}

static void dedup_prune_orig(posp2p_peer *p, posp2p__dedup_orig *o, uint64_t now) {
  while (o->head != NULL && o->count > p->cfg.dedup_count &&
         o->head->t + p->cfg.dedup_window_ms <= now) {
    dedup_ent *d = o->head;
    o->head = d->next;
    if (o->head == NULL) o->tail = NULL;
    o->count--;
    posp2p__htab_remove(&p->dedup_set, ent_hash(d), d);
    p->ndedup--;
    posp2p__free(p, d);
  }
}

bool posp2p__dedup_contains(const posp2p_peer *p, const posp2p__uuid *orig,
                            const posp2p__uuid *mid) {
  struct {
    posp2p__uuid orig, mid;
  } key = {*orig, *mid};
  return posp2p__htab_find(&p->dedup_set, posp2p__hash_bytes(&key, 32), &key, ent_eq) != NULL;
}

int posp2p__dedup_check_insert(posp2p_peer *p, const posp2p__uuid *orig,
                               const posp2p__uuid *mid, uint64_t now, bool consult_store,
                               const char *orig_txt, const char *mid_txt) {
  struct {
    posp2p__uuid orig, mid;
  } key = {*orig, *mid};
  uint32_t h = posp2p__hash_bytes(&key, 32);
  if (posp2p__htab_find(&p->dedup_set, h, &key, ent_eq) != NULL) return 1;
  int dup = 0;
  if (consult_store && p->has_store && p->store.dedup_check_insert != NULL) {
    dup = p->store.dedup_check_insert(p, orig_txt, mid_txt, p->store.user_data);
    if (dup < 0) return POSP2P_ERR_STORE;
    dup = dup > 0 ? 1 : 0;
  }
  posp2p__dedup_orig *o =
      posp2p__htab_find(&p->dedup_origs, posp2p__hash_bytes(orig->b, 16), orig->b, orig_eq);
  if (o == NULL) {
    o = posp2p__calloc(p, sizeof *o);
    if (o == NULL) return POSP2P_ERR_NOMEM;
    o->orig = *orig;
    if (posp2p__htab_insert(&p->dedup_origs, &p->alloc, orig_hash(o), o, orig_hash) != 0) {
      posp2p__free(p, o);
      return POSP2P_ERR_NOMEM;
    }
  }
  dedup_ent *d = posp2p__alloc(p, sizeof *d);
  if (d == NULL) return POSP2P_ERR_NOMEM;
  d->orig = *orig;
  d->mid = *mid;
  d->t = now;
  d->next = NULL;
  if (posp2p__htab_insert(&p->dedup_set, &p->alloc, h, d, ent_hash) != 0) {
    posp2p__free(p, d);
    return POSP2P_ERR_NOMEM;
  }
  if (o->tail)
    o->tail->next = d;
  else
    o->head = d;
  o->tail = d;
  o->count++;
  p->ndedup++;
  dedup_prune_orig(p, o, now);
  return dup;
}

void posp2p__dedup_prune(posp2p_peer *p, uint64_t now) {
  posp2p__htab *t = &p->dedup_origs;
  for (uint32_t i = 0; i < t->cap; i++) {
    posp2p__dedup_orig *o = t->slots[i];
    if (o == NULL || (void *)o == POSP2P__HTAB_TOMB) continue;
    dedup_prune_orig(p, o, now);
    if (o->count == 0) {
      t->slots[i] = POSP2P__HTAB_TOMB;
      t->len--;
      posp2p__free(p, o);
    }
  }
}

void posp2p__dedup_free(posp2p_peer *p) {
  posp2p__htab *t = &p->dedup_origs;
  for (uint32_t i = 0; i < t->cap; i++) {
    posp2p__dedup_orig *o = t->slots[i];
    if (o == NULL || (void *)o == POSP2P__HTAB_TOMB) continue;
    dedup_ent *d = o->head;
    while (d != NULL) {
      dedup_ent *n = d->next;
      posp2p__free(p, d);
      d = n;
    }
    posp2p__free(p, o);
  }
  posp2p__htab_free(&p->dedup_origs, &p->alloc);
  posp2p__htab_free(&p->dedup_set, &p->alloc);
  p->ndedup = 0;
}

int posp2p_peer_restore_dedup(posp2p_peer *p, const char *originator_id,
                              const char *message_id, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  posp2p__uuid o, m;
  if (!posp2p__uuid_parse(originator_id, &o) || !posp2p__uuid_parse(message_id, &m))
    return POSP2P_ERR_INVAL;
  int rc = posp2p__dedup_check_insert(p, &o, &m, now_ms, false, NULL, NULL);
  return rc < 0 ? rc : 0;
}

/* ---- Order status sequence (ROUTE ordering) ----------------------------------- */

typedef struct posp2p__status {
  struct posp2p__status *next;
  uint64_t seq;
  uint64_t t;
  uint32_t hash;
  char order_id[];
} status_ent;

static uint32_t status_hash(const void *e) { return ((const status_ent *)e)->hash; }
static bool status_eq(const void *e, const void *key) {
  return strcmp(((const status_ent *)e)->order_id, key) == 0;
}

static int status_accept_key(posp2p_peer *p, const char *order_id, size_t n, uint64_t seq,
                             uint64_t now, bool *fresh);

/* Key: "<originator>/<order_id>" (ROUTE-9 is per originator and order). */
int posp2p__status_accept(posp2p_peer *p, const char *from, const char *order_id, uint64_t seq,
                          uint64_t now, bool *fresh) {
  *fresh = true;
  size_t nf = strlen(from), no = strlen(order_id), n = nf + 1 + no;
  char small[256];
  char *key = n < sizeof small ? small : posp2p__alloc(p, n + 1);
  if (key == NULL) return POSP2P_ERR_NOMEM;
  memcpy(key, from, nf);
  key[nf] = '/';
  memcpy(key + nf + 1, order_id, no + 1);
  int rc = status_accept_key(p, key, n, seq, now, fresh);
  if (key != small) posp2p__free(p, key);
  return rc;
}

static int status_accept_key(posp2p_peer *p, const char *order_id, size_t n, uint64_t seq,
                             uint64_t now, bool *fresh) {
  uint32_t h = posp2p__hash_bytes(order_id, n);
  status_ent *s = posp2p__htab_find(&p->status_tab, h, order_id, status_eq);
  if (s != NULL) {
    if (seq <= s->seq) {
      *fresh = false;
      return 0;
    }
    s->seq = seq;
    return 0;
  }
  s = posp2p__alloc(p, sizeof *s + n + 1);
  if (s == NULL) return POSP2P_ERR_NOMEM;
  s->next = NULL;
  s->seq = seq;
  s->t = now;
  s->hash = h;
  memcpy(s->order_id, order_id, n + 1);
  if (posp2p__htab_insert(&p->status_tab, &p->alloc, h, s, status_hash) != 0) {
    posp2p__free(p, s);
    return POSP2P_ERR_NOMEM;
  }
  if (p->status_tail)
    p->status_tail->next = s;
  else
    p->status_head = s;
  p->status_tail = s;
  p->nstatus++;
  /* Same bound as dedup: forget orders both old and beyond the count. */
  while (p->status_head != NULL && p->nstatus > p->cfg.dedup_count &&
         p->status_head->t + p->cfg.dedup_window_ms <= now) {
    status_ent *x = p->status_head;
    p->status_head = x->next;
    if (p->status_head == NULL) p->status_tail = NULL;
    posp2p__htab_remove(&p->status_tab, x->hash, x);
    p->nstatus--;
    posp2p__free(p, x);
  }
  return 0;
}

void posp2p__status_free(posp2p_peer *p) {
  while (p->status_head != NULL) {
    status_ent *x = p->status_head;
    p->status_head = x->next;
    posp2p__free(p, x);
  }
  p->status_tail = NULL;
  p->nstatus = 0;
  posp2p__htab_free(&p->status_tab, &p->alloc);
}
