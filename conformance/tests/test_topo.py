"""Topology and multi-party scenarios: roles, one connection per client,
no client-to-client connections, stable ids, late joiners, silent clients
(SPEC 3, and multi-party checks of 10 to 12)."""
import os
import tempfile
import time

import pytest

from helpers import *  # noqa: F401,F403
from posp2p_conform.vdev import UdpProbe, V2Main


@req("TOPO-1", "TOPO-4", "HELLO-5", "HELLO-2")
@needs(role="client", wire="v2")
def test_client_role_and_single_connection(client_setup):
    """The client's HELLO names one of the four client roles; it keeps one
    connection to the main POS (no second one appears)."""
    vm, conn, d = client_setup()
    h = conn.peer_hello
    check(h.hello.device_type in (2, 3, 4, 5), "TOPO-1", "a client role (2..5)",
          h.hello.device_type)
    check(h.from_device_id == h.hello.device_id, "HELLO-2", "from = hello.device_id",
          h.from_device_id)
    try:
        vm.accept(timeout=connect_window(d), handshake=False)
        second = True
    except Timeout:
        second = False
    check(not second, "TOPO-4", "at most one connection", "a second connection")


@req("TOPO-5")
@needs(role="client", wire="v2", discovery=True)
def test_client_does_not_connect_to_client(client_setup, net):
    """Another client announces itself (with a data port): the client under
    test does not connect to it."""
    vm, conn, d = client_setup()
    other = net.add(V2Main(name="other-client"))
    u = UdpProbe(ip=other.addr[0])
    for kind in ("ANNOUNCE", "RESPONSE"):
        u.send(disc_bytes(disc(kind, device_id=new_id(), dtype="ORDERING_TABLET",
                               tcp_port=other.addr[1])), (d.host, d.udp_port))
    u.close()
    try:
        other.accept(timeout=connect_window(d), handshake=False)
        connected = True
    except Timeout:
        connected = False
    check(not connected, "TOPO-5", "no connection to another client", "it connected")


@req("TOPO-7")
@needs(reconfigure="a device restarted with its state directory")
def test_same_id_across_restarts(make_dut):
    with tempfile.TemporaryDirectory() as sd:
        d1 = make_dut(extra=["--state-dir", sd])
        id1 = d1.device_id
        d1.stop()
        d2 = make_dut(extra=["--state-dir", sd])
        check(d2.device_id == id1, "TOPO-7", "the same device id after a restart (%s)" % id1,
              d2.device_id)


@req("ACK-1", "ACK-3", "ACK-4", "ACK-2")
@needs(role="client", wire="v2")
def test_client_acknowledges(client_setup):
    vm, conn, d = client_setup()
    e = order_forward(conn.id, to=d.device_id)
    t0 = time.monotonic()
    conn.send(e)
    try:
        it = conn.expect_item(acks(e.message_id), 1.5)
    except Timeout as ex:
        fail("ACK-1", "the client acknowledges an order", str(ex))
    check((it.t - t0) * 1000 <= 1000, "ACK-4", "within 1000 ms", it.t - t0)
    check(it.env.to_device_id.lower() == conn.id, "ACK-3", "to the originator",
          it.env.to_device_id)
    hb = heartbeat(conn.id, d.device_id, 1)
    conn.send(hb)
    sync(conn, d.device_id)   # an ACK of the heartbeat would arrive before the barrier's
    got = next(iter(conn.envs(acks(hb.message_id))), None)
    check(got is None, "ACK-2", "heartbeat not acknowledged", err_summary(got))


