#!/usr/bin/python3
"""posp2p-bench-scaling: connection scaling (issue 7, section 2).

Drives posp2p-sim (real engines on real loopback sockets, worker processes)
once per fleet size and measures, per run:

  connect     power-on to completed handshake per device (the simulator's
              "connect" histogram: median/min/max), and when the last client
              was connected;
  memory      resident memory of the worker processes (the devices; the
              simulator's parent, which only aggregates and checks, is
              reported apart) sampled from /proc at the end of an idle phase,
              divided by the device count; plus the engines' own
              posp2p_peer_memory per device (the report's peak);
  idle CPU    utime+stime of the worker processes over an idle phase with
              heartbeats only (no orders), from /proc/<pid>/stat, as percent
              of one core;
  latency     order acked p50/p90/p99/max (from the intended send time) at a
              fixed total order rate (the same orders/s whatever the fleet
              size, so that only the fleet size changes).

Writes the scaling.json shape fixed in scripts/bench-charts.py and prints a
table. Never fails on a threshold; exit 1 only if a run failed.

Network safety: every device lives in 127.0.0.0/8 (--ip-base), discovery
broadcast goes to 127.255.255.255, every run has a duration and the
simulator's own hard cap (run.max_duration) plus a timeout here.
"""
import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGESIZE")
GOAL_BYTES = 4096


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def proc_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def proc_rss(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return None


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sample(sim_pid):
    """(worker pids, {pid: cpu ticks}, {pid: rss bytes}) of the sim's tree."""
    workers = children(sim_pid)
    pids = [sim_pid] + workers
    cpu = {p: proc_cpu_ticks(p) for p in pids}
    rss = {p: proc_rss(p) for p in pids}
    return workers, cpu, rss


def run_point(args, devices, idx):
    kds, displays, secondary = 2, 1, 1
    if devices < 10:
        raise SystemExit("scaling: at least 10 devices")
    tablets = devices - 1 - kds - displays - secondary
    clients = devices - 1
    workers = 1 + (clients + 3999) // 4000
    spread = max(1.0, devices / 1000.0)
    settle = args.settle
    idle_start = spread + settle
    idle_end = idle_start + args.idle
    traffic = args.traffic
    duration = idle_end + traffic
    per_tablet = args.order_rate / (tablets + secondary)
    ip_base = f"127.{args.ip_second + idx}.0.0"
    disc_port = free_udp_port()
    report = os.path.join(args.tmp, f"sim-{devices}.json")
    cmd = [args.sim, "--tablets", str(tablets), "--kds", str(kds),
           "--displays", str(displays), "--secondary", str(secondary),
           "--workers", str(workers), "--ip-base", ip_base,
           "--discovery-port", str(disc_port),
           "--order-rate", f"{per_tablet:.6g}/s",
           "--duration", f"{duration:.3f}s", "--report", report, "-q",
           "--set", f"traffic.secondary_order_rate={per_tablet:.6g}/s",
           # Cart syncs go to every display by type (O(connections) at the
           # main POS); keep them rare so the order path is what is timed.
           "--set", "traffic.cart_rate=0.0001/s",
           "--set", f"fleet.start_spread={spread:.3f}s",
           "--set", f"traffic.start={idle_end:.3f}s",
           "--set", "traffic.ramp_up=0s",
           "--set", f"timers.heartbeat={args.heartbeat}s",
           "--set", f"timers.device_timeout={4 * args.heartbeat}s",
           "--set", "run.drain=3s",
           "--set", f"run.max_duration={duration + 60:.0f}s"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    notes = []
    first = last = None
    try:
        while time.monotonic() - t0 < idle_start:
            time.sleep(0.05)
        first = sample(proc.pid)
        ta = time.monotonic()
        while time.monotonic() - t0 < idle_end - 0.05:
            time.sleep(0.05)
        last = sample(proc.pid)
        tb = time.monotonic()
        out, err = proc.communicate(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise SystemExit(f"scaling: posp2p-sim with {devices} devices timed out")
    if proc.returncode not in (0, 1):
        sys.stderr.write(err)
        raise SystemExit(f"scaling: posp2p-sim exited {proc.returncode} at {devices} devices")
    with open(report) as f:
        rep = json.load(f)
    res = rep["result"]
    if res.get("violations"):
        notes.append(f"{res['violations']} checker violations")
    acm = res.get("all_connected_ms")
    if acm is None or acm / 1000.0 > idle_start:
        notes.append(f"not all clients connected before the idle phase "
                     f"(all connected at {acm} ms, idle from {idle_start * 1000:.0f} ms)")
    wpids = [p for p in last[0] if p in first[0]]
    if len(wpids) != workers:
        notes.append(f"expected {workers} workers, sampled {len(wpids)}")
    secs = tb - ta

    def cpu_pct(pids):
        ticks = sum((last[1][p] or 0) - (first[1][p] or 0) for p in pids)
        return 100.0 * ticks / CLK_TCK / secs

    sim_pid = proc.pid
    worker_rss = sum(last[2][p] or 0 for p in wpids)
    lat = rep["latency"]["order_ack"]
    con = rep["latency"]["connect"]
    hb_ticks = args.idle / args.heartbeat
    point = {
        "devices": devices,
        "tablets": tablets,
        "workers": workers,
        "connect_s": {"median": con["p50"] / 1e6, "min": con["min"] / 1e6,
                      "max": con["max"] / 1e6},
        "all_connected_s": (acm / 1000.0) if acm is not None else None,
        "start_spread_s": spread,
        "rss_bytes_per_device": round(worker_rss / devices, 1),
        "rss_workers_bytes": worker_rss,
        "rss_parent_bytes": last[2][sim_pid],
        "engine_bytes_per_device": rep["resources"]["engine_bytes_per_device"],
        "idle_cpu_percent": round(cpu_pct(wpids), 3),
        "idle_cpu_percent_parent": round(cpu_pct([sim_pid]), 3),
        "idle_window_s": round(secs, 3),
        "heartbeats_in_window_per_link": round(hb_ticks, 2),
        "order_rate_per_s": args.order_rate,
        "orders_acked": lat["count"],
        "ack_latency_us": {"p50": lat["p50"], "p90": lat["p90"],
                           "p99": lat["p99"], "max": lat["max"]},
        "max_fds_one_process": rep["resources"]["max_fds_one_process"],
        "retransmissions": rep["counters"].get("retransmissions"),
        "sim_exit": proc.returncode,
        "sim_wall_s": res["wall_s"],
        "notes": notes,
    }
    return point


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(),
            "kernel": platform.release(),
            "load_avg_start": os.getloadavg()[0]}


def main(argv):
    ap = argparse.ArgumentParser(
        prog="posp2p-bench-scaling",
        description="Connection scaling: drives posp2p-sim per fleet size "
                    "(see bench/README.md).")
    ap.add_argument("--sim", required=True, help="posp2p-sim binary")
    ap.add_argument("--build-type", default="?")
    ap.add_argument("--c-flags", default="")
    ap.add_argument("--sanitize", default="0")
    ap.add_argument("--devices", default="100,1000,5000,10000",
                    help="comma-separated fleet sizes (>= 10 each)")
    ap.add_argument("--idle", type=float, default=16.0,
                    help="idle phase (heartbeats only), seconds")
    ap.add_argument("--heartbeat", type=float, default=15.0,
                    help="heartbeat interval, seconds (SPEC default 15)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds after the start spread before the idle phase")
    ap.add_argument("--traffic", type=float, default=15.0,
                    help="order phase, seconds")
    ap.add_argument("--order-rate", type=float, default=50.0,
                    help="total orders/s offered by the whole fleet")
    ap.add_argument("--ip-second", type=int, default=60,
                    help="first device block 127.N.0.0 (one block per point)")
    ap.add_argument("--smoke", action="store_true",
                    help="12 devices, seconds: checks that it runs")
    ap.add_argument("--json", help="write results here")
    a = ap.parse_args(argv)
    if a.smoke:
        a.devices, a.idle, a.heartbeat, a.settle, a.traffic = "12", 1.5, 0.5, 1.5, 2.0
        a.order_rate = 10.0
    sizes = [int(x) for x in a.devices.split(",") if x]
    optimized = a.build_type in ("Release", "RelWithDebInfo", "MinSizeRel")
    sanitized = a.sanitize not in ("0", "OFF", "", "FALSE")
    mach = machine()
    points = []
    with tempfile.TemporaryDirectory(prefix="posp2p-bench-scaling-") as tmp:
        a.tmp = tmp
        for i, n in enumerate(sizes):
            sys.stderr.write(f"scaling: {n} devices ...\n")
            points.append(run_point(a, n, i))
    mach["load_avg_end"] = os.getloadavg()[0]
    # The goal is about an idle device; the largest fleet amortizes the
    # per-process fixed costs best, so it is the fair number to hold to it.
    best = points[-1]["rss_bytes_per_device"]
    doc = {
        "schema": "posp2p-bench-scaling/1", "benchmark": "scaling",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_revision": os.environ.get("POSP2P_BENCH_GIT", "unknown"),
        "machine": mach,
        "build": {"build_type": a.build_type, "c_flags": a.c_flags,
                  "optimized": optimized, "sanitizers": sanitized,
                  "representative": optimized and not sanitized},
        "config": {"smoke": a.smoke, "devices": sizes, "idle_s": a.idle,
                   "heartbeat_s": a.heartbeat, "traffic_s": a.traffic,
                   "order_rate_per_s": a.order_rate,
                   "fleet": "1 main POS, 2 KDS, 1 display, 1 secondary POS, rest tablets",
                   "workers": "1 for the main POS + KDS/displays, 1 per 4,000 clients",
                   "sim": a.sim},
        "points": points,
        "goals": {"rss_bytes_per_device": {"value": best, "goal_max": GOAL_BYTES,
                                           "met": best <= GOAL_BYTES}},
    }
    hdr = (f"{'devices':>8} {'connect p50/max s':>18} {'all conn s':>10} "
           f"{'RSS/dev KiB':>11} {'engine/dev KiB':>14} {'idle CPU %':>10} "
           f"{'orders/s':>8} {'ack p50/p90/p99/max ms':>26}")
    print("connection scaling (posp2p-sim, loopback, Release)" if optimized
          else f"connection scaling (posp2p-sim, {a.build_type}: NOT representative)")
    print(hdr)
    for p in points:
        c, l = p["connect_s"], p["ack_latency_us"]
        acs = p["all_connected_s"]
        print(f"{p['devices']:>8} {c['median']:>8.2f} / {c['max']:<7.2f} "
              f"{(acs if acs is not None else float('nan')):>10.2f} "
              f"{p['rss_bytes_per_device'] / 1024:>11.1f} "
              f"{p['engine_bytes_per_device'] / 1024:>14.1f} "
              f"{p['idle_cpu_percent']:>10.2f} {p['order_rate_per_s']:>8.0f} "
              f"{l['p50'] / 1e3:>6.2f}/{l['p90'] / 1e3:.2f}/{l['p99'] / 1e3:.2f}/"
              f"{l['max'] / 1e3:.2f}")
        for n in p["notes"]:
            print(f"{'':>8} note: {n}")
    g = doc["goals"]["rss_bytes_per_device"]
    print(f"goal: <= {GOAL_BYTES} B resident per idle device: "
          f"{g['value']:.0f} B at {points[-1]['devices']} devices -> "
          f"{'met' if g['met'] else 'NOT met'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
