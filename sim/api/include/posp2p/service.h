/* posp2p service API: what the seed's Dart services LocalNetworkP2PService
 * and P2POrderRouterService give a Dart programmer, for a C programmer.
 *
 * A posp2p_service is one device (main POS, ordering tablet, secondary POS,
 * KDS or customer display) on a libuv loop, built on the libuv transport
 * (posp2p/uv.h) and the protocol engine (posp2p/peer.h). A posp2p_router
 * sits on a service and sends orders, status updates and cancellations,
 * and remembers every order it sent with its acknowledgement state.
 *
 * Where the seed returns a Future, the C call starts the operation and
 * returns 0 or a negative error at once; the result arrives later through a
 * callback, from the loop. Where the seed has a Stream, the C API has a
 * subscription: a callback registered with posp2p_service_subscribe_* (any
 * number of subscribers; each gets an id for posp2p_service_unsubscribe).
 * docs/seed-api.md maps every seed call to its C function.
 *
 * The loop: with opts.ctx NULL the service creates and owns a loop (and
 * its posp2p_uv_ctx); run it with posp2p_service_run. With opts.ctx set the
 * service lives on that context's loop, which the caller owns and runs
 * (uv_run or posp2p_service_run); several services may share one context.
 *
 * Errors: every function that can fail returns 0 or a negative code: a
 * posp2p_err (common.h), a posp2p_peer_err (peer.h), or a libuv code as
 * POSP2P_UV_CODE(uv_err) (uv.h). posp2p_uv_strerror / posp2p_uv_err_name
 * describe every one of them.
 *
 * Threading: a service and its routers belong to the thread that runs
 * their loop. Callbacks run on that thread, mostly from the loop; engine
 * events (a device's status change, a refused message) may also fire from
 * inside a call that connects, sends or stops, and stop fires pending
 * discover / connect callbacks at once. Objects passed to a callback are
 * valid only during the call. From a callback the application may call
 * any function here except posp2p_service_run, posp2p_service_del and
 * posp2p_router_del of the router whose callback is running.
 *
 * SPEC.md requirement ids (ROUTE-*, ACK-*, ...) name the protocol rules the
 * engine applies underneath; proto/SPEC.md is normative. */
#ifndef POSP2P_SERVICE_H
#define POSP2P_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "posp2p/peer.h"
#include "posp2p/uv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Short names for the schema's enums ----------------------------------- */

/* Device roles (Posp2p__V2__DeviceType; the seed's P2PDeviceType). */
#define POSP2P_TYPE_MAIN_POS POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS
#define POSP2P_TYPE_ORDERING_TABLET \
  POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET
#define POSP2P_TYPE_SECONDARY_POS \
  POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_SECONDARY_POS
#define POSP2P_TYPE_KDS POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS
#define POSP2P_TYPE_CUSTOMER_DISPLAY \
  POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_CUSTOMER_DISPLAY

/* Message types an application sends or handles (the seed's
 * P2PMessageType). HELLO, GOODBYE, HEARTBEAT and ACKNOWLEDGEMENT belong to
 * the engine. */
#define POSP2P_MSG_DISCOVERY POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DISCOVERY
#define POSP2P_MSG_ORDER_FORWARD \
  POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD
#define POSP2P_MSG_ORDER_STATUS POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS
#define POSP2P_MSG_ORDER_CANCEL POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_CANCEL
#define POSP2P_MSG_ORDER_SYNC POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_SYNC
#define POSP2P_MSG_CART_SYNC POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_CART_SYNC
#define POSP2P_MSG_PRODUCT_SYNC POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_PRODUCT_SYNC
#define POSP2P_MSG_CONFIG_SYNC POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_CONFIG_SYNC
#define POSP2P_MSG_DEVICE_INFO POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_INFO
#define POSP2P_MSG_SERVER_MODE POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_SERVER_MODE
#define POSP2P_MSG_BROADCAST_UPDATE \
  POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_BROADCAST_UPDATE
#define POSP2P_MSG_DEVICE_COMMAND \
  POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_COMMAND
