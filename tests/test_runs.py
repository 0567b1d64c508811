"""Where a run runs: ``refresh()`` without a limit of its own runs it on the caller's
thread (no hand-off to an analysis thread and back), with every guarantee of a run on
an analysis thread: the time limit, close() and drop interrupt it, and the counts of
running analyses stay right."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import duckflock
from duckflock import ClosedError, QueryTimeoutError, UnknownAnalysisError
from duckflock.live import internals
from duckflock.live.clock import SYSTEM

EVENTS = "CREATE TABLE events (k VARCHAR, v INTEGER)"
PER_K = "SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k ORDER BY k"
# a full-run shape whose size a table sets: it never ends by itself at 10^13
KNOB = "SELECT count(*) AS n FROM range((SELECT max(n) FROM knob))"
ENDLESS = 10_000_000_000_000


class _Threads:
    """A cursor that records the thread of each statement, and says when one starts."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.threads: list[str] = []
        self.started = threading.Event()

    def execute(self, sql: str, *args: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _Looks:
    """The real clock, counting the scheduler thread's looks (it reads monotonic() once
    each time it wakes)."""

    def __init__(self) -> None:
        self.looks = 0

    def now(self) -> Any:
        return SYSTEM.now()

    def monotonic(self) -> float:
        if threading.current_thread().name == "duckflock-scheduler":
            self.looks += 1
        return SYSTEM.monotonic()


@pytest.fixture
def events() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute(EVENTS)
    database.execute("CREATE TABLE knob (n BIGINT)")
    database.execute("INSERT INTO knob VALUES (10)")
    yield database
    database.close()


def spy(db: duckflock.Database, name: str) -> _Threads:
    """Record the threads of ``name``'s statements (fault injection on its record)."""
    run = internals.analysis(db, name).state
    recorder = _Threads(run.cursor)
    run.cursor = recorder  # type: ignore[assignment]
    return recorder


def test_a_refresh_without_a_limit_runs_on_the_callers_thread(
    events: duckflock.Database,
) -> None:
    events.analysis("per_k", PER_K)
    assert events.result("per_k", min_version=1, timeout=30) is not None
    run = internals.analysis(events, "per_k").state
    run.fast = False  # the fold runs SQL: seen
    assert run.shape.plan is not None  # on the analysis's cursor, not a detached DuckDB
    run.shape = dataclasses.replace(
        run.shape, plan=dataclasses.replace(run.shape.plan, detached=None)
    )
    recorder = spy(events, "per_k")
    events.insert("events", {"k": "a", "v": 1})
    mine = events.refresh("per_k")
    assert mine.mode == "incremental" and mine.rows() == [("a", 1, 1)]
    assert recorder.threads and set(recorder.threads) == {threading.current_thread().name}
    recorder.threads.clear()
    events.insert("events", {"k": "b", "v": 2})
    theirs = events.refresh("per_k", timeout=30)  # a limit of the caller's: a worker runs it
    assert theirs.rows() == events.execute(PER_K).fetchall()
    assert recorder.threads and all(t.startswith("duckflock-analysis-") for t in recorder.threads)
    assert internals.scheduler(events).statuses()[0]["running"] is False


def test_a_run_on_the_callers_thread_keeps_the_analysis_time_limit(
    events: duckflock.Database,
) -> None:
    events.analysis("slow", KNOB, timeout=0.5)
    good = events.result("slow", min_version=1, timeout=30)
    assert good is not None and good.rows() == [(10,)]
    recorder = spy(events, "slow")
    events.execute(f"UPDATE knob SET n = {ENDLESS}")
    started = time.monotonic()
    late = events.refresh("slow")
    assert time.monotonic() - started < 30  # the watchdog interrupted this thread's run
    assert set(recorder.threads) == {threading.current_thread().name}
    assert isinstance(late.error, QueryTimeoutError) and late.rows() == [(10,)]
    events.execute("UPDATE knob SET n = 3")
    assert events.refresh("slow").rows() == [(3,)]  # and the next run is fine


@pytest.mark.parametrize("ending", ["close", "drop"])
def test_close_or_drop_interrupts_a_run_on_a_callers_thread(
    events: duckflock.Database, ending: str
) -> None:
    events.analysis("slow", KNOB, timeout=600)
    assert events.result("slow", min_version=1, timeout=30) is not None
    recorder = spy(events, "slow")
    events.execute(f"UPDATE knob SET n = {ENDLESS}")
    recorder.started.clear()
    outcome: list[BaseException | duckflock.Result] = []

    def refresh() -> None:
        try:
            outcome.append(events.refresh("slow"))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=refresh, name="the-caller")
    caller.start()
    assert recorder.started.wait(30)
    assert recorder.threads == ["the-caller"]
    started = time.monotonic()
    if ending == "close":
        events.close()
    else:
        events.drop_analysis("slow")
    caller.join(30)
    assert not caller.is_alive() and time.monotonic() - started < 30
    (raised,) = outcome
    assert isinstance(raised, ClosedError if ending == "close" else UnknownAnalysisError)
    if ending == "drop":  # the caller's run counted as running: the others still run
        events.analysis("again", PER_K)
        assert events.refresh("again").error is None


def test_commits_and_refreshes_of_on_demand_analyses_leave_the_scheduler_thread_asleep() -> None:
    clock = _Looks()
    with duckflock.connect() as db:
        internals.use_clock(db, clock)
        db.execute(EVENTS)
        db.analysis("per_k", PER_K)  # on demand: no interval, no on_change
        assert db.refresh("per_k").error is None
        before = clock.looks
        for i in range(20):
            db.insert("events", {"k": "a", "v": i})
            assert db.refresh("per_k").rows() == db.execute(PER_K).fetchall()
        # it has nothing to do with them (it wakes by itself at the time limit, 60 s):
        # waking it cost each commit and each refresh a thread switch
        assert clock.looks - before <= 2
        # while an on_change analysis is woken by the commits it reads, and an analysis
        # that became due while refresh() ran it is handed out when the run ends
        db.analysis("live", PER_K, on_change=True, min_interval=0)
        first = db.result("live", min_version=1, timeout=30)
        assert first is not None
        db.insert("events", {"k": "b", "v": 1})
        later = db.result("live", min_version=first.version + 1, timeout=30)
        assert later is not None and later.rows() == db.execute(PER_K).fetchall()
        db.analysis("tick", "SELECT count(*) AS n FROM events", every=0.05)
        assert db.refresh("tick").error is None
        ticked = db.result("tick", min_version=db.refresh("tick").version + 2, timeout=30)
        assert ticked is not None and ticked.rows() == [(21,)]
