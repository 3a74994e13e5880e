/* testnet: see testnet.h. Deliberately simple and slow: clarity first. */
#include "testnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posp2p/codec.h"

typedef struct tn_chunk {
  struct tn_chunk *next;
  uint64_t release;
  size_t len, off;
  uint8_t data[];
} tn_chunk;

typedef struct {
  tn_chunk *head, *tail;
  uint64_t last_release;
  bool tap_started, tap_v2;
  size_t preface_left;
  posp2p_framer fr;
  bool fr_init;
} tn_pipe;

struct tn_link {
  tn_node *n[2];          /* side 0 connects, side 1 accepts; n[0] NULL = raw */
  posp2p_conn_id c[2];
  bool connecting;
  bool close_req[2];      /* engine on side i asked to close */
  bool gone[2];           /* side i is closed (conn_closed delivered / raw EOF) */
  bool shut[2];           /* side i finished sending but still reads (half-close) */
  bool eof[2];            /* side i was told that the other side finished */
  tn_pipe pipe[2];        /* pipe[i] carries bytes from side i */
  bool raw;
  uint8_t *rawbuf;
  size_t rawlen;
};

typedef struct tn_dgram {
  struct tn_dgram *next;
  posp2p_addr from, to;
  size_t len;
  uint8_t data[];
} tn_dgram;

/* ---- Callbacks ---------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}

static void cb_rand(posp2p_peer *p, uint8_t *buf, size_t len, void *ud) {
  (void)p;
  tn_node *n = ud;
  for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(xorshift(&n->net->rng) >> 24);
}

static tn_node *node_by_ip(tn_net *net, uint32_t ip) {
  for (int i = 0; i < net->nnodes; i++)
    if (net->nodes[i]->addr.ip == ip) return net->nodes[i];
  return NULL;
}

static int cb_connect(posp2p_peer *p, posp2p_conn_id conn, const posp2p_addr *to, void *ud) {
  (void)p;
  tn_node *n = ud;
  tn_net *net = n->net;
  tn_node *t = node_by_ip(net, to->ip);
  if (t == NULL || t->addr.port != to->port || net->nlinks == TN_MAX_LINKS) return -111;
  tn_link *l = calloc(1, sizeof *l);
  l->n[0] = n;
  l->c[0] = conn;
  l->n[1] = t;
  l->connecting = true;
  net->links[net->nlinks++] = l;
  return 0;
}

static tn_link *link_of(tn_net *net, tn_node *n, posp2p_conn_id c, int *side) {
  for (int i = 0; i < net->nlinks; i++) {
    tn_link *l = net->links[i];
    for (int s = 0; s < 2; s++)
      if (l->n[s] == n && l->c[s] == c && !l->gone[s]) {
        *side = s;
        return l;
      }
  }
  return NULL;
}

static void cb_close(posp2p_peer *p, posp2p_conn_id conn, void *ud) {
  (void)p;
  tn_node *n = ud;
  int side;
  tn_link *l = link_of(n->net, n, conn, &side);
  if (l != NULL) l->close_req[side] = true;
}

static void cb_dgram(posp2p_peer *p, const posp2p_addr *to, const uint8_t *d, size_t len,
                     void *ud) {
  (void)p;
  tn_node *n = ud;
  posp2p_addr from = {n->addr.ip, (uint16_t)(40000 + n->index)};
  tn_inject_datagram(n->net, &from, to, d, len);
}

static void copy_id(char *dst, const char *src) {
  if (src == NULL) {
    dst[0] = '\0';
    return;
  }
  snprintf(dst, 40, "%s", src);
}

static void cb_event(posp2p_peer *p, const posp2p_peer_event *ev, void *ud) {
  (void)p;
  tn_node *n = ud;
  if (n->nev == n->cap) {
    n->cap = n->cap ? n->cap * 2 : 64;
    n->ev = realloc(n->ev, n->cap * sizeof *n->ev);
  }
  tn_event *r = &n->ev[n->nev++];
  memset(r, 0, sizeof *r);
  r->type = ev->type;
  r->conn = ev->conn;
  copy_id(r->device_id, ev->device_id ? ev->device_id : ev->device ? ev->device->id : NULL);
  copy_id(r->message_id, ev->message_id);
  r->code = ev->code;
  r->error_code = ev->error_code;
  snprintf(r->requirement, sizeof r->requirement, "%s", ev->requirement ? ev->requirement : "");
  snprintf(r->text, sizeof r->text, "%s", ev->text ? ev->text : "");
  r->attempts = ev->attempts;
  r->custody = ev->custody;
  r->closing = ev->closing;
  r->prev_status = ev->prev_status;
  if (ev->device) r->status = ev->device->status;
  r->at = n->net->now;
  const posp2p_envelope *e = ev->msg;
  if (e != NULL) {
    r->msg_type = (int)e->message_type;
    copy_id(r->from_id, e->from_device_id);
    if (ev->type != POSP2P_PEER_EV_ERROR_RECEIVED) copy_id(r->message_id, e->message_id);
    if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD)
      snprintf(r->order_id, sizeof r->order_id, "%s", e->order_forward->order_id);
    if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS) {
      snprintf(r->order_id, sizeof r->order_id, "%s", e->order_status->order_id);
      r->seq = e->order_status->sequence;
    }
    if (e->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ERROR) {
      r->err_code_in_msg = (int)e->error->code;
      copy_id(r->ref_id, e->error->ref_message_id);
    }
  }
}

/* ---- Setup -------------------------------------------------------------------- */

