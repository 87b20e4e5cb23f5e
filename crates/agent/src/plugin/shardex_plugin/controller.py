"""The zygote plays pytest-xdist's controller (PYTEST_DONT_REWRITE).

Plugins know how to work under xdist: workers make reports, the controller (xdist's
DSession) replays them into its own hooks and its session writes the reports and files.
The zygote is that controller. Each forked worker gets a pipe at fork (relay.py writes
it); the zygote's serve loop reads it and replays, as DSession does:
``pytest_runtest_logstart``/``logreport`` (with ``rep.node``, ``item_index``,
``worker_id``, ``testrun_uid``)/``logfinish`` through ``session.items[i].ihook``,
``pytest_warning_recorded``, and ``pytest_testnodedown(node, error)`` with the worker's
``workeroutput``. The zygote's session then ends with the real counts.

Whether to do it is decided once, after collection (``decide``): without a plugin that
reads what workers did, nothing extra is sent per test.

Retried attempts: a failed attempt shardex may retry is held until the zygote knows
whether another attempt of the test started (then its failed reports are replayed with
outcome ``rerun``, as pytest-rerunfailures logs them) or the run ended (a final failure).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field

from .relay import Relay, demote
from .settings import SETTINGS

# Hooks whose implementations outside pytest and shardex read what the workers did.
REPLAY_HOOKS = (
    "pytest_runtest_logreport",
    "pytest_runtest_logstart",
    "pytest_runtest_logfinish",
    "pytest_warning_recorded",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
)
# Plugins with such hooks that need no per-test replay: shardex bridges them itself
# (pytest-cov, the rerun plugins), they hand their data over at testnodedown only
# (syrupy, pytest-metadata), they switch themselves off under xdist (pytest-benchmark),
# or they read nothing the workers made (pytest-django, pytest-timeout, xdist itself).
_NEEDS_NO_REPLAY = (
    "_pytest.",
    "pytest.",
    "shardex_plugin",
    "xdist.",
    "pytest_cov.",
    "pytest_rerunfailures",
    "syrupy",
    "pytest_metadata.",
    "pytest_benchmark.",
    "pytest_django.",
    "pytest_timeout",
    "pluggy.",
)
_SHUTDOWN_SECS = 120.0


def _module_of(impl) -> str:
    return getattr(impl.function, "__module__", "") or ""


def _wants_replay(config, impl) -> bool:
    module = _module_of(impl)
    if module.startswith(_NEEDS_NO_REPLAY):
        return False
    if module == "_hypothesis_pytestplugin":
        # Its terminal summary reads the reports' statistics: only when shown.
        return bool(config.getoption("hypothesis_show_statistics", False))
    return True


def decide(config) -> tuple[bool, bool]:
    """(replay, nodes): replay each test's reports into the zygote; run each worker's
    sessionfinish and hand its workeroutput over (pytest_testnodedown)."""
    hook = config.hook
    replay = any(_wants_replay(config, impl) for name in REPLAY_HOOKS for impl in getattr(hook, name).get_hookimpls())
    down = getattr(hook, "pytest_testnodedown", None)
    nodes = replay or (
        down is not None
        and any(not _module_of(impl).startswith(("xdist.", "pytest_cov.")) for impl in down.get_hookimpls())
    )
    return replay, nodes


def look_like_xdist(config) -> None:
    """What an xdist controller's options say (after xdist's own cmdline_main, so it starts
    no DSession: ``tx`` stays empty): pytest-benchmark switches itself off with its warning,
    syrupy arms its guard against lost worker reports."""
    config.option.dist = "load"
    config.option.numprocesses = max(1, SETTINGS.worker_count)


def forget_xdist_look(config) -> None:
    """No worker ran (collection errors, --collect-only, nothing collected): the session
    ends as plain pytest's, so plugins expect no worker reports (syrupy would otherwise
    warn that it received none)."""
    config.option.dist = "no"
    config.option.numprocesses = None


class _Gateway:
    def __init__(self, slot: str) -> None:
        self.id = slot

    def _rinfo(self):
        import platform

        return _RInfo(platform=platform.platform(), version_info=tuple(sys.version_info))


@dataclass
class _RInfo:
    platform: str
    version_info: tuple


class _NodeManager:
    """pytest-cov's DistMaster reads `node.nodemanager.roots` (rsync roots: none here)."""

    def __init__(self) -> None:
        self.roots: list = []


