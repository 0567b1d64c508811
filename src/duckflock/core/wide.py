"""Integers too wide for DuckDB's Arrow export, made right before anyone reads them.

DuckDB 1.5.5 exports ``UHUGEINT`` as ``decimal128(38, 0)``: the 128 bits are kept, but a
value of 2^127 or more reads back negative (``2^128 - 1`` is ``-1``). ``BIGNUM``
(``VARINT``) arrives as opaque bytes in DuckDB's own encoding. Every door reads results
as Arrow (HTTP formats, the Postgres port, ``Result.rows()``, analyses), so the repair is
made once, on the Arrow data, using the column types DuckDB reports: ``UHUGEINT`` becomes
``decimal256(39, 0)`` with the wrapped values unwrapped, ``BIGNUM`` becomes its decimal
text (Arrow has no integer that wide). ``HUGEINT`` keeps DuckDB's ``decimal128(38, 0)``,
which ``DECIMAL(38, 0)`` shares: a column holding either 128-bit integer is marked by its
DuckDB type in the field's metadata (:data:`DUCK_TYPE`), so that :func:`python_rows`
gives ``int`` as DuckDB's Python API does, not ``Decimal``. Other columns are untouched.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pyarrow as pa

UHUGEINT_ARROW = pa.decimal256(39, 0)
DUCK_TYPE = b"duckflock.type"  # field metadata: the DuckDB type of a 128-bit integer column
T = TypeVar("T", pa.RecordBatch, pa.Table)


def _holds(duck: Any, kinds: tuple[str, ...]) -> bool:
    kind = getattr(duck, "id", "")
    if kind in kinds:
        return True
    if kind in ("list", "struct", "map", "array", "union"):
        return any(_holds(child, kinds) for _, child in duck.children if hasattr(child, "id"))
    return False


def _needs(duck: Any) -> bool:
    """Whether a column of DuckDB type ``duck`` has values to repair."""
    return _holds(duck, ("uhugeint", "bignum"))


def _marked(duck: Any) -> bool:
    """Whether a column of DuckDB type ``duck`` is marked (:data:`DUCK_TYPE`)."""
    return _holds(duck, ("hugeint", "uhugeint"))


def _arrow_type(duck: Any, current: pa.DataType) -> pa.DataType:
    """``current`` (DuckDB's export of ``duck``) with the wide integers made right."""
    kind = duck.id
    if kind == "uhugeint":
        return UHUGEINT_ARROW
    if kind in ("bignum", "union"):
        return pa.string()
    if kind == "list":
        child = duck.children[0][1]
        return pa.list_(_arrow_type(child, current.value_type))
    if kind == "array":
        child = duck.children[0][1]
        return pa.list_(_arrow_type(child, current.value_type), current.list_size)
    if kind == "map":
        key, value = duck.children[0][1], duck.children[1][1]
        return pa.map_(_arrow_type(key, current.key_type), _arrow_type(value, current.item_type))
    if kind == "struct":
        return pa.struct(
            [
                pa.field(name, _arrow_type(child, current.field(index).type))
                for index, (name, child) in enumerate(duck.children)
            ]
        )
    return current


def bignum(data: bytes) -> int:
    """DuckDB's BIGNUM bytes as an int: a 3-byte header (sign bit, byte count), then the
    magnitude big-endian; a negative number has every byte inverted."""
    negative = not data[0] & 0x80
    body = bytes(255 - b for b in data[3:]) if negative else data[3:]
    value = int.from_bytes(body, "big")
    return -value if negative else value


def _walk(duck: Any, value: Any, leaf: Callable[[Any, Any], Any]) -> Any:
    """``value`` (of DuckDB type ``duck``) rebuilt through its lists, maps and structs,
    ``leaf(type, value)`` giving each other value that is not NULL."""
    if value is None:
        return None
    kind = duck.id
    if kind in ("list", "array"):
        child = duck.children[0][1]
        return [_walk(child, item, leaf) for item in value]
    if kind == "map":
        key, item = duck.children[0][1], duck.children[1][1]
        return [(_walk(key, k, leaf), _walk(item, v, leaf)) for k, v in value]
    if kind == "struct":
        return {name: _walk(child, value.get(name), leaf) for name, child in duck.children}
    return leaf(duck, value)


def _repaired(duck: Any, value: Any) -> Any:
    kind = duck.id
    if kind == "uhugeint":
        # int arithmetic: Decimal's default context would round to 28 digits
        return Decimal(int(value) + 2**128) if value < 0 else value
    if kind == "bignum":
        return str(bignum(value)) if isinstance(value, bytes) else str(value)
    if kind == "union":
        for _, child in duck.children[1:]:  # the value's own member is not known here
            if getattr(child, "id", "") in ("uhugeint", "bignum"):
                return str(_value(child, value))
        return str(value)
    return value


def _value(duck: Any, value: Any) -> Any:
    return _walk(duck, value, _repaired)


def needs_repair(duck_types: list[Any]) -> bool:
    """Whether any column of these DuckDB types needs :func:`repair`."""
    return any(_needs(duck) or _marked(duck) for duck in duck_types)


def repair_schema(schema: pa.Schema, duck_types: list[Any]) -> pa.Schema:
    fields = []
    for index, field in enumerate(schema):
        duck = duck_types[index] if index < len(duck_types) else None
        if duck is not None and (_needs(duck) or _marked(duck)):
            kind = _arrow_type(duck, field.type) if _needs(duck) else field.type
            marks = {DUCK_TYPE: str(duck).encode()} if _marked(duck) else None
            field = pa.field(field.name, kind, field.nullable, metadata=marks)
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata)


