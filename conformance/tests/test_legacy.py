"""The legacy JSON profile (SPEC 16): transport, envelope and payload
encoding, decoding (observed through the main POS, which converts between
the wires), rejections, discovery, round trip."""
import json
import os
import socket
import time

import pytest

from helpers import *  # noqa: F401,F403
from posp2p_conform.vdev import LegacyConn, V2Main

VECTORS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "proto",
                                        "vectors"))
ENV_KEYS = ["messageId", "messageType", "fromDeviceId", "toDeviceId", "timestamp", "payload",
            "priority", "acknowledged"]
PAYLOAD_KEYS = {
    "acknowledgement": ["acknowledgedMessageId"],
    "heartbeat": [],
    "deviceInfo": ["deviceName", "deviceType", "port"],
    "discovery": ["deviceName", "deviceType", "port"],
    "orderForward": ["orderId", "items", "subtotal", "tax", "serviceCharge", "discount",
                     "total", "orderStatus", "destination", "tableNumber", "customerName",
                     "specialInstructions", "targetDeliveryTime"],
    "orderStatus": ["orderId", "newStatus", "statusReason", "estimatedTime"],
    "orderCancel": ["orderId", "reason", "refund"],
}
ITEM_KEYS = ["productId", "productName", "price", "quantity", "modifiers", "variant", "notes",
             "discountPerItem"]


def legacy_peer(dut, net, name="L", port=0):
    """A legacy device that has introduced itself with deviceInfo."""
    L = net.legacy(dut, name=name)
    m = legacy_msg("deviceInfo", L.id, dut.device_id,
                   {"deviceName": name, "deviceType": "P2PDeviceType.kds", "port": port}, 5)
    L.send(m)
    L.expect(lacks(m["messageId"]), 1.5, what="acknowledgement of deviceInfo")
    return L


def line_for(L, mid, timeout=1.5):
    """The raw line (bytes) the device wrote to L for message mid."""
    it = L.expect_raw(lambda i: i[1] is not None and i[1].get("messageId") == mid, timeout,
                      what="line for %s" % mid[:8])
    return it[2], it[1]


def compact(raw: bytes) -> bool:
    """No whitespace outside strings."""
    ins = esc = False
    for ch in raw.decode("utf-8"):
        if ins:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                ins = False
        elif ch == '"':
            ins = True
        elif ch in " \t\r\n":
            return False
    return True


def _v2_to_legacy(dut, net, envs_fn):
    """A (v2) sends L the envelopes from envs_fn(a, L); returns A, L and
    the raw lines L received for them."""
    a = net.client(dut, name="A")
    L = legacy_peer(dut, net)
    envs = envs_fn(a, L)
    out = []
    for e in envs:
        if isinstance(e, bytes):
            a.send_raw(e)
            n, used = read_varint(e)
            mid = parse_envelope(e[used:]).message_id
        else:
            a.send(e)
            mid = e.message_id
        out.append(line_for(L, mid))
    return a, L, out


# ---- encoding (v2 -> legacy) ------------------------------------------------------------

def _typical(a, L):
    of = order_forward(a.id, to=L.id)
    st = order_status(a.id, to=L.id, order_id="T-7", status=3, sequence=4)
    st.order_status.status_reason = "hot"
    cn = order_cancel(a.id, to=L.id, order_id="T-7", reason="no")
    er = error(a.id, L.id, "INVALID_MESSAGE", "bad", ref=new_id(), requirement="MSG-24")
    er2 = error(a.id, L.id, "QUEUE_FULL", "busy")
    er2.error.details = "more"
    dv = device_info(a.id, to=L.id, dtype="CUSTOMER_DISPLAY", port=1234)
    op = opaque(a.id, "CONFIG_SYNC", to=L.id, json_text='{"z":1,"a":[true,null]}')
    op2 = opaque(a.id, "WARNING", to=L.id, json_text=None)
    cs = envelope("CART_SYNC", a.id, to=L.id)
    cs.cart_sync.cart_id = "c-1"
    it = cs.cart_sync.items.add()
    it.product_id, it.product_name, it.price_minor, it.quantity = "p", "P", 250, 2
    cs.cart_sync.total_minor, cs.cart_sync.currency_exponent = 500, 2
    return [of, st, cn, er, er2, dv, op, op2, cs]