#define POSP2P_MSG_DEVICE_RESPONSE \
  POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_DEVICE_RESPONSE
#define POSP2P_MSG_ERROR POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ERROR
#define POSP2P_MSG_WARNING POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_WARNING

/* Order lifecycle (Posp2p__V2__OrderStatusCode; the seed's OrderStatus). */
#define POSP2P_ORDER_STATUS_PENDING \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PENDING
#define POSP2P_ORDER_STATUS_SENT_TO_KITCHEN \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SENT_TO_KITCHEN
#define POSP2P_ORDER_STATUS_PREPARING \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PREPARING
#define POSP2P_ORDER_STATUS_READY POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_READY
#define POSP2P_ORDER_STATUS_SERVED \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_SERVED
#define POSP2P_ORDER_STATUS_COMPLETED \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_COMPLETED
#define POSP2P_ORDER_STATUS_CANCELLED \
  POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_CANCELLED

/* ==== The service (LocalNetworkP2PService) ================================== */

typedef struct posp2p_service posp2p_service;

/* The seed's discoverDevices() waits this long; connectToDevice() gives up
 * after this long. */
#define POSP2P_SERVICE_DISCOVER_MS 5000u
#define POSP2P_SERVICE_CONNECT_MS 5000u

/* Runs once the engine exists and before it starts (posp2p_service_start),
 * for restoring saved state into it (posp2p_store_load). A negative return
 * fails the start with that code. */
typedef int (*posp2p_service_restore_fn)(posp2p_service *s, posp2p_peer *engine,
                                         uint64_t now_ms, void *user_data);

typedef struct {
  /* Device id: a canonical UUID, or NULL / "" for a new random one, drawn
   * by posp2p_service_new (the seed draws Uuid().v4() in initialize). Pass
   * the same id after a restart to keep the identity (TOPO-7). */
  const char *device_id;
  /* Address of the TCP listener and the unicast UDP socket, and the source
   * address of outgoing connections. NULL: "127.0.0.1". */
  const char *bind_ip;
  bool no_listen;           /* accept no connections (advertise port 0) */
  uint16_t discovery_port;  /* 0: 8765 (TOPO-2) */
  /* Discovery broadcast address. NULL: "127.255.255.255" (DISC-16). An
   * address outside 127.0.0.0/8 is refused unless allow_lan. */
  const char *broadcast_ip;
  bool allow_lan;
  /* Engine tuning (timers, limits, wire); NULL: posp2p_peer_config_init's
   * defaults. Its identity fields (device_id, device_name, device_type,
   * listen_port), discovery_port and broadcast_ip are ignored: they come
   * from the arguments and the fields above. */
  const posp2p_peer_config *engine;
  /* Longest wait of posp2p_service_connect; 0: POSP2P_SERVICE_CONNECT_MS. */
  uint32_t connect_timeout_ms;
  /* Longest graceful stop (GOODBYE, drain) before handles are closed
   * anyway; 0: 3000. */
  uint32_t stop_timeout_ms;
  /* Loop: NULL creates an owned loop; else the caller's context. */
  posp2p_uv_ctx *ctx;
  /* Persistence (e.g. posp2p_store_iface), copied; NULL keeps everything
   * in memory. restore (may be NULL) is called on every start. */
  const posp2p_peer_store *store;
  posp2p_service_restore_fn restore;
  /* Lifecycle callbacks (may be NULL): the service has stopped (every
   * handle closed; posp2p_service_start may be called again), and
   * non-fatal transport problems. */
  void (*on_stopped)(posp2p_service *s, void *user_data);
  void (*on_warning)(posp2p_service *s, int code, const char *text,
                     void *user_data);
  void *user_data;          /* for restore, on_stopped, on_warning */
} posp2p_service_opts;

/* Zero everything, then the defaults above. */
void posp2p_service_opts_init(posp2p_service_opts *o);

