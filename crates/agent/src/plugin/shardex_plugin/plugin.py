"""The plugin object registered in each process the agent starts (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import io
import os
import platform
import sys
from datetime import datetime, timezone

import pluggy
import pytest

from . import consumed, internals, retries
from .channel import Channel, connect
from .controller import forget_xdist_look, look_like_xdist
from .cov import coverage_failure
from .early_stop import announce_hard_failure
from .ending import plugin_notes
from .junit import JunitRecorder
from .relay import demote
from .reports import collect_message, phase_report, render_summary
from .settings import LAUNCH, SETTINGS
from .worker import Worker, become_worker, restart_capture_into_rundir, set_worker_basetemp, spawn_basetemp_root
from .zygote import Zygote, collectionfinish_lines, failed_before, item_info


class ShardexPlugin:
    def __init__(self, config) -> None:
        self.config = config
        self.channel: Channel | None = None
        self.junit: JunitRecorder | None = None
        self.deselected = 0
        self.collect_errors = 0
        self.reports: list = []
        self.raw_reports: list = []
        self.session = None
        self.summary_buffer = None
        self.muted_writer = None
        # The zygote's xdist-controller role (controller.py), while it serves forks.
        self.controller = None
        self.worker = None  # the Worker, in a worker process
        self.controller_end = None

    # -- configuration -------------------------------------------------------

    def start(self) -> None:
        role = "zygote" if LAUNCH.mode == "zygote" else "worker"
        slot = os.environ.get("PYTEST_XDIST_WORKER") if role == "worker" else None
        self.channel = connect(role, slot)
        # The agent owns -x/--maxfail across workers; a worker must not stop by itself.
        self.maxfail = self.config.option.maxfail
        self.config.option.maxfail = 0
        look_like_xdist(self.config)  # again, now that the worker count is known
        retries.apply_retry_flags(self.config)
        # The agent renders the terminal output; pytest's own reporter in these processes
        # writes to nowhere (stdout stays free for tests' prints under -s).
        internals.mute_reporter(self.config)
        # --junitxml / -n / --timeout that reached pytest through addopts (consumed.py).
        consumed.take_junitxml(self.config)
        consumed.take_timeouts(self.config)
        self.junit = JunitRecorder(self.config)
        if role == "worker":
            capman = internals.capture_manager(self.config)
            if internals.is_globally_capturing(capman):
                internals.stop_global_capture(capman)
                restart_capture_into_rundir(capman, slot or "gw0")
            # --spawn: workers collect for themselves; give each its own basetemp (as
            # xdist's popen-gwN) so numbered-dir clean-up never removes a sibling's.
            set_worker_basetemp(self.config, slot or "gw0", self.config.option.basetemp or spawn_basetemp_root())

    def session_info(self) -> dict:
        config = self.config
        verbosity = internals.verbosity(config)
        line = f"platform {sys.platform} -- Python {platform.python_version()}"
        line += f", pytest-{pytest.__version__}, pluggy-{pluggy.__version__}"
        if verbosity > 0:
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
            "reportchars": internals.getreportopt(config),
            "verbosity": verbosity,
            "maxfail": int(self.maxfail or 0),
            "continue_on_collection_errors": bool(config.option.continue_on_collection_errors),
            "collectonly": bool(config.option.collectonly),
            "retry": retries.session_retry_rules(config),
            "fail_on_flaky": bool(getattr(config.option, "fail_on_flaky", False)),
            "max_suite_reruns": getattr(config.option, "max_suite_reruns", None),
            "rerunfailures_installed": retries.rerunfailures_installed(),
            "durations": config.option.durations,
            "durations_min": config.option.durations_min,
            **consumed.session_fields(),
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
                "longrepr": render_summary(self.config, report) if report.failed else str(report.longrepr),
                "message": collect_message(self.config, report),
                "junit": part,
            }
        )

    def pytest_warning_recorded(self, warning_message, when, nodeid, location) -> None:
        if self.controller is not None:
            return  # replayed from a worker, which sent it to the agent itself
        if not nodeid and location:
            filename, linenum = location[0], location[1]
            try:
                rel = internals.bestrelpath(self.config.invocation_params.dir, internals.absolutepath(filename))
            except Exception:
                rel = filename
            nodeid = f"{rel}:{linenum}"
        if self.channel is None:
            return
        message = internals.warning_record_to_str(warning_message)
        self.channel.send({"t": "warning", "nodeid": nodeid or "", "message": message})

    def pytest_runtest_logreport(self, report) -> None:
        if self.controller is not None:
            return  # replayed from a worker, which sent the agent its own
        self.reports.append(phase_report(self.config, report))
        self.raw_reports.append(report)
        self.junit.log(report)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        if announce_hard_failure(getattr(self, "channel", None), item, call) and self.worker is not None:
            self.worker.local.hard_failure_announced()
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
        if self.junit is not None:
            self.junit.close()
        if self.controller_end is not None:
            self.controller_end.start()

    # The zygote's terminal summary: what plugins write there (pytest-cov's report) goes to
    # the agent. This (tryfirst) and the package's pytest_terminal_summary (trylast)
    # bracket the plugins' implementations, inside pytest's own (muted) sections.
    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if LAUNCH.mode != "zygote":
            return
        self.summary_buffer = io.StringIO()
        self.muted_writer = internals.reporter_writer(terminalreporter)
        writer = internals.terminal_writer(self.summary_buffer, SETTINGS.color, SETTINGS.width)
        internals.set_reporter_writer(terminalreporter, writer)

    def end_summary_capture(self, terminalreporter, last: bool = False) -> None:
        if self.controller_end is not None and not last:
            return  # plugins registered later still write: ControllerEnd ends it
        buffer = self.summary_buffer
        if buffer is None:
            return
        internals.set_reporter_writer(terminalreporter, self.muted_writer)
        self.summary_buffer = None
        text = buffer.getvalue()
        failure = coverage_failure(self.config)
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
                "items": [] if interrupted else [item_info(item) for item in items],
                "deselected": self.deselected,
                "errors": self.collect_errors,
                "report_lines": collectionfinish_lines(session),
                "failed_before": [] if interrupted else failed_before(session),
            }
        )
        if interrupted or session.config.option.collectonly:
            forget_xdist_look(session.config)
            return None  # pytest's own loop raises Interrupted / returns for --collect-only
        plugin_notes(self, session)
        if LAUNCH.mode == "zygote":
            zygote = Zygote(self, session)
            zygote.serve()
            if not zygote.forked_any:
                forget_xdist_look(session.config)
        else:
            become_worker(self, os.environ.get("PYTEST_XDIST_WORKER", "gw0"), forked=False)
            demote(self.config)
            Worker(self, session).serve()
        return True

    def note(self, text: str) -> None:
        """One line the agent prints as its own note."""
        try:
            self.channel.send({"t": "note", "text": text})
        except OSError:
            pass