@req("LEGACY-1", "LEGACY-16", "LEGACY-20", "LEGACY-24", "LEGACY-26", "LEGACY-32")
@needs(role="main", wire="legacy", cap="relay")
def test_encoder_shape(dut, net):
    """Lines the device writes: one compact UTF-8 JSON object and a single
    LF; the eight envelope keys, all present, in order; each payload's keys
    exactly, in order; deviceType spelled "P2PDeviceType.<role>"; never
    HELLO or GOODBYE."""
    a, L, lines = _v2_to_legacy(dut, net, _typical)
    for raw, obj in L.lines() and [(i[2], i[1]) for i in L.lines()]:
        check(obj is not None, "LEGACY-1", "a JSON object per line", raw[:80])
        check(b"\r" not in raw and compact(raw), "LEGACY-1", "compact JSON, LF only", raw[:120])
        check(obj.get("messageType") not in ("hello", "goodbye", "HELLO", "GOODBYE"),
              "LEGACY-16", "no HELLO/GOODBYE on the legacy wire", obj.get("messageType"))
        check(list(obj.keys()) == ENV_KEYS, "LEGACY-20", "keys %s" % ENV_KEYS, list(obj.keys()))
        t = obj["messageType"]
        if t in PAYLOAD_KEYS:
            want = PAYLOAD_KEYS[t]
            check(list(obj["payload"].keys()) == want, "LEGACY-26", "%s payload keys %s" % (
                t, want), list(obj["payload"].keys()))
            if t == "orderForward":
                for itm in obj["payload"]["items"]:
                    check(list(itm.keys()) == ITEM_KEYS, "LEGACY-26", "item keys", list(itm))
    of = lines[0][1]["payload"]
    check(of["tax"] is None and of["customerName"] is None and of["tableNumber"] is None,
          "LEGACY-24", "absent values written as null", of)
    dv = lines[5][1]["payload"]
    check(dv["deviceType"] == "P2PDeviceType.customerDisplay", "LEGACY-32",
          '"P2PDeviceType.customerDisplay"', dv["deviceType"])


@req("LEGACY-27", "LEGACY-28")
@needs(role="main", wire="legacy", cap="relay")
def test_encoder_errors(dut, net):
    def envs(a, L):
        e1 = error(a.id, L.id, "INVALID_MESSAGE", "bad")
        e2 = error(a.id, L.id, "QUEUE_FULL", "busy")
        e2.error.details = "more"
        e3 = error(a.id, L.id, "UNSPECIFIED", "legacy")
        e3.error.legacy_code = "PRINTER_JAM"
        return [e1, e2, e3]
    a, L, lines = _v2_to_legacy(dut, net, envs)
    p = [o["payload"] for _, o in lines]
    check(list(p[0].keys()) == ["errorCode", "errorDescription"], "LEGACY-27",
          "errorDetails left out when absent", list(p[0].keys()))
    check(p[1].get("errorDetails") == "more", "LEGACY-27", "errorDetails when present", p[1])
    check(p[0]["errorCode"] == "INVALID_MESSAGE" and p[1]["errorCode"] == "QUEUE_FULL",
          "LEGACY-28", "code names without prefix", [x["errorCode"] for x in p])
    check(p[2]["errorCode"] == "PRINTER_JAM", "LEGACY-28", "legacy_code for UNSPECIFIED",
          p[2]["errorCode"])


@req("LEGACY-30", "LEGACY-31", "LEGACY-29")
@needs(role="main", wire="legacy", cap="relay")
def test_encoder_free_form(dut, net):
    def envs(a, L):
        o1 = opaque(a.id, "CONFIG_SYNC", to=L.id, json_text='{"z":1,"a":[true,null,1.50]}')
        o2 = opaque(a.id, "WARNING", to=L.id, json_text=None)
        c1 = envelope("CART_SYNC", a.id, to=L.id)
        c1.cart_sync.legacy_json = '{"anything":[1,2],"x":"y"}'
        c2 = envelope("CART_SYNC", a.id, to=L.id)
        c2.cart_sync.cart_id = "c-1"
        it = c2.cart_sync.items.add()
        it.product_id, it.product_name, it.price_minor, it.quantity = "p", "P", 250, 2
        c2.cart_sync.total_minor, c2.cart_sync.currency_exponent = 500, 2
        return [o1, o2, c1, c2]
    a, L, lines = _v2_to_legacy(dut, net, envs)
    cs = Soft()
    raw = [r for r, _ in lines]
    pl = [r[r.find(b'"payload"'):][:200] for r in raw]
    cs.check(b'"payload":{"anything":[1,2],"x":"y"}' in raw[2], "LEGACY-31",
          "legacy_json written verbatim", pl[2])
    p = lines[3][1]["payload"]
    cs.check(list(p.keys()) == ["cartId", "items", "total"] and p["total"] == 5.0 and
          list(p["items"][0].keys()) == ["productId", "productName", "price", "quantity",
                                         "modifiers"], "LEGACY-31", "typed cart shape", p)
    hbs = [o for _, o, _r in [(i[0], i[1], i[2]) for i in L.lines()]
           if o and o.get("messageType") == "heartbeat"]
    for h in hbs:
        check(h["payload"] == {}, "LEGACY-29", "heartbeat payload {}", h["payload"])
    cs.check(b'"payload":{"z":1,"a":[true,null,1.5]}' in raw[0], "LEGACY-30",
          "OpaquePayload.json written compact, numbers as Dart doubles", pl[0])
    cs.check(b'"payload":{}' in raw[1], "LEGACY-30", "{} without a payload", pl[1])
    cs.done()


