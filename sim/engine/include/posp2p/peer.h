/* posp2p peer engine: one device's protocol state machine, without I/O.
 *
 * The engine never touches a socket, a clock or a random source. The
 * transport (or a test, or the fleet simulator) feeds it
 *   - connection events and received bytes (posp2p_peer_conn_*),
 *   - received UDP datagrams (posp2p_peer_datagram_recv),
 *   - the passage of time (every input call takes now_ms, a monotonic
 *     millisecond clock chosen by the caller; posp2p_peer_tick runs timers),
 * and the engine answers with
 *   - bytes to write per connection, kept in a bounded queue that the
 *     transport pulls (posp2p_peer_conn_pending / posp2p_peer_conn_consumed),
 *   - requests through callbacks: open a connection, close one, send a
 *     datagram, "a queue has data",
 *   - application events through one callback with a tagged struct,
 *   - the next time it needs a tick (posp2p_peer_next_deadline).
 *
 * Randomness (message ids, nonces, jitter) comes from a callback, wall-clock
 * time for Envelope.timestamp_ms from another. Persistence (outbox, dedup
 * ids, registry) goes through an optional store interface that the engine
 * calls synchronously; NULL keeps everything in memory.
 *
 * Threading: a posp2p_peer is not thread-safe; use one from one thread at a
 * time. Distinct peers share nothing and may live on different threads.
 *
 * Re-entrancy: from inside any callback the application may call
 * posp2p_peer_send, posp2p_peer_connect, posp2p_peer_conn_close,
 * posp2p_peer_discover, posp2p_peer_conn_pending/_consumed, the query
 * functions, and posp2p_peer_conn_closed for the connection being closed.
 * It must not call posp2p_peer_del. Objects passed to a callback (events,
 * envelopes, device records, byte pointers) are valid only during that call.
 *
 * SPEC.md requirement ids named below (CONN-*, FRAME-*, ACK-*, ...) follow
 * the protocol-decisions brief; SPEC.md is normative. */
#ifndef POSP2P_PEER_H
#define POSP2P_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/codec.h"
#include "posp2p/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Error codes --------------------------------------------------------
 * Engine functions return 0 or a negative code: either a posp2p_err from
 * common.h (POSP2P_ERR_NOMEM, POSP2P_ERR_INVAL, POSP2P_ERR_STATE, codec
 * errors) or one of these. The ranges do not overlap. */
typedef enum {
  POSP2P_ERR_QUEUE_FULL = -200,     /* a connection's outbound queue cap would be exceeded */
  POSP2P_ERR_NO_CONN = -201,        /* no connection with this id (or already closed) */
  POSP2P_ERR_UNKNOWN_DEVICE = -202, /* destination never seen (ROUTE: UNKNOWN_DEVICE) */
  POSP2P_ERR_DEVICE_OFFLINE = -203, /* destination known but not connected */
  POSP2P_ERR_NO_ROUTE = -204,       /* no connection leads to the destination */
  POSP2P_ERR_CONN_CLOSING = -205,   /* connection is closing; nothing more is sent */
  POSP2P_ERR_SHUTDOWN = -206,       /* peer is shutting down */
  POSP2P_ERR_STORE = -207,          /* a store callback failed */
  POSP2P_ERR_CONFIG = -208,         /* invalid configuration value */
  POSP2P_ERR_RETRY_LIMIT = -209,    /* no acknowledgement after max_retries */
  POSP2P_ERR_PEER_CLOSED = -210,    /* connection closed by the transport / remote */
  POSP2P_ERR_PROTOCOL = -211,       /* connection closed after a protocol violation */
  POSP2P_ERR_TIMEOUT = -212,        /* device timeout or handshake deadline */
  POSP2P_ERR_DUPLICATE = -213,      /* record already present (restore) */
  POSP2P_ERR_REMOTE_ERROR = -214    /* remote sent an ERROR that ended it */
} posp2p_peer_err;

/* Static description of any code: the engine's own, else posp2p_strerror. */
const char *posp2p_peer_strerror(int code);
/* Static name ("POSP2P_ERR_QUEUE_FULL"), else posp2p_err_name. */
const char *posp2p_peer_err_name(int code);

/* ---- Basic types --------------------------------------------------------- */

typedef struct posp2p_peer posp2p_peer;

