"""Database: per-thread cursors, results the DuckDB way, transactions, close."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pytest

import duckflock
from dropped import assert_collected, run_cleanly, started_since
from duckflock import (
    BindError,
    CatalogError,
    ClosedError,
    ConflictError,
    ParserError,
    QueryError,
    TransactionAbortedError,
)


def test_execute_returns_duckdb_results_in_every_shape(db: duckflock.Database) -> None:
    db.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(1, "x"), (2, "y"), (3, None)])
    assert db.execute("SELECT * FROM t ORDER BY a").fetchall() == [(1, "x"), (2, "y"), (3, None)]
    assert db.execute("SELECT count(*) FROM t WHERE a > ?", [1]).fetchone() == (2,)
    assert db.execute("SELECT $n AS n", {"n": 7}).fetchone() == (7,)
    assert list(db.execute("SELECT a FROM t ORDER BY a").df()["a"]) == [1, 2, 3]
    assert db.execute("SELECT a FROM t ORDER BY a").arrow().read_all().column("a").to_pylist() == [
        1,
        2,
        3,
    ]
    assert db.execute("SELECT b FROM t ORDER BY a").pl()["b"].to_list() == ["x", "y", None]
    assert db.sql("SELECT sum(a) FROM t").fetchone() == (6,)


def test_each_thread_gets_its_own_reused_cursor(memdb: duckflock.Database) -> None:
    """A variable set by one statement is seen by the thread's next (its cursor is
    reused) and by no other thread (each has a cursor of its own)."""
    seen: dict[str, list[Any]] = {}
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()  # all four alive at once, so no cursor can be reused across them
        memdb.execute("SET VARIABLE mine = ?", [name])
        barrier.wait()  # every thread has set its own before any reads
        ids = []
        for _ in range(2):
            ids.append(memdb.execute("SELECT getvariable('mine')").fetchone())
        seen[name] = ids
        barrier.wait()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(ids == [(name,), (name,)] for name, ids in seen.items()), seen
    assert len(seen) == 4


def test_cursors_of_ended_threads_are_released() -> None:
    """10,000 short-lived threads each running one query leave no open cursors behind."""
    db = duckflock.connect()
    db.execute("CREATE TABLE t (x INTEGER)")
    process = psutil.Process()
    baseline_cursors = db.open_cursors

    def one_query() -> None:
        db.execute("SELECT count(*) FROM t").fetchone()

    def wave(n: int) -> None:
        threads = [threading.Thread(target=one_query) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    wave(1000)  # warm up allocator and DuckDB caches before measuring memory
    gc.collect()
    rss_before = process.memory_info().rss
    peak_cursors = 0
    for _ in range(9):
        wave(1000)
        peak_cursors = max(peak_cursors, db.open_cursors)
    gc.collect()
    rss_growth = process.memory_info().rss - rss_before
    assert db.open_cursors == baseline_cursors
    assert peak_cursors == baseline_cursors  # released as each wave's threads ended
    assert rss_growth < 40 * 1024 * 1024, f"RSS grew {rss_growth / 1e6:.1f} MB"
    db.close()


def test_explicit_cursor_has_its_own_temp_objects(memdb: duckflock.Database) -> None:
    one = memdb.cursor()
    other = memdb.cursor()
    one.execute("CREATE TEMP TABLE scratch AS SELECT 42 AS x")
    assert one.execute("SELECT x FROM scratch").fetchone() == (42,)
    with pytest.raises(duckdb.CatalogException):
        other.execute("SELECT x FROM scratch")
    one.close()
    other.close()


def test_threads_insert_their_names_through_the_shared_handle(db: duckflock.Database) -> None:
    """The shape of DuckDB's own test_multithread insert test, run on Database."""
    db.execute("CREATE TABLE names (name VARCHAR)")
    barrier = threading.Barrier(10)

    def insert_own_name() -> None:
        barrier.wait()
        for _ in range(20):
            db.execute("INSERT INTO names VALUES (?)", [threading.current_thread().name])

    threads = [threading.Thread(target=insert_own_name, name=f"n{i}") for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = dict(db.execute("SELECT name, count(*) FROM names GROUP BY 1").fetchall())
    assert counts == {f"n{i}": 20 for i in range(10)}


# -- errors ----------------------------------------------------------------------------


def test_unknown_table_is_a_catalog_error_with_the_sql(memdb: duckflock.Database) -> None:
    with pytest.raises(CatalogError) as info:
        memdb.execute("SELECT * FROM nowhere")
    assert "nowhere" in str(info.value)
    assert info.value.sql == "SELECT * FROM nowhere"
    assert isinstance(info.value.__cause__, duckdb.CatalogException)


def test_syntax_error_is_a_parser_error(memdb: duckflock.Database) -> None:
    with pytest.raises(ParserError, match="SELEC"):
        memdb.execute("SELEC 1")


def test_wrong_parameter_count_is_a_bind_error(memdb: duckflock.Database) -> None:
    with pytest.raises(BindError) as info:
        memdb.execute("SELECT ?, ?", [1])
    assert info.value.params == [1]


def test_non_string_sql_is_a_type_error(memdb: duckflock.Database) -> None:
    with pytest.raises(TypeError, match="sql must be a str"):
        memdb.execute(42)  # type: ignore[arg-type]


def test_errors_leave_the_database_usable(memdb: duckflock.Database) -> None:
    with pytest.raises(QueryError):
        memdb.execute("SELECT * FROM nowhere")
    assert memdb.execute("SELECT 1").fetchone() == (1,)


# -- close -----------------------------------------------------------------------------


def test_close_is_idempotent_and_use_after_close_raises_everywhere(tmp_path: Path) -> None:
    db = duckflock.connect(tmp_path / "c.duckdb")
    db.execute("SELECT 1")
    db.close()
    db.close()
    assert db.closed
    assert db.open_cursors == 0
    for call in (
        lambda: db.execute("SELECT 1"),
        lambda: db.executemany("SELECT ?", [[1]]),
        lambda: db.sql("SELECT 1"),
        db.cursor,
        lambda: db.transaction(lambda cur: None),
    ):
        with pytest.raises(ClosedError):
            call()
    errors: list[BaseException] = []

    def from_other_thread() -> None:
        try:
            db.execute("SELECT 1")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedError)


