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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.live.fold.arrow import ArrowPlan, exact_sum_type, exact_terms
from duckflock.live.fold.query import over_arrow
from duckflock.live.fold.states import Partial

KEYS = "__duckflock_keys"

# -- the plan: hidden partials and the SQL of a retraction ------------------------------


# what each partial kind (states.Partial.spec[0]) is to a delete: subtracted, or its
# group recomputed when the deleted rows reached its extreme (bool_and is a min of
# booleans, bool_or a max); other kinds (distinct sets, sketches, winners) rebuild
class Retracts(StrEnum):
    """What a partial is to a delete (its value is pyarrow's merge aggregate's name)."""

    COUNT = "count"  # subtracted
    SUM = "sum"  # subtracted (exact), or its touched groups recomputed (floating)
    MIN = "min"  # its group recomputed when the deleted rows reached it
    MAX = "max"


_RETRACTS = {
    "count_all": Retracts.COUNT,
    "count": Retracts.COUNT,
    "sum": Retracts.SUM,
    "min": Retracts.MIN,
    "max": Retracts.MAX,
    "bool_and": Retracts.MIN,
    "bool_or": Retracts.MAX,
}


def _count_of(sql: str) -> str | None:
    """The count(x) partial beside a sum(x) partial (FILTER kept), from its SQL."""
    return "count" + sql[len("sum") :] if sql.startswith("sum(") else None


def hidden_partials(
    partials: list[Partial],
) -> list[tuple[str, str, tuple[str, str | bool | None]]] | None:
    """The partials a state needs beside ``partials`` to take deletes: a count(*), and a
    count(x) for each sum(x) — as (SQL, merge aggregate, pyarrow spec), to add to the
    plan. None: a partial cannot take deletes (the state rebuilds on one anyway)."""
    if any(partial.spec[0] not in _RETRACTS for partial in partials):
        return None
    have = {partial.sql for partial in partials}
    extra: list[tuple[str, str, tuple[str, str | bool | None]]] = []
    if "count(*)" not in have:
        extra.append(("count(*)", "sum", ("count_all", None)))
        have.add("count(*)")
    for partial in partials:
        count = _count_of(partial.sql) if partial.spec[0] == "sum" else None
        if count is not None and count not in have:
            extra.append((count, "sum", ("count", partial.spec[1])))
            have.add(count)
    return extra


@dataclass(frozen=True)
class Retraction:
    """How to take deleted rows out of a state (see the module docstring)."""

    subtract: str  # over STATE and DELTA (the deleted rows): new state + __again flag
    subtract_partials: str  # the same, DELTA being the deleted rows' partials already
    recompute: str  # over the source table and KEYS: the partials of those groups
    keys: int  # how many key columns the state has
    recompute_all: str = ""  # recompute's query for every group (no KEYS to join)
    kinds: tuple[Retracts, ...] = ()  # per partial
    counts: tuple[int, ...] = ()  # per sum partial: its count(x) partial (else -1)
    rows: int = 0  # the count(*) partial
    floating: frozenset[int] = frozenset()  # FLOAT/DOUBLE sum partials: recomputed
    forms: bool = False  # a key's equal values differ in form: touched groups recomputed
    # for pyarrow: the source column of each key, and of each partial (None: count(*));
    # None when a key or an argument is more than a column, or the query has a WHERE
    key_columns: tuple[str, ...] | None = None
    sources: tuple[str | None, ...] | None = None

    @property
    def exact(self) -> bool:
        """Whether subtraction alone settles every group (no min/max, no float sum, no
        key of several forms)."""
        return (
            not self.floating
            and not self.forms
            and not {Retracts.MIN, Retracts.MAX} & set(self.kinds)
        )