@req("LEGACY-37", "LEGACY-25", "LEGACY-41", "MONEY-1", "EXT-6", "LEGACY-24")
@needs(role="main", wire="legacy", cap="relay")
def test_encoder_numbers_strings_times(dut, net):
    def envs(a, L):
        e = order_forward(a.id, to=L.id, exponent=2, amount=900)
        e.order_forward.ClearField("items")
        for minor in (900, 1050, 0, -450):
            it = e.order_forward.items.add()
            it.product_id, it.price_minor, it.quantity = "p%d" % minor, minor, 1
        e.order_forward.subtotal_minor = 10 ** 15
        e.order_forward.total_minor = 1
        e.order_forward.customer_name = 'a/b\x01\x08\t\n\x0c\r"\\\u00e9\u65e5\x1f'
        e.timestamp_ms, e.timestamp_us = 1771755330123, 0
        e2 = order_forward(a.id, to=L.id, exponent=7, amount=1)
        e2.order_forward.items[0].price_minor = 15
        e2.timestamp_ms, e2.timestamp_us = 1771755330123, 456
        e3 = order_forward(a.id, to=L.id, exponent=3, amount=125)
        body = add_unknown_field(e3.SerializeToString(), 1500, b"x-acme")
        return [e, e2, frame_raw(body)]
    a, L, lines = _v2_to_legacy(dut, net, envs)
    r0, r1, r2 = (r.decode("utf-8") for r, _ in lines)
    for text in ('"price":9.0', '"price":10.5', '"price":0.0', '"price":-4.5',
                 '"subtotal":10000000000000.0', '"total":0.01'):
        check(text in r0, "LEGACY-37", "amount written as %s" % text, r0[:400])
    check('"price":0.0000015' in r1 or '"price":0.0000015,' in r1, "LEGACY-37",
          "15e-7 written 0.0000015", r1[:300])
    check('"total":1e-7' in r1, "LEGACY-37", "1e-7", r1[:300])
    check('"customerName":"a/b\\u0001\\b\\t\\n\\f\\r\\"\\\\\u00e9\u65e5\\u001f"' in r0,
          "LEGACY-25", "Dart jsonEncode escapes, raw UTF-8, '/' unescaped", r0[:600])
    check('"timestamp":"2026-02-22T10:15:30.123"' in r0, "LEGACY-41", "23-character form", r0)
    check('"timestamp":"2026-02-22T10:15:30.123456"' in r1, "LEGACY-41", "26-character form",
          r1)
    check('"price":0.125' in r2, "MONEY-1", "125 with exponent 3 is 0.125", r2[:300])
    check(b"x-acme" not in lines[2][0] and list(lines[2][1].keys()) == ENV_KEYS, "EXT-6",
          "extension fields dropped", lines[2][0][:200])


@req("LEGACY-38")
@needs(role="main", wire="legacy", cap="relay")
def test_encoder_refuses_amounts_beyond_2_53(dut, net):
    a = net.client(dut, name="A")
    L = legacy_peer(dut, net)
    e = order_forward(a.id, to=L.id, exponent=2, amount=2 ** 60)
    m = L.mark()
    a.send(e)
    relay_barrier(a, L)   # e, if encoded for L, would arrive before this
    got = [o for _, o, _r in [(i[0], i[1], i[2]) for i in L.lines()[m:]]
           if o and o.get("messageId") == e.message_id]
    check(not got, "LEGACY-38", "an amount beyond 2^53 minor units is not encoded", got)


# ---- decoding (legacy -> v2) -----------------------------------------------------------

def _legacy_to_v2(dut, net, make_lines):
    """L sends the lines from make_lines(L, b_id) to the v2 client B
    (directed); returns (L, B, [(line, received Envelope)])."""
    b = net.client(dut, name="B")
    L = legacy_peer(dut, net)
    out = []
    for raw, mid in make_lines(L, b.id):
        L.send_raw(raw)
        try:
            env = b.expect(has_id(mid), 1.5)
        except Timeout as ex:
            env = None
        out.append((raw, env))
    return L, b, out


def _order_line(L, to, mid=None, payload=None, ts=None):
    mid = mid or new_id()
    return legacy_raw_line("orderForward", L.id, to, payload or legacy_order_payload(),
                           priority=9, mid=mid, ts=ts), mid


