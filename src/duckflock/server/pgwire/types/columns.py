"""Result columns: a DuckDB type's wire type, and one Arrow column's Python values.

A column's OID comes from DuckDB's own type name (the cursor's ``description``: Arrow
alone cannot tell JSON or UUID from text); its values come from the Arrow batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from duckflock.server.pgwire.types import array, datetime
from duckflock.server.pgwire.types.adapt import Encoder, Format
from duckflock.server.pgwire.types.json import as_json_text
from duckflock.server.pgwire.types.registry import ADAPTERS, ARRAY_OF
from duckflock.server.pgwire.types.table import PG_TYPES, Oid

# DuckDB's scalar type names -> the PostgreSQL type their values travel as
_SCALARS = {
    "BOOLEAN": Oid.BOOL,
    "TINYINT": Oid.INT2,
    "SMALLINT": Oid.INT2,
    "UTINYINT": Oid.INT2,
    "INTEGER": Oid.INT4,
    "USMALLINT": Oid.INT4,
    "BIGINT": Oid.INT8,
    "UINTEGER": Oid.INT8,
    "UBIGINT": Oid.NUMERIC,
    "HUGEINT": Oid.NUMERIC,
    "UHUGEINT": Oid.NUMERIC,
    "BIGNUM": Oid.NUMERIC,
    "VARINT": Oid.NUMERIC,
    "FLOAT": Oid.FLOAT4,
    "DOUBLE": Oid.FLOAT8,
    "VARCHAR": Oid.TEXT,
    "BLOB": Oid.BYTEA,
    "DATE": Oid.DATE,
    "TIME": Oid.TIME,
    "TIMESTAMP": Oid.TIMESTAMP,
    "TIMESTAMP_S": Oid.TIMESTAMP,
    "TIMESTAMP_MS": Oid.TIMESTAMP,
    "TIMESTAMP_NS": Oid.TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": Oid.TIMESTAMPTZ,
    "INTERVAL": Oid.INTERVAL,
    "UUID": Oid.UUID,
    "JSON": Oid.JSON,
}


@dataclass(frozen=True)
class ColumnType:
    """How one result column goes over the wire."""

    oid: int
    size: int  # pg_type.typlen: -1 for variable length
    text: Encoder  # a non-null Python value -> text form
    binary: Encoder  # a non-null Python value -> binary form

    def encoder(self, fmt: Format) -> Encoder:
        return self.binary if fmt == Format.BINARY else self.text


def _oid_of(duck_type: str) -> Oid | None:
    if re.search(r"\[\d*\]$", duck_type):  # a list: DECIMAL(3,1)[] is not a numeric
        return None
    if duck_type.startswith("DECIMAL"):
        return Oid.NUMERIC
    if duck_type.startswith("ENUM"):
        return Oid.TEXT
    return _SCALARS.get(duck_type)


def column_type(duck_type: str) -> ColumnType:
    """The wire form of a column whose DuckDB type is named ``duck_type``."""
    oid = _oid_of(duck_type)
    if oid is not None:
        adapter = ADAPTERS[oid]
        return ColumnType(
            oid, PG_TYPES[oid].size, adapter.dumper(Format.TEXT), adapter.dumper(Format.BINARY)
        )
    element = re.fullmatch(r"(.+)\[\]", duck_type)
    inner = _oid_of(element.group(1)) if element else None
    if inner is not None:
        adapter = ADAPTERS[inner]
        text_of, binary_of = adapter.dumper(Format.TEXT), adapter.dumper(Format.BINARY)
        return ColumnType(
            ARRAY_OF[inner],
            -1,
            lambda v: array.dump_text(v, text_of),
            lambda v: array.dump_binary(v, inner, binary_of),
        )
    # no PostgreSQL match: JSON text that any client can read
    return ColumnType(Oid.TEXT, -1, as_json_text, as_json_text)


def column_values(column: pa.Array | pa.ChunkedArray, duck_type: str) -> list[Any]:
    """The Python values of one Arrow column (dictionary-encoded ENUMs as strings)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return _values(column)


def _has_moments(kind: pa.DataType) -> bool:
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind) or pa.types.is_time(kind):
        return True
    if pa.types.is_map(kind):
        return _has_moments(kind.key_type) or _has_moments(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_moments(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_has_moments(field.type) for field in kind)
    return False


def _values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Python values, with dates, timestamps and times as :func:`datetime.moments` and
    :func:`datetime.clocks` give them, nested ones too (an infinite date in a list failed
    the whole result with XX000)."""
    kind = column.type
    if not _has_moments(kind):
        return column.to_pylist()  # type: ignore[no-any-return]
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
        return datetime.moments(column)
    if pa.types.is_time(kind):
        return datetime.clocks(column)
    nulls = column.is_null().to_pylist()
    if pa.types.is_struct(kind):
        fields = [_values(part) for part in column.flatten()]
        names = [field.name for field in kind]
        return [
            None if null else {name: values[i] for name, values in zip(names, fields, strict=True)}
            for i, null in enumerate(nulls)
        ]
    if pa.types.is_fixed_size_list(kind):
        size, start = kind.list_size, column.offset * kind.list_size
        inner = _values(column.values[start : start + size * len(column)])
        return [None if null else inner[i * size : (i + 1) * size] for i, null in enumerate(nulls)]
    offsets = column.offsets.to_pylist()  # lists and maps: into the whole child array
    if pa.types.is_map(kind):
        keys, items = _values(column.keys), _values(column.items)
        inner = list(zip(keys, items, strict=True))
    else:
        inner = _values(column.values)
    return [None if null else inner[offsets[i] : offsets[i + 1]] for i, null in enumerate(nulls)]
