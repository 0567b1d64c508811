"""A computed program's partials per state row, in numpy, without grouping the new rows.

Each pyarrow kernel a refresh calls costs tens of microseconds cold, and a ``group_by``
(an Acero plan) ~0.5 ms, more than the work over 10,000 rows. Where the state is small
(one row per group, at most :data:`~duckflock.live.fold.dense.MAX_GROUPS` and not past
the new rows' count) and the new rows land only in groups it has, :func:`partials`
gives the new rows' partials of a :class:`~duckflock.live.fold.computed.Computed`
program *aligned to the state's rows* (row ``i``: the state's group ``i``; no new row
there: count 0, every other partial NULL), as :func:`~duckflock.live.fold.dense.fold`
does for the plain shape:

1. the program's keys are looked up among the state's (``index_in``: the equality
   :func:`~duckflock.live.fold.merges.merged` uses; several keys as one code per row,
   each key's code the position of its first equal value in the state);
2. per partial, over the rows its FILTER keeps: counts by ``numpy.bincount``, FLOAT and
   DOUBLE sums by ``bincount`` with weights (in row order from 0.0: pyarrow's grouped
   sum's bits, tests/test_dense.py), min/max by ``minimum.at``/``maximum.at`` of the
   values' physical numbers (integers, floats, times), bool_and/bool_or by counting the
   false/true values, and arg_max/arg_min's winner as the first row (in the new rows'
   order, :data:`~duckflock.live.fold.computed.TIES`) whose ordering key is the
   group's greatest/least.

The caller merges them with the state row by row, as it merges grouped partials
(:func:`~duckflock.live.fold.merges._combined`): an untouched group's partials are what
its merge keeps the state's for. Where a step does not apply — a new group, exact
(integer, decimal) sums, values numpy does not order as DuckDB does (strings,
booleans as a min/max), NaN or -0.0 in a floating value it reads, ordered first/last,
sketches — it returns None and the grouped path runs. So it does where a floating
partial would hold NaN (a sum of inf and -inf) or a winner NaN or -0.0: the caller
need not check the partials it returns. A FILTER or argument several aggregates share
is evaluated once per batch, and a floating column the WHERE-less program's NaN check
read (:meth:`~duckflock.live.fold.computed.Computed.selected`) is not read again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.computed import Aggregate, Computed, Expression, each_row, true
from duckflock.live.fold.dense import MAX_GROUPS, KeyIndex
from duckflock.live.fold.nans import Clean, unlike_duckdb
from duckflock.live.fold.physical import numbers, single, typed

# the aggregates :func:`partials` computes (others: None, the grouped path)
FOLDED = frozenset(
    {"count_star", "count", "sum", "min", "max", "bool_and", "bool_or", "arg_max", "arg_min"}
)
# several keys: the codes (one per combination of the state's key values) past which
# the lookup table is not built (the grouped path runs)
MAX_CODES = 1 << 20


def partials(
    program: Computed, state: pa.Table, keys: int, delta: pa.Table, index: KeyIndex | None = None
) -> pa.Table | None:
    """The partials of ``delta``'s rows per row of ``state`` (whose first ``keys``
    columns are its keys, one row per group), in its schema; None where this does not
    apply (module docstring). ``index``: the state's key's lookup table, kept by the
    caller (one integer key). Raises :class:`~duckflock.live.fold.computed.Refused` (or
    a pyarrow error) where the program refuses the batch."""
    groups = state.num_rows
    if not 0 < groups <= min(MAX_GROUPS, delta.num_rows):
        return None
    for i, aggregate in enumerate(program.aggregates):
        if aggregate.function not in FOLDED:
            return None
        if aggregate.function == "sum" and state.schema.field(keys + i).type != pa.float64():
            return None  # an exact sum (HUGEINT, DECIMAL): grouped, merged in decimal256
    rows = program.selected(delta)
    count = rows.num_rows
    values = [
        _as(single(each_row(key(rows), count)), state.schema.field(i).type)
        for i, key in enumerate(program.keys)
    ]
    at = _positions([single(state.column(i)) for i in range(keys)], values, index)
    if at is None:
        return None
    columns: list[pa.Array | pa.ChunkedArray] = list(state.columns[:keys])
    batch = _Batch(rows, count, at, groups)
    if program.where is None:  # the rows themselves: selected() checked their floats
        batch.checked.keep([c for name in program.floating for c in delta[name].chunks])
    for i, aggregate in enumerate(program.aggregates):
        kind = state.schema.field(keys + i).type
        column = _Partial(aggregate, batch).array()
        if column is None:
            return None
        columns.append(column if column.type == kind else pc.cast(column, kind))
    return pa.Table.from_arrays(columns, schema=state.schema)


def _positions(
    state: Sequence[pa.Array], new: Sequence[pa.Array], index: KeyIndex | None = None
) -> np.ndarray | None:
    """Per new row, the state row with its key values (NULL matches NULL, as GROUP BY
    groups); None where one has none (a new group) or the codes would not fit. One
    integer key without NULL is looked up in ``index`` (:class:`~.dense.KeyIndex`)."""
    if len(state) == 1:
        at = None if index is None else index.positions(state[0], new[0])
        if at is not None:
            return None if bool((at == len(state[0])).any()) else at
        found = pc.index_in(new[0], value_set=state[0])
        return None if found.null_count else found.to_numpy()
    groups = len(state[0])
    if groups ** len(state) > MAX_CODES:
        return None
    own = np.zeros(groups, np.int64)  # each state row's code
    code = np.zeros(len(new[0]), np.int64)  # each new row's
    for column, values in zip(state, new, strict=True):
        found = pc.index_in(values, value_set=column)
        if found.null_count:
            return None
        first = pc.index_in(column, value_set=column).to_numpy()  # its first equal row
        own = own * groups + first
        code = code * groups + found.to_numpy()
    row = np.full(groups ** len(state), -1, np.int64)
    row[own] = np.arange(groups)
    if not bool((row[own] == np.arange(groups)).all()):  # two state rows of one group
        return None
    at = row[code]
    return None if bool((at < 0).any()) else at


class _Batch:
    """The new rows and their state rows, with what several partials read computed once
    per batch: an expression's values (one FILTER or argument written by several
    aggregates is one compiled object), a FILTER's flags, a mask's count per group."""

    def __init__(self, rows: pa.Table, count: int, at: np.ndarray, groups: int) -> None:
        self.rows, self.count, self.at, self.groups = rows, count, at, groups
        # by the id of the expression (mask) computed: each is held here, its id not reused
        self._values: dict[int, tuple[Expression, pa.Array]] = {}
        self._flags: dict[int, tuple[Expression, np.ndarray]] = {}
        self._tallies: dict[int, tuple[np.ndarray | None, np.ndarray]] = {}
        self.checked = Clean()  # the new rows' chunks found free of NaN and -0.0

    def unlike_duckdb(self, values: pa.Array) -> bool:
        """:func:`~.nans.unlike_duckdb`, at once for a column checked already."""
        return not self.checked.holds(values) and unlike_duckdb(values)

    def values(self, expression: Expression) -> pa.Array:
        """``expression``'s value per new row, as one array."""
        found = self._values.get(id(expression))
        if found is None:
            found = (expression, single(each_row(expression(self.rows), self.count)))
            self._values[id(expression)] = found
        return found[1]

    def chosen(self, condition: Expression | None) -> np.ndarray | None:
        """The rows a FILTER ``condition`` keeps (None: no FILTER, every row)."""
        if condition is None:
            return None
        found = self._flags.get(id(condition))
        if found is None:
            found = (condition, _flags(single(true(self.values(condition), self.count))))
            self._flags[id(condition)] = found
        return found[1]

    def tally(self, kept: np.ndarray | None) -> np.ndarray:
        """Per group, how many new rows ``kept`` marks (None: all)."""
        found = self._tallies.get(id(kept))
        if found is None:
            if kept is None:
                counted = np.bincount(self.at, minlength=self.groups)
            else:
                counted = np.bincount(self.at, kept, minlength=self.groups).astype(np.int64)
            found = (kept, counted)
            self._tallies[id(kept)] = found
        return found[1]


