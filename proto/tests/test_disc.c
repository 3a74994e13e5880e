/* Discovery datagrams on both wires (DISC-*, LEGACY discovery). */
#include "posp2p/codec.h"
#include "ptest.h"

#define KIND(x) POSP2P__V2__DISCOVERY_KIND__DISCOVERY_KIND_##x

static const char *ID1 = "0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01";

static void make_disc(posp2p_disc *m, uint32_t *versions) {
  posp2p__v2__discovery_datagram__init(m);
  m->kind = KIND(REQUEST);
  m->device_id = (char *)ID1;
  m->device_name = (char *)"Front counter";
  m->device_type = POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_MAIN_POS;
  m->tcp_port = 8766;
  versions[0] = 2;
  m->n_supported_versions = 1;
  m->supported_versions = versions;
  m->nonce = 0x1122334455667788ull;
}

PTEST(v2_roundtrip) {
  posp2p_disc m, *d = NULL;
  uint32_t versions[1];
  posp2p_buf b;
  posp2p_wire wire;
  posp2p_error err;
  make_disc(&m, versions);
  posp2p_buf_init(&b, 2048, NULL);
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), 0);
  PT_EQ_MEM(b.data, "\xFF" "P2D\x02", 5);
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err), 0);
  PT_EQ_INT(wire, POSP2P_WIRE_V2);
  if (d) {
    PT_EQ_INT(d->kind, KIND(REQUEST));
    PT_EQ_STR(d->device_id, ID1);
    PT_EQ_STR(d->device_name, "Front counter");
    PT_EQ_INT(d->tcp_port, 8766);
    PT_EQ_INT(d->nonce, 0x1122334455667788ll);
  }
  posp2p_disc_free(d, NULL);
  posp2p_buf_free(&b);
}

PTEST(v2_malformed) {
  posp2p_disc m, *d = NULL;
  uint32_t versions[1];
  posp2p_buf b;
  posp2p_wire wire;
  posp2p_error err;
  make_disc(&m, versions);
  posp2p_buf_init(&b, 2048, NULL);
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), 0);

  /* Wrong magic, wrong version, truncated body, empty, oversize. */
  b.data[2] = 'X';
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err), POSP2P_ERR_DATAGRAM);
  PT_EQ_INT(err.offset, 2);
  b.data[2] = '2';
  b.data[4] = 3;
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err), POSP2P_ERR_VERSION);
  b.data[4] = 2;
  PT_EQ_INT(posp2p_disc_decode(b.data, 4, NULL, &d, &wire, &err), POSP2P_ERR_DATAGRAM);
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len - 3, NULL, &d, &wire, &err), POSP2P_ERR_PROTOBUF);
  PT_EQ_INT(posp2p_disc_decode(b.data, 0, NULL, &d, &wire, &err), POSP2P_ERR_DATAGRAM);
  static uint8_t big[POSP2P_DISC_MAX_DATAGRAM + 1];
  memcpy(big, b.data, b.len);
  PT_EQ_INT(posp2p_disc_decode(big, sizeof(big), NULL, &d, &wire, &err), POSP2P_ERR_DATAGRAM);
  PT_EQ_STR(err.requirement, "DISC-2");
  /* Neither wire: an HTTP request. */
  PT_EQ_INT(posp2p_disc_decode((const uint8_t *)"GET /", 5, NULL, &d, &wire, &err),
            POSP2P_ERR_DATAGRAM);
  PT_CHECK(d == NULL);

  /* Field rules (DISC-3). */
  m.kind = KIND(UNSPECIFIED);
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), 0);
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err), POSP2P_ERR_ENUM);
  PT_EQ_STR(err.requirement, "DISC-3");
  m.kind = KIND(ANNOUNCE);
  m.device_id = (char *)"main-pos";
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), 0);
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err), POSP2P_ERR_BAD_ID);
  m.device_id = (char *)ID1;
  m.n_supported_versions = 0;
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), 0);
  PT_EQ_INT(posp2p_disc_decode(b.data, b.len, NULL, &d, &wire, &err),
            POSP2P_ERR_MISSING_FIELD);
  PT_CHECK(d == NULL);
  posp2p_buf_free(&b);
}