@req("LEGACY-36", "LEGACY-40", "LEGACY-34", "LEGACY-35", "MONEY-6")
@needs(role="main", wire="legacy", cap="relay")
def test_decoder_amounts_enums_times(dut, net):
    def lines(L, to):
        out = []
        p1 = legacy_order_payload(price="4.125")
        out.append(_order_line(L, to, payload=p1, ts="2026-02-22T10:15:30.123456"))
        p2 = legacy_order_payload().replace('"pending"', '"weird"').replace(
            '"kitchenDisplay"', '"nowhere"')
        out.append(_order_line(L, to, payload=p2, ts="2026-02-22T10:15:30.123"))
        p3 = legacy_order_payload(price="1e-7")
        out.append(_order_line(L, to, payload=p3))
        return out
    L, b, got = _legacy_to_v2(dut, net, lines)
    for raw, env in got:
        check(env is not None, "LEGACY-36", "the legacy order relayed to B", raw[:100])
    o1 = got[0][1].order_forward
    check(o1.currency_exponent == 3 and o1.items[0].price_minor == 4125 and
          o1.subtotal_minor == 9000 and o1.tax_minor == 810 and o1.total_minor == 9810,
          "LEGACY-36", "exponent 3: 4125, 9000, 810, 9810",
          "e=%d %d %d %d %d" % (o1.currency_exponent, o1.items[0].price_minor,
                                o1.subtotal_minor, o1.tax_minor, o1.total_minor))
    check(not o1.HasField("service_charge_minor"), "LEGACY-36", "null amount absent", o1)
    e1 = got[0][1]
    check((e1.timestamp_ms, e1.timestamp_us) == (1771755330123, 456), "LEGACY-40",
          "1771755330123 ms + 456 us (UTC offset 0)", (e1.timestamp_ms, e1.timestamp_us))
    e2 = got[1][1]
    check((e2.timestamp_ms, e2.timestamp_us) == (1771755330123, 0), "LEGACY-40",
          "23-char form: us 0", (e2.timestamp_ms, e2.timestamp_us))
    check(e2.order_forward.order_status == 0, "LEGACY-34", "unknown status -> PENDING",
          e2.order_forward.order_status)
    check(e2.order_forward.destination == 0, "LEGACY-35", "unknown destination -> MAIN_POS",
          e2.order_forward.destination)
    o3 = got[2][1].order_forward
    check(o3.currency_exponent == 7 and o3.items[0].price_minor == 1 and
          o3.subtotal_minor == 90000000, "LEGACY-36", "1e-7 -> exponent 7, 1 minor unit",
          "e=%d %d" % (o3.currency_exponent, o3.items[0].price_minor))


@req("LEGACY-21", "LEGACY-23", "LEGACY-27", "LEGACY-28", "LEGACY-30", "LEGACY-31",
     "LEGACY-32", "LEGACY-33", "LEGACY-6", "LEGACY-12", "LEGACY-7", "LEGACY-2")
