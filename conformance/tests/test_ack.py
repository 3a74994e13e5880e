"""Acknowledgement, retransmission, custody and duplicate suppression
(SPEC 10). Retransmission timings are measured against the device's ack
timeout (profile) with the suite's timer tolerance."""
import time

import pytest

from helpers import *  # noqa: F401,F403

ACKED = ["ORDER_FORWARD", "ORDER_STATUS", "ORDER_CANCEL", "ORDER_SYNC", "CART_SYNC",
         "PRODUCT_SYNC", "CONFIG_SYNC", "DEVICE_INFO", "SERVER_MODE", "BROADCAST_UPDATE",
         "DEVICE_COMMAND", "DEVICE_RESPONSE", "WARNING"]


def _msg(mtype, src, to):
    if mtype == "ORDER_FORWARD":
        return order_forward(src, to=to)
    if mtype == "ORDER_STATUS":
        return order_status(src, to=to, order_id="T-" + new_id()[:6])
    if mtype == "ORDER_CANCEL":
        return order_cancel(src, to=to)
    if mtype == "CART_SYNC":
        e = envelope("CART_SYNC", src, to=to)
        e.cart_sync.cart_id = "c1"
        return e
    if mtype == "DEVICE_INFO":
        return device_info(src, to=to)
    return opaque(src, mtype, to=to)


@req("ACK-1", "ACK-3", "ACK-4")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("mtype", ACKED)
def test_acked_types_acknowledged(dut, net, mtype):
    """Each acked type sent to the main POS is acknowledged within the ack
    deadline (1000 ms) with a new message id, acknowledged_message_id =
    the message and to_device_id = its originator."""
    c = net.client(dut)
    e = _msg(mtype, c.id, dut.device_id)
    t0 = time.monotonic()
    c.send(e)
    try:
        it = c.expect_item(acks(e.message_id), 1.5)
    except Timeout as ex:
        fail("ACK-1", "an ACKNOWLEDGEMENT of the %s" % mtype, str(ex))
    dt = (it.t - t0) * 1000
    check(dt <= 1000, "ACK-4", "within 1000 ms", "%.0f ms" % dt)
    a = it.env
    check(a.message_id.lower() != e.message_id.lower(), "ACK-3", "a new message_id",
          a.message_id)
    check(a.HasField("to_device_id") and a.to_device_id.lower() == c.id, "ACK-3",
          "to_device_id = originator %s" % c.id, a.to_device_id)


@req("ACK-2", "ACK-24")
@needs(role="main", wire="v2")
def test_unacked_types_not_acknowledged(dut, net):
    """HEARTBEAT, ACKNOWLEDGEMENT (even one matching nothing), ERROR and
    DISCOVERY are not acknowledged, and a stray acknowledgement causes no
    ERROR."""
    c = net.client(dut)
    m = c.mark()
    msgs = [heartbeat(c.id, dut.device_id, 99), ack(c.id, dut.device_id, new_id()),
            error(c.id, dut.device_id, "INTERNAL", "test", ref=new_id())]
    d = envelope("DISCOVERY", c.id, to=dut.device_id)
    d.discovery.device_name, d.discovery.device_type = "x", DT["KDS"]
    msgs.append(d)
    for e in msgs:
        c.send(e)
    ids = {e.message_id for e in msgs}
    got = c.expect_none(lambda e: e.message_type == MT["ACKNOWLEDGEMENT"] and
                        e.acknowledgement.acknowledged_message_id in ids, quiet_s(dut), m)
    check(got is None, "ACK-2", "no acknowledgement", err_summary(got))
    errs = c.envs(is_error(), since=m)
    check(not errs, "ACK-24", "a stray acknowledgement is ignored silently",
          err_summary(errs[0] if errs else None))


