/* The router: the seed's P2POrderRouterService on a posp2p_service
 * (posp2p/service.h).
 *
 * Every order sent makes one record (one message id) that lists the
 * devices that must acknowledge it, and follows the engine's ACK and
 * DELIVERY_FAILED events for that message id. Records are reached by
 * message id (every event) and by order id (getSentOrder, cancellation),
 * through two hash maps, and kept in send order in an array.
 *
 * Callbacks (on-order-sent, on-order-update) may clear records. A record
 * removed while callbacks are running is marked removed and parked on a
 * list; it is freed when the outermost callback has returned, so no
 * loop below ever touches freed memory. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api_int.h"

enum { RSUB_SENT = 1, RSUB_UPDATE };

typedef struct {
  posp2p_sub_id id;
  int kind;
  posp2p_router_order_cb cb;
  void *user_data;
  bool dead;
} rsub;

typedef struct rec {
  posp2p_sent_order pub;
  char *order_id;
  posp2p_order_recipient *rcpts;
  size_t rcap;
  Posp2p__V2__OrderForward *order;
  bool removed;
  struct rec *next_dead;
} rec;

typedef struct {
  uint64_t seq;
  char order_id[];
} seq_entry;

/* A cancel waiting for its acknowledgement; the map key is mid. */
typedef struct {
  char mid[POSP2P_UUID_LEN + 1];
  char order_id[];
} cancel_entry;

struct posp2p_router {
  posp2p_service *svc;
  posp2p_sub_id sub_events, sub_cancel;
  rec **recs;               /* live records in send order */
  size_t nrecs, cap;
  posp2p__api_map by_mid;   /* message id -> rec */
  posp2p__api_map by_order; /* order id -> most recent rec */
  posp2p__api_map cancels;  /* cancel message id -> cancel_entry */
  posp2p__api_map seqs;     /* order id -> seq_entry */
  rsub *subs;
  size_t nsubs, subs_cap;
  posp2p_sub_id next_sub;
  int depth;
  bool subs_dirty;
  rec *dead;                /* removed during a callback, freed later */
};

const char *posp2p_ack_state_name(posp2p_ack_state s) {
  switch (s) {
  case POSP2P_ACK_PENDING: return "pending";
  case POSP2P_ACK_ACKED: return "acked";
  case POSP2P_ACK_FAILED: return "failed";
  case POSP2P_ACK_PARTIAL: return "partial";
  }
  return "unknown";
}

void posp2p_order_init(posp2p_order *o) {
  memset(o, 0, sizeof(*o));
  o->currency_exponent = 2;
  o->destination = POSP2P_DESTINATION_AUTO;
  o->order_status = POSP2P_ORDER_STATUS_PENDING;
}

void posp2p_order_item_init(posp2p_order_item *it) { memset(it, 0, sizeof(*it)); }

/* ---- Building payloads ------------------------------------------------------ */

static char *cs(const char *s) { return (char *)(uintptr_t)(s ? s : ""); }

/* The routing destination an order carries when the application leaves it
 * to the router: from the target's role. */
static Posp2p__V2__Destination dest_for(int dest_type) {
  switch (dest_type) {
  case POSP2P_TYPE_MAIN_POS: return POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS;
  case POSP2P_TYPE_SECONDARY_POS:
    return POSP2P__V2__DESTINATION__DESTINATION_SECONDARY_POS;
  case POSP2P_TYPE_ORDERING_TABLET:
    return POSP2P__V2__DESTINATION__DESTINATION_ORDERING_TABLET;
  case POSP2P_TYPE_KDS: return POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY;
  default: return POSP2P__V2__DESTINATION__DESTINATION_ALL_DEVICES;
  }
}

/* An OrderForward whose strings point into o (no copies); items and their
 * pointer array are allocated. */
typedef struct {
  Posp2p__V2__OrderForward of;
  Posp2p__V2__OrderItem *items;
  Posp2p__V2__OrderItem **ptrs;
} order_pb;

static void order_pb_free(order_pb *b) {
  API_FREE(b->items);
  API_FREE(b->ptrs);
}

