"""The options shardex consumes, as pytest itself read them (PYTEST_DONT_REWRITE).

shardex takes ``-n``, ``--dist``, ``--junitxml`` and ``--timeout`` off its own command line;
the same options may also reach pytest through ``addopts`` (an ini file, pyproject.toml) or
``PYTEST_ADDOPTS``, which only pytest reads. This module keeps what pytest made of them
(pytest's own precedence: the command line after PYTEST_ADDOPTS after addopts), reports it to
the agent in the session message, and stops pytest from acting on them in this process:
no xdist controller, no JUnit file written with no testcase, no pytest-timeout timeout that
the command line should have overridden.
"""

from __future__ import annotations

from . import internals
from .settings import SETTINGS


class Consumed:
    def __init__(self) -> None:
        self.numprocesses: str | None = None
        self.dist: str | None = None
        self.xmlpath: str | None = None
        # pytest-timeout is loaded: the agent gets each test's timeout with the collection.
        self.item_timeouts = False
        # pytest-timeout's own timeout for the run (--timeout in addopts, PYTEST_TIMEOUT,
        # the ini key), before shardex's command line replaced it.
        self.plugin_timeout: float | None = None


CONSUMED = Consumed()


def take_xdist_options(config) -> None:
    """Before xdist's own pytest_cmdline_main: keep ``-n``/``--dist`` as pytest parsed them
    and take ``-n`` away, so that xdist starts no controller in this process."""
    option = config.option
    numprocesses = getattr(option, "numprocesses", None)
    if numprocesses is not None:
        CONSUMED.numprocesses = str(numprocesses)
        option.numprocesses = None
    dist = getattr(option, "dist", None)
    if dist and dist != "no":
        CONSUMED.dist = str(dist)


def take_junitxml(config) -> None:
    path = internals.take_users_logxml(config)
    if path:
        CONSUMED.xmlpath = path


def junit_wanted() -> bool:
    return SETTINGS.junit or CONSUMED.xmlpath is not None


def loadgroup() -> bool:
    return SETTINGS.loadgroup or CONSUMED.dist == "loadgroup"


def _positive(value) -> float | None:
    try:
        secs = float(value)
    except (TypeError, ValueError):
        return None
    return secs if secs > 0 else None


def take_timeouts(config) -> None:
    """pytest-timeout's precedence for the agent's per-test deadline: a ``timeout`` marker,
    else shardex's ``--timeout``, else pytest-timeout's own setting. When shardex's
    ``--timeout`` is given, pytest-timeout's own run-wide timeout is switched off here: the
    command line wins, and the agent enforces it (killing the test's process group, its
    children included)."""
    if not internals.pytest_timeout_active(config):
        return
    CONSUMED.item_timeouts = True
    CONSUMED.plugin_timeout = _positive(internals.pytest_timeout_env(config))
    if SETTINGS.timeout is not None:
        internals.set_pytest_timeout_env(config, None)


def item_timeout(item) -> dict:
    """The item's timeout fields for the collection message (only with pytest-timeout)."""
    if not CONSUMED.item_timeouts:
        return {}
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        # pytest-timeout enforces a marker itself; the agent's kill is the backstop.
        secs = _positive(internals.pytest_timeout_marker_secs(item, marker))
        return {"timeout": secs, "timeout_in_worker": True} if secs else {}
    if SETTINGS.timeout is not None:
        return {"timeout": SETTINGS.timeout}
    if CONSUMED.plugin_timeout is not None:
        return {"timeout": CONSUMED.plugin_timeout, "timeout_in_worker": True}
    return {}


def session_fields() -> dict:
    return {
        "numprocesses": CONSUMED.numprocesses,
        "dist": CONSUMED.dist,
        "xmlpath": CONSUMED.xmlpath,
        "item_timeouts": CONSUMED.item_timeouts,
    }
