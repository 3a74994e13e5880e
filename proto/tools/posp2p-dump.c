/* posp2p-dump: decode a v2 frame stream, a legacy NDJSON stream or a
 * discovery datagram with the posp2p codec and print every message as JSON.
 *
 *   posp2p-dump v2 FILE       frames (varint length + Envelope), one per line
 *   posp2p-dump legacy FILE   legacy JSON lines, printed as the v2 Envelope
 *                             they decode to
 *   posp2p-dump disc FILE     one discovery datagram of either wire
 *
 * FILE "-" reads standard input. The JSON is protobuf's canonical proto3
 * mapping exactly as Python's json_format.MessageToDict(msg,
 * preserving_proto_field_name=True) produces it, so that tests can compare
 * the C codec with Google's protobuf field by field: 64-bit integers as
 * strings, enums by name (the number when the value is not in the enum),
 * bytes as base64, default-valued proto3 scalars and empty repeated fields
 * omitted, oneof members present whenever set (even at their default). The
 * printer walks the protobuf-c descriptors, so it works for any message of
 * the schema. (Map fields are printed as lists of entries: protobuf-c does
 * not mark map entry messages; the posp2p schema has none.)
 *
 * On a decode error it prints "error: <ERR_NAME> at offset N: message
 * [REQ-ID]" to stderr (N is the byte offset in FILE) and exits 1; usage and
 * I/O errors exit 2. Messages decoded before the error are still printed. */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posp2p/codec.h"
#include "posp2p/legacy.h"

/* ---- JSON output ------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0
 * if it is not valid (overlong forms, surrogates and values above U+10FFFF
 * are invalid). */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return len;
}

/* A JSON string. Non-ASCII is written raw; bytes that are not valid UTF-8
 * (protobuf-c does not check) become U+FFFD so the output stays JSON. */
static void json_string(FILE *o, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  fputc('"', o);
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      fputc('\\', o);
      fputc(c, o);
      i++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n': fputs("\\n", o); break;
      case '\r': fputs("\\r", o); break;
      case '\t': fputs("\\t", o); break;
      case '\b': fputs("\\b", o); break;
      case '\f': fputs("\\f", o); break;
      default: fprintf(o, "\\u%04x", c); break;
      }
      i++;
    } else if (c < 0x80) {
      fputc(c, o);
      i++;
    } else {
      size_t len = utf8_seq_len(p + i, n - i);
      if (len == 0) {
        fputs("\xEF\xBF\xBD", o);
        i++;
      } else {
        fwrite(p + i, 1, len, o);
        i += len;
      }
    }
  }
  fputc('"', o);
}

static void json_base64(FILE *o, const uint8_t *d, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  fputc('"', o);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)d[i] << 16;
    if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
    if (i + 2 < n) v |= d[i + 2];
    fputc(tab[(v >> 18) & 63], o);
    fputc(tab[(v >> 12) & 63], o);
    fputc(i + 1 < n ? tab[(v >> 6) & 63] : '=', o);
    fputc(i + 2 < n ? tab[v & 63] : '=', o);
  }
  fputc('"', o);
}

/* Floating point as MessageToDict: NaN and the infinities as strings,
 * doubles with enough digits to round-trip, floats with the shortest
 * digits that round-trip as a float (ToShortestFloat). */
static void json_double(FILE *o, double v, int is_float) {
  if (isnan(v)) {
    fputs("\"NaN\"", o);
    return;
  }
  if (isinf(v)) {
    fputs(v > 0 ? "\"Infinity\"" : "\"-Infinity\"", o);
    return;
  }
  char buf[64];
  if (is_float) {
    for (int prec = 1; prec <= 9; prec++) {
      snprintf(buf, sizeof(buf), "%.*g", prec, v);
      if (strtof(buf, NULL) == (float)v) break;
    }
  } else {
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, sizeof(buf), "%.*g", prec, v);
      if (strtod(buf, NULL) == v) break;
    }
  }
  /* Keep it a JSON float ("1.0", not "1") like Python's json.dumps. */
  if (strpbrk(buf, ".eE") == NULL) strcat(buf, ".0");
  fputs(buf, o);
}

static size_t field_elt_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return 8;
  case PROTOBUF_C_TYPE_FLOAT:
    return sizeof(float);
  case PROTOBUF_C_TYPE_DOUBLE:
    return sizeof(double);
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 0;
}

static void json_message(FILE *o, const ProtobufCMessage *m);