/* initialize(deviceName, deviceType, customPort): create a device named
 * name (copied; NULL means "") of role type (POSP2P_TYPE_*) that will
 * listen on TCP port `port` (POSP2P_DATA_PORT, 8766, is the seed's
 * default; 0 lets the kernel choose, see posp2p_service_tcp_addr). opts
 * may be NULL (defaults); it is copied. Nothing is bound or sent until
 * posp2p_service_start. err (may be NULL) describes a failure.
 * Errors: POSP2P_ERR_INVAL (NULL out, bad type, bad address or id text),
 * POSP2P_ERR_CONFIG (engine config out of range, non-loopback broadcast
 * without allow_lan), POSP2P_ERR_NOMEM, POSP2P_UV_CODE(...) (creating the
 * owned loop). */
int posp2p_service_new(posp2p_service **out, const char *name, int type,
                       uint16_t port, const posp2p_service_opts *opts,
                       posp2p_uv_error *err);

/* Free the service. Call it when the service is stopped (on_stopped has
 * fired) or was never started, and not from a callback. If it still runs
 * it is aborted first (no GOODBYE): with an owned loop the loop is run
 * until every handle is closed; with the caller's context the handles are
 * released from the caller's loop later. Pending discover and connect
 * callbacks are dropped without being called. Routers on the service must
 * be deleted before. NULL is allowed. */
void posp2p_service_del(posp2p_service *s);

/* start(): bind the TCP listener and discovery sockets, restore state
 * (opts.restore), start heartbeats, timers and the discovery ANNOUNCE.
 * May be called again after a stop has completed (a new engine with the
 * same device id and an empty registry, as the seed clears its devices on
 * stop). err (may be NULL) names the failing operation and address.
 * Errors: POSP2P_ERR_STATE (running or stopping), POSP2P_ERR_CONFIG,
 * POSP2P_ERR_NOMEM, POSP2P_UV_CODE(UV_EADDRINUSE) and other socket
 * errors, any code returned by opts.restore. */
int posp2p_service_start(posp2p_service *s, posp2p_uv_error *err);

/* stop(): graceful (CONN-20): GOODBYE(reason; NULL: "shutdown") on every
 * connection, drain, close. is_running is false at once; on_stopped fires
 * when everything is closed. Pending discover and connect callbacks fire
 * at once with POSP2P_ERR_SHUTDOWN. Unacknowledged messages stay in the
 * store's outbox (if any) for the next start.
 * Errors: POSP2P_ERR_STATE (not running). */
int posp2p_service_stop(posp2p_service *s, const char *reason);

/* Close every socket now, without GOODBYE, as a crash would (peers see the
 * connection drop). Otherwise like posp2p_service_stop; during a graceful
 * stop it cuts the drain short. Errors: POSP2P_ERR_STATE (stopped, or never
 * started). */
int posp2p_service_abort(posp2p_service *s);

/* Run the service's loop until until(arg) returns true (checked before
 * each loop iteration) or timeout_ms passes. until may be NULL (run for
 * timeout_ms). Returns 1 if until held, 0 otherwise. With a shared context
 * this runs every service on it. The loop must not be running already:
 * never call this from a callback (libuv loops are not re-entrant); the
 * nested call on the same service is detected (POSP2P_ERR_STATE). */
int posp2p_service_run(posp2p_service *s, uint32_t timeout_ms,
                       bool (*until)(void *arg), void *arg);

/* ---- Getters (isRunning, deviceId, deviceName, deviceType) --------------- */

bool posp2p_service_is_running(const posp2p_service *s);
const char *posp2p_service_device_id(const posp2p_service *s);   /* lower case */
const char *posp2p_service_device_name(const posp2p_service *s);
int posp2p_service_device_type(const posp2p_service *s);
/* Bound TCP address (port 0 when not running or not listening). */
posp2p_addr posp2p_service_tcp_addr(const posp2p_service *s);
/* The loop the service runs on. An owned loop may carry the application's
 * own handles too, as long as they are closed before posp2p_service_del
 * (which runs the owned loop until it is empty). */
uv_loop_t *posp2p_service_loop(const posp2p_service *s);
/* The transport peer and the engine while running (between start and
 * on_stopped), else NULL: for queries and statistics. */
