"""What ``db.insert`` accepts, turned into parts the writer can append.

A *part* is a run of rows that share one column list: Python row tuples, or one Arrow
table. A dict, a tuple, a list of dicts (key sets may differ: each set is a part, so
left-out columns take their DEFAULT), a list of tuples, a pandas or polars DataFrame, a
pyarrow Table or RecordBatch. pandas and polars are never imported here: a DataFrame is
recognised by its module and converted by its own ``to_arrow``/pyarrow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.wide import day_end, nested_children, time_ticks
from duckflock.errors import ConversionError, RowRejectedError, SchemaMismatchError
from duckflock.ingest.schema import TableSchema, Target


class Part:
    """Rows of one insert call that share a column list."""

    __slots__ = ("arrow", "columns", "indices", "rows")

    def __init__(
        self,
        columns: tuple[str, ...],
        rows: list[tuple[Any, ...]] | None = None,
        arrow: pa.Table | None = None,
        indices: list[int] | None = None,
    ) -> None:
        self.columns = columns
        self.rows = rows
        self.arrow = arrow
        # each row's index within the whole call; None means 0..len-1 (a call of one part)
        self.indices = indices

    def __len__(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        assert self.arrow is not None
        return int(self.arrow.num_rows)

    def index_of(self, position: int) -> int:
        return position if self.indices is None else self.indices[position]

    def row(self, position: int) -> dict[str, Any]:
        if self.rows is not None:
            return dict(zip(self.columns, self.rows[position], strict=True))
        assert self.arrow is not None
        return dict(self.arrow.slice(position, 1).to_pylist()[0])

    def head(self, call_rows: int) -> Part | None:
        """This part restricted to the rows whose call index is below ``call_rows``."""
        if self.indices is None:
            keep = min(call_rows, len(self))
        else:
            keep = sum(1 for i in self.indices if i < call_rows)
        if keep == 0:
            return None
        if self.rows is not None:
            return Part(self.columns, rows=self.rows[:keep])
        assert self.arrow is not None
        return Part(self.columns, arrow=self.arrow.slice(0, keep))


def to_parts(
    target: Target, data: Any, columns: Sequence[str] | None = None
) -> tuple[list[Part], int]:
    """Check ``data`` against the call's resolved table and split it into parts; returns
    them and the row count (``target.schema`` is the schema they were checked against)."""
    if isinstance(data, dict):
        if columns is not None:
            raise ValueError("columns= applies to tuple rows; a dict row names its own")
        names = target.columns(data)
        return [Part(names, rows=[tuple(data.values())])], 1
    if isinstance(data, tuple):
        names = _tuple_columns(target, columns)
        _check_width(target.schema, names, data, 0)
        return [Part(names, rows=[data])], 1
    arrow = as_arrow(data)
    if arrow is not None:
        return _arrow_parts(target, arrow, columns)
    if isinstance(data, str | bytes | bytearray) or not isinstance(data, Iterable):
        raise TypeError(
            "insert takes a dict or tuple (one row), an iterable of them, a DataFrame or "
            f"an Arrow table, not {type(data).__name__}"
        )
    return _row_parts(target, list(data), columns)


def _tuple_columns(target: Target, columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        return target.schema.columns
    if isinstance(columns, str):
        raise TypeError("columns must be a sequence of names, not a str")
    return target.columns(columns)


def _check_width(schema: TableSchema, names: tuple[str, ...], row: Sequence[Any], i: int) -> None:
    if len(row) != len(names):
        raise SchemaMismatchError(
            f"row {i} has {len(row)} values but the insert into {schema.name!r} names "
            f"{len(names)} columns ({', '.join(names)})",
            table=schema.name,
        )


def _row_parts(
    target: Target, rows: list[Any], columns: Sequence[str] | None
) -> tuple[list[Part], int]:
    if not rows:
        return [], 0
    if all(isinstance(row, dict) for row in rows):
        if columns is not None:
            raise ValueError("columns= applies to tuple rows; dict rows name their own")
        return _dict_parts(target, rows)
    names = _tuple_columns(target, columns)
    tuples: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, tuple | list):
            raise TypeError(
                f"row {i} is a {type(row).__name__}; rows must all be dicts or all tuples/lists"
            )
        _check_width(target.schema, names, row, i)
        tuples.append(tuple(row))
    return [Part(names, rows=tuples)], len(tuples)


def _dict_parts(target: Target, rows: list[dict[str, Any]]) -> tuple[list[Part], int]:
    groups: dict[tuple[str, ...], tuple[list[tuple[Any, ...]], list[int]]] = {}
    for i, row in enumerate(rows):
        key = tuple(row)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], [])
        group[0].append(tuple(row.values()))
        group[1].append(i)
    parts = []
    for key, (values, indices) in groups.items():
        names = target.columns(key)
        parts.append(Part(names, rows=values, indices=None if len(groups) == 1 else indices))
    return parts, len(rows)


def as_arrow(data: Any) -> pa.Table | None:
    """``data`` as a pyarrow Table if it is Arrow or a pandas/polars DataFrame, else None."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__
    if module.startswith("pandas") and type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module.startswith("polars") and type(data).__name__ == "DataFrame":
        return data.to_arrow()
    return None


