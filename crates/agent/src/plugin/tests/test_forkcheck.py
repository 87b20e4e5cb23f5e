"""Threads alive at a fork are named with where they were started."""

from __future__ import annotations

import threading

from shardex_plugin import forkcheck


def test_a_thread_is_named_with_its_start_site():
    forkcheck.install()
    forkcheck.install()  # idempotent: one wrapper
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="poller", daemon=True)
    thread.start()  # the line named below
    try:
        assert thread in forkcheck.other_threads()
        line = forkcheck.hazard_warning([thread])
        assert "1 other thread running" in line and "--spawn" in line
        assert "'poller' (started at " in line and "test_forkcheck.py:" in line
        assert "in test_a_thread_is_named_with_its_start_site)" in line
    finally:
        stop.set()
        thread.join()
    assert forkcheck.hazard_warning([]) is None
