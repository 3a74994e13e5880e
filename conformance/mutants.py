#!/usr/bin/python3
"""Mutation test: each posp2p-peer-mutant-<name> breaks one requirement on
purpose (sim/engine/src/mutant.h). For a mutant, run the tests of the
requirement it breaks against it (they must FAIL on that requirement) and
against the clean peer (they must PASS).

    conformance/mutants.py --build-dir build/asan no_ack      # one mutant
    conformance/mutants.py --build-dir build/asan --all       # every mutant
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name: (requirements it breaks (any may be the one reported), -k expression)
MUTANTS = {
    "no_ack": (["ACK-1"], "test_acked_types_acknowledged and ORDER_FORWARD"),
    "late_heartbeat": (["HB-1", "HB-5"], "test_heartbeats_at_advertised_interval"),
    "no_dedup": (["ACK-18"], "test_duplicate_acked_again_delivered_once"),
    "misroute": (["ROUTE-2"], "test_directed_relay_unchanged"),
    "no_disc_response": (["DISC-5"], "test_request_answered"),
    "split_frame": (["FRAME-9"], "test_split_anywhere or test_prefix_split"),
    "ignore_max_frame": (["FRAME-4"], "test_length_above_max_frame"),
    "no_retransmit": (["ACK-7"], "test_retransmission_schedule"),
    "bad_version": (["CONN-12"], "test_no_common_version"),
    "error_loop": (["ERR-5"], "test_error_never_answered_with_error"),
    "own_datagrams": (["DISC-8"], "test_own_datagram_ignored"),
    "no_handshake_deadline": (["CONN-17"], "test_handshake_deadline_after_prefaces"),
}


def run(build, binary, kexpr, rd):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "posp2p-conform"), "-q",
           "--build-dir", build, "--peer-binary", binary, "--report-dir", rd, "-k", kexpr]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    rj = os.path.join(rd, "report.json")
    if not os.path.exists(rj):
        raise RuntimeError("no report from %s\n%s\n%s" % (" ".join(cmd), r.stdout[-3000:],
                                                          r.stderr[-3000:]))
    with open(rj, encoding="utf-8") as f:
        return json.load(f), r


def check(build, name):
    reqs, kexpr = MUTANTS[name]
    out = os.path.join(build, "conformance-mutants", name)
    mut = os.path.join(build, "conformance", "posp2p-peer-mutant-" + name)
    clean = os.path.join(build, "sim", "peer", "posp2p-peer")
    ok = True
    data, r = run(build, mut, kexpr, os.path.join(out, "mutant"))
    verdicts = {q: data["requirements"][q]["verdict"] for q in reqs}
    caught = [q for q, v in verdicts.items() if v == "fail"]
    if caught:
        print("mutant %s: caught on %s (verdicts %s)" % (name, ", ".join(caught), verdicts))
    else:
        ok = False
        print("mutant %s: NOT caught: verdicts %s; tests %s\n%s" % (
            name, verdicts, data["test_counts"], r.stdout[-2000:]))
    data, r = run(build, clean, kexpr, os.path.join(out, "clean"))
    verdicts = {q: data["requirements"][q]["verdict"] for q in reqs}
    if all(v == "pass" for v in verdicts.values()):
        print("clean peer: %s pass" % ", ".join(reqs))
    else:
        ok = False
        print("clean peer FAILS the mutant's tests: %s\n%s" % (verdicts, r.stdout[-2000:]))
    return ok


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args(argv)
    build = os.path.abspath(a.build_dir)
    names = list(MUTANTS) if a.all else a.names
    bad = [n for n in names if n not in MUTANTS]
    if bad or not names:
        print("unknown or no mutant: %s (known: %s)" % (bad, ", ".join(MUTANTS)))
        return 2
    results = {n: check(build, n) for n in names}
    failed = [n for n, ok in results.items() if not ok]
    print("%d/%d mutants caught on their requirement%s" % (
        len(names) - len(failed), len(names), "; FAILED: " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
