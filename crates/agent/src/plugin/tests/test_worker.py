"""The worker's loop against a scripted agent: `retract` is answered while a test runs,
and when the nextitem a test ran with was taken back, fixtures are torn down as pytest
would have with the test that actually runs next."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from shardex_plugin.junit import NO_JUNIT
from shardex_plugin.worker import LocalQueue, Worker

SUITE = {
    "conftest": """
import os
import pytest

def log(event):
    with open(os.environ["EVENTS"], "a") as f:
        f.write(event + "\\n")

@pytest.fixture(scope="module")
def mod(request):
    name = request.module.__name__
    log("setup " + name)
    yield
    log("teardown " + name)

@pytest.fixture(scope="class")
def cls(request):
    log("setup " + request.cls.__name__)
    yield
    log("teardown " + request.cls.__name__)
""",
    "test_m1": """
import pytest
from conftest import log

@pytest.mark.usefixtures("mod", "cls")
class TestC:
    def test_a(self):
        log("run a")

    def test_b(self):
        log("run b")

def test_d(mod):
    log("run d")
""",
    "test_m2": """
from conftest import log

def test_c(mod):
    log("run c")
""",
}

A = "test_m1.py::TestC::test_a"
B = "test_m1.py::TestC::test_b"
C = "test_m2.py::test_c"
D = "test_m1.py::test_d"


class Agent:
    """Stands in for the plugin object and its channel: the worker reads what the script
    puts in `inbox` and sends into `sent`."""

    def __init__(self, config) -> None:
        self.config = config
        self.channel = self
        self.junit = self
        self.reports: list = []
        self.raw_reports: list = []
        self.inbox: queue.Queue = queue.Queue()
        self.held: list = []
        self.sent: list = []
        self.lock = threading.Lock()

    # -- channel -------------------------------------------------------------
    def hold(self, line: bytes) -> None:
        with self.lock:
            self.held.append(line)

    def release(self) -> None:
        with self.lock:
            self.sent.extend(json.loads(line) for line in self.held)
            self.held.clear()

    def send(self, msg: dict) -> None:
        self.hold(json.dumps(msg).encode())
        self.release()

    def recv(self):
        msg = self.inbox.get(timeout=20)
        if msg is None:
            raise EOFError
        return msg

    # -- junit ---------------------------------------------------------------
    def take(self) -> dict:
        return NO_JUNIT

    def wait_for(self, t: str) -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.sent if m["t"] == t]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {t!r} sent")


class Driver:
    """Runs the real Worker in pytest's runtestloop; `during[nodeid]` is called while that
    test runs (as if the agent sent something then)."""

    def __init__(self, start: list, during: dict) -> None:
        self.start = start
        self.during = during
        self.agent = None
        self.outcomes: dict = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        self.agent = Agent(session.config)
        for msg in self.start:
            self.agent.inbox.put(msg)
        Worker(self.agent, session).serve()
        return True

    def pytest_runtest_call(self, item) -> None:
        action = self.during.get(item.nodeid)
        if action is not None:
            action(self.agent)

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed or report.when == "call":
            self.outcomes[(report.nodeid, report.when)] = report.outcome


@pytest.fixture
def suite(pytester, monkeypatch):
    pytester.makepyfile(**SUITE)
    events = pytester.path / "events.txt"
    monkeypatch.setenv("EVENTS", str(events))
    pytester.syspathinsert()

    def run(start, during, *args):
        events.write_text("")
        driver = Driver(start, during)
        pytester.inline_run("-p", "no:cacheprovider", *args, plugins=[driver])
        return driver, events.read_text().splitlines()

    return run


def _retract_b_then_send_c(agent) -> None:
    agent.inbox.put({"t": "retract", "ids": [B]})
    # Answered while this test runs: the worker's reader thread does it.
    assert agent.wait_for("retracted") == {"t": "retracted", "ids": [B]}
    agent.inbox.put({"t": "run", "ids": [C]})
    agent.inbox.put({"t": "flush"})


def test_a_retracted_nextitem_tears_down_as_pytest_would_for_the_actual_next(suite):
    # a runs with nextitem b (same class: the class and module fixtures stay up); b is
    # taken back; c (another module) runs next: what plain pytest does for a then c.
    start = [{"t": "run", "ids": [A, B]}]
    during = {A: _retract_b_then_send_c, C: lambda agent: agent.inbox.put({"t": "exit"})}
    driver, events = suite(start, during)
    _, plain = suite([{"t": "run", "ids": [A, C]}, {"t": "flush"}], {C: lambda agent: agent.inbox.put({"t": "exit"})})
    assert (
        events
        == plain
        == [
            "setup test_m1",
            "setup TestC",
            "run a",
            "teardown TestC",
            "teardown test_m1",
            "setup test_m2",
            "run c",
            "teardown test_m2",
        ]
    )
    assert driver.outcomes == {(A, "call"): "passed", (C, "call"): "passed"}
    done = [m["id"] for m in driver.agent.sent if m["t"] == "done"]
    assert done == [A, C]


def test_the_module_fixture_stays_up_for_an_actual_next_in_the_same_module(suite):
    # a runs with nextitem b; b is taken back and d (same module, outside the class) runs
    # next: the class fixture goes, the module fixture stays, as pytest does for a then d.
    def retract_b_then_send_d(agent) -> None:
        agent.inbox.put({"t": "retract", "ids": [B]})
        agent.wait_for("retracted")
        agent.inbox.put({"t": "run", "ids": [D]})
        agent.inbox.put({"t": "flush"})

    exit_during_d = {D: lambda agent: agent.inbox.put({"t": "exit"})}
    driver, events = suite([{"t": "run", "ids": [A, B]}], {A: retract_b_then_send_d, **exit_during_d})
    _, plain = suite([{"t": "run", "ids": [A, D]}, {"t": "flush"}], exit_during_d)
    assert (
        events
        == plain
        == [
            "setup test_m1",
            "setup TestC",
            "run a",
            "teardown TestC",
            "run d",
            "teardown test_m1",
        ]
    )
    assert driver.outcomes == {(A, "call"): "passed", (D, "call"): "passed"}


def test_a_retracted_last_nextitem_is_torn_down_at_exit(suite):
    def retract_b_then_exit(agent) -> None:
        agent.inbox.put({"t": "retract", "ids": [B]})
        agent.wait_for("retracted")
        agent.inbox.put({"t": "exit"})

    driver, events = suite([{"t": "run", "ids": [A, B]}], {A: retract_b_then_exit})
    assert events == ["setup test_m1", "setup TestC", "run a", "teardown TestC", "teardown test_m1"]
    assert driver.outcomes == {(A, "call"): "passed"}


def test_retract_removes_only_tests_not_started():
    local = LocalQueue()
    local.apply({"t": "run", "ids": ["a", "b", "c"], "slow": [1]})
    local.ids.pop(0)  # the main loop started a
    assert local.apply({"t": "retract", "ids": ["a", "b"]}) == {"t": "retracted", "ids": ["b"]}
    assert local.ids == ["c"] and local.slow == set()
    assert local.apply({"t": "retract", "ids": ["a"]}) == {"t": "retracted", "ids": []}
    assert local.apply({"t": "flush"}) is None and local.flushed
    local.apply({"t": "results", "failed": [], "passed": []})
    assert [m["t"] for m in local.later] == ["results"]
