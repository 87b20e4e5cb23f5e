"""shardex's pytest plugin: the Python side of the agent's worker pool.

Loaded with ``-p shardex_worker`` in processes the agent starts. Two roles:

* zygote (``SHARDEX_MODE=zygote``): runs pytest's configuration and collection once,
  reports the collected items, then forks a worker per slot on the agent's request
  (copy-on-write: imports, conftests and collection are paid once). It reaps its
  children and reports their exit status.
* worker (forked from the zygote, or ``SHARDEX_MODE=worker`` in ``--spawn`` mode where
  it collects for itself): runs the tests it is sent, one ``pytest_runtest_protocol``
  per item with the right ``nextitem``, and reports each test's reports.

Messages are JSON lines on a Unix socket to the agent (never stdout, which tests print
to). Keep in step with ``crates/core/src/protocol.rs`` (PROTOCOL_VERSION).
"""

from __future__ import annotations

import errno
import faulthandler
import io
import json
import os
import platform
import random
import select
import signal
import socket
import sys
import time
import traceback
from datetime import datetime, timezone

import pytest

PROTOCOL_VERSION = 3

_MODE = os.environ.get("SHARDEX_MODE", "")
_SOCKET = os.environ.get("SHARDEX_SOCKET", "")
_RUNDIR = os.environ.get("SHARDEX_RUNDIR", "")
_WORKER_COUNT = int(os.environ.get("SHARDEX_WORKER_COUNT", "1") or 1)
_TESTRUNUID = os.environ.get("SHARDEX_TESTRUNUID", "")
_COLOR = os.environ.get("SHARDEX_COLOR", "") == "1"
_WIDTH = int(os.environ.get("SHARDEX_WIDTH", "80") or 80)
# pytest-rerunfailures' flags as given to shardex (see RetryFlags in config.rs).
_RETRY_FLAGS = json.loads(os.environ.get("SHARDEX_RETRY") or "{}")
# JUnit testcases are built only when the agent writes a report.
_JUNIT = os.environ.get("SHARDEX_JUNIT", "1") == "1"
# --dist loadgroup: items carry their xdist_group.
_LOADGROUP = os.environ.get("SHARDEX_LOADGROUP", "") == "1"


