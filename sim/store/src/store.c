/* SQLite implementation of posp2p_peer_store (see posp2p/store.h for the
 * durability argument). One prepared statement per operation, reused. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "posp2p/store.h"

#define SCHEMA_VERSION 1
/* Expire old dedup ids after this many inserts. */
#define EXPIRE_EVERY 4096u

enum {
  ST_OUTBOX_PUT,
  ST_OUTBOX_DEL,
  ST_DEDUP_INS,
  ST_REG_PUT,
  ST_KV_GET,
  ST_KV_PUT,
  ST_EXPIRE,
  ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
  [ST_OUTBOX_PUT] =
      "INSERT INTO outbox(message_id, recipient_id, envelope, attempts, "
      "custody, stored_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT(message_id, recipient_id) DO UPDATE SET "
      "envelope = excluded.envelope, attempts = excluded.attempts, "
      "custody = excluded.custody",
  [ST_OUTBOX_DEL] =
      "DELETE FROM outbox WHERE message_id = ?1 AND recipient_id = ?2",
  [ST_DEDUP_INS] =
      "INSERT OR IGNORE INTO dedup(originator_id, message_id, seen_ms) "
      "VALUES(?1, ?2, ?3)",
  [ST_REG_PUT] =
      "INSERT INTO registry(device_id, name, type, ip, port, wire, status, "
      "updated_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
      "ON CONFLICT(device_id) DO UPDATE SET name = excluded.name, "
      "type = excluded.type, ip = excluded.ip, port = excluded.port, "
      "wire = excluded.wire, status = excluded.status, "
      "updated_ms = excluded.updated_ms",
  [ST_KV_GET] = "SELECT value FROM kv WHERE key = ?1",
  [ST_KV_PUT] = "INSERT INTO kv(key, value) VALUES(?1, ?2) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
  /* Older than the window AND not among the newest dedup_count of its
   * originator: ACK dedup keeps ids for at least both. */
  [ST_EXPIRE] =
      "DELETE FROM dedup WHERE seen_ms < ?1 AND rowid IN ("
      " SELECT rowid FROM (SELECT rowid, seen_ms, row_number() OVER ("
      "  PARTITION BY originator_id ORDER BY seen_ms DESC, rowid DESC) AS rn"
      "  FROM dedup) WHERE rn > ?2 AND seen_ms < ?1)",
};

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS outbox("
    " seq INTEGER PRIMARY KEY," /* insertion order, restored in this order */
    " message_id TEXT NOT NULL,"
    " recipient_id TEXT NOT NULL,"
    " envelope BLOB NOT NULL," /* packed Envelope, no length prefix */
    " attempts INTEGER NOT NULL,"
    " custody INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL,"
    " UNIQUE(message_id, recipient_id));"
    "CREATE TABLE IF NOT EXISTS dedup("
    " originator_id TEXT NOT NULL,"
    " message_id TEXT NOT NULL,"
    " seen_ms INTEGER NOT NULL," /* wall clock */
    " PRIMARY KEY(originator_id, message_id));"
    "CREATE INDEX IF NOT EXISTS dedup_seen ON dedup(seen_ms);"
    "CREATE TABLE IF NOT EXISTS registry("
    " device_id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " type INTEGER NOT NULL,"
    " ip INTEGER NOT NULL,"
    " port INTEGER NOT NULL,"
    " wire INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kv("
    " key TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL) WITHOUT ROWID;";

struct posp2p_store {
  sqlite3 *db;
  sqlite3_stmt *st[ST_COUNT];
  posp2p_store_opts opts;
  unsigned inserts_since_expire;
  char path[4096];
  char errmsg[POSP2P_STORE_ERRMSG_MAX];
};

void posp2p_store_opts_init(posp2p_store_opts *o) {
  memset(o, 0, sizeof(*o));
  o->dedup_window_ms = 600000;
  o->dedup_count = 4096;
}

static uint64_t wall_now(const posp2p_store *s) {
  if (s->opts.wall_ms != NULL) return s->opts.wall_ms(s->opts.user_data);
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Record "sqlite: <op> on <path>: <sqlite message>" and report it. */
static int fail(posp2p_store *s, const char *op) {
  snprintf(s->errmsg, sizeof(s->errmsg), "sqlite: %.64s on %.300s: %.120s", op, s->path,
           s->db ? sqlite3_errmsg(s->db) : "no database");
  if (s->opts.on_error != NULL) s->opts.on_error(s, s->errmsg, s->opts.user_data);
  return POSP2P_ERR_STORE;
}

static int failf(posp2p_store *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int failf(posp2p_store *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
  va_end(ap);
  if (s->opts.on_error != NULL) s->opts.on_error(s, s->errmsg, s->opts.user_data);
  return POSP2P_ERR_STORE;
}

/* Run a statement that returns no rows (or ignores them) and reset it. */
static int step_done(posp2p_store *s, sqlite3_stmt *st, const char *op) {
  int rc = sqlite3_step(st);
  while (rc == SQLITE_ROW) rc = sqlite3_step(st);
  int r = rc == SQLITE_DONE ? 0 : fail(s, op);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return r;
}

static int exec(posp2p_store *s, const char *sql, const char *op) {
  char *msg = NULL;
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
  sqlite3_free(msg);
  return rc == SQLITE_OK ? 0 : fail(s, op);
}

static int pragma_text(posp2p_store *s, const char *sql, const char *op,
                       char *out, size_t n) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
    return fail(s, op);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(out, n, "%s", t ? (const char *)t : "");
    rc = SQLITE_DONE;
  }
  int r = rc == SQLITE_DONE ? 0 : fail(s, op);
  sqlite3_finalize(st);
  return r;
}

int posp2p_store_open(posp2p_store **out, const char *path,
                      const posp2p_store_opts *opts,
                      char errbuf[POSP2P_STORE_ERRMSG_MAX]) {
  if (errbuf) errbuf[0] = '\0';
  if (out == NULL || path == NULL || path[0] == '\0') {
    if (errbuf) snprintf(errbuf, POSP2P_STORE_ERRMSG_MAX, "sqlite: no path");
    return POSP2P_ERR_INVAL;
  }
  *out = NULL;
  posp2p_store *s = posp2p_mem_calloc(NULL, sizeof(*s));
  if (s == NULL) {
    if (errbuf) snprintf(errbuf, POSP2P_STORE_ERRMSG_MAX, "out of memory");
    return POSP2P_ERR_NOMEM;
  }
  if (opts) s->opts = *opts;
  else posp2p_store_opts_init(&s->opts);
  /* Errors during open go to errbuf only. */
  void (*on_error)(posp2p_store *, const char *, void *) = s->opts.on_error;
  s->opts.on_error = NULL;
  snprintf(s->path, sizeof(s->path), "%s", path);

  int r = 0;
  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_NOMUTEX,
                           NULL);
  if (rc != SQLITE_OK) r = fail(s, "open");
  if (r == 0) sqlite3_extended_result_codes(s->db, 1);
  if (r == 0 && sqlite3_busy_timeout(s->db, 2000) != SQLITE_OK)
    r = fail(s, "busy_timeout");
  char mode[32] = "";
  /* journal_mode is the first statement that reads the file: a file that
   * is not a database fails here with "file is not a database". */
  if (r == 0)
    r = pragma_text(s, "PRAGMA journal_mode=WAL", "PRAGMA journal_mode=WAL",
                    mode, sizeof(mode));
  if (r == 0 && strcmp(mode, "wal") != 0)
    r = failf(s, "sqlite: PRAGMA journal_mode=WAL on %s: got '%s'", s->path,
              mode);
  if (r == 0)
    r = exec(s,
             s->opts.sync_full ? "PRAGMA synchronous=FULL"
                               : "PRAGMA synchronous=NORMAL",
             "PRAGMA synchronous");
  char ver[32] = "";
  if (r == 0)
    r = pragma_text(s, "PRAGMA user_version", "PRAGMA user_version", ver,
                    sizeof(ver));
  if (r == 0) {
    long v = strtol(ver, NULL, 10);
    if (v > SCHEMA_VERSION)
      r = failf(s,
                "sqlite: open %s: schema version %ld is newer than this "
                "program's (%d)",
                s->path, v, SCHEMA_VERSION);
  }
  if (r == 0) r = exec(s, "BEGIN IMMEDIATE", "BEGIN (create schema)");
  if (r == 0) {
    r = exec(s, schema_sql, "CREATE TABLE (schema)");
    if (r == 0) r = exec(s, "PRAGMA user_version=1", "PRAGMA user_version=1");
    if (r == 0) r = exec(s, "COMMIT", "COMMIT (create schema)");
    else sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  }
  /* Check the tables are readable (catches corruption beyond the header). */
  if (r == 0) {
    char res[64] = "";
    r = pragma_text(s, "PRAGMA quick_check", "PRAGMA quick_check", res,
                    sizeof(res));
    if (r == 0 && strcmp(res, "ok") != 0)
      r = failf(s, "sqlite: PRAGMA quick_check on %s: %s", s->path, res);
  }
  for (int i = 0; r == 0 && i < ST_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                           &s->st[i], NULL) != SQLITE_OK)
      r = fail(s, "prepare");
  }
  if (r < 0) {
    if (errbuf) snprintf(errbuf, POSP2P_STORE_ERRMSG_MAX, "%s", s->errmsg);
    posp2p_store_close(s);
    return r;
  }
  s->opts.on_error = on_error;
  *out = s;
  return 0;
}

