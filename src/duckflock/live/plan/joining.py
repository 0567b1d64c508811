"""Whether a join's partials query may run as a pyarrow lookup and program
(:mod:`duckflock.live.fold.lookup`), asked once per plan.

Admitted where the query's FROM clause is the new rows joined (INNER or LEFT) with one
dimension table by one equality — ``USING (c)`` or ``ON f.a = d.b`` — of two columns of
the same DuckDB type whose values Arrow finds equal exactly where DuckDB does
(:func:`~duckflock.live.fold.merges.equal_in_arrow`, with probe values); every column
the query reads is one side's (qualified by its alias, or named by one side only, or the
``USING`` column of an INNER join); the rest of the query compiles
(:func:`~duckflock.live.plan.computing.compiled`) with no winner (arg_max, first…: which
of the joined rows DuckDB sees first is its own). Then DuckDB runs the query over probe
rows on the detached instance — the new rows' columns cycling through their probe
values, the dimension's too, its keys unique, NULL among them and some missing — and
the lookup must give the same table bit for bit, as :mod:`computing` admits a program.
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from duckflock.core.names import Identity
from duckflock.core.syntax import parse, walk
from duckflock.errors import QueryError
from duckflock.live.fold import detached
from duckflock.live.fold.lookup import Join, Lookup
from duckflock.live.fold.merges import equal_in_arrow
from duckflock.live.fold.query import over_arrow
from duckflock.live.plan.arrowpath import column_types
from duckflock.live.plan.computing import compiled, new_rows, program_reads
from duckflock.live.plan.probes import PROBED, probe_rows, same

_FLOATING = ("FLOAT", "DOUBLE")


def admitted(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    fact: Identity,
    dimension: Identity,
    tables: tuple[pa.Table, pa.Table, pa.Table],
    settings: detached.Settings,
) -> Join | None:
    """The lookup of the partials query ``sql`` (the new rows of ``fact`` joined with
    ``dimension``), probed on the detached instance for ``settings``; None where it is
    not admitted (module docstring). ``tables``: no rows of the state, the new rows and
    the dimension's copy (their schemas)."""
    _, delta, rows = tables
    try:
        node = parse(cursor, sql)["statements"][0]["node"]
        facts, dims = column_types(cursor, fact), column_types(cursor, dimension)
        join = _join(node, dimension, delta.schema, rows.schema, facts, dims)
        if join is None:
            return None
        read = program_reads({key: node.get(key) for key in ("select_list", "where_clause")})
        for ends in (False, True):
            types = (facts, dims)
            if not _probed(join, sql, dimension.name, tables, types, read, settings, ends):
                return None
    except (duckdb.Error, QueryError, pa.ArrowException, KeyError, TypeError, ValueError):
        return None
    return join


def _join(
    node: dict[str, Any],
    dimension: Identity,
    fact: pa.Schema,
    rows: pa.Schema,
    facts: dict[str, str],
    dims: dict[str, str],
) -> Join | None:
    source = node.get("from_table") or {}
    left, right = source.get("left") or {}, source.get("right") or {}
    read = program_reads({key: node.get(key) for key in ("select_list", "where_clause")})
    if (
        source.get("type") != "JOIN"
        or source.get("join_type") not in ("INNER", "LEFT")
        or source.get("ref_type") != "REGULAR"
        or right.get("type") != "BASE_TABLE"
        or str(right.get("table_name", "")).lower() != dimension.name.lower()
        or any(right.get(part) for part in ("schema_name", "catalog_name", "sample"))
        or any(right.get(part) for part in ("at_clause", "column_name_alias"))
    ):
        return None
    aliases = (str(left.get("alias", "")), str(right.get("alias") or dimension.name))
    aliases = (aliases[0].lower(), aliases[1].lower())
    inner = source["join_type"] == "INNER"
    keys = _keys(source, aliases)
    if keys is None or keys[0] not in facts or keys[1] not in dims:
        return None
    if not new_rows(left, fact.names, read | {keys[0]}):  # (each read column as it is)
        return None
    kind = facts[keys[0]]
    if kind != dims[keys[1]] or not equal_in_arrow(kind) or kind not in PROBED:
        return None
    using = keys[0] if source.get("using_columns") and inner else None
    for ref in walk([node.get("select_list"), node.get("where_clause")]):
        if ref.get("class") == "COLUMN_REF" and not _one_side(ref, aliases, facts, dims, using):
            return None
    names = {field.name.lower(): field.name for field in rows}
    taken = tuple(names[name] for name in sorted(read) if name in dims and name not in facts)
    key = next(field for field in fact if field.name.lower() == keys[0])
    carried = [key, *(field for field in fact if field.name.lower() in read - {keys[0]})]
    flat = pa.schema([*carried, *(rows.field(name) for name in taken)])
    program = compiled(node, flat, facts | {name.lower(): dims[name.lower()] for name in taken})
    if any(aggregate.by is not None for aggregate in program.aggregates):
        return None  # a winner among joined rows: which DuckDB sees first is its own
    read_names = tuple(field.name for field in carried)
    return Join(program, key.name, read_names, names[keys[1]], taken, left=not inner)


