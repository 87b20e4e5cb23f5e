"""A fork of the daemon's warm base becoming a run's zygote (PYTEST_DONT_REWRITE): what a
fresh ``python -c BOOTSTRAP`` process (plugin/mod.rs) would be, but warm, then exactly what
the bootstrap runs after its import: ``launched(mode, socket, secret)`` and pytest's
``__main__`` through runpy. Never returns into the base's frames: ends with ``os._exit``.
"""

from __future__ import annotations

import atexit
import importlib
import linecache
import os
import runpy
import signal
import sys
import traceback


def become_zygote(msg: dict, out_err: list, *, env: dict, path: list, cwd_first: bool, learner) -> None:
    """In the forked child, its base socket already closed: runs the zygote, then exits
    (never returns). `learner` (learn.py) records what the run imported from outside the
    project, for the base to import before the next one."""
    code = 1
    try:
        _prepare(msg, out_err, env, path, cwd_first)
        code = _run_pytest(list(msg["args"]))
        learner.record(os.getpid())
    except KeyboardInterrupt:
        # As CPython ends on an uncaught KeyboardInterrupt: killed by SIGINT.
        flush_quietly()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # as an uncaught exception ends python
        traceback.print_exc()
    finally:
        flush_quietly()
        os._exit(code)


def _prepare(msg: dict, out_err: list, env: dict, path: list, cwd_first: bool) -> None:
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(out_err[0], 1)
    os.dup2(out_err[1], 2)
    for fd in out_err:
        os.close(fd)
    try:
        # Line-buffered on a terminal, as a fresh python's stdout would be.
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    except Exception:
        pass
    cwd = str(msg["cwd"])
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = path  # as before the warm-up: pytest inserts its own again
    if cwd_first and sys.path:
        sys.path[0] = cwd
    importlib.invalidate_caches()
    linecache.clearcache()  # tracebacks show the files as they are now
    launch = msg["launch"]
    sys.modules["shardex_plugin"].launched(
        mode=str(launch["mode"]), socket=str(launch["socket"]), secret=str(launch.get("secret", ""))
    )


def _run_pytest(args: list) -> int:
    """pytest's __main__ as `python -m pytest ARGS` runs it; its exit code, after what the
    interpreter's shutdown would run (non-daemon threads joined, atexit functions)."""
    sys.argv = ["pytest", *args]
    code = 0
    try:
        runpy.run_module("pytest", run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = _exit_code(exit.code)
    flush_quietly()
    try:
        import threading

        threading._shutdown()
    except Exception:
        pass
    atexit._run_exitfuncs()
    return code


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
