"""The device under test.

A DUT is described by a Profile (profile.py) and reached at host:tcp_port
(v2 and legacy data) and host:udp_port (discovery). Two kinds:

- PeerDUT: the built-in reference peer (posp2p-peer), started by the
  fixtures on its own 127.x address with kernel-chosen ports and compressed
  timers, driven through the control channel (sim/tests/peerctl.py) as the
  upper tester. The mutation tests point it at a mutant binary.
- RemoteDUT: a vendor's device given by --dut HOST[:PORT] and --profile;
  the upper tester is the profile's shell commands (or none).
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from . import capture
from .codec import build_dir, new_id
from .profile import Profile, reference_profile
from .vdev import suite_ip

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_TESTS = os.path.normpath(os.path.join(HERE, "..", "..", "sim", "tests"))
if SIM_TESTS not in sys.path:
    sys.path.insert(0, SIM_TESTS)
import peerctl  # noqa: E402  (owned by the peer's tests; reused, not forked)


def free_udp_port(host: str = "127.0.0.1") -> int:
    return peerctl.free_port("udp", host)


class UpperTester:
    """Makes the device send something (the "upper tester")."""

    def can(self, what: str) -> bool:
        return False

    def send_order(self, to=None, to_type=None, order_id=None) -> Optional[str]:
        raise NotImplementedError

    def send_status(self, to=None, order_id="T-1", status="preparing") -> Optional[str]:
        raise NotImplementedError

    def cancel(self, to=None, order_id="T-1", reason="test") -> Optional[str]:
        raise NotImplementedError

    def send(self, mtype: str, to=None, to_type=None, payload=None) -> Optional[str]:
        raise NotImplementedError

    def mark(self) -> int:
        return 0

    def delivered(self, since: int = 0) -> List[dict]:
        """Messages the device delivered to its application since mark():
        [{"message_id", "from", "type", ...}]."""
        raise NotImplementedError


def order_payload(order_id: str) -> dict:
    return {"orderId": order_id, "items": [{"productId": "p-1", "productName": "Tea",
                                            "price": 2.5, "quantity": 1, "modifiers": [],
                                            "variant": None, "notes": None,
                                            "discountPerItem": None}],
            "subtotal": 2.5, "tax": None, "serviceCharge": None, "discount": None,
            "total": 2.5, "orderStatus": "pending", "destination": "kitchenDisplay",
            "tableNumber": 4, "customerName": None, "specialInstructions": None,
            "targetDeliveryTime": None}


class PeerUpperTester(UpperTester):
    def __init__(self, peer: "peerctl.Peer"):
        self.peer = peer

    def can(self, what: str) -> bool:
        return True

    def send_order(self, to=None, to_type=None, order_id=None):
        r = self.peer.call("send_order", to=to, to_type=to_type,
                           order=order_payload(order_id or "T-" + new_id()[:8]))
        return r.get("message_id")

    def send_status(self, to=None, order_id="T-1", status="preparing"):
        return self.peer.call("send_status", to=to, order_id=order_id,
                              status=status).get("message_id")

    def cancel(self, to=None, order_id="T-1", reason="test"):
        return self.peer.call("cancel", to=to, order_id=order_id, reason=reason,
                              refund=False).get("message_id")

    def send(self, mtype, to=None, to_type=None, payload=None):
        return self.peer.call("send", to=to, to_type=to_type, type=mtype,
                              payload=payload or {}).get("message_id")

    def mark(self) -> int:
        return self.peer.mark()

    def delivered(self, since: int = 0):
        out = []
        for e in self.peer.lines()[since:]:
            if e.get("event") == "message":
                out.append({"message_id": e.get("message_id"), "from": e.get("from"),
                            "type": e.get("type"), "payload": e.get("payload"),
                            "sequence": e.get("sequence")})
        return out

    def wait_delivered(self, pred, timeout: float, since: int = 0):
        try:
            return self.peer.wait_event(lambda e: e.get("event") == "message" and pred(e),
                                        timeout=timeout, since=since)
        except peerctl.PeerError:
            return None


class CommandUpperTester(UpperTester):
    """Runs the profile's shell commands (bounded by a 30 s timeout)."""

    def __init__(self, cmds: Dict[str, str]):
        self.cmds = cmds
        self._seen = 0

    def can(self, what: str) -> bool:
        return what in self.cmds

    def _run(self, key, **kw):
        cmd = self.cmds[key].format(**{k: ("" if v is None else v) for k, v in kw.items()})
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        capture.current().note("upper tester %s: %s -> %d %s" % (key, cmd, r.returncode,
                                                                 r.stdout.strip()[:200]))
        if r.returncode != 0:
            raise RuntimeError("upper tester command failed (%d): %s\n%s" %
                               (r.returncode, cmd, r.stderr))
        return r.stdout

    def send_order(self, to=None, to_type=None, order_id=None):
        self._run("send_order", to=to, to_type=to_type, order_id=order_id or new_id()[:8])

    def send_status(self, to=None, order_id="T-1", status="preparing"):
        self._run("send_status", to=to, order_id=order_id, status=status)

    def cancel(self, to=None, order_id="T-1", reason="test"):
        self._run("cancel", to=to, order_id=order_id, reason=reason)

    def mark(self) -> int:
        return len(self.delivered(0))

    def delivered(self, since: int = 0):
        out = []
        for line in self._run("deliveries").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out[since:]

    def wait_delivered(self, pred, timeout: float, since: int = 0):
        deadline = time.monotonic() + timeout
        while True:
            for d in self.delivered(since):
                if pred(d):
                    return d
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)   # polling an external command