/* Connection handle. Never 0, never reused within one peer's lifetime. */
typedef uint64_t posp2p_conn_id;

/* IPv4 address and port, both in host byte order (127.0.0.1 = 0x7f000001). */
typedef struct {
  uint32_t ip;
  uint16_t port;
} posp2p_addr;

/* Which wire to speak. Values 1 and 2 match posp2p_wire. AUTO: on an
 * accepted connection decide by the first byte (CONN: 0xFF v2, '{' or JSON
 * whitespace legacy, else close); for an outgoing connection AUTO means v2. */
typedef enum {
  POSP2P_PEER_WIRE_AUTO = 0,
  POSP2P_PEER_WIRE_LEGACY = 1,
  POSP2P_PEER_WIRE_V2 = 2
} posp2p_peer_wire;

/* Registry status of a device (the seed's connection status). */
typedef enum {
  POSP2P_DEV_DISCONNECTED = 0, /* had a connection; it ended cleanly or timed out */
  POSP2P_DEV_DISCOVERING = 1,  /* seen only through discovery, no connection yet */
  POSP2P_DEV_CONNECTING = 2,   /* connection open, handshake not complete */
  POSP2P_DEV_CONNECTED = 3,    /* handshake complete, connection live */
  POSP2P_DEV_ERROR = 4         /* last connection failed or broke the protocol */
} posp2p_dev_status;

const char *posp2p_dev_status_name(posp2p_dev_status s); /* "connected" ... */

/* One registry entry. Owned by the engine; read-only for the application. */
typedef struct {
  char id[POSP2P_UUID_LEN + 1]; /* canonical UUID text, lower case */
  const char *name;             /* never NULL; "" when unknown */
  int type;                     /* Posp2p__V2__DeviceType */
  posp2p_addr addr;             /* ip: last known source address;
                                   port: advertised TCP data port (0 unknown) */
  posp2p_dev_status status;
  uint64_t last_seen_ms;        /* engine clock (now_ms) of the last frame,
                                   datagram or HELLO from it; 0 never */
  posp2p_peer_wire wire;        /* wire it was last seen on (AUTO unknown) */
  posp2p_conn_id conn;          /* live connection, 0 if none */
} posp2p_peer_device;

/* ---- Configuration ------------------------------------------------------- */

typedef struct {
  /* Identity. device_id: canonical UUID text, or NULL/"" to generate one
   * from the rand callback. Strings are copied by posp2p_peer_new. */
  const char *device_id;
  const char *device_name;  /* NULL means "" */
  int device_type;          /* Posp2p__V2__DeviceType, not UNSPECIFIED.
                               MAIN_POS makes this peer the relay (ROUTE-*). */
  uint16_t listen_port;     /* advertised TCP port; 0 = does not accept */

  /* Timers, milliseconds. */
  uint32_t heartbeat_interval_ms; /* HB: default 15000, >= 1 */
  uint32_t device_timeout_ms;     /* HB: default 60000, > heartbeat_interval_ms */
  uint32_t ack_timeout_ms;        /* ACK: first retransmission after, default 2000 */
  uint32_t ack_backoff_cap_ms;    /* ACK: backoff cap, default 16000 */
  uint32_t max_retries;           /* ACK: retransmissions before failing, default 5 */
  uint32_t handshake_timeout_ms;  /* CONN: handshake deadline, default 10000 */
  uint32_t announce_interval_ms;  /* DISC: default 30000; 0 = never announce */
  uint32_t disc_rate_limit_ms;    /* DISC: one response per source per, default 1000 */
  uint32_t close_linger_ms;       /* longest wait for a closing queue to drain
                                     before the close is forced, default 5000 */
  uint32_t reconnect_ms;          /* re-request a connection made with
                                     posp2p_peer_connect this long after it
                                     drops (doubling to ack_backoff_cap_ms);
                                     0 = never (default) */

  /* Limits. */
  uint32_t max_frame;             /* FRAME: largest body accepted and advertised,
                                     default 1048576, >= 4096 */
  uint32_t max_connections;       /* CONN: accepted+outgoing, default 1024 */
  uint32_t max_queue_bytes;       /* per-connection outbound cap, default
                                     2 MiB, >= max_frame + 16 */
  uint32_t dedup_window_ms;       /* ACK: default 600000 */
  uint32_t dedup_count;           /* ACK: ids kept per originator, default 4096 */
  uint32_t max_devices;           /* registry cap, default 4096 (oldest
                                     non-connected entries are evicted) */

  /* Wires. */
  posp2p_peer_wire wire;          /* accepted connections (AUTO default) and
                                     discovery requests (LEGACY: legacy JSON) */
  int32_t legacy_utc_offset_minutes; /* LEGACY timestamps, default 0 */

  /* Discovery (DISC-*). */
  uint16_t discovery_port;        /* default 8765 */
  uint32_t broadcast_ip;          /* host order; default 127.255.255.255 */
  const char *hostname;           /* informative, copied; NULL = "" */
  const char *ip_address;         /* informative, copied; NULL = "" */
} posp2p_peer_config;

