/* Discovery sockets.
 *
 * Design. On loopback, a datagram sent to the broadcast address
 * 127.255.255.255:P reaches every socket bound to 0.0.0.0:P or
 * 127.255.255.255:P (with SO_REUSEADDR), one copy each, and no socket bound
 * to a specific address such as 127.0.0.2:P. A unicast datagram to
 * 127.0.0.2:P reaches only the socket bound to 127.0.0.2:P. A device at
 * 127.0.0.2 must hear broadcasts AND get unicast discovery responses, and
 * a process may hold thousands of such devices. So:
 *
 *  - each peer owns ONE unicast socket bound to bind_ip:discovery_port with
 *    SO_BROADCAST. Everything the peer sends (requests, announcements,
 *    responses) leaves from it, so responses to its requests come back to
 *    it, and receivers record its real address;
 *  - each loop owns ONE shared receiver per (broadcast ip, port, netns key),
 *    bound to broadcast_ip:port with SO_REUSEADDR (other processes on the
 *    machine bind the same) and SO_BROADCAST. Each datagram it receives is
 *    handed to every running peer that joined it; each engine drops its own
 *    datagrams by device id. One broadcast therefore costs one recvmsg and
 *    N engine calls per process, instead of N sockets and N copies in the
 *    kernel; the fd cost of discovery is one per peer plus one per loop.
 *  - a peer bound to INADDR_ANY (namespace mode, one device per namespace)
 *    has no shared receiver: its own socket, bound to 0.0.0.0:P with
 *    SO_REUSEADDR, already receives both broadcasts and unicast.
 *
 * Safety: datagrams to addresses outside 127.0.0.0/8 are dropped unless the
 * peer was created with allow_lan (network namespaces the caller made). */
#include <string.h>

#include "uv_int.h"

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  posp2p_uv_peer *up = h->data;
  (void)suggested;
  posp2p__uv_rbuf_get(up->ctx, buf);
}

static void rcv_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  posp2p__uv_rcv *rcv = h->data;
  (void)suggested;
  posp2p__uv_rbuf_get(rcv->ctx, buf);
}

static void deliver(posp2p_uv_peer *up, const struct sockaddr *from,
                    const uint8_t *data, size_t len) {
  posp2p_addr a;
  posp2p__uv_addr_from(&a, from);
  up->stats.datagrams_received++;
  int r = posp2p_peer_datagram_recv(up->engine, &a, data, len,
                                    uv_now(up->ctx->loop));
  if (r < 0)
    posp2p__uv_warn(up, r, "datagram: %s", posp2p_uv_strerror(r));
  posp2p__uv_rearm(up);
}

/* ---- Per-peer unicast socket -------------------------------------------------- */

static void udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  posp2p_uv_peer *up = h->data;
  (void)flags;
  if (nread > 0 && addr != NULL && up->state == POSP2P__UV_RUNNING)
    deliver(up, addr, (const uint8_t *)buf->base, (size_t)nread);
  else if (nread < 0)
    posp2p__uv_warn(up, POSP2P_UV_CODE((int)nread), "udp receive: %s",
                    uv_strerror((int)nread));
  posp2p__uv_release_buf(up->ctx, buf);
}

/* ---- Shared broadcast receivers ------------------------------------------------ */

static void rcv_close_cb(uv_handle_t *h) {
  posp2p__uv_rcv *rcv = h->data;
  rcv->ctx->nrcv_closing--;
  POSP2P__UV_FREE(rcv->peers);
  POSP2P__UV_FREE(rcv);
}

static void rcv_close(posp2p__uv_rcv *rcv) {
  posp2p_uv_ctx *ctx = rcv->ctx;
  if (rcv->closing) return;
  rcv->closing = true;
  for (posp2p__uv_rcv **pp = &ctx->rcvs; *pp; pp = &(*pp)->next) {
    if (*pp == rcv) {
      *pp = rcv->next;
      break;
    }
  }
  ctx->nrcv--;
  ctx->nrcv_closing++;
  uv_close((uv_handle_t *)&rcv->udp, rcv_close_cb);
}

static void rcv_compact(posp2p__uv_rcv *rcv) {
  size_t j = 0;
  for (size_t i = 0; i < rcv->npeers; i++) {
    posp2p_uv_peer *up = rcv->peers[i];
    if (up == NULL) continue;
    up->rcv_index = j;
    rcv->peers[j++] = up;
  }
  rcv->npeers = j;
  rcv->compact = false;
}

