"""Messages, money and time: envelope validation, payload rules, priority,
amounts, timestamps (SPEC 7, 8, 9)."""
import re

import pytest

from helpers import *  # noqa: F401,F403


def _invalid(c, env_or_bytes, rule, dut, timeout=1.5):
    """Send something invalid; expect INVALID_MESSAGE naming `rule`, no
    acknowledgement, the connection kept open (MSG-30)."""
    if isinstance(env_or_bytes, bytes):
        body = env_or_bytes
        mid = None
        try:
            mid = parse_envelope(body).message_id
        except Exception:  # noqa: BLE001
            pass
        c.send_raw(frame_raw(body))
    else:
        mid = env_or_bytes.message_id
        c.send(env_or_bytes)
    m = c.mark()
    try:
        e = c.expect(is_error("INVALID_MESSAGE"), timeout, 0 if m == 0 else max(0, m - 5))
    except Timeout as ex:
        fail(rule, "ERROR INVALID_MESSAGE for a message breaking %s" % rule, str(ex))
    check(e.error.requirement == rule, "MSG-30", "requirement '%s'" % rule,
          repr(e.error.requirement))
    # The next valid message is also the barrier: an ACK of the invalid one
    # would arrive before its ACK (same connection, same priority).
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    try:
        c.expect(acks(o.message_id), 1.5)
        closed = None
    except Timeout as ex:
        closed = str(ex)
    if mid and re.match(r"^[0-9a-fA-F-]{36}$", mid):
        check(e.error.ref_message_id.lower() == mid.lower(), "MSG-30",
              "ref_message_id %s" % mid, e.error.ref_message_id)
        got = next(iter(c.envs(acks(mid))), None)
        check(got is None, "MSG-30", "no acknowledgement of the invalid message",
              err_summary(got))
    if closed is not None:
        fail("MSG-30", "connection kept open after INVALID_MESSAGE", closed)
    return e


def _mk(c, dut, rule):
    to = dut.device_id
    if rule == "MSG-1":
        e = order_forward(c.id, to=to)
        e.message_id = "6f1c2a4e-8b3d-4f6a-9c1e-2d7b5a9e0f1"     # 35 chars
    elif rule == "MSG-7":
        e = order_forward(c.id, to="kitchen")
    elif rule == "MSG-8":
        e = order_forward(c.id, to_type=0)
    elif rule == "MSG-9":
        e = order_forward(c.id, to=to, to_type="KDS")
    elif rule == "MSG-10":
        e = order_forward(c.id, to=to)
        e.message_type = 0
    elif rule == "MSG-12":
        e = envelope("ORDER_FORWARD", c.id, to=to)
        e.heartbeat.sequence = 1
    elif rule == "MSG-13":
        e = envelope("PRODUCT_SYNC", c.id, to=to)
        e.order_cancel.order_id = "x"
    elif rule == "MSG-15":
        e = order_forward(c.id, to=to, priority=11)
    elif rule == "MSG-22":
        e = order_forward(c.id, to=to)
        e.order_forward.customer_name = "a\x00b"
    elif rule == "MSG-23":
        e = ack(c.id, to, "not-an-id")
    elif rule == "MSG-24":
        e = order_forward(c.id, to=to, order_id="")
    elif rule == "MSG-24b":
        e = order_forward(c.id, to=to)
        e.order_forward.order_status = 42
    elif rule == "MSG-24c":
        e = order_forward(c.id, to=to)
        e.order_forward.destination = 42
    elif rule == "MSG-25":
        e = order_forward(c.id, to=to)
        e.order_forward.items[0].quantity = -1
    elif rule == "MSG-25b":
        e = envelope("CART_SYNC", c.id, to=to)
        it = e.cart_sync.items.add()
        it.product_id, it.quantity = "p", -2
    elif rule == "MSG-26":
        e = order_status(c.id, to=to, order_id="")
    elif rule == "MSG-26b":
        e = order_status(c.id, to=to, status=99)
    elif rule == "MSG-27":
        e = order_cancel(c.id, to=to, order_id="")
    elif rule == "MSG-28":
        e = device_info(c.id, to=to, dtype=0)
    elif rule == "MSG-28b":
        e = device_info(c.id, to=to, port=70000)
    elif rule == "MSG-28c":
        e = envelope("DISCOVERY", c.id, to=to)
        e.discovery.device_type = 9
    elif rule == "MSG-31":
        e = envelope("CART_SYNC", c.id, to=to)
        e.cart_sync.legacy_json = "[1,2]"
    elif rule == "MONEY-3":
        e = order_forward(c.id, to=to, exponent=10)
    elif rule == "MONEY-4":
        e = order_forward(c.id, to=to, currency="usd")
    elif rule == "MONEY-4b":
        e = order_forward(c.id, to=to, currency="EURO")
    elif rule == "TIME-2":
        e = order_forward(c.id, to=to, ts=-1)
    elif rule == "TIME-2b":
        e = order_forward(c.id, to=to)
        e.order_forward.target_delivery_time_ms = -5
    elif rule == "TIME-3":
        e = order_forward(c.id, to=to)
        e.timestamp_us = 1000
    elif rule == "TIME-3b":
        e = order_forward(c.id, to=to)
        e.order_forward.target_delivery_time_ms = 1
        e.order_forward.target_delivery_time_us = 5000
    return e


