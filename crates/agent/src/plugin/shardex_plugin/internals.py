"""Every pytest internal the plugin relies on, in one place (PYTEST_DONT_REWRITE).

Nothing else in the package imports ``_pytest`` or touches a private attribute of
pytest's objects. Tested with pytest 9.2.0 (newest, requirements-dev.txt) and 7.4.4
(oldest supported, requirements-pytest7.txt). What is used, and where the versions
differ:

``_pytest._io.TerminalWriter``
    renders reports and summaries with the run's colour and width
    (``hasmarkup``, ``fullwidth``).
``TerminalReporter._tw``
    swapped to mute pytest's own reporter and to capture the zygote's terminal summary.
``_pytest.terminal.getreportopt``
    the resolved ``-r`` characters.
``Config.get_verbosity()``
    pytest >= 8; ``config.option.verbose`` on 7.x.
``_pytest.pathlib.bestrelpath`` / ``absolutepath``
    paths as pytest's terminal prints them.
``_pytest.warnings.warning_record_to_str``
    a warning as the warnings summary prints it.
``_pytest.junitxml.LogXML`` / ``xml_key``
    pytest's own junitxml machinery, its ``StashKey`` in ``config.stash`` (>= 7.0)
    and its bookkeeping: its hook methods ``pytest_collectreport`` /
    ``pytest_runtest_logreport`` called directly, ``node_reporters_ordered``, ``node_reporters``,
    ``open_reports``, ``stats``, ``cnt_double_fail_tests``, ``_NodeReporter.to_xml()``
    (an ElementTree element on both versions).
``OptionGroup._addoption``
    adds the rerun options under rerunfailures' names without its checks.
``CaptureManager`` (plugin ``capturemanager``)
    ``is_globally_capturing``, ``start_global_capturing``, ``stop_global_capturing``,
    ``suspend_global_capture``; ``_pytest.capture.TemporaryFile`` (the name
    ``FDCapture`` calls, patched while capture starts).
``Session._setupstate.teardown_exact``
    tears down what the last test left set up.
``Item._fixtureinfo.name2fixturedefs``, ``FixtureDef.cached_result`` / ``_finalizers``
    forgetting a failed fixture before a rerun (``cached_result[2]`` is the error on
    both versions: an exc_info tuple on 7.x, ``(exc, tb)`` on 8+).
``Function._instance`` / ``_obj``
    a fresh class instance for a rerun. pytest >= 8.1 keeps the instance in
    ``_instance``; 7.x binds it in ``_obj`` (``instance`` is ``obj.__self__``).
``Config._tmp_path_factory``, ``_pytest.tmpdir.TempPathFactory.from_config``
    a basetemp per worker.
``LFPlugin.lastfailed`` (plugin ``lfplugin``)
    keys are strings on 7.x, ``NodeId`` objects on 9.x (kept as strings).
``early_config.known_args_namespace``
    switches pytest-cov off in ``--spawn`` workers.
``pytest.hookimpl(wrapper=True)``
    new-style wrappers: pluggy >= 1.2 (pytest 7.4 accepts them with such a pluggy).
"""

from __future__ import annotations

import os

import _pytest.capture as _capture
from _pytest._io import TerminalWriter
from _pytest.junitxml import LogXML, xml_key
from _pytest.pathlib import absolutepath, bestrelpath
from _pytest.terminal import getreportopt
from _pytest.tmpdir import TempPathFactory
from _pytest.warnings import warning_record_to_str

__all__ = ["absolutepath", "bestrelpath", "getreportopt", "warning_record_to_str"]


# -- terminal ------------------------------------------------------------------


def terminal_writer(file, markup: bool, width: int) -> TerminalWriter:
    writer = TerminalWriter(file=file)
    writer.hasmarkup = markup
    writer.fullwidth = width
    return writer


def reporter_writer(terminalreporter):
    return terminalreporter._tw


def set_reporter_writer(terminalreporter, writer) -> None:
    terminalreporter._tw = writer


def mute_reporter(config) -> None:
    """pytest's own reporter writes to nowhere (the agent renders the terminal)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr._tw = TerminalWriter(file=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process


def verbosity(config) -> int:
    get = getattr(config, "get_verbosity", None)
    if get is not None:
        return get()
    return int(config.option.verbose)


# -- junitxml ------------------------------------------------------------------


def take_users_logxml(config) -> str | None:
    """pytest's own JUnit writer, registered when ``--junitxml`` came through addopts or
    PYTEST_ADDOPTS: unregistered (shardex writes that report, with every worker's
    testcases); returns the absolute path it would have written."""
    existing = config.stash.get(xml_key, None)
    if existing is None:
        return None
    if config.pluginmanager.is_registered(existing):
        config.pluginmanager.unregister(existing)
    del config.stash[xml_key]
    return existing.logfile


def pytest_timeout_active(config) -> bool:
    return config.pluginmanager.hasplugin("timeout") and hasattr(config, "_env_timeout")


def pytest_timeout_env(config):
    """pytest-timeout's timeout for the run (its --timeout, PYTEST_TIMEOUT or ini)."""
    return getattr(config, "_env_timeout", None)


