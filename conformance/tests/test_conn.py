"""Connection: preface, wire detection, version negotiation, handshake
deadline, connection limit, graceful close (SPEC section 4)."""
import time

import pytest

from helpers import *  # noqa: F401,F403


@req("CONN-3")
@needs(role="main", wire="v2")
def test_first_byte_ff_selects_v2(dut, net):
    """0xFF as first byte selects v2: a valid preface is answered with the
    device's preface."""
    c = net.raw(dut)
    c.send_preface()
    c.send(c.hello_env())
    h = c.expect(is_type("HELLO"), 2.0)
    check(c.reader.preface is not None and c.reader.preface[:7] == b"\xffPOSP2P", "CONN-3",
          "a v2 preface in answer to 0xFF...", repr(c.reader.preface))


@req("CONN-3", "LEGACY-17")
@needs(role="main", wire="legacy")
@pytest.mark.parametrize("lead", [b"", b" ", b"\t", b"\r\n", b"\n"],
                         ids=["brace", "space", "tab", "crlf", "lf"])
def test_json_first_byte_selects_legacy(dut, net, lead):
    """'{' or JSON whitespace as first byte selects the legacy wire for the
    whole connection."""
    c = net.legacy(dut)
    m = legacy_msg("heartbeat", c.id, dut.device_id, {}, 2)
    c.send_raw(lead + legacy_line(m))
    try:
        c.expect(lacks(m["messageId"]), 1.5)
    except Timeout as e:
        fail("CONN-3", "a legacy acknowledgement (legacy wire selected)", str(e))


@req("CONN-4")
@needs(role="main")
@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n\r\n", b"\x00\x01", b"P"],
                         ids=["http", "nul", "letter"])
def test_unknown_first_byte_closed_silently(dut, net, first):
    """A first byte that selects no wire: closed without any byte sent."""
    c = net.raw(dut)
    c.send_raw(first)
    closed = c.wait_closed(2.0)
    check(closed, "CONN-4", "connection closed", "still open after 2 s")
    check(c.bytes_in == 0, "CONN-4", "no byte sent before closing",
          "%d bytes received" % c.bytes_in)


@req("CONN-4")
@needs(reconfigure="a device without the legacy profile")
def test_legacy_byte_closed_when_legacy_not_implemented(make_dut, net):
    """A device configured for v2 only closes a connection starting with
    '{' without sending a byte."""
    d = make_dut(extra=["--wire", "v2"])
    c = net.raw(d)
    c.send_raw(legacy_line(legacy_msg("heartbeat", new_id(), None, {}, 2)))
    check(c.wait_closed(2.0), "CONN-4", "connection closed", "still open")
    check(c.bytes_in == 0, "CONN-4", "no byte sent", "%d bytes" % c.bytes_in)


@req("CONN-5")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("bad", [b"\xffPOSP2X\x02", b"\xffXOSP2P\x02", b"\xffposp2p\x02"],
                         ids=["last", "first", "lowercase"])
def test_bad_magic_closed_silently(dut, net, bad):
    c = net.raw(dut)
    c.send_raw(bad)
    check(c.wait_closed(2.0), "CONN-5", "connection closed on a bad preface", "still open")
    check(c.bytes_in == 0, "CONN-5", "no byte (no preface, no frame)",
          "%d bytes received" % c.bytes_in)


@req("CONN-6", "CONN-2")
@needs(role="main", wire="v2")
def test_server_preface_only_after_full_client_preface(dut, net):
    """The accepting side's preface comes after all 8 bytes of the client
    preface, is exactly FF 'POSP2P' 02, and precedes every frame."""
    c = net.raw(dut)
    c.send_raw(PREFACE[:7])
    # Nothing answers 7 bytes, so no barrier: watch for the device's
    # reaction window (quiet_s, from its ack timeout).
    happens_within(lambda: c.bytes_in, quiet_s(dut))
    check(c.bytes_in == 0, "CONN-6", "no byte before the 8th preface byte",
          "%d bytes" % c.bytes_in)
    c.send_raw(PREFACE[7:])
    c.send(c.hello_env())
    c.expect(is_type("HELLO"), 2.0)
    check(c.reader.preface == PREFACE, "CONN-2", "preface ff 50 4f 53 50 32 50 02",
          (c.reader.preface or b"").hex())


@req("CONN-7")
@needs(role="main", wire="v2")
def test_preface_version_1_unsupported(dut, net):
    c = net.raw(dut)
    c.send_raw(preface(1))
    try:
        e = expect_error(c, "UNSUPPORTED_VERSION", timeout=2.0)
    except Timeout as ex:
        fail("CONN-7", "preface, then ERROR UNSUPPORTED_VERSION", str(ex))
    check(c.reader.preface is not None, "CONN-7", "the device's preface before the ERROR",
          "no preface")
    check(c.wait_closed(2.0), "CONN-7", "connection closed after the ERROR", "still open")


