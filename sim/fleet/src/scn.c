/* Scenario files: a small INI dialect.
 *
 *   # comment (also after a value: "tablets = 200  # lunch")
 *   [fleet]
 *   tablets = 200
 *   [faults.flap]          # a named fault; [phases.NAME] likewise
 *   kind = partition
 *
 * Values: integers, durations ("250ms", "2s", "1.5m", "0"), rates per
 * device ("0.5/s", "30/min", "2/h"), ratios ("0.05" or "5%"), ranges
 * ("1s..3s", "1..5"), enumerations, lists ("a, b") and device selectors
 * ("tablets[0-9], kds"). Every error names the file, the line and the
 * field: "lunch.scn:12: faults.drop.rate: expected a number between 0 and
 * 1, got 'lots'". */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posp2p/codec.h"
#include "posp2p/peer.h"

/* ---- Names ----------------------------------------------------------------- */

const char *fl_role_name(int role) {
  switch (role) {
  case FL_ROLE_MAIN: return "mainPOS";
  case FL_ROLE_TABLET: return "orderingTablet";
  case FL_ROLE_SECONDARY: return "secondaryPOS";
  case FL_ROLE_KDS: return "kds";
  case FL_ROLE_DISPLAY: return "customerDisplay";
  default: return "?";
  }
}

const char *fl_role_short(int role) {
  switch (role) {
  case FL_ROLE_MAIN: return "main";
  case FL_ROLE_TABLET: return "tablet";
  case FL_ROLE_SECONDARY: return "secondary";
  case FL_ROLE_KDS: return "kds";
  case FL_ROLE_DISPLAY: return "display";
  default: return "?";
  }
}

static const struct {
  const char *name;
  fl_fault_kind kind;
} fault_kinds[] = {
    {"drop", FL_FAULT_DROP},
    {"delay", FL_FAULT_DELAY},
    {"duplicate", FL_FAULT_DUPLICATE},
    {"reorder", FL_FAULT_REORDER},
    {"withhold_acks", FL_FAULT_WITHHOLD_ACKS},
    {"withhold_heartbeats", FL_FAULT_WITHHOLD_HEARTBEATS},
    {"slow_reader", FL_FAULT_SLOW_READER},
    {"partition", FL_FAULT_PARTITION},
    {"silence", FL_FAULT_SILENCE},
    {"kill", FL_FAULT_KILL},
    {"main_restart", FL_FAULT_MAIN_RESTART},
    {"netem", FL_FAULT_NETEM},
    {"rate_limit", FL_FAULT_RATE_LIMIT},
    {"test_lose_delivered", FL_FAULT_TEST_LOSE},
};
#define NKINDS (sizeof(fault_kinds) / sizeof(fault_kinds[0]))

const char *fl_fault_kind_name(fl_fault_kind k) {
  for (size_t i = 0; i < NKINDS; i++)
    if (fault_kinds[i].kind == k) return fault_kinds[i].name;
  return "?";
}

const char *fl_dir_name(fl_dir d) {
  return d == FL_DIR_IN ? "in" : d == FL_DIR_OUT ? "out" : "both";
}

uint32_t fl_config_total(const fl_config *c) {
  uint32_t t = 0;
  for (int r = 1; r < FL_NROLES; r++) t += c->n[r];
  return t;
}

void fl_fmt_ms(char *buf, size_t n, uint64_t ms) {
  if (ms == UINT64_MAX) snprintf(buf, n, "never");
  else if (ms % 1000 == 0) snprintf(buf, n, "%" PRIu64 "s", ms / 1000);
  else if (ms > 1000) snprintf(buf, n, "%.3gs", (double)ms / 1000.0);
  else snprintf(buf, n, "%" PRIu64 "ms", ms);
}

/* ---- Defaults ---------------------------------------------------------------- */

void fl_config_defaults(fl_config *c) {
  memset(c, 0, sizeof(*c));
  snprintf(c->name, sizeof(c->name), "default");
  c->seed = 1;
  c->duration_ms = 20000;
  c->workers = -1;
  /* The default scenario: one restaurant with a busy front of house. */
  c->n[FL_ROLE_MAIN] = 1;
  c->n[FL_ROLE_TABLET] = 200;
  c->n[FL_ROLE_SECONDARY] = 2;
  c->n[FL_ROLE_KDS] = 4;
  c->n[FL_ROLE_DISPLAY] = 4;
  c->mode = FL_MODE_LOOPBACK;
  c->start_spread_ms = 1000;
  c->store = FL_STORE_AUTO;
  c->ip_base = 0x7f140000u; /* 127.20.0.0 */
  c->disc_port = POSP2P_DISCOVERY_PORT;
  c->data_port = POSP2P_DATA_PORT;
  c->discovery = FL_DISC_AUTO;
  c->wire = POSP2P_PEER_WIRE_V2;
  c->subnet = 0x0ae70000u; /* 10.231.0.0/16 */
  snprintf(c->netns_prefix, sizeof(c->netns_prefix), "p2sim");
  c->heartbeat_ms = 15000;
  c->timeout_ms = 60000;
  c->ack_timeout_ms = 2000;
  c->backoff_cap_ms = 16000;
  c->max_retries = 5;
  c->handshake_ms = 10000;
  c->announce_ms = 1000;
  c->reconnect_ms = 1000;
  c->linger_ms = 2000;
  c->shutdown_ms = 3000;
  c->order_rate = 0.25;
  c->secondary_rate = 0.1;
  c->cart_rate = 0.1;
  c->cancel_ratio = 0.05;
  c->cancel_after_lo = 500;
  c->cancel_after_hi = 3000;
  c->items_lo = 1;
  c->items_hi = 6;
  c->route = FL_ROUTE_MAIN;
  c->traffic_start_ms = 2000;
  c->ramp_ms = 2000;
  c->prep_delay_lo = 100;
  c->prep_delay_hi = 500;
  c->prep_lo = 1000;
  c->prep_hi = 4000;
  c->serve_lo = 300;
  c->serve_hi = 1500;
  c->complete_lo = 200;
  c->complete_hi = 800;
  c->app_queue_max = 10000;
  c->slack_ms = 500;
  c->slack_ratio = 0.25;
  c->max_listed = 200;
}

/* ---- Errors and origins ------------------------------------------------------- */

typedef struct {
  const char *origin; /* file name as given */
  unsigned line;
  fl_cfg_err *err;
} ctx_t;

