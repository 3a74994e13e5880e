"""peerctl: start and drive ``posp2p-peer`` processes from Python tests.

The daemon speaks JSON lines: commands on its stdin, replies and events on
its stdout, logs on stderr (see docs/control-protocol.md). This
module wraps one process in a :class:`Peer`:

    from peerctl import Peer, free_port, loopback_ip

    udp = free_port("udp")
    with Peer("--type", "mainPOS", "--bind", "127.0.0.2", "--tcp-port", "0",
              "--udp-port", str(udp), "--state-dir", "none") as main:
        print(main.device_id, main.tcp)            # from the "ready" line
        reply = main.call("send_order", to=tab_id, order={...})
        ev = main.wait_event("ack", message_id=reply["message_id"])

Everything waits with a deadline and polls the process's output, never a
fixed sleep. A Peer that dies early raises :class:`PeerError` with its
stderr. Leaving the ``with`` block (or :meth:`Peer.close`) terminates the
process if it still runs.

The binary comes from ``$POSP2P_BUILD_DIR/sim/peer/posp2p-peer``
(``POSP2P_BUILD_DIR`` defaults to build/asan in the repository), or from the
``binary=`` argument.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

DEFAULT_BUILD_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "build", "asan")

Event = Dict[str, Any]
Matcher = Union[str, Callable[[Event], bool], None]


def build_dir() -> str:
    """The build tree the tests use ($POSP2P_BUILD_DIR or the default)."""
    return os.environ.get("POSP2P_BUILD_DIR", DEFAULT_BUILD_DIR)


def peer_binary(build: Optional[str] = None) -> str:
    """Path of the posp2p-peer executable in a build tree."""
    return os.path.join(build or build_dir(), "sim", "peer", "posp2p-peer")


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port that is free on host right now (bind to port 0, read it back).

    kind is "tcp" or "udp". Another process may take it before you use it;
    on a test machine that is rare enough, and a busy port fails loudly."""
    st = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, st) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_ip_lock = threading.Lock()
_ip_next = [0]