@needs(role="main", wire="legacy", cap="relay")
def test_decoder_shapes(dut, net):
    """Key order and unknown keys, missing optional keys, error codes,
    free-form payloads, device types, unknown message types, CR LF and
    empty lines, all seen through the conversion to v2."""
    ts = legacy_ts()

    def lines(L, to):
        class _Out(list):
            def append(self, text_and_mid, m=None):   # (bytes, mid) pairs
                list.append(self, (text_and_mid, m) if m is not None else text_and_mid)
        out = _Out()
        m = new_id()
        out.append(('{"payload":{"reason":"r","refund":true,"orderId":"T-1"},"x-extra":5,'
                    '"timestamp":"%s","toDeviceId":"%s","fromDeviceId":"%s",'
                    '"messageType":"orderCancel","messageId":"%s"}\n'
                    % (ts, to, L.id, m)).encode(), m)
        m = new_id()
        out.append(('{"messageId":"%s","messageType":"error","fromDeviceId":"%s",'
                    '"toDeviceId":"%s","timestamp":"%s","payload":{"errorCode":'
                    '"MALFORMED_FRAME","errorDescription":"d","errorDetails":null}}\n'
                    % (m, L.id, to, ts)).encode(), m)
        m = new_id()
        out.append(('{"messageId":"%s","messageType":"error","fromDeviceId":"%s",'
                    '"toDeviceId":"%s","timestamp":"%s","payload":{"errorCode":'
                    '"PRINTER_JAM","errorDescription":"d"}}\n' % (m, L.id, to, ts)).encode(), m)
        m = new_id()
        out.append(('{"messageId":"%s","messageType":"productSync","fromDeviceId":"%s",'
                    '"toDeviceId":"%s","timestamp":"%s","payload":{ "b" : [1, 2.50, "x y"],'
                    ' "a":{} },"priority":5,"acknowledged":null}\r\n\n\n'
                    % (m, L.id, to, ts)).encode(), m)
        m = new_id()
        out.append(('{"messageId":"%s","messageType":"cartSync","fromDeviceId":"%s",'
                    '"toDeviceId":"%s","timestamp":"%s","payload":{"cartId":"c","items":[]}}\n'
                    % (m, L.id, to, ts)).encode(), m)
        for dt in ("P2PDeviceType.kds", "kds", "P2PDeviceType.KDS"):
            m = new_id()
            out.append(('{"messageId":"%s","messageType":"deviceInfo","fromDeviceId":"%s",'
                        '"toDeviceId":"%s","timestamp":"%s","payload":{"deviceName":"n",'
                        '"deviceType":"%s","port":1}}\n' % (m, L.id, to, ts, dt)).encode(), m)
        m = new_id()
        out.append(('{"messageId":"%s","messageType":"fooBar","fromDeviceId":"%s",'
                    '"toDeviceId":"%s","timestamp":"%s","payload":{"q":1}}\n'
                    % (m, L.id, to, ts)).encode(), m)
        return out
    L, b, got = _legacy_to_v2(dut, net, lines)
    names = ["key-order", "error-known", "error-free", "opaque", "cart", "type-kds",
             "type-bare", "type-case", "unknown-type"]
    reqs = ["LEGACY-21", "LEGACY-28", "LEGACY-28", "LEGACY-30", "LEGACY-31", "LEGACY-32",
            "LEGACY-33", "LEGACY-33", "LEGACY-6"]
    for (raw, env), n, r in zip(got, names, reqs):
        check(env is not None, r, "line %s accepted and relayed" % n, raw[:120])
    cs = Soft()
    e = got[0][1]
    cs.check(e.order_cancel.order_id == "T-1" and e.order_cancel.refund and
          not e.HasField("priority") and not e.HasField("acknowledged"), "LEGACY-23",
          "missing priority/acknowledged absent, keys in any order", str(e))
    cs.check(got[1][1].error.code == EC["MALFORMED_FRAME"] and
          not got[1][1].error.HasField("details"), "LEGACY-27",
          "errorDetails null -> absent; code mapped", str(got[1][1].error))
    cs.check(got[2][1].error.code == 0 and got[2][1].error.legacy_code == "PRINTER_JAM",
          "LEGACY-28", "free errorCode -> UNSPECIFIED + legacy_code", str(got[2][1].error))
    cs.check(got[4][1].cart_sync.legacy_json == '{"cartId":"c","items":[]}', "LEGACY-31",
          "cartSync kept whole in legacy_json", got[4][1].cart_sync.legacy_json)
    cs.check(got[5][1].device_info.device_type == DT["KDS"], "LEGACY-32",
          "P2PDeviceType.kds -> KDS", got[5][1].device_info.device_type)
    cs.check(got[6][1].device_info.device_type == DT["SECONDARY_POS"] and
          got[7][1].device_info.device_type == DT["SECONDARY_POS"], "LEGACY-33",
          "other spellings -> SECONDARY_POS",
          (got[6][1].device_info.device_type, got[7][1].device_info.device_type))
    u = got[8][1]
    cs.check(u.message_type == MT["ERROR"] and u.error.code == EC["UNKNOWN_MESSAGE_TYPE"] and
          u.error.description == "fooBar", "LEGACY-6",
          "ERROR UNKNOWN_MESSAGE_TYPE, description 'fooBar'", describe(u))
    for raw, env in got:
        mid = env.message_id
        try:
            L.expect(lacks(mid), 1.5)
        except Timeout as ex:
            fail("LEGACY-17", "every valid line acknowledged", str(ex))
    cs.check(not L.closed, "LEGACY-7", "CR LF accepted", "closed")
    cs.check(not L.closed, "LEGACY-2", "empty lines ignored", "closed")
    cs.check(got[3][1].opaque.json == '{"b":[1,2.5,"x y"],"a":{}}', "LEGACY-30",
          "compact, key order kept, numbers as Dart doubles", got[3][1].opaque.json)
    cs.done()


REJECT = {
    "depth-33": ("LEGACY-4", lambda L: _nest(L, 32)),
    "bad-utf8": ("LEGACY-5", lambda L: _msg_line(L).replace(b'"priority":2', b'"priority":2,'
                                                           b'"x":"\xc3\x28"')),
    "nul-byte": ("LEGACY-5", lambda L: _msg_line(L).replace(b'"priority":2', b'"x":"a\x00",'
                                                           b'"priority":2')),
    "escaped-nul": ("LEGACY-5", lambda L: _msg_line(L).replace(b'"priority":2',
                                                              b'"x":"a\\u0000",'
                                                              b'"priority":2')),
    "two-objects": ("LEGACY-8", lambda L: _msg_line(L)[:-1] + b'{}\n'),
    "array": ("LEGACY-8", lambda L: b'[' + _msg_line(L)[:-1] + b']\n'),
    "duplicate-key": ("LEGACY-8", lambda L: _msg_line(L).replace(b'"priority":2',
                                                                b'"priority":2,"priority":3')),
    "trailing-garbage": ("LEGACY-8", lambda L: _msg_line(L)[:-1] + b' x\n'),
    "missing-id": ("LEGACY-22", lambda L: _msg_line(L, drop="messageId")),
    "missing-type": ("LEGACY-22", lambda L: _msg_line(L, drop="messageType")),
    "missing-from": ("LEGACY-22", lambda L: _msg_line(L, drop="fromDeviceId")),
    "missing-timestamp": ("LEGACY-22", lambda L: _msg_line(L, drop="timestamp")),
    "priority-11": ("LEGACY-22", lambda L: _msg_line(L).replace(b'"priority":2',
                                                               b'"priority":11')),
    "priority-string": ("LEGACY-22", lambda L: _msg_line(L).replace(b'"priority":2',
                                                                   b'"priority":"2"')),
    "bad-uuid": ("LEGACY-22", lambda L: _msg_line(L, mid="1234")),
    "payload-array": ("LEGACY-22", lambda L: _msg_line(L).replace(b'"payload":{}',
                                                                 b'"payload":[]')),
    "10-decimals": ("LEGACY-38", lambda L: legacy_raw_line(
        "orderForward", L.id, None, legacy_order_payload(price="0.1234567891"))),
    "beyond-2^53": ("LEGACY-38", lambda L: legacy_raw_line(
        "orderForward", L.id, None, legacy_order_payload(price="90071992547409.93"))),
    "zone-Z": ("LEGACY-39", lambda L: _msg_line(L, ts="2026-02-22T10:15:30.123Z")),
    "feb-30": ("LEGACY-39", lambda L: _msg_line(L, ts="2026-02-30T10:15:30.123")),
    "no-millis": ("LEGACY-39", lambda L: _msg_line(L, ts="2026-02-22T10:15:30")),
    "hour-24": ("LEGACY-39", lambda L: _msg_line(L, ts="2026-02-22T24:15:30.123")),
}


