"""A forked worker's side of the zygote-as-xdist-controller (PYTEST_DONT_REWRITE).

What an xdist worker sends its controller (xdist's remote.py), this sends the zygote on
a pipe the zygote made at fork (controller.py): each test's logstart, reports (as
``pytest_report_to_serializable`` dicts with ``item_index``, ``worker_id``,
``testrun_uid``), warnings and logfinish, then ``config.workeroutput`` after the worker's
own ``pytest_sessionfinish``. Frames are a 4-byte length and a pickle: worker and zygote
are the same interpreter, and pickle keeps the tuples and bytes a JSON round trip would
turn into lists and strings (skip reports, syrupy's workeroutput).
"""

from __future__ import annotations

import os
import pickle
import struct
import traceback


def _metadata(config):
    """pytest-metadata's dict: its pytest_testnodedown reads workeroutput["metadata"]."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return None
    return config.stash.get(metadata_key, None)


def pack(message) -> bytes:
    try:
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        # A plugin put something unpicklable in a report (user_properties...): its text.
        body = pickle.dumps(_printable(message), protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack(">I", len(body)) + body


def _printable(value):
    if isinstance(value, dict):
        return {str(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_printable(v) for v in value)
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    return repr(value)


def _serialize_warning(warning_message) -> dict:
    try:
        from xdist.remote import serialize_warning_message

        return {"xdist": serialize_warning_message(warning_message)}
    except Exception:
        return {
            "text": str(warning_message.message),
            "filename": warning_message.filename,
            "lineno": warning_message.lineno,
        }


class Relay:
    """Registered in a forked worker when the zygote replays (see controller.decide)."""

    def __init__(self, config, session, fd: int, replay: bool) -> None:
        self.config = config
        self.fd = fd
        self.replay = replay
        self.index = {item.nodeid: i for i, item in enumerate(session.items)}
        self.slot = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        self.testrunuid = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def send(self, message) -> None:
        self._write(pack(message))

    # -- hooks (only while replaying) ----------------------------------------------
    # Each event goes out at once (one write each): when a test kills the worker, the
    # zygote has what was logged before, as xdist's controller has.

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.send([("logstart", nodeid, location)])

    def pytest_runtest_logreport(self, report) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        data["item_index"] = self.index.get(report.nodeid, -1)
        data["worker_id"] = self.slot
        data["testrun_uid"] = self.testrunuid
        self.send([("report", data)])

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        self.send([("logfinish", nodeid, location)])

    def pytest_warning_recorded(self, warning_message, when, nodeid, location) -> None:
        if when == "runtest":
            self.send([("warning", _serialize_warning(warning_message), when, nodeid, location)])

    def test_done(self, retry_verdict) -> None:
        """After each test, marked when shardex may retry it: the zygote then holds the
        test's events until it knows whether another attempt came."""
        self.send([("done", bool(retry_verdict and retry_verdict.get("eligible")))])

    # -- the end ---------------------------------------------------------------------

    def finish(self, session) -> None:
        """The worker's pytest_sessionfinish (what xdist workers run, less pytest's terminal
        and report writers, demoted at fork), then workeroutput to the zygote."""
        config = self.config
        output = config.workeroutput
        exitstatus = 1 if session.testsfailed else 0
        output["exitstatus"] = exitstatus
        output["shouldfail"] = bool(session.shouldfail)
        output["shouldstop"] = bool(session.shouldstop)
        metadata = _metadata(config)
        if metadata is not None:
            output["metadata"] = metadata
        pm = config.pluginmanager
        skip = [p for p in (pm.get_plugin("terminalreporter"), pm.get_plugin("_cov")) if p is not None]
        try:
            hook = pm.subset_hook_caller("pytest_sessionfinish", remove_plugins=skip)
            hook(session=session, exitstatus=exitstatus)
        except Exception:
            traceback.print_exc()
        self.send([("finished", dict(output))])
        os.close(self.fd)


def demote(config) -> None:
    """A fork inherits the zygote's controller roles, decided at configure time: the
    plugins that write a report or a file once per session are swapped for what they are
    on an xdist worker (as if ``config.workerinput`` had been set at configure)."""
    pm = config.pluginmanager
    for plugin in list(pm.get_plugins()):
        cls = type(plugin)
        module = getattr(cls, "__module__", "") or ""
        if module.startswith("pytest_html.") and cls.__name__.endswith("Report"):
            pm.unregister(plugin)  # pytest-html: Report / SelfContainedReport
        elif module.startswith("pytest_split.") and cls.__name__ == "PytestSplitCachePlugin":
            pm.unregister(plugin)
        elif module.startswith("pytest_jsonreport.") and cls.__name__ == "JSONReport":
            from pytest_jsonreport.plugin import JSONReportWorker

            pm.unregister(plugin)
            worker = JSONReportWorker(config)
            # Its hookspecs are already added: registering them twice raises.
            worker.pytest_addhooks = None
            config._json_report = worker
            pm.register(worker)
