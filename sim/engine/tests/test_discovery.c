/* engine.discovery: DISC-* request/response/announce, own and malformed
 * datagrams, the per-source response rate limit, the legacy JSON shapes. */
#include "engine_test.h"

static size_t make_request(uint8_t *out, size_t cap, const char *id, uint64_t nonce) {
  posp2p_disc m;
  posp2p__v2__discovery_datagram__init(&m);
  uint32_t v[1] = {2};
  m.kind = POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST;
  m.device_id = (char *)id;
  m.device_name = "probe";
  m.device_type = TABLET;
  m.n_supported_versions = 1;
  m.supported_versions = v;
  m.nonce = nonce;
  posp2p_buf b;
  posp2p_buf_init(&b, 2048, NULL);
  posp2p_error err;
  size_t n = 0;
  if (posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err) == 0 && b.len <= cap) {
    memcpy(out, b.data, b.len);
    n = b.len;
  }
  posp2p_buf_free(&b);
  return n;
}

/* A raw observer node address that receives unicast responses. */
static const posp2p_addr PROBE = {0x7f0000c8u, 41000};

PTEST(request_gets_unicast_response_and_both_record) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  posp2p_peer_config cfg;
  tn_config(&cfg, TABLET, "tablet");
  cfg.listen_port = 0; /* a tablet that accepts no connections does not answer */
  tn_node *t = tn_add(net, &cfg);
  PT_EQ_INT(posp2p_peer_discover(t->p, net->now), 0);
  tn_pump(net);
  const posp2p_peer_device *d = posp2p_peer_device_find(t->p, posp2p_peer_device_id(m->p));
  PT_CHECK(d != NULL);
  if (d) {
    PT_EQ_INT(d->status, POSP2P_DEV_DISCOVERING);
    PT_EQ_INT(d->addr.ip, m->addr.ip); /* DISC-7: source address */
    PT_EQ_INT(d->addr.port, 8766);
    PT_EQ_INT(d->type, MAIN);
    PT_EQ_STR(d->name, "main");
  }
  PT_CHECK(posp2p_peer_device_find(m->p, posp2p_peer_device_id(t->p)) != NULL);
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->datagrams_own, 1); /* DISC-8 */
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 1);  /* one response */
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->datagrams_out, 1);  /* its request only */
  tn_free(net);
}

PTEST(request_from_a_raw_source_is_answered_by_unicast) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  /* An observer node at PROBE's address receives the unicast response. */
  posp2p_peer_config cfg;
  tn_config(&cfg, KDS, "kds");
  cfg.listen_port = 0;
  tn_node *k = tn_add(net, &cfg);
  uint8_t buf[1500];
  size_t n = make_request(buf, sizeof buf, tn_uuid(55), 0x1234);
  posp2p_addr from = {k->addr.ip, 41000};
  posp2p_addr bc = {0x7fffffffu, 8765};
  tn_inject_datagram(net, &from, &bc, buf, n);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 1);
  PT_EQ_INT(posp2p_peer_stats_get(k->p)->datagrams_out, 0); /* listen_port 0 */
  /* k got the response by unicast: it records the main POS. */
  const posp2p_peer_device *d = posp2p_peer_device_find(k->p, posp2p_peer_device_id(m->p));
  PT_CHECK(d != NULL);
  PT_CHECK(posp2p_peer_device_find(m->p, tn_uuid(55)) != NULL);
  tn_free(net);
}

PTEST(announce_on_start_and_every_interval) {
  tn_net *net = tn_new();
  tn_node *t = tn_add_type(net, TABLET, "tablet");
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  cfg.announce_interval_ms = 30000;
  tn_node *m = tn_add(net, &cfg);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 1);
  PT_CHECK(posp2p_peer_device_find(t->p, posp2p_peer_device_id(m->p)) != NULL);
  tn_run_for(net, 29999);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 1);
  tn_run_for(net, 1);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 2);
  tn_run_for(net, 60000);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 4);
  /* Announcements are not answered (DISC-11). */
  PT_EQ_INT(posp2p_peer_stats_get(t->p)->datagrams_out, 0);
  tn_free(net);
}

