"""The zygote: collects once, forks a worker per slot on the agent's request, reaps its
children and reports their exit status (PYTEST_DONT_REWRITE).

Forking after collection shares imports, conftests and collection copy-on-write.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import traceback

from . import internals
from .consumed import item_timeout, loadgroup
from .controller import Controller, decide
from .cov import coverage_in_fork, save_coverage
from .dbclone import TemplateDb
from .ending import ControllerEnd
from .forkcheck import before_fork
from .retries import flaky_marker, retry_rules
from .settings import SETTINGS, State
from .worker import Worker, become_worker, update_lastfailed


def item_info(item) -> dict:
    path, lineno, _ = item.location
    info = {"id": item.nodeid, "file": path.replace(os.sep, "/"), "line": lineno}
    marker = flaky_marker(item)
    if marker is not None:
        info["retry"] = retry_rules(item, marker)
    info.update(item_timeout(item))
    if loadgroup():
        # pytest-xdist's name for the group (its WorkerInteractor, --dist loadgroup).
        group = item.get_closest_marker("xdist_group")
        if group is not None:
            info["group"] = str(group.args[0] if group.args else group.kwargs.get("name", "default"))
    return info


def failed_before(session) -> list:
    """Collected tests that failed in the previous run (pytest's cache): under -x/--maxfail
    the agent schedules them first, so a failure shows as early as possible."""
    plugin = internals.lastfailed_plugin(session.config)
    if plugin is None:
        return []
    # pytest 9 keys the dict by NodeId objects, older versions by strings.
    failed = {str(key) for key in plugin.lastfailed}
    return [item.nodeid for item in session.items if item.nodeid in failed]


def collectionfinish_lines(session) -> list:
    """The lines pytest's terminal reporter prints after "collected N items" (its
    `pytest_collection_finish`), flattened in its order."""
    config = session.config
    try:
        results = config.hook.pytest_report_collectionfinish(
            config=config, start_path=config.invocation_params.dir, items=session.items
        )
    except Exception:
        return []
    lines = []
    for line_or_lines in reversed(results):
        if isinstance(line_or_lines, str):
            lines.append(line_or_lines)
        else:
            lines.extend(str(line) for line in line_or_lines)
    return lines


def _close_django_connections() -> None:
    # A DB connection must not cross a fork (two processes on one socket).
    django_db = sys.modules.get("django.db")
    if django_db is not None:
        try:
            django_db.connections.close_all()
        except Exception:
            pass


class Zygote:
    """Forks workers on request; reports their deaths."""

    def __init__(self, plugin, session) -> None:
        self.plugin = plugin
        self.session = session
        self.children: dict[int, str] = {}
        # Whether any worker was forked (else the session ends as plain pytest's).
        self.forked_any = False
        # The zygote plays xdist's controller when a plugin reads what workers did.
        replay, nodes = decide(plugin.config)
        self.controller = Controller(plugin.config, session, replay) if nodes else None
        # pytest-django: one migrated template DB, cloned for each slot before its fork.
        self.dbclone = TemplateDb(plugin, session)
        plugin.controller = self.controller
        if self.controller is not None:
            plugin.controller_end = ControllerEnd(plugin)
            plugin.config.pluginmanager.register(plugin.controller_end, "shardex-controller-end")

    def serve(self) -> None:
        channel = self.plugin.channel
        State.zygote_basetemp = internals.basetemp(self.plugin.config)
        _close_django_connections()
        # Objects that exist now are never collected in the workers: keeping the GC away
        # from them keeps their pages shared (no copy-on-write from GC bookkeeping).
        gc.collect()
        gc.freeze()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while True:
                self._reap()
                pipes = self.controller.fds() if self.controller is not None else []
                try:
                    ready, _, _ = select.select([channel.sock, wake_r, *pipes], [], [], 1.0)
                except InterruptedError:
                    continue
                if wake_r in ready:
                    try:
                        os.read(wake_r, 4096)
                    except OSError:
                        pass
                for fd in pipes:
                    if fd in ready:
                        self.controller.readable(fd)
                if (channel.sock in ready or channel.buf) and not self._handle_messages(wake_r, wake_w):
                    if self.controller is not None:
                        self.controller.drain(self._reap)
                        self.controller.finish()
                    return
        finally:
            signal.set_wakeup_fd(-1)
            for pid in list(self.children):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except OSError:
                    pass
            self.dbclone.finish(alive=set(self.children.values()))

    def _handle_messages(self, wake_r: int, wake_w: int) -> bool:
        """Handles what the agent sent; False when the zygote is to end."""
        channel = self.plugin.channel
        try:
            msg = channel.recv(timeout=0)
        except EOFError:
            return False
        while msg is not None:
            if msg["t"] == "fork":
                self._fork(msg["slot"], wake_r, wake_w)
            elif msg["t"] == "configure":
                # Settings pytest's own options changed (-n from addopts): before any fork.
                SETTINGS.apply(msg)
            elif msg["t"] == "results":
                update_lastfailed(self.plugin.config, msg["failed"], msg["passed"])
            elif msg["t"] == "exit":
                return False
            msg = channel.pop_line()
        self.dbclone.after_forks(SETTINGS.worker_count)
        return True

    def _fork(self, slot: str, wake_r: int, wake_w: int) -> None:
        plugin = self.plugin
        self.dbclone.before_fork(slot, SETTINGS.worker_count)
        before_fork(plugin.channel)
        controller = self.controller
        pipe_r, pipe_w = os.pipe() if controller is not None else (-1, -1)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.close(wake_r)
                os.close(wake_w)
                plugin.channel.close()
                plugin.controller = None
                become_worker(plugin, slot, forked=True)
                self.dbclone.in_worker(slot)
                relay = None
                if controller is not None:
                    os.close(pipe_r)
                    relay = controller.in_child(self.session, pipe_w)
                cov = coverage_in_fork(plugin.config)
                Worker(plugin, self.session, relay).serve()
                save_coverage(cov)
                if relay is not None:
                    relay.finish(self.session)
            except BaseException:
                code = 70
                try:
                    traceback.print_exc()
                    sys.stderr.flush()
                except Exception:
                    pass
            finally:
                os._exit(code)
        try:
            os.setpgid(pid, pid)  # both sides set it: no window where a killpg misses
        except OSError:
            pass
        self.children[pid] = slot
        self.forked_any = True
        if controller is not None:
            os.close(pipe_w)
            controller.forked(slot, pipe_r)
        plugin.channel.send({"t": "forked", "slot": slot, "pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            if self.controller is not None:
                self.controller.exited(slot)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            self.plugin.channel.send({"t": "exited", "slot": slot, "pid": pid, "code": code, "signal": sig})
