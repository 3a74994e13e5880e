/* posp2p SQLite store: the persistent outbox, dedup ids and device registry
 * behind the engine's posp2p_peer_store interface (SPEC ACK-*, issue 3 §4).
 *
 * One database file per device (default <state_dir>/<device_id>.sqlite3).
 * Every callback is one autocommit transaction: when it returns 0 the row
 * is committed.
 *
 * Durability: the database runs in WAL mode. With synchronous=NORMAL (the
 * default) a commit is a write(2) into the WAL without fsync: it survives
 * the process being killed (kill -9, a crash, an abort), because the bytes
 * are in the kernel's page cache, but not a power loss or kernel crash,
 * which may lose the last commits (never corrupting the file). That is the
 * failure the outbox must survive (issue 3 §4) at a fraction of the cost.
 * synchronous=FULL (opts.sync_full) fsyncs the WAL on every commit and also
 * survives power loss, at roughly one disk flush per message.
 *
 * Errors: functions return 0 or a negative code (POSP2P_ERR_STORE for any
 * SQLite or file failure, POSP2P_ERR_INVAL, POSP2P_ERR_NOMEM) and describe
 * the failure in posp2p_store_errmsg: the SQL operation, the path and
 * sqlite3_errmsg, e.g.
 *   "sqlite: open /x/y.sqlite3: unable to open database file". */
#ifndef POSP2P_STORE_H
#define POSP2P_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/peer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct posp2p_store posp2p_store;

typedef struct {
  bool sync_full;            /* synchronous=FULL instead of NORMAL */
  uint32_t dedup_window_ms;  /* ACK dedup window, default 600000 */
  uint32_t dedup_count;      /* ids always kept per originator, default 4096 */
  /* Wall clock in ms since the epoch (dedup ages survive restarts, the
   * engine's monotonic clock does not). NULL: CLOCK_REALTIME. */
  uint64_t (*wall_ms)(void *user_data);
  void *user_data;
  /* Called with the message of every failure inside an engine callback
   * (where no caller sees a return value). May be NULL. */
  void (*on_error)(posp2p_store *s, const char *message, void *user_data);
} posp2p_store_opts;

void posp2p_store_opts_init(posp2p_store_opts *o);

/* Longest message kept by posp2p_store_errmsg / posp2p_store_open. */
#define POSP2P_STORE_ERRMSG_MAX 512

/* Open (creating if needed) the database at path, set WAL mode and the
 * synchronous level, create the schema, prepare the statements. errbuf
 * (may be NULL) receives the failure message. Errors: POSP2P_ERR_INVAL,
 * POSP2P_ERR_NOMEM, POSP2P_ERR_STORE (cannot open or create the file, not a
 * database, corrupt, read-only, schema newer than this program). */
int posp2p_store_open(posp2p_store **out, const char *path,
                      const posp2p_store_opts *opts,
                      char errbuf[POSP2P_STORE_ERRMSG_MAX]);
/* Finalize statements and close the database. NULL is fine. */
void posp2p_store_close(posp2p_store *s);

/* The last failure's message ("" if none) and the file path. */
const char *posp2p_store_errmsg(const posp2p_store *s);
const char *posp2p_store_path(const posp2p_store *s);

/* Fill iface with this store's callbacks (user_data = s), for
 * posp2p_peer_new / posp2p_uv_peer_new. */
void posp2p_store_iface(posp2p_store *s, posp2p_peer_store *iface);

/* "<state_dir>/<device_id>.sqlite3" into out. Errors: POSP2P_ERR_NOSPACE,
 * POSP2P_ERR_INVAL. */
int posp2p_store_default_path(char *out, size_t n, const char *state_dir,
                              const char *device_id);

/* Create dir (one level) if it does not exist; errbuf gets "cannot create
 * state directory X: <strerror>". Errors: POSP2P_ERR_STORE. */
int posp2p_store_mkdir(const char *dir, char errbuf[POSP2P_STORE_ERRMSG_MAX]);

typedef struct {
  size_t outbox;        /* entries restored */
  size_t dedup;         /* ids restored (within the window) */
  size_t devices;       /* registry entries restored */
  size_t skipped;       /* rows the engine refused (reported via on_error) */
  size_t expired;       /* dedup ids dropped as older than the window */
} posp2p_store_load_stats;

/* Called for each outbox entry restored (e.g. to rebuild an application's
 * list of sent orders); env is the decoded envelope, valid during the call. */
typedef void (*posp2p_store_outbox_fn)(const posp2p_peer_outbox_rec *rec,
                                       const posp2p_envelope *env,
                                       void *user_data);

/* Restore the registry, the dedup ids within the window and the outbox (in
 * the order the entries were first stored) into p, which must not be
 * started yet. Expired dedup ids are deleted first. A row the engine
 * refuses is skipped and reported through on_error. Errors:
 * POSP2P_ERR_STORE, POSP2P_ERR_NOMEM, POSP2P_ERR_STATE (p started). */
int posp2p_store_load(posp2p_store *s, posp2p_peer *p, uint64_t now_ms,
                      posp2p_store_outbox_fn fn, void *fn_user_data,
                      posp2p_store_load_stats *stats);

/* Delete dedup ids older than the window (keeping the newest dedup_count
 * per originator). Called by load and every few thousand inserts.
 * *deleted (may be NULL) receives the count. Errors: POSP2P_ERR_STORE. */
int posp2p_store_expire(posp2p_store *s, size_t *deleted);

/* Small key/value table for the application (e.g. per-order status
 * sequence numbers). get: 1 and *value set if found, 0 if not.
 * Errors: POSP2P_ERR_STORE. */
int posp2p_store_kv_get(posp2p_store *s, const char *key, int64_t *value);
int posp2p_store_kv_put(posp2p_store *s, const char *key, int64_t value);

/* Row counts, for tests and stats. Errors: POSP2P_ERR_STORE. */
typedef struct {
  int64_t outbox, dedup, devices;
} posp2p_store_counts;
int posp2p_store_counts_get(posp2p_store *s, posp2p_store_counts *c);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_STORE_H */