class Channel:
    """Newline-delimited JSON over a connected Unix socket."""

    def __init__(self, path: str, hello: dict) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        # Encoded lines held back to go out with the next send (see Worker._report).
        self.held: list[bytes] = []
        self.send(hello)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: dict) -> None:
        self.hold(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        self.release()

    def hold(self, line: bytes) -> None:
        self.held.append(line)

    def release(self) -> None:
        """Sends what is held, in order, in one write."""
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            self.sock.sendall(data)

    def _pop_line(self):
        pos = self.buf.find(b"\n")
        if pos < 0:
            return None
        line, self.buf = self.buf[:pos], self.buf[pos + 1 :]
        return json.loads(line)

    def recv(self, timeout: float | None = None):
        """The next message; None on timeout. Raises EOFError when the agent is gone."""
        while True:
            msg = self._pop_line()
            if msg is not None:
                return msg
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            try:
                chunk = self.sock.recv(65536)
            except InterruptedError:
                continue
            if not chunk:
                raise EOFError
            self.buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _active() -> bool:
    return _MODE in ("zygote", "worker") and bool(_SOCKET)


# --------------------------------------------------------------------------- helpers


def _plain_word(word) -> str:
    if isinstance(word, tuple):
        return str(word[0])
    return str(word)


def _render_summary(config, rep) -> str:
    """The FAILURES/ERRORS body exactly as TerminalReporter._outrep_summary writes it."""
    from _pytest._io import TerminalWriter

    buf = io.StringIO()
    tw = TerminalWriter(file=buf)
    tw.hasmarkup = _COLOR
    tw.fullwidth = _WIDTH
    rep.toterminal(tw)
    showcapture = config.option.showcapture
    if showcapture != "no":
        for secname, content in rep.sections:
            if showcapture != "all" and showcapture not in secname:
                continue
            tw.sep("-", secname)
            if content[-1:] == "\n":
                content = content[:-1]
            tw.line(content)
    return buf.getvalue()


def _crash_message(rep):
    # As pytest's _get_line_with_reprcrash_message picks it.
    if isinstance(rep.longrepr, str):
        return rep.longrepr
    try:
        return rep.longrepr.reprcrash.message
    except AttributeError:
        return None


def _relpath(config, path) -> str:
    from pathlib import Path

    from _pytest.pathlib import bestrelpath

    try:
        return bestrelpath(config.invocation_params.dir, Path(path))
    except Exception:
        return str(path)


def _crash_line(rep) -> str:
    try:
        return str(rep.longrepr.reprcrash)
    except AttributeError:
        try:
            return str(rep.longrepr)[:50]
        except AttributeError:
            return ""


def _skip_info(config, rep):
    """(path, line, reason) as pytest's short summary folds skips; line 0 = no line."""
    if not rep.skipped or not isinstance(rep.longrepr, tuple) or len(rep.longrepr) != 3:
        return None
    path, lineno, reason = rep.longrepr
    keywords = getattr(rep, "keywords", {}) or {}
    if getattr(rep, "when", None) == "setup" and "skip" in keywords and "pytestmark" not in keywords:
        lineno = 0
    return [_relpath(config, path), int(lineno or 0), str(reason)]


def _collect_message(config, report) -> str:
    """`path:line: reason` for a collection skip; empty for an error (pytest's short
    summary shows a bare `ERROR path` for those)."""
    skip = _skip_info(config, report)
    if skip is None:
        return ""
    path, lineno, reason = skip
    return f"{path}:{lineno}: {reason}" if lineno else f"{path}: {reason}"


def _phase_report(config, rep) -> dict:
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
        out["longrepr"] = _render_summary(config, rep)
        out["head_line"] = rep.head_line or "test session"
        out["crash_message"] = _crash_message(rep)
        out["crash_line"] = _crash_line(rep)
    skip = _skip_info(config, rep)
    if skip is not None:
        out["skip"] = skip
    wasxfail = getattr(rep, "wasxfail", None)
    if wasxfail is not None:
        out["wasxfail"] = str(wasxfail)
    return out


_NO_JUNIT = {"xml": "", "passed": 0, "failures": 0, "errors": 0, "skipped": 0, "double": 0}


class JunitRecorder:
    """pytest's own junitxml machinery, fed report by report, so every <testcase> is
    exactly what ``pytest --junitxml -o junit_family=xunit1`` writes."""

    def __init__(self, config) -> None:
        from _pytest.junitxml import LogXML, xml_key

        self.logxml = LogXML(
            os.devnull,
            config.option.junitprefix,
            config.getini("junit_suite_name"),
            config.getini("junit_logging"),
            config.getini("junit_duration_report"),
            "xunit1",
            config.getini("junit_log_passing_tests"),
        )
        # record_xml_attribute / record_testsuite_property look it up here.
        config.stash[xml_key] = self.logxml
        self._mark()

    def _mark(self) -> None:
        self.start = len(self.logxml.node_reporters_ordered)
        self.stats = dict(self.logxml.stats)
        self.double = self.logxml.cnt_double_fail_tests

    def collect(self, report) -> None:
        self.logxml.pytest_collectreport(report)

    def log(self, report) -> None:
        if _JUNIT:
            self.logxml.pytest_runtest_logreport(report)

    def take(self) -> dict:
        import xml.etree.ElementTree as ET

        if not _JUNIT:
            return _NO_JUNIT

        reporters = self.logxml.node_reporters_ordered[self.start :]
        xml = "".join(ET.tostring(r.to_xml(), encoding="unicode") for r in reporters)
        stats = self.logxml.stats
        part = {
            "xml": xml,
            "passed": stats["passed"] - self.stats["passed"],
            "failures": stats["failure"] - self.stats["failure"],
            "errors": stats["error"] - self.stats["error"],
            "skipped": stats["skipped"] - self.stats["skipped"],
            "double": self.logxml.cnt_double_fail_tests - self.double,
        }
        # Keep memory flat over thousands of tests.
        del self.logxml.node_reporters_ordered[self.start :]
        self.logxml.node_reporters.clear()
        self.logxml.open_reports.clear()
        self._mark()
        return part


# --------------------------------------------------------------------------- retries
#
# shardex owns retries (pytest-rerunfailures is blocked with -p no:rerunfailures) but keeps
# its options, ini keys, marker and semantics; the helpers below follow
# pytest_rerunfailures.py (16.x). The worker judges each failed attempt here, where the
# exception object is; the agent decides where and whether the retry runs.

_RERUN_OPTIONS = (
    ("--reruns", dict(action="store", dest="reruns", type=int, default=None, help="number of times to re-run failed tests (shardex).")),
    ("--reruns-delay", dict(action="store", dest="reruns_delay", type=float, default=None, help="delay in seconds between re-runs (shardex).")),
    ("--only-rerun", dict(action="append", dest="only_rerun", type=str, default=None, help="re-run only errors matching this regex (shardex).")),
    ("--rerun-except", dict(action="append", dest="rerun_except", type=str, default=None, help="do not re-run errors matching this regex (shardex).")),
    ("--fail-on-flaky", dict(action="store_true", dest="fail_on_flaky", help="exit 7 if a test passed only on a re-run (shardex).")),
    ("--max-suite-reruns", dict(action="store", dest="max_suite_reruns", type=int, default=None, help="cap on re-runs over the run (shardex).")),
)


def pytest_addoption(parser) -> None:
    if not _active():
        return
    group = parser.getgroup("rerunfailures", "re-run failing tests (shardex)")
    for name, kwargs in _RERUN_OPTIONS:
        try:
            group._addoption(name, **kwargs)
        except ValueError:
            return  # rerunfailures was loaded anyway (e.g. by -p): its options stand
    for name, kind in (("reruns", "string"), ("reruns_delay", "string"), ("only_rerun", "linelist"), ("rerun_except", "linelist")):
        try:
            parser.addini(name, f"pytest-rerunfailures' {name} (shardex)", type=kind)
        except ValueError:
            pass


def _apply_retry_flags(config) -> None:
    """The flags shardex consumed from its command line join pytest's own (addopts)."""
    option = config.option
    for name in ("reruns", "reruns_delay", "max_suite_reruns"):
        if _RETRY_FLAGS.get(name) is not None:
            setattr(option, name, _RETRY_FLAGS[name])
    for name in ("only_rerun", "rerun_except"):
        if _RETRY_FLAGS.get(name):
            setattr(option, name, list(getattr(option, name, None) or []) + list(_RETRY_FLAGS[name]))
    if _RETRY_FLAGS.get("fail_on_flaky"):
        option.fail_on_flaky = True
    config.addinivalue_line(
        "markers",
        "flaky(reruns=1, reruns_delay=0, condition=True, only_rerun=None, rerun_except=None): "
        "re-run the test when it fails (shardex, pytest-rerunfailures compatible).",
    )
    import re

    for name in ("only_rerun", "rerun_except"):
        for pattern in getattr(option, name, None) or _getini(config, name) or []:
            try:
                re.compile(pattern)
            except re.error as error:
                raise pytest.UsageError(f"invalid regular expression for {name}: {pattern!r} ({error})") from error


def _rerunfailures_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("pytest_rerunfailures") is not None
    except (ImportError, ValueError):
        return False


def _getini(config, name):
    try:
        return config.getini(name)
    except ValueError:
        return None


def _global_reruns(config):
    reruns = getattr(config.option, "reruns", None)
    if reruns is not None:
        return reruns
    try:
        return int(_getini(config, "reruns"))
    except (TypeError, ValueError):
        return None


def _global_delay(config) -> float:
    delay = getattr(config.option, "reruns_delay", None)
    if delay is None:
        try:
            delay = float(_getini(config, "reruns_delay"))
        except (TypeError, ValueError):
            delay = 0.0
    return max(float(delay), 0.0)


def _flaky_marker(item):
    return item.get_closest_marker("flaky")


def _reruns_count(item) -> int:
    marker = _flaky_marker(item)
    if marker is not None:
        if "reruns" in marker.kwargs:
            return int(marker.kwargs["reruns"])
        if marker.args:
            return int(marker.args[0])
        return 1
    return int(_global_reruns(item.config) or 0)


def _reruns_delay(item) -> float:
    marker = _flaky_marker(item)
    if marker is None:
        return _global_delay(item.config)
    if "reruns_delay" in marker.kwargs:
        return max(float(marker.kwargs["reruns_delay"]), 0.0)
    if len(marker.args) > 1:
        return max(float(marker.args[1]), 0.0)
    return 0.0


def _filter_list(item, name):
    marker = _flaky_marker(item)
    if marker is not None and name in marker.kwargs:
        value = marker.kwargs[name]
        if isinstance(value, str) or (isinstance(value, type) and issubclass(value, BaseException)):
            value = [value]
        return list(value or [])
    value = getattr(item.config.option, name, None)
    if value is None:
        value = _getini(item.config, name)
    return list(value or [])


def _exception_chain(exc, follow_context):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif follow_context and not getattr(exc, "__suppress_context__", False):
            exc = exc.__context__
        else:
            exc = None


def _matches(patterns, excinfo, follow_context) -> bool:
    import re

    if not excinfo:
        return False
    for exc in _exception_chain(excinfo.value, follow_context):
        err = f"{type(exc).__name__}: {exc}"
        for pattern in patterns:
            if isinstance(pattern, type) and issubclass(pattern, BaseException):
                if isinstance(exc, pattern):
                    return True
            elif re.search(pattern, err):
                return True
    return False


def _hard_fail_on_error(item, report, excinfo) -> bool:
    """rerunfailures' _should_hard_fail_on_error: the filter excludes this failure."""
    if report.outcome != "failed":
        return False
    only = _filter_list(item, "only_rerun")
    except_ = _filter_list(item, "rerun_except")
    if not only and not except_:
        return False
    if only and not except_:
        return not _matches(only, excinfo, True)
    if except_ and not only:
        return _matches(except_, excinfo, False)
    return (not _matches(only, excinfo, True)) or _matches(except_, excinfo, False)


def _evaluate_condition(item, marker, condition, excinfo) -> bool:
    """rerunfailures' evaluate_condition (bool, string to eval, or callable)."""
    import inspect

    error = excinfo.value if excinfo is not None else None
    try:
        if callable(condition):
            try:
                signature = inspect.signature(condition)
                try:
                    signature.bind(error)
                    return bool(condition(error))
                except TypeError:
                    return bool(condition())
            except (TypeError, ValueError):
                return bool(condition(error))
        if isinstance(condition, str):
            globals_ = {"os": os, "sys": sys, "platform": platform, "config": item.config}
            if hasattr(item, "obj"):
                globals_.update(item.obj.__globals__)
            globals_["error"] = error
            return bool(eval(compile(condition, f"<{marker.name} condition>", "eval"), globals_))  # noqa: S307
        return bool(condition)
    except Exception:
        return False


def _condition_holds(item, failed_reports, excinfos) -> bool:
    marker = _flaky_marker(item)
    if marker is None or "condition" not in marker.kwargs:
        return True
    condition = marker.kwargs["condition"]
    return any(_evaluate_condition(item, marker, condition, excinfos.get(r.when)) for r in failed_reports)


def _retry_verdict(item, raw_reports):
    failed = [r for r in raw_reports if r.failed]
    if not failed:
        return None
    excinfos = getattr(item, "_shardex_excinfo", {}) or {}
    reruns = _reruns_count(item)
    eligible = (
        reruns > 0
        and not any(hasattr(r, "wasxfail") for r in raw_reports)
        and not any(_hard_fail_on_error(item, r, excinfos.get(r.when)) for r in failed)
        and _condition_holds(item, failed, excinfos)
    )
    if eligible:
        _forget_failed_state(item)
    item._shardex_excinfo = {}
    return {"eligible": eligible, "reruns": reruns, "delay": _reruns_delay(item)}


def _forget_failed_state(item) -> None:
    """What rerunfailures clears before a rerun: failed fixtures' cached errors (pytest
    would re-raise them) and the test class instance (state on self)."""
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixture_def in defs:
            cached = getattr(fixture_def, "cached_result", None)
            if cached is not None and cached[2]:
                fixture_def.cached_result = None
                if hasattr(fixture_def, "_finalizers"):
                    fixture_def._finalizers.clear()
    if getattr(item, "_instance", None) is not None:
        del item._instance
        item._obj = None


def _retry_rules(item, marker) -> dict:
    """The marker's rules, for failures judged by the agent (crash, timeout)."""
    def split(name):
        values = _filter_list(item, name)
        return (
            [v for v in values if isinstance(v, str)],
            [v.__name__ for v in values if isinstance(v, type)],
        )

    only, only_classes = split("only_rerun")
    except_, except_classes = split("rerun_except")
    condition = True
    if "condition" in marker.kwargs and not callable(marker.kwargs["condition"]):
        condition = _evaluate_condition(item, marker, marker.kwargs["condition"], None)
    return {
        "reruns": _reruns_count(item),
        "delay": _reruns_delay(item),
        "only_rerun": only,
        "only_rerun_classes": only_classes,
        "rerun_except": except_,
        "rerun_except_classes": except_classes,
        "condition": condition,
    }


def _session_retry_rules(config) -> dict:
    only = list(getattr(config.option, "only_rerun", None) or _getini(config, "only_rerun") or [])
    except_ = list(getattr(config.option, "rerun_except", None) or _getini(config, "rerun_except") or [])
    return {
        "reruns": int(_global_reruns(config) or 0),
        "delay": _global_delay(config),
        "only_rerun": only,
        "only_rerun_classes": [],
        "rerun_except": except_,
        "rerun_except_classes": [],
        "condition": True,
    }


# --------------------------------------------------------------------------- plugin


class ShardexPlugin:
    def __init__(self, config) -> None:
        self.config = config
        self.channel: Channel | None = None
        self.junit: JunitRecorder | None = None
        self.deselected = 0
        self.collect_errors = 0
        self.reports: list = []
        self.raw_reports: list = []
        self.warnings_when_idle: list = []
        self.session = None

    # -- configuration -------------------------------------------------------

    def start(self) -> None:
        role = "zygote" if _MODE == "zygote" else "worker"
        slot = os.environ.get("PYTEST_XDIST_WORKER") if role == "worker" else None
        self.channel = Channel(
            _SOCKET, {"t": "hello", "v": PROTOCOL_VERSION, "role": role, "slot": slot, "pid": os.getpid()}
        )
        # The agent owns -x/--maxfail across workers; a worker must not stop by itself.
        self.maxfail = self.config.option.maxfail
        self.config.option.maxfail = 0
        _apply_retry_flags(self.config)
        self._mute_terminal()
        self.junit = JunitRecorder(self.config)
        if role == "worker":
            capman = self.config.pluginmanager.getplugin("capturemanager")
            if capman is not None and capman.is_globally_capturing():
                capman.stop_global_capturing()
                _restart_capture_into_rundir(capman, slot or "gw0")
            # --spawn: workers collect for themselves; give each its own basetemp (as
            # xdist's popen-gwN) so numbered-dir clean-up never removes a sibling's.
            _set_worker_basetemp(self.config, slot or "gw0", self.config.option.basetemp or _spawn_basetemp_root())

    def _mute_terminal(self) -> None:
        # The agent renders the terminal output; pytest's own reporter in these processes
        # writes to nowhere (stdout stays free for tests' prints under -s).
        from _pytest._io import TerminalWriter

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr._tw = TerminalWriter(file=open(os.devnull, "w"))

    def session_info(self) -> dict:
        from _pytest.terminal import getreportopt
        import pluggy

        config = self.config
        verinfo = platform.python_version()
        line = f"platform {sys.platform} -- Python {verinfo}"
        line += f", pytest-{pytest.__version__}, pluggy-{pluggy.__version__}"
        if config.get_verbosity() > 0:
            line += f" -- {sys.executable}"
        header = [line]
        try:
            results = config.hook.pytest_report_header(config=config, start_path=config.invocation_params.dir)
        except Exception:
            results = []
        for item in reversed(results):
            if isinstance(item, str):
                header.append(item)
            else:
                header.extend(item)
        return {
            "t": "session",
            "rootdir": str(config.rootpath),
            "header": header,
            "suite_name": config.getini("junit_suite_name"),
            "hostname": platform.node(),
            "timestamp": datetime.now(timezone.utc).astimezone().isoformat(),
            "tbstyle": config.option.tbstyle,
            "reportchars": getreportopt(config),
            "verbosity": config.get_verbosity(),
            "maxfail": int(self.maxfail or 0),
            "continue_on_collection_errors": bool(config.option.continue_on_collection_errors),
            "collectonly": bool(config.option.collectonly),
            "retry": _session_retry_rules(config),
            "fail_on_flaky": bool(getattr(config.option, "fail_on_flaky", False)),
            "max_suite_reruns": getattr(config.option, "max_suite_reruns", None),
            "rerunfailures_installed": _rerunfailures_installed(),
            "durations": config.option.durations,
            "durations_min": config.option.durations_min,
        }

    # -- hooks ---------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session) -> None:
        self.session = session
        self.channel.send(self.session_info())

    def pytest_deselected(self, items) -> None:
        self.deselected += len(items)

    def pytest_collectreport(self, report) -> None:
        if report.passed:
            return
        if report.failed:
            self.collect_errors += 1
        self.junit.collect(report)
        part = self.junit.take()
        self.channel.send(
            {
                "t": "collect_report",
                "nodeid": report.nodeid,
                "outcome": report.outcome,
                "longrepr": _render_summary(self.config, report) if report.failed else str(report.longrepr),
                "message": _collect_message(self.config, report),
                "junit": part,
            }
        )

    def pytest_warning_recorded(self, warning_message, when, nodeid, location) -> None:
        from _pytest.warnings import warning_record_to_str

        if not nodeid and location:
            from _pytest.pathlib import absolutepath, bestrelpath

            filename, linenum = location[0], location[1]
            try:
                rel = bestrelpath(self.config.invocation_params.dir, absolutepath(filename))
            except Exception:
                rel = filename
            nodeid = f"{rel}:{linenum}"
        if self.channel is None:
            return
        self.channel.send({"t": "warning", "nodeid": nodeid or "", "message": warning_record_to_str(warning_message)})

    def pytest_runtest_logreport(self, report) -> None:
        self.reports.append(_phase_report(self.config, report))
        self.raw_reports.append(report)
        self.junit.log(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        # Keep each phase's exception: the retry filter matches the exception chain.
        if report.when == "setup" or not hasattr(item, "_shardex_excinfo"):
            item._shardex_excinfo = {}
        if call.excinfo is not None:
            item._shardex_excinfo[report.when] = call.excinfo

    def pytest_internalerror(self, excrepr, excinfo) -> None:
        if self.channel is not None:
            try:
                self.channel.send({"t": "fatal", "message": str(excrepr)})
            except OSError:
                pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config) -> None:
        # Our LogXML was never registered as a plugin; junitxml's unconfigure would try to
        # unregister it.
        from _pytest.junitxml import xml_key

        if config.stash.get(xml_key, None) is (self.junit.logxml if self.junit else None):
            try:
                del config.stash[xml_key]
            except KeyError:
                pass

    # The zygote's terminal summary: what plugins write there (pytest-cov's report) goes to
    # the agent. This (tryfirst) and the module's pytest_terminal_summary (trylast) bracket
    # the plugins' implementations, inside pytest's own (muted) sections.
    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if _MODE != "zygote":
            return
        from _pytest._io import TerminalWriter

        self.summary_buffer = io.StringIO()
        self.muted_writer = terminalreporter._tw
        writer = TerminalWriter(file=self.summary_buffer)
        writer.hasmarkup = _COLOR
        writer.fullwidth = _WIDTH
        terminalreporter._tw = writer

    def end_summary_capture(self, terminalreporter) -> None:
        buffer = getattr(self, "summary_buffer", None)
        if buffer is None:
            return
        terminalreporter._tw = self.muted_writer
        self.summary_buffer = None
        text = buffer.getvalue()
        failure = _coverage_failure(self.config)
        if text.strip() or failure:
            try:
                self.channel.send({"t": "plugin_summary", "text": text, "failure": failure})
            except OSError:
                pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        items = session.items
        interrupted = session.testsfailed and not session.config.option.continue_on_collection_errors
        self.channel.send(
            {
                "t": "collected",
                "items": [] if interrupted else [_item_info(item) for item in items],
                "deselected": self.deselected,
                "errors": self.collect_errors,
                "report_lines": _collectionfinish_lines(session),
            }
        )
        if interrupted or session.config.option.collectonly:
            return None  # pytest's own loop raises Interrupted / returns for --collect-only
        if _MODE == "zygote":
            Zygote(self, session).serve()
        else:
            self.become_worker(os.environ.get("PYTEST_XDIST_WORKER", "gw0"), forked=False)
            Worker(self, session).serve()
        return True

    # -- worker set-up -------------------------------------------------------

    def become_worker(self, slot: str, forked: bool) -> None:
        config = self.config
        os.environ["PYTEST_XDIST_WORKER"] = slot
        os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(_WORKER_COUNT)
        os.environ["PYTEST_XDIST_TESTRUNUID"] = _TESTRUNUID
        # What pytest-django (and xdist's worker_id/testrun_uid fixtures) read: each slot
        # gets its own test DB, test_<name>_gwN, reused by --reuse-db across runs.
        config.workerinput = {
            "workerid": slot,
            "workercount": _WORKER_COUNT,
            "testrunuid": _TESTRUNUID,
            "mainargv": list(sys.argv),
        }
        config.workeroutput = {}
        if forked:
            self._reset_after_fork(slot)
            self.channel = Channel(
                _SOCKET, {"t": "hello", "v": PROTOCOL_VERSION, "role": "worker", "slot": slot, "pid": os.getpid()}
            )

    def _reset_after_fork(self, slot: str) -> None:
        config = self.config
        random.seed()
        # Per-worker stderr (crash tails) with capture restarted on fresh temp files:
        # the zygote's capture files must not be shared between workers.
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.stop_global_capturing()
        if _RUNDIR:
            fd = os.open(os.path.join(_RUNDIR, f"{slot}.err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            os.close(fd)
        # faulthandler keeps a file descriptor number: give it its own copy, since fd 2 is
        # swapped for a capture file while tests run. Its traceback is the crash tail.
        try:
            self._fault_fd = os.dup(2)
            faulthandler.enable(file=self._fault_fd, all_threads=True)
        except Exception:
            pass
        _restart_capture_into_rundir(capman, slot)
        # Each worker gets its own basetemp under the run's, as xdist does (popen-gwN).
        if _ZYGOTE_BASETEMP is not None:
            _set_worker_basetemp(config, slot, _ZYGOTE_BASETEMP)


def _restart_capture_into_rundir(capman, slot: str) -> None:
    """Starts pytest's global capture again on named files in the run folder (pytest uses
    anonymous temp files): if the worker dies mid-test, the agent reads what the test
    printed before it died from there."""
    if capman is None:
        return
    import _pytest.capture as capture_module

    counter = iter(range(1_000_000))

    def named_tempfile(*args, **kwargs):
        if not _RUNDIR:
            return original(*args, **kwargs)
        path = os.path.join(_RUNDIR, f"{slot}.capture{next(counter)}")
        return open(path, "w+b", buffering=0)

    original = capture_module.TemporaryFile
    capture_module.TemporaryFile = named_tempfile
    try:
        capman.start_global_capturing()
    finally:
        capture_module.TemporaryFile = original
    capman.suspend_global_capture()


def _spawn_basetemp_root() -> str:
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return os.path.join(tempfile.gettempdir(), f"pytest-of-{user}", f"shardex-{_TESTRUNUID or os.getpid()}")


def _set_worker_basetemp(config, slot: str, root: str) -> None:
    if getattr(config, "_tmp_path_factory", None) is None:
        return
    from _pytest.tmpdir import TempPathFactory

    os.makedirs(root, mode=0o700, exist_ok=True)
    config.option.basetemp = os.path.join(root, f"popen-{slot}")
    config._tmp_path_factory = TempPathFactory.from_config(config, _ispytest=True)


_ZYGOTE_BASETEMP: str | None = None


def _item_info(item) -> dict:
    path, lineno, _ = item.location
    info = {"id": item.nodeid, "file": path.replace(os.sep, "/"), "line": lineno}
    marker = _flaky_marker(item)
    if marker is not None:
        info["retry"] = _retry_rules(item, marker)
    if _LOADGROUP:
        # pytest-xdist's name for the group (its WorkerInteractor, --dist loadgroup).
        group = item.get_closest_marker("xdist_group")
        if group is not None:
            info["group"] = str(group.args[0] if group.args else group.kwargs.get("name", "default"))
    return info


class Zygote:
    """Forks workers on request; reports their deaths."""

    def __init__(self, plugin: ShardexPlugin, session) -> None:
        self.plugin = plugin
        self.session = session
        self.children: dict[int, str] = {}

    def serve(self) -> None:
        global _ZYGOTE_BASETEMP
        plugin = self.plugin
        channel = plugin.channel
        config = plugin.config
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:
            _ZYGOTE_BASETEMP = str(factory.getbasetemp())
        _close_django_connections()
        # Objects that exist now are never collected in the workers: keeping the GC away
        # from them keeps their pages shared (no copy-on-write from GC bookkeeping).
        import gc

        gc.collect()
        gc.freeze()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while True:
                self._reap()
                try:
                    ready, _, _ = select.select([channel.sock, wake_r], [], [], 1.0)
                except InterruptedError:
                    continue
                if wake_r in ready:
                    try:
                        os.read(wake_r, 4096)
                    except OSError:
                        pass
                if channel.sock in ready or channel.buf:
                    try:
                        msg = channel.recv(timeout=0)
                    except EOFError:
                        break
                    while msg is not None:
                        if msg["t"] == "fork":
                            self._fork(msg["slot"], wake_r, wake_w)
                        elif msg["t"] == "results":
                            _update_lastfailed(config, msg["failed"], msg["passed"])
                        elif msg["t"] == "exit":
                            return
                        msg = channel._pop_line()
        finally:
            signal.set_wakeup_fd(-1)
            for pid in list(self.children):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except OSError:
                    pass

    def _fork(self, slot: str, wake_r: int, wake_w: int) -> None:
        plugin = self.plugin
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                plugin.channel.close()
                plugin.become_worker(slot, forked=True)
                cov = _coverage_in_fork(plugin.config)
                Worker(plugin, self.session).serve()
                _save_coverage(cov)
            except BaseException:
                code = 70
                try:
                    traceback.print_exc()
                    sys.stderr.flush()
                except Exception:
                    pass
            finally:
                os._exit(code)
        try:
            os.setpgid(pid, pid)  # both sides set it: no window where a killpg misses
        except OSError:
            pass
        self.children[pid] = slot
        plugin.channel.send({"t": "forked", "slot": slot, "pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            self.plugin.channel.send({"t": "exited", "slot": slot, "pid": pid, "code": code, "signal": sig})


# --------------------------------------------------------------------------- pytest-cov
#
# pytest-cov (`--cov`) starts measuring in the zygote, before collection, and reports at the
# zygote's end (`Central`: stop, save, combine every parallel data file, report). A fork
# would go on measuring into the zygote's objects and never save: each worker starts its own
# Coverage instead, saved as a parallel data file beside the zygote's when it ends, which
# that combine takes in (what coverage's own `patch = fork` does). The zygote then sends the
# terminal report its plugins write (see `pytest_terminal_summary` below).


def _cov_controller(config):
    plugin = config.pluginmanager.get_plugin("_cov")
    if plugin is None or getattr(plugin, "_disabled", False):
        return None
    return getattr(plugin, "cov_controller", None)


def _coverage_in_fork(config):
    controller = _cov_controller(config)
    parent = getattr(controller, "cov", None)
    combining = getattr(controller, "combining_cov", None)
    if parent is None or combining is None:
        return None
    try:
        import coverage

        parent.stop()
        child = coverage.Coverage(
            source=controller.cov_source,
            branch=controller.cov_branch,
            data_suffix=True,
            # Absolute, fixed when the zygote started: the combine looks beside it.
            data_file=combining.config.data_file,
            config_file=controller.cov_config,
        )
        child.start()
        # pytest-cov's pause/resume (`no_cover`) and contexts act on the controller's object.
        controller.cov = child
        return child
    except Exception:
        traceback.print_exc()
        return None


def _save_coverage(cov) -> None:
    if cov is None:
        return
    try:
        cov.stop()
        cov.save()
    except Exception:
        traceback.print_exc()


def _coverage_failure(config):
    """pytest-cov's `--cov-fail-under` verdict in this (the zygote's) session, as the
    message it prints; None when coverage passed or is not measured."""
    plugin = config.pluginmanager.get_plugin("_cov")
    total = getattr(plugin, "cov_total", None)
    options = getattr(plugin, "options", None)
    fail_under = getattr(options, "cov_fail_under", None)
    if total is None or fail_under is None or getattr(options, "collectonly", False):
        return None
    try:
        from coverage.results import display_covered, should_fail_under

        precision = options.cov_precision
        if not should_fail_under(total, fail_under, precision):
            return None
        return "Coverage failure: total of {total} is less than fail-under={fail_under:.{p}f}".format(
            total=display_covered(total, precision), fail_under=fail_under, p=precision
        )
    except Exception:
        return None


def _collectionfinish_lines(session) -> list:
    """The lines pytest's terminal reporter prints after "collected N items" (its
    `pytest_collection_finish`), flattened in its order."""
    config = session.config
    try:
        results = config.hook.pytest_report_collectionfinish(
            config=config, start_path=config.invocation_params.dir, items=session.items
        )
    except Exception:
        return []
    lines = []
    for line_or_lines in reversed(results):
        if isinstance(line_or_lines, str):
            lines.append(line_or_lines)
        else:
            lines.extend(str(line) for line in line_or_lines)
    return lines


def _update_lastfailed(config, failed, passed):
    """What pytest's cache plugin would have recorded had the tests run in this process
    (its `pytest_runtest_logreport`): the session-finish of the zygote then writes
    `cache/lastfailed`, so `--lf`/`--ff` work on the next run as with plain pytest.
    Returns the updated dict (None without the cache plugin)."""
    lfplugin = config.pluginmanager.get_plugin("lfplugin")
    lastfailed = getattr(lfplugin, "lastfailed", None)
    if lastfailed is None:
        return None
    # Keys may be pytest's NodeId objects: as its session-finish does, keep strings.
    lastfailed = {str(nodeid): value for nodeid, value in lastfailed.items()}
    for nodeid in passed:
        lastfailed.pop(nodeid, None)
    for nodeid in failed:
        lastfailed[nodeid] = True
    lfplugin.lastfailed = lastfailed
    return lastfailed


def _close_django_connections() -> None:
    # A DB connection must not cross a fork (two processes on one socket).
    django_db = sys.modules.get("django.db")
    if django_db is not None:
        try:
            django_db.connections.close_all()
        except Exception:
            pass


# Results of passing tests shorter than this are held back and sent together (one write
# and one agent wake-up for several tests), for at most _HOLD_SECS.
_QUICK_SECS = 0.001
_HOLD_SECS = 0.02
_HOLD_MAX = 128


# The reports of a plain pass, as `_phase_report` makes them (durations aside): sent in
# the short form `TestDone.pass` (see protocol.rs).
_PLAIN_PASS = (
    ("setup", "passed", "", "", ""),
    ("call", "passed", "passed", ".", "PASSED"),
    ("teardown", "passed", "", "", ""),
)


def _is_plain_pass(reports) -> bool:
    if len(reports) != 3:
        return False
    for report, want in zip(reports, _PLAIN_PASS):
        if len(report) != 6 or (report["when"], report["outcome"], report["category"], report["letter"], report["word"]) != want:
            return False
    return True


class Worker:
    """Runs the tests the agent sends, keeping pytest's nextitem semantics."""

    def __init__(self, plugin: ShardexPlugin, session) -> None:
        self.plugin = plugin
        self.session = session
        self.items = {item.nodeid: item for item in session.items}
        self.queue: list[str] = []
        self.flushed = False
        self.exiting = False
        self.reported_any = False
        self.held_since = 0.0
        # Tests that may take a while: what is held back goes out before one starts.
        self.slow: set[str] = set()
        # Every result is appended here before it is sent or held: if this process dies
        # with results held back, the agent reads them from this file (and so knows which
        # test the process died in).
        self.spool = -1
        slot = os.environ.get("PYTEST_XDIST_WORKER", "")
        if _RUNDIR and slot:
            path = os.path.join(_RUNDIR, f"{slot}.results")
            self.spool = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def _report(self, done: dict, passed: bool) -> None:
        channel = self.plugin.channel
        line = json.dumps(done, separators=(",", ":")).encode() + b"\n"
        if self.spool >= 0:
            os.write(self.spool, line)
        if not channel.held:
            self.held_since = time.perf_counter()
        channel.hold(line)
        # Anything that may stop the run (-x) or needs a retry goes out at once, as does
        # the first result (time to first result) and anything when the queue runs low
        # (the agent refills on results).
        hold = (
            passed
            and self.reported_any
            and self.spool >= 0
            and done["duration"] < _QUICK_SECS
            and len(channel.held) < _HOLD_MAX
            and len(self.queue) > 2
            and time.perf_counter() - self.held_since < _HOLD_SECS
        )
        self.reported_any = True
        if not hold:
            channel.release()

    def _handle(self, msg) -> None:
        t = msg["t"]
        if t == "run":
            ids = msg["ids"]
            self.queue.extend(ids)
            for index in msg.get("slow", ()):
                self.slow.add(ids[index])
            self.flushed = False
        elif t == "flush":
            self.flushed = True
        elif t == "results":
            # --spawn (no zygote): this worker writes pytest's cache for the run; its own
            # session-finish would not (it is an xdist-like worker).
            config = self.plugin.config
            lastfailed = _update_lastfailed(config, msg["failed"], msg["passed"])
            if lastfailed is not None and getattr(config, "cache", None) is not None:
                config.cache.set("cache/lastfailed", lastfailed)
        elif t == "exit":
            self.exiting = True

    def _drain(self, block: bool) -> None:
        channel = self.plugin.channel
        if block:
            channel.release()
        msg = channel.recv(timeout=None if block else 0)
        while msg is not None:
            self._handle(msg)
            msg = channel._pop_line()

    def serve(self) -> None:
        # SHARDEX_PROFILE=DIR: a cProfile of each worker's loop, for working on overhead.
        profile_dir = os.environ.get("SHARDEX_PROFILE")
        if not profile_dir:
            return self._serve()
        import cProfile

        profiler = cProfile.Profile()
        try:
            profiler.runcall(self._serve)
        finally:
            profiler.dump_stats(os.path.join(profile_dir, f"{os.environ.get('PYTEST_XDIST_WORKER')}-{os.getpid()}.prof"))

    def _serve(self) -> None:
        plugin = self.plugin
        channel = plugin.channel
        session = self.session
        try:
            while not self.exiting:
                while not self.queue and not self.exiting:
                    self._drain(block=True)
                if self.exiting:
                    break
                nodeid = self.queue.pop(0)
                # nextitem decides which fixtures teardown keeps: wait until the next test
                # is known, or the agent says there is none for now.
                while not self.queue and not self.flushed and not self.exiting:
                    self._drain(block=True)
                if nodeid in self.slow:
                    self.slow.discard(nodeid)
                    channel.release()
                item = self.items.get(nodeid)
                if item is None:
                    channel.send({"t": "fatal", "message": f"worker was sent an unknown test id: {nodeid}"})
                    continue
                nextitem = None
                if self.queue and not self.exiting:
                    nextitem = self.items.get(self.queue[0])
                plugin.reports = []
                plugin.raw_reports = []
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                reports = plugin.reports
                duration = sum(r["duration"] for r in reports)
                done = {"t": "done", "id": nodeid, "duration": duration}
                if _is_plain_pass(reports):
                    done["pass"] = [r["duration"] for r in reports]
                else:
                    done["reports"] = reports
                junit = plugin.junit.take()
                if junit is not _NO_JUNIT:
                    done["junit"] = junit
                verdict = _retry_verdict(item, plugin.raw_reports)
                if verdict is not None:
                    done["retry"] = verdict
                passed = verdict is None and all(r["outcome"] != "failed" for r in plugin.reports)
                self._report(done, passed)
                self._drain(block=False)
        except EOFError:
            pass
        finally:
            try:
                channel.release()
            except OSError:
                pass
            # Tear down whatever a last test with a nextitem left set up.
            try:
                session._setupstate.teardown_exact(None)
            except Exception:
                pass


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # --spawn: each worker is a whole pytest session, and pytest-cov would start measuring
    # in each and race on the same data file (sqlite errors). No zygote combines their
    # data either: coverage is not measured under --spawn (as with pytest-cov's --no-cov).
    if _MODE == "worker":
        early_config.known_args_namespace.no_cov = True
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    plugin = terminalreporter.config.pluginmanager.get_plugin("shardex-plugin")
    if plugin is not None:
        plugin.end_summary_capture(terminalreporter)


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    # trylast: after the terminal reporter registered itself, so it can be muted before
    # it prints the session header.
    if _active():
        plugin = ShardexPlugin(config)
        config.pluginmanager.register(plugin, "shardex-plugin")
        plugin.start()