@req("ACK-6", "ACK-18")
@needs(role="main", wire="v2", cap="observe")
def test_duplicate_acked_again_delivered_once(dut, net):
    obs = observe(dut)
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    m = obs.mark()
    c.send(e)
    c.expect(acks(e.message_id), 1.5)
    n = c.mark()
    c.send(e)
    try:
        c.expect(acks(e.message_id), 1.5, since=n)
    except Timeout as ex:
        fail("ACK-6", "the duplicate acknowledged again", str(ex))
    sync_delivered(obs, c, dut.device_id, m)   # a second delivery would come before it
    got = [d for d in obs.delivered(m) if d["message_id"] == e.message_id]
    check(len(got) == 1, "ACK-18", "delivered once", "delivered %d times" % len(got))


@req("ACK-6")
@needs(role="main", wire="v2")
def test_duplicate_acked_again(dut, net):
    """Without observing deliveries: a retransmission is acknowledged again
    under ACK-3/ACK-4."""
    c = net.client(dut)
    e = order_forward(c.id, to=dut.device_id)
    c.send(e)
    c.expect(acks(e.message_id), 1.5)
    n = c.mark()
    t0 = time.monotonic()
    c.send(e)
    try:
        it = c.expect_item(acks(e.message_id), 1.5, since=n)
    except Timeout as ex:
        fail("ACK-6", "the duplicate acknowledged again", str(ex))
    check((it.t - t0) * 1000 <= 1000, "ACK-6", "within the ack deadline", it.t - t0)


@req("ACK-19")
@needs(role="main", wire="v2", cap="observe")
def test_dedup_remembers_4096_ids(dut, net):
    """After 4100 further messages from the same originator, a
    retransmission of the first is still recognised (the 10-minute window
    itself is not waited for: UNTESTABLE.md)."""
    obs = observe(dut)
    c = net.client(dut)
    first = opaque(c.id, "PRODUCT_SYNC", to=dut.device_id, json_text=None)
    m = obs.mark()
    c.send(first)
    c.expect(acks(first.message_id), 1.5)
    # In batches, waiting for each batch's acks: the suite must keep up
    # with the device's acknowledgements or the device (rightly) applies
    # backpressure and times the connection out.
    want = 1
    for i in range(0, 4100, 500):
        batch = [frame(opaque(c.id, "PRODUCT_SYNC", to=dut.device_id, json_text=None))
                 for _ in range(min(500, 4100 - i))]
        c.send_raw(b"".join(batch))
        want += len(batch)
        try:
            wait_until(lambda: c.closed or len(c.envs(is_type("ACKNOWLEDGEMENT"))) >= want,
                       10, "%d acknowledgements" % want)
        except Timeout:
            pass
        if len(c.envs(is_type("ACKNOWLEDGEMENT"))) < want:
            fail("ACK-19", "%d acknowledgements" % want, "%d%s" % (
                len(c.envs(is_type("ACKNOWLEDGEMENT"))), " (closed)" if c.closed else ""))
    n = c.mark()
    c.send(first)
    c.expect(acks(first.message_id), 2.0, since=n)
    sync_delivered(obs, c, dut.device_id, m)   # a second delivery would come before it
    got = [d for d in obs.delivered(m) if d["message_id"] == first.message_id]
    check(len(got) == 1, "ACK-19", "the first id still remembered after 4100 others",
          "delivered %d times" % len(got))


@req("ACK-20")
@needs(role="main", wire="v2", cap="observe")
def test_dedup_across_connections(dut, net):
    obs = observe(dut)
    c1 = net.client(dut, name="conn1")
    e = order_forward(c1.id, to=dut.device_id)
    m = obs.mark()
    c1.send(e)
    c1.expect(acks(e.message_id), 1.5)
    c1.send(goodbye(c1.id, dut.device_id))
    c1.wait_closed(2.0)
    c2 = net.client(dut, name="conn2", device_id=c1.id)
    c2.send(e)
    c2.expect(acks(e.message_id), 1.5)
    sync_delivered(obs, c2, dut.device_id, m)   # a second delivery would come before it
    got = [d for d in obs.delivered(m) if d["message_id"] == e.message_id]
    check(len(got) == 1, "ACK-20", "not delivered again on a new connection",
          "delivered %d times" % len(got))