def _msg_line(L, drop=None, mid=None, ts=None):
    m = legacy_msg("heartbeat", L.id, None, {}, 2, mid=mid, ts=ts)
    if drop:
        del m[drop]
    return legacy_line(m)


def _nest(L, depth):
    inner = "1"
    for _ in range(depth):
        inner = "[" + inner + "]"
    return legacy_raw_line("productSync", L.id, None, '{"a":%s}' % inner, priority=5)


@req("LEGACY-9", "LEGACY-10")
@needs(role="main", wire="legacy")
@pytest.mark.parametrize("case", list(REJECT))
def test_rejected_lines(dut, net, case):
    """A rejected line is neither delivered nor acknowledged, the
    connection stays open (LEGACY-9), and the device answers with a legacy
    error naming MALFORMED_FRAME or INVALID_MESSAGE (LEGACY-10, SHOULD)."""
    rule, make = REJECT[case]
    L = legacy_peer(dut, net)
    raw = make(L)
    try:
        mid = json.loads(raw.decode("utf-8", "replace").split("\n")[0]).get("messageId")
    except Exception:  # noqa: BLE001
        mid = None
    m = L.mark()
    L.send_raw(raw)
    # The next valid line is also the barrier: the device handles lines in
    # order, so an acknowledgement (or error) for the rejected line comes
    # before the heartbeat's acknowledgement.
    hb = legacy_msg("heartbeat", L.id, dut.device_id, {}, 2)
    L.send(hb)
    try:
        L.expect(lacks(hb["messageId"]), 1.5, since=m)
        broken = None
    except Timeout as ex:
        broken = str(ex)
    acked = [o for _, o, _r in [(i[0], i[1], i[2]) for i in L.lines()[m:]]
             if o and o.get("messageType") == "acknowledgement" and mid and
             (o.get("payload") or {}).get("acknowledgedMessageId") == mid]
    check(not acked, rule, "the line rejected (not acknowledged)", acked)
    if broken is not None:
        fail("LEGACY-9", "connection kept open and working", broken)
    errs = [o for _, o, _r in [(i[0], i[1], i[2]) for i in L.lines()[m:]]
            if o and o.get("messageType") == "error"]
    want = "INVALID_MESSAGE" if rule in ("LEGACY-22", "LEGACY-38", "LEGACY-39") \
        else "MALFORMED_FRAME"
    check(errs and errs[0]["payload"].get("errorCode") == want, "LEGACY-10",
          "a legacy error %s" % want, errs[:1])


REJECT_REQS = sorted({r for r, _ in REJECT.values()})
test_rejected_lines = pytest.mark.req(*REJECT_REQS)(test_rejected_lines)


@req("LEGACY-4")
@needs(role="main", wire="legacy")
def test_depth_32_accepted(dut, net):
    L = legacy_peer(dut, net)
    raw = _nest(L, 30)     # envelope 1 + payload 2 + "a" array levels 30 = 32... plus 1
    mid = json.loads(raw)["messageId"]
    L.send_raw(raw)
    try:
        L.expect(lacks(mid), 1.5)
    except Timeout as ex:
        fail("LEGACY-4", "nesting of 32 levels accepted", str(ex))


@req("LEGACY-3")
@needs(role="main", wire="legacy")
def test_line_too_long(dut, net):
    L = legacy_peer(dut, net)
    limit = dut.t["max_frame"]
    chunk = b"x" * 65536
    L.send_raw(b'{"messageId":"')
    sent = 14
    deadline = time.monotonic() + 20
    while sent <= limit + 1 and not L.closed and time.monotonic() < deadline:
        L.send_raw(chunk)
        sent += len(chunk)
    check(L.wait_closed(3.0), "LEGACY-3", "closed once a line exceeds %d bytes" % limit,
          "still open after %d bytes" % sent)
    still_answers(dut, net)


