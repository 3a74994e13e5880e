/* fuzz_session: the stateful session target (issue 6, section 1).
 *
 * One posp2p_peer configured as a main POS with compressed timers and small
 * limits runs on virtual time; the input is a sequence of records
 * (session_format.h): connections opened and handshaken by fake clients,
 * raw bytes, whole frames (the harness adds the varint length, so the
 * fuzzer mutates Envelope bodies instead of fighting the framing), legacy
 * lines, EOFs and resets, datagrams, clock advances, acknowledgements of
 * what the engine sent, stalled readers and application sends. After every
 * record the harness plays the transport (pending deferred connects and
 * closes, drains every connection that is not stalled) and asserts the
 * engine's invariants with __builtin_trap() (fs_check):
 *   - each (originator, message id) is delivered at most once: dedup_count
 *     is far above the number of messages one input can carry, so the
 *     engine must never forget an id (ack.c forgets only beyond it);
 *   - next_deadline >= now;
 *   - the engine's connection count equals the transport's; no more than
 *     max_connections connections complete the handshake;
 *   - queued bytes per connection <= 2 * max_queue_bytes (control frames
 *     may use twice the cap, conn.c posp2p__conn_has_room);
 *   - every v2 frame the engine writes decodes and validates;
 *   - the outbox holds at most max_devices entries per message received
 *     or sent; the registry stays within max_devices plus live connections;
 *   - stats never decrease; posp2p_peer_memory stays below 32 MiB;
 *   - no event names a connection the transport does not hold (or that
 *     already reported CONN_CLOSED).
 * Everything is freed at the end (LeakSanitizer). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "posp2p/codec.h"
#include "posp2p/peer.h"
#include "session_format.h"

#define FS_MAX_CONNS 32u   /* transport-side connection table */
#define FS_RING 8u         /* message ids remembered per slot */
#define FS_SEEN_CAP 2048u  /* delivered (originator, id) pairs tracked */
#define FS_MEM_CAP (32u * 1024u * 1024u)
#define FS_OUT_MAX_FRAME (1024u * 1024u)

typedef struct {
  posp2p_conn_id id;      /* 0: free */
  bool stalled;           /* output not drained */
  bool connecting;        /* engine asked to connect; connected next step */
  bool close_requested;   /* engine called conn_close */
  int out_kind;           /* 0 unknown, 1 v2 (preface skipped), 2 other */
  unsigned preface_left;
  posp2p_framer out;      /* frames the engine wrote */
  char client[POSP2P_UUID_LEN + 1];
  char ids[FS_RING][POSP2P_UUID_LEN + 1]; /* recent outbound message ids */
  unsigned nids;
} fs_conn;

typedef struct {
  char key[2 * POSP2P_UUID_LEN + 2];
  bool used;
} fs_seen_entry;

typedef struct {
  posp2p_peer *p;
  uint64_t now;
  uint64_t rng;
  fs_conn conns[FS_MAX_CONNS]; /* 0..FS_SLOTS-1: slots; rest: outgoing */
  posp2p_peer_stats last;
  uint64_t msgs_in;            /* frames, lines and sends fed in */
  unsigned counter;            /* harness-made message ids */
  bool in_closed;              /* inside a posp2p_peer_conn_closed call */
} fs_state;

static fs_seen_entry fs_seen[FS_SEEN_CAP];
static size_t fs_nseen;
/* POSP2P_FUZZ_SESSION_TRACE=1 prints every event (to check what a seed
 * reaches); read once. */
static int fs_trace = -1;

/* ---- Callbacks ------------------------------------------------------------ */

static void fs_rand(posp2p_peer *p, uint8_t *buf, size_t len, void *ud) {
  (void)p;
  fs_state *s = ud;
  for (size_t i = 0; i < len; i++) {
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    buf[i] = (uint8_t)s->rng;
  }
}

static fs_conn *fs_find(fs_state *s, posp2p_conn_id id) {
  if (id == 0) return NULL;
  for (unsigned i = 0; i < FS_MAX_CONNS; i++)
    if (s->conns[i].id == id) return &s->conns[i];
  return NULL;
}