def _retx_times(conn, mid, n, timeout):
    """Monotonic times of the first n transmissions of message mid."""
    out = []
    deadline = time.monotonic() + timeout
    pos = 0
    while len(out) < n:
        try:
            it = conn.expect_item(has_id(mid), max(0.01, deadline - time.monotonic()), pos)
        except Timeout:
            break
        out.append(it)
        pos = conn.frames.index(it) + 1
    return out


@req("ACK-7", "ACK-8", "ACK-9")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_retransmission_schedule(dut, net):
    """The suite withholds its ack: the device retransmits the same frame
    after its ack timeout, doubling the wait, at most max_retries times."""
    b = net.client(dut, auto_ack=False)
    mid = dut.upper.send_order(to=b.id)
    first = b.expect_item(is_type("ORDER_FORWARD"), 2.0)
    mid = first.env.message_id
    at = dut.t["ack_timeout_ms"]
    cap = dut.t["ack_backoff_cap_ms"]
    n = dut.t["max_retries"]
    waits = [min(at * 2 ** i, cap) for i in range(n + 1)]
    total = sum(waits) / 1000.0
    tx = _retx_times(b, mid, n + 2, total * (1 + TOL) + 1.0)
    check(len(tx) >= 2, "ACK-7", "a retransmission after %d ms" % at,
          "%d transmission(s)" % len(tx))
    for it in tx[1:]:
        check(it.raw == first.raw, "ACK-7", "the retransmission is the same frame",
              "%s vs %s" % (describe(it.env), describe(first.env)))
    gaps = [(b_.t - a_.t) * 1000 for a_, b_ in zip(tx, tx[1:])]
    check(within(gaps[0], at, TOL, SLACK_MS), "ACK-7", "first retransmission after %d ms" % at,
          "%.0f ms" % gaps[0])
    for i, g in enumerate(gaps[1:], 1):
        check(within(g, waits[i], TOL, SLACK_MS), "ACK-8", "waits %s ms" % waits[:len(gaps)],
              "%s ms" % [round(x) for x in gaps])
    check(len(tx) <= n + 1, "ACK-9", "at most %d retransmissions" % n,
          "%d transmissions" % len(tx))
    check(len(tx) == n + 1, "ACK-7", "%d retransmissions while no ack" % n,
          "%d transmissions" % len(tx))
    if dut.kind == "peer":
        ev = dut.peer.wait_event("delivery_failed", message_id=mid,
                                 timeout=waits[-1] / 1000.0 * 2 + 1)
        check(ev is not None, "ACK-9", "reported as failed", "no event")


@req("ACK-7")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_no_retransmission_after_ack(dut, net):
    b = net.client(dut)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0)
    got = b.expect_none(lambda x: x.message_id == e.message_id, quiet_s(dut), b.mark())
    check(got is None, "ACK-7", "no retransmission once acknowledged", err_summary(got))


@req("ACK-10", "MSG-4")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_ack_from_wrong_device_does_not_count(dut, net):
    """B's order is acknowledged by C (wrong device): the device keeps
    retransmitting to B; B's own (upper-case) ack ends it."""
    b = net.client(dut, name="B", auto_ack=False)
    c = net.client(dut, name="C")
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0)
    c.send(ack(c.id, dut.device_id, e.message_id))
    m = b.mark()
    try:
        b.expect(has_id(e.message_id), dut.t["ack_timeout_ms"] / 1000.0 * 2 + 0.5, since=m)
    except Timeout as ex:
        fail("ACK-10", "still retransmitted to B after C's ack", str(ex))
    b.send(ack(b.id, dut.device_id, e.message_id.upper()))
    # Copies the device sent before it handled B's ack arrive before the
    # barrier's ACK; after it, only the next retransmission could come.
    n = sync(b, dut.device_id)
    sent = len(b.envs(has_id(e.message_id)))
    got = b.expect_none(has_id(e.message_id), retx_window(dut, sent), n)
    check(got is None, "MSG-4", "B's ack (upper-case id) matches", err_summary(got))


