/* Internal declarations shared by the engine's source files. Not installed.
 * Internal functions shared between files carry the posp2p__ prefix;
 * everything else is static. */
#ifndef POSP2P_PEER_INT_H
#define POSP2P_PEER_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/codec.h"
#include "posp2p/legacy.h"
#include "posp2p/peer.h"

/* Shorter names for generated enum values used everywhere. */
#define MT(x) POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_##x
#define DT(x) POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_##x
#define EC(x) POSP2P__V2__ERROR_CODE__ERROR_CODE_##x
#define PL(x) POSP2P__V2__ENVELOPE__PAYLOAD_##x
/* Device types 0..CUSTOMER_DISPLAY: the buckets of the by-type index. */
#define POSP2P__DEVICE_TYPES (DT(CUSTOMER_DISPLAY) + 1)

#define posp2p__container_of(ptr, type, member) \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- SPEC requirement ids ----------------------------------------------
 * Kept in one place because SPEC.md numbers them; the brief fixes only the
 * prefixes. Change here when SPEC.md settles. */
#define REQ_CONN_WIRE_DETECT "CONN-4"
#define REQ_CONN_PREFACE "CONN-5"
#define REQ_CONN_VERSION "CONN-7"
#define REQ_CONN_VERSION_CLIENT "CONN-9"
#define REQ_CONN_NO_COMMON "CONN-12"
#define REQ_CONN_SELECTED "CONN-14"
#define REQ_CONN_HANDSHAKE "CONN-15"
#define REQ_CONN_DEADLINE "CONN-17"
#define REQ_CONN_MAX "CONN-18"
#define REQ_CONN_MAX_LEGACY "CONN-19"
#define REQ_HELLO_INVALID "HELLO-11"
#define REQ_HELLO_FROM "HELLO-2"
#define REQ_CONN_DUPLICATE "HELLO-13"
#define REQ_HELLO_OWN_ID "HELLO-14"
#define REQ_CONN_HELLO "HELLO-16"
#define REQ_FRAME_TOO_LARGE "FRAME-4"
#define REQ_FRAME_VARINT "FRAME-6"
#define REQ_FRAME_BODY "FRAME-7"
#define REQ_FRAME_PEER_MAX "FRAME-10"
#define REQ_MSG_FROM "MSG-6"
#define REQ_MSG_TYPE "MSG-11"
#define REQ_MSG_INVALID "MSG-30"
#define REQ_ROUTE_UNKNOWN "ROUTE-5"
#define REQ_ROUTE_OFFLINE "ROUTE-6"
#define REQ_ROUTE_NOT_MINE "ROUTE-14"
#define REQ_ROUTE_QUEUE "ROUTE-16"
#define REQ_LEGACY_LINE "LEGACY-3"
#define REQ_LEGACY_JSON "LEGACY-8"
#define REQ_LEGACY_INVALID "LEGACY-22"

/* ---- Small helpers (peer.c) --------------------------------------------- */

typedef struct {
  uint8_t b[16];
} posp2p__uuid;

/* Parse canonical UUID text (either case) into 16 bytes; false if invalid. */
bool posp2p__uuid_parse(const char *s, posp2p__uuid *out);
/* Lower-case canonical text of u. */
void posp2p__uuid_text(const posp2p__uuid *u, char out[POSP2P_UUID_LEN + 1]);
uint32_t posp2p__hash_bytes(const void *p, size_t n);

/* ---- Hash table (htab.c) --------------------------------------------------
 * Open addressing with linear probing over void* entries; the caller
 * supplies the hash of an entry and the key comparison at each call, so one
 * implementation serves every table. Capacity 0 until the first insert:
 * idle peers pay nothing. */
typedef struct {
  void **slots;  /* NULL empty, POSP2P__HTAB_TOMB deleted */
  uint32_t cap;  /* power of two or 0 */
  uint32_t len;
  uint32_t used; /* len + tombstones */
} posp2p__htab;

extern char posp2p__htab_tomb_;
#define POSP2P__HTAB_TOMB ((void *)&posp2p__htab_tomb_)

typedef bool (*posp2p__htab_eq)(const void *entry, const void *key);
typedef uint32_t (*posp2p__htab_hash)(const void *entry);

void *posp2p__htab_find(const posp2p__htab *t, uint32_t hash, const void *key,
                        posp2p__htab_eq eq);
