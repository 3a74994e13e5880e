/* testnet: an in-memory network for engine tests, on virtual time.
 *
 * Each node is one posp2p_peer at an address 127.0.0.<n>. Connections are
 * pairs of engine connections joined by two byte pipes; the network moves
 * bytes between their queues, optionally in small chunks (split tests),
 * through a per-frame hook that can drop, duplicate or delay v2 frames.
 * Datagrams go to one node by address or to every node for the broadcast
 * address. Nothing here touches a socket or a clock. */
#ifndef POSP2P_TESTNET_H
#define POSP2P_TESTNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/peer.h"

#define TN_MAX_NODES 16
#define TN_MAX_LINKS 64

typedef struct tn_net tn_net;
typedef struct tn_node tn_node;
typedef struct tn_link tn_link;

/* One recorded event (copies: the engine's pointers die with the callback). */
typedef struct {
  posp2p_peer_event_type type;
  posp2p_conn_id conn;
  char device_id[40];  /* ev->device_id or ev->device->id */
  char message_id[40];
  int code;
  int error_code;
  char requirement[24];
  char text[160];
  int msg_type;        /* MESSAGE / ERROR_RECEIVED / STATUS_STALE */
  char from_id[40];
  char order_id[64];
  uint64_t seq;
  int err_code_in_msg; /* ERROR_RECEIVED: msg->error->code */
  char ref_id[40];     /* ERROR_RECEIVED: msg->error->ref_message_id */
  uint32_t attempts;
  bool custody;
  bool closing;
  posp2p_dev_status status;
  posp2p_dev_status prev_status;
  uint64_t at;         /* virtual time */
} tn_event;

struct tn_node {
  tn_net *net;
  int index;
  char name[32];
  posp2p_peer *p;
  posp2p_addr addr;    /* ip 127.0.0.(index+1), port = listen port */
  tn_event *ev;
  size_t nev, cap;
};

typedef enum { TN_DELIVER = 0, TN_DROP, TN_DUPLICATE, TN_DELAY } tn_action;

/* Frame hook: called for each complete v2 frame on a link direction (after
 * the preface) with the decoded envelope (NULL if undecodable). *delay_ms is
 * used for TN_DELAY. */
typedef tn_action (*tn_frame_hook)(tn_net *net, tn_node *from, tn_node *to,
                                   const posp2p_envelope *e, uint64_t *delay_ms,
                                   void *ud);

/* Raw byte sink for one direction, replacing delivery (used to inspect the
 * exact bytes a peer writes). */
typedef void (*tn_byte_sink)(tn_net *net, tn_node *from, const uint8_t *d,
                             size_t n, void *ud);

struct tn_net {
  uint64_t now;
  uint64_t rng;
  tn_node *nodes[TN_MAX_NODES];
  int nnodes;
  tn_link *links[TN_MAX_LINKS];
  int nlinks;
  size_t chunk;           /* deliver bytes in pieces of this size (0: whole) */
  tn_frame_hook hook;
  void *hook_ud;
  struct tn_dgram *dgrams, *dgrams_tail;
  uint32_t broadcast_ip;
  size_t datagrams_delivered;
  bool pause_links;       /* hold all link bytes (backpressure tests) */
  const posp2p_peer_store *store;  /* given to nodes added while set */
  void (*before_start)(tn_node *n); /* e.g. restore calls */
};

tn_net *tn_new(void);
void tn_free(tn_net *net);

/* Default test config for a node of `type` named `name`: compressed timers
 * are left at defaults; tests change what they need before tn_add. */
void tn_config(posp2p_peer_config *cfg, int type, const char *name);
/* Create and start a node. Device id: deterministic from the index. */
tn_node *tn_add(tn_net *net, const posp2p_peer_config *cfg);
tn_node *tn_add_type(tn_net *net, int type, const char *name);

/* Connect `from` to `to` (v2 or legacy) and run until quiet. Returns the
 * connection id on `from`. */
posp2p_conn_id tn_connect(tn_net *net, tn_node *from, tn_node *to, posp2p_peer_wire wire);

/* A raw "remote" that is not an engine: accept a connection on `to` whose
 * other end the test writes bytes into (tn_raw_send) and reads from
 * (tn_raw_recv). */
tn_link *tn_raw_connect(tn_net *net, tn_node *to); /* from 127.0.0.100 */
tn_link *tn_raw_connect_from(tn_net *net, tn_node *to, uint32_t from_ip);
void tn_raw_send(tn_net *net, tn_link *l, const void *d, size_t n);
/* Bytes the engine wrote to the raw end since the last call (malloc'ed,
 * *n set; caller frees). */
uint8_t *tn_raw_take(tn_net *net, tn_link *l, size_t *n);
bool tn_raw_closed(const tn_link *l);   /* the engine closed its side */
posp2p_conn_id tn_raw_conn(const tn_link *l); /* conn id on the engine */
void tn_raw_close(tn_net *net, tn_link *l);  /* EOF from the raw side */
/* Half-close from the raw side (shutdown(SHUT_WR)): the engine hears EOF
 * after the bytes sent so far, and what it writes still reaches the raw
 * end until it closes its side. */
void tn_raw_shutdown(tn_net *net, tn_link *l);

/* Move bytes and datagrams until nothing moves. */
void tn_pump(tn_net *net);
/* Advance virtual time to t, ticking engines at their deadlines. */
void tn_run_until(tn_net *net, uint64_t t);
void tn_run_for(tn_net *net, uint64_t ms);

/* Send a datagram from a raw address into the network. */
void tn_inject_datagram(tn_net *net, const posp2p_addr *from, const posp2p_addr *to,
                        const void *d, size_t n);

/* Event queries. */
size_t tn_count(const tn_node *n, posp2p_peer_event_type t);
size_t tn_count_msg(const tn_node *n, int msg_type);
const tn_event *tn_find(const tn_node *n, posp2p_peer_event_type t, size_t nth);
const tn_event *tn_last(const tn_node *n, posp2p_peer_event_type t);
void tn_clear(tn_node *n);
void tn_dump(const tn_node *n);

/* Application helpers. */
int tn_send_order(tn_node *n, const char *to_id, int to_type, const char *order_id,
                  char mid_out[40]);
int tn_send_status(tn_node *n, const char *to_id, const char *order_id, uint64_t seq,
                   char mid_out[40]);

/* Link of node `a` and node `b`, if any. */
tn_link *tn_link_between(tn_net *net, tn_node *a, tn_node *b);

#endif

/* ---- Byte-level helpers for raw remotes -------------------------------- */

/* Split a v2 byte stream (after an 8-byte preface when `preface`) into
 * decoded envelopes (malloc'ed array; free with tn_free_envs). Stops at the
 * first undecodable frame. *preface_ok tells whether a valid preface led. */
size_t tn_decode_stream(const uint8_t *d, size_t n, bool preface, bool *preface_ok,
                        posp2p_envelope ***out);
void tn_free_envs(posp2p_envelope **v, size_t n);
/* Encode e as one frame into out (capacity cap); returns the length. */
size_t tn_frame(const posp2p_envelope *e, uint8_t *out, size_t cap);
/* Fill e + h as a HELLO from device `id` of `type` with the given versions. */
void tn_hello(posp2p_envelope *e, Posp2p__V2__Hello *h, const char *id, int type,
              uint32_t *versions, size_t nversions);
/* A fixed valid UUID for message ids in hand-made frames. */
const char *tn_uuid(int n);
