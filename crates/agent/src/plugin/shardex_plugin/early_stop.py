"""Hard failures announced early (PYTEST_DONT_REWRITE): under ``-x``/``--maxfail`` the
agent stops the other workers as soon as it knows a failure is final, not after pytest has
rendered the traceback, torn the test down and reported it (which can take long)."""

from __future__ import annotations

import unittest

import pytest

from .retries import reruns_count

# Exceptions that make a phase skipped (or xfailed), not failed.
_NOT_FAILURES = (pytest.skip.Exception, pytest.xfail.Exception, unittest.SkipTest)


def announce_hard_failure(channel, item, call) -> bool:
    """Sends ``hard_failure`` when the setup or call phase of a test that is never retried
    raised (before its report is made: rendering the traceback is the slow part). Not for
    a test with an ``xfail`` marker, whose failure may be expected. Returns whether it was
    sent: the agent then answers ``proceed`` (or ``exit``, when the run stops)."""
    if channel is None or call.excinfo is None or call.when == "teardown":
        return False
    try:
        if (
            call.excinfo.errisinstance(_NOT_FAILURES)
            or item.get_closest_marker("xfail") is not None
            or reruns_count(item) > 0  # a retry is the agent's call, on the whole result
        ):
            return False
    except Exception:
        return False
    channel.send({"t": "hard_failure", "id": item.nodeid})
    return True
