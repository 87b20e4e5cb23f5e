"""The worker: runs the tests the agent sends, one ``pytest_runtest_protocol`` per item
with the right ``nextitem`` (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
import traceback

from . import internals
from .channel import connect
from .forkcheck import reseed_after_fork
from .junit import NO_JUNIT
from .reports import is_plain_pass
from .retries import retry_verdict
from .session_end import SESSION_ENDERS, session_exit_message
from .settings import SETTINGS, State
from .wire import encode

# Results of passing tests shorter than this are held back and sent together (one write
# and one agent wake-up for several tests), for at most _HOLD_SECS.
_QUICK_SECS = 0.001
_HOLD_SECS = 0.02
_HOLD_MAX = 128


class LocalQueue:
    """The tests sent to this worker and not started yet, with what the agent said about
    them. Shared under one lock by the main loop (which runs tests) and the reader thread
    (the socket's only reader), so that a `retract` is answered at once, even while a test
    hangs."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ids: list[str] = []
        # Tests that may take a while: what is held back goes out before one starts.
        self.slow: set[str] = set()
        self.flushed = False
        self.exiting = False
        self.closed = False  # the agent is gone
        self.later: list[dict] = []  # messages for the main loop
        # Hard failures announced (main thread) and answered with `proceed` (reader): no
        # test starts while one is unanswered, so under -x nothing runs after the failure
        # that stops the run, as in pytest (the agent answers `exit` then).
        self.announced = 0
        self.answered = 0

    def hard_failure_announced(self) -> None:
        with self.cond:
            self.announced += 1

    def apply(self, msg: dict):
        """A message from the agent (reader thread); returns the answer to send, if any."""
        t = msg["t"]
        answer = None
        with self.cond:
            if t == "run":
                ids = msg["ids"]
                self.ids.extend(ids)
                for index in msg.get("slow", ()):
                    self.slow.add(ids[index])
                self.flushed = False
            elif t == "flush":
                self.flushed = True
            elif t == "retract":
                asked = set(msg["ids"])
                removed = [nodeid for nodeid in self.ids if nodeid in asked]
                if removed:
                    self.ids = [nodeid for nodeid in self.ids if nodeid not in asked]
                    self.slow.difference_update(removed)
                answer = {"t": "retracted", "ids": removed}
            elif t == "proceed":
                self.answered += 1
            elif t == "exit":
                self.exiting = True
            else:
                self.later.append(msg)
            self.cond.notify()
        return answer

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


# `_next`'s nextitem when the agent said there is nothing more for now (`flush`).
FLUSHED = object()


class Worker:
    """Runs the tests the agent sends, keeping pytest's nextitem semantics."""

    def __init__(self, plugin, session, relay=None) -> None:
        self.plugin = plugin
        # Forked under a zygote that replays: each test's reports go to it too.
        self.relay = relay if relay is not None and relay.replay else None
        self.session = session
        self.items = {item.nodeid: item for item in session.items}
        self.local = LocalQueue()
        plugin.worker = self
        # The nextitem given to the last pytest_runtest_protocol: what it left set up.
        self.promised = None
        self.last_nodeid = ""
        self.reported_any = False
        self.held_since = 0.0
        # Every result is appended here before it is sent or held: if this process dies
        # with results held back, the agent reads them from this file (and so knows which
        # test the process died in).
        self.spool = -1
        slot = os.environ.get("PYTEST_XDIST_WORKER", "")
        if SETTINGS.rundir and slot:
            path = os.path.join(SETTINGS.rundir, f"{slot}.results")
            self.spool = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def _report(self, done: dict, passed: bool) -> None:
        channel = self.plugin.channel
        line = encode(done)
        if self.spool >= 0:
            os.write(self.spool, line)
        if not channel.held:
            self.held_since = time.perf_counter()
        channel.hold(line)
        # Anything that may stop the run (-x) or needs a retry goes out at once, as does
        # the first result (time to first result) and anything when the queue runs low
        # (the agent refills on results).
        hold = (
            passed
            and self.reported_any
            and self.spool >= 0
            and done["duration"] < _QUICK_SECS
            and len(channel.held) < _HOLD_MAX
            and len(self.local.ids) > 2
            and time.perf_counter() - self.held_since < _HOLD_SECS
        )
        self.reported_any = True
        if not hold:
            channel.release()

    def _read(self) -> None:
        """The reader thread: every message goes to the local queue; `retract` is answered
        from here."""
        channel = self.plugin.channel
        try:
            while True:
                answer = self.local.apply(channel.recv())
                if answer is not None:
                    channel.send(answer)
        except (EOFError, OSError):
            pass
        except Exception:
            try:
                channel.send({"t": "fatal", "message": traceback.format_exc()})
            except OSError:
                pass
        finally:
            self.local.close()

    def _handle_later(self) -> None:
        """Messages that act on pytest's state, in the main thread."""
        with self.local.cond:
            later, self.local.later = self.local.later, []
        for msg in later:
            if msg["t"] == "results":
                # --spawn (no zygote): this worker writes pytest's cache for the run; its
                # own session-finish would not (it is an xdist-like worker).
                config = self.plugin.config
                lastfailed = update_lastfailed(config, msg["failed"], msg["passed"])
                if lastfailed is not None and getattr(config, "cache", None) is not None:
                    config.cache.set("cache/lastfailed", lastfailed)

    def _wait(self) -> None:
        """Waits (holding the local queue's lock) for the agent; what is held goes out
        first."""
        self.plugin.channel.release()
        if self.local.closed:
            raise EOFError
        self.local.cond.wait()

    def serve(self) -> None:
        # Only now, in the worker: the zygote never runs a second thread (it forks).
        threading.Thread(target=self._read, name="shardex-reader", daemon=True).start()
        # SHARDEX_PROFILE=DIR: a cProfile of each worker's loop, for working on overhead.
        profile_dir = os.environ.get("SHARDEX_PROFILE")
        if not profile_dir:
            return self._serve()
        import cProfile

        profiler = cProfile.Profile()
        try:
            profiler.runcall(self._serve)
        finally:
            name = f"{os.environ.get('PYTEST_XDIST_WORKER')}-{os.getpid()}.prof"
            profiler.dump_stats(os.path.join(profile_dir, name))

    def _next(self):
        """The next test to run and its nextitem; None when the worker is to exit."""
        local = self.local
        with local.cond:
            while (not local.ids or local.answered < local.announced) and not local.exiting:
                self._wait()
            if local.exiting:
                return None
            nodeid = local.ids.pop(0)
            # nextitem decides which fixtures teardown keeps: wait until the next test
            # is known, or the agent says there is none for now.
            while not local.ids and not local.flushed and not local.exiting:
                self._wait()
            slow = nodeid in local.slow
            local.slow.discard(nodeid)
            nextid = local.ids[0] if local.ids and not local.exiting else None
            flushed = nextid is None and not local.exiting
        if slow:
            self.plugin.channel.release()
        if flushed:
            return nodeid, FLUSHED
        return nodeid, (None if nextid is None else self.items.get(nextid))

    def _keep_promise(self, item) -> None:
        """The last test ran with a nextitem that was taken back (`retract`): tear down
        what it kept set up that `item` does not need (None: everything), as pytest's
        teardown would have with `item` as the nextitem."""
        if self.promised is None or self.promised is item:
            return
        self.promised = None
        try:
            internals.teardown_exact(self.session, item)
        except Exception as exc:
            # pytest would report it as an error in the last test's teardown, which is sent.
            message = f"teardown after {self.last_nodeid} raised {type(exc).__name__}: {exc}"
            self.plugin.channel.send({"t": "warning", "nodeid": self.last_nodeid, "message": message})

    def _run_one(self, nodeid: str, item, nextitem) -> None:
        plugin = self.plugin
        plugin.reports = []
        plugin.raw_reports = []
        self._keep_promise(item)
        self.promised, self.last_nodeid = nextitem, nodeid
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        reports = plugin.reports
        duration = sum(r["duration"] for r in reports)
        done = {"t": "done", "id": nodeid, "duration": duration}
        if is_plain_pass(reports):
            done["pass"] = [r["duration"] for r in reports]
        else:
            done["reports"] = reports
        junit = plugin.junit.take()
        if junit is not NO_JUNIT:
            done["junit"] = junit
        verdict = retry_verdict(item, plugin.raw_reports)
        if verdict is not None:
            done["retry"] = verdict
        if self.relay is not None:
            self.relay.test_done(verdict)
        passed = verdict is None and all(r["outcome"] != "failed" for r in reports)
        self._report(done, passed)

    def _serve(self) -> None:
        channel = self.plugin.channel
        try:
            while True:
                step = self._next()
                if step is None:
                    break
                nodeid, nextitem = step
                item = self.items.get(nodeid)
                if item is None:
                    channel.send({"t": "fatal", "message": f"worker was sent an unknown test id: {nodeid}"})
                    continue
                if nextitem is FLUSHED:
                    # Nothing more known for now: tear down the test's own fixtures and
                    # keep its module, class and session set up, as xdist's workers keep
                    # the session until they shut down. What the next test (if any) does
                    # not need is torn down before it runs (_keep_promise), the rest at
                    # exit. (nextitem=None here would end the session's fixtures, and a
                    # later test would set them up again: pytest-django would name its
                    # test database test_db_gw0_gw0.)
                    nextitem = item.parent
                try:
                    self._run_one(nodeid, item, nextitem)
                except SESSION_ENDERS as exc:
                    channel.send(session_exit_message(self.plugin.config, exc))
                    break
                self._handle_later()
        except EOFError:
            pass
        finally:
            # `results` comes right before `exit`.
            self._handle_later()
            try:
                channel.release()
            except OSError:
                pass
            # Tear down whatever a last test with a nextitem left set up.
            try:
                internals.teardown_all(self.session)
            except Exception:
                pass


def update_lastfailed(config, failed, passed):
    """What pytest's cache plugin would have recorded had the tests run in this process
    (its `pytest_runtest_logreport`): the session-finish of the zygote then writes
    `cache/lastfailed`, so `--lf`/`--ff` work on the next run as with plain pytest.
    Returns the updated dict (None without the cache plugin)."""
    lfplugin = internals.lastfailed_plugin(config)
    if lfplugin is None:
        return None
    # Keys may be pytest's NodeId objects: as its session-finish does, keep strings.
    lastfailed = {str(nodeid): value for nodeid, value in lfplugin.lastfailed.items()}
    for nodeid in passed:
        lastfailed.pop(nodeid, None)
    for nodeid in failed:
        lastfailed[nodeid] = True
    lfplugin.lastfailed = lastfailed
    return lastfailed


def become_worker(plugin, slot: str, forked: bool) -> None:
    config = plugin.config
    os.environ["PYTEST_XDIST_WORKER"] = slot
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(SETTINGS.worker_count)
    os.environ["PYTEST_XDIST_TESTRUNUID"] = SETTINGS.testrunuid
    # What pytest-django (and xdist's worker_id/testrun_uid fixtures) read: each slot
    # gets its own test DB, test_<name>_gwN, reused by --reuse-db across runs.
    config.workerinput = {
        "workerid": slot,
        "workercount": SETTINGS.worker_count,
        "testrunuid": SETTINGS.testrunuid,
        "mainargv": list(sys.argv),
    }
    config.workeroutput = {}
    if forked:
        _reset_after_fork(plugin, slot)
        plugin.channel = connect("worker", slot)


def _reset_after_fork(plugin, slot: str) -> None:
    config = plugin.config
    reseed_after_fork(config)
    # Per-worker stderr (crash tails) with capture restarted on fresh temp files:
    # the zygote's capture files must not be shared between workers.
    capman = internals.capture_manager(config)
    internals.stop_global_capture(capman)
    if SETTINGS.rundir:
        fd = os.open(os.path.join(SETTINGS.rundir, f"{slot}.err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    # faulthandler keeps a file descriptor number: give it its own copy, since fd 2 is
    # swapped for a capture file while tests run. Its traceback is the crash tail.
    try:
        plugin.fault_fd = os.dup(2)
        faulthandler.enable(file=plugin.fault_fd, all_threads=True)
    except Exception:
        pass
    restart_capture_into_rundir(capman, slot)
    # Each worker gets its own basetemp under the run's, as xdist does (popen-gwN).
    if State.zygote_basetemp is not None:
        set_worker_basetemp(config, slot, State.zygote_basetemp)


def restart_capture_into_rundir(capman, slot: str) -> None:
    """Starts pytest's global capture again on named files in the run folder: if the
    worker dies mid-test, the agent reads what the test printed before it died from
    there."""
    counter = iter(range(1_000_000))

    def named_file():
        if not SETTINGS.rundir:
            return None
        path = os.path.join(SETTINGS.rundir, f"{slot}.capture{next(counter)}")
        return open(path, "w+b", buffering=0)  # pytest's capture owns it

    internals.start_global_capture_into(capman, named_file)


def spawn_basetemp_root() -> str:
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return os.path.join(tempfile.gettempdir(), f"pytest-of-{user}", f"shardex-{SETTINGS.testrunuid or os.getpid()}")


def set_worker_basetemp(config, slot: str, root: str) -> None:
    if not internals.has_tmp_path_factory(config):
        return
    os.makedirs(root, mode=0o700, exist_ok=True)
    internals.set_basetemp(config, os.path.join(root, f"popen-{slot}"))
