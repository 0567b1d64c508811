"""Whether a planned shape can fold through pyarrow (:mod:`duckflock.live.fold.arrow`)
instead of DuckDB, and the :class:`ArrowPlan` that does it: only where pyarrow computes
exactly what DuckDB would for the columns' types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.core.cursors import first_row
from duckflock.core.names import Identity
from duckflock.live.fold.arrow import ArrowPlan, Output, OutputKind
from duckflock.live.fold.buckets import Bucket
from duckflock.live.fold.merges import ARROW_COMPARES, equal_in_arrow
from duckflock.live.fold.states import PartialKind, Spec
from duckflock.live.plan.aggregates import is_wide
from duckflock.live.plan.bucketing import bucketed
from duckflock.live.plan.trees import canonical, constant, plain_column
from duckflock.sql import quote_ident

# column types whose equality and order pyarrow shares with DuckDB (floats: checked for
# NaN and -0.0 on every fold, see ArrowPlan.has_nan)
_ARROW_COMPARES = ARROW_COMPARES


def collated(cursor: duckdb.DuckDBPyConnection, expr: str, relation: str) -> bool:
    """Whether DuckDB compares ``expr`` (a VARCHAR over ``relation``) other than
    byte by byte: a collation of its own, or the default_collation. DuckDB decides,
    over strings that every collation it has would merge (case, accents, composed
    forms); anything it will not compare with strings counts as collated."""
    probe = ["a", "A", "\u00e9", "e", "e\u0301"]
    try:
        row = first_row(
            cursor.execute(
                f"SELECT count(*) FROM (SELECT __x FROM (SELECT * FROM (SELECT ({expr}) "
                f"AS __x FROM {relation} LIMIT 0) UNION ALL SELECT unnest(?::VARCHAR[])) "
                "GROUP BY __x)",
                [probe],
            )
        )
    except duckdb.Error:
        return True
    return row is None or row[0] != len(probe)


def arrow_plan(
    cursor: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    *,
    source: Identity,
    columns: tuple[str, ...],
    schema: pa.Schema | None,
    keys: Mapping[str, int],
    outputs: Mapping[str, Output],
    specs: Sequence[Spec],
    groups: list[dict[str, Any]],
    plain: bool,
    offset: int,
    limit: int | None,
) -> ArrowPlan | None:
    """The pyarrow fast path for the SELECT ``node`` over ``source``, when the shape is
    plain enough (None otherwise). ``keys``: canonical group expression -> key index;
    ``outputs``: canonical aggregate -> its pyarrow output; ``specs``: the partials'
    (kind, column); ``plain``: no WHERE, HAVING or join."""
    if not plain or schema is None:
        return None
    described = _columns(cursor, source)
    types = {lower: kind for lower, (_, kind) in described.items()}
    key_columns = [plain_column(g) for g in groups]
    buckets: list[tuple[int, Bucket]] = []
    for i, group in enumerate(groups):  # a time bucket of a TIMESTAMP column: pyarrow's too
        timed = bucketed(cursor, group, types) if key_columns[i] is False else None
        if timed is not None:
            key_columns[i] = timed[0]
            buckets.append((i, timed[1]))
    if any(k is False for k in key_columns) or any(column is False for _, column in specs):
        return None
    # the columns as the table spells them: the query may name "V" as v, and pyarrow
    # finds a column of the rows by its exact name
    spelled = {lower: name for lower, (name, _) in described.items()}
    named = [str(k) for k in key_columns] + [c for _, c in specs if isinstance(c, str)]
    if any(name.lower() not in spelled for name in named):
        return None
    key_columns = [spelled[str(k).lower()] for k in key_columns]
    specs = [(kind, spelled[c.lower()] if isinstance(c, str) else c) for kind, c in specs]
    if not _agrees(cursor, source, types, specs, key_columns):
        return None
    shown = []
    for item in node.get("select_list") or []:  # the query's own, not rewritten
        found = canonical(item)
        if found in keys:
            shown.append(Output(OutputKind.KEY, keys[found]))
        elif found in outputs:
            shown.append(outputs[found])
        else:
            return None  # an expression over aggregates or keys: DuckDB computes it
    order = []
    names = [name.lower() for name in columns]
    for modifier in node.get("modifiers") or []:
        for item in modifier.get("orders", []) if modifier["type"] == "ORDER_MODIFIER" else []:
            if item.get("null_order") not in ("ORDER_DEFAULT", "NULLS LAST"):
                return None
            expr = item["expression"]
            if expr.get("class") == "CONSTANT":
                index = constant(expr, "an ORDER BY position") - 1
            elif expr.get("class") == "COLUMN_REF" and len(expr["column_names"]) == 1:
                name = expr["column_names"][0].lower()
                if name not in names or names.count(name) > 1:
                    return None
                index = names.index(name)
            else:
                return None
            order.append((index, item["type"] == "DESCENDING"))
    return ArrowPlan(
        keys=tuple(str(k) for k in key_columns),
        partials=tuple(
            (kind, column if isinstance(column, str) else None) for kind, column in specs
        ),
        outputs=tuple(shown),
        names=columns,
        schema=schema,
        order=tuple(order),
        offset=offset,
        limit=limit,
        buckets=tuple(buckets),
    )


def column_types(cursor: duckdb.DuckDBPyConnection, source: Identity) -> dict[str, str]:
    """The DuckDB type of each column of ``source``, by lower-case name."""
    return {lower: kind for lower, (_, kind) in _columns(cursor, source).items()}


def _columns(cursor: duckdb.DuckDBPyConnection, source: Identity) -> dict[str, tuple[str, str]]:
    """Each column of ``source`` as the table spells it and its DuckDB type, by
    lower-case name."""
    rows = cursor.execute(
        "SELECT lower(column_name), column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
        list(source),
    ).fetchall()
    return {str(lower): (str(name), str(kind).upper()) for lower, name, kind in rows}


def _agrees(
    cursor: duckdb.DuckDBPyConnection,
    source: Identity,
    types: dict[str, str],
    specs: Sequence[Spec],
    keys: list[str | bool],
) -> bool:
    """Whether pyarrow computes what DuckDB does for these columns' types: not for
    sums of 128-bit or decimal columns (DuckDB raises on overflow, pyarrow's
    decimal128 does not). NaN, where they differ too, is checked on each fold
    (``ArrowPlan.has_nan``); ``types``: :func:`column_types`."""

    def kind(column: str | bool | None) -> str:
        return types.get(str(column).lower(), "") if isinstance(column, str) else ""

    # exact sums: integers and DECIMAL(<=18) in decimal256, checked back (arrow.py);
    # 128-bit sums never fold incrementally (a full run raises on overflow)
    if any(aggregate is PartialKind.SUM and is_wide(kind(column)) for aggregate, column in specs):
        return False
    # keys and min/max: only types whose equality and order pyarrow shares with
    # DuckDB (not ENUM, nested, DECIMAL, INTERVAL, UUID…; not collated strings)
    compared = [k for k in keys] + [c for a, c in specs if a in (PartialKind.MIN, PartialKind.MAX)]
    # count(DISTINCT …)'s lists: one key (they merge by position, fold/positions.py) and
    # an argument whose Arrow equality is DuckDB's (not floats, INTERVAL, nested…)
    distinct = [c for a, c in specs if a is PartialKind.SET]
    if distinct and (len(keys) != 1 or not all(equal_in_arrow(kind(c)) for c in distinct)):
        return False
    for column in compared + distinct:
        if kind(column) not in _ARROW_COMPARES and column not in distinct:
            return False
        if kind(column) == "VARCHAR" and collated(cursor, quote_ident(str(column)), source.sql):
            return False
    return True
