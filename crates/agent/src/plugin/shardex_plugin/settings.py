"""How this process was launched, and the run's settings (PYTEST_DONT_REWRITE)."""

from __future__ import annotations

# The version of the `configure` message this plugin reads (SETTINGS_VERSION in protocol.rs).
SETTINGS_VERSION = 1


class ProtocolError(RuntimeError):
    """The agent spoke something this plugin does not understand."""


class Launch:
    """What the agent told this process when it started it: set by the bootstrap (see
    plugin/mod.rs), which takes it out of the environment before anything else runs."""

    def __init__(self) -> None:
        self.mode = ""
        self.socket = ""
        self.secret = ""

    def active(self) -> bool:
        return self.mode in ("zygote", "worker") and bool(self.socket)


class RunSettings:
    """The run's settings, from the agent's `configure` message (RunSettings in protocol.rs).
    The defaults hold only until it arrives."""

    def __init__(self) -> None:
        self.worker_count = 1
        self.testrunuid = ""
        self.color = False
        self.width = 80
        # pytest-rerunfailures' flags as given to shardex (RetryFlags in protocol.rs).
        self.retry: dict = {}
        # JUnit testcases are built only when the agent writes a report.
        self.junit = True
        # --dist loadgroup: items carry their xdist_group.
        self.loadgroup = False
        # Per-worker stderr, capture and result-spool files go there.
        self.rundir = ""
        # shardex's --timeout (seconds), for pytest-timeout's precedence (consumed.py).
        self.timeout: float | None = None

    def apply(self, msg) -> None:
        """Takes every setting from a `configure` message."""
        if not isinstance(msg, dict) or msg.get("t") != "configure":
            kind = msg.get("t") if isinstance(msg, dict) else type(msg).__name__
            raise ProtocolError(f"expected the agent's configure message, got {kind!r}")
        if msg.get("v") != SETTINGS_VERSION:
            raise ProtocolError(f"agent sent run settings v{msg.get('v')}, this plugin reads v{SETTINGS_VERSION}")
        try:
            self.worker_count = int(msg["worker_count"])
            self.testrunuid = str(msg["testrunuid"])
            self.color = bool(msg["color"])
            self.width = int(msg["width"])
            self.retry = dict(msg["retry"])
            self.junit = bool(msg["junit"])
            self.loadgroup = bool(msg["loadgroup"])
            self.rundir = str(msg["rundir"])
            timeout = msg.get("timeout")
            self.timeout = None if timeout is None else float(timeout)
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError(f"malformed configure message: {error!r}") from error


LAUNCH = Launch()
SETTINGS = RunSettings()


class State:
    """Set by the zygote before it forks: what each worker derives its own from."""

    zygote_basetemp: str | None = None
