"""Scapy layers for both posp2p wires.

    PYTHONPATH=conformance /usr/bin/python3
    >>> from posp2p_conform.layers import *
    >>> pkts = rdpcap("report/captures/test_x.pcap")
    >>> pkts[3].show()                       # TCP 8766 -> frames, envelopes
    >>> p = P2PFrame()/P2PEnvelope(message_type="HEARTBEAT",
    ...         from_device_id=new_id())/P2PHeartbeat(sequence=1)
    >>> bytes(p).hex()
    >>> bad = P2PFrame(length=5000)/P2PEnvelope()   # a lying length prefix

Layers
  UDP 8765:  P2PDiscovery (FF 'P2D' 02 prefix) / P2PDiscoveryDatagram
             P2PLegacyDiscovery (one JSON object)
  TCP 8766:  P2PV2Stream (optional preface, then P2PFrame list)
             P2PFrame (varint length) / P2PEnvelope / P2P<Payload>
             P2PLegacyStream (P2PLegacyLine list, one JSON object per line)

Envelope and DiscoveryDatagram fields are dissected with Google's protobuf
(posp2p_pb2) and shown by name; an `opt_` field that is absent shows as
None. Unknown (vendor) fields survive a dissect/build round trip in the
`unknown` field (raw bytes)."""
from __future__ import annotations

import json

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from scapy.all import (IP, TCP, UDP, Field, Packet, PacketListField, Raw,  # noqa: F401
                       bind_layers, conf, rdpcap, wrpcap, Ether)

from . import codec
from .codec import *  # noqa: F401,F403  (builders for interactive use)
from .codec import pb, varint, read_varint

TCP_PORT = 8766
UDP_PORT = 8765


class PBValueField(Field):
    """Holds a Python value of one protobuf field; (de)serialized by the
    owning ProtoPacket, never by Scapy itself."""
    __slots__ = ["fd", "presence"]

    def __init__(self, name, default, fd=None, presence=False):
        self.fd = fd
        self.presence = presence
        Field.__init__(self, name, default, fmt="H")

    def any2i(self, pkt, x):
        if isinstance(x, str) and self.fd is not None and self.fd.enum_type is not None:
            vals = self.fd.enum_type.values_by_name
            for cand in (x, self.fd.enum_type.name and _enum_prefix(self.fd) + x):
                if cand in vals:
                    return vals[cand].number
        return x

    def i2h(self, pkt, x):
        return x

    def h2i(self, pkt, x):
        return self.any2i(pkt, x)

    def i2repr(self, pkt, x):
        if x is None:
            return "None (absent)" if self.presence else "None"
        fd = self.fd
        if fd is not None and fd.enum_type is not None:
            def one(v):
                ev = fd.enum_type.values_by_number.get(v)
                return "%s (%d)" % (ev.name, v) if ev else "%d (undefined)" % v
            if isinstance(x, list):
                return "[%s]" % ", ".join(one(v) for v in x)
            return one(x)
        if fd is not None and fd.type == FieldDescriptor.TYPE_MESSAGE:
            if isinstance(x, list):
                return "[%s]" % ", ".join("{%s}" % text_format.MessageToString(m, as_one_line=True)
                                          for m in x)
            return "{%s}" % text_format.MessageToString(x, as_one_line=True)
        return repr(x)

    def i2len(self, pkt, x):
        return 0

    def addfield(self, pkt, s, val):  # pragma: no cover - not used
        return s

    def getfield(self, pkt, s):  # pragma: no cover - not used
        return s, None


def _enum_prefix(fd):
    n = fd.enum_type.name
    return {"MessageType": "MESSAGE_TYPE_", "DeviceType": "DEVICE_TYPE_",
            "ErrorCode": "ERROR_CODE_", "DiscoveryKind": "DISCOVERY_KIND_",
            "OrderStatusCode": "ORDER_STATUS_", "Destination": "DESTINATION_"}.get(n, "")


def _fields_for(desc, skip_oneof=None):
    out = []
    for fd in desc.fields:
        if skip_oneof and fd.containing_oneof is not None and \
                fd.containing_oneof.name == skip_oneof:
            continue
        presence = fd.containing_oneof is not None
        if fd.label == FieldDescriptor.LABEL_REPEATED:
            default = []
        elif presence:
            default = None
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            default = None
        else:
            default = fd.default_value
        out.append(PBValueField(fd.name, default, fd, presence))
    out.append(PBValueField("unknown", b""))
    return out


