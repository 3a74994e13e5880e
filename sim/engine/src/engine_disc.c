/* Discovery (DISC-*): requests, unicast responses, periodic announcements,
 * on both wires. Malformed datagrams are counted and reported, never
 * answered; a device's own datagrams (looped back by the broadcast) are
 * ignored; responses are rate-limited per requesting source address. */
#include <string.h>

#include "peer_int.h"
#include "mutant.h"

typedef struct {
  uint32_t ip;
  uint64_t t;
} rl_ent;

static uint32_t rl_hash_key(uint32_t ip) { return posp2p__hash_bytes(&ip, sizeof ip); }
static uint32_t rl_hash(const void *e) { return rl_hash_key(((const rl_ent *)e)->ip); }
static bool rl_eq(const void *e, const void *key) {
  return ((const rl_ent *)e)->ip == *(const uint32_t *)key;
}

static void fill_self(posp2p_peer *p, posp2p_disc *m, int kind, uint32_t *versions) {
  posp2p__v2__discovery_datagram__init(m);
  m->kind = (Posp2p__V2__DiscoveryKind)kind;
  m->device_id = p->id_txt;
  m->device_name = p->name;
  m->device_type = (Posp2p__V2__DeviceType)p->cfg.device_type;
  m->tcp_port = p->cfg.listen_port;
  versions[0] = POSP2P_VERSION;
  m->n_supported_versions = 1;
  m->supported_versions = versions;
  m->hostname = p->hostname;
  m->ip_address = p->ip_address;
}

static void send_disc(posp2p_peer *p, const posp2p_disc *m, posp2p_wire wire,
                      const posp2p_addr *to) {
  posp2p_buf buf;
  posp2p_buf_init(&buf, POSP2P_DISC_MAX_DATAGRAM, &p->alloc);
  posp2p_error err;
  if (posp2p_disc_encode(m, wire, &buf, &err) == 0) {
    p->stats.datagrams_out++;
    if (p->cb.send_datagram != NULL)
      p->cb.send_datagram(p, to, buf.data, buf.len, p->user_data);
  }
  posp2p_buf_free(&buf);
}

void posp2p__disc_announce(posp2p_peer *p, uint64_t now) {
  (void)now;
  /* DISC-6: devices that accept connections announce themselves. */
  if (p->cfg.listen_port == 0) return;
  posp2p_disc m;
  uint32_t v[1];
  fill_self(p, &m, POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_ANNOUNCE, v);
  posp2p_addr to = {p->cfg.broadcast_ip, p->cfg.discovery_port};
  send_disc(p, &m, POSP2P_WIRE_V2, &to);
}

int posp2p_peer_discover(posp2p_peer *p, uint64_t now_ms) {
  if (p == NULL) return POSP2P_ERR_INVAL;
  POSP2P__ENTER(p, now_ms);
  posp2p_disc m;
  uint32_t v[1];
  fill_self(p, &m, POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST, v);
  uint8_t rnd[8];
  p->cb.rand(p, rnd, sizeof rnd, p->user_data);
  uint64_t nonce = 0;
  for (int i = 0; i < 8; i++) nonce = nonce << 8 | rnd[i];
  if (nonce == 0) nonce = 1; /* DISC-4: non-zero */
  m.nonce = nonce;
  posp2p_addr to = {p->cfg.broadcast_ip, p->cfg.discovery_port};
  send_disc(p, &m, p->cfg.wire == POSP2P_PEER_WIRE_LEGACY ? POSP2P_WIRE_LEGACY : POSP2P_WIRE_V2,
            &to);
  POSP2P__LEAVE(p);
  return 0;
}

static void ignored(posp2p_peer *p, const posp2p_addr *from, int code, const char *text) {
  p->stats.datagrams_ignored++;
  posp2p_peer_event ev = {.type = POSP2P_PEER_EV_DATAGRAM_IGNORED,
                          .code = code,
                          .from = *from,
                          .text = text};
  posp2p__emit(p, &ev);
}

/* True if a response to `ip` is allowed now (and records it). */
static bool rate_ok(posp2p_peer *p, uint32_t ip, uint64_t now) {
  rl_ent *r = posp2p__htab_find(&p->disc_rl, rl_hash_key(ip), &ip, rl_eq);
  if (r != NULL) {
    if (now < r->t + p->cfg.disc_rate_limit_ms) return false;
    r->t = now;
    return true;
  }
  if (p->ndisc_rl >= 4096) posp2p__disc_prune(p, now);
  r = posp2p__alloc(p, sizeof *r);
  if (r == NULL) return false;
  r->ip = ip;
  r->t = now;
  if (posp2p__htab_insert(&p->disc_rl, &p->alloc, rl_hash_key(ip), r, rl_hash) != 0) {
    posp2p__free(p, r);
    return false;
  }
  p->ndisc_rl++;
  return true;
}

