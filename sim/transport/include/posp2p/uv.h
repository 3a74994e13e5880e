/* posp2p libuv transport: runs posp2p_peer engines on a uv_loop.
 *
 * One posp2p_uv_ctx per uv_loop holds what peers on that loop share (the
 * read buffer, the random pool, the loopback broadcast receivers). One
 * posp2p_uv_peer per device owns its engine, a TCP listener, a UDP socket,
 * its connections and one uv_timer. There are no threads: thousands of
 * peers can share one loop.
 *
 * Lifecycle:
 *   posp2p_uv_ctx_new -> posp2p_uv_peer_new (binds; reports the ports)
 *   -> optional restore into posp2p_uv_peer_engine() (store load)
 *   -> posp2p_uv_peer_start -> uv_run ...
 *   -> posp2p_uv_peer_shutdown (graceful) or posp2p_uv_peer_abort
 *   -> on_closed fires after the last handle is closed; the peer is freed
 *   -> when every peer is gone and the loop has run: posp2p_uv_ctx_del.
 *
 * Errors: functions return 0 or a negative code: a posp2p_err (common.h),
 * a posp2p_peer_err (peer.h), or a libuv code carried as
 * POSP2P_UV_CODE(uv_code) (below -1000, so the ranges never overlap).
 * posp2p_uv_strerror and posp2p_uv_err_name describe all three. */
#ifndef POSP2P_UV_H
#define POSP2P_UV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "posp2p/peer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A libuv error (UV_EADDRINUSE, ...) as a posp2p code, and back. */
#define POSP2P_UV_CODE_BASE (-1000)
#define POSP2P_UV_CODE(uv_err) (POSP2P_UV_CODE_BASE + (uv_err))
#define POSP2P_UV_IS_UV_CODE(code) ((code) < POSP2P_UV_CODE_BASE)
#define POSP2P_UV_TO_UV(code) ((code) - POSP2P_UV_CODE_BASE)

/* Description / name of any code: libuv ("address already in use",
 * "UV_EADDRINUSE"), engine or codec. Static strings. */
const char *posp2p_uv_strerror(int code);
const char *posp2p_uv_err_name(int code);

/* Details of a failure: the code and a message that names the operation
 * and the address, e.g. "bind tcp 127.0.0.2:8766: address already in use". */
typedef struct {
  int code;
  char message[256];
} posp2p_uv_error;

/* ---- Addresses ------------------------------------------------------------ */

/* Parse dotted-quad IPv4 text into a host-order address. Errors:
 * POSP2P_ERR_INVAL. */
int posp2p_uv_ip_parse(const char *text, uint32_t *ip);
/* Format a host-order address ("127.0.0.2"); out needs 16 bytes. */
void posp2p_uv_ip_format(uint32_t ip, char out[16]);
/* "127.0.0.2:8766"; out needs 22 bytes. */
void posp2p_uv_addr_format(const posp2p_addr *a, char out[22]);
/* True for 127.0.0.0/8. */
bool posp2p_uv_ip_is_loopback(uint32_t ip);

/* ---- Per-loop context ----------------------------------------------------- */

typedef struct posp2p_uv_ctx posp2p_uv_ctx;

/* Errors: POSP2P_ERR_INVAL, POSP2P_ERR_NOMEM. */
int posp2p_uv_ctx_new(posp2p_uv_ctx **out, uv_loop_t *loop);
/* Free the context. Every peer must have been closed (on_closed fired) and
 * the loop run until its handles are released. Errors: POSP2P_ERR_STATE
 * (peers or shared sockets still open; nothing is freed). NULL is fine. */
int posp2p_uv_ctx_del(posp2p_uv_ctx *ctx);
uv_loop_t *posp2p_uv_ctx_loop(const posp2p_uv_ctx *ctx);
/* Number of peers not yet freed, and of shared broadcast receivers open. */
size_t posp2p_uv_ctx_peer_count(const posp2p_uv_ctx *ctx);
size_t posp2p_uv_ctx_receiver_count(const posp2p_uv_ctx *ctx);