/* Insert an entry that is not present. Errors: POSP2P_ERR_NOMEM. */
int posp2p__htab_insert(posp2p__htab *t, const ProtobufCAllocator *a,
                        uint32_t hash, void *entry, posp2p__htab_hash hf);
/* Remove the entry pointer itself (found by hash). Returns true if found. */
bool posp2p__htab_remove(posp2p__htab *t, uint32_t hash, const void *entry);
void posp2p__htab_free(posp2p__htab *t, const ProtobufCAllocator *a);

/* ---- Timer heap (timer.c) ------------------------------------------------ */

typedef enum {
  POSP2P__TIMER_CONN = 1,
  POSP2P__TIMER_OUTBOX,
  POSP2P__TIMER_PEER,
  POSP2P__TIMER_RECONNECT
} posp2p__timer_kind;

typedef struct {
  uint64_t due;
  uint32_t idx; /* position in the heap, UINT32_MAX when not armed */
  uint8_t kind;
} posp2p__timer;

typedef struct {
  posp2p__timer **v;
  uint32_t len, cap;
} posp2p__heap;

void posp2p__timer_init(posp2p__timer *t, posp2p__timer_kind kind);
/* Arm (or re-arm) t at due. Errors: POSP2P_ERR_NOMEM. */
int posp2p__timer_set(posp2p_peer *p, posp2p__timer *t, uint64_t due);
void posp2p__timer_stop(posp2p_peer *p, posp2p__timer *t);
posp2p__timer *posp2p__heap_top(const posp2p__heap *h);
void posp2p__heap_free(posp2p__heap *h, const ProtobufCAllocator *a);

/* ---- Shared immutable byte blobs ------------------------------------------
 * A packed Envelope (or a legacy line) shared by every queue item and outbox
 * entry that sends it: a broadcast to 500 clients holds one copy. */
typedef struct {
  uint32_t refs;
  uint32_t len;
  uint8_t data[];
} posp2p__blob;

posp2p__blob *posp2p__blob_new(posp2p_peer *p, const void *data, size_t len);
posp2p__blob *posp2p__blob_ref(posp2p__blob *b);
void posp2p__blob_unref(posp2p_peer *p, posp2p__blob *b);

/* ---- Registry (registry.c) ------------------------------------------------ */

typedef struct posp2p__conn posp2p__conn;

typedef struct posp2p__device {
  posp2p_peer_device pub;
  posp2p__uuid key;
  posp2p__conn *conn; /* live connection bound to this device, or NULL */
  uint32_t index;     /* position in peer->devices */
  char *name;         /* owned copy behind pub.name */
} posp2p__device;

posp2p__device *posp2p__dev_find(const posp2p_peer *p, const posp2p__uuid *id);
posp2p__device *posp2p__dev_find_text(const posp2p_peer *p, const char *id);
/* Find or create (evicting the stalest unconnected entry when full). NULL
 * when the registry is full of connected devices or on NOMEM. *created is
 * set when new. */
posp2p__device *posp2p__dev_get(posp2p_peer *p, const posp2p__uuid *id,
                                bool *created);
/* Update fields; NULL/negative leave a field unchanged. Fires DEVICE and
 * registry_put when something visible changed (or when `created`). */
void posp2p__dev_update(posp2p_peer *p, posp2p__device *d, bool created,
                        const char *name, int type, const posp2p_addr *addr,
                        int status, int wire);
void posp2p__dev_set_status(posp2p_peer *p, posp2p__device *d,
                            posp2p_dev_status st);
void posp2p__registry_free(posp2p_peer *p);

/* ---- Connections (conn.c) ------------------------------------------------- */

typedef enum {
  HS_NONE = 0,     /* not in a handshake (ready, or legacy) */
  HS_DETECT,       /* accepted, AUTO: waiting for the first byte */
  HS_PREFACE,      /* waiting for the remote's preface */
  HS_HELLO,        /* prefaces exchanged, waiting for the remote's HELLO */
  HS_LEGACY_FIRST  /* legacy accepted: waiting for the first message */
} posp2p__hs;

