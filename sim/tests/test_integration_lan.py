"""A venue on loopback: one main POS, two ordering tablets and a KDS, each a
real posp2p-peer process at its own 127.0.x.y address (issue 3, section 6).

Every test builds the four-device topology from scratch with compressed
timers (--heartbeat-ms / --timeout-ms), waits only on events with deadlines
(never fixed sleeps), and shuts the processes down gracefully at the end,
asserting a clean exit (ASan/LSan included when the build has them).

Run with: POSP2P_BUILD_DIR=<build> /usr/bin/python3 -m pytest \
    sim/tests/test_integration_lan.py
"""

import os
import signal
import time

import pytest

from peerctl import Peer, free_port, peer_binary, stop_all

pytestmark = pytest.mark.skipif(not os.path.exists(peer_binary()),
                                reason="posp2p-peer not built at " + peer_binary())

# Compressed timers. HEARTBEAT_MS also sets the tolerance of the timeout
# measurements below (one heartbeat interval).
HEARTBEAT_MS = 250
TIMEOUT_MS = 1500
WAIT = 20.0  # seconds; a deadline, not a delay (two shared cores, ASan)


def order(order_id, table=1):
    """A legacy-shaped orderForward payload (the control channel's form)."""
    return {
        "orderId": order_id,
        "items": [{"productId": "sku-1", "productName": "Pho", "price": 12.5,
                   "quantity": 2, "modifiers": ["no onion"], "variant": "large",
                   "notes": None, "discountPerItem": None}],
        "subtotal": 25.0, "tax": 2.5, "serviceCharge": None, "discount": None,
        "total": 27.5, "orderStatus": "pending", "destination": "orderingTablet",
        "tableNumber": table, "customerName": None, "specialInstructions": None,
        "targetDeliveryTime": None,
    }


class Venue:
    """Main POS, tablet-1, tablet-2 and a KDS at addrs.ip(0..3)."""

    ROLES = [("main", "mainPOS"), ("tablet-1", "orderingTablet"),
             ("tablet-2", "orderingTablet"), ("kds", "kds")]

    def __init__(self, addrs):
        self.addrs = addrs
        self.udp = free_port("udp")
        self.peers = []
        self.by_name = {}

    def start(self, name, dtype, ip, extra=()):
        args = ["--name", name, "--type", dtype, "--bind", ip,
                "--tcp-port", "0", "--udp-port", str(self.udp),
                "--state-dir", "none", "--heartbeat-ms", str(HEARTBEAT_MS),
                "--timeout-ms", str(TIMEOUT_MS), "--ack-timeout-ms", "300",
                "--log-level", "warn"]
        if dtype != "mainPOS":
            args += ["--discover", "--reconnect-ms", "200"]
        p = Peer(*args, *extra, name=name)
        self.peers.append(p)
        self.by_name[name] = p
        return p

    def start_all(self):
        # The main POS first: each client's first discovery request finds
        # it, and each device's start-up ANNOUNCE (DISC-6) introduces it to
        # those already running.
        for i, (name, dtype) in enumerate(self.ROLES):
            self.start(name, dtype, self.addrs.ip(i))
        main = self.main
        for c in self.clients:
            main.wait_event("conn_ready", timeout=WAIT, device__id=c.device_id)
            c.wait_event("conn_ready", timeout=WAIT, device__id=main.device_id)

    @property
    def main(self):
        return self.by_name["main"]

    @property
    def clients(self):
        return [self.by_name[n] for n, _ in self.ROLES[1:]]

    def __getitem__(self, name):
        return self.by_name[name]

    def shutdown(self):
        """Graceful stop of every running device; each must exit 0."""
        for p in self.peers:
            if p.running():
                assert p.terminate() == 0, p.stderr_text()[-2000:]

    def close(self):
        stop_all(self.peers)


@pytest.fixture
def venue(addrs):
    v = Venue(addrs)
    try:
        yield v
    finally:
        v.close()


def deliveries(peer, mtype):
    return [e for e in peer.events("message") if e["type"] == mtype]


@pytest.mark.req("DISC-4", "DISC-5", "DISC-7", "DISC-8", "DISC-16", "TOPO-4",
                 "TOPO-6")
