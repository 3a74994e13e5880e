/* SQLite store tests: the four engine callbacks, reopen + restore into a
 * fresh engine, dedup expiry, and clear errors for bad paths. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "posp2p/store.h"
#include "ptest.h"

#define MAIN_ID "11111111-1111-4111-8111-111111111111"
#define TAB_ID "22222222-2222-4222-8222-222222222222"
#define MSG1 "aaaaaaaa-0000-4000-8000-000000000001"
#define MSG2 "aaaaaaaa-0000-4000-8000-000000000002"

static char tmpdir[256];
static uint64_t fake_wall = 1700000000000ull;

static uint64_t wall(void *ud) {
  (void)ud;
  return fake_wall;
}

static const char *mktmp(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/posp2p-store-XXXXXX");
  if (mkdtemp(tmpdir) == NULL) return NULL;
  return tmpdir;
}

static void rmtmp(void) {
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", tmpdir);
}

static posp2p_store *open_store(const char *name) {
  char path[512], err[POSP2P_STORE_ERRMSG_MAX];
  snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
  posp2p_store_opts o;
  posp2p_store_opts_init(&o);
  o.wall_ms = wall;
  posp2p_store *s = NULL;
  int r = posp2p_store_open(&s, path, &o, err);
  if (r != 0) fprintf(stderr, "open: %s\n", err);
  return s;
}

/* A packed ORDER_FORWARD from MAIN_ID to TAB_ID. */
static size_t pack_order(const char *mid, uint8_t *buf, size_t cap) {
  posp2p_envelope e;
  Posp2p__V2__OrderForward of;
  posp2p_envelope_init(&e);
  posp2p__v2__order_forward__init(&of);
  of.order_id = (char *)"order-1";
  e.message_id = (char *)mid;
  e.message_type = POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD;
  e.from_device_id = (char *)MAIN_ID;
  e.opt_to_device_id_case = POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_ID_TO_DEVICE_ID;
  e.to_device_id = (char *)TAB_ID;
  e.timestamp_ms = 1700000000000;
  e.payload_case = POSP2P__V2__ENVELOPE__PAYLOAD_ORDER_FORWARD;
  e.order_forward = &of;
  size_t n = posp2p__v2__envelope__get_packed_size(&e);
  if (n > cap) return 0;
  return posp2p__v2__envelope__pack(&e, buf);
}