def repair(data: T, duck_types: list[Any]) -> T:
    """``data`` (a batch or table DuckDB exported) with its wide integers made right."""
    if not needs_repair(duck_types):
        return data
    schema = repair_schema(data.schema, duck_types)
    columns = []
    for index, column in enumerate(data.columns):
        duck = duck_types[index] if index < len(duck_types) else None
        if duck is not None and _needs(duck):
            values = [_value(duck, item) for item in column.to_pylist()]
            column = pa.array(values, type=schema.field(index).type)
        columns.append(column)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, schema=schema)
    return pa.Table.from_arrays(columns, schema=schema)


def description_types(cursor: Any) -> list[Any]:
    """The DuckDB types of a cursor's result columns ([] when it has none)."""
    return [column[1] for column in (cursor.description or [])]


def named_types(names: tuple[str, ...] | list[str]) -> list[Any]:
    """DuckDB types parsed from their names (an analysis' shape keeps them as text);
    [] when none is wide, or a name does not parse (nothing is repaired then). Parsed
    once per set of names (an analysis asks at every refresh)."""
    if not any("HUGEINT" in name or "BIGNUM" in name for name in names):
        return []
    return list(_parsed(tuple(names)))


@functools.lru_cache(maxsize=256)
def _parsed(names: tuple[str, ...]) -> tuple[Any, ...]:
    import duckdb

    try:
        return tuple(duckdb.type(name) for name in names)
    except duckdb.Error:
        return ()


def _text_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_decimal256(kind):
        return pa.string()
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_text_type(kind.value_type), kind.list_size)
    if pa.types.is_list(kind):
        return pa.list_(_text_type(kind.value_type))
    if pa.types.is_map(kind):
        return pa.map_(_text_type(kind.key_type), _text_type(kind.item_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _text_type(f.type)) for f in kind])
    return kind


def _text_value(kind: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    if pa.types.is_decimal256(kind):
        return str(value)
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_text_value(kind.value_type, item) for item in value]
    if pa.types.is_map(kind):
        return [(_text_value(kind.key_type, k), _text_value(kind.item_type, v)) for k, v in value]
    if pa.types.is_struct(kind):
        return {f.name: _text_value(f.type, value.get(f.name)) for f in kind}
    return value