def retraction(
    source_sql: str,
    keys: list[str],
    partials: list[Partial],
    where_sql: str,
    deleted_partials: str,
    state: str,
    keys_relation: str = KEYS,
    deltas: str = "__duckflock_delta",
    floating: frozenset[int] = frozenset(),
    forms: bool = False,
    plain: tuple[tuple[str, ...], tuple[str | None, ...]] | None = None,
) -> Retraction | None:
    """The queries that retract deleted rows, or None where a partial cannot take them
    (those deletes rebuild the state).

    ``keys`` and ``partials`` are the SQL of the group keys and partials over the source
    table (``source_sql``, its FROM clause), ``where_sql`` its `` WHERE …`` (or ""),
    ``deleted_partials`` the query of the partials of the rows in ``delta``. With
    ``forms`` (a key whose equal values differ in form: -0.0 and 0.0, '30 days' and
    '720 hours', 'a' and 'A' under NOCASE) every group deleted rows touch is recomputed:
    it shows the form of its first row, which may be gone. ``plain``: the source
    columns of the keys and of the partials (None for count(*)), when all are plain
    columns and there is no WHERE (the pyarrow path of :func:`retract`).
    """
    kinds: list[tuple[Retracts, str]] = []  # (kind, SQL): a sum finds its count by SQL
    for partial in partials:
        kind = _RETRACTS.get(partial.spec[0])
        if kind is None:
            return None
        kinds.append((kind, partial.sql))
    sqls = [partial.sql for partial in partials]
    if "count(*)" not in sqls:
        return None
    rows = sqls.index("count(*)")
    columns = [f"s.__k{i}" for i in range(len(keys))]
    again: list[str] = []
    for i, (kind, arg) in enumerate(kinds):
        mine, gone = f"s.__p{i}", f"g.__p{i}"
        if kind is Retracts.COUNT:
            columns.append(f"{mine} - coalesce({gone}, 0) AS __p{i}")
        elif kind is Retracts.SUM:
            count = _count_of(arg)
            if count not in sqls:
                return None
            n = sqls.index(count)
            columns.append(
                f"CASE WHEN s.__p{n} - coalesce(g.__p{n}, 0) = 0 THEN NULL "
                f"ELSE {mine} - coalesce({gone}, 0) END AS __p{i}"
            )
            if i in floating:
                # a floating sum less the deleted values is not the sum of the values left
                # (1e16 + 1 - 1e16 is 0, NaN and infinity do not come out at all):
                # recompute the groups deleted rows touched
                again.append(f"({gone} IS NOT NULL)")
        else:  # min / max: recompute the group when its extreme may have gone
            columns.append(f"{mine} AS __p{i}")
            compare = "<=" if kind is Retracts.MIN else ">="
            again.append(f"({gone} IS NOT NULL AND {gone} {compare} {mine})")
    if forms:
        again.append(f"(g.__p{rows} IS NOT NULL)")
    join = " AND ".join(f"s.__k{i} IS NOT DISTINCT FROM g.__k{i}" for i in range(len(keys)))
    flag = " OR ".join(again) if again else "false"
    # a global aggregate always has its one row; a group with no rows left is gone
    alive = f" WHERE s.__p{rows} - coalesce(g.__p{rows}, 0) > 0" if keys else ""
    body = (
        f"SELECT {', '.join(columns)}, coalesce({flag}, true) AS __again "
        f"FROM {state} AS s LEFT JOIN __gone AS g ON {join or 'true'}{alive}"
    )
    subtract = f"WITH __gone AS ({deleted_partials}) {body}"
    subtract_partials = f"WITH __gone AS (SELECT * FROM {deltas}) {body}"
    select = [f"{sql} AS __k{i}" for i, sql in enumerate(keys)]
    select += [f"{sql} AS __p{i}" for i, sql in enumerate(sqls)]
    semi = ""
    if keys:
        on = " AND ".join(f"({sql}) IS NOT DISTINCT FROM __r.__k{i}" for i, sql in enumerate(keys))
        semi = f" SEMI JOIN {keys_relation} AS __r ON {on}"
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    recompute = f"SELECT {', '.join(select)} FROM {source_sql}{semi}{where_sql}{group}"
    recompute_all = f"SELECT {', '.join(select)} FROM {source_sql}{where_sql}{group}"
    return Retraction(
        subtract=subtract,
        subtract_partials=subtract_partials,
        recompute=recompute,
        recompute_all=recompute_all,
        keys=len(keys),
        kinds=tuple(kind for kind, _ in kinds),
        counts=tuple(
            sqls.index(str(_count_of(sql))) if kind is Retracts.SUM else -1 for kind, sql in kinds
        ),
        rows=rows,
        floating=floating,
        forms=forms,
        key_columns=plain[0] if plain is not None else None,
        sources=plain[1] if plain is not None else None,
    )


# -- the refresh: subtract, then recompute what subtraction cannot --------------------


def retract(
    cursor: duckdb.DuckDBPyConnection,
    retraction: Retraction,
    state: pa.Table,
    deleted: pa.Table,
    arrow: ArrowPlan | None = None,
    *,
    settle: bool = True,
) -> pa.Table | None:
    """``state`` without ``deleted``'s rows. Groups that subtraction cannot settle are
    recomputed on ``cursor``, inside the transaction whose snapshot matches the state
    (see :class:`duckflock.live.refresh.Refresher`); with ``settle=False`` there is no
    such transaction, and None says one is needed.

    Where the state's keys and partials are plain columns (``retraction.sources``),
    pyarrow aggregates the deleted rows and subtracts them (a DuckDB query over Arrow
    input costs ~10x longer): always for an exact retraction (counts and exact sums,
    grouped by keys pyarrow and DuckDB group alike: not floating, collated or interval
    keys, which make a retraction inexact); with min/max or floating sums only for a
    plain shape (``arrow``, :mod:`duckflock.live.fold.arrow`) without NaN, where the two
    disagree. Anything pyarrow refuses (a nested key, a sum that overflows) goes to
    DuckDB's query.
    """
    out = None
    if retraction.sources is not None and (
        retraction.exact or (arrow is not None and not arrow.has_nan(state, deleted))
    ):
        with contextlib.suppress(pa.ArrowException, TypeError, ValueError):
            partials = _arrow_partials(retraction, deleted, state.schema)
            out = _arrow_subtract(retraction, state, partials)
    if out is None:
        out = over_arrow(cursor, retraction.subtract, state, deleted, None)
    again = pc.fill_null(out["__again"], True)
    kept = out.filter(pc.invert(again)).drop_columns(["__again"])
    if not pc.any(again).as_py():
        return _conform(kept, state.schema)
    if not settle:
        return None
    flagged = out.filter(again)
    if flagged.num_rows == out.num_rows and retraction.recompute_all:
        # every group (a DELETE of the oldest rows, say): one scan, no join of the keys
        return _conform(over_arrow(cursor, retraction.recompute_all, state), state.schema)
    keys = flagged.select([f"__k{i}" for i in range(retraction.keys)])
    recomputed = over_arrow(cursor, retraction.recompute, state, deleted, keys)
    return pa.concat_tables([_conform(kept, state.schema), _conform(recomputed, state.schema)])