tn_net *tn_new(void) {
  tn_net *net = calloc(1, sizeof *net);
  net->now = 1000;
  net->rng = 0x9e3779b97f4a7c15ull;
  net->broadcast_ip = 0x7fffffffu;
  return net;
}

static void pipe_free(tn_pipe *pp) {
  tn_chunk *c = pp->head;
  while (c) {
    tn_chunk *n = c->next;
    free(c);
    c = n;
  }
  if (pp->fr_init) posp2p_framer_free(&pp->fr);
}

void tn_free(tn_net *net) {
  for (int i = 0; i < net->nnodes; i++) {
    posp2p_peer_del(net->nodes[i]->p);
    free(net->nodes[i]->ev);
    free(net->nodes[i]);
  }
  for (int i = 0; i < net->nlinks; i++) {
    pipe_free(&net->links[i]->pipe[0]);
    pipe_free(&net->links[i]->pipe[1]);
    free(net->links[i]->rawbuf);
    free(net->links[i]);
  }
  tn_dgram *d = net->dgrams;
  while (d) {
    tn_dgram *n = d->next;
    free(d);
    d = n;
  }
  free(net);
}

void tn_config(posp2p_peer_config *cfg, int type, const char *name) {
  posp2p_peer_config_init(cfg);
  cfg->device_type = type;
  cfg->device_name = name;
  cfg->announce_interval_ms = 0; /* tests that want announcements set it */
}

tn_node *tn_add(tn_net *net, const posp2p_peer_config *cfg_in) {
  tn_node *n = calloc(1, sizeof *n);
  n->net = net;
  n->index = net->nnodes;
  snprintf(n->name, sizeof n->name, "%s", cfg_in->device_name ? cfg_in->device_name : "node");
  posp2p_peer_config cfg = *cfg_in;
  char id[40];
  snprintf(id, sizeof id, "aaaaaaaa-0000-4000-8000-%012x", (unsigned)(n->index + 1));
  if (cfg.device_id == NULL) cfg.device_id = id;
  n->addr.ip = 0x7f000001u + (uint32_t)n->index;
  n->addr.port = cfg.listen_port;
  posp2p_peer_callbacks cb = {.rand = cb_rand,
                              .conn_connect = cb_connect,
                              .conn_close = cb_close,
                              .send_datagram = cb_dgram,
                              .on_event = cb_event};
  int rc = posp2p_peer_new(&n->p, &cfg, &cb, net->store, NULL, n);
  if (rc != 0) {
    fprintf(stderr, "posp2p_peer_new: %s\n", posp2p_peer_strerror(rc));
    free(n);
    return NULL;
  }
  net->nodes[net->nnodes++] = n;
  if (net->before_start) net->before_start(n);
  posp2p_peer_start(n->p, net->now);
  tn_pump(net);
  return n;
}

