/* posp2p-peer internals shared by its source files: the options, the daemon
 * state, JSON output and the control channel. Not a public API. */
#ifndef POSP2P_DAEMON_H
#define POSP2P_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "posp2p/legacy.h"
#include "posp2p/store.h"
#include "posp2p/uv.h"

#define DAEMON_MAX_CONNECT 8

typedef enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

typedef struct {
  const char *name;
  int type;                 /* Posp2p__V2__DeviceType */
  const char *id;           /* NULL: persisted or generated */
  uint32_t bind_ip;
  const char *bind_text;
  uint16_t tcp_port, udp_port;
  bool no_listen;
  uint32_t broadcast_ip;
  bool allow_lan;
  bool udp_reuseaddr;
  uint32_t heartbeat_ms, timeout_ms, ack_timeout_ms, max_retries, handshake_ms,
      announce_ms, max_frame, max_connections, reconnect_ms, shutdown_ms;
  posp2p_peer_wire wire;
  posp2p_addr connect[DAEMON_MAX_CONNECT];
  int nconnect;
  bool discover;
  const char *state_dir;    /* NULL: persistence disabled ("none") */
  bool store_sync_full;
  bool log_json;
  log_level log_level;
  bool control;             /* stdio control channel */
  int32_t utc_offset_minutes;
} daemon_opts;

/* A pending {"cmd":"discover"}: replies when its timer fires. */
typedef struct discover_req {
  uv_timer_t timer;
  struct pdaemon *d;
  json_t *req;
  struct discover_req *next, *prev;
} discover_req;

typedef struct pdaemon {
  daemon_opts o;
  uv_loop_t *loop;
  posp2p_uv_ctx *ctx;
  posp2p_uv_peer *up;
  posp2p_store *store;
  char id[POSP2P_UUID_LEN + 1];
  char store_path[4200];
  uint64_t start_ms;        /* uv_now at start: t_ms origin */
  posp2p_legacy_opts legacy;

  /* Output: events are held until "ready" has been printed. */
  bool ready_printed;
  json_t *held_events;      /* array */
  bool shutdown_done_printed;

  /* Control channel (stdin). */
  union {
    uv_pipe_t pipe;
    uv_tty_t tty;
  } in;
  bool in_open;
  bool in_is_file;          /* stdin is a regular file / device: uv_fs_read */
  uv_fs_t in_fs;
  bool in_fs_busy;
  int64_t in_off;
  char *in_buf;             /* partial line */
  size_t in_len, in_cap;
  bool in_discarding;       /* an overlong line is being skipped */

  uv_signal_t sigint, sigterm;
  bool signals_open;
  uv_timer_t disc_timer;    /* --discover: retry until connected to a main POS */
  bool disc_timer_open;
  uint32_t disc_interval_ms;
  /* --discover: the one main POS this client uses (TOPO-4, TOPO-6: the
   * first that answered) and the address it connects to. */
  char main_id[POSP2P_UUID_LEN + 1];
  posp2p_addr main_target;
  bool main_target_set;
  bool main_switching;      /* inside maybe_connect_main (events re-enter it) */

  discover_req *discovers;
  json_t *orders;           /* message_id -> order record (sent orders) */
  json_t *seqs;             /* order_id -> last status sequence (no store) */
  bool shutting_down;
  bool closed;
  int exit_code;
} pdaemon;

/* peer_main.c */
void daemon_log(pdaemon *d, log_level lvl, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void daemon_begin_shutdown(pdaemon *d, const char *reason);
uint64_t daemon_t_ms(const pdaemon *d);

/* peer_json.c */
/* Compact JSON text of v, doubles in their shortest round-trip form (the
 * way the legacy wire and Dart print them). Returns a malloc'd string, or
 * NULL on failure; *len gets its length. */
char *json_text(const json_t *v, size_t *len);
/* Write v as one line on stdout and flush. */
void json_print_line(const json_t *v);
/* Legacy-shaped payload of e as a new JSON value (NULL if the legacy wire
 * cannot express it; *err says why). */
json_t *json_legacy_payload(const posp2p_envelope *e,
                            const posp2p_legacy_opts *opts, posp2p_error *err);
/* Build an envelope from a legacy-shaped payload: synthesizes a legacy
 * message and converts it with posp2p_legacy_decode (the one mapping from
 * the legacy shape to v2). to: device id or NULL; to_type: a device type or
 * 0. Free with posp2p_envelope_free(e, NULL). */
int json_envelope_from_legacy(pdaemon *d, const char *type, json_t *payload,
                              const char *to, int to_type,
                              posp2p_envelope **out, posp2p_error *err);
json_t *json_device(const pdaemon *d, const posp2p_peer_device *dev);
json_t *json_devices(const pdaemon *d);
const char *wire_name(posp2p_peer_wire w);

/* peer_control.c */
int control_open(pdaemon *d);
void control_close(pdaemon *d);
void control_on_event(pdaemon *d, const posp2p_peer_event *ev);
void control_emit(pdaemon *d, json_t *ev); /* steals ev */
void control_flush_held(pdaemon *d);
void control_order_restored(const posp2p_peer_outbox_rec *rec,
                            const posp2p_envelope *env, void *user_data);
void control_close_discovers(pdaemon *d);

#endif /* POSP2P_DAEMON_H */