static int fail(ctx_t *x, const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(ctx_t *x, const char *field, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (x->err == NULL) return -1;
  if (field != NULL && field[0] != '\0')
    snprintf(x->err->msg, sizeof(x->err->msg), "%s:%u: %s: %s", x->origin,
             x->line, field, msg);
  else
    snprintf(x->err->msg, sizeof(x->err->msg), "%s:%u: %s", x->origin, x->line,
             msg);
  return -1;
}

static void origin_set(fl_config *c, const char *key, const ctx_t *x) {
  size_t i;
  for (i = 0; i < c->norigins; i++)
    if (strcmp(c->origins[i].key, key) == 0) break;
  if (i == c->norigins) {
    if (c->norigins == sizeof(c->origins) / sizeof(c->origins[0])) return;
    c->norigins++;
    snprintf(c->origins[i].key, sizeof(c->origins[i].key), "%.47s", key);
  }
  snprintf(c->origins[i].where, sizeof(c->origins[i].where), "%.180s:%u",
           x->origin, x->line);
}

static const char *origin_of(const fl_config *c, const char *key) {
  for (size_t i = 0; i < c->norigins; i++)
    if (strcmp(c->origins[i].key, key) == 0) return c->origins[i].where;
  return NULL;
}

/* ---- Value parsers --------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *out) {
  if (!isdigit((unsigned char)s[0])) return false;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

static bool parse_double(const char *s, double *out) {
  if (s[0] == '\0' || isspace((unsigned char)s[0])) return false;
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) return false;
  *out = v;
  return true;
}

/* Duration: number + unit (ms, s, m, min, h); "0" alone is allowed. */
static bool parse_duration(const char *s, uint64_t *out) {
  if (strcmp(s, "0") == 0) {
    *out = 0;
    return true;
  }
  char num[64];
  size_t i = 0;
  while (s[i] != '\0' && (isdigit((unsigned char)s[i]) || s[i] == '.') &&
         i + 1 < sizeof(num)) {
    num[i] = s[i];
    i++;
  }
  num[i] = '\0';
  const char *unit = s + i;
  while (*unit == ' ') unit++;
  double v;
  if (i == 0 || !parse_double(num, &v) || v < 0) return false;
  double mul;
  if (strcmp(unit, "ms") == 0) mul = 1;
  else if (strcmp(unit, "s") == 0) mul = 1000;
  else if (strcmp(unit, "m") == 0 || strcmp(unit, "min") == 0) mul = 60000;
  else if (strcmp(unit, "h") == 0) mul = 3600000;
  else return false;
  double ms = v * mul;
  if (ms > 1e15) return false;
  *out = (uint64_t)llround(ms);
  return true;
}

/* Rate per second: "0.5", "0.5/s", "30/min", "2/h". */
static bool parse_rate(const char *s, double *out) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%s", s);
  char *slash = strchr(buf, '/');
  double div = 1;
  if (slash != NULL) {
    *slash = '\0';
    const char *u = slash + 1;
    if (strcmp(u, "s") == 0) div = 1;
    else if (strcmp(u, "min") == 0 || strcmp(u, "m") == 0) div = 60;
    else if (strcmp(u, "h") == 0) div = 3600;
    else return false;
  }
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == ' ') buf[--n] = '\0';
  double v;
  if (!parse_double(buf, &v) || v < 0 || v > 1e6) return false;
  *out = v / div;
  return true;
}

static bool parse_ratio(const char *s, double *out) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%s", s);
  size_t n = strlen(buf);
  double scale = 1;
  if (n > 0 && buf[n - 1] == '%') {
    buf[n - 1] = '\0';
    scale = 100;
  }
  double v;
  if (!parse_double(buf, &v)) return false;
  v /= scale;
  if (v < 0 || v > 1) return false;
  *out = v;
  return true;
}

/* "a..b" or "a": split into two strings. */
static void split_range(const char *s, char *a, char *b, size_t n) {
  const char *dots = strstr(s, "..");
  if (dots == NULL) {
    snprintf(a, n, "%s", s);
    snprintf(b, n, "%s", s);
    return;
  }
  size_t la = (size_t)(dots - s);
  if (la >= n) la = n - 1;
  memcpy(a, s, la);
  a[la] = '\0';
  while (la > 0 && a[la - 1] == ' ') a[--la] = '\0';
  const char *rb = dots + 2;
  while (*rb == ' ') rb++;
  snprintf(b, n, "%s", rb);
}

static bool parse_duration_range(const char *s, uint64_t *lo, uint64_t *hi) {
  char a[64], b[64];
  split_range(s, a, b, sizeof(a));
  return parse_duration(a, lo) && parse_duration(b, hi) && *lo <= *hi;
}

bool fl_parse_ip(const char *s, uint32_t *out);
bool fl_parse_ip(const char *s, uint32_t *out) {
  unsigned a, b, c, d;
  char tail;
  if (sscanf(s, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) != 4) return false;
  if (a > 255 || b > 255 || c > 255 || d > 255) return false;
  *out = (a << 24) | (b << 16) | (c << 8) | d;
  return true;
}

/* Message type names: schema spelling ("orderForward"), snake case
 * ("order_forward"), or short forms. */
static int type_from_name(const char *s) {
  static const struct {
    const char *n;
    int t;
  } alias[] = {
      {"ack", 2}, {"acks", 2}, {"acknowledgement", 2}, {"heartbeat", 3},
      {"heartbeats", 3}, {"order_forward", 4}, {"order", 4}, {"orders", 4},
      {"order_status", 5}, {"status", 5}, {"order_cancel", 6}, {"cancel", 6},
      {"order_sync", 7}, {"cart_sync", 8}, {"cart", 8}, {"product_sync", 9},
      {"config_sync", 10}, {"device_info", 11}, {"server_mode", 12},
      {"broadcast_update", 13}, {"device_command", 14}, {"device_response", 15},
      {"error", 16}, {"warning", 17}, {"hello", 32}, {"goodbye", 33},
  };
  for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
    if (strcmp(s, alias[i].n) == 0) return alias[i].t;
  int t = posp2p_message_type_from_name(s, strlen(s));
  return t > 0 ? t : -1;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
  return s;
}

static bool parse_types(const char *s, uint64_t *mask, char *bad, size_t nbad) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", s);
  uint64_t m = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    tok = trim(tok);
    if (strcmp(tok, "all") == 0 || strcmp(tok, "any") == 0) {
      m = 0;
      *mask = 0;
      return true;
    }
    int t = type_from_name(tok);
    if (t < 0 || t > 63) {
      snprintf(bad, nbad, "%s", tok);
      return false;
    }
    m |= UINT64_C(1) << t;
  }
  if (m == 0) {
    snprintf(bad, nbad, "%s", s);
    return false;
  }
  *mask = m;
  return true;
}

static int role_from_word(const char *w) {
  static const struct {
    const char *n;
    int r;
  } words[] = {
      {"main", FL_ROLE_MAIN}, {"main_pos", FL_ROLE_MAIN}, {"mainpos", FL_ROLE_MAIN},
      {"tablet", FL_ROLE_TABLET}, {"tablets", FL_ROLE_TABLET},
      {"secondary", FL_ROLE_SECONDARY}, {"secondary_pos", FL_ROLE_SECONDARY},
      {"kds", FL_ROLE_KDS}, {"kitchen", FL_ROLE_KDS},
      {"display", FL_ROLE_DISPLAY}, {"displays", FL_ROLE_DISPLAY},
      {"customer_display", FL_ROLE_DISPLAY}, {"customer_displays", FL_ROLE_DISPLAY},
      {"all", 0}, {"clients", -1},
  };
  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
    if (strcmp(w, words[i].n) == 0) return words[i].r;
  return -2;
}

/* Selector: items "ROLE", "ROLE[N]", "ROLE[A-B]", "ROLE:P%" separated by
 * commas. */
