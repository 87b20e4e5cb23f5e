"""Retry semantics as pytest-rerunfailures defines them: the flaky marker, the global
options and ini keys, and the verdict over the exception chain."""

from __future__ import annotations

import pytest

from shardex_plugin import retries
from shardex_plugin.plugin import ShardexPlugin


@pytest.fixture(autouse=True)
def rerun_options(pytester, monkeypatch):
    # shardex blocks pytest-rerunfailures (where installed) and takes its options over.
    # syrupy (requirements-dev.txt) fails in pytester.getitem: its sessionfinish reads
    # session.exitstatus, which getitem never sets.
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:rerunfailures -p no:syrupy")
    # The options exist only where the agent started pytest: add them for these runs.
    pytester.makeconftest(
        "from shardex_plugin import retries\n"
        "def pytest_addoption(parser):\n"
        "    retries.add_options(parser)\n"
        "def pytest_configure(config):\n"
        "    retries.apply_retry_flags(config)\n"
    )


@pytest.mark.parametrize(
    ("marker", "reruns", "delay"),
    [
        ("@pytest.mark.flaky", 1, 0.0),
        ("@pytest.mark.flaky(3)", 3, 0.0),
        ("@pytest.mark.flaky(2, 1.5)", 2, 1.5),
        ("@pytest.mark.flaky(reruns=4, reruns_delay=-1)", 4, 0.0),
    ],
)
def test_flaky_marker_counts_and_delays(pytester, marker, reruns, delay):
    item = pytester.getitem(f"import pytest\n{marker}\ndef test_func(): pass\n")
    assert retries.reruns_count(item) == reruns
    assert retries.reruns_delay(item) == delay


def test_marker_beats_option_beats_ini(pytester):
    pytester.makeini("[pytest]\nreruns = 5\nreruns_delay = 2\n")
    pytester.makepyfile(
        "import pytest\ndef test_plain(): pass\n@pytest.mark.flaky(reruns=1)\ndef test_marked(): pass\n"
    )
    plain, marked = pytester.inline_genitems()[0]
    assert (retries.reruns_count(plain), retries.reruns_delay(plain)) == (5, 2.0)
    assert (retries.reruns_count(marked), retries.reruns_delay(marked)) == (1, 0.0)
    plain, marked = pytester.inline_genitems("--reruns", "7", "--reruns-delay", "0.5")[0]
    assert (retries.reruns_count(plain), retries.reruns_delay(plain)) == (7, 0.5)
    assert retries.reruns_count(marked) == 1


def test_filter_lists_from_marker_strings_and_classes(pytester):
    item = pytester.getitem(
        "import pytest\n"
        "@pytest.mark.flaky(only_rerun='Conn', rerun_except=[KeyError, 'fatal'])\n"
        "def test_func(): pass\n"
    )
    assert retries.filter_list(item, "only_rerun") == ["Conn"]
    assert retries.filter_list(item, "rerun_except") == [KeyError, "fatal"]
    rules = retries.retry_rules(item, retries.flaky_marker(item))
    assert rules["only_rerun"] == ["Conn"]
    assert rules["rerun_except"] == ["fatal"]
    assert rules["rerun_except_classes"] == ["KeyError"]
    assert rules["condition"] is True


def test_invalid_regex_is_a_usage_error(pytester):
    pytester.makepyfile("def test_func(): pass\n")
    result = pytester.runpytest_inprocess("--only-rerun", "(")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid regular expression for only_rerun*"])


