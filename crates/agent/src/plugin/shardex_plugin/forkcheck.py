"""Fork hazards (PYTEST_DONT_REWRITE): threads alive in the zygote when it forks, and the
random state every forked worker would otherwise share.

A fork copies only the thread that forks: a lock another thread holds at that moment stays
held forever in the child, and whatever that thread was doing stops there. The zygote
cannot make that safe, but it says so, naming each thread and where it was started (a
``threading.Thread.start`` wrapper installed when the plugin is imported, before any
conftest), and what to do: ``--spawn``.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import weakref

_THIS_FILE = os.path.normcase(os.path.abspath(__file__))
_THREADING_FILE = os.path.normcase(os.path.abspath(threading.__file__))

# Where each thread was started (`file:line in function`), for threads started after the
# plugin was imported.
_start_sites: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Threads already named in a warning (by ident): each is named once.
_warned: set = set()
# The zygote's `random` state at the last fork (CPython reseeds `random` in a forked child).
_state_at_fork = None

# Threads that hold no lock a worker could need: debuggers' own threads (by name prefix).
HARMLESS_PREFIXES = ("pydevd.", "ptvsd.", "debugpy.")


def install() -> None:
    """Wraps ``threading.Thread.start`` to record where each thread is started. Idempotent."""
    original = threading.Thread.start
    if getattr(original, "_shardex_records_site", False):
        return

    def start(self, *args, **kwargs):
        try:
            _start_sites[self] = _caller_site()
        except Exception:
            pass
        return original(self, *args, **kwargs)

    start._shardex_records_site = True
    start.__wrapped__ = original
    start.__doc__ = original.__doc__
    threading.Thread.start = start


def _caller_site() -> str:
    """The first frame outside threading.py and this module: who started the thread."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if path not in (_THIS_FILE, _THREADING_FILE):
            return f"{_short(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "unknown"


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(os.pardir + os.sep) else rel


def other_threads() -> list:
    """Live threads other than the calling one, minus the known harmless ones."""
    me = threading.current_thread()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not me and thread.is_alive() and not thread.name.startswith(HARMLESS_PREFIXES)
    ]


def describe(thread) -> str:
    site = _start_sites.get(thread)
    where = f"started at {site}" if site else "started before shardex's plugin was loaded"
    return f"{thread.name!r} ({where})"


def hazard_warning(threads) -> str | None:
    """One line for the user's terminal, or None when no other thread runs."""
    if not threads:
        return None
    count = f"{len(threads)} other thread{'s' if len(threads) > 1 else ''}"
    names = ", ".join(describe(thread) for thread in threads)
    return (
        f"warning: {count} running in the pytest process that forks the workers: {names}. "
        "A lock held by a thread at the fork stays locked in every worker (a test that takes it "
        "hangs), and the thread does not run there; start it in a fixture instead of at import, "
        "or run with --spawn"
    )


def before_fork(channel) -> None:
    """In the zygote, right before a fork: warns about threads not named yet, and keeps
    the random state for `reseed_after_fork`."""
    global _state_at_fork
    threads = [thread for thread in other_threads() if thread.ident not in _warned]
    _warned.update(thread.ident for thread in threads)
    line = hazard_warning(threads)
    if line is not None:
        channel.send({"t": "note", "text": line})
    _state_at_fork = random.getstate()


def randomly_active(config) -> bool:
    """pytest-randomly seeds `random` (and numpy) itself: from --randomly-seed, per test."""
    return bool(config.pluginmanager.hasplugin("randomly"))


def reseed_after_fork(config) -> None:
    """Each worker draws its own random numbers, as separate processes would: the stdlib's
    and numpy's global generators are reseeded from os.urandom (CPython already reseeds
    `random` in a forked child; numpy does not). Under pytest-randomly the zygote's state
    is kept instead: its seeding stays reproducible (it seeded the zygote's session, and
    reseeds before each test unless told not to)."""
    if randomly_active(config):
        if _state_at_fork is not None:
            random.setstate(_state_at_fork)
        return
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed(int.from_bytes(os.urandom(4), "little"))
        except Exception:
            pass