@req("ACK-7", "ACK-8", "ACK-16", "ROUTE-10")
@needs(role="client", wire="v2", upper="send_order", cap="retransmit")
def test_client_retransmits_until_main_acks(client_setup):
    """The client's broadcast order: the suite (as main POS) withholds its
    ack, the client retransmits it unchanged after its ack timeout; once
    the main POS acks, it stops."""
    vm, conn, d = client_setup(vmain_kw={"auto_ack": False})
    d.upper.send_order(to=None)
    first = conn.expect_item(is_type("ORDER_FORWARD"), 2.0)
    at = d.t["ack_timeout_ms"]
    m = conn.mark()
    try:
        it = conn.expect_item(has_id(first.env.message_id), at / 1000.0 * (1 + TOL) + 0.5,
                              since=m)
    except Timeout as ex:
        fail("ACK-7", "a retransmission after %d ms" % at, str(ex))
    check(it.raw == first.raw, "ACK-7", "the same frame", describe(it.env))
    check(within((it.t - first.t) * 1000, at, TOL, SLACK_MS), "ACK-7", "after %d ms" % at,
          "%.0f ms" % ((it.t - first.t) * 1000))
    conn.send(ack(conn.id, d.device_id, first.env.message_id))
    # Copies the client sent before it handled the ack arrive before the
    # barrier's ACK; after it, only the next retransmission could come.
    n = sync(conn, d.device_id)
    sent = len(conn.envs(has_id(first.env.message_id)))
    got = conn.expect_none(has_id(first.env.message_id), retx_window(d, sent), n)
    check(got is None, "ACK-16", "no retransmission once the main POS acknowledged",
          err_summary(got))


@req("ACK-11")
@needs(role="client", wire="v2", upper="send_order", cap="retransmit")
def test_client_stops_on_unknown_device(client_setup):
    vm, conn, d = client_setup(vmain_kw={"auto_ack": False})
    d.upper.send_order(to=new_id())
    e = conn.expect(is_type("ORDER_FORWARD"), 2.0)
    conn.send(error(conn.id, d.device_id, "UNKNOWN_DEVICE", "who?", ref=e.message_id))
    # Copies the client sent before it handled the ERROR arrive before the
    # barrier's ACK; after it, only the next retransmission could come.
    n = sync(conn, d.device_id)
    sent = len(conn.envs(has_id(e.message_id)))
    got = conn.expect_none(has_id(e.message_id), retx_window(d, sent), n)
    check(got is None, "ACK-11", "no retransmission after UNKNOWN_DEVICE", err_summary(got))


@req("ACK-13", "ROUTE-3")
@needs(role="main", wire="v2", cap="relay")
def test_late_joiner(dut, net):
    """C joins after A's broadcast: C does not get it (recipients are those
    connected at the time) but gets A's next one; A can reach C directly."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    e1 = order_forward(a.id)
    a.send(e1)
    b.expect(has_id(e1.message_id), 1.5)
    c = net.client(dut, name="C-late")
    e2 = order_forward(a.id)
    a.send(e2)
    try:
        c.expect(has_id(e2.message_id), 1.5)
    except Timeout as ex:
        fail("ROUTE-3", "the late joiner gets the next broadcast", str(ex))
    check(not c.envs(has_id(e1.message_id)), "ACK-13",
          "the earlier broadcast not sent to a device that joined later", c.summary())
    e3 = order_forward(a.id, to=c.id)
    a.send(e3)
    c.expect(has_id(e3.message_id), 1.5)


@req("HB-6", "HB-10", "ROUTE-6")
@needs(role="main", wire="v2", cap="relay")
def test_silent_client_seen_by_others(dut, net):
    """B goes silent: after the main POS's timeout, A's message to B gets
    DEVICE_OFFLINE."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B", auto_heartbeat=False)
    to = b.peer_hello.hello.device_timeout_ms
    check(b.wait_closed(to / 1000.0 * (1 + TOL) + 1.0), "HB-6", "B timed out", "still open")
    e = order_forward(a.id, to=b.id)
    a.send(e)
    try:
        expect_error(a, "DEVICE_OFFLINE", ref=e.message_id, timeout=1.5)
    except Timeout as ex:
        fail("HB-10", "B known but not connected after its timeout", str(ex))


@req("HELLO-13", "ROUTE-2")
@needs(role="main", wire="v2", cap="relay")
def test_two_devices_claim_same_id(dut, net):
    """Two devices claim the same id: the newer connection wins, messages
    for that id go to it, the older one is told and closed."""
    a = net.client(dut, name="A")
    x1 = net.client(dut, name="X-old")
    x2 = net.client(dut, name="X-new", device_id=x1.id)
    expect_error(x1, "DUPLICATE_DEVICE_ID", timeout=1.5)
    e = order_forward(a.id, to=x1.id)
    a.send(e)
    try:
        x2.expect(has_id(e.message_id), 1.5)
    except Timeout as ex:
        fail("HELLO-13", "messages for the id go to the newer connection", str(ex))
    check(not x1.envs(has_id(e.message_id)), "HELLO-13", "not to the older one", x1.summary())