/* Fill cfg with the defaults above (device fields empty, type UNSPECIFIED). */
void posp2p_peer_config_init(posp2p_peer_config *cfg);

/* ---- Events -------------------------------------------------------------- */

typedef enum {
  /* A registry entry was added or changed (status, address, name, type,
   * wire). device: the entry; prev_status: its status before (equal to
   * device->status when something else changed). */
  POSP2P_PEER_EV_DEVICE = 1,
  /* Handshake complete on conn (v2 HELLO exchange, or first legacy
   * message); device is the remote. */
  POSP2P_PEER_EV_CONN_READY,
  /* conn is gone (its id is invalid after the callback). code says why:
   * 0 graceful (GOODBYE either way, or posp2p_peer_conn_close),
   * POSP2P_ERR_PEER_CLOSED, POSP2P_ERR_PROTOCOL, POSP2P_ERR_TIMEOUT,
   * POSP2P_ERR_REMOTE_ERROR, or the transport's code. device may be NULL
   * (closed before identification). text: human-readable reason. */
  POSP2P_PEER_EV_CONN_CLOSED,
  /* msg was delivered to this device: once per (originator, message_id)
   * for every type except HELLO, GOODBYE, HEARTBEAT, ACKNOWLEDGEMENT and
   * ERROR, which the engine consumes (ERROR: see ERROR_RECEIVED). */
  POSP2P_PEER_EV_MESSAGE,
  /* device_id acknowledged message_id, which this peer originated or holds
   * custody of (custody = true: a broadcast relayed by the main POS).
   * attempts: transmissions made. Fired once per (message, recipient). */
  POSP2P_PEER_EV_ACK,
  /* message_id will not be retransmitted to device_id any more. code:
   * POSP2P_ERR_RETRY_LIMIT, POSP2P_ERR_UNKNOWN_DEVICE or
   * POSP2P_ERR_DEVICE_OFFLINE (ERROR from the relay); custody as for ACK. */
  POSP2P_PEER_EV_DELIVERY_FAILED,
  /* device was silent for device_timeout_ms and was marked disconnected;
   * its connection is being closed (HB). */
  POSP2P_PEER_EV_DEVICE_TIMEOUT,
  /* An ERROR message addressed to this peer arrived; msg is it (payload
   * msg->error). Handled effects (retransmission ended, connection closed)
   * are reported by their own events. */
  POSP2P_PEER_EV_ERROR_RECEIVED,
  /* The remote on conn broke a SPEC rule. error_code: the ErrorCode this
   * peer answered with (0 when it sent nothing, e.g. bad preface), code: the
   * codec/engine code, requirement: SPEC id, text: description, ref_message_id
   * when known. closing: true if the connection is being closed for it. */
  POSP2P_PEER_EV_VIOLATION,
  /* conn's queue refused a message (code POSP2P_ERR_QUEUE_FULL): the
   * application should wait for DRAINED. */
  POSP2P_PEER_EV_BACKPRESSURE,
  /* conn's queue fell below half its cap after a BACKPRESSURE. */
  POSP2P_PEER_EV_DRAINED,
  /* A datagram was ignored as malformed (DISC): from, code, text. Own
   * datagrams are ignored silently (counted in stats). */
  POSP2P_PEER_EV_DATAGRAM_IGNORED,
  /* An ORDER_STATUS whose sequence is <= one already delivered for its
   * order was acknowledged but not delivered (ROUTE ordering). msg is it. */
  POSP2P_PEER_EV_STATUS_STALE,
  /* After posp2p_peer_shutdown: every connection is closed. */
  POSP2P_PEER_EV_SHUTDOWN_DONE
} posp2p_peer_event_type;

