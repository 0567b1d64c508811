"""Analyses over a DuckLake table refresh from the lake's change feed (lake/feed.py,
live/lakefeed.py), through a real PostgreSQL catalog (tests/pgcluster.py).

A SECOND process — this file run as a script: plain DuckDB with the ducklake extension,
no duckflock — writes into the lake (inserts, deletes, updates, DDL) while this one
refreshes; every result must equal the same SQL run in full on the lake at the snapshot
the analysis says it reflects (``db.analyses()``'s ``lake_snapshot``), asked of DuckDB
with ``AT (VERSION => …)``.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import duckflock
from duckflock.lake.feed import entries
from duckflock.lake.session import Session
from duckflock.live import internals
from duckflock.live.windows import literal

SEEDS = int(os.environ.get("DUCKFLOCK_LAKE_FEED_SEEDS", "1"))
STEPS = int(os.environ.get("DUCKFLOCK_LAKE_FEED_STEPS", "25"))
_lakes = iter(range(1_000_000))

# the analyses, over ``{events}`` and ``{dims}`` (the oracle time-travels both)
SHAPES = {
    # exact retraction: counts and integer sums are subtracted
    "sums": "SELECT g, count(*) AS n, sum(v) AS s, count(x) AS cx, avg(v) AS mean "
    "FROM {events} GROUP BY g",
    # min/max: a group whose extreme was deleted is recomputed from the table, at the
    # snapshot the feed was read at
    "extremes": "SELECT g, min(v) AS lo, max(v) AS hi, max(s) AS top FROM {events} "
    "WHERE v > 3 GROUP BY g HAVING count(*) > 1",
    # no retraction: deletes rebuild, inserts fold
    "distinct": "SELECT g, count(DISTINCT s) AS kinds FROM {events} GROUP BY g",
    # a join: its dimension's writes rebuild, fact inserts fold
    "joined": "SELECT d.label, count(*) AS n, sum(e.v) AS s FROM {events} AS e "
    "JOIN {dims} AS d ON e.g = d.g GROUP BY d.label",
    "total": "SELECT count(*) AS n, sum(v) AS s, min(v) AS lo FROM {events}",
}


# -- the second process ----------------------------------------------------------------


def _child() -> None:
    """Run SQL sent as JSON lines on stdin against the lake; answer each line with the
    lake's snapshot after it (``burst``: many statements, one answer at the end)."""
    from duckflock.lake.connection import LakeOptions, open_lake, snapshot_id

    target, data = sys.argv[2], sys.argv[3]
    con = open_lake(target, data_path=data, options=LakeOptions(), read_only=False, config={})
    for line in sys.stdin:
        message = json.loads(line)
        try:
            for sql in message.get("burst", [message.get("sql")]):
                con.execute(sql)
            answer: dict[str, Any] = {"snapshot": snapshot_id(con)}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    con.close()


