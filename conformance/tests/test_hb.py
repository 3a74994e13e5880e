"""Heartbeats and timeouts, measured against the advertised values with
the suite's tolerance (TOL, SLACK_MS in helpers.py) (SPEC 11)."""
import time

import pytest

from helpers import *  # noqa: F401,F403


def _hb_gaps(c, period):
    """Watch for `period` seconds; the heartbeats seen and their gaps (ms)."""
    m = c.mark()
    # The measurement itself: heartbeats are timed over a period derived
    # from the advertised timers (the caller's); nothing to wait for.
    time.sleep(period)   # behaviour under test: the measuring period
    hbs = [f for f in c.frames[m:] if f.env is not None and f.env.message_type == MT["HEARTBEAT"]]
    return hbs, [(b.t - a.t) * 1000 for a, b in zip(hbs, hbs[1:])]


@req("HB-1", "HB-3", "HB-5")
@needs(role="main", wire="v2")
def test_heartbeats_at_advertised_interval(dut, net):
    """Heartbeats every effective interval (its advertised interval, the
    suite's timeout being long), the first within one interval of the
    handshake, directed to the peer, even while other traffic flows."""
    c = net.client(dut)
    iv = c.peer_hello.hello.heartbeat_interval_ms
    iv = min(iv, c.timeout_ms // 2)
    first = c.expect_item(is_type("HEARTBEAT"), iv / 1000.0 * (1 + TOL) + 0.5)
    dt = (first.t - c.handshake_at) * 1000
    check(dt <= iv * (1 + TOL) + SLACK_MS, "HB-5", "first heartbeat within %d ms" % iv,
          "%.0f ms" % dt)
    # Keep other traffic flowing while measuring.
    stop = time.monotonic() + iv / 1000.0 * 6
    while time.monotonic() < stop:
        c.send(order_forward(c.id, to=dut.device_id))
        # Behaviour under test: a steady stream of orders, 4 per advertised
        # heartbeat interval, while heartbeats are measured.
        time.sleep(iv / 4000.0)   # behaviour under test: 4 orders per interval
    hbs = [f for f in c.frames if f.env is not None and f.env.message_type == MT["HEARTBEAT"]]
    gaps = [(b.t - a.t) * 1000 for a, b in zip(hbs, hbs[1:])]
    check(len(gaps) >= 3, "HB-1", "heartbeats while orders flow", "%d heartbeats" % len(hbs))
    bad = [g for g in gaps if not within(g, iv, TOL, SLACK_MS)]
    check(not bad, "HB-1", "gaps of %d ms (+-%d%% +-%d ms)" % (iv, TOL * 100, SLACK_MS),
          "gaps %s ms" % [round(g) for g in gaps])
    for f in hbs:
        check(f.env.WhichOneof("payload") == "heartbeat" and
              f.env.to_device_id.lower() == c.id, "HB-3",
              "heartbeat payload, to_device_id = the peer", describe(f.env))


@req("HB-2")
@needs(role="main", wire="v2")
def test_effective_interval_half_peer_timeout(dut, net):
    """The suite advertises a device timeout of twice 60 % of the device's
    interval: the device must heartbeat every half of that timeout."""
    own = dut.t["heartbeat_ms"]
    to = max(4, int(own * 1.2))
    c = net.client(dut, hb_ms=max(1, to // 4), timeout_ms=to)
    hbs, gaps = _hb_gaps(c, to / 2000.0 * 8)
    want = min(own, to // 2)
    check(len(gaps) >= 3, "HB-2", "heartbeats every %d ms" % want, "%d heartbeats" % len(hbs))
    bad = [g for g in gaps if not within(g, want, TOL, SLACK_MS)]
    check(not bad, "HB-2", "gaps of %d ms = min(own %d, half of %d)" % (want, own, to),
          "gaps %s ms" % [round(g) for g in gaps])


@req("HB-6", "HB-7")
@needs(role="main", wire="v2")
def test_silent_peer_timed_out(dut, net):
    """The suite goes silent after the handshake: the device closes the
    connection after its device_timeout_ms, saying GOODBYE "timeout"."""
    c = net.client(dut, auto_heartbeat=False)
    to = c.peer_hello.hello.device_timeout_ms
    t0 = c.handshake_at
    closed = c.wait_closed(to / 1000.0 * (1 + TOL) + 1.0)
    check(closed, "HB-6", "closed after %d ms of silence" % to, "still open")
    dt = (c.closed_at - t0) * 1000
    check(within(dt, to, TOL, SLACK_MS), "HB-6", "after %d ms" % to, "%.0f ms" % dt)
    gb = c.envs(is_type("GOODBYE"))
    check(gb and gb[-1].goodbye.reason == "timeout", "HB-7", 'GOODBYE "timeout" first',
          c.summary())


@req("HB-8")
@needs(role="main", wire="v2")
def test_any_frame_restarts_timeout(dut, net):
    """No heartbeats, but an order every 40 % of the device's timeout: the
    connection stays open for 1.5 times that timeout."""
    c = net.client(dut, auto_heartbeat=False)
    to = c.peer_hello.hello.device_timeout_ms
    end = time.monotonic() + to / 1000.0 * 1.5
    while time.monotonic() < end:
        c.send(order_forward(c.id, to=dut.device_id))
        # Behaviour under test: one order every 40 % of the advertised
        # device timeout, no heartbeats.
        time.sleep(to / 1000.0 * 0.4)   # behaviour under test: the sending period
        check(not c.closed, "HB-8", "connection kept open by non-heartbeat frames",
              "closed by the device")


@req("HB-9")
@needs(role="main", wire="v2", cap="observe")
def test_activity_report(dut, net):
    """A device that reports activity reports a peer active only while it
    is connected and heard within half its timeout."""
    if dut.kind != "peer":
        not_applicable("the device's activity reports cannot be read")
    c = net.client(dut, auto_heartbeat=False)
    devs = {d["id"]: d for d in dut.peer.devices()}
    d = devs.get(c.id)
    if d is None or "active" not in d:
        not_applicable("the device does not report activity (no 'active' field)")
    check(d["active"], "HB-9", "active right after the handshake", d)
    # Behaviour under test: silence for half the device's timeout (plus the
    # suite's timer slack), after which the peer must no longer be active.
    time.sleep(dut.t["timeout_ms"] / 2000.0 + SLACK_MS / 1000.0)   # behaviour under test
    d = {x["id"]: x for x in dut.peer.devices()}.get(c.id)
    check(not d["active"], "HB-9", "not active after half the timeout of silence", d)


@req("HB-10", "ROUTE-6", "ERR-2")
@needs(role="main", wire="v2", cap="relay")
def test_closed_client_known_not_connected(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    b.send(goodbye(b.id, dut.device_id))
    # The device closes B's connection once it has handled B's GOODBYE
    # (CONN-21): from then on B is known and not connected.
    b.wait_closed(2.0)
    e = order_forward(a.id, to=b.id)
    a.send(e)
    try:
        err = expect_error(a, "DEVICE_OFFLINE", ref=e.message_id, timeout=1.5)
    except Timeout as ex:
        fail("ROUTE-6", "ERROR DEVICE_OFFLINE for a known, disconnected device", str(ex))
    check(err.to_device_id.lower() == a.id, "ROUTE-6", "to the sender", err.to_device_id)
    b2 = net.client(dut, name="B2", device_id=b.id)
    e2 = order_forward(a.id, to=b.id)
    a.send(e2)
    try:
        b2.expect(has_id(e2.message_id), 1.5)
    except Timeout as ex:
        fail("HB-10", "connected again after a new handshake", str(ex))


@req("HB-1", "HB-5", "HB-6")
@needs(role="client", wire="v2")
def test_client_heartbeats_and_timeout(client_setup):
    """The client device heartbeats at its effective interval and times
    out a silent main POS."""
    vm, conn, d = client_setup(vmain_kw={"auto_heartbeat": False, "timeout_ms": 60000})
    iv = min(conn.peer_hello.hello.heartbeat_interval_ms, 30000)
    first = conn.expect_item(is_type("HEARTBEAT"), iv / 1000.0 * (1 + TOL) + 0.5)
    check((first.t - conn.handshake_at) * 1000 <= iv * (1 + TOL) + SLACK_MS, "HB-5",
          "first heartbeat within %d ms" % iv, "%.0f ms" % ((first.t - conn.handshake_at) * 1000))
    to = conn.peer_hello.hello.device_timeout_ms
    closed = conn.wait_closed(to / 1000.0 * (1 + TOL) + 1.0)
    check(closed, "HB-6", "the client closes after %d ms of silence" % to, "still open")
    hbs = [f for f in conn.frames if f.env is not None and f.env.message_type == MT["HEARTBEAT"]]
    gaps = [(b.t - a.t) * 1000 for a, b in zip(hbs, hbs[1:])]
    bad = [g for g in gaps if not within(g, iv, TOL, SLACK_MS)]
    check(not bad, "HB-1", "gaps of %d ms" % iv, [round(g) for g in gaps])