def readable(table: pa.Table) -> pa.Table:
    """``table`` as DuckDB can scan it again: it reads no ``decimal256(39, 0)``, so a
    repaired UHUGEINT becomes its decimal text (an analysis result queried in SQL)."""
    if not any(_text_type(field.type) != field.type for field in table.schema):
        return table
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = _text_type(field.type)
        if kind != field.type:
            values = [_text_value(field.type, item) for item in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, type=kind)])
        columns.append(column)
        fields.append(pa.field(field.name, kind, field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def repair_reader(reader: pa.RecordBatchReader, duck_types: list[Any]) -> pa.RecordBatchReader:
    """``reader`` with each batch repaired as it is read (the CLI streams results)."""
    if not needs_repair(duck_types):
        return reader
    batches = (repair(batch, duck_types) for batch in reader)
    return pa.RecordBatchReader.from_batches(repair_schema(reader.schema, duck_types), batches)


# -- values Python cannot hold --------------------------------------------------------------
# TIMESTAMP 'infinity', the year 294000, DATE '-infinity': Arrow keeps them, to_pylist
# raises OverflowError. DuckDB's Python API gives datetime.max / datetime.min for the
# infinities and the text of the others; those values are handed to DuckDB to convert.
_converter_lock = threading.Lock()  # guards _converter (one statement at a time)
_converter: Any = None


def _as_duckdb_would(values: pa.Array) -> list[Any]:
    """``values`` converted by DuckDB's own Python conversion."""
    import duckdb

    global _converter
    with _converter_lock:
        if _converter is None:
            _converter = duckdb.connect()
        table = pa.table({"v": values})
        return [row[0] for row in _converter.from_arrow(table).fetchall()]


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def day_end(kind: pa.DataType) -> int:
    """TIME '24:00:00' (DuckDB's last time of day; Python's ``time`` stops before it,
    pyarrow's validation too) in the ticks of the Arrow time type ``kind``."""
    return 86_400 * _PER_SECOND[kind.unit]


def time_ticks(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """An Arrow time column's raw integers (zero-copy)."""
    width = pa.int64() if pa.types.is_time64(column.type) else pa.int32()
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return pa.chunked_array([chunk.view(width) for chunk in chunks], width)


def nested_children(array: pa.Array) -> list[pa.Array]:
    """The arrays a nested array's values are made of (unsliced: a superset)."""
    kind = array.type
    if pa.types.is_map(kind):
        return [array.keys, array.items]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [array.values]
    if pa.types.is_struct(kind):
        return [array.field(i) for i in range(kind.num_fields)]
    return []


def holds_day_end(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a time column, or a time inside a list, struct or map column, holds
    24:00:00, which ``to_pylist`` gives as 00:00."""
    if len(column) == 0:
        return False
    if not pa.types.is_time(column.type):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        return any(holds_day_end(child) for chunk in chunks for child in nested_children(chunk))
    import pyarrow.compute as pc

    return bool(pc.max(time_ticks(column)).as_py() == day_end(column.type))


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """One column's values as Python objects, as DuckDB's Python API returns them."""
    try:
        if not holds_day_end(column):  # else each '24:00:00' as DuckDB's text
            values: list[Any] = column.to_pylist()
            return values
    except (OverflowError, ValueError, pa.ArrowException):
        pass
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out: list[Any] = []
    for chunk in chunks:
        if holds_day_end(chunk):
            out.extend(_as_duckdb_would(chunk))
            continue
        for index, scalar in enumerate(chunk):
            try:
                out.append(scalar.as_py())
            except (OverflowError, ValueError, pa.ArrowException):
                out.append(_as_duckdb_would(chunk.slice(index, 1))[0])
    return out


def _as_int(duck: Any, value: Any) -> Any:
    # a union's value is its text already (repair)
    return int(value) if duck.id in ("hugeint", "uhugeint") else value


def _marked_type(field: pa.Field) -> Any:
    """The DuckDB type a field is marked with (:data:`DUCK_TYPE`), or None."""
    name = (field.metadata or {}).get(DUCK_TYPE)
    if name is None:
        return None
    import duckdb

    try:
        return duckdb.type(name.decode())
    except duckdb.Error:
        return None


def python_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """A table's rows as tuples of Python values (:func:`column_values`), a 128-bit
    integer as ``int`` where its column is marked (:data:`DUCK_TYPE`)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        values = column_values(column)
        duck = _marked_type(field)
        if duck is not None:
            values = [_walk(duck, value, _as_int) for value in values]
        columns.append(values)
    return list(zip(*columns, strict=True)) if columns else []
