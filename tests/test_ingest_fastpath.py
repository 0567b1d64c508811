"""The acknowledged single-row path: how a batch of single-row calls is appended, and
how the writer gathers a batch while callers it woke are still on their way back."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import duckdb
import pytest

import duckflock
from duckflock.ingest import appends, batches
from duckflock.ingest.appends import Group, append, plan
from duckflock.ingest.receipts import Call, Settle
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import SchemaCache


class Recording:
    """A DuckDB cursor that notes each statement's parameters."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.params: list[Any] = []

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        self.params.append(params)
        return self.cursor.execute(sql, params)


def test_a_batch_of_single_rows_binds_one_list_per_column() -> None:
    """50 single-row calls go in as one statement with one parameter per column (a
    50-tuple VALUES statement bound 100 parameters, and parsing and planning it was most
    of the writer's CPU per batch); a multi-row call of the same rows keeps VALUES."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (name VARCHAR, n BIGINT, made TIMESTAMP DEFAULT now())")
    schema = SchemaCache(con.cursor()).get("t")
    singles = [Call(schema, columns=("name", "n"), row=(f"w{i}", i)) for i in range(50)]
    recording = Recording(con.cursor())
    append(recording, plan(singles)[0])  # type: ignore[arg-type]
    assert [len(p) for p in recording.params] == [2]
    assert con.execute("SELECT count(*), sum(n) FROM t").fetchone() == (50, sum(range(50)))
    rows = [(f"w{i}", i) for i in range(50)]
    many = Call(schema, parts=[Part(("name", "n"), rows=rows)], nrows=50)
    recording.params.clear()
    append(recording, plan([many])[0])  # type: ignore[arg-type]
    assert [len(p) for p in recording.params] == [100]


TYPES = [
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "DOUBLE",
    "REAL",
    "DECIMAL(6, 2)",
    "VARCHAR",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMPTZ",
    "INTERVAL",
    "UUID",
    "BLOB",
    "INTEGER[]",
    "STRUCT(a INTEGER)",
    "ENUM('red', 'green')",
    "BIT",  # an int's cast keeps its width: INTEGER (32 bits) or BIGINT (64)
]
VALUES: list[list[Any]] = [
    ["1", "abc"],
    ["12", None],
    ["2024-01-02", "2024-01-02 03:04:05"],
    ["[1, 2]", "{'a': 1}"],
    ["red", "green"],
    ["true", "0"],
    ["", "3.5"],
    ["1 day", "00000000-0000-0000-0000-000000000001"],
    ["\x00nul", "é"],
    [0, -1],
    [2**31, 7],
    [2**63 - 1, -(2**63)],
    [2**40, 1],  # a BIGINT and an INTEGER
    [-(2**31), 2**31],
    [300, None],
    [1.5, -0.0],
    [math.nan, math.inf],
    [1e300, 2.675],
    [True, False],
    [None, True],
]


def _outcome(con: duckdb.DuckDBPyConnection, kind: str, group: Group) -> Any:
    con.execute(f"CREATE OR REPLACE TABLE t (c {kind})")
    group.schema = SchemaCache(con.cursor()).get("t")
    try:
        append(con, group)
    except Exception:
        return "refused"
    return con.execute("SELECT c::VARCHAR FROM t ORDER BY rowid").fetchall()


@pytest.mark.parametrize("kind", TYPES)
def test_unnested_rows_are_stored_as_values_stores_them(kind: str) -> None:
    """DuckDB's VALUES path is the oracle: for every column type and plain Python value,
    the unnested batch stores the same values, and refuses what VALUES refuses (a refused
    batch is bisected down to single rows, which go through VALUES)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (c INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    for values in VALUES:
        rows = [(v,) for v in values]
        unnested = _outcome(con, kind, Group(schema, ("c",), rows=list(rows), singles=True))
        valued = _outcome(con, kind, Group(schema, ("c",), rows=list(rows)))
        assert unnested == valued, (kind, values)


def test_mixed_or_wide_columns_keep_values() -> None:
    """Columns of mixed Python types, only NULLs, ints past BIGINT or other types are
    bound value by value, as before."""
    rows_of = {
        "mixed": [(1,), ("2",)],
        "nulls": [(None,), (None,)],
        "huge": [(2**64,), (1,)],
        "bool and int": [(True,), (1,)],
        "INTEGER and BIGINT": [(1,), (2**31,)],
        "nan": [(1.5,), (math.nan,)],
    }
    for name, rows in rows_of.items():
        assert appends._lists(rows, 1) is None, name
    assert appends._lists([("a", 1), (None, None)], 2) == [["a", None], [1, None]]


# -- gathering a batch while woken callers come back --------------------------------


def _held_first_batch(db: duckflock.Database) -> tuple[threading.Event, threading.Event]:
    """Hold the writer at its first batch; report every later batch."""
    release, later = threading.Event(), threading.Event()
    seen = [0]

    def hook(at: str) -> None:
        if at == "batch":
            seen[0] += 1
            if seen[0] == 1:
                assert release.wait(30)
            else:
                later.set()

    db.writer().fault_hook = hook
    return release, later


def test_a_waited_batch_waits_for_woken_callers_that_have_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a commit the writer seals the next waited-for batch only once every
    caller it woke has run again: fifty callers wake one after another behind the GIL,
    and most hand in their next row at once (without this, a third of them missed each
    batch and waited a whole extra commit)."""
    monkeypatch.setattr(batches, "STRAGGLER_SECONDS", 30.0)
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    release, later = _held_first_batch(db)
    schema = SchemaCache(db.cursor()).get("t")
    woken = Call(schema, columns=("n",), row=(1,))
    db.writer().submit(woken, None, wait=True)  # parked: its caller has not run yet
    release.set()
    db.flush(30)  # the first batch is committed, its caller woken
    waited = Call(schema, columns=("n",), row=(2,))
    db.writer().submit(waited, None, wait=True)
    assert not later.wait(0.3), "the batch was sealed before the woken caller ran"
    assert woken.wait(5) == 1  # the woken caller runs again
    assert later.wait(30) and waited.wait(30) == 1
    assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)
    db.close()


def test_callers_an_earlier_commit_woke_still_hold_the_next_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Woken callers are counted across commits: a commit in between (here of a row
    nobody waits for) does not make the writer forget a caller of the commit before it
    that has not run yet. Counting only the last commit's callers, the few callers of a
    small commit sealed it alone again and again while the many of a large one were
    still coming back, and the rows split into two groups that took turns."""
    monkeypatch.setattr(batches, "STRAGGLER_SECONDS", 30.0)
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    release = threading.Event()
    sealed = [threading.Event() for _ in range(3)]
    count = [0]

    def hook(at: str) -> None:
        if at == "batch":
            count[0] += 1
            if count[0] <= len(sealed):
                sealed[count[0] - 1].set()
            if count[0] == 1:
                assert release.wait(30)

    db.writer().fault_hook = hook
    schema = SchemaCache(db.cursor()).get("t")
    woken = Call(schema, columns=("n",), row=(1,))
    db.writer().submit(woken, None, wait=True)  # parked: its caller does not run yet
    assert sealed[0].wait(30)
    release.set()  # the first commit wakes the caller, which stays away
    unwaited = db.insert("t", {"n": 2}, wait=False)  # a commit that wakes nobody
    assert sealed[1].wait(30)
    waited = Call(schema, columns=("n",), row=(3,))
    db.writer().submit(waited, None, wait=True)
    assert not sealed[2].wait(0.3), "the batch was sealed before the woken caller ran"
    assert woken.wait(5) == 1  # the caller the first commit woke runs again
    assert sealed[2].wait(30) and waited.wait(30) == 1 and unwaited.wait(30) == 1
    assert db.execute("SELECT count(*) FROM t").fetchone() == (3,)
    db.close()


def test_the_wait_for_woken_callers_is_bounded() -> None:
    """A woken caller that never runs again delays the next batch by at most
    STRAGGLER_SECONDS."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(db.cursor()).get("t")
    never = Call(schema, columns=("n",), row=(1,))
    db.writer().submit(never, None, wait=True)
    db.flush(30)
    receipt = db.insert("t", {"n": 2}, timeout=5)
    assert receipt.rows == 1
    assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)
    db.close()


def test_calls_that_come_while_woken_callers_are_away_wait_in_the_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While callers a commit woke are on their way back, the writer sleeps until the
    last is back (one wake-up) instead of taking each call as it comes in (fifty callers
    then took turns with the writer for the GIL): a bundle of buffered rows queued
    meanwhile is not taken, so it stays open to more rows."""
    monkeypatch.setattr(batches, "STRAGGLER_SECONDS", 30.0)
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)
    waiting = threading.Event()
    wait_for_callers = batches.Woken.wait

    def noted(woken: batches.Woken, until: float) -> bool:
        waiting.set()
        return wait_for_callers(woken, until)

    monkeypatch.setattr(batches.Woken, "wait", noted)
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    db.insert("t", {"n": 0})  # the dict's keys seen: its rows take the row buffer
    writer = db.writer()
    sealed = threading.Event()
    writer.fault_hook = lambda at: sealed.set() if at == "batch" else None
    schema = SchemaCache(db.cursor()).get("t")
    told = threading.Event()
    woken = Call(schema, columns=("n",), row=(1,))
    woken.on_done = told.set
    writer.submit(woken, None, wait=True)  # parked: its caller does not run yet
    assert told.wait(30)  # committed and woken
    sealed.clear()
    waiting.clear()
    waited = Call(schema, columns=("n",), row=(2,))
    writer.submit(waited, None, wait=True)
    assert waiting.wait(30)  # the writer took it, found the inbox empty and sleeps
    first = db.insert("t", {"n": 3}, wait=False)
    bundle = writer.rows.open
    assert bundle is not None
    assert not sealed.wait(0.3), "the batch was sealed before the woken caller ran"
    assert writer.rows.open is bundle, "the writer took the bundle while it waited"
    second = db.insert("t", {"n": 4}, wait=False)
    assert writer.rows.open is bundle
    assert woken.wait(5) == 1  # the last woken caller is back: the writer goes on
    assert sealed.wait(30) and waited.wait(30) == 1
    assert first.wait(30) == 1 and second.wait(30) == 1
    assert db.execute("SELECT count(*) FROM t").fetchone() == (5,)
    db.close()