def _arrow_partials(retraction: Retraction, rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """The partials of ``rows`` per group, as the state's columns (what the state's
    build computes), in pyarrow. Sums of integers and decimals are exact: summed in a
    type that cannot overflow (``arrow.exact_terms``), then widened to ``decimal256``
    for the subtraction, which goes back to the state's type with a check. A partial
    asked twice (avg's sum beside a sum of the same column) is aggregated once."""
    assert retraction.sources is not None and retraction.key_columns is not None
    named: dict[str, str] = {str(n).lower(): str(n) for n in rows.column_names}  # as bound

    def named_as(column: str) -> str:
        if column.lower() not in named:
            raise TypeError(f"no column {column!r} among the deleted rows'")
        return named[column.lower()]

    aggregations: list[tuple[Any, ...]] = []
    index: dict[tuple[str, str], int] = {}  # (kind, source) -> aggregation
    picks: list[int] = []
    for i, (retracts, column) in enumerate(zip(retraction.kinds, retraction.sources, strict=True)):
        source = named_as(column) if column is not None else rows.column_names[0]  # count(*)
        kind = "count_all" if column is None else str(retracts)  # pyarrow's aggregate
        if (kind, source) not in index:
            values = rows[source]
            name = source
            if kind == "sum" and not pa.types.is_floating(values.type):
                name = f"__s{i}"
                rows = rows.append_column(name, exact_terms(values))
            elif kind == "sum" and values.type != pa.float64():
                name = f"__s{i}"  # DuckDB sums FLOAT as DOUBLE
                rows = rows.append_column(name, pc.cast(values, pa.float64()))
            if kind == "count_all":
                aggregations.append((name, "count", pc.CountOptions(mode="all")))
            elif kind == "count":
                aggregations.append((name, "count", pc.CountOptions(mode="only_valid")))
            else:
                aggregations.append((name, kind))
            index[(kind, source)] = len(aggregations) - 1
        picks.append(index[(kind, source)])
    keys = [named_as(column) for column in retraction.key_columns]
    grouped = rows.group_by(keys, use_threads=False).aggregate(aggregations)
    names = grouped.column_names
    width = len(aggregations)
    if names[: len(keys)] == keys:  # pyarrow puts the keys first (older ones: last)
        key_columns, values_at = grouped.columns[: len(keys)], len(keys)
    else:
        key_columns, values_at = grouped.columns[width:], 0
    columns = list(key_columns) + [grouped.column(values_at + pick) for pick in picks]
    kinds = [field.type for field in schema]
    for i, kind in enumerate(retraction.kinds):  # exact sums stay decimal256 until the end
        at = retraction.keys + i
        if kind is Retracts.SUM and pa.types.is_decimal(kinds[at]):
            kinds[at] = exact_sum_type(kinds[at])
    return pa.Table.from_arrays(
        [c if c.type == t else pc.cast(c, t) for c, t in zip(columns, kinds, strict=True)],
        names=schema.names,
    )


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
    for i in range(n):
        mine = mine.append_column(f"__g{i}", pa.nulls(mine.num_rows, partials[f"__p{i}"].type))
        gone = gone.append_column(f"__g{i}", gone_columns[f"__g{i}"])
    both = pa.concat_tables([_conform(mine, gone.schema), gone])
    aggregations: list[tuple[Any, ...]] = []
    for i, kind in enumerate(retraction.kinds):
        merge = "sum" if kind in (Retracts.COUNT, Retracts.SUM) else str(kind)
        aggregations.append((f"__p{i}", merge))
        aggregations.append((f"__g{i}", merge))
    grouped = both.group_by(keys, use_threads=False).aggregate(aggregations)
    column = {name: grouped[f"{name}_{merge}"] for name, merge in aggregations}
    again = pa.array([False] * grouped.num_rows)
    if retraction.forms:  # the group's first row, whose key form it shows, may be gone
        again = pc.is_valid(column[f"__g{retraction.rows}"])
    out: dict[str, Any] = {k: grouped[k] for k in keys}
    for i, kind in enumerate(retraction.kinds):
        value, deleted = column[f"__p{i}"], column[f"__g{i}"]
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
