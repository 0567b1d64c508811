"""PostgreSQL's catalog as psql and BI tools read it, answered by DuckDB views and macros.

DuckDB has a ``pg_catalog`` of its own (views over ``duckdb_tables()`` and friends), but
it names types as DuckDB does (``VARCHAR``, ``DOUBLE``), lists duckflock's own schema,
knows no primary-key indexes and lacks what psql's ``\\l``, ``\\dt+``, ``\\d table`` and
``\\df`` call (``pg_encoding_to_char``, ``pg_get_indexdef``, ``pg_get_function_result``…).
Here each relation and function clients read is a DuckDB temporary view or macro,
created on the query's own cursor just before a catalog query runs (only those the
query names, with what they read): the client's SQL runs as it was sent, with
``pg_catalog.`` left off the names defined here (a temporary object comes first in
DuckDB's search path, as ``pg_catalog`` does in PostgreSQL's) and
``information_schema.x`` read from the view ``information_schema_x``.

Types are named from one table, :data:`types.PG_TYPES`: a column's type is the OID its
values are sent with (:func:`types.column_type`), except that VARCHAR is PostgreSQL's
``character varying`` (an unbounded VARCHAR) rather than the ``text`` it travels as.
The schema ``duckflock`` (duckflock's own bookkeeping) is left out; analyses are tables
of the schema ``analyses``, with their latest result's columns. Relations DuckDB has no
object for (the index behind a primary key, an analysis) get OIDs from a hash of their
name in ranges above DuckDB's own counter, so they are the same on every connection.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import duckdb

from ...database import Database
from ...definitions import SCHEMA as OWN_SCHEMA
from ...wide import readable
from . import types

ANALYSES_SCHEMA = "analyses"
# OIDs duckflock makes up: each range 2**27 wide, all below 2**31 (clients read int4)
_ANALYSES_NAMESPACE = 0x3FFF_FFFF
_ANALYSIS_BASE, _INDEX_BASE, _CONSTRAINT_BASE = 0x4000_0000, 0x4800_0000, 0x5000_0000
_SPAN = 1 << 27
_OWNER = 10  # PostgreSQL's bootstrap superuser; pg_get_userbyid names it
_OWNER_NAME = "duckflock"
_TYPES = "duckflock_column_types"  # registered per query: DuckDB type -> (oid, typmod)
_ANALYSES = "duckflock_analyses"  # registered per query: analysis -> its result's view


def catalog_type(duck_type: str) -> tuple[int, int]:
    """``(atttypid, atttypmod)`` of a column of DuckDB type ``duck_type``."""
    element = duck_type.removesuffix("[]")
    if element == "VARCHAR":  # travels as text; PostgreSQL's unbounded VARCHAR
        oid = types.VARCHAR if element == duck_type else types.PG_TYPES[types.VARCHAR].array
    else:
        oid = types.column_type(duck_type).oid
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", element)
    typmod = ((int(decimal.group(1)) << 16) | int(decimal.group(2))) + 4 if decimal else -1
    return oid, typmod


def _type_rows() -> str:
    """pg_type's rows, from :data:`types.PG_TYPES`: each type and its array type."""
    rows = []
    for oid, kind in types.PG_TYPES.items():
        rows.append(
            f"({oid}, '{kind.name}', '{kind.spelled.replace(chr(39), chr(39) * 2)}', "
            f"'{kind.receive}', 0, {kind.array}, {types.TYPE_SIZE.get(oid, -1)})"
        )
        if kind.array:
            rows.append(
                f"({kind.array}, '_{kind.name}', '{kind.spelled.replace(chr(39), chr(39) * 2)}', "
                f"'array_recv', {oid}, 0, -1)"
            )
    return ", ".join(rows)


def _oid(base: int, *parts: str) -> str:
    """SQL for a made-up OID: ``base`` plus a hash of ``parts`` joined."""
    return f"({base} + hash(concat_ws('.', {', '.join(parts)})) % {_SPAN})::BIGINT"


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


