/* The peer object: configuration, lifecycle, the counting allocator, event
 * dispatch, timers and queries. Protocol behaviour lives in conn.c
 * (connections and handshake), route.c (message handling), ack.c (outbox,
 * dedup) and engine_disc.c (discovery). */
#include <string.h>

#include "peer_int.h"

/* ---- Errors -------------------------------------------------------------- */

const char *posp2p_peer_strerror(int code) {
  switch (code) {
  case POSP2P_ERR_QUEUE_FULL: return "connection's outbound queue is full";
  case POSP2P_ERR_NO_CONN: return "no such connection";
  case POSP2P_ERR_UNKNOWN_DEVICE: return "destination device was never seen";
  case POSP2P_ERR_DEVICE_OFFLINE: return "destination device is not connected";
  case POSP2P_ERR_NO_ROUTE: return "no connection leads to the destination";
  case POSP2P_ERR_CONN_CLOSING: return "connection is closing";
  case POSP2P_ERR_SHUTDOWN: return "peer is shutting down";
  case POSP2P_ERR_STORE: return "persistent store failed";
  case POSP2P_ERR_CONFIG: return "invalid configuration";
  case POSP2P_ERR_RETRY_LIMIT: return "no acknowledgement after the retry limit";
  case POSP2P_ERR_PEER_CLOSED: return "connection closed by the remote or transport";
  case POSP2P_ERR_PROTOCOL: return "connection closed after a protocol violation";
  case POSP2P_ERR_TIMEOUT: return "timed out";
  case POSP2P_ERR_DUPLICATE: return "record already present";
  case POSP2P_ERR_REMOTE_ERROR: return "remote sent an error";
  default: return posp2p_strerror(code);
  }
}

const char *posp2p_peer_err_name(int code) {
  switch (code) {
  case POSP2P_ERR_QUEUE_FULL: return "POSP2P_ERR_QUEUE_FULL";
  case POSP2P_ERR_NO_CONN: return "POSP2P_ERR_NO_CONN";
  case POSP2P_ERR_UNKNOWN_DEVICE: return "POSP2P_ERR_UNKNOWN_DEVICE";
  case POSP2P_ERR_DEVICE_OFFLINE: return "POSP2P_ERR_DEVICE_OFFLINE";
  case POSP2P_ERR_NO_ROUTE: return "POSP2P_ERR_NO_ROUTE";
  case POSP2P_ERR_CONN_CLOSING: return "POSP2P_ERR_CONN_CLOSING";
  case POSP2P_ERR_SHUTDOWN: return "POSP2P_ERR_SHUTDOWN";
  case POSP2P_ERR_STORE: return "POSP2P_ERR_STORE";
  case POSP2P_ERR_CONFIG: return "POSP2P_ERR_CONFIG";
  case POSP2P_ERR_RETRY_LIMIT: return "POSP2P_ERR_RETRY_LIMIT";
  case POSP2P_ERR_PEER_CLOSED: return "POSP2P_ERR_PEER_CLOSED";
  case POSP2P_ERR_PROTOCOL: return "POSP2P_ERR_PROTOCOL";
  case POSP2P_ERR_TIMEOUT: return "POSP2P_ERR_TIMEOUT";
  case POSP2P_ERR_DUPLICATE: return "POSP2P_ERR_DUPLICATE";
  case POSP2P_ERR_REMOTE_ERROR: return "POSP2P_ERR_REMOTE_ERROR";
  default: return posp2p_err_name(code);
  }
}

const char *posp2p_dev_status_name(posp2p_dev_status s) {
  switch (s) {
  case POSP2P_DEV_DISCONNECTED: return "disconnected";
  case POSP2P_DEV_DISCOVERING: return "discovering";
  case POSP2P_DEV_CONNECTING: return "connecting";
  case POSP2P_DEV_CONNECTED: return "connected";
  case POSP2P_DEV_ERROR: return "error";
  }
  return "?";
}