typedef struct {
  posp2p_peer_event_type type;
  posp2p_conn_id conn;              /* 0 when not about one connection */
  const posp2p_peer_device *device; /* NULL when not about one device */
  posp2p_dev_status prev_status;    /* DEVICE */
  const posp2p_envelope *msg;       /* MESSAGE, ERROR_RECEIVED, STATUS_STALE */
  const char *message_id;           /* ACK, DELIVERY_FAILED, VIOLATION (ref) */
  const char *device_id;            /* ACK, DELIVERY_FAILED: the recipient */
  int code;                         /* posp2p_err / posp2p_peer_err, 0 if none */
  int error_code;                   /* VIOLATION: Posp2p__V2__ErrorCode sent */
  const char *requirement;          /* VIOLATION: SPEC id, "" if none */
  const char *text;                 /* never NULL */
  uint32_t attempts;                /* ACK, DELIVERY_FAILED */
  bool custody;                     /* ACK, DELIVERY_FAILED */
  bool closing;                     /* VIOLATION */
  posp2p_addr from;                 /* DATAGRAM_IGNORED */
} posp2p_peer_event;

const char *posp2p_peer_event_name(posp2p_peer_event_type t); /* "message" ... */

/* ---- Callbacks ------------------------------------------------------------
 * Copied at creation. rand is required; every other member may be NULL
 * (then the corresponding output is dropped, which is only useful in
 * tests). user_data is passed back to every callback. */
typedef struct {
  /* Fill buf with len random bytes. Used for message ids, nonces and
   * jitter. Must not fail. */
  void (*rand)(posp2p_peer *p, uint8_t *buf, size_t len, void *user_data);

  /* Wall clock, ms since the Unix epoch, for Envelope.timestamp_ms. NULL:
   * the engine uses now_ms (fine on virtual time). */
  uint64_t (*wall_ms)(posp2p_peer *p, void *user_data);

  /* conn's queue went from "nothing to hand out" to "has bytes": call
   * posp2p_peer_conn_pending (now or from the event loop). Edge-triggered:
   * after consuming, the transport calls pending again until it reports 0
   * bytes rather than waiting for another call. */
  void (*conn_want_write)(posp2p_peer *p, posp2p_conn_id conn,
                          void *user_data);

  /* Open a TCP connection to `to` for conn (posp2p_peer_connect, reconnect,
   * and one-shot legacy connections: LEGACY-15, a message for a legacy
   * device whose own connection is closed). On success the transport later calls posp2p_peer_conn_connected, on
   * failure posp2p_peer_conn_closed. Returning a negative code fails the
   * connection at once (the engine then reports CONN_CLOSED itself; the
   * transport must not call posp2p_peer_conn_closed). */
  int (*conn_connect)(posp2p_peer *p, posp2p_conn_id conn,
                      const posp2p_addr *to, void *user_data);

  /* Close conn. The engine calls this once, after the queue has drained (or
   * close_linger_ms has passed). The transport closes the socket and then
   * calls posp2p_peer_conn_closed (possibly from inside this callback);
   * until then the connection and any pinned pending bytes stay valid. */
  void (*conn_close)(posp2p_peer *p, posp2p_conn_id conn, void *user_data);

  /* Send one UDP datagram to `to` (broadcast_ip:discovery_port for requests
   * and announcements). data is valid only during the call; best effort. */
  void (*send_datagram)(posp2p_peer *p, const posp2p_addr *to,
                        const uint8_t *data, size_t len, void *user_data);

  /* Application events. */
  void (*on_event)(posp2p_peer *p, const posp2p_peer_event *ev,
                   void *user_data);
} posp2p_peer_callbacks;

/* ---- Persistence interface ------------------------------------------------
 * Optional; called synchronously, so "persisted" means "this callback
 * returned 0". A negative return makes the engine refuse the operation
 * (send returns POSP2P_ERR_STORE; a received message is neither delivered
 * nor acknowledged, so the sender retransmits). Strings and bytes are valid
 * only during the call. */
typedef struct {
  const char *message_id;   /* canonical UUID */
  const char *recipient_id; /* device that must acknowledge it */
  const uint8_t *envelope;  /* packed Envelope, no length prefix */
  size_t envelope_len;
  uint32_t attempts;        /* transmissions so far */
  bool custody;             /* a broadcast relayed by this main POS */
} posp2p_peer_outbox_rec;

