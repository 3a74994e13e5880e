/* Service API tests: several posp2p_service devices in one process, on one
 * caller-owned loop (a shared posp2p_uv_ctx), bound to distinct 127.0.0.x
 * addresses with kernel-chosen TCP ports and a per-test free UDP port.
 * Every wait runs the loop until a condition holds or a deadline passes
 * (posp2p_service_run); no fixed sleeps. Each test ends by stopping every
 * service and checking that the loop drains completely (ASan's leak check
 * does the rest). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "posp2p/service.h"
#include "posp2p/store.h"
#include "ptest.h"

#define MAX_NODES 4
#define WAIT_MS 10000u /* generous: other builds share the two cores */

typedef struct node {
  posp2p_service *s;
  posp2p_router *r;
  char id[POSP2P_UUID_LEN + 1];
  int msgs[64];              /* delivered messages per type */
  int all_msgs;              /* all-messages subscriber */
  char last_mid[POSP2P_UUID_LEN + 1];
  char last_from[POSP2P_UUID_LEN + 1];
  /* last ORDER_FORWARD */
  char order_id[64];
  int64_t total_minor, price_minor;
  uint32_t exponent;
  size_t n_items;
  int destination;
  bool has_tax, has_variant;
  char modifier[32];
  /* ORDER_STATUS sequence numbers and statuses, in arrival order */
  uint64_t seqs[8];
  int statuses[8];
  int nstatus;
  bool reason_present[8];
  /* last ORDER_CANCEL */
  char cancel_reason[64];
  bool cancel_refund;
  /* engine events */
  int acks, failed, relayed_seen;
  int stopped;
  int connect_code, connect_done;
  char connect_id[POSP2P_UUID_LEN + 1];
  int discover_done, discover_code;
  size_t discover_n;
  posp2p_peer_device discover_devs[8];
  char discover_names[8][32];
  uint64_t discover_t;
  int warnings;
} node;

typedef struct {
  uv_loop_t loop;
  posp2p_uv_ctx *ctx;
  uint16_t udp_port;
  node n[MAX_NODES];
  int count;
  uint32_t hb_ms, timeout_ms, ack_ms, retries;
} world;

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

/* ---- callbacks ------------------------------------------------------------ */

static void on_any_message(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  node *n = ud;
  (void)s;
  n->all_msgs++;
  if ((int)m->message_type >= 0 && (int)m->message_type < 64) n->msgs[m->message_type]++;
  snprintf(n->last_mid, sizeof(n->last_mid), "%s", m->message_id);
  snprintf(n->last_from, sizeof(n->last_from), "%s", m->from_device_id);
  if (m->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD) {
    const Posp2p__V2__OrderForward *of = m->order_forward;
    snprintf(n->order_id, sizeof(n->order_id), "%s", of->order_id);
    n->total_minor = of->total_minor;
    n->exponent = of->currency_exponent;
    n->n_items = of->n_items;
    n->destination = (int)of->destination;
    n->has_tax = of->opt_tax_minor_case != 0;
    if (of->n_items > 0) {
      n->price_minor = of->items[0]->price_minor;
      n->has_variant = of->items[0]->opt_variant_case != 0;
      if (of->items[0]->n_modifiers > 0)
        snprintf(n->modifier, sizeof(n->modifier), "%s", of->items[0]->modifiers[0]);
    }
  } else if (m->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_STATUS) {
    if (n->nstatus < 8) {
      n->seqs[n->nstatus] = m->order_status->sequence;
      n->statuses[n->nstatus] = (int)m->order_status->new_status;
      n->reason_present[n->nstatus] = m->order_status->opt_status_reason_case != 0;
      n->nstatus++;
    }
  } else if (m->payload_case == POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_CANCEL) {
    snprintf(n->cancel_reason, sizeof(n->cancel_reason), "%s", m->order_cancel->reason);
    n->cancel_refund = m->order_cancel->refund;
  }
}

static void on_event(posp2p_service *s, const posp2p_peer_event *ev, void *ud) {
  node *n = ud;
  (void)s;
  if (ev->type == POSP2P_PEER_EV_ACK) n->acks++;
  if (ev->type == POSP2P_PEER_EV_DELIVERY_FAILED) n->failed++;
}

static void on_stopped(posp2p_service *s, void *ud) {
  node *n = ud;
  (void)s;
  n->stopped++;
}

static void on_warning(posp2p_service *s, int code, const char *text, void *ud) {
  node *n = ud;
  (void)s;
  n->warnings++;
  fprintf(stderr, "  warning (%s): %s\n", posp2p_uv_err_name(code), text);
}

static void on_connect(posp2p_service *s, int code, const char *id, void *ud) {
  node *n = ud;
  (void)s;
  n->connect_done++;
  n->connect_code = code;
  snprintf(n->connect_id, sizeof(n->connect_id), "%s", id);
}

static void on_discover(posp2p_service *s, int code, const posp2p_peer_device *d,
                        size_t count, void *ud) {
  node *n = ud;
  n->discover_done++;
  n->discover_code = code;
  n->discover_n = count;
  n->discover_t = uv_now(posp2p_service_loop(s));
  for (size_t i = 0; i < count && i < 8; i++) {
    n->discover_devs[i] = d[i];
    snprintf(n->discover_names[i], sizeof(n->discover_names[i]), "%s", d[i].name);
    n->discover_devs[i].name = n->discover_names[i];
  }
}

/* ---- world ------------------------------------------------------------------ */

static int world_init(world *w) {
  memset(w, 0, sizeof(*w));
  w->hb_ms = 200;
  w->timeout_ms = 2000;
  w->ack_ms = 300;
  w->retries = 5;
  if (uv_loop_init(&w->loop) != 0) return -1;
  w->udp_port = free_udp_port();
  return posp2p_uv_ctx_new(&w->ctx, &w->loop);
}

/* Add a started device at ip. */
static node *add(world *w, const char *ip, int type, const char *name) {
  node *n = &w->n[w->count++];
  memset(n, 0, sizeof(*n));
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.heartbeat_interval_ms = w->hb_ms;
  cfg.device_timeout_ms = w->timeout_ms;
  cfg.ack_timeout_ms = w->ack_ms;
  cfg.ack_backoff_cap_ms = w->ack_ms * 4;
  cfg.max_retries = w->retries;
  cfg.announce_interval_ms = 0;
  posp2p_service_opts o;
  posp2p_service_opts_init(&o);
  o.bind_ip = ip;
  o.discovery_port = w->udp_port;
  o.engine = &cfg;
  o.ctx = w->ctx;
  o.on_stopped = on_stopped;
  o.on_warning = on_warning;
  o.user_data = n;
  posp2p_uv_error err;
  memset(&err, 0, sizeof(err));
  int r = posp2p_service_new(&n->s, name, type, 0, &o, &err);
  PT_EQ_INT(r, 0);
  if (r != 0) {
    fprintf(stderr, "  new %s: %s\n", name, err.message);
    return n;
  }
  snprintf(n->id, sizeof(n->id), "%s", posp2p_service_device_id(n->s));
  PT_EQ_INT(posp2p_service_subscribe_messages(n->s, on_any_message, n, NULL), 0);
  PT_EQ_INT(posp2p_service_subscribe_events(n->s, on_event, n, NULL), 0);
  PT_EQ_INT(posp2p_router_new(&n->r, n->s), 0);
  r = posp2p_service_start(n->s, &err);
  PT_EQ_INT(r, 0);
  if (r != 0) fprintf(stderr, "  start %s: %s\n", name, err.message);
  return n;
}