@req("ACK-11")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
@pytest.mark.parametrize("code", ["UNKNOWN_DEVICE", "DEVICE_OFFLINE", "INVALID_MESSAGE",
                                  "UNKNOWN_MESSAGE_TYPE"])
def test_error_ends_retransmission(dut, net, code):
    b = net.client(dut, auto_ack=False)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0)
    b.send(error(b.id, dut.device_id, code, "test", ref=e.message_id))
    # Copies the device sent before it handled the ERROR arrive before the
    # barrier's ACK; after it, only the next retransmission could come.
    m = sync(b, dut.device_id)
    sent = len(b.envs(has_id(e.message_id)))
    got = b.expect_none(has_id(e.message_id), retx_window(dut, sent), m)
    check(got is None, "ACK-11", "no retransmission after ERROR %s" % code, err_summary(got))
    if dut.kind == "peer":
        ev = dut.peer.wait_event("delivery_failed", message_id=e.message_id, timeout=1)
        check(ev is not None, "ACK-11", "reported as failed", "no event")


@req("ACK-12")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_queue_full_keeps_retransmitting(dut, net):
    b = net.client(dut, auto_ack=False)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0)
    b.send(error(b.id, dut.device_id, "QUEUE_FULL", "busy", ref=e.message_id))
    m = b.mark()
    try:
        b.expect(has_id(e.message_id), dut.t["ack_timeout_ms"] / 1000.0 * 2 + 0.5, since=m)
    except Timeout as ex:
        fail("ACK-12", "retransmitted after QUEUE_FULL", str(ex))


@req("ACK-13")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_main_broadcast_tracked_per_recipient(dut, net):
    """The main POS's own broadcast: A acks, B does not; only B gets
    retransmissions."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B", auto_ack=False)
    dut.upper.send_order(to=None)
    ea = a.expect(is_type("ORDER_FORWARD"), 2.0)
    eb = b.expect(is_type("ORDER_FORWARD"), 2.0)
    ma, mb = a.mark(), b.mark()
    try:
        b.expect(has_id(eb.message_id), dut.t["ack_timeout_ms"] / 1000.0 * 2 + 0.5, since=mb)
    except Timeout as ex:
        fail("ACK-13", "retransmitted to B, which did not ack", str(ex))
    # A retransmission to A would be due on the same schedule as B's.
    got = a.expect_none(has_id(ea.message_id), retx_window(dut, 1), ma)
    check(got is None, "ACK-13", "no retransmission to A, which acked", err_summary(got))


@req("ACK-14", "ACK-16", "ROUTE-3")
@needs(role="main", wire="v2", cap="relay")
@pytest.mark.parametrize("to_type", [None, "KDS"], ids=["broadcast", "by-type"])
def test_main_acks_client_broadcast(dut, net, to_type):
    a = net.client(dut, name="A")
    k = net.client(dut, name="K", dtype="KDS")
    e = order_forward(a.id, to_type=to_type)
    a.send(e)
    try:
        ak = a.expect(acks(e.message_id), 1.5)
    except Timeout as ex:
        fail("ACK-14", "the main POS acknowledges the client's %s" % (
            "by-type message" if to_type else "broadcast"), str(ex))
    check(ak.from_device_id.lower() == dut.device_id, "ACK-14", "ack from the main POS",
          ak.from_device_id)
    k.expect(has_id(e.message_id), 1.5)


@req("ACK-15", "ACK-5", "ROUTE-2")
@needs(role="main", wire="v2", cap="relay")
def test_custody_acks_relayed(dut, net):
    """A broadcasts; B acks (to A, through the main POS): A gets B's ack,
    B gets no retransmission; C never acks and is retransmitted to."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    c = net.client(dut, name="C", auto_ack=False)
    e = order_forward(a.id)
    a.send(e)
    b.expect(has_id(e.message_id), 1.5)
    c.expect(has_id(e.message_id), 1.5)
    try:
        ab = a.expect(lambda x: acks(e.message_id)(x) and x.from_device_id.lower() == b.id, 1.5)
    except Timeout as ex:
        fail("ACK-5", "B's acknowledgement relayed to A", str(ex))
    mb, mc = b.mark(), c.mark()
    try:
        c.expect(has_id(e.message_id), dut.t["ack_timeout_ms"] / 1000.0 * 2 + 0.5, since=mc)
    except Timeout as ex:
        fail("ACK-13", "retransmission to C", str(ex))
    # A retransmission to B would be due on the same schedule as C's.
    got = b.expect_none(has_id(e.message_id), retx_window(dut, 1), mb)
    check(got is None, "ACK-15", "B's relayed ack ends B's tracking", err_summary(got))


