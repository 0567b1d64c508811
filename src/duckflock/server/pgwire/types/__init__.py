"""DuckDB types as PostgreSQL sees them: type OIDs, and values in text or binary form.

Laid out as psycopg 3 lays out its own (``psycopg/types/*.py``):

- :mod:`.table`: the one type table (name, OID, array OID, size), :class:`Oid`;
- :mod:`.adapt`: what an adapter is (dumpers and loaders, text and binary);
- one small module per family: :mod:`.bool`, :mod:`.numeric`, :mod:`.text`,
  :mod:`.bytea`, :mod:`.uuid`, :mod:`.json`, :mod:`.datetime`, :mod:`.array`;
- :mod:`.registry`: the one map of adapters by OID;
- :mod:`.columns`: a result column's wire type and values; :mod:`.params`: Bind
  parameters.

Types PostgreSQL has no match for (STRUCT, MAP, UNION, BIT, nested lists) are sent as
``text`` holding their JSON, so every client can at least read them. Parameters arrive
in text or binary form with the OID the client chose; they are decoded to Python values
DuckDB binds (text of an unknown type stays a string, and DuckDB casts it where it is
used).
"""

from duckflock.server.pgwire.types.adapt import Adapter, Encoder, Format
from duckflock.server.pgwire.types.columns import (
    ColumnType,
    column_type,
    column_values,
)
from duckflock.server.pgwire.types.datetime import OutOfRange
from duckflock.server.pgwire.types.numeric import numeric_binary
from duckflock.server.pgwire.types.params import NotUtf8, decode_param
from duckflock.server.pgwire.types.registry import ADAPTERS, ARRAY_OF, PARAMETER_ARRAYS
from duckflock.server.pgwire.types.table import PG_TYPES, Oid, PgType

__all__ = [
    "ADAPTERS",
    "ARRAY_OF",
    "PARAMETER_ARRAYS",
    "PG_TYPES",
    "Adapter",
    "ColumnType",
    "Encoder",
    "Format",
    "NotUtf8",
    "Oid",
    "OutOfRange",
    "PgType",
    "column_type",
    "column_values",
    "decode_param",
    "numeric_binary",
]
