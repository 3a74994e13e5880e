/* posp2p-sim configuration: everything a run needs, filled from the
 * built-in defaults, then a scenario file, then command-line overrides
 * (scn.c), then checked (fl_config_check). */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Roles, indexed like Posp2p__V2__DeviceType (1..5). */
enum {
  FL_ROLE_MAIN = 1,
  FL_ROLE_TABLET = 2,
  FL_ROLE_SECONDARY = 3,
  FL_ROLE_KDS = 4,
  FL_ROLE_DISPLAY = 5,
  FL_NROLES = 6
};

typedef enum { FL_MODE_LOOPBACK = 0, FL_MODE_NETNS = 1 } fl_mode;
typedef enum {
  FL_DISC_AUTO = 0,     /* wait for the main POS's ANNOUNCE, REQUEST if none */
  FL_DISC_ANNOUNCE = 1, /* only ANNOUNCE */
  FL_DISC_REQUEST = 2,  /* every client broadcasts a REQUEST at start */
  FL_DISC_NONE = 3      /* connect to the planned address, no discovery */
} fl_disc_mode;
typedef enum { FL_ROUTE_MAIN = 0, FL_ROUTE_KDS = 1 } fl_route;
typedef enum { FL_STORE_AUTO = 0, FL_STORE_ALL = 1, FL_STORE_NONE = 2 } fl_store_mode;

typedef enum {
  FL_FAULT_DROP = 1,
  FL_FAULT_DELAY,
  FL_FAULT_DUPLICATE,
  FL_FAULT_REORDER,
  FL_FAULT_WITHHOLD_ACKS,
  FL_FAULT_WITHHOLD_HEARTBEATS,
  FL_FAULT_SLOW_READER,
  FL_FAULT_PARTITION,
  FL_FAULT_SILENCE,
  FL_FAULT_KILL,
  FL_FAULT_MAIN_RESTART,
  FL_FAULT_NETEM,
  FL_FAULT_RATE_LIMIT,
  FL_FAULT_TEST_LOSE /* test only: the app loses delivered orders */
} fl_fault_kind;

typedef enum { FL_DIR_BOTH = 0, FL_DIR_IN = 1, FL_DIR_OUT = 2 } fl_dir;

/* A device selector item: a role (0 = every role, -1 = every client),
 * an index range within the role, or a leading fraction of it. */
typedef struct {
  int role;
  uint32_t lo, hi;  /* inclusive; hi = UINT32_MAX: to the last */
  double fraction;  /* > 0: the first ceil(fraction * n) of the role */
} fl_sel_item;

#define FL_SEL_MAX 8
typedef struct {
  fl_sel_item items[FL_SEL_MAX];
  size_t n;
  char text[128];
} fl_sel;

#define FL_NAME_MAX 48
typedef struct {
  char name[FL_NAME_MAX];
  fl_fault_kind kind;
  char where[160];      /* "file:line" of the section, for messages */
  fl_sel devices;
  bool has_devices;
  uint64_t types;       /* bit t set: message type t (0..63); 0 = every type */
  double rate;          /* probability per frame (drop, duplicate, ...) */
  fl_dir dir;
  uint64_t start_ms, end_ms; /* run time; end UINT64_MAX = until the end */
  uint64_t dur_ms;      /* as written ("duration"), UINT64_MAX if not */
  bool end_set;
  uint32_t delay_ms, jitter_ms;
  bool graceful;        /* kill: GOODBYE first */
  uint64_t restart_after_ms; /* kill: downtime, UINT64_MAX = stays down */
  uint64_t bytes_per_s; /* slow reader, rate limit */
  char netem[128];      /* netem arguments */
} fl_fault;

typedef struct {
  char name[FL_NAME_MAX];
  uint64_t start_ms, end_ms;
  double scale;
} fl_phase;

#define FL_MAX_FAULTS 32
#define FL_MAX_PHASES 16

typedef struct {
  /* [run] */
  char name[64];
  char source[256];     /* scenario file, "" for built-in defaults */
  uint64_t seed;
  uint64_t duration_ms;
  uint64_t drain_ms;    /* 0 = computed from the timers */
  uint64_t max_duration_ms; /* hard cap; 0 = computed */
  int workers;          /* -1 = auto, 0 = run in this process */

  /* [fleet] */
  uint32_t n[FL_NROLES];
  fl_mode mode;
  uint64_t start_spread_ms;
  uint32_t namespaces;  /* netns mode; 0 = auto */
  fl_store_mode store;

  /* [network] */
  uint32_t ip_base;     /* host order */
  uint16_t disc_port, data_port;
  fl_disc_mode discovery;
  int wire;             /* posp2p_peer_wire of the clients' connections */
  bool has_target;
  uint32_t target_ip;
  uint16_t target_port;
  uint32_t subnet;      /* netns: 10.X.0.0/16, host order */
  char netns_prefix[24];

  /* [timers] (ms) */
  uint32_t heartbeat_ms, timeout_ms, ack_timeout_ms, backoff_cap_ms;
  uint32_t max_retries, handshake_ms, announce_ms, reconnect_ms;
  uint32_t linger_ms, shutdown_ms;

  /* [traffic] */
  double order_rate, secondary_rate, cart_rate; /* per device per second */
  double cancel_ratio;
  uint64_t cancel_after_lo, cancel_after_hi;
  uint32_t items_lo, items_hi;
  fl_route route;
  uint64_t traffic_start_ms, ramp_ms;
  uint64_t prep_delay_lo, prep_delay_hi, prep_lo, prep_hi;
  uint64_t serve_lo, serve_hi, complete_lo, complete_hi;
  uint32_t app_queue_max;

  fl_phase phases[FL_MAX_PHASES];
  size_t nphases;
  fl_fault faults[FL_MAX_FAULTS];
  size_t nfaults;

  /* [checker] */
  uint64_t slack_ms;
  double slack_ratio;
  uint32_t max_listed;

  /* Where each key was last set ("file:line"), for check messages. */
  struct {
    char key[48];
    char where[200];
  } origins[96];
  size_t norigins;
} fl_config;

/* A parse or check failure: "file:line: section.key: message". */
typedef struct {
  char msg[512];
} fl_cfg_err;

void fl_config_defaults(fl_config *c);

/* Parse a scenario file on top of c. Errors: -1 with err filled (the file
 * cannot be read, or a line is wrong). */
int fl_config_load_file(fl_config *c, const char *path, fl_cfg_err *err);
/* Parse scenario text (for tests and --set): origin names it in errors. */
int fl_config_load_text(fl_config *c, const char *origin, const char *text,
                        fl_cfg_err *err);
/* Apply one "section.key=value" override (--set). */
int fl_config_set(fl_config *c, const char *assignment, fl_cfg_err *err);
/* Cross-field checks after everything is loaded; fills computed values
 * (drain, hard cap, namespaces). */
int fl_config_check(fl_config *c, fl_cfg_err *err);

/* Names for reports. */
const char *fl_role_name(int role);       /* "mainPOS" ... */
const char *fl_role_short(int role);      /* "main", "tablet", ... */
const char *fl_fault_kind_name(fl_fault_kind k);
const char *fl_dir_name(fl_dir d);
uint32_t fl_config_total(const fl_config *c);

/* Rate factor at run time t (seconds): traffic start, ramp and phases. */
double fl_config_rate_factor(double t_s, const void *cfg);
double fl_config_max_factor(const fl_config *c);

/* Duration text ("1.5s", "250ms") into buf. */
void fl_fmt_ms(char *buf, size_t n, uint64_t ms);

#endif