void posp2p_store_close(posp2p_store *s) {
  if (s == NULL) return;
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->st[i]);
  if (s->db) sqlite3_close(s->db);
  posp2p_mem_free(NULL, s);
}

const char *posp2p_store_errmsg(const posp2p_store *s) { return s->errmsg; }
const char *posp2p_store_path(const posp2p_store *s) { return s->path; }

/* ---- Engine callbacks ---------------------------------------------------------- */

static int cb_outbox_put(posp2p_peer *p, const posp2p_peer_outbox_rec *rec,
                         void *ud) {
  posp2p_store *s = ud;
  sqlite3_stmt *st = s->st[ST_OUTBOX_PUT];
  (void)p;
  sqlite3_bind_text(st, 1, rec->message_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, rec->recipient_id, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 3, rec->envelope, (int)rec->envelope_len,
                    SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, rec->attempts);
  sqlite3_bind_int(st, 5, rec->custody ? 1 : 0);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)wall_now(s));
  return step_done(s, st, "INSERT INTO outbox");
}

static int cb_outbox_del(posp2p_peer *p, const char *message_id,
                         const char *recipient_id, void *ud) {
  posp2p_store *s = ud;
  sqlite3_stmt *st = s->st[ST_OUTBOX_DEL];
  (void)p;
  sqlite3_bind_text(st, 1, message_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, recipient_id, -1, SQLITE_STATIC);
  return step_done(s, st, "DELETE FROM outbox");
}