typedef bool (*cond_fn)(void *);

static bool run_until(world *w, cond_fn cond, void *arg) {
  return posp2p_service_run(w->n[0].s, WAIT_MS, cond, arg) == 1;
}

static bool connect_done(void *arg) { return ((node *)arg)->connect_done > 0; }

/* client connects to the main POS by address; waits for the callback. */
static bool connect_to_main(world *w, node *client, node *main_n) {
  posp2p_addr to = posp2p_service_tcp_addr(main_n->s);
  client->connect_done = 0;
  int r = posp2p_service_connect_addr(client->s, &to, main_n->id, on_connect, client);
  PT_EQ_INT(r, 0);
  if (r != 0) return false;
  PT_CHECK(run_until(w, connect_done, client));
  PT_EQ_INT(client->connect_code, 0);
  PT_EQ_STR(client->connect_id, main_n->id);
  /* The main POS side completes its handshake by sending its HELLO, so it
   * is connected no later than the client. */
  return client->connect_code == 0;
}

static bool all_stopped(void *arg) {
  world *w = arg;
  for (int i = 0; i < w->count; i++)
    if (w->n[i].s != NULL && posp2p_service_uv(w->n[i].s) != NULL) return false;
  return true;
}

static void world_close(world *w) {
  for (int i = 0; i < w->count; i++) {
    posp2p_router_del(w->n[i].r);
    w->n[i].r = NULL;
    if (w->n[i].s && posp2p_service_is_running(w->n[i].s))
      PT_EQ_INT(posp2p_service_stop(w->n[i].s, "test over"), 0);
  }
  if (w->count > 0) PT_CHECK(run_until(w, all_stopped, w));
  for (int i = 0; i < w->count; i++) posp2p_service_del(w->n[i].s);
  uv_run(&w->loop, UV_RUN_DEFAULT); /* nothing may be left running */
  PT_EQ_INT(posp2p_uv_ctx_del(w->ctx), 0);
  PT_EQ_INT(uv_loop_close(&w->loop), 0);
  for (int i = 0; i < w->count; i++) PT_EQ_INT(w->n[i].warnings, 0);
}

/* A two-item order with every kind of field. */
static const char *const mods[] = {"oat milk", "extra shot"};
static posp2p_order_item items[2];
static posp2p_order sample_order(const char *order_id) {
  posp2p_order o;
  posp2p_order_init(&o);
  posp2p_order_item_init(&items[0]);
  items[0].product_id = "sku-1";
  items[0].product_name = "Flat white";
  items[0].price_minor = 450;
  items[0].quantity = 2;
  items[0].modifiers = mods;
  items[0].n_modifiers = 2;
  items[0].variant = "large";
  posp2p_order_item_init(&items[1]);
  items[1].product_id = "sku-2";
  items[1].product_name = "Croissant";
  items[1].price_minor = 325;
  items[1].quantity = 1;
  items[1].has_discount_per_item = true;
  items[1].discount_per_item_minor = 25;
  o.order_id = order_id;
  o.items = items;
  o.n_items = 2;
  o.subtotal_minor = 1200;
  o.has_tax = true;
  o.tax_minor = 120;
  o.total_minor = 1320;
  o.currency_exponent = 2;
  o.currency = "EUR";
  o.has_table_number = true;
  o.table_number = 7;
  o.customer_name = "Ana";
  return o;
}

typedef struct {
  node *n;
  int target;
} ack_target;

static bool acks_ge(void *arg) {
  ack_target *a = arg;
  return a->n->acks >= a->target;
}

/* ---- tests ---------------------------------------------------------------------- */

static bool is_stopped(void *arg) { return ((node *)arg)->stopped > 0; }

PTEST(lifecycle) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  posp2p_service *bad = NULL;
  posp2p_uv_error err;
  PT_EQ_INT(posp2p_service_new(&bad, "x", 0, 0, NULL, &err), POSP2P_ERR_INVAL);
  PT_CHECK(bad == NULL);
  posp2p_service_opts o;
  posp2p_service_opts_init(&o);
  o.ctx = w.ctx;
  o.broadcast_ip = "255.255.255.255"; /* never without allow_lan */
  PT_EQ_INT(posp2p_service_new(&bad, "x", POSP2P_TYPE_KDS, 0, &o, &err),
            POSP2P_ERR_CONFIG);
  PT_CHECK(strstr(err.message, "255.255.255.255") != NULL);
  o.broadcast_ip = NULL;
  o.device_id = "not-a-uuid";
  PT_EQ_INT(posp2p_service_new(&bad, "x", POSP2P_TYPE_KDS, 0, &o, &err),
            POSP2P_ERR_INVAL);

  node *m = &w.n[w.count++];
  memset(m, 0, sizeof(*m));
  o.device_id = "0A1B2C3D-0000-4000-8000-00000000ABCD";
  o.bind_ip = "127.0.0.150";
  o.discovery_port = w.udp_port;
  o.on_stopped = on_stopped;
  o.user_data = m;
  PT_EQ_INT(posp2p_service_new(&m->s, "Main POS", POSP2P_TYPE_MAIN_POS, 0, &o, &err), 0);
  PT_EQ_STR(posp2p_service_device_id(m->s), "0a1b2c3d-0000-4000-8000-00000000abcd");
  PT_EQ_STR(posp2p_service_device_name(m->s), "Main POS");
  PT_EQ_INT(posp2p_service_device_type(m->s), POSP2P_TYPE_MAIN_POS);
  PT_CHECK(!posp2p_service_is_running(m->s));
  PT_CHECK(posp2p_service_engine(m->s) == NULL);
  PT_EQ_INT(posp2p_service_stop(m->s, NULL), POSP2P_ERR_STATE);
  PT_EQ_INT(posp2p_service_send_json(m->s, POSP2P_MSG_PRODUCT_SYNC, NULL, 0, "{}", NULL),
            POSP2P_ERR_STATE);
  size_t count = 99;
  PT_EQ_INT(posp2p_service_devices(m->s, NULL, 0, &count), 0);
  PT_EQ_INT(count, 0);

  for (int round = 0; round < 2; round++) { /* start, stop, start again */
    m->stopped = 0;
    PT_EQ_INT(posp2p_service_start(m->s, &err), 0);
    PT_CHECK(posp2p_service_is_running(m->s));
    PT_EQ_INT(posp2p_service_start(m->s, &err), POSP2P_ERR_STATE);
    posp2p_addr a = posp2p_service_tcp_addr(m->s);
    PT_EQ_INT(a.ip, 0x7f000096);
    PT_CHECK(a.port != 0);
    PT_CHECK(posp2p_service_engine(m->s) != NULL);
    PT_EQ_STR(posp2p_peer_device_id(posp2p_service_engine(m->s)),
              "0a1b2c3d-0000-4000-8000-00000000abcd");
    /* A typed payload type cannot go through send_json. */
    PT_EQ_INT(posp2p_service_send_json(m->s, POSP2P_MSG_ORDER_FORWARD, NULL, 0, "{}", NULL),
              POSP2P_ERR_INVAL);
    PT_EQ_INT(posp2p_service_stop(m->s, "bye"), 0);
    PT_CHECK(!posp2p_service_is_running(m->s));
    PT_EQ_INT(posp2p_service_stop(m->s, "again"), POSP2P_ERR_STATE);
    PT_EQ_INT(posp2p_service_start(m->s, &err), POSP2P_ERR_STATE); /* stopping */
    PT_CHECK(posp2p_service_run(m->s, WAIT_MS, is_stopped, m) == 1);
    PT_EQ_INT(m->stopped, 1);
    PT_CHECK(posp2p_service_uv(m->s) == NULL);
    PT_EQ_INT(posp2p_service_tcp_addr(m->s).port, 0);
  }
  /* A busy port is reported with the address. */
  node *k = &w.n[w.count++];
  memset(k, 0, sizeof(*k));
  PT_EQ_INT(posp2p_service_start(m->s, &err), 0);
  posp2p_service_opts o2;
  posp2p_service_opts_init(&o2);
  o2.ctx = w.ctx;
  o2.bind_ip = "127.0.0.150";
  o2.discovery_port = free_udp_port();
  PT_EQ_INT(posp2p_service_new(&k->s, "kds", POSP2P_TYPE_KDS,
                               posp2p_service_tcp_addr(m->s).port, &o2, &err), 0);
  memset(&err, 0, sizeof(err));
  PT_EQ_INT(posp2p_service_start(k->s, &err), POSP2P_UV_CODE(UV_EADDRINUSE));
  PT_CHECK(strstr(err.message, "127.0.0.150") != NULL);
  PT_CHECK(!posp2p_service_is_running(k->s));
  world_close(&w);
}

