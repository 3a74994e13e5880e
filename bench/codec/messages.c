/* Benchmark messages. The typical order mirrors the golden vector
 * proto/vectors/legacy/order_forward_typical.json (same items, names,
 * modifiers and notes, UTF-8 included); the large order cycles through a
 * realistic menu so that names, modifiers and notes have real lengths. */
#include "messages.h"

#include <stdio.h>
#include <string.h>

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define ENV(x) POSP2P__V2__ENVELOPE__##x
#define ITEM(x) POSP2P__V2__ORDER_ITEM__##x
#define ORDER(x) POSP2P__V2__ORDER_FORWARD__##x

/* 2026-02-22T10:15:30.123456 UTC. */
#define BENCH_TIMESTAMP_MS INT64_C(1771755330123)
#define BENCH_TIMESTAMP_US 456u

static const char *const kind_names[BENCH_MSG_COUNT] = {
    "heartbeat", "ack", "typical_order", "large_order"};

static const char *const kind_descriptions[BENCH_MSG_COUNT] = {
    "heartbeat to one peer, sequence number, priority 2",
    "acknowledgement of an order to its sender, priority 3",
    "orderForward, 10 items with modifiers, variants, notes, per-item "
    "discounts, UTF-8 names, table, customer, instructions, priority 9",
    "orderForward, 200 items from a 24-dish menu with modifiers, variants "
    "and notes, priority 9"};

const char *bench_msg_name(bench_msg_kind k) {
  return (unsigned)k < BENCH_MSG_COUNT ? kind_names[k] : "?";
}

const char *bench_msg_description(bench_msg_kind k) {
  return (unsigned)k < BENCH_MSG_COUNT ? kind_descriptions[k] : "?";
}

/* splitmix64: a fixed, portable sequence for the UUID bytes. */
static uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9E3779B97F4A7C15);
  x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
  return x ^ (x >> 31);
}

static char *arena_strdup(posp2p_arena *a, const char *s) {
  return posp2p_mem_strndup(&a->base, s, strlen(s));
}

static char *make_uuid(posp2p_arena *a, uint64_t seed) {
  uint8_t rnd[16];
  uint64_t x = mix64(seed), y = mix64(seed ^ UINT64_C(0x5555));
  for (int i = 0; i < 8; i++) {
    rnd[i] = (uint8_t)(x >> (8 * i));
    rnd[8 + i] = (uint8_t)(y >> (8 * i));
  }
  char *out = posp2p_mem_alloc(&a->base, POSP2P_UUID_LEN + 1);
  if (out != NULL) posp2p_uuid_format(rnd, out);
  return out;
}

/* Device ids are fixed per role; message ids vary with the serial. */
enum { SEED_MAIN_POS = 1, SEED_TABLET = 2, SEED_MSG = 1000 };

static posp2p_envelope *envelope_new(posp2p_arena *a, int type,
                                     uint64_t msg_seed, uint64_t from_seed,
                                     uint64_t to_seed, uint32_t priority,
                                     unsigned serial) {
  posp2p_envelope *e = posp2p_mem_alloc(&a->base, sizeof(*e));
  if (e == NULL) return NULL;
  posp2p_envelope_init(e);
  e->message_id = make_uuid(a, msg_seed);
  e->message_type = (Posp2p__V2__MessageType)type;
  e->from_device_id = make_uuid(a, from_seed);
  e->opt_to_device_id_case = ENV(OPT_TO_DEVICE_ID_TO_DEVICE_ID);
  e->to_device_id = make_uuid(a, to_seed);
  e->timestamp_ms = BENCH_TIMESTAMP_MS + (int64_t)serial * 250;
  e->timestamp_us = BENCH_TIMESTAMP_US;
  e->opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  e->priority = priority;
  if (e->message_id == NULL || e->from_device_id == NULL ||
      e->to_device_id == NULL)
    return NULL;
  return e;
}

static posp2p_envelope *build_heartbeat(unsigned serial, posp2p_arena *a) {
  posp2p_envelope *e = envelope_new(a, MT(HEARTBEAT), SEED_MSG + 2 * serial,
                                    SEED_TABLET, SEED_MAIN_POS, 2, serial);
  Posp2p__V2__Heartbeat *hb = posp2p_mem_alloc(&a->base, sizeof(*hb));
  if (e == NULL || hb == NULL) return NULL;
  posp2p__v2__heartbeat__init(hb);
  hb->sequence = 48213u + serial; /* about 8 days of 15 s heartbeats */
  e->payload_case = ENV(PAYLOAD_HEARTBEAT);
  e->heartbeat = hb;
  return e;
}