class _Partial:
    """One aggregate of the new rows per state row (:meth:`array`)."""

    def __init__(self, aggregate: Aggregate, batch: _Batch) -> None:
        self.aggregate, self.batch = aggregate, batch
        self.count, self.at, self.groups = batch.count, batch.at, batch.groups
        self.chosen = batch.chosen(aggregate.filter)

    def array(self) -> pa.Array | None:
        """The partial, or None where numpy does not compute it as the program does."""
        function, aggregate = self.aggregate.function, self.aggregate
        if aggregate.argument is None:  # count(*)
            return pa.array(self._tally(self.chosen), pa.int64())
        argument = self.batch.values(aggregate.argument)
        kept = _and(self.chosen, _valid(argument))
        if function == "count":
            return pa.array(self._tally(kept), pa.int64())
        if function in ("bool_and", "bool_or"):
            return self._boolean(argument, kept)
        if function in ("arg_max", "arg_min"):
            return self._winner(argument, kept)
        physical = numbers(argument)
        if physical is None or self.batch.unlike_duckdb(argument):
            return None
        has = self._tally(kept) > 0
        if function == "sum":  # DOUBLE sums (FLOAT as DOUBLE); exact ones are grouped
            if not pa.types.is_floating(argument.type):
                return None
            # a left-out row adds 0.0: a sum from 0.0 is never -0.0, so x + 0.0 is x
            weights = _where(kept, physical.astype(np.float64), 0.0)
            sums = np.bincount(self.at, weights, minlength=self.groups)
            if np.isnan(sums).any():  # inf + -inf (from 0.0 a sum is never -0.0)
                return None
            return pa.array(sums, pa.float64(), mask=~has)
        greatest = function == "max"
        extreme = _extreme(physical.dtype, greatest, self.groups)
        start = extreme[:1]  # a left-out row's value: the start changes no max (min)
        (np.maximum if greatest else np.minimum).at(extreme, self.at, _where(kept, physical, start))
        return typed(extreme, has, argument.type)

    def _boolean(self, argument: pa.Array, kept: np.ndarray | None) -> pa.Array | None:
        """bool_and (no false value) or bool_or (a true one); NULL with no value."""
        if argument.type != pa.bool_():
            return None
        flags = _flags(argument)
        has = self._tally(kept) > 0
        if self.aggregate.function == "bool_and":
            result = self._tally(_and(kept, ~flags)) == 0
        else:
            result = self._tally(_and(kept, flags)) > 0
        return pa.array(result, pa.bool_(), mask=~has)

    def _winner(self, argument: pa.Array, kept: np.ndarray | None) -> pa.Array | None:
        """arg_max/arg_min: the argument of the first candidate row (FILTER true, key
        and argument not NULL) whose key is its group's greatest/least."""
        assert self.aggregate.by is not None
        key = self.batch.values(self.aggregate.by)
        physical = numbers(key)
        if physical is None or self.batch.unlike_duckdb(key):
            return None
        candidate = _and(kept, _valid(key))
        greatest = self.aggregate.function == "arg_max"
        best = _extreme(physical.dtype, greatest, self.groups)
        found = _where(candidate, physical, best[:1])
        (np.maximum if greatest else np.minimum).at(best, self.at, found)
        hit = found == best[self.at]
        if candidate is not None:
            hit &= candidate
        first = np.full(self.groups, self.count, np.int64)
        np.minimum.at(first, self.at, np.where(hit, np.arange(self.count), self.count))
        has = first < self.count
        taken = pa.array(np.where(has, first, 0), pa.int64(), mask=~has)
        won = argument.take(taken)
        return None if self.batch.unlike_duckdb(won) else won

    def _tally(self, kept: np.ndarray | None) -> np.ndarray:
        return self.batch.tally(kept)