tn_node *tn_add_type(tn_net *net, int type, const char *name) {
  posp2p_peer_config cfg;
  tn_config(&cfg, type, name);
  return tn_add(net, &cfg);
}

posp2p_conn_id tn_connect(tn_net *net, tn_node *from, tn_node *to, posp2p_peer_wire wire) {
  posp2p_conn_id id = 0;
  posp2p_peer_connect(from->p, &to->addr, wire, NULL, net->now, &id);
  tn_pump(net);
  return id;
}

/* ---- Byte movement -------------------------------------------------------------- */

static void pipe_push(tn_pipe *pp, const uint8_t *d, size_t n, uint64_t release) {
  if (n == 0) return;
  if (release < pp->last_release) release = pp->last_release; /* TCP keeps order */
  pp->last_release = release;
  tn_chunk *c = malloc(sizeof *c + n);
  c->next = NULL;
  c->release = release;
  c->len = n;
  c->off = 0;
  memcpy(c->data, d, n);
  if (pp->tail)
    pp->tail->next = c;
  else
    pp->head = c;
  pp->tail = c;
}

static void tap(tn_net *net, tn_link *l, int s, const uint8_t *d, size_t n) {
  tn_pipe *pp = &l->pipe[s];
  if (n == 0) return;
  /* The stream is always parsed (so that a hook installed later sees frame
   * boundaries); without a hook every frame is delivered. */
  if (!pp->tap_started) {
    pp->tap_started = true;
    pp->tap_v2 = d[0] == 0xFF;
    pp->preface_left = pp->tap_v2 ? POSP2P_PREFACE_LEN : 0;
    posp2p_framer_init(&pp->fr, 64u * 1024u * 1024u, NULL);
    pp->fr_init = true;
  }
  if (!pp->tap_v2) {
    pipe_push(pp, d, n, net->now);
    return;
  }
  if (pp->preface_left) {
    size_t k = n < pp->preface_left ? n : pp->preface_left;
    pipe_push(pp, d, k, net->now);
    pp->preface_left -= k;
    d += k;
    n -= k;
  }
  while (n > 0) {
    size_t used = 0;
    posp2p_frame fr;
    posp2p_error err;
    int rc = posp2p_framer_next(&pp->fr, d, n, &used, &fr, &err);
    d += used;
    n -= used;
    if (rc <= 0) {
      if (rc < 0) pipe_push(pp, d, n, net->now); /* garbage passes through */
      if (rc < 0) n = 0;
      break;
    }
    posp2p_envelope *e = NULL;
    if (posp2p_envelope_decode(fr.data, fr.len, NULL, &e, &err) != 0) e = NULL;
    uint64_t delay = 0;
    tn_action a = net->hook ? net->hook(net, l->n[s], l->n[1 - s], e, &delay, net->hook_ud)
                            : TN_DELIVER;
    if (e) posp2p_envelope_free(e, NULL);
    uint8_t hdr[5];
    size_t hl = posp2p_varint_encode((uint32_t)fr.len, hdr);
    uint8_t *buf = malloc(hl + fr.len);
    memcpy(buf, hdr, hl);
    memcpy(buf + hl, fr.data, fr.len);
    if (a == TN_DELIVER || a == TN_DUPLICATE) pipe_push(pp, buf, hl + fr.len, net->now);
    if (a == TN_DUPLICATE) pipe_push(pp, buf, hl + fr.len, net->now);
    if (a == TN_DELAY) pipe_push(pp, buf, hl + fr.len, net->now + delay);
    free(buf);
  }
}

