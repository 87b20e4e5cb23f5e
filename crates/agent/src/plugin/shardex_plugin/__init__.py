"""shardex's pytest plugin: the Python side of the agent's worker pool. PYTEST_DONT_REWRITE

Loaded in processes the agent starts. Two roles:

* zygote (mode ``zygote``): runs pytest's configuration and collection once, reports the
  collected items, then forks a worker per slot on the agent's request (zygote.py).
* worker (forked from the zygote, or mode ``worker`` in ``--spawn`` mode where it
  collects for itself): runs the tests it is sent (worker.py).

Messages are JSON lines on a Unix socket to the agent (channel.py). Keep in step with
``crates/core/src/protocol.rs`` (PROTOCOL_VERSION). Every pytest internal used is reached
through internals.py.

This module holds the hooks pytest finds on the plugin module; the rest live on the
ShardexPlugin object (plugin.py), registered in pytest_configure.
"""

from __future__ import annotations

import pytest

from . import internals, retries
from .settings import LAUNCH


def pytest_addoption(parser) -> None:
    if LAUNCH.active():
        retries.add_options(parser)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # --spawn: each worker is a whole pytest session, and pytest-cov would start measuring
    # in each and race on the same data file (sqlite errors). No zygote combines their
    # data either: coverage is not measured under --spawn (as with pytest-cov's --no-cov).
    if LAUNCH.mode == "worker":
        internals.disable_cov_early(early_config)
    return (yield)


def pytest_cmdline_main(config) -> None:
    # Not tryfirst: after xdist's own, which starts its DSession when it sees `-n` (the
    # zygote only looks like an xdist controller, see controller.look_like_xdist).
    if LAUNCH.active():
        from .controller import look_like_xdist

        look_like_xdist(config)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    plugin = terminalreporter.config.pluginmanager.get_plugin("shardex-plugin")
    if plugin is not None:
        plugin.end_summary_capture(terminalreporter)


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    # trylast: after the terminal reporter registered itself, so it can be muted before
    # it prints the session header.
    if LAUNCH.active():
        from .plugin import ShardexPlugin

        plugin = ShardexPlugin(config)
        config.pluginmanager.register(plugin, "shardex-plugin")
        plugin.start()
