#!/usr/bin/python3
"""ctest bench.relay.smoke: run posp2p-bench-relay --smoke and check that
it exits 0, prints its table and writes relay.json in the shape fixed in
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
POINT = ["tablets", "frame_bytes", "ours_frames_per_s", "baseline_frames_per_s",
         "ratio", "latency_us", "mode", "message", "ack_frame_bytes",
         "baseline_latency_us"]


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
    if doc["schema"] != "posp2p-bench-relay/1" or doc["benchmark"] != "relay":
        sys.exit("wrong schema/benchmark")
    if not doc["points"]:
        sys.exit("no points")
    for i, p in enumerate(doc["points"]):
        w = f"points[{i}]"
        need(p, POINT, w)
        number(p["tablets"], w + ".tablets", True)
        number(p["frame_bytes"], w + ".frame_bytes", True)
        for side in ("ours_frames_per_s", "baseline_frames_per_s"):
            need(p[side], ["median", "min", "max"], f"{w}.{side}")
            for k in ("median", "min", "max"):
                number(p[side][k], f"{w}.{side}.{k}", True)
        number(p["ratio"], w + ".ratio", True)
        for lat in ("latency_us", "baseline_latency_us"):
            need(p[lat], ["p50", "p99"], f"{w}.{lat}")
            for k in ("p50", "p99"):
                number(p[lat][k], f"{w}.{lat}.{k}", True)
    g = doc["goals"].get("relay_vs_raw")
    need(g, ["value", "goal_min", "met"], "goals.relay_vs_raw")


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
        if "tablets" not in r.stdout or "goal" not in r.stdout:
            sys.exit("no table printed")
        path = argv[1]
    else:
        sys.exit(__doc__)
    with open(path) as f:
        check(json.load(f))
    print(f"{path}: shape ok")


if __name__ == "__main__":
    main(sys.argv[1:])