posp2p_uv_peer *posp2p_service_uv(const posp2p_service *s);
posp2p_peer *posp2p_service_engine(const posp2p_service *s);

/* ---- Devices ---------------------------------------------------------------
 * Copies of registry records into out[0..max-1]; *count receives the
 * number of matching records (also those beyond max). The name pointers
 * stay valid until the loop runs again or the service is called.
 * posp2p_service_devices: every device this one knows (the seed's
 * connectedDevices, which also lists devices only seen by discovery);
 * posp2p_service_connected_devices: only those with a live, handshaken
 * connection (status CONNECTED). A client in the star topology is
 * connected to the main POS only (TOPO-4); other clients appear with
 * status "discovering". Errors: POSP2P_ERR_INVAL (NULL count, or NULL out
 * with max > 0). Before start and after on_stopped: *count = 0. */
int posp2p_service_devices(const posp2p_service *s, posp2p_peer_device *out,
                           size_t max, size_t *count);
int posp2p_service_connected_devices(const posp2p_service *s,
                                     posp2p_peer_device *out, size_t max,
                                     size_t *count);

/* discoverDevices({timeout}): broadcast a discovery REQUEST (DISC-4) now
 * and call cb after timeout_ms with every device known at that moment
 * (n may be 0; devices valid during the call). code is 0, or
 * POSP2P_ERR_SHUTDOWN when the service stopped first (devices as known
 * then). Answers also arrive earlier as device-change events.
 * Errors: POSP2P_ERR_INVAL (NULL cb), POSP2P_ERR_STATE (not running),
 * POSP2P_ERR_NOMEM. */
typedef void (*posp2p_service_discover_cb)(posp2p_service *s, int code,
                                           const posp2p_peer_device *devices,
                                           size_t n, void *user_data);
int posp2p_service_discover(posp2p_service *s, uint32_t timeout_ms,
                            posp2p_service_discover_cb cb, void *user_data);

/* connectToDevice(device): open a connection to a known device (its
 * recorded address and TCP port, DISC-7) and complete the handshake. cb
 * (may be NULL) gets code 0 when the connection is ready, or the reason it
 * failed: a libuv code (POSP2P_UV_CODE(UV_ECONNREFUSED)), a protocol or
 * peer-closed code, POSP2P_ERR_TIMEOUT after opts.connect_timeout_ms (the
 * attempt is then abandoned), POSP2P_ERR_SHUTDOWN. In the star topology a
 * client connects to the main POS only (TOPO-4, TOPO-5). A device that is
 * connected already is not connected twice: cb gets 0 (from the loop).
 * Errors: POSP2P_ERR_STATE (not running), POSP2P_ERR_UNKNOWN_DEVICE (not
 * in the registry), POSP2P_ERR_INVAL (bad id, or no known address or
 * port), POSP2P_ERR_NOMEM, the transport's connect errors. */
typedef void (*posp2p_service_connect_cb)(posp2p_service *s, int code,
                                          const char *device_id,
                                          void *user_data);
int posp2p_service_connect(posp2p_service *s, const char *device_id,
                           posp2p_service_connect_cb cb, void *user_data);
/* The same to an address (for a main POS known from configuration, not
 * discovery). expected_id (may be NULL) is checked against the HELLO.
 * device_id in cb is the remote's id once known, else "". */
int posp2p_service_connect_addr(posp2p_service *s, const posp2p_addr *to,
                                const char *expected_id,
                                posp2p_service_connect_cb cb, void *user_data);

/* ---- Sending (sendMessage) -------------------------------------------------- */