_CATEGORY = {  # pg_type.typcategory; U (user-defined) for the rest
    "N": (types.INT2, types.INT4, types.INT8, types.FLOAT4, types.FLOAT8, types.NUMERIC, types.OID),
    "S": (types.TEXT, types.VARCHAR, types.BPCHAR, types.NAME),
    "B": (types.BOOL,),
    "D": (types.DATE, types.TIME, types.TIMESTAMP, types.TIMESTAMPTZ, types.TIMETZ),
    "T": (types.INTERVAL,),
    "Z": (types.CHAR,),
    "X": (types.UNKNOWN,),
}
_CATEGORY_SQL = " ".join(
    f"WHEN t.oid IN ({', '.join(map(str, oids))}) THEN '{letter}'"
    for letter, oids in _CATEGORY.items()
)
_MINE = f"database_name = current_database() AND schema_name <> '{OWN_SCHEMA}'"

# (name, statement): in dependency order; each is created when a query names it (or
# names an object that reads it). Names starting with duckflock_ are helpers.
_OBJECTS: list[tuple[str, str]] = [
    (
        "duckflock_pg_types",
        "CREATE TEMP TABLE duckflock_pg_types AS SELECT * FROM (VALUES "
        + _type_rows()
        + ") AS t(oid, typname, spelled, typreceive, typelem, typarray, typlen)",
    ),
    (
        "duckflock_namespaces",
        "CREATE TEMP TABLE duckflock_namespaces AS "
        f"SELECT oid, schema_name AS nspname FROM duckdb_schemas() WHERE {_MINE} "
        "UNION ALL SELECT oid, schema_name FROM duckdb_schemas() WHERE database_name = 'system' "
        "AND schema_name IN ('pg_catalog', 'information_schema') "
        f"UNION ALL SELECT {_ANALYSES_NAMESPACE}, '{ANALYSES_SCHEMA}'",
    ),
    (
        "duckflock_raw_columns",
        # every column of a relation clients see, with DuckDB's type
        "CREATE TEMP TABLE duckflock_raw_columns AS "
        "SELECT table_oid AS attrelid, schema_name, table_name, column_name, "
        "column_index, data_type AS duck_type, is_nullable, column_default, "
        "numeric_precision, numeric_precision_radix, numeric_scale, "
        f"character_maximum_length, comment FROM duckdb_columns() WHERE {_MINE} "
        f"UNION ALL SELECT a.oid, '{ANALYSES_SCHEMA}', a.name, c.column_name, c.column_index, "
        "c.data_type, true, NULL, c.numeric_precision, c.numeric_precision_radix, "
        "c.numeric_scale, c.character_maximum_length, NULL "
        f"FROM {_ANALYSES} AS a JOIN duckdb_columns() AS c ON c.database_name = 'temp' "
        "AND c.table_name = a.view_name",
    ),
    (
        "duckflock_columns",
        # … and PostgreSQL's (the types table is made from the column types found above)
        "CREATE TEMP TABLE duckflock_columns AS SELECT c.*, t.atttypid, t.atttypmod "
        f"FROM duckflock_raw_columns AS c JOIN {_TYPES} AS t ON t.data_type = c.duck_type",
    ),
    (
        "duckflock_constraints",
        "CREATE TEMP TABLE duckflock_constraints AS SELECT "
        + _oid(_CONSTRAINT_BASE, "schema_name", "table_name", "constraint_name")
        + " AS oid, "
        + _oid(_INDEX_BASE, "schema_name", "table_name", "constraint_name")
        + " AS index_oid, constraint_name AS conname, schema_oid AS connamespace, "
        "schema_name, table_name, table_oid AS conrelid, "
        "CASE constraint_type WHEN 'CHECK' THEN 'c' WHEN 'UNIQUE' THEN 'u' "
        "WHEN 'PRIMARY KEY' THEN 'p' WHEN 'FOREIGN KEY' THEN 'f' END AS contype, "
        "list_transform(constraint_column_indexes, i -> (i + 1)::SMALLINT) AS conkey, "
        "constraint_column_names, referenced_table, referenced_column_names, "
        "CASE WHEN constraint_type IN ('PRIMARY KEY', 'UNIQUE') THEN constraint_type || ' (' "
        "|| array_to_string(constraint_column_names, ', ') || ')' "
        # PostgreSQL's spelling: the referenced table qualified unless in the search path
        "WHEN constraint_type = 'FOREIGN KEY' THEN 'FOREIGN KEY (' "
        "|| array_to_string(constraint_column_names, ', ') || ') REFERENCES ' "
        "|| CASE WHEN schema_name = current_schema() THEN '' ELSE schema_name || '.' END "
        "|| referenced_table || '(' || array_to_string(referenced_column_names, ', ') || ')' "
        "ELSE constraint_text END AS condef, expression "
        f"FROM duckdb_constraints() WHERE {_MINE} AND constraint_type <> 'NOT NULL'",
    ),
    (
        "duckflock_relations",
        # tables, views, sequences, indexes (and those behind keys), analyses
        "CREATE TEMP TABLE duckflock_relations AS "
        "SELECT table_oid AS oid, table_name AS relname, schema_oid AS relnamespace, "
        "schema_name, 'r' AS relkind, column_count AS relnatts, "
        # an index listed in pg_index (DuckDB's own behind a foreign key is not)
        "check_constraint_count AS relchecks, (table_oid IN (SELECT conrelid FROM "
        "duckflock_constraints WHERE contype IN ('p', 'u')) OR table_oid IN "
        "(SELECT table_oid FROM duckdb_indexes())) AS relhasindex, "
        "estimated_size::FLOAT AS reltuples, comment, temporary, "
        # a foreign key from or to it: psql's \\d then lists them
        "(table_oid IN (SELECT conrelid FROM duckflock_constraints WHERE contype = 'f') OR "
        "[schema_name, table_name] IN (SELECT [schema_name, referenced_table] FROM "
        "duckflock_constraints WHERE contype = 'f')) AS relhastriggers "
        f"FROM duckdb_tables() WHERE {_MINE} "
        "UNION ALL SELECT view_oid, view_name, schema_oid, schema_name, 'v', column_count, 0, "
        "false, 0, comment, temporary, false FROM duckdb_views() "
        f"WHERE {_MINE} AND NOT internal "
        "UNION ALL SELECT sequence_oid, sequence_name, schema_oid, schema_name, 'S', 0, 0, "
        f"false, 0, comment, temporary, false FROM duckdb_sequences() WHERE {_MINE} "
        "UNION ALL SELECT index_oid, index_name, schema_oid, schema_name, 'i', 0, 0, false, "
        f"0, comment, false, false FROM duckdb_indexes() WHERE {_MINE} "
        "UNION ALL SELECT index_oid, conname, connamespace, schema_name, 'i', "
        "len(conkey), 0, false, 0, NULL, false, false FROM duckflock_constraints "
        "WHERE contype IN ('p', 'u') "
        f"UNION ALL SELECT oid, name, {_ANALYSES_NAMESPACE}, '{ANALYSES_SCHEMA}', 'r', "
        f"columns, 0, false, rows::FLOAT, NULL, false, false FROM {_ANALYSES}",
    ),
    (
        "duckflock_indexes",
        "CREATE TEMP TABLE duckflock_indexes AS "
        "SELECT index_oid AS indexrelid, conrelid AS indrelid, contype = 'p' AS indisprimary, "
        "true AS indisunique, conkey AS indkey, 'CREATE UNIQUE INDEX ' || conname || ' ON ' "
        "|| schema_name || '.' || table_name || ' USING art (' "
        "|| array_to_string(constraint_column_names, ', ') || ')' AS indexdef "
        "FROM duckflock_constraints WHERE contype IN ('p', 'u') "
        "UNION ALL SELECT index_oid, table_oid, false, is_unique, []::SMALLINT[], "
        "'CREATE ' || CASE WHEN is_unique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' "
        "|| index_name || ' ON ' || schema_name || '.' || table_name || ' USING art (' "
        f"|| trim(expressions, '[]') || ')' FROM duckdb_indexes() WHERE {_MINE}",
    ),
    (
        "pg_namespace",
        "CREATE TEMP VIEW pg_namespace AS SELECT oid, nspname, "
        f"{_OWNER} AS nspowner, NULL::VARCHAR AS nspacl FROM duckflock_namespaces",
    ),
    (
        "pg_class",
        "CREATE TEMP VIEW pg_class AS SELECT oid, relname, relnamespace, 0 AS reltype, "
        f"0 AS reloftype, {_OWNER} AS relowner, CASE relkind WHEN 'i' THEN 2 ELSE 1 END "
        "AS relam, 0 AS relfilenode, 0 AS reltablespace, 0 AS relpages, reltuples, "
        "0 AS relallvisible, 0 AS reltoastrelid, relhasindex, false AS relisshared, "
        "CASE WHEN temporary THEN 't' ELSE 'p' END AS relpersistence, relkind, relnatts, "
        "relchecks, false AS relhasrules, relhastriggers, false AS relhassubclass, "
        "false AS relrowsecurity, false AS relforcerowsecurity, true AS relispopulated, "
        "'d' AS relreplident, false AS relispartition, 0 AS relrewrite, 0 AS relfrozenxid, "
        "0 AS relminmxid, NULL::VARCHAR[] AS relacl, NULL::VARCHAR[] AS reloptions, "
        "NULL::VARCHAR AS relpartbound FROM duckflock_relations",
    ),
    (
        "pg_attribute",
        "CREATE TEMP VIEW pg_attribute AS SELECT attrelid, column_name AS attname, "
        "atttypid, -1 AS attstattarget, coalesce(t.typlen, -1)::SMALLINT AS attlen, "
        "column_index::SMALLINT AS attnum, CASE WHEN duck_type LIKE '%[]' THEN 1 ELSE 0 END "
        "AS attndims, -1 AS attcacheoff, atttypmod, false AS attbyval, "
        "CASE WHEN t.typlen > 0 THEN 'p' ELSE 'x' END AS attstorage, "
        "'i' AS attalign, NOT is_nullable AS attnotnull, column_default IS NOT NULL AS "
        "atthasdef, false AS atthasmissing, '' AS attidentity, '' AS attgenerated, "
        "false AS attisdropped, true AS attislocal, 0 AS attinhcount, 0 AS attcollation, "
        "'' AS attcompression, "
        "NULL::VARCHAR[] AS attacl, NULL::VARCHAR[] AS attoptions, "
        "NULL::VARCHAR[] AS attfdwoptions, NULL::VARCHAR AS attmissingval "
        "FROM duckflock_columns LEFT JOIN duckflock_pg_types AS t ON t.oid = atttypid",
    ),
    (
        "pg_attrdef",
        "CREATE TEMP VIEW pg_attrdef AS SELECT attrelid * 10000 + column_index AS oid, "
        "attrelid AS adrelid, column_index::SMALLINT AS adnum, column_default AS adbin "
        "FROM duckflock_columns WHERE column_default IS NOT NULL",
    ),
    (
        "pg_type",
        "CREATE TEMP VIEW pg_type AS SELECT t.oid, typname, "
        "(SELECT oid FROM duckflock_namespaces WHERE nspname = 'pg_catalog') AS typnamespace, "
        f"{_OWNER} AS typowner, typlen::SMALLINT AS typlen, typlen > 0 AS typbyval, "
        f"'b' AS typtype, CASE WHEN typelem <> 0 THEN 'A' {_CATEGORY_SQL} ELSE 'U' END "
        "AS typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim, "
        "0 AS typrelid, 0 AS typsubscript, typelem, typarray, typname || 'in' AS typinput, "
        "typname || 'out' AS typoutput, typreceive, typname || 'send' AS typsend, "
        "0 AS typmodin, 0 AS typmodout, 0 AS typanalyze, 'i' AS typalign, 'p' AS typstorage, "
        "false AS typnotnull, 0 AS typbasetype, -1 AS typtypmod, 0 AS typndims, "
        "CASE WHEN t.oid IN (25, 1043, 1042, 19) THEN 100 ELSE 0 END AS typcollation, "
        "NULL::VARCHAR AS typdefaultbin, NULL::VARCHAR AS typdefault, "
        "NULL::VARCHAR[] AS typacl FROM duckflock_pg_types AS t",
    ),
    (
        "pg_constraint",
        "CREATE TEMP VIEW pg_constraint AS SELECT oid, conname, connamespace, contype, "
        "false AS condeferrable, false AS condeferred, true AS convalidated, conrelid, "
        "0 AS contypid, CASE WHEN contype IN ('p', 'u') THEN index_oid ELSE 0 END AS conindid, "
        "0 AS conparentid, coalesce((SELECT r.oid FROM duckflock_relations r WHERE "
        "r.relname = referenced_table AND r.schema_name = k.schema_name AND r.relkind = 'r'), "
        "0) AS confrelid, 'a' AS confupdtype, 'a' AS confdeltype, 's' AS confmatchtype, "
        "true AS conislocal, 0 AS coninhcount, true AS connoinherit, conkey, "
        "NULL::SMALLINT[] AS confkey, NULL::BIGINT[] AS conpfeqop, NULL::BIGINT[] AS conppeqop, "
        "NULL::BIGINT[] AS conffeqop, NULL::BIGINT[] AS conexclop, expression AS conbin "
        "FROM duckflock_constraints AS k",
    ),
    (
        "pg_index",
        "CREATE TEMP VIEW pg_index AS SELECT indexrelid, indrelid, len(indkey)::SMALLINT "
        "AS indnatts, len(indkey)::SMALLINT AS indnkeyatts, indisunique, "
        "false AS indnullsnotdistinct, indisprimary, false AS indisexclusion, "
        "true AS indimmediate, false AS indisclustered, true AS indisvalid, "
        "false AS indcheckxmin, true AS indisready, true AS indislive, "
        "false AS indisreplident, indkey, list_transform(indkey, k -> 0) AS indcollation, "
        "list_transform(indkey, k -> 0) AS indclass, "
        # an int2vector travels as text ('0 0'): SQLAlchemy splits it
        "array_to_string(list_transform(indkey, k -> 0), ' ') AS indoption, "
        "NULL::VARCHAR AS indexprs, NULL::VARCHAR AS indpred "
        "FROM duckflock_indexes",
    ),
    (
        "pg_am",
        "CREATE TEMP VIEW pg_am AS SELECT * FROM (VALUES (1, 'duckdb', 0, 't'), "
        "(2, 'art', 0, 'i')) AS a(oid, amname, amhandler, amtype)",
    ),
    (
        "pg_database",
        "CREATE TEMP VIEW pg_database AS SELECT 1 AS oid, current_database() AS datname, "
        f"{_OWNER} AS datdba, 6 AS encoding, 'c' AS datlocprovider, false AS datistemplate, "
        "true AS datallowconn, -1 AS datconnlimit, 0 AS datfrozenxid, 0 AS datminmxid, "
        "0 AS dattablespace, 'C' AS datcollate, 'C' AS datctype, NULL::VARCHAR AS "
        "daticulocale, NULL::VARCHAR AS datcollversion, NULL::VARCHAR[] AS datacl",
    ),
    (
        "pg_proc",
        # the database's own macros (DuckDB's built-in functions are not listed)
        "CREATE TEMP VIEW pg_proc AS SELECT function_oid AS oid, function_name AS proname, "
        "s.oid AS pronamespace, "
        f"{_OWNER} AS proowner, 0 AS prolang, 0 AS procost, 0 AS prorows, 0 AS provariadic, "
        "0 AS prosupport, 'f' AS prokind, false AS prosecdef, false AS proleakproof, "
        "false AS proisstrict, function_type = 'table_macro' AS proretset, 'v' AS provolatile, "
        "'u' AS proparallel, len(parameters)::SMALLINT AS pronargs, "
        "0::SMALLINT AS pronargdefaults, 0 AS prorettype, NULL::BIGINT[] AS proargtypes, "
        "NULL::BIGINT[] AS proallargtypes, NULL::VARCHAR[] AS proargmodes, "
        "parameters AS proargnames, NULL::VARCHAR AS proargdefaults, "
        "NULL::BIGINT[] AS protrftypes, macro_definition AS prosrc, NULL::VARCHAR AS probin, "
        "NULL::VARCHAR AS prosqlbody, NULL::VARCHAR[] AS proconfig, NULL::VARCHAR[] AS proacl "
        "FROM duckdb_functions() AS f "
        "JOIN duckdb_schemas() AS s USING (database_name, schema_name) "
        "WHERE f.database_name = current_database() AND NOT f.internal",
    ),
    (
        "pg_description",
        "CREATE TEMP VIEW pg_description AS SELECT oid AS objoid, 'pg_class' AS classoid, "
        "0 AS objsubid, comment AS description FROM duckflock_relations "
        "WHERE comment IS NOT NULL UNION ALL SELECT attrelid, 'pg_class', column_index, "
        "comment FROM duckflock_columns WHERE comment IS NOT NULL",
    ),
    (
        "pg_inherits",
        "CREATE TEMP VIEW pg_inherits AS SELECT 0 AS inhrelid, 0 AS inhparent, "
        "0 AS inhseqno, false AS inhdetachpending WHERE false",
    ),
    (
        "pg_collation",
        "CREATE TEMP VIEW pg_collation AS SELECT 100 AS oid, 'default' AS collname, "
        "(SELECT oid FROM duckflock_namespaces WHERE nspname = 'pg_catalog') AS "
        f"collnamespace, {_OWNER} AS collowner, 'd' AS collprovider, true AS "
        "collisdeterministic, -1 AS collencoding, NULL::VARCHAR AS collcollate, "
        "NULL::VARCHAR AS collctype",
    ),
    (
        "pg_opclass",
        "CREATE TEMP VIEW pg_opclass AS SELECT 0 AS oid, 'art_ops' AS opcname, "
        "true AS opcdefault WHERE false",
    ),
    (
        "information_schema_tables",
        "CREATE TEMP VIEW information_schema_tables AS SELECT current_database() AS "
        "table_catalog, schema_name AS table_schema, relname AS table_name, "
        "CASE WHEN relkind = 'v' THEN 'VIEW' WHEN temporary THEN 'LOCAL TEMPORARY' "
        "ELSE 'BASE TABLE' END AS table_type, NULL::VARCHAR AS self_referencing_column_name, "
        "NULL::VARCHAR AS reference_generation, NULL::VARCHAR AS user_defined_type_catalog, "
        "NULL::VARCHAR AS user_defined_type_schema, NULL::VARCHAR AS user_defined_type_name, "
        f"CASE WHEN relkind = 'r' AND schema_name <> '{ANALYSES_SCHEMA}' THEN 'YES' ELSE 'NO' "
        "END AS is_insertable_into, 'NO' AS is_typed, NULL::VARCHAR AS commit_action "
        "FROM duckflock_relations WHERE relkind IN ('r', 'v')",
    ),
    (
        "information_schema_columns",
        "CREATE TEMP VIEW information_schema_columns AS SELECT current_database() AS "
        "table_catalog, schema_name AS table_schema, table_name, column_name, "
        "column_index AS ordinal_position, column_default, "
        "CASE WHEN is_nullable THEN 'YES' ELSE 'NO' END AS is_nullable, "
        "CASE WHEN t.typelem <> 0 THEN 'ARRAY' ELSE t.spelled END AS data_type, "
        "character_maximum_length, NULL::INTEGER AS character_octet_length, "
        "numeric_precision, numeric_precision_radix, numeric_scale, "
        "NULL::INTEGER AS datetime_precision, NULL::VARCHAR AS interval_type, "
        "NULL::INTEGER AS interval_precision, NULL::VARCHAR AS character_set_catalog, "
        "NULL::VARCHAR AS character_set_schema, NULL::VARCHAR AS character_set_name, "
        "NULL::VARCHAR AS collation_catalog, NULL::VARCHAR AS collation_schema, "
        "NULL::VARCHAR AS collation_name, NULL::VARCHAR AS domain_catalog, "
        "NULL::VARCHAR AS domain_schema, NULL::VARCHAR AS domain_name, "
        "current_database() AS udt_catalog, 'pg_catalog' AS udt_schema, "
        "t.typname AS udt_name, NULL::VARCHAR AS scope_catalog, NULL::VARCHAR AS "
        "scope_schema, NULL::VARCHAR AS scope_name, NULL::INTEGER AS maximum_cardinality, "
        "column_index::VARCHAR AS dtd_identifier, 'NO' AS is_self_referencing, "
        "'NO' AS is_identity, NULL::VARCHAR AS identity_generation, "
        "NULL::VARCHAR AS identity_start, NULL::VARCHAR AS identity_increment, "
        "NULL::VARCHAR AS identity_maximum, NULL::VARCHAR AS identity_minimum, "
        "'NO' AS identity_cycle, 'NEVER' AS is_generated, "
        "NULL::VARCHAR AS generation_expression, "
        f"CASE WHEN schema_name = '{ANALYSES_SCHEMA}' THEN 'NO' ELSE 'YES' END AS is_updatable "
        "FROM duckflock_columns LEFT JOIN duckflock_pg_types AS t ON t.oid = atttypid",
    ),
    (
        "information_schema_schemata",
        "CREATE TEMP VIEW information_schema_schemata AS SELECT current_database() AS "
        f"catalog_name, nspname AS schema_name, '{_OWNER_NAME}' AS schema_owner, "
        "NULL::VARCHAR AS default_character_set_catalog, NULL::VARCHAR AS "
        "default_character_set_schema, NULL::VARCHAR AS default_character_set_name, "
        "NULL::VARCHAR AS sql_path FROM duckflock_namespaces",
    ),
    (
        "pg_tables",
        f"CREATE TEMP VIEW pg_tables AS SELECT schema_name AS schemaname, relname AS tablename, "
        f"'{_OWNER_NAME}' AS tableowner, NULL::VARCHAR AS tablespace, relhasindex AS "
        "hasindexes, false AS hasrules, false AS hastriggers, false AS rowsecurity "
        "FROM duckflock_relations WHERE relkind = 'r'",
    ),
    (
        "pg_views",
        "CREATE TEMP VIEW pg_views AS SELECT v.schema_name AS schemaname, view_name AS "
        f"viewname, '{_OWNER_NAME}' AS viewowner, sql AS definition FROM duckdb_views() AS v "
        f"WHERE v.{_MINE.replace(' AND ', ' AND v.')} AND NOT internal",
    ),
    (
        "pg_indexes",
        "CREATE TEMP VIEW pg_indexes AS SELECT t.schema_name AS schemaname, t.relname AS "
        "tablename, i.relname AS indexname, NULL::VARCHAR AS tablespace, indexdef "
        "FROM duckflock_indexes AS x JOIN duckflock_relations AS t ON t.oid = x.indrelid "
        "JOIN duckflock_relations AS i ON i.oid = x.indexrelid",
    ),
    (
        "information_schema_views",
        "CREATE TEMP VIEW information_schema_views AS SELECT current_database() AS "
        "table_catalog, schema_name AS table_schema, view_name AS table_name, "
        "sql AS view_definition, 'NONE' AS check_option, 'NO' AS is_updatable, "
        "'NO' AS is_insertable_into, 'NO' AS is_trigger_updatable, "
        "'NO' AS is_trigger_deletable, 'NO' AS is_trigger_insertable_into "
        f"FROM duckdb_views() WHERE {_MINE} AND NOT internal",
    ),
    (
        "information_schema_table_constraints",
        "CREATE TEMP VIEW information_schema_table_constraints AS SELECT current_database() "
        "AS constraint_catalog, schema_name AS constraint_schema, conname AS constraint_name, "
        "current_database() AS table_catalog, schema_name AS table_schema, table_name, "
        "CASE contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'u' THEN 'UNIQUE' "
        "WHEN 'f' THEN 'FOREIGN KEY' ELSE 'CHECK' END AS constraint_type, "
        "'NO' AS is_deferrable, 'NO' AS initially_deferred, 'YES' AS enforced, "
        "CASE WHEN contype IN ('p', 'u') THEN 'YES' END AS nulls_distinct "
        "FROM duckflock_constraints",
    ),
    (
        "information_schema_key_column_usage",
        "CREATE TEMP VIEW information_schema_key_column_usage AS SELECT current_database() "
        "AS constraint_catalog, schema_name AS constraint_schema, conname AS constraint_name, "
        "current_database() AS table_catalog, schema_name AS table_schema, table_name, "
        "unnest(constraint_column_names) AS column_name, "
        "unnest(range(1, len(constraint_column_names) + 1)) AS ordinal_position, "
        "CASE WHEN contype = 'f' THEN unnest(range(1, len(constraint_column_names) + 1)) END "
        "AS position_in_unique_constraint FROM duckflock_constraints "
        "WHERE contype IN ('p', 'u', 'f')",
    ),
    # functions psql and drivers call; a lookup names its columns duckflock_* so that an
    # argument (a column of the caller's query: indexrelid, c.oid) is never captured
    (
        "format_type",
        "CREATE TEMP MACRO format_type(type_oid, typmod) AS "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "spelled")
        + " || CASE WHEN "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "coalesce(nullif(typelem, 0), oid)")
        + f" = {types.NUMERIC} AND typmod >= 4 THEN '(' || ((typmod - 4) >> 16) || ',' "
        "|| ((typmod - 4) & 65535) || ')' ELSE '' END || CASE WHEN "
        + _lookup("duckflock_pg_types", "oid", "type_oid", "typelem <> 0")
        + " THEN '[]' ELSE '' END",
    ),
    (
        "pg_encoding_to_char",
        "CREATE TEMP MACRO pg_encoding_to_char(e) AS CASE WHEN e = 6 THEN 'UTF8' ELSE '' END",
    ),
    ("pg_get_userbyid", f"CREATE TEMP MACRO pg_get_userbyid(r) AS '{_OWNER_NAME}'"),
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
_STATEMENTS = dict(_OBJECTS)
_HELPERS = (_ANALYSES, _TYPES)
_WORDS = re.compile(r"\w+")