static bool pull(tn_net *net, tn_link *l, int s) {
  tn_node *n = l->n[s];
  if (n == NULL || l->gone[s] || l->connecting) return false;
  bool moved = false;
  for (;;) {
    posp2p_iov iov[8];
    size_t niov = 0, total = 0;
    if (posp2p_peer_conn_pending(n->p, l->c[s], iov, 8, &niov, &total) != 0 || niov == 0)
      break;
    size_t sum = 0;
    for (size_t i = 0; i < niov; i++) sum += iov[i].len;
    uint8_t *buf = malloc(sum);
    size_t o = 0;
    for (size_t i = 0; i < niov; i++) {
      memcpy(buf + o, iov[i].base, iov[i].len);
      o += iov[i].len;
    }
    if (net->pause_links) {
      free(buf);
      break;
    }
    tap(net, l, s, buf, sum);
    free(buf);
    posp2p_peer_conn_consumed(n->p, l->c[s], sum, net->now);
    moved = true;
  }
  return moved;
}

static bool deliver(tn_net *net, tn_link *l, int s) {
  tn_pipe *pp = &l->pipe[s];
  int r = 1 - s;
  bool moved = false;
  while (pp->head != NULL && pp->head->release <= net->now && !net->pause_links) {
    tn_chunk *c = pp->head;
    if (l->gone[r]) {
      /* Receiver is gone: bytes are lost. */
      c->off = c->len;
    } else {
      size_t k = c->len - c->off;
      if (net->chunk && k > net->chunk) k = net->chunk;
      if (l->n[r] == NULL) {
        l->rawbuf = realloc(l->rawbuf, l->rawlen + k);
        memcpy(l->rawbuf + l->rawlen, c->data + c->off, k);
        l->rawlen += k;
      } else {
        posp2p_peer_conn_recv(l->n[r]->p, l->c[r], c->data + c->off, k, net->now);
      }
      c->off += k;
    }
    moved = true;
    if (c->off == c->len) {
      pp->head = c->next;
      if (pp->head == NULL) pp->tail = NULL;
      free(c);
    }
  }
  return moved;
}

static bool closes(tn_net *net, tn_link *l) {
  bool moved = false;
  for (int s = 0; s < 2; s++) {
    if (l->n[s] != NULL && l->close_req[s] && !l->gone[s]) {
      l->gone[s] = true;
      posp2p_peer_conn_closed(l->n[s]->p, l->c[s], 0, net->now);
      moved = true;
    }
  }
  for (int s = 0; s < 2; s++) {
    int r = 1 - s;
    if ((l->gone[s] || l->shut[s]) && l->pipe[s].head == NULL && !l->gone[r] && !l->eof[r]) {
      /* EOF reaches the other side after the bytes before it. An engine
       * hears it as the transport reports it (posp2p_peer_conn_eof): it may
       * still write, and asks to close when done. A raw end that sees the
       * engine's side close is closed too. */
      l->eof[r] = true;
      moved = true;
      if (l->n[r] != NULL) {
        if (posp2p_peer_conn_eof(l->n[r]->p, l->c[r], net->now) != 0) {
          l->gone[r] = true;
          posp2p_peer_conn_closed(l->n[r]->p, l->c[r], 0, net->now);
        }
      } else if (l->gone[s]) {
        l->gone[r] = true;
      }
    }
  }
  return moved;
}