static bool discovered(void *arg) { return ((node *)arg)->discover_done > 0; }

PTEST(discover) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.154", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.155", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  node *k = add(&w, "127.0.0.156", POSP2P_TYPE_KDS, "kitchen");
  uv_update_time(&w.loop);
  uint64_t t0 = uv_now(&w.loop);
  PT_EQ_INT(posp2p_service_discover(t->s, 300, on_discover, t), 0);
  PT_EQ_INT(posp2p_service_discover(t->s, 300, NULL, t), POSP2P_ERR_INVAL);
  PT_CHECK(run_until(&w, discovered, t));
  PT_EQ_INT(t->discover_code, 0);
  /* The seed's discoverDevices waits for its timeout, then returns what it
   * knows: here the main POS and the KDS (every listening device answers
   * a REQUEST, DISC-5), never itself (DISC-8). */
  PT_CHECK(t->discover_t - t0 >= 300);
  PT_EQ_INT(t->discover_n, 2);
  bool saw_main = false, saw_kds = false;
  for (size_t i = 0; i < t->discover_n && i < 8; i++) {
    const posp2p_peer_device *d = &t->discover_devs[i];
    PT_CHECK(strcmp(d->id, t->id) != 0);
    if (strcmp(d->id, m->id) == 0) {
      saw_main = true;
      PT_EQ_INT(d->type, POSP2P_TYPE_MAIN_POS);
      PT_EQ_STR(d->name, "main");
      /* Recorded at the datagram's source address (DISC-7). */
      PT_EQ_INT(d->addr.ip, 0x7f00009a);
      PT_EQ_INT(d->addr.port, posp2p_service_tcp_addr(m->s).port);
      PT_EQ_INT(d->status, POSP2P_DEV_DISCOVERING);
    }
    if (strcmp(d->id, k->id) == 0) saw_kds = d->type == POSP2P_TYPE_KDS;
  }
  PT_CHECK(saw_main);
  PT_CHECK(saw_kds);
  /* Discovered is not connected. */
  size_t n = 99;
  PT_EQ_INT(posp2p_service_connected_devices(t->s, NULL, 0, &n), 0);
  PT_EQ_INT(n, 0);
  /* ... until the tablet connects to the discovered main POS by id. */
  t->connect_done = 0;
  PT_EQ_INT(posp2p_service_connect(t->s, m->id, on_connect, t), 0);
  PT_CHECK(run_until(&w, connect_done, t));
  PT_EQ_INT(t->connect_code, 0);
  PT_EQ_STR(t->connect_id, m->id);
  posp2p_peer_device devs[4];
  PT_EQ_INT(posp2p_service_connected_devices(t->s, devs, 4, &n), 0);
  PT_EQ_INT(n, 1);
  PT_EQ_STR(devs[0].id, m->id);
  PT_EQ_INT(posp2p_service_connect(t->s, "00000000-0000-4000-8000-000000000001", NULL, NULL),
            POSP2P_ERR_UNKNOWN_DEVICE);
  /* Connecting again to a connected device keeps the one connection. */
  t->connect_done = 0;
  PT_EQ_INT(posp2p_service_connect(t->s, m->id, on_connect, t), 0);
  PT_EQ_INT(t->connect_done, 0); /* not from inside the call */
  PT_CHECK(run_until(&w, connect_done, t));
  PT_EQ_INT(t->connect_code, 0);
  PT_EQ_STR(t->connect_id, m->id);
  PT_EQ_INT(posp2p_peer_conn_count(posp2p_service_engine(t->s)), 1);
  /* A discover still pending at stop completes with SHUTDOWN. */
  k->discover_done = 0;
  PT_EQ_INT(posp2p_service_discover(k->s, 60000, on_discover, k), 0);
  PT_EQ_INT(posp2p_service_stop(k->s, NULL), 0);
  PT_EQ_INT(k->discover_done, 1);
  PT_EQ_INT(k->discover_code, POSP2P_ERR_SHUTDOWN);
  world_close(&w);
}

static bool order_acked(void *arg) {
  const posp2p_sent_order *o = arg;
  return o->state != POSP2P_ACK_PENDING;
}

static int sent_calls, update_calls;
static char sent_mid[POSP2P_UUID_LEN + 1];
static void on_sent(posp2p_router *r, const posp2p_sent_order *o, void *ud) {
  (void)r;
  (void)ud;
  sent_calls++;
  snprintf(sent_mid, sizeof(sent_mid), "%s", o->message_id);
}
static void on_update(posp2p_router *r, const posp2p_sent_order *o, void *ud) {
  (void)r;
  (void)o;
  (void)ud;
  update_calls++;
}

