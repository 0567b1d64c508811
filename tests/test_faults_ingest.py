"""Fault suite, write path: no caller's data or callback can stop the writer.

Every call is either committed exactly once or gets its own duckflock error naming its
row (and column, where one can be told); calls sharing its batch commit; the writer stays
alive. ``DUCKFLOCK_FAULT_SCALE`` multiplies the number of fuzzed examples (default 1).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duckflock
from duckflock.errors import ConversionError, RowRejectedError, StorageError
from duckflock.ingest import storage
from duckflock.ingest.intake import Intake
from duckflock.ingest.receipts import Call
from duckflock.ingest.rows import Part
from duckflock.ingest.schema import SchemaCache

SCALE = max(1, int(os.environ.get("DUCKFLOCK_FAULT_SCALE", "1")))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

TABLE = """CREATE TABLE IF NOT EXISTS every_type (
    id BIGINT PRIMARY KEY,
    i INTEGER,
    nn VARCHAR NOT NULL,
    chk INTEGER CHECK (chk >= 0),
    dflt INTEGER DEFAULT 7,
    lst INTEGER[],
    st STRUCT(a INTEGER, b VARCHAR),
    mp MAP(VARCHAR, INTEGER),
    en ENUM('red', 'green'),
    dec DECIMAL(10, 2),
    bl BLOB,
    u UUID,
    ts TIMESTAMPTZ,
    iv INTERVAL,
    d DOUBLE,
    s VARCHAR,
    hi HUGEINT
)"""

UTC = dt.UTC
# a valid value for every column but id: what good calls carry
GOOD: dict[str, Any] = {
    "i": 1,
    "nn": "x",
    "chk": 3,
    "dflt": 9,
    "lst": [1, 2],
    "st": {"a": 1, "b": "b"},
    "mp": {"k": 1},
    "en": "red",
    "dec": decimal.Decimal("12.34"),
    "bl": b"\x00\xff",
    "u": uuid.UUID(int=5),
    "ts": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    "iv": dt.timedelta(days=1, seconds=3),
    "d": 1.5,
    "s": "ok\x00ok",
    "hi": 2**100,
}
COLUMNS = list(GOOD)


class Opaque:
    """An object of no SQL type."""

    def __repr__(self) -> str:
        return "<Opaque>"


_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),  # NULs and any code point
    st.builds(lambda a, b: a + b, st.text(max_size=5), _surrogates),  # lone surrogates
    st.binary(max_size=20),
    st.datetimes(timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=-11))])),
    st.dates(),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from(
        [
            np.int64(-5),
            np.float32("nan"),
            np.bool_(True),
            np.uint64(2**64 - 1),
            np.datetime64("2020-01-01"),
            np.str_("np"),
            Opaque(),
            object(),
            {1, 2},
            frozenset(),
            1j,
            Ellipsis,
            "red",
            "green",
            "blue",
        ]
    ),
)
EVIL = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "k", "\ud800"]), inner, max_size=3),
    ),
    max_leaves=6,
)


def _call(ids: Iterator[int], data: st.DataObject) -> tuple[list[dict[str, Any]], int | None]:
    """Rows of one call; one of them may carry an evil value. Returns the rows and the
    index of the evil row (None for a good call)."""
    nrows = data.draw(st.sampled_from([1, 1, 1, 3, 40, 300]))
    rows = [{"id": next(ids), **GOOD} for _ in range(nrows)]
    if data.draw(st.booleans()):
        return rows, None
    at = data.draw(st.integers(0, nrows - 1))
    column = data.draw(st.sampled_from(COLUMNS))
    rows[at][column] = data.draw(EVIL)
    return rows, at


@pytest.fixture(scope="module")
def fuzzdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckflock.Database]:
    db = duckflock.connect(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb")
    db.execute(TABLE)
    yield db
    db.close()


_ids = itertools.count(1)
_tried = {"calls": 0, "bad": 0, "rejected": 0, "rows": 0}


@settings(
    max_examples=40 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_calls_commit_once_or_fail_alone(
    fuzzdb: duckflock.Database, data: st.DataObject
) -> None:
    calls = [_call(_ids, data) for _ in range(data.draw(st.integers(1, 12)))]
    outcomes: list[BaseException | None] = [None] * len(calls)
    start = threading.Barrier(4)

    def producer(lane: int) -> None:
        start.wait(30)
        for k in range(lane, len(calls), 4):
            try:
                fuzzdb.insert("every_type", calls[k][0], timeout=60)
            except BaseException as exc:
                outcomes[k] = exc

    threads = [threading.Thread(target=producer, args=(lane,)) for lane in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
        assert not thread.is_alive()
    low = calls[0][0][0]["id"]
    high = calls[-1][0][-1]["id"]
    present = dict(
        fuzzdb.execute(
            "SELECT id, count(*) FROM every_type WHERE id BETWEEN ? AND ? GROUP BY id",
            [low, high],
        ).fetchall()
    )
    for (rows, evil), outcome in zip(calls, outcomes, strict=True):
        ids = [row["id"] for row in rows]
        _tried["calls"] += 1
        _tried["rows"] += len(rows)
        _tried["bad"] += evil is not None
        if outcome is None:
            assert all(present.get(i) == 1 for i in ids), "acknowledged rows missing or doubled"
            continue
        _tried["rejected"] += 1
        assert evil is not None, f"a good call failed: {outcome!r}"
        assert isinstance(outcome, RowRejectedError), repr(outcome)
        assert not any(i in present for i in ids), "a rejected call left rows behind"
        assert outcome.row_index == evil, (outcome, evil)
        bad_value = next(v for c, v in rows[evil].items() if c != "id" and v is not GOOD.get(c))
        if isinstance(bad_value, str) and _has_surrogate(bad_value):
            assert outcome.column is not None
            assert isinstance(outcome.cause, ConversionError)
        str(outcome)  # renders whatever the value
    assert set(present) <= {row["id"] for rows, _ in calls for row in rows}
    # the writer is alive and healthy
    fuzzdb.insert("every_type", {"id": next(_ids), **GOOD}, timeout=60)
    assert fuzzdb.stats().state == "ok"


def _has_surrogate(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def test_zz_fuzz_totals_match_the_table(fuzzdb: duckflock.Database) -> None:
    """Nothing else changed: the table holds exactly the acknowledged rows."""
    stats = fuzzdb.stats()
    count = fuzzdb.execute("SELECT count(*), count(DISTINCT id) FROM every_type").fetchone()
    assert count is not None and count[0] == count[1] == stats.rows_committed
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-ingest.json").write_text(
        json.dumps({**_tried, "rows_in_table": count[0], "scale": SCALE}, indent=1)
    )


def _invalid_utf8(values: list[bytes]) -> pa.Array:
    offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))],
    )


def _bad_table(nrows: int, at: int) -> pa.Table:
    values = [b"fine"] * nrows
    values[at] = b"\xff\xfe"
    return pa.table({"id": pa.array(range(nrows), pa.int32()), "s": _invalid_utf8(values)})


@pytest.mark.parametrize("nrows", [1, 5, 2000])
def test_invalid_utf8_in_arrow_is_refused_in_the_caller(nrows: int) -> None:
    db = duckflock.connect()
    db.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
    chunked = pa.concat_tables([_bad_table(3, 0).slice(1), _bad_table(nrows, nrows // 2)])
    with pytest.raises(RowRejectedError) as caught:
        db.insert("t", chunked, wait=False)
    assert caught.value.row_index == 2 + nrows // 2
    assert caught.value.column == "s"
    assert isinstance(caught.value.cause, ConversionError)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("nrows", [1, 5, 2000])
def test_invalid_utf8_that_reaches_the_writer_fails_alone_naming_row_and_column(
    nrows: int,
) -> None:
    """The writer is safe without the caller's check too: the call is made here as the
    intake would make it, minus the check, and handed to the writer directly."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (id INTEGER, s VARCHAR)")
    at = nrows // 2
    table = SchemaCache(db.cursor()).get("t")
    good = db.insert("t", {"id": -1, "s": "good"}, wait=False)
    rejected = Call(table, parts=[Part(table.columns, arrow=_bad_table(nrows, at))], nrows=nrows)
    db.writer().submit(rejected, None, wait=False)
    after = db.insert("t", {"id": -2, "s": "after"}, wait=False)
    with pytest.raises(RowRejectedError) as caught:
        rejected.wait(30)
    assert caught.value.row_index == at
    assert caught.value.column == "s"
    assert good.wait(30) == 1 and after.wait(30) == 1
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(-2,), (-1,)]
    assert db.stats().state == "ok"
    db.close()