typedef struct {
  /* Insert or replace the entry (message_id, recipient_id). Called when a
   * message is accepted for sending and after each retransmission. */
  int (*outbox_put)(posp2p_peer *p, const posp2p_peer_outbox_rec *rec,
                    void *user_data);
  /* The entry is finished (acknowledged or failed). */
  int (*outbox_del)(posp2p_peer *p, const char *message_id,
                    const char *recipient_id, void *user_data);
  /* Record (originator_id, message_id) as delivered. Return 0 if it was new,
   * 1 if it was already recorded (a duplicate the engine's memory had
   * forgotten), negative on failure. */
  int (*dedup_check_insert)(posp2p_peer *p, const char *originator_id,
                            const char *message_id, void *user_data);
  /* A registry entry changed. */
  int (*registry_put)(posp2p_peer *p, const posp2p_peer_device *d,
                      void *user_data);
  void *user_data;
} posp2p_peer_store;

/* ---- Lifecycle ------------------------------------------------------------ */

/* Create a peer. cfg and cb are copied; store (may be NULL) is copied;
 * alloc NULL means posp2p_mem_default(). The device id is generated with
 * cb->rand when cfg->device_id is empty. Nothing is sent until
 * posp2p_peer_start. Errors: POSP2P_ERR_INVAL (NULL out/cfg/cb, no rand),
 * POSP2P_ERR_CONFIG (a value out of range; the reason is not reported — see
 * posp2p_peer_config_check), POSP2P_ERR_NOMEM. */
int posp2p_peer_new(posp2p_peer **out, const posp2p_peer_config *cfg,
                    const posp2p_peer_callbacks *cb,
                    const posp2p_peer_store *store,
                    const ProtobufCAllocator *alloc, void *user_data);

/* Validate cfg; on failure returns POSP2P_ERR_CONFIG and writes a reason
 * into err (if non-NULL). */
int posp2p_peer_config_check(const posp2p_peer_config *cfg, posp2p_error *err);

/* Free the peer and everything it owns. Fires no callbacks; the transport
 * must drop its own connection handles. NULL is allowed. */
void posp2p_peer_del(posp2p_peer *p);

/* Begin operating at now_ms: arm timers and send the first discovery
 * ANNOUNCE (if announce_interval_ms != 0). Restore calls must come before.
 * Errors: POSP2P_ERR_STATE (already started). */
int posp2p_peer_start(posp2p_peer *p, uint64_t now_ms);

/* Graceful shutdown (CONN graceful close): send GOODBYE(reason) on every
 * handshaken connection, stop accepting sends, close every connection once
 * its queue has drained; SHUTDOWN_DONE fires when none remain (at once if
 * there are none). Outbox entries are kept (not failed) so that a store
 * can resend them after restart. Errors: POSP2P_ERR_SHUTDOWN (already). */
int posp2p_peer_shutdown(posp2p_peer *p, const char *reason, uint64_t now_ms);

/* ---- Restore (before posp2p_peer_start) ---------------------------------- */

/* Re-add an outbox entry saved by a store. The envelope must decode and
 * validate and must have been originated by this device (custody entries
 * excepted). It is retransmitted as soon as a route to the recipient
 * exists, continuing from rec->attempts. Errors: POSP2P_ERR_STATE (after
 * start), POSP2P_ERR_INVAL, POSP2P_ERR_DUPLICATE, POSP2P_ERR_NOMEM, codec
 * decode errors. */
int posp2p_peer_restore_outbox(posp2p_peer *p, const posp2p_peer_outbox_rec *rec,
                               uint64_t now_ms);
/* Re-add a delivered (originator, message_id) pair; it counts as seen at
 * now_ms. Errors: POSP2P_ERR_INVAL (not UUIDs), POSP2P_ERR_NOMEM. */
int posp2p_peer_restore_dedup(posp2p_peer *p, const char *originator_id,
                              const char *message_id, uint64_t now_ms);
/* Re-add a registry entry; status is forced to DISCONNECTED and conn to 0.
 * Errors: POSP2P_ERR_INVAL (bad id or type), POSP2P_ERR_NOMEM. */
int posp2p_peer_restore_device(posp2p_peer *p, const posp2p_peer_device *d);

/* ---- Transport input ---------------------------------------------------- */