static void fs_conn_reset(fs_conn *c) {
  posp2p_framer_free(&c->out);
  memset(c, 0, sizeof *c);
  posp2p_framer_init(&c->out, FS_OUT_MAX_FRAME, NULL);
}

static int fs_connect(posp2p_peer *p, posp2p_conn_id conn, const posp2p_addr *to,
                      void *ud) {
  (void)p;
  (void)to;
  fs_state *s = ud;
  FUZZ_CHECK(fs_find(s, conn) == NULL);
  for (unsigned i = FS_SLOTS; i < FS_MAX_CONNS; i++) {
    if (s->conns[i].id == 0) {
      fs_conn_reset(&s->conns[i]);
      s->conns[i].id = conn;
      s->conns[i].connecting = true;
      return 0;
    }
  }
  return -111; /* "connection refused": the engine reports CONN_CLOSED */
}

static void fs_close(posp2p_peer *p, posp2p_conn_id conn, void *ud) {
  (void)p;
  fs_state *s = ud;
  fs_conn *c = fs_find(s, conn);
  FUZZ_CHECK(c != NULL);
  FUZZ_CHECK(!c->close_requested); /* the engine calls conn_close once */
  c->close_requested = true;
}

static uint32_t fs_hash(const char *k) {
  uint32_t h = 2166136261u;
  for (; *k != '\0'; k++) h = (h ^ (uint8_t)*k) * 16777619u;
  return h;
}

/* Record a delivery; trap if (originator, id) was delivered before. */
static void fs_seen_add(const char *from, const char *id) {
  if (fs_nseen >= FS_SEEN_CAP / 2) return; /* stop tracking, keep probing short */
  char key[sizeof fs_seen[0].key];
  snprintf(key, sizeof key, "%.36s/%.36s", from, id);
  uint32_t i = fs_hash(key) & (FS_SEEN_CAP - 1);
  while (fs_seen[i].used) {
    FUZZ_CHECK(strcmp(fs_seen[i].key, key) != 0);
    i = (i + 1) & (FS_SEEN_CAP - 1);
  }
  fs_seen[i].used = true;
  memcpy(fs_seen[i].key, key, sizeof key);
  fs_nseen++;
}

static void fs_event(posp2p_peer *p, const posp2p_peer_event *ev, void *ud) {
  (void)p;
  fs_state *s = ud;
  FUZZ_CHECK(ev->text != NULL);
  if (fs_trace > 0)
    fprintf(stderr, "  t=%llu %s conn=%llu code=%d %s\n", (unsigned long long)s->now,
            posp2p_peer_event_name(ev->type), (unsigned long long)ev->conn, ev->code,
            ev->text);
  if (ev->conn != 0) {
    fs_conn *c = fs_find(s, ev->conn);
    /* A connection refused from inside conn_connect is reported before the
     * transport ever held it. */
    FUZZ_CHECK(c != NULL || ev->type == POSP2P_PEER_EV_CONN_CLOSED ||
               ev->type == POSP2P_PEER_EV_DEVICE);
    if (ev->type == POSP2P_PEER_EV_CONN_CLOSED && c != NULL) {
      /* Only the transport's conn_closed (or a refused connect) ends it. */
      FUZZ_CHECK(s->in_closed);
      posp2p_framer_free(&c->out);
      memset(c, 0, sizeof *c);
    }
  }
  if (ev->type == POSP2P_PEER_EV_MESSAGE) {
    FUZZ_CHECK(ev->msg != NULL);
    fs_seen_add(ev->msg->from_device_id, ev->msg->message_id);
  }
}

/* ---- Transport side ----------------------------------------------------------- */

static void fs_closed(fs_state *s, fs_conn *c, int code) {
  posp2p_conn_id id = c->id;
  s->in_closed = true;
  int rc = posp2p_peer_conn_closed(s->p, id, code, s->now);
  s->in_closed = false;
  FUZZ_CHECK(rc == 0);
  FUZZ_CHECK(c->id == 0); /* CONN_CLOSED fired and released the slot */
}

/* Remember ids of the frames the engine wrote on c (for FS_ACK) and check
 * that each one decodes. */
