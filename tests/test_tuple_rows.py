"""One tuple row with a column list: the hot path of ``insert``, and its edges.

The column list is resolved against the table once and found again by one dict lookup;
everything it cannot take (a wrong width, a str as columns) falls to the general path,
which words the error.
"""

from __future__ import annotations

import threading

import pytest

import duckflock


@pytest.fixture
def table(memdb: duckflock.Database) -> duckflock.Database:
    memdb.execute("CREATE TABLE t (name VARCHAR, v INTEGER, note VARCHAR DEFAULT 'd')")
    return memdb


def test_a_tuple_with_columns_commits_those_columns_and_defaults_the_rest(
    table: duckflock.Database,
) -> None:
    table.insert("t", ("a", 1), columns=["name", "v"])
    table.insert("t", (2, "b"), columns=("V", "Name"))  # any case, any order, a tuple
    table.insert("t", ("c", 3, "n"))  # no columns: table order
    rows = table.execute("SELECT name, v, note FROM t ORDER BY v").fetchall()
    assert rows == [("a", 1, "d"), ("b", 2, "d"), ("c", 3, "n")]


def test_a_tuple_of_the_wrong_width_is_refused_before_queueing(
    table: duckflock.Database,
) -> None:
    with pytest.raises(duckflock.SchemaMismatchError, match="has 3 values but"):
        table.insert("t", ("a", 1, "x"), columns=["name", "v"])
    with pytest.raises(duckflock.SchemaMismatchError, match="has 1 values but"):
        table.insert("t", ("a",))
    with pytest.raises(duckflock.SchemaMismatchError, match="no column 'nope'"):
        table.insert("t", ("a", 1), columns=["name", "nope"])
    with pytest.raises(TypeError, match="not a str"):
        table.insert("t", ("a",), columns="name")
    assert table.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert table.stats().rows_queued == 0


def test_the_cached_columns_follow_ddl(table: duckflock.Database) -> None:
    table.insert("t", ("a", 1), columns=["name", "v"])
    table.execute("ALTER TABLE t DROP COLUMN v")
    with pytest.raises(duckflock.SchemaMismatchError, match="no column 'v'"):
        table.insert("t", ("b", 2), columns=["name", "v"])
    table.execute("ALTER TABLE t ADD COLUMN v BIGINT")
    table.insert("t", ("c", 3), columns=["name", "v"])
    assert table.execute("SELECT name, v FROM t ORDER BY name").fetchall() == [
        ("a", None),
        ("c", 3),
    ]


def test_tuples_from_many_threads_keep_each_threads_order(table: duckflock.Database) -> None:
    threads, per_thread = 8, 2_000
    barrier = threading.Barrier(threads)

    def produce(i: int) -> None:
        columns = ["name", "v"]
        barrier.wait()
        for v in range(per_thread):
            table.insert("t", (f"w{i}", v), columns=columns, wait=False)
        table.flush()

    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rows = table.execute("SELECT name, v FROM t ORDER BY rowid").fetchall()
    assert len(rows) == threads * per_thread
    for i in range(threads):
        assert [v for name, v in rows if name == f"w{i}"] == list(range(per_thread))
