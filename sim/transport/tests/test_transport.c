/* Transport tests: peers on distinct 127.0.0.x addresses in one process and
 * one loop, kernel-chosen TCP ports, a per-test free UDP port. Each test
 * runs the loop until its condition holds or a deadline passes (no fixed
 * sleeps), then shuts every peer down and checks that the loop is empty
 * (every handle closed, every byte freed: ASan's leak check does the rest). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "posp2p/uv.h"
#include "ptest.h"

#define MAX_EV 256

typedef struct {
  posp2p_uv_peer *up;
  char id[POSP2P_UUID_LEN + 1];
  int conn_ready, messages, acks, closed, shutdown_done, delivery_failed;
  int devices_main_seen;  /* DEVICE events naming a main POS */
  posp2p_addr main_addr;  /* address recorded for it */
  char last_msg_id[POSP2P_UUID_LEN + 1];
  char last_ack_id[POSP2P_UUID_LEN + 1];
  int warnings;
  int timeouts;           /* DEVICE_TIMEOUT events */
} tpeer;

static void on_event(posp2p_uv_peer *up, const posp2p_peer_event *ev, void *ud) {
  tpeer *t = ud;
  (void)up;
  switch (ev->type) {
  case POSP2P_PEER_EV_CONN_READY: t->conn_ready++; break;
  case POSP2P_PEER_EV_MESSAGE:
    t->messages++;
    snprintf(t->last_msg_id, sizeof(t->last_msg_id), "%s", ev->msg->message_id);
    break;
  case POSP2P_PEER_EV_ACK:
    t->acks++;
    snprintf(t->last_ack_id, sizeof(t->last_ack_id), "%s", ev->message_id);
    break;
  case POSP2P_PEER_EV_DELIVERY_FAILED: t->delivery_failed++; break;
  case POSP2P_PEER_EV_SHUTDOWN_DONE: t->shutdown_done++; break;
  case POSP2P_PEER_EV_DEVICE_TIMEOUT: t->timeouts++; break;
  case POSP2P_PEER_EV_DEVICE:
    if (ev->device != NULL &&
        ev->device->type == POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS &&
        strcmp(ev->device->id, t->id) != 0) {
      t->devices_main_seen++;
      t->main_addr = ev->device->addr;
    }
    break;
  default: break;
  }
}

static void on_closed(posp2p_uv_peer *up, void *ud) {
  tpeer *t = ud;
  (void)up;
  t->closed++;
  t->up = NULL;
}

static void on_warning(posp2p_uv_peer *up, int code, const char *text, void *ud) {
  tpeer *t = ud;
  (void)up;
  t->warnings++;
  fprintf(stderr, "  warning (%s): %s\n", posp2p_uv_err_name(code), text);
}

static const posp2p_uv_callbacks callbacks = {on_event, on_closed, on_warning};

