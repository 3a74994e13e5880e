"""pytest plugin of the conformance suite: options, requirement markers,
applicability ("not applicable" outcomes), the device-under-test fixtures,
per-test traffic capture, and the reports (JSON, JUnit XML, Markdown,
HTML) with the exit status 0 / 1 / 2 / 3.

Markers
  @req("FRAME-4", "FRAME-5")       requirement ids the test checks
  @needs(role="main"|"client", wire="v2"|"legacy", cap="relay",
         upper="send_order", reconfigure="why")   applicability
"""
from __future__ import annotations

import os
import re
import sys
import time
import traceback

import pytest

from . import capture
from . import checks as checks_mod
from .checks import MultiViolation, Violation, not_applicable
from .profile import Profile, ProfileError, load as load_profile, parse_hostport
from . import report as report_mod

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from spec_ids import load_spec  # noqa: E402

req = pytest.mark.req
needs = pytest.mark.needs

_STATE = {}


def pytest_addoption(parser):
    g = parser.getgroup("posp2p", "posp2p conformance")
    g.addoption("--dut", default=None, help="HOST[:PORT] of the device under test "
                "(default: start the reference posp2p-peer on loopback)")
    g.addoption("--profile", default=None, help="device profile file (with --dut)")
    g.addoption("--should-strict", dest="posp2p_strict", action="store_true",
                help="SHOULD failures count as failures (posp2p-conform --strict)")
    g.addoption("--report-dir", default=None, help="where reports and captures go")
    g.addoption("--peer-binary", default=None, help="posp2p-peer executable to test "
                "(default: $POSP2P_BUILD_DIR/sim/peer/posp2p-peer)")
    g.addoption("--keep-captures", action="store_true", help="keep the capture of "
                "passing tests too")


def pytest_configure(config):
    config.addinivalue_line("markers", "req(*ids): SPEC requirement ids checked by the test")
    config.addinivalue_line("markers", "needs(**what): applicability of the test")
    spec, problems = load_spec()
    _STATE.clear()
    _STATE.update(spec=spec, results={}, started=time.time(), config=config,
                  harness_errors=[], profile=None, profile_error=None)
    o = config.option
    rd = o.report_dir or os.path.join(os.environ.get("POSP2P_BUILD_DIR", "."),
                                      "conformance-report")
    _STATE["report_dir"] = os.path.abspath(rd)
    os.makedirs(os.path.join(_STATE["report_dir"], "captures"), exist_ok=True)
    from .codec import build_dir
    _STATE["binary"] = o.peer_binary or os.environ.get("POSP2P_PEER_BINARY") or \
        os.path.join(build_dir(), "sim", "peer", "posp2p-peer")
    if o.dut:
        try:
            prof = load_profile(o.profile) if o.profile else None
            if prof is None:
                raise ProfileError("", 0, "", "--dut needs --profile FILE")
            host, port = parse_hostport(o.dut, prof.tcp_port)
            prof.address, prof.tcp_port = host, port
            _STATE["profile"] = prof
        except (ProfileError, ValueError) as e:
            _STATE["profile_error"] = str(e)
            raise pytest.UsageError(str(e))


def _spec_level(ids):
    spec = _STATE["spec"]
    levels = [spec[i]["level"] for i in ids if i in spec]
    if "MUST" in levels:
        return "MUST"
    if "SHOULD" in levels:
        return "SHOULD"
    return "MAY" if levels else "MUST"


def pytest_collection_modifyitems(session, config, items):
    spec = _STATE["spec"]
    bad = []
    for it in items:
        ids = []
        for m in it.iter_markers("req"):
            ids.extend(m.args)
        for i in ids:
            if i not in spec:
                bad.append("%s cites %s, which SPEC.md does not define" % (it.nodeid, i))
        it._reqs = ids
    if bad:
        raise pytest.UsageError("\n".join(bad))


# ---- applicability ---------------------------------------------------------------------

def remote() -> bool:
    return _STATE.get("profile") is not None


def profile() -> Profile:
    return _STATE["profile"]