static void fs_parse_out(fs_conn *c, const uint8_t *d, size_t n) {
  if (c->out_kind == 0 && n > 0) {
    c->out_kind = d[0] == 0xff ? 1 : 2;
    c->preface_left = POSP2P_PREFACE_LEN;
  }
  if (c->out_kind != 1) return;
  if (c->preface_left > 0) {
    size_t k = n < c->preface_left ? n : c->preface_left;
    c->preface_left -= (unsigned)k;
    d += k;
    n -= k;
  }
  while (n > 0) {
    size_t used = 0;
    posp2p_frame fr;
    int rc = posp2p_framer_next(&c->out, d, n, &used, &fr, NULL);
    FUZZ_CHECK(rc >= 0);
    d += used;
    n -= used;
    if (rc == 0) break;
    posp2p_envelope *e = NULL;
    FUZZ_CHECK(posp2p_envelope_decode(fr.data, fr.len, NULL, &e, NULL) == 0);
    if (e->message_type != POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ACKNOWLEDGEMENT &&
        e->message_type != POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HELLO &&
        strlen(e->message_id) == POSP2P_UUID_LEN) {
      memcpy(c->ids[c->nids % FS_RING], e->message_id, POSP2P_UUID_LEN + 1);
      c->nids++;
    }
    posp2p_envelope_free(e, NULL);
  }
}

static void fs_drain(fs_state *s, fs_conn *c) {
  for (int round = 0; round < 64 && c->id != 0 && !c->stalled; round++) {
    posp2p_iov iov[8];
    size_t niov = 0, total = 0, n = 0;
    FUZZ_CHECK(posp2p_peer_conn_pending(s->p, c->id, iov, 8, &niov, &total) == 0);
    FUZZ_CHECK(niov <= 8);
    for (size_t i = 0; i < niov; i++) {
      FUZZ_CHECK(iov[i].len > 0);
      fs_parse_out(c, iov[i].base, iov[i].len);
      n += iov[i].len;
    }
    FUZZ_CHECK(n <= total);
    if (n == 0) break;
    FUZZ_CHECK(posp2p_peer_conn_consumed(s->p, c->id, n, s->now) == 0);
  }
}

/* Play the transport until nothing changes: establish requested outgoing
 * connections, close what the engine asked to close, drain queues. */
/* The harness walking its own connection table after every step: not the
 * code under test (the engine calls in it stay traced; the checks run). */
POSP2P__NO_COVERAGE static void fs_settle(fs_state *s) {
  for (int pass = 0; pass < 8; pass++) {
    bool again = false;
    for (unsigned i = 0; i < FS_MAX_CONNS; i++) {
      fs_conn *c = &s->conns[i];
      if (c->id == 0) continue;
      if (c->connecting) {
        c->connecting = false;
        int rc = posp2p_peer_conn_connected(s->p, c->id, s->now);
        FUZZ_CHECK(rc == 0 || rc == POSP2P_ERR_STATE);
        again = true;
      }
      fs_drain(s, c);
      if (c->id != 0 && c->close_requested) {
        fs_closed(s, c, 0);
        again = true;
      }
    }
    if (!again) break;
  }
}

/* ---- Invariants ---------------------------------------------------------------- */

POSP2P__NO_COVERAGE static void fs_check(fs_state *s) {
  posp2p_peer *p = s->p;
  const posp2p_peer_config *cfg = posp2p_peer_config_get(p);
  FUZZ_CHECK(posp2p_peer_next_deadline(p, s->now) >= s->now);

  size_t live = 0, ready = 0;
  for (unsigned i = 0; i < FS_MAX_CONNS; i++) {
    fs_conn *c = &s->conns[i];
    if (c->id == 0) continue;
    live++;
    posp2p_conn_info info;
    FUZZ_CHECK(posp2p_peer_conn_info(p, c->id, &info) == 0);
    FUZZ_CHECK(info.queued_bytes <= 2u * (size_t)cfg->max_queue_bytes);
    if (info.state == POSP2P_CONN_READY) ready++;
  }
  FUZZ_CHECK(posp2p_peer_conn_count(p) == live);
  FUZZ_CHECK(ready <= cfg->max_connections);
  FUZZ_CHECK(posp2p_peer_device_count(p) <= cfg->max_devices + live);
  FUZZ_CHECK(posp2p_peer_outbox_count(p) <= (s->msgs_in + 1) * cfg->max_devices);
  FUZZ_CHECK(posp2p_peer_memory(p) <= FS_MEM_CAP);

  const posp2p_peer_stats *st = posp2p_peer_stats_get(p);
  const uint64_t *a = (const uint64_t *)(const void *)&s->last;
  const uint64_t *b = (const uint64_t *)(const void *)st;
  for (size_t i = 0; i < sizeof *st / sizeof(uint64_t); i++) FUZZ_CHECK(b[i] >= a[i]);
  s->last = *st;
}

