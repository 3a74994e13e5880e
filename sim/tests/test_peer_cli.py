"""posp2p-peer as a program: flags, errors, exit codes, signals, the ready
line, the control channel, and two daemons exchanging an order.

Run with: POSP2P_BUILD_DIR=<build> /usr/bin/python3 -m pytest sim/tests/test_peer_cli.py
"""

import os
import re
import signal
import subprocess
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


def test_json_logs():
    with Peer(*base()[:-2], "--log-level", "info", "--log-format", "json") as p:
        assert p.terminate() == 0
        import json
        logs = [json.loads(l) for l in p.stderr_text().splitlines() if l.strip()]
        assert logs and all({"t_ms", "level", "msg"} <= set(l) for l in logs)