@req("CONN-8", "CONN-11")
@needs(role="main", wire="v2")
def test_preface_version_3_accepted_and_version_selected(dut, net):
    """A client preface with version 3 is accepted; the HELLO selects the
    highest common version >= 2."""
    c = net.raw(dut)
    c.send_raw(preface(3))
    c.send(c.hello_env(versions=(2, 3, 7)))
    try:
        h = c.expect(is_type("HELLO"), 2.0)
    except Timeout as ex:
        fail("CONN-8", "a HELLO after a version-3 preface", str(ex))
    theirs = set(h.hello.supported_versions)
    want = max(v for v in theirs & {2, 3, 7} if v >= 2)
    check(h.hello.selected_version == want, "CONN-11", "selected_version %d" % want,
          str(h.hello.selected_version))


@req("CONN-9")
@needs(role="client", wire="v2")
def test_client_rejects_server_preface_version_1(client_setup):
    vm, conn, d = client_setup(handshake=False)
    try:
        wait_until(lambda: conn.reader.preface is not None or conn.closed, 5,
                   "preface from the client")
    except Timeout:
        pass    # the CONN-9 check below reports what the client does
    conn.send_raw(preface(1))
    try:
        expect_error(conn, "UNSUPPORTED_VERSION", timeout=2.0)
    except Timeout as ex:
        fail("CONN-9", "ERROR UNSUPPORTED_VERSION from the client", str(ex))
    check(conn.wait_closed(2.0), "CONN-9", "the client closes the connection", "still open")


@req("CONN-10")
@needs(role="main", wire="v2")
def test_frames_in_same_segment_as_preface(dut, net):
    """Preface, HELLO and an order in one write are all processed."""
    c = net.raw(dut)
    h = c.hello_env()
    o = order_forward(c.id, to=dut.device_id)
    c.send_raw(PREFACE + frame(h) + frame(o))
    try:
        c.expect(is_type("HELLO"), 2.0)
        c.expect(acks(o.message_id), 2.0)
    except Timeout as ex:
        fail("CONN-10", "HELLO and the order's acknowledgement", str(ex))


@req("CONN-12")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("versions", [(3,), (1,), (1, 3, 9)], ids=["v3", "v1", "mixed"])
def test_no_common_version(dut, net, versions):
    c = net.raw(dut)
    c.send_preface()
    c.send(c.hello_env(versions=versions))
    try:
        expect_error(c, "UNSUPPORTED_VERSION", timeout=2.0)
    except Timeout as ex:
        fail("CONN-12", "ERROR UNSUPPORTED_VERSION instead of a HELLO", str(ex))
    check(not c.envs(is_type("HELLO")), "CONN-12", "no HELLO", c.summary())
    check(c.wait_closed(2.0), "CONN-12", "connection closed", "still open")


@req("CONN-1", "CONN-2", "CONN-13", "HELLO-1")
@needs(role="client", wire="v2")
def test_client_preface_and_hello(client_setup):
    """The client's first bytes are the 8-byte preface, its first frame is
    a HELLO with selected_version 0."""
    vm, conn, d = client_setup()
    check(conn.reader.preface == PREFACE, "CONN-2", "ff 50 4f 53 50 32 50 02",
          (conn.reader.preface or b"").hex())
    first = conn.frames[0].env
    check(first is not None and first.message_type == MT["HELLO"], "HELLO-1",
          "HELLO as the first frame", repr(conn.frames[:1]))
    check(first.hello.selected_version == 0, "CONN-13", "selected_version 0",
          str(first.hello.selected_version))


@req("CONN-14")
@needs(role="client", wire="v2")
def test_client_rejects_bad_selected_version(client_setup):
    vm, conn, d = client_setup(hs_kw={"selected": 3})
    try:
        expect_error(conn, "UNSUPPORTED_VERSION", timeout=2.0)
    except Timeout as ex:
        fail("CONN-14", "ERROR UNSUPPORTED_VERSION for selected_version 3", str(ex))
    check(conn.wait_closed(2.0), "CONN-14", "connection closed", "still open")


@req("CONN-15", "ERR-8")
@needs(role="main", wire="v2")
def test_frame_before_hello(dut, net):
    c = net.raw(dut)
    c.send_preface()
    c.send(order_forward(c.id, to=dut.device_id))
    try:
        e = expect_error(c, "HANDSHAKE_REQUIRED", timeout=2.0)
    except Timeout as ex:
        fail("CONN-15", "ERROR HANDSHAKE_REQUIRED", str(ex))
    check(c.wait_closed(2.0), "CONN-15", "connection closed", "still open")
    check(not e.HasField("to_device_id"), "ERR-8",
          "to_device_id absent (peer unknown before HELLO)", e.to_device_id)


@req("CONN-16")
@needs(role="main", wire="v2")
def test_error_before_handshake_closes_without_reply(dut, net):
    c = net.raw(dut)
    c.send_preface()
    c.send(error(c.id, None, "INTERNAL", "test"))
    check(c.wait_closed(2.0), "CONN-16", "connection closed", "still open")
    check(not c.frames, "CONN-16", "no frame in reply (only the preface)", c.summary())


