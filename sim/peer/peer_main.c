/* posp2p-peer: one posp2p device as a process, driven by a JSON-lines
 * control channel on stdin/stdout (brief: control-protocol.md). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"

static const char *prog = "posp2p-peer";

/* ---- Logging ---------------------------------------------------------------- */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

uint64_t daemon_t_ms(const pdaemon *d) {
  return d->loop ? uv_now(d->loop) - d->start_ms : 0;
}

void daemon_log(pdaemon *d, log_level lvl, const char *fmt, ...) {
  if (lvl > d->o.log_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (d->o.log_json) {
    json_t *o = json_pack("{s:I, s:s, s:s, s:s}", "t_ms",
                          (json_int_t)daemon_t_ms(d), "level", level_names[lvl],
                          "name", d->o.name ? d->o.name : "", "msg", msg);
    char *s = o ? json_text(o, NULL) : NULL;
    if (s) fprintf(stderr, "%s\n", s);
    free(s);
    json_decref(o);
  } else {
    fprintf(stderr, "%s[%s] %s: %s\n", prog, d->o.name ? d->o.name : "",
            level_names[lvl], msg);
  }
  fflush(stderr);
}

/* One-line startup failure: "posp2p-peer: error: <what> (<detail>)". */
static int fatal(int code, const char *what, const char *detail) {
  if (detail != NULL && detail[0] != '\0')
    fprintf(stderr, "%s: error: %s (%s)\n", prog, what, detail);
  else
    fprintf(stderr, "%s: error: %s\n", prog, what);
  return code;
}

/* A "<what>: <detail>" message as fatal's two parts (split at the last
 * ": "). */
static int fatal_msg(int code, const char *message) {
  char buf[1024];
  snprintf(buf, sizeof(buf), "%s", message);
  char *sep = NULL;
  for (char *p = strstr(buf, ": "); p != NULL; p = strstr(p + 1, ": ")) sep = p;
  if (sep == NULL) return fatal(code, buf, NULL);
  *sep = '\0';
  return fatal(code, buf, sep + 2);
}

/* ---- Options ------------------------------------------------------------------ */

enum {
  OPT_HELP = 'h',
  OPT_NAME = 256, OPT_TYPE, OPT_ID, OPT_BIND, OPT_TCP_PORT, OPT_UDP_PORT,
  OPT_NO_LISTEN, OPT_BROADCAST, OPT_ALLOW_LAN, OPT_UDP_REUSE, OPT_HEARTBEAT,
  OPT_TIMEOUT, OPT_ACK_TIMEOUT, OPT_MAX_RETRIES, OPT_HANDSHAKE, OPT_ANNOUNCE,
  OPT_MAX_FRAME, OPT_MAX_CONN, OPT_RECONNECT, OPT_SHUTDOWN_MS, OPT_WIRE,
  OPT_CONNECT, OPT_DISCOVER, OPT_STATE_DIR, OPT_STORE_SYNC, OPT_LOG_FORMAT,
  OPT_LOG_LEVEL, OPT_CONTROL, OPT_UTC_OFFSET
};

static const struct option long_opts[] = {
  {"help", no_argument, NULL, OPT_HELP},
  {"name", required_argument, NULL, OPT_NAME},
  {"type", required_argument, NULL, OPT_TYPE},
  {"id", required_argument, NULL, OPT_ID},
  {"bind", required_argument, NULL, OPT_BIND},
  {"tcp-port", required_argument, NULL, OPT_TCP_PORT},
  {"udp-port", required_argument, NULL, OPT_UDP_PORT},
  {"no-listen", no_argument, NULL, OPT_NO_LISTEN},
  {"broadcast", required_argument, NULL, OPT_BROADCAST},
  {"allow-lan-broadcast", no_argument, NULL, OPT_ALLOW_LAN},
  {"udp-reuseaddr", no_argument, NULL, OPT_UDP_REUSE},
  {"heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT},
  {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
  {"ack-timeout-ms", required_argument, NULL, OPT_ACK_TIMEOUT},
  {"max-retries", required_argument, NULL, OPT_MAX_RETRIES},
  {"handshake-ms", required_argument, NULL, OPT_HANDSHAKE},
  {"announce-ms", required_argument, NULL, OPT_ANNOUNCE},
  {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
  {"max-connections", required_argument, NULL, OPT_MAX_CONN},
  {"reconnect-ms", required_argument, NULL, OPT_RECONNECT},
  {"shutdown-ms", required_argument, NULL, OPT_SHUTDOWN_MS},
  {"wire", required_argument, NULL, OPT_WIRE},
  {"connect", required_argument, NULL, OPT_CONNECT},
  {"discover", no_argument, NULL, OPT_DISCOVER},
  {"state-dir", required_argument, NULL, OPT_STATE_DIR},
  {"store-sync", required_argument, NULL, OPT_STORE_SYNC},
  {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
  {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
  {"control", required_argument, NULL, OPT_CONTROL},
  {"utc-offset-minutes", required_argument, NULL, OPT_UTC_OFFSET},
  {NULL, 0, NULL, 0}};

static void usage(FILE *f) {
  fprintf(f,
"Usage: %s [OPTIONS]\n"
"One posp2p device (main POS, ordering tablet, secondary POS, KDS or\n"
"customer display) on TCP + UDP, driven by JSON lines on stdin/stdout.\n"
"\n"
"Identity\n"
"  --name NAME               device name (default: posp2p-<type>)\n"
"  --type TYPE               mainPOS | orderingTablet | secondaryPOS | kds |\n"
"                            customerDisplay (default: mainPOS)\n"
"  --id UUID                 device id (default: read from\n"
"                            <state-dir>/<name>.id, else generated and saved)\n"
"Network\n"
"  --bind ADDR               TCP listener, unicast UDP and source of outgoing\n"
"                            connections (default: 127.0.0.1)\n"
"  --tcp-port PORT           TCP data port; 0 = kernel-chosen (default: 8766)\n"
"  --no-listen               accept no connections (advertise port 0)\n"
"  --udp-port PORT           UDP discovery port (default: 8765)\n"
"  --broadcast ADDR          discovery broadcast address (default:\n"
"                            127.255.255.255). An address outside 127.0.0.0/8\n"
"                            (e.g. 255.255.255.255) is refused unless\n"
"                            --allow-lan-broadcast is given\n"
"  --allow-lan-broadcast     allow a broadcast address and datagrams outside\n"
"                            127.0.0.0/8 (real LANs, test network namespaces)\n"
"  --udp-reuseaddr           SO_REUSEADDR on the unicast UDP socket too (by\n"
"                            default a second device on the same ADDR:PORT\n"
"                            fails instead of stealing its unicast replies)\n"
"  --wire v2|legacy|auto     wire of accepted connections and discovery\n"
"                            requests (default: auto)\n"
"  --connect HOST:PORT       connect to this device (the main POS) at start and\n"
"                            reconnect with backoff; repeatable (max %d)\n"
"  --discover                find the main POS by discovery and connect to it\n"
"Timers and limits (milliseconds; compress them for tests)\n"
"  --heartbeat-ms N          heartbeat interval (default: 15000)\n"
"  --timeout-ms N            device timeout (default: 60000)\n"
"  --ack-timeout-ms N        first retransmission after (default: 2000)\n"
"  --max-retries N           retransmissions before delivery fails (default: 5)\n"
"  --handshake-ms N          handshake deadline (default: 10000)\n"
"  --announce-ms N           discovery announce interval, 0 = never\n"
"                            (default: 30000)\n"
"  --reconnect-ms N          first reconnect delay, doubling up to 30000\n"
"                            (default: 1000, the least SPEC CONN-22 allows)\n"
"  --shutdown-ms N           graceful shutdown deadline (default: 3000)\n"
"  --max-frame N             largest frame accepted (default: 1048576)\n"
"  --max-connections N       (default: 1024)\n"
"Persistence\n"
"  --state-dir DIR           outbox, dedup ids and registry in\n"
"                            DIR/<id>.sqlite3; \"none\" keeps everything in\n"
"                            memory (default: ./posp2p-state)\n"
"  --store-sync normal|full  SQLite synchronous level: normal survives a\n"
"                            process crash (kill -9), full also a power loss\n"
"                            (default: normal)\n"
"Control and logs\n"
"  --control stdio|none      JSON command lines on stdin, replies and events\n"
"                            on stdout (default: stdio)\n"
"  --log-format human|json   stderr log format (default: human)\n"
"  --log-level error|warn|info|debug  (default: info)\n"
"  --utc-offset-minutes N    local time offset of legacy timestamps\n"
"                            (default: 0)\n"
"  -h, --help                this text\n"
"\n"
"Exit status: 0 after a clean shutdown (SIGINT, SIGTERM, the shutdown\n"
"command), 1 on a runtime failure (busy port, bad state directory), 2 on a\n"
"bad flag.\n",
          prog, DAEMON_MAX_CONNECT);
}

static int usage_error(const char *flag, const char *detail_fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int usage_error(const char *flag, const char *detail_fmt, ...) {
  char detail[512];
  va_list ap;
  va_start(ap, detail_fmt);
  vsnprintf(detail, sizeof(detail), detail_fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: error: --%s: %s\n", prog, flag, detail);
  return 2;
}

static int parse_u32(const char *flag, const char *s, uint64_t min,
                     uint64_t max, uint32_t *out) {
  char *end = NULL;
  errno = 0;
  if (s[0] == '-' || s[0] == '\0')
    return usage_error(flag, "'%s' is not a number (expected %llu..%llu)", s,
                       (unsigned long long)min, (unsigned long long)max);
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return usage_error(flag, "'%s' is out of range (expected %llu..%llu)", s,
                       (unsigned long long)min, (unsigned long long)max);
  *out = (uint32_t)v;
  return 0;
}

static int parse_ip(const char *flag, const char *s, uint32_t *ip) {
  if (strcmp(s, "localhost") == 0) s = "127.0.0.1";
  if (posp2p_uv_ip_parse(s, ip) != 0)
    return usage_error(flag, "'%s' is not an IPv4 address", s);
  return 0;
}

static int parse_opts(int argc, char **argv, daemon_opts *o) {
  memset(o, 0, sizeof(*o));
  o->type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS;
  o->bind_ip = 0x7f000001u;
  o->bind_text = "127.0.0.1";
  o->tcp_port = POSP2P_DATA_PORT;
  o->udp_port = POSP2P_DISCOVERY_PORT;
  o->broadcast_ip = 0x7fffffffu;
  o->heartbeat_ms = 15000;
  o->timeout_ms = 60000;
  o->ack_timeout_ms = 2000;
  o->max_retries = 5;
  o->handshake_ms = 10000;
  o->announce_ms = 30000;
  o->max_frame = POSP2P_MAX_FRAME_DEFAULT;
  o->max_connections = 1024;
  o->reconnect_ms = 1000; /* CONN-22: at least 1000 ms before the first attempt */
  o->shutdown_ms = 3000;
  o->wire = POSP2P_PEER_WIRE_AUTO;
  o->state_dir = "./posp2p-state";
  o->log_level = LOG_INFO;
  o->control = true;
  uint32_t v;
  int c, r;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
    const char *flag = NULL;
    for (const struct option *lo = long_opts; lo->name; lo++)
      if (lo->val == c) flag = lo->name;
    r = 0;
    switch (c) {
    case OPT_HELP: usage(stdout); exit(0);
    case OPT_NAME:
      if (optarg[0] == '\0' || strchr(optarg, '/') != NULL)
        return usage_error(flag, "'%s' is not a valid name (non-empty, no '/')", optarg);
      o->name = optarg;
      break;
    case OPT_TYPE: {
      int t = posp2p_device_type_from_name(optarg, strlen(optarg));
      if (t <= 0)
        return usage_error(flag,
                           "unknown device type '%s' (expected one of mainPOS, "
                           "orderingTablet, secondaryPOS, kds, customerDisplay)",
                           optarg);
      o->type = t;
      break;
    }
    case OPT_ID:
      if (!posp2p_uuid_valid(optarg))
        return usage_error(flag, "'%s' is not a UUID (8-4-4-4-12 hex digits)", optarg);
      o->id = optarg;
      break;
    case OPT_BIND:
      r = parse_ip(flag, optarg, &o->bind_ip);
      o->bind_text = optarg;
      break;
    case OPT_TCP_PORT:
      r = parse_u32(flag, optarg, 0, 65535, &v);
      o->tcp_port = (uint16_t)v;
      break;
    case OPT_UDP_PORT:
      r = parse_u32(flag, optarg, 1, 65535, &v);
      o->udp_port = (uint16_t)v;
      break;
    case OPT_NO_LISTEN: o->no_listen = true; break;
    case OPT_BROADCAST: r = parse_ip(flag, optarg, &o->broadcast_ip); break;
    case OPT_ALLOW_LAN: o->allow_lan = true; break;
    case OPT_UDP_REUSE: o->udp_reuseaddr = true; break;
    case OPT_HEARTBEAT: r = parse_u32(flag, optarg, 1, UINT32_MAX, &o->heartbeat_ms); break;
    case OPT_TIMEOUT: r = parse_u32(flag, optarg, 2, UINT32_MAX, &o->timeout_ms); break;
    case OPT_ACK_TIMEOUT: r = parse_u32(flag, optarg, 1, UINT32_MAX, &o->ack_timeout_ms); break;
    case OPT_MAX_RETRIES: r = parse_u32(flag, optarg, 0, 1000, &o->max_retries); break;
    case OPT_HANDSHAKE: r = parse_u32(flag, optarg, 1, UINT32_MAX, &o->handshake_ms); break;
    case OPT_ANNOUNCE: r = parse_u32(flag, optarg, 0, UINT32_MAX, &o->announce_ms); break;
    case OPT_MAX_FRAME:
      r = parse_u32(flag, optarg, POSP2P_MAX_FRAME_MIN, 256u * 1024u * 1024u, &o->max_frame);
      break;
    case OPT_MAX_CONN: r = parse_u32(flag, optarg, 1, 1000000, &o->max_connections); break;
    case OPT_RECONNECT: r = parse_u32(flag, optarg, 1, UINT32_MAX, &o->reconnect_ms); break;
    case OPT_SHUTDOWN_MS: r = parse_u32(flag, optarg, 0, 3600000, &o->shutdown_ms); break;
    case OPT_WIRE:
      if (strcmp(optarg, "v2") == 0) o->wire = POSP2P_PEER_WIRE_V2;
      else if (strcmp(optarg, "legacy") == 0 || strcmp(optarg, "legacy-json") == 0)
        o->wire = POSP2P_PEER_WIRE_LEGACY;
      else if (strcmp(optarg, "auto") == 0) o->wire = POSP2P_PEER_WIRE_AUTO;
      else return usage_error(flag, "unknown wire '%s' (expected v2, legacy or auto)", optarg);
      break;
    case OPT_CONNECT: {
      if (o->nconnect >= DAEMON_MAX_CONNECT)
        return usage_error(flag, "at most %d targets", DAEMON_MAX_CONNECT);
      char host[64];
      const char *colon = strrchr(optarg, ':');
      if (colon == NULL || (size_t)(colon - optarg) >= sizeof(host))
        return usage_error(flag, "'%s' is not HOST:PORT", optarg);
      memcpy(host, optarg, (size_t)(colon - optarg));
      host[colon - optarg] = '\0';
      posp2p_addr *a = &o->connect[o->nconnect];
      r = parse_ip(flag, host, &a->ip);
      if (r == 0) r = parse_u32(flag, colon + 1, 1, 65535, &v);
      a->port = (uint16_t)v;
      if (r == 0) o->nconnect++;
      break;
    }
    case OPT_DISCOVER: o->discover = true; break;
    case OPT_STATE_DIR:
      if (optarg[0] == '\0') return usage_error(flag, "empty directory");
      o->state_dir = strcmp(optarg, "none") == 0 ? NULL : optarg;
      break;
    case OPT_STORE_SYNC:
      if (strcmp(optarg, "full") == 0) o->store_sync_full = true;
      else if (strcmp(optarg, "normal") != 0)
        return usage_error(flag, "unknown level '%s' (expected normal or full)", optarg);
      break;
    case OPT_LOG_FORMAT:
      if (strcmp(optarg, "json") == 0) o->log_json = true;
      else if (strcmp(optarg, "human") != 0)
        return usage_error(flag, "unknown format '%s' (expected human or json)", optarg);
      break;
    case OPT_LOG_LEVEL: {
      int found = -1;
      for (int i = 0; i < 4; i++)
        if (strcmp(optarg, level_names[i]) == 0) found = i;
      if (found < 0)
        return usage_error(flag, "unknown level '%s' (expected error, warn, info or debug)",
                           optarg);
      o->log_level = (log_level)found;
      break;
    }
    case OPT_CONTROL:
      if (strcmp(optarg, "none") == 0) o->control = false;
      else if (strcmp(optarg, "stdio") != 0)
        return usage_error(flag, "unknown channel '%s' (expected stdio or none)", optarg);
      break;
    case OPT_UTC_OFFSET: {
      char *end = NULL;
      long off = strtol(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || off < -1440 || off > 1440)
        return usage_error(flag, "'%s' is not a number of minutes (-1440..1440)", optarg);
      o->utc_offset_minutes = (int32_t)off;
      break;
    }
    case ':': {
      const char *a = argv[optind - 1];
      fprintf(stderr, "%s: error: %s: missing value (see --help)\n", prog, a);
      return 2;
    }
    default: {
      const char *a = argv[optind - 1];
      fprintf(stderr, "%s: error: %s: unknown option (see --help)\n", prog,
              a ? a : "?");
      return 2;
    }
    }
    if (r != 0) return r;
  }
  if (optind < argc) {
    fprintf(stderr, "%s: error: %s: unexpected argument (see --help)\n", prog,
            argv[optind]);
    return 2;
  }
  if (o->timeout_ms <= o->heartbeat_ms)
    return usage_error("timeout-ms", "%u must be greater than --heartbeat-ms %u",
                       o->timeout_ms, o->heartbeat_ms);
  if (!o->allow_lan && !posp2p_uv_ip_is_loopback(o->broadcast_ip)) {
    char b[16];
    posp2p_uv_ip_format(o->broadcast_ip, b);
    return usage_error("broadcast",
                       "%s is outside 127.0.0.0/8; pass --allow-lan-broadcast to "
                       "send broadcasts to a real network or a namespace",
                       b);
  }
  if (o->name == NULL) {
    static char defname[64];
    snprintf(defname, sizeof(defname), "posp2p-%s", posp2p_device_type_name(o->type));
    o->name = defname;
  }
  return 0;
}

/* ---- Identity ------------------------------------------------------------------ */

/* --id, else <state_dir>/<name>.id, else a new UUID (saved there). */
static int resolve_id(pdaemon *d) {
  if (d->o.id != NULL) {
    snprintf(d->id, sizeof(d->id), "%s", d->o.id);
    for (char *p = d->id; *p; p++)
      if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    return 0;
  }
  char path[4096];
  if (d->o.state_dir != NULL) {
    snprintf(path, sizeof(path), "%s/%s.id", d->o.state_dir, d->o.name);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
      char buf[64] = "";
      bool ok = fgets(buf, sizeof(buf), f) != NULL;
      fclose(f);
      buf[strcspn(buf, "\r\n")] = '\0';
      if (!ok || !posp2p_uuid_valid(buf)) {
        char what[4200];
        snprintf(what, sizeof(what), "device id file %s", path);
        return fatal(1, what, "does not hold a UUID; remove it or pass --id");
      }
      snprintf(d->id, sizeof(d->id), "%.36s", buf);
      return 0;
    }
  }
  uint8_t rnd[16];
  posp2p_uv_random(rnd, sizeof(rnd));
  posp2p_uuid_format(rnd, d->id);
  if (d->o.state_dir != NULL) {
    char tmp[4110];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%s\n", d->id) < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0) {
      int e = errno;
      if (f) fclose(f);
      char what[4200];
      snprintf(what, sizeof(what), "cannot write device id file %s", tmp);
      return fatal(1, what, strerror(e));
    }
    fclose(f);
    if (rename(tmp, path) != 0) {
      char what[4200];
      snprintf(what, sizeof(what), "cannot write device id file %s", path);
      return fatal(1, what, strerror(errno));
    }
  }
  return 0;
}

/* ---- Lifecycle ----------------------------------------------------------------- */

static void close_aux(pdaemon *d) {
  control_close(d);
  control_close_discovers(d);
  if (d->signals_open) {
    d->signals_open = false;
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
  }
  if (d->disc_timer_open) {
    d->disc_timer_open = false;
    uv_close((uv_handle_t *)&d->disc_timer, NULL);
  }
}

void daemon_begin_shutdown(pdaemon *d, const char *reason) {
  if (d->up == NULL) return;
  if (d->shutting_down) {
    daemon_log(d, LOG_WARN, "second shutdown request: closing now");
    posp2p_uv_peer_abort(d->up);
    return;
  }
  d->shutting_down = true;
  daemon_log(d, LOG_INFO, "shutting down (%s)", reason);
  if (d->disc_timer_open) uv_timer_stop(&d->disc_timer);
  int r = posp2p_uv_peer_shutdown(d->up, reason, d->o.shutdown_ms);
  if (r != 0) posp2p_uv_peer_abort(d->up);
}

static void on_signal(uv_signal_t *s, int signum) {
  pdaemon *d = s->data;
  daemon_begin_shutdown(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* --discover: ask again until connected to a main POS. */
static bool main_connected(pdaemon *d) {
  posp2p_peer *p = posp2p_uv_peer_engine(d->up);
  size_t n = posp2p_peer_device_count(p);
  for (size_t i = 0; i < n; i++) {
    const posp2p_peer_device *dev = posp2p_peer_device_at(p, i);
    if (dev && dev->type == POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS &&
        strcmp(dev->id, d->id) != 0 &&
        (dev->status == POSP2P_DEV_CONNECTED || dev->status == POSP2P_DEV_CONNECTING))
      return true;
  }
  return false;
}

static void disc_tick(uv_timer_t *t) {
  pdaemon *d = t->data;
  if (d->shutting_down || d->up == NULL) return;
  if (!main_connected(d)) {
    (void)posp2p_uv_peer_discover(d->up);
    if (d->disc_interval_ms < 8000) d->disc_interval_ms *= 2;
  } else {
    d->disc_interval_ms = 1000;
  }
  uv_timer_start(&d->disc_timer, disc_tick, d->disc_interval_ms, 0);
}

/* True while dev is connected, or a connection to it is under way. */
static bool dev_live(const posp2p_peer_device *dev) {
  return dev->conn != 0 || dev->status == POSP2P_DEV_CONNECTED ||
         dev->status == POSP2P_DEV_CONNECTING;
}

/* --discover: a DEVICE event about a main POS (from a discovery RESPONSE or
 * ANNOUNCE, or from a connection). The client keeps one connection, with
 * reconnects, to one main POS (TOPO-4): the first that answered (TOPO-6).
 * Another main POS is ignored while that one is connected or being
 * connected to; it is taken instead only when the first one is down (its
 * reconnects are stopped first, so there is never a second connection).
 * When the chosen main POS shows up at another address or port while the
 * client has no live connection to it (it restarted elsewhere), the client
 * stops retrying the old address and connects to the new one. */
static void maybe_connect_main(pdaemon *d, const posp2p_peer_device *dev) {
  if (!d->o.discover || d->shutting_down ||
      dev->type != POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS ||
      dev->addr.port == 0 || strcmp(dev->id, d->id) == 0)
    return;
  bool same = d->main_target_set && strcmp(d->main_id, dev->id) == 0;
  if (same) {
    if (d->main_target.ip == dev->addr.ip && d->main_target.port == dev->addr.port)
      return; /* already connecting there; the engine reconnects */
    if (dev->conn != 0 || dev->status == POSP2P_DEV_CONNECTED)
      return; /* the address in use works */
  } else if (d->main_target_set) {
    const posp2p_peer_device *cur =
        posp2p_peer_device_find(posp2p_uv_peer_engine(d->up), d->main_id);
    if (cur != NULL && dev_live(cur)) return;
  } else if (dev_live(dev)) {
    return;
  }
  /* Stopping and opening connections fires events that come back here. */
  if (d->main_switching) return;
  d->main_switching = true;
  /* dev belongs to the engine: copy what is needed across engine calls. */
  char id[POSP2P_UUID_LEN + 1];
  snprintf(id, sizeof(id), "%s", dev->id);
  posp2p_addr to = dev->addr;
  char a[22];
  posp2p_uv_addr_format(&to, a);
  if (d->main_target_set) {
    char old[22];
    posp2p_uv_addr_format(&d->main_target, old);
    int r = posp2p_uv_peer_connect_stop(d->up, &d->main_target,
                                        same ? "main POS moved" : "another main POS");
    daemon_log(d, LOG_INFO, "discover: main POS %s now at %s: no longer connecting to %s%s",
               id, a, old, r == POSP2P_ERR_NO_CONN ? " (nothing pending)" : "");
    d->main_target_set = false;
  }
  posp2p_conn_id conn = 0;
  int r = posp2p_uv_peer_connect(d->up, &to, POSP2P_PEER_WIRE_V2, id, &conn);
  if (r != 0) {
    daemon_log(d, LOG_WARN, "discover: connect to main POS %s at %s: %s", id, a,
               posp2p_uv_strerror(r));
    /* Other failures are retried by the engine's reconnect, which must be
     * stoppable like any other: the target is recorded. */
    if (r == POSP2P_ERR_INVAL || r == POSP2P_ERR_SHUTDOWN || r == POSP2P_ERR_STATE ||
        d->o.reconnect_ms == 0) {
      d->main_switching = false;
      return;
    }
  } else {
    daemon_log(d, LOG_INFO, "discover: connecting to main POS %s at %s", id, a);
  }
  snprintf(d->main_id, sizeof(d->main_id), "%s", id);
  d->main_target = to;
  d->main_target_set = true;
  d->main_switching = false;
}

static void on_event(posp2p_uv_peer *up, const posp2p_peer_event *ev, void *ud) {
  pdaemon *d = ud;
  (void)up;
  control_on_event(d, ev);
  if (ev->type == POSP2P_PEER_EV_DEVICE && ev->device != NULL)
    maybe_connect_main(d, ev->device);
  if (ev->type == POSP2P_PEER_EV_CONN_CLOSED && ev->code != 0)
    daemon_log(d, LOG_INFO, "connection %llu closed: %s (%s)",
               (unsigned long long)ev->conn, posp2p_uv_err_name(ev->code),
               ev->text ? ev->text : "");
}

static void on_closed(posp2p_uv_peer *up, void *ud) {
  pdaemon *d = ud;
  (void)up;
  if (!d->shutdown_done_printed) {
    json_t *o = json_pack("{s:s, s:I}", "event", "shutdown_done", "t_ms",
                          (json_int_t)daemon_t_ms(d));
    control_emit(d, o);
    d->shutdown_done_printed = true;
  }
  d->closed = true;
  d->up = NULL;
  close_aux(d);
}

static void on_warning(posp2p_uv_peer *up, int code, const char *text, void *ud) {
  pdaemon *d = ud;
  (void)up;
  daemon_log(d, LOG_WARN, "%s (%s)", text, posp2p_uv_err_name(code));
}

static void on_store_error(posp2p_store *s, const char *message, void *ud) {
  pdaemon *d = ud;
  (void)s;
  daemon_log(d, LOG_ERROR, "%s", message);
}

static int run(pdaemon *d) {
  int r;
  d->legacy.utc_offset_minutes = d->o.utc_offset_minutes;
  d->held_events = json_array();
  d->orders = json_object();
  d->seqs = json_object();

  if (d->o.state_dir != NULL) {
    char err[POSP2P_STORE_ERRMSG_MAX];
    if (posp2p_store_mkdir(d->o.state_dir, err) != 0) return fatal_msg(1, err);
  }
  if ((r = resolve_id(d)) != 0) return r;

  if (d->o.state_dir != NULL) {
    char err[POSP2P_STORE_ERRMSG_MAX];
    if (posp2p_store_default_path(d->store_path, sizeof(d->store_path),
                                  d->o.state_dir, d->id) != 0)
      return fatal(1, "state directory path too long", d->o.state_dir);
    posp2p_store_opts so;
    posp2p_store_opts_init(&so);
    so.sync_full = d->o.store_sync_full;
    so.on_error = on_store_error;
    so.user_data = d;
    if (posp2p_store_open(&d->store, d->store_path, &so, err) != 0)
      return fatal_msg(1, err);
  }

  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_id = d->id;
  cfg.device_name = d->o.name;
  cfg.device_type = d->o.type;
  cfg.heartbeat_interval_ms = d->o.heartbeat_ms;
  cfg.device_timeout_ms = d->o.timeout_ms;
  cfg.ack_timeout_ms = d->o.ack_timeout_ms;
  cfg.max_retries = d->o.max_retries;
  cfg.handshake_timeout_ms = d->o.handshake_ms;
  cfg.announce_interval_ms = d->o.announce_ms;
  cfg.max_frame = d->o.max_frame;
  if (cfg.max_queue_bytes < cfg.max_frame + 16u) cfg.max_queue_bytes = cfg.max_frame * 2u;
  cfg.max_connections = d->o.max_connections;
  cfg.reconnect_ms = d->o.reconnect_ms;
  if (cfg.ack_backoff_cap_ms < cfg.ack_timeout_ms) cfg.ack_backoff_cap_ms = cfg.ack_timeout_ms;
  cfg.wire = d->o.wire;
  cfg.legacy_utc_offset_minutes = d->o.utc_offset_minutes;
  cfg.discovery_port = d->o.udp_port;
  cfg.broadcast_ip = d->o.broadcast_ip;
  char hostname[256] = "";
  if (gethostname(hostname, sizeof(hostname) - 1) != 0) hostname[0] = '\0';
  cfg.hostname = hostname;
  posp2p_error cerr;
  memset(&cerr, 0, sizeof(cerr));
  if (posp2p_peer_config_check(&cfg, &cerr) != 0) {
    fprintf(stderr, "%s: error: invalid configuration (%s)\n", prog, cerr.message);
    return 2;
  }

  posp2p_uv_opts uo;
  posp2p_uv_opts_init(&uo);
  uo.bind_ip = d->o.bind_ip;
  uo.tcp_port = d->o.tcp_port;
  uo.tcp_listen = !d->o.no_listen;
  uo.allow_lan = d->o.allow_lan;
  uo.udp_reuseaddr = d->o.udp_reuseaddr;
  posp2p_uv_callbacks ucb = {on_event, on_closed, on_warning};
  posp2p_peer_store iface;
  if (d->store) posp2p_store_iface(d->store, &iface);
  posp2p_uv_error uerr;
  memset(&uerr, 0, sizeof(uerr));
  r = posp2p_uv_peer_new(&d->up, d->ctx, &cfg, d->store ? &iface : NULL, &uo,
                         &ucb, d, &uerr);
  if (r != 0) {
    d->up = NULL;
    return fatal_msg(r == POSP2P_ERR_CONFIG ? 2 : 1, uerr.message);
  }
  d->start_ms = uv_now(d->loop);

  if (d->store != NULL) {
    posp2p_store_load_stats st;
    r = posp2p_store_load(d->store, posp2p_uv_peer_engine(d->up),
                          posp2p_uv_peer_now(d->up), control_order_restored, d, &st);
    if (r != 0) {
      fatal_msg(1, posp2p_store_errmsg(d->store));
      posp2p_uv_peer_abort(d->up);
      return 1;
    }
    daemon_log(d, LOG_INFO,
               "store %s: restored %zu outbox entries, %zu dedup ids, %zu devices "
               "(%zu skipped, %zu expired)",
               d->store_path, st.outbox, st.dedup, st.devices, st.skipped, st.expired);
  }

  r = posp2p_uv_peer_start(d->up, &uerr);
  if (r != 0) {
    fatal_msg(1, uerr.message);
    posp2p_uv_peer_abort(d->up);
    return 1;
  }

  uv_signal_init(d->loop, &d->sigint);
  uv_signal_init(d->loop, &d->sigterm);
  d->sigint.data = d->sigterm.data = d;
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);
  d->signals_open = true;

  /* The ready line: the first line on stdout. */
  posp2p_addr ta = posp2p_uv_peer_tcp_addr(d->up);
  posp2p_addr ua = posp2p_uv_peer_udp_addr(d->up);
  posp2p_addr ba = {d->o.broadcast_ip, d->o.udp_port};
  char ts[22], us[22], bs[22];
  if (d->o.no_listen) {
    ta.ip = d->o.bind_ip;
    ta.port = 0;
  }
  posp2p_uv_addr_format(&ta, ts);
  posp2p_uv_addr_format(&ua, us);
  posp2p_uv_addr_format(&ba, bs);
  json_t *ready = json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:I}", "event",
      "ready", "device_id", d->id, "name", d->o.name, "type",
      posp2p_device_type_name(d->o.type), "tcp", ts, "udp", us, "broadcast", bs,
      "wire", wire_name(d->o.wire), "state_dir",
      d->o.state_dir ? json_string(d->o.state_dir) : json_null(), "tcp_port",
      (int)ta.port, "pid", (int)getpid(), "outbox",
      (json_int_t)posp2p_peer_outbox_count(posp2p_uv_peer_engine(d->up)));
  json_print_line(ready);
  json_decref(ready);
  d->ready_printed = true;
  control_flush_held(d);
  daemon_log(d, LOG_INFO, "ready: %s %s id %s tcp %s udp %s", posp2p_device_type_name(d->o.type),
             d->o.name, d->id, ts, us);

  if (d->o.control) control_open(d);

  for (int i = 0; i < d->o.nconnect; i++) {
    posp2p_conn_id conn;
    char a[22];
    posp2p_uv_addr_format(&d->o.connect[i], a);
    r = posp2p_uv_peer_connect(d->up, &d->o.connect[i], POSP2P_PEER_WIRE_V2, NULL, &conn);
    if (r != 0)
      daemon_log(d, LOG_WARN, "--connect %s: %s", a, posp2p_uv_strerror(r));
  }
  if (d->o.discover) {
    uv_timer_init(d->loop, &d->disc_timer);
    d->disc_timer.data = d;
    d->disc_timer_open = true;
    d->disc_interval_ms = 1000; /* DISC-13: at most one REQUEST per 1000 ms */
    (void)posp2p_uv_peer_discover(d->up);
    uv_timer_start(&d->disc_timer, disc_tick, d->disc_interval_ms, 0);
  }

  uv_run(d->loop, UV_RUN_DEFAULT);
  return d->exit_code;
}

int main(int argc, char **argv) {
  pdaemon d;
  memset(&d, 0, sizeof(d));
  signal(SIGPIPE, SIG_IGN);
  int r = parse_opts(argc, argv, &d.o);
  if (r != 0) return r;

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return fatal(1, "cannot create the event loop", NULL);
  d.loop = &loop;
  if (posp2p_uv_ctx_new(&d.ctx, &loop) != 0) return fatal(1, "out of memory", NULL);

  r = run(&d);

  /* Whatever happened, release everything: close what is still open and
   * let the loop run the close callbacks. */
  if (d.up != NULL) posp2p_uv_peer_abort(d.up);
  close_aux(&d);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (posp2p_uv_ctx_del(d.ctx) != 0) daemon_log(&d, LOG_WARN, "transport context still busy at exit");
  if (uv_loop_close(&loop) != 0) daemon_log(&d, LOG_WARN, "event loop still busy at exit");
  posp2p_store_close(d.store);
  json_decref(d.held_events);
  json_decref(d.orders);
  json_decref(d.seqs);
  free(d.in_buf);
  uv_library_shutdown();
  return r;
}
