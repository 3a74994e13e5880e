"""A pair of network namespaces joined by a veth pair, for the tests that
need real subnet broadcast. Everything is created and torn down by the
test (root only); no traffic leaves the two namespaces.

    with Pair() as p:              # p.ns_dut (10.231.K.1), p.ns_suite (.2)
        s = p.udp_socket(port=0)   # a socket living in the suite namespace
        sendto(s, data, (p.broadcast, 8765))
"""
from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import threading
import time

from . import capture

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_n = [0]


def _ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))


class Pair:
    def __init__(self):
        with _lock:
            _n[0] += 1
            k = (os.getpid() + _n[0]) % 200 + 20
        tag = "%d%d" % (os.getpid() % 10000, _n[0])
        self.ns_dut = "p2pconf-%s-d" % tag
        self.ns_suite = "p2pconf-%s-s" % tag
        self.if_dut, self.if_suite = "p2pc%sd" % tag[-8:], "p2pc%ss" % tag[-8:]
        self.ip_dut = "10.231.%d.1" % k
        self.ip_suite = "10.231.%d.2" % k
        self.broadcast = "10.231.%d.255" % k

    def __enter__(self):
        try:
            _ip("netns", "add", self.ns_dut)
            _ip("netns", "add", self.ns_suite)
            _ip("link", "add", self.if_dut, "type", "veth", "peer", "name", self.if_suite)
            _ip("link", "set", self.if_dut, "netns", self.ns_dut)
            _ip("link", "set", self.if_suite, "netns", self.ns_suite)
            for ns, ifn, ip in ((self.ns_dut, self.if_dut, self.ip_dut),
                                (self.ns_suite, self.if_suite, self.ip_suite)):
                _ip("-n", ns, "addr", "add", ip + "/24", "broadcast", self.broadcast,
                    "dev", ifn)
                _ip("-n", ns, "link", "set", ifn, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.ns_dut, self.ns_suite):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def udp_socket(self, port: int = 0, bind_ip: str = None) -> socket.socket:
        """A UDP socket created inside the suite namespace (on a helper
        thread that enters it; the socket keeps that namespace)."""
        out = {}

        def make():
            try:
                fd = os.open("/var/run/netns/" + self.ns_suite, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((bind_ip or self.ip_suite, port))
                out["s"] = s
            except Exception as e:  # noqa: BLE001
                out["e"] = e
        t = threading.Thread(target=make)
        t.start()
        t.join(10)
        if "e" in out:
            raise out["e"]
        return out["s"]


def sendto(s: socket.socket, data: bytes, to) -> None:
    capture.current().udp(s.getsockname(), to, data)
    s.sendto(data, to)


def recv(s: socket.socket, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([s], [], [], left)
        if r:
            data, addr = s.recvfrom(65536)
            capture.current().udp(addr, s.getsockname(), data)
            return data, addr
