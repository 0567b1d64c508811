"""Retention deletes: subtract the rows a DELETE removed from incremental states.

The rows come from the write path (:mod:`duckflock.live.fold.capture`), ordered against
db.insert commits and against the snapshot an analysis pins when it (re)builds: a row
deleted after a state's snapshot is subtracted from it, one deleted before is not in it.

A refresh then folds the appended rows in as usual and *retracts* the deleted ones:

- count(*), count(x) and the exact sum(x) (integers as HUGEINT, DECIMAL; also avg's
  two) are invertible: the deleted rows' partials are subtracted, group by group.
  Every incremental state keeps a hidden count(*) (a group whose rows are all gone
  disappears, as in a full run) and a count(x) beside each sum(x) (a sum whose values
  are all gone is NULL, not 0);
- min/max are not: a group whose deleted rows reached its min (max) is recomputed from
  the table, at a snapshot pinned together with the deltas it takes (so the group is
  exact, with no row counted twice). So is a FLOAT/DOUBLE sum (and avg) that deleted
  rows touch: subtraction is not the inverse of floating addition (1e16 + 1 - 1e16 is
  0, not 1; NaN and infinity never come back out). So is every group deleted rows
  touch when a key's equal values differ in form (-0.0 and 0.0, '30 days' and
  '720 hours', 'a' and 'A' under NOCASE): the group shows its first row's form, as a
  full run does, and that row may be the one deleted.

Anything that cannot be captured this way — a DELETE inside an explicit transaction,
several statements, ``executemany``, ``EXPLAIN ANALYZE``, a DELETE that has its own
``RETURNING``, a temporary table of the same name, more deleted rows than an analysis
keeps between refreshes, any other aggregate — keeps the old behaviour: the analyses on
that table rebuild from the whole table.

The queries are planned once (:mod:`duckflock.live.fold.retraction`); this module runs
them, or their pyarrow equivalent, on each refresh.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold import segments, unscaled
from duckflock.live.fold.arrow import ArrowPlan, exact_sum_type, exact_terms
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.retraction import Retraction, Retracts
from duckflock.live.fold.states import PartialKind

# -- the refresh: subtract, then recompute what subtraction cannot --------------------


def retract(
    cursor: duckdb.DuckDBPyConnection,
    retraction: Retraction,
    state: pa.Table,
    deleted: pa.Table | list[pa.Table],
    arrow: ArrowPlan | None = None,
    slot: segments.Slot | None = None,
    *,
    settle: bool = True,
) -> pa.Table | None:
    """``state`` without ``deleted``'s rows (a table, or the tables of several DELETEs in
    order). Groups that subtraction cannot settle are
    recomputed on ``cursor``, inside the transaction whose snapshot matches the state
    (see :class:`duckflock.live.refresh.Refresher`); with ``settle=False`` there is no
    such transaction, and None says one is needed. Floating sums kept per segment
    (``slot``, :mod:`duckflock.live.fold.segments`) re-read only the segments cut.

    Where the state's keys and partials are plain columns (``retraction.sources``),
    pyarrow aggregates the deleted rows and subtracts them (a DuckDB query over Arrow
    input costs ~10x longer): always for an exact retraction (counts and exact sums,
    grouped by keys pyarrow and DuckDB group alike: not floating, collated or interval
    keys, which make a retraction inexact); with min/max or floating sums only for a
    plain shape (``arrow``, :mod:`duckflock.live.fold.arrow`) without NaN, where the two
    disagree. Anything pyarrow refuses (a nested key, a sum that overflows) goes to
    DuckDB's query. The deleted rows' partials are usually aggregated already, when
    their DELETE captured them (:func:`prepare`).
    """
    pieces = deleted if isinstance(deleted, list) else [deleted]
    whole: list[pa.Table] = []  # the deleted rows in one table, made when asked for

    def rows() -> pa.Table:
        if not whole:
            whole.append(pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces))
        return whole[0]

    out = None
    if retraction.sources is not None and (
        retraction.exact or (arrow is not None and not arrow.has_nan(state, rows()))
    ):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            grouped = [_partials_of(retraction, piece) for piece in pieces]
            if len(grouped) == 1 and retraction.exact and retraction.keys == 1:
                settled = unscaled.subtract(
                    state, grouped[0], retraction.kinds, retraction.counts, retraction.rows
                )
                if settled is not None:
                    return settled  # every group settled, in int64s
            partials = [
                _arrow_partials(retraction, piece, state.schema, done)
                for piece, done in zip(pieces, grouped, strict=True)
            ]
            if len(partials) == 1 and retraction.exact:
                settled = _subtract_by_position(retraction, state, partials[0])
                if settled is not None:
                    return settled  # every group settled
            out = _arrow_subtract(retraction, state, pa.concat_tables(partials))
    if out is None:
        out = over_arrow(cursor, retraction.subtract, state, rows(), None)
    again = pc.fill_null(out["__again"], True)
    kept = out.filter(pc.invert(again)).drop_columns(["__again"])
    if not pc.any(again).as_py():
        return _conform(kept, state.schema)
    if not settle:
        return None
    if slot is not None:  # floating sums from the segments they are kept in, if any
        done = segments.retracting(cursor, retraction, slot, state, out, pieces)
        if done is not None:
            settled, slot.kept = _conform(done[0], state.schema), done[1]
            if slot.kept is not None:
                slot.kept.state = weakref.ref(settled)
            return settled
    flagged = out.filter(again)
    if flagged.num_rows == out.num_rows and retraction.recompute_all:
        # every group (a DELETE of the oldest rows, say): one scan, no join of the keys
        return _conform(over_arrow(cursor, retraction.recompute_all, state), state.schema)
    keys = flagged.select([f"__k{i}" for i in range(retraction.keys)])
    recomputed = over_arrow(cursor, retraction.recompute, state, rows(), keys)
    return pa.concat_tables([_conform(kept, state.schema), _conform(recomputed, state.schema)])


# -- the deleted rows' partials, aggregated when their DELETE captured them ------------
#
# id(rows) -> (a weak reference to rows, {grouping: partials}); an entry leaves with its
# rows (weakref.finalize), so an id is never another table's while it is here
_PREPARED: dict[int, tuple[weakref.ref[pa.Table], dict[tuple[Any, ...], pa.Table]]] = {}
# guards _PREPARED: DELETE callers write, refreshes read; reentrant, as a collection
# inside a hold may run a finalizer (_forget) on the same thread
_PREPARED_LOCK = threading.RLock()


def _grouping(retraction: Retraction) -> tuple[Any, ...]:
    """What a retraction's grouped partials depend on (analyses alike share them)."""
    return (retraction.key_columns, retraction.sources, retraction.kinds)


