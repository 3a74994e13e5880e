"""UDP discovery: responses, announcements, malformed and own datagrams,
rate limit, legacy datagrams, the broadcast address (SPEC 13)."""
import json
import re
import time

import pytest

from helpers import *  # noqa: F401,F403
from posp2p_conform.vdev import UdpProbe

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _valid_v2(data, req_id="DISC-3"):
    check(data[:5] == DISC_PREFIX, "DISC-1", "prefix ff 50 32 44 02", data[:5].hex())
    d = pb.DiscoveryDatagram()
    try:
        d.ParseFromString(data[5:])
    except Exception as ex:  # noqa: BLE001
        fail("DISC-1", "one DiscoveryDatagram after the prefix", str(ex))
    check(len(data) <= MAX_DATAGRAM, "DISC-2", "at most 1400 bytes", len(data))
    check(d.kind in (1, 2, 3) and UUID.match(d.device_id) and 1 <= d.device_type <= 5 and
          d.tcp_port <= 65535 and len(d.supported_versions) > 0, req_id,
          "kind, device_id, device_type, tcp_port, supported_versions valid", str(d))
    return d


@req("DISC-5", "DISC-1", "DISC-2", "DISC-3", "TOPO-2", "TOPO-3", "DISC-12")
@needs(role="main", discovery=True)
def test_request_answered(dut, net):
    """A v2 REQUEST gets a v2 RESPONSE by unicast to the request's source
    address and port, from the configured discovery port, with the nonce,
    the device's role and its data port."""
    u = net.udp()
    r = disc("REQUEST")
    u.send(disc_bytes(r), (dut.host, dut.udp_port))
    got = u.recv(1.5)
    check(got is not None, "DISC-5", "a RESPONSE to the REQUEST", "nothing within 1.5 s")
    data, src = got
    d = _valid_v2(data)
    check(d.kind == DK["RESPONSE"] and d.nonce == r.nonce, "DISC-5",
          "RESPONSE with nonce %d" % r.nonce, "kind %d nonce %d" % (d.kind, d.nonce))
    check(src[1] == dut.udp_port, "TOPO-2", "sent from the discovery port %d" % dut.udp_port,
          src)
    check(d.device_type == DT["MAIN_POS"] and d.tcp_port == dut.tcp_port, "TOPO-3",
          "main POS with data port %d" % dut.tcp_port, "%d / %d" % (d.device_type, d.tcp_port))


@req("DISC-5")
@needs(role="main", discovery=True)
def test_request_from_any_port_via_broadcast(dut, net):
    """A REQUEST sent to the broadcast address reaches the device, which
    answers the sender's own port."""
    if not dut.host.startswith("127.") and remote():
        not_applicable("the suite sends broadcasts only on loopback")
    u = net.udp()
    r = disc("REQUEST")
    u.send(disc_bytes(r), ("127.255.255.255", dut.udp_port))
    got = u.recv(1.5)
    check(got is not None, "DISC-5", "a RESPONSE to a broadcast REQUEST", "nothing")
    check(parse_disc(got[0]).nonce == r.nonce, "DISC-5", "the nonce echoed", got[0][:40])


@req("DISC-6", "DISC-1", "DISC-3", "DISC-16")
@needs(reconfigure="a device started while the suite listens")
def test_announce_at_start_and_interval(make_dut, net):
    """A freshly started device announces on the broadcast address at once,
    then every announce interval (+-50% +-150 ms)."""
    from posp2p_conform.dut import free_udp_port
    port = free_udp_port()
    lis = net.udp(ip="127.255.255.255", port=port, broadcast_listener=True)
    t0 = time.monotonic()
    d = make_dut(udp_port=port)
    iv = d.t["announce_ms"]
    got = []
    deadline = time.monotonic() + iv / 1000.0 * 4 + 1
    while len(got) < 4 and time.monotonic() < deadline:
        r = lis.recv(deadline - time.monotonic())
        if r is None:
            break
        try:
            p = parse_disc(r[0])
        except ValueError:
            continue
        if isinstance(p, dict) or p.device_id.lower() != d.device_id:
            continue
        got.append((time.monotonic(), p, r[0]))
    check(len(got) >= 3, "DISC-6", "an ANNOUNCE at start and every %d ms" % iv,
          "%d announcements" % len(got))
    for t_, p, raw in got:
        _valid_v2(raw)
        check(p.kind == DK["ANNOUNCE"] and p.nonce == 0, "DISC-6", "kind ANNOUNCE, nonce 0",
              "kind %d nonce %d" % (p.kind, p.nonce))
    first = (got[0][0] - t0) * 1000
    check(first <= 3000, "DISC-6", "first ANNOUNCE when it starts listening",
          "%.0f ms after start" % first)
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(got, got[1:])]
    check(all(within(g, iv, TOL, SLACK_MS) for g in gaps), "DISC-6", "every %d ms" % iv,
          [round(g) for g in gaps])
    check(d.peer.ready["broadcast"].startswith("127.255.255.255:"), "DISC-16",
          "default broadcast 127.255.255.255", d.peer.ready["broadcast"])


