"""Live-device fuzzing (issue 6, section 4).

Sends mutated frames, legacy lines and discovery datagrams to a device under
test: posp2p-peer by default (started like the conformance fixtures, on its
own 127.x address with compressed timers), or --dut HOST[:PORT] (loopback
only). Inputs are made by mutating valid messages built with the codec
helpers (codec.py): bit flips, truncation, length-prefix lies, field swaps,
oversize frames, junk JSON. They go out in batches; after each batch the
device must still pass every liveness probe it passed before the run (a
fresh v2 handshake, a discovery answer): a device that still answers
discovery but has stopped answering TCP counts as failed.
On a failure the inputs of the failing batch and the one before it are
written as JSONL ({"kind": "tcp"|"udp", "hex": ...} per line) that --replay
sends again in order. With --minimize (only when this tool starts the
device) those inputs are then cut down by delta debugging, each trial
against a freshly started device, to a smallest set that still fails; that
set is written next to the failure file. A run is repeatable: every random
choice, id and timestamp comes from --seed.

Network safety: only 127.0.0.0/8 is ever a destination; the run is bounded
by --count and --seconds and stops by itself.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import sys
import time
from typing import Dict, List, Optional, Tuple

from . import codec as C

DEFAULT_COUNT = 2000
DEFAULT_SECONDS = 60.0
DEFAULT_BATCH = 50
LIVE_TIMEOUT = 3.0      # seconds for the liveness check (default of --live-timeout)
DEFAULT_MINIMIZE_SECONDS = 120.0
TS = 1767225600000      # fixed timestamps: inputs depend on the seed only


class Refused(Exception):
    """A destination outside loopback."""


def loopback_only(host: str) -> str:
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError) as e:
        raise Refused("cannot resolve %r: %s" % (host, e))
    if ip.version != 4 or ip not in ipaddress.ip_network("127.0.0.0/8"):
        raise Refused("%s (%s) is not in 127.0.0.0/8; live fuzzing sends to loopback only"
                      % (host, ip))
    return str(ip)


# ---- valid material ---------------------------------------------------------------

class Gen:
    """Valid messages and their mutations, all drawn from one seeded RNG."""

    def __init__(self, seed: int, max_frame: int):
        self.r = random.Random(seed)
        self.max_frame = max_frame
        self.me = self.uuid()

    def uuid(self) -> str:
        b = bytearray(self.r.getrandbits(8) for _ in range(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def fix(self, env):
        env.message_id = self.uuid()
        env.timestamp_ms = TS + self.r.randrange(100000)
        return env

    def envelope(self, dut_id: Optional[str]):
        r, me = self.r, self.me
        to = dut_id if r.random() < 0.6 else None
        k = r.randrange(9)
        if k == 0:
            e = C.order_forward(me, to=to, order_id="F-%d" % r.randrange(100),
                                items=r.randrange(1, 4))
        elif k == 1:
            e = C.order_status(me, to=to, order_id="F-%d" % r.randrange(100),
                               status=r.randrange(7), sequence=r.randrange(5))
        elif k == 2:
            e = C.order_cancel(me, to=to)
        elif k == 3:
            e = C.ack(me, dut_id or self.uuid(), self.uuid())
        elif k == 4:
            e = C.heartbeat(me, to, r.randrange(10))
        elif k == 5:
            e = C.goodbye(me, to)
        elif k == 6:
            e = C.error(me, to, "INTERNAL", ref=self.uuid())
        elif k == 7:
            e = C.opaque(me, "PRODUCT_SYNC", to=to, json_text='{"k":%d}' % r.randrange(9))
        else:
            e = C.hello(self.uuid())
        return self.fix(e)

    def legacy_line(self, dut_id: Optional[str]) -> bytes:
        r, me = self.r, self.me
        ts = C.legacy_ts(TS)
        if r.random() < 0.5:
            return C.legacy_raw_line("orderForward", me, dut_id,
                                     C.legacy_order_payload("L-%d" % r.randrange(50)),
                                     mid=self.uuid(), ts=ts)
        kind = r.choice(["orderStatus", "heartbeat", "deviceInfo", "acknowledgement",
                         "orderCancel"])
        payload = {"orderStatus": {"orderId": "L-1", "newStatus": "preparing"},
                   "heartbeat": {},
                   "deviceInfo": {"deviceName": "fz", "deviceType": "P2PDeviceType.kds",
                                  "port": 8766},
                   "acknowledgement": {"acknowledgedMessageId": self.uuid()},
                   "orderCancel": {"orderId": "L-1", "reason": "x"}}[kind]
        return C.legacy_line(C.legacy_msg(kind, me, dut_id, payload, mid=self.uuid(), ts=ts))

    # ---- mutations ---------------------------------------------------------

    def bitflip(self, b: bytes) -> bytes:
        if not b:
            return b"\x00"
        x = bytearray(b)
        for _ in range(self.r.randrange(1, 9)):
            i = self.r.randrange(len(x))
            x[i] ^= 1 << self.r.randrange(8)
        return bytes(x)

    def truncate(self, b: bytes) -> bytes:
        return b[:self.r.randrange(len(b) + 1)]

    @staticmethod
    def _varint(buf: bytes, i: int) -> Tuple[Optional[int], int]:
        """(value, position after it), or (None, i) if incomplete or overlong."""
        try:
            v, used = C.read_varint(buf, i)
        except ValueError:
            return None, i
        return (v, i + used) if v is not None else (None, i)

    def fields(self, body: bytes) -> Optional[List[bytes]]:
        """Split a protobuf message into its top-level fields (raw bytes
        each), or None if it does not parse."""
        out, i = [], 0
        while i < len(body):
            start = i
            key, i = self._varint(body, i)
            if key is None:
                return None
            wt = key & 7
            if wt == 0:
                v, i = self._varint(body, i)
                if v is None:
                    return None
            elif wt == 2:
                n, i = self._varint(body, i)
                if n is None or i + n > len(body):
                    return None
                i += n
            elif wt == 1:
                i += 8
            elif wt == 5:
                i += 4
            else:
                return None
            if i > len(body):
                return None
            out.append(body[start:i])
        return out

    def field_swap(self, body: bytes) -> bytes:
        f = self.fields(body)
        if not f or len(f) < 2:
            return self.bitflip(body)
        r = self.r
        k = r.randrange(3)
        if k == 0:                       # reorder two fields
            i, j = r.sample(range(len(f)), 2)
            f[i], f[j] = f[j], f[i]
        elif k == 1:                     # repeat a field (last one wins / repeated)
            f.insert(r.randrange(len(f) + 1), r.choice(f))
        else:                            # drop a field
            del f[r.randrange(len(f))]
        return b"".join(f)

    def frame_mutation(self, body: bytes) -> Tuple[str, bytes]:
        """One mutated frame (length prefix included)."""
        r = self.r
        k = r.randrange(7)
        if k == 0:
            return "bitflip", C.frame_raw(self.bitflip(body))
        if k == 1:
            return "truncate-consistent", C.frame_raw(self.truncate(body))
        if k == 2:                       # prefix promises more than follows
            return "length-lie-long", C.varint(len(body) + r.randrange(1, 64)) + body
        if k == 3:                       # prefix shorter: the rest is read as a frame
            return "length-lie-short", C.varint(r.randrange(len(body) + 1)) + body
        if k == 4:
            return "field-swap", C.frame_raw(self.field_swap(body))
        if k == 5:                       # above max_frame (prefix only, and padded)
            n = self.max_frame + r.randrange(1, 1 << 20)
            return "oversize", C.varint(n) + body
        # a non-minimal or overlong varint prefix
        return "varint-padded", C.varint_padded(len(body), r.randrange(2, 6)) + body

    def json_mutation(self, line: bytes) -> Tuple[str, bytes]:
        r = self.r
        s = line.rstrip(b"\n")
        k = r.randrange(7)
        if k == 0:
            return "json-bitflip", self.bitflip(s) + b"\n"
        if k == 1:
            return "json-truncate", self.truncate(s) + b"\n"
        if k == 2:                       # a value of the wrong type
            obj = json.loads(s)
            key = r.choice(list(obj.keys()))
            obj[key] = r.choice([None, 0, -1, 1e308, "", [], {}, True, "x" * 300])
            return "json-wrong-type", C.legacy_line(obj)
        if k == 3:
            return "json-nesting", b"[" * r.randrange(10, 3000) + b"\n"
        if k == 4:
            return "json-invalid-utf8", s.replace(b'"', b'"\xc3\x28', 1) + b"\n"
        if k == 5:
            return "json-huge-number", s.replace(b'"priority":', b'"priority":1' + b"0" * 400 + b",\"p\":", 1) + b"\n"
        return "json-junk", bytes(r.getrandbits(8) for _ in range(r.randrange(1, 200))) + b"\n"

    def input(self, dut_id: Optional[str]) -> Dict[str, str]:
        """One input: a whole TCP connection's bytes, or one datagram."""
        r = self.r
        k = r.random()
        if k < 0.55:                     # v2: valid preface + HELLO, then mutations
            conn = C.preface() + C.frame(self.fix(C.hello(self.me, hb_ms=1000, timeout_ms=5000)))
            muts = []
            for _ in range(r.randrange(1, 4)):
                env = self.envelope(dut_id)
                if r.random() < 0.25:
                    conn += C.frame(env)
                    continue
                name, data = self.frame_mutation(env.SerializeToString())
                muts.append(name)
                conn += data
            if r.random() < 0.1:         # a broken preface instead
                conn = self.bitflip(conn[:8]) + conn[8:]
                muts.append("preface-bitflip")
            return {"kind": "tcp", "wire": "v2", "mut": ",".join(muts) or "valid",
                    "hex": conn.hex()}
        if k < 0.8:                      # legacy JSON lines
            lines, muts = b"", []
            for _ in range(r.randrange(1, 3)):
                name, data = self.json_mutation(self.legacy_line(dut_id))
                muts.append(name)
                lines += data
            return {"kind": "tcp", "wire": "legacy", "mut": ",".join(muts), "hex": lines.hex()}
        # discovery datagrams, both wires
        if r.random() < 0.6:
            d = C.disc_bytes(C.disc(r.choice(["REQUEST", "ANNOUNCE", "RESPONSE"]), self.uuid(),
                                    nonce=r.randrange(1, 1 << 32), tcp_port=r.randrange(65536)))
            name = r.choice(["bitflip", "truncate", "field-swap"])
            if name == "bitflip":
                d = self.bitflip(d)
            elif name == "truncate":
                d = self.truncate(d)
            else:
                d = d[:5] + self.field_swap(d[5:])
            return {"kind": "udp", "wire": "v2", "mut": name, "hex": d.hex()}
        name, line = self.json_mutation(C.legacy_disc_request().rstrip(b"\n") + b"\n")
        return {"kind": "udp", "wire": "legacy", "mut": name, "hex": line.rstrip(b"\n").hex()}