class Other:
    """The second process writing into the lake."""

    def __init__(self, target: str, data: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", target, str(data)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, **message: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def answer(self) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the writer process died"
        answer = json.loads(line)
        assert "error" not in answer, answer["error"]
        return int(answer["snapshot"])

    def run(self, *sqls: str) -> int:
        """Run ``sqls`` in the other process; the lake's snapshot after them."""
        self.send(burst=list(sqls))
        return self.answer()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def lake(postgres: Any, tmp_path: Path) -> Any:
    """A lake of its own with ``events`` and ``dims``, the Database (no background
    maintenance, so the tests decide when files are rewritten) and the other process."""
    dsn = postgres.create_database(f"feed_{os.getpid()}_{next(_lakes)}")
    target, data = f"ducklake:postgres:{dsn}", tmp_path / "lake-data"
    options = duckflock.LakeOptions(maintenance_interval=None, expire_older_than="0 seconds")
    db = duckflock.connect(target, data_path=str(data), lake=options)
    db.execute("CREATE TABLE events (g INTEGER, v BIGINT, x DOUBLE, s VARCHAR)")
    db.execute("CREATE TABLE dims (g INTEGER, label VARCHAR)")
    db.execute("INSERT INTO dims VALUES (0, 'zero'), (1, 'odd'), (2, 'even'), (3, 'odd')")
    db.execute(
        "INSERT INTO events SELECT i % 5, i, CASE WHEN i % 7 = 0 THEN NULL ELSE i / 2 END, "
        "'s' || (i % 11) FROM range(3000) t(i)"
    )
    other = Other(target, data)
    try:
        yield db, other
    finally:
        other.close()
        db.close()


def define(db: duckflock.Database, *names: str) -> None:
    for name in names:
        db.analysis(name, SHAPES[name].format(events="events", dims="dims"))


def snapshot_of(db: duckflock.Database, name: str) -> int:
    (row,) = [a for a in db.analyses() if a["name"] == name]
    assert row["lake_snapshot"] is not None
    return int(row["lake_snapshot"])


def rows(table: pa.Table) -> list[str]:
    """A table's rows as a sorted list (a multiset: results have no order)."""
    return sorted(repr(tuple(row.values())) for row in table.to_pylist())


def check(db: duckflock.Database, name: str, result: duckflock.Result | None = None) -> Any:
    """Refresh ``name`` (or take its refresh ``result``) and compare it with DuckDB's
    full run at its snapshot."""
    result = db.refresh(name) if result is None else result
    assert result.error is None, result.error
    at = snapshot_of(db, name)
    travel = f"AT (VERSION => {at})"
    sql = SHAPES[name].format(events=f"(FROM events {travel})", dims=f"(FROM dims {travel})")
    expected = db.sql(sql).to_arrow_table()
    assert result.table.column_names == expected.column_names
    assert rows(result.table) == rows(expected), (
        name,
        at,
        result.reason,
    )
    return result


# -- the differential test -------------------------------------------------------------


def _writes(rng: random.Random, low: int) -> list[str]:
    """One random batch of writes to the lake (as SQL)."""
    kind = rng.choice(["insert", "insert", "delete", "update", "mixed", "dims"])
    start = rng.randrange(low, low + 100_000)
    inserts = (
        f"INSERT INTO events SELECT i % {rng.randint(1, 7)}, i, "
        f"CASE WHEN i % 5 = 0 THEN NULL ELSE i / 4 END, 's' || (i % {rng.randint(2, 13)}) "
        f"FROM range({start}, {start + rng.choice([1, 3, 40, 1500])}) t(i)"
    )
    mod, rest = rng.randint(2, 40), rng.randint(0, 1)
    deletes = f"DELETE FROM events WHERE v % {mod} = {rest} AND g = {rng.randint(0, 6)}"
    updates = (
        f"UPDATE events SET v = v + {rng.randint(1, 9)}, s = 'u' || g "
        f"WHERE v % {mod} = {rest} AND g = {rng.randint(0, 6)}"
    )
    if kind == "insert":
        return [inserts]
    if kind == "delete":
        return [deletes]
    if kind == "update":
        return [updates]
    if kind == "dims":
        return [f"INSERT INTO dims VALUES ({rng.randint(0, 6)}, 'l{rng.randint(0, 2)}')"]
    return [inserts, deletes, updates]  # three snapshots between two refreshes


@pytest.mark.parametrize("seed", range(SEEDS))
def test_refreshes_equal_a_full_run_at_their_snapshot(lake: Any, seed: int) -> None:
    db, other = lake
    rng = random.Random(seed)
    define(db, *SHAPES)
    for name in SHAPES:
        check(db, name)
    modes: dict[str, set[str]] = {name: set() for name in SHAPES}
    for step in range(STEPS):
        for _ in range(rng.randint(1, 3)):
            other.run(*_writes(rng, step * 200_000))
        if rng.random() < 0.3:  # this process writes too: the writer and db.execute
            rows = [(rng.randint(0, 6), rng.randint(0, 10**6), 1.5, "mine") for _ in range(20)]
            db.insert("events", rows)
            if rng.random() < 0.5:
                db.execute("DELETE FROM events WHERE s = 'mine' AND v % 3 = 0")
        if rng.random() < 0.1:  # maintenance between two refreshes: a gap, rebuilt
            report = db.maintain(rng.choice([["flush"], ["merge"], ["flush", "merge"], ["expire"]]))
            assert not report["errors"], report
        for name in rng.sample(list(SHAPES), rng.randint(1, len(SHAPES))):
            modes[name].add(str(check(db, name).mode))
    # the feed was used, not only full runs (every shape folds inserts in)
    for name in ("sums", "extremes", "total"):
        assert "incremental" in modes[name], (name, modes[name])


def test_refreshes_while_another_process_writes(lake: Any) -> None:
    """Writes land during the refreshes: each result is the lake at one snapshot."""
    db, other = lake
    define(db, "sums", "extremes")
    rng = random.Random(7)
    batches = [_writes(rng, i * 200_000) for i in range(30)]
    done = threading.Event()

    def write() -> None:
        try:
            for batch in batches:
                other.run(*batch)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: set[str] = set()
    refreshes = 0
    while not done.is_set() or refreshes < 2:
        for name in ("sums", "extremes"):
            seen.add(str(check(db, name).mode))
        refreshes += 1
    writer.join(60)
    assert "incremental" in seen


# -- what the feed folds, and what rebuilds --------------------------------------------


def test_another_process_inserts_fold_in_and_the_watch_refreshes(lake: Any) -> None:
    db, other = lake
    db.analysis("total", SHAPES["total"].format(events="events"), on_change=True, min_interval=0)
    first = check(db, "total")
    assert first.mode == "full" and "first refresh" in first.reason
    results: queue.Queue[duckflock.Result] = queue.Queue()
    subscription = db.subscribe("total", results.put)
    snapshot = other.run("INSERT INTO events VALUES (1, 10000000, 1.0, 'far')")
    # the poller sees the new snapshot and the analysis refreshes by itself
    result = results.get(timeout=30)
    while result.rows()[0][0] != 3001:
        result = results.get(timeout=30)
    subscription.cancel()
    assert result.mode == "incremental", result.reason
    assert "folded in 1 rows" in result.reason and f"→{snapshot}" in result.reason
    assert snapshot_of(db, "total") >= snapshot


def test_deletes_and_updates_are_taken_out(lake: Any) -> None:
    db, other = lake
    define(db, "sums", "extremes")
    check(db, "sums"), check(db, "extremes")
    other.run("DELETE FROM events WHERE v < 100", "UPDATE events SET v = -v WHERE v = 2999")
    for name in ("sums", "extremes"):
        result = check(db, name)
        assert result.mode == "incremental", result.reason
        assert "took out 101 deleted" in result.reason, result.reason


@pytest.mark.parametrize(
    ("name", "write", "why"),
    [
        # a shape without retraction: deletes rebuild it
        ("distinct", "DELETE FROM events WHERE v = 5", "cannot take out"),
        # new dimension rows would join the fact rows already folded in
        ("joined", "INSERT INTO dims VALUES (4, 'four')", "wrote the joined dims"),
    ],
)
def test_what_a_shape_cannot_fold_rebuilds(lake: Any, name: str, write: str, why: str) -> None:
    db, other = lake
    define(db, name)
    check(db, name)
    other.run("INSERT INTO events VALUES (2, 5, 1.0, 'new')")
    folded = check(db, name)
    assert folded.mode == "incremental"  # inserts fold
    if name == "joined":  # in the transaction that reads the dimensions at the feed's end
        assert "(DuckLake's change feed)" in folded.reason, folded.reason
    other.run(write)
    result = check(db, name)
    assert result.mode == "full" and why in result.reason, result.reason


def test_expired_snapshots_rebuild(lake: Any) -> None:
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    other.run("INSERT INTO events VALUES (1, 5, 1.0, 'new')")
    report = db.maintain(["expire"])
    assert not report["errors"], report
    result = check(db, "sums")
    assert result.mode == "full" and "expired" in result.reason, result.reason


def test_maintenance_that_rewrites_files_rebuilds(lake: Any) -> None:
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    other.run("INSERT INTO events VALUES (1, 5, 1.0, 'new')")  # inlined
    report = db.maintain(["flush"])
    assert not report["errors"], report
    result = check(db, "sums")
    assert result.mode == "full" and "rewrote the files of events" in result.reason
    other.run("INSERT INTO events VALUES (1, 6, 1.0, 'new')")
    assert check(db, "sums").mode == "incremental"  # and from there on, the feed again


def test_a_schema_change_in_another_process_plans_again(lake: Any) -> None:
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    other.run("ALTER TABLE events ADD COLUMN w INTEGER")
    result = check(db, "sums")
    assert result.mode == "full" and "changed the lake's catalog" in result.reason
    other.run("INSERT INTO events VALUES (1, 5, 1, 'x', 7)")  # the new column too
    assert check(db, "sums").mode == "incremental"


def test_more_changed_rows_than_kept_rebuild(lake: Any) -> None:
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    internals.scheduler(db).notices.max_delta_rows = 100
    other.run("INSERT INTO events SELECT 1, i, 1, 'bulk' FROM range(101) t(i)")
    result = check(db, "sums")
    assert result.mode == "full" and "over 100 rows changed" in result.reason
    other.run("INSERT INTO events SELECT 1, i, 1, 'bulk' FROM range(100) t(i)")
    assert check(db, "sums").mode == "incremental"


def test_nothing_new_keeps_the_result(lake: Any) -> None:
    db, _ = lake
    define(db, "sums")
    first = check(db, "sums")
    again = check(db, "sums")
    assert again.mode == "incremental" and "still at snapshot" in again.reason
    assert again.rows() == first.rows()


def test_a_sliding_window_over_a_lake_rebuilds_when_the_lake_moved(lake: Any) -> None:
    db, other = lake
    db.execute("CREATE TABLE w (g INTEGER, ts TIMESTAMP)")
    sql = "SELECT g, count(*) AS c FROM w WHERE ts > now() - INTERVAL 1 HOUR GROUP BY g"
    db.analysis("recent", sql)
    assert db.refresh("recent").rows() == []
    other.run("INSERT INTO w SELECT i % 3, now()::TIMESTAMP FROM range(10) t(i)")
    result = db.refresh("recent")
    assert result.mode == "full" and "the lake moved" in result.reason, result.reason
    assert result.now is not None
    expected = db.execute(sql.replace("now()", literal(result.now))).fetchall()
    assert sorted(result.rows()) == sorted(expected) and len(expected) == 3
    again = db.refresh("recent")  # the lake did not move: the window is cut, not rebuilt
    assert again.mode == "incremental", again.reason


def test_an_analysis_no_longer_incremental_reports_no_lake_snapshot(lake: Any) -> None:
    """Another process widens a summed column to HUGEINT (a sum DuckDB checks for
    overflow: the shape runs in full from then on): ``lake_snapshot`` is None, as
    analyses() documents for an analysis that keeps no state, not the snapshot the
    dropped state described (it stayed there while results moved on)."""
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    other.run("ALTER TABLE events ALTER v TYPE HUGEINT", "INSERT INTO events VALUES (1, 5, 1, 'x')")
    result = db.refresh("sums")
    assert result.error is None and result.mode == "full", result.reason
    (row,) = [a for a in db.analyses() if a["name"] == "sums"]
    assert row["incremental"] is False and row["lake_snapshot"] is None


def test_a_snapshots_changes_are_read_as_duckdb_lists_them() -> None:
    assert entries("inlined_insert:1,deleted_from_table:12") == [
        ("inlined_insert", "1"),
        ("deleted_from_table", "12"),
    ]
    # a created object is named, quoted: its name may hold commas and quotes
    assert entries('created_table:"main"."a,""b",inlined_insert:3') == [
        ("created_table", '"main"."a,""b"'),
        ("inlined_insert", "3"),
    ]
    assert entries("") == []


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _child()


# -- the refresh's catalog reads, counted in PostgreSQL's own log ----------------------


class Logged:
    """A lake whose PostgreSQL database logs every statement (``log_statement`` set on
    that database only, before any connection), read back from the server's log."""

    def __init__(self, postgres: Any, tmp_path: Path) -> None:
        import psycopg

        name = f"logged_{os.getpid()}_{next(_lakes)}"
        dsn = postgres.create_database(name)
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} SET log_statement = 'all'")
        self.log = Path(postgres.log)
        self.dsn = dsn
        target, data = f"ducklake:postgres:{dsn}", tmp_path / "logged-data"
        self.target, self.data = target, data
        # the poller looks once, at start, then not for an hour: the log is the refresh's
        options = duckflock.LakeOptions(maintenance_interval=None, poll_interval=3600)
        self.db = duckflock.connect(target, data_path=str(data), lake=options)
        self.db.execute("CREATE TABLE events (g INTEGER, v BIGINT, x DOUBLE, s VARCHAR)")
        self.db.execute("CREATE TABLE dims (g INTEGER, label VARCHAR)")
        self.db.execute(
            "INSERT INTO events SELECT i % 5, i, i / 2, 's' || (i % 11) FROM range(3000) t(i)"
        )
        self.other = Other(target, data)
        self.other.run("SELECT 1")  # its answer: it attached the lake, and is idle now
        deadline = threading.Event()
        for _ in range(3000):  # the poller's first look, at most 30 s
            state = self.db.lake_state()
            if state is not None and state["polls"] >= 1:
                break
            deadline.wait(0.01)
        else:
            raise AssertionError("the lake poller never polled")

    def statements(self, fn: Any) -> tuple[Any, list[str]]:
        """What ``fn()`` returns, and the statements PostgreSQL logged meanwhile."""
        start = self.log.stat().st_size
        out = fn()
        with self.log.open(errors="replace") as log:
            log.seek(start)
            text = log.read()
        # an entry starts with its timestamp; a statement's own lines follow it
        entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", text)
        return out, [entry for entry in entries if " statement: " in entry]

    def close(self) -> None:
        self.other.close()
        self.db.close()