PTEST(malformed_datagrams_are_counted_never_answered) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  posp2p_addr bc = {0x7fffffffu, 8765};
  const char *bad[] = {"\xFFP2D\x03garbage", "\xFFXXX\x02", "hello", "{\"deviceName\":1}"};
  for (size_t i = 0; i < 4; i++) tn_inject_datagram(net, &PROBE, &bc, bad[i], strlen(bad[i]));
  uint8_t big[1500];
  size_t n = make_request(big, sizeof big, tn_uuid(9), 7);
  memset(big + n, 0, sizeof big - n);
  tn_inject_datagram(net, &PROBE, &bc, big, 1401); /* above 1400 bytes */
  uint8_t bad_id[1500];
  size_t n2 = make_request(bad_id, sizeof bad_id, "not-a-uuid", 7);
  if (n2) tn_inject_datagram(net, &PROBE, &bc, bad_id, n2);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_ignored, n2 ? 6 : 5);
  PT_EQ_INT(tn_count(m, POSP2P_PEER_EV_DATAGRAM_IGNORED), n2 ? 6 : 5);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 0);
  tn_free(net);
}

PTEST(one_response_per_source_per_second) {
  tn_net *net = tn_new();
  tn_node *m = tn_add_type(net, MAIN, "main");
  uint8_t buf[1500];
  size_t n = make_request(buf, sizeof buf, tn_uuid(55), 1);
  posp2p_addr bc = {0x7fffffffu, 8765};
  for (int i = 0; i < 5; i++) tn_inject_datagram(net, &PROBE, &bc, buf, n);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 1);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->disc_rate_limited, 4);
  /* Another source is answered at once. */
  posp2p_addr other = {0x7f0000c9u, 41000};
  tn_inject_datagram(net, &other, &bc, buf, n);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 2);
  tn_run_for(net, 999);
  tn_inject_datagram(net, &PROBE, &bc, buf, n);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 2);
  tn_run_for(net, 1);
  tn_inject_datagram(net, &PROBE, &bc, buf, n);
  tn_pump(net);
  PT_EQ_INT(posp2p_peer_stats_get(m->p)->datagrams_out, 3);
  tn_free(net);
}

static char last_dgram[2048];
static size_t last_len;
static void sink_dgram(posp2p_peer *p, const posp2p_addr *to, const uint8_t *d, size_t n,
                       void *ud) {
  (void)p;
  (void)to;
  (void)ud;
  last_len = n < sizeof last_dgram - 1 ? n : sizeof last_dgram - 1;
  memcpy(last_dgram, d, last_len);
  last_dgram[last_len] = '\0';
}
static void rnd(posp2p_peer *p, uint8_t *b, size_t n, void *ud) {
  (void)p;
  (void)ud;
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 7 + 1);
}

PTEST(legacy_request_gets_legacy_response) {
  posp2p_peer_config cfg;
  tn_config(&cfg, MAIN, "main");
  posp2p_peer_callbacks cb = {.rand = rnd, .send_datagram = sink_dgram};
  posp2p_peer *p;
  PT_EQ_INT(posp2p_peer_new(&p, &cfg, &cb, NULL, NULL, NULL), 0);
  posp2p_peer_start(p, 0);
  const char *req = "{\"deviceName\":\"Old tablet\",\"deviceType\":\"P2PDeviceType.orderingTablet\",\"port\":8766}";
  posp2p_addr from = {0x7f000009u, 50123};
  PT_EQ_INT(posp2p_peer_datagram_recv(p, &from, (const uint8_t *)req, strlen(req), 10), 0);
  PT_CHECK(last_len > 0 && last_dgram[0] == '{');
  PT_CHECK(strstr(last_dgram, "\"deviceId\":\"") != NULL);
  PT_CHECK(strstr(last_dgram, posp2p_peer_device_id(p)) != NULL);
  PT_CHECK(strstr(last_dgram, "P2PDeviceType.mainPOS") != NULL);
  PT_EQ_INT(posp2p_peer_stats_get(p)->datagrams_ignored, 0);
  posp2p_peer_del(p);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
