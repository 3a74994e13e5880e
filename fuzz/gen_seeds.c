/* Seed generator for the fuzz corpora (fuzz/README.md, "Seeds").
 *
 *   fuzz_gen_seeds OUTDIR [VECTORS_DIR]
 *
 * Writes OUTDIR/<target>/<name> for every target: messages of every type
 * built here and encoded with the real encoders (posp2p_frame_encode,
 * posp2p_legacy_encode, posp2p_disc_encode), streams of several of them,
 * and every golden vector of VECTORS_DIR (proto/vectors) in the input
 * format of each target. The output is then minimised into fuzz/corpus with
 * libFuzzer's -merge=1 (scripts/fuzz-campaign.sh --regen-seeds does both).
 * Deterministic: the same codec gives the same files. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "posp2p/codec.h"
#include "posp2p/legacy.h"

#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define ENV(x) POSP2P__V2__ENVELOPE__##x
#define DT(x) POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_##x

static const char *outdir;
static int failures;

/* ---- Output ----------------------------------------------------------------
 */

static void mkdir_p(const char *path) {
  if (mkdir(path, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "gen_seeds: mkdir %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

static void write_seed(const char *target, const char *name, uint8_t sel,
                       int with_sel, const uint8_t *p, size_t n) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", outdir, target);
  mkdir_p(path);
  snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
    exit(1);
  }
  if (with_sel)
    fputc(sel, f);
  if (n > 0)
    fwrite(p, 1, n, f);
  if (fclose(f) != 0) {
    fprintf(stderr, "gen_seeds: write %s failed\n", path);
    exit(1);
  }
}

/* Chunking selectors used for stream seeds (fuzz_common.h): whole, byte by
 * byte, 3-byte pieces, random 1..8, random 1..128 with the 4096-byte cap. */
static const uint8_t stream_sels[] = {0x00, 0x01, 0x12, 0x0c, 0xa6};
#define N_SELS (sizeof(stream_sels) / sizeof(stream_sels[0]))

/* ---- Messages
 * ----------------------------------------------------------------- */

static const char *ID_A = "0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01";
static const char *ID_B = "6f1e2d3c-4b5a-4978-8675-0a1b2c3d4e5f";
static const char *ID_C = "123e4567-e89b-42d3-a456-426614174000";
static const char *ID_M = "a3bb189e-8bf9-4888-9912-ace4e6543002";

/* Storage for one message and every payload kind, so that building one is
 * filling in fields; nothing is heap-allocated. */
typedef struct {
  posp2p_envelope e;
  Posp2p__V2__Hello hello;
  uint32_t versions[2];
  char *caps[3];
  Posp2p__V2__Goodbye goodbye;
  Posp2p__V2__DeviceInfo info;
  Posp2p__V2__Discovery disc;
  Posp2p__V2__OrderForward of;
  Posp2p__V2__OrderItem items[3];
  Posp2p__V2__OrderItem *item_ptrs[3];
  char *mods[2];
  Posp2p__V2__OrderStatus os;
  Posp2p__V2__OrderCancel oc;
  Posp2p__V2__CartSync cart;
  Posp2p__V2__CartItem citems[2];
  Posp2p__V2__CartItem *citem_ptrs[2];
  Posp2p__V2__Heartbeat hb;
  Posp2p__V2__Acknowledgement ack;
  Posp2p__V2__Error err;
  Posp2p__V2__OpaquePayload opaque;
} msg;

static void msg_base(msg *m, int type, int to, uint32_t prio) {
  memset(m, 0, sizeof(*m));
  posp2p_envelope_init(&m->e);
  m->e.message_id = (char *)ID_M;
  m->e.from_device_id = (char *)ID_A;
  m->e.message_type = (Posp2p__V2__MessageType)type;
  m->e.timestamp_ms = 1771755330123; /* 2026-02-22T10:15:30.123Z */
  m->e.timestamp_us = 456;
  if (to) {
    m->e.opt_to_device_id_case = ENV(OPT_TO_DEVICE_ID_TO_DEVICE_ID);
    m->e.to_device_id = (char *)ID_B;
  }
  m->e.opt_priority_case = ENV(OPT_PRIORITY_PRIORITY);
  m->e.priority = prio;
}

static void set_hello(msg *m) {
  posp2p__v2__hello__init(&m->hello);
  m->hello.device_id = (char *)ID_A;
  m->hello.device_name = "Kitchen display \xc3\xa9";
  m->hello.device_type = DT(KDS);
  m->hello.listen_port = 8766;
  m->versions[0] = 2;
  m->hello.n_supported_versions = 1;
  m->hello.supported_versions = m->versions;
  m->hello.heartbeat_interval_ms = 15000;
  m->hello.device_timeout_ms = 60000;
  m->hello.max_frame_size = 1u << 20;
  m->caps[0] = "relay";
  m->caps[1] = "ack";
  m->caps[2] = "dedup";
  m->hello.n_capabilities = 3;
  m->hello.capabilities = m->caps;
  m->e.payload_case = ENV(PAYLOAD_HELLO);
  m->e.hello = &m->hello;
  m->e.opt_priority_case = ENV(OPT_PRIORITY__NOT_SET);
}

static void set_order_forward(msg *m, size_t nitems, int full) {
  Posp2p__V2__OrderForward *o = &m->of;
  posp2p__v2__order_forward__init(o);
  o->order_id = "ORD-2026-0042";
  o->currency_exponent = 2;
  int64_t sum = 0;
  for (size_t i = 0; i < nitems; i++) {
    Posp2p__V2__OrderItem *it = &m->items[i];
    posp2p__v2__order_item__init(it);
    it->product_id = i == 0 ? "prod-0001" : "prod-0002";
    it->product_name =
        i == 0 ? "Caf\xc3\xa9 latte" : "\xe6\x97\xa5\xe6\x9c\xac";
    it->price_minor = 450 + (int64_t)i * 125;
    it->quantity = (int32_t)i + 1;
    sum += it->price_minor * it->quantity;
    if (full) {
      m->mods[0] = "oat milk";
      m->mods[1] = "extra shot";
      it->n_modifiers = 2;
      it->modifiers = m->mods;
      it->opt_variant_case = POSP2P__V2__ORDER_ITEM__OPT_VARIANT_VARIANT;
      it->variant = "large";
      it->opt_notes_case = POSP2P__V2__ORDER_ITEM__OPT_NOTES_NOTES;
      it->notes = "no sugar";
      it->opt_discount_per_item_minor_case =
          POSP2P__V2__ORDER_ITEM__OPT_DISCOUNT_PER_ITEM_MINOR_DISCOUNT_PER_ITEM_MINOR;
      it->discount_per_item_minor = 25;
    }
    m->item_ptrs[i] = it;
  }
  o->n_items = nitems;
  o->items = m->item_ptrs;
  o->subtotal_minor = sum;
  o->total_minor = sum;
  o->order_status = POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SENT_TO_KITCHEN;
  o->destination = POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY;
  if (full) {
    o->opt_tax_minor_case = POSP2P__V2__ORDER_FORWARD__OPT_TAX_MINOR_TAX_MINOR;
    o->tax_minor = 105;
    o->opt_service_charge_minor_case =
        POSP2P__V2__ORDER_FORWARD__OPT_SERVICE_CHARGE_MINOR_SERVICE_CHARGE_MINOR;
    o->service_charge_minor = 50;
    o->opt_discount_minor_case =
        POSP2P__V2__ORDER_FORWARD__OPT_DISCOUNT_MINOR_DISCOUNT_MINOR;
    o->discount_minor = 75;
    o->total_minor = sum + 105 + 50 - 75;
    o->opt_table_number_case =
        POSP2P__V2__ORDER_FORWARD__OPT_TABLE_NUMBER_TABLE_NUMBER;
    o->table_number = 12;
    o->opt_customer_name_case =
        POSP2P__V2__ORDER_FORWARD__OPT_CUSTOMER_NAME_CUSTOMER_NAME;
    o->customer_name = "Ana \"the regular\"";
    o->opt_special_instructions_case =
        POSP2P__V2__ORDER_FORWARD__OPT_SPECIAL_INSTRUCTIONS_SPECIAL_INSTRUCTIONS;
    o->special_instructions = "line1\nline2\ttab \\ \x01";
    o->opt_target_delivery_time_ms_case =
        POSP2P__V2__ORDER_FORWARD__OPT_TARGET_DELIVERY_TIME_MS_TARGET_DELIVERY_TIME_MS;
    o->target_delivery_time_ms = 1771757130000;
    o->target_delivery_time_us = 1;
  }
  m->e.payload_case = ENV(PAYLOAD_ORDER_FORWARD);
  m->e.order_forward = o;
}

/* Every message the seed set contains; each call fills m with message i and
 * returns its name, or NULL past the end. */
static const char *build(msg *m, int i) {
  switch (i) {
  case 0:
    msg_base(m, MT(HELLO), 0, 5);
    set_hello(m);
    return "hello";
  case 1:
    msg_base(m, MT(GOODBYE), 1, 5);
    posp2p__v2__goodbye__init(&m->goodbye);
    m->goodbye.reason = "timeout";
    m->e.payload_case = ENV(PAYLOAD_GOODBYE);
    m->e.goodbye = &m->goodbye;
    return "goodbye";
  case 2:
    msg_base(m, MT(DEVICE_INFO), 1, 5);
    posp2p__v2__device_info__init(&m->info);
    m->info.device_name = "Tablet 3";
    m->info.device_type = DT(ORDERING_TABLET);
    m->info.port = 8766;
    m->e.payload_case = ENV(PAYLOAD_DEVICE_INFO);
    m->e.device_info = &m->info;
    return "device_info";
  case 3:
    msg_base(m, MT(DISCOVERY), 0, 8);
    posp2p__v2__discovery__init(&m->disc);
    m->disc.device_name = "POS 2";
    m->disc.device_type = DT(SECONDARY_POS);
    m->disc.port = 9000;
    m->e.payload_case = ENV(PAYLOAD_DISCOVERY);
    m->e.discovery = &m->disc;
    return "discovery";
  case 4:
    msg_base(m, MT(ORDER_FORWARD), 1, 9);
    set_order_forward(m, 3, 1);
    return "order_forward_full";
  case 5:
    msg_base(m, MT(ORDER_FORWARD), 0, 9);
    m->e.timestamp_us = 0;
    set_order_forward(m, 1, 0);
    return "order_forward_minimal";
  case 6:
    msg_base(m, MT(ORDER_STATUS), 1, 8);
    posp2p__v2__order_status__init(&m->os);
    m->os.order_id = "ORD-2026-0042";
    m->os.new_status = POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_READY;
    m->os.opt_status_reason_case =
        POSP2P__V2__ORDER_STATUS__OPT_STATUS_REASON_STATUS_REASON;
    m->os.status_reason = "plated";
    m->os.opt_estimated_time_s_case =
        POSP2P__V2__ORDER_STATUS__OPT_ESTIMATED_TIME_S_ESTIMATED_TIME_S;
    m->os.estimated_time_s = 300;
    m->e.payload_case = ENV(PAYLOAD_ORDER_STATUS);
    m->e.order_status = &m->os;
    return "order_status";
  case 7:
    msg_base(m, MT(ORDER_CANCEL), 1, 9);
    posp2p__v2__order_cancel__init(&m->oc);
    m->oc.order_id = "ORD-2026-0042";
    m->oc.reason = "customer left";
    m->oc.refund = 1;
    m->e.payload_case = ENV(PAYLOAD_ORDER_CANCEL);
    m->e.order_cancel = &m->oc;
    return "order_cancel";
  case 8:
    msg_base(m, MT(CART_SYNC), 0, 5);
    posp2p__v2__cart_sync__init(&m->cart);
    m->cart.legacy_json =
        "{\"cartId\":\"c1\",\"items\":[{\"id\":1,\"q\":2.5}]}";
    m->e.payload_case = ENV(PAYLOAD_CART_SYNC);
    m->e.cart_sync = &m->cart;
    return "cart_sync_json";
  case 9:
    msg_base(m, MT(CART_SYNC), 0, 5);
    posp2p__v2__cart_sync__init(&m->cart);
    m->cart.cart_id = "cart-7";
    for (size_t k = 0; k < 2; k++) {
      posp2p__v2__cart_item__init(&m->citems[k]);
      m->citems[k].product_id = k ? "p2" : "p1";
      m->citems[k].product_name = k ? "Tea" : "Cake";
      m->citems[k].price_minor = k ? 300 : 550;
      m->citems[k].quantity = 1;
      m->citem_ptrs[k] = &m->citems[k];
    }
    m->cart.n_items = 2;
    m->cart.items = m->citem_ptrs;
    m->cart.total_minor = 850;
    m->cart.currency_exponent = 2;
    m->e.payload_case = ENV(PAYLOAD_CART_SYNC);
    m->e.cart_sync = &m->cart;
    return "cart_sync_typed";
  case 10:
    msg_base(m, MT(HEARTBEAT), 1, 2);
    posp2p__v2__heartbeat__init(&m->hb);
    m->e.payload_case = ENV(PAYLOAD_HEARTBEAT);
    m->e.heartbeat = &m->hb;
    return "heartbeat";
  case 11:
    msg_base(m, MT(ACKNOWLEDGEMENT), 1, 3);
    posp2p__v2__acknowledgement__init(&m->ack);
    m->ack.acknowledged_message_id = (char *)ID_C;
    m->e.payload_case = ENV(PAYLOAD_ACKNOWLEDGEMENT);
    m->e.acknowledgement = &m->ack;
    return "acknowledgement";
  case 12:
    msg_base(m, MT(ERROR), 1, 9);
    posp2p__v2__error__init(&m->err);
    m->err.code = POSP2P__V2__ERROR_CODE__ERROR_CODE_UNKNOWN_DEVICE;
    m->err.description = "no such device";
    m->err.opt_details_case = POSP2P__V2__ERROR__OPT_DETAILS_DETAILS;
    m->err.details = "to_device_id "
                     "123e4567";
    m->e.payload_case = ENV(PAYLOAD_ERROR);
    m->e.error = &m->err;
    return "error_known";
  case 13:
    msg_base(m, MT(ERROR), 1, 9);
    posp2p__v2__error__init(&m->err);
    m->err.legacy_code = "PRINTER_JAM";
    m->err.description = "printer jammed";
    m->e.payload_case = ENV(PAYLOAD_ERROR);
    m->e.error = &m->err;
    return "error_free";
  case 14:
    msg_base(m, MT(ORDER_SYNC), 0, 5);
    posp2p__v2__opaque_payload__init(&m->opaque);
    m->opaque.json = "{\"orders\":[{\"id\":\"o1\",\"total\":12.5,\"ok\":true,"
                     "\"x\":null}],\"n\":-3e-7}";
    m->e.payload_case = ENV(PAYLOAD_OPAQUE);
    m->e.opaque = &m->opaque;
    return "order_sync";
  case 15:
    msg_base(m, MT(DEVICE_COMMAND), 1, 5);
    m->e.opt_acknowledged_case = ENV(OPT_ACKNOWLEDGED_ACKNOWLEDGED);
    m->e.acknowledged = 1;
    posp2p__v2__opaque_payload__init(&m->opaque);
    m->opaque.json = "{\"command\":\"reboot\",\"args\":{}}";
    m->e.payload_case = ENV(PAYLOAD_OPAQUE);
    m->e.opaque = &m->opaque;
    return "device_command";
  case 16:
    msg_base(m, MT(WARNING), 0, 5);
    m->e.opt_priority_case = ENV(OPT_PRIORITY__NOT_SET);
    return "warning_no_payload";
  case 17:
    /* Routed by device type (v2 only: the legacy wire drops it). */
    msg_base(m, MT(ORDER_STATUS), 0, 8);
    m->e.opt_to_device_type_case = ENV(OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE);
    m->e.to_device_type = DT(KDS);
    posp2p__v2__order_status__init(&m->os);
    m->os.order_id = "ORD-7";
    m->os.new_status = POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PREPARING;
    m->os.sequence = 3;
    m->e.payload_case = ENV(PAYLOAD_ORDER_STATUS);
    m->e.order_status = &m->os;
    return "order_status_by_type";
  case 18:
    msg_base(m, MT(PRODUCT_SYNC), 0, 0);
    posp2p__v2__opaque_payload__init(&m->opaque);
    m->opaque.json = "{\"products\":[],\"s\":\"\\u00e9\\n\\\"\"}";
    m->e.payload_case = ENV(PAYLOAD_OPAQUE);
    m->e.opaque = &m->opaque;
    return "product_sync";
  default: return NULL;
  }
}

/* ---- Encoded forms
 * ----------------------------------------------------------- */

static void add_message(const msg *m, const char *name, posp2p_buf *stream,
                        posp2p_buf *lines) {
  posp2p_error err;
  posp2p_buf b;
  char fname[256];
  posp2p_buf_init(&b, 1u << 22, NULL);

  if (posp2p_frame_encode(&m->e, 0, &b, &err) != 0) {
    fprintf(stderr, "gen_seeds: %s: frame_encode: %s\n", name, err.message);
    failures++;
  } else {
    size_t hdr = b.len - posp2p__v2__envelope__get_packed_size(&m->e);
    snprintf(fname, sizeof(fname), "gen_%s", name);
    write_seed("fuzz_envelope", fname, 0, 0, b.data + hdr, b.len - hdr);
    write_seed("fuzz_diff", fname, 0, 0, b.data + hdr, b.len - hdr);
    write_seed("fuzz_framer", fname, 0x00, 1, b.data, b.len);
    snprintf(fname, sizeof(fname), "gen_%s_bytewise", name);
    write_seed("fuzz_framer", fname, 0x01, 1, b.data, b.len);
    posp2p_buf_append(stream, b.data, b.len);
  }

  b.len = 0;
  int rv = posp2p_legacy_encode(&m->e, NULL, &b, &err);
  if (rv == 0) {
    snprintf(fname, sizeof(fname), "gen_%s", name);
    write_seed("fuzz_legacy", fname, 0x00, 1, b.data, b.len);
    /* fuzz_diff takes a legacy line without its newline. */
    snprintf(fname, sizeof(fname), "gen_%s_legacy", name);
    write_seed("fuzz_diff", fname, 0, 0, b.data, b.len ? b.len - 1 : 0);
    posp2p_buf_append(lines, b.data, b.len);
  } else if (m->e.message_type != MT(HELLO) &&
             m->e.message_type != MT(GOODBYE)) {
    fprintf(stderr, "gen_seeds: %s: legacy_encode: %s\n", name, err.message);
    failures++;
  }
  posp2p_buf_free(&b);
}

static void add_datagrams(void) {
  static const char *names[] = {"request", "response", "announce"};
  uint32_t versions[2] = {2, 1};
  for (int k = 1; k <= 3; k++) {
    posp2p_disc d;
    posp2p__v2__discovery_datagram__init(&d);
    d.kind = (Posp2p__V2__DiscoveryKind)k;
    d.device_id = (char *)ID_A;
    d.device_name = "Main POS \xe2\x98\x95";
    d.device_type = k == 1 ? DT(ORDERING_TABLET) : DT(MAIN_POS);
    d.tcp_port = 8766;
    d.n_supported_versions = 2;
    d.supported_versions = versions;
    d.nonce = 0x1122334455667788ull;
    d.hostname = "pos-main.local";
    d.ip_address = "192.168.1.20";
    d.metadata_json = k == 2 ? "{\"version\":\"1.2.3\",\"tables\":20}" : "";
    for (int w = 0; w < 2; w++) {
      posp2p_wire wire = w ? POSP2P_WIRE_LEGACY : POSP2P_WIRE_V2;
      posp2p_buf b;
      posp2p_error err;
      char fname[128];
      posp2p_buf_init(&b, POSP2P_DISC_MAX_DATAGRAM, NULL);
      if (posp2p_disc_encode(&d, wire, &b, &err) == 0) {
        snprintf(fname, sizeof(fname), "gen_%s_%s", names[k - 1],
                 w ? "legacy" : "v2");
        write_seed("fuzz_disc", fname, 0, 0, b.data, b.len);
      } else {
        fprintf(stderr, "gen_seeds: disc %s wire %d: %s\n", names[k - 1],
                (int)wire, err.message);
        failures++;
      }
      posp2p_buf_free(&b);
    }
  }
}

/* ---- Golden vectors
 * ------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 1 << 16;
  uint8_t *p = malloc(cap);
  *n = 0;
  size_t got;
  while (p != NULL && (got = fread(p + *n, 1, cap - *n, f)) > 0) {
    *n += got;
    if (*n == cap) {
      uint8_t *np = realloc(p, cap * 2);
      if (np == NULL) {
        free(p);
        p = NULL;
        break;
      }
      p = np;
      cap *= 2;
    }
  }
  fclose(f);
  return p;
}

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static void add_vector(const char *sub, const char *file, const uint8_t *p,
                       size_t n) {
  char name[512];
  snprintf(name, sizeof(name), "vec_%s_%s", sub, file);
  int v2 = strcmp(sub, "v2") == 0;
  int disc = strncmp(file, "disc_", 5) == 0;
  if (disc) {
    /* Legacy datagrams carry no newline; drop one if a file has it. */
    size_t len = n;
    if (!v2 && len > 0 && p[len - 1] == '\n')
      len--;
    write_seed("fuzz_disc", name, 0, 0, p, len);
    return;
  }
  if (v2) {
    /* A frame: the varint prefix, then the body. */
    write_seed("fuzz_framer", name, 0x00, 1, p, n);
    size_t hdr = 0;
    while (hdr < n && hdr < 5 && (p[hdr] & 0x80))
      hdr++;
    if (hdr < n)
      hdr++;
    write_seed("fuzz_envelope", name, 0, 0, p + hdr, n - hdr);
    write_seed("fuzz_diff", name, 0, 0, p + hdr, n - hdr);
    return;
  }
  write_seed("fuzz_legacy", name, 0x00, 1, p, n);
  size_t len = n;
  while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
    len--;
  if (len > 0 && p[0] == '{')
    write_seed("fuzz_diff", name, 0, 0, p, len);
}