def _keys(source: dict[str, Any], aliases: tuple[str, str]) -> tuple[str, str] | None:
    """The (fact, dimension) columns of the join's one equality, lower case."""
    using = source.get("using_columns") or []
    condition = source.get("condition")
    if len(using) == 1 and condition is None:
        return str(using[0]).lower(), str(using[0]).lower()
    if using or condition is None or condition.get("type") != "COMPARE_EQUAL":
        return None
    sides: dict[str, str] = {}
    for ref in (condition.get("left") or {}, condition.get("right") or {}):
        parts = [str(part).lower() for part in ref.get("column_names") or []]
        if ref.get("class") != "COLUMN_REF" or len(parts) != 2 or parts[0] not in aliases:
            return None
        sides[parts[0]] = parts[1]
    if len(sides) != 2:
        return None
    return sides[aliases[0]], sides[aliases[1]]


def _one_side(
    ref: dict[str, Any],
    aliases: tuple[str, str],
    facts: dict[str, str],
    dims: dict[str, str],
    using: str | None,
) -> bool:
    """Whether a column reference names one side's column, as the joined rows hold it."""
    parts = [str(part).lower() for part in ref.get("column_names") or []]
    if len(parts) == 1:
        (name,) = parts
        return (name in facts) != (name in dims) or name == using
    if len(parts) != 2 or parts[0] not in aliases:
        return False
    side = facts if parts[0] == aliases[0] else dims
    name = parts[1]
    return name in side and (name not in facts or name not in dims or name == using)


def _probed(
    join: Join,
    sql: str,
    name: str,
    tables: tuple[pa.Table, pa.Table, pa.Table],
    types: tuple[dict[str, str], dict[str, str]],
    read: set[str],
    settings: detached.Settings,
    ends: bool,
) -> bool:
    """Whether DuckDB's query (on the detached instance, the dimension registered by
    its bare ``name``) and the lookup agree over probe rows (module docstring)."""
    state, delta, rows = tables
    facts, dims = types
    filled = (read & set(facts)) | {join.fact_key.lower()}
    fact_rows = probe_rows(delta.schema, facts, filled, ends=ends)
    taken = {column.lower() for column in join.taken} | {join.dimension_key.lower()}
    dim_rows = _unique(probe_rows(rows.schema, dims, taken, ends=ends), join.dimension_key)
    shared = detached.cursor(settings)
    if shared is None:
        return False
    mine = shared.cursor()
    try:
        mine.register(name, dim_rows)
        try:
            want: pa.Table | None = over_arrow(mine, sql, state, fact_rows)
        except duckdb.Error:
            if not ends:
                return False
            want = None  # past a type's end: the lookup must raise too
    finally:
        with contextlib.suppress(duckdb.Error):
            mine.close()
    try:
        got: pa.Table | None = Lookup(join, dim_rows).partials(fact_rows, state.schema)
    except pa.ArrowInvalid:
        got = None
    if want is None or got is None:
        return want is None and got is None
    return same(want, got, state.schema)


def _unique(rows: pa.Table, key: str) -> pa.Table:
    """``rows`` with the first of each key value only (NULL keys all kept), and every
    third of those values left out (fact rows whose key finds no dimension row)."""
    keys = rows[key]
    first = pc.index_in(keys, value_set=keys)
    positions = pa.array(range(rows.num_rows), pa.int32())
    firsts = pc.fill_null(pc.equal(first, positions), False)
    chosen = rows.filter(pc.or_(pc.is_null(keys), firsts))
    values = chosen[key]
    dropped = pa.array([i % 3 == 2 for i in range(chosen.num_rows)])
    return chosen.filter(pc.or_(pc.is_null(values), pc.invert(dropped)))
