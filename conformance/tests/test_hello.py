"""Handshake: HELLO fields and rules, duplicate device ids (SPEC 6)."""

import pytest

from helpers import *  # noqa: F401,F403


def _bad_hello(c, rule):
    h = c.hello_env()
    if rule == "HELLO-2":
        h.from_device_id = new_id()
    elif rule == "HELLO-4":
        h.hello.device_id = "not-a-uuid"
        h.from_device_id = "not-a-uuid"
    elif rule == "HELLO-5":
        h.hello.device_type = 0
    elif rule == "HELLO-6":
        h.hello.listen_port = 70000
    elif rule == "HELLO-7":
        del h.hello.supported_versions[:]
    elif rule == "HELLO-8":
        h.hello.heartbeat_interval_ms = 0
    elif rule == "HELLO-9":
        h.hello.device_timeout_ms = h.hello.heartbeat_interval_ms
    elif rule == "HELLO-10":
        h.hello.max_frame_size = 4095
    elif rule == "MSG-1":
        h.message_id = "1234"
    return h


@req("HELLO-11")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("rule", ["HELLO-2", "HELLO-4", "HELLO-5", "HELLO-6", "HELLO-7",
                                  "HELLO-8", "HELLO-9", "HELLO-10", "MSG-1"])
def test_invalid_hello_rejected(dut, net, rule):
    """An invalid HELLO is answered with INVALID_MESSAGE naming the failed
    rule, and the connection is closed."""
    c = net.raw(dut)
    c.send_preface()
    c.send(_bad_hello(c, rule))
    try:
        e = expect_error(c, "INVALID_MESSAGE", timeout=1.5)
    except Timeout as ex:
        fail(rule, "ERROR INVALID_MESSAGE for a HELLO breaking %s" % rule, str(ex))
    check(not c.envs(is_type("HELLO")), "HELLO-11", "no HELLO in answer", c.summary())
    # A bad device_id also breaks MSG-5 (from_device_id) or HELLO-2: any of
    # the rules the HELLO breaks may be named.
    ok = {rule} | ({"MSG-5", "HELLO-2"} if rule == "HELLO-4" else set())
    check(e.error.requirement in ok, "HELLO-11", "requirement naming the failed rule %s"
          % sorted(ok), repr(e.error.requirement))
    check(c.wait_closed(2.0), "HELLO-11", "connection closed", "still open")


@req("HELLO-3")
@needs(role="main", wire="v2")
def test_server_hello_only_after_client_hello(dut, net):
    c = net.raw(dut)
    c.send_preface()
    # Only our HELLO would be answered, so no barrier: watch for the
    # device's reaction window (quiet_s, from its ack timeout).
    happens_within(lambda: c.frames, quiet_s(dut))
    check(not c.frames, "HELLO-3", "no frame before the client's HELLO", c.summary())
    c.send(c.hello_env())
    c.expect(is_type("HELLO"), 2.0)


@req("HELLO-12")
@needs(role="main", wire="v2")
def test_advertised_timers_match_configuration(dut, net):
    """The HELLO advertises the heartbeat interval, timeout and frame limit
    the device is configured with (the defaults 15000/60000/1048576 unless
    the profile says otherwise)."""
    h = net.client(dut).peer_hello.hello
    want = (dut.t["heartbeat_ms"], dut.t["timeout_ms"], dut.t["max_frame"])
    got = (h.heartbeat_interval_ms, h.device_timeout_ms, h.max_frame_size)
    check(got == want, "HELLO-12", "heartbeat/timeout/max_frame %s" % (want,), str(got))


@req("HELLO-13", "ERR-2")
@needs(role="main", wire="v2")
def test_duplicate_id_new_connection_wins(dut, net):
    a1 = net.client(dut, name="first")
    a2 = net.client(dut, name="second", device_id=a1.id)
    try:
        expect_error(a1, "DUPLICATE_DEVICE_ID", timeout=1.5)
    except Timeout as ex:
        fail("HELLO-13", "DUPLICATE_DEVICE_ID on the older connection", str(ex))
    check(a1.wait_closed(2.0), "HELLO-13", "older connection closed", "still open")
    o = order_forward(a2.id, to=dut.device_id)
    a2.send(o)
    try:
        a2.expect(acks(o.message_id), 1.5)
    except Timeout as ex:
        fail("HELLO-13", "the new connection goes on", str(ex))
    check(not a2.envs(is_error("DUPLICATE_DEVICE_ID")), "HELLO-13",
          "no error on the new connection", a2.summary())


@req("HELLO-14")
@needs(role="main", wire="v2")
def test_hello_with_main_own_id(dut, net):
    c = net.raw(dut, device_id=dut.device_id)
    c.send_preface()
    c.send(c.hello_env())
    try:
        expect_error(c, "DUPLICATE_DEVICE_ID", timeout=1.5)
    except Timeout as ex:
        fail("HELLO-14", "DUPLICATE_DEVICE_ID on the new connection", str(ex))
    check(c.wait_closed(2.0), "HELLO-14", "connection closed", "still open")


@req("HELLO-15", "ACK-2")
@needs(role="main", wire="v2")
def test_hello_not_acknowledged(dut, net):
    c = net.raw(dut)
    c.send_preface()
    h = c.hello_env()
    c.send(h)
    c.expect(is_type("HELLO"), 2.0)
    got = c.expect_none(acks(h.message_id), quiet_s(dut), since=0)
    check(got is None, "HELLO-15", "no ACKNOWLEDGEMENT of the HELLO", err_summary(got))


@req("HELLO-16", "ERR-8")
@needs(role="main", wire="v2")
def test_second_hello(dut, net):
    c = net.client(dut)
    m = c.mark()
    c.send(c.hello_env())
    try:
        e = expect_error(c, "INVALID_MESSAGE", since=m, timeout=1.5)
    except Timeout as ex:
        fail("HELLO-16", "INVALID_MESSAGE for a second HELLO", str(ex))
    check(e.HasField("to_device_id") and e.to_device_id.lower() == c.id, "ERR-8",
          "to_device_id = the peer's id (known after HELLO)", e.to_device_id)
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    try:
        c.expect(acks(o.message_id), 1.5)
    except Timeout as ex:
        fail("HELLO-16", "connection kept open and working", str(ex))


@req("HELLO-17", "EXT-5")
@needs(role="main", wire="v2")
def test_unknown_capabilities_ignored(dut, net):
    c = net.raw(dut)
    c.send_preface()
    c.send(c.hello_env(caps=("ack", "x-acme-turbo", "something-new")))
    try:
        h = c.expect(is_type("HELLO"), 2.0)
    except Timeout as ex:
        fail("HELLO-17", "handshake completes despite unknown capabilities", str(ex))
    c._hello_done(h)


@req("HELLO-18", "EXT-5")
@needs(role="main", wire="v2")
def test_capabilities_listed(dut, net):
    """A main POS that relays, acknowledges, suppresses duplicates and
    speaks legacy says so; any other capability string has a vendor
    prefix."""
    caps = list(net.client(dut).peer_hello.hello.capabilities)
    want = ["relay", "ack", "dedup"]
    if remote():
        want = [w for w in want if profile().has_cap(w)]
    if not remote() or "legacy" in profile().wires:
        want.append("legacy")      # the reference peer accepts both wires
    known = {"relay", "ack", "dedup", "legacy"}
    for c in caps:
        check(c in known or c.startswith("x-"), "EXT-5", "vendor-prefixed capability", c)
    missing = [w for w in want if w not in caps]
    check(not missing, "HELLO-18", "capabilities include %s" % want, "%s (missing %s)" % (
        caps, missing))
