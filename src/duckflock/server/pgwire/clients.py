"""Client catalog queries no view can answer, replaced whole by duckflock's own SQL.

Most of the catalog is :mod:`catalog`'s views and macros, which clients' queries read as
sent. A few queries cannot bind in DuckDB whatever the views say, so they are recognised
by what they select and replaced by SQL that returns the same columns: psql's ``\\d``
asks about row-level policies, extended statistics, publications and triggers with PostgreSQL-only
constructs (none exist here: no rows); asyncpg asks for the element types of arrays with
a recursive query over ``pg_type`` (``typeinfo_tree``), answered from the array types this
port sends, and turns JIT off around it (``set_config('jit', …)``), a no-op here; ADBC's
driver maps types by their receive functions (``typreceive`` of ``pg_type``, compared
with numbers). Types come from :data:`types.PG_TYPES`. Each replacement still runs
through the guard.
"""

from __future__ import annotations

from duckflock.server.pgwire import types


def _empty(count: int) -> str:
    columns = ", ".join(f"NULL::VARCHAR AS c{i}" for i in range(count))
    return f"SELECT {columns} WHERE false"


def _asyncpg_types() -> str:
    """asyncpg's type tree for the array types (and their elements) this port sends."""
    rows = []
    for element, array in types.ARRAY_OF.items():
        kind = types.PG_TYPES[element]
        rows.append(f"({array}, '_{kind.name}', {element}, ',', 0, '{kind.spelled}')")
        rows.append(f"({element}, '{kind.name}', NULL, NULL, 1, NULL)")
    values = ", ".join(rows)
    return (
        "SELECT DISTINCT oid::INTEGER AS oid, 'pg_catalog' AS ns, name, 'b' AS kind, "
        "NULL::INTEGER AS basetype, elemtype::INTEGER AS elemtype, elemdelim, "
        "NULL::INTEGER AS range_subtype, NULL::VARCHAR[] AS attrtypoids, "
        "NULL::VARCHAR[] AS attrnames, depth, NULL::VARCHAR AS basetype_name, "
        "elemtype_name, NULL::VARCHAR AS range_subtype_name "
        f"FROM (VALUES {values}) AS v(oid, name, elemtype, elemdelim, depth, elemtype_name) "
        "WHERE list_contains($1, oid) OR depth = 1 ORDER BY depth DESC"
    )


def _adbc_types() -> str:
    """(oid, name, receive function, array oid) of each type: what ADBC maps types by."""
    values = ", ".join(
        f"({oid}, '{kind.name}', '{kind.receive}', 0, 0, {kind.array})"
        for oid, kind in types.PG_TYPES.items()
        if kind.array
    )
    return (
        "SELECT * FROM (VALUES "
        + values
        + ") AS t(oid, typname, typreceive, typbasetype, typrelid, typarray)"
    )


def describe_query(sql: str) -> str | None:
    """Replacement SQL for one of the queries above, or None for any other."""
    if "typeinfo_tree" in sql and "$1" in sql:
        return _asyncpg_types()
    if "set_config('jit'" in sql:
        return "SELECT 'off' AS cur, 'off' AS new"
    if "pg_catalog" not in sql:
        return None
    if "typreceive != 0" in sql and "FROM pg_catalog.pg_type" in sql:  # ADBC's
        return _adbc_types()
    if "FROM pg_catalog.pg_policy" in sql:
        return _empty(6)
    if "FROM pg_catalog.pg_statistic_ext" in sql:
        return _empty(9)
    if "FROM pg_catalog.pg_publication" in sql:
        return _empty(3)
    if "FROM pg_catalog.pg_trigger t" in sql:  # \\d of a table with foreign keys
        return _empty(5)
    return None
