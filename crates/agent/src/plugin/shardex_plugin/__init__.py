"""shardex's pytest plugin: the Python side of the agent's worker pool. PYTEST_DONT_REWRITE

Loaded in processes the agent starts, by a bootstrap (plugin/mod.rs) that imports it from
the run folder, hands it the launch values with ``launched`` and runs pytest as
``python -m pytest -p shardex_plugin ...`` would: nothing of shardex is left on sys.path
or in the environment the tests see. Two roles:

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

from . import consumed, forkcheck, internals, retries
from .settings import LAUNCH


def launched(mode: str, socket: str, secret: str = "") -> None:
    """Called by the bootstrap before pytest starts: this process's role and how to reach
    the agent."""
    LAUNCH.mode, LAUNCH.socket, LAUNCH.secret = mode, socket, secret
    if mode == "zygote":
        # Before any conftest is imported: where each thread is started, for the
        # zygote's warning about threads alive at a fork.
        forkcheck.install()


def pytest_addoption(parser) -> None:
    if LAUNCH.active():
        retries.add_options(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_cmdline_main(config):
    # Before xdist's own: -n from addopts must not start an xdist controller here.
    if LAUNCH.active():
        consumed.take_xdist_options(config)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    # --spawn: each worker is a whole pytest session, and pytest-cov would start measuring
    # in each and race on the same data file (sqlite errors). No zygote combines their
    # data either: coverage is not measured under --spawn (as with pytest-cov's --no-cov).
    if LAUNCH.mode == "worker":
        internals.disable_cov_early(early_config)
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
    if LAUNCH.active():
        from .plugin import ShardexPlugin

        plugin = ShardexPlugin(config)
        config.pluginmanager.register(plugin, "shardex-plugin")
        plugin.start()