static void rcv_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  posp2p__uv_rcv *rcv = h->data;
  posp2p_uv_ctx *ctx = rcv->ctx;
  (void)flags;
  if (nread > 0 && addr != NULL) {
    /* Peers may join or leave from inside an engine callback: joins append
     * beyond n, leaves clear their slot; both are settled afterwards. */
    rcv->dispatching = true;
    size_t n = rcv->npeers;
    for (size_t i = 0; i < n; i++) {
      posp2p_uv_peer *up = rcv->peers[i];
      if (up != NULL && up->state == POSP2P__UV_RUNNING)
        deliver(up, addr, (const uint8_t *)buf->base, (size_t)nread);
    }
    rcv->dispatching = false;
    if (rcv->compact) rcv_compact(rcv);
    if (rcv->npeers == 0) rcv_close(rcv);
  }
  posp2p__uv_release_buf(ctx, buf);
}

static int rcv_join(posp2p_uv_peer *up, posp2p_uv_error *err) {
  posp2p_uv_ctx *ctx = up->ctx;
  posp2p__uv_rcv *rcv = ctx->rcvs;
  while (rcv != NULL &&
         !(rcv->ip == up->broadcast_ip && rcv->port == up->disc_port &&
           rcv->netns_key == up->opts.netns_key))
    rcv = rcv->next;
  char a[22];
  posp2p_addr ba = {up->broadcast_ip, up->disc_port};
  posp2p_uv_addr_format(&ba, a);
  if (rcv == NULL) {
    rcv = POSP2P__UV_CALLOC(sizeof(*rcv));
    if (rcv == NULL)
      return posp2p__uv_err_set(err, POSP2P_ERR_NOMEM, "out of memory");
    int r = uv_udp_init(ctx->loop, &rcv->udp);
    if (r < 0) {
      POSP2P__UV_FREE(rcv);
      return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "udp %s: %s", a,
                                uv_strerror(r));
    }
    rcv->udp.data = rcv;
    rcv->ctx = ctx;
    rcv->ip = up->broadcast_ip;
    rcv->port = up->disc_port;
    rcv->netns_key = up->opts.netns_key;
    rcv->next = ctx->rcvs;
    ctx->rcvs = rcv;
    ctx->nrcv++;
    struct sockaddr_in sa;
    posp2p__uv_sockaddr(&sa, rcv->ip, rcv->port);
    r = uv_udp_bind(&rcv->udp, (const struct sockaddr *)&sa, UV_UDP_REUSEADDR);
    if (r == 0) r = uv_udp_set_broadcast(&rcv->udp, 1);
    if (r == 0) {
      /* One socket takes the broadcasts of every peer in the process: give
       * it room for bursts (the kernel caps this at net.core.rmem_max). */
      int size = POSP2P__UV_RCV_BUFSIZE;
      (void)uv_recv_buffer_size((uv_handle_t *)&rcv->udp, &size);
    }
    if (r == 0) r = uv_udp_recv_start(&rcv->udp, rcv_alloc_cb, rcv_recv_cb);
    if (r < 0) {
      rcv_close(rcv);
      return posp2p__uv_err_set(err, POSP2P_UV_CODE(r),
                                "bind udp broadcast receiver %s: %s", a,
                                uv_strerror(r));
    }
  }
  if (rcv->npeers == rcv->cap) {
    size_t ncap = rcv->cap ? rcv->cap * 2 : 4;
    posp2p_uv_peer **np = POSP2P__UV_MALLOC(ncap * sizeof(*np));
    if (np == NULL) {
      if (rcv->npeers == 0) rcv_close(rcv);
      return posp2p__uv_err_set(err, POSP2P_ERR_NOMEM, "out of memory");
    }
    if (rcv->npeers) memcpy(np, rcv->peers, rcv->npeers * sizeof(*np));
    POSP2P__UV_FREE(rcv->peers);
    rcv->peers = np;
    rcv->cap = ncap;
  }
  up->rcv = rcv;
  up->rcv_index = rcv->npeers;
  rcv->peers[rcv->npeers++] = up;
  return 0;
}

void posp2p__uv_rcv_leave(posp2p_uv_peer *up) {
  posp2p__uv_rcv *rcv = up->rcv;
  if (rcv == NULL) return;
  up->rcv = NULL;
  if (rcv->dispatching) {
    rcv->peers[up->rcv_index] = NULL;
    rcv->compact = true;
    return; /* rcv_recv_cb settles the array and closes if empty */
  }
  posp2p_uv_peer *last = rcv->peers[rcv->npeers - 1];
  rcv->peers[up->rcv_index] = last;
  last->rcv_index = up->rcv_index;
  rcv->npeers--;
  if (rcv->npeers == 0) rcv_close(rcv);
}

