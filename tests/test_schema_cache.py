"""The write path's schema cache (ingest/schema.py): one catalog reading per table that
threads miss together, none waiting for another table's, none cached once a DDL
overtook it."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import duckdb
import pytest

from duckflock.ingest.schema import SchemaCache, TableSchema

_numbers = itertools.count()  # the getting threads' names, each its own
BOUND = 60.0  # seconds: every wait here (a loaded machine is slow, never this slow)


class HeldCache(SchemaCache):
    """A cache whose catalog reading of ``held`` waits for ``release``."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, held: str) -> None:
        super().__init__(cursor)
        self.held = held
        self.reading = threading.Event()  # set once the held table's reading began
        self.release = threading.Event()
        self.reads: Counter[str] = Counter()

    def _read(self, table: str) -> TableSchema:
        self.reads[table] += 1
        if table == self.held:
            self.reading.set()
            assert self.release.wait(BOUND)
        return super()._read(table)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as con:
        con.execute("CREATE TABLE a (x INTEGER)")
        con.execute("CREATE TABLE b (y VARCHAR, z DOUBLE)")
        yield con


def _get(cache: SchemaCache, table: str, into: dict[str, TableSchema]) -> threading.Thread:
    def get() -> None:
        into[threading.current_thread().name] = cache.get(table)

    thread = threading.Thread(target=get, name=f"get {table} {next(_numbers)}")
    thread.start()
    return thread


def test_a_thread_missing_another_table_does_not_wait(con: duckdb.DuckDBPyConnection) -> None:
    cache = HeldCache(con.cursor(), held="a")
    got: dict[str, TableSchema] = {}
    reading_a = _get(cache, "a", got)
    try:
        assert cache.reading.wait(BOUND)
        reading_b = _get(cache, "b", got)
        reading_b.join(BOUND)
        # b was read while a's reading was held: a lock of all tables would hold it too
        assert not reading_b.is_alive()
        assert [schema.columns for schema in got.values()] == [("y", "z")]
    finally:
        cache.release.set()
        reading_a.join(BOUND)
    assert sorted(schema.columns for schema in got.values()) == [("x",), ("y", "z")]
    assert cache.reads == {"a": 1, "b": 1}
    assert set(cache.tables) == {"a", "b"}


def test_threads_missing_the_same_table_wait_for_one_reading(
    con: duckdb.DuckDBPyConnection,
) -> None:
    cache = HeldCache(con.cursor(), held="a")
    got: dict[str, TableSchema] = {}
    threads = [_get(cache, "a", got)]
    try:
        assert cache.reading.wait(BOUND)
        threads += [_get(cache, "a", got) for _ in range(3)]
        ends = time.monotonic() + BOUND
        while cache._fills["a"].users < 4 and time.monotonic() < ends:
            pass  # until all four are in: one reading, three waiting for it
        assert cache._fills["a"].users == 4
    finally:
        cache.release.set()
        for thread in threads:
            thread.join(BOUND)
    assert cache.reads == {"a": 1}
    assert len({id(schema) for schema in got.values()}) == 1
    assert cache._fills == {}  # nothing kept per table once no thread reads or waits


def test_a_reading_overtaken_by_ddl_is_not_cached(con: duckdb.DuckDBPyConnection) -> None:
    class Overtaken(SchemaCache):
        def _read(self, table: str) -> TableSchema:
            schema = super()._read(table)
            if table == "a":
                con.execute("ALTER TABLE a ADD COLUMN w BIGINT")  # a DDL meanwhile
                self.invalidate()
            return schema

    cache = Overtaken(con.cursor())
    assert cache.get("a").columns == ("x",)  # what it read, for this call only
    assert "a" not in cache.tables
    assert cache.get("b").columns == ("y", "z")
    assert set(cache.tables) == {"b"}
