"""db.insert: group commit from many threads, receipts, bad-row isolation, back-pressure."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import duckflock
from duckflock import (
    ClosedError,
    ConstraintError,
    ConversionError,
    QueueFullError,
    RowRejectedError,
    SchemaMismatchError,
    StorageError,
    UnknownTableError,
)

EVENTS = """CREATE TABLE events (
    thread INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    note VARCHAR DEFAULT 'none',
    created TIMESTAMP DEFAULT current_timestamp)"""


def run_threads(count: int, target: Callable[[int], None], timeout: float = 60) -> None:
    """Start ``count`` threads at one barrier, join them all, re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a producer hung"
    if errors:
        raise errors[0]


def per_thread_order_holds(db: duckflock.Database) -> bool:
    rows = db.execute("SELECT thread, seq FROM events ORDER BY rowid").fetchall()
    last: dict[int, int] = {}
    for thread, seq in rows:
        if seq <= last.get(thread, -1):
            return False
        last[thread] = seq
    return True


class WriterGate:
    """Holds the writer before each commit until opened (through its fault hook, at
    "batch"); tells when a batch reached it."""

    def __init__(self, db: duckflock.Database) -> None:
        self.open = threading.Event()
        self.reached = threading.Event()

        def gated(at: str) -> None:
            if at == "batch":
                self.reached.set()
                assert self.open.wait(30), "test never opened the gate"

        db.writer().fault_hook = gated


@pytest.fixture
def events(db: duckflock.Database) -> duckflock.Database:
    db.execute(EVENTS)
    return db


# -- many threads ----------------------------------------------------------------------


@pytest.mark.parametrize("wait", [True, False])
def test_50_threads_x_200_rows_all_land_in_per_thread_order(
    events: duckflock.Database, wait: bool
) -> None:
    def produce(i: int) -> None:
        for seq in range(200):
            events.insert("events", {"thread": i, "seq": seq}, wait=wait)

    run_threads(50, produce)
    events.flush()
    assert events.execute(
        "SELECT count(*), count(DISTINCT (thread, seq)) FROM events"
    ).fetchone() == (
        10_000,
        10_000,
    )
    assert per_thread_order_holds(events)
    stats = events.stats()
    assert stats.rows_committed == 10_000
    assert stats.rows_queued == 0
    assert 0 < stats.batches_committed <= 10_000


