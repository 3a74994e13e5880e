#!/usr/bin/python3
"""Write the libFuzzer dictionaries fuzz/dict/<target>.dict.

    /usr/bin/python3 fuzz/gen_dicts.py

The entries come from proto/posp2p.proto (field keys as varints), the
protocol brief (preface, discovery magic, frame caps) and the legacy wire
(JSON keys, enum strings, timestamp forms, number edge cases). Edit this
script, not the .dict files, and commit both.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def esc(b):
    out = ""
    for c in b:
        if c in (34, 92):  # '"' and '\\' take a backslash
            out += "\\" + chr(c)
        elif 32 <= c < 127:
            out += chr(c)
        else:
            out += "\\x%02x" % c
    return out


def varint(v):
    o = b""
    while v >= 0x80:
        o += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return o + bytes([v])


def key(field, wire_type):
    return varint(field << 3 | wire_type)


VARINT, LEN, GROUP = 0, 2, 3

MAGIC = [
    ("# Connection preface and discovery magic (CONN-1, DISC-1)", None),
    ("preface_v2", b"\xffPOSP2P\x02"),
    ("preface_v1", b"\xffPOSP2P\x01"),
    ("disc_magic_v2", b"\xffP2D\x02"),
    ("disc_magic_v1", b"\xffP2D\x01"),
]

LENGTHS = [
    ("# Frame length prefixes: the caps and their neighbours (FRAME-4, FRAME-5)",
     None),
    ("len_4096", varint(4096)),
    ("len_4097", varint(4097)),
    ("len_1mib", varint(1 << 20)),
    ("len_1mib_plus1", varint((1 << 20) + 1)),
    ("len_u32max", varint(0xFFFFFFFF)),
    ("len_over_u32", b"\xff\xff\xff\xff\x1f"),
    ("len_6_bytes", b"\x80\x80\x80\x80\x80\x00"),
    ("len_0_nonminimal", b"\x80\x00"),
]

ENVELOPE_FIELDS = [
    ("message_id", 1, LEN), ("message_type", 2, VARINT),
    ("from_device_id", 3, LEN), ("to_device_id", 4, LEN),
    ("timestamp_ms", 5, VARINT), ("priority", 6, VARINT),
    ("acknowledged", 7, VARINT), ("to_device_type", 8, VARINT),
    ("timestamp_us", 9, VARINT), ("hello", 16, LEN), ("goodbye", 17, LEN),
    ("device_info", 18, LEN), ("discovery", 19, LEN),
    ("order_forward", 20, LEN), ("order_status", 21, LEN),
    ("order_cancel", 22, LEN), ("cart_sync", 23, LEN), ("heartbeat", 24, LEN),
    ("acknowledgement", 25, LEN), ("error", 26, LEN), ("opaque", 27, LEN),
]

PROTO = [("# Envelope field keys (tag << 3 | wire type) as varints", None)]
PROTO += [("env_" + n, key(f, wt)) for n, f, wt in ENVELOPE_FIELDS]
PROTO.append(("# Keys of payload fields 1..16, varint and length-delimited "
              "(also packed repeated)", None))
for f in range(1, 17):
    PROTO.append(("key_%d_varint" % f, key(f, VARINT)))
    PROTO.append(("key_%d_len" % f, key(f, LEN)))
PROTO += [
    ("# Vendor extension range (EXT-1) and keys protobuf-c handles specially",
     None),
    ("key_1000_varint", key(1000, VARINT)),
    ("key_1000_len", key(1000, LEN)),
    ("key_1999_len", key(1999, LEN)),
    ("key_field0_nonminimal", b"\x82\x00"),
    ("key_group_start", key(15, GROUP)),
    ("key_max_field", key((1 << 29) - 1, VARINT)),
    ("# Values", None),
    ("uuid_len_prefix", b"\x24"),
    ("uuid", b"0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01"),
    ("uuid_upper", b"0B5C1B0E-4D0E-4A8E-9A55-2F6C1F3E7A01"),
    ("uuid_field", b"\x0a\x24" + b"6f1e2d3c-4b5a-4978-8675-0a1b2c3d4e5f"),
    ("varint_neg1", b"\xff" * 9 + b"\x01"),
    ("varint_2p32", b"\x80\x80\x80\x80\x10"),
    ("varint_999", varint(999)),
    ("varint_1000", varint(1000)),
    ("varint_4095", varint(4095)),
    ("varint_65535", varint(65535)),
    ("varint_65536", varint(65536)),
    ("ts_2026", varint(1771755330123)),
]

ENVELOPE_KEYS = ["messageId", "messageType", "fromDeviceId", "toDeviceId",
                 "timestamp", "payload", "priority", "acknowledged"]
PAYLOAD_KEYS = [
    "acknowledgedMessageId", "errorCode", "errorDescription", "errorDetails",
    "deviceName", "deviceType", "port", "orderId", "items", "subtotal", "tax",
    "serviceCharge", "discount", "total", "orderStatus", "destination",
    "tableNumber", "customerName", "specialInstructions",
    "targetDeliveryTime", "productId", "productName", "price", "quantity",
    "modifiers", "variant", "notes", "discountPerItem", "newStatus",
    "statusReason", "estimatedTime", "reason", "refund", "deviceId",
    "ipAddress", "hostname", "metadata"]
MESSAGE_TYPES = [
    "discovery", "acknowledgement", "heartbeat", "orderForward",
    "orderStatus", "orderCancel", "orderSync", "cartSync", "productSync",
    "configSync", "deviceInfo", "serverMode", "broadcastUpdate",
    "deviceCommand", "deviceResponse", "error", "warning",
    "hello", "goodbye", "broadcast"]  # the last three are not legacy types
DEVICE_TYPES = ["mainPOS", "orderingTablet", "secondaryPOS", "kds",
                "customerDisplay"]
ORDER_STATUSES = ["pending", "sent_to_kitchen", "preparing", "ready",
                  "served", "completed", "cancelled"]
DESTINATIONS = ["kitchenDisplay", "allDevices"]  # the others are device names
ERROR_CODES = ["UNSPECIFIED", "MALFORMED_FRAME", "INVALID_MESSAGE",
               "UNKNOWN_MESSAGE_TYPE", "INTERNAL"]

JSON = [("# Legacy envelope keys (LEGACY-7)", None)]
JSON += [("k_" + k, b'"%s":' % k.encode()) for k in ENVELOPE_KEYS]
JSON.append(("# Payload and discovery keys", None))
JSON += [("k_" + k, b'"%s":' % k.encode()) for k in PAYLOAD_KEYS]
JSON.append(("# messageType values, and names the legacy wire lacks", None))
JSON += [("t_" + t, b'"%s"' % t.encode()) for t in MESSAGE_TYPES]
JSON.append(("# Device types, order statuses, destinations, error codes",
             None))
JSON += [("dt_" + d, b'"P2PDeviceType.%s"' % d.encode()) for d in DEVICE_TYPES]
JSON += [("os_" + s, b'"%s"' % s.encode()) for s in ORDER_STATUSES]
JSON += [("dest_" + d, b'"%s"' % d.encode()) for d in DESTINATIONS]
JSON += [("ec_" + c, b'"%s"' % c.encode()) for c in ERROR_CODES]
JSON += [
    ("# Values: timestamps, numbers, escapes, literals, UTF-8", None),
    ("ts23", b'"2026-02-22T10:15:30.123"'),
    ("ts26", b'"2026-02-22T10:15:30.123456"'),
    ("ts_leap", b'"2024-02-29T23:59:59.999"'),
    ("ts_year0", b'"0000-01-01T00:00:00.000"'),
    ("ts_year9999", b'"9999-12-31T23:59:59.999999"'),
    ("uuid_str", b'"0b5c1b0e-4d0e-4a8e-9a55-2f6c1f3e7a01"'),
    ("num_9_0", b"9.0"), ("num_1e-7", b"1e-7"), ("num_1e-9", b"1e-9"),
    ("num_1e-10", b"1e-10"), ("num_0_1", b"0.1"),
    ("num_2p53", b"9007199254740992"), ("num_2p53_plus1", b"9007199254740993"),
    ("num_i64max", b"9223372036854775807"),
    ("num_i64over", b"9223372036854775808"), ("num_1e309", b"1e309"),
    ("num_neg0", b"-0.0"), ("num_1_5e21", b"1.5e+21"),
    ("esc_nul", b"\\u0000"), ("esc_surrogates", b"\\ud83d\\ude00"),
    ("esc_lone", b"\\ud800"), ("esc_e9", b"\\u00e9"),
    ("lit_null", b"null"), ("lit_true", b"true"), ("lit_false", b"false"),
    ("empty_obj", b"{}"), ("empty_arr", b"[]"), ("crlf", b"\r\n"),
    ("nl", b"\n"), ("utf8_2", b"\xc3\xa9"), ("utf8_4", b"\xf0\x9f\x98\x80"),
    ("utf8_overlong", b"\xc0\xaf"), ("utf8_surrogate", b"\xed\xa0\x80"),
    ("deep", b"[" * 16),
]

DISC_KEYS = [("dd_kind", 1, VARINT), ("dd_device_id", 2, LEN),
             ("dd_device_name", 3, LEN), ("dd_device_type", 4, VARINT),
             ("dd_tcp_port", 5, VARINT), ("dd_supported_versions", 6, LEN),
             ("dd_nonce", 7, VARINT), ("dd_hostname", 8, LEN),
             ("dd_ip_address", 9, LEN), ("dd_metadata_json", 10, LEN)]
DISC = [("# DiscoveryDatagram keys", None)]
DISC += [(n, key(f, wt)) for n, f, wt in DISC_KEYS]
DISC += [("dd_versions_packed", b"\x32\x02\x01\x02"),
         ("dd_uuid_field", b"\x12\x24" + b"6f1e2d3c-4b5a-4978-8675-0a1b2c3d4e5f"),
         ("len_1400", varint(1400))]
DISC_JSON = [("# Legacy discovery datagram keys and values", None)]
DISC_JSON += [(n, b) for n, b in JSON if b is not None and n.startswith(
    ("k_device", "k_port", "k_ip", "k_host", "k_meta", "dt_", "num_", "esc_",
     "lit_", "empty", "utf8", "uuid"))]

TARGETS = {
    "fuzz_framer": ("frame streams", [MAGIC, LENGTHS, PROTO]),
    "fuzz_envelope": ("Envelope bodies", [PROTO]),
    "fuzz_legacy": ("legacy NDJSON streams", [JSON]),
    "fuzz_disc": ("discovery datagrams of both wires", [MAGIC, DISC, DISC_JSON]),
    "fuzz_diff": ("v2 bodies and legacy lines", [PROTO, JSON]),
}


def main():
    os.makedirs(os.path.join(HERE, "dict"), exist_ok=True)
    for target, (what, sections) in TARGETS.items():
        path = os.path.join(HERE, "dict", target + ".dict")
        with open(path, "w") as f:
            f.write("# libFuzzer dictionary for %s: %s.\n" % (target, what))
            f.write("# Generated by fuzz/gen_dicts.py: edit that, not this "
                    "file.\n")
            for section in sections:
                for name, value in section:
                    if value is None:
                        f.write("\n" + name + "\n")
                    else:
                        f.write('%s="%s"\n' % (name, esc(value)))


if __name__ == "__main__":
    main()
