"""The live fuzzer's failure path (scripts/posp2p-livefuzz, issue 6 section 4).

fuzz.live.smoke shows that a healthy device survives; these tests show that
a device that stops answering is caught, that the failure file replays the
failure, and that --minimize cuts it down to the input that causes it:

- posp2p-peer-mutant-wedge_on_oversize (sim/engine/src/mutant.h) accepts TCP
  connections but never answers a preface after it has seen one oversize
  frame; it still answers discovery, so this also proves that a device is
  held to every probe it passed before the run;
- a clean posp2p-peer given as --dut and killed while the fuzzer runs.

Run: POSP2P_BUILD_DIR=build/asan /usr/bin/python3 -m pytest fuzz/tests
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sim", "tests"))
import peerctl  # noqa: E402

BUILD = peerctl.build_dir()
TOOL = os.path.join(ROOT, "scripts", "posp2p-livefuzz")
MUTANT = os.path.join(BUILD, "conformance", "posp2p-peer-mutant-wedge_on_oversize")
# Compressed probe timeout: a wedged device is declared dead after 2 s. A
# healthy one answers on loopback in milliseconds; 2 s leaves room for a
# loaded CI machine, where a spurious timeout would mislead --minimize.
LIVE = ["--live-timeout", "2"]


def livefuzz(*args, timeout=180):
    return subprocess.run([sys.executable, TOOL, "--build-dir", BUILD, *LIVE, *args],
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path):
    with open(path) as f:
        rows = [json.loads(x) for x in f if x.strip()]
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def mutant():
    if not os.access(MUTANT, os.X_OK):
        pytest.fail("%s not built (target posp2p-peer-mutant-wedge_on_oversize)" % MUTANT)
    return MUTANT


def test_wedged_device_caught_replayed_and_minimized(mutant, tmp_path):
    out = tmp_path / "sub" / "failure.jsonl"     # the directory does not exist yet
    r = livefuzz("--peer-binary", mutant, "--count", "1000", "--batch", "25",
                 "--seed", "1", "--seconds", "60", "--out", str(out), "--minimize",
                 "--minimize-seconds", "120")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DEVICE NOT ANSWERING" in r.stdout
    # It still answered discovery: only the probe it stopped passing fails.
    assert "no v2 handshake" in r.stdout, r.stdout

    header, inputs = read_jsonl(out)
    assert header["seed"] == 1 and header["failure"].startswith("no v2 handshake")
    assert 0 < len(inputs) <= 50                 # the failing batch and the one before
    assert any("oversize" in i["mut"] for i in inputs)
    assert all(set(i) >= {"kind", "wire", "mut", "hex"} for i in inputs)

    mheader, small = read_jsonl(str(out).replace(".jsonl", ".min.jsonl"))
    assert mheader["one_minimal"] is True and mheader["minimized_from"] == len(inputs)
    assert len(small) == 1 and "oversize" in small[0]["mut"], small

    # The minimized input wedges a fresh mutant again ...
    r = livefuzz("--peer-binary", mutant, "--replay", str(out).replace(".jsonl", ".min.jsonl"))
    assert r.returncode == 1 and "DEVICE NOT ANSWERING" in r.stdout, r.stdout + r.stderr
    # ... and the whole failure file does not hurt the clean peer.
    r = livefuzz("--replay", str(out))
    assert r.returncode == 0 and "device still answering" in r.stdout, r.stdout + r.stderr


def start_dut(name, *extra):
    """A clean posp2p-peer main POS on its own loopback address, for --dut;
    returns (peer, the --dut/--udp-port arguments)."""
    host = peerctl.loopback_ip()
    udp = peerctl.free_port("udp", host)
    peer = peerctl.Peer("--type", "mainPOS", "--name", name, "--bind", host,
                        "--tcp-port", "0", "--udp-port", str(udp), "--state-dir", "none",
                        "--broadcast", "127.255.255.255", "--announce-ms", "0",
                        "--log-level", "warn", *extra, name=name)
    return peer, ["--dut", "%s:%d" % (host, int(peer.ready["tcp_port"])),
                  "--udp-port", str(udp)]


def test_killed_dut_caught(tmp_path):
    out = tmp_path / "killed.jsonl"
    dut, dut_at = start_dut("killed-dut")
    with dut:
        proc = subprocess.Popen([sys.executable, "-u", TOOL, "--build-dir", BUILD, *LIVE, *dut_at,
                                 "--count", "100000", "--batch", "10", "--seconds", "120",
                                 "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            seen = []
            deadline = time.monotonic() + 60
            for line in proc.stdout:                 # wait for one healthy batch
                seen.append(line)
                if "batch 1:" in line:
                    break
                assert time.monotonic() < deadline, "".join(seen)
            assert any("batch 1:" in x for x in seen), "".join(seen) + proc.stderr.read()
            dut.signal(signal.SIGKILL)
            rest, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, rest + err
    assert "DEVICE NOT ANSWERING" in rest and "no v2 handshake" in rest, rest
    header, inputs = read_jsonl(out)
    assert header["batch"] >= 2 and inputs


def test_legacy_only_device_is_probed_on_its_wire(tmp_path):
    """A device whose TCP side speaks only the legacy wire (posp2p-peer
    --wire legacy; it still answers v2 discovery datagrams) is held to the
    probes it passes, the legacy acknowledgement among them, and one that
    answers nothing is refused before fuzzing."""
    dut, dut_at = start_dut("legacy-dut", "--wire", "legacy")
    with dut:
        r = livefuzz(*dut_at, "--count", "100", "--batch", "50", "--seed", "4")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "alive (discovery answer + legacy acknowledgement + legacy discovery answer)" \
            in r.stdout, r.stdout
        dut.signal(signal.SIGSTOP)       # hung, not gone: only the probes can tell
        try:
            r = livefuzz(*dut_at, "--replay", str(tmp_path / "none.jsonl"))
            assert r.returncode == 2 and "no answer to any probe" in r.stderr, \
                r.stdout + r.stderr
        finally:
            dut.signal(signal.SIGCONT)


def test_usage_errors(tmp_path):
    r = livefuzz("--dut", "10.0.0.1")
    assert r.returncode == 2 and "loopback only" in r.stderr, r.stderr
    r = livefuzz("--dut", "127.0.0.1:1", "--minimize")
    assert r.returncode == 2 and "not with --dut" in r.stderr, r.stderr
    r = livefuzz("--peer-binary", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not an executable" in r.stderr, r.stderr