static int order_pb_build(order_pb *b, const posp2p_order *o, int dest_type) {
  memset(b, 0, sizeof(*b));
  posp2p__v2__order_forward__init(&b->of);
  if (o == NULL || o->order_id == NULL || o->order_id[0] == '\0' ||
      (o->n_items > 0 && o->items == NULL))
    return POSP2P_ERR_INVAL;
  if (o->n_items > 0) {
    b->items = API_CALLOC(o->n_items * sizeof(*b->items));
    b->ptrs = API_CALLOC(o->n_items * sizeof(*b->ptrs));
    if (b->items == NULL || b->ptrs == NULL) {
      order_pb_free(b);
      return POSP2P_ERR_NOMEM;
    }
  }
  for (size_t i = 0; i < o->n_items; i++) {
    const posp2p_order_item *it = &o->items[i];
    Posp2p__V2__OrderItem *pi = &b->items[i];
    posp2p__v2__order_item__init(pi);
    if (it->n_modifiers > 0 && it->modifiers == NULL) {
      order_pb_free(b);
      return POSP2P_ERR_INVAL;
    }
    for (size_t k = 0; k < it->n_modifiers; k++) {
      if (it->modifiers[k] == NULL) {
        order_pb_free(b);
        return POSP2P_ERR_INVAL;
      }
    }
    pi->product_id = cs(it->product_id);
    pi->product_name = cs(it->product_name);
    pi->price_minor = it->price_minor;
    pi->quantity = it->quantity;
    pi->n_modifiers = it->n_modifiers;
    pi->modifiers = (char **)(uintptr_t)it->modifiers;
    if (it->variant != NULL) {
      pi->opt_variant_case = POSP2P__V2__ORDER_ITEM__OPT_VARIANT_VARIANT;
      pi->variant = cs(it->variant);
    }
    if (it->notes != NULL) {
      pi->opt_notes_case = POSP2P__V2__ORDER_ITEM__OPT_NOTES_NOTES;
      pi->notes = cs(it->notes);
    }
    if (it->has_discount_per_item) {
      pi->opt_discount_per_item_minor_case =
          POSP2P__V2__ORDER_ITEM__OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR;
      pi->discount_per_item_minor = it->discount_per_item_minor;
    }
    b->ptrs[i] = pi;
  }
  Posp2p__V2__OrderForward *of = &b->of;
  of->order_id = cs(o->order_id);
  of->n_items = o->n_items;
  of->items = b->ptrs;
  of->subtotal_minor = o->subtotal_minor;
  if (o->has_tax) {
    of->opt_tax_minor_case = POSP2P__V2__ORDER_FORWARD__OPT_TAX_MINOR_TAX_MINOR;
    of->tax_minor = o->tax_minor;
  }
  if (o->has_service_charge) {
    of->opt_service_charge_minor_case =
        POSP2P__V2__ORDER_FORWARD__OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR;
    of->service_charge_minor = o->service_charge_minor;
  }
  if (o->has_discount) {
    of->opt_discount_minor_case =
        POSP2P__V2__ORDER_FORWARD__OPT_DISCOUNT_MINOR_DISCOUNT_MINOR;
    of->discount_minor = o->discount_minor;
  }
  of->total_minor = o->total_minor;
  of->order_status = (Posp2p__V2__OrderStatusCode)o->order_status;
  of->destination = o->destination == POSP2P_DESTINATION_AUTO
                        ? dest_for(dest_type)
                        : (Posp2p__V2__Destination)o->destination;
  if (o->has_table_number) {
    of->opt_table_number_case = POSP2P__V2__ORDER_FORWARD__OPT_TABLE_NUMBER_TABLE_NUMBER;
    of->table_number = o->table_number;
  }
  if (o->customer_name != NULL) {
    of->opt_customer_name_case =
        POSP2P__V2__ORDER_FORWARD__OPT_CUSTOMER_NAME_CUSTOMER_NAME;
    of->customer_name = cs(o->customer_name);
  }
  if (o->special_instructions != NULL) {
    of->opt_special_instructions_case =
        POSP2P__V2__ORDER_FORWARD__OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS;
    of->special_instructions = cs(o->special_instructions);
  }
  if (o->has_target_delivery_time) {
    of->opt_target_delivery_time_ms_case =
        POSP2P__V2__ORDER_FORWARD__OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS;
    of->target_delivery_time_ms = o->target_delivery_time_ms;
  }
  of->currency_exponent = o->currency_exponent;
  of->currency = cs(o->currency);
  return 0;
}

static void order_envelope_init(posp2p_envelope *e, Posp2p__V2__OrderForward *of,
                                const char *to, int to_type) {
  posp2p_envelope_init(e);
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD;
  e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
  e->order_forward = of;
  if (to != NULL) {
    e->opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e->to_device_id = cs(to);
  } else if (to_type != 0) {
    e->opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    e->to_device_type = (Posp2p__V2__DeviceType)to_type;
  }
}

