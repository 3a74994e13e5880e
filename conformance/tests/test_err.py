"""Errors, vendor extensions and robustness (SPEC 14, 15): malformed input
never takes the device down; the suite checks it still answers."""
import os
import random
import re
import time

import pytest

from helpers import *  # noqa: F401,F403


def _spec_ids():
    from posp2p_conform.plugin import _STATE
    return set(_STATE["spec"])


@req("ERR-1", "ERR-2", "ERR-7", "ERR-6", "MSG-29")
@needs(role="main", wire="v2")
def test_error_payloads(dut, net):
    """ERRORs the device sends for several conditions carry the code the
    table gives, a description, a SPEC requirement id (or ""), the
    ref_message_id of the message concerned; never UNSPECIFIED or
    DELIVERY_FAILED; code within 0..13."""
    c = net.client(dut)
    cases = []
    e1 = order_forward(c.id, to=dut.device_id, order_id="")
    cases.append((e1, "INVALID_MESSAGE"))
    e2 = order_forward(c.id, to=new_id())
    cases.append((e2, "UNKNOWN_DEVICE"))
    e3 = order_forward(c.id, to=dut.device_id)
    e3.message_type = 77
    cases.append((e3, "UNKNOWN_MESSAGE_TYPE"))
    ids = _spec_ids()
    for env, code in cases:
        c.send(env)
        try:
            err = expect_error(c, code, ref=env.message_id, timeout=1.5)
        except Timeout as ex:
            fail("ERR-2", "ERROR %s about %s" % (code, env.message_id[:8]), str(ex))
        p = err.error
        check(p.description != "", "ERR-1", "a description", "''")
        check(p.requirement == "" or p.requirement in ids, "ERR-1",
              "requirement = a SPEC id or ''", p.requirement)
        check(0 <= p.code <= 13, "MSG-29", "code 0..13", p.code)
        check(p.code not in (EC["UNSPECIFIED"], EC["DELIVERY_FAILED"]), "ERR-7",
              "not UNSPECIFIED / DELIVERY_FAILED", EC_NAME.get(p.code))


@req("ERR-3")
@needs(role="main", wire="v2")
def test_no_processing_after_closing_error(dut, net):
    """A frame that arrives with the one that caused a "close" ERROR
    (here a broken length prefix) is not processed."""
    c = net.client(dut)
    o = order_forward(c.id, to=dut.device_id)
    c.send_raw(b"\x80\x80\x80\x80\x80\x01" + frame(o))
    expect_error(c, "MALFORMED_FRAME", timeout=1.5)
    c.wait_closed(2.0)
    check(not c.envs(acks(o.message_id)), "ERR-3", "nothing processed after the ERROR",
          c.summary())


@req("ERR-4", "FRAME-7")
@needs(role="main", wire="v2")
def test_keep_errors_keep_connection(dut, net):
    c = net.client(dut)
    a = order_forward(c.id, to=dut.device_id, order_id="")
    b = order_forward(c.id, to=dut.device_id)
    c.send_raw(frame(a) + frame_raw(b"\x0a\xff") + frame(b))
    expect_error(c, "INVALID_MESSAGE", timeout=1.5)
    expect_error(c, "MALFORMED_FRAME", timeout=1.5)
    try:
        c.expect(acks(b.message_id), 1.5)
    except Timeout as ex:
        fail("ERR-4", "frames after two keep-errors processed", str(ex))


@req("ERR-5")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("kind", ["valid", "bad-code", "bad-id", "bad-to", "no-payload"])
def test_error_never_answered_with_error(dut, net, kind):
    c = net.client(dut)
    e = error(c.id, dut.device_id, "INTERNAL", "test")
    if kind == "bad-code":
        e.error.code = 99
    elif kind == "bad-id":
        e.message_id = "nope"
    elif kind == "bad-to":
        e.to_device_id = "nope"
    elif kind == "no-payload":
        e.ClearField("error")
    m = c.mark()
    c.send(e)
    # An ERROR in answer (priority 9) would arrive before the barrier's ACK;
    # a device may also close the connection over a malformed ERROR.
    try:
        sync(c, dut.device_id)
    except Timeout:
        if not c.closed:
            raise
    got = next(iter(c.envs(is_error(), since=m)), None)
    check(got is None, "ERR-5", "no ERROR in answer to an ERROR (%s)" % kind, err_summary(got))
    still_answers(dut, net)