/* Send an application message. msg is a template (see posp2p_peer_send):
 * message_type and the matching payload; at most one of to_device_id (a
 * directed message) and to_device_type (by type, ROUTE-4); neither is a
 * broadcast (ROUTE-3). The engine fills message_id (if empty),
 * from_device_id, the timestamp and the type's default priority, routes it
 * (a client sends everything through the main POS, which relays) and, for
 * acked types, retransmits until acknowledged (ACK-7..ACK-9). The id goes
 * to message_id_out (may be NULL).
 * Errors: POSP2P_ERR_STATE (not running), every error of posp2p_peer_send
 * (POSP2P_ERR_INVAL, codec validation codes, POSP2P_ERR_UNKNOWN_DEVICE,
 * POSP2P_ERR_DEVICE_OFFLINE, POSP2P_ERR_NO_ROUTE, POSP2P_ERR_QUEUE_FULL,
 * POSP2P_ERR_FRAME_TOO_LARGE, POSP2P_ERR_SHUTDOWN, POSP2P_ERR_STORE,
 * POSP2P_ERR_NOMEM). */
int posp2p_service_send(posp2p_service *s, const posp2p_envelope *msg,
                        char message_id_out[POSP2P_UUID_LEN + 1]);

/* The same for the types whose payload is free-form (orderSync,
 * productSync, configSync, serverMode, broadcastUpdate, deviceCommand,
 * deviceResponse, warning: MSG-13): json is one compact JSON object
 * (MSG-14) or NULL for none. to: device id or NULL; to_type: a role or 0.
 * Errors: those of posp2p_service_send; POSP2P_ERR_INVAL also for a type
 * with a typed payload. */
int posp2p_service_send_json(posp2p_service *s, int type, const char *to,
                             int to_type, const char *json,
                             char message_id_out[POSP2P_UUID_LEN + 1]);

/* ---- Subscriptions (onMessage, messageStream, deviceStream) ----------------
 * Each returns an id (> 0) through *id (may be NULL) for
 * posp2p_service_unsubscribe. Subscriptions outlive stop/start. Within
 * one event, subscribers run in registration order; one registered during
 * an event first sees the next event. */
typedef uint64_t posp2p_sub_id;

/* A delivered message (once per message id, ACK-18; in send order per
 * originator, ROUTE-8), or an ERROR addressed to this device. */
typedef void (*posp2p_service_message_cb)(posp2p_service *s,
                                          const posp2p_envelope *msg,
                                          void *user_data);
/* A registry record was added or changed; prev is its status before
 * (equal to device->status when only the name, address or type changed). */
typedef void (*posp2p_service_device_cb)(posp2p_service *s,
                                         const posp2p_peer_device *device,
                                         posp2p_dev_status prev,
                                         void *user_data);
/* Every engine event (acks, delivery failures, violations, ...). */
typedef void (*posp2p_service_event_cb)(posp2p_service *s,
                                        const posp2p_peer_event *ev,
                                        void *user_data);

/* onMessage(type, handler): cb runs for each delivered message of that
 * type (POSP2P_MSG_*). Several handlers per type are allowed; handlers
 * run before the all-messages subscribers.
 * Errors: POSP2P_ERR_INVAL (NULL cb, unknown type), POSP2P_ERR_NOMEM. */
int posp2p_service_on_message(posp2p_service *s, int type,
                              posp2p_service_message_cb cb, void *user_data,
                              posp2p_sub_id *id);
/* messageStream: every delivered message. Errors: as on_message. */
int posp2p_service_subscribe_messages(posp2p_service *s,
                                      posp2p_service_message_cb cb,
                                      void *user_data, posp2p_sub_id *id);
/* deviceStream: every registry change. Errors: as on_message. */
int posp2p_service_subscribe_devices(posp2p_service *s,
                                     posp2p_service_device_cb cb,
                                     void *user_data, posp2p_sub_id *id);
/* Every engine event, before the message and device subscribers. */
int posp2p_service_subscribe_events(posp2p_service *s,
                                    posp2p_service_event_cb cb,
                                    void *user_data, posp2p_sub_id *id);
/* Remove a subscription of any kind; safe from inside a callback (also
 * the subscription's own). Errors: POSP2P_ERR_INVAL (no such id). */
int posp2p_service_unsubscribe(posp2p_service *s, posp2p_sub_id id);

/* ==== The router (P2POrderRouterService) ===================================== */

typedef struct posp2p_router posp2p_router;

/* One line of an order (the seed's P2POrderItem). Amounts in minor units
 * of the order's currency_exponent (MONEY-1, MONEY-2). Strings are copied
 * when the order is sent; NULL optional strings are absent (null on the
 * legacy wire). */