def test_close_from_another_thread_while_others_query(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    started = threading.Barrier(5)
    outcomes: list[str] = []
    lock = threading.Lock()

    def reader() -> None:
        started.wait()
        while True:
            try:
                memdb.execute("SELECT sum(x) FROM t").fetchone()
            except ClosedError:
                with lock:
                    outcomes.append("closed")
                return

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    started.wait()
    closer = threading.Thread(target=memdb.close)
    closer.start()
    closer.join()
    for thread in readers:
        thread.join()
    assert outcomes == ["closed"] * 4


def test_context_manager_closes(tmp_path: Path) -> None:
    with duckflock.connect(tmp_path / "cm.duckdb") as db:
        db.execute("CREATE TABLE t AS SELECT 1 AS x")
    with pytest.raises(ClosedError):
        db.execute("SELECT 1")
    with duckflock.connect(tmp_path / "cm.duckdb", read_only=True) as again:
        assert again.execute("SELECT x FROM t").fetchall() == [(1,)]


# -- transactions ----------------------------------------------------------------------


def _increment(cursor: duckdb.DuckDBPyConnection, key: int) -> int:
    (value,) = cursor.execute("SELECT n FROM counter WHERE id = ?", [key]).fetchone()  # type: ignore[misc]
    cursor.execute("UPDATE counter SET n = ? WHERE id = ?", [value + 1, key])
    return int(value) + 1


def test_conflicting_transactions_from_8_threads_equal_serial_execution(
    db: duckflock.Database,
) -> None:
    db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
    db.execute("INSERT INTO counter VALUES (1, 0)")
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(200):
                db.transaction(_increment, 1, retries=10_000)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert db.execute("SELECT n FROM counter").fetchone() == (1600,)


def test_conflict_after_the_last_retry_raises_conflict_error(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
    memdb.execute("INSERT INTO counter VALUES (1, 0)")
    holder_updated = threading.Event()
    release_holder = threading.Event()

    def hold_row(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute("UPDATE counter SET n = n + 100 WHERE id = 1")
        holder_updated.set()
        release_holder.wait(timeout=30)

    holder = threading.Thread(target=memdb.transaction, args=(hold_row,))
    holder.start()
    assert holder_updated.wait(timeout=30)
    attempts = []

    def contender(cursor: duckdb.DuckDBPyConnection) -> None:
        attempts.append(1)
        cursor.execute("UPDATE counter SET n = n + 1 WHERE id = 1")

    with pytest.raises(ConflictError, match="3 attempts"):
        memdb.transaction(contender, retries=2)
    release_holder.set()
    holder.join()
    assert len(attempts) == 3
    assert memdb.execute("SELECT n FROM counter").fetchone() == (100,)


def test_failed_statement_inside_transaction_is_never_reported_as_success(
    db: duckflock.Database,
) -> None:
    """DuckDB's trap: COMMIT after a failed statement returns quietly and rolls back."""
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")

    def swallow_the_failure(cursor: duckdb.DuckDBPyConnection) -> str:
        cursor.execute("INSERT INTO t VALUES (2)")
        with contextlib.suppress(duckdb.ConstraintException):
            cursor.execute("INSERT INTO t VALUES (1)")  # duplicate key
        return "looks fine"

    with pytest.raises(TransactionAbortedError, match="rolled it back"):
        db.transaction(swallow_the_failure)
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,)]


def test_transaction_commits_and_returns_the_result(db: duckflock.Database) -> None:
    db.execute("CREATE TABLE t (id INTEGER)")

    def two_rows(cursor: duckdb.DuckDBPyConnection, start: int, *, step: int) -> int:
        cursor.execute("INSERT INTO t VALUES (?), (?)", [start, start + step])
        return 2

    assert db.transaction(two_rows, 10, step=5) == 2
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(10,), (15,)]