@req("ERR-6")
@needs(role="main", wire="v2")
def test_delivery_failed_accepted(dut, net):
    c = net.client(dut)
    c.send(error(c.id, dut.device_id, "DELIVERY_FAILED", "x", ref=new_id()))
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    try:
        c.expect(acks(o.message_id), 1.5)
    except Timeout as ex:
        fail("ERR-6", "a DELIVERY_FAILED ERROR accepted like any other", str(ex))
    check(not c.envs(is_error()), "ERR-6", "no ERROR in answer", c.summary())


@req("ERR-9")
@needs(role="main", wire="v2")
def test_internal_optional(dut, net):
    """INTERNAL is optional; a valid message is handled (not answered with
    INTERNAL) and the connection remains usable."""
    c = net.client(dut)
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    c.expect(acks(o.message_id), 1.5)
    check(not c.envs(is_error("INTERNAL")), "ERR-9", "no INTERNAL for a valid message",
          c.summary())


@req("EXT-2", "EXT-3")
@needs(role="main", wire="v2", cap="relay")
def test_extensions_relayed(dut, net):
    a = net.client(dut, name="A")
    b = net.client(dut, name="B")
    e = order_forward(a.id, to=b.id)
    inner = add_unknown_field(e.order_forward.SerializeToString(), 1777, b"x-acme-inner")
    e.ClearField("order_forward")
    body = add_unknown_field(e.SerializeToString(), 1500, b"x-acme-outer")
    body += varint((20 << 3) | 2) + varint(len(inner)) + inner
    a.send_raw(frame_raw(body))
    try:
        it = b.expect_item(has_id(e.message_id), 1.5)
    except Timeout as ex:
        fail("EXT-3", "a message with extension fields is valid and relayed", str(ex))
    check(b"x-acme-outer" in it.raw and b"x-acme-inner" in it.raw, "EXT-2",
          "extension fields forwarded unchanged", it.raw[-40:])


ROBUST = {
    "random-bodies": lambda rnd: b"".join(frame_raw(bytes(rnd.getrandbits(8) for _ in
                                                         range(rnd.randint(0, 60))))
                                          for _ in range(30)),
    "nested-garbage": lambda rnd: frame_raw(b"\xc2\x01\x7f" + b"\x0a" * 200),
    "deep-nesting": lambda rnd: frame_raw(b"\xa2\x01\x10" * 2 + b"\x12\x0e" * 60),
    "many-empty": lambda rnd: b"\x00" * 200,
}


@req("FRAME-7", "ERR-4")
@needs(role="main", wire="v2")
@pytest.mark.parametrize("kind", list(ROBUST))
def test_garbage_frames_do_not_take_device_down(dut, net, kind):
    """Streams of garbage bodies: the device answers with errors (never
    crashes) and still completes a handshake afterwards."""
    c = net.client(dut)
    c.send_raw(ROBUST[kind](random.Random(kind)))
    o = order_forward(c.id, to=dut.device_id)
    c.send(o)
    try:
        c.expect(acks(o.message_id), 3.0)
    except Timeout:
        pass    # a device may close on some garbage; the next check is what counts
    still_answers(dut, net)
    check(dut.alive(), "ERR-4", "device still running", "device process gone")


@req("CONN-4", "CONN-5")
@needs(role="main")
def test_garbage_connections_do_not_take_device_down(dut, net):
    rnd = random.Random(5)
    for i in range(20):
        c = net.raw(dut)
        c.send_raw(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))))
        c.close(rst=bool(i % 2))
    still_answers(dut, net)
