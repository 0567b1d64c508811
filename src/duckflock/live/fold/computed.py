"""The new rows' partials computed in pyarrow, instead of the row-by-row merge's DuckDB query.

A DuckDB query over 10,000 new rows costs ~1.5 ms even on the detached instance; the
same keys and partials in pyarrow cost a few hundred microseconds. :class:`Computed` is
a small program — key expressions, a WHERE, and per partial an aggregate of an
expression with an optional FILTER — that :mod:`duckflock.live.plan.computing` compiles
from the partials query's own syntax tree and admits only after DuckDB ran that query
over probe rows and the program gave the same table, bit for bit.

What the probes cannot cover is checked per batch, and such a batch goes to DuckDB's
query (:func:`duckflock.live.fold.merges.fold`), never to a guess: a NaN or -0.0 in a
floating column the program reads (DuckDB orders NaN above every number and -0.0 equal
to 0.0), a non-ASCII string under ``upper``/``lower`` (Unicode case rules), an integer
that overflows (checked kernels raise where DuckDB raises), and a tie on an ordered
``first``/``last``'s ORDER BY within a group (which of the tied rows DuckDB's sort keeps
is not proven: with no tie there is one winner, whatever the rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import sketches
from duckflock.live.fold.arrow import sum_terms
from duckflock.live.fold.nans import unlike_duckdb

# an expression over the new rows: an array per row, or a scalar (a constant)
Value: TypeAlias = pa.ChunkedArray | pa.Array | pa.Scalar
Expression = Callable[[pa.Table], Value]


class Refused(Exception):
    """This batch holds a value the program does not compute as DuckDB does."""


@dataclass(frozen=True)
class Aggregate:
    """One partial: ``function`` (count_star, count, sum, min, max, bool_and, bool_or,
    arg_max, arg_min, first, last; approx_count_distinct: its exported sketch, of an
    integer) of ``argument`` (None for count_star) over the rows where ``filter`` is true."""

    function: str
    argument: Expression | None
    filter: Expression | None
    # arg_max/arg_min: the ordering key; the argument of the first row (in the new
    # rows' order) whose key is the greatest/least wins, as DuckDB's single-threaded
    # scan keeps the first it sees on a tie. first/last: the ORDER BY's expression
    by: Expression | None = None
    # the order ranked (arg_max: descending; first/last: their ORDER BY's); a NULL key
    # is a candidate of first/last only, where NULLs come first or last
    descending: bool = False
    nulls_first: bool = False
    # the ordering key's canonical text: one ranking (and tie check) per ordering
    order: str = ""


# pyarrow's grouped aggregation for each SQL aggregate, with its options
_FUNCTIONS: dict[str, tuple[str, Any]] = {
    "count_star": ("count", pc.CountOptions(mode="only_valid")),
    "count": ("count", pc.CountOptions(mode="only_valid")),
    "sum": ("sum", None),
    "min": ("min", None),
    "max": ("max", None),
    "bool_and": ("all", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "bool_or": ("any", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
    "arg_max": ("min", None),  # of the candidates' ranks (Computed.partials)
    "arg_min": ("min", None),
    "first": ("min", None),  # the least rank in its ORDER BY
    "last": ("max", None),  # the greatest (no tie: one row has it)
    # its EXPORT_STATE: each value's (register, rank) once per group (fold/sketches.py)
    "approx_count_distinct": ("distinct", pc.CountOptions(mode="only_valid")),
}
FUNCTIONS = frozenset(_FUNCTIONS)
ORDERED = frozenset({"first", "last"})  # a batch with a tie in their ORDER BY is refused
TIES = "first"  # arg_max/arg_min: of rows with equal keys, the first in the new rows wins


@dataclass(frozen=True)
class Computed:
    """The partials query of one shape, as a pyarrow program (module docstring)."""

    keys: tuple[Expression, ...]
    where: Expression | None
    aggregates: tuple[Aggregate, ...]
    floating: tuple[str, ...]  # the floating columns it reads: no NaN or -0.0 per batch

    def partials(self, delta: pa.Table, schema: pa.Schema) -> pa.Table:
        """The new rows' keys and partials, one row per group, in ``schema`` (the
        state's). Raises :class:`Refused` (or a pyarrow error) where DuckDB computes
        this batch instead."""
        rows = self.selected(delta)
        count = rows.num_rows
        names = [f"__k{i}" for i in range(len(self.keys))]
        columns = [each_row(key(rows), count) for key in self.keys]
        aggregations: list[tuple[Any, ...]] = []
        # arg_max/arg_min/first/last's: (argument, the rows in their order's)
        picked: dict[int, tuple[pa.ChunkedArray | pa.Array, pa.Array]] = {}
        orders: dict[tuple[str, bool, bool], _Ranked] = {}  # each ordering ranked once
        for i, aggregate in enumerate(self.aggregates):
            if aggregate.argument is None:  # count(*): a value on every counted row
                values: Value = pa.repeat(pa.scalar(True), count)
            else:
                values = each_row(aggregate.argument(rows), count)
            chosen = None if aggregate.filter is None else true(aggregate.filter(rows), count)
            if aggregate.by is not None:
                ordering = (aggregate.order, aggregate.descending, aggregate.nulls_first)
                if ordering not in orders:
                    orders[ordering] = _Ranked(aggregate, rows, count)
                ranked = orders[ordering]
                if aggregate.function in ORDERED and ranked.tied(columns[: len(self.keys)]):
                    raise Refused("a tie in first/last's ORDER BY within a group")
                picked[i] = (values, ranked.rows)
                values = ranked.candidates(aggregate, values, chosen)
            elif chosen is not None:
                values = pc.if_else(chosen, values, None)
            if aggregate.function == "sum":
                values = sum_terms(values)
            if aggregate.function == "approx_count_distinct":
                values = sketches.codes(values)
            function, options = _FUNCTIONS[aggregate.function]
            names.append(f"__a{i}")
            columns.append(values)
            aggregations.append((f"__a{i}", function, options))
        table = pa.Table.from_arrays(columns, names=names)
        grouped = table.group_by(names[: len(self.keys)], use_threads=False).aggregate(aggregations)
        keys = [f"__k{i}" for i in range(len(self.keys))]
        ordered = keys + [f"__a{i}_{a[1]}" for i, a in enumerate(aggregations)]
        if set(ordered) != set(grouped.column_names):  # another pyarrow's names
            raise Refused(f"pyarrow named the aggregates {grouped.column_names}")
        arrays = [grouped[name] for name in ordered]
        for i, (values, by_rank) in picked.items():  # a group's winning rank: its row
            winner = pc.subtract(arrays[len(keys) + i], pa.scalar(1, pa.uint64()))
            arrays[len(keys) + i] = pc.take(values, pc.take(by_rank, winner))
        for i, aggregate in enumerate(self.aggregates):
            if aggregate.function == "approx_count_distinct":
                arrays[len(keys) + i] = sketches.gathered(arrays[len(keys) + i])
        return pa.Table.from_arrays(
            [pc.cast(array, field.type) for array, field in zip(arrays, schema, strict=True)],
            schema=schema,
        )

    def selected(self, delta: pa.Table) -> pa.Table:
        """The rows of ``delta`` its WHERE keeps; :class:`Refused` where a floating
        column it reads holds NaN or -0.0."""
        for name in self.floating:
            if any(unlike_duckdb(chunk) for chunk in delta[name].chunks):
                raise Refused(f"NaN or -0.0 in {name}")
        if self.where is None:
            return delta
        return delta.filter(true(self.where(delta), delta.num_rows))

    def untied(self, rows: pa.Table) -> pa.Table:
        """``rows`` without those that tie an earlier one on a first/last's ORDER BY
        within their group: probe rows that :meth:`partials` does not refuse."""
        for by in {a.order: a.by for a in self.aggregates if a.function in ORDERED}.values():
            assert by is not None
            count = rows.num_rows
            columns = [each_row(key(rows), count) for key in (*self.keys, by)]
            names = [f"__c{i}" for i in range(len(columns))]
            index = pa.array(range(count), pa.int64())
            table = pa.Table.from_arrays([*columns, index], names=[*names, "__i"])
            kept = table.group_by(names, use_threads=False).aggregate([("__i", "min")])
            rows = rows.take(pc.take(kept["__i_min"], pc.sort_indices(kept["__i_min"])))
        return rows


class _Ranked:
    """The new rows in one ordering (a winner's key, its direction and NULLs' place):
    each row's place (1…, ties in the rows' order: :data:`TIES`) and the rows by place."""

    def __init__(self, aggregate: Aggregate, rows: pa.Table, count: int) -> None:
        assert aggregate.by is not None
        key = each_row(aggregate.by(rows), count)
        self.key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
        order = "descending" if aggregate.descending else "ascending"
        nulls = "at_start" if aggregate.nulls_first else "at_end"
        self.ranks = pc.rank(self.key, sort_keys=[("", order, nulls)], tiebreaker=TIES)
        self.rows = pc.sort_indices(self.ranks)  # the row at each place
        self._tied: bool | None = None

    def candidates(
        self,
        aggregate: Aggregate,
        values: pa.ChunkedArray | pa.Array,
        chosen: pa.ChunkedArray | pa.Array | None,
    ) -> pa.Array:
        """The ranks, NULL but on candidate rows: FILTER (``chosen``) true and, for
        arg_max/arg_min, neither key nor argument ``values`` NULL (DuckDB skips those)."""
        candidate = chosen
        if aggregate.function not in ORDERED:
            valid = pc.and_(pc.is_valid(self.key), pc.is_valid(values))
            candidate = valid if chosen is None else pc.and_(valid, chosen)
        return self.ranks if candidate is None else pc.if_else(candidate, self.ranks, None)

    def tied(self, keys: list[pa.ChunkedArray | pa.Array]) -> bool:
        """Whether two rows of one group (by ``keys``) have equal keys, two NULLs
        included: first looked for among all rows (adjacent in the order), and only
        where some tie, by group."""
        if self._tied is None:
            key, count = self.key, len(self.key)
            near = pc.take(key, self.rows)
            self._tied = key.null_count > 1 or bool(
                count > 1 and pc.any(pc.equal(near.slice(1), near.slice(0, count - 1))).as_py()
            )
            if self._tied:
                names = [f"__c{i}" for i in range(len(keys) + 1)]
                table = pa.Table.from_arrays([*keys, key], names=names)
                distinct = table.group_by(names, use_threads=False).aggregate([])
                self._tied = distinct.num_rows < count
        return self._tied


def each_row(value: Value, count: int) -> pa.ChunkedArray | pa.Array:
    """``value`` as one value per row (a constant repeated)."""
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, count)
    return value


def true(value: Value, count: int) -> pa.ChunkedArray | pa.Array:
    """Where a condition is true (NULL: not), as WHERE and FILTER read it."""
    values = each_row(value, count)
    return (
        values
        if values.type == pa.bool_() and not values.null_count
        else pc.fill_null(values, False)
    )
