/* posp2p v2 codec: connection preface, length-delimited frame stream,
 * Envelope encode/decode/validate, discovery datagrams. No I/O: bytes in,
 * messages or errors out; messages in, bytes out. */
#ifndef POSP2P_CODEC_H
#define POSP2P_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posp2p/common.h"
#include "posp2p.pb-c.h" /* generated from proto/posp2p.proto at build time */

#ifdef __cplusplus
extern "C" {
#endif

/* Short names for the generated types. */
typedef Posp2p__V2__Envelope posp2p_envelope;
typedef Posp2p__V2__DiscoveryDatagram posp2p_disc;

/* Protocol constants (SPEC.md CONN-*, FRAME-*, HB-*, DISC-*). */
#define POSP2P_VERSION 2u               /* this wire; 1 is the legacy JSON wire */
#define POSP2P_DISCOVERY_PORT 8765u
#define POSP2P_DATA_PORT 8766u
#define POSP2P_MAX_FRAME_DEFAULT (1024u * 1024u)
#define POSP2P_MAX_FRAME_MIN 4096u      /* smallest max_frame_size one may advertise */
#define POSP2P_HEARTBEAT_MS_DEFAULT 15000u
#define POSP2P_TIMEOUT_MS_DEFAULT 60000u
#define POSP2P_PRIORITY_DEFAULT 5u
#define POSP2P_PRIORITY_MAX 10u
#define POSP2P_UUID_LEN 36u

/* Connection preface: "\xFF" "POSP2P" <version byte>, 8 bytes, sent first by
 * both sides of a v2 connection. 0xFF can never start a legacy JSON line. */
#define POSP2P_PREFACE_LEN 8u
extern const uint8_t posp2p_preface_magic[7];

/* Discovery datagram prefix: "\xFF" "P2D" <version byte>. */
#define POSP2P_DISC_MAGIC_LEN 5u
extern const uint8_t posp2p_disc_magic[4];
#define POSP2P_DISC_MAX_DATAGRAM 1400u  /* fits one Ethernet MTU */

typedef enum {
  POSP2P_WIRE_UNKNOWN = 0,
  POSP2P_WIRE_V2 = 2,
  POSP2P_WIRE_LEGACY = 1
} posp2p_wire;

/* Which wire a connection or datagram speaks, from its first byte:
 * 0xFF is v2; '{' or JSON whitespace is legacy; anything else is unknown. */
posp2p_wire posp2p_wire_detect(uint8_t first_byte);

/* Write the 8-byte preface announcing `version` into out. */
void posp2p_preface_encode(uint8_t out[POSP2P_PREFACE_LEN], uint8_t version);

/* Parse a preface from the first n bytes of a connection.
 * Returns 1 and sets *version when all 8 bytes are there and valid, 0 when
 * more bytes are needed (and what is there so far matches), or
 * POSP2P_ERR_BAD_PREFACE (err->offset is the first wrong byte). */
int posp2p_preface_parse(const uint8_t *p, size_t n, uint8_t *version,
                         posp2p_error *err);

/* ---- Frame stream decoder ---------------------------------------------
 * Splits a byte stream into frames (varint length + body). Gives the same
 * frames whatever the split of the input. The length is checked against
 * max_frame before any allocation; a frame that arrives in one piece is
 * returned as a pointer into the caller's input (no copy). */
typedef struct {
  uint32_t max_frame;
  const ProtobufCAllocator *alloc;
  uint64_t offset;      /* stream offset of the next byte to be fed */
  uint8_t hdr[5];       /* partial varint */
  uint8_t hdr_len;
  bool in_body;
  uint32_t body_len;    /* length of the frame being assembled */
  uint64_t frame_offset; /* stream offset of its length prefix */
  posp2p_buf body;      /* partial body, only when split across feeds */
  int failed;           /* sticky error code once the stream is broken */
} posp2p_framer;

typedef struct {
  const uint8_t *data;  /* valid until the next posp2p_framer_* call */
  size_t len;
  uint64_t offset;      /* stream offset of the frame's length prefix */
} posp2p_frame;

void posp2p_framer_init(posp2p_framer *f, uint32_t max_frame,
                        const ProtobufCAllocator *a);
void posp2p_framer_free(posp2p_framer *f);

/* Consume input until one frame is complete or the input is used up.
 * *consumed receives the number of bytes used from data (call again with
 * the rest). Returns 1 with *out set when a frame is complete, 0 when all
 * input was consumed without completing one, or a negative error:
 * POSP2P_ERR_VARINT, POSP2P_ERR_FRAME_TOO_LARGE, POSP2P_ERR_NOMEM. After an
 * error the stream is unusable and every later call returns the same code. */
int posp2p_framer_next(posp2p_framer *f, const uint8_t *data, size_t len,
                       size_t *consumed, posp2p_frame *out, posp2p_error *err);

/* At end of stream: POSP2P_ERR_TRUNCATED if a frame was half-received,
 * else 0. */
int posp2p_framer_finish(const posp2p_framer *f, posp2p_error *err);

/* Encode a varint length prefix; returns its size (1..5). */
size_t posp2p_varint_encode(uint32_t v, uint8_t out[5]);

/* ---- Envelope ---------------------------------------------------------- */

/* Initialise e to the protobuf defaults. */
void posp2p_envelope_init(posp2p_envelope *e);

/* Unpack one frame body into a new Envelope allocated from a (NULL:
 * default) and validate it. On success *out owns the message (free with
 * posp2p_envelope_free using the same allocator). Errors:
 * POSP2P_ERR_PROTOBUF, and every error of posp2p_envelope_validate. */
int posp2p_envelope_decode(const uint8_t *buf, size_t len,
                           const ProtobufCAllocator *a, posp2p_envelope **out,
                           posp2p_error *err);
void posp2p_envelope_free(posp2p_envelope *e, const ProtobufCAllocator *a);

/* Unpack one frame body without the validation rules, but with the checks
 * that need the raw bytes (FRAME-7: strings are valid UTF-8; MSG-22: no
 * U+0000 in a string). For receivers that must quote the message_id of a
 * message they reject (MSG-30): when the body unpacks but a string check
 * fails, the error is returned AND *out is set, so the caller can read the
 * ids before freeing it. Errors: POSP2P_ERR_PROTOBUF (*out NULL),
 * POSP2P_ERR_RANGE (MSG-22), POSP2P_ERR_PROTOBUF with requirement FRAME-7
 * (invalid UTF-8, *out set). */
int posp2p_envelope_unpack(const uint8_t *buf, size_t len,
                           const ProtobufCAllocator *a, posp2p_envelope **out,
                           posp2p_error *err);

/* Check everything the schema cannot: required ids present and canonical
 * UUIDs, enum values inside the schema, priority 0..10, the payload matching
 * message_type, per-payload rules (SPEC.md MSG-*). Errors:
 * POSP2P_ERR_MISSING_FIELD, POSP2P_ERR_BAD_ID, POSP2P_ERR_RANGE,
 * POSP2P_ERR_ENUM, POSP2P_ERR_PAYLOAD. err->requirement names the rule. */
int posp2p_envelope_validate(const posp2p_envelope *e, posp2p_error *err);

/* Size of the frame (length prefix + body) that encodes e. */
size_t posp2p_frame_size(const posp2p_envelope *e);

/* Append one frame (varint length + packed e) to out. Does not validate.
 * Errors: POSP2P_ERR_NOSPACE (out's cap), POSP2P_ERR_NOMEM,
 * POSP2P_ERR_FRAME_TOO_LARGE (body above max_frame). */
int posp2p_frame_encode(const posp2p_envelope *e, uint32_t max_frame,
                        posp2p_buf *out, posp2p_error *err);

/* Effective priority: the field if present, else POSP2P_PRIORITY_DEFAULT. */
uint32_t posp2p_envelope_priority(const posp2p_envelope *e);

/* True if s is a canonical UUID text (8-4-4-4-12 hex, either case). */
bool posp2p_uuid_valid(const char *s);
/* Write a random version-4 UUID (36 chars + NUL) from 16 random bytes. */
void posp2p_uuid_format(const uint8_t rnd[16], char out[POSP2P_UUID_LEN + 1]);

/* Names used in logs, reports and on the legacy wire. */
const char *posp2p_message_type_name(int t);  /* "orderForward", "hello"; NULL if unknown */
const char *posp2p_device_type_name(int t);   /* "mainPOS" ... ; NULL if unknown */
const char *posp2p_order_status_name(int s);  /* "sent_to_kitchen" ... */
const char *posp2p_destination_name(int d);   /* "kitchenDisplay" ... */
const char *posp2p_error_code_name(int c);    /* "MALFORMED_FRAME" ... */
/* Reverse look-ups: return the enum value, or -1 if the name is unknown. */
int posp2p_message_type_from_name(const char *s, size_t n);
int posp2p_device_type_from_name(const char *s, size_t n);
int posp2p_order_status_from_name(const char *s, size_t n);
int posp2p_destination_from_name(const char *s, size_t n);
int posp2p_error_code_from_name(const char *s, size_t n);

/* ---- Discovery datagrams (both wires) ---------------------------------- */

/* Decode one UDP datagram of either wire (detected from the first byte) into
 * a new DiscoveryDatagram; *wire tells which. Legacy datagrams are mapped per
 * SPEC.md LEGACY-42..45. Errors: POSP2P_ERR_DATAGRAM, POSP2P_ERR_VERSION,
 * POSP2P_ERR_PROTOBUF, POSP2P_ERR_JSON_*, POSP2P_ERR_BAD_ID, POSP2P_ERR_RANGE,
 * POSP2P_ERR_ENUM, POSP2P_ERR_MISSING_FIELD, POSP2P_ERR_NOMEM. */
int posp2p_disc_decode(const uint8_t *d, size_t n, const ProtobufCAllocator *a,
                       posp2p_disc **out, posp2p_wire *wire, posp2p_error *err);
void posp2p_disc_free(posp2p_disc *m, const ProtobufCAllocator *a);

/* Encode a datagram for the given wire into out (replacing its contents).
 * Errors: POSP2P_ERR_NOSPACE (datagram above POSP2P_DISC_MAX_DATAGRAM or the
 * buffer cap), POSP2P_ERR_NOMEM, POSP2P_ERR_INVAL (wire unknown). */
int posp2p_disc_encode(const posp2p_disc *m, posp2p_wire wire, posp2p_buf *out,
                       posp2p_error *err);

/* Validate a decoded v2 datagram (SPEC.md DISC-*). */
int posp2p_disc_validate(const posp2p_disc *m, posp2p_error *err);

#ifdef __cplusplus
}
#endif
#endif /* POSP2P_CODEC_H */
