"""Loads the conformance plugin (options, fixtures, reports)."""
import os
import sys

sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(__file__), "..")))

from posp2p_conform.plugin import *  # noqa: F401,F403,E402
