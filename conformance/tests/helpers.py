"""Shared helpers of the conformance tests.

Waiting (the team rule: no fixed sleeps; poll for readiness with a
deadline; timing behaviour is tested with compressed timers):

- Something that must happen: wait for it with a deadline
  (`conn.expect`, `obs.wait_delivered`, `wait_until`).
- Something that must NOT happen: prove its absence with a barrier when
  one exists. A device handles the frames of one connection in the order
  it receives them and keeps the order of what it sends to one recipient
  (ROUTE-8, MSG-18), so an answer to a later input proves that everything
  the device would have done about the earlier inputs has already been
  done: `sync` (on the same connection), `sync_delivered` (the device's
  deliveries), `relay_barrier` (what the main POS relays to another
  device), `udp_barrier` (datagrams).
- Only where nothing can prove absence (a retransmission that could come
  later, a reaction to bytes that the protocol gives no answer to), watch
  for a window derived from the device's advertised timers:
  `quiet_s`, `retx_window`.
"""
import time

from posp2p_conform.checks import Soft, check, fail, not_applicable, within  # noqa: F401
from posp2p_conform.codec import *  # noqa: F401,F403
from posp2p_conform.plugin import needs, req, remote, profile  # noqa: F401
from posp2p_conform.vdev import (LegacyConn, Timeout, acks, has_id, is_error,  # noqa: F401
                                 is_type, lacks, suite_ip)

# Timer tolerance (README): a measured interval passes if it lies within
# nominal * (1 +- TOL) +- SLACK_MS. The slack covers scheduling on a busy
# CI machine with sanitizers; the relative part covers jitter a device may
# add on purpose.
TOL = 0.5
SLACK_MS = 150


def t(dut):
    return dut.t


def quiet_s(dut) -> float:
    """How long to watch for something that must not happen when no
    barrier can prove it (see the module docstring): two of the device's
    ack timeouts plus 100 ms, at least 0.3 s.

    Why that is enough: the protocol bounds no faulty reaction, so the
    bound is the device's own idea of a prompt answer: its ack timeout is
    how long it waits for a peer to answer before it acts again (ACK-7).
    A device that reacts to the input under test at all does so within
    twice that, plus 100 ms of scheduling slack (and ACK-4 gives every
    answer 1000 ms at most, which the reference peer's compressed ack
    timeout of 200 ms stays well inside)."""
    return max(0.3, 2 * dut.t["ack_timeout_ms"] / 1000.0 + 0.1)


def retx_window(dut, sent: int = 1) -> float:
    """How long to watch for a retransmission that must not come, from a
    moment after the message's latest transmission, which was its
    `sent`-th (count the copies received so far).

    Why that is enough: the device's next retransmission is due
    min(ack_timeout * 2**(sent-1), ack_backoff_cap) after its latest
    transmission (ACK-7, ACK-8); the window is that wait with the suite's
    timer tolerance (the same `within(..., TOL, SLACK_MS)` the schedule
    itself is checked with), and never shorter than `quiet_s`."""
    at, cap = dut.t["ack_timeout_ms"], dut.t["ack_backoff_cap_ms"]
    wait_ms = min(at * 2 ** max(0, sent - 1), cap)
    return max(quiet_s(dut), (wait_ms * (1 + TOL) + SLACK_MS) / 1000.0)


def connect_window(dut) -> float:
    """How long to watch for a TCP connection a client must not open (a
    second one, one to another client).

    Why that is enough: a client opens a connection when it learns of a
    main POS (an ANNOUNCE or RESPONSE, handled on arrival) or on its next
    reconnect attempt, which comes within its advertised reconnect
    interval; the window is that interval with the suite's timer
    tolerance, and never shorter than `quiet_s`."""
    return max(quiet_s(dut), (dut.t["reconnect_ms"] * (1 + TOL) + SLACK_MS) / 1000.0)


# ---- waiting with a deadline ----------------------------------------------------------

POLL_S = 0.01       # wait_until's polling period
BARRIER_S = 2.0     # deadline for a barrier's answer (a must-happen wait, not a window)


