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

import contextlib
import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import dense, sets, sketches
from duckflock.live.fold.averages import Inexact, quotients
from duckflock.live.fold.buckets import Bucket
from duckflock.live.fold.nans import Clean, unlike_duckdb
from duckflock.live.fold.physical import divided
from duckflock.live.fold.positions import merge_touched
from duckflock.live.fold.states import PartialKind

_MERGE = {
    PartialKind.COUNT_ALL: "sum",
    PartialKind.COUNT: "sum",
    PartialKind.SUM: "sum",
    PartialKind.MIN: "min",
    PartialKind.MAX: "max",
}


class OutputKind(StrEnum):
    """What an output column of the pyarrow path is computed from."""

    KEY = "key"  # a group key
    PARTIAL = "partial"  # a partial as it is (count, sum, min, max)
    AVG = "avg"  # a FLOAT or DOUBLE sum over a count, divided in doubles
    EXACT_AVG = "exact_avg"  # an integer's exact sum over a count, divided as DuckDB does
    LENGTH = "length"  # count(DISTINCT …): its SET partial's length (fold/sets.py)
    COUNT = "count"  # approx_count_distinct: its SKETCH partial's count (fold/sketches.py)


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
    partials: tuple[tuple[PartialKind, str | None], ...]  # (one of ARROW_KINDS, column)
    outputs: tuple[Output, ...]
    names: tuple[str, ...]  # the full query's column names
    schema: pa.Schema  # the full query's Arrow types
    order: tuple[tuple[int, bool], ...]  # (output index, descending)
    offset: int
    limit: int | None
    # keys that are a time bucket of their column (key index, bucket): live/fold/buckets.py
    buckets: tuple[tuple[int, Bucket], ...] = ()
    # the state chunks (or a whole state: dense.py) found free of NaN and -0.0; the
    # state's keys' lookup table (dense.py); the sketches last counted (sketches.py)
    _clean: Clean = dataclasses.field(default_factory=Clean, compare=False, hash=False, repr=False)
    _keys: dense.KeyIndex = dataclasses.field(default_factory=dense.KeyIndex, compare=False)
    _counts: sketches.Counted = dataclasses.field(default_factory=sketches.Counted, compare=False)

    def has_nan(self, state: pa.Table, delta: pa.Table) -> bool:
        """Whether a floating column the fold reads holds NaN or -0.0 (the new rows' keys
        and arguments, the state's keys and partials): there pyarrow and DuckDB differ
        (DuckDB groups NaN with NaN and -0.0 with 0.0, ranks NaN above every number).
        Each chunk is checked by :func:`unlike_duckdb` (others than floats at once), the
        state's unless clean (:class:`Clean`)."""
        names = delta.column_names
        chunks = [chunk for name in self.read if name in names for chunk in delta[name].chunks]
        checked: list[pa.Array] = []  # the state's chunks, each clean or checked below
        floating = [i for i, kind in enumerate(state.schema.types) if pa.types.is_floating(kind)]
        for i in [] if not floating or self._clean.vouched(state) else floating:
            for chunk in state.column(i).chunks:
                checked.append(chunk)
                if not self._clean.holds(chunk):
                    chunks.append(chunk)
        found = any(unlike_duckdb(chunk) for chunk in chunks)
        if not found and checked:  # a kept state's untouched rows are slices of these
            self._clean.keep(checked)
        return found

    @cached_property
    def read(self) -> frozenset[str]:
        """The new rows' columns the fold reads: the keys and the partials' arguments."""
        return frozenset(self.keys) | {column for _, column in self.partials if column}

    def key_columns(self, rows: pa.Table) -> list[pa.ChunkedArray]:
        """The key values of the source ``rows`` (a bucketed key's bucket of its column;
        ArrowInvalid for a timestamp pyarrow leaves to DuckDB)."""
        return self.bucketed([rows[name] for name in self.keys])

    def bucketed(self, sources: list[pa.ChunkedArray]) -> list[pa.ChunkedArray]:
        """The key values from each key's source column (:meth:`key_columns`)."""
        columns = list(sources)
        for i, bucket in self.buckets:
            columns[i] = bucket.of(columns[i])
        return columns

    @cached_property
    def sets(self) -> bool:
        """Whether a partial is a SET (count(DISTINCT …)): those merge by position only,
        one key column and one state row per group (:func:`merge_touched`)."""
        return any(kind is PartialKind.SET for kind, _ in self.partials)

    @cached_property
    def key_names(self) -> list[str]:
        """The state's key columns."""
        return [f"__k{i}" for i in range(len(self.keys))]

    @cached_property
    def merges(self) -> list[tuple[str, str]]:
        """How the state's partials merge with the new rows' (``__p{i}``, aggregate)."""
        return [(f"__p{i}", _MERGE[kind]) for i, (kind, _) in enumerate(self.partials)]

    @cached_property
    def bounded(self) -> frozenset[str]:
        """The columns with both a min and a max partial: one min_max aggregates both."""
        kinds: dict[str, set[PartialKind]] = {}
        for kind, column in self.partials:
            if column is not None:
                kinds.setdefault(column, set()).add(kind)
        return frozenset(
            column for column, found in kinds.items() if {PartialKind.MIN, PartialKind.MAX} <= found
        )

    @cached_property
    def twins(self) -> tuple[int, ...]:
        """Per partial, the first partial that is the same aggregate of the same column
        (an avg's sum beside a sum): the two columns hold the same values (DuckDB's
        build computes such an aggregate once; the folds merge it once)."""
        return tuple(self.partials.index(partial) for partial in self.partials)

    @cached_property
    def sums(self) -> frozenset[int]:
        """The state's columns (positions) that hold sums."""
        width = len(self.keys)
        return frozenset(
            width + i for i, (kind, _) in enumerate(self.partials) if kind is PartialKind.SUM
        )

    def fold(
        self, state: pa.Table, delta: pa.Table, *, unique: bool = True
    ) -> tuple[pa.Table, pa.Table]:
        """(new state, result) from the state and the newly stored rows: the new rows'
        partials, one row per group they touch (:meth:`partials_of`), merged into the
        state's (:meth:`merge`). ``unique``: the state has one row per group (not a
        window's buckets, several per group: those are grouped). One key column over a
        small state merges in numpy, ungrouped, where it can (:mod:`.dense`)."""
        if unique and len(self.keys) == 1 and not self.buckets:  # (new buckets: grouped)
            key = delta[self.keys[0]]
            folded = dense.fold(state, key, delta, self.partials, self.twins, self._keys)
            if folded is not None:
                if folded[1]:  # all of it checked: has_nan does not look at it again
                    self._clean.vouch(folded[0])
                return folded[0], self.result(folded[0])
        return self.merge(state, self.partials_of(delta, state.schema), unique=unique)

    def merge(
        self, state: pa.Table, partial: pa.Table, *, unique: bool = True
    ) -> tuple[pa.Table, pa.Table]:
        """(new state, result) from the state and ``partial``, a table of partials in
        the state's (or the exact sums' wide) schema: by position where one key column
        holds the groups and the state has one row per group (``unique``:
        :func:`~duckflock.live.fold.positions.merge_touched`: the untouched groups are
        neither aggregated nor, mostly, copied), else by grouping the two tables."""
        # exact sums merge in decimal256, then go back to the state's decimal128 with a
        # check: a sum past 38 digits raises (the caller then folds in DuckDB, which
        # raises its own overflow error) instead of wrapping silently
        wide = self.wide(state.schema)
        if unique and len(self.keys) == 1:  # the touched groups, by position
            narrow = partial
            if wide is not None:  # exact sums: one refresh's partials fit the state's type
                with contextlib.suppress(pa.ArrowInvalid):  # else they group below
                    narrow = _conform(partial, state.schema)
            kinds = [kind for kind, _ in self.partials]
            merged = merge_touched(state, narrow, kinds, self.twins)
            if merged is not None:
                return merged, self.result(merged)
        if self.sets:  # the caller folds in DuckDB
            raise TypeError("distinct lists merge by position only")
        both = pa.concat_tables([state if wide is None else _conform(state, wide), partial])
        merged = _conform(_aggregate(both, self.key_names, self.merges), state.schema)
        return merged, self.result(merged)

    def wide(self, schema: pa.Schema) -> pa.Schema | None:
        """``schema`` with its exact sums widened to :func:`exact_sum_type`; None when it
        holds no decimal sum (the partials merge in the state's types)."""
        if not any(pa.types.is_decimal(schema.field(at).type) for at in self.sums):
            return None
        return pa.schema(
            [
                field.with_type(exact_sum_type(field.type))
                if at in self.sums and pa.types.is_decimal(field.type)
                else field
                for at, field in enumerate(schema)
            ]
        )

    def partials_of(self, delta: pa.Table, schema: pa.Schema) -> pa.Table:
        """The partials of the rows ``delta``, one row per group they touch, in the
        state's ``schema`` (exact sums widened: :meth:`wide`). A partial asked twice
        (an avg's sum beside a sum of the same column) is aggregated once, and so is a
        count of a column without nulls beside count(*)."""
        aggregations: list[tuple[Any, ...]] = []
        # (partial, source) -> aggregation; a min and a max of one column: one min_max
        found: dict[tuple[PartialKind | str, str], int] = {}
        picks: list[tuple[int, str]] = []  # (aggregation, its struct field or "")
        rows = delta
        anyone = self.keys[0] if self.keys else delta.column_names[0]  # for count(*)
        grouping = list(self.keys)
        if self.buckets:  # bucketed keys grouped by their buckets (as added columns)
            values = self.key_columns(delta)
            for i, _ in self.buckets:
                grouping[i] = f"__b{i}"
                rows = rows.append_column(grouping[i], values[i])
        for i, (kind, column) in enumerate(self.partials):
            source = column if column is not None else anyone
            if kind is PartialKind.COUNT and not delta[source].null_count:
                kind, source = PartialKind.COUNT_ALL, anyone  # the same count as count(*)
            both = kind in (PartialKind.MIN, PartialKind.MAX) and source in self.bounded
            at = found.get(("min_max" if both else kind, source))
            if at is None:
                at = found["min_max" if both else kind, source] = len(aggregations)
                if both:
                    aggregation: tuple[Any, ...] = (source, "min_max")
                else:
                    aggregation = self._aggregation(i, kind, delta[source], source)
                if aggregation[0] != source:  # a sum over other terms
                    rows = rows.append_column(aggregation[0], sum_terms(delta[source]))
                aggregations.append(aggregation)
            picks.append((at, _MERGE[kind] if both else ""))
        grouped = _aggregate(rows, grouping, aggregations)
        width = len(self.keys)
        columns = grouped.columns
        chosen = columns[:width] + [
            _field(columns[width + at], name) if name else columns[width + at] for at, name in picks
        ]
        return _typed(chosen, self.wide(schema) or schema)

    @staticmethod
    def _aggregation(
        i: int, kind: PartialKind, values: pa.ChunkedArray, source: str
    ) -> tuple[Any, ...]:
        """pyarrow's aggregation for partial ``i`` of the new rows (``values``, the
        column ``source``): (column, function[, options]), the column an added one
        (``__s{i}``) where a sum needs other terms (:func:`sum_terms`)."""
        if kind is PartialKind.SUM and (
            pa.types.is_integer(values.type)
            or pa.types.is_decimal(values.type)
            or (pa.types.is_floating(values.type) and values.type != pa.float64())
        ):
            source = f"__s{i}"
        if kind is PartialKind.SET:
            return (source, *sets.AGGREGATION)
        if kind is PartialKind.COUNT_ALL:
            return (source, "count", pc.CountOptions(mode="all"))
        if kind is PartialKind.COUNT:
            return (source, "count", pc.CountOptions(mode="only_valid"))
        return (source, _MERGE[kind])

    def result(self, state: pa.Table) -> pa.Table:
        """The query's result from a state: its outputs, ordered and sliced."""
        arrays = []
        width = len(self.keys)  # the state's columns: the keys, then the partials
        for output, field in zip(self.outputs, self.schema, strict=True):
            if output.kind is OutputKind.KEY:
                value = state.column(output.index)
            elif output.kind is OutputKind.PARTIAL:
                value = state.column(width + output.index)
            elif output.kind is OutputKind.LENGTH:
                value = sets.length(state.column(width + output.index))
            elif output.kind is OutputKind.COUNT:
                value = self._counts.count(state.column(width + output.index), output.index)
            elif output.kind is OutputKind.EXACT_AVG:
                value = _exact_avg(state, output)
            else:
                # a group whose count is 0 has a null sum (a sum of no values): the
                # quotient is null there, as DuckDB's avg (the count's int64 is divided
                # as a double)
                total = _as(state.column(width + output.index), pa.float64())
                value = divided(total, state.column(width + output.count))
            arrays.append(_as(value, field.type))
        table = pa.Table.from_arrays(arrays, names=list(self.names))  # names may repeat
        if self.order:
            ordered = pa.Table.from_arrays(
                [arrays[i] for i, _ in self.order], names=[f"__o{i}" for i, _ in self.order]
            )
            indices = pc.sort_indices(
                ordered,
                sort_keys=[
                    (f"__o{i}", "descending" if desc else "ascending") for i, desc in self.order
                ],
            )  # nulls last, pyarrow's default and DuckDB's for either direction
            table = table.take(indices)
        if self.offset or self.limit is not None:
            table = table.slice(self.offset, self.limit)
        return table


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
    try:
        return quotients(state[f"__p{output.index}"], state[f"__p{output.count}"], output.bits)
    except Inexact as exc:
        raise TypeError(str(exc)) from exc


