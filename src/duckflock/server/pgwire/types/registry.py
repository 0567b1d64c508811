"""The one map of adapters by OID, and what is derived from it with the type table."""

from __future__ import annotations

from duckflock.server.pgwire.types import bool as bool_
from duckflock.server.pgwire.types import bytea, datetime, json, numeric, text, uuid
from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.table import PG_TYPES, Oid

ADAPTERS: dict[int, Adapter] = {
    adapter.oid: adapter
    for family in (bool_, numeric, text, bytea, uuid, json, datetime)
    for adapter in family.ADAPTERS
}
# element OID -> array OID, for the types a result column can hold (each has dumpers)
ARRAY_OF: dict[int, int] = {
    oid: PG_TYPES[oid].array for oid, adapter in ADAPTERS.items() if adapter.dump_text
}
# array OID -> element OID, for the arrays a parameter can be read as (those, oid, varchar)
PARAMETER_ARRAYS: dict[int, int] = {
    PG_TYPES[oid].array: oid for oid in (*ARRAY_OF, Oid.OID, Oid.VARCHAR)
}
