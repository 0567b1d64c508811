"""Round 8's fixes of what round 7 noticed and left (helper fix8): each a test that
failed on main."""

from __future__ import annotations

import threading

import pytest

from duckflock.core import lifecycle


def test_the_exit_wait_for_the_reapers_closes_is_bounded_by_the_writers_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``reaped()`` (run at exit) waited without a bound for the closes handed to the
    reaper: a writer close that hung would hang the interpreter's exit. It waits as long
    as a writer's close does (``CLOSE_SECONDS``), no longer."""
    monkeypatch.setattr(lifecycle, "CLOSE_SECONDS", 0.05, raising=False)
    hung, done = threading.Event(), threading.Event()
    lifecycle._start_reaper()
    lifecycle._DROPPED.put(hung.wait)  # a close that does not return
    waiter = threading.Thread(target=lambda: (lifecycle.reaped(), done.set()), daemon=True)
    try:
        waiter.start()
        assert done.wait(10), "reaped() did not return"
    finally:
        hung.set()  # the reaper goes on
    waiter.join(10)
