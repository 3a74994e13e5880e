"""pytest configuration shared by the tests in sim/tests.

- Registers the ``req`` marker: ``@pytest.mark.req("ROUTE-3", "ACK-13")``
  names the proto/SPEC.md requirements a test exercises (scripts/spec_ids.py
  checks that every cited id exists). ``pytest -m req`` selects the tests
  that cite any; ``--req ROUTE-3`` selects those citing ROUTE-3.
- Puts this directory on sys.path so that tests import peerctl.
- Provides the ``addrs`` fixture: a fresh block of loopback addresses for
  one test, so that tests can run in parallel (pytest-xdist or several
  pytest processes) without sharing an address.
"""

import itertools
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "req(*ids): SPEC.md requirement ids (e.g. ROUTE-3) the test exercises")


def pytest_addoption(parser):
    parser.addoption("--req", action="append", default=[], metavar="ID",
                     help="run only tests marked with this SPEC requirement id")


def pytest_collection_modifyitems(config, items):
    wanted = set(config.getoption("--req"))
    if not wanted:
        return
    keep, drop = [], []
    for item in items:
        ids = set()
        for m in item.iter_markers("req"):
            ids.update(m.args)
        (keep if ids & wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# Address blocks: 127.0.<b>.<10..> with b in 1..254. The sequence starts at
# a random offset per process and steps by a number coprime to 254, so
# consecutive tests of one process never share a block and concurrent
# processes rarely do (a clash would show up as EADDRINUSE, never as
# cross-talk: each test also has its own UDP discovery port). Block 0 is
# left alone: the demo (scripts/demo.sh) uses 127.0.0.10-13 and the C unit
# tests use other 127.0.0.x addresses.
_block_seq = itertools.count()
_block_base = random.SystemRandom().randrange(254)


class AddressBlock:
    """Loopback addresses of one test: block.ip(0), block.ip(1), ..."""

    def __init__(self, third):
        self.third = third

    def ip(self, i):
        if not 0 <= i < 200:
            raise ValueError("address index out of range")
        return "127.0.%d.%d" % (self.third, 10 + i)

    def __repr__(self):
        return "AddressBlock(127.0.%d.x)" % self.third


@pytest.fixture
def addrs():
    n = next(_block_seq)
    return AddressBlock((_block_base + n * 97) % 254 + 1)
