"""Arrow values as plain JSON values, for every type DuckDB hands out.

``Array.to_pylist`` fails on values Python's ``datetime`` cannot hold (DuckDB's
``'infinity'::DATE``, ``'-infinity'::TIMESTAMP``, the year 290000) and JSON has no
NaN or Infinity, so each column is converted on its own: the fast path first, and a
column that fails it is converted value by value from the raw integers, rendered the
way DuckDB prints them (``infinity``, ``290000-01-01 00:00:00``) by the calendar both
protocols share (:mod:`duckflock.server.temporal`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.wide import day_end, holds_day_end, time_ticks
from duckflock.server import temporal


def plain(value: Any) -> Any:
    """One Python value (from ``to_pylist``) as a JSON value."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)  # HUGEINT sums arrive as scale-0 decimals
        return str(value)  # exact: a JSON number would round
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)


def column(array: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Every value of one column as a JSON value."""
    if isinstance(array, pa.ChunkedArray):
        return [v for chunk in array.chunks for v in column(chunk)]
    try:
        if not holds_day_end(array):  # else 24:00:00, which to_pylist gives as 00:00
            return [plain(v) for v in array.to_pylist()]
    except (OverflowError, ValueError, pa.ArrowException):
        pass
    return _slow(array)


def _slow(array: pa.Array) -> list[Any]:
    kind = array.type
    if isinstance(kind, pa.ExtensionType):
        return _slow(array.storage)
    if pa.types.is_date32(kind):
        return [_date(v) for v in array.view(pa.int32()).to_pylist()]
    if pa.types.is_timestamp(kind):
        per_second = temporal.TICKS_PER_SECOND[kind.unit]
        suffix = "+00:00" if kind.tz is not None else ""
        return [_timestamp(v, per_second, suffix) for v in array.view(pa.int64()).to_pylist()]
    if pa.types.is_time(kind):
        day = day_end(kind)
        values = array.to_pylist()
        at_end = pc.equal(time_ticks(array), day).to_pylist()
        return ["24:00:00" if end else plain(v) for v, end in zip(values, at_end, strict=True)]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [None if s.values is None else column(s.values) for s in array]
    if pa.types.is_struct(kind):
        fields = [kind.field(i).name for i in range(kind.num_fields)]
        children = [column(array.field(i)) for i in range(kind.num_fields)]
        valid = array.is_valid().to_pylist()
        return [
            dict(zip(fields, values, strict=True)) if ok else None
            for ok, values in zip(valid, zip(*children, strict=True), strict=True)
        ]
    if pa.types.is_map(kind):
        return [None if s.values is None else column(s.values) for s in array]
    out = []
    for scalar in array:
        try:
            out.append(plain(scalar.as_py()))
        except (OverflowError, ValueError, pa.ArrowException):
            out.append(str(scalar))
    return out


def _date(days: int | None) -> str | None:
    return None if days is None else temporal.duckdb_date(days)


def _timestamp(ticks: int | None, per_second: int, suffix: str) -> str | None:
    return None if ticks is None else temporal.duckdb_timestamp(ticks, per_second, suffix)


def rows(batch: pa.RecordBatch | pa.Table) -> list[list[Any]]:
    """The rows of a batch as lists of JSON values."""
    columns = [column(batch.column(i)) for i in range(batch.num_columns)]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def clean(payload: Any) -> Any:
    """``payload`` with every non-finite float made JSON-safe (None)."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {k: clean(v) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [clean(v) for v in payload]
    return payload