class _Verdicts:
    """Runs tests in process and keeps each one's verdict, as the worker judges it."""

    pytest_runtest_makereport = ShardexPlugin.pytest_runtest_makereport

    def __init__(self) -> None:
        self.raw: dict = {}
        self.verdicts: dict = {}

    def pytest_runtest_logreport(self, report) -> None:
        self.raw.setdefault(report.nodeid, []).append(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        yield
        self.verdicts[item.name] = retries.retry_verdict(item, self.raw.get(item.nodeid, []))


def _verdicts(pytester, source, *args):
    pytester.makepyfile(source)
    plugin = _Verdicts()
    pytester.runpytest_inprocess(*args, plugins=[plugin])
    return plugin.verdicts


CHAIN = """
import pytest

class Transient(Exception):
    pass

def test_pass():
    pass

def test_cause():
    try:
        raise Transient("conn reset")
    except Transient as error:
        raise ValueError("wrapped") from error

def test_context():
    try:
        raise Transient("conn reset")
    except Transient:
        raise ValueError("while handling")

def test_suppressed():
    try:
        raise Transient("conn reset")
    except Transient:
        raise ValueError("suppressed") from None

@pytest.mark.xfail
def test_xfail():
    assert 0
"""


def test_only_rerun_follows_cause_and_context(pytester):
    verdicts = _verdicts(pytester, CHAIN, "--reruns", "2", "--only-rerun", "Transient")
    assert verdicts["test_pass"] is None
    assert verdicts["test_cause"] == {"eligible": True, "reruns": 2, "delay": 0.0}
    assert verdicts["test_context"]["eligible"] is True
    assert verdicts["test_suppressed"]["eligible"] is False
    assert verdicts["test_xfail"] is None  # an xfail did not fail


def test_rerun_except_follows_the_cause_not_the_context(pytester):
    verdicts = _verdicts(pytester, CHAIN, "--reruns", "1", "--rerun-except", "Transient")
    assert verdicts["test_cause"]["eligible"] is False
    assert verdicts["test_context"]["eligible"] is True
    assert verdicts["test_suppressed"]["eligible"] is True


def test_no_reruns_no_eligibility(pytester):
    verdicts = _verdicts(pytester, CHAIN)
    assert verdicts["test_cause"] == {"eligible": False, "reruns": 0, "delay": 0.0}


def test_marker_condition_and_class_filters(pytester):
    source = """
import pytest

@pytest.mark.flaky(reruns=3, only_rerun=[OSError])
def test_class_filter():
    raise ConnectionError("reset")

@pytest.mark.flaky(reruns=3, only_rerun=[OSError])
def test_class_filter_misses():
    raise KeyError("k")

@pytest.mark.flaky(reruns=3, condition="sys.platform == 'no-such'")
def test_false_condition():
    assert 0

@pytest.mark.flaky(reruns=3, condition=lambda error: isinstance(error, AssertionError))
def test_callable_condition():
    assert 0
"""
    verdicts = _verdicts(pytester, source)
    assert verdicts["test_class_filter"]["eligible"] is True
    assert verdicts["test_class_filter_misses"]["eligible"] is False
    assert verdicts["test_false_condition"]["eligible"] is False
    assert verdicts["test_callable_condition"] == {"eligible": True, "reruns": 3, "delay": 0.0}


class _Rerun(_Verdicts):
    """Runs an eligible failure once more on the same item, as a worker does when the
    agent sends the retry back to it."""

    def __init__(self) -> None:
        super().__init__()
        self.rerun: dict = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        yield
        verdict = retries.retry_verdict(item, self.raw.pop(item.nodeid, []))
        self.verdicts[item.name] = verdict
        if verdict and verdict["eligible"]:
            from _pytest.runner import runtestprotocol

            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            self.rerun[item.name] = [(r.when, r.outcome) for r in reports]


def test_eligible_failure_forgets_failed_fixture_and_instance(pytester):
    pytester.makepyfile(
        """
import pytest

calls = []
runs = []

@pytest.fixture(scope="module")
def once():
    calls.append(1)
    if len(calls) == 1:
        raise RuntimeError("first time")

def test_fixture(once):
    pass

class TestState:
    def test_instance(self):
        assert getattr(self, "seen", None) is None, "the rerun got the failed run's instance"
        self.seen = True
        runs.append(1)
        assert len(runs) > 1
"""
    )
    plugin = _Rerun()
    pytester.runpytest_inprocess("--reruns", "1", plugins=[plugin])
    assert plugin.verdicts["test_fixture"]["eligible"] is True
    assert plugin.verdicts["test_instance"]["eligible"] is True
    passed = [("setup", "passed"), ("call", "passed"), ("teardown", "passed")]
    assert plugin.rerun == {"test_fixture": passed, "test_instance": passed}