def _named(text: str) -> set[str]:
    return {w for w in _WORDS.findall(text) if w in _STATEMENTS or w in _HELPERS}


_READS = {name: _named(statement) - {name} for name, statement in _OBJECTS}
_READS[_TYPES] = {"duckflock_raw_columns"}
_ORDER = [_ANALYSES, *_STATEMENTS]  # the order objects are made in
_ORDER.insert(_ORDER.index("duckflock_raw_columns") + 1, _TYPES)
# every name above contains one of these
_MARKERS = ("pg_", "information_schema", "format_type", "_description", "json_build", "duckflock_")
assert all(any(m in name for m in _MARKERS) for name in [*_STATEMENTS, *_HELPERS])
_PG_NAMES = [n for n, _ in _OBJECTS if not n.startswith(("duckflock_", "information_schema_"))]
_QUALIFIED = re.compile(
    r"(?<![\w.\"])pg_catalog\s*\.\s*(" + "|".join(_PG_NAMES) + r")\b"
    r"|(?<![\w.\"])information_schema\s*\.\s*("
    + "|".join(
        n.removeprefix("information_schema_")
        for n, _ in _OBJECTS
        if n.startswith("information_schema_")
    )
    + r")\b",
    re.I,
)


def _renamed(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1).lower()
    return f"information_schema_{match.group(2).lower()}"


