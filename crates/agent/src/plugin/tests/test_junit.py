"""The JUnit recorder gives exactly the testcases pytest's own --junitxml writes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from shardex_plugin.junit import NO_JUNIT, JunitRecorder
from shardex_plugin.settings import SETTINGS

SOURCE = """
import pytest

def test_pass(record_property):
    record_property("k", "v")

def test_fail():
    assert 0

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown")

def test_fail_and_teardown_error(bad_teardown):
    assert 0

def test_skip():
    pytest.skip("no")
"""


class Recording:
    def __init__(self) -> None:
        self.parts: dict = {}
        self.recorder = None

    def pytest_configure(self, config) -> None:
        self.recorder = JunitRecorder(config)

    def pytest_runtest_logreport(self, report) -> None:
        self.recorder.log(report)

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        self.parts[nodeid.split("::")[-1]] = self.recorder.take()

    def pytest_unconfigure(self, config) -> None:
        self.recorder.close()


def _cases(xml: str) -> list:
    root = ET.fromstring(f"<r>{xml}</r>")
    cases = []
    for case in root.iter("testcase"):
        case.attrib.pop("time", None)
        cases.append(ET.tostring(case, encoding="unicode"))
    return cases


def test_same_testcases_as_pytest_junitxml(pytester):
    pytester.makepyfile(test_mod=SOURCE)
    recording = Recording()
    # Both runs in file order (pytest-randomly, when installed, would shuffle each its own way).
    pytester.runpytest_inprocess("-p", "no:randomly", "-o", "junit_family=xunit1", plugins=[recording])
    pytester.runpytest_inprocess("-p", "no:randomly", "-o", "junit_family=xunit1", "--junitxml=out.xml")
    theirs = _cases(ET.tostring(ET.parse(pytester.path / "out.xml").getroot(), encoding="unicode"))
    ours = []
    for name in ("test_pass", "test_fail", "test_fail_and_teardown_error", "test_skip"):
        ours.extend(_cases(recording.parts[name]["xml"]))
    assert ours == theirs


def test_counters_add_up_to_pytests_testsuite(pytester):
    pytester.makepyfile(test_mod=SOURCE)
    recording = Recording()
    pytester.runpytest_inprocess(plugins=[recording])
    pytester.runpytest_inprocess("--junitxml=out.xml")
    parts = recording.parts
    assert (parts["test_pass"]["passed"], parts["test_pass"]["failures"]) == (1, 0)
    assert parts["test_fail"]["failures"] == 1
    assert parts["test_skip"]["skipped"] == 1
    total = {key: sum(part[key] for part in parts.values()) for key in NO_JUNIT if key != "xml"}
    suite = ET.parse(pytester.path / "out.xml").getroot().find("testsuite")
    tests = total["passed"] + total["failures"] + total["errors"] + total["skipped"] - total["double"]
    assert tests == int(suite.get("tests"))
    for key in ("failures", "errors", "skipped"):
        assert total[key] == int(suite.get(key)), key
    # Taken parts are forgotten: memory stays flat.
    assert recording.recorder.logxml.node_reporters_ordered == []


def test_nothing_built_without_a_report(pytester, monkeypatch):
    monkeypatch.setattr(SETTINGS, "junit", False)
    pytester.makepyfile(test_mod=SOURCE)
    recording = Recording()
    pytester.runpytest_inprocess(plugins=[recording])
    assert all(part is NO_JUNIT for part in recording.parts.values())
