"""The functions of PostgreSQL's catalog that clients call (``format_type``,
``pg_get_indexdef``, ``pg_table_is_visible``…) as DuckDB temporary macros.

Each is ``(name, statement)``; :mod:`catalog` creates the ones a query calls, with the
relations they read (:mod:`catalog_relations`).
"""

from __future__ import annotations

from duckflock.server.pgwire import types
from duckflock.server.pgwire.catalog_relations import OWNER_NAME


def _lookup(source: str, key: str, argument: str, value: str) -> str:
    """A scalar subquery: ``value`` of the row of ``source`` whose ``key`` is ``argument``
    (a macro parameter), the inner names hidden from the argument's own columns."""
    return (
        f"(SELECT any_value(duckflock_value) FROM (SELECT {key} AS duckflock_key, {value} "
        f"AS duckflock_value FROM {source}) AS duckflock_lookup "
        f"WHERE duckflock_key = {argument})"
    )


def _lookup_macro(name: str, extra: str, source: str, key: str, value: str) -> str:
    """A macro ``name(x)`` (and ``name(x, extra…)``, whose extra arguments change nothing
    here) giving :func:`_lookup`'s value for ``x``."""
    body = _lookup(source, key, "x", value)
    overloads = [f"(x) AS {body}", *([f"(x, {extra}) AS {body}"] if extra else [])]
    return f"CREATE TEMP MACRO {name}" + ", ".join(overloads)


def _pairs(count: int) -> str:
    """A macro overload taking ``count`` key/value pairs, as ``json_object`` does."""
    names = [(f"k{i}", f"v{i}") for i in range(count)]
    parameters = ", ".join(f"{k}, {v}" for k, v in names)
    arguments = ", ".join(f"{k}::VARCHAR, {v}" for k, v in names)
    return f"({parameters}) AS json_object({arguments})"


FUNCTIONS: list[tuple[str, str]] = [
    # functions psql and drivers call; a lookup names its columns duckflock_* so that an
    # argument (a column of the caller's query: indexrelid, c.oid) is never captured
    (
        "format_type",
        "CREATE TEMP MACRO format_type(type_oid, typmod) AS "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "spelled")
        + " || CASE WHEN "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "coalesce(nullif(typelem, 0), oid)")
        + f" = {types.Oid.NUMERIC} AND typmod >= 4 THEN '(' || ((typmod - 4) >> 16) || ',' "
        "|| ((typmod - 4) & 65535) || ')' ELSE '' END || CASE WHEN "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "typelem <> 0")
        + " THEN '[]' ELSE '' END",
    ),
    (
        "pg_encoding_to_char",
        "CREATE TEMP MACRO pg_encoding_to_char(e) AS CASE WHEN e = 6 THEN 'UTF8' ELSE '' END",
    ),
    ("pg_get_userbyid", f"CREATE TEMP MACRO pg_get_userbyid(r) AS '{OWNER_NAME}'"),
    # sizes: DuckDB keeps no per-table byte count (NULL, as for a relation not found)
    ("pg_table_size", "CREATE TEMP MACRO pg_table_size(r) AS NULL::BIGINT"),
    ("pg_total_relation_size", "CREATE TEMP MACRO pg_total_relation_size(r) AS NULL::BIGINT"),
    (
        "pg_relation_size",
        "CREATE TEMP MACRO pg_relation_size(r) AS NULL::BIGINT, (r, fork) AS NULL::BIGINT",
    ),
    (
        "pg_get_function_result",
        _lookup_macro(
            "pg_get_function_result",
            "",
            "pg_proc",
            "oid",
            "CASE WHEN proretset THEN 'SETOF record' ELSE '' END",
        ),
    ),
    *(
        (name, _lookup_macro(name, "", "pg_proc", "oid", "array_to_string(proargnames, ', ')"))
        for name in ("pg_get_function_arguments", "pg_get_function_identity_arguments")
    ),
    (
        "pg_get_indexdef",
        _lookup_macro(
            "pg_get_indexdef", "col, pretty", "duckflock_indexes", "indexrelid", "indexdef"
        ),
    ),
    (
        "pg_get_constraintdef",
        _lookup_macro("pg_get_constraintdef", "pretty", "duckflock_constraints", "oid", "condef"),
    ),
    (
        "pg_get_viewdef",
        _lookup_macro("pg_get_viewdef", "pretty", "duckdb_views()", "view_oid", "sql"),
    ),
    (
        "pg_partition_ancestors",  # of a relation that is no partition: itself
        "CREATE TEMP MACRO pg_partition_ancestors(r) AS r::BIGINT",
    ),
    (
        "duckflock_regclass",  # a regclass shown: the relation's name
        "CREATE TEMP MACRO duckflock_regclass(r) AS coalesce("
        + _lookup("duckflock_relations", "oid", "r::BIGINT", "relname")
        + ", r::VARCHAR)",
    ),
    ("pg_get_expr", "CREATE TEMP MACRO pg_get_expr(e, r) AS e, (e, r, pretty) AS e"),
    (
        "obj_description",
        "CREATE TEMP MACRO obj_description(o) AS "
        + _lookup("pg_description", "objoid || '/' || objsubid", "o || '/0'", "description")
        + ", (o, catalog) AS "
        + _lookup(
            "pg_description",
            "objoid || '/' || objsubid || '/' || classoid",
            "o || '/0/' || catalog",
            "description",
        ),
    ),
    (
        "col_description",
        "CREATE TEMP MACRO col_description(r, n) AS "
        + _lookup("pg_description", "objoid || '/' || objsubid", "r || '/' || n", "description"),
    ),
    ("pg_get_serial_sequence", "CREATE TEMP MACRO pg_get_serial_sequence(t, c) AS NULL::VARCHAR"),
    (
        "pg_table_is_visible",
        # visible: in the search path (DuckDB's current schema, then pg_catalog)
        "CREATE TEMP MACRO pg_table_is_visible(r) AS coalesce("
        + _lookup(
            "duckflock_relations JOIN duckflock_namespaces AS n ON n.oid = relnamespace",
            "duckflock_relations.oid",
            "r",
            "nspname IN (current_schema(), 'pg_catalog')",
        )
        + ", false)",
    ),
    (
        "json_build_object",
        # the arities SQLAlchemy's column reflection calls (collation: 2 pairs, identity: 7)
        "CREATE TEMP MACRO json_build_object" + ", ".join(_pairs(n) for n in (1, 2, 7)),
    ),
    (
        "duckflock_setting",
        # current_setting() as clients' catalog queries call it: PostgreSQL's answers
        # (DuckDB's own settings stay unreadable, as the guard wants)
        "CREATE TEMP MACRO duckflock_setting(name) AS CASE name "
        "WHEN 'default_table_access_method' THEN 'duckdb' END, "
        "(name, missing_ok) AS CASE name WHEN 'default_table_access_method' THEN 'duckdb' END",
    ),
]