static bool parse_sel(const char *s, fl_sel *out, char *bad, size_t nbad) {
  memset(out, 0, sizeof(*out));
  snprintf(out->text, sizeof(out->text), "%s", s);
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", s);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    tok = trim(tok);
    snprintf(bad, nbad, "%s", tok);
    if (out->n == FL_SEL_MAX) return false;
    fl_sel_item it = {0, 0, UINT32_MAX, 0};
    char word[48];
    size_t i = 0;
    while (tok[i] && (isalpha((unsigned char)tok[i]) || tok[i] == '_') &&
           i + 1 < sizeof(word)) {
      word[i] = (char)tolower((unsigned char)tok[i]);
      i++;
    }
    word[i] = '\0';
    int r = role_from_word(word);
    if (r == -2) return false;
    it.role = r;
    const char *rest = tok + i;
    if (*rest == '[') {
      unsigned a, b;
      char close;
      if (sscanf(rest, "[%u-%u%c", &a, &b, &close) == 3 && close == ']' &&
          strchr(rest, ']')[1] == '\0' && a <= b) {
        it.lo = a;
        it.hi = b;
      } else if (sscanf(rest, "[%u..%u%c", &a, &b, &close) == 3 && close == ']' &&
                 strchr(rest, ']')[1] == '\0' && a <= b) {
        it.lo = a;
        it.hi = b;
      } else if (sscanf(rest, "[%u%c", &a, &close) == 2 && close == ']' &&
                 strchr(rest, ']')[1] == '\0') {
        it.lo = a;
        it.hi = a;
      } else {
        return false;
      }
    } else if (*rest == ':') {
      double f;
      if (!parse_ratio(rest + 1, &f) || f <= 0) return false;
      it.fraction = f;
    } else if (*rest != '\0') {
      return false;
    }
    out->items[out->n++] = it;
  }
  return out->n > 0;
}

static bool parse_hostport(const char *s, uint32_t *ip, uint16_t *port) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%s", s);
  char *colon = strchr(buf, ':');
  uint64_t p = POSP2P_DATA_PORT;
  if (colon != NULL) {
    *colon = '\0';
    if (!parse_u64(colon + 1, &p) || p == 0 || p > 65535) return false;
  }
  if (!fl_parse_ip(buf, ip)) return false;
  *port = (uint16_t)p;
  return true;
}

/* ---- Keys --------------------------------------------------------------------------- */

typedef enum { SEC_NONE, SEC_RUN, SEC_FLEET, SEC_NETWORK, SEC_TIMERS, SEC_TRAFFIC,
               SEC_CHECKER, SEC_PHASE, SEC_FAULT } sec_kind;

#define E_DUR "expected a duration such as 500ms, 2s or 1m"
#define E_RANGE "expected a duration or a range such as 1s..3s"

static int want_u32(ctx_t *x, const char *f, const char *v, uint64_t lo,
                    uint64_t hi, uint32_t *out) {
  uint64_t n;
  if (!parse_u64(v, &n) || n < lo || n > hi)
    return fail(x, f, "expected an integer between %" PRIu64 " and %" PRIu64
                ", got '%s'", lo, hi, v);
  *out = (uint32_t)n;
  return 0;
}

static int want_dur(ctx_t *x, const char *f, const char *v, uint64_t *out) {
  if (!parse_duration(v, out)) return fail(x, f, E_DUR ", got '%s'", v);
  return 0;
}

static int want_dur32(ctx_t *x, const char *f, const char *v, uint64_t lo,
                      uint32_t *out) {
  uint64_t d;
  if (!parse_duration(v, &d)) return fail(x, f, E_DUR ", got '%s'", v);
  if (d < lo || d > 86400000u) {
    char a[32];
    fl_fmt_ms(a, sizeof(a), lo);
    return fail(x, f, "expected a duration between %s and 24h, got '%s'", a, v);
  }
  *out = (uint32_t)d;
  return 0;
}

static int want_drange(ctx_t *x, const char *f, const char *v, uint64_t *lo,
                       uint64_t *hi) {
  if (!parse_duration_range(v, lo, hi)) return fail(x, f, E_RANGE ", got '%s'", v);
  return 0;
}

static int want_rate(ctx_t *x, const char *f, const char *v, double *out) {
  if (!parse_rate(v, out))
    return fail(x, f, "expected a rate such as 0.5/s, 30/min or 2/h, got '%s'", v);
  return 0;
}

static int want_ratio(ctx_t *x, const char *f, const char *v, double *out) {
  if (!parse_ratio(v, out))
    return fail(x, f, "expected a number between 0 and 1 (or a percentage), got '%s'", v);
  return 0;
}

#define KEY(s) (strcmp(key, (s)) == 0)

static int set_run(fl_config *c, ctx_t *x, const char *f, const char *key,
                   const char *v) {
  if (KEY("name")) {
    if (strlen(v) >= sizeof(c->name)) return fail(x, f, "name longer than 63 bytes");
    snprintf(c->name, sizeof(c->name), "%s", v);
  } else if (KEY("duration")) {
    if (want_dur(x, f, v, &c->duration_ms)) return -1;
    if (c->duration_ms < 100 || c->duration_ms > 24 * 3600000u)
      return fail(x, f, "expected a duration between 100ms and 24h, got '%s'", v);
  } else if (KEY("seed")) {
    if (!parse_u64(v, &c->seed))
      return fail(x, f, "expected a non-negative integer, got '%s'", v);
  } else if (KEY("drain")) {
    return want_dur(x, f, v, &c->drain_ms);
  } else if (KEY("max_duration")) {
    return want_dur(x, f, v, &c->max_duration_ms);
  } else if (KEY("workers")) {
    if (strcmp(v, "auto") == 0) {
      c->workers = -1;
    } else {
      uint64_t w;
      if (!parse_u64(v, &w) || w > 64)
        return fail(x, f, "expected 'auto' or an integer between 0 and 64, got '%s'", v);
      c->workers = (int)w;
    }
  } else {
    return 1;
  }
  return 0;
}

static int set_fleet(fl_config *c, ctx_t *x, const char *f, const char *key,
                     const char *v) {
  int role = 0;
  if (KEY("main_pos")) role = FL_ROLE_MAIN;
  else if (KEY("tablets")) role = FL_ROLE_TABLET;
  else if (KEY("secondary_pos")) role = FL_ROLE_SECONDARY;
  else if (KEY("kds")) role = FL_ROLE_KDS;
  else if (KEY("customer_displays")) role = FL_ROLE_DISPLAY;
  if (role != 0)
    return want_u32(x, f, v, 0, role == FL_ROLE_MAIN ? 1 : 60000, &c->n[role]);
  if (KEY("mode")) {
    if (strcmp(v, "loopback") == 0) c->mode = FL_MODE_LOOPBACK;
    else if (strcmp(v, "netns") == 0 || strcmp(v, "namespaces") == 0) c->mode = FL_MODE_NETNS;
    else return fail(x, f, "expected loopback or netns, got '%s'", v);
  } else if (KEY("start_spread")) {
    return want_dur(x, f, v, &c->start_spread_ms);
  } else if (KEY("namespaces")) {
    if (strcmp(v, "auto") == 0) c->namespaces = 0;
    else return want_u32(x, f, v, 1, 250, &c->namespaces);
  } else if (KEY("store")) {
    if (strcmp(v, "auto") == 0) c->store = FL_STORE_AUTO;
    else if (strcmp(v, "all") == 0) c->store = FL_STORE_ALL;
    else if (strcmp(v, "none") == 0) c->store = FL_STORE_NONE;
    else return fail(x, f, "expected auto, all or none, got '%s'", v);
  } else {
    return 1;
  }
  return 0;
}