/* One value of field f stored at p. */
static void json_value(FILE *o, const ProtobufCFieldDescriptor *f,
                       const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: {
    int32_t v;
    memcpy(&v, p, sizeof(v));
    fprintf(o, "%" PRId32, v);
    break;
  }
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    fprintf(o, "%" PRIu32, v);
    break;
  }
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: {
    int64_t v;
    memcpy(&v, p, sizeof(v));
    fprintf(o, "\"%" PRId64 "\"", v);
    break;
  }
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    fprintf(o, "\"%" PRIu64 "\"", v);
    break;
  }
  case PROTOBUF_C_TYPE_FLOAT: {
    float v;
    memcpy(&v, p, sizeof(v));
    json_double(o, (double)v, 1);
    break;
  }
  case PROTOBUF_C_TYPE_DOUBLE: {
    double v;
    memcpy(&v, p, sizeof(v));
    json_double(o, v, 0);
    break;
  }
  case PROTOBUF_C_TYPE_BOOL: {
    protobuf_c_boolean v;
    memcpy(&v, p, sizeof(v));
    fputs(v ? "true" : "false", o);
    break;
  }
  case PROTOBUF_C_TYPE_ENUM: {
    int32_t v;
    memcpy(&v, p, sizeof(v));
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
        (const ProtobufCEnumDescriptor *)f->descriptor, v);
    if (ev != NULL)
      json_string(o, ev->name, strlen(ev->name));
    else
      fprintf(o, "%" PRId32, v);
    break;
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s;
    memcpy(&s, p, sizeof(s));
    if (s == NULL) s = "";
    json_string(o, s, strlen(s));
    break;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    ProtobufCBinaryData b;
    memcpy(&b, p, sizeof(b));
    json_base64(o, b.data, b.len);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub;
    memcpy(&sub, p, sizeof(sub));
    if (sub == NULL)
      fputs("{}", o);
    else
      json_message(o, sub);
    break;
  }
  }
}

/* Whether a singular field is present in the MessageToDict sense. */
static int field_present(const ProtobufCMessage *m,
                         const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  const void *p = base + f->offset;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t which;
    memcpy(&which, base + f->quantifier_offset, sizeof(which));
    return which == f->id;
  }
  if (f->label == PROTOBUF_C_LABEL_REQUIRED) return 1;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) {
    const void *ptr;
    memcpy(&ptr, p, sizeof(ptr));
    if (ptr == NULL) return 0;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
      /* proto2: a string equal to its default pointer was not set. */
      return f->type == PROTOBUF_C_TYPE_MESSAGE || ptr != f->default_value;
    }
    return f->type == PROTOBUF_C_TYPE_MESSAGE || *(const char *)ptr != '\0';
  }
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
    protobuf_c_boolean has;
    memcpy(&has, base + f->quantifier_offset, sizeof(has));
    return has != 0;
  }
  /* proto3 implicit presence: present when not the zero value (all bits
   * zero, so -0.0 counts as set, as in protobuf's serializer). */
  if (f->type == PROTOBUF_C_TYPE_BYTES) {
    ProtobufCBinaryData b;
    memcpy(&b, p, sizeof(b));
    return b.len > 0;
  }
  size_t n = field_elt_size(f->type);
  const unsigned char *bytes = (const unsigned char *)p;
  for (size_t i = 0; i < n; i++)
    if (bytes[i] != 0) return 1;
  return 0;
}

static void json_message(FILE *o, const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  int first = 1;
  fputc('{', o);
  /* d->fields is sorted by field number, the order of ListFields(). */
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t count;
      memcpy(&count, base + f->quantifier_offset, sizeof(count));
      if (count == 0) continue;
      const char *arr;
      memcpy(&arr, base + f->offset, sizeof(arr));
      if (!first) fputc(',', o);
      first = 0;
      json_string(o, f->name, strlen(f->name));
      fputs(":[", o);
      size_t sz = field_elt_size(f->type);
      for (size_t k = 0; k < count; k++) {
        if (k) fputc(',', o);
        json_value(o, f, arr + k * sz);
      }
      fputc(']', o);
      continue;
    }
    if (!field_present(m, f)) continue;
    if (!first) fputc(',', o);
    first = 0;
    json_string(o, f->name, strlen(f->name));
    fputc(':', o);
    json_value(o, f, base + f->offset);
  }
  fputc('}', o);
}

/* ---- Input -------------------------------------------------------------- */

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (fp == NULL) {
    fprintf(stderr, "posp2p-dump: %s: %s\n", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  while (buf != NULL) {
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, fp);
    n += got;
    if (got == 0) {
      if (ferror(fp)) {
        fprintf(stderr, "posp2p-dump: %s: read error\n", path);
        free(buf);
        buf = NULL;
      }
      break;
    }
  }
  if (buf == NULL && !ferror(fp)) fprintf(stderr, "posp2p-dump: out of memory\n");
  if (fp != stdin) fclose(fp);
  *len = n;
  return buf;
}