const char *posp2p_peer_event_name(posp2p_peer_event_type t) {
  switch (t) {
  case POSP2P_PEER_EV_DEVICE: return "device";
  case POSP2P_PEER_EV_CONN_READY: return "conn_ready";
  case POSP2P_PEER_EV_CONN_CLOSED: return "conn_closed";
  case POSP2P_PEER_EV_MESSAGE: return "message";
  case POSP2P_PEER_EV_ACK: return "ack";
  case POSP2P_PEER_EV_DELIVERY_FAILED: return "delivery_failed";
  case POSP2P_PEER_EV_DEVICE_TIMEOUT: return "device_timeout";
  case POSP2P_PEER_EV_ERROR_RECEIVED: return "error_received";
  case POSP2P_PEER_EV_VIOLATION: return "violation";
  case POSP2P_PEER_EV_BACKPRESSURE: return "backpressure";
  case POSP2P_PEER_EV_DRAINED: return "drained";
  case POSP2P_PEER_EV_DATAGRAM_IGNORED: return "datagram_ignored";
  case POSP2P_PEER_EV_STATUS_STALE: return "status_stale";
  case POSP2P_PEER_EV_SHUTDOWN_DONE: return "shutdown_done";
  }
  return "?";
}

/* ---- UUIDs and hashing -------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Not traced either: its outcome is a bool that every caller branches on,
 * and that branch is traced. */
POSP2P__NO_COVERAGE bool posp2p__uuid_parse(const char *s, posp2p__uuid *out) {
  if (s == NULL) return false;
  int k = 0;
  for (int i = 0; i < (int)POSP2P_UUID_LEN; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
      continue;
    }
    int hi = hexval(s[i]);
    if (hi < 0) return false;
    i++;
    int lo = hexval(s[i]);
    if (lo < 0) return false;
    out->b[k++] = (uint8_t)(hi << 4 | lo);
  }
  return s[POSP2P_UUID_LEN] == '\0';
}

POSP2P__NO_COVERAGE void posp2p__uuid_text(const posp2p__uuid *u,
                                                  char out[POSP2P_UUID_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  int k = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[k++] = '-';
    out[k++] = hex[u->b[i] >> 4];
    out[k++] = hex[u->b[i] & 15];
  }
  out[k] = '\0';
}

/* FNV-1a: the keys are UUIDs (already random) and short strings, so a
 * simple byte hash spreads them well enough. */
POSP2P__NO_COVERAGE uint32_t posp2p__hash_bytes(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 16777619u;
  }
  return h;
}

/* ---- Counting allocator ---------------------------------------------------------
 * Each block carries its size in a 16-byte header (16 keeps the user's
 * pointer aligned for any type), so frees can be subtracted. */

typedef struct {
  size_t size;
  size_t pad;
} mem_hdr;

static void *count_alloc(void *data, size_t n) {
  posp2p_peer *p = data;
  if (n > SIZE_MAX - sizeof(mem_hdr)) return NULL;
  mem_hdr *h = p->parent->alloc(p->parent->allocator_data, n + sizeof(mem_hdr));
  if (h == NULL) return NULL;
  h->size = n;
  p->mem_bytes += n;
  return h + 1;
}

static void count_free(void *data, void *ptr) {
  posp2p_peer *p = data;
  if (ptr == NULL) return;
  mem_hdr *h = (mem_hdr *)ptr - 1;
  p->mem_bytes -= h->size;
  p->parent->free(p->parent->allocator_data, h);
}

void *posp2p__alloc(posp2p_peer *p, size_t n) {
  return posp2p_mem_alloc(&p->alloc, n);
}

void *posp2p__calloc(posp2p_peer *p, size_t n) {
  void *x = posp2p__alloc(p, n);
  if (x != NULL) memset(x, 0, n);
  return x;
}

void posp2p__free(posp2p_peer *p, void *ptr) {
  if (ptr != NULL) posp2p_mem_free(&p->alloc, ptr);
}

