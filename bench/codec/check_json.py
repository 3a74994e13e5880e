#!/usr/bin/python3
"""ctest bench.codec.smoke: run posp2p-bench-codec --smoke and check that it
exits 0, prints its table and writes JSON with every expected key. Never
checks a timing: the smoke run only proves the benchmark still works.

usage: check_json.py BENCH_EXE JSON_OUT   (run the benchmark, then check)
       check_json.py --file JSON          (check an existing result file)
"""
import json
import math
import subprocess
import sys

MESSAGES = ["heartbeat", "ack", "typical_order", "large_order"]
STREAMS = ["heartbeat", "ack", "typical_order", "mix"]
# (wire, op, impl, variant) measured for every message.
V2_ROWS = [
    ("v2", "encode", "posp2p", "frame_encode"),
    ("v2", "encode", "protobuf-c", "pack"),
    ("v2", "encode", "google-cpp", "serialize"),
    ("v2", "decode", "posp2p", "malloc"),
    ("v2", "decode", "posp2p", "arena"),
    ("v2", "decode", "posp2p", "unpack-only"),
    ("v2", "decode", "protobuf-c", "unpack+arena"),
    ("v2", "decode", "posp2p", "validate-only"),
    ("v2", "decode", "google-cpp", "reuse"),
    ("v2", "decode", "google-cpp", "arena"),
]
LEGACY_ROWS = [
    ("legacy", "encode", "posp2p", "buf"),
    ("legacy", "decode", "posp2p", "malloc"),
    ("legacy", "decode", "posp2p", "arena"),
]
TOP_KEYS = ["schema", "benchmark", "date", "source_revision", "machine", "build", "config",
            "messages", "results", "ratios", "framing", "streams", "goals"]
MACHINE_KEYS = ["cpu_model", "logical_cpus", "kernel", "load_avg_start",
                "load_avg_end"]
BUILD_KEYS = ["build_type", "c_flags", "c_compiler", "cxx_compiler",
              "optimized", "sanitizers", "representative",
              "protobuf_c_version", "google_protobuf_version"]
CONFIG_KEYS = ["smoke", "iterations", "repeats", "min_time_ms", "arena_block",
               "google_arena_initial_block", "stream_bytes", "filter",
               "legacy_available"]
MESSAGE_KEYS = ["name", "description", "v2_bytes", "v2_frame_bytes",
                "legacy_bytes", "google_reencode_identical",
                "google_space_used_bytes"]
RESULT_KEYS = ["message", "wire", "op", "impl", "variant", "calls", "bytes",
               "iterations", "ns_per_msg", "cpu_ns_per_msg", "mb_per_s", "allocs_per_msg",
               "allocs_bypassing_allocator_per_msg", "alloc_bytes_per_msg", "first_call_allocs"]
FRAMING_KEYS = ["stream", "wire", "impl", "variant", "calls", "frames",
                "bytes", "passes", "frames_per_s", "ns_per_frame",
                "cpu_ns_per_frame", "mb_per_s",
                "allocs_per_frame"]
STAT_KEYS = ["median", "min", "max"]
GOALS = {"typical_decode_ns": "goal_max", "typical_decode_vs_google": "goal_max",
         "small_frames_per_s": "goal_min"}


class Bad(Exception):
    pass