@req("LEGACY-11", "LEGACY-17", "LEGACY-12")
@needs(role="main", wire="legacy", cap="relay")
def test_one_message_connections(dut, net):
    """A legacy sender opening one connection per message (connect, write,
    close its side) is served: its orders reach B and are acknowledged to
    it (on that connection, which is still open for reading); a long-lived
    connection carries many messages."""
    b = net.client(dut, name="B")
    L = legacy_peer(dut, net)
    for i in range(20):
        raw, mid = _order_line(L, b.id)
        L.send_raw(raw)
        b.expect(has_id(mid), 1.5)
        L.expect(lacks(mid), 1.5)
    check(True, "LEGACY-11", "a long-lived connection carries many messages")
    e = order_forward(b.id, to=L.id)
    b.send(e)
    try:
        line_for(L, e.message_id)
    except Timeout as ex:
        fail("LEGACY-12", "a message for the legacy device's id sent on its connection",
             str(ex))
    check(True, "LEGACY-12", "identity taken from fromDeviceId")
    lid = new_id()
    src = suite_ip()
    # The sender's known address is its source IP and port 8766 (no
    # deviceInfo yet, LEGACY-14): the ack may come there if the device
    # does not write it on the half-closed connection.
    home = net.add(V2Main(name="legacy-8766", host=src, port=8766))
    for i in range(3):
        one = net.add(LegacyConn(dut, name="oneshot%d" % i, device_id=lid,
                                 src_ip=src)).connect()
        raw, mid = _order_line(one, b.id)
        one.send_raw(raw)
        one.shutdown_write()
        try:
            b.expect(has_id(mid), 1.5)
        except Timeout as ex:
            fail("LEGACY-11", "the order of a one-message connection relayed", str(ex))
        check(True, "LEGACY-11", "one-message connections served")
        try:
            one.expect(lacks(mid), 1.0)
            got = True
        except Timeout:
            got = _ack_on_new_connection(home, mid, 1.0)
        check(got, "LEGACY-17", "the acknowledgement on the one-message connection or on a "
              "new connection to %s:8766" % src, "neither")
        one.close()


@req("LEGACY-17")
@needs(role="main", wire="legacy")
@pytest.mark.parametrize("mtype", ["heartbeat", "error", "discovery", "orderStatus"])
def test_every_legacy_message_acked(dut, net, mtype):
    L = legacy_peer(dut, net)
    payload = {"heartbeat": {}, "error": {"errorCode": "X", "errorDescription": "d"},
               "discovery": {"deviceName": "n", "deviceType": "P2PDeviceType.kds", "port": 1},
               "orderStatus": {"orderId": "T", "newStatus": "ready", "statusReason": None,
                               "estimatedTime": None}}[mtype]
    m = legacy_msg(mtype, L.id, dut.device_id, payload, 5)
    t0 = time.monotonic()
    L.send(m)
    try:
        it = L.expect_raw(lambda i: i[1] is not None and lacks(m["messageId"])(i[1]), 1.5)
    except Timeout as ex:
        fail("LEGACY-17", "a legacy acknowledgement of the %s" % mtype, str(ex))
    check((it[0] - t0) * 1000 <= 1000, "LEGACY-17", "within 1000 ms", it[0] - t0)
    a = it[1]
    check(a["toDeviceId"] == L.id, "LEGACY-17", "to the line's fromDeviceId", a["toDeviceId"])


@req("LEGACY-14", "LEGACY-15")
@needs(role="main", wire="legacy", cap="relay")
def test_send_to_legacy_device_without_connection(dut, net):
    """A legacy device announced its port in deviceInfo and closed its
    connection: a message for it is delivered on a new connection to its
    last source address and that port."""
    a = net.client(dut, name="A")
    lis = net.add(V2Main(name="legacy-home"))
    L = net.legacy(dut, name="L", src_ip=lis.addr[0])
    info = legacy_msg("deviceInfo", L.id, dut.device_id,
                      {"deviceName": "L", "deviceType": "P2PDeviceType.kds",
                       "port": lis.addr[1]}, 5)
    L.send(info)
    L.expect(lacks(info["messageId"]), 1.5)
    # L ends its connection (FIN) and waits until the device closes its
    # side too, which proves the device has handled the end: from then on
    # it has no open connection from L (LEGACY-15).
    L.shutdown_write()
    L.wait_closed(BARRIER_S)
    L.close()
    e = order_forward(a.id, to=L.id)
    a.send(e)
    lis.ls.settimeout(2.0)
    try:
        s, _ = lis.ls.accept()
    except socket.timeout:
        fail("LEGACY-15", "a new connection to %s:%d" % lis.addr, "none within 2 s")
    s.settimeout(2.0)
    data = b""
    deadline = time.monotonic() + 2
    while e.message_id.encode() not in data and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    check(e.message_id.encode() in data, "LEGACY-14", "the order written on it", data[:200])