static void add_vectors(const char *dir) {
  static const char *subs[] = {"v2", "legacy"};
  for (size_t s = 0; s < 2; s++) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, subs[s]);
    DIR *d = opendir(path);
    if (d == NULL) {
      fprintf(stderr, "gen_seeds: %s: %s (no vectors used)\n", path,
              strerror(errno));
      continue;
    }
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
      if (ent->d_name[0] == '.')
        continue;
      if (!has_suffix(ent->d_name, ".bin") && !has_suffix(ent->d_name, ".json"))
        continue;
      char fpath[2048];
      snprintf(fpath, sizeof(fpath), "%s/%s", path, ent->d_name);
      size_t n = 0;
      uint8_t *p = slurp(fpath, &n);
      if (p == NULL) {
        fprintf(stderr, "gen_seeds: cannot read %s\n", fpath);
        failures++;
        continue;
      }
      char base[512];
      snprintf(base, sizeof(base), "%s", ent->d_name);
      *strrchr(base, '.') = '\0';
      add_vector(subs[s], base, p, n);
      free(p);
    }
    closedir(d);
  }
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s OUTDIR [VECTORS_DIR]\n", argv[0]);
    return 2;
  }
  outdir = argv[1];
  mkdir_p(outdir);

  posp2p_buf stream, lines;
  posp2p_buf_init(&stream, 1u << 22, NULL);
  posp2p_buf_init(&lines, 1u << 22, NULL);
  msg m;
  const char *name;
  for (int i = 0; (name = build(&m, i)) != NULL; i++)
    add_message(&m, name, &stream, &lines);
  /* The same stream behind a connection preface, as a connection starts. */
  {
    uint8_t pre[POSP2P_PREFACE_LEN];
    posp2p_buf withpre;
    posp2p_preface_encode(pre, POSP2P_VERSION);
    posp2p_buf_init(&withpre, 1u << 22, NULL);
    posp2p_buf_append(&withpre, pre, sizeof(pre));
    posp2p_buf_append(&withpre, stream.data, stream.len);
    write_seed("fuzz_framer", "gen_preface_stream", 0x00, 1, withpre.data,
               withpre.len);
    write_seed("fuzz_framer", "gen_preface_only", 0x00, 1, pre, sizeof(pre));
    pre[3] = 'X';
    write_seed("fuzz_framer", "gen_preface_bad", 0x01, 1, pre, sizeof(pre));
    posp2p_buf_free(&withpre);
  }
  for (size_t k = 0; k < N_SELS; k++) {
    char fname[64];
    snprintf(fname, sizeof(fname), "gen_stream_sel%02x", stream_sels[k]);
    write_seed("fuzz_framer", fname, stream_sels[k], 1, stream.data,
               stream.len);
    write_seed("fuzz_legacy", fname, stream_sels[k], 1, lines.data, lines.len);
  }
  /* A stream with empty lines and CRLF endings between messages. */
  {
    posp2p_buf mixed;
    posp2p_buf_init(&mixed, 1u << 22, NULL);
    posp2p_buf_append(&mixed, "\n\r\n", 3);
    for (size_t i = 0; i < lines.len; i++) {
      if (lines.data[i] == '\n')
        posp2p_buf_append(&mixed, "\r", 1);
      posp2p_buf_append(&mixed, &lines.data[i], 1);
    }
    write_seed("fuzz_legacy", "gen_stream_crlf", 0x0d, 1, mixed.data,
               mixed.len);
    posp2p_buf_free(&mixed);
  }
  posp2p_buf_free(&stream);
  posp2p_buf_free(&lines);
  add_datagrams();
  if (argc == 3)
    add_vectors(argv[2]);
  if (failures)
    fprintf(stderr, "gen_seeds: %d failures\n", failures);
  return failures ? 1 : 0;
}