class ProtoPacket(Packet):
    """A Scapy packet whose body is one protobuf message (pb_class)."""
    pb_class = None
    payload_oneof = None        # Envelope: the payload oneof is the next layer

    def to_pb(self):
        m = self.pb_class()
        for fd in m.DESCRIPTOR.fields:
            if fd.name not in self.fields and fd.name not in self.default_fields:
                continue
            v = self.getfieldval(fd.name)
            if v is None:
                continue
            if fd.label == FieldDescriptor.LABEL_REPEATED:
                f = getattr(m, fd.name)
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    for x in v:
                        f.add().CopyFrom(x)
                else:
                    f.extend(v)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(m, fd.name).CopyFrom(v)
            else:
                setattr(m, fd.name, v)
        if self.payload_oneof and isinstance(self.payload, ProtoPacket):
            name = _LAYER_FIELD.get(type(self.payload))
            if name:
                getattr(m, name).SetInParent()
                getattr(m, name).MergeFromString(bytes(self.payload))
        return m

    def do_build(self):
        data = self.to_pb().SerializeToString()
        if self.payload_oneof and self.payload is not None and \
                not isinstance(self.payload, (ProtoPacket, conf.padding_layer)) and \
                len(self.payload) > 0:
            data += bytes(self.payload)     # raw bytes appended on purpose
        return data + (self.getfieldval("unknown") or b"")

    def do_dissect(self, s):
        m = self.pb_class()
        m.ParseFromString(bytes(s))
        self._pb = m
        self._next_cls = None
        nxt = b""
        for fd in m.DESCRIPTOR.fields:
            oneof = fd.containing_oneof
            if self.payload_oneof and oneof is not None and oneof.name == self.payload_oneof:
                continue
            if fd.label == FieldDescriptor.LABEL_REPEATED:
                self.fields[fd.name] = list(getattr(m, fd.name))
            elif oneof is not None and not m.HasField(fd.name):
                self.fields[fd.name] = None
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                self.fields[fd.name] = getattr(m, fd.name) if m.HasField(fd.name) else None
            else:
                self.fields[fd.name] = getattr(m, fd.name)
        self.fields["unknown"] = b"".join(
            varint(n << 3 | 2) + varint(len(v)) + v if isinstance(v, bytes) else b""
            for n, _, v in m.UnknownFields()) if hasattr(m, "UnknownFields") else b""
        if self.payload_oneof:
            which = m.WhichOneof(self.payload_oneof)
            if which:
                self._next_cls = _FIELD_LAYER.get(which)
                nxt = getattr(m, which).SerializeToString()
        self.raw_packet_cache = None
        return nxt

    def guess_payload_class(self, payload):
        return getattr(self, "_next_cls", None) or conf.raw_layer

    def mysummary(self):
        return self.sprintf("%s" % self.name)


def _proto_layer(clsname, pb_class, display, oneof=None):
    skip = oneof
    return type(clsname, (ProtoPacket,), {
        "name": display, "pb_class": pb_class, "payload_oneof": oneof,
        "fields_desc": _fields_for(pb_class.DESCRIPTOR, skip)})


P2PEnvelope = _proto_layer("P2PEnvelope", pb.Envelope, "posp2p Envelope", "payload")
P2PHello = _proto_layer("P2PHello", pb.Hello, "posp2p Hello")
P2PGoodbye = _proto_layer("P2PGoodbye", pb.Goodbye, "posp2p Goodbye")
P2PDeviceInfo = _proto_layer("P2PDeviceInfo", pb.DeviceInfo, "posp2p DeviceInfo")
P2PDiscoveryMsg = _proto_layer("P2PDiscoveryMsg", pb.Discovery, "posp2p Discovery (TCP)")
P2POrderForward = _proto_layer("P2POrderForward", pb.OrderForward, "posp2p OrderForward")
P2POrderStatus = _proto_layer("P2POrderStatus", pb.OrderStatus, "posp2p OrderStatus")
P2POrderCancel = _proto_layer("P2POrderCancel", pb.OrderCancel, "posp2p OrderCancel")
P2PCartSync = _proto_layer("P2PCartSync", pb.CartSync, "posp2p CartSync")
P2PHeartbeat = _proto_layer("P2PHeartbeat", pb.Heartbeat, "posp2p Heartbeat")
P2PAck = _proto_layer("P2PAck", pb.Acknowledgement, "posp2p Acknowledgement")
P2PError = _proto_layer("P2PError", pb.Error, "posp2p Error")
P2POpaque = _proto_layer("P2POpaque", pb.OpaquePayload, "posp2p OpaquePayload")
P2PDiscoveryDatagram = _proto_layer("P2PDiscoveryDatagram", pb.DiscoveryDatagram,
                                    "posp2p DiscoveryDatagram")

