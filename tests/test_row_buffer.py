"""The row buffer (ingest/bundles.py): single rows inserted with ``wait=False`` are
appended to one open bundle the writer commits as one call, and each row keeps what a
call of its own gave it: its receipt, its own error, its place in its thread's order,
its share of the queue bound, and its commit on close()."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import duckflock
from duckflock import (
    ClosedError,
    IngestTimeoutError,
    QueueFullError,
    RowRejectedError,
    StorageError,
)
from test_ingest import WriterGate, per_thread_order_holds, run_threads

EVENTS = """CREATE TABLE events (
    thread INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    v DOUBLE CHECK (v >= 0))"""


def ordered(db: duckflock.Database) -> list[tuple[int, int]]:
    return [
        (t, s) for t, s in db.execute("SELECT thread, seq FROM events ORDER BY rowid").fetchall()
    ]


@pytest.fixture
def events(db: duckflock.Database) -> duckflock.Database:
    db.execute(EVENTS)
    return db


def test_many_producers_land_exactly_once_in_each_threads_order(
    events: duckflock.Database,
) -> None:
    threads, per_thread = 16, 2_000
    receipts: list[list[duckflock.Receipt]] = [[] for _ in range(threads)]

    def produce(t: int) -> None:
        for seq in range(per_thread):
            row: Any = (t, seq, 1.0) if seq % 2 else {"thread": t, "seq": seq, "v": 1.0}
            receipts[t].append(events.insert("events", row, wait=False))

    run_threads(threads, produce)
    events.flush(timeout=60)
    rows = ordered(events)
    assert len(rows) == threads * per_thread
    assert set(rows) == {(t, s) for t in range(threads) for s in range(per_thread)}
    assert per_thread_order_holds(events)
    every = [r for mine in receipts for r in mine]
    assert all(r.done and r.error is None and r.rows == 1 for r in every)
    assert all(r.wait(0) == 1 for r in every)
    stats = events.stats()
    assert stats.rows_committed == threads * per_thread
    assert stats.calls_rejected == 0


def test_buffered_rows_wait_in_one_bundle_while_the_writer_is_busy(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    gate = WriterGate(memdb)
    memdb.insert("events", (0, 0, 1.0), wait=False)
    assert gate.reached.wait(30)  # the writer holds that row
    receipts = [memdb.insert("events", (0, seq, 1.0), wait=False) for seq in range(1, 1001)]
    buffer = memdb.writer().rows
    # one queued call holds them all: its first row counts as the call, the rest here
    assert buffer.open is not None and len(buffer.open.rows) == 1000
    assert buffer.pending == 999
    assert memdb.stats().rows_queued == 1001
    assert not any(r.done for r in receipts)
    with pytest.raises(IngestTimeoutError, match="a row for 'events'"):
        receipts[-1].wait(0.01)
    assert repr(receipts[0]) == "<Receipt 1 rows into 'events' pending>"
    gate.open.set()
    assert receipts[-1].wait(30) == 1
    memdb.flush(timeout=30)
    assert ordered(memdb) == [(0, s) for s in range(1001)]
    assert memdb.stats().rows_queued == 0
    first = receipts[0]
    assert (first.table, first.rows, first.key, first.replayed) == ("events", 1, None, False)
    assert repr(first) == "<Receipt 1 rows into 'events' committed>"


def test_a_bad_row_among_buffered_rows_fails_alone_with_its_own_error(
    events: duckflock.Database,
) -> None:
    threads, per_thread = 8, 100
    receipts: dict[tuple[int, int], duckflock.Receipt] = {}

    def bad(t: int, seq: int) -> bool:
        return (t * per_thread + seq) % 7 == 3

    def produce(t: int) -> None:
        for seq in range(per_thread):
            v = -1.0 if bad(t, seq) else float(seq)
            receipts[(t, seq)] = events.insert("events", (t, seq, v), wait=False)

    run_threads(threads, produce)
    events.flush(timeout=120)
    wanted = {key for key in receipts if not bad(*key)}
    rows = ordered(events)
    assert set(rows) == wanted and len(rows) == len(wanted)
    assert per_thread_order_holds(events)
    for (t, seq), receipt in receipts.items():
        assert receipt.done
        if (t, seq) in wanted:
            assert receipt.error is None and receipt.wait(0) == 1
            continue
        error = receipt.error
        assert isinstance(error, RowRejectedError), error
        # what a call of its own gets: row 0 of the call, the row itself, the table
        assert (error.table, error.row_index) == ("events", 0)
        assert error.row == {"thread": t, "seq": seq, "v": -1.0}
        assert "CHECK constraint" in str(error)
        with pytest.raises(RowRejectedError) as raised:
            receipt.wait(0)
        assert raised.value is error
        assert repr(receipt) == "<Receipt 1 rows into 'events' failed>"
    stats = events.stats()
    assert stats.rows_committed == len(wanted)
    assert stats.calls_rejected == len(receipts) - len(wanted)


def test_a_call_queued_after_a_buffered_row_takes_its_place_in_line(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    memdb.execute("CREATE TABLE other (x INTEGER)")
    gate = WriterGate(memdb)
    memdb.insert("events", (0, 0, 1.0), wait=False)
    assert gate.reached.wait(30)  # the writer holds row 0; what follows queues up
    memdb.insert("events", (0, 1, 1.0), wait=False)  # opens a bundle
    memdb.insert("events", [(0, 2, 1.0)], wait=False)  # a call of its own, queued after it
    memdb.insert("events", (0, 3, 1.0), wait=False)  # must not join the bundle ahead of 2
    memdb.insert("other", (1,), wait=False)  # another table: a bundle of its own
    memdb.insert("events", (0, 4, 1.0), wait=False)
    memdb.insert("events", (0, 5, 1.0), wait=False, idempotency_key="five")
    memdb.insert("events", (0, 6, 1.0), wait=False)
    gate.open.set()
    memdb.flush(timeout=30)
    assert ordered(memdb) == [(0, s) for s in range(7)]
    assert memdb.execute("SELECT x FROM other").fetchall() == [(1,)]


def test_a_full_queue_blocks_buffered_rows_at_the_bound() -> None:
    bound = 500
    db = duckflock.connect(max_queued_rows=bound)
    try:
        db.execute(EVENTS)
        gate = WriterGate(db)
        db.insert("events", (99, 0, 1.0), wait=False)
        assert gate.reached.wait(30)  # the writer holds one row
        accepted: list[list[int]] = [[] for _ in range(8)]

        def produce(t: int) -> None:
            with pytest.raises(QueueFullError, match="queue full"):
                for seq in range(bound):
                    db.insert("events", (t, seq, 1.0), wait=False, timeout=0.2)
                    accepted[t].append(seq)

        run_threads(8, produce)
        taken = sum(len(a) for a in accepted)
        assert taken + 1 == bound  # exactly the bound was taken in
        stats = db.stats()
        assert stats.rows_queued == bound and stats.rows_queued_peak <= bound
        gate.open.set()
        db.flush(timeout=30)
        rows = set(ordered(db))
        assert rows == {(99, 0)} | {(t, s) for t in range(8) for s in accepted[t]}
        assert db.stats().rows_queued == 0
    finally:
        db.close()


def test_close_commits_every_buffered_row_it_accepted(tmp_path: Path) -> None:
    path = tmp_path / "close.duckdb"
    db = duckflock.connect(path)
    db.execute(EVENTS)
    started = threading.Barrier(9)
    enough = threading.Event()  # some rows are in: close() now, while they keep coming
    receipts: list[list[duckflock.Receipt]] = [[] for _ in range(8)]

    def produce(t: int) -> None:
        started.wait()
        seq = 0
        while True:
            try:
                receipts[t].append(db.insert("events", (t, seq, 1.0), wait=False))
            except ClosedError:
                return
            seq += 1
            if seq == 1_000:
                enough.set()

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for thread in producers:
        thread.start()
    started.wait()
    assert enough.wait(60)
    db.close()
    for thread in producers:
        thread.join(30)
        assert not thread.is_alive()
    every = [(t, seq, r) for t in range(8) for seq, r in enumerate(receipts[t])]
    assert all(r.done for _, _, r in every)  # none left pending by close()
    committed = {(t, seq) for t, seq, r in every if r.error is None}
    # a row taken in after the writer stopped is told so; no other failure
    assert all(isinstance(r.error, ClosedError) for _, _, r in every if r.error is not None)
    with duckflock.connect(path) as again:
        rows = ordered(again)
        assert per_thread_order_holds(again)
    assert len(rows) == len(committed) and set(rows) == committed


def test_a_storage_fault_while_a_bundle_is_split_fails_its_uncommitted_rows(
    memdb: duckflock.Database,
) -> None:
    memdb.execute(EVENTS)
    go, reached = threading.Event(), threading.Event()
    attempts = 0

    def hook(at: str) -> None:
        nonlocal attempts
        if at == "batch":
            reached.set()
            assert go.wait(60)
        elif at == "commit":
            attempts += 1
            # row 0's commit, the bundle's joint commit (row 5 is bad), its first half
            if attempts == 3:
                raise duckdb.IOException("IO Error: No space left on device")

    memdb.writer().fault_hook = hook
    memdb.insert("events", (0, 0, 1.0), wait=False)
    assert reached.wait(30)  # the writer holds row 0: the next ten form one bundle
    receipts = [
        memdb.insert("events", (1, seq, -1.0 if seq == 5 else 1.0), wait=False) for seq in range(10)
    ]
    go.set()
    memdb.flush(timeout=30)
    assert attempts == 3
    assert ordered(memdb) == [(0, 0)]
    for receipt in receipts:  # none committed, none left looking committed
        assert isinstance(receipt.error, StorageError), receipt.error
        assert "No space left" in str(receipt.error)
    stats = memdb.stats()
    assert (stats.rows_committed, stats.calls_rejected) == (1, 10)
    memdb.writer().fault_hook = lambda at: None
    memdb.insert("events", (2, 0, 1.0))  # the writer lives on
    assert ordered(memdb) == [(0, 0), (2, 0)]


class BufferedInserts(RuleBasedStateMachine):
    """One producer mixing buffered rows with every other kind of call while the writer
    is held and let go: the table always ends up as the good rows in the order they
    were inserted, and each bad row's receipt names it."""

    def __init__(self) -> None:
        super().__init__()
        self.db = duckflock.connect()
        self.db.execute(EVENTS)
        self.gate = WriterGate(self.db)
        self.gate.open.set()  # the writer runs until a rule holds it
        self.seq = 0
        self.good: list[tuple[int, int]] = []
        self.bad: dict[int, duckflock.Receipt] = {}
        self.keys = 0

    def _next(self, ok: bool) -> tuple[int, int, float]:
        self.seq += 1
        if ok:
            self.good.append((0, self.seq))
        return (0, self.seq, 1.0 if ok else -1.0)

    @rule(ok=st.booleans(), as_dict=st.booleans())
    def buffered(self, ok: bool, as_dict: bool) -> None:
        row = self._next(ok)
        data: Any = dict(zip(("thread", "seq", "v"), row, strict=True)) if as_dict else row
        receipt = self.db.insert("events", data, wait=False)
        if not ok:
            self.bad[self.seq] = receipt

    @rule(count=st.integers(1, 3))
    def listed(self, count: int) -> None:
        rows = [self._next(True) for _ in range(count)]
        self.db.insert("events", rows, wait=False)

    @rule()
    def keyed(self) -> None:
        self.keys += 1
        self.db.insert("events", self._next(True), wait=False, idempotency_key=f"k{self.keys}")

    @precondition(lambda self: self.gate.open.is_set())
    @rule()
    def waited(self) -> None:
        self.db.insert("events", self._next(True))

    @rule()
    def hold(self) -> None:
        self.gate.open.clear()

    @rule()
    def release(self) -> None:
        self.gate.open.set()

    @precondition(lambda self: self.gate.open.is_set())
    @invariant()
    def table_is_the_good_rows_in_order(self) -> None:
        self.db.flush(timeout=60)
        assert ordered(self.db) == self.good
        for seq, receipt in self.bad.items():
            error = receipt.error
            assert isinstance(error, RowRejectedError), error
            assert error.row == {"thread": 0, "seq": seq, "v": -1.0}

    def teardown(self) -> None:
        self.gate.open.set()
        self.db.close()


BufferedInserts.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_buffered_inserts_keep_order_and_errors = BufferedInserts.TestCase


@pytest.mark.parametrize("wait", [True, False])
@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (-5.0, ValueError), (math.nan, ValueError), ("1", TypeError)],
)
def test_a_receipts_wait_refuses_a_timeout_that_is_not_seconds(
    wait: bool, timeout: Any, error: type[Exception]
) -> None:
    # -1 waited forever (threading's "no limit"), -5 and NaN raised threading's own
    # ValueError, "1" a TypeError from deep inside; one buffered row and one call each
    db = duckflock.connect(":memory:")
    try:
        db.execute("CREATE TABLE t (a INTEGER)")
        gate = WriterGate(db)  # the row stays pending: the timeout is what is waited on
        receipt = db.insert("t", [{"a": 1}] if wait else {"a": 1}, wait=False)
        with pytest.raises(error, match="timeout must be a number of seconds"):
            receipt.wait(timeout)
        gate.open.set()
        assert receipt.wait(30) == 1
    finally:
        db.close()