int posp2p_order_envelope(const posp2p_order *o, int dest_type,
                          posp2p_envelope **out) {
  if (out == NULL) return POSP2P_ERR_INVAL;
  *out = NULL;
  order_pb b;
  int r = order_pb_build(&b, o, dest_type);
  if (r != 0) return r;
  posp2p_envelope e;
  order_envelope_init(&e, &b.of, NULL, 0);
  size_t n = posp2p__v2__envelope__get_packed_size(&e);
  uint8_t *buf = API_MALLOC(n ? n : 1);
  if (buf == NULL) {
    order_pb_free(&b);
    return POSP2P_ERR_NOMEM;
  }
  posp2p__v2__envelope__pack(&e, buf);
  order_pb_free(&b);
  posp2p_error err;
  r = posp2p_envelope_unpack(buf, n, NULL, out, &err);
  API_FREE(buf);
  if (r != 0 && *out != NULL) {
    posp2p_envelope_free(*out, NULL);
    *out = NULL;
  }
  return r;
}

/* A self-contained copy of an OrderForward (pack, then unpack). */
static Posp2p__V2__OrderForward *order_copy(const Posp2p__V2__OrderForward *of) {
  size_t n = posp2p__v2__order_forward__get_packed_size(of);
  uint8_t *buf = API_MALLOC(n ? n : 1);
  if (buf == NULL) return NULL;
  posp2p__v2__order_forward__pack(of, buf);
  Posp2p__V2__OrderForward *c = posp2p__v2__order_forward__unpack(
      (ProtobufCAllocator *)(uintptr_t)posp2p_mem_default(), n, buf);
  API_FREE(buf);
  return c;
}

/* ---- Records ------------------------------------------------------------------ */

static void rec_free(rec *x) {
  if (x->order != NULL)
    posp2p__v2__order_forward__free_unpacked(
        x->order, (ProtobufCAllocator *)(uintptr_t)posp2p_mem_default());
  API_FREE(x->order_id);
  API_FREE(x->rcpts);
  API_FREE(x);
}

static void graveyard_flush(posp2p_router *r) {
  while (r->dead != NULL) {
    rec *x = r->dead;
    r->dead = x->next_dead;
    rec_free(x);
  }
}

static int rcpt_add(rec *x, const char *device_id) {
  if (x->pub.n_recipients == x->rcap) {
    size_t ncap = x->rcap ? x->rcap * 2 : 4;
    posp2p_order_recipient *n = API_MALLOC(ncap * sizeof(*n));
    if (n == NULL) return POSP2P_ERR_NOMEM;
    if (x->pub.n_recipients)
      memcpy(n, x->rcpts, x->pub.n_recipients * sizeof(*n));
    API_FREE(x->rcpts);
    x->rcpts = n;
    x->rcap = ncap;
    x->pub.recipients = n;
  }
  posp2p_order_recipient *e = &x->rcpts[x->pub.n_recipients++];
  memset(e, 0, sizeof(*e));
  snprintf(e->device_id, sizeof(e->device_id), "%s", device_id);
  for (char *p = e->device_id; *p; p++)
    if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
  e->state = POSP2P_ACK_PENDING;
  return 0;
}

static void rec_recompute(rec *x) {
  size_t acked = 0, failed = 0;
  for (size_t i = 0; i < x->pub.n_recipients; i++) {
    if (x->rcpts[i].state == POSP2P_ACK_ACKED) acked++;
    else if (x->rcpts[i].state == POSP2P_ACK_FAILED) failed++;
  }
  x->pub.n_acked = acked;
  x->pub.n_failed = failed;
  if (acked + failed < x->pub.n_recipients) x->pub.state = POSP2P_ACK_PENDING;
  else if (failed == 0) x->pub.state = POSP2P_ACK_ACKED;
  else if (acked == 0) x->pub.state = POSP2P_ACK_FAILED;
  else x->pub.state = POSP2P_ACK_PARTIAL;
}

static void notify(posp2p_router *r, int kind, rec *x) {
  r->depth++;
  size_t n = r->nsubs;
  for (size_t i = 0; i < n && !x->removed; i++) {
    if (r->subs[i].dead || r->subs[i].kind != kind) continue;
    r->subs[i].cb(r, &x->pub, r->subs[i].user_data);
  }
  r->depth--;
  if (r->depth == 0) {
    if (r->subs_dirty) {
      size_t j = 0;
      for (size_t i = 0; i < r->nsubs; i++)
        if (!r->subs[i].dead) r->subs[j++] = r->subs[i];
      r->nsubs = j;
      r->subs_dirty = false;
    }
    graveyard_flush(r);
  }
}