typedef struct {
  const char *product_id;
  const char *product_name;
  int64_t price_minor;
  int32_t quantity;                  /* >= 0 (MSG-25) */
  const char *const *modifiers;      /* n_modifiers strings */
  size_t n_modifiers;
  const char *variant;               /* NULL: absent */
  const char *notes;                 /* NULL: absent */
  bool has_discount_per_item;
  int64_t discount_per_item_minor;
} posp2p_order_item;

/* Destination "derive from the target": see posp2p_order.destination. */
#define POSP2P_DESTINATION_AUTO (-1)

/* An order (the seed's P2POrderMessage payload; the OrderForward message
 * of the schema). */
typedef struct {
  const char *order_id;              /* non-empty (MSG-24) */
  const posp2p_order_item *items;
  size_t n_items;
  int64_t subtotal_minor;
  bool has_tax;
  int64_t tax_minor;
  bool has_service_charge;
  int64_t service_charge_minor;
  bool has_discount;
  int64_t discount_minor;
  int64_t total_minor;
  uint32_t currency_exponent;        /* 0..9 (MONEY-3); 2 for cents */
  const char *currency;              /* "" / NULL or ISO 4217 (MONEY-4) */
  int order_status;                  /* POSP2P_ORDER_STATUS_*, default pending */
  /* Posp2p__V2__Destination, or POSP2P_DESTINATION_AUTO (default): from
   * the target's role (mainPOS, secondaryPOS, orderingTablet,
   * kitchenDisplay; customer displays and broadcasts get allDevices). */
  int destination;
  bool has_table_number;
  int32_t table_number;
  const char *customer_name;         /* NULL: absent */
  const char *special_instructions;  /* NULL: absent */
  bool has_target_delivery_time;
  int64_t target_delivery_time_ms;   /* ms since the epoch, UTC, >= 0 */
} posp2p_order;

/* Zero it, then currency_exponent 2, destination AUTO, status pending. */
void posp2p_order_init(posp2p_order *o);
void posp2p_order_item_init(posp2p_order_item *it);

/* An order status update (the seed's broadcastOrderStatusUpdate
 * arguments; OrderStatus of the schema). */
typedef struct {
  const char *order_id;
  int new_status;                    /* POSP2P_ORDER_STATUS_* */
  const char *reason;                /* NULL: absent */
  bool has_estimated_time;
  int32_t estimated_time_s;          /* seconds */
  /* ROUTE-10 sequence: 0 lets the router number the updates it sends for
   * each order 1, 2, 3 ...; set it to continue a numbering kept elsewhere
   * (for example across a restart). */
  uint64_t sequence;
} posp2p_status_update;

/* Acknowledgement state of a sent order, per recipient and overall. */
typedef enum {
  POSP2P_ACK_PENDING = 0,  /* not acknowledged yet (being retransmitted) */
  POSP2P_ACK_ACKED = 1,    /* acknowledged (overall: by every recipient) */
  POSP2P_ACK_FAILED = 2,   /* gave up (overall: for every recipient) */
  POSP2P_ACK_PARTIAL = 3   /* overall only: finished, some acked, some failed */
} posp2p_ack_state;

const char *posp2p_ack_state_name(posp2p_ack_state s); /* "pending" ... */

typedef struct {
  char device_id[POSP2P_UUID_LEN + 1];
  posp2p_ack_state state;            /* PENDING, ACKED or FAILED */
  uint32_t attempts;                 /* transmissions, when finished */
  /* FAILED: POSP2P_ERR_RETRY_LIMIT (ACK-9), POSP2P_ERR_UNKNOWN_DEVICE or
   * POSP2P_ERR_DEVICE_OFFLINE (ERROR from the main POS, ACK-11). */
  int code;
  uint64_t done_ms;                  /* loop clock when finished, 0 pending */
} posp2p_order_recipient;