def test_a_lone_surrogate_fails_its_call_only() -> None:
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER, s VARCHAR)")
    receipts = [db.insert("t", {"n": n, "s": "fine"}, wait=False) for n in range(5)]
    bad = db.insert("t", {"n": 99, "s": "a\ud800b"}, wait=False)
    receipts += [db.insert("t", {"n": n, "s": "fine"}, wait=False) for n in range(5, 10)]
    with pytest.raises(RowRejectedError) as caught:
        bad.wait(30)
    assert caught.value.column == "s" and caught.value.row_index == 0
    assert isinstance(caught.value.cause, ConversionError)
    assert "surrogate" in str(caught.value)
    assert all(r.wait(30) == 1 for r in receipts)
    many = [{"n": 100 + k, "s": "x"} for k in range(500)]
    many[321]["s"] = "\udfff"
    with pytest.raises(RowRejectedError) as caught:
        db.insert("t", many, timeout=30)
    assert caught.value.row_index == 321 and caught.value.column == "s"
    db.insert("t", {"n": 1000, "s": "later"}, timeout=30)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (11,)
    assert db.stats().state == "ok"
    db.close()


def test_a_closed_event_loop_cannot_stop_the_writer() -> None:
    """insert_async whose loop closed while the insert was pending: its wake-up callback
    fails in the writer; the writer logs it and goes on, nobody is left hanging."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    db.insert("t", {"n": 0})
    taken = threading.Event()
    release = threading.Event()

    def gated(at: str) -> None:
        if at == "batch":
            taken.set()
            assert release.wait(30)

    db.writer().fault_hook = gated

    async def abandoned() -> None:
        task = asyncio.ensure_future(db.insert_async("t", {"n": 1}))
        await asyncio.sleep(0)  # queued; the writer takes it and blocks in the gate
        await asyncio.get_running_loop().run_in_executor(None, taken.wait, 30)
        task.cancel()

    asyncio.run(abandoned())  # the loop is closed now, its insert still pending
    waiting = [db.insert("t", {"n": 2 + k}, wait=False) for k in range(20)]
    release.set()
    assert all(r.wait(30) == 1 for r in waiting)
    db.insert("t", {"n": 100}, timeout=30)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (23,)
    db.close()


def test_a_raising_callback_is_logged_and_the_batch_still_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    intake = Intake(db.cursor())  # the ingest wing's entry, as Database.insert uses it
    calls = []
    for n in range(10):
        call = intake.call("t", {"n": n}, None)
        if n == 3:

            def boom() -> None:
                raise ValueError("callback bug")

            call.on_done = boom
        calls.append(call)
    writer = db.writer()
    for call in calls:
        writer.submit(call, None, wait=True)
    assert all(c.wait(30) == 1 for c in calls)
    assert any("completion callback failed" in r.message for r in caplog.records)
    db.insert("t", {"n": 11}, timeout=30)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (11,)
    db.close()


def test_a_storage_failure_fails_its_batch_with_storage_error() -> None:
    """A commit the storage refuses: its callers get StorageError (never a
    RowRejectedError), the state says so, and the next batch commits again."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER)")
    db.insert("t", {"n": 0})
    fail = threading.Event()

    def flaky(at: str) -> None:
        if fail.is_set() and at == "commit":
            import duckdb

            raise duckdb.TransactionException(
                'TransactionContext Error: Failed to commit: Could not write file "x": '
                "No space left on device"
            )

    db.writer().fault_hook = flaky
    fail.set()
    receipts = [db.insert("t", {"n": n}, wait=False) for n in range(1, 6)]
    for receipt in receipts:
        with pytest.raises(StorageError, match="No space left"):
            receipt.wait(30)
    stats = db.stats()
    assert stats.state == "failed" and stats.storage_failures >= 1
    assert stats.last_storage_error is not None and "No space" in stats.last_storage_error
    fail.clear()
    db.insert("t", {"n": 6}, timeout=30)
    assert db.stats().state == "ok"
    assert db.execute("SELECT list(n ORDER BY n) FROM t").fetchone() == ([0, 6],)
    db.close()