def test_four_devices_discover_each_other(venue):
    """Every device answers discovery requests, so each one's registry holds
    the other three, recorded at their real source address and TCP port;
    the clients find the main POS by discovery and connect to it only."""
    venue.start_all()
    everyone = venue.peers
    expect = {p.device_id: p for p in everyone}

    for p in everyone:
        others = {k: v for k, v in expect.items() if k != p.device_id}
        seen = {}
        deadline = time.monotonic() + WAIT
        # Poll: each discover broadcasts a REQUEST and replies after 400 ms
        # with the registry; answers rate-limited by DISC-10 (a device's own
        # start-up request was answered a moment ago) arrive on a later one.
        while set(seen) != set(others):
            assert time.monotonic() < deadline, \
                "%s sees %s, expected %s" % (p.name, sorted(seen), sorted(others))
            devs = p.call("discover", timeout_ms=400, timeout=WAIT)["devices"]
            seen = {d["id"]: d for d in devs if d["id"] in others}
            assert p.device_id not in {d["id"] for d in devs}   # DISC-8
        for did, d in seen.items():
            o = others[did]
            assert d["type"] == o.ready["type"]
            assert d["name"] == o.name
            assert d["addr"] == o.tcp_addr                        # DISC-7
            assert d["port"] == o.tcp_port
    # The broadcast address is the loopback one (DISC-16).
    assert all(p.ready["broadcast"].startswith("127.255.255.255:") for p in everyone)

    # Star topology: each client is connected to the main POS and to no
    # one else; the main POS to all three.
    main = venue.main
    connected = {d["id"] for d in main.devices() if d["status"] == "connected"}
    assert connected == {c.device_id for c in venue.clients}
    for c in venue.clients:
        mine = [d for d in c.devices() if d["status"] == "connected"]
        assert [d["id"] for d in mine] == [main.device_id]
    venue.shutdown()


@pytest.mark.req("ACK-1", "ACK-3", "ACK-10", "ROUTE-14", "MONEY-6")
def test_order_from_main_to_tablet_is_acknowledged(venue):
    venue.start_all()
    main, tab1, tab2, kds = (venue[n] for n in ("main", "tablet-1", "tablet-2", "kds"))
    r = main.call("send_order", to=tab1.device_id, order=order("A-100", table=7))
    mid = r["message_id"]
    ack = main.wait_event("ack", timeout=WAIT, message_id=mid)
    assert ack["device_id"] == tab1.device_id and not ack["custody"]
    got = tab1.wait_event("message", timeout=WAIT, message_id=mid)
    assert got["type"] == "orderForward" and got["from"] == main.device_id
    assert got["to"] == tab1.device_id
    pl = got["payload"]
    assert pl["orderId"] == "A-100" and pl["tableNumber"] == 7
    assert pl["items"][0]["price"] == 12.5 and pl["total"] == 27.5
    # getSentOrders: acknowledged by the tablet.
    rec = [o for o in main.call("orders")["orders"] if o["message_id"] == mid]
    assert len(rec) == 1
    assert rec[0]["state"] == "acked" and rec[0]["acked_by"] == [tab1.device_id]
    assert rec[0]["order_id"] == "A-100" and rec[0]["failed"] == []
    # Nobody else delivered it; the tablet delivered it once.
    assert len(tab1.events("message", message_id=mid)) == 1
    for p in (tab2, kds):
        assert p.events("message", message_id=mid) == []
    venue.shutdown()


@pytest.mark.req("ROUTE-3", "ROUTE-10", "ACK-13")
def test_status_broadcast_reaches_every_client(venue):
    venue.start_all()
    main = venue.main
    mids = []
    for status in ("preparing", "ready"):
        r = main.call("send_status", order_id="A-200", status=status,
                      reason="kitchen" if status == "preparing" else None)
        mids.append(r["message_id"])
        assert r["sequence"] == len(mids)
    # One broadcast each, acknowledged by each client separately (ACK-13).
    # (Each process's output is read by its own thread: wait for the
    # client's line too, not only for the main POS's ack event.)
    for mid in mids:
        for c in venue.clients:
            main.wait_event("ack", timeout=WAIT, message_id=mid, device_id=c.device_id)
            c.wait_event("message", timeout=WAIT, message_id=mid)
    for c in venue.clients:
        got = deliveries(c, "orderStatus")
        assert [e["message_id"] for e in got] == mids          # once, in order
        assert [e["sequence"] for e in got] == [1, 2]
        assert [e["payload"]["newStatus"] for e in got] == ["preparing", "ready"]
        assert got[0]["to"] is None and got[0]["from"] == main.device_id
    # The main POS does not deliver its own broadcast.
    assert deliveries(main, "orderStatus") == []
    venue.shutdown()