/* One sent order with its acknowledgement state. Owned by the router. */
typedef struct {
  char message_id[POSP2P_UUID_LEN + 1];
  const char *order_id;
  char to[POSP2P_UUID_LEN + 1];      /* directed: the device, else "" */
  int to_type;                       /* by type: the role, else 0 */
  bool broadcast;                    /* neither to nor to_type */
  /* Sent by a client as a broadcast or by type: the main POS acknowledges
   * it on behalf of the recipients (ACK-14, ACK-16), so the one recipient
   * listed is the main POS. */
  bool custody;
  posp2p_ack_state state;            /* overall */
  /* The devices that must acknowledge it: the target of a directed order;
   * for a main POS's broadcast or by-type order, every matching connected
   * device at send time (ACK-13); the main POS for custody. An ack from a
   * device not listed (a race with a new connection) adds it. */
  const posp2p_order_recipient *recipients;
  size_t n_recipients, n_acked, n_failed;
  uint64_t sent_ms;                  /* loop clock at send */
  /* posp2p_router_cancel_order sent an ORDER_CANCEL for it (cancel_*), or
   * an ORDER_CANCEL for this order id arrived (cancel_message_id ""). */
  bool cancelled;
  char cancel_message_id[POSP2P_UUID_LEN + 1];
  posp2p_ack_state cancel_state;
  /* The payload as sent (decoded copy). */
  const Posp2p__V2__OrderForward *order;
} posp2p_sent_order;

/* Create a router on a service (the seed's P2POrderRouterService
 * initialize(): it also listens for status updates and cancellations).
 * Several routers may share a service; each tracks what it sent. Delete
 * routers before their service.
 * Errors: POSP2P_ERR_INVAL, POSP2P_ERR_NOMEM. */
int posp2p_router_new(posp2p_router **out, posp2p_service *s);
/* dispose(): free the router and its records. NULL is allowed. */
void posp2p_router_del(posp2p_router *r);
posp2p_service *posp2p_router_service(const posp2p_router *r);

/* sendOrderToDevice(orderId, deviceId, items, ...): one directed
 * ORDER_FORWARD (priority 9) to device_id; the order is acknowledged end
 * to end by that device (ACK-1), through the main POS when this device is
 * a client (ROUTE-2). The record appears at once with state pending; the
 * on-order-sent callbacks run before the call returns.
 * Errors: POSP2P_ERR_INVAL (NULL / empty order_id or device_id), the
 * codec's validation codes (POSP2P_ERR_RANGE, POSP2P_ERR_BAD_ID, ...),
 * POSP2P_ERR_NOMEM, and every error of posp2p_service_send (notably
 * POSP2P_ERR_STATE when not running, POSP2P_ERR_UNKNOWN_DEVICE and
 * POSP2P_ERR_DEVICE_OFFLINE at the main POS, POSP2P_ERR_NO_ROUTE at a
 * client without a connection to the main POS). */
int posp2p_router_send_order(posp2p_router *r, const posp2p_order *o,
                             const char *device_id,
                             char message_id_out[POSP2P_UUID_LEN + 1]);

/* sendOrderToDeviceType(orderId, items, type, ...): one by-type
 * ORDER_FORWARD (ROUTE-4). *recipients (may be NULL) receives the number
 * of devices that must acknowledge it: at the main POS the connected
 * devices of that role, each tracked (ACK-13); at a client 1 (the main
 * POS takes custody, ACK-14). At a main POS with no such device nothing is
 * sent, no record is made, *recipients is 0, message_id_out is "" and the
 * call returns 0 (the seed returns a count of 0).
 * Errors: as posp2p_router_send_order, and POSP2P_ERR_INVAL for a bad
 * type. */
int posp2p_router_send_order_to_type(posp2p_router *r, const posp2p_order *o,
                                     int type,
                                     char message_id_out[POSP2P_UUID_LEN + 1],
                                     size_t *recipients);

/* broadcastOrderToAllClients(orderId, items, ...): one broadcast
 * ORDER_FORWARD (ROUTE-3), otherwise as send_order_to_type. */
int posp2p_router_broadcast_order(posp2p_router *r, const posp2p_order *o,
                                  char message_id_out[POSP2P_UUID_LEN + 1],
                                  size_t *recipients);