def wait_until(pred, timeout: float, what: str, poll: float = POLL_S):
    """Poll pred() every `poll` seconds until it returns something true and
    return that; raise Timeout("no <what> within <timeout> s") at the
    deadline. For conditions no event signals (a counter, the reference
    peer's device table, a send-until loop); waits for a frame use
    conn.expect, which wakes on arrival."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Timeout("no %s within %.2f s" % (what, timeout))
        time.sleep(poll)   # polling period of the condition, bounded by the deadline


def _own_acks_written(conn, timeout: float) -> None:
    """The suite's automatic acknowledgements of what `conn` received are
    written by its reader thread just after each frame is recorded; wait
    until those for every frame received so far are on the wire, so that
    they precede whatever the test sends next (a barrier message)."""
    if not getattr(conn, "auto_ack", False) or not hasattr(conn, "sent_acks") or \
            conn.handshake_at is None:
        return

    def owed():
        with conn.cv:
            envs = [i.env for i in conn.items if i.env is not None and i.t > conn.handshake_at]
        return sum(1 for e in envs if e.message_type in ACKED_TYPES and conn._addressed_to_me(e))
    wait_until(lambda: conn.sent_acks >= owed() or conn.closed, timeout,
               "acknowledgements written by %s" % conn.name)


def _index(conn, item) -> int:
    for i, x in enumerate(conn.frames if hasattr(conn, "frames") else conn.lines()):
        if x is item:
            return i
    raise ValueError("item not found")


def sync(conn, to_id: str, timeout: float = BARRIER_S) -> int:
    """Barrier on one v2 connection: send a valid ORDER_FORWARD to the
    device `to_id` on `conn` and wait for its ACKNOWLEDGEMENT; return the
    position in conn.frames just past that ACK (a `since` for watching
    what comes after).

    Why it proves absence: the device handles a connection's frames in the
    order it receives them, so when it acknowledges the barrier it has
    handled every frame sent before it on `conn`; whatever it sent on
    `conn` in answer to those (an ACK, an ERROR, a retransmission it
    queued before handling our ACK) was queued earlier and goes out
    earlier: ACKs keep queue order among themselves, and ERROR (9) and
    the acked types (5..9) rank above ACK (3) (MSG-18). Raises Timeout if
    the barrier is not acknowledged."""
    _own_acks_written(conn, timeout)
    m = conn.mark()
    s = order_forward(conn.id, to=to_id)
    conn.send(s)
    it = conn.expect_item(acks(s.message_id), timeout, m,
                          "acknowledgement of the barrier message %s" % s.message_id[:8])
    return _index(conn, it) + 1


def sync_delivered(obs, conn, to_id: str, since: int, timeout: float = BARRIER_S) -> str:
    """Barrier on the device's deliveries (the upper tester `obs`): send a
    valid ORDER_FORWARD to the device `to_id` on `conn` and wait until obs
    reports it delivered; return its message id (leave it out when looking
    at the whole list of deliveries).

    Why it proves absence: a receiver delivers in the order it receives
    (ROUTE-8), so any delivery the device makes of a message sent before
    the barrier on `conn` (a duplicate, a stale status, a message for
    someone else) is reported before the barrier's. Waiting on the
    deliveries themselves (not on the barrier's ACK, which travels on
    another channel) keeps the proof on the channel the test reads."""
    _own_acks_written(conn, timeout)
    s = order_forward(conn.id, to=to_id)
    conn.send(s)
    d = obs.wait_delivered(lambda x: (x.get("message_id") or "").lower() == s.message_id,
                           timeout, since)
    if d is None:
        raise Timeout("the barrier message %s was not delivered within %.1f s" %
                      (s.message_id[:8], timeout))
    return s.message_id


def relay_barrier(src, dst, timeout: float = BARRIER_S) -> str:
    """Barrier across the main POS's relay: the suite's device `src` (v2)
    sends `dst` (v2 or legacy) a directed PRODUCT_SYNC of priority 0
    through the main POS; wait until `dst` receives it and return its
    message id (callers that look at everything `dst` got leave it out).

    Why it proves absence: the main POS handles src's frames in receive
    order and forwards what it relays to one recipient in that order
    (ROUTE-8); with the lowest priority the barrier cannot overtake
    anything queued for `dst` before it (MSG-18: queue order within one
    priority). So anything from `src` that the main POS was going to send
    `dst` (a relay it must not make) has arrived before the barrier."""
    if hasattr(src, "sent_acks"):
        _own_acks_written(src, timeout)
    s = opaque(src.id, "PRODUCT_SYNC", to=dst.id, priority=0, json_text=None)
    m = dst.mark()
    src.send(s)
    what = "the barrier message %s relayed to %s" % (s.message_id[:8], dst.name)
    if isinstance(dst, LegacyConn):
        dst.expect(lambda o: o.get("messageId") == s.message_id, timeout, m, what)
    else:
        dst.expect(has_id(s.message_id), timeout, m, what)
        if not dst.auto_ack:
            dst.send(ack(dst.id, src.id, s.message_id))   # no retransmissions of it later
    return s.message_id


def _udp_barrier_collect(u, dut, timeout: float):
    """Send the device a REQUEST from `u` and read until the RESPONSE with
    its nonce (DISC-5). Returns (the datagrams that came before it, whether
    it came)."""
    r = disc("REQUEST")
    u.send(disc_bytes(r), (dut.host, dut.udp_port))
    deadline = time.monotonic() + timeout
    before = []
    while True:
        got = u.recv(max(0.0, deadline - time.monotonic()))
        if got is None:
            return before, False
        try:
            p = parse_disc(got[0])
        except Exception:   # ValueError, protobuf's DecodeError: not the barrier's answer
            p = None
        if p is not None and not isinstance(p, dict) and p.nonce == r.nonce and \
                p.kind == DK["RESPONSE"]:
            return before, True
        before.append(got[0])


def udp_barrier(u, dut, timeout: float = BARRIER_S) -> None:
    """Barrier for datagrams: the UDP probe `u` sends the device a REQUEST
    and waits for the RESPONSE with its nonce (DISC-5).

    Why it proves the device took in what `u` sent before: the device
    handles its datagrams in arrival order, and loopback delivers one
    socket's datagrams in the order they were sent. Use it only from a
    probe whose earlier datagrams drew no RESPONSE (DISC-10 would
    rate-limit the barrier's). Raises Timeout if the barrier is not answered."""
    _, answered = _udp_barrier_collect(u, dut, timeout)
    if not answered:
        raise Timeout("no RESPONSE to the barrier REQUEST within %.1f s" % timeout)


def udp_unanswered(u, dut, timeout: float = BARRIER_S):
    """After `u` sent the device a datagram that must draw no answer: what
    the device sent `u` in answer to it, as a list of datagrams (empty
    when it did not answer), proved with a barrier REQUEST from the same
    socket (see udp_barrier). Returns None if even the barrier drew
    nothing (the device answers no valid REQUEST: a failure of its own).

    A device that did answer the datagram has also rate-limited `u`
    (DISC-10), so the barrier may then go unanswered: the answer already
    received is the finding, and a short wait for it is enough because
    the device sends it when it handles the datagram, before the barrier."""
    before, answered = _udp_barrier_collect(u, dut, timeout)
    return before if answered or before else None


def happens_within(pred, window: float):
    """Watch for `window` seconds (a timer-derived window: quiet_s,
    retx_window) whether pred() becomes true; return its first true value,
    or None if it stayed false. For what conn.expect_none cannot watch
    (raw bytes, undecodable frames)."""
    try:
        return wait_until(pred, window, "event")
    except Timeout:
        return None


def err_summary(env) -> str:
    if env is None:
        return "nothing"
    return describe(env)


def expect_error(conn, code, since=0, timeout=1.5, ref=None):
    """The ERROR frame of `code` (optionally about `ref`); raises Timeout."""
    return conn.expect(is_error(code, ref), timeout, since, "ERROR %s" % code)


def still_answers(dut, net):
    """Robustness: after whatever the test did, a new connection still
    completes the handshake (v2) or gets a legacy acknowledgement."""
    from posp2p_conform.plugin import remote, profile
    if remote() and "v2" not in profile().wires:
        c = net.legacy(dut)
        m = legacy_msg("heartbeat", c.id, None, {}, 2)
        c.send(m)
        c.expect(lacks(m["messageId"]), 2.0, what="acknowledgement")
        return
    c = net.client(dut, name="probe")
    check(c.peer_hello is not None, "ERR-4", "the device still completes a handshake",
          "no HELLO")


def upper(dut, what):
    if dut.upper is None or not dut.upper.can(what):
        not_applicable("no upper tester to make the device %s" % what)
    return dut.upper


def observe(dut):
    """The upper tester that reports deliveries, or not applicable."""
    if dut.upper is None or not dut.upper.can("deliveries"):
        not_applicable("the device's deliveries cannot be observed (no upper tester)")
    return dut.upper
