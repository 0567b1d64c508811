"""Live analyses: triggers, debouncing, cached results, push to watchers and subscribers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from typing import Any

import pytest

import duckflock
from duckflock import (
    CatalogError,
    ClosedError,
    ParserError,
    Result,
    ResultTimeoutError,
    UnknownAnalysisError,
)
from duckflock.live import internals
from duckflock.live.clock import SYSTEM
from duckflock.live.results import Mode

EVENTS = "CREATE TABLE events (k VARCHAR, v INTEGER)"
PER_K = "SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k ORDER BY k"


@pytest.fixture
def events(db: duckflock.Database) -> duckflock.Database:
    db.execute(EVENTS)
    return db


def test_interval_trigger_fires_repeatedly(events: duckflock.Database) -> None:
    events.analysis("tick", "SELECT count(*) AS n FROM events", every=0.02)
    first = events.result("tick", min_version=1, timeout=30)
    assert first is not None
    # two runs after the first one seen (under load, the first seen may be the third run)
    third = events.result("tick", min_version=first.version + 2, timeout=30)
    assert third is not None
    assert third.version >= first.version + 2
    assert third.refreshed_at > first.refreshed_at
    assert third.duration >= 0


def test_on_change_trigger_reflects_the_commit(events: duckflock.Database) -> None:
    events.analysis("per_k", PER_K, on_change=True, min_interval=0)
    events.analysis("still", PER_K)  # no trigger: runs once, then only on request
    base = events.result("per_k", min_version=1, timeout=30)
    assert base is not None
    assert events.result("still", min_version=1, timeout=30) is not None
    events.insert("events", [{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}])
    fresh = events.result("per_k", min_version=base.version + 1, timeout=30)
    assert fresh is not None
    assert fresh.rows() == [("a", 2, 4), ("b", 1, 2)]
    assert fresh.watermark >= 1
    still = events.result("still")
    assert still is not None and still.version == 1 and still.rows() == []
    assert events.refresh("still").rows() == [("a", 2, 4), ("b", 1, 2)]


def test_on_change_ignores_commits_to_other_tables(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.execute("CREATE TABLE other (x INTEGER)")
    memdb.analysis("per_k", PER_K, on_change=True, min_interval=0)
    memdb.analysis("clock", "SELECT count(*) FROM other", on_change=True, min_interval=0)
    before = memdb.result("per_k", min_version=1, timeout=30)
    clock = memdb.result("clock", min_version=1, timeout=30)
    assert before is not None and clock is not None
    memdb.insert("other", {"x": 1})
    memdb.result("clock", min_version=clock.version + 1, timeout=30)
    memdb.flush()
    after = memdb.result("per_k")
    assert after is not None and after.version == before.version


def test_a_burst_of_commits_is_coalesced(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("per_k", PER_K, on_change=True, min_interval=0.2)
    memdb.result("per_k", min_version=1, timeout=30)
    started = time.monotonic()
    for i in range(300):
        memdb.insert("events", {"k": "a", "v": i})  # 300 separate commits
    elapsed = time.monotonic() - started
    final = memdb.refresh("per_k")
    assert final.rows() == [("a", 300, sum(range(300)))]
    # at most one run per min_interval, plus the first, the forced one and one in flight
    assert final.version <= elapsed / 0.2 + 4
    assert final.version < 300 / 10


def test_a_failing_analysis_keeps_its_schedule_and_last_good_table(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("fragile", "SELECT sum(CAST(k AS INTEGER)) AS total FROM events", on_change=True)
    memdb.analysis("per_k", PER_K, on_change=True, min_interval=0)
    memdb.insert("events", {"k": "7", "v": 1})
    good = memdb.refresh("fragile")
    assert good.error is None and good.rows() == [(7,)]
    memdb.insert("events", {"k": "seven", "v": 1})
    failed = memdb.refresh("fragile")
    assert isinstance(failed.error, duckflock.ConversionError)
    assert failed.rows() == [(7,)]  # the previous good table stays available
    assert failed.version == good.version + 1
    status = {a["name"]: a for a in memdb.analyses()}
    assert "seven" in status["fragile"]["error"]
    assert status["per_k"]["error"] is None
    assert memdb.refresh("per_k").rows() == [("7", 1, 1), ("seven", 1, 1)]
    memdb.execute("DELETE FROM events WHERE k = 'seven'")
    healed = memdb.refresh("fragile")
    assert healed.error is None and healed.rows() == [(7,)]


def test_result_waits_for_a_version_or_times_out(events: duckflock.Database) -> None:
    events.analysis("once", "SELECT 1 AS one FROM events LIMIT 1")
    events.result("once", min_version=1, timeout=30)
    with pytest.raises(ResultTimeoutError, match="version 5"):
        events.result("once", min_version=5, timeout=0.05)
    with pytest.raises(UnknownAnalysisError, match="nope"):
        events.result("nope")
    with pytest.raises(KeyError):  # UnknownAnalysisError is a KeyError too
        events.drop_analysis("nope")


def test_definition_errors(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    with pytest.raises(ParserError):
        memdb.analysis("bad", "SELEC 1")
    with pytest.raises(CatalogError, match="nowhere"):
        memdb.analysis("bad", "SELECT * FROM nowhere")
    with pytest.raises(ValueError, match="every"):
        memdb.analysis("bad", PER_K, every=0)
    with pytest.raises(ValueError, match="min_interval"):
        memdb.analysis("bad", PER_K, min_interval=-1)
    with pytest.raises(ValueError, match="name"):
        memdb.analysis("", PER_K)
    with pytest.raises(TypeError, match="sql"):
        memdb.analysis("bad", 42)  # type: ignore[arg-type]
    assert memdb.analyses() == []


def test_parameters_and_status(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.insert("events", [{"k": "a", "v": 5}, {"k": "b", "v": 50}])
    memdb.analysis("big", "SELECT k FROM events WHERE v > ? ORDER BY k", params=[10], every=60)
    result = memdb.result("big", min_version=1, timeout=30)
    assert result is not None and result.rows() == [("b",)]
    assert list(result.df()["k"]) == ["b"]
    (status,) = memdb.analyses()
    assert status["name"] == "big"
    assert status["every"] == 60
    assert status["tables"] == ["events"]
    assert status["rows"] == 1
    assert status["mode"] == "full"
    assert "parameters" in status["reason"]
    assert status["last_refresh"] is not None


def test_replacing_keeps_versions_growing_and_drop_ends_watchers(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("x", "SELECT count(*) FROM events")
    first = memdb.result("x", min_version=1, timeout=30)
    assert first is not None
    watcher = memdb.watch("x")
    assert next(watcher).version == first.version
    memdb.analysis("x", "SELECT count(*) + 100 FROM events")
    replaced = memdb.result("x", min_version=first.version + 1, timeout=30)
    assert replaced is not None and replaced.rows() == [(100,)]
    assert next(watcher).version == replaced.version
    memdb.drop_analysis("x")
    assert list(watcher) == []  # ends cleanly
    with pytest.raises(UnknownAnalysisError):
        memdb.result("x")


def test_subscribers_that_raise_or_block_do_not_break_others(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("per_k", PER_K)
    memdb.result("per_k", min_version=1, timeout=30)
    release = threading.Event()
    blocked_in = threading.Event()
    blocked_saw: list[int] = []
    healthy_saw: list[int] = []
    reached = threading.Condition()

    def blocking(result: Result) -> None:
        blocked_saw.append(result.version)
        blocked_in.set()
        release.wait(30)

    def raising(result: Result) -> None:
        raise RuntimeError("subscriber bug")

    def healthy(result: Result) -> None:
        with reached:
            healthy_saw.append(result.version)
            reached.notify_all()

    subs = [memdb.subscribe("per_k", f) for f in (blocking, raising, healthy)]
    assert blocked_in.wait(30)
    last = 0
    for i in range(5):
        memdb.insert("events", {"k": "a", "v": i})
        last = memdb.refresh("per_k").version
    with reached:
        assert reached.wait_for(lambda: healthy_saw and healthy_saw[-1] == last, timeout=30)
    assert subs[1].errors >= 1 and subs[1].active  # raised, still subscribed
    release.set()
    for sub in subs:
        sub.cancel()
        assert not sub.active
    assert blocked_saw[-1] == last  # skipped straight to the newest version
    assert len(blocked_saw) < len(healthy_saw) + 1


def test_close_stops_the_scheduler_and_ends_watchers() -> None:
    db = duckflock.connect()
    db.execute(EVENTS)
    db.analysis("tick", "SELECT count(*) FROM events", every=0.01)
    db.result("tick", min_version=1, timeout=30)
    seen: list[int] = []
    ended = threading.Event()

    def watch() -> None:
        for result in db.watch("tick"):
            seen.append(result.version)
        ended.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    sub = db.subscribe("tick", lambda r: None)
    db.result("tick", min_version=3, timeout=30)
    db.close()
    assert ended.wait(30)
    watcher.join(30)
    assert seen
    assert not sub.active
    # (but the process's one reaper of dropped Databases: core/lifecycle.py)
    names = {t.name for t in threading.enumerate()} - {"duckflock-reaper"}
    assert not {n for n in names if n.startswith("duckflock-")}
    with pytest.raises(ClosedError):
        db.analysis("again", "SELECT 1")
    with pytest.raises(ClosedError):
        db.result("tick")


def test_async_watch() -> None:
    async def main() -> list[Any]:
        with duckflock.connect() as db:
            db.execute(EVENTS)
            db.analysis("per_k", PER_K, on_change=True, min_interval=0)
            db.result("per_k", min_version=1, timeout=30)
            rows = []
            async for result in db.watch_async("per_k"):
                rows.append(result.rows())
                if len(rows) == 1:
                    await asyncio.to_thread(db.insert, "events", {"k": "z", "v": 9})
                if result.rows() == [("z", 1, 9)]:
                    break
            return rows

    rows = asyncio.run(main())
    assert rows[0] == []
    assert rows[-1] == [("z", 1, 9)]


def test_waiting_for_a_version_follows_a_replacement_and_ends_on_drop(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("x", "SELECT count(*) AS n FROM events")
    first = memdb.result("x", min_version=1, timeout=30)
    assert first is not None
    outcome: list[Any] = []
    waiting = threading.Event()

    def wait_for_next() -> None:
        waiting.set()
        outcome.append(memdb.result("x", min_version=first.version + 1, timeout=30))

    waiter = threading.Thread(target=wait_for_next)
    waiter.start()
    assert waiting.wait(30)
    memdb.analysis("x", "SELECT count(*) + 1 AS n FROM events")  # replaced, not dropped
    waiter.join(30)
    assert outcome[0].rows() == [(1,)]

    def wait_forever() -> None:
        try:
            memdb.result("x", min_version=10**6)
        except UnknownAnalysisError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    memdb.drop_analysis("x")
    waiter.join(30)
    assert not waiter.is_alive()
    assert isinstance(outcome[-1], UnknownAnalysisError)


class _Buggy:
    """A cursor every use of which fails as a bug would (not a DuckDB error)."""

    def interrupt(self) -> None:  # the watchdog may interrupt it: nothing runs
        return None

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("injected bug")


def test_a_bug_in_a_refresh_is_recorded_and_the_thread_lives_on(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("per_k", PER_K)
    memdb.result("per_k", min_version=1, timeout=30)
    run = internals.analysis(memdb, "per_k").state  # fault injection, on its own thread
    real = run.cursor
    run.fast = False  # the fold goes through the cursor (no pyarrow fast path)
    assert run.shape.plan is not None  # nor a detached DuckDB (live/fold/detached.py)
    run.shape = dataclasses.replace(
        run.shape, plan=dataclasses.replace(run.shape.plan, detached=None)
    )
    run.cursor = _Buggy()  # type: ignore[assignment]
    memdb.insert("events", {"k": "a", "v": 1})
    failed = memdb.refresh("per_k", timeout=30)
    assert failed.error is not None
    assert "injected bug" in failed.error.message
    run.cursor = real
    memdb.insert("events", {"k": "b", "v": 2})
    healed = memdb.refresh("per_k", timeout=30)
    assert healed.error is None
    assert healed.rows() == [("a", 1, 1), ("b", 1, 2)]


def test_the_internal_interface_reaches_analyses_without_private_names(
    memdb: duckflock.Database,
) -> None:
    with pytest.raises(LookupError):  # no analysis yet: no scheduler
        internals.scheduler(memdb)
    memdb.execute(EVENTS)
    memdb.analysis("per_k", PER_K)
    result = memdb.result("per_k", min_version=1, timeout=30)
    assert result is not None
    analysis = internals.analysis(memdb, "per_k")
    assert analysis.spec.sql == PER_K
    assert analysis.schedule.result is result
    assert analysis.state.shape.plan is not None  # incremental: a plan, a kept state
    assert analysis.state.state is not None
    with pytest.raises(dataclasses.FrozenInstanceError):  # the definition is immutable
        analysis.spec.sql = "SELECT 1"  # type: ignore[misc]
    with pytest.raises(UnknownAnalysisError):
        internals.analysis(memdb, "nope")
    with pytest.raises(RuntimeError, match="before the database's first analysis"):
        internals.use_clock(memdb, SYSTEM)  # the scheduler took its clock already


def test_modes_are_an_enum_with_the_same_json_values(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.analysis("per_k", PER_K)
    memdb.analysis("plain", "SELECT count(*) AS n FROM events WHERE random() < 2")
    for name in ("per_k", "plain"):
        first = memdb.result(name, min_version=1, timeout=30)
        assert first is not None and first.mode is Mode.FULL  # a state is built first
    memdb.insert("events", {"k": "a", "v": 1})
    assert memdb.refresh("per_k", timeout=30).mode is Mode.INCREMENTAL
    assert memdb.refresh("plain", timeout=30).mode is Mode.FULL
    modes = {s["name"]: s["mode"] for s in memdb.analyses()}
    assert json.loads(json.dumps(modes)) == {"per_k": "incremental", "plain": "full"}
    assert {m.value for m in Mode} == {"incremental", "full", "refused"}
