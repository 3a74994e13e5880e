"""Device profile files: what a device under test is and how to drive it.

Format (INI-like; `#` or `;` start a comment, keys are `name = value`):

    [device]
    role = mainPOS              # mainPOS | orderingTablet | secondaryPOS | kds | customerDisplay
    wires = v2, legacy          # the wires it speaks (v2, legacy)
    capabilities = relay, ack, dedup, discovery, announce, retransmit
    address = 127.0.0.1         # --dut HOST[:PORT] overrides address and tcp_port
    tcp_port = 8766
    udp_port = 8765             # 0: the device does not take part in discovery
    broadcast = 127.255.255.255
    device_id =                 # optional; learnt from HELLO otherwise

    [timers]                    # the values the device is configured with
    heartbeat_ms = 15000        # advertised in HELLO (checked against it)
    timeout_ms = 60000
    ack_timeout_ms = 2000
    ack_backoff_cap_ms = 16000
    max_retries = 5
    handshake_ms = 10000
    announce_ms = 30000
    disc_rate_limit_ms = 1000
    reconnect_ms = 1000
    max_frame = 1048576
    max_connections = 1024

    [upper_tester]              # shell commands; "none" or absent: not available
    send_order = ssh pos1 posctl order --to {to} --id {order_id}
    send_status = ...           # placeholders: {to} {to_type} {order_id} {status} {reason}
    cancel = ...
    deliveries = ...            # prints JSON lines {"message_id", "from", "type"}

    [client]                    # client roles: where the suite's virtual main POS
    listen = 127.0.0.1:8766     # listens; configure the device to connect there

Errors are reported as `FILE:LINE: KEY: what is wrong (what is expected)`
and make posp2p-conform exit with status 2."""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

ROLES = ("mainPOS", "orderingTablet", "secondaryPOS", "kds", "customerDisplay")
WIRES = ("v2", "legacy")
CAPABILITIES = ("relay", "ack", "dedup", "discovery", "announce", "retransmit",
                "reconnect", "observe")
TIMER_DEFAULTS = {
    "heartbeat_ms": 15000, "timeout_ms": 60000, "ack_timeout_ms": 2000,
    "ack_backoff_cap_ms": 16000, "max_retries": 5, "handshake_ms": 10000,
    "announce_ms": 30000, "disc_rate_limit_ms": 1000, "reconnect_ms": 1000,
    "max_frame": 1048576, "max_connections": 1024}
UPPER_KEYS = ("send_order", "send_status", "cancel", "send", "discover", "deliveries")
SECTIONS = {
    "device": ("role", "wires", "capabilities", "address", "tcp_port", "udp_port",
               "broadcast", "device_id", "name"),
    "timers": tuple(TIMER_DEFAULTS),
    "upper_tester": UPPER_KEYS,
    "client": ("listen", "connect_timeout_ms"),
}
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}$")


class ProfileError(Exception):
    def __init__(self, path: str, line: int, key: str, text: str):
        self.path, self.line, self.key, self.text = path, line, key, text
        where = "%s:%d" % (path or "<profile>", line)
        super().__init__("%s: %s: %s" % (where, key, text) if key else "%s: %s" % (where, text))


class Profile:
    def __init__(self):
        self.path = ""
        self.role = "mainPOS"
        self.wires = ["v2", "legacy"]
        self.capabilities = ["relay", "ack", "dedup", "discovery", "announce",
                             "retransmit", "reconnect", "observe"]
        self.address = "127.0.0.1"
        self.tcp_port = 8766
        self.udp_port = 8765
        self.broadcast = "127.255.255.255"
        self.device_id: Optional[str] = None
        self.name = "device"
        self.timers: Dict[str, int] = dict(TIMER_DEFAULTS)
        self.upper: Dict[str, str] = {}
        self.client_listen: Optional[Tuple[str, int]] = None
        self.connect_timeout_ms = 10000

    @property
    def is_main(self) -> bool:
        return self.role == "mainPOS"

    def has_cap(self, cap: str) -> bool:
        return cap in self.capabilities

    def to_dict(self) -> dict:
        return {"path": self.path, "role": self.role, "wires": self.wires,
                "capabilities": self.capabilities, "address": self.address,
                "tcp_port": self.tcp_port, "udp_port": self.udp_port,
                "broadcast": self.broadcast, "device_id": self.device_id,
                "timers": self.timers, "upper_tester": sorted(self.upper),
                "client_listen": "%s:%d" % self.client_listen if self.client_listen else None}


def _ipv4(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)


def _int(path, lineno, key, val, lo, hi):
    if not re.fullmatch(r"[0-9]+", val):
        raise ProfileError(path, lineno, key, "'%s' is not a number (expected %d..%d)" %
                           (val, lo, hi))
    v = int(val)
    if not lo <= v <= hi:
        raise ProfileError(path, lineno, key, "%d is out of range (expected %d..%d)" %
                           (v, lo, hi))
    return v


def _list(val: str) -> List[str]:
    return [x.strip() for x in val.split(",") if x.strip()]


def parse_hostport(s: str, default_port: Optional[int]) -> Tuple[str, Optional[int]]:
    if ":" in s:
        h, p = s.rsplit(":", 1)
        if not p.isdigit() or not 1 <= int(p) <= 65535:
            raise ValueError("bad port '%s'" % p)
        return h, int(p)
    return s, default_port