typedef struct posp2p__qitem {
  struct posp2p__qitem *next;
  posp2p__blob *blob;
  uint32_t off;      /* bytes of (hdr ++ blob) already consumed */
  uint32_t origin;   /* hash of from_device_id: never reorder past equal */
  uint8_t hdr[5];    /* varint length prefix (v2), empty for legacy lines */
  uint8_t hdr_len;
  uint8_t prio;
  bool pinned;       /* handed to the transport by conn_pending */
} posp2p__qitem;

struct posp2p__conn {
  posp2p_conn_id id;
  posp2p__conn *next, *prev; /* peer->conns list (live connections) */
  posp2p__conn *zombie_next; /* freed when the outermost call returns */
  posp2p_conn_state state;
  posp2p__hs hs;
  posp2p_peer_wire wire;
  bool outgoing;
  bool over_limit;       /* accepted beyond max_connections */
  bool dead;             /* transport reported it closed */
  bool close_requested;  /* conn_close callback fired */
  bool backpressured;    /* BACKPRESSURE fired, DRAINED pending */
  bool want_write_armed; /* conn_want_write fired, pending not yet called */
  bool goodbye_sent;
  bool can_frame;        /* our v2 preface is queued: frames may follow */
  bool has_expected;
  bool remote_eof;       /* the remote finished sending (posp2p_peer_conn_eof) */
  bool oneshot;          /* LEGACY-15: opened to deliver to a legacy device
                            that had no connection; closed once idle */
  uint8_t close_code_err;  /* error kind for the registry (0 ok, 1 error) */
  int close_code;          /* posp2p_peer_err reported in CONN_CLOSED */
  const char *close_text;  /* static reason */
  posp2p_addr remote;
  posp2p__uuid expected;
  posp2p__device *dev;
  struct posp2p__reconnect *reconnect; /* set for posp2p_peer_connect conns */
  uint32_t peer_max_frame;
  uint32_t peer_heartbeat_ms;
  uint32_t peer_timeout_ms;
  uint32_t selected_version;
  uint8_t preface[POSP2P_PREFACE_LEN];
  uint8_t preface_len;
  bool framer_init, ndjson_init;
  posp2p_framer framer;
  posp2p_ndjson ndjson;
  /* outbound queue */
  posp2p__qitem *qhead, *qtail;
  size_t queued;         /* unconsumed bytes in the queue */
  /* timers (engine clock) */
  uint64_t created_ms;
  uint64_t last_heard_ms;
  uint64_t last_out_ms;  /* last time bytes were queued or written */
  uint64_t next_hb_ms;
  uint64_t linger_ms;    /* forced close deadline while CLOSING */
  uint64_t hb_seq;
  posp2p__timer timer;
};

typedef struct posp2p__reconnect {
  posp2p__timer timer;
  struct posp2p__reconnect *next, *prev;
  posp2p_addr to;
  posp2p_peer_wire wire;
  bool has_expected;
  posp2p__uuid expected;
  uint32_t delay_ms;
  posp2p__conn *conn; /* current attempt, NULL while waiting */
} posp2p__reconnect;

posp2p__conn *posp2p__conn_find(const posp2p_peer *p, posp2p_conn_id id);
/* Queue classes: data frames obey max_queue_bytes; control frames (acks,
 * errors, heartbeats, hello, goodbye) may use up to twice the cap, because
 * dropping them costs more (a lost ack means a retransmission) than the
 * bytes they take. */
typedef enum { Q_DATA = 0, Q_CONTROL = 1 } posp2p__qclass;
bool posp2p__conn_has_room(const posp2p_peer *p, const posp2p__conn *c,
                           size_t bytes, posp2p__qclass cls);
/* Append the encoded form of e (or the given v2 body when non-NULL and the
 * connection speaks v2) to c's queue. Errors: POSP2P_ERR_QUEUE_FULL,
 * POSP2P_ERR_FRAME_TOO_LARGE, POSP2P_ERR_CONN_CLOSING, POSP2P_ERR_NOMEM,
 * legacy encode errors. */
int posp2p__conn_send_env(posp2p_peer *p, posp2p__conn *c,
                          const posp2p_envelope *e, posp2p__blob *v2body,
                          posp2p__qclass cls);
/* Send a packed envelope (an outbox entry's blob) on c, re-encoding it for
 * a legacy connection. Same errors. */
int posp2p__conn_send_blob(posp2p_peer *p, posp2p__conn *c, posp2p__blob *body,
                           uint8_t prio, uint32_t origin, posp2p__qclass cls);