static posp2p_envelope *build_ack(unsigned serial, posp2p_arena *a) {
  posp2p_envelope *e =
      envelope_new(a, MT(ACKNOWLEDGEMENT), SEED_MSG + 2 * serial + 1,
                   SEED_MAIN_POS, SEED_TABLET, 3, serial);
  Posp2p__V2__Acknowledgement *ack = posp2p_mem_alloc(&a->base, sizeof(*ack));
  if (e == NULL || ack == NULL) return NULL;
  posp2p__v2__acknowledgement__init(ack);
  ack->acknowledged_message_id = make_uuid(a, SEED_MSG + 2 * serial);
  if (ack->acknowledged_message_id == NULL) return NULL;
  e->payload_case = ENV(PAYLOAD_ACKNOWLEDGEMENT);
  e->acknowledgement = ack;
  return e;
}

typedef struct {
  const char *name;
  int64_t price_minor;
  int32_t quantity;
  const char *modifiers[3];
  const char *variant;         /* NULL: absent */
  const char *notes;           /* NULL: absent */
  int64_t discount_minor;      /* < 0: absent */
} menu_item;

/* The ten items of the typical order (same as the golden vector). */
static const menu_item typical_items[10] = {
    {"Margherita Pizza", 1250, 2, {"extra cheese", "thin crust", NULL},
     "large", "cut in 8 slices", -1},
    {"Caf\xc3\xa9 au lait", 375, 1, {"oat milk", NULL, NULL}, "medium", NULL,
     -1},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe9\x85\x92 (sake)", 890, 1, {NULL, NULL, NULL},
     NULL, "served warm", 90},
    {"Ramen \xf0\x9f\x8d\x9c", 1400, 2, {"no egg", "extra noodles", NULL},
     "spicy", NULL, -1},
    {"Caesar salad", 950, 1, {NULL, NULL, NULL}, NULL, "dressing on the side",
     -1},
    {"Cr\303\250me br\303\273l\303\251e", 625, 2, {NULL, NULL, NULL}, NULL,
     NULL, 100},
    {"Sparkling water", 200, 3, {NULL, NULL, NULL}, "500 ml", NULL, -1},
    {"Burger", 1195, 1, {"no onion", "add bacon", "well done"}, "double",
     "allergy: sesame \"strict\"", 200},
    {"Fries", 350, 2, {"salt", NULL, NULL}, NULL, NULL, -1},
    {"Espresso", 280, 4, {NULL, NULL, NULL}, "double", NULL, 20},
};

/* A menu for the large order: realistic lengths, not "Item 17". */
static const char *const menu_names[24] = {
    "Margherita Pizza", "Pepperoni Pizza", "Quattro Formaggi",
    "Spaghetti Carbonara", "Penne all'Arrabbiata", "Lasagne al Forno",
    "Caesar salad", "Greek salad", "Tomato soup", "Chicken wings (12)",
    "Cheeseburger", "Veggie burger", "Fish and chips", "Club sandwich",
    "Fries", "Sweet potato fries", "Onion rings", "Tiramis\xc3\xb9",
    "Cr\303\250me br\303\273l\303\251e", "Cheesecake", "Espresso",
    "Flat white", "Sparkling water 500 ml", "Lemonade"};
static const char *const menu_modifiers[8] = {
    "extra cheese", "no onion", "gluten free", "add bacon",
    "sauce on the side", "oat milk", "no ice", "well done"};
static const char *const menu_variants[4] = {"small", "medium", "large",
                                             "double"};
static const char *const menu_notes[4] = {
    "allergy: peanuts", "for the kid, cut in pieces",
    "serve with the mains", "customer asked for extra napkins"};

static Posp2p__V2__OrderItem *item_new(posp2p_arena *a, unsigned index,
                                       const menu_item *m) {
  Posp2p__V2__OrderItem *it = posp2p_mem_alloc(&a->base, sizeof(*it));
  if (it == NULL) return NULL;
  posp2p__v2__order_item__init(it);
  char id[24];
  snprintf(id, sizeof id, "prod-%04u", index + 1);
  it->product_id = arena_strdup(a, id);
  it->product_name = arena_strdup(a, m->name);
  if (it->product_id == NULL || it->product_name == NULL) return NULL;
  it->price_minor = m->price_minor;
  it->quantity = m->quantity;
  size_t nmod = 0;
  while (nmod < 3 && m->modifiers[nmod] != NULL) nmod++;
  if (nmod > 0) {
    it->modifiers = posp2p_mem_alloc(&a->base, nmod * sizeof(char *));
    if (it->modifiers == NULL) return NULL;
    for (size_t i = 0; i < nmod; i++) {
      it->modifiers[i] = arena_strdup(a, m->modifiers[i]);
      if (it->modifiers[i] == NULL) return NULL;
    }
    it->n_modifiers = nmod;
  }
  if (m->variant != NULL) {
    it->opt_variant_case = ITEM(OPT_VARIANT_VARIANT);
    it->variant = arena_strdup(a, m->variant);
    if (it->variant == NULL) return NULL;
  }
  if (m->notes != NULL) {
    it->opt_notes_case = ITEM(OPT_NOTES_NOTES);
    it->notes = arena_strdup(a, m->notes);
    if (it->notes == NULL) return NULL;
  }
  if (m->discount_minor >= 0) {
    it->opt_discount_per_item_minor_case =
        ITEM(OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR);
    it->discount_per_item_minor = m->discount_minor;
  }
  return it;
}