class DUT:
    kind = "remote"

    def __init__(self, profile: Profile):
        self.profile = profile
        self.host = profile.address
        self.tcp_port = profile.tcp_port
        self.udp_port = profile.udp_port
        self.broadcast = profile.broadcast
        self.device_id: Optional[str] = profile.device_id
        self.upper: Optional[UpperTester] = None

    @property
    def role(self) -> str:
        return self.profile.role

    @property
    def t(self) -> Dict[str, int]:
        return self.profile.timers

    def suite_src_ip(self) -> Optional[str]:
        return suite_ip() if self.host.startswith("127.") else None

    def log_mark(self) -> int:
        return 0

    def log_since(self, mark: int) -> str:
        return ""

    def alive(self) -> bool:
        try:
            with socket.create_connection((self.host, self.tcp_port), timeout=2):
                return True
        except OSError:
            return False

    def ensure_running(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def describe(self) -> str:
        return "%s at %s:%d (udp %d)" % (self.role, self.host, self.tcp_port, self.udp_port)


class RemoteDUT(DUT):
    def __init__(self, profile: Profile):
        super().__init__(profile)
        if profile.upper:
            self.upper = CommandUpperTester(profile.upper)


class PeerDUT(DUT):
    """posp2p-peer started on loopback (or in a network namespace)."""
    kind = "peer"

    def __init__(self, binary: str, profile: Optional[Profile] = None, role: str = "mainPOS",
                 extra_args=(), connect: Optional[str] = None, netns: Optional[str] = None,
                 bind: Optional[str] = None, broadcast: Optional[str] = None,
                 udp_port: Optional[int] = None, name: Optional[str] = None):
        prof = profile or reference_profile(role == "mainPOS")
        prof.role = role
        super().__init__(prof)
        self.binary = binary
        self.extra_args = list(extra_args)
        self.connect_to = connect
        self.netns = netns
        self.host = bind or peerctl.loopback_ip()
        self.broadcast = broadcast or "127.255.255.255"
        self.udp_port = udp_port or free_udp_port(self.host if not netns else "127.0.0.1")
        self.name = name or ("dut-" + role)
        self.peer: Optional[peerctl.Peer] = None
        self.starts = 0
        self.start()

    def args(self) -> List[str]:
        t = self.t
        a = ["--type", self.role, "--name", self.name, "--bind", self.host,
             "--udp-port", str(self.udp_port), "--state-dir", "none",
             "--heartbeat-ms", str(t["heartbeat_ms"]), "--timeout-ms", str(t["timeout_ms"]),
             "--ack-timeout-ms", str(t["ack_timeout_ms"]),
             "--max-retries", str(t["max_retries"]),
             "--handshake-ms", str(t["handshake_ms"]),
             "--announce-ms", str(t["announce_ms"]),
             "--max-frame", str(t["max_frame"]),
             "--max-connections", str(t["max_connections"]),
             "--reconnect-ms", str(t["reconnect_ms"]),
             "--broadcast", self.broadcast, "--log-level", "debug"]
        if self.role == "mainPOS":
            a += ["--tcp-port", "0"]
        else:
            a += ["--no-listen"]
        if self.connect_to:
            a += ["--connect", self.connect_to]
        if not self.broadcast.startswith("127."):
            a += ["--allow-lan-broadcast"]
        return a + self.extra_args

    def start(self) -> None:
        args = self.args()
        binary = self.binary
        if self.netns:
            args = ["netns", "exec", self.netns, self.binary] + args
            binary = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
        env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=0")}
        self.peer = peerctl.Peer(*args, name=self.name, binary=binary, env=env)
        self.starts += 1
        r = self.peer.ready
        self.device_id = r["device_id"].lower()
        self.profile.device_id = self.device_id
        if self.role == "mainPOS":
            self.tcp_port = int(r["tcp_port"])
        self.upper = PeerUpperTester(self.peer)

    def ensure_running(self) -> None:
        if self.peer is None or not self.peer.running():
            self.start()

    def alive(self) -> bool:
        return self.peer is not None and self.peer.running()

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.close()

    def log_mark(self) -> int:
        if self.peer is None:
            return 0
        with self.peer._cv:
            return len(self.peer._stderr)

    def log_since(self, mark: int) -> str:
        if self.peer is None:
            return ""
        with self.peer._cv:
            return "\n".join(self.peer._stderr[mark:])

    def events(self, name=None, since: int = 0, **match):
        return [e for e in self.peer.lines()[since:]
                if "event" in e and (name is None or e["event"] == name) and
                all(e.get(k) == v for k, v in match.items())]

    def describe(self) -> str:
        return "posp2p-peer %s (%s) at %s:%d udp %d" % (
            self.role, os.path.basename(self.binary), self.host, self.tcp_port, self.udp_port)
