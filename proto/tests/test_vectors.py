"""Golden vectors: Google's protobuf (Python) against the posp2p C codec.

For every `ok` v2 vector, the frame is decoded with Google's protobuf
(Envelope.FromString, then json_format.MessageToDict) and with the C codec
(posp2p-dump, which prints the same proto3 JSON mapping), and the two are
compared field by field; Python's re-serialisation must give back the
committed bytes. Every `ok` legacy vector is decoded by the C legacy codec and
must equal the v2 vector of the same name. Every negative vector must make
posp2p-dump fail with the expected posp2p_err name.

Run with /usr/bin/python3 -m pytest proto/tests/test_vectors.py.
POSP2P_BUILD_DIR (default build/asan in the repository) is the CMake build directory
holding gen/python/posp2p_pb2.py and proto/tools/posp2p-dump; POSP2P_DUMP
overrides the path of posp2p-dump.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.normpath(os.path.join(HERE, "..", "vectors"))
HEADER = os.path.normpath(os.path.join(HERE, "..", "include", "posp2p",
                                       "common.h"))
BUILD_DIR = os.environ.get(
    "POSP2P_BUILD_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "build", "asan"))
DUMP = os.environ.get("POSP2P_DUMP",
                      os.path.join(BUILD_DIR, "proto", "tools", "posp2p-dump"))
PB2 = os.path.join(BUILD_DIR, "gen", "python", "posp2p_pb2.py")
DISC_PREFIX = b"\xffP2D\x02"


def load_index():
    rows = []
    with open(os.path.join(VECTORS, "INDEX.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            assert len(cols) >= 3, "bad INDEX.tsv row: %r" % line
            flags = cols[3].split(",") if len(cols) > 3 and cols[3] else []
            rows.append({"path": cols[0], "desc": cols[1],
                         "expected": cols[2], "flags": flags})
    return rows


INDEX = load_index()


def vid(row):
    return os.path.splitext(row["path"])[0]


def is_disc(row):
    return os.path.basename(row["path"]).startswith("disc_")


def rows(wire, ok, disc=None):
    out = []
    for r in INDEX:
        if not r["path"].startswith(wire + "/"):
            continue
        if (r["expected"] == "ok") != ok:
            continue
        if disc is not None and is_disc(r) != disc:
            continue
        out.append(r)
    return out


def params(rs):
    """One test per vector. A knowndiff vector (protobuf-c disagrees with
    Google's protobuf) is a strict xfail: fixing the C side makes it XPASS,
    which fails, so the flag gets removed."""
    ps = []
    for r in rs:
        marks = []
        if "knowndiff" in r["flags"]:
            marks.append(pytest.mark.xfail(strict=True,
                                           reason="known disagreement: " +
                                           r["desc"]))
        ps.append(pytest.param(r, marks=marks, id=vid(r)))
    return pytest.mark.parametrize("row", ps)


# ---- fixtures ---------------------------------------------------------------


@pytest.fixture(scope="session")
def pb():
    if not os.path.isfile(PB2):
        pytest.fail("%s not found: build the project first (cmake -S . -B "
                    "build -G Ninja && ninja -C build) or set "
                    "POSP2P_BUILD_DIR to the build directory" % PB2)
    spec = importlib.util.spec_from_file_location("posp2p_pb2", PB2)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def dump():
    if not os.access(DUMP, os.X_OK):
        pytest.fail("posp2p-dump not found at %s: build the posp2p-dump "
                    "target or set POSP2P_BUILD_DIR / POSP2P_DUMP" % DUMP)
    return DUMP


# ---- helpers ----------------------------------------------------------------


def read(row):
    with open(os.path.join(VECTORS, row["path"]), "rb") as f:
        return f.read()


def split_frame(data):
    """(body, prefix length) of a file that holds exactly one frame."""
    from google.protobuf.internal.decoder import _DecodeVarint32
    length, pos = _DecodeVarint32(data, 0)
    assert pos + length == len(data), \
        "file is not exactly one frame: prefix says %d body bytes, file has " \
        "%d after the %d-byte prefix" % (length, len(data) - pos, pos)
    return data[pos:], pos


def to_dict(msg):
    from google.protobuf import json_format
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def py_envelope(pb, data):
    body, _ = split_frame(data)
    return pb.Envelope.FromString(body), body


def py_disc(pb, data):
    assert data[:5] == DISC_PREFIX, "datagram prefix is %r" % data[:5]
    return pb.DiscoveryDatagram.FromString(data[5:])


def run_dump(dump, mode, row):
    return subprocess.run([dump, mode, os.path.join(VECTORS, row["path"])],
                          capture_output=True, timeout=60)


def c_decode(dump, mode, row):
    """JSON objects printed by posp2p-dump; fails the test on an error."""
    p = run_dump(dump, mode, row)
    if p.returncode != 0:
        pytest.fail("posp2p-dump %s %s failed (exit %d): %s"
                    % (mode, row["path"], p.returncode,
                       p.stderr.decode("utf-8", "replace").strip()))
    out = [json.loads(line) for line in p.stdout.decode("utf-8").splitlines()
           if line.strip()]
    assert len(out) == 1, "expected one message, posp2p-dump printed %d" \
        % len(out)
    return out[0]


def diff(a, b, path="$"):
    """Differences between two JSON values as 'path: a != b' strings."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = "%s.%s" % (path, k)
            if k not in a:
                out.append("%s: missing on the left, right has %r" % (p, b[k]))
            elif k not in b:
                out.append("%s: left has %r, missing on the right" % (p, a[k]))
            else:
                out += diff(a[k], b[k], p)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append("%s: list length %d != %d" % (path, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, "%s[%d]" % (path, i))
    elif type(a) is not type(b) or a != b:
        out.append("%s: %r != %r" % (path, a, b))
    return out


def assert_same(left, right, what):
    d = diff(left, right)
    assert not d, "%s differ:\n  %s" % (what, "\n  ".join(d[:40]))


def err_names():
    with open(HEADER, encoding="utf-8") as f:
        return set(re.findall(r"\b(POSP2P_ERR_[A-Z0-9_]+)\s*=", f.read()))


# ---- the index itself -------------------------------------------------------


def test_index_lists_every_file():
    listed = [r["path"] for r in INDEX]
    assert len(listed) == len(set(listed)), "duplicate rows in INDEX.tsv"
    on_disk = set()
    for sub in ("v2", "legacy"):
        for n in os.listdir(os.path.join(VECTORS, sub)):
            on_disk.add(sub + "/" + n)
    assert set(listed) == on_disk, (
        "INDEX.tsv and the files differ: unlisted %s, missing %s"
        % (sorted(on_disk - set(listed)), sorted(set(listed) - on_disk)))


def test_index_expected_values():
    names = err_names()
    assert names, "no POSP2P_ERR_ names found in %s" % HEADER
    for r in INDEX:
        assert r["expected"] == "ok" or r["expected"] in names, \
            "%s: unknown expected result %r" % (r["path"], r["expected"])
        assert r["path"].endswith(".bin" if r["path"].startswith("v2/")
                                  else ".json"), r["path"]
    # Every message type on both wires, and negative vectors on both.
    assert len(rows("v2", True)) >= 40 and len(rows("legacy", True)) >= 30
    assert len(rows("v2", False)) >= 10 and len(rows("legacy", False)) >= 10


def test_every_message_type_has_a_vector(pb):
    seen = set()
    for r in rows("v2", True, disc=False):
        env, _ = py_envelope(pb, read(r))
        seen.add(env.message_type)
    want = {v.number for v in pb.MessageType.DESCRIPTOR.values if v.number}
    assert want <= seen, "no v2 vector for %s" % sorted(
        pb.MessageType.Name(n) for n in want - seen)
    legacy_types = set()
    for r in rows("legacy", True, disc=False):
        legacy_types.add(json.loads(read(r))["messageType"])
    for name in ("discovery", "acknowledgement", "heartbeat", "orderForward",
                 "orderStatus", "orderCancel", "orderSync", "cartSync",
                 "productSync", "configSync", "deviceInfo", "serverMode",
                 "broadcastUpdate", "deviceCommand", "deviceResponse", "error",
                 "warning"):
        assert name in legacy_types, "no legacy vector of type %s" % name


def test_generator_reproduces_vectors(pb):
    """generate.py --check: the committed vectors are exactly what the
    generator writes."""
    p = subprocess.run([sys.executable, os.path.join(VECTORS, "generate.py"),
                        "--check", PB2], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


# ---- v2 frames --------------------------------------------------------------


@params(rows("v2", True, disc=False))
def test_v2(row, pb, dump):
    data = read(row)
    env, body = py_envelope(pb, data)
    want = to_dict(env)
    if "noncanonical" in row["flags"]:
        # Legal but not canonical: re-encoding normalises it to the same
        # message.
        again = pb.Envelope.FromString(env.SerializeToString())
        assert to_dict(again) == want
    else:
        # Python re-serialises to the committed bytes (field order, packing).
        assert env.SerializeToString() == body, \
            "Python re-encoding differs from the committed frame body"
    got = c_decode(dump, "v2", row)
    assert_same(got, want, "C codec (left) and Google protobuf (right)")


@params(rows("v2", True, disc=True))
def test_v2_disc(row, pb, dump):
    data = read(row)
    m = py_disc(pb, data)
    assert DISC_PREFIX + m.SerializeToString() == data, \
        "Python re-encoding differs from the committed datagram"
    assert len(data) <= 1400
    assert_same(c_decode(dump, "disc", row), to_dict(m),
                "C codec (left) and Google protobuf (right)")


# ---- legacy lines -----------------------------------------------------------


def v2_twin(row):
    name = os.path.splitext(os.path.basename(row["path"]))[0]
    for r in INDEX:
        if r["path"] == "v2/%s.bin" % name:
            return r
    return None


@params(rows("legacy", True, disc=False))
def test_legacy(row, pb, dump):
    data = read(row)
    assert data.endswith(b"\n") and data.count(b"\n") == 1, \
        "a legacy vector is one line ending in \\n"
    json.loads(data)  # well-formed JSON for Python too
    got = c_decode(dump, "legacy", row)
    twin = v2_twin(row)
    assert twin is not None, "no v2/<same name>.bin for %s" % row["path"]
    env, _ = py_envelope(pb, read(twin))
    assert_same(got, to_dict(env),
                "C legacy decode (left) and %s via Google protobuf (right)"
                % twin["path"])


@params(rows("legacy", True, disc=True))
def test_legacy_disc(row, pb, dump):
    data = read(row)
    assert not data.endswith(b"\n"), "a datagram carries no newline"
    json.loads(data)
    got = c_decode(dump, "disc", row)
    twin = v2_twin(row)
    assert twin is not None, "no v2/<same name>.bin for %s" % row["path"]
    assert_same(got, to_dict(py_disc(pb, read(twin))),
                "C legacy datagram decode (left) and %s via Google protobuf "
                "(right)" % twin["path"])


# ---- negative vectors -------------------------------------------------------


NEGATIVE = rows("v2", False) + rows("legacy", False)


@params(NEGATIVE)
def test_negative(row, dump):
    mode = "disc" if is_disc(row) else row["path"].split("/")[0]
    p = run_dump(dump, mode, row)
    err = p.stderr.decode("utf-8", "replace").strip()
    assert p.returncode == 1, "posp2p-dump %s exited %d (want 1); stdout %r " \
        "stderr %r" % (mode, p.returncode, p.stdout[:200], err)
    m = re.search(r"^error: (POSP2P_ERR_[A-Z0-9_]+) at offset (\d+): ", err,
                  re.M)
    assert m, "no 'error: NAME at offset N: ...' line in %r" % err
    assert m.group(1) == row["expected"], \
        "got %s, want %s (%s)" % (m.group(1), row["expected"], err)
    assert int(m.group(2)) <= len(read(row)), "offset beyond the input"


def test_diff_reports_paths():
    """The comparison itself can fail and names the differing path."""
    a = {"x": {"items": [{"q": 1}, {"q": 2}]}, "y": "1"}
    b = {"x": {"items": [{"q": 1}, {"q": 3}]}, "y": 1}
    d = diff(a, b)
    assert "$.x.items[1].q: 2 != 3" in d and any(s.startswith("$.y:")
                                                  for s in d)
    assert diff(a, a) == []