def _check_needs(item):
    for m in item.iter_markers("needs"):
        kw = m.kwargs
        if not remote():
            if kw.get("netns") and os.geteuid() != 0:
                not_applicable("network namespaces need root")
            continue
        p = profile()
        role = kw.get("role")
        if role == "main" and not p.is_main:
            not_applicable("the device is a %s, the test is for a main POS" % p.role)
        if role == "client" and p.is_main:
            not_applicable("the device is a main POS, the test is for a client")
        if role == "client" and p.client_listen is None:
            not_applicable("the profile has no [client] listen address")
        w = kw.get("wire")
        if w and w not in p.wires:
            not_applicable("the device does not speak the %s wire" % w)
        if kw.get("not_wire") and kw["not_wire"] in p.wires:
            not_applicable("the device speaks the %s wire" % kw["not_wire"])
        for c in ([kw["cap"]] if isinstance(kw.get("cap"), str) else kw.get("cap", [])):
            if not p.has_cap(c):
                not_applicable("the profile does not declare capability '%s'" % c)
        for u in ([kw["upper"]] if isinstance(kw.get("upper"), str) else kw.get("upper", [])):
            if u not in p.upper:
                not_applicable("no upper-tester command '%s' in the profile" % u)
        if kw.get("reconfigure"):
            not_applicable("needs a device configured for the test (%s); only the reference "
                           "peer is reconfigured by the suite" % kw["reconfigure"])
        if kw.get("netns"):
            not_applicable("the namespace test runs the reference peer only")
        if kw.get("discovery") and p.udp_port == 0:
            not_applicable("the device takes no part in discovery (udp_port 0)")


def pytest_runtest_setup(item):
    _check_needs(item)


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def conf_state():
    return _STATE


@pytest.fixture(scope="module")
def main_dut_instance(request):
    from .dut import PeerDUT, RemoteDUT
    if remote():
        d = RemoteDUT(profile())
        yield d
        return
    d = PeerDUT(_STATE["binary"], role="mainPOS", name="dut-main")
    yield d
    d.stop()


@pytest.fixture
def dut(request, main_dut_instance):
    """The main POS under test (module-scoped process; restarted if a
    previous test took it down)."""
    if remote() and not profile().is_main:
        not_applicable("the device is a %s; this test needs a main POS" % profile().role)
    main_dut_instance.ensure_running()
    if main_dut_instance.device_id is None:
        _learn_id(main_dut_instance)
    request.node._dut = main_dut_instance
    request.node._log_mark = main_dut_instance.log_mark()
    return main_dut_instance


def _learn_id(d):
    """A remote device's id, from its HELLO (v2) or a legacy ack."""
    from .vdev import LegacyConn, V2Client, lacks
    from .codec import goodbye, legacy_msg
    try:
        if "v2" in profile().wires:
            c = V2Client(d, name="id-probe", auto_heartbeat=False).connect()
            try:
                d.device_id = c.handshake().hello.device_id.lower()
                c.send(goodbye(c.id, d.device_id, "shutdown"))
            finally:
                c.close()
        else:
            c = LegacyConn(d, name="id-probe").connect()
            try:
                m = legacy_msg("heartbeat", c.id, None, {}, 2)
                c.send(m)
                d.device_id = c.expect(lacks(m["messageId"]), 5.0)["fromDeviceId"].lower()
            finally:
                c.close()
    except Exception as e:  # noqa: BLE001
        raise RuntimeError("cannot learn the device's id at %s:%d (%s); give device_id in "
                           "the profile" % (d.host, d.tcp_port, e))


@pytest.fixture
def make_dut(request):
    """Start a dedicated reference peer with other settings:
    make_dut(role="mainPOS", timers={...}, extra=[...]). With --dut this is
    not applicable unless the remote device already matches (reconfigure
    is declared through @needs)."""
    from .dut import PeerDUT, RemoteDUT
    from .profile import reference_profile
    made = []

    def make(role="mainPOS", timers=None, extra=(), connect=None, **kw):
        if remote():
            not_applicable("needs a reconfigured device; only the reference peer is "
                           "reconfigured by the suite")
        prof = reference_profile(role == "mainPOS")
        if timers:
            prof.timers.update(timers)
        d = PeerDUT(_STATE["binary"], profile=prof, role=role, extra_args=extra,
                    connect=connect, **kw)
        made.append(d)
        if not hasattr(request.node, "_dut"):
            request.node._dut = d
            request.node._log_mark = 0
        return d
    yield make
    for d in made:
        d.stop()


