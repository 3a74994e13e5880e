/* Internal declarations of the libuv transport, shared by its source files.
 * Not installed; names are posp2p__uv_*. */
#ifndef POSP2P_UV_INT_H
#define POSP2P_UV_INT_H

#include <stdarg.h>

#include "posp2p/uv.h"

/* Shared read buffer: every TCP read and UDP receive on a loop lands here.
 * libuv calls alloc_cb, then read(2)/recvmsg(2), then read_cb, all
 * synchronously for one handle, and the engine consumes the bytes inside
 * read_cb, so one buffer serves every connection of every peer. The busy
 * flag is a guard in case a read callback ever re-enters a read. */
#define POSP2P__UV_RBUF_SIZE 65536u
/* Most iovecs handed to one uv_write. */
#define POSP2P__UV_IOV_MAX 16u
#define POSP2P__UV_RND_POOL 256u
/* SO_RCVBUF requested for a shared broadcast receiver. */
#define POSP2P__UV_RCV_BUFSIZE (4 * 1024 * 1024)

/* Every allocation goes through the process-wide posp2p allocator hook. */
#define POSP2P__UV_MALLOC(n) posp2p_mem_alloc(NULL, (n))
#define POSP2P__UV_CALLOC(n) posp2p_mem_calloc(NULL, (n))
#define POSP2P__UV_FREE(p) posp2p_mem_free(NULL, (p))

typedef struct posp2p__uv_rcv posp2p__uv_rcv;

/* One TCP connection. Its memory is released in the handle's close_cb. */
enum {
  POSP2P__UV_CONN_ESTABLISHED = 1u << 0, /* accepted, or connect succeeded */
  POSP2P__UV_CONN_CLOSING = 1u << 1,     /* uv_close called */
  POSP2P__UV_CONN_NOTIFY = 1u << 2,      /* engine knows it: call conn_closed */
  POSP2P__UV_CONN_MAPPED = 1u << 3       /* present in the peer's conn map */
};

typedef struct {
  uv_tcp_t tcp;
  /* A connect request is finished before the first write, so the two never
   * coexist. */
  union {
    uv_connect_t connect;
    uv_write_t write;
  } req;
  posp2p_uv_peer *up;
  posp2p_conn_id id;
  size_t writing; /* bytes in the uv_write in flight, 0 if none */
  int close_code; /* passed to posp2p_peer_conn_closed */
  unsigned flags;
} posp2p__uv_conn;

/* conn id -> connection: open addressing with linear probing and
 * backward-shift deletion (no tombstones). */
typedef struct {
  posp2p__uv_conn **slots;
  size_t cap; /* power of two, or 0 */
  size_t count;
} posp2p__uv_connmap;

int posp2p__uv_connmap_put(posp2p__uv_connmap *m, posp2p__uv_conn *c);
posp2p__uv_conn *posp2p__uv_connmap_get(const posp2p__uv_connmap *m,
                                        posp2p_conn_id id);
void posp2p__uv_connmap_del(posp2p__uv_connmap *m, posp2p_conn_id id);
void posp2p__uv_connmap_free(posp2p__uv_connmap *m);

/* Peer lifecycle states. */
enum {
  POSP2P__UV_NEW = 0,  /* bound, engine created, not started */
  POSP2P__UV_RUNNING,  /* started */
  POSP2P__UV_SHUTTING, /* graceful shutdown in progress */
  POSP2P__UV_CLOSING   /* every handle closed or closing; freed at the end */
};

struct posp2p_uv_peer {
  posp2p_uv_ctx *ctx;
  posp2p_peer *engine;
  posp2p_uv_callbacks cb;
  void *user_data;
  posp2p_uv_opts opts;
  uv_tcp_t listener;
  uv_udp_t udp;
  uv_timer_t timer;
  posp2p__uv_connmap conns;
  size_t live;          /* handles initialised and not yet through close_cb */
  posp2p_addr tcp_addr; /* as bound */
  posp2p_addr udp_addr;
  uint32_t broadcast_ip;
  uint16_t disc_port;
  posp2p__uv_rcv *rcv;  /* shared broadcast receiver joined, or NULL */
  size_t rcv_index;     /* our slot in rcv->peers */
  uint64_t armed;       /* deadline the timer is armed for, UINT64_MAX none */
  uint64_t hard_deadline; /* shutdown deadline, UINT64_MAX none */
  int state;
  bool listener_open, udp_open, timer_open;
  bool failed;          /* posp2p_uv_peer_new failed: free silently */
  bool lan_warned;
  bool due;             /* on ctx->due_head, waiting for the check phase */
  struct posp2p_uv_peer *due_next;
  posp2p_uv_stats stats;
  struct posp2p_uv_peer *next, *prev; /* ctx's list of live peers */
};

/* A UDP socket bound to the broadcast address, shared by every peer of a
 * loop that uses the same (broadcast ip, port, netns key). See uv_disc.c. */
struct posp2p__uv_rcv {
  uv_udp_t udp;
  posp2p_uv_ctx *ctx;
  uint32_t ip;
  uint16_t port;
  int netns_key;
  posp2p_uv_peer **peers; /* NULL slots while dispatching, compacted after */
  size_t npeers, cap;
  bool dispatching, compact, closing;
  struct posp2p__uv_rcv *next;
};

struct posp2p_uv_ctx {
  uv_loop_t *loop;
  uint8_t *rbuf;
  bool rbuf_busy;
  posp2p__uv_rcv *rcvs;   /* open receivers */
  size_t nrcv;            /* open */
  size_t nrcv_closing;    /* uv_close called, close_cb pending */
  size_t npeers;          /* peers not yet freed */
  posp2p_uv_peer *peers;  /* list of them */
  uint8_t rnd[POSP2P__UV_RND_POOL];
  size_t rnd_pos;
  /* Deferred ticks (see timer_cb in uv_peer.c): peers whose timer fired
   * this iteration, ticked from the check handle after the I/O poll. */
  uv_check_t check;
  uv_idle_t idle;
  bool tick_handles_open;
  size_t tick_handles_closing;
  posp2p_uv_peer *due_head;
};

/* uv_disc.c */
int posp2p__uv_udp_open(posp2p_uv_peer *up, posp2p_uv_error *err);
int posp2p__uv_udp_start(posp2p_uv_peer *up, posp2p_uv_error *err);
void posp2p__uv_rcv_leave(posp2p_uv_peer *up);
void posp2p__uv_send_datagram(posp2p_peer *p, const posp2p_addr *to,
                              const uint8_t *data, size_t len, void *ud);

/* uv_peer.c */
void posp2p__uv_rbuf_get(posp2p_uv_ctx *ctx, uv_buf_t *buf);
void posp2p__uv_release_buf(posp2p_uv_ctx *ctx, const uv_buf_t *buf);
void posp2p__uv_rearm(posp2p_uv_peer *up);
void posp2p__uv_handle_closed(posp2p_uv_peer *up);
void posp2p__uv_warn(posp2p_uv_peer *up, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* uv_util.c */
int posp2p__uv_err_set(posp2p_uv_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void posp2p__uv_sockaddr(struct sockaddr_in *sa, uint32_t ip, uint16_t port);
void posp2p__uv_addr_from(posp2p_addr *a, const struct sockaddr *sa);
/* libuv status of a read/connect/write -> posp2p_peer_conn_closed code. */
int posp2p__uv_close_code(int uv_status);
void posp2p__uv_ctx_rand(posp2p_uv_ctx *ctx, uint8_t *buf, size_t len);

#endif /* POSP2P_UV_INT_H */