/* A connection was accepted from `remote`. The wire is cfg->wire (AUTO:
 * decided by the first byte received). The handshake deadline starts now.
 * Always creates the connection, even above max_connections: the limit is
 * answered on the wire (CONN: TOO_MANY_CONNECTIONS after the prefaces).
 * Errors: POSP2P_ERR_INVAL, POSP2P_ERR_SHUTDOWN (the transport should close
 * the socket), POSP2P_ERR_NOMEM. */
int posp2p_peer_conn_accept(posp2p_peer *p, const posp2p_addr *remote,
                            uint64_t now_ms, posp2p_conn_id *out);

/* The TCP connection requested through conn_connect is established; the
 * engine queues the preface (v2) or deviceInfo (legacy).
 * Errors: POSP2P_ERR_NO_CONN, POSP2P_ERR_STATE (not connecting). */
int posp2p_peer_conn_connected(posp2p_peer *p, posp2p_conn_id conn,
                               uint64_t now_ms);

/* Bytes received on conn. All of data is consumed (the engine buffers a
 * partial frame or line, never more than one frame's worth). Protocol
 * errors in the data are not returned: they produce VIOLATION events, error
 * replies and closes as SPEC says. Bytes for a closing connection are
 * ignored. Errors: POSP2P_ERR_NO_CONN, POSP2P_ERR_NOMEM (the connection is
 * then closed). */
int posp2p_peer_conn_recv(posp2p_peer *p, posp2p_conn_id conn,
                          const uint8_t *data, size_t len, uint64_t now_ms);

/* The connection is gone: EOF, reset, a failed connect, or the close the
 * engine requested. code: 0 for EOF/requested close, else a negative
 * transport code (reported in CONN_CLOSED). Updates the registry, fires
 * CONN_CLOSED and invalidates the id (pinned pending bytes are released).
 * A transport that can still write after the remote's EOF should report
 * the EOF with posp2p_peer_conn_eof instead, and call this once the socket
 * is closed. Errors: POSP2P_ERR_NO_CONN. */
int posp2p_peer_conn_closed(posp2p_peer *p, posp2p_conn_id conn, int code,
                            uint64_t now_ms);

/* The remote finished sending (end of stream, TCP FIN) but conn can still
 * be written: a legacy sender that writes one line and half-closes
 * (shutdown(SHUT_WR)) still reads its acknowledgement (LEGACY-11,
 * LEGACY-17). The engine closes conn gracefully on either wire: it stops
 * reading, writes out what is queued (nothing new is queued on it), then
 * calls conn_close; CONN_CLOSED reports POSP2P_ERR_PEER_CLOSED ("closed by
 * remote"), as for an EOF reported through posp2p_peer_conn_closed, unless
 * the connection was already closing for another reason. An incomplete
 * frame or line is discarded. Errors: POSP2P_ERR_NO_CONN, POSP2P_ERR_STATE
 * (the connection is not established yet). */
int posp2p_peer_conn_eof(posp2p_peer *p, posp2p_conn_id conn, uint64_t now_ms);

/* Outbound bytes of conn, zero-copy: fills up to iovmax (pointer, length)
 * pairs in order and sets *niov, and *total to the byte count of all queued
 * unsent bytes (also those beyond iovmax). The returned regions are pinned:
 * the engine neither moves, reorders nor frees them until they are
 * consumed or the connection is closed; later calls return them again
 * (from their unconsumed part). Errors: POSP2P_ERR_NO_CONN. */
typedef struct {
  const uint8_t *base;
  size_t len;
} posp2p_iov;
int posp2p_peer_conn_pending(posp2p_peer *p, posp2p_conn_id conn,
                             posp2p_iov *iov, size_t iovmax, size_t *niov,
                             size_t *total);

/* n bytes from the front of conn's queue were written (n <= *total of the
 * last pending call). May fire DRAINED and, for a closing connection whose
 * queue is now empty, conn_close. Errors: POSP2P_ERR_NO_CONN,
 * POSP2P_ERR_INVAL (n larger than queued). */
int posp2p_peer_conn_consumed(posp2p_peer *p, posp2p_conn_id conn, size_t n,
                              uint64_t now_ms);

/* A UDP datagram arrived from `from`. Malformed datagrams are counted and
 * reported (DATAGRAM_IGNORED), never answered. Returns 0 even for those.
 * Errors: POSP2P_ERR_INVAL (NULL args), POSP2P_ERR_NOMEM. */
