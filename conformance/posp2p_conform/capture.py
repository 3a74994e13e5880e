"""Per-test traffic recording: every byte the suite sends or receives is
kept with a timestamp and written as a pcap with synthesized IPv4/TCP/UDP
headers (Scapy wrpcap), so that `rdpcap(path)` + `show()` dissect it with
the posp2p layers.

The device's side of a TCP connection is written with port 8766 and of a
UDP exchange with port 8765 (the well-known ports the layers are bound to),
whatever port the device really used; the real endpoints are listed in the
`.txt` file next to the capture."""
from __future__ import annotations

import os
import threading
import time
from typing import Dict, List, Optional, Tuple

Addr = Tuple[str, int]


class Recorder:
    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.events: List[tuple] = []      # (t, kind, src, dst, data, flags)
        self.seq: Dict[tuple, int] = {}
        self.notes: List[str] = []
        self.dut_tcp_ports = set()
        self.dut_udp_ports = set()

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append("%.3f %s" % (time.time(), text))

    def tcp(self, src: Addr, dst: Addr, data: bytes, flags: str = "PA") -> None:
        with self.lock:
            self.events.append((time.time(), "tcp", src, dst, bytes(data), flags))

    def udp(self, src: Addr, dst: Addr, data: bytes) -> None:
        with self.lock:
            self.events.append((time.time(), "udp", src, dst, bytes(data), ""))

    def count(self) -> int:
        return len(self.events)

    def _port(self, addr: Addr, kind: str) -> int:
        ports = self.dut_tcp_ports if kind == "tcp" else self.dut_udp_ports
        if addr[1] in ports:
            return 8766 if kind == "tcp" else 8765
        return addr[1]

    def write(self, path: str) -> Optional[str]:
        """Write the pcap (and a .txt with notes); returns the path, or
        None if nothing was recorded."""
        with self.lock:
            events = list(self.events)
            notes = list(self.notes)
        if not events and not notes:
            return None
        from scapy.all import IP, TCP, UDP, Raw, wrpcap  # slow import: only here
        pkts = []
        seqs: Dict[tuple, int] = {}
        for t, kind, src, dst, data, flags in events:
            sport, dport = self._port(src, kind), self._port(dst, kind)
            ip = IP(src=src[0], dst=dst[0])
            if kind == "tcp":
                key = (src, dst)
                s = seqs.get(key, 1)
                a = seqs.get((dst, src), 1)
                # Large writes are cut into 60000-byte segments (IP limit).
                chunks = [data[i:i + 60000] for i in range(0, len(data), 60000)] or [b""]
                for ch in chunks:
                    p = ip / TCP(sport=sport, dport=dport, seq=s, ack=a, flags=flags)
                    if ch:
                        p = p / Raw(ch)
                    p.time = t
                    pkts.append(p)
                    s += len(ch) + (1 if "F" in flags or "S" in flags else 0)
                seqs[key] = s
            else:
                p = ip / UDP(sport=sport, dport=dport) / Raw(data[:65000])
                p.time = t
                pkts.append(p)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if pkts:
            wrpcap(path, pkts)
        with open(os.path.splitext(path)[0] + ".txt", "w") as f:
            f.write("capture of %s\n" % self.name)
            f.write("device TCP ports %s are shown as 8766, UDP ports %s as 8765\n"
                    % (sorted(self.dut_tcp_ports), sorted(self.dut_udp_ports)))
            for n in notes:
                f.write(n + "\n")
        return path if pkts else None


_current: Optional[Recorder] = None


def current() -> Recorder:
    global _current
    if _current is None:
        _current = Recorder("outside-test")
    return _current


def set_current(r: Optional[Recorder]) -> None:
    global _current
    _current = r
