"""How the CLI shows rows: tables that fit the terminal, CSV and JSON that stream.

On a terminal, a table takes the terminal's width and cuts long cells short (never
wraps rows over several lines); into a pipe or a file it takes the width it needs,
so nothing is wrapped at 80 columns. Values print as a person reads them: timestamps
in ISO form, NULL for missing values.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
import pyarrow as pa
import pyarrow.csv as pa_csv
from rich.console import Console
from rich.table import Table

_TABLE_BLOCK = 10_000  # rows of one drawn table when --limit 0 streams a large result
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
    columns = [column.to_pylist() for column in batch.columns]
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
    nested types (it raised ArrowInvalid, a traceback for ``--format csv``)."""
    if not any(pa.types.is_nested(field.type) for field in batch.schema):
        return batch
    columns = [
        _json_column(column) if pa.types.is_nested(column.type) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _json_column(column: pa.Array) -> pa.Array:
    pairs = pa.types.is_map(column.type)  # a MAP reads as (key, value) pairs: an object

    def dump(value: Any) -> str | None:
        if value is None:
            return None
        if pairs:
            value = {k if isinstance(k, str) else text(k): v for k, v in value}
        return json.dumps(value, default=text)

    return pa.array([dump(v) for v in column.to_pylist()], pa.string())


class Emitter:
    """Writes batches as they come, in one format; counts the rows written."""

    def __init__(self, fmt: str, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.schema = schema
        self.rows = 0
        self._pending: list[tuple[Any, ...]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if self.fmt == "csv":
            sink = io.BytesIO()
            options = pa_csv.WriteOptions(include_header=self.rows == 0)
            pa_csv.write_csv(pa.Table.from_batches([_flat(batch)]), sink, options)
            click.echo(sink.getvalue().decode(), nl=False)
        elif self.fmt == "json":
            names = self.schema.names
            for row in rows_of(batch):
                prefix = "[\n  " if self.rows == 0 else ",\n  "
                record = dict(zip(names, row, strict=True))
                click.echo(prefix + json.dumps(record, default=text), nl=False)
                self.rows += 1
            return
        else:  # drawn over rows held up to --limit, or in blocks when there is none
            self._pending.extend(rows_of(batch))
            if len(self._pending) >= _TABLE_BLOCK:
                self._draw()
        self.rows += batch.num_rows

    def _draw(self) -> None:
        grid = table(self.schema.names, self._pending, numeric=_numeric(self.schema))
        console().print(grid)
        self._pending = []

    def close(self) -> None:
        if self.fmt == "json":
            click.echo("[]" if self.rows == 0 else "\n]")
        elif self.fmt == "table" and (self._pending or self.rows == 0):
            self._draw()
        elif self.fmt == "csv" and self.rows == 0:
            click.echo(",".join(f'"{name}"' for name in self.schema.names))
