"""The one table of PostgreSQL types this port knows: name, OID, array OID, size.

Every other list of types is derived from it: pg_type and format_type
(:mod:`..catalog_relations`), the parameter casts (:mod:`..compat`), the type lists ADBC
and asyncpg ask for (:mod:`..clients`), the wire's array types (:mod:`.registry`). A test
checks it against psycopg's own table (``psycopg.postgres.types``) and, through the
catalog, against a real PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Oid(IntEnum):
    """pg_type.oid of the built-in types this port names (an ``int`` on the wire)."""

    UNSPECIFIED = 0  # a Bind parameter whose type the client left to the server
    BOOL = 16
    BYTEA = 17
    CHAR = 18
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    JSON = 114
    FLOAT4 = 700
    FLOAT8 = 701
    UNKNOWN = 705
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    TIMETZ = 1266
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


@dataclass(frozen=True)
class PgType:
    """A built-in type as PostgreSQL's catalog names it."""

    name: str  # pg_type.typname, information_schema's udt_name
    spelled: str  # format_type's spelling, information_schema's data_type
    receive: str  # pg_type.typreceive (ADBC maps types by it)
    array: int  # pg_type.typarray: the OID of its array type (0: none)
    size: int  # pg_type.typlen: bytes, -1 for variable length
    category: str = "U"  # pg_type.typcategory (U: user-defined, PostgreSQL's default)


PG_TYPES: dict[int, PgType] = {  # keyed by Oid members
    Oid.BOOL: PgType("bool", "boolean", "boolrecv", 1000, 1, "B"),
    Oid.BYTEA: PgType("bytea", "bytea", "bytearecv", 1001, -1),
    Oid.CHAR: PgType("char", '"char"', "charrecv", 1002, -1, "Z"),
    Oid.NAME: PgType("name", "name", "namerecv", 1003, -1, "S"),
    Oid.INT8: PgType("int8", "bigint", "int8recv", 1016, 8, "N"),
    Oid.INT2: PgType("int2", "smallint", "int2recv", 1005, 2, "N"),
    Oid.INT4: PgType("int4", "integer", "int4recv", 1007, 4, "N"),
    Oid.TEXT: PgType("text", "text", "textrecv", 1009, -1, "S"),
    Oid.OID: PgType("oid", "oid", "oidrecv", 1028, -1, "N"),
    Oid.JSON: PgType("json", "json", "json_recv", 199, -1),
    Oid.FLOAT4: PgType("float4", "real", "float4recv", 1021, 4, "N"),
    Oid.FLOAT8: PgType("float8", "double precision", "float8recv", 1022, 8, "N"),
    Oid.UNKNOWN: PgType("unknown", "unknown", "unknownrecv", 0, -1, "X"),
    Oid.BPCHAR: PgType("bpchar", "character", "bpcharrecv", 1014, -1, "S"),
    Oid.VARCHAR: PgType("varchar", "character varying", "varcharrecv", 1015, -1, "S"),
    Oid.DATE: PgType("date", "date", "date_recv", 1182, 4, "D"),
    Oid.TIME: PgType("time", "time without time zone", "time_recv", 1183, 8, "D"),
    Oid.TIMESTAMP: PgType(
        "timestamp", "timestamp without time zone", "timestamp_recv", 1115, 8, "D"
    ),
    Oid.TIMESTAMPTZ: PgType(
        "timestamptz", "timestamp with time zone", "timestamptz_recv", 1185, 8, "D"
    ),
    Oid.INTERVAL: PgType("interval", "interval", "interval_recv", 1187, 16, "T"),
    Oid.TIMETZ: PgType("timetz", "time with time zone", "timetz_recv", 1270, -1, "D"),
    Oid.NUMERIC: PgType("numeric", "numeric", "numeric_recv", 1231, -1, "N"),
    Oid.UUID: PgType("uuid", "uuid", "uuid_recv", 2951, 16),
    Oid.JSONB: PgType("jsonb", "jsonb", "jsonb_recv", 3807, -1),
}