/* Live records of one order id, in send order, into a new array. */
static rec **records_of(posp2p_router *r, const char *order_id, size_t *n) {
  *n = 0;
  size_t k = 0;
  for (size_t i = 0; i < r->nrecs; i++)
    if (strcmp(r->recs[i]->order_id, order_id) == 0) k++;
  if (k == 0) return NULL;
  rec **v = API_MALLOC(k * sizeof(*v));
  if (v == NULL) return NULL;
  for (size_t i = 0, j = 0; i < r->nrecs; i++)
    if (strcmp(r->recs[i]->order_id, order_id) == 0) v[j++] = r->recs[i];
  *n = k;
  return v;
}

/* ---- Engine events --------------------------------------------------------------- */

static void cancel_finished(posp2p_router *r, const char *mid, posp2p_ack_state st) {
  /* The cancel is directed: one acknowledgement or failure ends it. */
  cancel_entry *c = posp2p__api_map_del(&r->cancels, mid);
  if (c == NULL) return;
  size_t n;
  rec **v = records_of(r, c->order_id, &n);
  r->depth++; /* keep every rec of v alive until the loop ends */
  for (size_t i = 0; i < n; i++) {
    if (v[i]->removed || strcmp(v[i]->pub.cancel_message_id, c->mid) != 0) continue;
    v[i]->pub.cancel_state = st;
    notify(r, RSUB_UPDATE, v[i]);
  }
  r->depth--;
  if (r->depth == 0) graveyard_flush(r);
  API_FREE(v);
  API_FREE(c);
}

static void on_engine_event(posp2p_service *s, const posp2p_peer_event *ev,
                            void *ud) {
  posp2p_router *r = ud;
  (void)s;
  if (ev->type != POSP2P_PEER_EV_ACK && ev->type != POSP2P_PEER_EV_DELIVERY_FAILED)
    return;
  /* custody: a client's broadcast this main POS relays, not ours. */
  if (ev->custody || ev->message_id == NULL || ev->device_id == NULL) return;
  bool ok = ev->type == POSP2P_PEER_EV_ACK;
  rec *x = posp2p__api_map_get(&r->by_mid, ev->message_id);
  if (x == NULL) {
    cancel_finished(r, ev->message_id, ok ? POSP2P_ACK_ACKED : POSP2P_ACK_FAILED);
    return;
  }
  posp2p_order_recipient *e = NULL;
  for (size_t i = 0; i < x->pub.n_recipients; i++)
    if (strcasecmp(x->rcpts[i].device_id, ev->device_id) == 0) e = &x->rcpts[i];
  if (e == NULL) {
    if (rcpt_add(x, ev->device_id) != 0) return;
    e = &x->rcpts[x->pub.n_recipients - 1];
  }
  if (e->state != POSP2P_ACK_PENDING) return;
  e->state = ok ? POSP2P_ACK_ACKED : POSP2P_ACK_FAILED;
  e->attempts = ev->attempts;
  e->code = ok ? 0 : ev->code;
  uv_loop_t *loop = posp2p_service_loop(r->svc);
  e->done_ms = uv_now(loop);
  rec_recompute(x);
  notify(r, RSUB_UPDATE, x);
}

/* An ORDER_CANCEL from another device (the seed's router forgets the
 * order; here its records are marked cancelled). */
static void on_cancel_message(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  posp2p_router *r = ud;
  (void)s;
  if (m->payload_case != POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL ||
      m->order_cancel == NULL || m->order_cancel->order_id == NULL)
    return;
  size_t n;
  rec **v = records_of(r, m->order_cancel->order_id, &n);
  r->depth++;
  for (size_t i = 0; i < n; i++) {
    if (v[i]->removed || v[i]->pub.cancelled) continue;
    v[i]->pub.cancelled = true;
    notify(r, RSUB_UPDATE, v[i]);
  }
  r->depth--;
  if (r->depth == 0) graveyard_flush(r);
  API_FREE(v);
}

/* ---- Lifecycle ------------------------------------------------------------------ */