/* ---- Opening, starting, sending ------------------------------------------------ */

int posp2p__uv_udp_open(posp2p_uv_peer *up, posp2p_uv_error *err) {
  char a[22];
  posp2p_addr want = {up->opts.bind_ip, up->disc_port};
  posp2p_uv_addr_format(&want, a);
  int r = uv_udp_init(up->ctx->loop, &up->udp);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "udp %s: %s", a,
                              uv_strerror(r));
  up->udp.data = up;
  up->udp_open = true;
  up->live++;
  bool any = up->opts.bind_ip == 0;
  unsigned flags = (any || up->opts.udp_reuseaddr) ? UV_UDP_REUSEADDR : 0;
  struct sockaddr_in sa;
  posp2p__uv_sockaddr(&sa, up->opts.bind_ip, up->disc_port);
  r = uv_udp_bind(&up->udp, (const struct sockaddr *)&sa, flags);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "bind udp %s: %s", a,
                              uv_strerror(r));
  r = uv_udp_set_broadcast(&up->udp, 1);
  if (r < 0)
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r),
                              "udp %s: SO_BROADCAST: %s", a, uv_strerror(r));
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  if (uv_udp_getsockname(&up->udp, (struct sockaddr *)&ss, &len) == 0)
    posp2p__uv_addr_from(&up->udp_addr, (struct sockaddr *)&ss);
  if (!any) return rcv_join(up, err);
  return 0;
}

int posp2p__uv_udp_start(posp2p_uv_peer *up, posp2p_uv_error *err) {
  int r = uv_udp_recv_start(&up->udp, udp_alloc_cb, udp_recv_cb);
  if (r < 0) {
    char a[22];
    posp2p_uv_addr_format(&up->udp_addr, a);
    return posp2p__uv_err_set(err, POSP2P_UV_CODE(r), "udp %s: receive: %s",
                              a, uv_strerror(r));
  }
  return 0;
}

typedef struct {
  uv_udp_send_t req;
  posp2p_uv_peer *up;
  size_t len;
  uint8_t data[];
} queued_datagram;

static void sent_cb(uv_udp_send_t *req, int status) {
  queued_datagram *q = req->data;
  if (status < 0 && status != UV_ECANCELED) q->up->stats.datagrams_dropped++;
  POSP2P__UV_FREE(q);
}

void posp2p__uv_send_datagram(posp2p_peer *p, const posp2p_addr *to,
                              const uint8_t *data, size_t len, void *ud) {
  posp2p_uv_peer *up = ud;
  (void)p;
  if (!up->udp_open || up->state == POSP2P__UV_CLOSING) {
    up->stats.datagrams_dropped++;
    return;
  }
  if (!up->opts.allow_lan && !posp2p_uv_ip_is_loopback(to->ip)) {
    up->stats.datagrams_dropped++;
    if (!up->lan_warned) {
      char a[22];
      posp2p_uv_addr_format(to, a);
      up->lan_warned = true;
      posp2p__uv_warn(up, POSP2P_ERR_CONFIG,
                      "datagram to %s refused: outside 127.0.0.0/8 and LAN "
                      "traffic not allowed (further refusals are counted)",
                      a);
    }
    return;
  }
  struct sockaddr_in sa;
  posp2p__uv_sockaddr(&sa, to->ip, to->port);
  uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
  int r = uv_udp_try_send(&up->udp, &b, 1, (const struct sockaddr *)&sa);
  if (r >= 0) {
    up->stats.datagrams_sent++;
    return;
  }
  if (r == UV_EAGAIN || r == UV_ENOBUFS) {
    /* The socket is busy: copy (data is only valid during this call). */
    queued_datagram *q = POSP2P__UV_MALLOC(sizeof(*q) + len);
    if (q != NULL) {
      memcpy(q->data, data, len);
      q->up = up;
      q->len = len;
      q->req.data = q;
      b = uv_buf_init((char *)q->data, (unsigned)len);
      r = uv_udp_send(&q->req, &up->udp, &b, 1, (const struct sockaddr *)&sa,
                      sent_cb);
      if (r == 0) {
        up->stats.datagrams_sent++;
        return;
      }
      POSP2P__UV_FREE(q);
    } else {
      r = UV_ENOMEM;
    }
  }
  up->stats.datagrams_dropped++;
  char a[22];
  posp2p_uv_addr_format(to, a);
  posp2p__uv_warn(up, POSP2P_UV_CODE(r), "datagram to %s: %s", a,
                  uv_strerror(r));
}
