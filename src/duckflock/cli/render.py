"""How the CLI shows rows: tables that fit the terminal, CSV and JSON that stream.

On a terminal, a table takes the terminal's width and cuts long cells short (never
wraps rows over several lines); into a pipe or a file it takes the width it needs,
so nothing is wrapped at 80 columns. Values print as a person reads them: timestamps
in ISO form, NULL for missing values.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, BinaryIO

import click
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from duckflock.core.wide import column_values, day_end, holds_day_end, time_ticks
from duckflock.live.results import Result

_WIDE = 1 << 16  # columns a console writing into a pipe or file may use: "as wide as needed"


def console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr) that never wraps a table at 80 columns."""
    stream = sys.stderr if stderr else sys.stdout  # CliRunner swaps these: look them up now
    terminal = stream.isatty()
    return Console(
        file=stream,
        width=None if terminal else _WIDE,
        soft_wrap=not terminal,
        highlight=False,
    )


@contextmanager
def working(what: str) -> Iterator[None]:
    """A spinner on stderr while a statement runs: on a terminal only, gone when done."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield
        return
    with err.status(what):
        yield


def started(reader: pa.RecordBatchReader, what: str) -> Iterator[pa.RecordBatch]:
    """``reader``'s batches; the wait for the first one (the query's work) shows a spinner."""
    with working(what):
        try:
            first = reader.read_next_batch()
        except StopIteration:
            return iter(())
    return itertools.chain([first], reader)


def statement_kind(sql: str) -> str:
    """What kind of statement ``sql`` (its last one) is, as DuckDB's parser names it
    (``CREATE``, ``DROP``, ``ALTER``…); ``statement`` when it cannot tell."""
    try:
        parsed = duckdb.extract_statements(sql)
    except duckdb.Error:
        return "statement"
    return parsed[-1].type.name if parsed else "statement"


def text(value: Any) -> str:
    """One value as a cell: readable, not Python's repr."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | dict):
        return json.dumps(value, default=text)
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str = "",
    numeric: Sequence[bool] = (),
) -> Table:
    """A rich table: one line per row, long cells cut short with an ellipsis."""
    grid = Table(title=title or None, title_justify="left")
    for i, column in enumerate(columns):
        right = i < len(numeric) and numeric[i]
        grid.add_column(
            column, no_wrap=True, overflow="ellipsis", justify="right" if right else "left"
        )
    for row in rows:
        grid.add_row(*(text(value) for value in row))
    return grid


def rows_of(batch: pa.RecordBatch | pa.Table) -> list[tuple[Any, ...]]:
    columns = [column_values(column) for column in batch.columns]  # (TIME '24:00:00')
    return list(zip(*columns, strict=True)) if columns else []


def _numeric(schema: pa.Schema) -> list[bool]:
    return [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in schema
    ]