/* ---- Input reading --------------------------------------------------------------- */

typedef struct {
  const uint8_t *d;
  size_t n, pos;
} fs_in;

static uint8_t rd8(fs_in *in) { return in->pos < in->n ? in->d[in->pos++] : 0; }

static uint16_t rd16(fs_in *in) {
  uint16_t lo = rd8(in);
  return (uint16_t)(lo | (uint16_t)(rd8(in) << 8));
}

static const uint8_t *rdn(fs_in *in, size_t *len) {
  size_t want = rd16(in);
  size_t left = in->n - in->pos;
  if (want > left) want = left;
  const uint8_t *r = in->d + in->pos;
  in->pos += want;
  *len = want;
  return r;
}

static void fs_client_id(unsigned client, char out[POSP2P_UUID_LEN + 1]) {
  snprintf(out, POSP2P_UUID_LEN + 1, FS_CLIENT_ID_FMT, client & 0xffu);
}

static fs_conn *fs_slot(fs_state *s, uint8_t b) { return &s->conns[b % FS_SLOTS]; }

static void fs_recv(fs_state *s, fs_conn *c, const uint8_t *d, size_t n) {
  if (c->id == 0) return;
  int rc = posp2p_peer_conn_recv(s->p, c->id, d, n, s->now);
  FUZZ_CHECK(rc == 0 || rc == POSP2P_ERR_NOMEM);
}

static void fs_open(fs_state *s, fs_conn *c, uint8_t ip) {
  if (c->id != 0) fs_closed(s, c, 0);
  fs_conn_reset(c);
  posp2p_addr from = {0x7f000000u | ip, (uint16_t)(40000u + (unsigned)(c - s->conns))};
  posp2p_conn_id id = 0;
  FUZZ_CHECK(posp2p_peer_conn_accept(s->p, &from, s->now, &id) == 0);
  FUZZ_CHECK(id != 0 && fs_find(s, id) == NULL);
  c->id = id;
}

/* Encode e as one frame and feed it to c. */
static void fs_send_env(fs_state *s, fs_conn *c, const posp2p_envelope *e) {
  posp2p_buf b;
  posp2p_buf_init(&b, 64 * 1024, NULL);
  FUZZ_CHECK(posp2p_frame_encode(e, 64 * 1024, &b, NULL) == 0);
  fs_recv(s, c, b.data, b.len);
  posp2p_buf_free(&b);
}

static void fs_new_id(fs_state *s, char out[POSP2P_UUID_LEN + 1]) {
  snprintf(out, POSP2P_UUID_LEN + 1, "dddddddd-0000-4000-8000-%012x", ++s->counter);
}

static void fs_hello(fs_state *s, fs_conn *c, uint8_t client, uint8_t dtype) {
  char cid[POSP2P_UUID_LEN + 1], mid[POSP2P_UUID_LEN + 1];
  fs_client_id(client, cid);
  fs_open(s, c, (uint8_t)(10u + client % 200u));
  memcpy(c->client, cid, sizeof cid);
  uint8_t pre[POSP2P_PREFACE_LEN];
  posp2p_preface_encode(pre, POSP2P_VERSION);
  fs_recv(s, c, pre, sizeof pre);

  posp2p_envelope e;
  Posp2p__V2__Hello h;
  uint32_t versions[1] = {2};
  posp2p_envelope_init(&e);
  posp2p__v2__hello__init(&h);
  fs_new_id(s, mid);
  e.message_id = mid;
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HELLO;
  e.from_device_id = cid;
  e.timestamp_ms = (int64_t)s->now;
  h.device_id = cid;
  h.device_name = "fuzz";
  h.device_type = (Posp2p__V2__DeviceType)(1u + dtype % 5u);
  h.listen_port = dtype & 0x80 ? 8766 : 0;
  h.n_supported_versions = 1;
  h.supported_versions = versions;
  h.heartbeat_interval_ms = 100;
  h.device_timeout_ms = 400;
  h.max_frame_size = 4096;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_HELLO;
  e.hello = &h;
  fs_send_env(s, c, &e);
}

