"""The daemon's warm base process (PYTEST_DONT_REWRITE): pytest configured and collected
once, then unconfigured, kept waiting for the daemon's ``fork`` requests. Each fork becomes
a run's zygote (base_child.py).

Started by ``python -c BASE_BOOTSTRAP PACKAGE_DIR PYTEST_ARGS...`` with a socket to the
daemon (JSON lines, fds by SCM_RIGHTS); see "The base process" in the daemon's plan. The
pytest internals used here (``_prepareconfig``, ``Config._do_configure`` /
``_ensure_unconfigure``, ``Session.from_config``) are the ones pytest's own ``main`` runs;
the session is started (collection needs it) but never finished (where reports are
written), and no test runs.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import site
import socket
import sys
import time
import traceback

from . import base_child, forkcheck
from .learn import Learner

# Files in the rootdir that change how pytest is configured.
_ROOT_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg", ".env")
# Plugins whose pytest_sessionstart may write a report (pytest-html's generate_report_on_test).
_WRITE_AT_START = ("pytest_html", "_pytest.junitxml")
_LAUNCH_VARS = ("SHARDEX_MODE", "SHARDEX_SOCKET", "SHARDEX_SECRET", "SHARDEX_BASE_FD", "SHARDEX_DAEMON_SOCKET")


class _Seen:
    """A pytest plugin for the warm-up: the test modules collected and the conftests loaded."""

    def __init__(self) -> None:
        self.test_files: set = set()
        self.conftests: set = set()

    def pytest_collectstart(self, collector) -> None:
        import pytest

        if isinstance(collector, pytest.Module):
            self.test_files.add(_real(str(collector.path)))

    def pytest_plugin_registered(self, plugin) -> None:
        path = getattr(plugin, "__file__", None)
        if path and os.path.basename(path) == "conftest.py":
            self.conftests.add(_real(path))


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _coverage_running() -> bool:
    coverage = sys.modules.get("coverage")
    current = getattr(getattr(coverage, "Coverage", None), "current", None)
    return current is not None and current() is not None


def _start_session(config, session) -> None:
    """pytest_sessionstart, which collection needs (pytest's fixture manager, plugins' own
    session state: syrupy's collectstart fails without it), minus the plugins that may write
    a report there. pytest_sessionfinish, where reports are written, is never called."""
    skip = [p for p in config.pluginmanager.get_plugins() if type(p).__module__.startswith(_WRITE_AT_START)]
    config.pluginmanager.subset_hook_caller("pytest_sessionstart", skip)(session=session)


def warm_up(args: list) -> dict:
    """Configures pytest with ``args``, collects, unconfigures; returns what the ready
    message needs. Raises on a configuration error (the run would fail the same way)."""
    import pytest
    from _pytest.config import _prepareconfig
    from _pytest.main import Session

    seen = _Seen()
    errors: list = []
    os.environ["PYTEST_VERSION"] = pytest.__version__  # as pytest's main sets it
    try:
        config = _prepareconfig(list(args), plugins=[seen])
    finally:
        os.environ.pop("PYTEST_VERSION", None)
    try:
        if _coverage_running():
            raise RuntimeError(
                "coverage is being measured (pytest-cov): a fork of a warm process would not "
                "measure the lines run at import"
            )
        if getattr(config.option, "tx", None):
            config.option.tx = []  # no xdist controller here (the run's zygote decides)
        os.environ["PYTEST_VERSION"] = pytest.__version__
        config._do_configure()
        session = Session.from_config(config)
        try:
            _start_session(config, session)
            config.hook.pytest_collection(session=session)
        except BaseException as error:  # recorded: the fork collects again
            errors.append(f"{type(error).__name__}: {error}")
        rootdir = str(config.rootpath)
        inipath = str(config.inipath) if config.inipath else None
    finally:
        try:
            config._ensure_unconfigure()
        finally:
            os.environ.pop("PYTEST_VERSION", None)
    return {"seen": seen, "errors": errors, "rootdir": rootdir, "inipath": inipath}


def drop_modules(seen: _Seen) -> None:
    """Test modules and conftests leave sys.modules: each fork imports them afresh (an edited
    test file costs no rebuild, and their import-time effects happen in the run)."""
    gone = seen.test_files | seen.conftests
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and _real(path) in gone:
            del sys.modules[name]


def _site_dirs() -> list:
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user, str):
        dirs.append(user)
    return [d for d in dirs if os.path.isdir(d)]


def watch_set(seen: _Seen, rootdir: str, inipath) -> list:
    """Every file whose change makes this base stale (see the daemon's plan)."""
    paths: set = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path:
            paths.add(os.path.abspath(path))
            paths.add(_real(path))
    paths |= seen.conftests
    if inipath:
        paths.add(os.path.abspath(inipath))
    paths.update(os.path.join(rootdir, name) for name in _ROOT_FILES if os.path.isfile(os.path.join(rootdir, name)))
    for directory in _site_dirs():
        paths.add(os.path.abspath(directory))
        for name in os.listdir(directory):
            full = os.path.join(directory, name)
            if name.endswith(".dist-info") and os.path.isfile(os.path.join(full, "RECORD")):
                paths.add(os.path.join(full, "RECORD"))
            elif name.endswith((".egg-link", ".pth")):
                paths.add(full)
    return sorted(p for p in paths if os.path.exists(p))


def _send(sock, msg: dict) -> None:
    sock.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def _finish(code: int = 0) -> None:
    """Leaves without unwinding or atexit (nothing of the warm-up is to be written)."""
    base_child.flush_quietly()
    os._exit(code)


def serve(fd: int, args: list, cwd_first: bool = True) -> None:
    """The base's life: warm up, report, then fork zygotes until the daemon is gone."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    forkcheck.install()  # names where a thread alive at the end of the warm-up was started
    path_before = list(sys.path)
    daemon_socket = _DaemonSocket(os.environ.pop("SHARDEX_DAEMON_SOCKET", ""))
    environ_before = dict(os.environ)
    started = time.monotonic()
    args = _without_shardex_plugin(args)
    try:
        warm = warm_up(args)
        _close_django_connections()
        drop_modules(warm["seen"])
        watch = watch_set(warm["seen"], warm["rootdir"], warm["inipath"])
        threads = forkcheck.other_threads()
        if threads:
            names = ", ".join(forkcheck.describe(thread) for thread in threads)
            raise RuntimeError(f"threads are alive after the warm-up, a fork would not be safe: {names}")
    except BaseException as error:  # reported to the daemon, which runs cold
        traceback.print_exc()
        try:
            _send(sock, {"t": "failed", "message": f"{type(error).__name__}: {error}"})
        except OSError:
            pass
        _finish(0)
    sys.path[:] = path_before  # what pytest inserted is inserted again in each run
    state = _State(sock, path_before, cwd_first, _environ_delta(environ_before))
    state.daemon_socket = daemon_socket
    state.learner = Learner(warm["rootdir"])
    gc.collect()
    gc.freeze()
    seconds = time.monotonic() - started
    ready = {"t": "ready", "pid": os.getpid(), "watch": watch, "seconds": seconds}
    ready.update(modules=len(sys.modules), errors=warm["errors"])
    try:
        _send(sock, ready)
    except OSError:
        _finish(0)
    state.loop()


def _without_shardex_plugin(args: list) -> list:
    out = []
    i = 0
    while i < len(args):
        if args[i] == "-p" and i + 1 < len(args) and args[i + 1] == "shardex_plugin":
            i += 2
            continue
        if args[i] == "-pshardex_plugin":
            i += 1
            continue
        out.append(args[i])
        i += 1
    return out


def environ_for_run(env: dict, delta: dict) -> dict:
    """The run's environment, plus what the warm-up's imports did to it where the run's
    started as the base's did (a cold run's imports would have done the same)."""
    for name in _LAUNCH_VARS:
        env.pop(name, None)
    for name, (before, after) in delta.items():
        if env.get(name) == before:
            if after is None:
                env.pop(name, None)
            else:
                env[name] = after
    return env


def _environ_delta(before: dict) -> dict:
    """What the warm-up's imports did to os.environ: {name: (value before, after or None)}."""
    after = dict(os.environ)
    delta = {}
    for name in set(before) | set(after):
        if before.get(name) != after.get(name) and name not in _LAUNCH_VARS and name != "PYTEST_VERSION":
            delta[name] = (before.get(name), after.get(name))
    return delta


def _close_django_connections() -> None:
    django_db = sys.modules.get("django.db")
    if django_db is not None:
        django_db.connections.close_all()


class _State:
    """The serving loop: fork requests, kills, reaping, retiring."""

    def __init__(self, sock, path_before: list, cwd_first: bool, environ_delta: dict) -> None:
        self.sock = sock
        self.path_before = path_before
        self.cwd_first = cwd_first
        self.environ_delta = environ_delta
        self.buf = b""
        self.fds: list = []  # received with fork lines, two per fork, in order
        self.children: set = set()
        self.retiring = False
        self.wake_r, self.wake_w = os.pipe()
        self.daemon_socket = _DaemonSocket("")  # set by serve()
        self.learner = None  # set by serve()

    def loop(self) -> None:
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        while True:
            self._reap()
            if self.retiring and not self.children:
                self.learner.close()
                _finish(0)
            try:
                ready, _, _ = select.select([self.sock, self.wake_r], [], [], 1.0)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except OSError:
                    pass
            try:
                if self.sock in ready and not self._read():
                    self._gone()
            except OSError:  # a send to a daemon that is gone
                self._gone()

    def _read(self) -> bool:
        """Reads what the daemon sent and handles each whole line; False on EOF."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 16)
        except InterruptedError:
            return True
        except OSError:
            return False
        self.fds.extend(fds)
        if not data:
            return False
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._handle(json.loads(line))
        return True

    def _handle(self, msg: dict) -> None:
        kind = msg.get("t")
        if kind == "fork":
            out_err, self.fds = self.fds[:2], self.fds[2:]
            self._fork(msg, out_err)
        elif kind == "kill":
            pid = int(msg["pid"])
            if pid in self.children:
                _killpg(pid)
        elif kind == "retire":
            self.retiring = True

    def _fork(self, msg: dict, out_err: list) -> None:
        refusal = None
        if len(out_err) != 2:
            refusal = f"expected 2 fds (stdout, stderr) with the fork request, got {len(out_err)}"
        elif self.retiring:
            refusal = "the base is retiring"
        elif forkcheck.other_threads():
            refusal = "a thread is alive in the base"
        if refusal is not None:
            _close_all(out_err)
            _send(self.sock, {"t": "fork_failed", "id": msg.get("id"), "message": refusal})
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            pid = os.fork()
        except OSError as error:
            _close_all(out_err)
            _send(self.sock, {"t": "fork_failed", "id": msg.get("id"), "message": str(error)})
            return
        if pid == 0:
            self.sock.close()
            _close_all([self.wake_r, self.wake_w, *self.fds])
            env = environ_for_run(dict(msg["env"]), self.environ_delta)
            base_child.become_zygote(
                msg, out_err, env=env, path=self.path_before, cwd_first=self.cwd_first, learner=self.learner
            )
        try:
            os.setpgid(pid, pid)  # both sides set it: no window where a killpg misses
        except OSError:
            pass
        _close_all(out_err)
        self.children.add(pid)
        _send(self.sock, {"t": "forked", "id": msg.get("id"), "pid": pid})

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid not in self.children:
                continue  # a process the warm-up started
            self.children.discard(pid)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            try:
                _send(self.sock, {"t": "exited", "pid": pid, "code": code, "signal": sig})
                learned = self.learner.absorb(pid) if not self.retiring else []
                if learned:
                    _send(self.sock, {"t": "watch", "paths": learned})
            except OSError:
                self._gone()

    def _gone(self) -> None:
        """The daemon is gone: so is the base. A zygote it forked belongs to its run (the
        client drives it and it exits when that run ends): it finishes that run. A daemon
        that died leaves its socket behind: the base removes it."""
        self.daemon_socket.remove_if_orphaned()
        self.learner.close()
        _finish(0)


class _DaemonSocket:
    """The daemon's socket as it was when this base started (path and inode)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parent = os.getppid()
        try:
            self.inode = os.stat(path).st_ino if path else None
        except OSError:
            self.inode = None

    def remove_if_orphaned(self) -> None:
        """Removes the socket when the daemon died without doing it (its parent changed)
        and it is still the one this base knew (not a new daemon's)."""
        if self.inode is None:
            return
        # The daemon's descriptors close before it is reaped: give its exit a moment.
        deadline = time.monotonic() + 1.0
        while os.getppid() == self.parent and time.monotonic() < deadline:
            time.sleep(0.02)
        if os.getppid() == self.parent:
            return
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _close_all(fds: list) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