static void large_item(unsigned i, menu_item *m) {
  memset(m, 0, sizeof(*m));
  m->name = menu_names[i % 24];
  m->price_minor = 250 + (int64_t)((i * 37) % 2000);
  m->quantity = (int32_t)(1 + i % 4);
  for (unsigned k = 0; k < i % 4 && k < 3; k++)
    m->modifiers[k] = menu_modifiers[(i + k * 3) % 8];
  m->variant = (i % 2) ? menu_variants[i % 4] : NULL;
  m->notes = (i % 5 == 4) ? menu_notes[(i / 5) % 4] : NULL;
  m->discount_minor = (i % 7 == 3) ? 50 : -1;
}

static posp2p_envelope *build_order(unsigned serial, unsigned n_items,
                                    posp2p_arena *a) {
  posp2p_envelope *e =
      envelope_new(a, MT(ORDER_FORWARD), SEED_MSG + 100000 + serial,
                   SEED_TABLET, SEED_MAIN_POS, 9, serial);
  Posp2p__V2__OrderForward *o = posp2p_mem_alloc(&a->base, sizeof(*o));
  if (e == NULL || o == NULL) return NULL;
  posp2p__v2__order_forward__init(o);
  char id[32];
  snprintf(id, sizeof id, "ORD-2026-%06u", 1 + serial);
  o->order_id = arena_strdup(a, id);
  o->items = posp2p_mem_alloc(&a->base, n_items * sizeof(*o->items));
  if (o->order_id == NULL || o->items == NULL) return NULL;
  int64_t subtotal = 0, discount = 0;
  for (unsigned i = 0; i < n_items; i++) {
    menu_item m;
    if (n_items == 10) {
      m = typical_items[i];
    } else {
      large_item(i, &m);
    }
    o->items[i] = item_new(a, i, &m);
    if (o->items[i] == NULL) return NULL;
    subtotal += m.price_minor * m.quantity;
    if (m.discount_minor > 0) discount += m.discount_minor * m.quantity;
  }
  o->n_items = n_items;
  o->subtotal_minor = subtotal;
  o->opt_tax_minor_case = ORDER(OPT_TAX_MINOR_TAX_MINOR);
  o->tax_minor = subtotal * 8 / 100;
  o->opt_discount_minor_case = ORDER(OPT_DISCOUNT_MINOR_DISCOUNT_MINOR);
  o->discount_minor = discount;
  o->total_minor = subtotal + o->tax_minor - discount;
  o->order_status = POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PENDING;
  o->destination = POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY;
  o->opt_table_number_case = ORDER(OPT_TABLE_NUMBER_TABLE_NUMBER);
  o->table_number = 12;
  o->opt_customer_name_case = ORDER(OPT_CUSTOMER_NAME_CUSTOMER_NAME);
  o->customer_name = arena_strdup(a, "Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac");
  o->opt_special_instructions_case =
      ORDER(OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS);
  o->special_instructions =
      arena_strdup(a, "Birthday \xf0\x9f\x8e\x82 \xe2\x80\x94 bring dessert last");
  o->opt_target_delivery_time_ms_case =
      ORDER(OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS);
  o->target_delivery_time_ms = BENCH_TIMESTAMP_MS + 30 * 60 * 1000;
  o->currency_exponent = 2;
  o->currency = arena_strdup(a, "EUR");
  if (o->customer_name == NULL || o->special_instructions == NULL ||
      o->currency == NULL)
    return NULL;
  e->payload_case = ENV(PAYLOAD_ORDER_FORWARD);
  e->order_forward = o;
  return e;
}

posp2p_envelope *bench_msg_build(bench_msg_kind k, unsigned serial,
                                 posp2p_arena *arena) {
  switch (k) {
  case BENCH_MSG_HEARTBEAT: return build_heartbeat(serial, arena);
  case BENCH_MSG_ACK: return build_ack(serial, arena);
  case BENCH_MSG_TYPICAL: return build_order(serial, 10, arena);
  case BENCH_MSG_LARGE: return build_order(serial, 200, arena);
  default: return NULL;
  }
}