static void fs_ack(fs_state *s, fs_conn *c, uint8_t k) {
  if (c->id == 0 || c->nids == 0) return;
  unsigned n = c->nids < FS_RING ? c->nids : FS_RING;
  unsigned idx = (c->nids - 1u - (k % n)) % FS_RING;
  char cid[POSP2P_UUID_LEN + 1], mid[POSP2P_UUID_LEN + 1], acked[POSP2P_UUID_LEN + 1];
  if (c->client[0] != '\0')
    memcpy(cid, c->client, sizeof cid);
  else
    fs_client_id(0, cid);
  memcpy(acked, c->ids[idx], sizeof acked);
  fs_new_id(s, mid);
  posp2p_envelope e;
  Posp2p__V2__Acknowledgement a;
  posp2p_envelope_init(&e);
  posp2p__v2__acknowledgement__init(&a);
  e.message_id = mid;
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ACKNOWLEDGEMENT;
  e.from_device_id = cid;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = (char *)FS_MAIN_ID;
  e.timestamp_ms = (int64_t)s->now;
  a.acknowledged_message_id = acked;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ACKNOWLEDGEMENT;
  e.acknowledgement = &a;
  s->msgs_in++;
  fs_send_env(s, c, &e);
}

static void fs_app_send(fs_state *s, uint8_t kind, uint8_t client) {
  char cid[POSP2P_UUID_LEN + 1], order[16];
  fs_client_id(client, cid);
  snprintf(order, sizeof order, "F-%u", (unsigned)(kind >> 4));
  posp2p_envelope e;
  Posp2p__V2__OrderStatus os;
  posp2p_envelope_init(&e);
  posp2p__v2__order_status__init(&os);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS;
  if (kind & 1) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = cid;
  }
  os.order_id = order;
  os.new_status = (Posp2p__V2__OrderStatusCode)((kind >> 1) % 7u);
  os.sequence = ++s->counter;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS;
  e.order_status = &os;
  char out[POSP2P_UUID_LEN + 1];
  s->msgs_in++;
  (void)posp2p_peer_send(s->p, &e, s->now, out);
}

