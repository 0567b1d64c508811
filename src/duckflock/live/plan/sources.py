"""The FROM clause of an incremental analysis: the fact table and the tables it joins.

The fact table is the leftmost table of the FROM clause: its appended rows are what a
refresh folds in. INNER, LEFT, SEMI and ANTI joins (plain, NATURAL or CROSS) give each
fact row its own result rows, whatever the other fact rows are, so the new fact rows
joined with the dimension rows are exactly what the join gains — as long as the
dimension tables do not change, which is why a write to one rebuilds the state. RIGHT
and FULL joins, ASOF, LATERAL and POSITIONAL joins, joined subqueries and self-joins do
not have that property: such queries run in full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from duckflock.core.names import Identity, RelationKind, Resolver
from duckflock.core.syntax import parse, reads, table_parts
from duckflock.live.fold.states import NotIncremental

_PER_ROW_JOINS = {"INNER", "LEFT", "SEMI", "ANTI"}
_PLAIN_REFS = {"REGULAR", "NATURAL", "CROSS"}


@dataclass(frozen=True)
class Sources:
    fact: Identity
    fact_node: dict[str, Any]  # its node in the syntax tree (sample, time travel)
    joined: frozenset[Identity]  # the base tables joined to it (views expanded)
    whole: str  # the FROM clause over the whole fact table
    new: str  # the FROM clause over the new rows (the relation ``delta``)
    conditions: tuple[dict[str, Any], ...]  # the join conditions
    columns: frozenset[str]  # lower-case names of the columns the FROM clause gives


def sources(
    cursor: duckdb.DuckDBPyConnection,
    source: dict[str, Any],
    delta: str,
    render: Callable[[dict[str, Any], str], str],
    macros: frozenset[str] | None = None,
) -> Sources:
    """The fact table and dimensions of ``source`` (a FROM clause's syntax tree), the new
    rows being the relation ``delta`` (SQL); ``render(tree, prefix)`` turns a
    statement's tree into SQL less ``prefix``; ``macros``: the catalog's macros, as
    :func:`duckflock.core.syntax.reads` takes them."""
    joined: set[Identity] = set()
    conditions: list[dict[str, Any]] = []
    node = source
    while node.get("type") == "JOIN":
        kind, ref = node.get("join_type"), node.get("ref_type")
        if kind not in _PER_ROW_JOINS or ref not in _PLAIN_REFS:
            raise NotIncremental(
                f"it uses {ref if ref not in _PLAIN_REFS else kind} JOIN "
                "(only INNER, LEFT, SEMI and ANTI joins to the leftmost table refresh "
                "incrementally)"
            )
        _dimension(cursor, node["right"], joined, conditions, macros)
        if node.get("condition") is not None:
            conditions.append(node["condition"])
        node = node["left"]
    if node.get("type") != "BASE_TABLE":
        kind = str(node.get("type", "nothing")).lower().replace("_", " ")
        raise NotIncremental(f"it reads from a {kind}, not a table")
    found = Resolver(cursor).lookup(table_parts(node))
    if found is None or found.kind is not RelationKind.TABLE:
        raise NotIncremental("it reads a view, not a table, first in FROM")
    fact = found.identity
    if fact in joined:
        raise NotIncremental(f"it joins {fact.display()} with itself")
    alias = node.get("alias") or node["table_name"]
    whole = dict(
        node, catalog_name=fact.catalog, schema_name=fact.schema, table_name=fact.name, alias=alias
    )
    # the new rows: a relation's SQL (a subquery of the registered Arrow table)
    new = dict(
        parse(cursor, f"SELECT 1 FROM {delta} AS __x")["statements"][0]["node"]["from_table"]
    )
    new["alias"] = alias

    def clause(replacement: dict[str, Any]) -> str:
        template = parse(cursor, "SELECT 1 FROM __duckflock_x")
        template["statements"][0]["node"]["from_table"] = _replace(source, node, replacement)
        return render(template, "SELECT 1 FROM ")

    whole_sql = clause(whole)
    try:
        description = cursor.execute(f"SELECT * FROM {whole_sql} LIMIT 0").description
    except duckdb.Error as exc:
        raise NotIncremental(f"its FROM clause does not bind alone ({exc})") from exc
    return Sources(
        fact=fact,
        fact_node=node,
        joined=frozenset(joined),
        whole=whole_sql,
        new=clause(new),
        conditions=tuple(conditions),
        columns=frozenset(str(column[0]).lower() for column in description or []),
    )


def _dimension(
    cursor: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    joined: set[Identity],
    conditions: list[dict[str, Any]],
    macros: frozenset[str] | None,
) -> None:
    """A joined side: tables and views only (a write to any of them rebuilds)."""
    if node.get("type") == "JOIN":
        if node.get("ref_type") not in _PLAIN_REFS:
            raise NotIncremental(f"it uses {node.get('ref_type')} JOIN")
        if node.get("condition") is not None:
            conditions.append(node["condition"])
        _dimension(cursor, node["left"], joined, conditions, macros)
        _dimension(cursor, node["right"], joined, conditions, macros)
        return
    if node.get("type") != "BASE_TABLE":
        kind = str(node.get("type", "nothing")).lower().replace("_", " ")
        raise NotIncremental(f"it joins a {kind}, not a table")
    if node.get("sample") or node.get("at_clause"):
        raise NotIncremental("it samples or time-travels")
    found = Resolver(cursor).lookup(table_parts(node))
    if found is None:
        raise NotIncremental("it joins a table the catalog does not know")
    if found.kind is RelationKind.TABLE:
        joined.add(found.identity)
        return
    read = reads(cursor, parse(cursor, f"SELECT 1 FROM {found.identity.sql}"), macros)
    if read.any_table:
        raise NotIncremental(f"it joins {found.identity.display()}, which may read any table")
    joined |= read.tables


def _replace(tree: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the node ``old`` (the very object) on its left spine replaced."""
    if tree is old:
        return new
    if tree.get("type") == "JOIN":
        return dict(tree, left=_replace(tree["left"], old, new))
    return tree