def rename(sql: str) -> str:
    """``sql`` (code, outside literals) reading the catalog defined here: ``pg_catalog.``
    left off the names it defines, ``information_schema.x`` as ``information_schema_x``."""
    return _QUALIFIED.sub(_renamed, sql)


def needed(sql: str) -> list[str]:
    """The objects ``sql`` reads, with those they read, in the order they are created."""
    lowered = sql.lower()
    if not any(marker in lowered for marker in _MARKERS):
        return []  # most SQL: one pass over the text, no word list
    found = _named(sql)
    todo = list(found)
    while todo:
        for name in _READS.get(todo.pop(), ()):
            if name not in found:
                found.add(name)
                todo.append(name)
    return [name for name in _ORDER if name in found]


def install(cursor: duckdb.DuckDBPyConnection, sql: str, db: Database) -> None:
    """Create on ``cursor`` the catalog objects ``sql`` reads (nothing for other SQL)."""
    for name in needed(sql):
        if name == _ANALYSES:
            _register_analyses(cursor, db)
        elif name == _TYPES:
            _register_types(cursor)
        else:
            cursor.execute(_STATEMENTS[name])


def analysis_oid(name: str) -> int:
    """The made-up OID of an analysis's table: the same on every connection."""
    return _ANALYSIS_BASE + zlib.crc32(name.encode()) % _SPAN


