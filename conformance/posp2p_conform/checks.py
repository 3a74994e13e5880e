"""Assertions that carry the requirement, the expectation and what the
device actually did, so that the reports can say all three."""
from __future__ import annotations

import pytest


class Violation(AssertionError):
    """The device broke requirement `req`."""

    def __init__(self, req: str, expected: str, actual: str, note: str = ""):
        self.req, self.expected, self.actual, self.note = req, expected, actual, note
        msg = "%s: expected %s; actual %s" % (req, expected, actual)
        if note:
            msg += " (%s)" % note
        super().__init__(msg)


# Requirements whose checks passed in the running test (reset by the
# plugin for each test): a test that fails on one requirement still shows
# the others it verified.
passed = set()


class MultiViolation(Violation):
    """Several soft checks failed; .reqs lists them all."""

    def __init__(self, violations):
        self.violations = violations
        self.reqs = []
        for v in violations:
            if v.req not in self.reqs:
                self.reqs.append(v.req)
        first = violations[0]
        super().__init__(first.req, first.expected, first.actual, first.note)
        self.expected = "; ".join("%s: %s" % (v.req, v.expected) for v in violations)
        self.actual = "; ".join("%s: %s" % (v.req, v.actual) for v in violations)
        self.args = ("\n".join(str(v) for v in violations),)


def check(cond, req: str, expected: str, actual="", note: str = "") -> None:
    """Fail the test on requirement `req` unless cond holds. actual may be a
    callable (evaluated only on failure)."""
    if not cond:
        if callable(actual):
            actual = actual()
        raise Violation(req, expected, str(actual), note)
    passed.add(req)


class Soft:
    """Independent checks of one test: every one runs, done() fails the
    test on all the requirements that failed."""

    def __init__(self):
        self.violations = []

    def check(self, cond, req, expected, actual="", note=""):
        try:
            check(cond, req, expected, actual, note)
        except Violation as v:
            self.violations.append(v)

    def done(self):
        if self.violations:
            raise MultiViolation(self.violations)


def fail(req: str, expected: str, actual: str, note: str = "") -> None:
    raise Violation(req, expected, actual, note)


def not_applicable(reason: str) -> None:
    """The test does not apply to this device (reported as such, never as
    a silent skip)."""
    pytest.skip("N/A: " + reason)


def within(t_ms: float, nominal_ms: float, tol: float, slack_ms: float) -> bool:
    """t within nominal*(1 +- tol) +- slack (timer tolerance)."""
    return nominal_ms * (1 - tol) - slack_ms <= t_ms <= nominal_ms * (1 + tol) + slack_ms
