/* The device registry: every device this peer has heard of, by id.
 *
 * Entries live in a dense array (for iteration by index) plus a hash table
 * by id. The registry is bounded by max_devices: a flood of discovery
 * datagrams with fresh ids evicts the stalest unconnected entries instead
 * of growing without limit. */
#include <string.h>

#include "peer_int.h"

#define NAME_MAX_LEN 256u

static uint32_t dev_hash_key(const posp2p__uuid *u) {
  return posp2p__hash_bytes(u->b, sizeof u->b);
}

static uint32_t dev_hash(const void *e) {
  return dev_hash_key(&((const posp2p__device *)e)->key);
}

static bool dev_eq(const void *e, const void *key) {
  return memcmp(((const posp2p__device *)e)->key.b, key, 16) == 0;
}

posp2p__device *posp2p__dev_find(const posp2p_peer *p, const posp2p__uuid *id) {
  return posp2p__htab_find(&p->dev_by_id, dev_hash_key(id), id->b, dev_eq);
}

posp2p__device *posp2p__dev_find_text(const posp2p_peer *p, const char *id) {
  posp2p__uuid u;
  if (!posp2p__uuid_parse(id, &u)) return NULL;
  return posp2p__dev_find(p, &u);
}

static void dev_destroy(posp2p_peer *p, posp2p__device *d) {
  /* Only entries without a live connection are destroyed, but a closing
   * connection may still point at its device for the CONN_CLOSED event. */
  for (posp2p__conn *c = p->conns; c != NULL; c = c->next)
    if (c->dev == d) c->dev = NULL;
  posp2p__conns_changed(p);
  posp2p__htab_remove(&p->dev_by_id, dev_hash(d), d);
  uint32_t i = d->index;
  p->ndevices--;
  if (i != p->ndevices) {
    p->devices[i] = p->devices[p->ndevices];
    p->devices[i]->index = i;
  }
  posp2p__free(p, d->name);
  posp2p__free(p, d);
}

static bool evict_one(posp2p_peer *p) {
  posp2p__device *victim = NULL;
  for (uint32_t i = 0; i < p->ndevices; i++) {
    posp2p__device *d = p->devices[i];
    if (d->conn != NULL) continue;
    if (victim == NULL || d->pub.last_seen_ms < victim->pub.last_seen_ms) victim = d;
  }
  if (victim == NULL) return false;
  dev_destroy(p, victim);
  return true;
}

posp2p__device *posp2p__dev_get(posp2p_peer *p, const posp2p__uuid *id,
                                bool *created) {
  *created = false;
  posp2p__device *d = posp2p__dev_find(p, id);
  if (d != NULL) return d;
  if (p->ndevices >= p->cfg.max_devices && !evict_one(p)) return NULL;
  if (p->ndevices == p->devices_cap) {
    uint32_t cap = p->devices_cap ? p->devices_cap * 2 : 4;
    posp2p__device **v = posp2p__alloc(p, (size_t)cap * sizeof *v);
    if (v == NULL) return NULL;
    if (p->ndevices) memcpy(v, p->devices, (size_t)p->ndevices * sizeof *v);
    posp2p__free(p, p->devices);
    p->devices = v;
    p->devices_cap = cap;
  }
  d = posp2p__calloc(p, sizeof *d);
  if (d == NULL) return NULL;
  d->key = *id;
  posp2p__uuid_text(id, d->pub.id);
  d->name = posp2p__strdup(p, "", 1);
  if (d->name == NULL ||
      posp2p__htab_insert(&p->dev_by_id, &p->alloc, dev_hash_key(id), d, dev_hash) != 0) {
    posp2p__free(p, d->name);
    posp2p__free(p, d);
    return NULL;
  }
  d->pub.name = d->name;
  d->pub.type = DT(UNSPECIFIED);
  d->pub.status = POSP2P_DEV_DISCOVERING;
  d->pub.wire = POSP2P_PEER_WIRE_AUTO;
  d->index = p->ndevices;
  p->devices[p->ndevices++] = d;
  *created = true;
  return d;
}