static int report(const posp2p_error *err, uint64_t base_offset) {
  const char *req = err->requirement ? err->requirement : "";
  fprintf(stderr, "error: %s at offset %" PRIu64 ": %s", posp2p_err_name(err->code),
          base_offset + err->offset, err->message);
  if (req[0] != '\0') fprintf(stderr, " [%s]", req);
  fputc('\n', stderr);
  return 1;
}

static int dump_v2(const uint8_t *data, size_t len) {
  posp2p_framer fr;
  posp2p_error err;
  size_t pos = 0;
  int status = 0;
  memset(&err, 0, sizeof(err));
  posp2p_framer_init(&fr, POSP2P_MAX_FRAME_DEFAULT, NULL);
  for (;;) {
    size_t used = 0;
    posp2p_frame frm;
    int rv = posp2p_framer_next(&fr, data + pos, len - pos, &used, &frm, &err);
    pos += used;
    if (rv < 0) {
      status = report(&err, 0);
      break;
    }
    if (rv == 0) {
      if (posp2p_framer_finish(&fr, &err) < 0) status = report(&err, 0);
      break;
    }
    uint8_t hdr[5];
    uint64_t body_offset =
        frm.offset + posp2p_varint_encode((uint32_t)frm.len, hdr);
    posp2p_envelope *env = NULL;
    rv = posp2p_envelope_decode(frm.data, frm.len, NULL, &env, &err);
    if (rv < 0) {
      status = report(&err, body_offset);
      break;
    }
    json_message(stdout, &env->base);
    fputc('\n', stdout);
    posp2p_envelope_free(env, NULL);
  }
  posp2p_framer_free(&fr);
  return status;
}

static int dump_legacy(const uint8_t *data, size_t len) {
  posp2p_ndjson nd;
  posp2p_error err;
  posp2p_legacy_opts opts = {0};
  size_t pos = 0;
  int status = 0;
  memset(&err, 0, sizeof(err));
  posp2p_ndjson_init(&nd, POSP2P_MAX_FRAME_DEFAULT, NULL);
  for (;;) {
    size_t used = 0;
    posp2p_frame line;
    int rv = posp2p_ndjson_next(&nd, data + pos, len - pos, &used, &line, &err);
    pos += used;
    if (rv < 0) {
      status = report(&err, 0);
      break;
    }
    if (rv == 0) {
      if (posp2p_ndjson_finish(&nd, &err) < 0) status = report(&err, 0);
      break;
    }
    posp2p_envelope *env = NULL;
    rv = posp2p_legacy_decode(line.data, line.len, &opts, NULL, &env, &err);
    if (rv < 0) {
      status = report(&err, line.offset);
      break;
    }
    json_message(stdout, &env->base);
    fputc('\n', stdout);
    posp2p_envelope_free(env, NULL);
  }
  posp2p_ndjson_free(&nd);
  return status;
}

static int dump_disc(const uint8_t *data, size_t len) {
  posp2p_error err;
  posp2p_disc *m = NULL;
  posp2p_wire wire = POSP2P_WIRE_UNKNOWN;
  memset(&err, 0, sizeof(err));
  if (posp2p_disc_decode(data, len, NULL, &m, &wire, &err) < 0)
    return report(&err, 0);
  json_message(stdout, &m->base);
  fputc('\n', stdout);
  posp2p_disc_free(m, NULL);
  return 0;
}

static int usage(void) {
  fputs("usage: posp2p-dump v2|legacy|disc FILE   (FILE - reads stdin)\n"
        "  v2      varint-delimited Envelope frames\n"
        "  legacy  FlutterPOS NDJSON lines, printed as v2 Envelopes\n"
        "  disc    one discovery datagram (v2 or legacy)\n"
        "Prints one JSON object per message (protobuf proto3 JSON mapping,\n"
        "original field names). Exit 1 on a decode error, 2 on misuse.\n",
        stderr);
  return 2;
}

int main(int argc, char **argv) {
  if (argc != 3) return usage();
  int (*fn)(const uint8_t *, size_t);
  if (strcmp(argv[1], "v2") == 0)
    fn = dump_v2;
  else if (strcmp(argv[1], "legacy") == 0)
    fn = dump_legacy;
  else if (strcmp(argv[1], "disc") == 0)
    fn = dump_disc;
  else
    return usage();
  size_t len = 0;
  uint8_t *data = read_all(argv[2], &len);
  if (data == NULL) return 2;
  int rc = fn(data, len);
  free(data);
  if (fflush(stdout) != 0) rc = 2;
  return rc;
}