def prepare(rows: pa.Table, retractions: Iterable[Retraction]) -> None:
    """Aggregate the rows a DELETE captured, per group, for each of ``retractions`` that
    pyarrow subtracts (the plans of the analyses reading the table), on the DELETE's
    caller's thread before its commit: a refresh then subtracts as many partials as the
    rows touch groups, whatever the number of rows deleted. Where this fails, or a plan
    changed meanwhile, the refresh aggregates the rows itself (the same function)."""
    done: dict[tuple[Any, ...], pa.Table] = {}
    for retraction in retractions:
        grouping = _grouping(retraction)
        if retraction.sources is None or grouping in done:
            continue
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            done[grouping] = _grouped(retraction, rows)
            if retraction.exact and retraction.keys == 1:  # subtracted in int64s
                unscaled.read_ahead(done[grouping], retraction.kinds, retraction.counts)
    if not done:
        return
    with _PREPARED_LOCK:
        _PREPARED[id(rows)] = (weakref.ref(rows), done)
    weakref.finalize(rows, _forget, id(rows))


def _forget(key: int) -> None:
    with _PREPARED_LOCK:
        _PREPARED.pop(key, None)


def _prepared(retraction: Retraction, rows: pa.Table) -> pa.Table | None:
    with _PREPARED_LOCK:
        found = _PREPARED.get(id(rows))
    if found is None or found[0]() is not rows:
        return None
    return found[1].get(_grouping(retraction))


def _partials_of(retraction: Retraction, rows: pa.Table) -> pa.Table:
    """:func:`_grouped` of ``rows``, or what :func:`prepare` kept of it."""
    grouped = _prepared(retraction, rows)
    return _grouped(retraction, rows) if grouped is None else grouped


def _arrow_partials(
    retraction: Retraction, rows: pa.Table, schema: pa.Schema, grouped: pa.Table | None = None
) -> pa.Table:
    """The partials of ``rows`` per group (``grouped``, else :func:`_partials_of`), as
    the state's columns (what the state's build computes), in the state's types — but
    exact sums widened to ``decimal256`` for the subtraction, which goes back to the
    state's type with a check."""
    if grouped is None:
        grouped = _partials_of(retraction, rows)
    kinds = [field.type for field in schema]
    for i, kind in enumerate(retraction.kinds):  # exact sums stay decimal256 until the end
        at = retraction.keys + i
        if kind is Retracts.SUM and pa.types.is_decimal(kinds[at]):
            kinds[at] = exact_sum_type(kinds[at])
    return pa.Table.from_arrays(
        [c if c.type == t else pc.cast(c, t) for c, t in zip(grouped.columns, kinds, strict=True)],
        names=schema.names,
    )