static void dev_changed(posp2p_peer *p, posp2p__device *d, posp2p_dev_status prev) {
  if (p->has_store && p->store.registry_put != NULL)
    (void)p->store.registry_put(p, &d->pub, p->store.user_data);
  posp2p_peer_event ev = {.type = POSP2P_PEER_EV_DEVICE,
                          .device = &d->pub,
                          .prev_status = prev,
                          .conn = d->conn ? d->conn->id : 0,
                          .device_id = d->pub.id,
                          .text = posp2p_dev_status_name(d->pub.status)};
  posp2p__emit(p, &ev);
}

void posp2p__dev_update(posp2p_peer *p, posp2p__device *d, bool created,
                        const char *name, int type, const posp2p_addr *addr,
                        int status, int wire) {
  bool changed = created;
  posp2p_dev_status prev = d->pub.status;
  if (name != NULL && name[0] != '\0' && strncmp(name, d->name, NAME_MAX_LEN) != 0) {
    char *n = posp2p__strdup(p, name, NAME_MAX_LEN);
    if (n != NULL) {
      posp2p__free(p, d->name);
      d->name = n;
      d->pub.name = n;
      changed = true;
    }
  }
  if (type > 0 && posp2p_device_type_name(type) != NULL && type != d->pub.type) {
    d->pub.type = type;
    changed = true;
    posp2p__conns_changed(p);
  }
  if (addr != NULL) {
    if (addr->ip != 0 && addr->ip != d->pub.addr.ip) {
      d->pub.addr.ip = addr->ip;
      changed = true;
    }
    if (addr->port != 0 && addr->port != d->pub.addr.port) {
      d->pub.addr.port = addr->port;
      changed = true;
    }
  }
  if (status >= 0 && (posp2p_dev_status)status != d->pub.status) {
    d->pub.status = (posp2p_dev_status)status;
    changed = true;
  }
  if (wire > 0 && (posp2p_peer_wire)wire != d->pub.wire) {
    d->pub.wire = (posp2p_peer_wire)wire;
    changed = true;
  }
  if (changed) dev_changed(p, d, prev);
}

void posp2p__dev_set_status(posp2p_peer *p, posp2p__device *d,
                            posp2p_dev_status st) {
  posp2p__dev_update(p, d, false, NULL, -1, NULL, (int)st, -1);
}

void posp2p__registry_free(posp2p_peer *p) {
  for (uint32_t i = 0; i < p->ndevices; i++) {
    posp2p__free(p, p->devices[i]->name);
    posp2p__free(p, p->devices[i]);
  }
  posp2p__free(p, p->devices);
  p->devices = NULL;
  p->ndevices = p->devices_cap = 0;
  posp2p__htab_free(&p->dev_by_id, &p->alloc);
}

int posp2p_peer_restore_device(posp2p_peer *p, const posp2p_peer_device *src) {
  if (p == NULL || src == NULL) return POSP2P_ERR_INVAL;
  posp2p__uuid id;
  if (!posp2p__uuid_parse(src->id, &id)) return POSP2P_ERR_INVAL;
  if (src->type != DT(UNSPECIFIED) && posp2p_device_type_name(src->type) == NULL)
    return POSP2P_ERR_INVAL;
  if (memcmp(id.b, p->id.b, 16) == 0) return POSP2P_ERR_INVAL;
  bool created;
  posp2p__device *d = posp2p__dev_get(p, &id, &created);
  if (d == NULL) return POSP2P_ERR_NOMEM;
  if (src->name != NULL && src->name[0] != '\0') {
    char *n = posp2p__strdup(p, src->name, NAME_MAX_LEN);
    if (n == NULL) return POSP2P_ERR_NOMEM;
    posp2p__free(p, d->name);
    d->name = n;
    d->pub.name = n;
  }
  d->pub.type = src->type;
  posp2p__conns_changed(p);
  d->pub.addr = src->addr;
  d->pub.last_seen_ms = src->last_seen_ms;
  d->pub.wire = src->wire;
  if (d->conn == NULL) d->pub.status = POSP2P_DEV_DISCONNECTED;
  return 0;
}