void tn_pump(tn_net *net) {
  for (int guard = 0; guard < 100000; guard++) {
    bool moved = false;
    for (int i = 0; i < net->nlinks; i++) {
      tn_link *l = net->links[i];
      if (l->connecting) {
        l->connecting = false;
        posp2p_addr from = {l->n[0]->addr.ip, (uint16_t)(50000 + i)};
        if (l->gone[0] ||
            posp2p_peer_conn_accept(l->n[1]->p, &from, net->now, &l->c[1]) != 0) {
          l->gone[1] = true;
          if (!l->gone[0]) {
            l->gone[0] = true;
            posp2p_peer_conn_closed(l->n[0]->p, l->c[0], -111, net->now);
          }
        } else {
          posp2p_peer_conn_connected(l->n[0]->p, l->c[0], net->now);
        }
        moved = true;
      }
      for (int s = 0; s < 2; s++) moved |= pull(net, l, s);
      for (int s = 0; s < 2; s++) moved |= deliver(net, l, s);
      moved |= closes(net, l);
    }
    while (net->dgrams != NULL) {
      tn_dgram *d = net->dgrams;
      net->dgrams = d->next;
      if (net->dgrams == NULL) net->dgrams_tail = NULL;
      for (int i = 0; i < net->nnodes; i++) {
        tn_node *n = net->nodes[i];
        if (d->to.ip == net->broadcast_ip || d->to.ip == n->addr.ip) {
          posp2p_peer_datagram_recv(n->p, &d->from, d->data, d->len, net->now);
          net->datagrams_delivered++;
        }
      }
      free(d);
      moved = true;
    }
    if (!moved) return;
  }
  fprintf(stderr, "tn_pump: no quiescence\n");
}

static uint64_t next_time(tn_net *net) {
  uint64_t t = UINT64_MAX;
  for (int i = 0; i < net->nnodes; i++) {
    uint64_t d = posp2p_peer_next_deadline(net->nodes[i]->p, net->now);
    if (d < t) t = d;
  }
  for (int i = 0; i < net->nlinks; i++)
    for (int s = 0; s < 2; s++)
      if (net->links[i]->pipe[s].head && net->links[i]->pipe[s].head->release < t)
        t = net->links[i]->pipe[s].head->release;
  return t;
}

void tn_run_until(tn_net *net, uint64_t t) {
  tn_pump(net);
  for (int guard = 0; guard < 10000000; guard++) {
    uint64_t nt = next_time(net);
    if (nt > t) break;
    if (nt > net->now) net->now = nt;
    for (int i = 0; i < net->nnodes; i++) posp2p_peer_tick(net->nodes[i]->p, net->now);
    tn_pump(net);
  }
  if (net->now < t) net->now = t;
  for (int i = 0; i < net->nnodes; i++) posp2p_peer_tick(net->nodes[i]->p, net->now);
  tn_pump(net);
}

void tn_run_for(tn_net *net, uint64_t ms) { tn_run_until(net, net->now + ms); }

void tn_inject_datagram(tn_net *net, const posp2p_addr *from, const posp2p_addr *to,
                        const void *d, size_t n) {
  tn_dgram *g = malloc(sizeof *g + n);
  g->next = NULL;
  g->from = *from;
  g->to = *to;
  g->len = n;
  memcpy(g->data, d, n);
  if (net->dgrams_tail)
    net->dgrams_tail->next = g;
  else
    net->dgrams = g;
  net->dgrams_tail = g;
}

/* ---- Raw remotes ------------------------------------------------------------------ */

tn_link *tn_raw_connect_from(tn_net *net, tn_node *to, uint32_t from_ip) {
  tn_link *l = calloc(1, sizeof *l);
  l->raw = true;
  l->n[1] = to;
  posp2p_addr from = {from_ip, (uint16_t)(50000 + net->nlinks)};
  posp2p_peer_conn_accept(to->p, &from, net->now, &l->c[1]);
  net->links[net->nlinks++] = l;
  return l;
}

tn_link *tn_raw_connect(tn_net *net, tn_node *to) {
  return tn_raw_connect_from(net, to, 0x7f000064u);
}

void tn_raw_send(tn_net *net, tn_link *l, const void *d, size_t n) {
  pipe_push(&l->pipe[0], d, n, net->now);
  tn_pump(net);
}