_FIELD_LAYER = {"hello": P2PHello, "goodbye": P2PGoodbye, "device_info": P2PDeviceInfo,
                "discovery": P2PDiscoveryMsg, "order_forward": P2POrderForward,
                "order_status": P2POrderStatus, "order_cancel": P2POrderCancel,
                "cart_sync": P2PCartSync, "heartbeat": P2PHeartbeat,
                "acknowledgement": P2PAck, "error": P2PError, "opaque": P2POpaque}
_LAYER_FIELD = {v: k for k, v in _FIELD_LAYER.items()}


# ---- v2 TCP stream -----------------------------------------------------------------

class VarintLenField(Field):
    """Frame length prefix: a base-128 varint. None on build = the length
    of the body (minimal encoding); set it to lie on purpose."""

    def __init__(self, name, default=None):
        Field.__init__(self, name, default, fmt="I")

    def addfield(self, pkt, s, val):
        if val is None:
            val = len(bytes(pkt.payload)) if pkt.payload else 0
        return s + (val if isinstance(val, bytes) else varint(val))

    def getfield(self, pkt, s):
        n, used = read_varint(bytes(s[:10]))
        if n is None:
            raise ValueError("incomplete varint")
        pkt._prefix_len = used
        return s[used:], n

    def i2repr(self, pkt, x):
        if x is None:
            return "None (auto)"
        return "%d" % x if not isinstance(x, bytes) else x.hex()


class P2PFrame(Packet):
    name = "posp2p Frame"
    fields_desc = [VarintLenField("length")]

    def extract_padding(self, s):
        n = self.length or 0
        return s[:n], s[n:]

    def guess_payload_class(self, payload):
        return P2PEnvelope if payload else conf.raw_layer

    def do_build(self):
        body = bytes(self.payload) if self.payload else b""
        n = self.length
        head = (n if isinstance(n, bytes) else varint(len(body) if n is None else n))
        return head + body

    def mysummary(self):
        return "Frame len=%s" % self.length


class P2PPreface(Packet):
    name = "posp2p Preface"
    fields_desc = [PBValueField("magic", b"\xffPOSP2P"), PBValueField("version", 2)]

    def do_dissect(self, s):
        self.fields["magic"] = bytes(s[:7])
        self.fields["version"] = s[7] if len(s) > 7 else None
        return s[8:]

    def do_build(self):
        return bytes(self.magic) + bytes([self.version])

    def guess_payload_class(self, payload):
        return P2PV2Frames


class P2PV2Frames(Packet):
    name = "posp2p v2 frames"
    fields_desc = [PacketListField("frames", [], P2PFrame)]


class P2PV2Stream(Packet):
    """A TCP payload of the v2 wire: a preface and/or frames."""
    name = "posp2p v2 stream"
    fields_desc = [PacketListField("frames", [], P2PFrame)]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if _pkt and _pkt[:7] == b"\xffPOSP2P":
            return P2PPreface
        return cls


# ---- legacy JSON -------------------------------------------------------------------

_LEGACY_KEYS = ["messageId", "messageType", "fromDeviceId", "toDeviceId", "timestamp",
                "payload", "priority", "acknowledged"]
_LEGACY_DISC_KEYS = ["deviceId", "deviceName", "deviceType", "ipAddress", "port",
                     "hostname", "metadata"]


class JSONValueField(PBValueField):
    def i2repr(self, pkt, x):
        if x is _MISSING:
            return "(missing)"
        return json.dumps(x, ensure_ascii=False)


_MISSING = object()


