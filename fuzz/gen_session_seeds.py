#!/usr/bin/python3
"""Seed corpus for fuzz_session (fuzz/SESSION.md).

Writes one file per scenario into OUTDIR (default fuzz/corpus/fuzz_session)
in the record format of fuzz/session_format.h, with frames, lines and
datagrams built by the conformance codec helpers
(conformance/posp2p_conform/codec.py). Deterministic: fixed ids and
timestamps, so rerunning it gives the same files.

    POSP2P_BUILD_DIR=build/asan fuzz/gen_session_seeds.py [OUTDIR]
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "conformance"))
from posp2p_conform import codec as C  # noqa: E402

# session_format.h
OPEN, HELLO, BYTES, FRAME, LINE, EOF, CLOSE, DGRAM, TICK, ACK, STALL, SEND = range(12)
TO_DEADLINE = 0xFFFF
MAIN = "aaaaaaaa-0000-4000-8000-000000000001"
TS = 1767225600000  # fixed timestamps: reproducible seeds
DTYPE = {"MAIN_POS": 0, "ORDERING_TABLET": 1, "SECONDARY_POS": 2, "KDS": 3,
         "CUSTOMER_DISPLAY": 4}


def cid(n):
    return "cccccccc-0000-4000-8000-0000000000%02x" % n


_ids = [0]


def mid():
    _ids[0] += 1
    return "eeeeeeee-0000-4000-8000-%012x" % _ids[0]


def u16(n):
    return struct.pack("<H", n)


def r_open(slot, ip=50):
    return bytes([OPEN, slot, ip])


def r_hello(slot, client, dtype="ORDERING_TABLET", listens=False):
    return bytes([HELLO, slot, client, DTYPE[dtype] | (0x80 if listens else 0)])


def r_bytes(slot, data):
    return bytes([BYTES, slot]) + u16(len(data)) + data


def r_frame(slot, env):
    body = env if isinstance(env, bytes) else env.SerializeToString()
    return bytes([FRAME, slot]) + u16(len(body)) + body


def r_line(slot, line):
    line = line.rstrip(b"\n")
    return bytes([LINE, slot]) + u16(len(line)) + line


def r_eof(slot):
    return bytes([EOF, slot])


def r_close(slot, reset=False):
    return bytes([CLOSE, slot, 1 if reset else 0])


def r_dgram(ip, data):
    return bytes([DGRAM, ip]) + u16(len(data)) + data


def r_tick(ms):
    return bytes([TICK]) + u16(ms)


def r_ack(slot, k=0):
    return bytes([ACK, slot, k])


def r_stall(slot):
    return bytes([STALL, slot])


def r_send(client, direct=True, status=1, order=0):
    return bytes([SEND, (order << 4) | (status << 1) | (1 if direct else 0), client])


def E(env):
    """Fixed id and timestamp for a codec-built envelope."""
    env.message_id = mid()
    env.timestamp_ms = TS
    return env


def order(src, to=None, to_type=None, order_id="T-1"):
    return E(C.order_forward(src, to=to, to_type=to_type, order_id=order_id))


def status(src, to, seq, st=2, order_id="T-1"):
    env = E(C.order_status(src, to=to, order_id=order_id))
    env.order_status.sequence = seq
    env.order_status.new_status = st
    return env


def legacy_order(src, to=MAIN, order_id="L-1"):
    return C.legacy_raw_line("orderForward", src, to, C.legacy_order_payload(order_id),
                             mid=mid(), ts=C.legacy_ts(TS))


def legacy_msg(mtype, src, to=MAIN, payload=None):
    return C.legacy_line(C.legacy_msg(mtype, src, to, payload or {}, mid=mid(),
                                      ts=C.legacy_ts(TS)))


def scenarios():
    s = {}
    s["handshake"] = r_hello(0, 1) + r_tick(50)
    s["handshake_timeout_open"] = r_open(0) + r_tick(TO_DEADLINE) + r_tick(400)
    s["preface_then_silence"] = r_open(1) + r_bytes(1, C.preface()) + r_tick(500)
    s["bad_preface"] = r_open(0) + r_bytes(0, b"\xffPOSP2Q\x02") + r_tick(10)
    s["preface_v9"] = r_open(0) + r_bytes(0, C.preface(9)) + r_tick(10)
    s["frame_before_hello"] = (r_open(0) + r_bytes(0, C.preface()) +
                               r_frame(0, order(cid(1), MAIN)))
    s["order_to_main"] = r_hello(0, 1) + r_frame(0, order(cid(1), MAIN)) + r_tick(10)
    dup = order(cid(1), MAIN)
    s["order_duplicate"] = (r_hello(0, 1) + r_frame(0, dup) + r_frame(0, dup) +
                            r_tick(100) + r_frame(0, dup))
    s["order_duplicate_reconnect"] = (r_hello(0, 1) + r_frame(0, dup) + r_close(0) +
                                      r_hello(1, 1) + r_frame(1, dup) + r_tick(10))
    s["relay_to_kds_acked"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") +
                               r_frame(0, order(cid(1), cid(2))) + r_ack(1, 0) + r_tick(60) +
                               r_ack(0, 0) + r_tick(100))
    s["relay_to_kds_unacked"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") +
                                 r_frame(0, order(cid(1), cid(2))) +
                                 r_tick(TO_DEADLINE) * 6 + r_tick(300))
    s["relay_unknown_device"] = r_hello(0, 1) + r_frame(0, order(cid(1), cid(9))) + r_tick(10)
    s["relay_offline"] = (r_hello(1, 2, "KDS") + r_close(1) + r_hello(0, 1) +
                          r_frame(0, order(cid(1), cid(2))) + r_tick(10))
    s["broadcast_custody"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") + r_hello(2, 3, "SECONDARY_POS") +
                              r_frame(0, order(cid(1))) + r_ack(1, 0) +
                              r_tick(TO_DEADLINE) * 5 + r_ack(2, 0) + r_tick(500))
    s["by_type"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") + r_hello(2, 3, "KDS") +
                    r_frame(0, order(cid(1), to_type="KDS")) + r_ack(1) + r_ack(2) + r_tick(60))
    s["status_sequence_stale"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") +
                                  r_frame(1, status(cid(2), cid(1), 2)) +
                                  r_frame(1, status(cid(2), cid(1), 1)) +
                                  r_frame(1, status(cid(2), MAIN, 3, 3)) + r_ack(0) + r_tick(60))
    s["cancel_and_opaque"] = (r_hello(0, 1) +
                              r_frame(0, E(C.order_cancel(cid(1), MAIN))) +
                              r_frame(0, E(C.opaque(cid(1), "PRODUCT_SYNC"))) +
                              r_frame(0, E(C.opaque(cid(1), "CART_SYNC", to=MAIN,
                                                    json_text='{"items":[]}'))) + r_tick(5))
    s["heartbeats_then_timeout"] = (r_hello(0, 1) + r_frame(0, E(C.heartbeat(cid(1), MAIN, 1))) +
                                    r_tick(90) + r_frame(0, E(C.heartbeat(cid(1), MAIN, 2))) +
                                    r_tick(TO_DEADLINE) * 8 + r_tick(1000))
    s["goodbye"] = r_hello(0, 1) + r_frame(0, E(C.goodbye(cid(1), MAIN))) + r_tick(300)
    s["error_frame"] = (r_hello(0, 1) +
                        r_frame(0, E(C.error(cid(1), MAIN, "INTERNAL", ref=MAIN))) + r_tick(10))
    s["eof_after_order"] = r_hello(0, 1) + r_frame(0, order(cid(1), MAIN)) + r_eof(0) + r_tick(300)
    s["reset"] = r_hello(0, 1) + r_close(0, True) + r_tick(10)
    s["half_frame_eof"] = (r_hello(0, 1) +
                           r_bytes(0, C.frame(order(cid(1), MAIN))[:20]) + r_eof(0) + r_tick(300))
    s["split_frame"] = (lambda f: r_hello(0, 1) + r_bytes(0, f[:3]) + r_bytes(0, f[3:17]) +
                        r_bytes(0, f[17:]))(C.frame(order(cid(1), MAIN)))
    s["oversize_length"] = r_hello(0, 1) + r_bytes(0, C.varint(5000) + b"\x0a")
    s["varint_lie"] = r_hello(0, 1) + r_bytes(0, b"\xff\xff\xff\xff\xff\x01")
    s["hello_twice"] = r_hello(0, 1) + r_frame(0, E(C.hello(cid(1))))
    s["hello_main_id"] = (r_open(0) + r_bytes(0, C.preface()) +
                          r_frame(0, E(C.hello(MAIN))) + r_tick(10))
    s["hello_v1_only"] = (r_open(0) + r_bytes(0, C.preface()) +
                          r_frame(0, E(C.hello(cid(4), versions=(1,)))) + r_tick(10))
    s["same_client_two_conns"] = r_hello(0, 1) + r_hello(1, 1) + r_tick(10)
    s["too_many_connections"] = b"".join(r_hello(i, i + 1, "KDS") for i in range(6)) + r_tick(10)
    s["app_send_acked"] = r_hello(0, 1) + r_send(1) + r_ack(0, 0) + r_tick(100)
    s["app_send_unacked"] = (r_hello(0, 1) + r_send(1) + r_tick(TO_DEADLINE) * 6 + r_tick(50))
    s["app_broadcast"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") + r_send(0, direct=False) +
                          r_ack(0) + r_tick(TO_DEADLINE) * 4)
    s["app_send_offline"] = r_send(7) + r_hello(0, 7) + r_close(0) + r_send(7)
    s["stall_backpressure"] = (r_hello(0, 1) + r_stall(0) + r_send(1, order=1) * 120 +
                               r_stall(0) + r_send(1) + r_tick(10))
    s["stall_then_timeout"] = r_hello(0, 1) + r_stall(0) + r_send(1) * 10 + r_tick(TO_DEADLINE) * 8
    s["legacy_order"] = r_open(0, 60) + r_line(0, legacy_order(cid(5))) + r_tick(10)
    lo = legacy_order(cid(5))
    s["legacy_duplicate"] = r_open(0, 60) + r_line(0, lo) + r_line(0, lo) + r_eof(0) + r_tick(300)
    s["legacy_device_info"] = (r_open(0, 61) +
                               r_line(0, legacy_msg("deviceInfo", cid(6), None,
                                                    {"deviceName": "old", "deviceType":
                                                     "P2PDeviceType.kds", "port": 8766})) +
                               r_line(0, legacy_order(cid(6))) + r_close(0) +
                               r_hello(1, 1) + r_frame(1, order(cid(1), cid(6))) + r_tick(100))
    s["legacy_bad_json"] = r_open(0, 62) + r_line(0, b'{"messageId":') + r_tick(10)
    s["legacy_status"] = (r_open(0, 63) +
                          r_line(0, legacy_msg("orderStatus", cid(7), MAIN,
                                               {"orderId": "L-1", "newStatus": "preparing"})))
    s["legacy_then_v2_route"] = (r_open(0, 64) + r_line(0, legacy_order(cid(8))) +
                                 r_hello(1, 2, "KDS") +
                                 r_frame(1, status(cid(2), cid(8), 1)) + r_tick(100))
    s["disc_request_v2"] = r_dgram(20, C.disc_bytes(C.disc("REQUEST", cid(3), nonce=7)))
    s["disc_request_rate"] = (r_dgram(20, C.disc_bytes(C.disc("REQUEST", cid(3), nonce=7))) * 3 +
                              r_tick(150) + r_dgram(20, C.disc_bytes(C.disc("REQUEST", cid(3), nonce=8))))
    s["disc_announce_then_connect"] = (r_dgram(21, C.disc_bytes(C.disc("ANNOUNCE", cid(2), dtype="KDS",
                                                                       tcp_port=8766, nonce=1))) +
                                       r_hello(0, 2, "KDS", True) + r_tick(TO_DEADLINE))
    s["disc_legacy"] = r_dgram(22, C.legacy_disc_request())
    s["disc_own"] = r_dgram(1, C.disc_bytes(C.disc("ANNOUNCE", MAIN, dtype="MAIN_POS", nonce=1)))
    s["disc_junk"] = r_dgram(23, b"\xffP2D\x02\x0a\xff") + r_dgram(23, b"{junk")
    s["clock_jumps"] = (r_hello(0, 1) + r_hello(1, 2, "KDS") + r_frame(0, order(cid(1), cid(2))) +
                        r_tick(60000) + r_tick(TO_DEADLINE) + r_tick(0))
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "fuzz_session")
    os.makedirs(out, exist_ok=True)
    seeds = scenarios()
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    print("gen_session_seeds: %d seeds in %s" % (len(seeds), out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