static int set_network(fl_config *c, ctx_t *x, const char *f, const char *key,
                       const char *v) {
  if (KEY("ip_base")) {
    uint32_t ip;
    if (!fl_parse_ip(v, &ip) || (ip >> 24) != 127 || (ip & 0xffffu) != 0 ||
        ((ip >> 16) & 0xffu) == 0 || ((ip >> 16) & 0xffu) == 255)
      return fail(x, f, "expected an address 127.X.0.0 with X in 1..254, got '%s'", v);
    c->ip_base = ip;
  } else if (KEY("discovery_port")) {
    uint32_t p;
    if (want_u32(x, f, v, 1, 65535, &p)) return -1;
    c->disc_port = (uint16_t)p;
  } else if (KEY("data_port")) {
    uint32_t p;
    if (want_u32(x, f, v, 1, 65535, &p)) return -1;
    c->data_port = (uint16_t)p;
  } else if (KEY("discovery")) {
    if (!strcmp(v, "auto")) c->discovery = FL_DISC_AUTO;
    else if (!strcmp(v, "announce")) c->discovery = FL_DISC_ANNOUNCE;
    else if (!strcmp(v, "request")) c->discovery = FL_DISC_REQUEST;
    else if (!strcmp(v, "none")) c->discovery = FL_DISC_NONE;
    else return fail(x, f, "expected auto, announce, request or none, got '%s'", v);
  } else if (KEY("wire")) {
    if (!strcmp(v, "v2")) c->wire = POSP2P_PEER_WIRE_V2;
    else if (!strcmp(v, "legacy")) c->wire = POSP2P_PEER_WIRE_LEGACY;
    else return fail(x, f, "expected v2 or legacy, got '%s'", v);
  } else if (KEY("target")) {
    if (strcmp(v, "none") == 0) {
      c->has_target = false;
      return 0;
    }
    if (!parse_hostport(v, &c->target_ip, &c->target_port))
      return fail(x, f, "expected HOST:PORT with an IPv4 address, got '%s'", v);
    c->has_target = true;
  } else if (KEY("subnet")) {
    unsigned a, b;
    char tail;
    if (sscanf(v, "%u.%u%c", &a, &b, &tail) != 2 || a != 10 || b > 255)
      return fail(x, f, "expected 10.X (a /16 inside 10.0.0.0/8), got '%s'", v);
    c->subnet = (a << 24) | (b << 16);
  } else if (KEY("netns_prefix")) {
    size_t n = strlen(v);
    if (n == 0 || n > 10)
      return fail(x, f, "expected 1 to 10 characters [a-z0-9], got '%s'", v);
    for (size_t i = 0; i < n; i++)
      if (!islower((unsigned char)v[i]) && !isdigit((unsigned char)v[i]))
        return fail(x, f, "expected 1 to 10 characters [a-z0-9], got '%s'", v);
    snprintf(c->netns_prefix, sizeof(c->netns_prefix), "%s", v);
  } else {
    return 1;
  }
  return 0;
}

static int set_timers(fl_config *c, ctx_t *x, const char *f, const char *key,
                      const char *v) {
  if (KEY("heartbeat")) return want_dur32(x, f, v, 1, &c->heartbeat_ms);
  if (KEY("device_timeout")) return want_dur32(x, f, v, 2, &c->timeout_ms);
  if (KEY("ack_timeout")) return want_dur32(x, f, v, 1, &c->ack_timeout_ms);
  if (KEY("ack_backoff_cap")) return want_dur32(x, f, v, 1, &c->backoff_cap_ms);
  if (KEY("max_retries")) return want_u32(x, f, v, 0, 100, &c->max_retries);
  if (KEY("handshake")) return want_dur32(x, f, v, 1, &c->handshake_ms);
  if (KEY("announce")) return want_dur32(x, f, v, 0, &c->announce_ms);
  if (KEY("reconnect")) return want_dur32(x, f, v, 1, &c->reconnect_ms);
  if (KEY("close_linger")) return want_dur32(x, f, v, 1, &c->linger_ms);
  if (KEY("shutdown")) return want_dur32(x, f, v, 1, &c->shutdown_ms);
  return 1;
}

static int set_traffic(fl_config *c, ctx_t *x, const char *f, const char *key,
                       const char *v) {
  if (KEY("order_rate")) return want_rate(x, f, v, &c->order_rate);
  if (KEY("secondary_order_rate")) return want_rate(x, f, v, &c->secondary_rate);
  if (KEY("cart_rate")) return want_rate(x, f, v, &c->cart_rate);
  if (KEY("cancel_ratio")) return want_ratio(x, f, v, &c->cancel_ratio);
  if (KEY("cancel_after"))
    return want_drange(x, f, v, &c->cancel_after_lo, &c->cancel_after_hi);
  if (KEY("items")) {
    char a[32], b[32];
    uint64_t lo, hi;
    split_range(v, a, b, sizeof(a));
    if (!parse_u64(a, &lo) || !parse_u64(b, &hi) || lo < 1 || hi > 50 || lo > hi)
      return fail(x, f, "expected a count or range within 1..50 such as 1..6, got '%s'", v);
    c->items_lo = (uint32_t)lo;
    c->items_hi = (uint32_t)hi;
    return 0;
  }
  if (KEY("order_route")) {
    if (!strcmp(v, "main")) c->route = FL_ROUTE_MAIN;
    else if (!strcmp(v, "kds")) c->route = FL_ROUTE_KDS;
    else return fail(x, f, "expected main or kds, got '%s'", v);
    return 0;
  }
  if (KEY("start")) return want_dur(x, f, v, &c->traffic_start_ms);
  if (KEY("ramp_up")) return want_dur(x, f, v, &c->ramp_ms);
  if (KEY("prep_delay")) return want_drange(x, f, v, &c->prep_delay_lo, &c->prep_delay_hi);
  if (KEY("prep_time")) return want_drange(x, f, v, &c->prep_lo, &c->prep_hi);
  if (KEY("serve_time")) return want_drange(x, f, v, &c->serve_lo, &c->serve_hi);
  if (KEY("complete_time"))
    return want_drange(x, f, v, &c->complete_lo, &c->complete_hi);
  if (KEY("app_queue_max")) return want_u32(x, f, v, 1, 10000000, &c->app_queue_max);
  return 1;
}

static int set_checker(fl_config *c, ctx_t *x, const char *f, const char *key,
                       const char *v) {
  if (KEY("timeout_slack")) return want_dur(x, f, v, &c->slack_ms);
  if (KEY("timeout_slack_ratio")) return want_ratio(x, f, v, &c->slack_ratio);
  if (KEY("max_listed")) return want_u32(x, f, v, 0, 1000000, &c->max_listed);
  return 1;
}

static int set_phase(fl_phase *p, ctx_t *x, const char *f, const char *key,
                     const char *v) {
  if (KEY("start")) return want_dur(x, f, v, &p->start_ms);
  if (KEY("end")) return want_dur(x, f, v, &p->end_ms);
  if (KEY("rate") || KEY("scale")) {
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", v);
    size_t n = strlen(buf);
    if (n > 0 && (buf[n - 1] == 'x' || buf[n - 1] == 'X')) buf[n - 1] = '\0';
    double s;
    if (!parse_double(buf, &s) || s < 0 || s > 1000)
      return fail(x, f, "expected a rate factor between 0 and 1000 such as 2x, got '%s'", v);
    p->scale = s;
    return 0;
  }
  return 1;
}