PTEST(put_del) {
  PT_CHECK(mktmp() != NULL);
  posp2p_store *s = open_store("a.sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  posp2p_peer_store ps;
  posp2p_store_iface(s, &ps);
  uint8_t env[512];
  size_t n = pack_order(MSG1, env, sizeof(env));
  posp2p_peer_outbox_rec rec = {MSG1, TAB_ID, env, n, 1, false};
  PT_EQ_INT(ps.outbox_put(NULL, &rec, ps.user_data), 0);
  rec.attempts = 2; /* replace, not a second row */
  PT_EQ_INT(ps.outbox_put(NULL, &rec, ps.user_data), 0);
  rec.message_id = MSG2;
  PT_EQ_INT(ps.outbox_put(NULL, &rec, ps.user_data), 0);
  posp2p_store_counts c;
  PT_EQ_INT(posp2p_store_counts_get(s, &c), 0);
  PT_EQ_INT(c.outbox, 2);
  PT_EQ_INT(ps.outbox_del(NULL, MSG1, TAB_ID, ps.user_data), 0);
  PT_EQ_INT(ps.outbox_del(NULL, MSG1, TAB_ID, ps.user_data), 0); /* idempotent */
  PT_EQ_INT(posp2p_store_counts_get(s, &c), 0);
  PT_EQ_INT(c.outbox, 1);
  posp2p_store_close(s);
  rmtmp();
}

PTEST(dedup) {
  PT_CHECK(mktmp() != NULL);
  posp2p_store *s = open_store("d.sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  posp2p_peer_store ps;
  posp2p_store_iface(s, &ps);
  PT_EQ_INT(ps.dedup_check_insert(NULL, MAIN_ID, MSG1, ps.user_data), 0);
  PT_EQ_INT(ps.dedup_check_insert(NULL, MAIN_ID, MSG1, ps.user_data), 1);
  PT_EQ_INT(ps.dedup_check_insert(NULL, TAB_ID, MSG1, ps.user_data), 0);
  PT_EQ_INT(ps.dedup_check_insert(NULL, MAIN_ID, MSG2, ps.user_data), 0);
  posp2p_store_counts c;
  PT_EQ_INT(posp2p_store_counts_get(s, &c), 0);
  PT_EQ_INT(c.dedup, 3);
  posp2p_store_close(s);
  rmtmp();
}

PTEST(registry) {
  PT_CHECK(mktmp() != NULL);
  posp2p_store *s = open_store("r.sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  posp2p_peer_store ps;
  posp2p_store_iface(s, &ps);
  posp2p_peer_device d;
  memset(&d, 0, sizeof(d));
  snprintf(d.id, sizeof(d.id), "%s", TAB_ID);
  d.name = "tablet-1";
  d.type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET;
  d.addr.ip = 0x7f000003;
  d.addr.port = 8766;
  d.status = POSP2P_DEV_CONNECTED;
  PT_EQ_INT(ps.registry_put(NULL, &d, ps.user_data), 0);
  d.name = "tablet-renamed";
  PT_EQ_INT(ps.registry_put(NULL, &d, ps.user_data), 0);
  posp2p_store_counts c;
  PT_EQ_INT(posp2p_store_counts_get(s, &c), 0);
  PT_EQ_INT(c.devices, 1);
  posp2p_store_close(s);
  rmtmp();
}

PTEST(kv) {
  PT_CHECK(mktmp() != NULL);
  posp2p_store *s = open_store("kv.sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  int64_t v = 0;
  PT_EQ_INT(posp2p_store_kv_get(s, "seq:o1", &v), 0);
  PT_EQ_INT(posp2p_store_kv_put(s, "seq:o1", 3), 0);
  PT_EQ_INT(posp2p_store_kv_get(s, "seq:o1", &v), 1);
  PT_EQ_INT(v, 3);
  posp2p_store_close(s);
  rmtmp();
}

static void rand_cb(posp2p_peer *p, uint8_t *buf, size_t len, void *ud) {
  (void)p;
  (void)ud;
  for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(rand() & 0xff);
}

static int nrestored;
static void on_outbox(const posp2p_peer_outbox_rec *rec,
                      const posp2p_envelope *env, void *ud) {
  (void)ud;
  if (env && env->message_type ==
                 POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ORDER_FORWARD &&
      strcmp(rec->recipient_id, TAB_ID) == 0)
    nrestored++;
}

static posp2p_peer *new_engine(const posp2p_peer_store *ps) {
  posp2p_peer_config cfg;
  posp2p_peer_config_init(&cfg);
  cfg.device_id = MAIN_ID;
  cfg.device_name = "main";
  cfg.device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS;
  cfg.listen_port = 8766;
  posp2p_peer_callbacks cb;
  memset(&cb, 0, sizeof(cb));
  cb.rand = rand_cb;
  posp2p_peer *p = NULL;
  int r = posp2p_peer_new(&p, &cfg, &cb, ps, NULL, NULL);
  if (r != 0) fprintf(stderr, "posp2p_peer_new: %s\n", posp2p_peer_strerror(r));
  return p;
}

PTEST(reopen_restores) {
  PT_CHECK(mktmp() != NULL);
  posp2p_store *s = open_store(MAIN_ID ".sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  posp2p_peer_store ps;
  posp2p_store_iface(s, &ps);
  uint8_t env[512];
  size_t n = pack_order(MSG1, env, sizeof(env));
  posp2p_peer_outbox_rec rec = {MSG1, TAB_ID, env, n, 3, false};
  PT_EQ_INT(ps.outbox_put(NULL, &rec, ps.user_data), 0);
  n = pack_order(MSG2, env, sizeof(env));
  rec.message_id = MSG2;
  rec.envelope_len = n;
  PT_EQ_INT(ps.outbox_put(NULL, &rec, ps.user_data), 0);
  PT_EQ_INT(ps.dedup_check_insert(NULL, TAB_ID, MSG1, ps.user_data), 0);
  posp2p_peer_device d;
  memset(&d, 0, sizeof(d));
  snprintf(d.id, sizeof(d.id), "%s", TAB_ID);
  d.name = "tablet-1";
  d.type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET;
  d.addr.ip = 0x7f000003;
  d.addr.port = 8766;
  d.status = POSP2P_DEV_CONNECTED;
  PT_EQ_INT(ps.registry_put(NULL, &d, ps.user_data), 0);
  posp2p_store_close(s); /* as after a crash: nothing else survives */

  s = open_store(MAIN_ID ".sqlite3");
  PT_CHECK(s != NULL);
  if (!s) return;
  posp2p_store_iface(s, &ps);
  posp2p_peer *p = new_engine(&ps);
  PT_CHECK(p != NULL);
  if (p) {
    posp2p_store_load_stats st;
    nrestored = 0;
    PT_EQ_INT(posp2p_store_load(s, p, 0, on_outbox, NULL, &st), 0);
    PT_EQ_INT(st.outbox, 2);
    PT_EQ_INT(st.dedup, 1);
    PT_EQ_INT(st.devices, 1);
    PT_EQ_INT(st.skipped, 0);
    PT_EQ_INT(nrestored, 2);
    PT_EQ_INT(posp2p_peer_outbox_count(p), 2);
    const posp2p_peer_device *rd = posp2p_peer_device_find(p, TAB_ID);
    PT_CHECK(rd != NULL);
    if (rd) {
      PT_EQ_STR(rd->name, "tablet-1");
      PT_EQ_INT(rd->addr.ip, 0x7f000003);
      PT_EQ_INT(rd->status, POSP2P_DEV_DISCONNECTED);
    }
    /* A restored dedup id is a duplicate for the store as well. */
    PT_EQ_INT(ps.dedup_check_insert(NULL, TAB_ID, MSG1, ps.user_data), 1);
    posp2p_peer_del(p);
  }
  posp2p_store_close(s);
  rmtmp();
}

PTEST(dedup_expiry) {
  PT_CHECK(mktmp() != NULL);
  char path[512], err[POSP2P_STORE_ERRMSG_MAX];
  snprintf(path, sizeof(path), "%s/e.sqlite3", tmpdir);
  posp2p_store_opts o;
  posp2p_store_opts_init(&o);
  o.wall_ms = wall;
  o.dedup_window_ms = 1000;
  o.dedup_count = 2;
  posp2p_store *s = NULL;
  PT_EQ_INT(posp2p_store_open(&s, path, &o, err), 0);
  if (!s) return;
  posp2p_peer_store ps;
  posp2p_store_iface(s, &ps);
  char id[40];
  for (int i = 0; i < 5; i++) {
    snprintf(id, sizeof(id), "bbbbbbbb-0000-4000-8000-%012d", i);
    PT_EQ_INT(ps.dedup_check_insert(NULL, TAB_ID, id, ps.user_data), 0);
    fake_wall += 10;
  }
  size_t deleted = 99;
  PT_EQ_INT(posp2p_store_expire(s, &deleted), 0);
  PT_EQ_INT(deleted, 0); /* all within the window */
  fake_wall += 5000;
  PT_EQ_INT(posp2p_store_expire(s, &deleted), 0);
  PT_EQ_INT(deleted, 3); /* old, but the newest 2 of the originator stay */
  posp2p_store_counts c;
  PT_EQ_INT(posp2p_store_counts_get(s, &c), 0);
  PT_EQ_INT(c.dedup, 2);
  snprintf(id, sizeof(id), "bbbbbbbb-0000-4000-8000-%012d", 4);
  PT_EQ_INT(ps.dedup_check_insert(NULL, TAB_ID, id, ps.user_data), 1);
  posp2p_store_close(s);
  rmtmp();
}

PTEST(corrupt_file) {
  PT_CHECK(mktmp() != NULL);
  char path[512], err[POSP2P_STORE_ERRMSG_MAX];
  snprintf(path, sizeof(path), "%s/bad.sqlite3", tmpdir);
  FILE *f = fopen(path, "wb");
  PT_CHECK(f != NULL);
  if (!f) return;
  for (int i = 0; i < 4096; i++) fputc("garbage!"[i % 8], f);
  fclose(f);
  posp2p_store *s = NULL;
  int r = posp2p_store_open(&s, path, NULL, err);
  PT_EQ_INT(r, POSP2P_ERR_STORE);
  PT_CHECK(s == NULL);
  PT_CHECK(strstr(err, path) != NULL);
  PT_CHECK(strstr(err, "not a database") != NULL);
  PT_CHECK(strstr(err, "journal_mode") != NULL);
  fprintf(stderr, "message: %s\n", err);
  rmtmp();
}

PTEST(unwritable_path) {
  PT_CHECK(mktmp() != NULL);
  char path[512], err[POSP2P_STORE_ERRMSG_MAX];
  /* A missing directory (running as root, permissions prove nothing). */
  snprintf(path, sizeof(path), "%s/no/such/dir/x.sqlite3", tmpdir);
  posp2p_store *s = NULL;
  int r = posp2p_store_open(&s, path, NULL, err);
  PT_EQ_INT(r, POSP2P_ERR_STORE);
  PT_CHECK(strstr(err, path) != NULL);
  PT_CHECK(strstr(err, "unable to open") != NULL);
  fprintf(stderr, "message: %s\n", err);
  /* A directory where the file should be. */
  snprintf(path, sizeof(path), "%s", tmpdir);
  r = posp2p_store_open(&s, path, NULL, err);
  PT_EQ_INT(r, POSP2P_ERR_STORE);
  PT_CHECK(strstr(err, path) != NULL);
  fprintf(stderr, "message: %s\n", err);
  /* A state directory path that is a regular file. */
  snprintf(path, sizeof(path), "%s/file", tmpdir);
  FILE *f = fopen(path, "w");
  if (f) fclose(f);
  r = posp2p_store_mkdir(path, err);
  PT_EQ_INT(r, POSP2P_ERR_STORE);
  PT_CHECK(strstr(err, "not a directory") != NULL);
  snprintf(path, sizeof(path), "%s/file/sub", tmpdir);
  r = posp2p_store_mkdir(path, err);
  PT_EQ_INT(r, POSP2P_ERR_STORE);
  PT_CHECK(strstr(err, "cannot create state directory") != NULL);
  fprintf(stderr, "message: %s\n", err);
  rmtmp();
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