def test_order_holds_when_one_thread_switches_column_lists(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    for seq in range(300):
        row = {"thread": 0, "seq": seq}
        if seq % 3 == 0:
            row["note"] = f"n{seq}"
        memdb.insert("events", row, wait=False)
    memdb.flush()
    assert per_thread_order_holds(memdb)
    notes = memdb.execute("SELECT count(*) FROM events WHERE note = 'none'").fetchone()
    assert notes == (200,)  # the left-out column took its DEFAULT


def test_acknowledged_rows_are_visible_to_every_thread(events: duckflock.Database) -> None:
    acked = threading.Event()
    seen: list[Any] = []

    def writer() -> None:
        events.insert("events", {"thread": 1, "seq": 1})
        acked.set()

    def reader() -> None:
        assert acked.wait(30)
        seen.append(events.execute("SELECT count(*) FROM events").fetchone())

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [(1,)]


# -- what insert accepts ---------------------------------------------------------------


def test_every_input_shape(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    memdb.insert("events", {"thread": 1, "seq": 0})
    memdb.insert("events", (1, 1, "tuple", dt.datetime(2024, 1, 1)))
    memdb.insert("events", (1, 2), columns=["thread", "seq"])
    memdb.insert("events", [{"thread": 1, "seq": 3}, {"thread": 1, "seq": 4, "note": "mixed"}])
    memdb.insert("events", [(1, 5), [1, 6]], columns=("thread", "seq"))
    memdb.insert("events", ({"thread": 1, "seq": s} for s in range(7, 9)))
    memdb.insert("events", pd.DataFrame({"thread": [2, 2], "seq": [0, 1]}))
    memdb.insert("events", pl.DataFrame({"thread": [3, 3], "seq": [0, 1]}))
    memdb.insert("events", pa.table({"thread": [4, 4], "seq": [0, 1]}))
    memdb.insert("events", pa.record_batch({"thread": [5], "seq": [0]}))
    memdb.insert("events", pa.table({"a": [6], "b": [0]}), columns=["thread", "seq"])
    memdb.insert("events", {"THREAD": 7, "Seq": 0})  # column names are case-insensitive
    rows = memdb.execute(
        "SELECT thread, seq, note, created IS NOT NULL FROM events ORDER BY rowid"
    ).fetchall()
    assert [(t, s) for t, s, _, _ in rows] == [
        *((1, s) for s in range(9)),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (4, 0),
        (4, 1),
        (5, 0),
        (6, 0),
        (7, 0),
    ]
    assert rows[1][2] == "tuple"
    assert rows[4][2] == "mixed"
    assert rows[3][2] == "none"  # DEFAULT for a left-out column
    assert all(has_time for *_, has_time in rows)  # DEFAULT current_timestamp


def test_the_guides_default_timestamp_works(memdb: duckflock.Database) -> None:
    memdb.execute(
        "CREATE TABLE my_inserts (thread_name VARCHAR, "
        "insert_time TIMESTAMP DEFAULT current_timestamp)"
    )
    receipt = memdb.insert("my_inserts", {"thread_name": "w1"})
    assert receipt.done
    assert receipt.rows == 1
    row = memdb.execute("SELECT thread_name, insert_time FROM my_inserts").fetchone()
    assert row is not None
    assert row[0] == "w1"
    assert isinstance(row[1], dt.datetime)


def test_empty_inserts_are_done_at_once(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    for empty in ([], pa.table({"thread": pa.array([], pa.int32())})):
        receipt = memdb.insert("events", empty, wait=False)
        assert receipt.done
        assert receipt.rows == 0
        assert receipt.wait() == 0


def test_receipts_for_wait_false(events: duckflock.Database) -> None:
    receipts = [events.insert("events", {"thread": 0, "seq": s}, wait=False) for s in range(50)]
    assert all(r.rows == 1 for r in receipts)
    assert receipts[-1].wait(timeout=30) == 1
    events.flush(timeout=30)
    assert all(r.done and r.error is None for r in receipts)
    bad = events.insert("events", {"thread": None, "seq": 1}, wait=False)
    events.flush()
    assert bad.done
    assert isinstance(bad.error, RowRejectedError)
    with pytest.raises(RowRejectedError):
        bad.wait()
    assert "failed" in repr(bad)


# -- errors found in the caller, before queueing ---------------------------------------


def test_cheap_errors_are_raised_before_queueing(memdb: duckflock.Database) -> None:
    memdb.execute(EVENTS)
    with pytest.raises(UnknownTableError, match="nowhere"):
        memdb.insert("nowhere", {"a": 1})
    with pytest.raises(SchemaMismatchError, match="no column 'colour'") as info:
        memdb.insert("events", {"thread": 1, "colour": "red"})
    assert info.value.table == "events"
    with pytest.raises(SchemaMismatchError, match="row 1 has 3 values"):
        memdb.insert("events", [(1, 1), (1, 2, "x")], columns=["thread", "seq"])
    with pytest.raises(SchemaMismatchError, match="has 2 values but"):
        memdb.insert("events", (1, 2))  # all four columns expected
    with pytest.raises(SchemaMismatchError, match="no column 'x'"):
        memdb.insert("events", pa.table({"x": [1]}))
    with pytest.raises(SchemaMismatchError, match="named twice"):
        memdb.insert("events", {"thread": 1, "THREAD": 2})
    with pytest.raises(TypeError, match="not str"):
        memdb.insert("events", "thread=1")
    with pytest.raises(TypeError, match="not int"):
        memdb.insert("events", 42)
    with pytest.raises(TypeError, match="table must be a str"):
        memdb.insert(7, {"thread": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="row 1 is a int"):
        memdb.insert("events", [(1, 2, "x", None), 5])
    with pytest.raises(ValueError, match="columns= applies to tuple rows"):
        memdb.insert("events", {"thread": 1}, columns=["thread"])
    with pytest.raises(ValueError, match="timeout"):
        memdb.insert("events", {"thread": 1, "seq": 1}, timeout=-1)
    assert memdb.stats().rows_committed == 0
    assert memdb.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_schema_cache_follows_ddl(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (a INTEGER)")
    memdb.insert("t", {"a": 1})
    memdb.execute("ALTER TABLE t ADD COLUMN b VARCHAR")
    memdb.insert("t", {"a": 2, "b": "through execute"})
    other = memdb.cursor()  # DDL the Database does not see
    other.execute("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7")
    memdb.insert("t", {"a": 3, "c": 9})
    memdb.insert("t", (4, "x", 5))
    other.execute("DROP TABLE t")
    other.execute("CREATE TABLE t (z VARCHAR)")
    with pytest.raises(RowRejectedError) as info:
        memdb.insert("t", {"a": 5})  # the cached schema is stale: DuckDB says why
    assert info.value.table == "t"
    memdb.insert("t", {"z": "fresh"})  # ... and the cache was refreshed
    assert memdb.execute("SELECT z FROM t").fetchall() == [("fresh",)]
    other.close()


# -- bad rows fail alone ---------------------------------------------------------------

POISON = """CREATE TABLE readings (
    id INTEGER PRIMARY KEY,
    sensor VARCHAR NOT NULL,
    value DOUBLE CHECK (value >= 0),
    count INTEGER)"""


def test_poison_rows_fail_only_their_callers(db: duckflock.Database) -> None:
    db.execute(POISON)
    db.insert("readings", {"id": -1, "sensor": "existing", "value": 1.0})
    poison: dict[int, dict[str, Any]] = {
        3: {"id": 10_003, "sensor": None, "value": 1.0},  # NOT NULL
        11: {"id": 10_011, "sensor": "s", "value": -5.0},  # CHECK
        19: {"id": 10_019, "sensor": "s", "value": 1.0, "count": "many"},  # type
        27: {"id": -1, "sensor": "s", "value": 1.0},  # primary key vs committed row
        35: {"id": 10_035, "sensor": "s", "value": 1.0, "count": 2**40},  # out of range
    }
    outcomes: dict[int, BaseException | None] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def produce(i: int) -> None:
        row = poison.get(i, {"id": i, "sensor": f"s{i}", "value": float(i)})
        barrier.wait()  # all 50 calls land in the same few batches
        try:
            db.insert("readings", row, timeout=30)
            outcome: BaseException | None = None
        except BaseException as exc:
            outcome = exc
        with lock:
            outcomes[i] = outcome

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    failed = {i for i, exc in outcomes.items() if exc is not None}
    assert failed == set(poison)
    for i in poison:
        error = outcomes[i]
        assert isinstance(error, RowRejectedError)
        assert error.table == "readings"
        assert error.row_index == 0
        assert error.row == poison[i]
    assert isinstance(outcomes[3].cause, ConstraintError)  # type: ignore[union-attr]
    assert "NOT NULL" in str(outcomes[3])
    assert "CHECK" in str(outcomes[11])
    assert isinstance(outcomes[19].cause, ConversionError)  # type: ignore[union-attr]
    assert "Duplicate key" in str(outcomes[27])
    ids = {r[0] for r in db.execute("SELECT id FROM readings").fetchall()}
    assert ids == {-1} | (set(range(50)) - set(poison))
    assert db.stats().calls_rejected == len(poison)


def test_a_bad_row_rejects_its_whole_call_and_is_named(memdb: duckflock.Database) -> None:
    memdb.execute(POISON)
    good = memdb.insert("readings", [{"id": i, "sensor": "a"} for i in range(5)], wait=False)
    rows = [{"id": 100 + i, "sensor": "b", "value": 1.0} for i in range(1000)]
    rows[637]["value"] = -1.0
    bad = memdb.insert("readings", rows, wait=False)
    duplicate_inside = [(200, "c", 1.0, 1), (201, "c", 1.0, 1), (200, "c", 1.0, 1)]
    dup = memdb.insert("readings", duplicate_inside, wait=False)
    arrow_rows = pa.table({"id": [300, 301, 302], "sensor": ["d", None, "d"]})
    bad_arrow = memdb.insert("readings", arrow_rows, wait=False)
    memdb.flush()
    assert good.error is None
    assert isinstance(bad.error, RowRejectedError)
    assert bad.error.row_index == 637
    assert bad.error.row == {"id": 737, "sensor": "b", "value": -1.0}
    assert isinstance(dup.error, RowRejectedError)
    assert dup.error.row_index == 2  # the second 200 is the offender
    assert isinstance(bad_arrow.error, RowRejectedError)
    assert bad_arrow.error.row_index == 1
    assert bad_arrow.error.row == {"id": 301, "sensor": None}
    assert memdb.execute("SELECT count(*) FROM readings").fetchone() == (5,)


def test_mixed_key_sets_in_one_call_name_the_right_row(memdb: duckflock.Database) -> None:
    memdb.execute(POISON)
    rows: list[dict[str, Any]] = [
        {"id": 1, "sensor": "a"},
        {"id": 2, "sensor": "a", "value": 2.0},
        {"id": 3, "sensor": "a"},
        {"id": 4, "sensor": None, "value": 2.0},
    ]
    with pytest.raises(RowRejectedError) as info:
        memdb.insert("readings", rows)
    assert info.value.row_index == 3
    assert info.value.row == rows[3]
    assert memdb.execute("SELECT count(*) FROM readings").fetchone() == (0,)


def test_storage_failure_fails_the_whole_batch(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.insert("events", {"thread": 0, "seq": 0})

    def disk_full(at: str) -> None:
        if at == "commit":
            raise duckdb.IOException("IO Error: No space left on device")

    memdb.writer().fault_hook = disk_full
    with pytest.raises(StorageError, match="No space left") as info:
        memdb.insert("events", {"thread": 0, "seq": 1})
    assert isinstance(info.value.__cause__, duckdb.IOException)
    memdb.writer().fault_hook = lambda at: None
    memdb.insert("events", {"thread": 0, "seq": 2})  # the writer lives on
    assert memdb.execute("SELECT seq FROM events ORDER BY seq").fetchall() == [(0,), (2,)]


# -- back-pressure, close, writer death ------------------------------------------------


def test_full_queue_blocks_then_times_out() -> None:
    db = duckflock.connect(max_queued_rows=100)
    db.execute(EVENTS)
    gate = WriterGate(db)
    first = db.insert("events", {"thread": 0, "seq": 0}, wait=False)
    assert gate.reached.wait(30)  # the writer holds that row, stuck before its commit
    accepted = [first]
    with pytest.raises(QueueFullError, match="queue full"):
        for seq in range(1, 1000):
            accepted.append(db.insert("events", {"thread": 0, "seq": seq}, wait=False, timeout=0.2))
    assert len(accepted) == 100  # exactly the bound was taken in
    assert db.stats().rows_queued == 100
    with pytest.raises(QueueFullError):
        db.insert("events", [{"thread": 1, "seq": s} for s in range(10)], timeout=0.05)
    gate.open.set()
    db.flush(timeout=30)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (100,)
    db.close()


def test_memory_stays_bounded_when_producers_outrun_the_writer() -> None:
    db = duckflock.connect(max_queued_rows=2_000)
    db.execute(EVENTS)

    def produce(i: int) -> None:
        for seq in range(20_000):
            db.insert("events", {"thread": i, "seq": seq}, wait=False)

    run_threads(4, produce)
    db.flush()
    stats = db.stats()
    assert stats.rows_committed == 80_000
    # single-row producers may overshoot by one row each
    assert stats.rows_queued_peak <= 2_000 + 4
    assert db.execute("SELECT count(*) FROM events").fetchone() == (80_000,)
    db.close()


def test_close_commits_what_was_accepted(tmp_path: Path) -> None:
    path = tmp_path / "close.duckdb"
    db = duckflock.connect(path, max_queued_rows=500)
    db.execute(EVENTS)
    gate = WriterGate(db)
    receipts = [db.insert("events", {"thread": 0, "seq": s}, wait=False) for s in range(500)]
    assert gate.reached.wait(30)
    closer = threading.Thread(target=db.close)
    closer.start()
    with pytest.raises(ClosedError):
        # the queue is full, so this blocks until close() begins, then is refused
        db.insert("events", {"thread": 0, "seq": 500}, timeout=30)
    gate.open.set()
    closer.join(30)
    assert not closer.is_alive()
    assert all(r.done and r.error is None for r in receipts)
    db.close()  # twice is fine
    with pytest.raises(ClosedError):
        db.insert("events", {"thread": 0, "seq": 1})
    with duckflock.connect(path, read_only=True) as again:
        assert again.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (
            500,
            500,
        )


def test_a_writer_bug_fails_its_batch_and_the_writer_goes_on() -> None:
    db = duckflock.connect()
    db.execute(EVENTS)
    db.insert("events", {"thread": 0, "seq": 0})
    gate = WriterGate(db)
    waiting: list[BaseException] = []
    lock = threading.Lock()
    blocked = threading.Barrier(9)

    def producer(i: int) -> None:
        receipt = db.insert("events", {"thread": i, "seq": 1}, wait=False)
        blocked.wait()
        try:
            receipt.wait(timeout=30)
        except BaseException as exc:
            with lock:
                waiting.append(exc)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    blocked.wait()
    assert gate.reached.wait(30)

    def explode(at: str) -> None:
        if at == "batch":
            raise RuntimeError("injected writer bug")

    db.writer().fault_hook = explode
    gate.open.set()  # the gated call proceeds into the real commit...
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    # ...whatever the writer took first committed; the next batches failed, each alone
    committed = db.execute("SELECT count(*) FROM events WHERE seq = 1").fetchone()
    assert committed is not None
    assert len(waiting) + committed[0] == 8
    assert all(type(e) is duckflock.IngestError for e in waiting)
    with pytest.raises(duckflock.IngestError, match="injected writer bug"):
        for seq in range(2, 100):  # the first of these may still meet the real commit
            db.insert("events", {"thread": 0, "seq": seq}, timeout=30)
    db.flush(timeout=30)  # the writer is alive
    db.writer().fault_hook = lambda at: None
    db.insert("events", {"thread": 0, "seq": 1000}, timeout=30)
    assert db.execute("SELECT count(*) FROM events WHERE seq = 1000").fetchone() == (1,)
    db.close()


def test_writer_thread_is_named_and_stops_on_close() -> None:
    db = duckflock.connect()
    db.execute(EVENTS)
    db.insert("events", {"thread": 0, "seq": 0})
    names = [t.name for t in threading.enumerate()]
    assert "duckflock-writer" in names
    db.close()
    assert "duckflock-writer" not in [t.name for t in threading.enumerate()]


def test_read_only_database_refuses_inserts(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    with duckflock.connect(path) as db:
        db.execute(EVENTS)
    with (
        duckflock.connect(path, read_only=True) as ro,
        pytest.raises(duckflock.IngestError, match="read-only"),
    ):
        ro.insert("events", {"thread": 0, "seq": 0})


def test_insert_async_awaits_the_commit_and_raises_the_calls_error() -> None:
    import asyncio

    async def main(db: duckflock.Database) -> list[Any]:
        good = await db.insert_async("readings", [{"id": 1, "sensor": "a"}])
        with pytest.raises(RowRejectedError) as info:
            await db.insert_async("readings", {"id": 2, "sensor": None})
        both = await asyncio.gather(
            db.insert_async("readings", {"id": 3, "sensor": "b"}),
            db.insert_async("readings", {"id": 4, "sensor": "c"}),
        )
        return [good.rows, info.value.row_index, [r.rows for r in both]]

    with duckflock.connect() as db:
        db.execute(POISON)
        assert asyncio.run(main(db)) == [1, 0, [1, 1]]
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (3,)


def test_insert_async_times_out_or_is_cancelled_and_its_rows_still_commit() -> None:
    """Past its timeout insert_async raises IngestTimeoutError; a cancelled caller gets
    CancelledError; either way the accepted rows commit. An answered call leaves no
    timer behind on the loop."""
    import asyncio

    async def main(db: duckflock.Database, gate: WriterGate) -> list[str]:
        seen = []
        with pytest.raises(duckflock.IngestTimeoutError, match="may still commit"):
            await db.insert_async("events", {"thread": 0, "seq": 0}, timeout=0.05)
        seen.append("timed out")
        task = asyncio.ensure_future(db.insert_async("events", {"thread": 0, "seq": 1}))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen.append("cancelled")
        gate.open.set()
        await db.insert_async("events", {"thread": 0, "seq": 2}, timeout=30)
        loop = asyncio.get_running_loop()
        pending = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
        assert pending == [], pending  # the 30 s deadline's timer went with the answer
        return seen

    with duckflock.connect() as db:
        db.execute(EVENTS)
        gate = WriterGate(db)
        assert asyncio.run(main(db, gate)) == ["timed out", "cancelled"]
        db.flush()
        assert db.execute("SELECT list(seq ORDER BY seq) FROM events").fetchone() == ([0, 1, 2],)


def test_insert_async_waits_for_room_off_the_event_loop() -> None:
    import asyncio

    db = duckflock.connect(max_queued_rows=10)
    db.execute(EVENTS)
    gate = WriterGate(db)
    first = db.insert("events", [{"thread": 0, "seq": s} for s in range(10)], wait=False)
    assert gate.reached.wait(30)

    async def main() -> None:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        with pytest.raises(QueueFullError):
            await db.insert_async("events", {"thread": 1, "seq": 0}, timeout=0.2)
        beat.cancel()
        assert ticks > 10  # the loop kept running while the insert waited for room

    asyncio.run(main())
    gate.open.set()
    first.wait(30)
    db.close()


def test_insert_async_waits_for_room_and_the_commit_within_one_timeout() -> None:
    """``timeout`` bounds the wait for room and the wait for the commit together: a
    call admitted late gets what is left of it, not a fresh ``timeout`` (it could wait
    up to twice as long)."""
    import asyncio

    db = duckflock.connect(max_queued_rows=10)
    db.execute(EVENTS)
    room, taken, held = threading.Event(), threading.Event(), threading.Event()
    batches = 0

    def hook(at: str) -> None:
        nonlocal batches
        if at == "batch":
            batches += 1
            if batches > 1:
                taken.set()
            assert (room if batches == 1 else held).wait(30), "never let go"

    db.writer().fault_hook = hook
    first = db.insert("events", [{"thread": 0, "seq": s} for s in range(10)], wait=False)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        loop.call_later(0.6, room.set)  # room after 0.6 s of the 1 s; the commit held
        with pytest.raises(duckflock.IngestTimeoutError, match="may still commit"):
            await db.insert_async("events", {"thread": 1, "seq": 0}, timeout=1.0)
        return loop.time() - started

    try:
        elapsed = asyncio.run(main())
        assert taken.wait(30)  # it was admitted and taken by the writer
    finally:
        room.set()
        held.set()
    assert elapsed < 1.5, elapsed  # before: 0.6 s for room, then a full 1 s more
    first.wait(30)
    db.flush(30)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (11,)  # it committed
    db.close()


def test_big_batches_accept_what_small_ones_do(memdb: duckflock.Database) -> None:
    """Values beyond Arrow's inferred types (HUGEINT ints, ints mixed with numeric text)
    are accepted whatever the batch size, as DuckDB's VALUES path accepts them."""
    memdb.execute("CREATE TABLE wide (h HUGEINT, n INTEGER)")
    rows = [{"h": 2**100 + i, "n": i if i % 2 else str(i)} for i in range(1000)]
    memdb.insert("wide", rows)  # 2,000 values: the Arrow path
    memdb.insert("wide", rows[:3])  # 6 values: the VALUES path
    total = memdb.execute("SELECT count(*), sum(n), max(h) FROM wide").fetchone()
    assert total == (1003, sum(range(1000)) + 3, 2**100 + 999)


def test_values_arrow_cannot_type_are_stored_as_duckdb_casts_them_whatever_the_batch_size(
    memdb: duckflock.Database,
) -> None:
    """A bool among ints and floats, a timedelta past Arrow's microseconds (both found
    by test_faults_ingest's fuzzer): VALUES binds them as a BOOLEAN (cast to 0 or 1) and
    an INTERVAL; a batch too big for VALUES spelled them as text, 'False' and
    '106751992 days, 0:00:00', which DuckDB does not cast, so the same row failed in a
    big batch only."""
    memdb.execute("CREATE TABLE mixed (n INTEGER, x DOUBLE, t VARCHAR, iv INTERVAL)")
    rows = [(i, float(i), f"r{i}", dt.timedelta(seconds=i)) for i in range(300)]
    rows[0] = (False, True, "first", dt.timedelta(days=106751992))
    rows[7] = (True, 2.5, "seventh", dt.timedelta(days=-1, seconds=5))
    memdb.insert("mixed", rows)  # 1,200 values: past VALUES, the Arrow path
    memdb.insert("mixed", rows[:8])  # 32 values: the VALUES path
    order = "SELECT * FROM mixed ORDER BY t, n"
    oracle = duckdb.connect()
    oracle.execute("CREATE TABLE mixed (n INTEGER, x DOUBLE, t VARCHAR, iv INTERVAL)")
    oracle.executemany("INSERT INTO mixed VALUES (?, ?, ?, ?)", rows + rows[:8])
    assert memdb.execute(order).fetchall() == oracle.execute(order).fetchall()


def test_a_receipt_finished_while_its_waiter_takes_the_guard_returns() -> None:
    """The writer may finish a receipt between wait()'s first look and its guard: then
    nothing was parked, and wait() returns (was: AttributeError on None, found by the
    differential tester's wait=False inserts)."""
    from duckflock.ingest.receipts import Call

    call = Call(None, nrows=3)

    class FinishingGuard:  # the writer finishes the call as the guard is taken
        def __enter__(self) -> None:
            call.finished = True

        def __exit__(self, *exc: object) -> None:
            return None

    call.guard = FinishingGuard()
    assert call.wait(1) == 3