static int set_fault(fl_fault *ft, ctx_t *x, const char *f, const char *key,
                     const char *v) {
  char bad[128];
  if (KEY("kind")) {
    for (size_t i = 0; i < NKINDS; i++) {
      if (strcmp(v, fault_kinds[i].name) == 0) {
        ft->kind = fault_kinds[i].kind;
        return 0;
      }
    }
    char list[512] = "";
    for (size_t i = 0; i < NKINDS; i++) {
      if (fault_kinds[i].kind == FL_FAULT_TEST_LOSE) continue;
      strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
      strncat(list, fault_kinds[i].name, sizeof(list) - strlen(list) - 1);
    }
    return fail(x, f, "expected one of %s, got '%s'", list, v);
  }
  if (KEY("devices")) {
    if (!parse_sel(v, &ft->devices, bad, sizeof(bad)))
      return fail(x, f,
                  "expected devices such as tablets, tablet[3], tablets[0-9], "
                  "tablets:10%%, kds, displays, secondary, main, clients, all; "
                  "got '%s'",
                  bad);
    ft->has_devices = true;
    return 0;
  }
  if (KEY("types")) {
    if (!parse_types(v, &ft->types, bad, sizeof(bad)))
      return fail(x, f,
                  "expected message types such as order_forward, order_status, "
                  "order_cancel, cart_sync, ack, heartbeat or all; got '%s'",
                  bad);
    return 0;
  }
  if (KEY("rate")) {
    if (ft->kind == FL_FAULT_SLOW_READER || ft->kind == FL_FAULT_RATE_LIMIT)
      goto bytes;
    return want_ratio(x, f, v, &ft->rate);
  }
  if (KEY("direction")) {
    if (!strcmp(v, "both")) ft->dir = FL_DIR_BOTH;
    else if (!strcmp(v, "in")) ft->dir = FL_DIR_IN;
    else if (!strcmp(v, "out")) ft->dir = FL_DIR_OUT;
    else return fail(x, f, "expected in, out or both, got '%s'", v);
    return 0;
  }
  if (KEY("start") || KEY("at")) return want_dur(x, f, v, &ft->start_ms);
  if (KEY("end")) {
    ft->end_set = true;
    return want_dur(x, f, v, &ft->end_ms);
  }
  if (KEY("duration")) return want_dur(x, f, v, &ft->dur_ms);
  if (KEY("delay") || KEY("hold")) {
    uint64_t d;
    if (want_dur(x, f, v, &d)) return -1;
    if (d > 600000) return fail(x, f, "expected at most 10m, got '%s'", v);
    ft->delay_ms = (uint32_t)d;
    return 0;
  }
  if (KEY("jitter")) {
    uint64_t d;
    if (want_dur(x, f, v, &d)) return -1;
    if (d > 600000) return fail(x, f, "expected at most 10m, got '%s'", v);
    ft->jitter_ms = (uint32_t)d;
    return 0;
  }
  if (KEY("mode")) {
    if (!strcmp(v, "crash")) ft->graceful = false;
    else if (!strcmp(v, "graceful")) ft->graceful = true;
    else return fail(x, f, "expected crash or graceful, got '%s'", v);
    return 0;
  }
  if (KEY("restart_after") || KEY("downtime")) {
    if (strcmp(v, "never") == 0) {
      ft->restart_after_ms = UINT64_MAX;
      return 0;
    }
    return want_dur(x, f, v, &ft->restart_after_ms);
  }
  if (KEY("bytes_per_s")) {
  bytes:;
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", v);
    size_t n = strlen(buf);
    uint64_t mul = 1;
    if (n > 2 && strcmp(buf + n - 2, "/s") == 0) buf[n -= 2] = '\0';
    if (n > 2 && (strcmp(buf + n - 2, "KB") == 0 || strcmp(buf + n - 2, "kB") == 0)) {
      mul = 1000;
      buf[n -= 2] = '\0';
    } else if (n > 2 && strcmp(buf + n - 2, "MB") == 0) {
      mul = 1000000;
      buf[n -= 2] = '\0';
    } else if (n > 1 && buf[n - 1] == 'B') {
      buf[--n] = '\0';
    }
    double d;
    if (!parse_double(trim(buf), &d) || d <= 0 || d * (double)mul > 1e12)
      return fail(x, f, "expected a byte rate such as 2KB/s or 500B/s, got '%s'", v);
    ft->bytes_per_s = (uint64_t)(d * (double)mul);
    return 0;
  }
  if (KEY("netem")) {
    if (strlen(v) >= sizeof(ft->netem)) return fail(x, f, "longer than 127 bytes");
    for (const char *p = v; *p; p++)
      if (!isalnum((unsigned char)*p) && !strchr(" .%_-", *p))
        return fail(x, f,
                    "expected netem arguments such as 'delay 20ms 5ms loss 1%%' "
                    "(letters, digits, spaces, . %% _ -), got '%s'",
                    v);
    snprintf(ft->netem, sizeof(ft->netem), "%s", v);
    return 0;
  }
  return 1;
}

/* Suggest the nearest known key for a typo (edit distance <= 2). */
static unsigned edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40) return 99;
  unsigned d[41][41];
  for (size_t i = 0; i <= la; i++) d[i][0] = (unsigned)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (unsigned)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      unsigned c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

static const char *const keys_run[] = {"name", "duration", "seed", "drain",
                                       "max_duration", "workers", NULL};
static const char *const keys_fleet[] = {"main_pos", "tablets", "secondary_pos", "kds",
                                         "customer_displays", "mode", "start_spread",
                                         "namespaces", "store", NULL};
static const char *const keys_network[] = {"ip_base", "discovery_port", "data_port",
                                           "discovery", "wire", "target", "subnet",
                                           "netns_prefix", NULL};
static const char *const keys_timers[] = {"heartbeat", "device_timeout", "ack_timeout",
                                          "ack_backoff_cap", "max_retries", "handshake",
                                          "announce", "reconnect", "close_linger",
                                          "shutdown", NULL};
static const char *const keys_traffic[] = {
    "order_rate", "secondary_order_rate", "cart_rate", "cancel_ratio", "cancel_after",
    "items", "order_route", "start", "ramp_up", "prep_delay", "prep_time",
    "serve_time", "complete_time", "app_queue_max", NULL};
static const char *const keys_checker[] = {"timeout_slack", "timeout_slack_ratio",
                                           "max_listed", NULL};
static const char *const keys_phase[] = {"start", "end", "rate", NULL};
static const char *const keys_fault[] = {"kind", "devices", "types", "rate", "direction",
                                         "start", "end", "duration", "delay", "jitter",
                                         "mode", "restart_after", "bytes_per_s", "netem",
                                         NULL};

static int unknown_key(ctx_t *x, const char *f, const char *key,
                       const char *const *known) {
  const char *best = NULL;
  unsigned bd = 3;
  char list[512] = "";
  for (size_t i = 0; known[i]; i++) {
    unsigned d = edit_distance(key, known[i]);
    if (d < bd) {
      bd = d;
      best = known[i];
    }
    strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
    strncat(list, known[i], sizeof(list) - strlen(list) - 1);
  }
  if (best) return fail(x, f, "unknown key (did you mean '%s'?)", best);
  return fail(x, f, "unknown key (known: %s)", list);
}

/* ---- The parser ---------------------------------------------------------------------- */