PTEST(router_send_acked) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.158", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.159", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));
  sent_calls = update_calls = 0;
  PT_EQ_INT(posp2p_router_on_order_sent(m->r, on_sent, NULL, NULL), 0);
  PT_EQ_INT(posp2p_router_on_order_update(m->r, on_update, NULL, NULL), 0);

  posp2p_order o = sample_order("A-100");
  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  PT_CHECK(posp2p_uuid_valid(mid));
  PT_EQ_INT(sent_calls, 1);
  PT_EQ_STR(sent_mid, mid);
  const posp2p_sent_order *rec = posp2p_router_sent_order(m->r, "A-100");
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_EQ_STR(rec->message_id, mid);
  PT_EQ_INT(rec->state, POSP2P_ACK_PENDING);
  PT_EQ_INT(rec->n_recipients, 1);
  PT_EQ_STR(rec->recipients[0].device_id, t->id);
  PT_EQ_STR(rec->to, t->id);
  PT_CHECK(!rec->broadcast && !rec->custody);
  PT_EQ_INT(rec->order->total_minor, 1320);

  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED);
  PT_EQ_INT(rec->n_acked, 1);
  PT_EQ_INT(rec->recipients[0].state, POSP2P_ACK_ACKED);
  PT_CHECK(rec->recipients[0].attempts >= 1);
  PT_EQ_INT(update_calls, 1);
  PT_EQ_STR(posp2p_ack_state_name(rec->state), "acked");
  PT_CHECK(posp2p_router_sent_message(m->r, mid) == rec);
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 1);
  PT_CHECK(posp2p_router_sent_order_at(m->r, 0) == rec);

  /* The tablet delivered it once, with every amount exact (MONEY-1). */
  PT_EQ_INT(t->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_STR(t->last_mid, mid);
  PT_EQ_STR(t->last_from, m->id);
  PT_EQ_STR(t->order_id, "A-100");
  PT_EQ_INT(t->total_minor, 1320);
  PT_EQ_INT(t->price_minor, 450);
  PT_EQ_INT(t->exponent, 2);
  PT_EQ_INT(t->n_items, 2);
  PT_CHECK(t->has_tax && t->has_variant);
  PT_EQ_STR(t->modifier, "oat milk");
  PT_EQ_INT(t->destination, POSP2P__V2__DESTINATION__DESTINATION_ORDERING_TABLET);

  /* Errors: unknown device at the main POS; bad order. */
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, "00000000-0000-4000-8000-000000000002", mid),
            POSP2P_ERR_UNKNOWN_DEVICE);
  PT_EQ_STR(mid, "");
  posp2p_order empty;
  posp2p_order_init(&empty);
  PT_EQ_INT(posp2p_router_send_order(m->r, &empty, t->id, mid), POSP2P_ERR_INVAL);
  o.currency_exponent = 10; /* MONEY-3 */
  PT_CHECK(posp2p_router_send_order(m->r, &o, t->id, mid) < 0);
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 1);
  /* clearOrder with the record's own order_id string. */
  PT_EQ_INT(posp2p_router_clear_order(m->r, rec->order_id), 1);
  PT_CHECK(posp2p_router_sent_order(m->r, "A-100") == NULL);
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 0);
  world_close(&w);
}

typedef struct {
  node *nodes[4];
  int n;
  int type;
  int want;
} count_cond;

static bool all_have(void *arg) {
  count_cond *c = arg;
  for (int i = 0; i < c->n; i++)
    if (c->nodes[i]->msgs[c->type] < c->want) return false;
  return true;
}

PTEST(send_to_type) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.162", POSP2P_TYPE_MAIN_POS, "main");
  node *t1 = add(&w, "127.0.0.163", POSP2P_TYPE_ORDERING_TABLET, "tablet-1");
  node *t2 = add(&w, "127.0.0.164", POSP2P_TYPE_ORDERING_TABLET, "tablet-2");
  node *k = add(&w, "127.0.0.165", POSP2P_TYPE_KDS, "kds");
  PT_CHECK(connect_to_main(&w, t1, m));
  PT_CHECK(connect_to_main(&w, t2, m));
  PT_CHECK(connect_to_main(&w, k, m));

  posp2p_order o = sample_order("T-1");
  char mid[POSP2P_UUID_LEN + 1];
  size_t nr = 0;
  PT_EQ_INT(posp2p_router_send_order_to_type(m->r, &o, POSP2P_TYPE_ORDERING_TABLET, mid, &nr), 0);
  PT_EQ_INT(nr, 2);
  const posp2p_sent_order *rec = posp2p_router_sent_message(m->r, mid);
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_EQ_INT(rec->to_type, POSP2P_TYPE_ORDERING_TABLET);
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED);
  PT_EQ_INT(rec->n_acked, 2);
  PT_EQ_INT(t1->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_INT(t2->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_INT(k->msgs[POSP2P_MSG_ORDER_FORWARD], 0);
  PT_EQ_INT(t1->destination, POSP2P__V2__DESTINATION__DESTINATION_ORDERING_TABLET);

  /* Nobody of that type: nothing sent, no record (the seed's count 0). */
  PT_EQ_INT(posp2p_router_send_order_to_type(m->r, &o, POSP2P_TYPE_CUSTOMER_DISPLAY, mid, &nr), 0);
  PT_EQ_INT(nr, 0);
  PT_EQ_STR(mid, "");
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 1);
  PT_EQ_INT(posp2p_router_send_order_to_type(m->r, &o, 0, mid, &nr), POSP2P_ERR_INVAL);

  /* All clients: one broadcast, three tracked recipients (ACK-13). */
  o.order_id = "T-2";
  PT_EQ_INT(posp2p_router_broadcast_order(m->r, &o, mid, &nr), 0);
  PT_EQ_INT(nr, 3);
  rec = posp2p_router_sent_order(m->r, "T-2");
  PT_CHECK(rec != NULL && rec->broadcast);
  if (rec == NULL) return;
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED);
  PT_EQ_INT(rec->n_acked, 3);
  PT_EQ_INT(k->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_INT(k->destination, POSP2P__V2__DESTINATION__DESTINATION_ALL_DEVICES);
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 2);
  world_close(&w);
}