char *posp2p__strdup(posp2p_peer *p, const char *s, size_t max) {
  if (s == NULL) s = "";
  size_t n = 0;
  while (n < max && s[n] != '\0') n++;
  char *d = posp2p__alloc(p, n + 1);
  if (d == NULL) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* ---- Blobs -------------------------------------------------------------------- */

posp2p__blob *posp2p__blob_new(posp2p_peer *p, const void *data, size_t len) {
  if (len > UINT32_MAX - sizeof(posp2p__blob)) return NULL;
  posp2p__blob *b = posp2p__alloc(p, sizeof *b + len);
  if (b == NULL) return NULL;
  b->refs = 1;
  b->len = (uint32_t)len;
  if (data != NULL && len) memcpy(b->data, data, len);
  return b;
}

posp2p__blob *posp2p__blob_ref(posp2p__blob *b) {
  b->refs++;
  return b;
}

void posp2p__blob_unref(posp2p_peer *p, posp2p__blob *b) {
  if (b != NULL && --b->refs == 0) posp2p__free(p, b);
}

/* ---- Configuration ------------------------------------------------------------- */

void posp2p_peer_config_init(posp2p_peer_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->device_type = DT(UNSPECIFIED);
  cfg->listen_port = (uint16_t)POSP2P_DATA_PORT;
  cfg->heartbeat_interval_ms = POSP2P_HEARTBEAT_MS_DEFAULT;
  cfg->device_timeout_ms = POSP2P_TIMEOUT_MS_DEFAULT;
  cfg->ack_timeout_ms = 2000;
  cfg->ack_backoff_cap_ms = 16000;
  cfg->max_retries = 5;
  cfg->handshake_timeout_ms = 10000;
  cfg->announce_interval_ms = 30000;
  cfg->disc_rate_limit_ms = 1000;
  cfg->close_linger_ms = 5000;
  cfg->reconnect_ms = 0;
  cfg->max_frame = POSP2P_MAX_FRAME_DEFAULT;
  cfg->max_connections = 1024;
  cfg->max_queue_bytes = 2u * 1024u * 1024u;
  cfg->dedup_window_ms = 600000;
  cfg->dedup_count = 4096;
  cfg->max_devices = 4096;
  cfg->wire = POSP2P_PEER_WIRE_AUTO;
  cfg->legacy_utc_offset_minutes = 0;
  cfg->discovery_port = (uint16_t)POSP2P_DISCOVERY_PORT;
  cfg->broadcast_ip = 0x7fffffffu; /* 127.255.255.255: never leaves the host */
}

int posp2p_peer_config_check(const posp2p_peer_config *cfg, posp2p_error *err) {
  if (cfg == NULL)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "no configuration");
  if (cfg->device_id != NULL && cfg->device_id[0] != '\0' &&
      !posp2p_uuid_valid(cfg->device_id))
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "device_id is not a canonical UUID");
  if (posp2p_device_type_name(cfg->device_type) == NULL || cfg->device_type == DT(UNSPECIFIED))
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "device_type is not a device type");
  if (cfg->heartbeat_interval_ms < 1)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "heartbeat_interval_ms must be >= 1");
  if (cfg->device_timeout_ms <= cfg->heartbeat_interval_ms)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "",
                            "device_timeout_ms must exceed heartbeat_interval_ms");
  if (cfg->ack_timeout_ms < 1 || cfg->ack_backoff_cap_ms < cfg->ack_timeout_ms)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "",
                            "ack_timeout_ms must be >= 1 and <= ack_backoff_cap_ms");
  if (cfg->handshake_timeout_ms < 1)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "handshake_timeout_ms must be >= 1");
  if (cfg->max_frame < POSP2P_MAX_FRAME_MIN)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "max_frame must be >= %u",
                            POSP2P_MAX_FRAME_MIN);
  if (cfg->max_connections < 1)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "max_connections must be >= 1");
  if ((uint64_t)cfg->max_queue_bytes < (uint64_t)cfg->max_frame + 16 ||
      cfg->max_queue_bytes > UINT32_MAX / 2)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "",
                            "max_queue_bytes must be >= max_frame + 16 and < 2 GiB");
  if (cfg->dedup_count < 1)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "dedup_count must be >= 1");
  if (cfg->max_devices < 1)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "max_devices must be >= 1");
  if (cfg->wire != POSP2P_PEER_WIRE_AUTO && cfg->wire != POSP2P_PEER_WIRE_LEGACY &&
      cfg->wire != POSP2P_PEER_WIRE_V2)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "", "wire is not auto, legacy or v2");
  if (cfg->legacy_utc_offset_minutes < -24 * 60 || cfg->legacy_utc_offset_minutes > 24 * 60)
    return posp2p_error_set(err, POSP2P_ERR_CONFIG, 0, "",
                            "legacy_utc_offset_minutes outside +/-24h");
  return 0;
}

