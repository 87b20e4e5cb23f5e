"""Tests of the plugin's own logic (not embedded in the binary); run by scripts/test_python.sh."""

from __future__ import annotations

import os
import sys

import pytest

# The package is imported from the source tree, as the agent's bootstrap loads it from the
# run folder.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytest_plugins = ["pytester"]


class Recorder:
    """Collects what the plugin's helpers make of each report of an in-process run."""

    def __init__(self, make=None) -> None:
        self.make = make
        self.reports: list = []
        self.made: list = []
        self.items: dict = {}
        self.config = None

    def pytest_configure(self, config) -> None:
        self.config = config

    def pytest_collection_modifyitems(self, items) -> None:
        self.items.update((item.nodeid, item) for item in items)

    def pytest_runtest_logreport(self, report) -> None:
        self.reports.append(report)
        if self.make is not None:
            self.made.append(self.make(self.config, report))

    def by_test(self, nodeid: str) -> list:
        return [r for r in self.reports if r.nodeid == nodeid]


@pytest.fixture
def recorder():
    return Recorder