uint8_t *tn_raw_take(tn_net *net, tn_link *l, size_t *n) {
  tn_pump(net);
  uint8_t *b = l->rawbuf;
  *n = l->rawlen;
  l->rawbuf = NULL;
  l->rawlen = 0;
  if (b == NULL) b = calloc(1, 1);
  return b;
}

bool tn_raw_closed(const tn_link *l) { return l->gone[1]; }
posp2p_conn_id tn_raw_conn(const tn_link *l) { return l->c[1]; }

void tn_raw_close(tn_net *net, tn_link *l) {
  l->gone[0] = true;
  tn_pump(net);
}

void tn_raw_shutdown(tn_net *net, tn_link *l) {
  l->shut[0] = true;
  tn_pump(net);
}

tn_link *tn_link_between(tn_net *net, tn_node *a, tn_node *b) {
  for (int i = net->nlinks - 1; i >= 0; i--) {
    tn_link *l = net->links[i];
    if ((l->n[0] == a && l->n[1] == b) || (l->n[0] == b && l->n[1] == a)) return l;
  }
  return NULL;
}

/* ---- Queries ------------------------------------------------------------------------ */

size_t tn_count(const tn_node *n, posp2p_peer_event_type t) {
  size_t k = 0;
  for (size_t i = 0; i < n->nev; i++)
    if (n->ev[i].type == t) k++;
  return k;
}

size_t tn_count_msg(const tn_node *n, int msg_type) {
  size_t k = 0;
  for (size_t i = 0; i < n->nev; i++)
    if (n->ev[i].type == POSP2P_PEER_EV_MESSAGE && n->ev[i].msg_type == msg_type) k++;
  return k;
}

const tn_event *tn_find(const tn_node *n, posp2p_peer_event_type t, size_t nth) {
  for (size_t i = 0; i < n->nev; i++)
    if (n->ev[i].type == t && nth-- == 0) return &n->ev[i];
  return NULL;
}

const tn_event *tn_last(const tn_node *n, posp2p_peer_event_type t) {
  for (size_t i = n->nev; i-- > 0;)
    if (n->ev[i].type == t) return &n->ev[i];
  return NULL;
}

void tn_clear(tn_node *n) { n->nev = 0; }

void tn_dump(const tn_node *n) {
  for (size_t i = 0; i < n->nev; i++) {
    const tn_event *e = &n->ev[i];
    fprintf(stderr, "  [%s @%llu] %s conn=%llu dev=%s mid=%s code=%d ec=%d req=%s %s\n",
            n->name, (unsigned long long)e->at, posp2p_peer_event_name(e->type),
            (unsigned long long)e->conn, e->device_id, e->message_id, e->code, e->error_code,
            e->requirement, e->text);
  }
}

/* ---- Application helpers ------------------------------------------------------------- */

int tn_send_order(tn_node *n, const char *to_id, int to_type, const char *order_id,
                  char mid_out[40]) {
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD;
  if (to_id != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = (char *)to_id;
  } else if (to_type > 0) {
    e.opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    e.to_device_type = (Posp2p__V2__DeviceType)to_type;
  }
  Posp2p__V2__OrderForward of;
  posp2p__v2__order_forward__init(&of);
  Posp2p__V2__OrderItem it;
  posp2p__v2__order_item__init(&it);
  Posp2p__V2__OrderItem *items[1] = {&it};
  it.product_id = "p-1";
  it.product_name = "Coffee";
  it.price_minor = 350;
  it.quantity = 2;
  of.order_id = (char *)order_id;
  of.n_items = 1;
  of.items = items;
  of.subtotal_minor = 700;
  of.total_minor = 700;
  of.currency_exponent = 2;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
  e.order_forward = &of;
  char mid[40];
  int rc = posp2p_peer_send(n->p, &e, n->net->now, mid);
  if (mid_out) memcpy(mid_out, mid, POSP2P_UUID_LEN + 1);
  return rc;
}