int posp2p_peer_datagram_recv(posp2p_peer *p, const posp2p_addr *from,
                              const uint8_t *data, size_t len,
                              uint64_t now_ms);

/* Run every timer due at now_ms: heartbeats, device timeouts, handshake
 * deadlines, retransmissions, announcements, close lingers, reconnects,
 * dedup expiry. Errors: POSP2P_ERR_NOMEM. */
int posp2p_peer_tick(posp2p_peer *p, uint64_t now_ms);

/* The earliest now_ms at which posp2p_peer_tick has work, or UINT64_MAX if
 * none. Never earlier than now_ms (a due timer returns now_ms). */
uint64_t posp2p_peer_next_deadline(const posp2p_peer *p, uint64_t now_ms);

/* ---- Application calls --------------------------------------------------- */

/* Open an outgoing connection to `to` (an addr.port of 0 is invalid) on
 * wire (AUTO = v2). expected_id, if non-NULL, names the device expected
 * there (used by legacy connections, which carry no HELLO, and checked
 * against the v2 HELLO). Calls conn_connect; *out receives the id.
 * Errors: POSP2P_ERR_INVAL, POSP2P_ERR_SHUTDOWN, POSP2P_ERR_NOMEM, the
 * code returned by conn_connect. */
int posp2p_peer_connect(posp2p_peer *p, const posp2p_addr *to,
                        posp2p_peer_wire wire, const char *expected_id,
                        uint64_t now_ms, posp2p_conn_id *out);

/* Close conn gracefully: GOODBYE(reason) if the handshake completed, then
 * close after the queue drains. Stops a reconnect of that connection.
 * Errors: POSP2P_ERR_NO_CONN. */
int posp2p_peer_conn_close(posp2p_peer *p, posp2p_conn_id conn,
                           const char *reason, uint64_t now_ms);

/* Stop connecting to `to`: every connection opened with posp2p_peer_connect
 * to that address stops reconnecting (a reconnect waiting for its timer is
 * dropped) and its current connection or attempt is closed as by
 * posp2p_peer_conn_close(reason). Used when the device moved (a main POS
 * that came back at another address or port). Errors: POSP2P_ERR_INVAL,
 * POSP2P_ERR_NO_CONN (nothing connects or reconnects to `to`). */
int posp2p_peer_connect_stop(posp2p_peer *p, const posp2p_addr *to,
                             const char *reason, uint64_t now_ms);

/* Send an application message. msg is a template the engine does not keep:
 * the application sets message_type (not HELLO, GOODBYE, HEARTBEAT or
 * ACKNOWLEDGEMENT, which the engine owns), the matching payload and at most
 * one of to_device_id / to_device_type (neither: broadcast). The engine
 * fills message_id (if empty; else it must be a fresh UUID), from_device_id,
 * timestamp_ms/us and priority (if unset, the type's default), encodes it
 * once and routes it (ROUTE): directly if a connection to the recipient
 * exists, else through the main POS (clients), else, for a legacy device
 * that counts as connected without an open connection (heard within
 * device_timeout_ms, LEGACY-14), on a new connection to its known address
 * (LEGACY-15; see conn_connect), tracking an outbox entry per recipient for
 * acked types. The copy of the id goes to message_id_out
 * (may be NULL). The message is accepted whole or not at all.
 * Errors: POSP2P_ERR_INVAL (bad template; codec validation errors are
 * returned as their own codes: POSP2P_ERR_PAYLOAD, POSP2P_ERR_BAD_ID, ...),
 * POSP2P_ERR_UNKNOWN_DEVICE, POSP2P_ERR_DEVICE_OFFLINE, POSP2P_ERR_NO_ROUTE,
 * POSP2P_ERR_QUEUE_FULL (some recipient's queue cannot take it; fires
 * BACKPRESSURE), POSP2P_ERR_FRAME_TOO_LARGE (above the recipient's
 * advertised max_frame_size), POSP2P_ERR_SHUTDOWN, POSP2P_ERR_STORE,
 * POSP2P_ERR_NOMEM. */
int posp2p_peer_send(posp2p_peer *p, const posp2p_envelope *msg,
                     uint64_t now_ms,
                     char message_id_out[POSP2P_UUID_LEN + 1]);