static void record(posp2p_peer *p, const posp2p_disc *m, const posp2p_addr *from,
                   posp2p_wire wire, uint64_t now) {
  posp2p__uuid id;
  if (!posp2p__uuid_parse(m->device_id, &id)) return;
  bool created;
  posp2p__device *d = posp2p__dev_get(p, &id, &created);
  if (d == NULL) return;
  d->pub.last_seen_ms = now;
  /* DISC: the source address of the datagram, not its ip_address field. */
  posp2p_addr a = {from->ip, (uint16_t)m->tcp_port};
  posp2p__dev_update(p, d, created, m->device_name, (int)m->device_type, &a,
                     created ? POSP2P_DEV_DISCOVERING : -1,
                     d->conn == NULL ? (int)wire : -1);
}

int posp2p__disc_recv(posp2p_peer *p, const posp2p_addr *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  p->stats.datagrams_in++;
  if (len > POSP2P_DISC_MAX_DATAGRAM) {
    ignored(p, from, POSP2P_ERR_DATAGRAM, "datagram above 1400 bytes");
    return 0;
  }
  posp2p_disc *m = NULL;
  posp2p_wire wire = POSP2P_WIRE_UNKNOWN;
  posp2p_error err;
  memset(&err, 0, sizeof err);
  int rc = posp2p_disc_decode(data, len, &p->alloc, &m, &wire, &err);
  if (rc == 0 && wire == POSP2P_WIRE_V2) rc = posp2p_disc_validate(m, &err);
  if (rc != 0) {
    if (m != NULL) posp2p_disc_free(m, &p->alloc);
    if (rc == POSP2P_ERR_NOMEM) return rc;
    ignored(p, from, rc, err.message[0] ? err.message : posp2p_strerror(rc));
    return 0;
  }
  posp2p__uuid id;
  bool has_id = m->device_id != NULL && posp2p__uuid_parse(m->device_id, &id);
  if (has_id && memcmp(id.b, p->id.b, 16) == 0 && !POSP2P_MUTANT(own_datagrams)) {
    p->stats.datagrams_own++;
    posp2p_disc_free(m, &p->alloc);
    return 0;
  }
  switch ((int)m->kind) {
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_REQUEST:
    if (has_id) record(p, m, from, wire, now);
    /* Every device that accepts connections answers; the main POS always. */
    if ((p->cfg.listen_port != 0 || p->is_main) && !p->shutting_down && !POSP2P_MUTANT(no_disc_response)) {
      if (!rate_ok(p, from->ip, now)) {
        p->stats.disc_rate_limited++;
        break;
      }
      posp2p_disc r;
      uint32_t v[1];
      fill_self(p, &r, POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE, v);
      r.nonce = m->nonce;
      send_disc(p, &r, wire, from);
    }
    break;
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_RESPONSE:
  case POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_ANNOUNCE:
    if (has_id)
      record(p, m, from, wire, now);
    else
      ignored(p, from, POSP2P_ERR_BAD_ID, "discovery datagram without a device id");
    break;
  default:
    ignored(p, from, POSP2P_ERR_ENUM, "unknown discovery kind");
    break;
  }
  posp2p_disc_free(m, &p->alloc);
  return 0;
}

int posp2p_peer_datagram_recv(posp2p_peer *p, const posp2p_addr *from, const uint8_t *data,
                              size_t len, uint64_t now_ms) {
  if (p == NULL || from == NULL || (data == NULL && len > 0)) return POSP2P_ERR_INVAL;
  POSP2P__ENTER(p, now_ms);
  int rc = posp2p__disc_recv(p, from, data, len, now_ms);
  POSP2P__LEAVE(p);
  return rc;
}

void posp2p__disc_prune(posp2p_peer *p, uint64_t now) {
  posp2p__htab *t = &p->disc_rl;
  for (uint32_t i = 0; i < t->cap; i++) {
    rl_ent *r = t->slots[i];
    if (r == NULL || (void *)r == POSP2P__HTAB_TOMB) continue;
    if (now >= r->t + p->cfg.disc_rate_limit_ms) {
      t->slots[i] = POSP2P__HTAB_TOMB;
      t->len--;
      p->ndisc_rl--;
      posp2p__free(p, r);
    }
  }
}

void posp2p__disc_free(posp2p_peer *p) {
  posp2p__htab *t = &p->disc_rl;
  for (uint32_t i = 0; i < t->cap; i++) {
    rl_ent *r = t->slots[i];
    if (r == NULL || (void *)r == POSP2P__HTAB_TOMB) continue;
    posp2p__free(p, r);
  }
  posp2p__htab_free(t, &p->alloc);
  p->ndisc_rl = 0;
}
