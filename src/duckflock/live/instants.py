"""Instants for sliding windows (:mod:`duckflock.live.windows`): where now() stands in a
parsed query (DuckDB's JSON syntax tree) — finding it, the WHERE clause's conjuncts, the
tree with now() swapped for a placeholder column each run replaces with its instant —
and buckets' instants as epoch microseconds and SQL literals."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.syntax import walk

NOW = "__duckflock_now"  # where now() stood, in the rendered SQL
NOW_NAMES = {"now", "get_current_timestamp", "transaction_timestamp", "current_timestamp"}


def is_now(node: dict[str, Any]) -> bool:
    cls = node.get("class")
    if cls == "FUNCTION":
        return str(node.get("function_name", "")).lower() in NOW_NAMES
    if cls == "COLUMN_REF":  # the bare keyword current_timestamp parses as a column
        names = node.get("column_names") or []
        return len(names) == 1 and str(names[0]).lower() == "current_timestamp"
    return False


def mentions_now(node: Any) -> bool:
    return any(is_now(sub) for sub in walk(node))


def conjuncts(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    if node is None:
        return []
    if node.get("class") == "CONJUNCTION" and node.get("type") == "CONJUNCTION_AND":
        return [part for child in node["children"] for part in conjuncts(child)]
    return [node]


def conjunction(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {
        "class": "CONJUNCTION",
        "type": "CONJUNCTION_AND",
        "alias": "",
        "query_location": 0,
        "children": parts,
    }


def placeholder(node: Any) -> Any:
    """``node`` with every now() replaced by a column named NOW (rendered, then swapped
    for the instant's literal)."""
    if isinstance(node, dict):
        if is_now(node):
            return {
                "class": "COLUMN_REF",
                "type": "COLUMN_REF",
                "alias": "",
                "query_location": 0,
                "column_names": [NOW],
            }
        return {k: placeholder(v) for k, v in node.items()}
    if isinstance(node, list):
        return [placeholder(v) for v in node]
    return node


def moved(node: dict[str, Any]) -> dict[str, Any] | None:
    """The constant X of a bound ``now() - X`` or ``now() + X`` (X without now()), or
    None: another form (see :func:`duckflock.live.marks.shift_of`)."""
    children = node.get("children") or []
    if (
        node.get("class") != "FUNCTION"
        or node.get("function_name") not in ("-", "+")
        or len(children) != 2
        or not is_now(children[0])
        or mentions_now(children[1])
    ):
        return None
    return dict(children[1])


def constant_of_now(node: dict[str, Any], volatile: set[str]) -> bool:
    """Whether ``node`` is built from now() and constants only."""
    for sub in walk(node):
        cls = sub.get("class")
        if is_now(sub):
            continue
        if cls == "COLUMN_REF" or cls in ("SUBQUERY", "WINDOW", "STAR", "PARAMETER"):
            return False
        if cls == "FUNCTION" and str(sub.get("function_name", "")).lower() in volatile:
            return False
    return True


def steady_sql(bucket: str, interval: str, width: int, unknown: bool = False) -> str:
    """Whether a finite TIMESTAMP bucket meets the session's time zone at one offset
    throughout (``unknown`` where that cannot be said; an infinite bucket is steady when
    ``unknown`` is true): its rows compare with an instant in local time."""
    finite = f"NOT isfinite({bucket}) OR" if unknown else f"isfinite({bucket}) AND"
    return (
        f"coalesce({finite} "
        f"epoch_us(TRY_CAST(try({bucket} + {interval}) AS TIMESTAMPTZ)) "
        f"- epoch_us(TRY_CAST({bucket} AS TIMESTAMPTZ)) = {width}, {str(unknown).lower()})"
    )


def bucket_sql(interval: str, column_sql: str) -> str:
    """The bucket of a row: ``time_bucket``, or the row's own instant where time_bucket
    overflows (a TIMESTAMPTZ near the minimum: DuckDB subtracts its origin in INT64). A
    bucket of one instant is still a bucket its rows are in: the flags hold for it."""
    return f"coalesce(try(time_bucket({interval}, {column_sql})), {column_sql})"


class Op(StrEnum):
    """How the window column compares with its bound (as SQL)."""

    AFTER = ">"
    FROM = ">="
    BEFORE = "<"
    UNTIL = "<="

    def flipped(self) -> Op:
        """``B < ts`` is ``ts > B``."""
        return {Op.BEFORE: Op.AFTER, Op.UNTIL: Op.FROM, Op.AFTER: Op.BEFORE, Op.FROM: Op.UNTIL}[
            self
        ]


def flags_sql(
    bucket: str, interval: str, width: int, op: Op, bound: str, column_type: Stamp
) -> tuple[str, str]:
    """(the bucket is whole inside the window, it is not expired), in SQL.

    A TIMESTAMP compares with now() through a cast to TIMESTAMPTZ in the session's time
    zone, which is not monotonic: the local times a DST gap skips (02:30 on a spring-
    forward day in New York) come out an hour later than 03:00. A bucket that spans a
    jump is judged by neither end: never whole, and not expired until two days past
    (no offset changes by more), so its rows are recomputed with the predicate itself.
    """
    inside = f"({bucket} {op} ({bound}))"
    live = f"(({bucket} + {interval}) {op} ({bound}))"
    if column_type is not Stamp.TIMESTAMP:
        return inside, live
    # infinity, and ends out of TIMESTAMPTZ's range, are judged by their ends as before
    steady = steady_sql(bucket, interval, width, unknown=True)
    late = f"(try({bucket} + {interval} + INTERVAL 2 DAY) {op} ({bound}))"
    return f"({inside} AND {steady})", f"({live} OR (NOT {steady} AND {late}))"


class Stamp(StrEnum):
    """The window column's type (and the buckets'), as SQL literals are cast to it."""

    TIMESTAMP = "TIMESTAMP"  # local time: meets now() through the session's time zone
    TIMESTAMPTZ = "TIMESTAMPTZ"


def bucket_micros(buckets: pa.ChunkedArray) -> pa.ChunkedArray:
    """``buckets`` in epoch microseconds, not datetimes: a bucket past 9999 has none."""
    return pc.cast(pc.cast(buckets, pa.timestamp("us", buckets.type.tz)), pa.int64())


def epoch_literal(micros: int, column_type: Stamp) -> str:
    """A bucket bound (microseconds since the epoch) as a value of the window column's
    type; past DuckDB's last finite timestamp, infinity."""
    if micros >= INFINITY:
        return f"CAST('infinity' AS {column_type})"
    function = "make_timestamptz" if column_type is Stamp.TIMESTAMPTZ else "make_timestamp"
    return f"{function}(CAST({micros} AS BIGINT))"


INFINITY = 2**63 - 1  # DuckDB's timestamp infinity, as Arrow carries it
# time_bucket's origin for widths in microseconds: 2000-01-03 00:00:00 (a Monday), UTC
ORIGIN = 946_857_600_000_000
SPAN = 2**60  # instants within this many microseconds of the epoch bucket as below


def bucket_of(values: pa.ChunkedArray, width: int, kind: pa.DataType) -> pa.ChunkedArray | None:
    """``coalesce(try(time_bucket(width µs, values)), values)`` (:func:`bucket_sql`) as
    DuckDB computes it, for TIMESTAMP and TIMESTAMPTZ alike: the origin's instant
    plus whole widths, floored (``WidthConvertibleToMicrosCommon``, DuckDB's and ICU's
    time_bucket), in ``kind``. None where a value lies ``SPAN`` or more from the
    epoch (infinity, and where DuckDB's own arithmetic could overflow)."""
    if _plain(values, kind):  # in numpy: one pass each, no pyarrow kernels
        us = np.concatenate([chunk.view(pa.int64()).to_numpy() for chunk in values.chunks])
        numbers = bucket_numbers(us, width)
        if numbers is None:
            return None
        floored = numbers * width + ORIGIN % width
        return pa.chunked_array([pa.array(floored, pa.int64()).view(kind)])
    micros = bucket_micros(values)
    bounds = pc.min_max(micros)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low <= -SPAN or high >= SPAN):
        return None
    origin = ORIGIN % width
    shift = -(-(2**62) // width) * width  # whole widths: the floor is a truncation
    shifted = pc.add(pc.subtract(micros, origin), shift)
    floored = pc.multiply(pc.divide(shifted, width), width)
    return pc.cast(
        pc.add(pc.subtract(floored, shift), origin), kind
    )  # DuckDB's timestamp infinity, as Arrow carries it


def bucket_numbers(us: np.ndarray, width: int) -> np.ndarray | None:
    """Per microsecond timestamp ``us``, its bucket's number of widths from the origin's
    (:func:`bucket_of`'s floor: the bucket starts at that many widths past
    ``ORIGIN % width``); None where a value lies ``SPAN`` or more from the epoch."""
    if len(us) and (int(us.min()) <= -SPAN or int(us.max()) >= SPAN):
        return None
    return (us - ORIGIN % width) // width  # (floor division: the floor, as below)


def _plain(values: pa.ChunkedArray, kind: pa.DataType) -> bool:
    """Whether ``values`` and ``kind`` are microsecond timestamps and no value is NULL."""
    return (
        not values.null_count
        and values.num_chunks > 0
        and pa.types.is_timestamp(values.type)
        and values.type.unit == "us"
        and pa.types.is_timestamp(kind)
        and kind.unit == "us"
    )