def need(obj, keys, where):
    if not isinstance(obj, dict):
        raise Bad(f"{where}: not an object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise Bad(f"{where}: missing keys {missing}")


def positive(v, where):
    if not isinstance(v, (int, float)) or isinstance(v, bool) \
            or not math.isfinite(v) or v <= 0:
        raise Bad(f"{where}: {v!r} is not a positive number")


def stat(obj, where):
    need(obj, STAT_KEYS, where)
    for k in STAT_KEYS:
        positive(obj[k], f"{where}.{k}")
    if not obj["min"] <= obj["median"] <= obj["max"]:
        raise Bad(f"{where}: not min <= median <= max: {obj}")


def cpu_stat(obj, where):
    """Thread CPU time: may be 0 for a tiny smoke repetition."""
    need(obj, STAT_KEYS, where)
    for k in STAT_KEYS:
        v = obj[k]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise Bad(f"{where}.{k}: {v!r} is not a number >= 0")


def check(doc):
    need(doc, TOP_KEYS, "top level")
    if doc["schema"] != "posp2p-bench-codec/1":
        raise Bad(f"unknown schema {doc['schema']!r}")
    need(doc["machine"], MACHINE_KEYS, "machine")
    need(doc["build"], BUILD_KEYS, "build")
    need(doc["config"], CONFIG_KEYS, "config")
    legacy = doc["config"]["legacy_available"]

    names = [m.get("name") for m in doc["messages"]]
    if names != MESSAGES:
        raise Bad(f"messages {names}, expected {MESSAGES}")
    for m in doc["messages"]:
        need(m, MESSAGE_KEYS, f"messages[{m['name']}]")
        positive(m["v2_bytes"], f"messages[{m['name']}].v2_bytes")
        if legacy:
            positive(m["legacy_bytes"], f"messages[{m['name']}].legacy_bytes")

    rows = {}
    for r in doc["results"]:
        need(r, RESULT_KEYS, "results[]")
        key = (r["message"], r["wire"], r["op"], r["impl"], r["variant"])
        where = "results" + str(list(key))
        stat(r["ns_per_msg"], where + ".ns_per_msg")
        cpu_stat(r["cpu_ns_per_msg"], where + ".cpu_ns_per_msg")
        stat(r["mb_per_s"], where + ".mb_per_s")
        if r["allocs_per_msg"] is None or r["allocs_per_msg"] < 0:
            raise Bad(f"{where}: bad allocs_per_msg {r['allocs_per_msg']}")
        rows[key] = r
    expected = V2_ROWS + (LEGACY_ROWS if legacy else [])
    for m in MESSAGES:
        for w, op, impl, var in expected:
            if (m, w, op, impl, var) not in rows:
                raise Bad(f"results: no row for {m} {w} {op} {impl} {var}")
        # The arena makes steady-state decode allocation-free: a structural
        # property, not a timing, so the smoke test may check it. Legacy
        # decode parses with jansson, whose allocations bypass the
        # ProtobufCAllocator; only the ones through it must be zero there.
        a = rows[(m, "v2", "decode", "posp2p", "arena")]["allocs_per_msg"]
        if a != 0:
            raise Bad(f"{m} v2 arena decode allocates {a} per message")
        if legacy:
            r = rows[(m, "legacy", "decode", "posp2p", "arena")]
            via = r["allocs_per_msg"] - r["allocs_bypassing_allocator_per_msg"]
            if via != 0:
                raise Bad(f"{m} legacy arena decode allocates {via} per "
                          "message through the arena's parent")

    ratio_keys = {(r["message"], r["op"], r["ours"], r["theirs"])
                  for r in doc["ratios"]}
    for r in doc["ratios"]:
        positive(r["ours_over_theirs"], "ratios[]")
        stat(r["paired_rounds"], "ratios[].paired_rounds")
    for m in MESSAGES:
        for op, ours, theirs in [("encode", "frame_encode", "serialize"),
                                 ("decode", "arena", "arena"),
                                 ("decode", "arena", "reuse")]:
            if (m, op, ours, theirs) not in ratio_keys:
                raise Bad(f"ratios: none for {m} {op} {ours}/{theirs}")

    frows = set()
    for r in doc["framing"]:
        need(r, FRAMING_KEYS, "framing[]")
        stat(r["frames_per_s"], f"framing[{r['stream']}].frames_per_s")
        cpu_stat(r["cpu_ns_per_frame"],
                 f"framing[{r['stream']}].cpu_ns_per_frame")
        positive(r["frames"], f"framing[{r['stream']}].frames")
        frows.add((r["stream"], r["wire"], r["impl"], r["variant"]))
    for s in STREAMS:
        want = [("v2", "posp2p", "framing-only"),
                ("v2", "posp2p", "framing+decode"),
                ("v2", "google-cpp", "framing+decode")]
        if legacy:
            want += [("legacy", "posp2p", "framing-only"),
                     ("legacy", "posp2p", "framing+decode")]
        for w, impl, var in want:
            if (s, w, impl, var) not in frows:
                raise Bad(f"framing: no row for {s} {w} {impl} {var}")

    for g, bound in GOALS.items():
        need(doc["goals"].get(g), ["value", bound, "met"], f"goals.{g}")


def main(argv):
    if len(argv) == 3 and argv[1] == "--file":
        path = argv[2]
    elif len(argv) == 3:
        exe, path = argv[1], argv[2]
        proc = subprocess.run([exe, "--smoke", "--json", path],
                              stdout=subprocess.PIPE, text=True, timeout=280)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            print(f"FAIL: {exe} --smoke exited {proc.returncode}")
            return 1
        if "== framing + decode" not in proc.stdout:
            print("FAIL: no table on stdout")
            return 1
    else:
        print(__doc__)
        return 2
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        check(doc)
    except (OSError, ValueError, Bad) as e:
        print(f"FAIL: {path}: {e}")
        return 1
    print(f"OK: {path}: {len(doc['results'])} results, "
          f"{len(doc['framing'])} framing rows, all keys present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