def set_pytest_timeout_env(config, value) -> None:
    config._env_timeout = value


def pytest_timeout_marker_secs(item, marker):
    """The timeout a ``timeout`` marker gives, as pytest-timeout reads it."""
    import pytest_timeout

    return pytest_timeout._get_item_settings(item, marker).timeout


def new_logxml(config) -> LogXML:
    """A LogXML writing nowhere, registered where record_xml_attribute and
    record_testsuite_property look for it."""
    logxml = LogXML(
        os.devnull,
        config.option.junitprefix,
        config.getini("junit_suite_name"),
        config.getini("junit_logging"),
        config.getini("junit_duration_report"),
        "xunit1",
        config.getini("junit_log_passing_tests"),
    )
    config.stash[xml_key] = logxml
    return logxml


def forget_logxml(config, logxml) -> None:
    """Ours was never registered as a plugin: junitxml's unconfigure must not unregister it."""
    if logxml is not None and config.stash.get(xml_key, None) is logxml:
        try:
            del config.stash[xml_key]
        except KeyError:
            pass


def logxml_feed(logxml, report, collect: bool) -> None:
    """A report, as junitxml's own hooks take it."""
    if collect:
        logxml.pytest_collectreport(report)
    else:
        logxml.pytest_runtest_logreport(report)


def logxml_mark(logxml) -> tuple:
    return len(logxml.node_reporters_ordered), dict(logxml.stats), logxml.cnt_double_fail_tests


def logxml_take(logxml, mark: tuple) -> tuple:
    """The testcase elements and counter moves since `mark`; forgets them (flat memory)."""
    start, stats, double = mark
    reporters = logxml.node_reporters_ordered[start:]
    elements = [r.to_xml() for r in reporters]
    now = logxml.stats
    moved = {key: now[key] - stats[key] for key in ("passed", "failure", "error", "skipped")}
    moved["double"] = logxml.cnt_double_fail_tests - double
    del logxml.node_reporters_ordered[start:]
    logxml.node_reporters.clear()
    logxml.open_reports.clear()
    return elements, moved


# -- options -------------------------------------------------------------------


def add_group_option(group, name: str, **kwargs) -> None:
    """Raises ValueError when the option exists (pytest-rerunfailures loaded anyway)."""
    group._addoption(name, **kwargs)


def disable_cov_early(early_config) -> None:
    early_config.known_args_namespace.no_cov = True


# -- capture -------------------------------------------------------------------


def capture_manager(config):
    return config.pluginmanager.getplugin("capturemanager")


def is_globally_capturing(capman) -> bool:
    return capman is not None and capman.is_globally_capturing()


def stop_global_capture(capman) -> None:
    if capman is not None:
        capman.stop_global_capturing()


def start_global_capture_into(capman, make_file) -> None:
    """Starts pytest's global capture with `make_file()` for its temp files (pytest uses
    anonymous ones), then suspends it as pytest does between tests."""
    if capman is None:
        return
    original = _capture.TemporaryFile

    def named_tempfile(*args, **kwargs):
        made = make_file()
        return made if made is not None else original(*args, **kwargs)

    _capture.TemporaryFile = named_tempfile
    try:
        capman.start_global_capturing()
    finally:
        _capture.TemporaryFile = original
    capman.suspend_global_capture()


# -- runner state --------------------------------------------------------------


def teardown_all(session) -> None:
    session._setupstate.teardown_exact(None)


def forget_failed_state(item) -> None:
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
    if "_instance" in vars(item):  # pytest >= 8.1
        if item._instance is not None:
            del item._instance
            item._obj = None
    elif getattr(getattr(item, "_obj", None), "__self__", None) is not None:
        item._obj = None  # pytest 7: the next `obj` binds a new instance


# -- tmp_path ------------------------------------------------------------------


def basetemp(config):
    factory = getattr(config, "_tmp_path_factory", None)
    return None if factory is None else str(factory.getbasetemp())


def set_basetemp(config, path: str) -> None:
    if getattr(config, "_tmp_path_factory", None) is None:
        return
    config.option.basetemp = path
    config._tmp_path_factory = TempPathFactory.from_config(config, _ispytest=True)


def has_tmp_path_factory(config) -> bool:
    return getattr(config, "_tmp_path_factory", None) is not None


# -- cache ---------------------------------------------------------------------


def lastfailed_plugin(config):
    """pytest's cache plugin with its `lastfailed` dict, or None."""
    plugin = config.pluginmanager.get_plugin("lfplugin")
    return plugin if getattr(plugin, "lastfailed", None) is not None else None
