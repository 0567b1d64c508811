"""Analyses are bounded and fair: time limits, cancellation, close(), validated timings,
waiting across a replacement, and a capture set that concurrent definitions cannot
leave stale. ``DUCKFLOCK_ANALYSES_ROUNDS`` (default 20) lengthens the capture race."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import duckflock
from duckflock import ClosedError, QueryTimeoutError, ResultTimeoutError, UnknownAnalysisError
from duckflock.live import internals
from duckflock.live.results import Mailbox

RUNAWAY = "SELECT count(*) AS n FROM range(10000000000000::BIGINT)"
EVENTS = "CREATE TABLE events (k VARCHAR, v INTEGER)"
PER_K = "SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k ORDER BY k"
COUNT = "SELECT count(*) AS n FROM events"
ROUNDS = int(os.environ.get("DUCKFLOCK_ANALYSES_ROUNDS", "20"))


@pytest.fixture
def events() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    database.execute(EVENTS)
    yield database
    database.close()


def status(db: duckflock.Database, name: str) -> dict[str, Any]:
    return {a["name"]: a for a in db.analyses()}[name]


# -- time limits --------------------------------------------------------------------------


def test_a_run_past_its_time_limit_publishes_a_timeout_and_keeps_the_last_good_table(
    events: duckflock.Database,
) -> None:
    events.execute("CREATE TABLE knob (n BIGINT)")
    events.execute("INSERT INTO knob VALUES (10)")
    sql = "SELECT count(*) AS n FROM range((SELECT max(n) FROM knob))"
    events.analysis("slow", sql, timeout=1.0)
    good = events.result("slow", min_version=1, timeout=30)
    assert good is not None and good.error is None and good.rows() == [(10,)]
    events.execute("UPDATE knob SET n = 10000000000000")  # now it never ends by itself
    started = time.monotonic()
    late = events.refresh("slow", timeout=60)
    assert time.monotonic() - started < 30  # interrupted, not run to the end
    assert isinstance(late.error, QueryTimeoutError)
    assert "time limit of 1 s" in late.error.message
    assert late.error.sql == sql
    assert late.rows() == [(10,)]  # the last good table stays
    assert late.version == good.version + 1
    assert "time limit" in status(events, "slow")["error"]
    assert status(events, "slow")["timeout"] == 1.0
    events.execute("UPDATE knob SET n = 3")
    healed = events.refresh("slow", timeout=60)  # the same cursor serves the next run
    assert healed.error is None and healed.rows() == [(3,)]


def test_the_default_time_limit_comes_from_connect() -> None:
    with duckflock.connect(analysis_timeout=0.5) as db:
        db.analysis("runaway", RUNAWAY)
        assert status(db, "runaway")["timeout"] == 0.5
        result = db.result("runaway", min_version=1, timeout=60)
        assert result is not None and isinstance(result.error, QueryTimeoutError)
        db.analysis("own", RUNAWAY, timeout=30)
        assert status(db, "own")["timeout"] == 30


def test_interrupting_one_analysis_disturbs_no_other_cursor(events: duckflock.Database) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []
    counts = {"queries": 0, "inserts": 0}

    def reader() -> None:
        while not stop.is_set():
            try:
                events.execute("SELECT count(*), sum(v) FROM events").fetchall()
                counts["queries"] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    def writer() -> None:
        while not stop.is_set():
            try:
                events.insert("events", {"k": "w", "v": 1})
                counts["inserts"] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    try:
        events.analysis("runaway", RUNAWAY, timeout=0.5)
        first = events.result("runaway", min_version=1, timeout=60)
        assert first is not None and isinstance(first.error, QueryTimeoutError)
        for _ in range(2):  # more interrupts while the others keep going
            assert isinstance(events.refresh("runaway", timeout=60).error, QueryTimeoutError)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert counts["queries"] > 0 and counts["inserts"] > 0
    assert events.execute(COUNT).fetchone() == (counts["inserts"],)


def test_an_interrupted_incremental_rebuild_rolls_back_and_the_writer_is_not_held(
    events: duckflock.Database,
) -> None:
    events.insert("events", [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    events.analysis("agg", PER_K, timeout=3.0)
    first = events.result("agg", min_version=1, timeout=30)
    assert first is not None and status(events, "agg")["incremental"]
    analysis = internals.analysis(events, "agg")
    run = analysis.state
    shape = run.shape
    assert shape.plan is not None
    # the next rebuild's build query never ends by itself; the proxy says when it starts
    runaway_shape = dataclasses.replace(shape, plan=dataclasses.replace(shape.plan, build=RUNAWAY))
    building = threading.Event()
    events.execute("UPDATE events SET v = v + 10 WHERE k = 'a'")  # taints: rebuild next
    run.cursor = _Spy(run.cursor, RUNAWAY, building)  # type: ignore[assignment]
    run.shape = runaway_shape
    analysis.changes.reinspect = False  # keep the runaway plan (a write asks to plan again)
    outcome: list[duckflock.Result] = []
    refresher = threading.Thread(target=lambda: outcome.append(events.refresh("agg", timeout=60)))
    refresher.start()
    assert building.wait(30)  # the rebuild holds its pinned transaction now
    for i in range(3):  # commits go through meanwhile: the pin released the commit lock
        events.insert("events", {"k": "c", "v": i})
    assert refresher.is_alive()
    refresher.join(60)
    (late,) = outcome
    assert isinstance(late.error, QueryTimeoutError)
    assert late.rows() == first.rows()
    run.shape = shape
    healed = events.refresh("agg", timeout=60)  # same cursor: the transaction was rolled back
    assert healed.error is None and healed.mode == "full"
    assert healed.rows() == events.execute(PER_K).fetchall()
    events.insert("events", {"k": "a", "v": 100})
    folded = events.refresh("agg", timeout=60)
    assert folded.mode == "incremental"
    assert folded.rows() == events.execute(PER_K).fetchall()


class _Spy:
    """A cursor that sets ``event`` when it starts running ``sql``."""

    def __init__(self, cursor: Any, sql: str, event: threading.Event) -> None:
        self._cursor, self._sql, self._event = cursor, sql, event

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == self._sql:
            self._event.set()
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


# -- fairness and cancellation ------------------------------------------------------------


def test_a_runaway_does_not_stop_other_analyses_from_refreshing(
    events: duckflock.Database,
) -> None:
    events.analysis("runaway", RUNAWAY, timeout=600)  # holds one of the default workers
    events.analysis("cheap", COUNT, on_change=True, min_interval=0)
    seen = events.result("cheap", min_version=1, timeout=30)
    assert seen is not None
    for i in range(1, 6):
        events.insert("events", {"k": "a", "v": i})
        while seen.rows() != [(i,)]:  # each commit brings a new version, in bounded time
            seen = events.result("cheap", min_version=seen.version + 1, timeout=30)
            assert seen is not None
    assert events.refresh("cheap", timeout=30).rows() == [(5,)]
    runaway = status(events, "runaway")
    assert runaway["running"] and runaway["version"] == 0  # it was running all along
    started = time.monotonic()
    events.close()  # interrupts the runaway instead of waiting for it
    assert time.monotonic() - started < 10


def test_several_workers_by_default() -> None:
    with duckflock.connect() as db:
        db.analysis("one", "SELECT 1 AS one")
        db.result("one", min_version=1, timeout=30)
        workers = {t.name for t in threading.enumerate() if t.name.startswith("duckflock-an")}
        assert len(workers) >= 2


def test_drop_interrupts_a_running_analysis_and_publishes_nothing() -> None:
    with duckflock.connect(max_concurrent_analyses=1) as db:
        db.analysis("runaway", RUNAWAY, timeout=600)
        watcher = db.watch("runaway")
        waiting: list[BaseException] = []

        def wait() -> None:
            try:
                db.result("runaway", min_version=1)
            except UnknownAnalysisError as exc:
                waiting.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        db.drop_analysis("runaway")
        waiter.join(30)
        assert not waiter.is_alive() and len(waiting) == 1
        assert list(watcher) == []  # nothing published, and the watcher ended
        # the only worker is free again long before the runaway's 600 s limit
        db.analysis("next", "SELECT 42 AS answer")
        result = db.result("next", min_version=1, timeout=30)
        assert result is not None and result.rows() == [(42,)]


def test_replacing_a_running_analysis_interrupts_it() -> None:
    with duckflock.connect(max_concurrent_analyses=1) as db:
        db.analysis("x", RUNAWAY, timeout=600)
        db.analysis("x", "SELECT 42 AS answer")
        result = db.result("x", min_version=1, timeout=30)
        assert result is not None and result.rows() == [(42,)] and result.error is None
        assert result.version == 1  # the runaway published nothing


def test_result_right_after_a_replacement_waits_for_the_replacement() -> None:
    with duckflock.connect(max_concurrent_analyses=1) as db:
        db.analysis("x", "SELECT 1 AS old")
        old = db.result("x", min_version=1, timeout=30)
        assert old is not None
        db.analysis("blocker", RUNAWAY, timeout=600)  # holds the only worker
        db.analysis("x", "SELECT 2 AS new")  # cannot run before the blocker ends
        assert db.result("x") is None  # the old SQL's result is not the new one's
        with pytest.raises(ResultTimeoutError):  # before the fix: None at once
            db.result("x", min_version=old.version, timeout=0.05)
        outcome: list[Any] = []
        entered = threading.Event()

        def wait() -> None:
            entered.set()
            outcome.append(db.result("x", min_version=old.version, timeout=60))

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert entered.wait(30)
        db.drop_analysis("blocker")  # frees the worker: the replacement runs
        waiter.join(60)
        (new,) = outcome
        assert new.rows() == [(2,)] and new.version == old.version + 1
        assert db.refresh("x", timeout=30).rows() == [(2,)]


def test_refresh_follows_a_replacement_defined_while_it_waits() -> None:
    with duckflock.connect(max_concurrent_analyses=1) as db:
        db.analysis("x", RUNAWAY, timeout=600)
        outcome: list[Any] = []
        entered = threading.Event()

        def refresh() -> None:
            entered.set()
            outcome.append(db.refresh("x", timeout=60))

        refresher = threading.Thread(target=refresh)
        refresher.start()
        assert entered.wait(30)
        db.analysis("x", "SELECT 7 AS seven")
        refresher.join(60)
        assert not refresher.is_alive()
        (result,) = outcome
        assert result.rows() == [(7,)]


def test_refresh_right_after_a_result_waits_for_one_run_not_two(
    events: duckflock.Database,
) -> None:
    """A run that has published but whose thread has not finished yet (here: held in a
    reader's wake-up) is not "a run in progress" any more: refresh() must not wait for a
    second run that nothing schedules."""
    events.analysis("x", COUNT)
    assert events.result("x", min_version=1, timeout=30) is not None
    scheduler = internals.scheduler(events)
    schedule = internals.analysis(events, "x").schedule
    gate = threading.Event()
    blocked = threading.Event()

    def hold_the_worker() -> None:  # runs on the analysis thread, after the publish
        blocked.set()
        gate.wait(30)

    gate.set()  # attach() delivers the current result on this thread: let it through
    scheduler.readers.attach("x", Mailbox(on_put=hold_the_worker))
    blocked.clear()
    gate.clear()
    first = events.refresh("x", timeout=30)  # published; its thread is held now
    assert blocked.wait(30) and schedule.running
    outcome: list[Any] = []
    refresher = threading.Thread(target=lambda: outcome.append(events.refresh("x", timeout=30)))
    refresher.start()
    deadline = time.monotonic() + 30
    while not schedule.forced and refresher.is_alive() and time.monotonic() < deadline:
        threading.Event().wait(0.001)  # until refresh() has taken its target (a state)
    gate.set()
    refresher.join(60)
    (second,) = outcome
    assert second.version == first.version + 1


# -- close --------------------------------------------------------------------------------


def test_close_interrupts_runs_and_ends_every_wait_in_bounded_time() -> None:
    db = duckflock.connect(max_concurrent_analyses=1)
    db.execute(EVENTS)
    db.analysis("runaway", RUNAWAY, timeout=600)
    db.analysis("queued", COUNT)  # waits for the only worker
    endings: list[BaseException] = []
    entered = threading.Barrier(4)

    def wait(call: Any) -> None:
        entered.wait(30)
        try:
            call()
        except BaseException as exc:
            endings.append(exc)

    waiters = [
        threading.Thread(target=wait, args=(lambda: db.result("queued", min_version=10**6),)),
        threading.Thread(target=wait, args=(lambda: db.refresh("runaway"),)),
        threading.Thread(target=wait, args=(lambda: list(db.watch("queued")),)),
    ]
    for waiter in waiters:
        waiter.start()
    entered.wait(30)
    sub = db.subscribe("runaway", lambda result: None)
    started = time.monotonic()
    db.close()
    assert time.monotonic() - started < 10
    for waiter in waiters:
        waiter.join(30)
        assert not waiter.is_alive()
    assert not sub.active
    # result and refresh end with ClosedError (watch too, had close() come first)
    assert len(endings) >= 2 and all(isinstance(e, ClosedError) for e in endings)
    # (but the process's one reaper of dropped Databases: core/lifecycle.py)
    names = {t.name for t in threading.enumerate()} - {"duckflock-reaper"}
    assert not {n for n in names if n.startswith("duckflock-")}


# -- validated timings --------------------------------------------------------------------

BAD_SECONDS = [
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (-1, ValueError),
    (1e9, ValueError),  # past the one-day cap
    (True, TypeError),
    ("1", TypeError),
    ([1], TypeError),
]


@pytest.mark.parametrize(("value", "error"), [*BAD_SECONDS, (1e-9, ValueError), (0, ValueError)])
def test_every_is_a_finite_interval_of_at_least_10_ms(
    events: duckflock.Database, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"every must be a number of seconds from 0\.01 to 86400"):
        events.analysis("bad", COUNT, every=value)
    assert events.analyses() == []


@pytest.mark.parametrize(("value", "error"), [*BAD_SECONDS, (None, TypeError)])
def test_min_interval_is_finite_and_not_negative(
    events: duckflock.Database, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"min_interval must be a number of seconds from 0 to"):
        events.analysis("bad", COUNT, on_change=True, min_interval=value)


@pytest.mark.parametrize(("value", "error"), [*BAD_SECONDS, (1e-9, ValueError), (0, ValueError)])
def test_an_analysis_time_limit_is_finite_and_at_least_10_ms(
    events: duckflock.Database, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"timeout must be a number of seconds from 0\.01"):
        events.analysis("bad", COUNT, timeout=value)
    with pytest.raises(error, match=r"analysis_timeout must be a number of seconds from 0\.01"):
        duckflock.connect(analysis_timeout=value)


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_waits_are_finite_and_not_negative(
    events: duckflock.Database, value: Any, error: type[Exception]
) -> None:
    events.analysis("x", COUNT)
    with pytest.raises(error, match=r"timeout must be a number of seconds from 0 to 86400"):
        events.result("x", min_version=1, timeout=value)
    with pytest.raises(error, match=r"timeout must be a number of seconds from 0 to 86400"):
        events.refresh("x", timeout=value)
    subscription = events.subscribe("x", lambda result: None)
    with pytest.raises(error, match=r"timeout must be a number of seconds from 0 to 86400"):
        subscription.cancel(value)
    assert subscription.active
    subscription.cancel()
    assert not subscription.active


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (1.0, TypeError),
        (True, TypeError),
        ("1", TypeError),
        (math.nan, TypeError),
    ],
)
def test_min_version_is_a_non_negative_int(
    events: duckflock.Database, value: Any, error: type[Exception]
) -> None:
    events.analysis("x", COUNT)
    with pytest.raises(error, match="min_version must be an int from 0 up"):
        events.result("x", min_version=value, timeout=1)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (65, ValueError), (2.0, TypeError)])
def test_the_number_of_workers_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_concurrent_analyses must be an int from 1 to 64"):
        duckflock.connect(max_concurrent_analyses=value)


def test_timings_in_range_are_accepted(events: duckflock.Database) -> None:
    import numpy as np

    events.analysis("x", COUNT, every=0.01, min_interval=0, timeout=0.01 + 60)
    events.analysis("y", COUNT, every=np.float64(86400), min_interval=1, timeout=86400)
    assert events.result("y", min_version=np.int64(1), timeout=30) is not None
    assert events.result("x", min_version=0, timeout=30) is not None  # any result
    assert {a["every"] for a in events.analyses()} == {0.01, 86400.0}


# -- the capture set ----------------------------------------------------------------------


def test_concurrent_define_and_drop_never_leave_an_analysis_without_its_rows() -> None:
    """One thread defines an incremental analysis over ``events``, inserts, checks it
    against a full run and drops it, round after round, while two others churn
    definitions and inserts over ``other``. A capture set published out of order would
    leave ``events`` uncaptured while its analysis folds: the check would fail."""
    with duckflock.connect(max_concurrent_analyses=2) as db:
        db.execute(EVENTS)
        db.execute("CREATE TABLE other (x INTEGER)")

        def slow_publish(at: str) -> None:
            # not synchronisation: a delay in the churning thread's publishes widens the
            # window in which its older capture set could overwrite a newer one
            if at == "capture" and threading.current_thread().name == "churn":
                time.sleep(0.003)

        db.fault_hook = slow_publish
        rounds = ROUNDS
        start = threading.Barrier(3)
        done = threading.Event()
        failures: list[BaseException] = []
        mismatches: list[tuple[int, Any, Any]] = []

        def check_events() -> None:
            try:
                start.wait(30)
                for i in range(rounds):
                    db.analysis(f"e{i}", PER_K)
                    db.result(f"e{i}", min_version=1, timeout=60)  # the state is built
                    for j in range(3):
                        db.insert("events", {"k": f"k{j}", "v": i})
                    result = db.refresh(f"e{i}", timeout=60)
                    expected = db.execute(PER_K).fetchall()
                    if result.rows() != expected:
                        mismatches.append((i, result.rows(), expected))
                    db.drop_analysis(f"e{i}")
            except BaseException as exc:
                failures.append(exc)
            finally:
                done.set()

        def churn_other() -> None:
            try:
                start.wait(30)
                i = 0
                while not done.is_set():
                    db.analysis(f"o{i}", "SELECT x, count(*) AS n FROM other GROUP BY x")
                    if i:
                        db.drop_analysis(f"o{i - 1}")
                    i += 1
            except BaseException as exc:
                failures.append(exc)

        def insert_other() -> None:
            try:
                start.wait(30)
                i = 0
                while not done.is_set():
                    db.insert("other", {"x": i % 3})
                    i += 1
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=check_events),
            threading.Thread(target=churn_other, name="churn"),
            threading.Thread(target=insert_other),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        assert mismatches == []
        db.flush()
        writer = db.writer()
        assert writer is not None
        assert writer.capture == internals.scheduler(db).capture()
        for item in db.analyses():
            assert item["incremental"]
            result = db.refresh(item["name"], timeout=60)
            assert sorted(result.rows()) == sorted(db.execute(item["sql"]).fetchall())


def test_rows_the_writer_did_not_hand_over_make_the_state_rebuild(
    events: duckflock.Database,
) -> None:
    """Belt and braces: should the capture set ever miss a table, the next refresh
    rebuilds instead of folding onto a state that lacks rows."""
    events.insert("events", {"k": "a", "v": 1})
    events.analysis("agg", PER_K)
    events.result("agg", min_version=1, timeout=30)
    events.insert("events", {"k": "a", "v": 2})
    assert events.refresh("agg", timeout=30).mode == "incremental"
    writer = events.writer()
    assert writer is not None
    writer.capture = frozenset()  # as a stale publish would leave it
    events.insert("events", {"k": "b", "v": 5})
    result = events.refresh("agg", timeout=30)
    assert result.mode == "full"
    assert "not handed over" in status(events, "agg")["reason"]
    assert result.rows() == events.execute(PER_K).fetchall() == [("a", 2, 3), ("b", 1, 5)]