/* True if c already holds an unsent copy of body (no need to queue it
 * again on a retransmission). */
bool posp2p__conn_has_unsent(const posp2p__conn *c, const posp2p__blob *body);
/* Size on c's wire of a frame with this v2 body (legacy: an estimate). */
size_t posp2p__conn_frame_size(const posp2p__conn *c, size_t body_len);
/* Begin closing c: stop reading, drain the queue, then conn_close. code and
 * text are reported in CONN_CLOSED; is_error marks the device ERROR rather
 * than DISCONNECTED. */
void posp2p__conn_start_close(posp2p_peer *p, posp2p__conn *c, int code,
                              const char *text, bool is_error);
/* Send ERROR (code, description, requirement, ref) on c when the wire
 * allows it, report a VIOLATION, and close c if `close` is set. */
void posp2p__conn_violation(posp2p_peer *p, posp2p__conn *c, int error_code,
                            int err, const char *req, const char *ref_id,
                            bool close, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 8, 9)))
#endif
    ;
uint32_t posp2p__hb_interval(const posp2p_peer *p, const posp2p__conn *c);
void posp2p__conn_timer_update(posp2p_peer *p, posp2p__conn *c);
void posp2p__conn_on_timer(posp2p_peer *p, posp2p__conn *c, uint64_t now);
void posp2p__conn_free_all(posp2p_peer *p);
void posp2p__reap(posp2p_peer *p);
/* Bind c to device d (new wins): returns the older connection, if any. */
posp2p__conn *posp2p__conn_bind(posp2p_peer *p, posp2p__conn *c,
                                posp2p__device *d);
/* Handshake done on c: status CONNECTED, CONN_READY, outbox flush. */
void posp2p__conn_ready(posp2p_peer *p, posp2p__conn *c);
/* The connections whose device is of `type` (in `conns` order), as
 * *n pointers; the caller still checks each one's state and that it is its
 * device's current connection. NULL when no index can be used (type out of
 * range, out of memory, or the index is being iterated further up the
 * stack): then walk `conns`. A caller that iterates the index raises
 * p->type_idx_busy meanwhile, so that nested calls do not rebuild it under
 * its feet (route.c, cand_begin/cand_end). */
posp2p__conn **posp2p__conns_of_type(posp2p_peer *p, int type, size_t *n);
/* Invalidate the index: a connection was created or unlinked, bound to a
 * device, or its device's type changed. */
void posp2p__conns_changed(posp2p_peer *p);
void posp2p__type_idx_free(posp2p_peer *p);
void posp2p__reconnect_on_timer(posp2p_peer *p, posp2p__reconnect *r,
                                uint64_t now);
/* LEGACY-14: d is a legacy device that counts as connected (heard within
 * device_timeout_ms, address known) but has no open connection. */
bool posp2p__legacy_reachable(const posp2p_peer *p, const posp2p__device *d);
/* LEGACY-15: the connection that delivers to such a device: an earlier
 * one-shot connection to it that is still usable, else a new one (state
 * CONNECTING; bytes queued on it go out once it is established, and it is
 * closed once idle). NULL if it cannot be opened. */
posp2p__conn *posp2p__legacy_dial(posp2p_peer *p, posp2p__device *d);
void posp2p__reconnect_free_all(posp2p_peer *p);

/* ---- Outbox, dedup, status order (ack.c) ---------------------------------- */

typedef struct posp2p__obx {
  posp2p__timer timer;
  struct posp2p__obx *next, *prev; /* peer->obx list, in send order */
  posp2p__uuid mid, rcpt;
  char mid_txt[POSP2P_UUID_LEN + 1];
  char rcpt_txt[POSP2P_UUID_LEN + 1];
  posp2p__blob *blob; /* packed envelope */
  uint32_t origin;    /* hash of from_device_id */
  uint32_t attempts;  /* transmissions made */
  uint32_t retries;   /* retransmission timer expiries */
  uint32_t backoff_ms;
  uint8_t prio;
  bool custody;
  bool need_send;     /* last attempt found no route or no room */
} posp2p__obx;

/* Create an outbox entry and persist it. Errors: POSP2P_ERR_NOMEM,
 * POSP2P_ERR_STORE, POSP2P_ERR_DUPLICATE. */
