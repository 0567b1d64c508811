"""Catalog queries of psql and asyncpg, answered from DuckDB's catalog.

DuckDB's ``pg_catalog`` covers listing (``\\dt`` runs as psql writes it) but lacks what
``\\d table`` asks about a relation (``relforcerowsecurity``, ``attidentity``, policies,
extended statistics, publications, inheritance). Those queries are recognised by what
they select and replaced by SQL over ``duckdb_columns()`` and ``pg_class`` that returns
the same columns. asyncpg asks for the element types of arrays with a recursive query
over ``pg_type`` (``typeinfo_tree``), answered from the array types this port sends; and
it turns JIT off around it (``set_config('jit', …)``), which is a no-op here. ADBC's
driver maps types by their receive functions (``typreceive`` of ``pg_type``), and
SQLAlchemy reflects columns with ``pg_get_serial_sequence``, which DuckDB lacks. Each
replacement is duckflock's own read-only SQL and still runs through the guard.
"""

from __future__ import annotations

import re

from . import types

_OID = r"'(\d+)'"

_TYPE_NAMES = {
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "numeric(38,0)",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "VARCHAR": "text",
    "BLOB": "bytea",
    "DATE": "date",
    "TIME": "time without time zone",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSON": "json",
}


def _type_name(column: str) -> str:
    """SQL giving PostgreSQL's name for the DuckDB type in ``column``."""
    cases = " ".join(f"WHEN '{duck}' THEN '{pg}'" for duck, pg in _TYPE_NAMES.items())
    scalar = (
        f"CASE regexp_replace({column}, '\\[\\]$', '') {cases} "
        f"ELSE replace(lower(regexp_replace({column}, '\\[\\]$', '')), 'decimal', 'numeric') END"
    )
    return f"{scalar} || CASE WHEN {column} LIKE '%[]' THEN '[]' ELSE '' END"


def _empty(count: int) -> str:
    columns = ", ".join(f"NULL::VARCHAR AS c{i}" for i in range(count))
    return f"SELECT {columns} WHERE false"


_ELEMENT_NAMES = {
    types.BOOL: ("bool", "boolean"),
    types.BYTEA: ("bytea", "bytea"),
    types.INT2: ("int2", "smallint"),
    types.INT4: ("int4", "integer"),
    types.TEXT: ("text", "text"),
    types.INT8: ("int8", "bigint"),
    types.FLOAT4: ("float4", "real"),
    types.FLOAT8: ("float8", "double precision"),
    types.JSON: ("json", "json"),
    types.DATE: ("date", "date"),
    types.TIME: ("time", "time without time zone"),
    types.TIMESTAMP: ("timestamp", "timestamp without time zone"),
    types.TIMESTAMPTZ: ("timestamptz", "timestamp with time zone"),
    types.INTERVAL: ("interval", "interval"),
    types.NUMERIC: ("numeric", "numeric"),
    types.UUID: ("uuid", "uuid"),
}


def _asyncpg_types() -> str:
    """asyncpg's type tree for the array types (and their elements) this port sends."""
    rows = []
    for element, array in types.ARRAY_OF.items():
        name, spelled = _ELEMENT_NAMES[element]
        rows.append(f"({array}, '_{name}', {element}, ',', 0, '{spelled}')")
        rows.append(f"({element}, '{name}', NULL, NULL, 1, NULL)")
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


# (oid, name, receive function, array oid): what ADBC's driver maps its Arrow types by
_RECEIVE = [
    (16, "bool", "boolrecv", 1000),
    (17, "bytea", "bytearecv", 1001),
    (18, "char", "charrecv", 1002),
    (19, "name", "namerecv", 1003),
    (20, "int8", "int8recv", 1016),
    (21, "int2", "int2recv", 1005),
    (23, "int4", "int4recv", 1007),
    (25, "text", "textrecv", 1009),
    (26, "oid", "oidrecv", 1028),
    (114, "json", "json_recv", 199),
    (700, "float4", "float4recv", 1021),
    (701, "float8", "float8recv", 1022),
    (1042, "bpchar", "bpcharrecv", 1014),
    (1043, "varchar", "varcharrecv", 1015),
    (1082, "date", "date_recv", 1182),
    (1083, "time", "time_recv", 1183),
    (1114, "timestamp", "timestamp_recv", 1115),
    (1184, "timestamptz", "timestamptz_recv", 1185),
    (1186, "interval", "interval_recv", 1187),
    (1700, "numeric", "numeric_recv", 1231),
    (2950, "uuid", "uuid_recv", 2951),
    (3802, "jsonb", "jsonb_recv", 3807),
]


def _adbc_types() -> str:
    values = ", ".join(f"({o}, '{n}', '{r}', 0, 0, {a})" for o, n, r, a in _RECEIVE)
    return (
        "SELECT * FROM (VALUES "
        + values
        + ") AS t(oid, typname, typreceive, typbasetype, typrelid, typarray)"
    )


def _sqlalchemy_columns(sql: str) -> str | None:
    """SQLAlchemy's column reflection (``inspect(engine).get_columns``): every parameter
    it binds is used, as DuckDB wants, and the tables it names are looked up."""
    names = re.search(r"relname IN \(([^)]*)\)", sql)
    count = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    if names is None or not count:
        return None
    used = " AND ".join(f"(${i} IS NULL OR true)" for i in range(1, count + 1))
    return (
        f"SELECT column_name AS name, {_type_name('data_type')} AS format_type, "
        'column_default AS "default", NOT is_nullable AS not_null, table_name, '
        "comment, '' AS generated, NULL::VARCHAR AS identity_options, "
        "NULL::VARCHAR AS collation FROM duckdb_columns() "
        f"WHERE NOT internal AND database_name = current_database() "
        f"AND table_name IN ({names.group(1)}) AND {used} ORDER BY table_name, column_index"
    )


def describe_query(sql: str) -> str | None:
    """Replacement SQL for one of psql's ``\\d`` queries or asyncpg's type queries, or
    None for any other."""
    if "typeinfo_tree" in sql and "$1" in sql:
        return _asyncpg_types()
    if "set_config('jit'" in sql:
        return "SELECT 'off' AS cur, 'off' AS new"
    if "pg_catalog" not in sql:
        return None
    if "typreceive" in sql and "FROM pg_catalog.pg_type" in sql:
        return _adbc_types()
    if "pg_get_serial_sequence" in sql and "AS identity_options" in sql:
        return _sqlalchemy_columns(sql)
    if "FROM pg_catalog.pg_policy" in sql:
        return _empty(6)
    if "FROM pg_catalog.pg_statistic_ext" in sql:
        return _empty(9)
    if "FROM pg_catalog.pg_publication" in sql:
        return _empty(3)
    if "pg_catalog.pg_inherits" in sql:
        return _empty(4 if "inhdetachpending" in sql else 1)
    return None
