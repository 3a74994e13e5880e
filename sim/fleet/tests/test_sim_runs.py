"""Short real runs of posp2p-sim (ctest fleet.run.*).

Every run is small and bounded: its own 127.X block and a free discovery
port (no fixed ports: tests run in parallel), compressed timers, and the
simulator's own hard cap plus a subprocess timeout. The binaries come from
$POSP2P_SIM and $POSP2P_PEER (set by CMake), else from $POSP2P_BUILD_DIR.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BUILD = os.environ.get("POSP2P_BUILD_DIR", os.path.join(ROOT, "build", "asan"))
SIM = os.environ.get("POSP2P_SIM", os.path.join(BUILD, "sim", "fleet", "posp2p-sim"))
PEER = os.environ.get("POSP2P_PEER", os.path.join(BUILD, "sim", "peer", "posp2p-peer"))
SCEN = os.path.join(ROOT, "sim", "scenarios")
CHARTS = os.path.join(ROOT, "scripts", "sim-charts.py")

# Fast protocol timers for short runs.
FAST = ["--set", "timers.heartbeat=500ms", "--set", "timers.device_timeout=2s",
        "--set", "timers.ack_timeout=300ms", "--set", "timers.ack_backoff_cap=1s",
        "--set", "timers.announce=500ms", "--set", "timers.reconnect=300ms",
        "--set", "timers.handshake=1500ms",
        "--set", "traffic.prep_time=200ms..800ms", "--set", "traffic.serve_time=100ms..300ms",
        "--set", "traffic.complete_time=100ms..200ms", "--set", "traffic.start=1s",
        "--set", "traffic.ramp_up=0"]

_block = itertools.count()


def net_args():
    """A 127.X.0.0 block and a discovery port no other test uses now."""
    second = 128 + (os.getpid() * 7 + next(_block)) % 120
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["--ip-base", "127.%d.0.0" % second, "--discovery-port", str(port)], port


def run_sim(args, timeout=90):
    r = subprocess.run([SIM, "--no-progress"] + args, capture_output=True, text=True,
                       timeout=timeout)
    return r


def report_of(tmp, name="r.json"):
    with open(os.path.join(tmp, name)) as f:
        return json.load(f)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="fleet-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def assert_clean(r, rep):
    assert r.returncode == 0, r.stdout + r.stderr
    assert rep["result"]["ok"] is True
    assert rep["result"]["violations"] == 0
    assert rep["violations"] == []
    assert "result     0 violations" in r.stdout


def test_help():
    r = subprocess.run([SIM, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for word in ("--scenario", "--target", "--workers", "--report", "Exit status"):
        assert word in r.stdout


def test_small_loopback_run(tmp):
    """20 devices on loopback, discovery by broadcast: 0 violations."""
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    r = run_sim(net + FAST + ["--tablets", "15", "--kds", "2", "--displays", "1",
                              "--secondary", "1", "--duration", "5s", "--order-rate", "1/s",
                              "--workers", "0", "--report", rep_path])
    rep = report_of(tmp)
    assert_clean(r, rep)
    c = rep["counters"]
    assert c["orders_sent"] > 20
    assert c["orders_acked"] == c["orders_sent"]
    assert c["lifecycles_completed"] + c["lifecycles_cancelled"] > 0
    assert rep["result"]["all_connected_ms"] > 0
    lat = rep["latency"]["order_ack"]
    assert lat["count"] == c["orders_acked"]
    assert lat["p50"] <= lat["p99"] <= lat["p99_99"] <= lat["max"]
    assert rep["config"]["fleet"]["orderingTablet"] == 15
    assert len(rep["timeseries"]["t_s"]) >= 5


def test_loss_scenario_small(tmp):
    """5% loss, a partition and a crashed tablet, at small scale: 0 violations."""
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    r = run_sim(net + ["--scenario", os.path.join(SCEN, "loss.scn"),
                       "--tablets", "12", "--duration", "14s",
                       "--set", "timers.device_timeout=2s", "--set", "timers.heartbeat=500ms",
                       "--set", "faults.loss.start=2s", "--set", "faults.loss.end=12s",
                       "--set", "faults.wifi.start=3s", "--set", "faults.wifi.duration=4s",
                       "--set", "faults.crash.start=5s", "--set", "faults.crash.restart_after=2s",
                       "--set", "traffic.prep_time=300ms..1s", "--report", rep_path],
                timeout=120)
    rep = report_of(tmp)
    assert_clean(r, rep)
    c = rep["counters"]
    assert c["fault_frames_dropped"] > 0
    assert c["retransmissions"] > 0
    assert c["device_timeouts"] >= 2       # the partition was noticed
    assert c["kills"] == 1 and c["restarts"] == 1
    assert c["orders_acked"] > 0


def test_bad_scenario_file(tmp):
    path = os.path.join(tmp, "lunch-rush.scn")
    with open(path, "w") as f:
        f.write("[run]\nduration = 5s\n\n[faults.drop]\nkind = drop\ndevices = tablets\n"
                "rate = lots\n")
    r = run_sim(["--scenario", path], timeout=10)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "posp2p-sim: error: %s:7: faults.drop.rate: expected a number between 0 and 1 "
        "(or a percentage), got 'lots'" % path)
    r = run_sim(["--set", "fleet.tablets=many"], timeout=10)
    assert r.returncode == 2
    assert "fleet.tablets: expected an integer" in r.stderr


def test_planted_bug_is_caught(tmp):
    """A test-only fault: the kitchen's application loses orders its engine
    already acknowledged. The sender is never told; the checker must say so."""
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    scn = os.path.join(tmp, "bug.scn")
    with open(scn, "w") as f:
        f.write("[fleet]\ntablets = 6\nkds = 1\ncustomer_displays = 0\nsecondary_pos = 0\n"
                "[faults.bug]\nkind = test_lose_delivered\ndevices = kds\nrate = 0.3\n")
    r = run_sim(net + FAST + ["--scenario", scn, "--duration", "4s", "--order-rate", "2/s",
                              "--report", rep_path])
    assert r.returncode == 1, r.stdout + r.stderr
    rep = report_of(tmp)
    assert rep["result"]["ok"] is False
    assert rep["checker"]["violations_by_kind"]["lost"] > 0
    v = rep["violations"][0]
    assert v["kind"] == "lost"
    assert v["order_id"].startswith("o")
    assert v["device"] == "kds-0" and v["peer"] == "main-0"
    assert len(v["message_id"]) == 36
    assert "VIOLATION" in r.stdout


def test_worker_processes(tmp):
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    r = run_sim(net + FAST + ["--tablets", "24", "--kds", "2", "--displays", "1",
                              "--duration", "4s", "--order-rate", "1/s", "--workers", "2",
                              "--report", rep_path])
    rep = report_of(tmp)
    assert_clean(r, rep)
    assert rep["config"]["workers"] == 2
    assert rep["counters"]["orders_acked"] > 0
    assert rep["gauges"]["rss_kb"]["peak"] > 0


def test_silent_device_timed_out(tmp):
    """A display that stops talking (TCP still open) must be marked
    disconnected by the main POS within its timeout; the checker watches."""
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    scn = os.path.join(tmp, "silent.scn")
    with open(scn, "w") as f:
        f.write("[fleet]\ntablets = 4\nkds = 1\ncustomer_displays = 2\n"
                "[faults.mute]\nkind = silence\ndevices = display[1]\nstart = 2s\nend = 6s\n"
                "[faults.nohb]\nkind = withhold_heartbeats\ndevices = display[0]\n"
                "start = 2s\nend = 6s\n")
    r = run_sim(net + FAST + ["--scenario", scn, "--duration", "7s", "--report", rep_path])
    rep = report_of(tmp)
    assert_clean(r, rep)
    # display-1 went quiet for longer than the 2 s timeout and was timed
    # out; display-0 lost only its heartbeats but still acknowledges the
    # statuses it gets, which keeps it alive (any frame restarts the timer,
    # HB-8): the checker would flag an early timeout.
    assert rep["counters"]["device_timeouts"] >= 1
    assert rep["counters"]["fault_frames_dropped"] > 0


def peer_proc(port, udp):
    return subprocess.Popen([PEER, "--type", "mainPOS", "--bind", "127.0.0.1",
                             "--tcp-port", str(port), "--udp-port", str(udp),
                             "--state-dir", "none", "--control", "none", "--log-level", "error"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.parametrize("wire", ["v2", "legacy"])
def test_target_mode(tmp, wire):
    """No main POS in the fleet: the clients use an external posp2p-peer."""
    net, udp = net_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = peer_proc(port, udp)
    try:
        rep_path = os.path.join(tmp, "r.json")
        r = run_sim(net + FAST + ["--target", "127.0.0.1:%d" % port, "--wire", wire,
                                  "--tablets", "6", "--kds", "2", "--displays", "1",
                                  "--secondary", "0", "--duration", "4s",
                                  "--order-rate", "1/s", "--report", rep_path])
        rep = report_of(tmp)
        assert_clean(r, rep)
        c = rep["counters"]
        assert c["orders_acked"] > 0 and c["orders_failed"] == 0
        assert c["statuses_delivered"] > 0     # the KDS drove the lifecycle via the relay
        assert rep["config"]["target"] == "127.0.0.1:%d" % port
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_watchdog_hard_cap(tmp):
    """A run that cannot drain stops by itself at its hard cap (exit 3)."""
    net, _ = net_args()
    r = run_sim(net + FAST + ["--tablets", "3", "--kds", "1", "--displays", "0",
                              "--duration", "2s", "--max-duration", "4s",
                              "--set", "traffic.prep_time=60s..60s"], timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "watchdog" in r.stderr
    assert "WATCHDOG" in r.stdout


def test_charts(tmp):
    net, _ = net_args()
    rep_path = os.path.join(tmp, "r.json")
    r = run_sim(net + FAST + ["--tablets", "5", "--kds", "1", "--displays", "1",
                              "--duration", "3s", "--report", rep_path])
    assert r.returncode == 0, r.stderr
    out = os.path.join(tmp, "charts")
    c = subprocess.run(["/usr/bin/python3", CHARTS, rep_path, "--out", out],
                       capture_output=True, text=True, timeout=120)
    assert c.returncode == 0, c.stderr
    for name in ("latency.png", "orders.png", "connected.png"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_netns_smoke(tmp):
    """Namespace mode with real subnet broadcast discovery over a bridge."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("not applicable: needs root and ip netns")
    prefix = "p2t%d" % (os.getpid() % 100000)
    script = os.path.join(ROOT, "scripts", "netns.sh")
    rep_path = os.path.join(tmp, "r.json")
    try:
        r = run_sim(FAST + ["--mode", "netns", "--tablets", "10", "--kds", "1",
                            "--displays", "1", "--secondary", "0", "--duration", "4s",
                            "--order-rate", "1/s", "--set", "fleet.namespaces=3",
                            "--set", "network.netns_prefix=%s" % prefix,
                            "--set", "network.subnet=10.%d" % (200 + os.getpid() % 50),
                            "--set", "network.discovery=request", "--report", rep_path],
                    timeout=120)
        rep = report_of(tmp)
        assert_clean(r, rep)
        c = rep["counters"]
        assert c["discovery_requests"] > 0     # found the main POS by broadcast
        assert c["orders_acked"] > 0
        assert rep["config"]["mode"] == "netns"
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix + "-" not in listing, "namespaces left behind"
    finally:
        subprocess.run(["bash", script, "down", "--prefix", prefix], timeout=60)