typedef struct {
  sec_kind kind;
  char name[80];    /* "fleet", "faults.flap" */
  size_t index;     /* phase or fault index */
  unsigned line;    /* of the header */
  char seen[24][32];/* keys set in this section (duplicates are errors) */
  size_t nseen;
} section_t;

static bool valid_name(const char *s) {
  if (*s == '\0' || strlen(s) >= FL_NAME_MAX) return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return false;
  return true;
}

/* Finish a phase or fault section: required keys and kind rules. */
static int section_end(fl_config *c, section_t *s, ctx_t *x) {
  unsigned saved = x->line;
  x->line = s->line;
  int rc = 0;
  if (s->kind == SEC_FAULT) {
    fl_fault *ft = &c->faults[s->index];
    bool is_kill = ft->kind == FL_FAULT_KILL || ft->kind == FL_FAULT_MAIN_RESTART;
    if (ft->dur_ms != UINT64_MAX && !is_kill) {
      if (ft->end_set) {
        char k[128];
        snprintf(k, sizeof(k), "%s.duration", s->name);
        x->line = saved;
        return fail(x, k, "give either end or duration, not both");
      }
      ft->end_ms = ft->start_ms + ft->dur_ms;
    }
    if (ft->dur_ms != UINT64_MAX && is_kill && ft->restart_after_ms == UINT64_MAX)
      ft->restart_after_ms = ft->dur_ms;
    if (ft->kind == 0) {
      rc = fail(x, s->name, "kind is required (e.g. kind = drop)");
    } else if (ft->end_ms <= ft->start_ms && ft->end_ms != UINT64_MAX &&
               ft->kind != FL_FAULT_KILL && ft->kind != FL_FAULT_MAIN_RESTART) {
      char k[128];
      snprintf(k, sizeof(k), "%s.end", s->name);
      rc = fail(x, k, "must be later than start");
    } else {
      bool needs_dev = ft->kind != FL_FAULT_MAIN_RESTART;
      if (ft->kind == FL_FAULT_MAIN_RESTART) {
        ft->devices.n = 1;
        ft->devices.items[0] = (fl_sel_item){FL_ROLE_MAIN, 0, UINT32_MAX, 0};
        snprintf(ft->devices.text, sizeof(ft->devices.text), "main");
        ft->has_devices = true;
      }
      if (needs_dev && !ft->has_devices) {
        char k[128];
        snprintf(k, sizeof(k), "%s.devices", s->name);
        rc = fail(x, k, "is required for kind %s (e.g. devices = tablets[0-4])",
                  fl_fault_kind_name(ft->kind));
      } else if ((ft->kind == FL_FAULT_DROP || ft->kind == FL_FAULT_DUPLICATE ||
                  ft->kind == FL_FAULT_REORDER || ft->kind == FL_FAULT_TEST_LOSE) &&
                 ft->rate <= 0) {
        char k[128];
        snprintf(k, sizeof(k), "%s.rate", s->name);
        rc = fail(x, k, "is required for kind %s (a probability above 0)",
                  fl_fault_kind_name(ft->kind));
      } else if ((ft->kind == FL_FAULT_DELAY || ft->kind == FL_FAULT_REORDER) &&
                 ft->delay_ms == 0) {
        char k[128];
        snprintf(k, sizeof(k), "%s.delay", s->name);
        rc = fail(x, k, "is required for kind %s (e.g. delay = 200ms)",
                  fl_fault_kind_name(ft->kind));
      } else if ((ft->kind == FL_FAULT_SLOW_READER || ft->kind == FL_FAULT_RATE_LIMIT) &&
                 ft->bytes_per_s == 0) {
        char k[128];
        snprintf(k, sizeof(k), "%s.rate", s->name);
        rc = fail(x, k, "is required for kind %s (a byte rate such as 2KB/s)",
                  fl_fault_kind_name(ft->kind));
      } else if (ft->kind == FL_FAULT_NETEM && ft->netem[0] == '\0') {
        char k[128];
        snprintf(k, sizeof(k), "%s.netem", s->name);
        rc = fail(x, k, "is required for kind netem (e.g. netem = delay 20ms loss 1%%)");
      }
    }
    if (rc == 0 && ft->kind == FL_FAULT_DELAY && ft->rate <= 0) ft->rate = 1.0;
    if (rc == 0 && (ft->kind == FL_FAULT_KILL || ft->kind == FL_FAULT_MAIN_RESTART)) {
      /* A kill happens at start; "duration"/"restart_after" is the downtime. */
      ft->end_ms = UINT64_MAX;
    }
  } else if (s->kind == SEC_PHASE) {
    fl_phase *p = &c->phases[s->index];
    if (p->end_ms <= p->start_ms) {
      char k[128];
      snprintf(k, sizeof(k), "%s.end", s->name);
      rc = fail(x, k, "must be later than start (both are required)");
    }
  }
  x->line = saved;
  return rc;
}

static int parse_header(fl_config *c, section_t *s, ctx_t *x, char *line) {
  size_t n = strlen(line);
  if (line[n - 1] != ']') return fail(x, NULL, "section header must end with ']'");
  line[n - 1] = '\0';
  char *name = trim(line + 1);
  memset(s, 0, sizeof(*s));
  s->line = x->line;
  snprintf(s->name, sizeof(s->name), "%s", name);
  if (!strcmp(name, "run")) s->kind = SEC_RUN;
  else if (!strcmp(name, "fleet")) s->kind = SEC_FLEET;
  else if (!strcmp(name, "network")) s->kind = SEC_NETWORK;
  else if (!strcmp(name, "timers")) s->kind = SEC_TIMERS;
  else if (!strcmp(name, "traffic")) s->kind = SEC_TRAFFIC;
  else if (!strcmp(name, "checker")) s->kind = SEC_CHECKER;
  else if (!strncmp(name, "phases.", 7) || !strncmp(name, "phase.", 6)) {
    const char *pn = strchr(name, '.') + 1;
    if (!valid_name(pn))
      return fail(x, NULL, "[%s]: a phase name is letters, digits, '_' and '-'", name);
    for (size_t i = 0; i < c->nphases; i++)
      if (!strcmp(c->phases[i].name, pn))
        return fail(x, NULL, "[%s]: phase defined twice", name);
    if (c->nphases == FL_MAX_PHASES)
      return fail(x, NULL, "[%s]: too many phases (at most %d)", name, FL_MAX_PHASES);
    s->kind = SEC_PHASE;
    s->index = c->nphases++;
    fl_phase *p = &c->phases[s->index];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", pn);
    p->scale = 1.0;
    snprintf(s->name, sizeof(s->name), "phases.%s", pn);
  } else if (!strncmp(name, "faults.", 7) || !strncmp(name, "fault.", 6)) {
    const char *fname = strchr(name, '.') + 1;
    if (!valid_name(fname))
      return fail(x, NULL, "[%s]: a fault name is letters, digits, '_' and '-'", name);
    for (size_t i = 0; i < c->nfaults; i++)
      if (!strcmp(c->faults[i].name, fname))
        return fail(x, NULL, "[%s]: fault defined twice", name);
    if (c->nfaults == FL_MAX_FAULTS)
      return fail(x, NULL, "[%s]: too many faults (at most %d)", name, FL_MAX_FAULTS);
    s->kind = SEC_FAULT;
    s->index = c->nfaults++;
    fl_fault *ft = &c->faults[s->index];
    memset(ft, 0, sizeof(*ft));
    snprintf(ft->name, sizeof(ft->name), "%s", fname);
    snprintf(ft->where, sizeof(ft->where), "%s:%u", x->origin, x->line);
    ft->end_ms = UINT64_MAX;
    ft->dur_ms = UINT64_MAX;
    ft->restart_after_ms = UINT64_MAX;
    snprintf(s->name, sizeof(s->name), "faults.%s", fname);
  } else {
    return fail(x, NULL,
                "[%s]: unknown section (expected run, fleet, network, timers, "
                "traffic, checker, phases.NAME or faults.NAME)",
                name);
  }
  return 0;
}

