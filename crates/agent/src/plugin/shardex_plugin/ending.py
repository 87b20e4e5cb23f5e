"""The end of the zygote's session as xdist's controller, and the one-line notes about
plugins that cannot work as under xdist (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import io
import os
import warnings

import pytest

from . import internals
from .controller import REPLAY_HOOKS, _module_of, _wants_replay, decide
from .settings import LAUNCH, SETTINGS


class ControllerEnd:
    """The zygote's last words as a controller: what plugins warn while pytest
    unconfigures (pytest-benchmark's "automatically disabled because xdist plugin is
    active" goes to the warnings module there, whose stderr nobody sees in the zygote) and
    the session's final exit status (syrupy ORs 1 into it, `--max-warnings`...). Started by
    the plugin's tryfirst pytest_unconfigure, ended by this trylast one."""

    def __init__(self, plugin) -> None:
        self.plugin = plugin
        self.recorder = None
        self.caught: list = []
        self.buffer = None
        self.muted = None

    # What plugins write to the terminal in their sessionfinish (pytest-html's "Generated
    # html report" line) goes to the agent like their terminal summary sections.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session) -> None:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        self.buffer = io.StringIO()
        self.muted = internals.reporter_writer(reporter)
        writer = internals.terminal_writer(self.buffer, SETTINGS.color, SETTINGS.width)
        internals.set_reporter_writer(reporter, writer)

    # Registered after every plugin: its trylast runs after theirs (pytest-html's line).
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        self.plugin.end_summary_capture(terminalreporter, last=True)

    @pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
    def end_sessionfinish_capture(self, session) -> None:
        buffer, self.buffer = self.buffer, None
        if buffer is None:
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        internals.set_reporter_writer(reporter, self.muted)
        text = buffer.getvalue()
        if text.strip():
            try:
                self.plugin.channel.send({"t": "plugin_summary", "text": text})
            except OSError:
                pass

    def start(self) -> None:
        self.recorder = warnings.catch_warnings(record=True)
        self.caught = self.recorder.__enter__()
        warnings.simplefilter("always")

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        if self.recorder is None:
            return
        self.recorder.__exit__(None, None, None)
        self.recorder = None
        text = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in self.caught)
        session = self.plugin.session
        channel = self.plugin.channel
        try:
            if text:
                channel.send({"t": "plugin_summary", "text": text})
            if session is not None:
                channel.send({"t": "session_end", "exitstatus": int(session.exitstatus)})
        except OSError:
            pass


def _plugin_name(module: str) -> str:
    top = module.split(".", maxsplit=1)[0]
    if top == "_hypothesis_pytestplugin":
        return "hypothesis"
    if top == "conftest" or module.endswith("conftest"):
        return "conftest.py hooks"
    return top.replace("_", "-")


def _foreign_plugins(config) -> list[str]:
    names = []
    for name in (*REPLAY_HOOKS, "pytest_testnodedown"):
        hook = getattr(config.hook, name, None)
        for impl in hook.get_hookimpls() if hook is not None else ():
            module = _module_of(impl)
            wanted = (
                _wants_replay(config, impl)
                if name != "pytest_testnodedown"
                else not module.startswith(("xdist.", "pytest_cov."))
            )
            if wanted and _plugin_name(module) not in names:
                names.append(_plugin_name(module))
    return names


# Plugins that replace pytest's terminal reporter to print as tests run: shardex prints
# the terminal itself, from the agent.
_LIVE_TERMINAL = {"instafail": "pytest-instafail", "sugar": "pytest-sugar"}


def plugin_notes(plugin, session) -> None:
    """One line per plugin that cannot work as under xdist, where it would be silent."""
    config = plugin.config
    pm = config.pluginmanager
    if LAUNCH.mode == "zygote":
        for name, label in _LIVE_TERMINAL.items():
            if pm.has_plugin(name):
                plugin.note(f"{label} is not supported under shardex (shardex prints the terminal): it prints nothing")
        return
    # --spawn: no process plays xdist's controller; only the first worker says so.
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    replay, nodes = decide(config)
    if replay or nodes:
        names = ", ".join(_foreign_plugins(config)) or "plugins"
        plugin.note(
            f"--spawn has no zygote to play xdist's controller: {names} get no worker reports "
            "and write no report files (existing files are left untouched); run without --spawn"
        )