@pytest.mark.req("ROUTE-2", "ROUTE-11", "ACK-5", "MSG-5")
def test_tablet_message_to_kds_is_relayed_by_main(venue):
    venue.start_all()
    main, tab1, kds = venue.main, venue["tablet-1"], venue["kds"]
    relayed_before = main.stats()["relayed"]
    r = tab1.call("send_order", to=kds.device_id, order=order("K-1"))
    mid = r["message_id"]
    got = kds.wait_event("message", timeout=WAIT, message_id=mid)
    # Relayed unchanged: same id, the tablet still the originator (MSG-5).
    assert got["from"] == tab1.device_id and got["to"] == kds.device_id
    assert got["payload"]["orderId"] == "K-1"
    # Acknowledged end to end by the KDS, not by the relay (ROUTE-11, ACK-5).
    ack = tab1.wait_event("ack", timeout=WAIT, message_id=mid)
    assert ack["device_id"] == kds.device_id
    assert [e["device_id"] for e in tab1.events("ack", message_id=mid)] == [kds.device_id]
    assert main.stats()["relayed"] >= relayed_before + 2   # the order and its ack
    assert main.events("message", message_id=mid) == []
    assert venue["tablet-2"].events("message", message_id=mid) == []
    venue.shutdown()


@pytest.mark.req("ROUTE-4", "ACK-13")
def test_order_to_a_device_type_reaches_only_that_type(venue):
    venue.start_all()
    main, kds = venue.main, venue["kds"]
    r = main.call("send_order", to_type="orderingTablet", order=order("T-1"))
    mid = r["message_id"]
    tablets = [venue["tablet-1"], venue["tablet-2"]]
    for t in tablets:
        t.wait_event("message", timeout=WAIT, message_id=mid)
        main.wait_event("ack", timeout=WAIT, message_id=mid, device_id=t.device_id)
    rec = [o for o in main.call("orders")["orders"] if o["message_id"] == mid][0]
    assert rec["to_type"] == "orderingTablet"
    assert sorted(rec["acked_by"]) == sorted(t.device_id for t in tablets)
    assert kds.events("message", message_id=mid) == []
    venue.shutdown()


@pytest.mark.req("ACK-14", "ACK-16", "ROUTE-3")
def test_client_broadcast_is_acked_by_main_and_reaches_the_others(venue):
    venue.start_all()
    main, tab1 = venue.main, venue["tablet-1"]
    r = tab1.call("send", type="productSync", payload={"sku": "sku-9", "price": 4.5})
    mid = r["message_id"]
    for p in (main, venue["tablet-2"], venue["kds"]):
        got = p.wait_event("message", timeout=WAIT, message_id=mid)
        assert got["from"] == tab1.device_id and got["payload"]["sku"] == "sku-9"
    # The originator counts the main POS's ack only (ACK-16) ...
    ack = tab1.wait_event("ack", timeout=WAIT, message_id=mid)
    assert ack["device_id"] == main.device_id
    # ... and the main POS tracks the other recipients in custody (ACK-13/15).
    for p in (venue["tablet-2"], venue["kds"]):
        e = main.wait_event("ack", timeout=WAIT, message_id=mid, device_id=p.device_id)
        assert e["custody"]
    assert tab1.events("message", message_id=mid) == []
    venue.shutdown()