/* ---- Peers ------------------------------------------------------------------ */

typedef struct posp2p_uv_peer posp2p_uv_peer;

typedef struct {
  /* Address of the TCP listener and the unicast UDP socket, and the source
   * address of outgoing connections (host order). 0 = INADDR_ANY. */
  uint32_t bind_ip;
  /* TCP data port; 0 = kernel-chosen (see posp2p_uv_peer_tcp_addr). The
   * engine's cfg.listen_port is replaced by the port actually bound. */
  uint16_t tcp_port;
  bool tcp_listen;       /* false: no listener, cfg.listen_port becomes 0 */
  bool udp;              /* false: no discovery sockets, datagrams dropped */
  /* SO_REUSEADDR on the unicast UDP socket. Default false when bind_ip is a
   * specific address: a second device on the same address:port then fails
   * with EADDRINUSE instead of silently taking the first one's unicast
   * replies (Linux gives them to the last socket bound). Always on for
   * INADDR_ANY (that socket doubles as the broadcast receiver). */
  bool udp_reuseaddr;
  bool bind_connects;    /* bind outgoing connections to bind_ip (default
                            true when bind_ip != 0) */
  /* Send datagrams to addresses outside 127.0.0.0/8 and accept a broadcast
   * address outside it. Default false: such datagrams are dropped (counted
   * in posp2p_uv_peer_stats) and posp2p_uv_peer_new refuses the config. */
  bool allow_lan;
  /* Shared broadcast receivers are keyed by (broadcast ip, port, netns_key).
   * A caller that creates peers in several network namespaces gives each
   * namespace its own key and calls posp2p_uv_peer_new while the thread is
   * in that namespace (sockets stay in the namespace they were made in). */
  int netns_key;
  int tcp_backlog;       /* default 511 */
} posp2p_uv_opts;

void posp2p_uv_opts_init(posp2p_uv_opts *o);

typedef struct {
  /* Every engine event, after the transport has handled it. */
  void (*on_event)(posp2p_uv_peer *up, const posp2p_peer_event *ev,
                   void *user_data);
  /* Every handle is closed. The engine is still valid for queries during
   * the call; up and the engine are freed when it returns. */
  void (*on_closed)(posp2p_uv_peer *up, void *user_data);
  /* A non-fatal transport problem (accept failed, datagram refused or not
   * sent, socket error): code (POSP2P_UV_CODE or posp2p) and a message. */
  void (*on_warning)(posp2p_uv_peer *up, int code, const char *text,
                     void *user_data);
} posp2p_uv_callbacks;

/* Create a peer: open and bind its sockets (TCP listener listening, UDP
 * socket bound) and create its engine with the actual port. cfg, store and
 * cb are copied. cfg->broadcast_ip must be in 127.0.0.0/8 unless
 * opts->allow_lan. Nothing is read or sent until posp2p_uv_peer_start.
 * On failure *out is NULL, err (if non-NULL) says what failed with the
 * address, and handles opened so far are closed asynchronously (run the
 * loop to release them). Errors: POSP2P_ERR_INVAL, POSP2P_ERR_CONFIG
 * (engine config, or a non-loopback broadcast without allow_lan),
 * POSP2P_ERR_NOMEM, POSP2P_UV_CODE(UV_EADDRINUSE), POSP2P_UV_CODE(...)
 * for any other socket error. */
int posp2p_uv_peer_new(posp2p_uv_peer **out, posp2p_uv_ctx *ctx,
                       const posp2p_peer_config *cfg,
                       const posp2p_peer_store *store,
                       const posp2p_uv_opts *opts,
                       const posp2p_uv_callbacks *cb, void *user_data,
                       posp2p_uv_error *err);