@pytest.fixture
def client_setup(request):
    """A client device connected to the suite's virtual main POS:
    returns (vmain, conn, dut). kw go to V2Main (e.g. hb_ms, timeout_ms)."""
    from .dut import PeerDUT, RemoteDUT
    from .vdev import V2Main
    made = []

    def setup(handshake=True, vmain_kw=None, dut_timers=None, dut_extra=(), hs_kw=None):
        vkw = dict(vmain_kw or {})
        if remote():
            p = profile()
            if p.is_main or p.client_listen is None:
                not_applicable("needs a client device with a [client] listen address")
            vm = V2Main(host=p.client_listen[0], port=p.client_listen[1], **vkw)
            d = RemoteDUT(p)
            timeout = p.connect_timeout_ms / 1000.0
        else:
            from .profile import reference_profile
            vm = V2Main(**vkw)
            prof = reference_profile(False)
            if dut_timers:
                prof.timers.update(dut_timers)
            d = PeerDUT(_STATE["binary"], profile=prof, role="kds", name="dut-client",
                        connect="%s:%d" % vm.addr, extra_args=dut_extra)
            timeout = 5.0
        made.append((vm, d))
        request.node._dut = d
        request.node._log_mark = 0
        conn = vm.accept(timeout=timeout, handshake=handshake, **(hs_kw or {}))
        if d.device_id is None and conn.peer_id:
            d.device_id = conn.peer_id
        return vm, conn, d
    yield setup
    for vm, d in made:
        vm.close()
        d.stop()


class Net:
    """Virtual devices of one test; all closed at its end."""

    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return x

    def client(self, dut, handshake=True, **kw):
        from .vdev import V2Client
        c = self.add(V2Client(dut, **kw)).connect()
        if handshake:
            c.handshake()
        return c

    def raw(self, dut, **kw):
        """A connected V2Client that has sent nothing."""
        from .vdev import V2Client
        return self.add(V2Client(dut, **kw)).connect()

    def legacy(self, dut, **kw):
        from .vdev import LegacyConn
        return self.add(LegacyConn(dut, **kw)).connect()

    def udp(self, **kw):
        from .vdev import UdpProbe
        return self.add(UdpProbe(**kw))

    def close(self):
        for x in reversed(self.items):
            try:
                x.close()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close()


@pytest.fixture(autouse=True)
def record_traffic(request):
    rec = capture.Recorder(request.node.nodeid)
    capture.set_current(rec)
    checks_mod.passed.clear()
    request.node._rec = rec
    yield rec
    capture.set_current(None)


# ---- results -------------------------------------------------------------------------------