CASES = ["MSG-7", "MSG-8", "MSG-9", "MSG-10", "MSG-12", "MSG-13", "MSG-15", "MSG-22",
         "MSG-23", "MSG-24", "MSG-24b", "MSG-24c", "MSG-25", "MSG-25b", "MSG-26", "MSG-26b",
         "MSG-27", "MSG-28", "MSG-28b", "MSG-28c", "MSG-31", "MONEY-3", "MONEY-4",
         "MONEY-4b", "TIME-2", "TIME-2b", "TIME-3", "TIME-3b"]


@pytest.mark.parametrize("case", CASES)
@needs(role="main", wire="v2")
def test_validation_rule(dut, net, case, request):
    """A message that decodes but breaks one validation rule: ERROR
    INVALID_MESSAGE naming the rule, with ref_message_id, no ack, the
    connection kept open."""
    rule = re.sub(r"[a-z]$", "", case)
    c = net.client(dut)
    _invalid(c, _mk(c, dut, case), rule, dut)


# The requirement ids of the parametrized cases (the marker needs them
# statically for the coverage report).
test_validation_rule = pytest.mark.req(
    "MSG-30", *sorted({re.sub(r"[a-z]$", "", x) for x in CASES}))(test_validation_rule)


@req("MSG-1", "MSG-30")
@needs(role="main", wire="v2")
def test_bad_message_id_ref_empty(dut, net):
    """A message whose message_id is not a canonical UUID is refused; the
    ERROR's ref_message_id is "" (MSG-30)."""
    c = net.client(dut)
    e = _invalid(c, _mk(c, dut, "MSG-1"), "MSG-1", dut)
    check(e.error.ref_message_id == "", "MSG-30", "ref_message_id ''",
          e.error.ref_message_id)


@req("MSG-3", "MSG-17", "HB-4")
@needs(role="main", wire="v2")
def test_device_ids_and_default_priorities(dut, net):
    """The device's message ids are lower-case version-4 UUIDs and its
    messages carry the default priority of their type; heartbeat sequence
    counts from 1."""
    c = net.client(dut)
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    c.expect(acks(o.message_id), 1.5)
    c.expect(is_type("HEARTBEAT"), 1.0)
    c.expect(lambda e: e.message_type == MT["HEARTBEAT"] and e.heartbeat.sequence >= 2, 1.0)
    for e in c.envs():
        check(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
                       e.message_id), "MSG-3", "lower-case v4 UUID", e.message_id)
        want = DEFAULT_PRIORITY.get(e.message_type, 5)
        check(e.HasField("priority") and e.priority == want, "MSG-17",
              "priority %d for %s" % (want, MT_NAME[e.message_type]),
              e.priority if e.HasField("priority") else "absent")
    seqs = [e.heartbeat.sequence for e in c.envs(is_type("HEARTBEAT"))]
    check(seqs[:2] == [1, 2], "HB-4", "sequence 1, 2, ...", seqs)