@pytest.fixture
def logged(postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # these tests count the postgres extension's statements: its path, not psycopg's
    # (tests/test_lake_direct.py logs that one)
    monkeypatch.setattr(Session, "DIRECT", False)
    lake = Logged(postgres, tmp_path)
    try:
        yield lake
    finally:
        lake.close()


_LISTED = "SELECT 0 AS part"  # the catalog listing's first line (lake/listing.py)


def test_a_refresh_with_nothing_new_reads_the_catalog_once_without_a_transaction(
    logged: Logged,
) -> None:
    db = logged.db
    define(db, "sums")
    first = check(db, "sums")
    check(db, "sums")  # the first look also finds the catalog's schema and data path
    again, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", again)
    assert again.mode == "incremental" and "still at snapshot" in again.reason
    assert again.rows() == first.rows()
    # one statement: the listing; no DuckLake transaction (snapshot, stats, files), and
    # not the connection pool's SELECT 1 / DISCARD ALL nor the extension's BEGIN / COMMIT
    # around it (lake/session.py keeps one connection out of the pool)
    assert len(statements) == 1 and _LISTED in statements[0], statements


def test_appended_files_are_read_from_one_catalog_statement(logged: Logged) -> None:
    db, other = logged.db, logged.other
    define(db, "sums", "total")
    check(db, "sums")
    check(db, "total")
    files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
    other.run(files.format(10_000, 11_500))  # over inline_rows: a Parquet file
    # the first refresh after the build: the columns' types were learned by the build
    # (DuckLake's read of no rows), the file is read straight away, in one statement
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    assert "1 new Parquet file(s)" in result.reason and "1,500 rows" in result.reason
    assert len(statements) == 1 and _LISTED in statements[0], statements
    other.run(files.format(20_000, 21_200), files.format(30_000, 32_000))
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    assert result.mode == "incremental", result.reason
    assert "2 new Parquet file(s)" in result.reason and "3,200 rows" in result.reason
    assert len(statements) == 1 and _LISTED in statements[0], statements
    # the other analysis of the same table: the same schema version, already learned
    assert "3 new Parquet file(s)" in check(db, "total").reason
    # the files it resolved are the ones DuckLake lists
    from duckflock.lake.listing import Catalog

    cursor = db.cursor()
    plan = internals.analysis(db, "sums").state.shape.plan
    assert plan is not None
    listing = Catalog("lake").listing(cursor, plan.table, 0)
    assert listing is not None
    found = cursor.execute("SELECT data_file FROM ducklake_list_files('lake', 'events')")
    listed = {path for (path,) in found.fetchall()}
    assert len(listing.files) == 4 and {path for path, _ in listing.files} <= listed
    # DDL elsewhere in the lake: a new schema version, so the table is looked up by
    # name again (a second statement), once; the rebuild then lists it twice more (the
    # columns learned at the new version, the repeated statement prepared: _prime)
    other.run("CREATE TABLE elsewhere (a INTEGER)", files.format(40_000, 41_100))
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    listed = [line for line in statements if _LISTED in line]
    assert len(listed) == 4 and "WITH target AS" in listed[1], listed
    assert sum("WITH target AS" in line for line in listed) == 1
    assert result.mode == "full", result.reason
    other.run(files.format(50_000, 51_100))
    # the columns at the new schema version were learned by the rebuild
    assert "new Parquet file" in check(db, "sums").reason
    other.run(files.format(60_000, 61_100))
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    assert len(statements) == 1 and "new Parquet file" in result.reason, result.reason


def test_deletes_in_files_holding_most_of_the_table_rebuild(lake: Any) -> None:
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    other.run("DELETE FROM events WHERE v % 1000 = 7")  # in the 3,000-row file
    assert check(db, "sums").mode == "incremental"  # 3,000 rows: read them
    internals.scheduler(db).notices.max_delta_rows = 100
    other.run("DELETE FROM events WHERE v % 1000 = 8")  # kept in the catalog (inlined)
    result = check(db, "sums")
    assert result.mode == "full" and "rebuilding reads less" in result.reason, result.reason
    assert "files holding 3,000" in result.reason
    # over DuckLake's inlining limit: a delete file rather than rows in the catalog
    other.run("DELETE FROM events WHERE v % 2 = 0")
    result = check(db, "sums")
    assert result.mode == "full" and "rebuilding reads less" in result.reason, result.reason


def test_appended_files_of_many_types_read_directly_equal_a_full_run(lake: Any) -> None:
    db, other = lake
    db.execute(
        "CREATE TABLE wide (g INTEGER, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, "
        "dec DECIMAL(18, 3), b BOOLEAN, u UBIGINT, f REAL, t VARCHAR, l INTEGER[])"
    )
    sql = (
        "SELECT g, count(*) AS n, sum(dec) AS sd, min(ts) AS t0, max(d) AS d1, max(tz) AS z, "
        "count(*) FILTER (WHERE b) AS yes, sum(u) AS su, max(t) AS top, "
        "sum(len(l)) AS items, count(f) AS cf FROM wide GROUP BY g"
    )
    db.analysis("wide", sql)
    insert = (
        "INSERT INTO wide SELECT i % 4, DATE '2024-01-01' + (i % 30)::INTEGER, "
        "TIMESTAMP '2024-01-01' + to_seconds(i), TIMESTAMPTZ '2024-01-01 00:00:00+00' "
        "+ to_seconds(i), (i / 7)::DECIMAL(18, 3), i % 3 = 0, i::UBIGINT, i / 3, "
        "'w' || (i % 13), [i, i + 1] FROM range({}, {}) t(i)"
    )
    results = []
    for start in (0, 2_000, 4_000):  # over inline_rows: Parquet files
        other.run(insert.format(start, start + 1_500))
        result = db.refresh("wide")
        assert result.error is None, result.error
        at = snapshot_of(db, "wide")
        expected = db.sql(sql.replace("FROM wide", f"FROM wide AT (VERSION => {at})"))
        assert rows(result.table) == rows(expected.to_arrow_table()), result.reason
        results.append(result)
    # built, then learned through DuckLake, then read straight from the file
    assert "new Parquet file" in results[2].reason, results[2].reason


@pytest.mark.parametrize(
    "own",
    [
        "DELETE FROM events WHERE v >= {a} AND v % 2 = 0",
        "UPDATE events SET v = -v, s = 'u' WHERE v >= {a} AND v % 3 = 0",
    ],
)
def test_a_transaction_that_changes_its_own_new_file_is_read_whole(lake: Any, own: str) -> None:
    """A transaction that writes a Parquet file and then deletes or updates some of its
    own rows lists only ``inserted_into_table``: the file's delete file is at the same
    snapshot. Neither the direct read of the file nor DuckLake's feed may fold the
    deleted rows in."""
    db, other = lake
    define(db, "sums")
    check(db, "sums")
    files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
    other.run(files.format(10_000, 11_500))  # a file: the columns are learned
    check(db, "sums")
    # the direct read's case: only files appended since the last refresh
    other.run("BEGIN", files.format(20_000, 23_000), own.format(a=20_000), "COMMIT")
    check(db, "sums")
    # DuckLake's feed's case: an inlined insert in the same range takes that path
    other.run("INSERT INTO events VALUES (1, 1, 1, 'i')")
    other.run("BEGIN", files.format(30_000, 33_000), own.format(a=30_000), "COMMIT")
    result = check(db, "sums")
    assert "DuckLake's change feed" in result.reason, result.reason


def _listing_backends(dsn: str) -> list[int]:
    """The PostgreSQL backends whose last statement was a catalog listing."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        found = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE '%0 AS part%' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in found]


def test_the_kept_catalog_connection_is_replaced_when_it_dies(logged: Logged) -> None:
    """The session's connection (lake/session.py) is killed between two refreshes, as
    a catalog restart would: the next read fails on it, and is tried once on a fresh
    one; the refresh stays incremental and equal to a full run."""
    import psycopg

    db, other = logged.db, logged.other
    define(db, "sums")
    check(db, "sums")
    files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
    other.run(files.format(10_000, 11_500))
    check(db, "sums")  # learned through DuckLake's read
    other.run(files.format(20_000, 21_500))
    assert "new Parquet file" in check(db, "sums").reason  # on the kept connection
    (pid,) = _listing_backends(logged.dsn)  # one kept connection, not one per read
    with psycopg.connect(logged.dsn, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    other.run(files.format(30_000, 31_500))
    result = check(db, "sums")
    assert result.mode == "incremental" and "new Parquet file" in result.reason, result.reason
    (again,) = _listing_backends(logged.dsn)
    assert again != pid


def test_a_kept_session_is_renewed_and_a_read_only_lake_reads_without_one(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    from duckflock.lake.session import Session

    db, other = logged.db, logged.other
    define(db, "sums")
    check(db, "sums")
    files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
    other.run(files.format(10_000, 11_500))
    check(db, "sums")
    monkeypatch.setattr(Session, "RENEW", 0.0)  # every read in a new DuckDB transaction
    other.run(files.format(20_000, 21_500))
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    assert result.mode == "incremental" and "new Parquet file" in result.reason, result.reason
    # the old session's connection went back to the pool (its reset), the new one read
    assert any("DISCARD ALL" in line for line in statements), statements
    assert sum(_LISTED in line for line in statements) == 1, statements
    monkeypatch.undo()
    monkeypatch.setattr(Session, "DIRECT", False)  # (undone above) the extension's path
    # read-only: the extension refuses reads outside a transaction there, so each
    # read is its own statement in the extension's transaction, as before
    options = duckflock.LakeOptions(maintenance_interval=None, poll_interval=3600)
    with duckflock.connect(
        logged.target, data_path=str(logged.data), lake=options, read_only=True
    ) as reader:
        define(reader, "sums")
        check(reader, "sums")
        for start in (30_000, 40_000):
            other.run(files.format(start, start + 1_500))
            result, statements = logged.statements(lambda: reader.refresh("sums"))
            check(reader, "sums", result)
            assert result.mode == "incremental", result.reason
        assert "new Parquet file" in result.reason, result.reason
        assert any("REPEATABLE READ" in line for line in statements), statements


def test_a_repeated_listing_is_prepared_once_and_a_state_behind_its_window_is_read_whole(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing a refresh repeats reads the last ``Catalog.WINDOW`` snapshots with
    the same text every time, bound once (lake/session.py); a state further behind is
    listed by a second statement naming its snapshot. Either way: one file's rows each."""
    from duckflock.lake.listing import Catalog
    from duckflock.lake.session import Session

    prepared: list[str] = []
    original = Session._prepare

    def counted(self: Session, session: Any, sql: str) -> str:
        name = original(self, session, sql)
        if name not in prepared:
            prepared.append(name)
        return name

    monkeypatch.setattr(Session, "_prepare", counted)
    monkeypatch.setattr(Catalog, "WINDOW", 2)
    db, other = logged.db, logged.other
    define(db, "sums")
    check(db, "sums")
    files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
    other.run(files.format(10_000, 11_500))
    check(db, "sums")  # learned through DuckLake's read
    for start in (20_000, 30_000):  # in the window: one statement, prepared once
        other.run(files.format(start, start + 1_500))
        result, statements = logged.statements(lambda: db.refresh("sums"))
        check(db, "sums", result)
        assert "1 new Parquet file(s)" in result.reason, result.reason
        assert len(statements) == 1 and _LISTED in statements[0], statements
    assert len(prepared) == 1, prepared
    # three snapshots on: out of the window, so the state's own snapshot is named
    for start in (40_000, 50_000, 60_000):
        other.run(files.format(start, start + 1_100))
    result, statements = logged.statements(lambda: db.refresh("sums"))
    check(db, "sums", result)
    assert "3 new Parquet file(s)" in result.reason and "3,300 rows" in result.reason
    assert sum(_LISTED in line for line in statements) == 2, statements
    assert len(prepared) == 1, prepared


def test_the_poller_reads_the_latest_snapshot_in_one_statement(
    postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot poller (lake/watch.py) looks on a catalog connection of its own: one
    statement a look, not a DuckLake transaction with the pool's checks around it (the
    extension's path: psycopg's prepared reads log as ``execute``)."""
    import psycopg

    monkeypatch.setattr(Session, "DIRECT", False)

    name = f"polled_{os.getpid()}_{next(_lakes)}"
    dsn = postgres.create_database(name)
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET log_statement = 'all'")
    log = Path(postgres.log)
    options = duckflock.LakeOptions(maintenance_interval=None, poll_interval=0.02)
    with duckflock.connect(
        f"ducklake:postgres:{dsn}", data_path=str(tmp_path / "polled"), lake=options
    ) as db:
        db.execute("CREATE TABLE t (a INTEGER)")

        def polls() -> int:
            state = db.lake_state()
            assert state is not None and state["poll_error"] is None, state
            return int(state["polls"])

        waited = threading.Event()
        for _ in range(3000):
            if polls() >= 2:
                break
            waited.wait(0.01)
        start, before = log.stat().st_size, polls()
        for _ in range(3000):
            if polls() >= before + 5:
                break
            waited.wait(0.01)
        looked, end = polls() - before, log.stat().st_size
        db.execute("INSERT INTO t VALUES (1)")
        for _ in range(3000):  # the poller sees the insert's snapshot
            state = db.lake_state()
            assert state is not None
            if state["changes"] >= 1:
                break
            waited.wait(0.01)
        else:
            raise AssertionError("the poller never saw the new snapshot")
    with log.open(errors="replace") as file:
        file.seek(start)
        text = file.read(end - start)
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", text)
    statements = [entry for entry in entries if " statement: " in entry]
    # each look one statement on the poller's kept connection: no BEGIN, COMMIT, the
    # pool's SELECT 1 or DISCARD ALL around it (a look in flight at either end aside)
    assert looked >= 5 and len(statements) >= looked - 1, (looked, statements)
    assert all("max(snapshot_id)" in entry for entry in statements), statements


def test_a_new_file_is_read_for_the_columns_the_query_names(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Parquet file read straight (lake/listing.py) is read for the columns the
    analysis's syntax tree names (qualified or not; ``count(*)`` names none). Each
    result equals a full run at its snapshot."""
    from duckflock.lake import listing

    read: list[tuple[str, ...]] = []
    original = listing._read

    def recorded(path: str, columns: list[str], rows: int) -> Any:
        read.append(tuple(columns))
        return original(path, columns, rows)

    monkeypatch.setattr(listing, "_read", recorded)
    db, other = logged.db, logged.other
    SHAPES["aliased"] = "SELECT e.s, count(*) AS n FROM {events} AS e GROUP BY e.s"
    SHAPES["rows"] = "SELECT count(*) AS n FROM {events}"
    try:
        define(db, "sums", "total", "aliased", "rows")
        files = "INSERT INTO events SELECT i % 7, i, i / 3, 's' || (i % 5) FROM range({}, {}) t(i)"
        for start in (10_000, 20_000):  # the first is read through DuckLake: types learned
            other.run(files.format(start, start + 1_500))
            read.clear()
            results = [check(db, name) for name in ("sums", "total", "aliased", "rows")]
        for result in results:
            assert "new Parquet file" in result.reason, result.reason
        assert read == [("g", "v", "x"), ("v",), ("s",), ("g",)], read
    finally:
        del SHAPES["aliased"], SHAPES["rows"]