/* A UDP port that is free on 127.0.0.1 right now. */
static uint16_t free_udp_port(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(0x7f000001);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    if (fd >= 0) close(fd);
    return 0;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

typedef struct {
  uv_loop_t loop;
  posp2p_uv_ctx *ctx;
  uint16_t udp_port;
} world;

static int world_init(world *w) {
  if (uv_loop_init(&w->loop) != 0) return -1;
  w->udp_port = free_udp_port();
  return posp2p_uv_ctx_new(&w->ctx, &w->loop);
}

static bool make_listen = true;
static uint32_t make_timeout_ms = 0; /* 0: the engine default */
static int peer_make(world *w, tpeer *t, const char *ip, int type,
                     const char *name, posp2p_uv_error *err) {
  memset(t, 0, sizeof(*t));
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_name = name;
  cfg.device_type = type;
  cfg.discovery_port = w->udp_port;
  cfg.announce_interval_ms = 0;
  cfg.ack_timeout_ms = 300;
  if (make_timeout_ms != 0) {
    cfg.device_timeout_ms = make_timeout_ms;
    cfg.heartbeat_interval_ms = make_timeout_ms / 3;
  }
  posp2p_uv_opts o;
  posp2p_uv_opts_init(&o);
  if (posp2p_uv_ip_parse(ip, &o.bind_ip) != 0) return -1;
  o.tcp_port = 0;
  o.tcp_listen = make_listen;
  int r = posp2p_uv_peer_new(&t->up, w->ctx, &cfg, NULL, &o, &callbacks, t, err);
  if (r != 0) return r;
  snprintf(t->id, sizeof(t->id), "%s",
           posp2p_peer_device_id(posp2p_uv_peer_engine(t->up)));
  return posp2p_uv_peer_start(t->up, err);
}

typedef int (*cond_fn)(void *arg);

/* Run the loop until cond(arg) holds or timeout_ms passes; returns 1 if
 * the condition held. A repeating 10 ms timer makes sure the loop wakes to
 * check even when nothing else happens. */
static void noop_timer(uv_timer_t *t) { (void)t; }
static void noop_close(uv_handle_t *h) { (void)h; }
static int run_until(world *w, cond_fn cond, void *arg, uint64_t timeout_ms) {
  uv_timer_t tick;
  uv_timer_init(&w->loop, &tick);
  uv_timer_start(&tick, noop_timer, 10, 10);
  uv_update_time(&w->loop);
  uint64_t deadline = uv_now(&w->loop) + timeout_ms;
  int ok = 0;
  while (!(ok = cond(arg)) && uv_now(&w->loop) < deadline)
    uv_run(&w->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, noop_close);
  uv_run(&w->loop, UV_RUN_NOWAIT);
  return ok;
}

typedef struct {
  tpeer **peers;
  int n;
} peer_list;

static int all_closed(void *arg) {
  peer_list *l = arg;
  for (int i = 0; i < l->n; i++)
    if (l->peers[i]->up != NULL) return 0;
  return 1;
}

/* Graceful shutdown of every peer, then the loop must drain completely. */
static void world_close(world *w, tpeer **peers, int n) {
  for (int i = 0; i < n; i++)
    if (peers[i]->up != NULL)
      PT_EQ_INT(posp2p_uv_peer_shutdown(peers[i]->up, "test over", 2000), 0);
  peer_list l = {peers, n};
  PT_CHECK(run_until(w, all_closed, &l, 5000));
  for (int i = 0; i < n; i++) PT_EQ_INT(peers[i]->closed, 1);
  uv_run(&w->loop, UV_RUN_DEFAULT); /* nothing may be left running */
  PT_EQ_INT(posp2p_uv_ctx_del(w->ctx), 0);
  PT_EQ_INT(uv_loop_close(&w->loop), 0);
}

static int both_ready(void *arg) {
  tpeer **p = arg;
  return p[0]->conn_ready >= 1 && p[1]->conn_ready >= 1;
}

static int connect_pair(world *w, tpeer *main_p, tpeer *tab) {
  posp2p_addr to = posp2p_uv_peer_tcp_addr(main_p->up);
  posp2p_conn_id conn = 0;
  int r = posp2p_uv_peer_connect(tab->up, &to, POSP2P_PEER_WIRE_V2, NULL, &conn);
  if (r != 0) {
    fprintf(stderr, "connect: %s\n", posp2p_uv_strerror(r));
    return 0;
  }
  tpeer *pair[2] = {main_p, tab};
  return run_until(w, both_ready, pair, 5000);
}

PTEST(handshake) {
  world w;
  tpeer m, t;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.2",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  PT_EQ_INT(peer_make(&w, &t, "127.0.0.3",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab", &err), 0);
  PT_CHECK(posp2p_uv_peer_tcp_addr(m.up).port != 0);
  PT_EQ_INT(posp2p_uv_peer_tcp_addr(m.up).ip, 0x7f000002);
  PT_CHECK(connect_pair(&w, &m, &t));
  /* The tablet connected FROM its own address. */
  const posp2p_peer_device *d =
      posp2p_peer_device_find(posp2p_uv_peer_engine(m.up), t.id);
  PT_CHECK(d != NULL);
  if (d) {
    PT_EQ_INT(d->status, POSP2P_DEV_CONNECTED);
    PT_EQ_INT(d->addr.ip, 0x7f000003);
  }
  tpeer *all[2] = {&m, &t};
  world_close(&w, all, 2);
  PT_EQ_INT(t.warnings + m.warnings, 0);
}

static int order_done(void *arg) {
  tpeer **p = arg;
  return p[0]->acks >= 1 && p[1]->messages >= 1;
}

