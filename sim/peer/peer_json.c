/* JSON output and the legacy-shape <-> v2 conversion of the daemon. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "json_emit.h" /* the codec's Dart-compatible JSON writer */


char *json_text(const json_t *v, size_t *len) {
  posp2p_buf b;
  posp2p__json_writer w;
  posp2p_buf_init(&b, 256u * 1024u * 1024u, NULL);
  posp2p__json_writer_init(&w, &b);
  posp2p__json_value(&w, v);
  if (w.err == 0) w.err = posp2p_buf_append(&b, "", 1); /* NUL */
  if (w.err != 0) {
    posp2p_buf_free(&b);
    return NULL;
  }
  char *s = malloc(b.len);
  if (s != NULL) {
    memcpy(s, b.data, b.len);
    if (len) *len = b.len - 1;
  }
  posp2p_buf_free(&b);
  return s;
}

void json_print_line(const json_t *v) {
  size_t n = 0;
  char *s = json_text(v, &n);
  if (s == NULL) {
    fputs("{\"event\":\"internal_error\",\"text\":\"cannot encode JSON\"}\n",
          stdout);
  } else {
    fwrite(s, 1, n, stdout);
    fputc('\n', stdout);
    free(s);
  }
  fflush(stdout);
}

json_t *json_legacy_payload(const posp2p_envelope *e,
                            const posp2p_legacy_opts *opts, posp2p_error *err) {
  posp2p_buf b;
  posp2p_buf_init(&b, 64u * 1024u * 1024u, NULL);
  int r = posp2p_legacy_encode(e, opts, &b, err);
  json_t *payload = NULL;
  if (r == 0) {
    json_error_t jerr;
    json_t *root = json_loadb((const char *)b.data, b.len, 0, &jerr);
    if (root != NULL) {
      payload = json_object_get(root, "payload");
      if (payload) json_incref(payload);
      json_decref(root);
    } else {
      posp2p_error_set(err, POSP2P_ERR_JSON_SYNTAX, 0, "", "%s", jerr.text);
    }
  }
  posp2p_buf_free(&b);
  return payload;
}

int json_envelope_from_legacy(pdaemon *d, const char *type, json_t *payload,
                              const char *to, int to_type,
                              posp2p_envelope **out, posp2p_error *err) {
  *out = NULL;
  uint8_t rnd[16];
  char mid[POSP2P_UUID_LEN + 1], ts[32];
  posp2p_uv_random(rnd, sizeof(rnd));
  posp2p_uuid_format(rnd, mid);
  size_t tn = posp2p_legacy_time_format((int64_t)posp2p_uv_wall_ms(), 0,
                                        d->legacy.utc_offset_minutes, ts);
  ts[tn] = '\0';
  /* The engine fills the id, the sender, the time and the priority; the
   * legacy decoder needs them present to accept the message. */
  json_t *pl = payload ? json_incref(payload) : json_object();
  json_t *msg = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:n, s:n}",
                          "messageId", mid, "messageType", type,
                          "fromDeviceId", d->id, "toDeviceId",
                          to ? json_string(to) : json_null(), "timestamp", ts,
                          "payload", pl, "priority", "acknowledged");
  if (msg == NULL)
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, "",
                            "cannot build a legacy message (bad payload?)");
  size_t n = 0;
  char *line = json_text(msg, &n);
  json_decref(msg);
  if (line == NULL)
    return posp2p_error_set(err, POSP2P_ERR_NOMEM, 0, "", "out of memory");
  int r = posp2p_legacy_decode((const uint8_t *)line, n, &d->legacy, NULL, out,
                               err);
  free(line);
  if (r != 0) return r;
  if (strcmp(type, "error") != 0 &&
      (*out)->message_type == POSP2P__V2__MESSAGE_TYPE__MESSAGE_TYPE_ERROR) {
    /* The legacy decoder maps an unknown type to an ERROR message. */
    posp2p_envelope_free(*out, NULL);
    *out = NULL;
    return posp2p_error_set(err, POSP2P_ERR_INVAL, 0, "",
                            "unknown message type '%s'", type);
  }
  (*out)->opt_priority_case = POSP2P__V2__ENVELOPE__OPT_PRIORITY__NOT_SET;
  if (to_type != 0) {
    (*out)->opt_to_device_type_case =
        POSP2P__V2__ENVELOPE__OPT_TO_DEVICE_TYPE_TO_DEVICE_TYPE;
    (*out)->to_device_type = (Posp2p__V2__DeviceType)to_type;
  }
  return 0;
}

const char *wire_name(posp2p_peer_wire w) {
  switch (w) {
  case POSP2P_PEER_WIRE_V2: return "v2";
  case POSP2P_PEER_WIRE_LEGACY: return "legacy";
  default: return "auto";
  }
}

json_t *json_device(const pdaemon *d, const posp2p_peer_device *dev) {
  char ip[16];
  posp2p_uv_ip_format(dev->addr.ip, ip);
  const char *type = posp2p_device_type_name(dev->type);
  json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s}", "id", dev->id,
                        "name", dev->name ? dev->name : "", "type",
                        type ? type : "unspecified", "addr", ip, "port",
                        (int)dev->addr.port, "status",
                        posp2p_dev_status_name(dev->status), "wire",
                        wire_name(dev->wire));
  if (o == NULL) return NULL;
  json_object_set_new(o, "last_seen_ms",
                      dev->last_seen_ms == 0
                          ? json_null()
                          : json_integer((json_int_t)(dev->last_seen_ms >= d->start_ms
                                                          ? dev->last_seen_ms - d->start_ms
                                                          : 0)));
  if (dev->conn != 0) json_object_set_new(o, "conn", json_integer((json_int_t)dev->conn));
  return o;
}

json_t *json_devices(const pdaemon *d) {
  json_t *a = json_array();
  posp2p_peer *p = posp2p_uv_peer_engine(d->up);
  size_t n = posp2p_peer_device_count(p);
  for (size_t i = 0; i < n; i++) {
    const posp2p_peer_device *dev = posp2p_peer_device_at(p, i);
    if (dev != NULL && strcmp(dev->id, d->id) != 0)
      json_array_append_new(a, json_device(d, dev));
  }
  return a;
}