# ---- the device --------------------------------------------------------------------

class Target:
    def __init__(self, host: str, tcp_port: int, udp_port: int, proc=None,
                 live_timeout: float = LIVE_TIMEOUT):
        self.host = loopback_only(host)
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.proc = proc             # peerctl.Peer when we started it
        self.device_id: Optional[str] = None
        self.live_timeout = live_timeout
        # The probes the device passed before the run (set by baseline());
        # every later check requires all of them.
        self.probes: List[str] = []
        self._probe_n = 0

    def send(self, inp: Dict[str, str]) -> None:
        data = bytes.fromhex(inp["hex"])
        if inp["kind"] == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(data[:65000], (self.host, self.udp_port))
            return
        try:
            with socket.create_connection((self.host, self.tcp_port), timeout=1.0) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                # Read what the device answers for a moment (it may close on
                # us; either is fine), so that it is not writing into a
                # closed socket on every input.
                s.settimeout(0.05)
                end = time.monotonic() + 0.05
                while time.monotonic() < end:
                    if not s.recv(65536):
                        break
        except OSError:
            pass   # refused or reset: the liveness check decides

    def handshake(self) -> bool:
        me = C.new_id()
        try:
            with socket.create_connection((self.host, self.tcp_port),
                                          timeout=self.live_timeout) as s:
                s.sendall(C.preface() + C.frame(C.hello(me)))
                rd = C.FrameReader()
                end = time.monotonic() + self.live_timeout
                while time.monotonic() < end:
                    s.settimeout(max(0.01, end - time.monotonic()))
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    for body in rd.feed(chunk):
                        env = C.parse_envelope(body)
                        if env.WhichOneof("payload") == "hello":
                            self.device_id = env.hello.device_id.lower()
                            s.sendall(C.frame(C.goodbye(me, self.device_id)))
                            return True
                        return False
        except (OSError, ValueError):
            return False
        return False

    def probe_source(self) -> str:
        """A loopback source address not used by an earlier probe: a device
        answers one discovery request per source address per second
        (DISC-10), so probes from one address would be rate-limited."""
        self._probe_n += 1
        n = self._probe_n
        return "127.%d.%d.%d" % (200 + os.getpid() % 50, n // 250 % 250 + 1, n % 250 + 1)

    def discovery(self) -> bool:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((self.probe_source(), 0))
                s.settimeout(self.live_timeout)
                s.sendto(C.disc_bytes(C.disc("REQUEST", C.new_id())), (self.host, self.udp_port))
                data, _ = s.recvfrom(65536)
                C.parse_disc(data)
                return True
        except (OSError, ValueError):
            return False

    def legacy_ack(self) -> bool:
        """A legacy heartbeat line on a new connection is acknowledged
        (legacy devices answer every message but acknowledgements)."""
        hb = C.legacy_msg("heartbeat", C.new_id(), self.device_id, {}, 2)
        try:
            with socket.create_connection((self.host, self.tcp_port),
                                          timeout=self.live_timeout) as s:
                s.sendall(C.legacy_line(hb))
                buf = bytearray()
                end = time.monotonic() + self.live_timeout
                while time.monotonic() < end:
                    s.settimeout(max(0.01, end - time.monotonic()))
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    buf += chunk
                    for line in C.legacy_split_lines(buf):
                        try:
                            o = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(o, dict) and o.get("messageType") == "acknowledgement" \
                                and (o.get("payload") or {}).get("acknowledgedMessageId") \
                                == hb["messageId"]:
                            return True
        except OSError:
            return False
        return False

    def legacy_discovery(self) -> bool:
        """A legacy JSON discovery request is answered with a legacy response."""
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((self.probe_source(), 0))
                s.settimeout(self.live_timeout)
                s.sendto(C.legacy_disc_request(), (self.host, self.udp_port))
                data, _ = s.recvfrom(65536)
                o = json.loads(data)
                return isinstance(o, dict) and "deviceId" in o
        except (OSError, ValueError):
            return False

    # Tried in this order; a legacy-only device (FlutterPOS) passes only
    # the last two, a v2-only device the first two.
    PROBES = {"v2 handshake": "handshake", "discovery answer": "discovery",
              "legacy acknowledgement": "legacy_ack",
              "legacy discovery answer": "legacy_discovery"}

    def baseline(self) -> Tuple[bool, str]:
        """Which probes the device passes before fuzzing; at least one must."""
        self.probes = [name for name, fn in self.PROBES.items() if getattr(self, fn)()]
        if not self.probes:
            return False, "no answer to any probe (%s)" % ", ".join(self.PROBES)
        return True, " + ".join(self.probes)

    def alive(self) -> Tuple[bool, str]:
        if self.proc is not None and not self.proc.running():
            return False, "posp2p-peer exited with %s" % self.proc.returncode()
        for name in self.probes:
            if not getattr(self, self.PROBES[name])():
                return False, "no %s (it answered one before the run)" % name
        return True, " + ".join(self.probes)


def start_peer(build_dir: Optional[str], binary: Optional[str] = None,
               live_timeout: float = LIVE_TIMEOUT) -> Target:
    sim_tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sim", "tests")
    sys.path.insert(0, os.path.normpath(sim_tests))
    import peerctl  # noqa: E402
    if binary is None:
        binary = peerctl.peer_binary(build_dir) if build_dir else peerctl.peer_binary()
    host = peerctl.loopback_ip()
    udp = peerctl.free_port("udp", host)
    args = ["--type", "mainPOS", "--name", "livefuzz-dut", "--bind", host, "--tcp-port", "0",
            "--udp-port", str(udp), "--state-dir", "none", "--heartbeat-ms", "500",
            "--timeout-ms", "2000", "--ack-timeout-ms", "200", "--max-retries", "2",
            "--handshake-ms", "1000", "--announce-ms", "0", "--max-frame", "65536",
            "--broadcast", "127.255.255.255", "--log-level", "warn"]
    peer = peerctl.Peer(*args, name="livefuzz-dut", binary=binary,
                        env={"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=0")})
    return Target(host, int(peer.ready["tcp_port"]), udp, proc=peer, live_timeout=live_timeout)