def limited(batches: Iterator[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """The batches cut to ``limit`` rows in all (0: no limit); stops reading at the limit."""
    left = limit
    for batch in batches:
        if limit and batch.num_rows >= left:
            if left:
                yield batch.slice(0, left)
            return
        left -= batch.num_rows
        yield batch


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with lists, structs and maps as JSON text: pyarrow's CSV writer takes no
    nested types (it raised ArrowInvalid, a traceback for ``--format csv``); a TIME column
    holding 24:00:00 as text."""
    if not any(
        pa.types.is_nested(f.type) or holds_day_end(c)
        for f, c in zip(batch.schema, batch.columns, strict=True)
    ):
        return batch
    columns = [
        _json_column(column)
        if pa.types.is_nested(column.type)
        else _day_end(column)
        if holds_day_end(column)
        else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _day_end(column: pa.Array) -> pa.Array:
    """A TIME column holding 24:00:00 as text (pyarrow's CSV writer wrote '<value out of
    range: …>' there), the other times as pyarrow writes them."""
    digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[column.type.unit]
    end = "24:00:00" + ("." + "0" * digits if digits else "")
    at_end = pc.equal(time_ticks(column), day_end(column.type))
    found = pc.if_else(at_end, pa.scalar(end), pc.cast(column, pa.string()))
    return found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found


def _json_column(column: pa.Array) -> pa.Array:
    pairs = pa.types.is_map(column.type)  # a MAP reads as (key, value) pairs: an object

    def dump(value: Any) -> str | None:
        if value is None:
            return None
        if pairs:
            value = {k if isinstance(k, str) else text(k): v for k, v in value}
        return json.dumps(value, default=text)

    return pa.array([dump(v) for v in column_values(column)], pa.string())


class Format(StrEnum):
    """How ``query`` and ``sql`` write rows."""

    TABLE = "table"  # what fits the terminal, drawn; the rest counted, not drawn
    CSV = "csv"  # every row, streamed (pyarrow's CSV writer)
    JSON = "json"  # every row as one JSON array, streamed (DuckDB's to_json)
    ARROW = "arrow"  # every row as an Arrow IPC stream (binary: into a file or a pipe)


_TABLE_CHROME = 6  # lines around a table's rows: borders, header, the footer, the prompt
_JSON_SEPARATOR = ",\n  "


def fitting_rows(out: Console) -> int:
    """Rows of a table that fit ``out``'s height (the terminal's, or $LINES)."""
    return max(1, out.height - _TABLE_CHROME)


class Emitter:
    """Writes batches as they come, in one format; counts the rows written.

    The table format draws only the rows that fit the terminal (``shown``) and counts
    the others (``rows``): drawing millions of rows through rich took minutes and
    showed nobody anything. The other formats write bytes straight to stdout.
    """

    def __init__(self, fmt: Format, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        self._console = console()
        self._room = fitting_rows(self._console) if fmt is Format.TABLE else 0
        self._pending: list[tuple[Any, ...]] = []
        self._out: BinaryIO | None = None
        self._csv: pa_csv.CSVWriter | None = None
        self._ipc: pa.ipc.RecordBatchStreamWriter | None = None
        self._duck: duckdb.DuckDBPyConnection | None = None
        if fmt is not Format.TABLE:
            sys.stdout.flush()  # text written before (none, usually) stays in order
            self._out = sys.stdout.buffer  # CliRunner swaps sys.stdout: look it up now
        if fmt is Format.ARROW:
            if self._out is not None and self._out.isatty():
                raise click.UsageError(
                    "--format arrow writes binary Arrow IPC: redirect it into a file "
                    "(> rows.arrow) or a pipe"
                )
            self._ipc = pa.ipc.new_stream(self._out, schema)
        elif fmt is Format.CSV:
            flat = pa.schema(
                [pa.field(f.name, pa.string()) if pa.types.is_nested(f.type) else f for f in schema]
            )
            self._csv = pa_csv.CSVWriter(self._out, flat)

    @property
    def shown(self) -> int:
        """Rows actually written or drawn (the table format draws what fits)."""
        return min(self.rows, self._room) if self.fmt is Format.TABLE else self.rows

    def write(self, batch: pa.RecordBatch) -> None:
        if self._csv is not None:
            self._csv.write_batch(_flat(batch))
        elif self._ipc is not None:
            self._ipc.write_batch(batch)
        elif self.fmt is Format.JSON:
            self._json(batch)
        else:
            room = self._room - len(self._pending)
            if room > 0:
                self._pending.extend(rows_of(batch.slice(0, room)))
        self.rows += batch.num_rows

    def _json(self, batch: pa.RecordBatch) -> None:
        """The rows as JSON objects, written by DuckDB's ``to_json`` (over 1M rows/s);
        a column DuckDB cannot read from Arrow (a repaired UHUGEINT) goes through
        Python's json instead."""
        assert self._out is not None
        if not batch.num_rows:
            return
        try:
            if self._duck is None:
                self._duck = duckdb.connect()
            self._duck.register("__duckflock_rows", batch)
            try:
                texts = self._duck.execute(
                    "SELECT ? || to_json(b)::VARCHAR FROM __duckflock_rows AS b",
                    [_JSON_SEPARATOR],
                ).to_arrow_table()
            finally:
                self._duck.unregister("__duckflock_rows")
            data = _concatenated(texts.column(0))
        except duckdb.Error:
            names = self.schema.names
            data = "".join(
                _JSON_SEPARATOR + json.dumps(dict(zip(names, row, strict=True)), default=text)
                for row in rows_of(batch)
            ).encode()
        if self.rows == 0:
            data = b"[\n  " + data[len(_JSON_SEPARATOR) :]
        self._out.write(data)

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
        elif self._ipc is not None:
            self._ipc.close()
        elif self.fmt is Format.JSON:
            assert self._out is not None
            self._out.write(b"[]\n" if self.rows == 0 else b"\n]\n")
        else:
            grid = table(self.schema.names, self._pending, numeric=_numeric(self.schema))
            self._console.print(grid)
        if self._out is not None:
            self._out.flush()
        if self._duck is not None:
            self._duck.close()


def _concatenated(column: pa.ChunkedArray) -> bytes:
    """The values of a string column without nulls, one after another: the bytes of its
    data buffer between the first and the last offset (no Python string per row)."""
    parts = []
    for chunk in column.chunks:
        if not len(chunk):
            continue
        chunk = chunk.cast(pa.large_string()) if chunk.type != pa.large_string() else chunk
        _, offsets_buffer, data = chunk.buffers()
        offsets = pa.Array.from_buffers(
            pa.int64(), len(chunk) + 1, [None, offsets_buffer], offset=chunk.offset
        )
        first, last = offsets[0].as_py(), offsets[len(chunk)].as_py()
        parts.append(memoryview(data)[first:last])
    return b"".join(parts)


def result_view(result: Result, out: Console) -> Group:
    """One analysis result as the terminal shows it: a line saying which version it is,
    then the rows that fit ``out``'s height and how many did not."""
    at = text(result.refreshed_at.replace(microsecond=0))
    head = (
        f"[bold]{escape(result.name)}[/bold] v{result.version} · {result.mode} · "
        f"{result.duration * 1000:,.1f} ms · {at} · {result.table.num_rows:,} rows"
    )
    parts: list[Any] = [head]
    if result.error is not None:
        parts.append(
            f"[red]last run failed[/red] (the rows are the last good ones): "
            f"{escape(type(result.error).__name__)}: {escape(result.error.message)}"
        )
    room = max(1, out.height - _TABLE_CHROME - len(parts))
    shown = result.table.slice(0, room)
    parts.append(table(shown.column_names, rows_of(shown), numeric=_numeric(shown.schema)))
    left = result.table.num_rows - shown.num_rows
    if left:
        parts.append(
            f"… {left:,} more rows (`duckflock analysis show … --format csv` writes them all)"
        )
    return Group(*parts)