@req("DISC-8")
@needs(role="main", discovery=True)
def test_own_datagram_ignored(dut, net):
    """A REQUEST carrying the device's own id (its own broadcast looped
    back) is not answered."""
    u = net.udp()
    u.send(disc_bytes(disc("REQUEST", device_id=dut.device_id)), (dut.host, dut.udp_port))
    got = udp_unanswered(u, dut)
    check(got == [], "DISC-8", "no answer to a datagram with its own device_id",
          "no answer to the barrier REQUEST either" if got is None else got[:1])


MALFORMED = {
    "wrong-prefix": lambda: b"\xffP2X\x02" + disc("REQUEST").SerializeToString(),
    "version-3": lambda: b"\xffP2D\x03" + disc("REQUEST").SerializeToString(),
    "undecodable": lambda: DISC_PREFIX + b"\xff\xff\xff\xff",
    "bad-uuid": lambda: disc_bytes(disc("REQUEST", device_id="xyz")),
    "no-kind": lambda: disc_bytes(disc(0)),
    "type-0": lambda: disc_bytes(disc("REQUEST", dtype=0)),
    "no-versions": lambda: disc_bytes(disc("REQUEST", versions=())),
    "port-70000": lambda: disc_bytes(disc("REQUEST", tcp_port=70000)),
    "too-long": lambda: disc_bytes(disc("REQUEST", metadata_json='{"p":"%s"}' % ("x" * 1400))),
    "legacy-bad-json": lambda: b'{"deviceName":"x",',
    "legacy-array": lambda: b'[1,2]',
}


@req("DISC-9")
@needs(role="main", discovery=True)
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_datagram_ignored(dut, net, kind):
    u = net.udp()
    u.send(MALFORMED[kind](), (dut.host, dut.udp_port))
    got = udp_unanswered(u, dut)
    check(got is not None, "DISC-9", "still answers a valid REQUEST afterwards", "no answer")
    check(got == [], "DISC-9", "no answer to a malformed datagram (%s)" % kind,
          got and got[0][:60])


@req("DISC-10")
@needs(role="main", discovery=True)
def test_response_rate_limit(dut, net):
    u = net.udp()
    rl = dut.t["disc_rate_limit_ms"]
    for _ in range(3):
        u.send(disc_bytes(disc("REQUEST")), (dut.host, dut.udp_port))
    got = u.recv_all(min(0.3, rl / 2000.0))
    check(len(got) == 1, "DISC-10", "one RESPONSE per source address per %d ms" % rl,
          "%d responses" % len(got))
    # Behaviour under test: wait out the advertised rate-limit window (plus
    # 10 %), then the device must answer again.
    time.sleep(rl / 1000.0 * 1.1)   # behaviour under test: the rate-limit window
    u.send(disc_bytes(disc("REQUEST")), (dut.host, dut.udp_port))
    check(u.recv(1.5) is not None, "DISC-10", "answered again after the interval", "nothing")