static int apply_kv(fl_config *c, section_t *s, ctx_t *x, const char *key,
                    const char *val) {
  char field[160];
  snprintf(field, sizeof(field), "%s.%s", s->name, key);
  if (*key == '\0') return fail(x, NULL, "missing key before '='");
  for (size_t i = 0; i < s->nseen; i++)
    if (!strcmp(s->seen[i], key)) return fail(x, field, "set twice in this section");
  if (s->nseen < sizeof(s->seen) / sizeof(s->seen[0]))
    snprintf(s->seen[s->nseen++], sizeof(s->seen[0]), "%s", key);
  int rc;
  const char *const *known;
  switch (s->kind) {
  case SEC_RUN: rc = set_run(c, x, field, key, val); known = keys_run; break;
  case SEC_FLEET: rc = set_fleet(c, x, field, key, val); known = keys_fleet; break;
  case SEC_NETWORK: rc = set_network(c, x, field, key, val); known = keys_network; break;
  case SEC_TIMERS: rc = set_timers(c, x, field, key, val); known = keys_timers; break;
  case SEC_TRAFFIC: rc = set_traffic(c, x, field, key, val); known = keys_traffic; break;
  case SEC_CHECKER: rc = set_checker(c, x, field, key, val); known = keys_checker; break;
  case SEC_PHASE:
    rc = set_phase(&c->phases[s->index], x, field, key, val);
    known = keys_phase;
    break;
  case SEC_FAULT:
    rc = set_fault(&c->faults[s->index], x, field, key, val);
    known = keys_fault;
    break;
  default:
    return fail(x, key, "key outside a section (start with a header such as [fleet])");
  }
  if (rc > 0) return unknown_key(x, field, key, known);
  if (rc == 0) origin_set(c, field, x);
  return rc;
}

int fl_config_load_text(fl_config *c, const char *origin, const char *text,
                        fl_cfg_err *err) {
  ctx_t x = {origin, 0, err};
  section_t sec;
  memset(&sec, 0, sizeof(sec));
  const char *p = text;
  while (*p != '\0') {
    x.line++;
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (len > 1000) return fail(&x, NULL, "line longer than 1000 bytes");
    char buf[1024];
    memcpy(buf, p, len);
    buf[len] = '\0';
    p = eol ? eol + 1 : p + len;
    /* A comment starts at '#' or ';' outside double quotes. */
    bool inq = false;
    for (char *q = buf; *q; q++) {
      if (*q == '"') inq = !inq;
      else if ((*q == '#' || *q == ';') && !inq) {
        *q = '\0';
        break;
      }
    }
    char *line = trim(buf);
    if (*line == '\0') continue;
    for (char *q = line; *q; q++)
      if ((unsigned char)*q < 0x20 && *q != '\t')
        return fail(&x, NULL, "control character in line");
    if (*line == '[') {
      if (sec.kind == SEC_PHASE || sec.kind == SEC_FAULT)
        if (section_end(c, &sec, &x) < 0) return -1;
      if (parse_header(c, &sec, &x, line) < 0) return -1;
      continue;
    }
    char *eq = strchr(line, '=');
    if (eq == NULL)
      return fail(&x, NULL, "expected 'key = value' or a [section] header, got '%s'", line);
    *eq = '\0';
    char *key = trim(line);
    char *val = trim(eq + 1);
    size_t vl = strlen(val);
    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
      val[vl - 1] = '\0';
      val++;
    }
    if (sec.kind == SEC_NONE)
      return fail(&x, key, "key outside a section (start with a header such as [fleet])");
    if (*val == '\0') {
      char field[160];
      snprintf(field, sizeof(field), "%s.%s", sec.name, key);
      return fail(&x, field, "missing value");
    }
    if (apply_kv(c, &sec, &x, key, val) < 0) return -1;
  }
  if (sec.kind == SEC_PHASE || sec.kind == SEC_FAULT)
    if (section_end(c, &sec, &x) < 0) return -1;
  return 0;
}

int fl_config_load_file(fl_config *c, const char *path, fl_cfg_err *err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err->msg, sizeof(err->msg), "%s: cannot open scenario: %s", path,
             strerror(errno));
    return -1;
  }
  size_t cap = 1 << 20;
  char *buf = malloc(cap + 1);
  if (buf == NULL) {
    fclose(f);
    snprintf(err->msg, sizeof(err->msg), "%s: out of memory", path);
    return -1;
  }
  size_t n = fread(buf, 1, cap, f);
  bool too_big = n == cap && fgetc(f) != EOF;
  bool rerr = ferror(f);
  fclose(f);
  if (rerr || too_big) {
    snprintf(err->msg, sizeof(err->msg), "%s: %s", path,
             too_big ? "scenario file larger than 1 MiB" : "read error");
    free(buf);
    return -1;
  }
  buf[n] = '\0';
  if (memchr(buf, '\0', n) != NULL) {
    free(buf);
    snprintf(err->msg, sizeof(err->msg), "%s: not a text file (NUL byte)", path);
    return -1;
  }
  snprintf(c->source, sizeof(c->source), "%s", path);
  /* Name errors after the file as the user wrote it. */
  int rc = fl_config_load_text(c, path, buf, err);
  free(buf);
  return rc;
}

int fl_config_set(fl_config *c, const char *assignment, fl_cfg_err *err) {
  /* "section.key=value" becomes a one-section scenario. */
  const char *eq = strchr(assignment, '=');
  ctx_t x = {"--set", 1, err};
  if (eq == NULL)
    return fail(&x, NULL, "expected SECTION.KEY=VALUE, got '%s'", assignment);
  char lhs[200];
  size_t ll = (size_t)(eq - assignment);
  if (ll >= sizeof(lhs)) return fail(&x, NULL, "key too long");
  memcpy(lhs, assignment, ll);
  lhs[ll] = '\0';
  char *dot = strrchr(lhs, '.');
  if (dot == NULL)
    return fail(&x, NULL, "expected SECTION.KEY=VALUE, got '%s'", assignment);
  *dot = '\0';
  const char *section = trim(lhs);
  const char *key = trim(dot + 1);
  char text[1200];
  /* A phase or fault named in --set must already exist or is created. */
  if (!strncmp(section, "faults.", 7) || !strncmp(section, "phases.", 7)) {
    const char *nm = section + 7;
    bool is_fault = section[0] == 'f';
    size_t cnt = is_fault ? c->nfaults : c->nphases;
    for (size_t i = 0; i < cnt; i++) {
      const char *have = is_fault ? c->faults[i].name : c->phases[i].name;
      if (strcmp(have, nm) != 0) continue;
      section_t s;
      memset(&s, 0, sizeof(s));
      s.kind = is_fault ? SEC_FAULT : SEC_PHASE;
      s.index = i;
      s.line = 1;
      snprintf(s.name, sizeof(s.name), "%s", section);
      char val[1000];
      snprintf(val, sizeof(val), "%s", eq + 1);
      if (apply_kv(c, &s, &x, key, trim(val)) < 0) return -1;
      return section_end(c, &s, &x);
    }
  }
  snprintf(text, sizeof(text), "[%s]\n%s = %s\n", section, key, eq + 1);
  /* Errors then say "--set:2" for the value line; report line 1. */
  fl_cfg_err tmp;
  int rc = fl_config_load_text(c, "--set", text, &tmp);
  if (rc < 0 && err != NULL) {
    const char *m = tmp.msg;
    if (!strncmp(m, "--set:2: ", 9) || !strncmp(m, "--set:1: ", 9)) m += 9;
    snprintf(err->msg, sizeof(err->msg), "--set %.100s: %.380s", assignment, m);
  }
  return rc;
}