int posp2p__obx_add(posp2p_peer *p, const posp2p__uuid *mid,
                    const posp2p__uuid *rcpt, posp2p__blob *blob,
                    uint32_t origin, uint8_t prio, bool custody,
                    uint32_t attempts, bool need_send, bool persist,
                    uint64_t now, posp2p__obx **out);
void posp2p__obx_remove(posp2p_peer *p, posp2p__obx *o, bool persist);
/* An ack for (mid) from device `from` arrived. */
void posp2p__obx_acked(posp2p_peer *p, const posp2p__uuid *mid,
                       const posp2p__uuid *from, bool to_me);
/* ERROR UNKNOWN_DEVICE / DEVICE_OFFLINE for mid: fail own entries. */
void posp2p__obx_fail_mid(posp2p_peer *p, const posp2p__uuid *mid, int code);
void posp2p__obx_on_timer(posp2p_peer *p, posp2p__obx *o, uint64_t now);
/* A route to devices opened through c: send entries waiting for one. */
void posp2p__obx_flush_for(posp2p_peer *p, posp2p__conn *c);
void posp2p__obx_free_all(posp2p_peer *p);
/* Transmit o now if a route exists; false if not sent. */
bool posp2p__obx_transmit(posp2p_peer *p, posp2p__obx *o);

/* Dedup: returns 0 new (now recorded), 1 duplicate, or a negative error. */
int posp2p__dedup_check_insert(posp2p_peer *p, const posp2p__uuid *orig,
                               const posp2p__uuid *mid, uint64_t now,
                               bool consult_store, const char *orig_txt,
                               const char *mid_txt);
/* Membership only (no insert, no store). */
bool posp2p__dedup_contains(const posp2p_peer *p, const posp2p__uuid *orig,
                            const posp2p__uuid *mid);
void posp2p__dedup_prune(posp2p_peer *p, uint64_t now);
void posp2p__dedup_free(posp2p_peer *p);
/* ORDER_STATUS sequence: true if seq is new for the order (and record it). */
int posp2p__status_accept(posp2p_peer *p, const char *from, const char *order_id, uint64_t seq,
                          uint64_t now, bool *fresh);
void posp2p__status_free(posp2p_peer *p);

/* ---- Routing (route.c) ----------------------------------------------------- */

/* Handle one decoded, valid envelope received on a ready connection. body
 * is the v2 frame body it came from (NULL for legacy lines). */
void posp2p__route_recv(posp2p_peer *p, posp2p__conn *c, posp2p_envelope *e,
                        const uint8_t *body, size_t body_len, uint64_t now);
/* The connection that leads to device rcpt: a direct ready one, else (for
 * clients) the one to the main POS. NULL if none. */
posp2p__conn *posp2p__route_conn(posp2p_peer *p, const posp2p__uuid *rcpt,
                                 bool allow_via_main);
/* As posp2p__route_conn, and when nothing else leads to rcpt but it is a
 * reachable legacy device, a one-shot connection to it (LEGACY-15). Only
 * for callers about to queue something for rcpt: it opens connections. */
posp2p__conn *posp2p__route_conn_dial(posp2p_peer *p, const posp2p__uuid *rcpt,
                                      bool allow_via_main);
posp2p__conn *posp2p__main_conn(posp2p_peer *p);
/* Fill the common fields of an engine-originated envelope. */
void posp2p__env_prepare(posp2p_peer *p, posp2p_envelope *e, int type,
                         char mid[POSP2P_UUID_LEN + 1], uint64_t now);
/* Send an ack for mid to originator on c (control class). */
void posp2p__send_ack(posp2p_peer *p, posp2p__conn *c, const char *orig_id,
                      const char *mid, uint64_t now);
/* Pack e into a new blob. */
posp2p__blob *posp2p__env_pack(posp2p_peer *p, const posp2p_envelope *e);
bool posp2p__type_acked(int t);
uint32_t posp2p__type_default_priority(int t);

/* ---- Discovery (engine_disc.c) ------------------------------------------- */
void posp2p__disc_announce(posp2p_peer *p, uint64_t now);
int posp2p__disc_recv(posp2p_peer *p, const posp2p_addr *from,
                      const uint8_t *data, size_t len, uint64_t now);
void posp2p__disc_prune(posp2p_peer *p, uint64_t now);
void posp2p__disc_free(posp2p_peer *p);

