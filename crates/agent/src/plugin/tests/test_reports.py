"""Phase reports and FAILURES/ERRORS bodies as the agent's terminal needs them."""

from __future__ import annotations

import pytest

from shardex_plugin import reports
from shardex_plugin.settings import SETTINGS

SOURCE = """
import pytest

def test_pass():
    pass

def test_fail():
    print("to stdout")
    assert 1 == 2, "numbers differ"

def test_skip():
    pytest.skip("not today")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert 0

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_error(broken):
    pass
"""


def _run(pytester, recorder, *args):
    pytester.makepyfile(test_mod=SOURCE)
    rec = recorder(reports.phase_report)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", *args, plugins=[rec])
    return {(r["when"], rec.reports[i].nodeid.split("::")[-1]): r for i, r in enumerate(rec.made)}


def test_plain_pass_is_the_short_form(pytester, recorder):
    made = _run(pytester, recorder)
    phases = [made[(when, "test_pass")] for when in ("setup", "call", "teardown")]
    assert [(p["category"], p["letter"], p["word"]) for p in phases] == [
        ("", "", ""),
        ("passed", ".", "PASSED"),
        ("", "", ""),
    ]
    assert reports.is_plain_pass(phases)
    assert not reports.is_plain_pass(phases[:2])
    assert not reports.is_plain_pass([made[("setup", "test_fail")], made[("call", "test_fail")], phases[2]])


def test_failure_carries_the_rendered_section(pytester, recorder):
    failed = _run(pytester, recorder)[("call", "test_fail")]
    assert (failed["outcome"], failed["category"], failed["letter"], failed["word"]) == (
        "failed",
        "failed",
        "F",
        "FAILED",
    )
    assert failed["head_line"] == "test_fail"
    assert failed["crash_message"].startswith("AssertionError: numbers differ")
    assert failed["crash_line"].startswith(str(pytester.path / "test_mod.py") + ":")
    body = failed["longrepr"]
    assert ">       assert 1 == 2" in body
    assert "- Captured stdout call -" in body and "to stdout" in body
    assert "\x1b[" not in body  # no colour unless the run has it


def test_showcapture_no_drops_the_sections(pytester, recorder):
    failed = _run(pytester, recorder, "--show-capture=no")[("call", "test_fail")]
    assert "Captured stdout" not in failed["longrepr"]


def test_colour_and_width_come_from_the_settings(pytester, recorder, monkeypatch):
    monkeypatch.setattr(SETTINGS, "color", True)
    monkeypatch.setattr(SETTINGS, "width", 50)
    body = _run(pytester, recorder)[("call", "test_fail")]["longrepr"]
    assert "\x1b[" in body
    separator = next(line for line in body.splitlines() if "Captured stdout call" in line)
    assert len(separator) == 50


def test_skip_xfail_and_error(pytester, recorder):
    made = _run(pytester, recorder)
    skip = made[("setup", "test_skip")] if ("call", "test_skip") not in made else made[("call", "test_skip")]
    assert skip["outcome"] == "skipped" and skip["letter"] == "s"
    assert skip["skip"][0] == "test_mod.py" and skip["skip"][2] == "Skipped: not today"
    assert skip["skip"][1] > 0
    xfail = made[("call", "test_xfail")]
    assert (xfail["category"], xfail["letter"], xfail["wasxfail"]) == ("xfailed", "x", "known")
    error = made[("setup", "test_error")]
    assert (error["outcome"], error["category"], error["letter"]) == ("failed", "error", "E")
    assert "RuntimeError: setup broke" in error["longrepr"]


def test_collect_error_and_skip_messages(pytester, recorder):
    pytester.makepyfile(test_broken="raise ImportError('nope')\n")
    pytester.makepyfile(test_skipped="import pytest\npytest.skip('module off', allow_module_level=True)\n")
    made = []

    class Collect:
        def pytest_collectreport(self, report):
            if not report.passed:
                made.append((report.outcome, reports.collect_message(report_config[0], report)))

        def pytest_configure(self, config):
            report_config[0] = config

    report_config = [None]
    pytester.runpytest_inprocess(plugins=[Collect()])
    assert ("failed", "") in made
    assert ("skipped", "test_skipped.py:2: Skipped: module off") in made


@pytest.mark.parametrize(("word", "plain"), [("PASSED", "PASSED"), (("RERUN", {"yellow": True}), "RERUN")])
def test_plain_word(word, plain):
    assert reports._plain_word(word) == plain