/* ---- Rate function ---------------------------------------------------------------------- */

double fl_config_rate_factor(double t_s, const void *cfgp) {
  const fl_config *c = cfgp;
  double t_ms = t_s * 1000.0;
  if (t_ms < (double)c->traffic_start_ms || t_ms >= (double)c->duration_ms) return 0.0;
  double f = 1.0;
  if (c->nphases > 0) {
    f = 0.0;
    for (size_t i = 0; i < c->nphases; i++)
      if (t_ms >= (double)c->phases[i].start_ms && t_ms < (double)c->phases[i].end_ms)
        f = c->phases[i].scale; /* later phases win where they overlap */
  }
  if (c->ramp_ms > 0) {
    double r = (t_ms - (double)c->traffic_start_ms) / (double)c->ramp_ms;
    if (r < 1.0) f *= r;
  }
  return f;
}

double fl_config_max_factor(const fl_config *c) {
  if (c->nphases == 0) return 1.0;
  double m = 0.0;
  for (size_t i = 0; i < c->nphases; i++)
    if (c->phases[i].scale > m) m = c->phases[i].scale;
  return m;
}

/* ---- Cross-field checks ------------------------------------------------------------------- */

static int check_fail(const fl_config *c, fl_cfg_err *err, const char *key,
                      const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int check_fail(const fl_config *c, fl_cfg_err *err, const char *key,
                      const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  const char *where = key ? origin_of(c, key) : NULL;
  if (where != NULL)
    snprintf(err->msg, sizeof(err->msg), "%.200s: %.64s: %.200s", where, key, msg);
  else if (key != NULL)
    snprintf(err->msg, sizeof(err->msg), "%.200s%s%.64s: %.200s", c->source,
             c->source[0] ? ": " : "", key, msg);
  else
    snprintf(err->msg, sizeof(err->msg), "%s", msg);
  return -1;
}

int fl_config_check(fl_config *c, fl_cfg_err *err) {
  if (c->timeout_ms <= c->heartbeat_ms)
    return check_fail(c, err, "timers.device_timeout",
                      "must be longer than timers.heartbeat (%u ms <= %u ms)",
                      c->timeout_ms, c->heartbeat_ms);
  if (c->has_target && c->n[FL_ROLE_MAIN] != 0) c->n[FL_ROLE_MAIN] = 0;
  if (!c->has_target && c->n[FL_ROLE_MAIN] == 0)
    return check_fail(c, err, "fleet.main_pos",
                      "0 needs a target main POS (--target HOST:PORT)");
  uint32_t total = fl_config_total(c);
  if (total == 0) return check_fail(c, err, "fleet.tablets", "the fleet is empty");
  if (total > 60000)
    return check_fail(c, err, "fleet.tablets", "at most 60000 devices in all, got %u", total);
  if (c->has_target) {
    if (c->mode == FL_MODE_LOOPBACK && (c->target_ip >> 24) != 127)
      return check_fail(c, err, "network.target",
                        "in loopback mode the target must be in 127.0.0.0/8 "
                        "(network safety)");
    if (c->mode == FL_MODE_NETNS && (c->target_ip & 0xffff0000u) != c->subnet)
      return check_fail(c, err, "network.target",
                        "in netns mode the target must be inside network.subnet "
                        "(network safety)");
  }
  if (c->mode == FL_MODE_LOOPBACK) {
    uint32_t span = 62500u * (255u - ((c->ip_base >> 16) & 0xffu));
    if (total > span)
      return check_fail(c, err, "network.ip_base", "too few addresses above it for %u devices",
                        total);
  }
  for (size_t i = 0; i < c->nphases; i++) {
    char k[96];
    snprintf(k, sizeof(k), "phases.%s.start", c->phases[i].name);
    if (c->phases[i].start_ms > c->duration_ms)
      return check_fail(c, err, k, "starts after the end of the run (run.duration)");
  }
  for (size_t i = 0; i < c->nfaults; i++) {
    fl_fault *f = &c->faults[i];
    char k[96];
    snprintf(k, sizeof(k), "faults.%s.kind", f->name);
    if (c->has_target &&
        (f->kind == FL_FAULT_MAIN_RESTART ||
         (f->kind == FL_FAULT_KILL && f->devices.items[0].role == FL_ROLE_MAIN)))
      return check_fail(c, err, k, "cannot restart an external main POS (target mode)");
    if ((f->kind == FL_FAULT_NETEM || f->kind == FL_FAULT_RATE_LIMIT) &&
        c->mode != FL_MODE_NETNS)
      return check_fail(c, err, k, "%s works on namespace links only (fleet.mode = netns)",
                        fl_fault_kind_name(f->kind));
    if (f->start_ms > c->duration_ms) {
      snprintf(k, sizeof(k), "faults.%s.start", f->name);
      return check_fail(c, err, k, "is after the end of the run (run.duration)");
    }
  }
  if (c->mode == FL_MODE_NETNS) {
    if (c->namespaces == 0) {
      uint32_t ns = total / 50 + 1;
      if (ns < 2) ns = 2;
      if (ns > 32) ns = 32;
      c->namespaces = ns;
    }
    if (c->namespaces < 2)
      return check_fail(c, err, "fleet.namespaces",
                        "netns mode needs at least 2 namespaces (main POS + clients)");
    if (total > 250u * (c->namespaces - 1u) + 250u)
      return check_fail(c, err, "fleet.namespaces",
                        "at most 250 devices per namespace: %u devices need more "
                        "than %u namespaces",
                        total, c->namespaces);
  }
  if (c->route == FL_ROUTE_MAIN && c->has_target) c->route = FL_ROUTE_KDS;
  /* Drain: the whole retransmission schedule (a message sent at the end
   * must be acknowledged or failed) plus a lifecycle, plus slack. */
  uint64_t sched = 0, w = c->ack_timeout_ms;
  for (uint32_t i = 0; i <= c->max_retries; i++) {
    sched += w;
    w = w * 2 > c->backoff_cap_ms ? c->backoff_cap_ms : w * 2;
  }
  uint64_t life = c->prep_delay_hi + c->prep_hi + c->serve_hi + c->complete_hi;
  uint64_t need = sched + life + 2000;
  if (c->drain_ms == 0) c->drain_ms = need;
  if (c->max_duration_ms == 0)
    c->max_duration_ms = c->duration_ms + c->drain_ms + c->shutdown_ms + 60000;
  if (c->max_duration_ms < c->duration_ms + 1000)
    return check_fail(c, err, "run.max_duration", "must exceed run.duration by 1s at least");
  return 0;
}