static void fs_step(fs_state *s, fs_in *in) {
  uint8_t op = (uint8_t)(rd8(in) % FS_NOPS);
  size_t n = 0;
  const uint8_t *d;
  switch (op) {
  case FS_OPEN: {
    fs_conn *c = fs_slot(s, rd8(in));
    fs_open(s, c, rd8(in));
    break;
  }
  case FS_HELLO: {
    fs_conn *c = fs_slot(s, rd8(in));
    uint8_t client = rd8(in);
    fs_hello(s, c, client, rd8(in));
    break;
  }
  case FS_BYTES: {
    fs_conn *c = fs_slot(s, rd8(in));
    d = rdn(in, &n);
    fs_recv(s, c, d, n);
    break;
  }
  case FS_FRAME:
  case FS_LINE: {
    fs_conn *c = fs_slot(s, rd8(in));
    d = rdn(in, &n);
    if (c->id == 0) break;
    uint8_t *buf = malloc(n + 5);
    FUZZ_CHECK(buf != NULL);
    size_t len = 0;
    if (op == FS_FRAME) len = posp2p_varint_encode((uint32_t)n, buf);
    memcpy(buf + len, d, n);
    len += n;
    if (op == FS_LINE) buf[len++] = '\n';
    s->msgs_in++;
    fs_recv(s, c, buf, len);
    free(buf);
    break;
  }
  case FS_EOF: {
    fs_conn *c = fs_slot(s, rd8(in));
    if (c->id == 0) break;
    int rc = posp2p_peer_conn_eof(s->p, c->id, s->now);
    FUZZ_CHECK(rc == 0 || rc == POSP2P_ERR_STATE);
    break;
  }
  case FS_CLOSE: {
    fs_conn *c = fs_slot(s, rd8(in));
    uint8_t code = rd8(in);
    if (c->id != 0) fs_closed(s, c, code & 1 ? -104 : 0);
    break;
  }
  case FS_DGRAM: {
    uint8_t ip = rd8(in);
    d = rdn(in, &n);
    posp2p_addr from = {0x7f000000u | ip, POSP2P_DISCOVERY_PORT};
    FUZZ_CHECK(posp2p_peer_datagram_recv(s->p, &from, d, n, s->now) == 0);
    break;
  }
  case FS_TICK: {
    uint16_t ms = rd16(in);
    if (ms == FS_TICK_TO_DEADLINE) {
      uint64_t dl = posp2p_peer_next_deadline(s->p, s->now);
      if (dl != UINT64_MAX) s->now = dl;
    } else {
      s->now += ms;
    }
    FUZZ_CHECK(posp2p_peer_tick(s->p, s->now) == 0);
    break;
  }
  case FS_ACK: {
    fs_conn *c = fs_slot(s, rd8(in));
    fs_ack(s, c, rd8(in));
    break;
  }
  case FS_STALL: {
    fs_conn *c = fs_slot(s, rd8(in));
    c->stalled = !c->stalled;
    break;
  }
  default: { /* FS_SEND */
    uint8_t kind = rd8(in);
    fs_app_send(s, kind, rd8(in));
    break;
  }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fs_state s;
  if (fs_trace < 0) fs_trace = getenv("POSP2P_FUZZ_SESSION_TRACE") != NULL;
  memset(&s, 0, sizeof s);
  memset(fs_seen, 0, sizeof fs_seen);
  fs_nseen = 0;
  s.now = 1000;
  s.rng = 0x9e3779b97f4a7c15ull;
  for (unsigned i = 0; i < FS_MAX_CONNS; i++)
    posp2p_framer_init(&s.conns[i].out, FS_OUT_MAX_FRAME, NULL);

  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_id = FS_MAIN_ID;
  cfg.device_name = "fuzz main";
  cfg.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS;
  cfg.listen_port = 8766;
  cfg.heartbeat_interval_ms = 100;
  cfg.device_timeout_ms = 400;
  cfg.ack_timeout_ms = 50;
  cfg.ack_backoff_cap_ms = 200;
  cfg.max_retries = 3;
  cfg.handshake_timeout_ms = 300;
  cfg.announce_interval_ms = 1000;
  cfg.disc_rate_limit_ms = 100;
  cfg.close_linger_ms = 200;
  cfg.max_frame = 4096;
  cfg.max_connections = 4;
  cfg.max_queue_bytes = 8192;
  cfg.dedup_window_ms = 60000;
  cfg.dedup_count = 4096;
  cfg.max_devices = 16;

  posp2p_peer_callbacks cb;
  memset(&cb, 0, sizeof cb);
  cb.rand = fs_rand;
  cb.conn_connect = fs_connect;
  cb.conn_close = fs_close;
  cb.on_event = fs_event;

  FUZZ_CHECK(posp2p_peer_new(&s.p, &cfg, &cb, NULL, NULL, &s) == 0);
  FUZZ_CHECK(posp2p_peer_start(s.p, s.now) == 0);
  fs_settle(&s);
  fs_check(&s);

  fs_in in = {data, size, 0};
  for (unsigned steps = 0; in.pos < in.n && steps < 512; steps++) {
    fs_step(&s, &in);
    fs_settle(&s);
    fs_check(&s);
  }

  /* Close everything through the transport so that the close path runs too
   * (and every CONN_CLOSED is checked), then free. */
  for (unsigned i = 0; i < FS_MAX_CONNS; i++)
    if (s.conns[i].id != 0) fs_closed(&s, &s.conns[i], 0);
  FUZZ_CHECK(posp2p_peer_conn_count(s.p) == 0);
  fs_check(&s);
  posp2p_peer_del(s.p);
  for (unsigned i = 0; i < FS_MAX_CONNS; i++) posp2p_framer_free(&s.conns[i].out);
  return 0;
}
