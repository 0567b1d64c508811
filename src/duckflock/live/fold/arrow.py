"""Folding appended rows into an incremental state with pyarrow, for the plainest shapes.

Every DuckDB scan of an Arrow table costs about 1 ms of fixed overhead here, more than
aggregating 10,000 new rows. For ``SELECT keys…, aggregates… FROM t GROUP BY keys
[ORDER BY outputs] [LIMIT …]`` with plain column keys and arguments, no WHERE and no
HAVING, pyarrow's hash aggregation does the whole refresh in well under a millisecond:
partials of the new rows, the merge into the state, the outputs, the order and the limit.
Every other shape refreshes through DuckDB (:mod:`duckflock.live.plan.incremental`). The state's
columns and types are the ones DuckDB's build query gives, so both paths share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.averages import Inexact, quotient

_MERGE = {"count_all": "sum", "count": "sum", "sum": "sum", "min": "min", "max": "max"}


class OutputKind(StrEnum):
    """What an output column of the pyarrow path is computed from."""

    KEY = "key"  # a group key
    PARTIAL = "partial"  # a partial as it is (count, sum, min, max)
    AVG = "avg"  # a FLOAT or DOUBLE sum over a count, divided in doubles
    EXACT_AVG = "exact_avg"  # an integer's exact sum over a count, divided as DuckDB does


@dataclass(frozen=True)
class Output:
    """One output column: a key, a partial, or an average of two partials (a FLOAT or
    DOUBLE sum over a count: an exact sum's avg is DuckDB's to finalise)."""

    kind: OutputKind
    index: int  # key or partial index (for avg: the sum's)
    count: int = -1  # for avg: the count's partial index
    bits: int = 0  # for exact_avg: DuckDB's long double significand (averages.py)


@dataclass(frozen=True)
class ArrowPlan:
    keys: tuple[str, ...]  # source column of each __k{i}
    partials: tuple[tuple[str, str | None], ...]  # (count_all/count/sum/min/max, column)
    outputs: tuple[Output, ...]
    names: tuple[str, ...]  # the full query's column names
    schema: pa.Schema  # the full query's Arrow types
    order: tuple[tuple[int, bool], ...]  # (output index, descending)
    offset: int
    limit: int | None

    def has_nan(self, state: pa.Table, delta: pa.Table) -> bool:
        """Whether a floating column the fold reads holds NaN or -0.0 (the new rows' keys
        and arguments, the state's keys and partials): there pyarrow and DuckDB differ
        (DuckDB groups NaN with NaN and -0.0 with 0.0, ranks NaN above every number)."""
        used = {column for column in self.keys} | {c for _, c in self.partials if c}
        columns = [delta[name] for name in used if name in delta.column_names]
        columns += list(state.columns)
        return any(
            pa.types.is_floating(column.type)
            and (pc.any(pc.is_nan(column)).as_py() or _signed_zero(column))
            for column in columns
        )

    def fold(self, state: pa.Table, delta: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(new state, result) from the state and the newly stored rows."""
        aggregations: list[tuple[Any, ...]] = []
        extra: dict[str, pa.ChunkedArray] = {}
        for i, (kind, column) in enumerate(self.partials):
            source = column if column is not None else (self.keys[0] if self.keys else None)
            if source is None:  # count(*) without keys: any column counts every row
                source = delta.column_names[0]
            values = delta[source]
            if kind == "sum" and (
                pa.types.is_integer(values.type) or pa.types.is_decimal(values.type)
            ):
                source = f"__s{i}"  # exact, like DuckDB's HUGEINT and DECIMAL(38, s)
                extra[source] = exact_terms(values)
            elif (
                kind == "sum" and pa.types.is_floating(values.type) and values.type != pa.float64()
            ):
                source = f"__s{i}"  # DuckDB sums FLOAT as DOUBLE
                extra[source] = pc.cast(values, pa.float64())
            if kind == "count_all":
                aggregations.append((source, "count", pc.CountOptions(mode="all")))
            elif kind == "count":
                aggregations.append((source, "count", pc.CountOptions(mode="only_valid")))
            else:
                aggregations.append((source, kind))
        rows = delta
        for name, values in extra.items():
            rows = rows.append_column(name, values)
        # exact sums merge in decimal256, then go back to the state's decimal128 with a
        # check: a sum past 38 digits raises (the caller then folds in DuckDB, which
        # raises its own overflow error) instead of wrapping silently
        sums = {len(self.keys) + i for i, (kind, _) in enumerate(self.partials) if kind == "sum"}
        wide = pa.schema(
            [
                field.with_type(exact_sum_type(field.type))
                if at in sums and pa.types.is_decimal(field.type)
                else field
                for at, field in enumerate(state.schema)
            ]
        )
        partial = _conform(_aggregate(rows, list(self.keys), aggregations), wide)
        merges = [(f"__p{i}", _MERGE[kind]) for i, (kind, _) in enumerate(self.partials)]
        keys = [f"__k{i}" for i in range(len(self.keys))]
        both = pa.concat_tables([_conform(state, wide), partial])
        merged = _conform(_aggregate(both, keys, merges), state.schema)
        return merged, self.result(merged)

    def result(self, state: pa.Table) -> pa.Table:
        arrays = []
        for output, field in zip(self.outputs, self.schema, strict=True):
            if output.kind is OutputKind.KEY:
                value = state[f"__k{output.index}"]
            elif output.kind is OutputKind.PARTIAL:
                value = state[f"__p{output.index}"]
            elif output.kind is OutputKind.EXACT_AVG:
                value = _exact_avg(state, output)
            else:
                total = pc.cast(state[f"__p{output.index}"], pa.float64())
                count = pc.cast(state[f"__p{output.count}"], pa.float64())
                value = pc.if_else(pc.equal(count, 0), None, pc.divide(total, count))
            arrays.append(pc.cast(value, field.type))
        names = [f"__o{i}" for i in range(len(arrays))]  # output names may repeat
        table = pa.Table.from_arrays(arrays, names=names)
        if self.order:
            indices = pc.sort_indices(
                table,
                sort_keys=[
                    (names[i], "descending" if desc else "ascending") for i, desc in self.order
                ],
            )  # nulls last, pyarrow's default and DuckDB's for either direction
            table = table.take(indices)
        if self.offset or self.limit is not None:
            table = table.slice(self.offset, self.limit)
        return table.rename_columns(list(self.names))


EXACT_AVG_ROWS = 10_000  # past this, a Python loop over the groups costs more than DuckDB


def exact_avg_fits(rows: int) -> bool:
    """Whether :func:`_exact_avg` takes a state of ``rows`` groups (else DuckDB)."""
    return rows <= EXACT_AVG_ROWS


def _exact_avg(state: pa.Table, output: Output) -> pa.Array:
    """DuckDB's avg of an integer column from the state's exact sum and count, per group,
    bit for bit (:func:`duckflock.live.fold.averages.quotient`; it raises where it
    cannot, and DuckDB computes the result instead)."""
    if not exact_avg_fits(state.num_rows):
        raise TypeError(f"{state.num_rows:,} groups: DuckDB finalises their averages")
    totals = state[f"__p{output.index}"].to_pylist()
    counts = state[f"__p{output.count}"].to_pylist()
    try:
        values = [
            None if not count or total is None else quotient(int(total), count, output.bits)
            for total, count in zip(totals, counts, strict=True)
        ]
    except Inexact as exc:
        raise TypeError(str(exc)) from exc
    return pa.array(values, pa.float64())


def exact_terms(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """``values`` (integers or decimals) in a type whose grouped sum cannot overflow:
    int64 while the count times the largest magnitude stays below 2^63 (the common
    case: no cast), else decimal128(38, 0); a DECIMAL of up to 18 digits as it is
    (pyarrow sums it in 38 digits: below 10^20 terms, no overflow). The grouped sums
    then go to :func:`exact_sum_type`."""
    kind = values.type
    if pa.types.is_decimal(kind) and kind.precision <= 18:
        return values
    if not pa.types.is_integer(kind):
        raise TypeError(f"no exact sum of {kind}")
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    largest = max(abs(low or 0), abs(high or 0))
    if largest * max(len(values), 1) < 2**63:
        return values if kind == pa.int64() else pc.cast(values, pa.int64())
    return pc.cast(values, pa.decimal128(38, 0))


def exact_sum_type(kind: pa.DataType) -> pa.DataType:
    """The type an exact sum of ``kind`` (an integer or a decimal) is computed in:
    ``decimal256(76, scale)``, wide enough that adding and subtracting cannot overflow
    (below 10^38 terms); the result goes back to the state's type with a check."""
    if pa.types.is_integer(kind):
        return pa.decimal256(76, 0)
    if pa.types.is_decimal(kind):
        return pa.decimal256(76, kind.scale)
    raise TypeError(f"no exact sum of {kind}")


def _signed_zero(column: pa.ChunkedArray) -> bool:
    """Whether a floating column holds -0.0 (its sign bit set on a zero)."""
    bits = {2: pa.int16(), 4: pa.int32(), 8: pa.int64()}[column.type.byte_width]
    lowest = -(1 << (bits.bit_width - 1))
    return any(
        pc.any(pc.equal(chunk.view(bits), lowest)).as_py() for chunk in column.chunks if len(chunk)
    )


def _aggregate(table: pa.Table, keys: list[str], aggregations: list[tuple[Any, ...]]) -> pa.Table:
    """Group by ``keys`` (none: one row for the whole table); keys first, then the
    aggregates in the order asked."""
    result = table.group_by(keys, use_threads=False).aggregate(aggregations)
    width = len(aggregations)
    names = result.column_names
    if names[: len(keys)] == keys:  # pyarrow puts the keys first (older ones: last)
        return result
    return result.select(names[width:] + names[:width])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns, in order, under ``schema``'s names and types."""
    arrays = [
        column if column.type == field.type else pc.cast(column, field.type)
        for column, field in zip(table.columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