class _JSONObject(Packet):
    keys = []
    terminator = b""

    def do_dissect(self, s):
        s = bytes(s)
        if self.terminator:
            i = s.find(self.terminator)
            line, rest = (s, b"") if i < 0 else (s[:i], s[i + 1:])
        else:
            line, rest = s, b""
        self.fields["raw"] = line
        try:
            obj = json.loads(line.decode("utf-8"))
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for k in self.keys:
                self.fields[k] = obj.get(k, _MISSING)
            self.fields["extra"] = {k: v for k, v in obj.items() if k not in self.keys}
        return rest

    def do_build(self):
        if self.fields.get("raw") and not any(k in self.fields for k in self.keys):
            return bytes(self.raw) + self.terminator
        obj = {}
        for k in self.keys:
            v = self.getfieldval(k)
            if v is not _MISSING:
                obj[k] = v
        obj.update(self.getfieldval("extra") or {})
        return codec.legacy_dumps(obj).encode("utf-8") + self.terminator

    def extract_padding(self, s):
        return b"", s


def _json_fields(keys):
    return [JSONValueField(k, None) for k in keys] + [JSONValueField("extra", {}),
                                                      PBValueField("raw", b"")]


class P2PLegacyLine(_JSONObject):
    name = "posp2p legacy line"
    keys = _LEGACY_KEYS
    terminator = b"\n"
    fields_desc = _json_fields(_LEGACY_KEYS)


class P2PLegacyStream(Packet):
    name = "posp2p legacy stream"
    fields_desc = [PacketListField("lines", [], P2PLegacyLine)]


class P2PLegacyDiscovery(_JSONObject):
    name = "posp2p legacy discovery"
    keys = _LEGACY_DISC_KEYS + ["port"]
    fields_desc = _json_fields(_LEGACY_DISC_KEYS)


# ---- discovery ---------------------------------------------------------------------

class P2PDiscovery(Packet):
    name = "posp2p discovery"
    fields_desc = [PBValueField("magic", b"\xffP2D"), PBValueField("version", 2)]

    def do_dissect(self, s):
        self.fields["magic"] = bytes(s[:4])
        self.fields["version"] = s[4] if len(s) > 4 else None
        return s[5:]

    def do_build(self):
        body = bytes(self.payload) if self.payload else b""
        return bytes(self.magic) + bytes([self.version]) + body

    def guess_payload_class(self, payload):
        return P2PDiscoveryDatagram


# ---- dispatch on the well-known ports ---------------------------------------------

class P2PTCP(Packet):
    """Entry point bound to TCP 8766: picks the wire by the first byte
    (CONN-3): preface -> v2 stream, '{' or JSON whitespace -> legacy,
    anything else -> v2 frames (a segment in the middle of a stream)."""
    name = "posp2p TCP"

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if not _pkt:
            return conf.raw_layer
        if _pkt[:7] == b"\xffPOSP2P":
            return P2PPreface
        if _pkt[:1] in (b"{", b" ", b"\t", b"\r", b"\n"):
            return P2PLegacyStream
        return P2PV2Stream


class P2PUDP(Packet):
    name = "posp2p UDP"

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if _pkt and _pkt[:5] == b"\xffP2D\x02":
            return P2PDiscovery
        if _pkt and _pkt[:4] == b"\xffP2D":
            return P2PDiscovery
        if _pkt and _pkt[:1] in (b"{", b" ", b"\t", b"\r", b"\n"):
            return P2PLegacyDiscovery
        return conf.raw_layer


def bind_ports(tcp_port: int = TCP_PORT, udp_port: int = UDP_PORT) -> None:
    """Dissect TCP tcp_port and UDP udp_port as posp2p (8766 and 8765 are
    bound on import)."""
    bind_layers(TCP, P2PTCP, dport=tcp_port)
    bind_layers(TCP, P2PTCP, sport=tcp_port)
    bind_layers(UDP, P2PUDP, dport=udp_port)
    bind_layers(UDP, P2PUDP, sport=udp_port)


bind_ports()

__all__ = [n for n in dir() if n.startswith("P2P")] + [
    "bind_ports", "rdpcap", "wrpcap", "IP", "TCP", "UDP", "Raw", "codec", "pb",
    "new_id", "frame", "frame_raw", "preface", "varint", "varint_padded", "envelope",
    "hello", "heartbeat", "ack", "goodbye", "error", "order_forward", "order_status",
    "order_cancel", "opaque", "device_info", "disc", "disc_bytes", "parse_disc",
    "parse_envelope", "legacy_msg", "legacy_line", "legacy_raw_line",
    "legacy_disc_request", "add_unknown_field", "PREFACE", "DISC_PREFIX", "MT", "EC",
    "DT", "DK"]
