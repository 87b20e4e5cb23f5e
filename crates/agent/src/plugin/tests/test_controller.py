"""The zygote as xdist's controller: when it replays, what travels, and how retried and
crashed attempts are replayed."""

from __future__ import annotations

import os
import pickle
import struct
from types import SimpleNamespace

from shardex_plugin import controller, relay


def test_replay_only_for_plugins_that_read_what_workers_did(pytester):
    pytester.makepyfile(test_mod="def test_a(): pass\n")
    plain = pytester.parseconfigure(pytester.path, "-p", "no:syrupy")
    assert controller.decide(plain)[0] is False
    pytester.makeconftest("def pytest_runtest_logreport(report):\n    pass\n")
    with_reader = pytester.parseconfigure(pytester.path, "-p", "no:syrupy")
    assert controller.decide(with_reader) == (True, True)


def test_look_like_xdist_sets_what_plugins_read(pytester):
    config = pytester.parseconfigure(pytester.path)
    controller.look_like_xdist(config)
    assert config.option.dist == "load"
    assert config.option.numprocesses >= 1
    # No DSession: xdist starts one only for a non-empty `tx`.
    assert not config.getoption("tx", None)


def _unpack(data: bytes) -> list:
    events = []
    while data:
        (size,) = struct.unpack(">I", data[:4])
        events.extend(pickle.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return events


def test_reports_travel_with_their_tuples_and_bytes(pytester, recorder):
    pytester.makepyfile(test_mod="import pytest\ndef test_skip():\n    pytest.skip('later')\n")
    rec = recorder()
    pytester.runpytest_inprocess("-p", "no:cacheprovider", plugins=[rec])
    config = rec.config
    skip = next(r for r in rec.reports if r.skipped)
    data = config.hook.pytest_report_to_serializable(config=config, report=skip)
    [(_kind, back)] = _unpack(relay.pack([("report", {**data, "extra": b"\x00zlib"})]))
    rep = config.hook.pytest_report_from_serializable(config=config, data=back)
    # A JSON round trip makes lists of these: pytest's skip summary asserts a tuple.
    assert isinstance(rep.longrepr, tuple)
    assert isinstance(rep.location, tuple)
    assert back["extra"] == b"\x00zlib"


class _Hook:
    def __init__(self) -> None:
        self.log: list = []

    def pytest_runtest_logstart(self, nodeid, location):
        self.log.append(("logstart", nodeid))

    def pytest_runtest_logfinish(self, nodeid, location):
        self.log.append(("logfinish", nodeid))

    def pytest_report_from_serializable(self, config, data):
        return SimpleNamespace(**data)

    def pytest_runtest_logreport(self, report):
        self.log.append((report.nodeid, report.when, report.outcome))


def _controller():
    hook = _Hook()
    config = SimpleNamespace(hook=hook, pluginmanager=None, option=SimpleNamespace())
    ctl = controller.Controller(config, SimpleNamespace(items=[]), replay=True)
    read_fd, write_fd = os.pipe()
    ctl.forked("gw0", read_fd)
    return ctl, hook, read_fd, write_fd


def _report(nodeid, when, outcome):
    return ("report", {"nodeid": nodeid, "when": when, "outcome": outcome})


def test_a_retried_attempt_is_replayed_as_rerun_and_a_last_one_as_failed():
    ctl, hook, read_fd, write_fd = _controller()
    loc = ("t.py", 1, "t")
    events = [
        ("logstart", "t.py::a", loc),
        _report("t.py::a", "call", "failed"),
        ("logfinish", "t.py::a", loc),
        ("done", True),  # shardex may retry it: held
    ]
    os.write(write_fd, relay.pack(events))
    ctl.readable(read_fd)
    assert hook.log == [("logstart", "t.py::a")]
    # Another attempt starts: the first was a rerun.
    events = [
        ("logstart", "t.py::a", loc),
        _report("t.py::a", "call", "failed"),
        ("done", True),
    ]
    os.write(write_fd, relay.pack(events))
    ctl.readable(read_fd)
    assert hook.log[1:] == [
        ("t.py::a", "call", "rerun"),
        ("logfinish", "t.py::a"),
        ("logstart", "t.py::a"),
    ]
    # No attempt after the second: at the end it is a failure.
    ctl.finish()
    assert hook.log[4:] == [("t.py::a", "call", "failed")]
    os.close(write_fd)


def test_a_test_the_worker_died_in_gets_xdists_crash_report():
    ctl, hook, _read_fd, write_fd = _controller()
    loc = ("t.py", 1, "t")
    os.write(write_fd, relay.pack([("logstart", "t.py::c", loc), _report("t.py::c", "setup", "passed")]))
    os.close(write_fd)  # the worker died mid-test
    ctl.exited("gw0")
    assert ctl.fds() == []
    ctl.finish()
    assert hook.log == [
        ("logstart", "t.py::c"),
        ("t.py::c", "setup", "passed"),
        ("t.py::c", "???", "failed"),
    ]
