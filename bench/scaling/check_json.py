#!/usr/bin/python3
"""ctest bench.scaling.smoke: run posp2p-bench-scaling --smoke and check that
it exits 0, prints its table and writes scaling.json in the shape fixed in
scripts/bench-charts.py. Never checks a timing or a memory figure.

usage: check_json.py BENCH_EXE JSON_OUT   (run the benchmark, then check)
       check_json.py --file JSON          (check an existing result file)
"""
import json
import math
import subprocess
import sys

TOP = ["schema", "benchmark", "date", "source_revision", "machine", "build",
       "config", "points", "goals"]
POINT = ["devices", "connect_s", "rss_bytes_per_device", "idle_cpu_percent",
         "order_rate_per_s", "ack_latency_us", "engine_bytes_per_device",
         "all_connected_s", "notes"]


def need(obj, keys, where):
    if not isinstance(obj, dict):
        sys.exit(f"{where}: not an object")
    missing = [k for k in keys if k not in obj]
    if missing:
        sys.exit(f"{where}: missing keys {missing}")


def number(v, where, positive=False):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
            or v < 0 or (positive and v == 0):
        sys.exit(f"{where}: {v!r} is not a {'positive' if positive else 'non-negative'} number")


def check(doc):
    need(doc, TOP, "top")
    if doc["schema"] != "posp2p-bench-scaling/1" or doc["benchmark"] != "scaling":
        sys.exit("wrong schema/benchmark")
    if not doc["points"]:
        sys.exit("no points")
    for i, p in enumerate(doc["points"]):
        w = f"points[{i}]"
        need(p, POINT, w)
        number(p["devices"], w + ".devices", True)
        need(p["connect_s"], ["median", "min", "max"], w + ".connect_s")
        for k in ("median", "min", "max"):
            number(p["connect_s"][k], f"{w}.connect_s.{k}", True)
        number(p["rss_bytes_per_device"], w + ".rss_bytes_per_device", True)
        number(p["idle_cpu_percent"], w + ".idle_cpu_percent")
        number(p["order_rate_per_s"], w + ".order_rate_per_s", True)
        need(p["ack_latency_us"], ["p50", "p90", "p99", "max"], w + ".ack_latency_us")
        for k in ("p50", "p90", "p99", "max"):
            number(p["ack_latency_us"][k], f"{w}.ack_latency_us.{k}", True)
    g = doc["goals"].get("rss_bytes_per_device")
    need(g, ["value", "goal_max", "met"], "goals.rss_bytes_per_device")


def main(argv):
    if len(argv) == 2 and argv[0] == "--file":
        path = argv[1]
    elif len(argv) == 2:
        r = subprocess.run([argv[0], "--smoke", "--json", argv[1]], capture_output=True,
                           text=True, timeout=110)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        if r.returncode != 0:
            sys.exit(f"benchmark exited {r.returncode}")
        if "devices" not in r.stdout or "goal" not in r.stdout:
            sys.exit("no table printed")
        path = argv[1]
    else:
        sys.exit(__doc__)
    with open(path) as f:
        check(json.load(f))
    print(f"{path}: shape ok")


if __name__ == "__main__":
    main(sys.argv[1:])