int posp2p_router_new(posp2p_router **out, posp2p_service *s) {
  if (out == NULL || s == NULL) return POSP2P_ERR_INVAL;
  *out = NULL;
  posp2p_router *r = API_CALLOC(sizeof(*r));
  if (r == NULL) return POSP2P_ERR_NOMEM;
  r->svc = s;
  r->next_sub = 1;
  int rc = posp2p_service_subscribe_events(s, on_engine_event, r, &r->sub_events);
  if (rc == 0)
    rc = posp2p_service_on_message(s, POSP2P_MSG_ORDER_CANCEL, on_cancel_message, r,
                                   &r->sub_cancel);
  if (rc != 0) {
    if (r->sub_events) (void)posp2p_service_unsubscribe(s, r->sub_events);
    API_FREE(r);
    return rc;
  }
  *out = r;
  return 0;
}

void posp2p_router_del(posp2p_router *r) {
  if (r == NULL) return;
  (void)posp2p_service_unsubscribe(r->svc, r->sub_events);
  (void)posp2p_service_unsubscribe(r->svc, r->sub_cancel);
  for (size_t i = 0; i < r->nrecs; i++) rec_free(r->recs[i]);
  graveyard_flush(r);
  API_FREE(r->recs);
  for (size_t i = 0; i < r->cancels.cap; i++)
    if (r->cancels.slots[i].key != NULL) API_FREE(r->cancels.slots[i].value);
  for (size_t i = 0; i < r->seqs.cap; i++)
    if (r->seqs.slots[i].key != NULL) API_FREE(r->seqs.slots[i].value);
  posp2p__api_map_free(&r->by_mid);
  posp2p__api_map_free(&r->by_order);
  posp2p__api_map_free(&r->cancels);
  posp2p__api_map_free(&r->seqs);
  API_FREE(r->subs);
  API_FREE(r);
}

posp2p_service *posp2p_router_service(const posp2p_router *r) { return r->svc; }

/* ---- Sending orders --------------------------------------------------------------- */

/* Is conn a handshaken connection the engine would send on now? */
static bool conn_ready(posp2p_peer *p, const posp2p_peer_device *d) {
  posp2p_conn_info ci;
  return d->status == POSP2P_DEV_CONNECTED && d->conn != 0 &&
         posp2p_peer_conn_info(p, d->conn, &ci) == 0 && ci.state == POSP2P_CONN_READY;
}

typedef struct {
  char (*ids)[POSP2P_UUID_LEN + 1];
  size_t n;
  bool custody;
} targets;

/* Who must acknowledge a broadcast (type 0) or by-type order sent now:
 * at the main POS every matching ready connection (the engine's own rule,
 * ACK-13); at a client the main POS (ACK-16). */
static int targets_for(posp2p_router *r, posp2p_peer *p, int type, targets *t) {
  memset(t, 0, sizeof(*t));
  const char *self = posp2p_service_device_id(r->svc);
  size_t n = posp2p_peer_device_count(p);
  t->ids = API_MALLOC((n ? n : 1) * sizeof(*t->ids));
  if (t->ids == NULL) return POSP2P_ERR_NOMEM;
  bool is_main = posp2p_peer_is_main(p);
  for (size_t i = 0; i < n; i++) {
    const posp2p_peer_device *d = posp2p_peer_device_at(p, i);
    if (d == NULL || strcmp(d->id, self) == 0 || !conn_ready(p, d)) continue;
    if (is_main) {
      if (type != 0 && d->type != type) continue;
    } else {
      if (d->type != POSP2P_TYPE_MAIN_POS) continue;
      t->custody = true;
    }
    memcpy(t->ids[t->n++], d->id, POSP2P_UUID_LEN + 1);
    if (!is_main) break;
  }
  return 0;
}

static int rec_insert(posp2p_router *r, rec *x) {
  if (r->nrecs == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 16;
    rec **n = API_MALLOC(ncap * sizeof(*n));
    if (n == NULL) return POSP2P_ERR_NOMEM;
    if (r->nrecs) memcpy(n, r->recs, r->nrecs * sizeof(*n));
    API_FREE(r->recs);
    r->recs = n;
    r->cap = ncap;
  }
  int rc = posp2p__api_map_put(&r->by_mid, x->pub.message_id, x);
  if (rc == 0) rc = posp2p__api_map_put(&r->by_order, x->order_id, x);
  if (rc != 0) {
    (void)posp2p__api_map_del(&r->by_mid, x->pub.message_id);
    return rc;
  }
  r->recs[r->nrecs++] = x;
  return 0;
}

/* Send o to `to` (directed), to_type (by type) or everyone (both empty),
 * and make its record. */
