"""Idempotent inserts: ``db.insert(…, idempotency_key=…)`` writes a keyed batch at most
once (ingest/keys.py, docs/delivery.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import duckflock


def _count(db: duckflock.Database, table: str = "t") -> int:
    row = db.sql(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def keyed(db: duckflock.Database) -> duckflock.Database:
    db.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
    return db


def test_a_repeat_of_a_committed_key_writes_nothing_and_returns_the_first_facts(
    keyed: duckflock.Database,
) -> None:
    first = keyed.insert("t", [(1, "x"), (2, "y")], idempotency_key="batch-1")
    again = keyed.insert("t", [(1, "x"), (2, "y")], idempotency_key="batch-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.rows == first.rows == 2
    assert again.committed_at == first.committed_at is not None
    assert again.committed_at.utcoffset() == dt.timedelta(0)  # in UTC, whatever TimeZone
    assert again.key == "batch-1"
    assert _count(keyed) == 2
    # Arrow and DataFrames too; a key names one batch, whatever its table's shape
    table = pa.table({"a": [3, 4, 5], "b": ["p", "q", "r"]})
    keyed.insert("t", table, idempotency_key="batch-2")
    assert keyed.insert("t", table.to_pandas(), idempotency_key="batch-3").rows == 3
    assert keyed.insert("t", table, idempotency_key="batch-2").replayed
    assert _count(keyed) == 8
    # an unkeyed insert is never deduplicated
    keyed.insert("t", [(1, "x"), (2, "y")])
    assert _count(keyed) == 10


def test_a_key_is_recorded_in_the_projects_schema_which_callers_cannot_write(
    keyed: duckflock.Database,
) -> None:
    keyed.insert("t", {"a": 1, "b": "x"}, idempotency_key="k")
    rows = keyed.sql("SELECT key, table_name, rows FROM duckflock.batches").fetchall()
    assert rows == [("k", "t", 1)]
    with pytest.raises(duckflock.QueryRefusedError):
        keyed.execute("DELETE FROM duckflock.batches")
    with pytest.raises(duckflock.QueryRefusedError):
        keyed.insert("duckflock.batches", {"key": "x"})


def test_other_rows_under_a_used_key_are_refused_with_a_typed_error(
    keyed: duckflock.Database,
) -> None:
    keyed.insert("t", [(1, "x")], idempotency_key="k")
    with pytest.raises(duckflock.KeyReusedError) as info:
        keyed.insert("t", [(1, "other")], idempotency_key="k")
    assert info.value.key == "k" and info.value.http_status == 422
    keyed.execute("CREATE TABLE u (a INTEGER, b VARCHAR)")
    with pytest.raises(duckflock.KeyReusedError):
        keyed.insert("u", [(1, "x")], idempotency_key="k")  # same rows, another table
    assert _count(keyed) == 1 and _count(keyed, "u") == 0


def test_a_repeat_while_the_first_is_in_flight_waits_for_it(keyed: duckflock.Database) -> None:
    writer = keyed.writer()
    held, release = threading.Event(), threading.Event()

    def hold(point: str) -> None:
        if point == "batch" and not release.is_set():
            held.set()
            assert release.wait(30)

    writer.fault_hook = hold
    first = keyed.insert("t", [(1, "x")], idempotency_key="k", wait=False)
    assert held.wait(30)  # the writer holds the first call's batch, not committed yet
    outcome: list[duckflock.Receipt] = []
    repeat = threading.Thread(
        target=lambda: outcome.append(keyed.insert("t", [(1, "x")], idempotency_key="k"))
    )
    repeat.start()
    # both repeats of one batch also queued behind it: in the same next batch
    twin_a = keyed.insert("t", [(2, "y")], idempotency_key="twin", wait=False)
    twin_b = keyed.insert("t", [(2, "y")], idempotency_key="twin", wait=False)
    odd = keyed.insert("t", [(3, "z")], idempotency_key="twin", wait=False)
    assert not first.done
    release.set()
    repeat.join(30)
    assert first.wait(30) == 1 and not first.replayed
    assert outcome and outcome[0].replayed and outcome[0].committed_at == first.committed_at
    twin_a.wait(30)
    twin_b.wait(30)
    assert [twin_a.replayed, twin_b.replayed] == [False, True]
    with pytest.raises(duckflock.KeyReusedError):
        odd.wait(30)
    assert sorted(keyed.sql("SELECT a FROM t").fetchall()) == [(1,), (2,)]


def test_a_failed_insert_records_no_key(keyed: duckflock.Database) -> None:
    keyed.execute("CREATE TABLE strict (a INTEGER NOT NULL)")
    with pytest.raises(duckflock.RowRejectedError):
        keyed.insert("strict", [{"a": None}], idempotency_key="k")
    assert keyed.sql("SELECT count(*) FROM duckflock.batches").fetchone() == (0,)
    keyed.insert("strict", [{"a": 1}], idempotency_key="k")  # not used: written
    assert _count(keyed, "strict") == 1


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.duckdb")
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        first = db.insert("t", [(1,), (2,)], idempotency_key="k")
    with duckflock.connect(path) as db:
        again = db.insert("t", [(1,), (2,)], idempotency_key="k")
        assert again.replayed and again.committed_at == first.committed_at
        assert _count(db) == 2


def test_keys_expire_after_the_window_and_are_pruned(tmp_path: Path) -> None:
    with duckflock.connect(str(tmp_path / "e.duckdb"), idempotency_window=60) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.insert("t", [(1,)], idempotency_key="old")
        keys = db.writer().keys
        assert keys.window == 60
        later = time.time() + 120
        keys.clock = lambda: later  # two minutes on: "old" is past the window
        db.insert("t", [(2,)], idempotency_key="new")  # its commit prunes
        kept = db.sql("SELECT key FROM duckflock.batches").fetchall()
        assert kept == [("new",)]
        assert not db.insert("t", [(1,)], idempotency_key="old").replayed  # forgotten
        assert _count(db) == 3


def test_the_keys_table_stays_bounded_by_count(memdb: duckflock.Database) -> None:
    with duckflock.connect(max_idempotency_keys=1000) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        receipts = [
            db.insert("t", [(i,)], idempotency_key=f"k{i}", wait=False) for i in range(1300)
        ]
        for receipt in receipts:
            receipt.wait(60)
        db.insert("t", [(-1,)], idempotency_key="last")  # a batch of its own: it prunes
        row = db.sql("SELECT count(*), min(key) FROM duckflock.batches").fetchone()
        assert row is not None and row[0] == 1000
        oldest_kept = db.sql(
            "SELECT count(*) FROM duckflock.batches WHERE key IN ('k0', 'k299')"
        ).fetchone()
        assert oldest_kept == (0,)  # the oldest went first


@pytest.mark.parametrize(
    ("key", "error", "words"),
    [
        (b"k", TypeError, "must be a str, not bytes"),
        (7, TypeError, "must be a str, not int"),
        ("", ValueError, "1 to 200 characters, not 0"),
        ("x" * 201, ValueError, "1 to 200 characters, not 201"),
        ("a\x00b", ValueError, "NUL character (at index 1)"),
        ("a\ud800", ValueError, "lone surrogate"),
    ],
)
def test_hostile_keys_are_refused_before_anything_is_queued(
    memdb: duckflock.Database, key: object, error: type[Exception], words: str
) -> None:
    memdb.execute("CREATE TABLE t (a INTEGER)")
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        memdb.insert("t", [(1,)], idempotency_key=key)  # type: ignore[arg-type]
    assert _count(memdb) == 0


def test_keys_that_look_like_sql_or_are_long_are_just_keys(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (a INTEGER)")
    for key in ["x" * 200, "'; DROP TABLE t; --", "ключ-🔑", "%s?$1"]:
        assert not memdb.insert("t", [(1,)], idempotency_key=key).replayed
        assert memdb.insert("t", [(1,)], idempotency_key=key).replayed
    assert _count(memdb) == 4


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"idempotency_window": 0}, ValueError),
        ({"idempotency_window": float("nan")}, ValueError),
        ({"idempotency_window": "1d"}, TypeError),
        ({"max_idempotency_keys": 10}, ValueError),
        ({"max_idempotency_keys": 1.5}, TypeError),
    ],
)
def test_the_window_and_bound_are_checked(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        duckflock.connect(**options)  # type: ignore[arg-type]


def test_insert_async_takes_a_key_too(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (a INTEGER)")

    async def both() -> tuple[duckflock.Receipt, duckflock.Receipt]:
        first = await memdb.insert_async("t", [(1,)], idempotency_key="k")
        return first, await memdb.insert_async("t", [(1,)], idempotency_key="k")

    first, again = asyncio.run(both())
    assert not first.replayed and again.replayed
    assert _count(memdb) == 1


def test_the_keys_table_is_not_listed_among_the_tables(memdb: duckflock.Database) -> None:
    memdb.execute("CREATE TABLE t (a INTEGER)")
    memdb.insert("t", [(1,)], idempotency_key="k")
    assert [table["name"] for table in memdb.tables()] == ["t"]


def test_a_keyed_insert_leaves_no_transaction_open_to_stop_a_checkpoint(tmp_path: Path) -> None:
    """The writer's key bookkeeping reads its results whole: a result left unread kept
    the writer's cursor in a transaction, and every later CHECKPOINT (a server's
    shutdown too) failed with "other write transactions are active" once a definition
    was kept."""
    with duckflock.connect(tmp_path / "k.duckdb") as db:
        db.execute("CREATE TABLE readings (id BIGINT, value DOUBLE)")
        db.insert("readings", [{"id": 1, "value": 1.0}], idempotency_key="k1")
        db.analysis("total", "SELECT sum(value) AS total FROM readings", wait=True)
        db.execute("CHECKPOINT")
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (1,)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM duckflock.batches",
        'SELECT key FROM "DuckFlock".batches',
        "SELECT * FROM (SELECT digest FROM duckflock.batches) AS d",
        "WITH k AS (SELECT * FROM duckflock.BATCHES) SELECT count(*) FROM k",
    ],
)
def test_the_keys_are_not_readable_through_the_servers_queries(tmp_path: Path, sql: str) -> None:
    """duckflock.batches holds every client's keys and their rows' digests: the query
    guard of both ports refuses to read it (as the schema rule refuses to write it); a
    table of the caller's own named batches stays readable."""
    from duckflock.errors import QueryRefusedError
    from duckflock.server.guard import QueryGuard

    with duckflock.connect(tmp_path / "k.duckdb") as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.execute("CREATE TABLE batches (a INTEGER)")
        db.insert("t", [(1,)], idempotency_key="secret-key", wait=True)
        guard = QueryGuard(db)
        with pytest.raises(QueryRefusedError, match="not readable"):
            guard.check(sql)
        guard.check("SELECT * FROM batches")  # main.batches: the caller's own