def _grouped(retraction: Retraction, rows: pa.Table) -> pa.Table:
    """The partials of ``rows`` per group: the keys, then one column per partial, in
    the types pyarrow summed them in. Sums of integers and decimals are exact: summed in
    a type that cannot overflow (``arrow.exact_terms``). A partial asked twice (avg's
    sum beside a sum of the same column) is aggregated once."""
    assert retraction.sources is not None and retraction.key_columns is not None
    named: dict[str, str] = {str(n).lower(): str(n) for n in rows.column_names}  # as bound

    def named_as(column: str) -> str:
        if column.lower() not in named:
            raise TypeError(f"no column {column!r} among the deleted rows'")
        return named[column.lower()]

    aggregations: list[tuple[Any, ...]] = []
    index: dict[tuple[PartialKind, str], int] = {}  # (partial, source) -> aggregation
    picks: list[int] = []
    for i, (retracts, column) in enumerate(zip(retraction.kinds, retraction.sources, strict=True)):
        source = named_as(column) if column is not None else rows.column_names[0]  # count(*)
        # pyarrow's aggregate (a Retracts value names one)
        partial = PartialKind.COUNT_ALL if column is None else PartialKind(str(retracts))
        if partial is PartialKind.COUNT and not rows[source].null_count:
            partial, source = PartialKind.COUNT_ALL, rows.column_names[0]  # count(*)'s
        if (partial, source) not in index:
            values = rows[source]
            name = source
            if partial is PartialKind.SUM and not pa.types.is_floating(values.type):
                name = f"__s{i}"
                rows = rows.append_column(name, exact_terms(values))
            elif partial is PartialKind.SUM and values.type != pa.float64():
                name = f"__s{i}"  # DuckDB sums FLOAT as DOUBLE
                rows = rows.append_column(name, pc.cast(values, pa.float64()))
            if partial is PartialKind.COUNT_ALL:
                aggregations.append((name, "count", pc.CountOptions(mode="all")))
            elif partial is PartialKind.COUNT:
                aggregations.append((name, "count", pc.CountOptions(mode="only_valid")))
            else:
                aggregations.append((name, str(partial)))
            index[(partial, source)] = len(aggregations) - 1
        picks.append(index[(partial, source)])
    keys = [named_as(column) for column in retraction.key_columns]
    grouped = rows.group_by(keys, use_threads=False).aggregate(aggregations)
    names = grouped.column_names
    width = len(aggregations)
    if names[: len(keys)] == keys:  # pyarrow puts the keys first (older ones: last)
        key_columns, values_at = grouped.columns[: len(keys)], len(keys)
    else:
        key_columns, values_at = grouped.columns[width:], 0
    columns = list(key_columns) + [grouped.column(values_at + pick) for pick in picks]
    return pa.Table.from_arrays(columns, names=[f"__c{i}" for i in range(len(columns))])


def _subtract_by_position(
    retraction: Retraction, state: pa.Table, partials: pa.Table
) -> pa.Table | None:
    """The new state, as :func:`_arrow_subtract` computes it for an exact retraction with
    one key (every group settled), by looking each state group up among the deleted
    rows' groups (both hold each group once) instead of grouping the two again; None
    where that does not apply (a deleted group the state lacks: :func:`_arrow_subtract`
    says what it says)."""
    if retraction.keys != 1 or not retraction.exact:
        return None
    found = partials["__k0"].combine_chunks()
    at = pc.index_in(state["__k0"], value_set=found, skip_nulls=False)
    if at.null_count != state.num_rows - partials.num_rows:
        return None  # a deleted group not in the state
    n = len(retraction.kinds)
    out: dict[str, Any] = {"__k0": state["__k0"]}
    for i in range(n):
        own, gone = state[f"__p{i}"], partials[f"__p{i}"].take(at)
        if pa.types.is_decimal(own.type):  # one digit short of decimal256's 76: no overflow
            wide = pa.decimal256(75, own.type.scale)
            own, gone = pc.cast(own, wide), pc.cast(gone, wide)
        elif gone.type != own.type:
            gone = pc.cast(gone, own.type)
        out[f"__p{i}"] = pc.subtract_checked(own, pc.fill_null(gone, pa.scalar(0, gone.type)))
    for i, kind in enumerate(retraction.kinds):
        if kind is Retracts.SUM:  # a sum whose values are all gone is NULL
            value, count = out[f"__p{i}"], out[f"__p{retraction.counts[i]}"]
            out[f"__p{i}"] = pc.if_else(pc.equal(count, 0), pa.scalar(None, value.type), value)
    table = pa.table(out)
    table = table.filter(pc.greater(table[f"__p{retraction.rows}"], 0))
    return _conform(table, state.schema)  # checked: a decimal that no longer fits raises