static int send_order(posp2p_router *r, const posp2p_order *o, const char *to,
                      int to_type, char mid_out[POSP2P_UUID_LEN + 1],
                      size_t *recipients) {
  if (mid_out != NULL) mid_out[0] = '\0';
  if (recipients != NULL) *recipients = 0;
  if (r == NULL || o == NULL || o->order_id == NULL || o->order_id[0] == '\0')
    return POSP2P_ERR_INVAL;
  posp2p_service *s = r->svc;
  posp2p_peer *p = posp2p_service_engine(s);
  if (!posp2p_service_is_running(s) || p == NULL) return POSP2P_ERR_STATE;

  targets t;
  memset(&t, 0, sizeof(t));
  int dest_type = to_type;
  if (to != NULL) {
    if (!posp2p_uuid_valid(to)) return POSP2P_ERR_INVAL;
    const posp2p_peer_device *d = posp2p_peer_device_find(p, to);
    dest_type = d ? d->type : 0;
  } else {
    int rc = targets_for(r, p, to_type, &t);
    if (rc != 0) return rc;
    if (t.n == 0) {
      API_FREE(t.ids);
      /* A client without the main POS cannot send; a main POS with nobody
       * to send to sends nothing (the seed's count of 0). */
      return posp2p_peer_is_main(p) ? 0 : POSP2P_ERR_NO_ROUTE;
    }
  }

  order_pb b;
  int rc = order_pb_build(&b, o, dest_type);
  if (rc != 0) {
    API_FREE(t.ids);
    return rc;
  }
  posp2p_envelope e;
  order_envelope_init(&e, &b.of, to, to_type);
  char mid[POSP2P_UUID_LEN + 1] = "";
  rc = posp2p_service_send(s, &e, mid);
  if (rc != 0) {
    order_pb_free(&b);
    API_FREE(t.ids);
    return rc;
  }

  /* The message is on its way: from here on a failure to keep the record
   * loses bookkeeping, not the order, and is reported as NOMEM with the
   * message id set. */
  rec *x = API_CALLOC(sizeof(*x));
  if (x != NULL) {
    memcpy(x->pub.message_id, mid, sizeof(mid));
    x->order_id = posp2p__api_strdup(o->order_id);
    x->order = order_copy(&b.of);
  }
  order_pb_free(&b);
  rc = (x == NULL || x->order_id == NULL || x->order == NULL) ? POSP2P_ERR_NOMEM : 0;
  if (rc == 0) {
    x->pub.order_id = x->order_id;
    x->pub.order = x->order;
    if (to != NULL) snprintf(x->pub.to, sizeof(x->pub.to), "%s", to);
    x->pub.to_type = to_type;
    x->pub.broadcast = to == NULL && to_type == 0;
    x->pub.custody = t.custody;
    x->pub.sent_ms = uv_now(posp2p_service_loop(s));
    x->pub.cancel_state = POSP2P_ACK_PENDING;
    if (to != NULL) rc = rcpt_add(x, to);
    for (size_t i = 0; rc == 0 && i < t.n; i++) rc = rcpt_add(x, t.ids[i]);
  }
  if (rc == 0) {
    rec_recompute(x);
    rc = rec_insert(r, x);
  }
  API_FREE(t.ids);
  if (mid_out != NULL) memcpy(mid_out, mid, sizeof(mid));
  if (rc != 0) {
    if (x != NULL) rec_free(x);
    return rc;
  }
  if (recipients != NULL) *recipients = x->pub.n_recipients;
  notify(r, RSUB_SENT, x);
  return 0;
}

int posp2p_router_send_order(posp2p_router *r, const posp2p_order *o,
                             const char *device_id,
                             char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (device_id == NULL || device_id[0] == '\0') {
    if (message_id_out != NULL) message_id_out[0] = '\0';
    return POSP2P_ERR_INVAL;
  }
  return send_order(r, o, device_id, 0, message_id_out, NULL);
}

int posp2p_router_send_order_to_type(posp2p_router *r, const posp2p_order *o,
                                     int type,
                                     char message_id_out[POSP2P_UUID_LEN + 1],
                                     size_t *recipients) {
  if (type <= 0 || posp2p_device_type_name(type) == NULL) {
    if (message_id_out != NULL) message_id_out[0] = '\0';
    if (recipients != NULL) *recipients = 0;
    return POSP2P_ERR_INVAL;
  }
  return send_order(r, o, NULL, type, message_id_out, recipients);
}

