"""psycopg 3's documented fast ways to read a large result, as more forms of
``benchmarks/pgwire.py``'s (b) (the forms it had stay as they were).

- ``Cursor.stream(query, size=N)``: rows in chunks of N (libpq 17's chunked-rows mode,
  psycopg 3.2+), each chunk converted while the server still sends the next; the rows
  are used one by one and dropped, as a streaming consumer does (``fetchall()`` keeps
  all of them);
- ``Cursor.fetchmany(N)`` after ``execute()``: the whole result arrives first (libpq),
  then it is converted N rows at a time;
- ``Copy.rows()`` after ``Copy.set_types()``: binary COPY parsed into Python values;
- ``Copy`` read block by block (``for data in copy``, the documented raw read) into a
  ``BytesIO``, then parsed by ``pyarrow.csv`` into an Arrow table: the same end
  product as the HTTP Arrow fetch it is compared with (``b"".join(copy)`` costs 3x:
  each block a ``memoryview`` kept alive until the join).

The same block-by-block COPY reads again after ``SET duckflock.copy_messages = batch``
(duckflock's opt-in, labelled "batch msgs"): the server sends one CopyData message a
batch of up to 32,768 rows instead of PostgreSQL's one a row, so psycopg's loop runs once
a batch; ``Copy.rows()`` needs one row a message and is not read so.

(Server-side cursors, ``conn.cursor(name=...)``, need ``DECLARE ... CURSOR``, which the
port does not run.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pcsv

CHUNK = 10_000  # rows a chunk (stream) or a fetchmany() call
# the big result's columns as Arrow reads them back from CSV
COLUMNS = {
    "i": pa.int64(),
    "x": pa.float64(),
    "note": pa.string(),
    "ts": pa.timestamp("us"),
    "flag": pa.bool_(),
}
COPY_TYPES = ["int8", "float8", "text", "timestamp", "bool"]


def _stream(sql: str, binary: bool, conn: psycopg.Connection[Any]) -> int:
    rows = 0
    for _ in conn.cursor(binary=binary).stream(sql, size=CHUNK):
        rows += 1
    return rows


def _fetchmany(sql: str, binary: bool, conn: psycopg.Connection[Any]) -> int:
    cursor, rows = conn.cursor(binary=binary).execute(sql), 0
    while chunk := cursor.fetchmany(CHUNK):
        rows += len(chunk)
    return rows


def _copy_rows(sql: str, conn: psycopg.Connection[Any]) -> int:
    rows = 0
    with conn.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as copy:
        copy.set_types(COPY_TYPES)
        for _ in copy.rows():
            rows += 1
    return rows


def _batched(read: Callable[[psycopg.Connection[Any]], int], conn: psycopg.Connection[Any]) -> int:
    """``read`` with COPY's data sent a batch a CopyData message (duckflock's opt-in)."""
    conn.execute("SET duckflock.copy_messages = batch")
    return read(conn)


def copy_blocks(sql: str, form: str, conn: psycopg.Connection[Any]) -> int:
    """``COPY (sql) TO STDOUT form`` read block by block, the data dropped; its rows."""
    cursor = conn.cursor()
    with cursor.copy(f"COPY ({sql}) TO STDOUT {form}") as copy:
        for _ in copy:
            pass  # the raw COPY data, as a loader would stream it on
    return cursor.rowcount


def _copy_arrow(sql: str, conn: psycopg.Connection[Any]) -> int:
    data = io.BytesIO()  # block by block, as the documentation writes to a file
    with conn.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT CSV)") as copy:
        for block in copy:
            data.write(block)
    table = pcsv.read_csv(
        pa.py_buffer(data.getbuffer()),
        read_options=pcsv.ReadOptions(column_names=list(COLUMNS)),
        convert_options=pcsv.ConvertOptions(
            column_types=COLUMNS, true_values=["t"], false_values=["f"]
        ),
    )
    return int(table.num_rows)


def forms(sql: str, dsn: Callable[[int], str]) -> dict[str, Callable[[int], int]]:
    """Each form: a fetch of ``sql`` from the port at a port number, its row count."""

    def connected(read: Callable[[psycopg.Connection[Any]], int], port: int) -> int:
        with psycopg.connect(dsn(port), autocommit=True) as conn:
            return read(conn)

    reads: dict[str, Callable[[psycopg.Connection[Any]], int]] = {
        "text (psycopg stream 10k)": partial(_stream, sql, False),
        "binary (psycopg stream 10k)": partial(_stream, sql, True),
        "binary (psycopg fetchmany)": partial(_fetchmany, sql, True),
        "COPY binary (psycopg rows())": partial(_copy_rows, sql),
        "COPY csv (psycopg, to Arrow)": partial(_copy_arrow, sql),
        # the same block reads with a batch a CopyData message (SET duckflock.copy_messages)
        "COPY text (batch msgs)": partial(_batched, partial(copy_blocks, sql, "")),
        "COPY csv (batch msgs)": partial(_batched, partial(copy_blocks, sql, "(FORMAT CSV)")),
        "COPY binary (batch msgs)": partial(_batched, partial(copy_blocks, sql, "(FORMAT BINARY)")),
        "COPY csv to Arrow (batch msgs)": partial(_batched, partial(_copy_arrow, sql)),
    }
    return {label: partial(connected, read) for label, read in reads.items()}