def parse_dut(s: str) -> Tuple[str, int]:
    host, _, port = s.partition(":")
    return host, int(port) if port else 8766


def write_failure(path: str, header: dict, inputs: List[dict]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps(header) + "\n")
        for i in inputs:
            f.write(json.dumps(i) + "\n")


def fails_on(start, inputs: List[dict]) -> bool:
    """Send inputs to a freshly started device; True if it then fails a
    probe it passed before them."""
    t = start()
    try:
        ok, _ = t.baseline()
        if not ok:
            raise RuntimeError("a fresh device does not answer before the inputs")
        for inp in inputs:
            t.send(inp)
        return not t.alive()[0]
    finally:
        t.proc.close()


def minimize(start, inputs: List[dict], deadline: float,
             say=lambda *x: None) -> Tuple[List[dict], int, bool]:
    """Delta debugging (Zeller's ddmin) over the input list, each trial on
    a fresh device. Returns (smallest failing list found, trials, whether
    it is 1-minimal, i.e. the search ended before the deadline)."""
    cur, n, trials = list(inputs), 2, 0

    def attempt(cand: List[dict]) -> Optional[bool]:
        nonlocal trials
        if time.monotonic() > deadline:
            return None
        trials += 1
        failed = fails_on(start, cand)
        if failed:
            say("posp2p-livefuzz: minimize: %d -> %d inputs still fail" % (len(cur), len(cand)))
        return failed

    while len(cur) >= 2:
        size = -(-len(cur) // n)
        chunks = [cur[i:i + size] for i in range(0, len(cur), size)]
        nxt = None
        for c in chunks:                          # one chunk alone
            r = attempt(c)
            if r is None:
                return cur, trials, False
            if r:
                nxt, n = c, 2
                break
        if nxt is None and len(chunks) > 2:       # everything but one chunk
            for k in range(len(chunks)):
                comp = [x for j, c in enumerate(chunks) if j != k for x in c]
                r = attempt(comp)
                if r is None:
                    return cur, trials, False
                if r:
                    nxt, n = comp, max(n - 1, 2)
                    break
        if nxt is not None:
            cur = nxt
        elif n >= len(cur):
            break                                 # 1-minimal
        else:
            n = min(len(cur), 2 * n)
    return cur, trials, True


def read_replay(path: str) -> List[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                obj = json.loads(line)
                if "hex" in obj:
                    out.append(obj)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="posp2p-livefuzz",
        description="Send mutated frames, legacy lines and discovery datagrams to a device "
                    "under test (loopback only), checking after each batch that it still "
                    "answers. Exits 0 if it does to the end, 1 on a failure (the inputs "
                    "before it are written to --out), 2 on a usage error.")
    ap.add_argument("--dut", metavar="HOST[:PORT]",
                    help="device under test (127.0.0.0/8 only; TCP port default 8766). "
                         "Default: start posp2p-peer from the build tree")
    ap.add_argument("--udp-port", type=int, default=8765,
                    help="the DUT's discovery port with --dut (default 8765)")
    ap.add_argument("--build-dir", help="build tree with sim/peer/posp2p-peer "
                                        "(default $POSP2P_BUILD_DIR or build/asan)")
    ap.add_argument("--peer-binary", metavar="PATH",
                    help="start this posp2p-peer build instead of the build tree's "
                         "(e.g. a mutant)")
    ap.add_argument("--live-timeout", type=float, default=LIVE_TIMEOUT,
                    help="seconds each liveness probe waits (default %g)" % LIVE_TIMEOUT)
    ap.add_argument("--minimize", action="store_true",
                    help="after a failure, cut the failing inputs down by delta debugging "
                         "against fresh devices (not with --dut); writes OUT.min.jsonl")
    ap.add_argument("--minimize-seconds", type=float, default=DEFAULT_MINIMIZE_SECONDS,
                    help="time bound of --minimize (default %g)" % DEFAULT_MINIMIZE_SECONDS)
    ap.add_argument("--count", type=int, default=DEFAULT_COUNT,
                    help="inputs to send at most (default %d)" % DEFAULT_COUNT)
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                    help="stop after this long (default %g)" % DEFAULT_SECONDS)
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                    help="inputs between liveness checks (default %d)" % DEFAULT_BATCH)
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--max-frame", type=int, default=65536,
                    help="the DUT's frame cap, for oversize inputs (default 65536)")
    ap.add_argument("--out", help="failure file (default livefuzz-failure-SEED.jsonl)")
    ap.add_argument("--replay", metavar="FILE",
                    help="send the inputs of a failure file in order, then check the DUT")
    ap.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    a = ap.parse_args(argv)
    if a.count < 0 or a.seconds <= 0 or a.batch < 1 or a.live_timeout <= 0:
        ap.error("--count >= 0, --seconds > 0, --batch >= 1, --live-timeout > 0")
    if a.dut and (a.minimize or a.peer_binary):
        ap.error("--minimize and --peer-binary start the device themselves; not with --dut")
    if a.peer_binary and not os.access(a.peer_binary, os.X_OK):
        ap.error("--peer-binary %s: not an executable file" % a.peer_binary)
    if a.build_dir:
        os.environ["POSP2P_BUILD_DIR"] = a.build_dir

    try:
        if a.dut:
            host, port = parse_dut(a.dut)
            t = Target(host, port, a.udp_port, live_timeout=a.live_timeout)
        else:
            t = start_peer(a.build_dir, a.peer_binary, a.live_timeout)
    except Refused as e:
        print("posp2p-livefuzz: refused: %s" % e, file=sys.stderr)
        return 2

    try:
        return run(a, t)
    except OSError as e:
        print("posp2p-livefuzz: %s" % e, file=sys.stderr)
        return 2
    finally:
        if t.proc is not None:
            t.proc.close()


