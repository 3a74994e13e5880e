"""Routing through the main POS: directed, broadcast, by type, relay,
unknown target, ordering (SPEC 12)."""
import socket

import pytest

from helpers import *  # noqa: F401,F403


@req("ROUTE-1")
@needs(role="main", wire="v2", cap="observe")
def test_directed_to_main_delivered(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    m = obs.mark()
    c.send(e)
    c.expect(acks(e.message_id), 1.5)
    d = obs.wait_delivered(lambda x: x.get("message_id") == e.message_id, 1.5, m)
    check(d is not None, "ROUTE-1", "delivered locally", "not delivered")


@req("ROUTE-2", "ROUTE-7", "ROUTE-11", "MSG-5")
@needs(role="main", wire="v2", cap="relay")
def test_directed_relay_unchanged(dut, net):
    """A -> B: B receives the message with every field unchanged (the same
    bytes, or an equal Envelope: ROUTE-7 makes byte-exact forwarding
    optional), C receives nothing, and the main POS does not ack it."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    c = net.client(dut, name="C")
    e = order_forward(a.id, to=b.id, items=3)
    mc = c.mark()
    a.send(e)
    try:
        it = b.expect_item(has_id(e.message_id), 1.5)
    except Timeout as ex:
        fail("ROUTE-2", "the message relayed to B", str(ex))
    check(it.env == e, "ROUTE-2", "every field unchanged", describe(it.env))
    check(it.env.from_device_id == a.id, "MSG-5", "from_device_id kept", it.env.from_device_id)
    a.expect(acks(e.message_id), 1.5)   # B's ack, relayed
    acks_ = a.envs(acks(e.message_id))
    check(all(x.from_device_id.lower() == b.id for x in acks_), "ROUTE-11",
          "only B acknowledges (the relay does not)",
          [x.from_device_id for x in acks_])
    relay_barrier(a, c)   # A's message, if relayed to C, would arrive before this
    got = next(iter(c.envs(has_id(e.message_id), since=mc)), None)
    check(got is None, "ROUTE-2", "C does not receive A's message to B", err_summary(got))


@req("ROUTE-3")
@needs(role="main", wire="v2", cap="relay")
def test_broadcast_fanout(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B", dtype="KDS")
    c = net.client(dut, name="C", dtype="CUSTOMER_DISPLAY")
    e = opaque(a.id, "BROADCAST_UPDATE")
    obs = dut.upper if dut.upper is not None and dut.upper.can("deliveries") else None
    m = obs.mark() if obs else 0
    ma = a.mark()
    a.send(e)
    for x in (b, c):
        try:
            x.expect(has_id(e.message_id), 1.5)
        except Timeout as ex:
            fail("ROUTE-3", "the broadcast sent to every connected device", str(ex))
    sync(a, dut.device_id)   # an echo to A would arrive before the barrier's ACK
    got = next(iter(a.envs(has_id(e.message_id), since=ma)), None)
    check(got is None, "ROUTE-3", "not sent back to the originator", err_summary(got))
    if obs:
        d = obs.wait_delivered(lambda x: x.get("message_id") == e.message_id, 1.0, m)
        check(d is not None, "ROUTE-3", "delivered locally at the main POS", "not delivered")


@req("ROUTE-4")
@needs(role="main", wire="v2", cap="relay")
def test_by_type(dut, net):
    a = net.client(dut, name="A")
    k = net.client(dut, name="K", dtype="KDS")
    t = net.client(dut, name="T", dtype="ORDERING_TABLET")
    obs = dut.upper if dut.upper is not None and dut.upper.can("deliveries") else None
    m = obs.mark() if obs else 0
    e = order_forward(a.id, to_type="KDS")
    mt = t.mark()
    a.send(e)
    try:
        k.expect(has_id(e.message_id), 1.5)
    except Timeout as ex:
        fail("ROUTE-4", "the by-type message sent to the KDS", str(ex))
    relay_barrier(a, t)   # e, if sent to T, would arrive before this
    got = next(iter(t.envs(has_id(e.message_id), since=mt)), None)
    check(got is None, "ROUTE-4", "not sent to a device of another type", err_summary(got))
    if obs:
        sync_delivered(obs, a, dut.device_id, m)   # a local delivery of e would come first
        d = [x for x in obs.delivered(m) if x.get("message_id") == e.message_id]
        check(not d, "ROUTE-4", "not delivered locally (type KDS)", d)
        e2 = order_forward(a.id, to_type="MAIN_POS")
        mk = k.mark()
        a.send(e2)
        d = obs.wait_delivered(lambda x: x.get("message_id") == e2.message_id, 1.5, m)
        check(d is not None, "ROUTE-4", "to_device_type MAIN_POS delivered locally",
              "not delivered")
        relay_barrier(a, k)   # e2, if sent to K, would arrive before this
        got = next(iter(k.envs(has_id(e2.message_id), since=mk)), None)
        check(got is None, "ROUTE-4", "MAIN_POS message not sent to the KDS", err_summary(got))


@req("ROUTE-5", "ERR-1", "ERR-2", "ERR-8")
@needs(role="main", wire="v2")
def test_unknown_target(dut, net):
    c = net.client(dut)
    e = order_forward(c.id, to=new_id())
    c.send(e)
    try:
        err = expect_error(c, "UNKNOWN_DEVICE", timeout=1.5)
    except Timeout as ex:
        fail("ROUTE-5", "ERROR UNKNOWN_DEVICE", str(ex))
    check(err.error.ref_message_id.lower() == e.message_id, "ROUTE-5",
          "ref_message_id = the message", err.error.ref_message_id)
    check(err.to_device_id.lower() == c.id, "ERR-8", "to_device_id = the sender",
          err.to_device_id)
    check(err.error.description != "", "ERR-1", "a description", "''")
    check(err.error.requirement in ("ROUTE-5", ""), "ERR-1", "requirement ROUTE-5",
          err.error.requirement)
    sync(c, dut.device_id)   # an ACK of e would arrive before the barrier's
    got = next(iter(c.envs(acks(e.message_id))), None)
    check(got is None, "ROUTE-5", "not acknowledged", err_summary(got))


@req("ROUTE-8")
@needs(role="main", wire="v2", cap="relay")
def test_relay_order_preserved(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    msgs = [opaque(a.id, to=b.id, priority=i % 11) for i in range(30)]
    a.send_raw(b"".join(frame(m) for m in msgs))
    b.expect(has_id(msgs[-1].message_id), 2.0)
    bar = relay_barrier(a, b)   # anything else from A for B arrives before it
    got = [e.message_id for e in b.envs(is_type("PRODUCT_SYNC")) if e.message_id != bar]
    check(got == [m.message_id for m in msgs], "ROUTE-8", "the order A sent them in",
          "%d out of order" % sum(1 for x, y in zip(got, msgs) if x != y.message_id))


@req("ROUTE-8")
@needs(role="main", wire="v2", cap="observe")
def test_delivery_order_preserved(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    msgs = [opaque(c.id, to=dut.device_id, priority=(7 * i) % 11) for i in range(20)]
    m = obs.mark()
    c.send_raw(b"".join(frame(x) for x in msgs))
    c.expect(acks(msgs[-1].message_id), 2.0)
    bar = sync_delivered(obs, c, dut.device_id, m)   # every earlier delivery comes first
    got = [d["message_id"] for d in obs.delivered(m) if d["message_id"] != bar]
    check(got == [x.message_id for x in msgs], "ROUTE-8", "delivered in receive order",
          got[:5])


@req("ROUTE-9")
@needs(role="main", wire="v2", cap="observe")
def test_stale_status_acked_not_delivered(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    oid = "T-" + new_id()[:8]
    s2 = order_status(c.id, to=dut.device_id, order_id=oid, sequence=2, status=3)
    s1 = order_status(c.id, to=dut.device_id, order_id=oid, sequence=1, status=2)
    s2b = order_status(c.id, to=dut.device_id, order_id=oid, sequence=2, status=4)
    s0 = order_status(c.id, to=dut.device_id, order_id=oid, sequence=0, status=4)
    m = obs.mark()
    for s in (s2, s1, s2b, s0):
        c.send(s)
        try:
            c.expect(acks(s.message_id), 1.5)
        except Timeout as ex:
            fail("ROUTE-9", "every status acknowledged, stale ones too", str(ex))
    bar = sync_delivered(obs, c, dut.device_id, m)   # a stale delivery would come first
    got = [d["message_id"] for d in obs.delivered(m) if d["message_id"] != bar]
    check(got == [s2.message_id, s0.message_id], "ROUTE-9",
          "only sequence 2 and the unsequenced one delivered",
          ["delivered %s" % x[:8] for x in got])


@req("ROUTE-12", "ROUTE-13")
@needs(role="main", wire="v2", cap="relay")
def test_link_local_not_relayed(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    mb = b.mark()
    hb = heartbeat(a.id, b.id, 7)
    gb = goodbye(a.id, b.id, "x")
    er = error(a.id, None, "INTERNAL", "link-local")
    a.send(hb)
    a.send(er)
    a.send(gb)
    # A's GOODBYE ends A's connection: the device closes it once it has
    # handled the three frames, and a barrier from a second client, relayed
    # to B after that, arrives after anything the device relayed of them.
    a.wait_closed(BARRIER_S)
    relay_barrier(net.client(dut, name="A2"), b)
    ids = {hb.message_id, gb.message_id, er.message_id}
    got = [e for e in b.envs(since=mb) if e.message_id in ids]
    check(not [e for e in got if e.message_type != MT["ERROR"]], "ROUTE-12",
          "HEARTBEAT and GOODBYE addressed to B not relayed", got)
    check(not [e for e in got if e.message_type == MT["ERROR"]], "ROUTE-13",
          "an ERROR without to_device_id not relayed", got)


@req("ROUTE-14", "ACK-18")
@needs(role="client", wire="v2", cap="observe")
def test_client_delivers_only_its_own(client_setup):
    """The client device does not deliver a message directed to another
    device or a by-type message for another role; it delivers (once) one
    directed to it."""
    vm, conn, d = client_setup()
    obs = observe(d)
    m = obs.mark()
    other = order_forward(conn.id, to=new_id())
    wrong_type = order_forward(conn.id, to_type="ORDERING_TABLET")
    mine = order_forward(conn.id, to=d.device_id)
    for e in (other, wrong_type, mine, mine):
        conn.send(e)
    conn.expect(acks(mine.message_id), 1.5)
    bar = sync_delivered(obs, conn, d.device_id, m)   # every earlier delivery comes first
    got = [x["message_id"] for x in obs.delivered(m) if x["message_id"] != bar]
    check(other.message_id not in got and wrong_type.message_id not in got, "ROUTE-14",
          "messages for others not delivered", got)
    check(got.count(mine.message_id) == 1, "ACK-18", "its own message delivered once", got)


@req("ROUTE-9", "ACK-6")
@needs(role="client", wire="v2", cap="observe")
def test_client_stale_status(client_setup):
    vm, conn, d = client_setup()
    obs = observe(d)
    m = obs.mark()
    s3 = order_status(conn.id, to=d.device_id, order_id="T-9", sequence=3)
    s2 = order_status(conn.id, to=d.device_id, order_id="T-9", sequence=2)
    conn.send(s3)
    conn.send(s2)
    for s in (s3, s2):
        conn.expect(acks(s.message_id), 1.5)
    bar = sync_delivered(obs, conn, d.device_id, m)   # a stale delivery would come first
    got = [x["message_id"] for x in obs.delivered(m) if x["message_id"] != bar]
    check(got == [s3.message_id], "ROUTE-9", "the stale status not delivered", got)


@req("ROUTE-15", "DISC-7")
@needs(role="main", wire="v2", discovery=True)
def test_discovered_device_known(dut, net):
    """A device id seen only in a discovery datagram is known: a message
    to it gets DEVICE_OFFLINE, not UNKNOWN_DEVICE."""
    u = net.udp()
    x = new_id()
    u.send(disc_bytes(disc("ANNOUNCE", device_id=x, dtype="KDS", tcp_port=4000,
                           ip_address="10.255.255.1")), (dut.host, dut.udp_port))
    udp_barrier(u, dut)   # the device has taken in the ANNOUNCE
    c = net.client(dut)
    e = order_forward(c.id, to=x)
    c.send(e)
    try:
        expect_error(c, "DEVICE_OFFLINE", ref=e.message_id, timeout=1.5)
    except Timeout as ex:
        fail("ROUTE-15", "DEVICE_OFFLINE for a device known from discovery", str(ex))
    if dut.kind == "peer":
        devs = {d_["id"]: d_ for d_ in dut.peer.devices()}
        rec = devs.get(x)
        check(rec is not None and rec.get("addr") == u.addr[0] and rec.get("port") == 4000,
              "DISC-7", "recorded at the datagram's source %s port 4000 (not ip_address)"
              % u.addr[0], rec)


@req("ROUTE-16", "ERR-2")
@needs(role="main", wire="v2", cap="relay")
def test_queue_full(dut, net):
    """B stops reading; A keeps sending B large messages: the main POS
    answers QUEUE_FULL (and does not acknowledge) once B's queue is full."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B", auto_ack=False)
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    b._stop = True            # the reader thread stops: B's socket fills up
    b._reader.join(1)
    b._stop = False
    pad = "q" * 200000
    sent = []

    def one_more():
        """Another 200 kB for B, until A has its QUEUE_FULL (or 200 were sent)."""
        errs = a.envs(is_error("QUEUE_FULL"))
        if errs or len(sent) >= 200:
            return errs or [None]
        e = opaque(a.id, to=b.id, json_text='{"p":"%s"}' % pad)
        a.send(e)
        sent.append(e.message_id)
        return None
    try:
        err = wait_until(one_more, 15, "ERROR QUEUE_FULL")[0]
    except Timeout:
        err = None
    if err is None:
        try:
            err = expect_error(a, "QUEUE_FULL", timeout=1.0)
        except Timeout as ex:
            fail("ROUTE-16", "ERROR QUEUE_FULL after %d x 200 kB to a stalled device" %
                 len(sent), str(ex))
    check(err.error.ref_message_id in sent and err.to_device_id.lower() == a.id, "ROUTE-16",
          "about one of A's messages, addressed to A", describe(err))
    check(not a.envs(acks(err.error.ref_message_id)), "ROUTE-16",
          "the refused message not acknowledged", a.summary())