def _arrow_subtract(retraction: Retraction, state: pa.Table, partials: pa.Table) -> pa.Table:
    """What ``retraction.subtract`` computes, in pyarrow (a DuckDB query over Arrow input
    costs milliseconds of fixed overhead; this, a fraction of one). The caller checked
    that pyarrow and DuckDB agree on what is compared here (no NaN; see :func:`retract`).

    The state and the negated partials of the deleted rows are summed per group; min/max
    partials of the deleted rows go to columns of their own (``__g…``) to be compared
    with the group's. Null keys group together, as in DuckDB. Exact sums are computed
    in ``decimal256`` and cast back to the state's type with a check: a sum that no
    longer fits raises (``ArrowInvalid``), and DuckDB's query then says what it says.
    """
    keys = [f"__k{i}" for i in range(retraction.keys)]
    n = len(retraction.kinds)
    # the deleted rows' own partials, beside the merged ones: where a min or max may have
    # gone, a floating sum was touched, or the first row's form may be gone
    seen = {
        i
        for i, kind in enumerate(retraction.kinds)
        if kind in (Retracts.MIN, Retracts.MAX)
        or (kind is Retracts.SUM and pa.types.is_floating(state[f"__p{i}"].type))
    } | set(retraction.floating)
    if retraction.forms:
        seen.add(retraction.rows)
    gone_columns = {}
    mine_columns = {}
    for i, kind in enumerate(retraction.kinds):
        column = partials[f"__p{i}"]
        own = state[f"__p{i}"]
        if kind is Retracts.SUM and pa.types.is_decimal(own.type):
            own = pc.cast(own, column.type)  # the wide type of _arrow_partials
        mine_columns[f"__p{i}"] = own
        gone_columns[f"__g{i}"] = column
        if kind in (Retracts.COUNT, Retracts.SUM):
            gone_columns[f"__p{i}"] = pc.negate(column)
        else:
            gone_columns[f"__p{i}"] = pa.nulls(len(column), column.type)
    gone = pa.table(
        {**{k: partials[k] for k in keys}, **{f"__p{i}": gone_columns[f"__p{i}"] for i in range(n)}}
    )
    mine = pa.table({**{k: state[k] for k in keys}, **mine_columns})
    for i in sorted(seen):
        mine = mine.append_column(f"__g{i}", pa.nulls(mine.num_rows, partials[f"__p{i}"].type))
        gone = gone.append_column(f"__g{i}", gone_columns[f"__g{i}"])
    both = pa.concat_tables([_conform(mine, gone.schema), gone])
    aggregations: list[tuple[Any, ...]] = []
    for i, kind in enumerate(retraction.kinds):
        merge = "sum" if kind in (Retracts.COUNT, Retracts.SUM) else str(kind)
        aggregations.append((f"__p{i}", merge))
        if i in seen:
            aggregations.append((f"__g{i}", merge))
    grouped = both.group_by(keys, use_threads=False).aggregate(aggregations)
    column = {name: grouped[f"{name}_{merge}"] for name, merge in aggregations}
    again = pa.array([False] * grouped.num_rows)
    if retraction.forms:  # the group's first row, whose key form it shows, may be gone
        again = pc.is_valid(column[f"__g{retraction.rows}"])
    out: dict[str, Any] = {k: grouped[k] for k in keys}
    for i, kind in enumerate(retraction.kinds):
        value, deleted = column[f"__p{i}"], column.get(f"__g{i}", pa.nulls(len(again)))
        if kind is Retracts.SUM:
            count = column[f"__p{retraction.counts[i]}"]
            value = pc.if_else(pc.equal(count, 0), pa.scalar(None, value.type), value)
            if pa.types.is_floating(value.type):  # not exact: recompute (see retraction)
                again = pc.or_(again, pc.is_valid(deleted))
        elif kind in (Retracts.MIN, Retracts.MAX):
            reached = pc.less_equal if kind is Retracts.MIN else pc.greater_equal
            hit = pc.fill_null(reached(deleted, value), True)
            again = pc.or_(again, pc.and_(pc.is_valid(deleted), hit))
        out[f"__p{i}"] = value
    table = pa.table(out)
    again = pc.fill_null(again, True)
    table = table.append_column("__again", again)
    if keys:  # a group with no rows left is gone; a global aggregate keeps its row
        table = table.filter(pc.greater(table[f"__p{retraction.rows}"], 0))
    # back to the state's types: checked (a decimal that no longer fits raises)
    return _conform(table, pa.schema([*state.schema, pa.field("__again", pa.bool_())]))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = [
        column if column.type == field.type else pc.cast(column, field.type)
        for column, field in zip(table.columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