def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    res = _STATE["results"].setdefault(item.nodeid, {
        "nodeid": item.nodeid, "name": item.name,
        "module": item.module.__name__ if item.module else "",
        "reqs": list(getattr(item, "_reqs", [])),
        "level": _spec_level(getattr(item, "_reqs", [])),
        "doc": (item.function.__doc__ or "").strip().split("\n\n")[0] if hasattr(
            item, "function") else "",
        "outcome": None, "failed_reqs": [], "message": "", "expected": "", "actual": "",
        "duration_s": 0.0, "pcap": None, "log_excerpt": "", "passed_reqs": []})
    res["duration_s"] += rep.duration
    strict = item.config.option.posp2p_strict
    if rep.when == "setup" and rep.skipped:
        msg = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if msg.startswith("Skipped: "):
            msg = msg[len("Skipped: "):]
        res["outcome"] = "na" if msg.startswith("N/A") else "skipped"
        res["message"] = msg
    elif rep.when == "call" and rep.skipped and res["outcome"] is None:
        msg = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if msg.startswith("Skipped: "):
            msg = msg[len("Skipped: "):]
        res["outcome"] = "na" if msg.startswith("N/A") else "skipped"
        res["message"] = msg
    elif rep.failed:
        exc = call.excinfo.value if call.excinfo else None
        if rep.when == "call":
            res["passed_reqs"] = sorted(checks_mod.passed)
            if isinstance(exc, MultiViolation):
                res["failed_reqs"] = list(exc.reqs)
                res["expected"], res["actual"] = exc.expected, exc.actual
                for r_ in exc.reqs:
                    if r_ not in res["reqs"]:
                        res["reqs"].append(r_)
            elif isinstance(exc, Violation):
                res["failed_reqs"] = [exc.req]
                res["expected"], res["actual"] = exc.expected, exc.actual
                if exc.req not in res["reqs"]:
                    res["reqs"].append(exc.req)
            else:
                res["failed_reqs"] = list(res["reqs"])
                res["actual"] = str(exc)[:2000] if exc else ""
            res["message"] = (str(exc) if exc else str(rep.longrepr))[:4000]
            lv = _spec_level(res["failed_reqs"])
            if lv != "MUST" and not strict:
                res["outcome"] = "warning"
                rep.outcome = "skipped"
                rep.wasxfail = "%s %s not met (warning; --strict makes it a failure): %s" % (
                    lv, ",".join(res["failed_reqs"]), res["message"][:300])
            else:
                res["outcome"] = "fail"
        elif rep.when == "setup":
            res["outcome"] = "error"
            res["message"] = "harness/setup error: %s" % (str(exc)[:3000] if exc else
                                                          str(rep.longrepr)[:3000])
        else:  # teardown
            if res["outcome"] in (None, "pass"):
                res["outcome"] = "error"
                res["message"] = "teardown error: %s" % (str(exc)[:3000] if exc else "")
    elif rep.when == "call" and rep.passed:
        res["outcome"] = "pass"
    if rep.when == "teardown":
        rec = getattr(item, "_rec", None)
        failed = res["outcome"] in ("fail", "warning", "error")
        if rec is not None and (failed or item.config.option.keep_captures):
            path = os.path.join(_STATE["report_dir"], "captures", _safe_name(item.nodeid) +
                                ".pcap")
            try:
                res["pcap"] = rec.write(path)
            except Exception as e:  # noqa: BLE001
                res["pcap"] = None
                res["message"] += "\n(capture not written: %s)" % e
        d = getattr(item, "_dut", None)
        if d is not None and failed:
            res["log_excerpt"] = "\n".join(d.log_since(getattr(item, "_log_mark", 0))
                                           .splitlines()[-40:])


def pytest_sessionfinish(session, exitstatus):
    results = list(_STATE["results"].values())
    strict = session.config.option.posp2p_strict
    if _STATE.get("profile_error"):
        code = 2
    elif exitstatus in (2, 3, 4) or any(r["outcome"] == "error" for r in results):
        code = 2
    elif any(r["outcome"] == "fail" for r in results):
        code = 1
    elif not any(r["outcome"] in ("pass", "warning") for r in results):
        code = 3
    else:
        code = 0
    _STATE["exit_code"] = code
    try:
        _STATE["paths"] = report_mod.write_all(_STATE, session.config, results, strict, code)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        code = 2
    session.exitstatus = code


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    paths = _STATE.get("paths") or {}
    results = list(_STATE["results"].values())
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    tr = terminalreporter
    tr.section("posp2p conformance")
    tr.write_line("device: %s" % _STATE.get("dut_desc", "reference posp2p-peer (%s)" %
                                            _STATE.get("binary")))
    tr.write_line("tests: " + ", ".join("%s %d" % (k, v) for k, v in sorted(
        counts.items(), key=lambda x: str(x[0]))))
    rq = _STATE.get("req_summary")
    if rq:
        tr.write_line("requirements: " + ", ".join("%s %d" % kv for kv in sorted(rq.items())))
    for r in results:
        if r["outcome"] in ("fail", "error"):
            tr.write_line("FAIL %s [%s] %s" % (r["nodeid"], ",".join(r["failed_reqs"] or
                                                                     r["reqs"]),
                                               (r["message"] or "").splitlines()[0][:200]
                                               if r["message"] else ""))
    for k in ("markdown", "html", "json", "junit"):
        if k in paths:
            tr.write_line("report (%s): %s" % (k, paths[k]))
    tr.write_line("exit status: %d" % _STATE.get("exit_code", exitstatus))
