"""A test that ends the whole session (PYTEST_DONT_REWRITE): ``pytest.exit(...)`` or a
``KeyboardInterrupt`` raised in it escapes ``pytest_runtest_protocol``, as in plain pytest.
The worker tells the agent how pytest would end (its exit status and closing lines) and
exits; the agent ends the run."""

from __future__ import annotations

import io

import pytest

from . import internals
from .settings import SETTINGS

# What ends the session when raised in a test (pytest's own `wrap_session` catches these).
SESSION_ENDERS = (KeyboardInterrupt, pytest.exit.Exception)

_INTERRUPTED = 2


def session_exit_message(config, exc: BaseException) -> dict:
    """`session_exit`: pytest's exit status for `exc` and what its terminal reporter prints
    for it (`_report_keyboardinterrupt`)."""
    returncode = getattr(exc, "returncode", None)
    if not isinstance(exc, pytest.exit.Exception) or returncode is None:
        returncode = _INTERRUPTED
    reason = f"{type(exc).__name__}: {exc}"
    details = ""
    try:
        excinfo = pytest.ExceptionInfo.from_exc_info((type(exc), exc, exc.__traceback__))
        excrepr = excinfo.getrepr(funcargs=True)
        reason = excrepr.reprcrash.message
        if "KeyboardInterrupt" in reason:
            buf = io.StringIO()
            tw = internals.terminal_writer(buf, SETTINGS.color, SETTINGS.width)
            if config.option.fulltrace:
                excrepr.toterminal(tw)
            else:
                excrepr.reprcrash.toterminal(tw)
                tw.line("(to show a full traceback on KeyboardInterrupt use --full-trace)", yellow=True)
            details = buf.getvalue()
    except Exception:
        pass
    return {"t": "session_exit", "returncode": int(returncode), "reason": reason, "details": details}