int posp2p_router_broadcast_order(posp2p_router *r, const posp2p_order *o,
                                  char message_id_out[POSP2P_UUID_LEN + 1],
                                  size_t *recipients) {
  return send_order(r, o, NULL, 0, message_id_out, recipients);
}

/* ---- Status, cancel ------------------------------------------------------------------ */

int posp2p_router_broadcast_status(posp2p_router *r,
                                   const posp2p_status_update *u,
                                   char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (message_id_out != NULL) message_id_out[0] = '\0';
  if (r == NULL || u == NULL || u->order_id == NULL || u->order_id[0] == '\0' ||
      posp2p_order_status_name(u->new_status) == NULL)
    return POSP2P_ERR_INVAL;
  seq_entry *se = posp2p__api_map_get(&r->seqs, u->order_id);
  uint64_t seq = u->sequence != 0 ? u->sequence : (se ? se->seq : 0) + 1;

  Posp2p__V2__OrderStatus os;
  posp2p__v2__order_status__init(&os);
  os.order_id = cs(u->order_id);
  os.new_status = (Posp2p__V2__OrderStatusCode)u->new_status;
  if (u->reason != NULL) {
    os.opt_status_reason_case = POSP2P__V2__ORDER_STATUS__OPT_STATUS_REASON_STATUS_REASON;
    os.status_reason = cs(u->reason);
  }
  if (u->has_estimated_time) {
    os.opt_estimated_time_s_case =
        POSP2P__V2__ORDER_STATUS__OPT_ESTIMATED_TIME_S_ESTIMATED_TIME_S;
    os.estimated_time_s = u->estimated_time_s;
  }
  os.sequence = seq;
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS;
  e.order_status = &os;
  int rc = posp2p_service_send(r->svc, &e, message_id_out);
  if (rc != 0) return rc;
  /* Remember the highest number used, so the next automatic one follows
   * an explicit one too (ROUTE-10). */
  if (se == NULL) {
    size_t len = strlen(u->order_id);
    se = API_MALLOC(sizeof(*se) + len + 1);
    if (se == NULL) return 0; /* sent; the next number may repeat */
    memcpy(se->order_id, u->order_id, len + 1);
    se->seq = 0;
    if (posp2p__api_map_put(&r->seqs, se->order_id, se) != 0) {
      API_FREE(se);
      return 0;
    }
  }
  if (seq > se->seq) se->seq = seq;
  return 0;
}

int posp2p_router_cancel_order(posp2p_router *r, const char *order_id,
                               const char *device_id, const char *reason,
                               bool refund,
                               char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (message_id_out != NULL) message_id_out[0] = '\0';
  if (r == NULL || order_id == NULL || order_id[0] == '\0' || device_id == NULL ||
      !posp2p_uuid_valid(device_id))
    return POSP2P_ERR_INVAL;
  Posp2p__V2__OrderCancel oc;
  posp2p__v2__order_cancel__init(&oc);
  oc.order_id = cs(order_id);
  oc.reason = cs(reason);
  oc.refund = refund;
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_CANCEL;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL;
  e.order_cancel = &oc;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = cs(device_id);
  char mid[POSP2P_UUID_LEN + 1] = "";
  int rc = posp2p_service_send(r->svc, &e, mid);
  if (rc != 0) return rc;
  if (message_id_out != NULL) memcpy(message_id_out, mid, sizeof(mid));

  size_t len = strlen(order_id);
  cancel_entry *c = API_MALLOC(sizeof(*c) + len + 1);
  if (c != NULL) {
    memcpy(c->mid, mid, sizeof(mid));
    memcpy(c->order_id, order_id, len + 1);
  }
  if (c == NULL || posp2p__api_map_put(&r->cancels, c->mid, c) != 0) {
    API_FREE(c);
    return POSP2P_ERR_NOMEM; /* sent, but its acknowledgement is not tracked */
  }
  size_t n;
  rec **v = records_of(r, order_id, &n);
  r->depth++;
  for (size_t i = 0; i < n; i++) {
    if (v[i]->removed) continue;
    v[i]->pub.cancelled = true;
    memcpy(v[i]->pub.cancel_message_id, mid, sizeof(mid));
    v[i]->pub.cancel_state = POSP2P_ACK_PENDING;
    notify(r, RSUB_UPDATE, v[i]);
  }
  r->depth--;
  if (r->depth == 0) graveyard_flush(r);
  API_FREE(v);
  return 0;
}