/* The engine, for restore calls before start and for queries. Engine
 * calls that produce output (send, connect, discover, conn_close) should
 * go through the wrappers below or be followed by posp2p_uv_peer_kick. */
posp2p_peer *posp2p_uv_peer_engine(posp2p_uv_peer *up);
void *posp2p_uv_peer_user_data(const posp2p_uv_peer *up);
posp2p_uv_ctx *posp2p_uv_peer_ctx(const posp2p_uv_peer *up);

/* Start the engine, accept connections and read datagrams. Errors:
 * POSP2P_ERR_STATE (already started or closing), engine start errors,
 * POSP2P_UV_CODE(...) if a socket cannot start reading. */
int posp2p_uv_peer_start(posp2p_uv_peer *up, posp2p_uv_error *err);

/* Addresses actually bound (port 0 if not open). */
posp2p_addr posp2p_uv_peer_tcp_addr(const posp2p_uv_peer *up);
posp2p_addr posp2p_uv_peer_udp_addr(const posp2p_uv_peer *up);

/* The engine clock: uv_now(loop) in ms. */
uint64_t posp2p_uv_peer_now(const posp2p_uv_peer *up);

/* Re-arm the peer's timer after direct engine calls. */
void posp2p_uv_peer_kick(posp2p_uv_peer *up);

/* Engine calls plus kick; same errors as the engine functions, and
 * POSP2P_ERR_STATE when the peer is not running. */
int posp2p_uv_peer_send(posp2p_uv_peer *up, const posp2p_envelope *msg,
                        char message_id_out[POSP2P_UUID_LEN + 1]);
int posp2p_uv_peer_connect(posp2p_uv_peer *up, const posp2p_addr *to,
                           posp2p_peer_wire wire, const char *expected_id,
                           posp2p_conn_id *out);
/* posp2p_peer_connect_stop plus kick; POSP2P_ERR_STATE when the peer is
 * neither running nor shutting down. */
int posp2p_uv_peer_connect_stop(posp2p_uv_peer *up, const posp2p_addr *to,
                                const char *reason);
int posp2p_uv_peer_discover(posp2p_uv_peer *up);
int posp2p_uv_peer_conn_close(posp2p_uv_peer *up, posp2p_conn_id conn,
                              const char *reason);

/* Graceful stop: posp2p_peer_shutdown (GOODBYE on every connection, drain),
 * then, on SHUTDOWN_DONE or after deadline_ms at the latest, close every
 * handle; on_closed fires when the last one is closed. A peer that was
 * never started is closed at once. Errors: POSP2P_ERR_STATE (already
 * closing). */
int posp2p_uv_peer_shutdown(posp2p_uv_peer *up, const char *reason,
                            uint32_t deadline_ms);

/* Close every handle now, without GOODBYE (the engine sees each
 * connection closed). on_closed fires later, from the loop. Calling it on
 * a peer that is already closing speeds the close up. */
void posp2p_uv_peer_abort(posp2p_uv_peer *up);

typedef struct {
  uint64_t accepted;          /* TCP connections accepted */
  uint64_t connects;          /* outgoing connects started */
  uint64_t connect_failed;    /* ... that failed */
  uint64_t read_errors;       /* reads that ended in an error (not EOF) */
  uint64_t writes;            /* uv_write calls */
  uint64_t datagrams_sent;
  uint64_t datagrams_dropped; /* refused (non-loopback) or send failed */
  uint64_t datagrams_received;/* unicast + broadcast dispatched to this peer */
} posp2p_uv_stats;

const posp2p_uv_stats *posp2p_uv_peer_stats(const posp2p_uv_peer *up);

/* Random bytes from getrandom(2) (falling back to /dev/urandom); used for
 * the engine's rand callback and available to applications. */
void posp2p_uv_random(uint8_t *buf, size_t len);
/* Wall clock, ms since the Unix epoch (CLOCK_REALTIME). */
uint64_t posp2p_uv_wall_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_UV_H */