PTEST(status_broadcast) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.166", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.167", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  node *k = add(&w, "127.0.0.168", POSP2P_TYPE_KDS, "kds");
  PT_CHECK(connect_to_main(&w, t, m));
  PT_CHECK(connect_to_main(&w, k, m));
  posp2p_status_update u = {.order_id = "S-1",
                            .new_status = POSP2P_ORDER_STATUS_PREPARING,
                            .reason = "on the grill",
                            .has_estimated_time = true,
                            .estimated_time_s = 300};
  char mid1[POSP2P_UUID_LEN + 1], mid2[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_broadcast_status(m->r, &u, mid1), 0);
  u.new_status = POSP2P_ORDER_STATUS_READY;
  u.reason = NULL;
  u.has_estimated_time = false;
  PT_EQ_INT(posp2p_router_broadcast_status(m->r, &u, mid2), 0);
  PT_CHECK(strcmp(mid1, mid2) != 0);
  count_cond c = {{t, k}, 2, POSP2P_MSG_ORDER_STATUS, 2};
  PT_CHECK(run_until(&w, all_have, &c));
  /* Both clients got both, numbered 1 and 2 (ROUTE-10), in order. */
  node *clients[2] = {t, k};
  for (int i = 0; i < 2; i++) {
    node *n = clients[i];
    PT_EQ_INT(n->nstatus, 2);
    PT_EQ_INT(n->seqs[0], 1);
    PT_EQ_INT(n->seqs[1], 2);
    PT_EQ_INT(n->statuses[0], POSP2P_ORDER_STATUS_PREPARING);
    PT_EQ_INT(n->statuses[1], POSP2P_ORDER_STATUS_READY);
    PT_CHECK(n->reason_present[0] && !n->reason_present[1]);
  }
  /* Each client acknowledged each update (ACK-13: per-recipient). */
  ack_target at = {m, 4};
  PT_CHECK(run_until(&w, acks_ge, &at));
  PT_EQ_INT(m->acks, 4);
  /* Status updates make no sent-order record. */
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 0);
  u.new_status = 42;
  PT_EQ_INT(posp2p_router_broadcast_status(m->r, &u, mid1), POSP2P_ERR_INVAL);
  world_close(&w);
}

static bool cancel_done(void *arg) {
  const posp2p_sent_order *o = arg;
  return o->cancel_state != POSP2P_ACK_PENDING;
}

static bool is_cancelled(void *arg) { return ((const posp2p_sent_order *)arg)->cancelled; }

PTEST(cancel) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.170", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.171", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));
  posp2p_order o = sample_order("C-1");
  char mid[POSP2P_UUID_LEN + 1], cmid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  const posp2p_sent_order *rec = posp2p_router_sent_order(m->r, "C-1");
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(posp2p_router_cancel_order(m->r, "C-1", t->id, "customer left", true, cmid), 0);
  PT_CHECK(rec->cancelled);
  PT_EQ_STR(rec->cancel_message_id, cmid);
  PT_CHECK(run_until(&w, cancel_done, (void *)rec));
  PT_EQ_INT(rec->cancel_state, POSP2P_ACK_ACKED);
  PT_EQ_INT(t->msgs[POSP2P_MSG_ORDER_CANCEL], 1);
  PT_EQ_STR(t->cancel_reason, "customer left");
  PT_CHECK(t->cancel_refund);
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED); /* the order itself stays acked */

  /* A cancellation coming the other way marks the main's record. */
  o.order_id = "C-2";
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  const posp2p_sent_order *rec2 = posp2p_router_sent_order(m->r, "C-2");
  PT_CHECK(rec2 != NULL);
  if (rec2 == NULL) return;
  PT_CHECK(run_until(&w, order_acked, (void *)rec2));
  PT_EQ_INT(posp2p_router_cancel_order(t->r, "C-2", m->id, "out of stock", false, cmid), 0);
  PT_CHECK(run_until(&w, is_cancelled, (void *)rec2));
  PT_EQ_STR(rec2->cancel_message_id, "");
  PT_EQ_INT(posp2p_router_cancel_order(m->r, "C-2", "nope", "x", false, cmid),
            POSP2P_ERR_INVAL);
  world_close(&w);
}

/* Handlers record the order in which they ran. */
static char trace[64];
static int h1_calls, h2_calls, h3_calls, stream_calls;
static posp2p_sub_id h2_id;
static bool h2_unsub_self;
static void h1(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  (void)s;
  (void)m;
  (void)ud;
  h1_calls++;
  strncat(trace, "1", sizeof(trace) - strlen(trace) - 1);
}
static void h2(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  (void)m;
  (void)ud;
  h2_calls++;
  strncat(trace, "2", sizeof(trace) - strlen(trace) - 1);
  if (h2_unsub_self) PT_EQ_INT(posp2p_service_unsubscribe(s, h2_id), 0);
}
static void h3(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  (void)s;
  (void)m;
  (void)ud;
  h3_calls++;
}
static void stream(posp2p_service *s, const posp2p_envelope *m, void *ud) {
  (void)s;
  (void)m;
  (void)ud;
  stream_calls++;
  strncat(trace, "s", sizeof(trace) - strlen(trace) - 1);
}

PTEST(handler_once) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.174", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.175", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));
  h1_calls = h2_calls = h3_calls = stream_calls = 0;
  trace[0] = '\0';
  h2_unsub_self = false;
  PT_EQ_INT(posp2p_service_on_message(t->s, POSP2P_MSG_PRODUCT_SYNC, h1, NULL, NULL), 0);
  PT_EQ_INT(posp2p_service_on_message(t->s, POSP2P_MSG_PRODUCT_SYNC, h2, NULL, &h2_id), 0);
  PT_EQ_INT(posp2p_service_on_message(t->s, POSP2P_MSG_CONFIG_SYNC, h3, NULL, NULL), 0);
  posp2p_sub_id sid;
  PT_EQ_INT(posp2p_service_subscribe_messages(t->s, stream, NULL, &sid), 0);
  PT_EQ_INT(posp2p_service_on_message(t->s, 0, h1, NULL, NULL), POSP2P_ERR_INVAL);
  PT_EQ_INT(posp2p_service_on_message(t->s, POSP2P_MSG_WARNING, NULL, NULL, NULL),
            POSP2P_ERR_INVAL);

  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_service_send_json(m->s, POSP2P_MSG_PRODUCT_SYNC, t->id, 0,
                                     "{\"sku\":\"sku-1\",\"price\":450}", mid), 0);
  /* The tablet delivers before it acknowledges (ACK-1), so once the main
   * POS has the ack the handlers have run. */
  ack_target at = {m, 1};
  PT_CHECK(run_until(&w, acks_ge, &at));
  PT_EQ_INT(h1_calls, 1);
  PT_EQ_INT(h2_calls, 1);
  PT_EQ_INT(h3_calls, 0);
  PT_EQ_INT(stream_calls, 1);
  PT_EQ_STR(trace, "12s"); /* per-type handlers first, then the stream */
  PT_EQ_STR(t->last_mid, mid);

  /* A handler that unsubscribes itself while running. */
  h2_unsub_self = true;
  PT_EQ_INT(posp2p_service_send_json(m->s, POSP2P_MSG_PRODUCT_SYNC, t->id, 0, NULL, mid), 0);
  at.target = 2;
  PT_CHECK(run_until(&w, acks_ge, &at));
  PT_EQ_INT(h1_calls, 2);
  PT_EQ_INT(h2_calls, 2);
  PT_EQ_INT(posp2p_service_unsubscribe(t->s, h2_id), POSP2P_ERR_INVAL);
  PT_EQ_INT(posp2p_service_unsubscribe(t->s, sid), 0);
  PT_EQ_INT(posp2p_service_send_json(m->s, POSP2P_MSG_PRODUCT_SYNC, t->id, 0, "{}", mid), 0);
  at.target = 3;
  PT_CHECK(run_until(&w, acks_ge, &at));
  world_close(&w);
  PT_EQ_INT(h1_calls, 3);
  PT_EQ_INT(h2_calls, 2);
  PT_EQ_INT(stream_calls, 2);
}

