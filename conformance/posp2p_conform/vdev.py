"""Virtual devices: the suite's side of every exchange, speaking raw bytes
through the codec helpers. Each one records its traffic in the current
test's capture.

    c = V2Client(dut, dtype="KDS").connect().handshake()
    c.send(order_forward(c.id, to=dut_id))
    a = c.expect(lambda e: e.message_type == MT["ACKNOWLEDGEMENT"], 1.0)

Every wait has a deadline; nothing sleeps a fixed time except
`expect_none`, whose whole point is to watch for a stated period."""
from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Callable, List, Optional, Tuple

from . import capture
from .codec import (ACKED_TYPES, MT, DT, EC, FrameReader, PREFACE, ack, frame,
                    heartbeat, hello, legacy_dumps, legacy_msg, new_id,
                    parse_envelope, describe, legacy_ts)
import json

_ip_lock = threading.Lock()
_ip_n = [0]


def suite_ip() -> str:
    """A fresh 127.x address for one virtual device (127.128-191.*.*)."""
    with _ip_lock:
        _ip_n[0] += 1
        n = _ip_n[0]
    return "127.%d.%d.%d" % (128 + (os.getpid() % 64), (n // 250) % 250 + 1, n % 250 + 1)


class Timeout(AssertionError):
    pass


class Received:
    """One received frame: t (monotonic), env (Envelope or None), raw body."""
    __slots__ = ("t", "env", "raw", "error")

    def __init__(self, t, env, raw, error=None):
        self.t, self.env, self.raw, self.error = t, env, raw, error

    def __repr__(self):
        return describe(self.env) if self.env is not None else "<undecodable %r>" % self.raw[:16]


def is_type(name):
    v = MT[name]
    return lambda e: e.message_type == v


def is_error(code=None, ref=None):
    def pred(e):
        if e.message_type != MT["ERROR"]:
            return False
        if code is not None and e.error.code != EC[code]:
            return False
        if ref is not None and e.error.ref_message_id.lower() != ref.lower():
            return False
        return True
    return pred


def acks(mid):
    return lambda e: (e.message_type == MT["ACKNOWLEDGEMENT"] and
                      e.acknowledgement.acknowledged_message_id.lower() == mid.lower())


def has_id(mid):
    return lambda e: e.message_id.lower() == mid.lower()


class _Stream:
    """A TCP connection with a reader thread and a list of what arrived."""

    def __init__(self, name: str):
        self.name = name
        self.sock: Optional[socket.socket] = None
        self.local: Tuple[str, int] = ("0.0.0.0", 0)
        self.remote: Tuple[str, int] = ("0.0.0.0", 0)
        self.cv = threading.Condition()
        self.items: List = []
        self.closed_at: Optional[float] = None   # monotonic time of EOF/reset
        self.reset = False
        self.bytes_in = 0
        self.first_byte_at: Optional[float] = None
        self._reader: Optional[threading.Thread] = None
        self._stop = False
        self.rec = capture.current()
        self.wlock = threading.RLock()   # one writer at a time (heartbeats vs test)

    # -- socket ----------------------------------------------------------------
    def _open(self, host: str, port: int, src_ip: Optional[str], timeout: float = 5.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if src_ip:
            s.bind((src_ip, 0))
        s.settimeout(timeout)
        s.connect((host, port))
        s.settimeout(None)
        self._adopt(s)
        self.rec.dut_tcp_ports.add(port)
        self.rec.tcp(self.local, self.remote, b"", "S")
        return self

    def _adopt(self, s: socket.socket):
        self.sock = s
        self.local = s.getsockname()
        self.remote = s.getpeername()
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="vdev-" + self.name)
        self._reader.start()

    def _read_loop(self):
        s = self.sock
        while not self._stop:
            try:
                r, _, _ = select.select([s], [], [], 0.02)
                if not r:
                    continue
                data = s.recv(65536)
            except (OSError, ValueError) as e:
                with self.cv:
                    self.reset = not self._stop and isinstance(e, ConnectionResetError)
                    if self.closed_at is None:
                        self.closed_at = time.monotonic()
                    self.cv.notify_all()
                return
            if not data:
                self.rec.tcp(self.remote, self.local, b"", "FA")
                with self.cv:
                    if self.closed_at is None:
                        self.closed_at = time.monotonic()
                    self.cv.notify_all()
                return
            now = time.monotonic()
            with self.cv:
                if self.first_byte_at is None:
                    self.first_byte_at = now
                self.bytes_in += len(data)
            self._on_data(data, now)

    def _on_data(self, data: bytes, now: float):  # overridden
        raise NotImplementedError

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (the capture shows exactly these)."""
        with self.wlock:
            self.rec.tcp(self.local, self.remote, data)
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the device closed; the test looks at `closed`

    def send_split(self, data: bytes, cuts) -> None:
        """Write data in pieces at the given offsets, each piece flushed on
        its own (TCP_NODELAY)."""
        last = 0
        with self.wlock:
            for c in list(cuts) + [len(data)]:
                if c > last:
                    self.send_raw(data[last:c])
                    time.sleep(0.001)   # let each piece leave as its own segment
                last = c

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.closed_at is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True

    def close(self, rst: bool = False) -> None:
        if self.sock is None:
            return
        self._stop = True
        try:
            if rst:
                import struct
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.rec.tcp(self.local, self.remote, b"", "FA")
            self.sock.close()
        except OSError:
            pass
        # The reader thread notices the closed socket within its 20 ms poll
        # and ends by itself (daemon); not joined, to keep teardown fast.

    def shutdown_write(self) -> None:
        try:
            self.rec.tcp(self.local, self.remote, b"", "FA")
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- waiting -------------------------------------------------------------------
    def mark(self) -> int:
        with self.cv:
            return len(self.items)

    def _wait(self, pred, timeout: float, since: int, what: str, raise_on_close=False):
        deadline = time.monotonic() + timeout
        pos = since
        with self.cv:
            while True:
                while pos < len(self.items):
                    it = self.items[pos]
                    pos += 1
                    if pred(it):
                        return it
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed_at is not None and
                                 (raise_on_close or pos >= len(self.items))):
                    if self.closed_at is not None and left > 0:
                        raise Timeout("%s: connection closed while waiting for %s; got %s"
                                      % (self.name, what, self.summary(since)))
                    raise Timeout("%s: no %s within %.2fs; got %s"
                                  % (self.name, what, timeout, self.summary(since)))
                self.cv.wait(min(left, 0.05))

    def summary(self, since: int = 0, limit: int = 12) -> str:
        with self.cv:
            items = self.items[since:]
        s = [repr(i) for i in items[-limit:]]
        extra = "" if len(items) <= limit else "... %d more " % (len(items) - limit)
        return "[" + extra + ", ".join(s) + "]" + (" then EOF" if self.closed else "")


class V2Conn(_Stream):
    """The suite's end of a v2 connection, as client (V2Client.connect) or
    as the accepting side (V2Main.accept)."""

    def __init__(self, name: str = "vdev", device_id: Optional[str] = None,
                 dtype="ORDERING_TABLET", hb_ms: int = 15000, timeout_ms: int = 60000,
                 max_frame: int = 1048576, auto_ack: bool = True,
                 auto_heartbeat: bool = True, server: bool = False):
        super().__init__(name)
        self.id = device_id or new_id()
        self.dtype = dtype
        self.hb_ms, self.timeout_ms, self.max_frame = hb_ms, timeout_ms, max_frame
        self.auto_ack = auto_ack
        self.auto_heartbeat = auto_heartbeat
        self.server = server
        self.reader = FrameReader(expect_preface=True)
        self.peer_hello = None
        self.peer_id: Optional[str] = None
        self.hb_seq = 0
        self.sent_acks = 0
        self._hb_thread: Optional[threading.Thread] = None
        self.preface_at: Optional[float] = None
        self.handshake_at: Optional[float] = None

    # -- receive -----------------------------------------------------------------------
    def _on_data(self, data: bytes, now: float):
        self.rec.tcp(self.remote, self.local, data)
        had_preface = self.reader.preface is not None
        try:
            bodies = self.reader.feed(data)
        except ValueError as e:
            bodies = []
            with self.cv:
                self.items.append(Received(now, None, b"", "bad varint: %s" % e))
                self.cv.notify_all()
        if not had_preface and self.reader.preface is not None:
            self.preface_at = now
        auto = []
        with self.cv:
            for b in bodies:
                try:
                    env = parse_envelope(b)
                    err = None
                except Exception as e:  # noqa: BLE001
                    env, err = None, str(e)
                self.items.append(Received(now, env, b, err))
                if env is not None and self.auto_ack and env.message_type in ACKED_TYPES and \
                        self.peer_hello is not None and self._addressed_to_me(env):
                    auto.append(env)
            self.cv.notify_all()
        for env in auto:
            self.send(ack(self.id, env.from_device_id, env.message_id))
            self.sent_acks += 1

    def _addressed_to_me(self, env) -> bool:
        if env.HasField("to_device_id"):
            return env.to_device_id.lower() == self.id
        if env.HasField("to_device_type"):
            return env.to_device_type == DT[self.dtype]
        return True

    @property
    def frames(self) -> List[Received]:
        with self.cv:
            return list(self.items)

    def envs(self, pred=None, since: int = 0):
        with self.cv:
            return [i.env for i in self.items[since:]
                    if i.env is not None and (pred is None or pred(i.env))]

    def expect(self, pred: Callable, timeout: float = 2.0, since: Optional[int] = None,
               what: str = "matching frame"):
        """The first frame at or after `since` (default: 0) whose Envelope
        matches pred; raises Timeout."""
        it = self._wait(lambda i: i.env is not None and pred(i.env), timeout,
                        0 if since is None else since, what)
        return it.env

    def expect_item(self, pred, timeout=2.0, since=0, what="matching frame"):
        return self._wait(lambda i: i.env is not None and pred(i.env), timeout, since, what)

    def expect_none(self, pred: Callable, period: float, since: Optional[int] = None):
        """Watch for `period` seconds; return the first matching Envelope if
        one arrives (a failure for the caller), else None."""
        try:
            return self.expect(pred, period, since if since is not None else self.mark())
        except Timeout:
            return None

    # -- send ----------------------------------------------------------------------------
    def send(self, env) -> str:
        self.send_raw(frame(env))
        return env.message_id

    def send_preface(self, data: bytes = PREFACE):
        self.send_raw(data)

    def hello_env(self, **kw):
        args = dict(dtype=self.dtype, hb_ms=self.hb_ms, timeout_ms=self.timeout_ms,
                    max_frame=self.max_frame)
        args.update(kw)
        return hello(self.id, **args)

    def handshake(self, timeout: float = 3.0, hello_env=None, preface_bytes: bytes = PREFACE):
        """Client side: preface + HELLO, then wait for the device's preface
        and HELLO. Returns the device's HELLO Envelope."""
        self.send_preface(preface_bytes)
        self.send(hello_env or self.hello_env())
        h = self.expect(is_type("HELLO"), timeout, 0, "HELLO from the device")
        self._hello_done(h)
        return h

    def _hello_done(self, h):
        self.peer_hello = h
        self.peer_id = h.hello.device_id.lower()
        self.handshake_at = time.monotonic()
        if self.auto_heartbeat:
            self.start_heartbeats()

    def effective_hb_s(self) -> float:
        own = self.hb_ms
        if self.peer_hello is not None:
            own = min(own, max(1, self.peer_hello.hello.device_timeout_ms // 2))
        return own / 1000.0

    def start_heartbeats(self):
        if self._hb_thread is not None:
            return

        def loop():
            while not self._stop and not self.closed:
                time.sleep(self.effective_hb_s() * 0.8)   # the sending period itself
                if self._stop or self.closed:
                    return
                if self.auto_heartbeat:
                    self.hb_seq += 1
                    self.send(heartbeat(self.id, self.peer_id, self.hb_seq))
        self._hb_thread = threading.Thread(target=loop, daemon=True, name="hb-" + self.name)
        self._hb_thread.start()

    def server_handshake(self, timeout: float = 5.0, selected: int = 2, hello_kw=None):
        """Accepting side: wait for the client's preface and HELLO, answer
        with our preface and HELLO (selected_version)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.reader.preface is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise Timeout("%s: no preface from the device within %.1fs" %
                                  (self.name, timeout))
                self.cv.wait(min(left, 0.05))
        self.send_preface()
        h = self.expect(is_type("HELLO"), max(0.1, deadline - time.monotonic()), 0,
                        "HELLO from the device")
        kw = dict(dtype="MAIN_POS", selected=selected, caps=("relay", "ack", "dedup"))
        kw.update(hello_kw or {})
        self.send(self.hello_env(**kw))
        self._hello_done(h)
        return h


class V2Client(V2Conn):
    def __init__(self, dut, name: str = "client", src_ip: Optional[str] = None, **kw):
        super().__init__(name=name, **kw)
        self.dut = dut
        self.src_ip = src_ip if src_ip is not None else dut.suite_src_ip()
        if dut is not None:
            self.rec.dut_udp_ports.add(dut.udp_port)

    def connect(self, timeout: float = 5.0):
        self._open(self.dut.host, self.dut.tcp_port, self.src_ip, timeout)
        return self


class V2Main:
    """The suite as the main POS: listens on its own 127.x address and
    accepts the device's connections."""

    def __init__(self, name: str = "vmain", host: Optional[str] = None, port: int = 0,
                 **conn_kw):
        self.name = name
        self.id = conn_kw.pop("device_id", None) or new_id()
        self.conn_kw = conn_kw
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((host or suite_ip(), port))
        self.ls.listen(16)
        self.addr = self.ls.getsockname()
        self.conns: List[V2Conn] = []

    def accept(self, timeout: float = 5.0, handshake: bool = True, **hs_kw) -> V2Conn:
        self.ls.settimeout(timeout)
        try:
            s, _ = self.ls.accept()
        except socket.timeout:
            raise Timeout("%s: the device did not connect within %.1fs" % (self.name, timeout))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = V2Conn(name="%s-conn%d" % (self.name, len(self.conns) + 1), device_id=self.id,
                   dtype="MAIN_POS", server=True, **self.conn_kw)
        c.rec.dut_tcp_ports.add(s.getpeername()[1])
        c._adopt(s)
        c.rec.tcp(c.remote, c.local, b"", "S")
        self.conns.append(c)
        if handshake:
            c.server_handshake(timeout, **hs_kw)
        return c

    def close(self):
        for c in self.conns:
            c.close()
        try:
            self.ls.close()
        except OSError:
            pass


class LegacyConn(_Stream):
    """The suite's end of a legacy NDJSON connection."""

    def __init__(self, dut, name: str = "legacy", device_id: Optional[str] = None,
                 src_ip: Optional[str] = None, auto_ack: bool = True):
        super().__init__(name)
        self.dut = dut
        self.id = device_id or new_id()
        self.src_ip = src_ip if src_ip is not None else dut.suite_src_ip()
        self.buf = bytearray()
        self.auto_ack = auto_ack

    def connect(self, timeout: float = 5.0):
        self._open(self.dut.host, self.dut.tcp_port, self.src_ip, timeout)
        return self

    def _on_data(self, data: bytes, now: float):
        self.rec.tcp(self.remote, self.local, data)
        self.buf += data
        auto = []
        with self.cv:
            while True:
                i = self.buf.find(b"\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                try:
                    obj = json.loads(line.decode("utf-8"))
                except ValueError:
                    obj = None
                self.items.append((now, obj, line))
                if self.auto_ack and isinstance(obj, dict) and \
                        obj.get("messageType") != "acknowledgement" and \
                        obj.get("toDeviceId") in (None, self.id):
                    auto.append(obj)
            self.cv.notify_all()
        for obj in auto:
            self.send(legacy_msg("acknowledgement", self.id, obj.get("fromDeviceId"),
                                 {"acknowledgedMessageId": obj.get("messageId")}, priority=3))

    def send(self, obj) -> str:
        self.send_raw((legacy_dumps(obj) + "\n").encode("utf-8"))
        return obj.get("messageId", "")

    def lines(self):
        with self.cv:
            return list(self.items)

    def expect(self, pred, timeout: float = 2.0, since: int = 0, what="matching line"):
        it = self._wait(lambda i: i[1] is not None and pred(i[1]), timeout, since, what)
        return it[1]

    def expect_raw(self, pred, timeout: float = 2.0, since: int = 0, what="matching line"):
        return self._wait(lambda i: pred(i), timeout, since, what)

    def expect_none(self, pred, period: float, since: Optional[int] = None):
        try:
            return self.expect(pred, period, self.mark() if since is None else since)
        except Timeout:
            return None

    def summary(self, since: int = 0, limit: int = 8) -> str:
        with self.cv:
            items = self.items[since:]
        return "[" + ", ".join(i[2][:160].decode("utf-8", "replace") for i in items[-limit:]) + \
            "]" + (" then EOF" if self.closed else "")


def lacks(mid):
    return lambda o: (o.get("messageType") == "acknowledgement" and
                      (o.get("payload") or {}).get("acknowledgedMessageId") == mid)


class UdpProbe:
    """A UDP socket on its own 127.x address (or a given one)."""

    def __init__(self, ip: Optional[str] = None, port: int = 0, broadcast_listener=False,
                 name: str = "udp"):
        self.name = name
        self.rec = capture.current()
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if broadcast_listener:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind((ip or suite_ip(), port))
        self.addr = self.s.getsockname()
        self.got: List[tuple] = []

    def send(self, data: bytes, to: Tuple[str, int]) -> None:
        self.rec.dut_udp_ports.add(to[1])
        self.rec.udp(self.addr, to, data)
        self.s.sendto(data, to)

    def recv(self, timeout: float):
        """(data, addr) of the next datagram, or None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if r:
                data, addr = self.s.recvfrom(65536)
                self.rec.udp(addr, self.addr, data)
                self.got.append((time.monotonic(), data, addr))
                return data, addr

    def recv_all(self, period: float):
        out = []
        deadline = time.monotonic() + period
        while True:
            r = self.recv(max(0.0, deadline - time.monotonic()))
            if r is None:
                return out
            out.append(r)

    def close(self):
        self.s.close()
