"""Shared helpers of the conformance tests."""
import time

from posp2p_conform.checks import Soft, check, fail, not_applicable, within  # noqa: F401
from posp2p_conform.codec import *  # noqa: F401,F403
from posp2p_conform.plugin import needs, req, remote, profile  # noqa: F401
from posp2p_conform.vdev import (Timeout, acks, has_id, is_error, is_type, lacks,  # noqa: F401
                                 suite_ip)

# Timer tolerance (README): a measured interval passes if it lies within
# nominal * (1 +- TOL) +- SLACK_MS. The slack covers scheduling on a busy
# CI machine with sanitizers; the relative part covers jitter a device may
# add on purpose.
TOL = 0.5
SLACK_MS = 150


def t(dut):
    return dut.t


def quiet_s(dut) -> float:
    """How long to watch for something that must not happen: two ack
    timeouts plus 100 ms, at least 0.3 s."""
    return max(0.3, 2 * dut.t["ack_timeout_ms"] / 1000.0 + 0.1)


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
