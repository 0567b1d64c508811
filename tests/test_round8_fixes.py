"""Round 8's fixes of what round 7 noticed and left (helper fix8): each a test that
failed on main."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
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


NUMERIC = [
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL(4,1)",
    "DECIMAL(18,3)",
    "DECIMAL(38,0)",
    "DECIMAL(38,10)",
]
WIDE_SQL = (
    "SELECT g, sum(v) AS s, max(h) AS h, max(u) AS u, max(d) AS d, [max(h)] AS l "
    "FROM w GROUP BY g ORDER BY g"
)


def _typed(rows: list[tuple[object, ...]]) -> list[list[tuple[str, object]]]:
    def walk(value: object) -> object:
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        return (type(value).__name__, value)

    return [[walk(value) for value in row] for row in rows]  # type: ignore[misc]


def test_result_rows_give_each_numeric_type_as_duckdbs_fetchall_does() -> None:
    """``Result.rows()`` gave ``Decimal`` for HUGEINT (``sum(BIGINT)``) and UHUGEINT,
    where DuckDB's Python API gives ``int``; DECIMAL(38, 0), exported to Arrow as
    HUGEINT is, stays ``Decimal``. In full mode, incrementally and in changes."""
    import duckdb

    import duckflock

    full_sql = "SELECT " + ", ".join(f"42::{kind} AS c{i}" for i, kind in enumerate(NUMERIC))
    full_sql += ", {'a': [u]} AS st, [d] AS ds FROM w LIMIT 1"
    schema = "CREATE TABLE w (g INTEGER, v BIGINT, h HUGEINT, u UHUGEINT, d DECIMAL(38, 0))"
    row = (1, 5, -(2**127), 2**128 - 1, 3)
    oracle = duckdb.connect()
    oracle.execute(schema)
    oracle.execute("INSERT INTO w VALUES (?, ?, ?, ?, ?)", row)
    with duckflock.connect() as db:
        db.execute(schema)
        db.analysis("full", full_sql)
        db.analysis("wide", WIDE_SQL)
        db.insert("w", [dict(zip("gvhud", row, strict=True))])
        full, wide = db.refresh("full"), db.refresh("wide")
        assert _typed(full.rows()) == _typed(oracle.execute(full_sql).fetchall())
        assert _typed(wide.rows()) == _typed(oracle.execute(WIDE_SQL).fetchall())
        db.insert("w", [{"g": 1, "v": 7, "h": 2**127 - 1, "u": 1, "d": 4}])
        oracle.execute("INSERT INTO w VALUES (1, 7, ?, 1, 4)", (2**127 - 1,))
        wide = db.refresh("wide")
        assert wide.mode == "incremental", wide.reason
        expected = oracle.execute(WIDE_SQL).fetchall()
        assert _typed(wide.rows()) == _typed(expected)
        assert _typed([row[:-1] for row in wide.changes().rows() if row[-1] == 1]) == _typed(
            expected
        )


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_time_24_00_from_arrow_is_inserted_as_duckdb_reads_it(unit: str) -> None:
    """DuckDB's TIME runs to 24:00:00 inclusive (its own Arrow export holds 86,400 s),
    pyarrow's full validation refuses it: ``db.insert`` of DuckDB's own Arrow export
    was rejected. 24:00:00 goes in (read back as DuckDB's Python API gives it, the text
    '24:00:00'); past it stays refused, naming the column."""
    import duckdb

    import duckflock
    from duckflock.errors import RowRejectedError

    kind = pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
    day = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit] * 86_400
    good = pa.table({"t": pa.array([0, day, None], kind)})
    with duckflock.connect() as db:
        db.execute("CREATE TABLE x (t TIME)")
        db.insert("x", good)
        oracle = duckdb.connect()
        oracle.execute("CREATE TABLE x (t TIME)")
        oracle.execute("INSERT INTO x SELECT * FROM good")
        sql = "SELECT t FROM x ORDER BY t"
        assert db.execute(sql).fetchall() == oracle.execute(sql).fetchall()
        assert db.execute(sql).fetchall()[1] == ("24:00:00",)
        with pytest.raises(RowRejectedError, match=r"column 't'.*not within") as caught:
            db.insert("x", pa.table({"t": pa.array([day, day + 1], kind)}))
        assert caught.value.row_index == 1


def test_time_24_00_reads_back_as_duckdb_gives_it_on_every_door() -> None:
    """``Result.rows()`` and the HTTP JSON answer gave 24:00:00 as 00:00:00 (pyarrow's
    ``to_pylist`` wraps it); an Arrow IPC body holding it was refused as malformed."""
    from starlette.testclient import TestClient

    import duckflock
    from duckflock.ingest.rows import ipc_bytes
    from duckflock.server import ServerSettings, create_app

    sql = "SELECT t FROM x ORDER BY t"
    with duckflock.connect() as db:
        db.execute("CREATE TABLE x (t TIME)")
        db.analysis("times", sql)
        body = ipc_bytes(pa.table({"t": pa.array([86_400_000_000, 1], pa.time64("us"))}))
        with TestClient(create_app(db, ServerSettings()), base_url="http://localhost") as http:
            arrow = "application/vnd.apache.arrow.stream"
            sent = http.post("/v1/tables/x/rows", content=body, headers={"Content-Type": arrow})
            assert sent.status_code == 200, sent.text
            answer = http.post("/v1/query", json={"sql": sql}).json()
        expected = db.execute(sql).fetchall()
        assert expected[1] == ("24:00:00",)
        assert db.refresh("times").rows() == expected
        assert answer["rows"] == [["00:00:00.000001"], ["24:00:00"]]


def test_a_refused_load_keeps_the_databases_kept_catalogue_trusted(tmp_path: Path) -> None:
    """``duckflock load``'s search for the refused row (``ingest/loads._first_refused``)
    took a raw ``db.cursor()``: from then on the Database distrusted what it keeps
    between statements (its function catalogue, its settings), for the rest of its
    life. The search changes nothing (rolled back): it takes ``own_cursor()``."""
    import duckflock
    from duckflock.ingest import files as loading
    from duckflock.ingest.loads import ChunkRejectedError, insert_all

    source = tmp_path / "bad.csv"
    source.write_text("id,n\n1,1\n2,x\n3,3\n")
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (id INTEGER, n INTEGER)")
        chunk = next(loading.chunks_of(str(source), "csv", 10))
        with pytest.raises(ChunkRejectedError) as caught:
            insert_all(db, "t", [chunk])
        assert caught.value.error.row_index == 1
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
        assert not db._cursors.raw_handed_out
