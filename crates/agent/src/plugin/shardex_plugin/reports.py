"""pytest reports turned into what the agent's terminal and summaries need (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import io
from pathlib import Path

from . import internals
from .settings import SETTINGS


def _plain_word(word) -> str:
    if isinstance(word, tuple):
        return str(word[0])
    return str(word)


def render_summary(config, rep) -> str:
    """The FAILURES/ERRORS body exactly as TerminalReporter._outrep_summary writes it."""
    buf = io.StringIO()
    tw = internals.terminal_writer(buf, SETTINGS.color, SETTINGS.width)
    rep.toterminal(tw)
    showcapture = config.option.showcapture
    if showcapture != "no":
        for secname, content in rep.sections:
            if showcapture != "all" and showcapture not in secname:
                continue
            tw.sep("-", secname)
            tw.line(content[:-1] if content[-1:] == "\n" else content)
    return buf.getvalue()


def crash_message(rep):
    # As pytest's _get_line_with_reprcrash_message picks it.
    if isinstance(rep.longrepr, str):
        return rep.longrepr
    try:
        return rep.longrepr.reprcrash.message
    except AttributeError:
        return None


def relpath(config, path) -> str:
    try:
        return internals.bestrelpath(config.invocation_params.dir, Path(path))
    except Exception:
        return str(path)


def crash_line(rep) -> str:
    try:
        return str(rep.longrepr.reprcrash)
    except AttributeError:
        try:
            return str(rep.longrepr)[:50]
        except AttributeError:
            return ""


def skip_info(config, rep):
    """(path, line, reason) as pytest's short summary folds skips; line 0 = no line."""
    if not rep.skipped or not isinstance(rep.longrepr, tuple) or len(rep.longrepr) != 3:
        return None
    path, lineno, reason = rep.longrepr
    keywords = getattr(rep, "keywords", {}) or {}
    if getattr(rep, "when", None) == "setup" and "skip" in keywords and "pytestmark" not in keywords:
        lineno = 0
    return [relpath(config, path), int(lineno or 0), str(reason)]


def collect_message(config, report) -> str:
    """`path:line: reason` for a collection skip; empty for an error (pytest's short
    summary shows a bare `ERROR path` for those)."""
    skip = skip_info(config, report)
    if skip is None:
        return ""
    path, lineno, reason = skip
    return f"{path}:{lineno}: {reason}" if lineno else f"{path}: {reason}"


def phase_report(config, rep) -> dict:
    category, letter, word = config.hook.pytest_report_teststatus(report=rep, config=config)
    out = {
        "when": rep.when,
        "outcome": rep.outcome,
        "category": category or "",
        "letter": letter or "",
        "word": _plain_word(word),
        "duration": float(getattr(rep, "duration", 0.0) or 0.0),
    }
    if rep.failed:
        out["longrepr"] = render_summary(config, rep)
        out["head_line"] = rep.head_line or "test session"
        out["crash_message"] = crash_message(rep)
        out["crash_line"] = crash_line(rep)
    skip = skip_info(config, rep)
    if skip is not None:
        out["skip"] = skip
    wasxfail = getattr(rep, "wasxfail", None)
    if wasxfail is not None:
        out["wasxfail"] = str(wasxfail)
    return out


# The reports of a plain pass, as `phase_report` makes them (durations aside): sent in
# the short form `TestDone.pass` (see protocol.rs).
_PLAIN_PASS = (
    ("setup", "passed", "", "", ""),
    ("call", "passed", "passed", ".", "PASSED"),
    ("teardown", "passed", "", "", ""),
)


def is_plain_pass(reports) -> bool:
    if len(reports) != 3:
        return False
    for report, want in zip(reports, _PLAIN_PASS):
        if len(report) != 6:
            return False
        if (report["when"], report["outcome"], report["category"], report["letter"], report["word"]) != want:
            return False
    return True