def _arrow_parts(
    target: Target, arrow: pa.Table, columns: Sequence[str] | None
) -> tuple[list[Part], int]:
    names = list(arrow.column_names)
    if columns is not None:
        if len(columns) != len(names):
            raise SchemaMismatchError(
                f"columns= names {len(columns)} columns but the data has {len(names)}",
                table=target.name,
            )
        names = list(columns)
    canonical = target.columns(names)
    if list(canonical) != arrow.column_names:
        arrow = arrow.rename_columns(list(canonical))
    if arrow.num_rows == 0:
        return [], 0
    _validate(target.schema, arrow)
    return [Part(canonical, arrow=arrow)], int(arrow.num_rows)


def _validate(schema: TableSchema, arrow: pa.Table) -> None:
    """Refuse malformed Arrow data (invalid UTF-8, offsets out of range) in the caller.

    DuckDB reads Arrow buffers as they are: a string holding invalid UTF-8 fails the
    batch it rides in (the writer then isolates it), and broken offsets could make it
    read out of bounds. A full validation costs about 5 ms per million strings here,
    against about 160 ms to insert them, and runs on the caller's thread.
    """
    try:
        validate(arrow)
    except pa.ArrowException as exc:
        for name, column in zip(arrow.column_names, arrow.columns, strict=True):
            try:
                _validate_column(column)
            except pa.ArrowException as bad:
                row = bad.row_index if isinstance(bad, PastMidnight) else None
                raise _invalid(schema, column, name, bad, row) from None
        raise _invalid(schema, None, None, exc) from exc


class PastMidnight(pa.ArrowInvalid):  # type: ignore[misc]
    """A TIME value outside DuckDB's range, at ``row_index`` of its column."""

    def __init__(self, message: str, row_index: int) -> None:
        super().__init__(message)
        self.row_index = row_index


def validate(arrow: pa.Table) -> None:
    """pyarrow's full validation (:class:`pyarrow.ArrowInvalid`), but a TIME may be
    24:00:00, as in DuckDB (its own Arrow export of ``TIME '24:00:00'`` holds 86,400 s),
    where pyarrow's range stops before."""
    try:
        arrow.validate(full=True)
    except pa.ArrowException:
        if not any(_timed(column.type) for column in arrow.columns):
            raise
        arrow.validate()  # the table's shape; then each column, times to 24:00:00
        for index, column in enumerate(arrow.columns):
            try:
                _validate_column(column)
            except pa.ArrowInvalid as exc:
                raise pa.ArrowInvalid(f"Column {index}: {exc}") from exc


def _timed(kind: pa.DataType) -> bool:
    """Whether ``kind`` is a TIME or holds one (a list's, struct's or map's)."""
    return pa.types.is_time(kind) or any(_timed(kind.field(i).type) for i in range(kind.num_fields))


def _validate_column(column: pa.ChunkedArray) -> None:
    if not pa.types.is_time(column.type) and _timed(column.type):
        column.validate()  # the nesting's shape; then its children, times to 24:00:00
        for chunk in column.chunks:
            children = nested_children(chunk)
            if not children:  # (a union's, a dictionary's: pyarrow's range)
                chunk.validate(full=True)
            for child in children:
                try:  # (a child's index is not a row's)
                    _validate_column(pa.chunked_array([child], child.type))
                except PastMidnight as exc:
                    raise pa.ArrowInvalid(str(exc)) from None
        return
    if not pa.types.is_time(column.type):
        column.validate(full=True)
        return
    column.validate()  # the buffers' sizes; the values' range is checked here
    day, ticks = day_end(column.type), time_ticks(column)
    bad = pc.or_(pc.less(ticks, 0), pc.greater(ticks, day))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise PastMidnight(
            f"TIME value {ticks[row].as_py()} {column.type.unit} is not within DuckDB's "
            f"range [0, {day}] {column.type.unit} (00:00:00 to 24:00:00)",
            row,
        )


def _invalid(
    schema: TableSchema,
    column: pa.ChunkedArray | None,
    name: str | None,
    exc: Exception,
    row_index: int | None = None,
) -> RowRejectedError:
    found = re.search(r"In chunk (\d+):.* index (\d+)", str(exc))
    if column is not None and found and row_index is None:
        chunk, index = int(found.group(1)), int(found.group(2))
        row_index = sum(len(c) for c in column.chunks[:chunk]) + index
    return RowRejectedError(
        table=schema.name,
        cause=ConversionError(f"the Arrow data is invalid: {exc}"),
        row_index=row_index,
        row=None,
        column=name,
    )


def ipc_bytes(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