PTEST(order_ack) {
  world w;
  tpeer m, t;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.2",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  PT_EQ_INT(peer_make(&w, &t, "127.0.0.3",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab", &err), 0);
  PT_CHECK(connect_pair(&w, &m, &t));

  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  Posp2p__V2__OrderItem item, *items[1] = {&item};
  posp2p_envelope_init(&e);
  posp2p__v2__order_forward__init(&of);
  posp2p__v2__order_item__init(&item);
  item.product_id = (char *)"p1";
  item.product_name = (char *)"Coffee";
  item.price_minor = 350;
  item.quantity = 2;
  of.order_id = (char *)"order-42";
  of.n_items = 1;
  of.items = items;
  of.subtotal_minor = 700;
  of.total_minor = 700;
  of.currency_exponent = 2;
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = t.id;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
  e.order_forward = &of;
  char mid[POSP2P_UUID_LEN + 1] = "";
  PT_EQ_INT(posp2p_uv_peer_send(m.up, &e, mid), 0);
  tpeer *pair[2] = {&m, &t};
  PT_CHECK(run_until(&w, order_done, pair, 5000));
  PT_EQ_STR(t.last_msg_id, mid);
  PT_EQ_STR(m.last_ack_id, mid);
  PT_EQ_INT(t.messages, 1);
  PT_EQ_INT(posp2p_peer_outbox_count(posp2p_uv_peer_engine(m.up)), 0);
  tpeer *all[2] = {&m, &t};
  world_close(&w, all, 2);
}

static int main_found(void *arg) { return ((tpeer *)arg)->devices_main_seen > 0; }

PTEST(discovery) {
  world w;
  tpeer m, t, k;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.2",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  PT_EQ_INT(peer_make(&w, &t, "127.0.0.3",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab", &err), 0);
  PT_EQ_INT(peer_make(&w, &k, "127.0.0.4",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS, "kds", &err), 0);
  /* Three peers, one shared broadcast receiver. */
  PT_EQ_INT(posp2p_uv_ctx_receiver_count(w.ctx), 1);
  PT_EQ_INT(posp2p_uv_peer_discover(t.up), 0);
  PT_CHECK(run_until(&w, main_found, &t, 5000));
  PT_EQ_INT(t.main_addr.ip, 0x7f000002);
  PT_EQ_INT(t.main_addr.port, posp2p_uv_peer_tcp_addr(m.up).port);
  const posp2p_peer_device *d =
      posp2p_peer_device_find(posp2p_uv_peer_engine(t.up), m.id);
  PT_CHECK(d != NULL);
  if (d) PT_EQ_STR(d->name, "main");
  /* The main POS answered the tablet's request (unicast reply). */
  PT_CHECK(posp2p_uv_peer_stats(m.up)->datagrams_sent >= 1);
  tpeer *all[3] = {&m, &t, &k};
  world_close(&w, all, 3);
}

PTEST(eaddrinuse) {
  world w;
  tpeer a, b;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &a, "127.0.0.5",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "a", &err), 0);
  uint16_t port = posp2p_uv_peer_tcp_addr(a.up).port;

  /* Same address and TCP port. */
  memset(&b, 0, sizeof(b));
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  cfg.discovery_port = free_udp_port();
  posp2p_uv_opts o;
  posp2p_uv_opts_init(&o);
  o.bind_ip = 0x7f000005;
  o.tcp_port = port;
  memset(&err, 0, sizeof(err));
  int r = posp2p_uv_peer_new(&b.up, w.ctx, &cfg, NULL, &o, &callbacks, &b, &err);
  PT_EQ_INT(r, POSP2P_UV_CODE(UV_EADDRINUSE));
  PT_EQ_INT(err.code, POSP2P_UV_CODE(UV_EADDRINUSE));
  PT_CHECK(b.up == NULL);
  char want[64];
  snprintf(want, sizeof(want), "bind tcp 127.0.0.5:%u", (unsigned)port);
  PT_CHECK(strstr(err.message, want) != NULL);
  PT_CHECK(strstr(err.message, "address already in use") != NULL);
  fprintf(stderr, "  message: %s\n", err.message);
  PT_EQ_STR(posp2p_uv_err_name(err.code), "EADDRINUSE");

  /* Same address and UDP port (a second device on one address would
   * silently steal the first one's unicast replies). */
  o.tcp_port = 0;
  cfg.discovery_port = w.udp_port;
  memset(&err, 0, sizeof(err));
  r = posp2p_uv_peer_new(&b.up, w.ctx, &cfg, NULL, &o, &callbacks, &b, &err);
  PT_EQ_INT(r, POSP2P_UV_CODE(UV_EADDRINUSE));
  snprintf(want, sizeof(want), "bind udp 127.0.0.5:%u", (unsigned)w.udp_port);
  PT_CHECK(strstr(err.message, want) != NULL);
  fprintf(stderr, "  message: %s\n", err.message);
  tpeer *all[1] = {&a};
  world_close(&w, all, 1);
}

