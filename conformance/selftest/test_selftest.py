"""Unit tests of the suite itself: profile parser, Scapy layers, capture
files, requirement verdicts, the posp2p-conform command line."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.dirname(HERE)
ROOT = os.path.dirname(CONF)
sys.path.insert(0, CONF)

from posp2p_conform import capture, profile, report  # noqa: E402
from posp2p_conform.layers import *  # noqa: E402,F401,F403


def write(tmp_path, text, name="profile.ini"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = """[device]
role = kds
wires = v2
[timers]
heartbeat_ms = 100
timeout_ms = 500
"""


@pytest.mark.parametrize("text,line,msg", [
    ("[device]\nrole = kds\n\n# c\n\n\nwires = v2, v3\n", 7,
     "wires: unknown wire 'v3' (expected v2, legacy)"),
    ("[device]\nrole = waiter\n", 2, "role: unknown role 'waiter'"),
    ("[device]\nrole = kds\ncolour = red\n", 3, "colour: unknown key in [device]"),
    ("[device]\nwires = v2\n", 1, "role: missing in [device]"),
    ("[device]\nrole = kds\n[timers]\ntimeout_ms = ten\n", 4, "timeout_ms: 'ten' is not a number"),
    ("[device]\nrole = kds\n[timers]\nheartbeat_ms = 500\ntimeout_ms = 100\n", 5,
     "timeout_ms: must be greater than heartbeat_ms"),
    ("[device]\nrole = kds\nrole = kds\n", 3, "role: given twice (first at line 2)"),
    ("[gadget]\n", 1, "unknown section [gadget]"),
    ("[device]\nrole = kds\ncapabilities = relay, teleport\n", 3,
     "capabilities: unknown capability 'teleport'"),
])
def test_profile_errors(tmp_path, text, line, msg):
    path = write(tmp_path, text)
    with pytest.raises(profile.ProfileError) as ei:
        profile.load(path)
    assert str(ei.value).startswith("%s:%d: %s" % (path, line, msg)), str(ei.value)


def test_profile_good_and_examples(tmp_path):
    p = profile.load(write(tmp_path, GOOD))
    assert p.role == "kds" and p.wires == ["v2"] and p.timers["timeout_ms"] == 500
    for name in os.listdir(os.path.join(CONF, "profiles")):
        profile.load(os.path.join(CONF, "profiles", name))


def test_cli_bad_profile_exit_2(tmp_path):
    path = write(tmp_path, "[device]\nrole = kds\n\n\n\n\nwires = v2, v3\n")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "posp2p-conform"),
                        "--dut", "127.0.0.1", "--profile", path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "%s:7: wires: unknown wire 'v3' (expected v2, legacy)" % path in r.stderr


def test_cli_help():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "posp2p-conform"),
                        "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--profile" in r.stdout and "--strict" in r.stdout


def test_frame_layers_round_trip():
    src = new_id()
    p = P2PFrame() / P2PEnvelope(message_id=new_id(), message_type="HEARTBEAT",
                                 from_device_id=src, priority=2) / P2PHeartbeat(sequence=3)
    data = bytes(p)
    env = parse_envelope(data[1:])
    assert env.heartbeat.sequence == 3 and env.from_device_id == src and env.priority == 2
    q = P2PFrame(data)
    assert q[P2PEnvelope].message_type == MT["HEARTBEAT"]
    assert q[P2PHeartbeat].sequence == 3
    assert q[P2PEnvelope].to_device_id is None       # absent opt_ field
    assert bytes(q) == data


def test_broken_frames_can_be_built():
    lie = bytes(P2PFrame(length=5000) / P2PEnvelope(message_type="HEARTBEAT"))
    assert lie[:2] == varint(5000)
    raw = bytes(P2PFrame(length=b"\x80\x80\x80\x80\x80") / Raw(b"x"))
    assert raw == b"\x80\x80\x80\x80\x80x"


def test_tcp_and_udp_dissection():
    h = hello(new_id())
    pkt = IP(bytes(IP(src="127.0.0.2", dst="127.0.0.3") / TCP(sport=40000, dport=8766) /
                   Raw(PREFACE + frame(h) + frame(heartbeat(h.from_device_id, None, 1)))))
    assert pkt.haslayer(P2PPreface)
    assert pkt[P2PHello].device_id == h.hello.device_id
    d = disc("REQUEST")
    u = IP(bytes(IP() / UDP(sport=5000, dport=8765) / Raw(disc_bytes(d))))
    assert u[P2PDiscoveryDatagram].nonce == d.nonce
    lg = IP(bytes(IP() / UDP(sport=5000, dport=8765) / Raw(legacy_disc_request())))
    assert lg[P2PLegacyDiscovery].deviceName == "Tablet 3"
    ln = IP(bytes(IP() / TCP(sport=5000, dport=8766) /
                  Raw(legacy_line(legacy_msg("heartbeat", new_id())) * 2)))
    assert len(ln[P2PLegacyStream].lines) == 2


def test_capture_file_dissects(tmp_path):
    rec = capture.Recorder("t")
    rec.dut_tcp_ports.add(41000)
    h = hello(new_id())
    rec.tcp(("127.0.0.9", 5555), ("127.0.0.8", 41000), PREFACE + frame(h))
    rec.udp(("127.0.0.9", 5556), ("127.0.0.8", 8765), disc_bytes(disc("REQUEST")))
    path = rec.write(str(tmp_path / "c.pcap"))
    pk = rdpcap(path)
    assert pk[0][TCP].dport == 8766 and pk[0][P2PHello].device_id == h.hello.device_id
    assert pk[1].haslayer(P2PDiscoveryDatagram)


def _res(nid, reqs, outcome, failed=()):
    return {"nodeid": nid, "reqs": list(reqs), "outcome": outcome, "failed_reqs": list(failed)}


def test_requirement_verdicts():
    spec = {"A-1": {"level": "MUST", "text": "", "line": 1},
            "A-2": {"level": "SHOULD", "text": "", "line": 2},
            "A-3": {"level": "MUST", "text": "", "line": 3},
            "A-4": {"level": "MUST", "text": "", "line": 4},
            "A-5": {"level": "MUST", "text": "", "line": 5},
            "A-6": {"level": "MUST", "text": "", "line": 6}}
    res = [_res("t1", ["A-1", "A-3"], "fail", ["A-1"]), _res("t2", ["A-2"], "warning", ["A-2"]),
           _res("t3", ["A-4"], "na"), _res("t4", ["A-5"], "pass")]
    v = report.requirement_verdicts(spec, res, strict=False)
    assert [v[k]["verdict"] for k in sorted(v)] == [
        "fail", "warning", "inconclusive", "not applicable", "pass", "not covered"]
    assert report.requirement_verdicts(spec, res, strict=True)["A-2"]["verdict"] == "fail"


def test_untestable_list_parses():
    u = report.load_untestable()
    assert "FRAME-5" in u and "EXT-5" in u