static int cb_dedup(posp2p_peer *p, const char *originator_id,
                    const char *message_id, void *ud) {
  posp2p_store *s = ud;
  sqlite3_stmt *st = s->st[ST_DEDUP_INS];
  (void)p;
  sqlite3_bind_text(st, 1, originator_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, message_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)wall_now(s));
  int r = step_done(s, st, "INSERT INTO dedup");
  if (r < 0) return r;
  if (sqlite3_changes(s->db) == 0) return 1; /* already recorded */
  if (++s->inserts_since_expire >= EXPIRE_EVERY) {
    s->inserts_since_expire = 0;
    (void)posp2p_store_expire(s, NULL); /* failure is reported, not fatal */
  }
  return 0;
}

static int cb_registry_put(posp2p_peer *p, const posp2p_peer_device *d,
                           void *ud) {
  posp2p_store *s = ud;
  sqlite3_stmt *st = s->st[ST_REG_PUT];
  (void)p;
  sqlite3_bind_text(st, 1, d->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, d->name ? d->name : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, d->type);
  sqlite3_bind_int64(st, 4, d->addr.ip);
  sqlite3_bind_int(st, 5, d->addr.port);
  sqlite3_bind_int(st, 6, (int)d->wire);
  sqlite3_bind_int(st, 7, (int)d->status);
  sqlite3_bind_int64(st, 8, (sqlite3_int64)wall_now(s));
  return step_done(s, st, "INSERT INTO registry");
}