@req("LEGACY-13")
@needs(reconfigure="the device opening a legacy connection (upper tester)")
def test_device_opens_legacy_connection_with_device_info(dut, net):
    if dut.kind != "peer":
        not_applicable("needs the reference peer's control channel")
    lis = net.add(V2Main(name="legacy-target"))
    dut.peer.call("connect", addr=lis.addr[0], port=lis.addr[1], wire="legacy")
    lis.ls.settimeout(2.0)
    s, _ = lis.ls.accept()
    s.settimeout(2.0)
    data = b""
    while b"\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    first = json.loads(data.split(b"\n")[0])
    check(first.get("messageType") == "deviceInfo", "LEGACY-13", "deviceInfo first",
          first.get("messageType"))


@req("LEGACY-18")
@needs(role="main", wire="legacy", cap="relay")
def test_no_duplicate_to_legacy_device(dut, net):
    a = net.client(dut, name="A")
    L = legacy_peer(dut, net)
    e = order_forward(a.id, to=L.id)
    a.send(e)
    line_for(L, e.message_id)
    a.expect(acks(e.message_id), 1.5)
    m, ma = L.mark(), a.mark()
    a.send(e)
    relay_barrier(a, L)   # the retransmission, if relayed to L, would arrive before this
    again = [i for i in L.lines()[m:] if i[1] and i[1].get("messageId") == e.message_id]
    check(not again, "LEGACY-18", "the retransmission not relayed again to the legacy device",
          "relayed again")
    try:
        a.expect(acks(e.message_id), 1.5, since=ma)
        acked = True
    except Timeout:
        acked = False
    check(acked, "LEGACY-18", "an acknowledgement on the legacy device's behalf", a.summary(ma))


@req("LEGACY-19", "LEGACY-29")
@needs(role="main", wire="legacy")
def test_legacy_heartbeats(dut, net):
    L = legacy_peer(dut, net)
    iv = dut.t["heartbeat_ms"] if remote() or dut.t["heartbeat_ms"] != 15000 else 15000
    m = L.mark()

    def seen():
        return [i for i in L.lines()[m:] if i[1] and i[1].get("messageType") == "heartbeat"]
    try:   # two heartbeats within 3.5 intervals (a deadline, not a fixed wait)
        wait_until(lambda: len(seen()) >= 2, iv / 1000.0 * 3.5, "two legacy heartbeats")
    except Timeout:
        pass
    hbs = seen()
    check(len(hbs) >= 2, "LEGACY-19", "a legacy heartbeat every %d ms" % iv,
          "%d in %.1f s" % (len(hbs), iv / 1000.0 * 3.5))
    for h in hbs:
        check(h[1]["payload"] == {}, "LEGACY-29", "heartbeat payload {}", h[1]["payload"])


def _ack_on_new_connection(lis, mid, timeout):
    lis.ls.settimeout(timeout)
    try:
        s, _ = lis.ls.accept()
    except socket.timeout:
        return False
    s.settimeout(timeout)
    data = b""
    try:
        while mid.encode() not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    return mid.encode() in data


def _vectors():
    out = []
    idx = os.path.join(VECTORS, "INDEX.tsv")
    if not os.path.exists(idx):
        return out
    for line in open(idx, encoding="utf-8"):
        if line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or not parts[0].startswith("legacy/") or parts[2] != "ok":
            continue
        name = os.path.basename(parts[0])
        if name.startswith("disc_") or "noroundtrip" in (parts[3] if len(parts) > 3 else ""):
            continue
        if name.startswith(("heartbeat", "acknowledgement")):
            continue     # link-local / consumed by the relay
        out.append(parts[0])
    return out


@req("LEGACY-46", "MONEY-6")
@needs(role="main", wire="legacy", cap="relay")
@pytest.mark.parametrize("vector", _vectors())
def test_round_trip_byte_exact(dut, net, vector):
    """A canonical legacy line (golden vector, ids replaced) relayed from
    one legacy device to another comes out byte for byte."""
    L1 = legacy_peer(dut, net, name="L1")
    L2 = legacy_peer(dut, net, name="L2")
    raw = open(os.path.join(VECTORS, vector), "rb").read()
    obj = json.loads(raw)
    mid = new_id()
    raw = raw.replace(obj["messageId"].encode(), mid.encode())
    raw = raw.replace(obj["fromDeviceId"].encode(), L1.id.encode())
    if obj.get("toDeviceId"):
        raw = raw.replace(b'"toDeviceId":"%s"' % obj["toDeviceId"].encode(),
                          b'"toDeviceId":"%s"' % L2.id.encode())
    if not raw.endswith(b"\n"):
        raw += b"\n"
    L1.send_raw(raw)
    try:
        got, _ = line_for(L2, mid)
    except Timeout as ex:
        fail("LEGACY-46", "the line relayed to the second legacy device", str(ex))
    check(got + b"\n" == raw, "LEGACY-46", "byte-exact round trip", "%s\nvs\n%s" % (
        got[:300], raw[:300]))
