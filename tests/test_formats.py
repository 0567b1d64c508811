"""Request bodies parsed from several threads at once (the server parses large bodies in
worker threads): the answers are DuckDB's, whatever the other threads do."""

from __future__ import annotations

import io
import random
import sys
import threading
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from duckflock.errors import RequestError
from duckflock.server import formats

ARROW = formats.MediaType.ARROW
THREADS = 8
SCHEMAS = 300  # more than the cache of DuckDB's verdicts keeps (256): it evicts meanwhile


def _schema(n: int) -> pa.Schema:
    """The ``n``-th schema: a column named after it, and every third a halffloat (which
    DuckDB cannot read)."""
    fields = [pa.field(f"c{n}", pa.int64())]
    if n % 3 == 0:
        fields.append(pa.field(f"h{n}", pa.float16()))
    return pa.schema(fields)


def _body(schema: pa.Schema) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(schema.empty_table())
    return sink.getvalue()


def _verdict(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> str | None:
    """What DuckDB says of reading ``schema``'s columns, asked here one column at a time
    on a connection of this test's own: None, or the message the server gives."""
    for spec in schema:
        try:
            con.from_arrow(pa.schema([spec]).empty_table()).fetchall()
        except duckdb.Error as exc:
            return f"column {spec.name!r}: DuckDB cannot read Arrow type {spec.type} ({exc})"
    return None


@pytest.fixture
def often_switching() -> Iterator[None]:
    """Threads switch every 10 microseconds (CPython's default: 5 ms), so that a thread
    is more often stopped between a check and what relies on it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_threads_parsing_arrow_bodies_at_once_get_duckdbs_verdicts(
    often_switching: None,
) -> None:
    schemas = [_schema(n) for n in range(SCHEMAS)]
    bodies = [_body(schema) for schema in schemas]
    with duckdb.connect() as con:
        expected = [_verdict(con, schema) for schema in schemas]
    assert expected.count(None) == SCHEMAS - SCHEMAS // 3  # DuckDB refuses each halffloat
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []
    wrong: list[tuple[int, str | None, str | None]] = []

    def parse(offset: int) -> None:
        try:
            start.wait(30)
            order = random.Random(offset).sample(range(SCHEMAS), SCHEMAS)  # its own order
            for _ in range(2):
                for n in order:
                    try:
                        table = formats.parse_rows(bodies[n], ARROW)
                        got = None
                        assert isinstance(table, pa.Table) and table.schema == schemas[n]
                    except RequestError as exc:
                        got = str(exc)
                    if got != expected[n]:
                        wrong.append((n, got, expected[n]))
        except BaseException as exc:  # a KeyError from the cache, a DuckDB error: any
            failures.append(exc)

    threads = [threading.Thread(target=parse, args=(k,)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert wrong == []