/* ---- The peer (peer.c) ------------------------------------------------------ */

typedef struct posp2p__dedup_orig posp2p__dedup_orig;

struct posp2p_peer {
  posp2p_peer_config cfg; /* strings point at the owned copies below */
  posp2p_peer_callbacks cb;
  posp2p_peer_store store;
  bool has_store;
  void *user_data;

  /* Counting allocator wrapping the user's: every engine allocation goes
   * through `alloc`, so posp2p_peer_memory is exact. */
  ProtobufCAllocator alloc;
  const ProtobufCAllocator *parent;
  size_t mem_bytes;

  char id_txt[POSP2P_UUID_LEN + 1];
  posp2p__uuid id;
  char *name, *hostname, *ip_address;
  bool is_main;
  bool started, shutting_down, shutdown_done;
  int depth; /* nesting of public calls; zombies are reaped at 0 */
  uint64_t now; /* now_ms of the current public call */

  posp2p_legacy_opts legacy_opts;
  posp2p_arena arena; /* decode arena, reset after each frame */
  bool arena_init;

  posp2p__heap timers;
  posp2p__timer peer_timer; /* announce + pruning */
  uint64_t next_announce_ms;
  uint64_t next_prune_ms;

  /* connections */
  posp2p_conn_id next_conn_id;
  posp2p__conn *conns; /* doubly linked, newest first */
  size_t nconns;
  posp2p__htab conn_by_id;
  posp2p__conn *zombies;
  posp2p__reconnect *reconnects;
  /* Connections by the type of their device, for by-type routing at the
   * main POS without walking every connection: built lazily from `conns`
   * when conn_gen has moved since (conn.c, posp2p__conns_of_type). */
  uint64_t conn_gen;      /* bumped when a connection or its device's type changes */
  uint64_t type_idx_gen;  /* conn_gen the index was built at (0: never) */
  posp2p__conn **type_idx; /* conns grouped by device type */
  size_t type_idx_cap;
  size_t type_idx_off[POSP2P__DEVICE_TYPES + 1]; /* bucket t: [off[t], off[t+1]) */
  unsigned type_idx_busy; /* > 0 while a caller iterates the index */

  /* registry */
  posp2p__device **devices;
  uint32_t ndevices, devices_cap;
  posp2p__htab dev_by_id;

  /* outbox */
  posp2p__obx *obx_head, *obx_tail;
  size_t nobx;
  posp2p__htab obx_by_key;

  /* dedup */
  posp2p__htab dedup_set;    /* entries (orig, mid) */
  posp2p__htab dedup_origs;  /* per-originator FIFOs */
  size_t ndedup;

  /* order status sequence per order id */
  posp2p__htab status_tab;
  struct posp2p__status *status_head, *status_tail; /* oldest first */
  size_t nstatus;

  /* discovery response rate limit, per source ip */
  posp2p__htab disc_rl;
  size_t ndisc_rl;

  posp2p_peer_stats stats;
};

/* Counting allocation through p->alloc. */
void *posp2p__alloc(posp2p_peer *p, size_t n);
void *posp2p__calloc(posp2p_peer *p, size_t n);
void posp2p__free(posp2p_peer *p, void *ptr);
char *posp2p__strdup(posp2p_peer *p, const char *s, size_t max);

void posp2p__emit(posp2p_peer *p, posp2p_peer_event *ev);
void posp2p__peer_timer_update(posp2p_peer *p);
uint64_t posp2p__wall_ms(posp2p_peer *p, uint64_t now);
void posp2p__check_shutdown_done(posp2p_peer *p);
/* Decode a v2 frame body with the peer's arena: unpack, then validate.
 * Returns 0, or an error with *out possibly set (when the body unpacked
 * but failed validation) so that the caller can quote its message_id. */
int posp2p__decode(posp2p_peer *p, const uint8_t *body, size_t len,
                   posp2p_envelope **out, posp2p_error *err);
void posp2p__arena_reset(posp2p_peer *p);

#define POSP2P__ENTER(p, t) ((p)->depth++, (p)->now = (t))
#define POSP2P__LEAVE(p)            \
  do {                              \
    if (--(p)->depth == 0) posp2p__reap(p); \
  } while (0)

#endif /* POSP2P_PEER_INT_H */