def test_the_last_of_many_woken_callers_lets_the_writer_go_once() -> None:
    """Fifty woken callers come back at once from their own threads: exactly one is
    the last, the writer's wait ends, and nobody's wait fails (a second release of the
    tally would raise in a caller)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    lock = threading.Lock()
    calls = [Call(schema, columns=("n",), row=(i,)) for i in range(50)]
    for call in calls:
        call.guard = lock
        call.park()
    woken = batches.Woken()
    with lock:
        woken.wake(calls)
    assert woken.pending
    start = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def come_back(call: Call) -> None:
        start.wait(30)
        try:
            call.wait(30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=come_back, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    assert woken.wait(woken.deadline() + 30)
    for thread in threads:
        thread.join(30)
    assert not errors and not woken.pending


def test_the_writer_stops_waiting_at_the_deadline_and_forgets_old_tallies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A woken caller that never runs again holds the writer until the deadline only,
    and its commit is forgotten after FORGET_SECONDS."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    never, back = (Call(schema, columns=("n",), row=(i,)) for i in range(2))
    lock = threading.Lock()
    woken = batches.Woken()
    for call in (never, back):
        call.guard = lock
        call.park()
    with lock:
        woken.wake([never, back])
    assert back.wait(5) == 1
    assert not woken.wait(woken.deadline())  # the deadline passes
    assert woken.pending  # still awaited by the next batch, until forgotten
    monkeypatch.setattr(batches, "FORGET_SECONDS", 0.0)
    assert woken.wait(woken.deadline() + 30) and not woken.pending


def test_a_caller_that_stopped_waiting_is_not_awaited() -> None:
    """A caller whose wait() timed out before its commit may never run again: the next
    batch does not wait for it (counted, it held every batch for the whole straggler
    wait until its commit was forgotten), only for the callers still waiting."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    gone, back = (Call(schema, columns=("n",), row=(i,)) for i in range(2))
    lock = threading.Lock()
    for call in (gone, back):
        call.guard = lock
        call.park()
    with pytest.raises(duckflock.IngestTimeoutError):
        gone.wait(0.001)  # its caller gives up before the commit
    woken = batches.Woken()
    with lock:
        woken.wake([gone, back])
    assert gone.finished
    assert back.wait(5) == 1
    started = time.monotonic()
    assert woken.wait(started + 5)  # back at once: nobody else is awaited
    assert time.monotonic() - started < 2 and not woken.pending