def _where(kept: np.ndarray | None, values: np.ndarray, other: np.ndarray | float) -> np.ndarray:
    """``values`` where ``kept`` (None: everywhere), else ``other``."""
    return values if kept is None else np.where(kept, values, other)


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Two row masks (None: every row) combined."""
    if a is None:
        return b
    return a if b is None else a & b


def _valid(values: pa.Array) -> np.ndarray | None:
    """Where ``values`` is not NULL (None: everywhere)."""
    if not values.null_count:
        return None
    bitmap = values.buffers()[0]
    if bitmap is None:  # a NULL constant: NULL everywhere
        return np.zeros(len(values), bool)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return bits[values.offset : values.offset + len(values)].astype(bool)


def _flags(values: pa.Array) -> np.ndarray:
    """A boolean array's values (NULL as false: WHERE and FILTER read it so)."""
    if values.type != pa.bool_():
        raise TypeError(f"a condition of type {values.type}")
    if values.null_count:
        values = pc.fill_null(values, False)
    data = values.buffers()[1]
    if data is None:
        raise TypeError("a condition without values")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    return bits[values.offset : values.offset + len(values)].astype(bool)


def _extreme(dtype: np.dtype, greatest: bool, groups: int) -> np.ndarray:
    """Per group, the start of a max (the least value of ``dtype``) or of a min (the
    greatest)."""
    if dtype.kind == "f":
        start: float | int = -np.inf if greatest else np.inf
    else:
        start = np.iinfo(dtype).min if greatest else np.iinfo(dtype).max
    return np.full(groups, start, dtype)


def _as(values: pa.Array, kind: pa.DataType) -> pa.Array:
    """``values`` cast to ``kind`` (as they are when they have that type)."""
    return values if values.type == kind else pc.cast(values, kind)