@req("MSG-4", "ROUTE-1")
@needs(role="main", wire="v2")
def test_uuid_case_insensitive(dut, net):
    """to_device_id in upper case still names the main POS."""
    c = net.client(dut)
    o = order_forward(c.id, to=dut.device_id.upper())
    c.send(o)
    try:
        c.expect(acks(o.message_id), 1.5)
    except Timeout as ex:
        fail("MSG-4", "upper-case to_device_id treated as the main POS's id", str(ex))


@req("MSG-4", "ACK-18")
@needs(role="main", wire="v2", cap="observe")
def test_uuid_case_dedup(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    o = order_forward(c.id, to=dut.device_id)
    m = obs.mark()
    c.send(o)
    c.expect(acks(o.message_id), 1.5)
    o.message_id = o.message_id.upper()
    c.send(o)
    c.expect(acks(o.message_id), 1.5)
    sync_delivered(obs, c, dut.device_id, m)   # a second delivery would come before it
    got = [d for d in obs.delivered(m) if (d["message_id"] or "").lower() == o.message_id.lower()]
    check(len(got) == 1, "MSG-4", "delivered once (ids differing in case are one id)",
          "delivered %d times" % len(got))


@req("MSG-6")
@needs(role="main", wire="v2")
def test_from_differs_from_hello(dut, net):
    c = net.client(dut)
    e = order_forward(new_id(), to=dut.device_id)
    _invalid(c, e, "MSG-6", dut)


@req("MSG-11", "ERR-2", "ERR-4")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("mtype", [18, 31, 34, 99, 1000])
def test_unknown_message_type(dut, net, mtype):
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    e.message_type = mtype
    c.send(e)
    try:
        err = expect_error(c, "UNKNOWN_MESSAGE_TYPE", timeout=1.5)
    except Timeout as ex:
        fail("MSG-11", "ERROR UNKNOWN_MESSAGE_TYPE", str(ex))
    # The next valid message is also the barrier: an ACK of e would arrive
    # before its ACK (same connection, same priority).
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    try:
        c.expect(acks(o.message_id), 1.5)
        pending = None
    except Timeout as ex:
        pending = ex
    got = next(iter(c.envs(acks(e.message_id))), None)
    check(got is None, "MSG-11", "not acknowledged", err_summary(got))
    if pending is not None:
        raise pending


@req("MSG-13", "ACK-1")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("mtype", ["ORDER_SYNC", "PRODUCT_SYNC", "CONFIG_SYNC", "SERVER_MODE",
                                   "BROADCAST_UPDATE", "DEVICE_COMMAND", "DEVICE_RESPONSE",
                                   "WARNING"])
def test_opaque_types_with_or_without_payload(dut, net, mtype):
    c = net.client(dut)
    for text in ('{"a":[1,2]}', None):
        e = opaque(c.id, mtype, to=dut.device_id, json_text=text)
        c.send(e)
        try:
            c.expect(acks(e.message_id), 1.5)
        except Timeout as ex:
            fail("MSG-13", "%s with %s accepted and acknowledged" % (
                mtype, "opaque" if text else "no payload"), str(ex))


@req("MSG-14")
@needs(role="main", wire="v2", upper="send")
def test_device_opaque_json_compact(dut, net):
    b = net.client(dut)
    dut.upper.send("productSync", to=b.id, payload={"a": 1, "b": [1, 2], "c": {"d": "e f"}})
    e = b.expect(is_type("PRODUCT_SYNC"), 2.0)
    import json as _j
    txt = e.opaque.json
    obj = _j.loads(txt)
    check(isinstance(obj, dict), "MSG-14", "one JSON object", txt)
    check(txt == _j.dumps(obj, separators=(",", ":"), ensure_ascii=False), "MSG-14",
          "no insignificant whitespace", txt)


@req("MSG-16", "MSG-20", "MSG-21", "EXT-3", "TIME-4", "MONEY-7")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("variant", ["no-priority", "acknowledged", "unknown-fields",
                                     "old-timestamp", "future-timestamp", "negative-amounts",
                                     "totals-do-not-add-up"])
def test_accepted_variants(dut, net, variant):
    """Messages that are valid although unusual are delivered and
    acknowledged as usual."""
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    body = None
    rq = "MSG-16"
    if variant == "no-priority":
        e.ClearField("priority")
    elif variant == "acknowledged":
        e.acknowledged = True
        rq = "MSG-20"
    elif variant == "unknown-fields":
        rq = "MSG-21"
        e.order_forward.order_id = "x"
        inner = add_unknown_field(e.order_forward.SerializeToString(), 1500, b"acme")
        e.ClearField("order_forward")
        body = add_unknown_field(add_unknown_field(e.SerializeToString(), 500, b"future"),
                                 1234, b"vendor")
        body += varint((20 << 3) | 2) + varint(len(inner)) + inner
    elif variant == "old-timestamp":
        e.timestamp_ms = 1000
        rq = "TIME-4"
    elif variant == "future-timestamp":
        e.timestamp_ms = 32503680000000    # year 3000
        rq = "TIME-4"
    elif variant == "negative-amounts":
        e.order_forward.items[0].price_minor = -450
        e.order_forward.total_minor = -(2 ** 62)
        rq = "MONEY-7"
    elif variant == "totals-do-not-add-up":
        e.order_forward.subtotal_minor = 1
        e.order_forward.total_minor = 999999
        rq = "MONEY-7"
    if body is not None:
        c.send_raw(frame_raw(body))
    else:
        c.send(e)
    try:
        c.expect(acks(e.message_id), 1.5)
    except Timeout as ex:
        fail(rq, "message (%s) accepted and acknowledged" % variant, str(ex))
    check(not c.envs(is_error()), rq, "no ERROR", c.summary())


@req("MSG-16")
@needs(role="main", wire="v2", cap="observe")
def test_absent_priority_is_5(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    e.ClearField("priority")
    m = obs.mark()
    c.send(e)
    d = obs.wait_delivered(lambda x: x.get("message_id") == e.message_id, 1.5, m)
    check(d is not None, "MSG-16", "delivered", "not delivered")
    if dut.kind == "peer":
        ev = [x for x in dut.peer.lines()[m:] if x.get("event") == "message" and
              x.get("message_id") == e.message_id][0]
        check(ev.get("priority") == 5, "MSG-16", "priority 5 for an absent priority",
              ev.get("priority"))


@req("MSG-18")
@needs(role="main", wire="v2")
def test_priority_order_optional(dut, net):
    """A peer that sends in plain queue order (not by priority) still
    interoperates: low then high priority messages are both acknowledged."""
    c = net.client(dut)
    lo = opaque(c.id, to=dut.device_id, priority=0)
    hi = opaque(c.id, to=dut.device_id, priority=10)
    c.send_raw(frame(lo) + frame(hi))
    for e in (lo, hi):
        c.expect(acks(e.message_id), 1.5)


@req("MSG-19", "ROUTE-10")
@needs(role="main", wire="v2", upper=["send_order", "send_status"])
def test_device_keeps_order_messages_in_order(dut, net):
    """The device's order, then status updates of the same order: sent in
    that order whatever their priorities, numbered 1, 2, 3; a new order's
    statuses start again at 1."""
    b = net.client(dut)
    oid = "T-" + new_id()[:8]
    dut.upper.send_order(to=b.id, order_id=oid)
    for st in ("preparing", "ready", "served"):
        dut.upper.send_status(to=b.id, order_id=oid, status=st)
    oid2 = "T-" + new_id()[:8]
    dut.upper.send_status(to=b.id, order_id=oid2, status="ready")
    b.expect(lambda e: e.message_type == MT["ORDER_STATUS"] and e.order_status.order_id == oid2,
             2.0)
    b.expect(lambda e: e.message_type == MT["ORDER_STATUS"] and
             e.order_status.new_status == 4, 2.0)
    seq = [(e.message_type, e.order_status.sequence if e.message_type == MT["ORDER_STATUS"]
            else 0) for e in b.envs(lambda e: e.message_type in (MT["ORDER_FORWARD"],
                                                                   MT["ORDER_STATUS"])
                                    and (e.order_forward.order_id == oid or
                                         e.order_status.order_id == oid))]
    check(seq and seq[0][0] == MT["ORDER_FORWARD"], "MSG-19",
          "ORDER_FORWARD before the status updates of the same order", seq)
    check([s for t_, s in seq[1:]] == [1, 2, 3], "ROUTE-10", "sequence 1, 2, 3",
          [s for t_, s in seq[1:]])
    s2 = [e.order_status.sequence for e in b.envs(lambda e: e.message_type == MT["ORDER_STATUS"]
                                                  and e.order_status.order_id == oid2)]
    check(s2 == [1], "ROUTE-10", "a new order starts at sequence 1", s2)


@req("MSG-19", "ROUTE-8")
@needs(role="main", wire="v2", cap="relay")
def test_relay_keeps_order_messages_in_order(dut, net):
    """A sends B an order (priority 0) then its status (priority 10) and
    cancel: B receives them in that order."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    oid = "T-" + new_id()[:8]
    msgs = [order_forward(a.id, to=b.id, order_id=oid, priority=0, items=30),
            order_status(a.id, to=b.id, order_id=oid, priority=10, sequence=1),
            order_cancel(a.id, to=b.id, order_id=oid, priority=10)]
    a.send_raw(b"".join(frame(m) for m in msgs))
    for m in msgs:
        b.expect(has_id(m.message_id), 2.0)
    got = [e.message_id for e in b.envs(lambda e: e.message_type in (4, 5, 6))]
    check(got == [m.message_id for m in msgs], "MSG-19", "forward, status, cancel in order",
          [MT_NAME[e.message_type] for e in b.envs(lambda e: e.message_type in (4, 5, 6))])


@req("MONEY-2", "MONEY-1")
@needs(role="main", wire="v2", upper="send_order")
def test_device_amounts_share_exponent(dut, net):
    """The device's order (2.50 per item) uses one currency_exponent for
    every amount, with values consistent with it."""
    b = net.client(dut)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0).order_forward
    ex = e.currency_exponent
    check(ex <= 9, "MONEY-2", "an exponent 0..9", ex)
    if not remote():
        check(e.items[0].price_minor == 25 * 10 ** (ex - 1) and
              e.total_minor == 25 * 10 ** (ex - 1), "MONEY-2",
              "price and total 2.5 in exponent %d" % ex,
              "%d / %d" % (e.items[0].price_minor, e.total_minor))


@req("MONEY-5")
@needs(role="main", wire="v2", upper="send_order")
def test_iso_exponent_when_currency_known(dut, net):
    iso = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "KWD": 3, "CHF": 2, "MYR": 2, "SGD": 2}
    b = net.client(dut)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0).order_forward
    if not e.currency:
        not_applicable("the device's orders carry no currency")
    if e.currency in iso:
        check(e.currency_exponent >= iso[e.currency], "MONEY-5", "ISO exponent %d for %s" % (
            iso[e.currency], e.currency), e.currency_exponent)


@req("MONEY-6", "ROUTE-2", "ROUTE-7")
@needs(role="main", wire="v2", cap="relay")
def test_relay_preserves_int64_amounts(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    e = order_forward(a.id, to=b.id, exponent=9)
    e.order_forward.items[0].price_minor = 2 ** 53 + 1
    e.order_forward.total_minor = 2 ** 63 - 1
    e.order_forward.subtotal_minor = -(2 ** 63)
    a.send(e)
    got = b.expect(has_id(e.message_id), 1.5).order_forward
    check((got.items[0].price_minor, got.total_minor, got.subtotal_minor) ==
          (2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63)), "MONEY-6", "amounts relayed exactly",
          (got.items[0].price_minor, got.total_minor, got.subtotal_minor))


@req("TIME-1")
@needs(role="main", wire="v2")
def test_device_timestamps(dut, net):
    """The device's timestamp_ms is Unix time in ms (checked against the
    suite's clock within 60 s for a device on this machine, else a
    plausible year)."""
    c = net.client(dut)
    now = now_ms()
    for e in c.envs():
        if dut.host.startswith("127."):
            check(abs(e.timestamp_ms - now) < 60000, "TIME-1", "within 60 s of %d" % now,
                  e.timestamp_ms)
        check(1577836800000 <= e.timestamp_ms <= 4102444800000, "TIME-1",
              "a Unix-ms time between 2020 and 2100", e.timestamp_ms)