typedef struct {
  char id[POSP2P_UUID_LEN + 1];
  int connected, disconnected, other;
  posp2p_dev_status last;
} dev_watch;

static void on_device(posp2p_service *s, const posp2p_peer_device *d,
                      posp2p_dev_status prev, void *ud) {
  dev_watch *dw = ud;
  (void)s;
  if (strcmp(d->id, dw->id) != 0 || d->status == prev) return;
  dw->last = d->status;
  if (d->status == POSP2P_DEV_CONNECTED) dw->connected++;
  else if (d->status == POSP2P_DEV_DISCONNECTED || d->status == POSP2P_DEV_ERROR)
    dw->disconnected++;
  else dw->other++;
}

static bool watch_disconnected(void *arg) {
  dev_watch *dw = arg;
  return dw->last == POSP2P_DEV_DISCONNECTED || dw->last == POSP2P_DEV_ERROR;
}
static bool watch_connected(void *arg) {
  return ((dev_watch *)arg)->last == POSP2P_DEV_CONNECTED;
}

PTEST(device_changes) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.178", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.179", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  dev_watch dw;
  memset(&dw, 0, sizeof(dw));
  snprintf(dw.id, sizeof(dw.id), "%s", t->id);
  posp2p_sub_id a, b;
  PT_EQ_INT(posp2p_service_subscribe_devices(m->s, on_device, &dw, &a), 0);
  /* A second subscriber to the same stream. */
  dev_watch dw2;
  memset(&dw2, 0, sizeof(dw2));
  snprintf(dw2.id, sizeof(dw2.id), "%s", t->id);
  PT_EQ_INT(posp2p_service_subscribe_devices(m->s, on_device, &dw2, &b), 0);

  PT_CHECK(connect_to_main(&w, t, m));
  PT_CHECK(run_until(&w, watch_connected, &dw));
  PT_EQ_INT(dw.connected, 1);
  PT_EQ_INT(dw2.connected, 1);

  /* Graceful stop: GOODBYE, marked disconnected, not error (CONN-21). */
  PT_EQ_INT(posp2p_service_stop(t->s, "closing time"), 0);
  PT_CHECK(run_until(&w, watch_disconnected, &dw));
  PT_EQ_INT(dw.last, POSP2P_DEV_DISCONNECTED);
  PT_EQ_INT(dw.disconnected, 1);
  PT_CHECK(run_until(&w, is_stopped, t));

  /* Back again, then a crash (sockets closed without GOODBYE). */
  posp2p_uv_error err;
  PT_EQ_INT(posp2p_service_start(t->s, &err), 0);
  PT_CHECK(connect_to_main(&w, t, m));
  PT_CHECK(run_until(&w, watch_connected, &dw));
  PT_EQ_INT(dw.connected, 2);
  PT_EQ_INT(posp2p_service_unsubscribe(m->s, b), 0);
  PT_EQ_INT(posp2p_service_abort(t->s), 0);
  PT_CHECK(run_until(&w, watch_disconnected, &dw));
  PT_EQ_INT(dw.disconnected, 2);
  PT_EQ_INT(dw2.disconnected, 1); /* unsubscribed before the crash */
  size_t n = 9;
  PT_EQ_INT(posp2p_service_connected_devices(m->s, NULL, 0, &n), 0);
  PT_EQ_INT(n, 0);
  PT_EQ_INT(posp2p_service_devices(m->s, NULL, 0, &n), 0);
  PT_EQ_INT(n, 1); /* still known (HB-10, ROUTE-15) */
  PT_EQ_INT(posp2p_service_unsubscribe(m->s, a), 0);
  world_close(&w);
}

PTEST(relay_via_main) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.182", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.183", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  node *k = add(&w, "127.0.0.184", POSP2P_TYPE_KDS, "kds");
  PT_CHECK(connect_to_main(&w, t, m));
  PT_CHECK(connect_to_main(&w, k, m));
  /* The tablet knows the KDS only by id; the main POS relays (ROUTE-2). */
  posp2p_order o = sample_order("R-1");
  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(t->r, &o, k->id, mid), 0);
  const posp2p_sent_order *rec = posp2p_router_sent_order(t->r, "R-1");
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  /* Acknowledged end to end by the KDS, not by the relay (ACK-5, ROUTE-11). */
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED);
  PT_EQ_STR(rec->recipients[0].device_id, k->id);
  PT_EQ_INT(k->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_STR(k->last_from, t->id); /* MSG-5: unchanged by the relay */
  PT_EQ_STR(k->last_mid, mid);
  /* The tablet never saw the KDS (no discovery here), so the automatic
   * destination cannot name its role. */
  PT_EQ_INT(k->destination, POSP2P__V2__DESTINATION__DESTINATION_ALL_DEVICES);
  PT_EQ_INT(m->msgs[POSP2P_MSG_ORDER_FORWARD], 0);
  PT_CHECK(posp2p_peer_stats_get(posp2p_service_engine(m->s))->relayed >= 1);
  world_close(&w);
}

PTEST(delivery_failed) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  w.ack_ms = 50;
  w.retries = 2;
  node *m = add(&w, "127.0.0.186", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.187", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));
  posp2p_order o = sample_order("F-1");
  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  /* The tablet crashes before reading it: the order stays pending across
   * the lost connection (ACK-23) and fails after max_retries (ACK-9). */
  PT_EQ_INT(posp2p_service_abort(t->s), 0);
  const posp2p_sent_order *rec = posp2p_router_sent_order(m->r, "F-1");
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(rec->state, POSP2P_ACK_FAILED);
  PT_EQ_INT(rec->n_failed, 1);
  PT_EQ_INT(rec->recipients[0].code, POSP2P_ERR_RETRY_LIMIT);
  /* Transmitted once; the two retransmissions fell due without a
   * connection and still counted (ACK-23), after 50 + 100 + 200 ms of
   * backoff (ACK-8). */
  PT_EQ_INT(rec->recipients[0].attempts, 1);
  PT_CHECK(rec->recipients[0].done_ms - rec->sent_ms >= 350);
  PT_EQ_INT(t->msgs[POSP2P_MSG_ORDER_FORWARD], 0);
  /* Known but gone: the main POS refuses at once (ROUTE-6). */
  o.order_id = "F-2";
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), POSP2P_ERR_DEVICE_OFFLINE);
  world_close(&w);
}