/* Broadcast a discovery REQUEST (legacy JSON when cfg->wire is LEGACY) to
 * broadcast_ip:discovery_port. Answers arrive as DEVICE events.
 * Errors: POSP2P_ERR_NOMEM. */
int posp2p_peer_discover(posp2p_peer *p, uint64_t now_ms);

/* ---- Queries ---------------------------------------------------------------- */

const char *posp2p_peer_device_id(const posp2p_peer *p);
const posp2p_peer_config *posp2p_peer_config_get(const posp2p_peer *p);
bool posp2p_peer_is_main(const posp2p_peer *p);

/* Registry: look-up by id (NULL if unknown), and iteration by index
 * 0..count-1 (indexes change when entries are added or evicted). */
const posp2p_peer_device *posp2p_peer_device_find(const posp2p_peer *p,
                                                  const char *device_id);
size_t posp2p_peer_device_count(const posp2p_peer *p);
const posp2p_peer_device *posp2p_peer_device_at(const posp2p_peer *p, size_t i);

typedef enum {
  POSP2P_CONN_CONNECTING = 0, /* outgoing, TCP not yet established */
  POSP2P_CONN_HANDSHAKE = 1,  /* prefaces / HELLO in progress */
  POSP2P_CONN_READY = 2,      /* handshake complete */
  POSP2P_CONN_CLOSING = 3     /* draining before close */
} posp2p_conn_state;

typedef struct {
  posp2p_conn_state state;
  bool outgoing;
  posp2p_peer_wire wire;        /* AUTO until detected */
  posp2p_addr remote;
  char device_id[POSP2P_UUID_LEN + 1]; /* "" until identified */
  size_t queued_bytes;
  uint32_t peer_max_frame;      /* from its HELLO, else the default */
  uint32_t selected_version;    /* 2 (v2), 1 (legacy), 0 before handshake */
} posp2p_conn_info;

/* Errors: POSP2P_ERR_NO_CONN. */
int posp2p_peer_conn_info(const posp2p_peer *p, posp2p_conn_id conn,
                          posp2p_conn_info *out);
size_t posp2p_peer_conn_count(const posp2p_peer *p);

/* Outbox entries (message, recipient) awaiting an acknowledgement. */
size_t posp2p_peer_outbox_count(const posp2p_peer *p);

/* The recipients that have not yet acknowledged message_id (nor failed):
 * one outbox entry each, in the order they were created. Right after
 * posp2p_peer_send this is every recipient the engine tracks for the
 * message: the destination of a directed message, the main POS for a
 * client's broadcast or by-type message (ACK-16), each matching connected
 * device for the main POS's own (ACK-13). Entries held in custody for
 * another originator's message are included (see posp2p_peer_outbox_rec).
 * Writes up to max pointers into ids (may be NULL when max is 0); they
 * point at canonical lower-case UUID texts owned by the engine, valid until
 * the next call into the engine. Returns the total count (possibly more
 * than max), 0 for an unknown or invalid id. Linear in the outbox size. */
size_t posp2p_peer_outbox_recipients(const posp2p_peer *p, const char *message_id,
                                     const char **ids, size_t max);

typedef struct {
  uint64_t frames_in, frames_out;   /* v2 frames and legacy lines */
  uint64_t bytes_in, bytes_out;     /* out = consumed by the transport */
  uint64_t delivered;               /* MESSAGE events */
  uint64_t duplicates;              /* deliveries suppressed by dedup */
  uint64_t acks_sent, acks_received;
  uint64_t retransmissions;
  uint64_t delivery_failed;
  uint64_t relayed;                 /* frames forwarded for others */
  uint64_t errors_sent, errors_received;
  uint64_t violations;
  uint64_t heartbeats_sent, heartbeats_received;
  uint64_t datagrams_in, datagrams_out;
  uint64_t datagrams_ignored;       /* malformed */
  uint64_t datagrams_own;           /* own datagrams looped back */
  uint64_t disc_rate_limited;       /* requests not answered (rate limit) */
  uint64_t status_stale;
} posp2p_peer_stats;

const posp2p_peer_stats *posp2p_peer_stats_get(const posp2p_peer *p);

/* Bytes currently allocated by this peer (through its allocator), for the
 * simulator's memory budget. */
size_t posp2p_peer_memory(const posp2p_peer *p);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_PEER_H */
