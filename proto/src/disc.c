/* Discovery datagrams on both wires (SPEC.md DISC-*, LEGACY discovery). */
#include <string.h>

#include "internal.h"

const uint8_t posp2p_disc_magic[4] = {0xFF, 'P', '2', 'D'};

int posp2p_disc_validate(const posp2p_disc *m, posp2p_error *err) {
  if (protobuf_c_enum_descriptor_get_value(&posp2p__v2__discovery_kind__descriptor,
                                           (int)m->kind) == NULL ||
      m->kind == POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_UNSPECIFIED)
    return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "DISC-3",
                            "discovery kind %d is not REQUEST, RESPONSE or "
                            "ANNOUNCE",
                            (int)m->kind);
  if (!posp2p_uuid_valid(m->device_id))
    return posp2p_error_set(err, m->device_id[0] ? POSP2P_ERR_BAD_ID
                                                 : POSP2P_ERR_MISSING_FIELD,
                            0, "DISC-3",
                            "discovery device_id \"%.40s\" is not a canonical "
                            "UUID",
                            m->device_id);
  if (protobuf_c_enum_descriptor_get_value(&posp2p__v2__device_type__descriptor,
                                           (int)m->device_type) == NULL)
    return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "DISC-3",
                            "discovery device_type %d is outside the enum",
                            (int)m->device_type);
  if (m->device_type == POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_UNSPECIFIED)
    return posp2p_error_set(err, POSP2P_ERR_ENUM, 0, "DISC-3",
                            "discovery device_type is unspecified");
  if (m->n_supported_versions == 0)
    return posp2p_error_set(err, POSP2P_ERR_MISSING_FIELD, 0, "DISC-3",
                            "discovery supported_versions is empty");
  if (m->tcp_port > 65535)
    return posp2p_error_set(err, POSP2P_ERR_RANGE, 0, "DISC-3",
                            "discovery tcp_port %u is above 65535", m->tcp_port);
  return 0;
}

int posp2p_disc_decode(const uint8_t *d, size_t n, const ProtobufCAllocator *a,
                       posp2p_disc **out, posp2p_wire *wire,
                       posp2p_error *err) {
  *out = NULL;
  *wire = POSP2P_WIRE_UNKNOWN;
  if (a == NULL) a = posp2p_mem_default();
  if (n == 0)
    return posp2p_error_set(err, POSP2P_ERR_DATAGRAM, 0, "DISC-1",
                            "empty datagram");
  if (n > POSP2P_DISC_MAX_DATAGRAM)
    return posp2p_error_set(err, POSP2P_ERR_DATAGRAM, POSP2P_DISC_MAX_DATAGRAM,
                            "DISC-2", "datagram of %zu bytes exceeds %u", n,
                            POSP2P_DISC_MAX_DATAGRAM);
  switch (posp2p_wire_detect(d[0])) {
  case POSP2P_WIRE_LEGACY:
    *wire = POSP2P_WIRE_LEGACY;
    return posp2p__legacy_disc_decode(d, n, a, out, err);
  case POSP2P_WIRE_V2:
    break;
  default:
    return posp2p_error_set(err, POSP2P_ERR_DATAGRAM, 0, "DISC-1",
                            "first byte 0x%02x starts neither a v2 nor a "
                            "legacy discovery datagram",
                            d[0]);
  }
  *wire = POSP2P_WIRE_V2;
  for (size_t i = 0; i < sizeof(posp2p_disc_magic); i++) {
    if (i >= n || d[i] != posp2p_disc_magic[i])
      return posp2p_error_set(err, POSP2P_ERR_DATAGRAM, i, "DISC-1",
                              "discovery magic mismatch at byte %zu", i);
  }
  if (n < POSP2P_DISC_MAGIC_LEN)
    return posp2p_error_set(err, POSP2P_ERR_DATAGRAM, n, "DISC-1",
                            "datagram ends before its version byte");
  if (d[4] != POSP2P_VERSION)
    return posp2p_error_set(err, POSP2P_ERR_VERSION, 4, "DISC-1",
                            "discovery datagram version %u, expected %u", d[4],
                            POSP2P_VERSION);
  posp2p_disc *m = posp2p__v2__discovery_datagram__unpack(
      (ProtobufCAllocator *)a, n - POSP2P_DISC_MAGIC_LEN, d + POSP2P_DISC_MAGIC_LEN);
  if (m == NULL)
    return posp2p_error_set(err, POSP2P_ERR_PROTOBUF, POSP2P_DISC_MAGIC_LEN,
                            "DISC-1",
                            "datagram body is not a valid DiscoveryDatagram");
  int rv = posp2p__wire_scan(&posp2p__v2__discovery_datagram__descriptor,
                             d + POSP2P_DISC_MAGIC_LEN,
                             n - POSP2P_DISC_MAGIC_LEN, POSP2P_DISC_MAGIC_LEN, 0,
                             err);
  if (rv == 0) rv = posp2p_disc_validate(m, err);
  if (rv != 0) {
    posp2p__v2__discovery_datagram__free_unpacked(m, (ProtobufCAllocator *)a);
    return rv;
  }
  *out = m;
  return 0;
}

void posp2p_disc_free(posp2p_disc *m, const ProtobufCAllocator *a) {
  if (m == NULL) return;
  posp2p__v2__discovery_datagram__free_unpacked(
      m, (ProtobufCAllocator *)(a ? a : posp2p_mem_default()));
}

int posp2p_disc_encode(const posp2p_disc *m, posp2p_wire wire, posp2p_buf *out,
                       posp2p_error *err) {
  out->len = 0;
  if (wire == POSP2P_WIRE_LEGACY) return posp2p__legacy_disc_encode(m, out, err);
  if (wire != POSP2P_WIRE_V2)
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, "", "unknown wire %d",
                            (int)wire);
  size_t body = posp2p__v2__discovery_datagram__get_packed_size(m);
  size_t total = POSP2P_DISC_MAGIC_LEN + body;
  if (total > POSP2P_DISC_MAX_DATAGRAM)
    return posp2p_error_set(err, POSP2P_ERR_NOSPACE, 0, "DISC-2",
                            "datagram would be %zu bytes, above %u", total,
                            POSP2P_DISC_MAX_DATAGRAM);
  int rv = posp2p_buf_reserve(out, total);
  if (rv != 0)
    return posp2p_error_set(err, rv, 0, "", "cannot reserve %zu bytes", total);
  memcpy(out->data, posp2p_disc_magic, sizeof(posp2p_disc_magic));
  out->data[4] = POSP2P_VERSION;
  posp2p__v2__discovery_datagram__pack(m, out->data + POSP2P_DISC_MAGIC_LEN);
  out->len = total;
  return 0;
}