PTEST(client_broadcast_custody) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.190", POSP2P_TYPE_MAIN_POS, "main");
  node *t1 = add(&w, "127.0.0.191", POSP2P_TYPE_ORDERING_TABLET, "tablet-1");
  node *t2 = add(&w, "127.0.0.192", POSP2P_TYPE_ORDERING_TABLET, "tablet-2");
  /* Not connected yet: a client has no route. */
  posp2p_order o = sample_order("B-1");
  char mid[POSP2P_UUID_LEN + 1];
  size_t nr = 9;
  PT_EQ_INT(posp2p_router_broadcast_order(t1->r, &o, mid, &nr), POSP2P_ERR_NO_ROUTE);
  PT_CHECK(connect_to_main(&w, t1, m));
  PT_CHECK(connect_to_main(&w, t2, m));
  PT_EQ_INT(posp2p_router_broadcast_order(t1->r, &o, mid, &nr), 0);
  PT_EQ_INT(nr, 1);
  const posp2p_sent_order *rec = posp2p_router_sent_message(t1->r, mid);
  PT_CHECK(rec != NULL);
  if (rec == NULL) return;
  PT_CHECK(rec->custody && rec->broadcast);
  PT_EQ_STR(rec->recipients[0].device_id, m->id);
  PT_CHECK(run_until(&w, order_acked, (void *)rec));
  PT_EQ_INT(rec->state, POSP2P_ACK_ACKED); /* by the main POS (ACK-14, ACK-16) */
  count_cond c = {{m, t2}, 2, POSP2P_MSG_ORDER_FORWARD, 1};
  PT_CHECK(run_until(&w, all_have, &c)); /* ROUTE-3: main delivers and relays */
  PT_EQ_INT(t1->msgs[POSP2P_MSG_ORDER_FORWARD], 0);
  world_close(&w);
}

/* Router callbacks that clear the record they are told about, and that
 * unsubscribe themselves: the record stays valid for the callback and is
 * freed afterwards (ASan checks), later subscribers do not see it. */
static posp2p_sub_id self_sub;
static int clearing_calls, after_calls, self_calls;
static void clearing_cb(posp2p_router *r, const posp2p_sent_order *o, void *ud) {
  (void)ud;
  clearing_calls++;
  if (o->state == POSP2P_ACK_ACKED && strcmp(o->order_id, "CB-1") == 0) {
    PT_EQ_INT(posp2p_router_clear_order(r, o->order_id), 1);
    PT_EQ_STR(o->order_id, "CB-1"); /* still readable during the call */
  }
}
static void after_cb(posp2p_router *r, const posp2p_sent_order *o, void *ud) {
  (void)r;
  (void)o;
  (void)ud;
  after_calls++;
}
static void self_unsub_cb(posp2p_router *r, const posp2p_sent_order *o, void *ud) {
  (void)o;
  (void)ud;
  self_calls++;
  PT_EQ_INT(posp2p_router_unsubscribe(r, self_sub), 0);
}

PTEST(router_callbacks) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  node *m = add(&w, "127.0.0.196", POSP2P_TYPE_MAIN_POS, "main");
  node *t = add(&w, "127.0.0.197", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));
  clearing_calls = after_calls = self_calls = 0;
  PT_EQ_INT(posp2p_router_on_order_sent(m->r, self_unsub_cb, NULL, &self_sub), 0);
  PT_EQ_INT(posp2p_router_on_order_update(m->r, clearing_cb, NULL, NULL), 0);
  PT_EQ_INT(posp2p_router_on_order_update(m->r, after_cb, NULL, NULL), 0);
  posp2p_order o = sample_order("CB-1");
  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  o.order_id = "CB-2";
  PT_EQ_INT(posp2p_router_send_order(m->r, &o, t->id, mid), 0);
  PT_EQ_INT(self_calls, 1); /* unsubscribed itself during the first */
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 2);
  const posp2p_sent_order *cb2 = posp2p_router_sent_order(m->r, "CB-2");
  PT_CHECK(run_until(&w, order_acked, (void *)cb2)); /* acked after CB-1 */
  PT_CHECK(posp2p_router_sent_order(m->r, "CB-1") == NULL);
  PT_EQ_INT(posp2p_router_sent_order_count(m->r), 1);
  PT_CHECK(posp2p_router_sent_message(m->r, mid) != NULL); /* CB-2 stays */
  PT_EQ_INT(clearing_calls, 2);
  PT_EQ_INT(after_calls, 1); /* CB-2 only: CB-1 was cleared first */
  PT_EQ_INT(posp2p_router_unsubscribe(m->r, self_sub), POSP2P_ERR_INVAL);
  world_close(&w);
}

/* The order -> OrderForward mapping, without sockets (MONEY-1, MONEY-2). */
PTEST(order_envelope) {
  posp2p_order o = sample_order("E-1");
  posp2p_envelope *e = NULL;
  PT_EQ_INT(posp2p_order_envelope(&o, POSP2P_TYPE_KDS, &e), 0);
  PT_CHECK(e != NULL);
  if (e == NULL) return;
  PT_EQ_INT(e->message_type, POSP2P_MSG_ORDER_FORWARD);
  PT_EQ_INT(e->payload_case, POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD);
  PT_EQ_INT(e->opt_to_device_id_case, 0);
  const Posp2p__V2__OrderForward *of = e->order_forward;
  PT_EQ_STR(of->order_id, "E-1");
  PT_EQ_INT(of->destination, POSP2P__V2__DESTINATION__DESTINATION_KITCHEN_DISPLAY);
  PT_EQ_INT(of->n_items, 2);
  PT_EQ_STR(of->items[0]->product_name, "Flat white");
  PT_EQ_INT(of->items[0]->n_modifiers, 2);
  PT_EQ_STR(of->items[0]->modifiers[1], "extra shot");
  PT_EQ_STR(of->items[0]->variant, "large");
  PT_EQ_INT(of->items[0]->opt_notes_case, 0); /* NULL: absent (null) */
  PT_EQ_INT(of->items[1]->discount_per_item_minor, 25);
  PT_EQ_INT(of->subtotal_minor, 1200);
  PT_EQ_INT(of->tax_minor, 120);
  PT_EQ_INT(of->opt_service_charge_minor_case, 0);
  PT_EQ_INT(of->total_minor, 1320);
  PT_EQ_INT(of->currency_exponent, 2);
  PT_EQ_STR(of->currency, "EUR");
  PT_EQ_INT(of->table_number, 7);
  PT_EQ_STR(of->customer_name, "Ana");
  PT_EQ_INT(of->opt_special_instructions_case, 0);
  posp2p_envelope_free(e, NULL);
  /* An explicit destination wins over AUTO; a broadcast gets allDevices. */
  o.destination = POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS;
  PT_EQ_INT(posp2p_order_envelope(&o, POSP2P_TYPE_KDS, &e), 0);
  if (e) PT_EQ_INT(e->order_forward->destination, POSP2P__V2__DESTINATION__DESTINATION_MAIN_POS);
  posp2p_envelope_free(e, NULL);
  o.destination = POSP2P_DESTINATION_AUTO;
  PT_EQ_INT(posp2p_order_envelope(&o, 0, &e), 0);
  if (e) PT_EQ_INT(e->order_forward->destination, POSP2P__V2__DESTINATION__DESTINATION_ALL_DEVICES);
  posp2p_envelope_free(e, NULL);
  /* Bad input. */
  static const char *const holes[] = {"ok", NULL};
  items[0].modifiers = holes;
  PT_EQ_INT(posp2p_order_envelope(&o, 0, &e), POSP2P_ERR_INVAL);
  PT_CHECK(e == NULL);
  items[0].modifiers = mods;
  o.order_id = "";
  PT_EQ_INT(posp2p_order_envelope(&o, 0, &e), POSP2P_ERR_INVAL);
  PT_EQ_INT(posp2p_order_envelope(NULL, 0, &e), POSP2P_ERR_INVAL);
  o.order_id = "bad\xff";
  PT_CHECK(posp2p_order_envelope(&o, 0, &e) < 0); /* not UTF-8 */
  PT_CHECK(e == NULL);
}