@req("DISC-11", "LEGACY-43")
@needs(role="main", discovery=True)
@pytest.mark.parametrize("kind", ["RESPONSE", "ANNOUNCE", "legacy-response"])
def test_response_and_announce_not_answered(dut, net, kind):
    u = net.udp()
    if kind == "legacy-response":
        data = json.dumps({"deviceId": new_id(), "deviceName": "x",
                           "deviceType": "P2PDeviceType.kds", "ipAddress": "127.0.0.1",
                           "port": 8766, "hostname": "h", "metadata": {}},
                          separators=(",", ":")).encode()
    else:
        data = disc_bytes(disc(kind, nonce=5 if kind == "RESPONSE" else 0))
    u.send(data, (dut.host, dut.udp_port))
    got = udp_unanswered(u, dut)
    check(got == [], "DISC-11", "a %s is not answered" % kind,
          "no answer to the barrier REQUEST either" if got is None else got[:1])


@req("DISC-12", "LEGACY-42", "LEGACY-43", "LEGACY-44", "LEGACY-45", "LEGACY-32")
@needs(role="main", wire="legacy", discovery=True)
def test_legacy_request_legacy_response(dut, net):
    u = net.udp()
    u.send(legacy_disc_request("Tablet 3", 2, 8766), (dut.host, dut.udp_port))
    got = u.recv(1.5)
    check(got is not None, "DISC-12", "a legacy response to a legacy request", "nothing")
    data, src = got
    check(data[:1] == b"{", "DISC-12", "a legacy JSON response (not v2)", data[:8])
    keys = list(json.loads(data.decode()).keys())
    want = ["deviceId", "deviceName", "deviceType", "ipAddress", "port", "hostname",
            "metadata"]
    check(keys == want, "LEGACY-44", "keys %s in this order" % want, keys)
    o = json.loads(data.decode())
    check(o["deviceType"] == "P2PDeviceType.mainPOS", "LEGACY-32",
          '"P2PDeviceType.mainPOS"', o["deviceType"])
    check(UUID.match(o["deviceId"]) and o["port"] == dut.tcp_port, "LEGACY-44",
          "its id and data port", o)
    check(isinstance(o["metadata"], dict), "LEGACY-45", "metadata an object ({} when empty)",
          o["metadata"])
    check(data == legacy_dumps(o).encode(), "LEGACY-44", "compact JSON", data[:80])


@req("DISC-4", "DISC-13", "DISC-2", "DISC-3", "TOPO-6", "DISC-7", "TOPO-4")
@needs(reconfigure="a client that discovers its main POS")
def test_client_discovers_main(make_dut, net):
    """A client started with discovery broadcasts REQUESTs (random non-zero
    nonce, not more than one per 1000 ms); two main POSes answer its second
    REQUEST: it connects to the first, at the datagram's source address and
    tcp_port (not its ip_address field), and to no other."""
    from posp2p_conform.dut import free_udp_port
    from posp2p_conform.vdev import V2Main
    port = free_udp_port()
    lis = net.udp(ip="127.255.255.255", port=port, broadcast_listener=True)
    vm1 = net.add(V2Main(name="main1"))
    vm2 = net.add(V2Main(name="main2"))
    d = make_dut(role="kds", udp_port=port, extra=["--discover"])
    reqs = []
    deadline = time.monotonic() + 3.0
    while len(reqs) < 2 and time.monotonic() < deadline:
        r = lis.recv(deadline - time.monotonic())
        if r is None:
            break
        try:
            p = parse_disc(r[0])
        except ValueError:
            continue
        if isinstance(p, dict) or p.kind != DK["REQUEST"]:
            continue
        reqs.append((time.monotonic(), p, r[0], r[1]))
    check(reqs, "DISC-4", "REQUESTs to the broadcast address", "none")
    for t_, p, raw, src in reqs:
        _valid_v2(raw)
        check(p.nonce != 0, "DISC-4", "a non-zero nonce", p.nonce)
    p, src = reqs[-1][1], reqs[-1][3]
    for vm in (vm1, vm2):
        ev = d.peer.mark()
        s = UdpProbe(ip=vm.addr[0])
        s.send(disc_bytes(disc("RESPONSE", device_id=vm.id, dtype="MAIN_POS",
                               tcp_port=vm.addr[1], nonce=p.nonce,
                               ip_address="10.255.0.1")), src)
        s.close()
        # "First" must be unambiguous: the client has taken in this
        # RESPONSE (its device table reports the main POS) before the next
        # one is sent. (make_dut: always the reference peer.)
        try:
            d.peer.wait_event("device", timeout=BARRIER_S, since=ev, device__id=vm.id)
        except Exception as ex:  # noqa: BLE001 - peerctl.PeerError
            raise Timeout("the client did not take in the RESPONSE of %s: %s" % (vm.name, ex))
    try:
        c = vm1.accept(timeout=2.0)
    except Timeout as ex:
        fail("DISC-7", "connection to the first main POS at its source address and tcp_port",
             str(ex))
    cs = Soft()
    cs.check(c.peer_id == d.device_id, "TOPO-6", "the client connects to the first main POS",
             c.peer_id)
    try:
        vm2.accept(timeout=connect_window(d), handshake=False)
        second = True
    except Timeout:
        second = False
    cs.check(not second, "TOPO-4", "at most one v2 connection (to the first main POS)",
             "the client also connected to the second main POS")
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(reqs, reqs[1:])]
    cs.check(all(g >= 1000 - SLACK_MS for g in gaps), "DISC-13",
             "at most one REQUEST per 1000 ms", "gaps %s ms" % [round(g) for g in gaps])
    cs.done()


