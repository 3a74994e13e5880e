/* The service: one device on a libuv loop, with the seed's
 * LocalNetworkP2PService surface (posp2p/service.h).
 *
 * Structure. A service owns, while it runs, one posp2p_uv_peer (sockets,
 * engine, timer). The transport frees that peer from the loop, after its
 * last handle is closed, and calls on_closed; the service may be gone by
 * then (posp2p_service_del of a running service on the caller's loop), so
 * the transport's user_data is a small link object that outlives the
 * service: the service clears link->svc when it goes, and the link is
 * freed in on_closed. Discover and connect requests own a uv_timer each and
 * are freed in the timer's close callback for the same reason.
 *
 * Subscriptions live in one array. Callbacks may subscribe and
 * unsubscribe while an event is being dispatched, so removal only marks an
 * entry dead and the array is compacted when no dispatch is running;
 * dispatch walks indexes (never pointers, the array may be reallocated)
 * up to the count it started with. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api_int.h"

enum { SVC_STOPPED = 0, SVC_RUNNING, SVC_STOPPING };
enum { SUB_EVENT = 1, SUB_MESSAGE_TYPE, SUB_MESSAGES, SUB_DEVICES };

typedef struct {
  posp2p_sub_id id;
  int kind;
  int msg_type; /* SUB_MESSAGE_TYPE */
  union {
    posp2p_service_event_cb event;
    posp2p_service_message_cb message;
    posp2p_service_device_cb device;
  } cb;
  void *user_data;
  bool dead;
} sub;

typedef struct svc_link {
  posp2p_service *svc;
} svc_link;

typedef struct pending {
  uv_timer_t timer;
  posp2p_service *svc;  /* NULL once detached (service deleted) */
  bool is_connect;
  posp2p_service_discover_cb discover_cb;
  posp2p_service_connect_cb connect_cb;
  void *user_data;
  posp2p_conn_id conn;  /* connect */
  bool already;         /* connect: was connected already; report success */
  char device_id[POSP2P_UUID_LEN + 1];
  struct pending *next, *prev;
} pending;

struct posp2p_service {
  char id[POSP2P_UUID_LEN + 1];
  char *name;
  int type;
  uint16_t port;
  posp2p_service_opts opts;     /* strings below are our copies */
  uint32_t bind_ip, broadcast_ip;
  posp2p_peer_config engine;
  char *hostname, *ip_address;  /* copies of engine config strings */
  posp2p_peer_store store;
  bool has_store;

  uv_loop_t *loop;
  uv_loop_t *own_loop;          /* non-NULL when the service made the loop */
  posp2p_uv_ctx *ctx;
  bool own_ctx;
  bool in_run;                  /* inside posp2p_service_run */

  posp2p_uv_peer *up;
  svc_link *link;
  int state;
  posp2p_addr tcp_addr;

  sub *subs;
  size_t nsubs, subs_cap;
  posp2p_sub_id next_sub;
  int depth;                    /* dispatch nesting */
  bool subs_dirty;

  pending *pendings;
};

/* ---- Options, creation ------------------------------------------------------- */

void posp2p_service_opts_init(posp2p_service_opts *o) {
  memset(o, 0, sizeof(*o));
  o->connect_timeout_ms = POSP2P_SERVICE_CONNECT_MS;
  o->stop_timeout_ms = 3000;
}

static int fail(posp2p_uv_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(posp2p_uv_error *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
  }
  return code;
}

static void free_fields(posp2p_service *s) {
  API_FREE(s->name);
  API_FREE(s->hostname);
  API_FREE(s->ip_address);
  API_FREE(s->subs);
}

