"""How this process was launched, and the run's settings (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

import json
import os


class Launch:
    """What the agent told this process when it started it."""

    def __init__(self) -> None:
        self.mode = os.environ.get("SHARDEX_MODE", "")
        self.socket = os.environ.get("SHARDEX_SOCKET", "")

    def active(self) -> bool:
        return self.mode in ("zygote", "worker") and bool(self.socket)


class RunSettings:
    """The run's settings (see RunSettings in protocol.rs)."""

    def __init__(self) -> None:
        self.rundir = os.environ.get("SHARDEX_RUNDIR", "")
        self.worker_count = int(os.environ.get("SHARDEX_WORKER_COUNT", "1") or 1)
        self.testrunuid = os.environ.get("SHARDEX_TESTRUNUID", "")
        self.color = os.environ.get("SHARDEX_COLOR", "") == "1"
        self.width = int(os.environ.get("SHARDEX_WIDTH", "80") or 80)
        # pytest-rerunfailures' flags as given to shardex (see RetryFlags in config.rs).
        self.retry = json.loads(os.environ.get("SHARDEX_RETRY") or "{}")
        # JUnit testcases are built only when the agent writes a report.
        self.junit = os.environ.get("SHARDEX_JUNIT", "1") == "1"
        # --dist loadgroup: items carry their xdist_group.
        self.loadgroup = os.environ.get("SHARDEX_LOADGROUP", "") == "1"


LAUNCH = Launch()
SETTINGS = RunSettings()


class State:
    """Set by the zygote before it forks: what each worker derives its own from."""

    zygote_basetemp: str | None = None