def test_storage_faults_are_told_from_row_faults() -> None:
    import duckdb

    assert storage.storage_fault(duckdb.IOException("IO Error: could not write"))
    assert storage.storage_fault(duckdb.FatalException("FATAL Error: invalidated"))
    assert storage.storage_fault(
        duckdb.TransactionException(
            'TransactionContext Error: Failed to commit: Could not write file "a": File too large'
        )
    )
    assert not storage.storage_fault(duckdb.TransactionException("Conflict on tuple deletion!"))
    assert not storage.storage_fault(duckdb.ConstraintException("NOT NULL constraint failed"))
    assert not storage.storage_fault(RuntimeError("Unable to cast Python instance"))
    assert not storage.storage_fault(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"))


def test_renewing_the_committer_closes_its_old_cursors() -> None:
    """After a reopen the committer takes fresh cursors and closes the old ones (the
    plain and the optimizer-off one): none is left holding the old instance, whoever
    made them (here a factory that does not close them itself)."""
    import duckdb

    from duckflock.ingest.committer import Committer

    connection = duckdb.connect()
    made: list[duckdb.DuckDBPyConnection] = []

    def new_cursor() -> duckdb.DuckDBPyConnection:
        made.append(connection.cursor())
        return made[-1]

    committer = Committer(new_cursor)
    old = list(made)
    assert len(old) == 2  # the statement cursor and the lone one
    committer.renew()
    for cursor in old:
        with pytest.raises(duckdb.ConnectionException):
            cursor.execute("SELECT 1")
    assert committer.cursor.execute("SELECT 1").fetchone() == (1,)
    assert committer.lone.execute("SELECT 2").fetchone() == (2,)
    connection.close()


def test_an_invalidated_database_is_reopened_and_failing_reopens_are_retried(
    tmp_path: Path,
) -> None:
    """DuckDB invalidated the instance (simulated): the batch gets StorageError, the
    writer reopens the file; while reopening fails, each batch fails fast with
    StorageError and the next one tries again; readers get working cursors after."""
    db = duckflock.connect(tmp_path / "reopen.duckdb")
    db.execute("CREATE TABLE t (n INTEGER)")
    db.insert("t", {"n": 0})
    invalidate = threading.Event()
    refusals = [2]  # reopen fails this many times first

    def faults(at: str) -> None:
        import duckdb

        if at == "commit" and invalidate.is_set():
            invalidate.clear()
            raise duckdb.FatalException("FATAL Error: database has been invalidated")
        if at == "reopen" and refusals[0] > 0:
            refusals[0] -= 1
            raise OSError("still no space")

    db.writer().fault_hook = faults
    invalidate.set()
    with pytest.raises(StorageError, match="invalidated"):
        db.insert("t", {"n": 1}, timeout=30)
    assert db.stats().state == "failed"
    assert "still no space" in (db.stats().last_storage_error or "")
    with pytest.raises(StorageError, match="could not be reopened"):
        db.insert("t", {"n": 2}, timeout=30)  # the second refusal
    db.insert("t", {"n": 3}, timeout=30)  # reopened first, then committed
    stats = db.stats()
    assert (stats.state, stats.reopens) == ("ok", 1)
    assert db.execute("SELECT list(n ORDER BY n) FROM t").fetchone() == ([0, 3],)
    seen: list[Any] = []
    reader = threading.Thread(
        target=lambda: seen.append(db.execute("SELECT count(*) FROM t").fetchone())
    )
    reader.start()
    reader.join(30)
    assert seen == [(2,)]
    db.close()


def test_a_call_arrow_cannot_hold_is_still_all_or_nothing() -> None:
    """Rows Arrow refuses as one column (a list among strings) go in as several VALUES
    statements: one transaction, so a bad row late in the call leaves nothing behind."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (n INTEGER CHECK (n >= 0), s VARCHAR)")
    rows: list[dict[str, Any]] = [{"n": k, "s": "text"} for k in range(300)]
    rows[0]["s"] = [1, 2]  # DuckDB's VALUES casts it to '[1, 2]'; Arrow cannot mix it
    rows[250]["n"] = -1
    with pytest.raises(RowRejectedError) as caught:
        db.insert("t", rows, timeout=30)
    assert caught.value.row_index == 250
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    rows[250]["n"] = 250
    assert db.insert("t", rows, timeout=30).rows == 300
    assert db.execute("SELECT s FROM t WHERE n = 0").fetchone() == ("[1, 2]",)
    db.close()