int posp2p_service_new(posp2p_service **out, const char *name, int type,
                       uint16_t port, const posp2p_service_opts *opts,
                       posp2p_uv_error *err) {
  if (out == NULL) return fail(err, POSP2P_ERR_INVAL, "invalid argument");
  *out = NULL;
  if (type <= 0 || posp2p_device_type_name(type) == NULL)
    return fail(err, POSP2P_ERR_INVAL, "invalid device type");
  posp2p_service_opts o;
  if (opts != NULL) o = *opts;
  else posp2p_service_opts_init(&o);
  if (o.connect_timeout_ms == 0) o.connect_timeout_ms = POSP2P_SERVICE_CONNECT_MS;
  if (o.stop_timeout_ms == 0) o.stop_timeout_ms = 3000;

  posp2p_service *s = API_CALLOC(sizeof(*s));
  if (s == NULL) return fail(err, POSP2P_ERR_NOMEM, "out of memory");
  s->type = type;
  s->port = port;
  s->next_sub = 1;
  s->name = posp2p__api_strdup(name ? name : "");
  if (s->name == NULL) goto nomem;

  s->bind_ip = 0x7f000001u;
  if (o.bind_ip != NULL && posp2p_uv_ip_parse(o.bind_ip, &s->bind_ip) != 0) {
    int r = fail(err, POSP2P_ERR_INVAL, "bind address '%s' is not IPv4", o.bind_ip);
    free_fields(s);
    API_FREE(s);
    return r;
  }
  s->broadcast_ip = 0x7fffffffu;
  if (o.broadcast_ip != NULL &&
      posp2p_uv_ip_parse(o.broadcast_ip, &s->broadcast_ip) != 0) {
    int r = fail(err, POSP2P_ERR_INVAL, "broadcast address '%s' is not IPv4",
                 o.broadcast_ip);
    free_fields(s);
    API_FREE(s);
    return r;
  }
  if (!o.allow_lan && !posp2p_uv_ip_is_loopback(s->broadcast_ip)) {
    char b[16];
    posp2p_uv_ip_format(s->broadcast_ip, b);
    int r = fail(err, POSP2P_ERR_CONFIG,
                 "broadcast address %s is outside 127.0.0.0/8 (set allow_lan "
                 "for a LAN or a network namespace)", b);
    free_fields(s);
    API_FREE(s);
    return r;
  }

  if (o.device_id != NULL && o.device_id[0] != '\0') {
    if (!posp2p_uuid_valid(o.device_id)) {
      int r = fail(err, POSP2P_ERR_INVAL, "device id '%s' is not a UUID", o.device_id);
      free_fields(s);
      API_FREE(s);
      return r;
    }
    for (size_t i = 0; i < POSP2P_UUID_LEN; i++) {
      char c = o.device_id[i];
      s->id[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    s->id[POSP2P_UUID_LEN] = '\0';
  } else {
    uint8_t rnd[16];
    posp2p_uv_random(rnd, sizeof(rnd));
    posp2p_uuid_format(rnd, s->id);
  }

  if (o.engine != NULL) s->engine = *o.engine;
  else posp2p_peer_config_init(&s->engine);
  if (s->engine.hostname != NULL) {
    s->hostname = posp2p__api_strdup(s->engine.hostname);
    if (s->hostname == NULL) goto nomem;
  }
  if (s->engine.ip_address != NULL) {
    s->ip_address = posp2p__api_strdup(s->engine.ip_address);
    if (s->ip_address == NULL) goto nomem;
  }
  s->engine.hostname = s->hostname;
  s->engine.ip_address = s->ip_address;
  s->engine.device_id = s->id;
  s->engine.device_name = s->name;
  s->engine.device_type = type;
  s->engine.listen_port = o.no_listen ? 0 : port;
  s->engine.discovery_port = o.discovery_port ? o.discovery_port : POSP2P_DISCOVERY_PORT;
  s->engine.broadcast_ip = s->broadcast_ip;
  posp2p_error cerr;
  memset(&cerr, 0, sizeof(cerr));
  if (posp2p_peer_config_check(&s->engine, &cerr) != 0) {
    int r = fail(err, POSP2P_ERR_CONFIG, "engine config: %s", cerr.message);
    free_fields(s);
    API_FREE(s);
    return r;
  }
  if (o.store != NULL) {
    s->store = *o.store;
    s->has_store = true;
  }
  /* The copies above own the strings; the caller's may go away. */
  o.device_id = NULL;
  o.bind_ip = NULL;
  o.broadcast_ip = NULL;
  o.engine = NULL;
  o.store = NULL;
  s->opts = o;

  if (o.ctx != NULL) {
    s->ctx = o.ctx;
    s->loop = posp2p_uv_ctx_loop(o.ctx);
  } else {
    s->own_loop = API_MALLOC(sizeof(*s->own_loop));
    if (s->own_loop == NULL) goto nomem;
    int r = uv_loop_init(s->own_loop);
    if (r != 0) {
      API_FREE(s->own_loop);
      free_fields(s);
      API_FREE(s);
      return fail(err, POSP2P_UV_CODE(r), "event loop: %s", uv_strerror(r));
    }
    s->loop = s->own_loop;
    r = posp2p_uv_ctx_new(&s->ctx, s->loop);
    if (r != 0) {
      uv_loop_close(s->own_loop);
      API_FREE(s->own_loop);
      free_fields(s);
      API_FREE(s);
      return fail(err, r, "transport context: %s", posp2p_uv_strerror(r));
    }
    s->own_ctx = true;
  }
  *out = s;
  return 0;

nomem:
  free_fields(s);
  API_FREE(s);
  return fail(err, POSP2P_ERR_NOMEM, "out of memory");
}

/* ---- Pending discover / connect requests -------------------------------------- */

static void pending_close_cb(uv_handle_t *h) { API_FREE(h->data); }

static void pending_unlink(posp2p_service *s, pending *q) {
  if (q->prev) q->prev->next = q->next;
  else s->pendings = q->next;
  if (q->next) q->next->prev = q->prev;
  q->next = q->prev = NULL;
}

/* Remove q from the service and release it (after its timer closes). */
static void pending_finish(posp2p_service *s, pending *q) {
  pending_unlink(s, q);
  q->svc = NULL;
  uv_close((uv_handle_t *)&q->timer, pending_close_cb);
}

static pending *pending_new(posp2p_service *s) {
  pending *q = API_CALLOC(sizeof(*q));
  if (q == NULL) return NULL;
  if (uv_timer_init(s->loop, &q->timer) != 0) {
    API_FREE(q);
    return NULL;
  }
  q->timer.data = q;
  q->svc = s;
  q->next = s->pendings;
  if (s->pendings) s->pendings->prev = q;
  s->pendings = q;
  return q;
}

/* Registry except this device, as copies (names point into the engine). */
static size_t collect(const posp2p_service *s, bool connected_only,
                      posp2p_peer_device *out, size_t max) {
  if (s->up == NULL) return 0;
  posp2p_peer *p = posp2p_uv_peer_engine(s->up);
  size_t n = posp2p_peer_device_count(p), k = 0;
  for (size_t i = 0; i < n; i++) {
    const posp2p_peer_device *d = posp2p_peer_device_at(p, i);
    if (d == NULL || strcmp(d->id, s->id) == 0) continue;
    if (connected_only && d->status != POSP2P_DEV_CONNECTED) continue;
    if (k < max) out[k] = *d;
    k++;
  }
  return k;
}

static void discover_complete(posp2p_service *s, pending *q, int code) {
  posp2p_service_discover_cb cb = q->discover_cb;
  void *ud = q->user_data;
  pending_finish(s, q);
  size_t n = collect(s, false, NULL, 0);
  posp2p_peer_device *devs = n ? API_MALLOC(n * sizeof(*devs)) : NULL;
  if (n != 0 && devs == NULL) {
    n = 0;
    if (code == 0) code = POSP2P_ERR_NOMEM;
  }
  if (devs != NULL) n = collect(s, false, devs, n);
  cb(s, code, devs, n, ud);
  API_FREE(devs);
}

static void connect_complete(posp2p_service *s, pending *q, int code,
                             const char *device_id) {
  posp2p_service_connect_cb cb = q->connect_cb;
  void *ud = q->user_data;
  char id[POSP2P_UUID_LEN + 1];
  snprintf(id, sizeof(id), "%s", device_id ? device_id : q->device_id);
  pending_finish(s, q);
  if (cb != NULL) cb(s, code, id, ud);
}

static void pending_timer_cb(uv_timer_t *t) {
  pending *q = t->data;
  posp2p_service *s = q->svc;
  if (s == NULL) return;
  if (!q->is_connect) {
    discover_complete(s, q, 0);
    return;
  }
  if (q->already) {
    connect_complete(s, q, 0, NULL);
    return;
  }
  posp2p_conn_id conn = q->conn;
  connect_complete(s, q, POSP2P_ERR_TIMEOUT, NULL);
  if (s->up != NULL && s->state == SVC_RUNNING)
    (void)posp2p_uv_peer_conn_close(s->up, conn, "connect timeout");
}

/* Fire every pending callback with code (stop), or drop them (del). */
static void pendings_end(posp2p_service *s, int code, bool call) {
  while (s->pendings != NULL) {
    pending *q = s->pendings;
    if (!call) pending_finish(s, q);
    else if (q->is_connect) connect_complete(s, q, code, NULL);
    else discover_complete(s, q, code);
  }
}

/* ---- Subscriptions ------------------------------------------------------------ */

static void subs_compact(posp2p_service *s) {
  size_t j = 0;
  for (size_t i = 0; i < s->nsubs; i++)
    if (!s->subs[i].dead) s->subs[j++] = s->subs[i];
  s->nsubs = j;
  s->subs_dirty = false;
}

static int sub_add(posp2p_service *s, const sub *e, posp2p_sub_id *id) {
  if (s->nsubs == s->subs_cap) {
    size_t ncap = s->subs_cap ? s->subs_cap * 2 : 8;
    sub *ns = API_MALLOC(ncap * sizeof(*ns));
    if (ns == NULL) return POSP2P_ERR_NOMEM;
    if (s->nsubs) memcpy(ns, s->subs, s->nsubs * sizeof(*ns));
    API_FREE(s->subs);
    s->subs = ns;
    s->subs_cap = ncap;
  }
  s->subs[s->nsubs] = *e;
  s->subs[s->nsubs].id = s->next_sub++;
  s->subs[s->nsubs].dead = false;
  if (id != NULL) *id = s->subs[s->nsubs].id;
  s->nsubs++;
  return 0;
}

int posp2p_service_on_message(posp2p_service *s, int type,
                              posp2p_service_message_cb cb, void *user_data,
                              posp2p_sub_id *id) {
  if (s == NULL || cb == NULL || type <= 0 || posp2p_message_type_name(type) == NULL)
    return POSP2P_ERR_INVAL;
  sub e = {.kind = SUB_MESSAGE_TYPE, .msg_type = type, .cb.message = cb,
           .user_data = user_data};
  return sub_add(s, &e, id);
}

int posp2p_service_subscribe_messages(posp2p_service *s,
                                      posp2p_service_message_cb cb,
                                      void *user_data, posp2p_sub_id *id) {
  if (s == NULL || cb == NULL) return POSP2P_ERR_INVAL;
  sub e = {.kind = SUB_MESSAGES, .cb.message = cb, .user_data = user_data};
  return sub_add(s, &e, id);
}

int posp2p_service_subscribe_devices(posp2p_service *s,
                                     posp2p_service_device_cb cb,
                                     void *user_data, posp2p_sub_id *id) {
  if (s == NULL || cb == NULL) return POSP2P_ERR_INVAL;
  sub e = {.kind = SUB_DEVICES, .cb.device = cb, .user_data = user_data};
  return sub_add(s, &e, id);
}

int posp2p_service_subscribe_events(posp2p_service *s,
                                    posp2p_service_event_cb cb,
                                    void *user_data, posp2p_sub_id *id) {
  if (s == NULL || cb == NULL) return POSP2P_ERR_INVAL;
  sub e = {.kind = SUB_EVENT, .cb.event = cb, .user_data = user_data};
  return sub_add(s, &e, id);
}

int posp2p_service_unsubscribe(posp2p_service *s, posp2p_sub_id id) {
  if (s == NULL) return POSP2P_ERR_INVAL;
  for (size_t i = 0; i < s->nsubs; i++) {
    if (s->subs[i].id != id || s->subs[i].dead) continue;
    s->subs[i].dead = true;
    if (s->depth > 0) s->subs_dirty = true;
    else subs_compact(s);
    return 0;
  }
  return POSP2P_ERR_INVAL;
}

/* ---- Transport callbacks -------------------------------------------------------- */

static void dispatch_message(posp2p_service *s, const posp2p_envelope *m, size_t n) {
  /* Handlers for the type first (the seed calls them before adding the
   * message to its stream), then the all-messages subscribers. */
  for (size_t i = 0; i < n; i++) {
    if (s->subs[i].dead || s->subs[i].kind != SUB_MESSAGE_TYPE ||
        s->subs[i].msg_type != (int)m->message_type)
      continue;
    s->subs[i].cb.message(s, m, s->subs[i].user_data);
  }
  for (size_t i = 0; i < n; i++) {
    if (s->subs[i].dead || s->subs[i].kind != SUB_MESSAGES) continue;
    s->subs[i].cb.message(s, m, s->subs[i].user_data);
  }
}

static pending *find_connect(posp2p_service *s, posp2p_conn_id conn) {
  for (pending *q = s->pendings; q != NULL; q = q->next)
    if (q->is_connect && q->conn == conn) return q;
  return NULL;
}

static void on_event(posp2p_uv_peer *up, const posp2p_peer_event *ev, void *ud) {
  svc_link *link = ud;
  posp2p_service *s = link->svc;
  (void)up;
  if (s == NULL) return;
  s->depth++;
  size_t n = s->nsubs;
  for (size_t i = 0; i < n; i++) {
    if (s->subs[i].dead || s->subs[i].kind != SUB_EVENT) continue;
    s->subs[i].cb.event(s, ev, s->subs[i].user_data);
  }
  switch (ev->type) {
  case POSP2P_PEER_EV_DEVICE:
    for (size_t i = 0; i < n; i++) {
      if (s->subs[i].dead || s->subs[i].kind != SUB_DEVICES) continue;
      s->subs[i].cb.device(s, ev->device, ev->prev_status, s->subs[i].user_data);
    }
    break;
  case POSP2P_PEER_EV_MESSAGE:
  case POSP2P_PEER_EV_ERROR_RECEIVED:
    if (ev->msg != NULL) dispatch_message(s, ev->msg, n);
    break;
  case POSP2P_PEER_EV_CONN_READY: {
    pending *q = find_connect(s, ev->conn);
    if (q != NULL) connect_complete(s, q, 0, ev->device ? ev->device->id : NULL);
    break;
  }
  case POSP2P_PEER_EV_CONN_CLOSED: {
    pending *q = find_connect(s, ev->conn);
    if (q != NULL)
      connect_complete(s, q, ev->code != 0 ? ev->code : POSP2P_ERR_PEER_CLOSED,
                       ev->device ? ev->device->id : NULL);
    break;
  }
  default: break;
  }
  s->depth--;
  if (s->depth == 0 && s->subs_dirty) subs_compact(s);
}

static void on_closed(posp2p_uv_peer *up, void *ud) {
  svc_link *link = ud;
  posp2p_service *s = link->svc;
  (void)up;
  API_FREE(link);
  if (s == NULL) return;
  s->up = NULL;
  s->link = NULL;
  s->state = SVC_STOPPED;
  s->tcp_addr.ip = 0;
  s->tcp_addr.port = 0;
  if (s->opts.on_stopped != NULL) s->opts.on_stopped(s, s->opts.user_data);
}

static void on_warning(posp2p_uv_peer *up, int code, const char *text, void *ud) {
  svc_link *link = ud;
  posp2p_service *s = link->svc;
  (void)up;
  if (s != NULL && s->opts.on_warning != NULL)
    s->opts.on_warning(s, code, text, s->opts.user_data);
}

static const posp2p_uv_callbacks uv_callbacks = {on_event, on_closed, on_warning};

/* ---- Lifecycle --------------------------------------------------------------------- */

int posp2p_service_start(posp2p_service *s, posp2p_uv_error *err) {
  if (s == NULL) return fail(err, POSP2P_ERR_INVAL, "invalid argument");
  if (s->state != SVC_STOPPED)
    return fail(err, POSP2P_ERR_STATE, "service already %s",
                s->state == SVC_RUNNING ? "running" : "stopping");
  svc_link *link = API_CALLOC(sizeof(*link));
  if (link == NULL) return fail(err, POSP2P_ERR_NOMEM, "out of memory");
  link->svc = s;
  posp2p_uv_opts uo;
  posp2p_uv_opts_init(&uo);
  uo.bind_ip = s->bind_ip;
  uo.tcp_port = s->port;
  uo.tcp_listen = !s->opts.no_listen;
  uo.allow_lan = s->opts.allow_lan;
  posp2p_uv_peer *up = NULL;
  int r = posp2p_uv_peer_new(&up, s->ctx, &s->engine, s->has_store ? &s->store : NULL,
                             &uo, &uv_callbacks, link, err);
  if (r != 0) {
    /* A failed peer is freed silently (no on_closed): the link is ours. */
    API_FREE(link);
    return r;
  }
  s->up = up;
  s->link = link;
  if (s->opts.restore != NULL) {
    r = s->opts.restore(s, posp2p_uv_peer_engine(up), posp2p_uv_peer_now(up),
                        s->opts.user_data);
    if (r < 0) {
      fail(err, r, "restore: %s", posp2p_uv_strerror(r));
      goto abort;
    }
  }
  r = posp2p_uv_peer_start(up, err);
  if (r != 0) goto abort;
  s->state = SVC_RUNNING;
  s->tcp_addr = posp2p_uv_peer_tcp_addr(up);
  return 0;

abort:
  /* The peer closes from the loop; on_closed must not report a stop of a
   * service that never started, so detach it first. */
  link->svc = NULL;
  s->up = NULL;
  s->link = NULL;
  posp2p_uv_peer_abort(up);
  return r;
}

int posp2p_service_stop(posp2p_service *s, const char *reason) {
  if (s == NULL) return POSP2P_ERR_INVAL;
  if (s->state != SVC_RUNNING) return POSP2P_ERR_STATE;
  s->state = SVC_STOPPING;
  pendings_end(s, POSP2P_ERR_SHUTDOWN, true);
  if (s->up != NULL &&
      posp2p_uv_peer_shutdown(s->up, reason ? reason : "shutdown",
                              s->opts.stop_timeout_ms) != 0)
    posp2p_uv_peer_abort(s->up);
  return 0;
}

int posp2p_service_abort(posp2p_service *s) {
  if (s == NULL) return POSP2P_ERR_INVAL;
  if (s->state == SVC_STOPPED) return POSP2P_ERR_STATE;
  if (s->state == SVC_RUNNING) pendings_end(s, POSP2P_ERR_SHUTDOWN, true);
  s->state = SVC_STOPPING;
  if (s->up != NULL) posp2p_uv_peer_abort(s->up);
  return 0;
}

void posp2p_service_del(posp2p_service *s) {
  if (s == NULL) return;
  pendings_end(s, 0, false);
  if (s->up != NULL) {
    s->link->svc = NULL; /* on_closed frees the link */
    posp2p_uv_peer_abort(s->up);
    s->up = NULL;
    s->link = NULL;
  }
  if (s->own_loop != NULL) {
    /* Only this service's handles live on the owned loop: run it until
     * every close callback has run, then release it. */
    uv_run(s->own_loop, UV_RUN_DEFAULT);
    (void)posp2p_uv_ctx_del(s->ctx);
    (void)uv_loop_close(s->own_loop);
    API_FREE(s->own_loop);
  }
  free_fields(s);
  API_FREE(s);
}

static void run_timer_cb(uv_timer_t *t) {
  bool *expired = t->data;
  *expired = true;
}

static void run_timer_close_cb(uv_handle_t *h) { (void)h; }

int posp2p_service_run(posp2p_service *s, uint32_t timeout_ms,
                       bool (*until)(void *arg), void *arg) {
  if (s == NULL) return POSP2P_ERR_INVAL;
  if (s->in_run) return POSP2P_ERR_STATE;
  s->in_run = true;
  bool expired = false;
  uv_timer_t t;
  uv_timer_init(s->loop, &t);
  t.data = &expired;
  uv_update_time(s->loop);
  uv_timer_start(&t, run_timer_cb, timeout_ms, 0);
  int ok = 0;
  /* The deadline timer keeps the loop alive, so UV_RUN_ONCE always
   * returns, at the latest when it fires. */
  for (;;) {
    if (until != NULL && until(arg)) {
      ok = 1;
      break;
    }
    if (expired) break;
    uv_run(s->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&t, run_timer_close_cb);
  uv_run(s->loop, UV_RUN_NOWAIT); /* runs the close callback */
  s->in_run = false;
  return ok;
}

/* ---- Getters -------------------------------------------------------------------- */

bool posp2p_service_is_running(const posp2p_service *s) {
  return s != NULL && s->state == SVC_RUNNING;
}
const char *posp2p_service_device_id(const posp2p_service *s) { return s->id; }
const char *posp2p_service_device_name(const posp2p_service *s) { return s->name; }
int posp2p_service_device_type(const posp2p_service *s) { return s->type; }
posp2p_addr posp2p_service_tcp_addr(const posp2p_service *s) { return s->tcp_addr; }
uv_loop_t *posp2p_service_loop(const posp2p_service *s) { return s->loop; }
posp2p_uv_peer *posp2p_service_uv(const posp2p_service *s) { return s->up; }
posp2p_peer *posp2p_service_engine(const posp2p_service *s) {
  return s->up ? posp2p_uv_peer_engine(s->up) : NULL;
}

int posp2p_service_devices(const posp2p_service *s, posp2p_peer_device *out,
                           size_t max, size_t *count) {
  if (s == NULL || count == NULL || (out == NULL && max > 0)) return POSP2P_ERR_INVAL;
  *count = collect(s, false, out, max);
  return 0;
}

int posp2p_service_connected_devices(const posp2p_service *s,
                                     posp2p_peer_device *out, size_t max,
                                     size_t *count) {
  if (s == NULL || count == NULL || (out == NULL && max > 0)) return POSP2P_ERR_INVAL;
  *count = collect(s, true, out, max);
  return 0;
}

/* ---- Discover, connect --------------------------------------------------------- */

int posp2p_service_discover(posp2p_service *s, uint32_t timeout_ms,
                            posp2p_service_discover_cb cb, void *user_data) {
  if (s == NULL || cb == NULL) return POSP2P_ERR_INVAL;
  if (s->state != SVC_RUNNING) return POSP2P_ERR_STATE;
  pending *q = pending_new(s);
  if (q == NULL) return POSP2P_ERR_NOMEM;
  int r = posp2p_uv_peer_discover(s->up);
  if (r != 0) {
    pending_finish(s, q);
    return r;
  }
  q->discover_cb = cb;
  q->user_data = user_data;
  uv_timer_start(&q->timer, pending_timer_cb, timeout_ms, 0);
  return 0;
}

static int connect_to(posp2p_service *s, const posp2p_addr *to,
                      const char *expected_id, posp2p_service_connect_cb cb,
                      void *user_data) {
  pending *q = pending_new(s);
  if (q == NULL) return POSP2P_ERR_NOMEM;
  posp2p_conn_id conn = 0;
  int r = posp2p_uv_peer_connect(s->up, to, POSP2P_PEER_WIRE_V2, expected_id, &conn);
  if (r != 0 || s->state != SVC_RUNNING) {
    pending_finish(s, q);
    return r != 0 ? r : POSP2P_ERR_SHUTDOWN;
  }
  q->is_connect = true;
  q->conn = conn;
  q->connect_cb = cb;
  q->user_data = user_data;
  snprintf(q->device_id, sizeof(q->device_id), "%s", expected_id ? expected_id : "");
  uv_timer_start(&q->timer, pending_timer_cb, s->opts.connect_timeout_ms, 0);
  return 0;
}

int posp2p_service_connect(posp2p_service *s, const char *device_id,
                           posp2p_service_connect_cb cb, void *user_data) {
  if (s == NULL || device_id == NULL) return POSP2P_ERR_INVAL;
  if (s->state != SVC_RUNNING) return POSP2P_ERR_STATE;
  if (!posp2p_uuid_valid(device_id)) return POSP2P_ERR_INVAL;
  const posp2p_peer_device *d =
      posp2p_peer_device_find(posp2p_uv_peer_engine(s->up), device_id);
  if (d == NULL) return POSP2P_ERR_UNKNOWN_DEVICE;
  if (d->addr.ip == 0 || d->addr.port == 0) return POSP2P_ERR_INVAL;
  if (d->status == POSP2P_DEV_CONNECTED && d->conn != 0) {
    /* Already connected: a second connection would only replace the first
     * (HELLO-13). Report success from the loop, as for a new one. */
    pending *q = pending_new(s);
    if (q == NULL) return POSP2P_ERR_NOMEM;
    q->is_connect = true;
    q->already = true;
    q->conn = d->conn;
    q->connect_cb = cb;
    q->user_data = user_data;
    snprintf(q->device_id, sizeof(q->device_id), "%s", d->id);
    uv_timer_start(&q->timer, pending_timer_cb, 0, 0);
    return 0;
  }
  posp2p_addr to = d->addr;
  char id[POSP2P_UUID_LEN + 1];
  snprintf(id, sizeof(id), "%s", d->id);
  return connect_to(s, &to, id, cb, user_data);
}

int posp2p_service_connect_addr(posp2p_service *s, const posp2p_addr *to,
                                const char *expected_id,
                                posp2p_service_connect_cb cb, void *user_data) {
  if (s == NULL || to == NULL || to->port == 0) return POSP2P_ERR_INVAL;
  if (expected_id != NULL && !posp2p_uuid_valid(expected_id)) return POSP2P_ERR_INVAL;
  if (s->state != SVC_RUNNING) return POSP2P_ERR_STATE;
  return connect_to(s, to, expected_id, cb, user_data);
}

/* ---- Sending --------------------------------------------------------------------- */

int posp2p_service_send(posp2p_service *s, const posp2p_envelope *msg,
                        char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (s == NULL || msg == NULL) return POSP2P_ERR_INVAL;
  if (message_id_out != NULL) message_id_out[0] = '\0';
  if (s->state != SVC_RUNNING || s->up == NULL) return POSP2P_ERR_STATE;
  return posp2p_uv_peer_send(s->up, msg, message_id_out);
}

static bool opaque_type(int t) {
  switch (t) {
  case POSP2P_MSG_ORDER_SYNC:
  case POSP2P_MSG_PRODUCT_SYNC:
  case POSP2P_MSG_CONFIG_SYNC:
  case POSP2P_MSG_SERVER_MODE:
  case POSP2P_MSG_BROADCAST_UPDATE:
  case POSP2P_MSG_DEVICE_COMMAND:
  case POSP2P_MSG_DEVICE_RESPONSE:
  case POSP2P_MSG_WARNING:
    return true;
  default:
    return false;
  }
}

int posp2p_service_send_json(posp2p_service *s, int type, const char *to,
                             int to_type, const char *json,
                             char message_id_out[POSP2P_UUID_LEN + 1]) {
  if (message_id_out != NULL) message_id_out[0] = '\0';
  if (s == NULL || !opaque_type(type) || (to != NULL && to_type != 0))
    return POSP2P_ERR_INVAL;
  posp2p_envelope e;
  Posp2p__V2__OpaquePayload op;
  posp2p_envelope_init(&e);
  e.message_type = (Posp2p__V2__MessageType)type;
  if (to != NULL) {
    e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
    e.to_device_id = (char *)(uintptr_t)to;
  } else if (to_type != 0) {
    e.opt_to_device_type_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    e.to_device_type = (Posp2p__V2__DeviceType)to_type;
  }
  if (json != NULL) {
    posp2p__v2__opaque_payload__init(&op);
    op.json = (char *)(uintptr_t)json;
    e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_OPAQUE;
    e.opaque = &op;
  }
  return posp2p_service_send(s, &e, message_id_out);
}