/* ---- Lifecycle --------------------------------------------------------------- */

#define NAME_MAX_LEN 256u

int posp2p_peer_new(posp2p_peer **out, const posp2p_peer_config *cfg,
                    const posp2p_peer_callbacks *cb,
                    const posp2p_peer_store *store,
                    const ProtobufCAllocator *alloc, void *user_data) {
  if (out == NULL || cfg == NULL || cb == NULL || cb->rand == NULL)
    return POSP2P_ERR_INVAL;
  *out = NULL;
  if (posp2p_peer_config_check(cfg, NULL) != 0) return POSP2P_ERR_CONFIG;
  const ProtobufCAllocator *parent = alloc ? alloc : posp2p_mem_default();
  posp2p_peer *p = parent->alloc(parent->allocator_data, sizeof *p);
  if (p == NULL) return POSP2P_ERR_NOMEM;
  memset(p, 0, sizeof *p);
  p->parent = parent;
  p->alloc.alloc = count_alloc;
  p->alloc.free = count_free;
  p->alloc.allocator_data = p;
  p->cfg = *cfg;
  p->cb = *cb;
  if (store != NULL) {
    p->store = *store;
    p->has_store = true;
  }
  p->user_data = user_data;
  p->next_conn_id = 1;
  p->is_main = cfg->device_type == DT(MAIN_POS);
  p->legacy_opts.utc_offset_minutes = cfg->legacy_utc_offset_minutes;
  posp2p__timer_init(&p->peer_timer, POSP2P__TIMER_PEER);

  p->name = posp2p__strdup(p, cfg->device_name, NAME_MAX_LEN);
  p->hostname = posp2p__strdup(p, cfg->hostname, NAME_MAX_LEN);
  p->ip_address = posp2p__strdup(p, cfg->ip_address, 64);
  if (p->name == NULL || p->hostname == NULL || p->ip_address == NULL) {
    posp2p_peer_del(p);
    return POSP2P_ERR_NOMEM;
  }
  if (cfg->device_id != NULL && cfg->device_id[0] != '\0') {
    posp2p__uuid_parse(cfg->device_id, &p->id);
  } else {
    uint8_t rnd[16];
    p->cb.rand(p, rnd, sizeof rnd, p->user_data);
    char txt[POSP2P_UUID_LEN + 1];
    posp2p_uuid_format(rnd, txt);
    posp2p__uuid_parse(txt, &p->id);
  }
  posp2p__uuid_text(&p->id, p->id_txt);
  p->cfg.device_id = p->id_txt;
  p->cfg.device_name = p->name;
  p->cfg.hostname = p->hostname;
  p->cfg.ip_address = p->ip_address;
  *out = p;
  return 0;
}

void posp2p_peer_del(posp2p_peer *p) {
  if (p == NULL) return;
  /* Drop every timer first: the owners below are freed in no particular
   * order and must not touch each other's heap slots. */
  p->timers.len = 0;
  posp2p__conn_free_all(p);
  posp2p__reconnect_free_all(p);
  posp2p__obx_free_all(p);
  posp2p__dedup_free(p);
  posp2p__status_free(p);
  posp2p__disc_free(p);
  posp2p__registry_free(p);
  posp2p__htab_free(&p->conn_by_id, &p->alloc);
  posp2p__heap_free(&p->timers, &p->alloc);
  if (p->arena_init) posp2p_arena_free(&p->arena);
  posp2p__type_idx_free(p);
  posp2p__free(p, p->name);
  posp2p__free(p, p->hostname);
  posp2p__free(p, p->ip_address);
  const ProtobufCAllocator *parent = p->parent;
  parent->free(parent->allocator_data, p);
}