PTEST(lan_refused) {
  world w;
  tpeer a;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  memset(&a, 0, sizeof(a));
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_KDS;
  cfg.discovery_port = w.udp_port;
  cfg.broadcast_ip = 0xffffffffu;
  posp2p_uv_opts o;
  posp2p_uv_opts_init(&o);
  o.bind_ip = 0x7f000006;
  o.tcp_port = 0;
  int r = posp2p_uv_peer_new(&a.up, w.ctx, &cfg, NULL, &o, &callbacks, &a, &err);
  PT_EQ_INT(r, POSP2P_ERR_CONFIG);
  PT_CHECK(strstr(err.message, "255.255.255.255") != NULL);
  fprintf(stderr, "  message: %s\n", err.message);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  PT_EQ_INT(posp2p_uv_ctx_del(w.ctx), 0);
  PT_EQ_INT(uv_loop_close(&w.loop), 0);
}

static int shut_done(void *arg) {
  tpeer **p = arg;
  return p[0]->closed && p[1]->closed;
}

/* Graceful shutdown of the main POS: GOODBYE reaches the tablet, which marks
 * it disconnected; both close cleanly. */
PTEST(shutdown) {
  world w;
  tpeer m, t;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.2",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  PT_EQ_INT(peer_make(&w, &t, "127.0.0.3",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab", &err), 0);
  PT_CHECK(connect_pair(&w, &m, &t));
  PT_EQ_INT(posp2p_uv_peer_shutdown(m.up, "bye", 2000), 0);
  PT_EQ_INT(posp2p_uv_peer_shutdown(m.up, "again", 2000), POSP2P_ERR_STATE);
  tpeer *one[2] = {&m, &m};
  PT_CHECK(run_until(&w, shut_done, one, 5000));
  PT_EQ_INT(m.shutdown_done, 1);
  posp2p_uv_peer_abort(t.up); /* and the other one without GOODBYE */
  tpeer *pair[2] = {&m, &t};
  PT_CHECK(run_until(&w, shut_done, pair, 5000));
  uv_run(&w.loop, UV_RUN_DEFAULT);
  PT_EQ_INT(posp2p_uv_ctx_del(w.ctx), 0);
  PT_EQ_INT(uv_loop_close(&w.loop), 0);
}

/* Many peers on one loop: one main POS and N tablets on distinct addresses,
 * all discover the main and connect to it. Reports the time taken. The
 * tablets do not listen (listen_port 0), so only the main POS answers the
 * N simultaneous requests (listening devices must all answer, DISC: N^2
 * responses, which measures the protocol rather than the transport). */
static int MANY = 200;
static tpeer *many;
static int many_ready(void *arg) {
  (void)arg;
  return many[0].conn_ready >= MANY;
}
static int many_found(void *arg) {
  (void)arg;
  for (int i = 1; i <= MANY; i++)
    if (many[i].devices_main_seen == 0) return 0;
  return 1;
}