/* Persistence through opts.store and opts.restore: the main POS crashes
 * right after sending an order; on the next start the SQLite outbox is
 * restored, the order is retransmitted once the tablet is back, and the
 * tablet delivers it exactly once (ACK-18, ACK-23). */
static int restore_hook(posp2p_service *s, posp2p_peer *engine, uint64_t now_ms,
                        void *ud) {
  (void)s;
  posp2p_store *st = ud;
  posp2p_store_load_stats stats;
  return posp2p_store_load(st, engine, now_ms, NULL, NULL, &stats);
}

static bool service_closed(void *arg) { return posp2p_service_uv(arg) == NULL; }

static bool tablet_lost_main(void *arg) {
  node **nn = arg;
  const posp2p_peer_device *d =
      posp2p_peer_device_find(posp2p_service_engine(nn[1]->s), nn[0]->id);
  return d != NULL && d->status != POSP2P_DEV_CONNECTED;
}

PTEST(store_restore) {
  world w;
  PT_EQ_INT(world_init(&w), 0);
  char dir[] = "/tmp/posp2p-service-test.XXXXXX";
  PT_CHECK(mkdtemp(dir) != NULL);
  char path[128];
  snprintf(path, sizeof(path), "%s/main.sqlite3", dir);
  posp2p_store *st = NULL;
  posp2p_store_opts so;
  posp2p_store_opts_init(&so);
  char errbuf[POSP2P_STORE_ERRMSG_MAX];
  PT_EQ_INT(posp2p_store_open(&st, path, &so, errbuf), 0);
  posp2p_peer_store iface;
  posp2p_store_iface(st, &iface);

  /* The main POS, with the store (built by hand: add() has no store). */
  node *m = &w.n[w.count++];
  memset(m, 0, sizeof(*m));
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.heartbeat_interval_ms = w.hb_ms;
  cfg.device_timeout_ms = w.timeout_ms;
  cfg.ack_timeout_ms = 100;
  cfg.max_retries = 100;
  cfg.announce_interval_ms = 0;
  posp2p_service_opts o;
  posp2p_service_opts_init(&o);
  o.bind_ip = "127.0.0.198";
  o.discovery_port = w.udp_port;
  o.engine = &cfg;
  o.ctx = w.ctx;
  o.store = &iface;
  o.restore = restore_hook;
  o.user_data = st; /* for restore_hook (no on_stopped: it expects a node) */
  posp2p_uv_error err;
  PT_EQ_INT(posp2p_service_new(&m->s, "main", POSP2P_TYPE_MAIN_POS, 0, &o, &err), 0);
  snprintf(m->id, sizeof(m->id), "%s", posp2p_service_device_id(m->s));
  PT_EQ_INT(posp2p_router_new(&m->r, m->s), 0);
  PT_EQ_INT(posp2p_service_start(m->s, &err), 0);
  node *t = add(&w, "127.0.0.199", POSP2P_TYPE_ORDERING_TABLET, "tablet");
  PT_CHECK(connect_to_main(&w, t, m));

  posp2p_order ord = sample_order("P-1");
  char mid[POSP2P_UUID_LEN + 1];
  PT_EQ_INT(posp2p_router_send_order(m->r, &ord, t->id, mid), 0);
  PT_EQ_INT(posp2p_service_abort(m->s), 0); /* crash: no ack can arrive */
  node *pair[2] = {m, t};
  PT_CHECK(run_until(&w, service_closed, m->s));
  PT_CHECK(run_until(&w, tablet_lost_main, pair));

  posp2p_store_counts c;
  PT_EQ_INT(posp2p_store_counts_get(st, &c), 0);
  PT_EQ_INT(c.outbox, 1);
  PT_EQ_INT(posp2p_service_start(m->s, &err), 0); /* same id, restored */
  PT_EQ_INT(posp2p_peer_outbox_count(posp2p_service_engine(m->s)), 1);
  PT_CHECK(connect_to_main(&w, t, m));
  const posp2p_sent_order *rec = posp2p_router_sent_message(m->r, mid);
  PT_CHECK(rec != NULL);
  if (rec != NULL) {
    PT_CHECK(run_until(&w, order_acked, (void *)rec));
    PT_EQ_INT(rec->state, POSP2P_ACK_ACKED);
  }
  PT_EQ_INT(t->msgs[POSP2P_MSG_ORDER_FORWARD], 1);
  PT_EQ_STR(t->last_mid, mid);
  PT_EQ_INT(posp2p_store_counts_get(st, &c), 0);
  PT_EQ_INT(c.outbox, 0);
  world_close(&w);
  posp2p_store_close(st);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  PT_EQ_INT(system(cmd), 0);
}

static bool discover_cb_done(void *arg) { return ((node *)arg)->discover_done > 0; }

PTEST(owned_loop) {
  node n;
  memset(&n, 0, sizeof(n));
  posp2p_service_opts o;
  posp2p_service_opts_init(&o);
  o.bind_ip = "127.0.0.194";
  o.discovery_port = free_udp_port();
  o.on_stopped = on_stopped;
  o.user_data = &n;
  posp2p_uv_error err;
  PT_EQ_INT(posp2p_service_new(&n.s, "display", POSP2P_TYPE_CUSTOMER_DISPLAY, 0, &o, &err), 0);
  PT_CHECK(posp2p_service_loop(n.s) != NULL);
  PT_EQ_INT(posp2p_service_start(n.s, &err), 0);
  PT_EQ_INT(posp2p_service_discover(n.s, 50, on_discover, &n), 0);
  PT_EQ_INT(posp2p_service_run(n.s, WAIT_MS, discover_cb_done, &n), 1);
  PT_EQ_INT(n.discover_n, 0);
  PT_EQ_INT(posp2p_service_stop(n.s, NULL), 0);
  PT_EQ_INT(posp2p_service_run(n.s, WAIT_MS, is_stopped, &n), 1);
  posp2p_service_del(n.s);

  /* Deleting a running service aborts it and drains the owned loop. */
  memset(&n, 0, sizeof(n));
  PT_EQ_INT(posp2p_service_new(&n.s, "display", POSP2P_TYPE_CUSTOMER_DISPLAY, 0, &o, &err), 0);
  PT_EQ_INT(posp2p_service_start(n.s, &err), 0);
  PT_EQ_INT(posp2p_service_discover(n.s, 60000, on_discover, &n), 0);
  posp2p_service_del(n.s);
  PT_EQ_INT(n.discover_done, 0); /* dropped, not called */
  PT_EQ_INT(n.stopped, 0);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