@pytest.mark.req("HB-10", "ROUTE-6", "ROUTE-15")
def test_killed_tablet_is_marked_disconnected_within_the_timeout(venue):
    """kill -9 of a tablet: the main POS must mark it disconnected within its
    device timeout plus a tolerance of one heartbeat interval (in practice
    at once: the kernel closes the dead process's socket). Afterwards the
    tablet is known but offline."""
    venue.start_all()
    main, tab1 = venue.main, venue["tablet-1"]
    mark = main.mark()
    t0 = time.monotonic()
    assert tab1.kill() == -signal.SIGKILL

    def gone(e):
        return (e.get("device", {}).get("id") == tab1.device_id and
                e["event"] in ("device", "device_timeout") and
                e["device"]["status"] in ("disconnected", "error"))
    main.wait_event(gone, since=mark, timeout=(TIMEOUT_MS + HEARTBEAT_MS) / 1000 + WAIT)
    elapsed_ms = (time.monotonic() - t0) * 1000
    limit_ms = TIMEOUT_MS + HEARTBEAT_MS
    assert elapsed_ms <= limit_ms, \
        "marked disconnected after %.0f ms, limit %d ms" % (elapsed_ms, limit_ms)
    rec = [d for d in main.devices() if d["id"] == tab1.device_id]
    assert len(rec) == 1 and rec[0]["status"] in ("disconnected", "error")
    # Known but not connected: an order to it is refused (ROUTE-6) ...
    r = main.call("send_order", check=False, to=tab1.device_id, order=order("X-1"))
    assert not r["ok"] and r["error"] == "POSP2P_ERR_DEVICE_OFFLINE"
    # ... and a client asking the main POS to relay to it gets the error.
    tab2 = venue["tablet-2"]
    r = tab2.call("send_order", to=tab1.device_id, order=order("X-2"))
    fail = tab2.wait_event("delivery_failed", timeout=WAIT, message_id=r["message_id"])
    assert fail["code"] == "POSP2P_ERR_DEVICE_OFFLINE"
    venue.shutdown()


@pytest.mark.req("HB-1", "HB-6", "HB-8", "CONN-22")
def test_silent_tablet_times_out_after_the_device_timeout(venue):
    """A tablet that stops talking without closing its socket (SIGSTOP: the
    connection stays open) is timed out by the main POS. Measured in the main
    POS's own clock: from the last frame heard to the device_timeout event is
    the timeout T, within one heartbeat interval H; and on the test's clock,
    from the stop to the event, between T - H (the last heartbeat may have
    been up to H before the stop) and T + H."""
    venue.start_all()
    main, tab2 = venue.main, venue["tablet-2"]
    # Heartbeats keep idle connections alive (HB-1, HB-8): wait until each
    # client has sent more heartbeats than fit in one timeout (so more than
    # TIMEOUT_MS has passed without application traffic): nobody timed out.
    mark = main.mark()
    per_timeout = TIMEOUT_MS // HEARTBEAT_MS + 1
    main.wait_for(lambda: main.stats()["heartbeats_received"] >= 3 * per_timeout,
                  timeout=WAIT, what="heartbeats from the clients")
    assert main.events("device_timeout") == []
    assert main.events("conn_closed") == []
    tab2.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        ev = main.wait_event("device_timeout", since=mark, timeout=WAIT,
                             device__id=tab2.device_id)
        elapsed_ms = (time.monotonic() - t0) * 1000
    finally:
        tab2.signal(signal.SIGCONT)
    silent_ms = ev["t_ms"] - ev["device"]["last_seen_ms"]
    assert TIMEOUT_MS <= silent_ms <= TIMEOUT_MS + HEARTBEAT_MS, silent_ms
    assert TIMEOUT_MS - HEARTBEAT_MS <= elapsed_ms <= TIMEOUT_MS + HEARTBEAT_MS, elapsed_ms
    # No other device timed out, and the silent one was the only one lost.
    assert [e["device"]["id"] for e in main.events("device_timeout")] == [tab2.device_id]
    main.wait_event("device", since=mark, timeout=WAIT, device__id=tab2.device_id,
                    device__status="disconnected")
    closed = main.wait_event("conn_closed", since=mark, timeout=WAIT,
                             device__id=tab2.device_id)
    assert closed["code"] == "POSP2P_ERR_TIMEOUT"
    # Running again, the tablet reconnects (CONN-22) and is connected anew.
    main.wait_event("conn_ready", since=mark, timeout=WAIT, device__id=tab2.device_id)
    venue.shutdown()