int tn_send_status(tn_node *n, const char *to_id, const char *order_id, uint64_t seq,
                   char mid_out[40]) {
  posp2p_envelope e;
  posp2p_envelope_init(&e);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_STATUS;
  if (to_id != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = (char *)to_id;
  }
  Posp2p__V2__OrderStatus st;
  posp2p__v2__order_status__init(&st);
  st.order_id = (char *)order_id;
  st.new_status = POSP2P__V2__ORDER_STATUS_CODE__ORDER_STATUS_PREPARING;
  st.sequence = seq;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS;
  e.order_status = &st;
  char mid[40];
  int rc = posp2p_peer_send(n->p, &e, n->net->now, mid);
  if (mid_out) memcpy(mid_out, mid, POSP2P_UUID_LEN + 1);
  return rc;
}

/* ---- Byte-level helpers ---------------------------------------------------------------- */

size_t tn_decode_stream(const uint8_t *d, size_t n, bool preface, bool *preface_ok,
                        posp2p_envelope ***out) {
  *out = NULL;
  if (preface_ok) *preface_ok = false;
  if (preface) {
    uint8_t v;
    posp2p_error err;
    if (n < POSP2P_PREFACE_LEN || posp2p_preface_parse(d, POSP2P_PREFACE_LEN, &v, &err) != 1)
      return 0;
    if (preface_ok) *preface_ok = true;
    d += POSP2P_PREFACE_LEN;
    n -= POSP2P_PREFACE_LEN;
  }
  posp2p_framer f;
  posp2p_framer_init(&f, 64u * 1024u * 1024u, NULL);
  size_t cnt = 0;
  posp2p_envelope **v = NULL;
  while (n > 0) {
    size_t used = 0;
    posp2p_frame fr;
    posp2p_error err;
    int rc = posp2p_framer_next(&f, d, n, &used, &fr, &err);
    d += used;
    n -= used;
    if (rc != 1) break;
    posp2p_envelope *e = posp2p__v2__envelope__unpack(NULL, fr.len, fr.data);
    if (e == NULL) break;
    v = realloc(v, (cnt + 1) * sizeof *v);
    v[cnt++] = e;
  }
  posp2p_framer_free(&f);
  *out = v;
  return cnt;
}

void tn_free_envs(posp2p_envelope **v, size_t n) {
  for (size_t i = 0; i < n; i++) posp2p__v2__envelope__free_unpacked(v[i], NULL);
  free(v);
}

size_t tn_frame(const posp2p_envelope *e, uint8_t *out, size_t cap) {
  size_t n = posp2p__v2__envelope__get_packed_size(e);
  uint8_t hdr[5];
  size_t hl = posp2p_varint_encode((uint32_t)n, hdr);
  if (hl + n > cap) return 0;
  memcpy(out, hdr, hl);
  posp2p__v2__envelope__pack(e, out + hl);
  return hl + n;
}

static uint32_t tn_default_versions[1] = {2};

void tn_hello(posp2p_envelope *e, Posp2p__V2__Hello *h, const char *id, int type,
              uint32_t *versions, size_t nversions) {
  posp2p_envelope_init(e);
  posp2p__v2__hello__init(h);
  e->message_id = (char *)tn_uuid(1000);
  e->message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_HELLO;
  e->from_device_id = (char *)id;
  e->timestamp_ms = 1;
  h->device_id = (char *)id;
  h->device_name = "raw";
  h->device_type = (Posp2p__V2__DeviceType)type;
  h->listen_port = 0;
  h->n_supported_versions = versions ? nversions : 1;
  h->supported_versions = versions ? versions : tn_default_versions;
  h->heartbeat_interval_ms = 15000;
  h->device_timeout_ms = 60000;
  h->max_frame_size = 1048576;
  e->payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_HELLO;
  e->hello = h;
}

const char *tn_uuid(int n) {
  static char buf[8][40];
  static int k;
  char *b = buf[k++ & 7];
  snprintf(b, 40, "bbbbbbbb-0000-4000-8000-%012x", (unsigned)n);
  return b;
}