def test_exception_in_transaction_rolls_back_and_propagates(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (id INTEGER)")

    def fail_midway(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute("INSERT INTO t VALUES (1)")
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        memdb.transaction(fail_midway)
    with pytest.raises(CatalogError):
        memdb.transaction(lambda cur: cur.execute("SELECT * FROM nowhere"))
    assert memdb.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pytest.raises(ValueError, match="retries"):
        memdb.transaction(fail_midway, retries=-1)


# -- stress in a subprocess: a crash is a failure, not a hung run ----------------------

STRESS = textwrap.dedent(
    """
    import sys, threading
    import duckflock

    db = duckflock.connect(sys.argv[1])
    db.execute("CREATE TABLE t (thread INTEGER, i INTEGER)")
    barrier = threading.Barrier(8)
    errors = []

    def work(k):
        barrier.wait()
        try:
            for i in range(200):
                if i % 2:
                    db.execute("INSERT INTO t VALUES (?, ?)", [k, i])
                else:
                    db.execute("SELECT count(*), max(i) FROM t WHERE thread = ?", [k]).fetchall()
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    print(db.execute("SELECT count(*), count(DISTINCT (thread, i)) FROM t").fetchone())
    db.close()
    """
)


@pytest.mark.parametrize("target", ["memory", "file"])
def test_mixed_read_write_stress_in_a_subprocess(tmp_path: Path, target: str) -> None:
    path = ":memory:" if target == "memory" else str(tmp_path / "stress.duckdb")
    run = subprocess.run(
        [sys.executable, "-c", STRESS, path],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(800, 800)"


def test_a_database_left_open_is_closed_cleanly_at_exit(tmp_path: Path) -> None:
    """Forgetting close() must not crash the process (DuckDB aborts when its objects die
    under a running analysis thread) nor lose what insert(wait=False) accepted."""
    script = (
        "import sys, duckflock\n"
        "db = duckflock.connect(sys.argv[1])\n"
        "db.execute('CREATE TABLE IF NOT EXISTS t (x INTEGER)')\n"
        "db.analysis('a', 'SELECT count(*) FROM t', every=0.01, persist=False)\n"
        "db.analysis('b', 'SELECT sum(x) FROM t', on_change=True, persist=False)\n"
        "db.insert('t', [{'x': i} for i in range(100)], wait=False)\n"
    )
    path = tmp_path / "left-open.duckdb"
    run_cleanly(script, path, times=8)
    with duckflock.connect(path) as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (800,)


def test_a_decimal_parameter_with_a_positive_exponent_keeps_its_value(
    memdb: duckflock.Database,
) -> None:
    # duckdb 1.5.5 binds Decimal("1E+2") as 1 (duckdb-python issue 566); the oracle is
    # DuckDB's cast of the same text
    from decimal import Decimal

    texts = ["1E+2", "1.5E+3", "-2E+1"]
    expected = [memdb.execute(f"SELECT '{t}'::DECIMAL(12, 2)").fetchone() for t in texts]
    sql = "SELECT ?::DECIMAL(12, 2)"
    assert [memdb.execute(sql, [Decimal(t)]).fetchone() for t in texts] == expected
    assert [memdb.sql(sql, [Decimal(t)]).fetchone() for t in texts] == expected
    memdb.execute("CREATE TABLE d (x DECIMAL(12, 2), l DECIMAL(12, 2)[])")
    memdb.executemany(
        "INSERT INTO d VALUES ($x, $l)", [{"x": Decimal(t), "l": [Decimal(t)]} for t in texts]
    )
    stored = memdb.execute("SELECT x, l[1] FROM d ORDER BY rowid").fetchall()
    assert stored == [(row[0], row[0]) for row in expected]


def test_a_raw_cursor_is_one_flag_of_the_cursor_pool_that_the_catalogue_asks() -> None:
    """db.cursor() hands out a raw cursor: the CursorPool alone records it
    (``raw_handed_out``), and the function catalogue kept between definitions asks it,
    whether the raw cursor came before the first analysis or after."""
    sql = "SELECT g, sum(abs(v)) AS s FROM t GROUP BY g"
    with duckflock.connect() as db:
        db.execute("CREATE TABLE t (g INT, v INT)")
        assert db._cursors.raw_handed_out is False
        raw = db.cursor()  # before the scheduler exists
        assert db._cursors.raw_handed_out is True
        db.analysis("warm", sql)
        raw.execute("CREATE MACRO abs(x) AS x + 100")  # shadows the built-in
        db.analysis("a", sql)
        db.insert("t", {"g": 1, "v": 5})
        assert db.refresh("a", timeout=60).rows() == db.execute(sql).fetchall() == [(1, 105)]


def test_a_second_database_on_an_open_file_is_refused(tmp_path: Path) -> None:
    """DuckDB shares one instance per file within a process, but each Database sees
    only its own commits and DDL: a second one on the same file (by any spelling of
    its path) would plan against a stale catalogue and never refresh on the first
    one's rows, so it is refused with a typed error; once the first closes, it opens."""
    path = tmp_path / "one.duckdb"
    first = duckflock.connect(path)
    for spelling in (path, tmp_path / "." / "one.duckdb", os.path.relpath(path)):
        with pytest.raises(duckflock.AlreadyOpenError, match="of this process has it open"):
            duckflock.connect(spelling)
        with pytest.raises(duckflock.AlreadyOpenError):
            duckflock.connect(spelling, read_only=True)
    with duckflock.connect(), duckflock.connect():  # private in-memory ones: each its own
        pass
    first.close()
    with duckflock.connect(path) as second:
        assert second.execute("SELECT 1").fetchone() == (1,)


def test_a_named_in_memory_database_is_one_per_process() -> None:
    with duckflock.connect(":memory:shared"), pytest.raises(duckflock.AlreadyOpenError):
        duckflock.connect(":memory:shared")


def test_a_closed_database_lets_its_file_go_though_its_path_now_leads_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is let go by what it was taken on: a relative path read from another
    working directory, or a symlink retargeted since, must not keep the file claimed."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = duckflock.connect("one.duckdb")
    monkeypatch.chdir(tmp_path / "b")
    first.close()
    with duckflock.connect(tmp_path / "a" / "one.duckdb") as second:
        assert second.execute("SELECT 1").fetchone() == (1,)
    link = tmp_path / "link.duckdb"
    link.symlink_to(tmp_path / "a" / "one.duckdb")
    first = duckflock.connect(link)
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.duckdb")
    first.close()
    with duckflock.connect(tmp_path / "a" / "one.duckdb") as second:
        assert second.execute("SELECT 1").fetchone() == (1,)


def test_a_hard_link_to_an_open_file_is_refused(tmp_path: Path) -> None:
    """A hard link is another path to the same file: DuckDB would open a second
    instance on it (each with its own cache and WAL), so it is refused like a symlink."""
    path = tmp_path / "one.duckdb"
    with duckflock.connect(path) as first:
        first.execute("CREATE TABLE t(x INTEGER)")
    os.link(path, tmp_path / "two.duckdb")
    with duckflock.connect(path), pytest.raises(duckflock.AlreadyOpenError):
        duckflock.connect(tmp_path / "two.duckdb")
    with duckflock.connect(tmp_path / "two.duckdb") as second:  # the first one closed
        assert second.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_dropped_database_is_collected_and_its_threads_end(tmp_path: Path) -> None:
    """A Database dropped unclosed, after it inserted, defined an analysis and handed
    the writer rows nobody waits for: its threads hold it only weakly, so it is
    collected; its writer commits what it accepted and its threads end; the file opens
    again in the same process."""
    path = tmp_path / "dropped.duckdb"
    before = set(threading.enumerate())
    db = duckflock.connect(path)
    db.execute("CREATE TABLE t (v INTEGER)")
    db.insert("t", [{"v": 1}, {"v": 2}])
    db.analysis("n", "SELECT count(*) FROM t", on_change=True, wait=True)
    db.insert("t", [{"v": 3}], wait=False)
    threads = started_since(before)
    assert {t.name for t in threads} >= {"duckflock-writer", "duckflock-scheduler"}
    dropped = weakref.ref(db)
    del db
    assert_collected(dropped, threads)
    with duckflock.connect(path) as again:
        assert again.execute("SELECT sum(v) FROM t").fetchone() == (6,)