@req("ACK-17")
@needs(role="main", wire="v2", cap="relay")
def test_custody_failure_no_error_to_originator(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B", auto_ack=False)
    e = order_forward(a.id)
    a.send(e)
    a.expect(acks(e.message_id), 1.5)
    at, n = dut.t["ack_timeout_ms"], dut.t["max_retries"]
    total = sum(min(at * 2 ** i, dut.t["ack_backoff_cap_ms"]) for i in range(n + 1)) / 1000.0
    got = a.expect_none(is_error(), total * (1 + TOL) + 0.3, 0)
    check(got is None, "ACK-17", "no ERROR to the originator about the custody failure",
          err_summary(got))
    if dut.kind == "peer":
        ev = dut.events("delivery_failed", message_id=e.message_id)
        check(ev and ev[0].get("custody"), "ACK-17",
              "the failure reported to the main POS's application", ev)


@req("ACK-21", "ROUTE-2")
@needs(role="main", wire="v2", cap="relay")
def test_relay_forwards_retransmissions(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    e = order_forward(a.id, to=b.id)
    a.send(e)
    b.expect(has_id(e.message_id), 1.5)
    a.expect(acks(e.message_id), 1.5)
    m = b.mark()
    a.send(e)
    try:
        b.expect(has_id(e.message_id), 1.5, since=m)
    except Timeout as ex:
        fail("ACK-21", "the retransmission forwarded to B", str(ex))
    a.expect(lambda x: acks(e.message_id)(x) and a.envs(acks(e.message_id)).__len__() >= 2, 1.5)


@req("ACK-22")
@needs(role="main", wire="v2", cap="relay")
def test_custody_retransmission(dut, net):
    """A retransmits a broadcast already in custody: acknowledged again,
    not sent again to B, which acknowledged it."""
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    e = order_forward(a.id)
    a.send(e)
    a.expect(acks(e.message_id), 1.5)
    b.expect(has_id(e.message_id), 1.5)
    sync(b, dut.device_id)   # the main POS has handled B's ack before A retransmits
    ma, mb = a.mark(), b.mark()
    a.send(e)
    try:
        a.expect(lambda x: acks(e.message_id)(x) and x.from_device_id.lower() == dut.device_id,
                 1.5, since=ma)
    except Timeout as ex:
        fail("ACK-22", "acknowledged again by the main POS", str(ex))
    got = b.expect_none(has_id(e.message_id), quiet_s(dut), mb)
    check(got is None, "ACK-22", "not sent again to B", err_summary(got))


@req("ACK-23")
@needs(role="main", wire="v2", upper="send_order", cap="retransmit")
def test_pending_survives_reconnect(dut, net):
    """B drops the connection without acking; when B is back (same id) the
    order is retransmitted on the new connection."""
    b = net.client(dut, name="B1", auto_ack=False)
    dut.upper.send_order(to=b.id)
    e = b.expect(is_type("ORDER_FORWARD"), 2.0)
    b.close(rst=True)
    b2 = net.client(dut, name="B2", device_id=b.id, auto_ack=False)
    at = dut.t["ack_timeout_ms"]
    try:
        b2.expect(has_id(e.message_id), (at * 2 + at * 4) / 1000.0 * (1 + TOL) + 0.5)
    except Timeout as ex:
        fail("ACK-23", "the pending order retransmitted on the new connection", str(ex))