/* broadcastOrderStatusUpdate(orderId, newStatus, reason, estimatedTime):
 * one broadcast ORDER_STATUS (priority 8) to every device (ROUTE-3),
 * acknowledged by each (ACK-13). Status updates are not sent orders and
 * make no record. Errors: POSP2P_ERR_INVAL (NULL u, empty order_id, bad
 * status), and those of posp2p_service_send. */
int posp2p_router_broadcast_status(posp2p_router *r,
                                   const posp2p_status_update *u,
                                   char message_id_out[POSP2P_UUID_LEN + 1]);

/* cancelOrderOnDevice(orderId, deviceId, reason, refund): one directed
 * ORDER_CANCEL (priority 9). Every record of order_id is marked
 * cancelled with this cancel's message id; its acknowledgement is
 * tracked in cancel_state. (The seed forgets the order instead; use
 * posp2p_router_clear_order for that.) reason NULL means "".
 * Errors: as posp2p_router_send_order. */
int posp2p_router_cancel_order(posp2p_router *r, const char *order_id,
                               const char *device_id, const char *reason,
                               bool refund,
                               char message_id_out[POSP2P_UUID_LEN + 1]);

/* getSentOrder(orderId): the most recent record of order_id, or NULL.
 * Records stay valid until posp2p_router_clear_order of their order or
 * posp2p_router_del; their fields change as acknowledgements arrive (the
 * recipients pointer may change when the loop runs). */
const posp2p_sent_order *posp2p_router_sent_order(const posp2p_router *r,
                                                  const char *order_id);
/* The record of one message id, or NULL. */
const posp2p_sent_order *posp2p_router_sent_message(const posp2p_router *r,
                                                    const char *message_id);
/* getAllSentOrders(): records 0..count-1 in send order. */
size_t posp2p_router_sent_order_count(const posp2p_router *r);
const posp2p_sent_order *posp2p_router_sent_order_at(const posp2p_router *r,
                                                     size_t i);
/* clearOrder(orderId): forget every record of order_id (acknowledgements
 * that arrive later are ignored). Returns the number of records removed. */
size_t posp2p_router_clear_order(posp2p_router *r, const char *order_id);

/* onOrderSent(callback): cb runs once per order accepted for sending (the
 * seed: once per device; here once per message, whose record lists the
 * recipients). on_order_update: cb runs whenever a record's ack state
 * changes (a recipient acked or failed, the cancel was acked, a remote
 * cancellation arrived). Errors: POSP2P_ERR_INVAL, POSP2P_ERR_NOMEM. */
typedef void (*posp2p_router_order_cb)(posp2p_router *r,
                                       const posp2p_sent_order *order,
                                       void *user_data);
int posp2p_router_on_order_sent(posp2p_router *r, posp2p_router_order_cb cb,
                                void *user_data, posp2p_sub_id *id);
int posp2p_router_on_order_update(posp2p_router *r, posp2p_router_order_cb cb,
                                  void *user_data, posp2p_sub_id *id);
/* Errors: POSP2P_ERR_INVAL (no such id). */
int posp2p_router_unsubscribe(posp2p_router *r, posp2p_sub_id id);

/* Build the OrderForward envelope the router sends for o, without
 * addressing (for applications that send through posp2p_service_send
 * themselves: set to_device_id or to_device_type, then send). dest_type is
 * the target's role for POSP2P_DESTINATION_AUTO (0: allDevices). The
 * envelope is not validated here; posp2p_service_send validates it. Free
 * *out with posp2p_envelope_free(*out, NULL).
 * Errors: POSP2P_ERR_INVAL (NULL out or o, empty order_id, NULL item or
 * modifier arrays), POSP2P_ERR_NOMEM, and posp2p_envelope_unpack's string
 * checks (POSP2P_ERR_PROTOBUF for invalid UTF-8, POSP2P_ERR_RANGE for
 * U+0000). */
int posp2p_order_envelope(const posp2p_order *o, int dest_type,
                          posp2p_envelope **out);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_SERVICE_H */