PTEST(v2_encode_limit) {
  posp2p_disc m;
  uint32_t versions[1];
  posp2p_buf b;
  posp2p_error err;
  static char name[POSP2P_DISC_MAX_DATAGRAM];
  make_disc(&m, versions);
  memset(name, 'n', sizeof(name) - 1);
  m.device_name = name;
  posp2p_buf_init(&b, 4096, NULL);
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_V2, &b, &err), POSP2P_ERR_NOSPACE);
  PT_EQ_STR(err.requirement, "DISC-2");
  PT_EQ_INT(posp2p_disc_encode(&m, POSP2P_WIRE_UNKNOWN, &b, &err), POSP2P_ERR_INVAL);
  posp2p_buf_free(&b);
}

PTEST(legacy_request_and_response) {
  /* Exactly what the FlutterPOS reference writes (no trailing newline). */
  static const char req[] =
      "{\"deviceName\":\"Tablet 3\",\"deviceType\":\"P2PDeviceType.orderingTablet\","
      "\"port\":8766}";
  posp2p_disc *d = NULL;
  posp2p_wire wire;
  posp2p_error err;
  posp2p_buf b;
  PT_EQ_INT(posp2p_disc_decode((const uint8_t *)req, sizeof(req) - 1, NULL, &d,
                               &wire, &err),
            0);
  PT_EQ_INT(wire, POSP2P_WIRE_LEGACY);
  posp2p_buf_init(&b, 2048, NULL);
  if (d) {
    PT_EQ_INT(d->kind, KIND(REQUEST));
    PT_EQ_STR(d->device_id, "");
    PT_EQ_STR(d->device_name, "Tablet 3");
    PT_EQ_INT(d->device_type, POSP2P__V2__DEVICE_TYPE__DEVICE_TYPE_ORDERING_TABLET);
    PT_EQ_INT(d->tcp_port, 8766);
    PT_EQ_INT(posp2p_disc_encode(d, POSP2P_WIRE_LEGACY, &b, &err), 0);
    PT_EQ_INT(b.len, sizeof(req) - 1);
    PT_EQ_MEM(b.data, req, sizeof(req) - 1);
  }
  posp2p_disc_free(d, NULL);
  d = NULL;

  static const char resp[] =
      "{\"deviceId\":\"0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01\",\"deviceName\":"
      "\"Front counter\",\"deviceType\":\"P2PDeviceType.mainPOS\",\"ipAddress\":"
      "\"192.168.1.10\",\"port\":8766,\"hostname\":\"pos-1\",\"metadata\":"
      "{\"version\":\"1.4.2\",\"tables\":12}}";
  PT_EQ_INT(posp2p_disc_decode((const uint8_t *)resp, sizeof(resp) - 1, NULL,
                               &d, &wire, &err),
            0);
  if (d) {
    PT_EQ_INT(d->kind, KIND(RESPONSE));
    PT_EQ_STR(d->device_id, ID1);
    PT_EQ_STR(d->ip_address, "192.168.1.10");
    PT_EQ_STR(d->hostname, "pos-1");
    PT_EQ_STR(d->metadata_json, "{\"version\":\"1.4.2\",\"tables\":12}");
    PT_EQ_INT(posp2p_disc_encode(d, POSP2P_WIRE_LEGACY, &b, &err), 0);
    PT_EQ_INT(b.len, sizeof(resp) - 1);
    PT_EQ_MEM(b.data, resp, sizeof(resp) - 1);
  }
  posp2p_disc_free(d, NULL);
  d = NULL;

  /* Malformed legacy datagrams are errors, never silently accepted. */
  static const char *bad[] = {
      "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\"",   /* truncated */
      "{\"deviceName\":1,\"deviceType\":\"P2PDeviceType.kds\",\"port\":1}", /* type */
      "{\"deviceName\":\"x\",\"deviceType\":\"P2PDeviceType.kds\",\"port\":1}x", /* trailing */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rv = posp2p_disc_decode((const uint8_t *)bad[i], strlen(bad[i]), NULL,
                                &d, &wire, &err);
    PT_CHECK(rv < 0);
    PT_CHECK(d == NULL);
  }
  posp2p_buf_free(&b);
}

int main(int argc, char **argv) { return ptest_main(argc, argv); }