void posp2p_store_iface(posp2p_store *s, posp2p_peer_store *iface) {
  memset(iface, 0, sizeof(*iface));
  iface->outbox_put = cb_outbox_put;
  iface->outbox_del = cb_outbox_del;
  iface->dedup_check_insert = cb_dedup;
  iface->registry_put = cb_registry_put;
  iface->user_data = s;
}

/* ---- Paths ---------------------------------------------------------------------- */

int posp2p_store_default_path(char *out, size_t n, const char *state_dir,
                              const char *device_id) {
  if (out == NULL || state_dir == NULL || device_id == NULL || n == 0)
    return POSP2P_ERR_INVAL;
  int k = snprintf(out, n, "%s/%s.sqlite3", state_dir, device_id);
  if (k < 0 || (size_t)k >= n) return POSP2P_ERR_NOSPACE;
  return 0;
}

int posp2p_store_mkdir(const char *dir, char errbuf[POSP2P_STORE_ERRMSG_MAX]) {
  struct stat sb;
  if (stat(dir, &sb) == 0) {
    if (S_ISDIR(sb.st_mode)) return 0;
    if (errbuf)
      snprintf(errbuf, POSP2P_STORE_ERRMSG_MAX,
               "state directory %s: exists and is not a directory", dir);
    return POSP2P_ERR_STORE;
  }
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    if (errbuf)
      snprintf(errbuf, POSP2P_STORE_ERRMSG_MAX,
               "cannot create state directory %s: %s", dir, strerror(errno));
    return POSP2P_ERR_STORE;
  }
  return 0;
}

/* ---- Load, expiry, kv, counts ------------------------------------------------- */

int posp2p_store_expire(posp2p_store *s, size_t *deleted) {
  sqlite3_stmt *st = s->st[ST_EXPIRE];
  uint64_t now = wall_now(s);
  uint64_t cutoff = now > s->opts.dedup_window_ms ? now - s->opts.dedup_window_ms : 0;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)cutoff);
  sqlite3_bind_int64(st, 2, s->opts.dedup_count);
  int r = step_done(s, st, "DELETE FROM dedup (expire)");
  if (deleted) *deleted = r == 0 ? (size_t)sqlite3_changes(s->db) : 0;
  return r;
}

static void skipped(posp2p_store *s, posp2p_store_load_stats *st,
                    const char *what, const char *id, int code) {
  st->skipped++;
  failf(s, "store %s: %s %s not restored: %s", s->path, what, id,
        posp2p_peer_strerror(code));
}

static int load_registry(posp2p_store *s, posp2p_peer *p,
                         posp2p_store_load_stats *stats) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT device_id, name, type, ip, port, wire "
                         "FROM registry",
                         -1, &st, NULL) != SQLITE_OK)
    return fail(s, "SELECT FROM registry");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    posp2p_peer_device d;
    memset(&d, 0, sizeof(d));
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    snprintf(d.id, sizeof(d.id), "%s", id ? id : "");
    d.name = name ? name : "";
    d.type = sqlite3_column_int(st, 2);
    d.addr.ip = (uint32_t)sqlite3_column_int64(st, 3);
    d.addr.port = (uint16_t)sqlite3_column_int(st, 4);
    d.wire = (posp2p_peer_wire)sqlite3_column_int(st, 5);
    d.status = POSP2P_DEV_DISCONNECTED;
    int r = posp2p_peer_restore_device(p, &d);
    if (r == POSP2P_ERR_NOMEM) {
      sqlite3_finalize(st);
      return r;
    }
    if (r < 0) skipped(s, stats, "device", d.id, r);
    else stats->devices++;
  }
  int r = rc == SQLITE_DONE ? 0 : fail(s, "SELECT FROM registry");
  sqlite3_finalize(st);
  return r;
}

static int load_dedup(posp2p_store *s, posp2p_peer *p, uint64_t now_ms,
                      posp2p_store_load_stats *stats) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT originator_id, message_id FROM dedup "
                         "ORDER BY seen_ms, rowid",
                         -1, &st, NULL) != SQLITE_OK)
    return fail(s, "SELECT FROM dedup");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *o = (const char *)sqlite3_column_text(st, 0);
    const char *m = (const char *)sqlite3_column_text(st, 1);
    int r = posp2p_peer_restore_dedup(p, o ? o : "", m ? m : "", now_ms);
    if (r == POSP2P_ERR_NOMEM) {
      sqlite3_finalize(st);
      return r;
    }
    if (r < 0) skipped(s, stats, "dedup id", m ? m : "", r);
    else stats->dedup++;
  }
  int r = rc == SQLITE_DONE ? 0 : fail(s, "SELECT FROM dedup");
  sqlite3_finalize(st);
  return r;
}

