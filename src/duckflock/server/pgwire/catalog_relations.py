"""The relations of PostgreSQL's catalog (``pg_class``, ``pg_attribute``, ``pg_type``…,
``information_schema.columns``…) as DuckDB temporary views over DuckDB's own catalog.

Each is ``(name, statement)``; :mod:`catalog` creates the ones a query reads. Helpers
(``duckflock_*``) are temporary tables computed once per query: the relations of the
database (tables, views, sequences, indexes, the indexes behind keys, analyses), their
columns with PostgreSQL's types, constraints and namespaces; the views clients read are
PostgreSQL-shaped selections from them.
"""

from __future__ import annotations

from duckflock.core.project import SCHEMA as OWN_SCHEMA
from duckflock.server.pgwire import types
from duckflock.sql import quote_literal

ANALYSES_SCHEMA = "analyses"
# OIDs duckflock makes up: each range 2**27 wide, all below 2**31 (clients read int4)
ANALYSES_NAMESPACE = 0x3FFF_FFFF
ANALYSIS_BASE, _INDEX_BASE, _CONSTRAINT_BASE = 0x4000_0000, 0x4800_0000, 0x5000_0000
SPAN = 1 << 27
OWNER = 10  # PostgreSQL's bootstrap superuser; pg_get_userbyid names it
OWNER_NAME = "duckflock"
TYPES_TABLE = "duckflock_column_types"  # registered per query: DuckDB type -> (oid, typmod)
ANALYSES_TABLE = "duckflock_analyses"  # registered per query: analysis -> its result's view


def _type_rows() -> str:
    """pg_type's rows, from :data:`types.PG_TYPES`: each type and its array type."""
    rows = []
    for oid, kind in types.PG_TYPES.items():
        rows.append(
            f"({oid}, '{kind.name}', {quote_literal(kind.spelled)}, '{kind.receive}', 0, "
            f"{kind.array}, {kind.size}, '{kind.category}')"
        )
        if kind.array:
            rows.append(
                f"({kind.array}, '_{kind.name}', {quote_literal(kind.spelled)}, "
                f"'array_recv', {oid}, 0, -1, 'A')"
            )
    return ", ".join(rows)


def _oid(base: int, *parts: str) -> str:
    """SQL for a made-up OID: ``base`` plus a hash of ``parts`` joined."""
    return f"({base} + hash(concat_ws('.', {', '.join(parts)})) % {SPAN})::BIGINT"


_MINE = f"database_name = current_database() AND schema_name <> '{OWN_SCHEMA}'"

# (name, statement): in dependency order; each is created when a query names it (or
# names an object that reads it). Names starting with duckflock_ are helpers.
RELATIONS: list[tuple[str, str]] = [
    (
        "duckflock_pg_types",
        "CREATE TEMP TABLE duckflock_pg_types AS SELECT * FROM (VALUES "
        + _type_rows()
        + ") AS t(oid, typname, spelled, typreceive, typelem, typarray, typlen, typcategory)",
    ),
    (
        "duckflock_namespaces",
        "CREATE TEMP TABLE duckflock_namespaces AS "
        f"SELECT oid, schema_name AS nspname FROM duckdb_schemas() WHERE {_MINE} "
        "UNION ALL SELECT oid, schema_name FROM duckdb_schemas() WHERE database_name = 'system' "
        "AND schema_name IN ('pg_catalog', 'information_schema') "
        f"UNION ALL SELECT {ANALYSES_NAMESPACE}, '{ANALYSES_SCHEMA}'",
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
        f"FROM {ANALYSES_TABLE} AS a JOIN duckdb_columns() AS c ON c.database_name = 'temp' "
        "AND c.table_name = a.view_name",
    ),
    (
        "duckflock_columns",
        # … and PostgreSQL's (the types table is made from the column types found above)
        "CREATE TEMP TABLE duckflock_columns AS SELECT c.*, t.atttypid, t.atttypmod "
        f"FROM duckflock_raw_columns AS c JOIN {TYPES_TABLE} AS t ON t.data_type = c.duck_type",
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
        f"UNION ALL SELECT oid, name, {ANALYSES_NAMESPACE}, '{ANALYSES_SCHEMA}', 'r', "
        f"columns, 0, false, rows::FLOAT, NULL, false, false FROM {ANALYSES_TABLE}",
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
        f"{OWNER} AS nspowner, NULL::VARCHAR AS nspacl FROM duckflock_namespaces",
    ),
    (
        "pg_class",
        "CREATE TEMP VIEW pg_class AS SELECT oid, relname, relnamespace, 0 AS reltype, "
        f"0 AS reloftype, {OWNER} AS relowner, CASE relkind WHEN 'i' THEN 2 ELSE 1 END "
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
        f"{OWNER} AS typowner, typlen::SMALLINT AS typlen, typlen > 0 AS typbyval, "
        "'b' AS typtype, typcategory, false AS typispreferred, true AS typisdefined, "
        "',' AS typdelim, "
        "0 AS typrelid, 0 AS typsubscript, typelem, typarray, typname || 'in' AS typinput, "
        "typname || 'out' AS typoutput, typreceive, typname || 'send' AS typsend, "
        "0 AS typmodin, 0 AS typmodout, 0 AS typanalyze, 'i' AS typalign, 'p' AS typstorage, "
        "false AS typnotnull, 0 AS typbasetype, -1 AS typtypmod, 0 AS typndims, "
        "CASE WHEN typcategory = 'S' THEN 100 ELSE 0 END AS typcollation, "
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
        f"{OWNER} AS datdba, 6 AS encoding, 'c' AS datlocprovider, false AS datistemplate, "
        "true AS datallowconn, -1 AS datconnlimit, 0 AS datfrozenxid, 0 AS datminmxid, "
        "0 AS dattablespace, 'C' AS datcollate, 'C' AS datctype, NULL::VARCHAR AS "
        "daticulocale, NULL::VARCHAR AS datcollversion, NULL::VARCHAR[] AS datacl",
    ),
    (
        "pg_proc",
        # the database's own macros (DuckDB's built-in functions are not listed)
        "CREATE TEMP VIEW pg_proc AS SELECT function_oid AS oid, function_name AS proname, "
        "s.oid AS pronamespace, "
        f"{OWNER} AS proowner, 0 AS prolang, 0 AS procost, 0 AS prorows, 0 AS provariadic, "
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
        f"collnamespace, {OWNER} AS collowner, 'd' AS collprovider, true AS "
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
        f"catalog_name, nspname AS schema_name, '{OWNER_NAME}' AS schema_owner, "
        "NULL::VARCHAR AS default_character_set_catalog, NULL::VARCHAR AS "
        "default_character_set_schema, NULL::VARCHAR AS default_character_set_name, "
        "NULL::VARCHAR AS sql_path FROM duckflock_namespaces",
    ),
    (
        "pg_tables",
        f"CREATE TEMP VIEW pg_tables AS SELECT schema_name AS schemaname, relname AS tablename, "
        f"'{OWNER_NAME}' AS tableowner, NULL::VARCHAR AS tablespace, relhasindex AS "
        "hasindexes, false AS hasrules, false AS hastriggers, false AS rowsecurity "
        "FROM duckflock_relations WHERE relkind = 'r'",
    ),
    (
        "pg_views",
        "CREATE TEMP VIEW pg_views AS SELECT v.schema_name AS schemaname, view_name AS "
        f"viewname, '{OWNER_NAME}' AS viewowner, sql AS definition FROM duckdb_views() AS v "
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
]