class Node:
    """What xdist's WorkerController offers plugins: one per forked process."""

    def __init__(self, config, slot: str) -> None:
        import platform

        self.config = config
        self.gateway = _Gateway(slot)
        self.nodemanager = _NodeManager()
        self.shutting_down = False
        self.workerinput = {
            "workerid": slot,
            "workercount": SETTINGS.worker_count,
            "testrunuid": SETTINGS.testrunuid,
            "mainargv": list(sys.argv),
        }
        self.workerinfo = {
            "version": sys.version,
            "version_info": tuple(sys.version_info),
            "sysplatform": sys.platform,
            "platform": platform.platform(),
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "id": slot,
            "spec": None,
        }

    def __repr__(self) -> str:
        return f"<WorkerController {self.gateway.id}>"


@dataclass
class _Pipe:
    node: Node
    buf: bytes = b""
    current: str | None = None
    finished: bool = False
    batch: list = field(default_factory=list)


class Controller:
    def __init__(self, config, session, replay: bool) -> None:
        self.config = config
        self.session = session
        self.replay = replay
        self.pipes: dict[int, _Pipe] = {}
        self.index = {item.nodeid: i for i, item in enumerate(session.items)}
        self.held: dict[str, tuple[Node, list]] = {}
        self.slots: set[str] = set()

    # -- fork ------------------------------------------------------------------------

    def in_child(self, session, write_fd: int) -> Relay:
        for fd in self.pipes:
            os.close(fd)
        self.pipes.clear()
        demote(self.config)
        relay = Relay(self.config, session, write_fd, self.replay)
        if self.replay:
            self.config.pluginmanager.register(relay, "shardex-relay")
        return relay

    def forked(self, slot: str, read_fd: int) -> None:
        os.set_blocking(read_fd, False)
        self.pipes[read_fd] = _Pipe(Node(self.config, slot))
        self.slots.add(slot)

    # -- reading ---------------------------------------------------------------------

    def fds(self) -> list[int]:
        return list(self.pipes)

    def readable(self, fd: int) -> bool:
        """Reads what is there; False once the pipe is done with (closed here)."""
        pipe = self.pipes[fd]
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        if chunk:
            pipe.buf += chunk
            while len(pipe.buf) >= 4:
                (size,) = struct.unpack(">I", pipe.buf[:4])
                if len(pipe.buf) < 4 + size:
                    break
                body, pipe.buf = pipe.buf[4 : 4 + size], pipe.buf[4 + size :]
                # Only our own forked children hold the write end of this pipe.
                for event in pickle.loads(body):
                    self._event(pipe, event)
        # After `finished` nothing more comes (a process the worker forked may still hold
        # the write end: no waiting for its EOF).
        if chunk and not pipe.finished:
            return True
        del self.pipes[fd]
        os.close(fd)
        self._down(pipe)
        return False

    def exited(self, slot: str) -> None:
        """The zygote reaped this slot's process: all it wrote is in the pipe."""
        for fd, pipe in list(self.pipes.items()):
            if pipe.node.gateway.id == slot:
                os.set_blocking(fd, True)
                while fd in self.pipes and self._has_data(fd):
                    self.readable(fd)
                if fd in self.pipes:
                    del self.pipes[fd]
                    os.close(fd)
                    self._down(pipe)

    @staticmethod
    def _has_data(fd: int) -> bool:
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)

    def _ihook(self, nodeid: str):
        index = self.index.get(nodeid)
        if index is None:
            return self.config.hook
        return self.session.items[index].ihook

    def _event(self, pipe: _Pipe, event) -> None:
        kind = event[0]
        if kind == "logstart":
            _, nodeid, location = event
            self._flush_held(nodeid, rerun=True)
            pipe.current = nodeid
            self._ihook(nodeid).pytest_runtest_logstart(nodeid=nodeid, location=location)
        elif kind == "done":
            batch, pipe.batch = pipe.batch, []
            nodeid, pipe.current = pipe.current, None
            if event[1] and nodeid is not None:
                self.held[nodeid] = (pipe.node, batch)
            else:
                self._replay(pipe.node, batch, rerun=False)
        elif kind == "finished":
            pipe.finished = True
            pipe.node.workeroutput = event[1]
            self._nodedown(pipe.node, None)
        else:
            pipe.batch.append(event)

    def _replay(self, node: Node, batch: list, rerun: bool) -> None:
        config = self.config
        for event in batch:
            kind = event[0]
            if kind == "report":
                rep = config.hook.pytest_report_from_serializable(config=config, data=event[1])
                if rerun and rep.outcome == "failed":
                    rep.outcome = "rerun"  # as pytest-rerunfailures logs a retried attempt
                rep.node = node
                self._ihook(rep.nodeid).pytest_runtest_logreport(report=rep)
            elif kind == "crash":
                rep = event[1]
                if rerun:
                    rep.outcome = "rerun"
                self._ihook(rep.nodeid).pytest_runtest_logreport(report=rep)
            elif kind == "logfinish":
                _, nodeid, location = event
                self._ihook(nodeid).pytest_runtest_logfinish(nodeid=nodeid, location=location)
            elif kind == "warning":
                _, data, when, nodeid, location = event
                message = _unserialize_warning(data)
                if message is not None:
                    kwargs = {"warning_message": message, "when": when, "nodeid": nodeid, "location": location}
                    config.hook.pytest_warning_recorded.call_historic(kwargs=kwargs)

    def _flush_held(self, nodeid: str, rerun: bool) -> None:
        held = self.held.pop(nodeid, None)
        if held is not None:
            self._replay(held[0], held[1], rerun=rerun)

    def _down(self, pipe: _Pipe) -> None:
        """The pipe ended: after `finished`, or the worker died (xdist's errordown)."""
        if pipe.finished:
            return
        node = pipe.node
        if pipe.current is not None:
            # xdist's report for the test a worker crashed in (handle_crashitem); a crash
            # may be retried, so it is held like a failed attempt.
            from _pytest.reports import TestReport

            nodeid = pipe.current
            fspath = nodeid.split("::")[0]
            msg = f"worker {node.gateway.id!r} crashed while running {nodeid!r}"
            rep = TestReport(nodeid, (fspath, None, fspath), {}, "failed", msg, "???")
            rep.node = node
            self.held[nodeid] = (node, [*pipe.batch, ("crash", rep)])
        self._nodedown(node, f"worker {node.gateway.id} ended without finishing its session")

    def _nodedown(self, node: Node, error) -> None:
        pm = self.config.pluginmanager
        if getattr(self.config.hook, "pytest_testnodedown", None) is None:
            return
        # pytest-cov's Central controller has no testnodedown (shardex bridges coverage).
        skip = [p for p in (pm.get_plugin("_cov"),) if p is not None]
        pm.subset_hook_caller("pytest_testnodedown", remove_plugins=skip)(node=node, error=error)

    # -- the end ---------------------------------------------------------------------

    def drain(self, reap) -> None:
        """After the agent's exit: every worker's end is read (the workers are gone or
        about to be), so each sessionfinish and testnodedown happened before the zygote's."""
        deadline = time.monotonic() + _SHUTDOWN_SECS
        while self.pipes and time.monotonic() < deadline:
            reap()
            try:
                ready, _, _ = select.select(self.fds(), [], [], 0.5)
            except InterruptedError:
                continue
            for fd in ready:
                if fd in self.pipes:
                    self.readable(fd)
        for fd, pipe in list(self.pipes.items()):
            del self.pipes[fd]
            os.close(fd)
            self._down(pipe)

    def finish(self) -> None:
        """Failed attempts that got no other attempt are final; the session then counts
        as xdist's controller would (syrupy compares its worker reports to this)."""
        for nodeid in list(self.held):
            self._flush_held(nodeid, rerun=False)
        self.config.option.numprocesses = max(1, len(self.slots))


def _unserialize_warning(data):
    try:
        if "xdist" in data:
            from xdist.workermanage import unserialize_warning_message

            return unserialize_warning_message(data["xdist"])

        return warnings.WarningMessage(UserWarning(data["text"]), UserWarning, data["filename"], data["lineno"])
    except Exception:
        return None