@req("CONN-17")
@needs(role="main", wire="v2")
def test_handshake_deadline_after_prefaces(dut, net):
    """No HELLO: the device sends ERROR HANDSHAKE_REQUIRED and closes at its
    handshake deadline (tolerance: +-50% +-150 ms)."""
    c = net.raw(dut)
    t0 = time.monotonic()
    c.send_preface()
    limit = dut.t["handshake_ms"] / 1000.0
    try:
        e = expect_error(c, "HANDSHAKE_REQUIRED", timeout=limit * 1.5 + 1.0)
    except Timeout as ex:
        fail("CONN-17", "ERROR HANDSHAKE_REQUIRED after %d ms" % dut.t["handshake_ms"], str(ex))
    dt = (c.frames[-1].t - t0) * 1000
    check(within(dt, dut.t["handshake_ms"], TOL, SLACK_MS), "CONN-17",
          "deadline %d ms" % dut.t["handshake_ms"], "%.0f ms" % dt)
    check(c.wait_closed(2.0), "CONN-17", "connection closed", "still open")


@req("CONN-17")
@needs(role="main")
def test_handshake_deadline_no_bytes(dut, net):
    """A connection that sends nothing is closed at the deadline without
    any byte."""
    c = net.raw(dut)
    limit = dut.t["handshake_ms"] / 1000.0
    closed = c.wait_closed(limit * 1.5 + 1.0)
    check(closed, "CONN-17", "closed at the handshake deadline", "still open")
    check(c.bytes_in == 0, "CONN-17", "no byte sent", "%d bytes" % c.bytes_in)


@req("CONN-18", "CONN-19")
@needs(reconfigure="max_connections 3")
def test_connection_limit(make_dut, net):
    d = make_dut(timers={"max_connections": 3})
    held = [net.raw(d) for _ in range(3)]   # in the handshake: they count
    held[0].send_preface()
    c = net.raw(d)
    c.send_preface()
    try:
        expect_error(c, "TOO_MANY_CONNECTIONS", timeout=2.0)
    except Timeout as ex:
        fail("CONN-18", "preface + ERROR TOO_MANY_CONNECTIONS", str(ex))
    check(c.reader.preface == PREFACE, "CONN-18", "the device's preface first",
          repr(c.reader.preface))
    check(c.wait_closed(2.0), "CONN-18", "closed", "still open")
    lg = net.raw(d)
    lg.send_raw(legacy_line(legacy_msg("heartbeat", new_id(), None, {}, 2)))
    check(lg.wait_closed(2.0), "CONN-19", "legacy connection over the limit closed", "open")
    check(lg.bytes_in == 0, "CONN-19", "no byte sent", "%d bytes" % lg.bytes_in)


@req("CONN-20")
@needs(reconfigure="a device the suite shuts down")
def test_graceful_close_goodbye_last(make_dut, net):
    d = make_dut()
    c = net.client(d)
    d.peer.call("shutdown", reason="shutdown")
    check(c.wait_closed(3.0), "CONN-20", "connection closed after shutdown", "still open")
    fr = [f.env for f in c.frames if f.env is not None]
    check(fr and fr[-1].message_type == MT["GOODBYE"], "CONN-20", "GOODBYE as the last frame",
          c.summary())
    check(fr[-1].goodbye.reason != "", "CONN-20", "a reason", repr(fr[-1].goodbye.reason))


@req("CONN-21")
@needs(role="main", wire="v2")
def test_goodbye_received(dut, net):
    c = net.client(dut)
    m = c.mark()
    c.send(goodbye(c.id, dut.device_id, "shutdown"))
    check(c.wait_closed(2.0), "CONN-21", "the device closes the connection", "still open")
    bad = [e for e in c.envs(since=m) if e.message_type not in (MT["HEARTBEAT"],)]
    check(not bad, "CONN-21", "no frame in reply", c.summary(m))
    if dut.kind == "peer":
        ev = dut.peer.wait_event("device", device__id=c.id, device__status="disconnected",
                                 timeout=2)
        check(ev is not None, "CONN-21", "peer marked disconnected (not error)", "no event")


@req("CONN-22")
@needs(role="client", wire="v2", cap="reconnect")
def test_client_reconnect_backoff(client_setup):
    """The client reconnects after the connection closes, waiting at least
    its configured first delay and doubling it."""
    vm, conn, d = client_setup()
    base = d.t["reconnect_ms"]
    times = []
    conn.close()
    t_close = time.monotonic()
    for i in range(3):
        try:
            c2 = vm.accept(timeout=base * (2 ** i) / 1000.0 * 2 + 2, handshake=False)
        except Timeout as ex:
            fail("CONN-22", "reconnect attempt %d" % (i + 1), str(ex))
        times.append(time.monotonic())
        c2.close()
    gaps = [(times[0] - t_close) * 1000] + [(b - a) * 1000 for a, b in zip(times, times[1:])]
    check(gaps[0] >= min(1000, base) * (1 - TOL), "CONN-22",
          "first attempt after >= %d ms" % min(1000, base), "%.0f ms" % gaps[0])
    check(gaps[2] >= gaps[1] * 1.5 - SLACK_MS and gaps[1] >= gaps[0] * 1.5 - SLACK_MS,
          "CONN-22", "delays doubling", "gaps %s ms" % [round(g) for g in gaps])