static int load_outbox(posp2p_store *s, posp2p_peer *p, uint64_t now_ms,
                       posp2p_store_outbox_fn fn, void *fn_ud,
                       posp2p_store_load_stats *stats) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT message_id, recipient_id, envelope, attempts, "
                         "custody FROM outbox ORDER BY seq",
                         -1, &st, NULL) != SQLITE_OK)
    return fail(s, "SELECT FROM outbox");
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    posp2p_peer_outbox_rec rec;
    const char *m = (const char *)sqlite3_column_text(st, 0);
    const char *to = (const char *)sqlite3_column_text(st, 1);
    rec.message_id = m ? m : "";
    rec.recipient_id = to ? to : "";
    rec.envelope = sqlite3_column_blob(st, 2);
    rec.envelope_len = (size_t)sqlite3_column_bytes(st, 2);
    rec.attempts = (uint32_t)sqlite3_column_int64(st, 3);
    rec.custody = sqlite3_column_int(st, 4) != 0;
    int r = posp2p_peer_restore_outbox(p, &rec, now_ms);
    if (r == POSP2P_ERR_NOMEM) {
      sqlite3_finalize(st);
      return r;
    }
    if (r < 0) {
      skipped(s, stats, "outbox entry", rec.message_id, r);
      continue;
    }
    stats->outbox++;
    if (fn != NULL) {
      posp2p_envelope *env = NULL;
      if (posp2p_envelope_decode(rec.envelope, rec.envelope_len, NULL, &env,
                                 NULL) == 0) {
        fn(&rec, env, fn_ud);
        posp2p_envelope_free(env, NULL);
      }
    }
  }
  int r = rc == SQLITE_DONE ? 0 : fail(s, "SELECT FROM outbox");
  sqlite3_finalize(st);
  return r;
}

int posp2p_store_load(posp2p_store *s, posp2p_peer *p, uint64_t now_ms,
                      posp2p_store_outbox_fn fn, void *fn_user_data,
                      posp2p_store_load_stats *stats) {
  posp2p_store_load_stats local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof(*stats));
  if (s == NULL || p == NULL) return POSP2P_ERR_INVAL;
  int r = posp2p_store_expire(s, &stats->expired);
  if (r == 0) r = load_registry(s, p, stats);
  if (r == 0) r = load_dedup(s, p, now_ms, stats);
  if (r == 0) r = load_outbox(s, p, now_ms, fn, fn_user_data, stats);
  return r;
}

int posp2p_store_kv_get(posp2p_store *s, const char *key, int64_t *value) {
  sqlite3_stmt *st = s->st[ST_KV_GET];
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  int r = 0;
  if (rc == SQLITE_ROW) {
    *value = sqlite3_column_int64(st, 0);
    r = 1;
  } else if (rc != SQLITE_DONE) {
    r = fail(s, "SELECT FROM kv");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return r;
}

int posp2p_store_kv_put(posp2p_store *s, const char *key, int64_t value) {
  sqlite3_stmt *st = s->st[ST_KV_PUT];
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, value);
  return step_done(s, st, "INSERT INTO kv");
}

static int count_rows(posp2p_store *s, const char *sql, int64_t *n) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
    return fail(s, sql);
  int rc = sqlite3_step(st);
  int r = 0;
  if (rc == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
  else r = fail(s, sql);
  sqlite3_finalize(st);
  return r;
}

int posp2p_store_counts_get(posp2p_store *s, posp2p_store_counts *c) {
  int r = count_rows(s, "SELECT count(*) FROM outbox", &c->outbox);
  if (r == 0) r = count_rows(s, "SELECT count(*) FROM dedup", &c->dedup);
  if (r == 0) r = count_rows(s, "SELECT count(*) FROM registry", &c->devices);
  return r;
}