def run(a, t: Target) -> int:
    """The fuzzing loop (or --replay) against a device that is up."""
    ok, how = t.baseline()
    if not ok:
        print("posp2p-livefuzz: the device does not answer before fuzzing (%s)" % how,
              file=sys.stderr)
        return 2
    say = (lambda *x: None) if a.quiet else print
    say("posp2p-livefuzz: DUT %s tcp %d udp %d (%s)" % (t.host, t.tcp_port, t.udp_port,
                                                       "posp2p-peer" if t.proc else "--dut"))
    if a.replay:
        inputs = read_replay(a.replay)
        for inp in inputs:
            t.send(inp)
        ok, how = t.alive()
        print("posp2p-livefuzz: replayed %d inputs from %s: %s" % (
            len(inputs), a.replay, "device still answering (%s)" % how if ok
            else "DEVICE NOT ANSWERING (%s)" % how))
        return 0 if ok else 1

    g = Gen(a.seed, a.max_frame)
    start = time.monotonic()
    sent, batches = 0, 0
    prev: List[dict] = []
    kinds: Dict[str, int] = {}
    while sent < a.count and time.monotonic() - start < a.seconds:
        batch = []
        while (len(batch) < a.batch and sent < a.count
               and time.monotonic() - start < a.seconds):
            inp = g.input(t.device_id)
            t.send(inp)
            batch.append(inp)
            sent += 1
            key = inp["kind"] + "/" + inp["wire"]
            kinds[key] = kinds.get(key, 0) + 1
        batches += 1
        ok, how = t.alive()
        if not ok:
            out = a.out or "livefuzz-failure-%d.jsonl" % a.seed
            failing = prev + batch
            write_failure(out, {"seed": a.seed, "batch": batches, "sent": sent,
                                "failure": how}, failing)
            print("posp2p-livefuzz: DEVICE NOT ANSWERING after batch %d (%d inputs): %s; "
                  "the last %d inputs are in %s (replay: --replay %s)"
                  % (batches, sent, how, len(failing), out, out))
            if a.minimize:
                t.proc.close()
                starter = lambda: start_peer(a.build_dir, a.peer_binary, a.live_timeout)
                if not fails_on(starter, failing):
                    print("posp2p-livefuzz: minimize: the %d inputs do not fail a fresh "
                          "device (the failure needs earlier state, or is timing); "
                          "nothing minimized" % len(failing))
                    return 1
                small, trials, done = minimize(starter, failing,
                                               time.monotonic() + a.minimize_seconds, say)
                mout = os.path.splitext(out)[0] + ".min.jsonl"
                write_failure(mout, {"seed": a.seed, "failure": how, "minimized_from":
                                     len(failing), "trials": trials, "one_minimal": done},
                              small)
                print("posp2p-livefuzz: minimized to %d input%s (%s) in %d trials%s: %s"
                      % (len(small), "" if len(small) == 1 else "s",
                         ", ".join(sorted({i.get("mut", "?") for i in small})), trials,
                         "" if done else " (stopped by --minimize-seconds)", mout))
            return 1
        say("posp2p-livefuzz: batch %d: %d inputs sent, alive (%s)" % (batches, sent, how))
        prev = batch
    el = time.monotonic() - start
    print("posp2p-livefuzz: seed %d: %d inputs in %d batches, %.1f s (%.0f inputs/s; %s): "
          "device still answering" % (a.seed, sent, batches, el, sent / el if el else 0,
                                      ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