/* POSP2P_TEST_MANY=N overrides the tablet count (for measurements). */
PTEST(many_peers) {
  world w;
  posp2p_uv_error err;
  const char *env = getenv("POSP2P_TEST_MANY");
  if (env != NULL && atoi(env) > 0 && atoi(env) < 60000) MANY = atoi(env);
  many = calloc((size_t)MANY + 1, sizeof(*many));
  tpeer **all = calloc((size_t)MANY + 1, sizeof(*all));
  PT_CHECK(many != NULL && all != NULL);
  if (many == NULL || all == NULL) return;
  PT_EQ_INT(world_init(&w), 0);
  uint64_t t0 = uv_hrtime();
  PT_EQ_INT(peer_make(&w, &many[0], "127.0.1.1",
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  make_listen = false;
  for (int i = 1; i <= MANY; i++) {
    char ip[32];
    /* 127.2.x.y: distinct source addresses spread the ephemeral ports. */
    snprintf(ip, sizeof(ip), "127.2.%d.%d", i / 250, i % 250 + 1);
    int r = peer_make(&w, &many[i], ip,
                      POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab",
                      &err);
    PT_EQ_INT(r, 0);
    if (r != 0) {
      fprintf(stderr, "  peer %d: %s\n", i, err.message);
      break;
    }
  }
  make_listen = true;
  PT_EQ_INT(posp2p_uv_ctx_receiver_count(w.ctx), 1);
  uint64_t tc = uv_hrtime();
  fprintf(stderr, "  creating %d peers: %.1f ms\n", MANY + 1, (double)(tc - t0) / 1e6);
  t0 = tc;
  for (int i = 1; i <= MANY; i++)
    if (many[i].up) PT_EQ_INT(posp2p_uv_peer_discover(many[i].up), 0);
  PT_CHECK(run_until(&w, many_found, NULL, 60000));
  uint64_t t1 = uv_hrtime();
  const posp2p_peer_stats *ms = posp2p_peer_stats_get(posp2p_uv_peer_engine(many[0].up));
  fprintf(stderr, "  main: datagrams in %llu out %llu rate-limited %llu\n",
          (unsigned long long)ms->datagrams_in, (unsigned long long)ms->datagrams_out,
          (unsigned long long)ms->disc_rate_limited);
  for (int i = 1; i <= MANY; i++) {
    posp2p_addr to = many[i].main_addr;
    posp2p_conn_id c;
    if (many[i].up)
      PT_EQ_INT(posp2p_uv_peer_connect(many[i].up, &to, POSP2P_PEER_WIRE_V2, NULL, &c), 0);
  }
  PT_CHECK(run_until(&w, many_ready, NULL, 60000));
  uint64_t t2 = uv_hrtime();
  size_t mem = 0;
  for (int i = 0; i <= MANY; i++)
    if (many[i].up) mem += posp2p_peer_memory(posp2p_uv_peer_engine(many[i].up));
  fprintf(stderr,
          "  %d tablets: discovery %.1f ms, connect+handshake %.1f ms, engine "
          "memory %zu bytes (%zu per peer)\n",
          MANY, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, mem,
          mem / (size_t)(MANY + 1));
  for (int i = 0; i <= MANY; i++) all[i] = &many[i];
  world_close(&w, all, MANY + 1);
  free(all);
  free(many);
}

/* A process that stalls (SIGSTOP, swap, a debugger) wakes with its device
 * timeout in the past and the peer's frames already in the socket buffer.
 * libuv runs timers before it polls, so a transport that ticked the engine
 * from the timer callback would declare the live peer dead (HB-6) before
 * reading what it sent. Here the main POS writes a message to the tablet
 * (uv_write writes at once on an idle stream, so the bytes are in the
 * tablet's socket), then the loop is blocked for three tablet timeouts:
 * that block is the fault being simulated, not a wait for readiness. */
static int got_message(void *arg) { return ((tpeer *)arg)->messages >= 1; }

PTEST(stall_reads_before_timeout) {
  world w;
  tpeer m, t;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.41", POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS, "main", &err), 0);
  make_timeout_ms = 300;
  PT_EQ_INT(peer_make(&w, &t, "127.0.0.42", POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET, "tab", &err), 0);
  make_timeout_ms = 0;
  PT_CHECK(connect_pair(&w, &m, &t));

  posp2p_envelope e;
  Posp2p__V2__OpaquePayload op;
  posp2p_envelope_init(&e);
  posp2p__v2__opaque_payload__init(&op);
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_PRODUCT_SYNC;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = t.id;
  op.json = (char *)"{\"menu\":1}";
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_OPAQUE;
  e.opaque = &op;
  PT_EQ_INT(posp2p_uv_peer_send(m.up, &e, NULL), 0);
  usleep(900 * 1000);
  PT_CHECK(run_until(&w, got_message, &t, 5000));
  PT_EQ_INT(t.timeouts, 0);
  PT_EQ_INT(t.conn_ready, 1);
  tpeer *all[2] = {&m, &t};
  world_close(&w, all, 2);
}

/* LEGACY-11, LEGACY-17: a legacy sender that writes its lines and then
 * half-closes (shutdown(SHUT_WR), as the reference does for one-message
 * connections) still reads every acknowledgement on the connection; then
 * the device closes it. The sender reads nothing until it has half-closed
 * and its receive buffer is tiny, so most acks are still queued (a write in
 * flight) when the EOF arrives: it must not make the transport drop them. */
#define HALF_CLOSE_LINES 300

typedef struct {
  int fd;
  tpeer *m;
  char *buf;
  size_t len, cap;
  bool eof;
} half_close_state;

static int acks_read_then_eof(void *arg) {
  half_close_state *h = arg;
  for (;;) {
    if (h->len + 4096 > h->cap) {
      h->cap = h->cap ? h->cap * 2 : 65536;
      h->buf = realloc(h->buf, h->cap + 1);
    }
    ssize_t n = recv(h->fd, h->buf + h->len, h->cap - h->len, 0);
    if (n > 0) {
      h->len += (size_t)n;
      continue;
    }
    if (n == 0) h->eof = true;
    break;
  }
  if (h->buf) h->buf[h->len] = '\0';
  return h->eof;
}

static size_t count_str(const char *hay, const char *needle) {
  size_t k = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) k++;
  return k;
}

PTEST(legacy_half_close_still_gets_every_ack) {
  world w;
  tpeer m;
  posp2p_uv_error err;
  PT_EQ_INT(world_init(&w), 0);
  PT_EQ_INT(peer_make(&w, &m, "127.0.0.51", POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS,
                      "main", &err), 0);
  posp2p_addr a = posp2p_uv_peer_tcp_addr(m.up);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  PT_CHECK(fd >= 0);
  int small = 2048;
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(a.ip);
  sa.sin_port = htons(a.port);
  /* The listener's backlog completes the connect without the loop. */
  PT_EQ_INT(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  PT_EQ_INT(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  char *all = malloc(HALF_CLOSE_LINES * 512);
  size_t total = 0;
  for (int i = 0; i < HALF_CLOSE_LINES; i++)
    total += (size_t)snprintf(
        all + total, 512,
        "{\"messageId\":\"c0a8f1d2-3b4e-4c5d-8e6f-%012d\",\"messageType\":\"orderStatus\","
        "\"fromDeviceId\":\"5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c\","
        "\"toDeviceId\":\"%s\",\"timestamp\":\"2026-02-22T10:15:30.123\","
        "\"payload\":{\"orderId\":\"T-%d\",\"newStatus\":\"ready\","
        "\"statusReason\":null,\"estimatedTime\":null},\"priority\":8,"
        "\"acknowledged\":null}\n",
        i, m.id, i);
  /* Write everything (the loop reads it meanwhile), then half-close. */
  size_t off = 0;
  uv_timer_t tick;
  uv_timer_init(&w.loop, &tick);
  uv_timer_start(&tick, noop_timer, 5, 5);
  uv_update_time(&w.loop);
  uint64_t deadline = uv_now(&w.loop) + 5000;
  while (off < total && uv_now(&w.loop) < deadline) {
    ssize_t n = send(fd, all + off, total - off, 0);
    if (n > 0) off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
    uv_run(&w.loop, UV_RUN_NOWAIT);
  }
  uv_close((uv_handle_t *)&tick, noop_close);
  PT_EQ_INT(off, total);
  PT_EQ_INT(shutdown(fd, SHUT_WR), 0);
  half_close_state h = {.fd = fd, .m = &m};
  PT_CHECK(run_until(&w, acks_read_then_eof, &h, 10000));
  PT_EQ_INT(m.messages, HALF_CLOSE_LINES);
  PT_EQ_INT(h.buf ? count_str(h.buf, "\"messageType\":\"acknowledgement\"") : 0,
            HALF_CLOSE_LINES);
  PT_CHECK(h.buf != NULL && strstr(h.buf, "c0a8f1d2-3b4e-4c5d-8e6f-000000000299") != NULL);
  PT_CHECK(h.eof); /* and the device closed its side */
  free(h.buf);
  free(all);
  close(fd);
  tpeer *peers[1] = {&m};
  world_close(&w, peers, 1);
  PT_EQ_INT(m.warnings, 0);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