/* ---- Queries ------------------------------------------------------------------------ */

const posp2p_sent_order *posp2p_router_sent_order(const posp2p_router *r,
                                                  const char *order_id) {
  if (r == NULL || order_id == NULL) return NULL;
  rec *x = posp2p__api_map_get(&r->by_order, order_id);
  return x ? &x->pub : NULL;
}

const posp2p_sent_order *posp2p_router_sent_message(const posp2p_router *r,
                                                    const char *message_id) {
  if (r == NULL || message_id == NULL) return NULL;
  char low[POSP2P_UUID_LEN + 1];
  snprintf(low, sizeof(low), "%s", message_id);
  for (char *p = low; *p; p++)
    if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
  rec *x = posp2p__api_map_get(&r->by_mid, low);
  return x ? &x->pub : NULL;
}

size_t posp2p_router_sent_order_count(const posp2p_router *r) {
  return r ? r->nrecs : 0;
}

const posp2p_sent_order *posp2p_router_sent_order_at(const posp2p_router *r,
                                                     size_t i) {
  return (r != NULL && i < r->nrecs) ? &r->recs[i]->pub : NULL;
}

size_t posp2p_router_clear_order(posp2p_router *r, const char *order_id_arg) {
  if (r == NULL || order_id_arg == NULL) return 0;
  /* The caller may pass a record's own order_id, which is freed below. */
  char *order_id = posp2p__api_strdup(order_id_arg);
  if (order_id == NULL) return 0;
  size_t removed = 0, j = 0;
  for (size_t i = 0; i < r->nrecs; i++) {
    rec *x = r->recs[i];
    if (strcmp(x->order_id, order_id) != 0) {
      r->recs[j++] = x;
      continue;
    }
    (void)posp2p__api_map_del(&r->by_mid, x->pub.message_id);
    x->removed = true;
    removed++;
    if (r->depth > 0) {
      x->next_dead = r->dead;
      r->dead = x;
    } else {
      /* by_order's key may point into x: drop it before freeing. */
      if (posp2p__api_map_get(&r->by_order, order_id) == x)
        (void)posp2p__api_map_del(&r->by_order, order_id);
      rec_free(x);
    }
  }
  r->nrecs = j;
  (void)posp2p__api_map_del(&r->by_order, order_id);
  API_FREE(order_id);
  return removed;
}

/* ---- Router subscriptions -------------------------------------------------------------- */

static int rsub_add(posp2p_router *r, int kind, posp2p_router_order_cb cb,
                    void *user_data, posp2p_sub_id *id) {
  if (r == NULL || cb == NULL) return POSP2P_ERR_INVAL;
  if (r->nsubs == r->subs_cap) {
    size_t ncap = r->subs_cap ? r->subs_cap * 2 : 4;
    rsub *n = API_MALLOC(ncap * sizeof(*n));
    if (n == NULL) return POSP2P_ERR_NOMEM;
    if (r->nsubs) memcpy(n, r->subs, r->nsubs * sizeof(*n));
    API_FREE(r->subs);
    r->subs = n;
    r->subs_cap = ncap;
  }
  rsub *e = &r->subs[r->nsubs++];
  e->id = r->next_sub++;
  e->kind = kind;
  e->cb = cb;
  e->user_data = user_data;
  e->dead = false;
  if (id != NULL) *id = e->id;
  return 0;
}

int posp2p_router_on_order_sent(posp2p_router *r, posp2p_router_order_cb cb,
                                void *user_data, posp2p_sub_id *id) {
  return rsub_add(r, RSUB_SENT, cb, user_data, id);
}

int posp2p_router_on_order_update(posp2p_router *r, posp2p_router_order_cb cb,
                                  void *user_data, posp2p_sub_id *id) {
  return rsub_add(r, RSUB_UPDATE, cb, user_data, id);
}

int posp2p_router_unsubscribe(posp2p_router *r, posp2p_sub_id id) {
  if (r == NULL) return POSP2P_ERR_INVAL;
  for (size_t i = 0; i < r->nsubs; i++) {
    if (r->subs[i].id != id || r->subs[i].dead) continue;
    r->subs[i].dead = true;
    if (r->depth > 0) {
      r->subs_dirty = true;
    } else {
      memmove(&r->subs[i], &r->subs[i + 1], (r->nsubs - i - 1) * sizeof(*r->subs));
      r->nsubs--;
    }
    return 0;
  }
  return POSP2P_ERR_INVAL;
}
