"""Which GROUP BY keys pyarrow may compute as a time bucket (:mod:`duckflock.live.fold.buckets`).

A key qualifies when it is ``date_trunc(unit, column)`` or ``time_bucket(width, column)``
(constant unit or width, no origin or offset) of a column of DuckDB type ``TIMESTAMP``
(not TIMESTAMPTZ, whose buckets follow the time zone, nor DATE or other precisions), and
DuckDB — the same function node, over :data:`~duckflock.live.fold.buckets.PROBES` —
computes exactly the buckets of one fixed width: for ``date_trunc`` one of
:data:`_TRUNCATED` (month, quarter, year… match none and stay DuckDB's), for
``time_bucket`` the width of its interval (months: none) from DuckDB's default origin.
DuckDB decides the function's meaning (a macro of the same name computes something else
and fails the probe); pyarrow only repeats the arithmetic it showed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.syntax import walk
from duckflock.live.fold.buckets import PROBES, TIMESTAMP, Bucket
from duckflock.live.plan.trees import Renderer, column_ref, plain_column

_DAY = 86_400_000_000
# date_trunc's fixed widths from the epoch: microsecond … day, and ISO weeks (Mondays;
# 1970-01-05 was one)
_TRUNCATED = (
    Bucket(1, 0),
    Bucket(1_000, 0),
    Bucket(1_000_000, 0),
    Bucket(60_000_000, 0),
    Bucket(3_600_000_000, 0),
    Bucket(_DAY, 0),
    Bucket(7 * _DAY, 4 * _DAY),
)
_ORIGIN = 946_857_600_000_000  # time_bucket's default origin, 2000-01-03 (the probe checks)
_FUNCTIONS = ("date_trunc", "datetrunc", "time_bucket")
_PROBE = "__duckflock_probe"
_PROBE_COLUMN = "__t"


def bucketed(
    cursor: duckdb.DuckDBPyConnection, expr: dict[str, Any], types: dict[str, str]
) -> tuple[str, Bucket] | None:
    """(column, bucket) when the key ``expr`` is a time bucket pyarrow computes as
    DuckDB does (above); ``types``: the source table's column types by lower-case name."""
    name = str(expr.get("function_name", "")).lower()
    children = expr.get("children") or []
    if (
        expr.get("class") != "FUNCTION"
        or name not in _FUNCTIONS
        or len(children) != 2
        or expr.get("filter")
        or expr.get("distinct")
        or (expr.get("order_bys") or {}).get("orders")
    ):
        return None
    column = plain_column(children[1])
    if not isinstance(column, str) or types.get(column.lower()) != "TIMESTAMP":
        return None
    if any(node.get("class") == "COLUMN_REF" for node in walk(children[0])):
        return None  # the unit or width must be a constant
    probe = dict(expr, children=[children[0], column_ref(_PROBE_COLUMN)])
    try:
        got = _computed(cursor, Renderer(cursor).sql(probe))
        candidates = _TRUNCATED if name != "time_bucket" else _widths(cursor, children[0])
    except (duckdb.Error, pa.ArrowException, ValueError, TypeError):
        return None
    values = pa.array(PROBES, pa.int64()).view(TIMESTAMP)
    for bucket in candidates:
        if bucket.of(values).combine_chunks().view(pa.int64()).to_pylist() == got:
            return column, bucket
    return None


def _computed(cursor: duckdb.DuckDBPyConnection, sql: str) -> list[int | None]:
    """DuckDB's values of the expression ``sql`` (over ``__t``) for the probes, as
    microseconds; ValueError unless they are TIMESTAMPs."""
    probes = pa.table({_PROBE_COLUMN: pa.array(PROBES, pa.int64()).view(TIMESTAMP)})
    cursor.register(_PROBE, probes)
    try:
        out = cursor.execute(f"SELECT {sql} FROM {_PROBE}").to_arrow_table().column(0)
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.unregister(_PROBE)
    if out.type != TIMESTAMP:
        raise ValueError(f"the key is {out.type}, not {TIMESTAMP}")
    return list(out.combine_chunks().view(pa.int64()).to_pylist())


def _widths(cursor: duckdb.DuckDBPyConnection, width: dict[str, Any]) -> tuple[Bucket, ...]:
    """time_bucket's bucket for the constant interval ``width``, as DuckDB reads it: a
    whole number of microseconds and days, no months (those are calendar buckets)."""
    sql = Renderer(cursor).sql(width)
    got = cursor.execute(f"SELECT CAST(({sql}) AS INTERVAL)").to_arrow_table().column(0)
    value = got[0].as_py() if len(got) == 1 else None
    if value is None or value.months or value.nanoseconds % 1_000:
        return ()
    micros = value.days * _DAY + value.nanoseconds // 1_000
    return (Bucket(micros, _ORIGIN % micros),) if micros > 0 else ()