@req("DISC-16")
@needs(reconfigure="the posp2p tools' command line")
def test_lan_broadcast_refused_by_default(conf_state):
    import subprocess
    r = subprocess.run([conf_state["binary"], "--broadcast", "255.255.255.255",
                        "--state-dir", "none", "--bind", suite_ip(), "--tcp-port", "0",
                        "--udp-port", "9"], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    check(r.returncode == 2, "DISC-16", "255.255.255.255 refused without "
          "--allow-lan-broadcast (exit 2)", "exit %d: %s" % (r.returncode, r.stderr[:200]))


@req("DISC-14")
@needs(role="main", discovery=True)
def test_legacy_announcements_valid_if_any(dut, net):
    """Legacy-shaped announcements are optional; any the device sends are
    well-formed legacy responses."""
    if remote():
        not_applicable("needs the broadcast of the device under test")
    lis = net.udp(ip="127.255.255.255", port=dut.udp_port, broadcast_listener=True)
    for data, src in lis.recv_all(dut.t["announce_ms"] / 1000.0 * 1.5):
        if data[:1] == b"{":
            o = json.loads(data.decode())
            check(list(o) == ["deviceId", "deviceName", "deviceType", "ipAddress", "port",
                              "hostname", "metadata"], "DISC-14",
                  "legacy announcement in the response shape", list(o))


@req("DISC-17", "DISC-15", "DISC-5", "DISC-6")
@needs(netns=True, reconfigure="a network namespace")
def test_subnet_broadcast_in_namespace(make_dut, net):
    """In a pair of network namespaces joined by a veth, the device uses the
    subnet's broadcast address: a REQUEST broadcast by the suite from the
    other namespace is answered, and its announcements arrive there."""
    from posp2p_conform import netns
    with netns.Pair() as pair:
        d = make_dut(netns=pair.ns_dut, bind=pair.ip_dut, broadcast=pair.broadcast,
                     udp_port=8765)
        u = pair.udp_socket(port=0)
        lis = pair.udp_socket(port=8765, bind_ip=pair.broadcast)
        r = disc("REQUEST")
        netns.sendto(u, disc_bytes(r), (pair.broadcast, 8765))
        got = netns.recv(u, 2.0)
        check(got is not None, "DISC-5", "a RESPONSE across the namespaces", "nothing")
        check(parse_disc(got[0]).nonce == r.nonce, "DISC-5", "the nonce", got[0][:40])
        deadline = time.monotonic() + d.t["announce_ms"] / 1000.0 * 2 + 1
        a = None
        while a is None and time.monotonic() < deadline:
            r = netns.recv(lis, deadline - time.monotonic())
            if r is not None and r[1][0] == pair.ip_dut and \
                    parse_disc(r[0]).kind == DK["ANNOUNCE"]:
                a = r
        check(a is not None, "DISC-17",
              "ANNOUNCE to the subnet broadcast %s" % pair.broadcast, "none")
