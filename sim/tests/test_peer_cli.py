"""posp2p-peer as a program: flags, errors, exit codes, signals, the ready
line, the control channel, and two daemons exchanging an order.

Run with: POSP2P_BUILD_DIR=<build> /usr/bin/python3 -m pytest sim/tests/test_peer_cli.py
"""

import os
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest

from peerctl import Peer, PeerError, free_port, loopback_ip, peer_binary, stop_all

BIN = peer_binary()
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

pytestmark = pytest.mark.skipif(not os.path.exists(BIN),
                                reason="posp2p-peer not built at " + BIN)


def run(*args, timeout=15):
    """Run posp2p-peer to completion (stdin closed): (status, stdout, stderr)."""
    p = subprocess.run([BIN] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def base(ip=None, udp=None):
    """Flags of a throwaway device: own address, kernel-chosen TCP port,
    a free UDP port, no state."""
    return ["--bind", ip or loopback_ip(), "--tcp-port", "0",
            "--udp-port", str(udp or free_port("udp")), "--state-dir", "none",
            "--announce-ms", "0", "--log-level", "warn"]


ORDER = {
    "orderId": "A-17",
    "items": [{"productId": "sku-1", "productName": "Pho", "price": 12.5,
               "quantity": 2, "modifiers": ["no onion"], "variant": "large",
               "notes": None, "discountPerItem": None},
              {"productId": "sku-2", "productName": "Tea", "price": 0.1,
               "quantity": 3, "modifiers": [], "variant": None,
               "notes": "hot", "discountPerItem": 0.05}],
    "subtotal": 25.3, "tax": 2.53, "serviceCharge": None, "discount": None,
    "total": 27.83, "orderStatus": "pending", "destination": "kitchenDisplay",
    "tableNumber": 7, "customerName": "Ana", "specialInstructions": None,
    "targetDeliveryTime": None,
}


# ---- flags and errors --------------------------------------------------------

def test_help_lists_every_flag_with_defaults():
    rc, out, err = run("--help")
    assert rc == 0 and err == ""
    for flag in ["--name", "--type", "--id", "--bind", "--tcp-port", "--udp-port",
                 "--broadcast", "--allow-lan-broadcast", "--heartbeat-ms",
                 "--timeout-ms", "--ack-timeout-ms", "--max-retries",
                 "--handshake-ms", "--announce-ms", "--max-frame",
                 "--max-connections", "--wire", "--connect", "--discover",
                 "--state-dir", "--log-format", "--log-level", "--control",
                 "--utc-offset-minutes"]:
        assert flag in out, flag
    for default in ["127.0.0.1", "8766", "8765", "127.255.255.255", "15000",
                    "60000", "2000", "10000", "30000", "1048576", "1024",
                    "./posp2p-state"]:
        assert default in out, default
    assert "255.255.255.255" in out and "--allow-lan-broadcast" in out


def test_bad_type_is_a_usage_error():
    rc, out, err = run("--type", "kdz")
    assert rc == 2 and out == ""
    assert err == ("posp2p-peer: error: --type: unknown device type 'kdz' "
                   "(expected one of mainPOS, orderingTablet, secondaryPOS, "
                   "kds, customerDisplay)\n")


@pytest.mark.parametrize("args,flag", [
    (["--tcp-port", "70000"], "--tcp-port"),
    (["--udp-port", "x"], "--udp-port"),
    (["--id", "not-a-uuid"], "--id"),
    (["--bind", "999.1.1.1"], "--bind"),
    (["--wire", "v3"], "--wire"),
    (["--log-format", "xml"], "--log-format"),
    (["--connect", "127.0.0.1"], "--connect"),
    (["--heartbeat-ms", "5000", "--timeout-ms", "5000"], "--timeout-ms"),
    (["--broadcast", "255.255.255.255"], "--broadcast"),
    (["--bogus"], "--bogus"),
    (["--tcp-port"], "--tcp-port"),
])
def test_bad_flags_exit_2_naming_the_flag(args, flag):
    rc, out, err = run(*args)
    assert rc == 2 and out == ""
    assert err.startswith("posp2p-peer: error: " + flag), err
    assert err.count("\n") == 1


def test_lan_broadcast_needs_the_flag():
    rc, _, err = run("--broadcast", "10.9.9.255", *base())
    assert rc == 2 and "--allow-lan-broadcast" in err


def test_busy_tcp_port_names_address_and_port():
    ip = loopback_ip()
    with Peer(*base(ip), name="first") as first:
        port = first.tcp_port
        rc, out, err = run("--bind", ip, "--tcp-port", port, "--udp-port",
                           free_port("udp"), "--state-dir", "none")
        assert rc == 1 and out == ""
        assert err == ("posp2p-peer: error: bind tcp %s:%d (address already in use)\n"
                       % (ip, port)), err


def test_busy_udp_port_names_address_and_port():
    ip, udp = loopback_ip(), free_port("udp")
    with Peer(*base(ip, udp), name="first"):
        rc, out, err = run(*base(ip, udp))
        assert rc == 1 and out == ""
        assert "bind udp %s:%d" % (ip, udp) in err and "address already in use" in err


def test_bad_state_dir_and_corrupt_store(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, out, err = run(*base()[:-4], "--state-dir", str(f))
    assert rc == 1 and out == ""
    assert err.startswith("posp2p-peer: error: state directory %s" % f), err

    dev = str(uuid.uuid4())
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / (dev + ".sqlite3")).write_bytes(b"not a database" * 300)
    rc, out, err = run(*base()[:-4], "--state-dir", str(tmp_path / "s"), "--id", dev)
    assert rc == 1 and out == ""
    assert "file is not a database" in err and dev + ".sqlite3" in err, err


# ---- lifecycle -------------------------------------------------------------------

def test_ready_line_then_sigterm_exits_0(tmp_path):
    ip, udp = loopback_ip(), free_port("udp")
    state = str(tmp_path / "st")
    with Peer("--type", "kds", "--name", "kitchen", "--bind", ip, "--tcp-port", "0",
              "--udp-port", str(udp), "--state-dir", state) as p:
        r = p.ready
        assert p.lines()[0] is not None and p.lines()[0]["event"] == "ready"
        assert UUID_RE.match(r["device_id"])
        assert r["name"] == "kitchen" and r["type"] == "kds"
        assert r["tcp"] == "%s:%d" % (ip, p.tcp_port) and p.tcp_port > 0
        assert r["udp"] == "%s:%d" % (ip, udp)
        assert r["broadcast"] == "127.255.255.255:%d" % udp
        assert r["wire"] == "auto" and r["state_dir"] == state
        assert os.path.exists(os.path.join(state, r["device_id"] + ".sqlite3"))
        assert p.terminate() == 0
        assert p.events("shutdown_done")


def test_sigint_and_shutdown_command_exit_0():
    with Peer(*base()) as p:
        p.signal(signal.SIGINT)
        assert p.wait_exit() == 0
    with Peer(*base()) as p:
        assert p.shutdown("done") == 0
        assert p.events("shutdown_done")


def test_device_id_is_persisted_per_name(tmp_path):
    state = str(tmp_path)
    with Peer(*base()[:-4], "--state-dir", state, "--name", "till-1") as p:
        first = p.ready["device_id"]
        assert p.terminate() == 0
    with Peer(*base()[:-4], "--state-dir", state, "--name", "till-1") as p:
        assert p.ready["device_id"] == first
        assert p.terminate() == 0
    with Peer(*base()[:-4], "--state-dir", state, "--name", "till-2") as p:
        assert p.ready["device_id"] != first
        assert p.terminate() == 0


def test_control_errors_are_replies():
    with Peer(*base()) as p:
        p.proc.stdin.write(b"this is not json\n")
        p.proc.stdin.flush()
        r = p.call("nope", check=False)
        assert r["ok"] is False and r["error"] == "POSP2P_ERR_INVAL"
        r = p.call("send_order", to="not-a-uuid", order=ORDER, check=False)
        assert r["ok"] is False and r["error"] == "POSP2P_ERR_BAD_ID"
        r = p.call("send", type="nonsense", payload={}, check=False)
        assert r["ok"] is False
        r = p.call("send_order", to=str(uuid.uuid4()), order=ORDER, check=False)
        assert r["ok"] is False and r["error"] == "POSP2P_ERR_UNKNOWN_DEVICE"
        syntax = [l for l in p.lines() if l.get("reply") is None and "error" in l]
        assert syntax and syntax[0]["error"] == "POSP2P_ERR_JSON_SYNTAX"
        assert p.terminate() == 0


# ---- two devices -------------------------------------------------------------------

def pair(udp=None, tab_extra=()):
    udp = udp or free_port("udp")
    main = Peer("--type", "mainPOS", "--name", "main", *base(loopback_ip(), udp),
                "--ack-timeout-ms", "500", name="main")
    tab = Peer("--type", "orderingTablet", "--name", "tab", *base(loopback_ip(), udp),
               "--connect", main.tcp, "--reconnect-ms", "100", *tab_extra,
               name="tab")
    return main, tab


def test_order_status_cancel_between_two_daemons():
    main, tab = pair()
    try:
        main.wait_event("conn_ready", device__id=tab.device_id)
        tab.wait_event("conn_ready", device__id=main.device_id)

        r = main.call("send_order", to=tab.device_id, order=ORDER)
        mid = r["message_id"]
        assert UUID_RE.match(mid) and r["order_id"] == "A-17"
        ev = tab.wait_event("message", message_id=mid)
        assert ev["type"] == "orderForward" and ev["from"] == main.device_id
        assert ev["to"] == tab.device_id
        assert ev["payload"] == ORDER          # legacy shape, amounts exact
        ack = main.wait_event("ack", message_id=mid)
        assert ack["device_id"] == tab.device_id
        orders = main.call("orders")["orders"]
        assert [o["state"] for o in orders if o["message_id"] == mid] == ["acked"]

        r1 = main.call("send_status", to=tab.device_id, order_id="A-17",
                       status="preparing", estimated_time=300)
        r2 = main.call("send_status", to=tab.device_id, order_id="A-17",
                       status="ready", reason="done")
        assert (r1["sequence"], r2["sequence"]) == (1, 2)
        s2 = tab.wait_event("message", message_id=r2["message_id"])
        assert s2["payload"] == {"orderId": "A-17", "newStatus": "ready",
                                 "statusReason": "done", "estimatedTime": None}
        assert s2["sequence"] == 2

        r = main.call("cancel", to=tab.device_id, order_id="A-17",
                      reason="customer left", refund=True)
        c = tab.wait_event("message", message_id=r["message_id"])
        assert c["payload"] == {"orderId": "A-17", "reason": "customer left",
                                "refund": True}

        # By type, and a tablet -> main message of an opaque type.
        r = main.call("send", to_type="orderingTablet", type="productSync",
                      payload={"products": [{"id": "sku-1", "price": 12.5}]})
        ev = tab.wait_event("message", message_id=r["message_id"])
        assert ev["to_type"] == "orderingTablet" and ev["to"] is None
        assert ev["payload"] == {"products": [{"id": "sku-1", "price": 12.5}]}
        r = tab.call("send", to=main.device_id, type="deviceResponse",
                     payload={"ok": True})
        main.wait_event("message", message_id=r["message_id"])
        tab.wait_event("ack", message_id=r["message_id"])

        devs = {d["id"]: d for d in main.devices()}
        assert devs[tab.device_id]["status"] == "connected"
        assert devs[tab.device_id]["type"] == "orderingTablet"
        st = tab.stats()
        assert st["delivered"] >= 5 and st["acks_sent"] >= 5
        assert main.terminate() == 0
        tab.wait_event("device", device__id=main.device_id,
                       device__status="disconnected")
        assert tab.terminate() == 0
    finally:
        stop_all([main, tab])


def test_discover_command_finds_the_main_pos():
    udp = free_port("udp")
    peers = []
    try:
        main = Peer("--type", "mainPOS", *base(loopback_ip(), udp), name="main")
        peers.append(main)
        kds = Peer("--type", "kds", *base(loopback_ip(), udp), name="kds")
        peers.append(kds)
        r = kds.call("discover", timeout_ms=500)
        found = {d["id"]: d for d in r["devices"]}
        assert main.device_id in found
        d = found[main.device_id]
        assert d["type"] == "mainPOS"
        assert "%s:%d" % (d["addr"], d["port"]) == main.tcp
        assert kds.events("device", device__id=main.device_id)
    finally:
        stop_all(peers)


def test_discover_flag_connects_to_the_main_pos():
    udp = free_port("udp")
    peers = []
    try:
        main = Peer("--type", "mainPOS", *base(loopback_ip(), udp), name="main")
        peers.append(main)
        tab = Peer("--type", "orderingTablet", *base(loopback_ip(), udp),
                   "--discover", name="tab")
        peers.append(tab)
        tab.wait_event("conn_ready", device__id=main.device_id, timeout=15)
        main.wait_event("conn_ready", device__id=tab.device_id, timeout=15)
        assert main.terminate() == 0 and tab.terminate() == 0
    finally:
        stop_all(peers)


@pytest.mark.req("CONN-22")
def test_default_reconnect_delay_follows_conn22():
    """Without --reconnect-ms the first reconnect waits at least 1000 ms
    (CONN-22), then doubles."""
    rc, out, _ = run("--help")
    assert "(default: 1000" in out.split("--reconnect-ms", 1)[1].split("--", 1)[0]
    ip = loopback_ip()
    dead = "%s:%d" % (ip, free_port("tcp", ip))  # nothing listens there
    with Peer("--type", "kds", *base(), "--connect", dead, name="kds") as k:
        first = k.wait_event("conn_closed", timeout=5)
        second = k.wait_event(lambda e: e.get("event") == "conn_closed" and e is not first,
                              timeout=5, since=k.lines().index(first) + 1)
        gap = second["t_ms"] - first["t_ms"]
        assert 950 <= gap <= 1800, gap
        assert k.terminate() == 0


@pytest.mark.req("TOPO-4", "DISC-7")
def test_discover_follows_the_main_pos_to_its_new_address():
    """A client that found its main POS by discovery: the main POS restarts
    at another address and port (same device id). The client connects
    there, and stops retrying the old address."""
    udp = free_port("udp")
    peers = []
    old_ip, new_ip = loopback_ip(), loopback_ip()
    mid = str(uuid.uuid4())
    listener = None
    try:
        main = Peer("--type", "mainPOS", "--id", mid, "--bind", old_ip, "--tcp-port", "0",
                    "--udp-port", str(udp), "--state-dir", "none", "--log-level", "warn",
                    name="main")
        peers.append(main)
        old_port = main.tcp_port
        tab = Peer("--type", "orderingTablet", *base(loopback_ip(), udp), "--discover",
                   "--reconnect-ms", "200", name="tab")
        peers.append(tab)
        tab.wait_event("conn_ready", device__id=mid, timeout=15)
        main.kill()
        tab.wait_event("device", device__id=mid, device__status="disconnected", timeout=10)
        # Something answers at the old address: every reconnect attempt
        # there is counted (accepted and closed at once).
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((old_ip, old_port))
        listener.listen(16)
        listener.settimeout(0.05)
        attempts = []

        def drain(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    s, _ = listener.accept()
                    attempts.append(time.monotonic())
                    s.close()
                except socket.timeout:
                    pass

        drain(1.0)
        assert attempts, "the client retries the old address while the main POS is away"
        # Back at a new address and port; it announces itself at start.
        since = tab.mark()
        main2 = Peer("--type", "mainPOS", "--id", mid, "--bind", new_ip, "--tcp-port", "0",
                     "--udp-port", str(udp), "--state-dir", "none", "--log-level", "warn",
                     name="main2")
        peers.append(main2)
        ready = tab.wait_event("conn_ready", device__id=mid, timeout=15, since=since)
        assert ready["device"]["addr"] == new_ip
        assert ready["device"]["port"] == main2.tcp_port
        main2.wait_event("conn_ready", device__id=tab.device_id, timeout=5)
        drain(0.3)  # an attempt that was already under way
        n = len(attempts)
        drain(2.0)  # 200 ms reconnects, doubling: several would come
        assert len(attempts) == n, "still retrying the old address"
        # One connection only (TOPO-4).
        live = [d for d in tab.devices() if d["status"] == "connected"]
        assert [d["id"] for d in live] == [mid]
        assert tab.terminate() == 0
    finally:
        if listener is not None:
            listener.close()
        stop_all(peers)


@pytest.mark.req("ACK-13", "ACK-16")
def test_orders_record_every_recipient_of_a_broadcast():
    """orders: a by-type order stays "partial" while a recipient has not
    acknowledged it, listing who is still pending; "acked" when all have."""
    udp = free_port("udp")
    peers = []
    try:
        main = Peer("--type", "mainPOS", "--name", "main", *base(loopback_ip(), udp),
                    "--ack-timeout-ms", "300", name="main")
        peers.append(main)
        tabs = []
        for n in ("tab1", "tab2"):
            t = Peer("--type", "orderingTablet", "--name", n, *base(loopback_ip(), udp),
                     "--connect", main.tcp, "--reconnect-ms", "100", name=n)
            peers.append(t)
            tabs.append(t)
            main.wait_event("conn_ready", device__id=t.device_id)
        tab1, tab2 = tabs
        tab2.signal(signal.SIGSTOP)  # reads nothing, acknowledges nothing
        r = main.call("send_order", to_type="orderingTablet", order=ORDER)
        mid = r["message_id"]
        main.wait_event("ack", message_id=mid, device_id=tab1.device_id)

        def rec():
            return [o for o in main.call("orders")["orders"] if o["message_id"] == mid][0]

        o = rec()
        assert o["state"] == "partial", o
        assert sorted(o["recipients"]) == sorted([tab1.device_id, tab2.device_id])
        assert o["acked_by"] == [tab1.device_id]
        assert o["pending"] == [tab2.device_id]
        assert o["failed"] == []
        tab2.signal(signal.SIGCONT)
        main.wait_event("ack", message_id=mid, device_id=tab2.device_id, timeout=10)
        o = rec()
        assert o["state"] == "acked" and o["pending"] == []
        assert sorted(o["acked_by"]) == sorted(o["recipients"])
        # A directed order: its one recipient.
        r = main.call("send_order", to=tab1.device_id, order=ORDER)
        main.wait_event("ack", message_id=r["message_id"])
        o = [x for x in main.call("orders")["orders"] if x["message_id"] == r["message_id"]][0]
        assert o["state"] == "acked" and o["recipients"] == [tab1.device_id]
        # Nobody of that type connected: nothing to wait for.
        r = main.call("send_order", to_type="kds", order=ORDER)
        o = [x for x in main.call("orders")["orders"] if x["message_id"] == r["message_id"]][0]
        assert o["state"] == "no_recipients" and o["recipients"] == []
        # A client's broadcast is the main POS's to deliver (ACK-16).
        r = tab1.call("send_order", order=ORDER)
        tab1.wait_event("ack", message_id=r["message_id"])
        o = [x for x in tab1.call("orders")["orders"] if x["message_id"] == r["message_id"]][0]
        assert o["recipients"] == [main.device_id] and o["state"] == "acked"
        for p in peers:
            assert p.terminate() == 0
    finally:
        for p in peers:
            if p.running():
                p.signal(signal.SIGCONT)
        stop_all(peers)


def test_json_logs():
    with Peer(*base()[:-2], "--log-level", "info", "--log-format", "json") as p:
        assert p.terminate() == 0
        import json
        logs = [json.loads(l) for l in p.stderr_text().splitlines() if l.strip()]
        assert logs and all({"t_ms", "level", "msg"} <= set(l) for l in logs)