def load(path: str) -> Profile:
    """Parse a profile file; raises ProfileError with file and line."""
    prof = Profile()
    prof.path = path
    seen = {}
    section = None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise ProfileError(path, 0, "", "cannot read: %s" % e.strerror)
    except UnicodeDecodeError:
        raise ProfileError(path, 0, "", "not UTF-8 text")
    given_caps = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip() if not raw.lstrip().startswith(
            ("#", ";")) else ""
        if not line:
            continue
        m = re.fullmatch(r"\[([A-Za-z_]+)\]", line)
        if m:
            section = m.group(1)
            seen.setdefault(("[section]", section), lineno)
            if section not in SECTIONS:
                raise ProfileError(path, lineno, "", "unknown section [%s] (expected %s)" %
                                   (section, ", ".join("[%s]" % s for s in SECTIONS)))
            continue
        if "=" not in line:
            raise ProfileError(path, lineno, "", "expected 'key = value' or '[section]', got '%s'"
                               % line)
        key, val = (x.strip() for x in line.split("=", 1))
        if section is None:
            raise ProfileError(path, lineno, key, "key outside a section (start with [device])")
        if key not in SECTIONS[section]:
            raise ProfileError(path, lineno, key, "unknown key in [%s] (expected %s)" %
                               (section, ", ".join(SECTIONS[section])))
        if (section, key) in seen:
            raise ProfileError(path, lineno, key, "given twice (first at line %d)" %
                               seen[(section, key)])
        seen[(section, key)] = lineno
        if section == "device":
            if key == "role":
                if val not in ROLES:
                    raise ProfileError(path, lineno, key, "unknown role '%s' (expected %s)" %
                                       (val, ", ".join(ROLES)))
                prof.role = val
            elif key == "wires":
                ws = _list(val)
                if not ws:
                    raise ProfileError(path, lineno, key, "empty (expected v2, legacy)")
                for w in ws:
                    if w not in WIRES:
                        raise ProfileError(path, lineno, key, "unknown wire '%s' (expected %s)" %
                                           (w, ", ".join(WIRES)))
                prof.wires = ws
            elif key == "capabilities":
                cs = _list(val)
                for c in cs:
                    if c not in CAPABILITIES:
                        raise ProfileError(path, lineno, key,
                                           "unknown capability '%s' (expected %s)" %
                                           (c, ", ".join(CAPABILITIES)))
                given_caps = cs
            elif key == "address":
                if not _ipv4(val):
                    raise ProfileError(path, lineno, key, "'%s' is not an IPv4 address" % val)
                prof.address = val
            elif key in ("tcp_port", "udp_port"):
                prof.__dict__[key] = _int(path, lineno, key, val, 0 if key == "udp_port" else 1,
                                          65535)
            elif key == "broadcast":
                if not _ipv4(val):
                    raise ProfileError(path, lineno, key, "'%s' is not an IPv4 address" % val)
                prof.broadcast = val
            elif key == "device_id":
                if val and not UUID_RE.match(val):
                    raise ProfileError(path, lineno, key, "'%s' is not a canonical UUID" % val)
                prof.device_id = val.lower() or None
            elif key == "name":
                prof.name = val
        elif section == "timers":
            lo = 1
            if key == "max_frame":
                lo = 4096
            if key in ("max_retries", "announce_ms"):
                lo = 0
            prof.timers[key] = _int(path, lineno, key, val, lo, 2 ** 32 - 1)
        elif section == "upper_tester":
            if val and val.lower() != "none":
                prof.upper[key] = val
        elif section == "client":
            if key == "listen":
                try:
                    h, p = parse_hostport(val, 8766)
                except ValueError as e:
                    raise ProfileError(path, lineno, key, str(e) + " (expected HOST:PORT)")
                if not _ipv4(h):
                    raise ProfileError(path, lineno, key, "'%s' is not an IPv4 address" % h)
                prof.client_listen = (h, p)
            else:
                prof.connect_timeout_ms = _int(path, lineno, key, val, 1, 600000)
    if ("device", "role") not in seen:
        raise ProfileError(path, seen.get(("[section]", "device"), 1), "role",
                           "missing in [device] (expected %s)" % ", ".join(ROLES))
    t = prof.timers
    if t["timeout_ms"] <= t["heartbeat_ms"]:
        raise ProfileError(path, seen.get(("timers", "timeout_ms"), 0), "timeout_ms",
                           "must be greater than heartbeat_ms (HELLO-9)")
    prof.capabilities = given_caps if given_caps is not None else []
    if "legacy" in prof.wires and "legacy" not in prof.capabilities:
        prof.capabilities.append("legacy")
    if prof.upper.get("deliveries") and "observe" not in prof.capabilities:
        prof.capabilities.append("observe")
    return prof


def reference_profile(main: bool = True) -> Profile:
    """The profile of the built-in reference peer (posp2p-peer) as the
    fixtures start it: compressed timers."""
    p = Profile()
    p.path = "(built-in posp2p-peer)"
    p.role = "mainPOS" if main else "kds"
    p.name = "posp2p-peer"
    p.timers.update(heartbeat_ms=200, timeout_ms=1000, ack_timeout_ms=200, max_retries=2,
                    handshake_ms=800, announce_ms=400, reconnect_ms=300)
    p.upper = {"send_order": "peerctl", "send_status": "peerctl", "cancel": "peerctl",
               "deliveries": "peerctl"}
    return p