def test_creating_the_keys_table_tries_again_after_another_process_made_it() -> None:
    """Two servers on one lake take their first keyed insert at the same moment: the
    loser's CREATE fails with a write conflict (seen in tests/test_lake_serve.py, which
    then failed a commit with StorageError); it tries again and finds the table made."""
    from duckflock.ingest import keys

    con = duckdb.connect()
    creates: list[str] = []

    class Racing:
        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("CREATE TABLE"):
                creates.append(sql)
                if len(creates) == 1:
                    con.execute(sql)  # the other process commits it first
                    raise duckdb.TransactionException(
                        'Failed to commit: table "batches" has been created by another '
                        "transaction already"
                    )
            return con.execute(sql, *args)

    keys.ensure_table(Racing(), tries=keys.ENSURE_TRIES)  # type: ignore[arg-type]
    assert len(creates) == 2
    assert con.execute(f"SELECT count(*) FROM {keys.TABLE}").fetchone() == (0,)
    with pytest.raises(duckdb.TransactionException):
        creates.clear()
        keys.ensure_table(Racing(), tries=1)  # type: ignore[arg-type]


def test_the_same_row_under_the_same_key_is_a_replay_whichever_path_it_took(
    keyed: duckflock.Database,
) -> None:
    """A dict row whose keys are not cached yet goes in as a one-row part; once they
    are, as a single row (Intake.single): both digest the same, so a retry is a replay,
    not a KeyReusedError (it was, when the first call was the first with those keys)."""
    first = keyed.insert("t", {"a": 1, "b": "x"}, idempotency_key="row-1")  # keys unseen
    again = keyed.insert("t", {"a": 1, "b": "x"}, idempotency_key="row-1")  # keys cached
    listed = keyed.insert("t", [{"a": 1, "b": "x"}], idempotency_key="row-1")
    assert (first.replayed, again.replayed, listed.replayed) == (False, True, True)
    assert _count(keyed) == 1
    with pytest.raises(duckflock.KeyReusedError):
        keyed.insert("t", {"a": 2, "b": "x"}, idempotency_key="row-1")


def test_a_single_row_keyed_before_it_digested_as_a_part_replays(
    keyed: duckflock.Database,
) -> None:
    """A key recorded by the single-row path's earlier digest (the repr of the columns
    and the row, before the row digested as its one-row part) is the same content: a
    retry after an upgrade replays it; other rows under it are still refused."""
    import hashlib

    from duckflock.ingest import keys

    digest = hashlib.sha256()
    digest.update(repr(keyed._intake.call("t", (1, "x"), None).target.key).encode())
    digest.update(repr((("a", "b"), (1, "x"))).encode())
    at = dt.datetime.now(dt.UTC)
    cursor = keyed.cursor()
    keys.ensure_table(cursor)
    cursor.execute(
        f"INSERT INTO {keys.TABLE} VALUES ('old', 't', 1, ?, ?)", [digest.hexdigest(), at]
    )
    cursor.close()
    for row in ({"a": 1, "b": "x"}, (1, "x"), [(1, "x")]):
        assert keyed.insert("t", row, idempotency_key="old").replayed
    with pytest.raises(duckflock.KeyReusedError):
        keyed.insert("t", {"a": 2, "b": "x"}, idempotency_key="old")
    assert _count(keyed) == 0