def test_the_async_calls_of_one_commit_wake_their_event_loop_once() -> None:
    """``insert_async``'s calls finished by one commit hand their loop one callback for
    all of them (one wake-up of the server's event loop per commit, not per request);
    a loop that closed meanwhile is skipped, and the other loop's calls still settle."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    handed: list[object] = []

    class Counted(asyncio.SelectorEventLoop):
        def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> Any:
            handed.append(self)
            return super().call_soon_threadsafe(*args, **kwargs)

    loop, closed = Counted(), Counted()
    futures = [loop.create_future() for _ in range(3)]
    calls = [Call(schema, columns=("n",), row=(i,)) for i in range(5)]
    for call, future in zip(calls, futures, strict=False):
        call.on_done = Settle(loop, future)
    calls[3].on_done = Settle(closed, closed.create_future())
    closed.close()
    lock = threading.Lock()
    for call in calls:
        call.guard = lock
    with lock:
        batches.Woken().wake(calls)
    assert all(call.finished for call in calls)
    assert handed == [loop, closed]  # one callback per loop, the closed one refused
    loop.run_until_complete(asyncio.wait_for(asyncio.gather(*futures), 5))
    loop.close()


def test_the_wait_for_stragglers_follows_recent_waits_within_its_bounds() -> None:
    """Twice the median of the recent waits, never under STRAGGLER_SECONDS nor over
    STRAGGLER_MAX_SECONDS: callers that usually take 0.9 ms to come back get 1.8 ms
    (a fixed 1 ms expired in one batch of eight or so, and the callers still away
    waited a second commit)."""
    woken = batches.Woken()

    def allows(span: float) -> bool:
        before = time.monotonic()
        deadline = woken.deadline()
        after = time.monotonic()
        return deadline - after - 1e-9 <= span <= deadline - before + 1e-9

    low, high = batches.STRAGGLER_SECONDS, batches.STRAGGLER_MAX_SECONDS
    assert allows(low)  # nothing waited yet: the floor
    for _ in range(40):
        woken.waited(0.0009)
    assert allows(0.0018)
    for _ in range(15):
        woken.waited(0.05)  # a minority of slow waits leaves the median alone
    assert allows(0.0018)
    for _ in range(40):
        woken.waited(0.05)
    assert allows(high)  # the cap
    for _ in range(40):
        woken.waited(0.0)
    assert allows(low)
    for _ in range(40):
        woken.waited(0.0009)
    assert woken.wait(time.monotonic() + 1)  # nothing pending: back at once ...
    assert allows(0.0018)  # ... one wait of ~0 among 32 moves nothing
    for _ in range(20):
        woken.wait(time.monotonic() + 1)
    assert allows(low)  # most waits ~0: the floor again


def test_threads_that_miss_the_schema_cache_together_read_the_catalog_once() -> None:
    """After a DDL empties the cache, the producers' first inserts all miss it: one
    thread reads the table's schema and the others take that reading. Each read it in
    turn before (under the cache's one query lock), so fifty producers' first rows went
    in one after another over ~250 ms and their threads stayed out of step with each
    other for the whole run (a ramp and a tail of small batches)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    cache = SchemaCache(con.cursor())
    read = cache.refresh
    reads: list[str] = []
    second = threading.Event()

    def counted(table: str) -> Any:
        reads.append(table)
        if len(reads) == 1:
            second.wait(0.5)  # a second reading at the same time shows up here
        else:
            second.set()
        return read(table)

    cache.refresh = counted  # type: ignore[method-assign]
    start = threading.Barrier(8)
    got: list[Any] = []

    def first_insert() -> None:
        start.wait(30)
        got.append(cache.get("t"))

    threads = [threading.Thread(target=first_insert) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert reads == ["t"]
    assert len(got) == 8 and all(schema is got[0] for schema in got)
    assert got[0].columns == ("n",)


def test_a_schema_read_before_a_ddl_is_not_kept_after_it() -> None:
    """A reading of the catalog that a DDL and its invalidation overtake is not stored:
    it was, and every later insert was checked against the dropped table's columns
    until the next DDL (a tuple in the old column order went into the new columns)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INTEGER, b INTEGER)")
    read, go = threading.Event(), threading.Event()

    class Slow:  # the cache's cursor, paused after it read the columns
        def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
            self.cursor = cursor

        def execute(self, sql: str, params: Any = None) -> Any:
            result = self.cursor.execute(sql, params)
            if "column_name" in sql and not go.is_set():
                read.set()
                assert go.wait(30)
            return result

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cursor, name)

    cache = SchemaCache(Slow(con.cursor()))  # type: ignore[arg-type]
    reader = threading.Thread(target=cache.get, args=("t",))
    reader.start()
    assert read.wait(30)
    con.execute("DROP TABLE t")
    con.execute("CREATE TABLE t (b INTEGER, a INTEGER)")
    cache.invalidate()  # as the database does after the DDL
    go.set()
    reader.join(30)
    expected = tuple(
        name for (name,) in con.execute("SELECT name FROM pragma_table_info('t')").fetchall()
    )
    assert cache.get("t").columns == expected == ("b", "a")


def test_an_insert_whose_table_is_dropped_before_its_commit_names_the_table() -> None:
    """A call checked against a table that a DROP removes before the writer commits it
    gets the UnknownTableError (404) an insert into a missing table gets, not a
    RowRejectedError (422) blaming its row 0 for the table's absence."""
    db = duckflock.connect()
    try:
        db.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
        db.insert("t", {"a": 1, "b": "x"})  # the writer is running
        writer = db._writer
        assert writer is not None
        with writer.commit_lock:  # no commit happens meanwhile
            receipt = db.insert("t", [{"a": 2, "b": "y"}, {"a": 3, "b": "z"}], wait=False)
            db.execute("DROP TABLE t")
        with pytest.raises(duckflock.UnknownTableError) as caught:
            receipt.wait(30)
        assert caught.value.table == "t" and "does not exist" in str(caught.value)
        with pytest.raises(duckflock.UnknownTableError):  # the same as a call made now
            db.insert("t", {"a": 4, "b": "w"})
    finally:
        db.close()


def test_a_single_row_call_is_the_call_the_constructor_makes() -> None:
    """Call.single (the intake's hot path) sets every slot as Call(...) does."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER)")
    schema = SchemaCache(con.cursor()).get("t")
    made, quick = Call(schema, columns=("n",), row=(1,)), Call.single(schema, ("n",), (1,))
    for slot in Call.__slots__:
        assert getattr(quick, slot) == getattr(made, slot), slot


@pytest.mark.parametrize("text", ["1E+2", "1.5E+3", "-2E+1", "0E+5", "12E+7"])
def test_a_decimal_with_a_positive_exponent_is_stored_as_its_value(text: str) -> None:
    # duckdb 1.5.5 binds Decimal("1E+2") as 1 (duckdb-python issue 566): a few rows go
    # as VALUES parameters, many through Arrow, and all must store the number itself
    from decimal import Decimal

    db = duckflock.connect(":memory:")
    try:
        db.execute("CREATE TABLE t (d DECIMAL(18, 2), l DECIMAL(18, 2)[], v DOUBLE)")
        value = Decimal(text)
        row = {"d": value, "l": [value], "v": value}
        db.insert("t", row)
        db.insert("t", row, wait=False).wait(30)
        db.insert("t", [row] * (appends.VALUES_MAX_PARAMS + 1))
        cast = f"'{text}'::DECIMAL(18, 2)"
        expected = db.sql(f"SELECT {cast}, [{cast}], '{text}'::DOUBLE").fetchall()
        assert db.sql("SELECT DISTINCT * FROM t").fetchall() == expected
    finally:
        db.close()


def _called(schema: Any, n: int, told: threading.Event | None = None) -> Call:
    """A call acknowledged through a callback, as ``insert_async`` makes them."""
    call = Call(schema, columns=("n",), row=(n,))
    call.on_done = (told or threading.Event()).set
    return call


def _held_writer(db: duckflock.Database) -> tuple[Any, Any, threading.Event]:
    """The writer held at its first batch (one callback call, row 0), its table's schema
    and the event that lets it go on."""
    held, release = threading.Event(), threading.Event()

    def hook(at: str) -> None:
        if at == "batch" and not release.is_set():
            held.set()
            assert release.wait(30)

    writer = db.writer()
    writer.fault_hook = hook
    schema = SchemaCache(db.cursor()).get("t")
    writer.submit(_called(schema, 0), None, wait=False)
    assert held.wait(30)
    return writer, schema, release


def test_a_batch_of_callback_calls_waits_a_hair_for_as_many_as_recent_batches_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers acked by callback (the server's requests) cannot say they are on their way
    back: once a batch carried two of them, a batch with one waits (at most
    CALLBACK_WINDOW_SECONDS) for a second, and both go in one commit."""
    monkeypatch.setattr(batches, "CALLBACK_WINDOW_SECONDS", 30.0)
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    writer, schema, release = _held_writer(db)
    pair = [_called(schema, 1), _called(schema, 2)]
    for call in pair:
        writer.submit(call, None, wait=False)  # queued behind the held batch: one batch
    release.set()
    db.flush(30)
    assert all(call.committed for call in pair)
    before = db.stats().batches_committed
    told = threading.Event()
    alone = _called(schema, 3, told)
    writer.submit(alone, None, wait=False)
    assert not told.wait(0.3), "a lone callback call was sealed while two were expected"
    second = _called(schema, 4)
    writer.submit(second, None, wait=False)
    assert told.wait(30)
    db.flush(30)
    assert db.stats().batches_committed == before + 1  # the two went in one commit
    assert db.execute("SELECT count(*) FROM t").fetchone() == (5,)
    db.close()


def test_the_wait_for_more_callback_calls_is_bounded() -> None:
    """A batch expecting more callback calls than come is committed after at most
    CALLBACK_WINDOW_SECONDS."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    writer, schema, release = _held_writer(db)
    for n in (1, 2, 3):
        writer.submit(_called(schema, n), None, wait=False)
    release.set()
    db.flush(30)
    told = threading.Event()
    writer.submit(_called(schema, 4, told), None, wait=False)
    assert told.wait(5)  # alone, after the window
    db.flush(5)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (5,)
    db.close()


# -- waking the callers of a commit one after another ----------------------------------


def _one_held_batch(db: duckflock.Database, count: int) -> tuple[threading.Event, list[Call]]:
    """``count`` parked calls queued while the writer is held at the batch before
    theirs, so they are committed together once the returned event is set."""
    release, reached = threading.Event(), threading.Event()

    def hook(at: str) -> None:
        if at == "batch" and not reached.is_set():
            reached.set()
            assert release.wait(30)

    db.writer().fault_hook = hook
    held = db.insert("t", {"n": 0}, wait=False)
    assert reached.wait(30)  # the writer holds the batch of ``held``
    schema = SchemaCache(db.cursor()).get("t")
    calls = [Call(schema, columns=("n",), row=(i,)) for i in range(1, count + 1)]
    for call in calls:
        db.writer().submit(call, None, wait=True)  # parked: their callers not run yet
    assert held.done is False
    return release, calls


def test_the_callers_of_a_commit_wake_one_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer wakes only the first RELAY_AHEAD callers of a commit; each woken
    caller wakes the next as it runs again (waking all fifty itself, the writer released
    fifty locks under the GIL, each waking a thread that could only queue for it)."""
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)  # no stalled chain here
    ahead = batches.RELAY_AHEAD
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    release, calls = _one_held_batch(db, ahead + 2)
    release.set()
    db.flush(30)
    assert all(call.finished for call in calls)
    assert [call.waiter.locked() for call in calls] == [False] * ahead + [True, True]
    assert calls[0].wait(5) == 1
    assert [call.waiter.locked() for call in calls] == [False] * (ahead + 1) + [True]
    assert all(call.wait(5) == 1 for call in calls)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (len(calls) + 1,)
    db.close()


def test_a_caller_that_stopped_waiting_is_woken_by_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller whose wait timed out before the commit is no link of the chain: the
    writer wakes it itself, besides the first RELAY_AHEAD of the chain."""
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)  # no stalled chain here
    ahead = batches.RELAY_AHEAD
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    release, calls = _one_held_batch(db, ahead + 2)
    with pytest.raises(duckflock.IngestTimeoutError):
        calls[ahead].wait(0.01)  # the first the writer would not wake
    release.set()
    db.flush(30)
    chain = [call for call in calls if call is not calls[ahead]]
    assert not calls[ahead].waiter.locked()
    assert [call.waiter.locked() for call in chain] == [False] * ahead + [True]
    assert calls[0].wait(5) == 1
    assert not chain[-1].waiter.locked()
    assert all(call.wait(5) == 1 for call in calls)
    db.close()


def test_a_chain_a_caller_never_passes_on_is_finished_by_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A woken caller that never runs wait() (interrupted between its submit and its
    wait) does not leave the callers after it waiting: the writer wakes them once the
    commit's callers are forgotten (FORGET_SECONDS), though no other call comes in."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    monkeypatch.setattr(batches, "RELAY_AHEAD", 1)
    release, (first, never, last) = _one_held_batch(db, 3)
    release.set()
    assert first.wait(10) == 1  # wakes ``never``, which does not pass it on
    # as the caller of ``last``, blocked in wait() since before the commit, waits
    assert last.waiter.acquire(timeout=10), "the caller after the stalled one never woke"
    last.waiter.release()
    assert last.wait(10) == 1 and never.finished
    db.close()


def test_a_slow_chain_is_woken_by_the_writer_when_it_seals_the_next_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers of a commit not all back when the writer seals the next batch (after
    STRAGGLER_SECONDS) are woken by the writer: a chain of fifty on a busy machine adds
    up fifty late wake-ups."""
    monkeypatch.setattr(batches, "FORGET_SECONDS", 30.0)  # not the stalled-chain path
    monkeypatch.setattr(batches, "RELAY_AHEAD", 1)
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    release, calls = _one_held_batch(db, 3)
    release.set()
    db.flush(30)
    assert [call.waiter.locked() for call in calls] == [False, True, True]
    db.insert("t", {"n": 9}, timeout=30)  # a batch sealed while calls[1:] are away
    assert not calls[1].waiter.locked() and not calls[2].waiter.locked()
    assert all(call.wait(5) == 1 for call in calls)
    db.close()