def loopback_ip(block: int = 0) -> str:
    """A fresh 127.x.y.z address for one device, unique within this Python
    process (127.<block+64>.<pid-based>.<n>), so that concurrent tests and
    concurrent test processes rarely collide."""
    with _ip_lock:
        _ip_next[0] += 1
        n = _ip_next[0]
    second = 64 + (block % 64)
    third = (os.getpid() + n // 250) % 250 + 1
    return "127.%d.%d.%d" % (second, third, n % 250 + 1)


class PeerError(Exception):
    """The process failed, exited early, or did not answer in time."""


class Peer:
    """One posp2p-peer process.

    args: command-line arguments (strings). name: label used in messages
    (default: the --name argument, else "peer"). env: extra environment
    variables. start: start at once and wait for the ready line (default).
    """

    def __init__(self, *args: str, name: Optional[str] = None,
                 binary: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None,
                 ready_timeout: float = 15.0, start: bool = True):
        self.args = [str(a) for a in args]
        self.binary = binary or peer_binary()
        self.name = name or self._arg("--name") or "peer"
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        if env:
            self.env.update(env)
        self.proc: Optional[subprocess.Popen] = None
        self.ready: Optional[Event] = None
        self._lines: List[Event] = []       # every JSON object from stdout
        self._raw_bad: List[str] = []       # stdout lines that were not JSON
        self._stderr: List[str] = []
        self._cv = threading.Condition()
        self._eof = False
        self._req = 0
        self._threads: List[threading.Thread] = []
        if start:
            self.start(ready_timeout)

    # ---- process control -------------------------------------------------

    def _arg(self, flag: str) -> Optional[str]:
        for i, a in enumerate(self.args):
            if a == flag and i + 1 < len(self.args):
                return self.args[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    def start(self, ready_timeout: float = 15.0) -> Event:
        """Start the process and wait for its "ready" line."""
        self.proc = subprocess.Popen(
            [self.binary] + self.args, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
            start_new_session=True)
        for target, stream in ((self._read_stdout, self.proc.stdout),
                               (self._read_stderr, self.proc.stderr)):
            t = threading.Thread(target=target, args=(stream,), daemon=True)
            t.start()
            self._threads.append(t)
        self.ready = self.wait_event("ready", timeout=ready_timeout)
        return self.ready

    def _read_stdout(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            with self._cv:
                if isinstance(obj, dict):
                    self._lines.append(obj)
                else:
                    self._raw_bad.append(line)
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def _read_stderr(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._cv:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send a signal (SIGSTOP / SIGCONT / SIGTERM ...) to the process."""
        if self.running():
            os.kill(self.pid, sig)

    def kill(self, timeout: float = 10.0) -> int:
        """kill -9 and wait for the exit; returns the exit status."""
        self.signal(signal.SIGKILL)
        return self.wait_exit(timeout)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit status."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def shutdown(self, reason: str = "test", timeout: float = 15.0) -> int:
        """The "shutdown" command, then wait for the exit status."""
        self.call("shutdown", reason=reason, timeout=timeout)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit (and its output to be read)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PeerError("%s: still running after %.1fs\n%s" %
                            (self.name, timeout, self.stderr_text()))
        for t in self._threads:
            t.join(5)
        return rc

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL if needed)."""
        if self.proc is None:
            return
        if self.running():
            self.signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if s:
                    s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- identity from the ready line -------------------------------------

    @property
    def device_id(self) -> str:
        return self._ready()["device_id"]

    @property
    def tcp(self) -> str:
        """"ADDR:PORT" of the TCP listener."""
        return self._ready()["tcp"]

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.rsplit(":", 1)[1])

    @property
    def tcp_addr(self) -> str:
        return self.tcp.rsplit(":", 1)[0]

    def _ready(self) -> Event:
        if self.ready is None:
            raise PeerError("%s: not ready" % self.name)
        return self.ready

    # ---- output -------------------------------------------------------------

    def stderr_text(self) -> str:
        with self._cv:
            return "\n".join(self._stderr)

    def lines(self) -> List[Event]:
        """Every JSON object printed so far (events and replies)."""
        with self._cv:
            return list(self._lines)

    def events(self, name: Optional[str] = None, **match: Any) -> List[Event]:
        """Events so far, optionally only those named name whose fields
        equal match (a nested field with "__": device__id="...")."""
        pred = _predicate(name, match)
        with self._cv:
            return [e for e in self._lines if "event" in e and pred(e)]

    def mark(self) -> int:
        """Position in the output, for wait_event(since=...)."""
        with self._cv:
            return len(self._lines)

    def wait_event(self, what: Matcher = None, timeout: float = 10.0,
                   since: int = 0, **match: Any) -> Event:
        """The first event at or after position `since` that matches: what
        is an event name or a predicate, match gives field values. Raises
        PeerError after timeout or if the process exits first."""
        pred = _predicate(what, match)
        return self._wait(lambda o: "event" in o and pred(o), timeout, since,
                          "event %s %s" % (what, match))

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0,
                 what: str = "condition") -> None:
        """Wait until cond() (called whenever output arrives, and at least
        every 50 ms) is true."""
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError("%s: timed out after %.1fs waiting for %s\n%s"
                                % (self.name, timeout, what,
                                   self.stderr_text()[-4000:]))
            with self._cv:
                self._cv.wait(min(left, 0.05))

    def _wait(self, pred: Callable[[Event], bool], timeout: float, since: int,
              what: str) -> Event:
        deadline = time.monotonic() + timeout
        pos = since
        with self._cv:
            while True:
                while pos < len(self._lines):
                    o = self._lines[pos]
                    pos += 1
                    if pred(o):
                        return o
                if self._eof:
                    raise PeerError("%s: exited (status %s) while waiting for %s\n%s"
                                    % (self.name, self.proc.poll() if self.proc else None,
                                       what, "\n".join(self._stderr[-40:])))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerError("%s: timed out after %.1fs waiting for %s\n%s"
                                    % (self.name, timeout, what,
                                       "\n".join(self._stderr[-40:])))
                self._cv.wait(left)

    # ---- commands -----------------------------------------------------------

    def send(self, cmd: Dict[str, Any]) -> Any:
        """Write one command (a "req" id is added if missing); returns the
        req. Use request() to wait for the reply."""
        assert self.proc is not None and self.proc.stdin is not None
        if "req" not in cmd:
            self._req += 1
            cmd = dict(cmd, req="%s-%d" % (self.name, self._req))
        data = (json.dumps(cmd, separators=(",", ":")) + "\n").encode()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise PeerError("%s: cannot send %s: %s\n%s" %
                            (self.name, cmd.get("cmd"), e, self.stderr_text()))
        return cmd["req"]

    def request(self, cmd: Dict[str, Any], timeout: float = 10.0) -> Event:
        """Send a command and return its reply (ok or not)."""
        since = self.mark()
        req = self.send(cmd)
        return self._wait(lambda o: "reply" in o and o.get("req") == req,
                          timeout, since, "reply to %s" % cmd.get("cmd"))

    def call(self, cmd: str, timeout: float = 10.0, check: bool = True,
             **fields: Any) -> Event:
        """request({"cmd": cmd, **fields}); with check, a reply with
        "ok": false raises PeerError."""
        reply = self.request(dict(fields, cmd=cmd), timeout)
        if check and not reply.get("ok"):
            raise PeerError("%s: %s failed: %s: %s" % (
                self.name, cmd, reply.get("error"), reply.get("text")))
        return reply

    def stats(self) -> Dict[str, Any]:
        return self.call("stats")["stats"]

    def devices(self) -> List[Dict[str, Any]]:
        return self.call("devices")["devices"]


def _field(obj: Any, path: str) -> Any:
    for part in path.split("__"):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


def _predicate(what: Matcher, match: Dict[str, Any]) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        if isinstance(what, str) and e.get("event") != what:
            return False
        if callable(what) and not what(e):
            return False
        return all(_field(e, k) == v for k, v in match.items())
    return pred


def stop_all(peers: Iterable[Peer]) -> None:
    """close() every peer, ignoring errors (for finally blocks)."""
    for p in peers:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