int posp2p_peer_start(posp2p_peer *p, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  if (p->started) return POSP2P_ERR_STATE;
  POSP2P__ENTER(p, now_ms);
  p->started = true;
  p->next_prune_ms = now_ms + 60000;
  if (p->cfg.announce_interval_ms != 0) {
    posp2p__disc_announce(p, now_ms);
    p->next_announce_ms = now_ms + p->cfg.announce_interval_ms;
  } else {
    p->next_announce_ms = UINT64_MAX;
  }
  posp2p__peer_timer_update(p);
  /* Restored outbox entries go out as soon as a route exists (see
   * posp2p__obx_flush_for); their retransmission schedule resumes now. */
  for (posp2p__obx *o = p->obx_head; o != NULL; o = o->next)
    if (o->timer.idx == UINT32_MAX) posp2p__timer_set(p, &o->timer, now_ms + o->backoff_ms);
  POSP2P__LEAVE(p);
  return 0;
}

int posp2p_peer_shutdown(posp2p_peer *p, const char *reason, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  if (p->shutting_down) return POSP2P_ERR_SHUTDOWN;
  POSP2P__ENTER(p, now_ms);
  p->shutting_down = true;
  posp2p__reconnect_free_all(p);
  posp2p__conn *next;
  for (posp2p__conn *c = p->conns; c != NULL; c = next) {
    next = c->next;
    if (c->state == POSP2P_CONN_CLOSING) continue;
    posp2p_peer_conn_close(p, c->id, reason ? reason : "shutdown", now_ms);
  }
  posp2p__check_shutdown_done(p);
  POSP2P__LEAVE(p);
  return 0;
}

void posp2p__check_shutdown_done(posp2p_peer *p) {
  if (p->shutting_down && !p->shutdown_done && p->nconns == 0) {
    p->shutdown_done = true;
    posp2p_peer_event ev = {.type = POSP2P_PEER_EV_SHUTDOWN_DONE, .text = "shutdown complete"};
    posp2p__emit(p, &ev);
  }
}

/* ---- Events and time ------------------------------------------------------------ */

void posp2p__emit(posp2p_peer *p, posp2p_peer_event *ev) {
  if (ev->text == NULL) ev->text = "";
  if (ev->requirement == NULL) ev->requirement = "";
  if (p->cb.on_event != NULL) p->cb.on_event(p, ev, p->user_data);
}

uint64_t posp2p__wall_ms(posp2p_peer *p, uint64_t now) {
  if (p->cb.wall_ms != NULL) return p->cb.wall_ms(p, p->user_data);
  return now;
}

void posp2p__peer_timer_update(posp2p_peer *p) {
  if (!p->started) return;
  uint64_t due = p->next_announce_ms < p->next_prune_ms ? p->next_announce_ms
                                                         : p->next_prune_ms;
  posp2p__timer_set(p, &p->peer_timer, due);
}

static void peer_on_timer(posp2p_peer *p, uint64_t now) {
  if (now >= p->next_announce_ms) {
    if (!p->shutting_down) posp2p__disc_announce(p, now);
    p->next_announce_ms = now + p->cfg.announce_interval_ms;
  }
  if (now >= p->next_prune_ms) {
    posp2p__dedup_prune(p, now);
    posp2p__disc_prune(p, now);
    p->next_prune_ms = now + 60000;
  }
  posp2p__peer_timer_update(p);
}