def _register_analyses(cursor: duckdb.DuckDBPyConnection, db: Database) -> None:
    """Each analysis with a result as an empty view of its columns, and a table naming
    them (its name, OID, column and row counts)."""
    rows: list[tuple[str, str, int, int, int]] = []
    for status in db.analyses():
        result = db.result(str(status["name"]))
        if result is None:
            continue  # no columns to show before its first result
        view = f"duckflock_analysis_{len(rows)}"
        cursor.register(view, readable(result.table).slice(0, 0))
        table = result.table
        rows.append(
            (result.name, view, analysis_oid(result.name), table.num_columns, table.num_rows)
        )
    _table(
        cursor,
        _ANALYSES,
        ("name", "view_name", "oid", "columns", "rows"),
        ("VARCHAR", "VARCHAR", "BIGINT", "BIGINT", "BIGINT"),
        rows,
    )


def _register_types(cursor: duckdb.DuckDBPyConnection) -> None:
    """Each DuckDB type a column has, with its PostgreSQL OID and typmod."""
    found = cursor.execute("SELECT DISTINCT duck_type FROM duckflock_raw_columns").fetchall()
    rows = [(str(row[0]), *catalog_type(str(row[0]))) for row in found]
    _table(
        cursor,
        _TYPES,
        ("data_type", "atttypid", "atttypmod"),
        ("VARCHAR", "BIGINT", "INTEGER"),
        rows,
    )


def _table(
    cursor: duckdb.DuckDBPyConnection,
    name: str,
    columns: tuple[str, ...],
    kinds: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """A temporary table of ``rows`` (not a registered Arrow table: DuckDB 1.5.5 cannot
    push a join's bloom filter into an Arrow scan)."""
    select = ", ".join(
        f"unnest(?::{kind}[]) AS {column}" for column, kind in zip(columns, kinds, strict=True)
    )
    values = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
    cursor.execute(f"CREATE TEMP TABLE {name} AS SELECT {select}", values)