def sum_terms(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """What a sum of ``values`` adds up: exact terms for integers and decimals (like
    DuckDB's HUGEINT and DECIMAL(38, s)), doubles for FLOAT (DuckDB sums FLOAT as
    DOUBLE)."""
    if pa.types.is_floating(values.type):
        return pc.cast(values, pa.float64())
    return exact_terms(values)


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


def _as(values: pa.ChunkedArray | pa.Array, kind: pa.DataType) -> pa.ChunkedArray | pa.Array:
    """``values`` cast to ``kind`` (as they are when they have that type)."""
    return values if values.type == kind else pc.cast(values, kind)


def _aggregate(table: pa.Table, keys: list[str], aggregations: list[tuple[Any, ...]]) -> pa.Table:
    """Group by ``keys`` (none: one row for the whole table); keys first, then the
    aggregates in the order asked."""
    result = table.group_by(keys, use_threads=False).aggregate(aggregations)
    width = len(aggregations)
    names = result.column_names
    if names[: len(keys)] == keys:  # pyarrow puts the keys first (older ones: last)
        return result
    return result.select(names[width:] + names[:width])


def _field(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """The field ``name`` of a struct column (no kernel: each chunk's child array)."""
    return pa.chunked_array([chunk.field(name) for chunk in column.chunks], column.type[name].type)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns, in order, under ``schema``'s names and types."""
    if table.schema == schema:
        return table
    return _typed(table.columns, schema)


def _typed(columns: list[pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    """A table of ``columns``, in order, under ``schema``'s names and types."""
    arrays = [_as(column, field.type) for column, field in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)