int posp2p_peer_tick(posp2p_peer *p, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  POSP2P__ENTER(p, now_ms);
  /* Handlers re-arm their own timers (always strictly in the future or
   * stopped), so this loop ends. A bound guards against a handler bug
   * turning into a hang. */
  for (uint32_t guard = 0; guard < 1000000; guard++) {
    posp2p__timer *t = posp2p__heap_top(&p->timers);
    if (t == NULL || t->due > now_ms) break;
    posp2p__timer_stop(p, t);
    switch (t->kind) {
    case POSP2P__TIMER_CONN:
      posp2p__conn_on_timer(p, posp2p__container_of(t, posp2p__conn, timer), now_ms);
      break;
    case POSP2P__TIMER_OUTBOX:
      posp2p__obx_on_timer(p, posp2p__container_of(t, posp2p__obx, timer), now_ms);
      break;
    case POSP2P__TIMER_PEER:
      peer_on_timer(p, now_ms);
      break;
    case POSP2P__TIMER_RECONNECT:
      posp2p__reconnect_on_timer(p, posp2p__container_of(t, posp2p__reconnect, timer),
                                 now_ms);
      break;
    default:
      break;
    }
  }
  POSP2P__LEAVE(p);
  return 0;
}

uint64_t posp2p_peer_next_deadline(const posp2p_peer *p, uint64_t now_ms) {
  posp2p__timer *t = posp2p__heap_top(&p->timers);
  if (t == NULL) return UINT64_MAX;
  return t->due < now_ms ? now_ms : t->due;
}

/* ---- Decoding -------------------------------------------------------------------- */

/* After every frame. The arena only ever holds the frame being handled, so
 * nothing needs its blocks afterwards: the main POS keeps one block (it
 * decodes all the time) and gives back what a large message needed; a
 * client, which is idle most of the time and of which a fleet runs
 * thousands, keeps none (one allocation per frame instead of ~2 KiB held
 * per idle device). */
void posp2p__arena_reset(posp2p_peer *p) {
  if (p->arena_init) posp2p_arena_trim(&p->arena, p->is_main ? 1 : 0);
}

int posp2p__decode(posp2p_peer *p, const uint8_t *body, size_t len,
                   posp2p_envelope **out, posp2p_error *err) {
  *out = NULL;
  if (!p->arena_init) {
    /* Small blocks: thousands of simulated peers each keep one. */
    posp2p_arena_init(&p->arena, &p->alloc, 2048);
    p->arena_init = true;
  }
  /* posp2p_envelope_unpack, not decode: on a validation failure the
   * caller still needs the envelope to quote its message_id (MSG-30). */
  posp2p_envelope *e = NULL;
  int rc = posp2p_envelope_unpack(body, len, &p->arena.base, &e, err);
  *out = e;
  if (rc != 0) return rc;
  return posp2p_envelope_validate(e, err);
}

/* ---- Queries ---------------------------------------------------------------------- */

const char *posp2p_peer_device_id(const posp2p_peer *p) { return p->id_txt; }
const posp2p_peer_config *posp2p_peer_config_get(const posp2p_peer *p) { return &p->cfg; }
bool posp2p_peer_is_main(const posp2p_peer *p) { return p->is_main; }
size_t posp2p_peer_conn_count(const posp2p_peer *p) { return p->nconns; }
size_t posp2p_peer_outbox_count(const posp2p_peer *p) { return p->nobx; }
const posp2p_peer_stats *posp2p_peer_stats_get(const posp2p_peer *p) { return &p->stats; }

size_t posp2p_peer_memory(const posp2p_peer *p) {
  return p->mem_bytes + sizeof *p;
}

const posp2p_peer_device *posp2p_peer_device_find(const posp2p_peer *p,
                                                  const char *device_id) {
  posp2p__device *d = posp2p__dev_find_text(p, device_id);
  return d ? &d->pub : NULL;
}

size_t posp2p_peer_device_count(const posp2p_peer *p) { return p->ndevices; }

const posp2p_peer_device *posp2p_peer_device_at(const posp2p_peer *p, size_t i) {
  return i < p->ndevices ? &p->devices[i]->pub : NULL;
}
