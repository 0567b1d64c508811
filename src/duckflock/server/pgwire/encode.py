"""Result batches as DataRow messages or COPY data, in text or binary form."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence

import pyarrow as pa

from duckflock.server.pgwire import types
from duckflock.server.pgwire.messages import Backend, message

_I2, _I4 = struct.Struct("!h"), struct.Struct("!i")
_NULL = b"\xff\xff\xff\xff"
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + _I4.pack(0) + _I4.pack(0)
COPY_TRAILER = _I2.pack(-1)


class RowEncoder:
    """Encodes the rows of one result: one wire type and one format per column."""

    def __init__(self, duck_types: Sequence[str], formats: Sequence[int]) -> None:
        self.duck_types = list(duck_types)
        self.columns = [types.column_type(t) for t in duck_types]
        count = len(self.columns)
        if len(formats) == 1:
            formats = list(formats) * count
        elif not formats:
            formats = [types.Format.TEXT] * count
        if len(formats) != count:
            raise ValueError(f"{len(formats)} result format codes for {count} columns")
        if any(f not in tuple(types.Format) for f in formats):
            raise ValueError("result format codes must be 0 (text) or 1 (binary)")
        self.formats = [types.Format(f) for f in formats]
        self.encoders = [c.encoder(f) for c, f in zip(self.columns, self.formats, strict=True)]

    def _values(self, batch: pa.RecordBatch) -> list[list[bytes | None]]:
        """Each column's encoded values (None for NULL)."""
        out = []
        for name, column, duck_type, encode in zip(
            batch.schema.names, batch.columns, self.duck_types, self.encoders, strict=True
        ):
            with _naming(name):
                values = types.column_values(column, duck_type)
                out.append([None if v is None else encode(v) for v in values])
        return out

    def _cells(self, batch: pa.RecordBatch) -> list[list[bytes]]:
        """Each column's values as DataRow fields: a length, then the bytes (-1: NULL)."""
        out = []
        for name, column, duck_type, kind, fmt, encode in zip(
            batch.schema.names,
            batch.columns,
            self.duck_types,
            self.columns,
            self.formats,
            self.encoders,
            strict=True,
        ):
            with _naming(name):
                out.append(self._column_cells(column, duck_type, kind, fmt, encode))
        return out

    @staticmethod
    def _column_cells(
        column: pa.Array, duck_type: str, kind: types.ColumnType, fmt: int, encode: types.Encoder
    ) -> list[bytes]:
        fast = types.encoded_by_arrow(column, kind.oid, fmt == types.Format.BINARY)
        if fast is not None:
            return [_NULL if e is None else _I4.pack(len(e)) + e for e in fast]
        values = types.column_values(column, duck_type)
        if column.null_count == 0:
            encoded = [encode(v) for v in values]
            return [_I4.pack(len(e)) + e for e in encoded]
        return [_NULL if v is None else _field(encode(v)) for v in values]

    def data_rows(self, batch: pa.RecordBatch) -> bytes:
        """One DataRow message per row of ``batch``."""
        columns = self._cells(batch)
        if not columns:
            return (Backend.DATA_ROW + _I4.pack(6) + _I2.pack(0)) * int(batch.num_rows)
        head = _I2.pack(batch.num_columns)
        join = b"".join
        pack = _I4.pack
        rows: map[bytes] = map(join, zip(*columns, strict=True))
        return join([Backend.DATA_ROW + pack(len(body) + 6) + head + body for body in rows])

    def copy_binary(self, batch: pa.RecordBatch, prefix: bytes = b"") -> bytes:
        """CopyData messages, one per row as PostgreSQL sends them (ADBC's reader takes
        one row from each message); ``prefix`` (the file header) leads the first."""
        head = _I2.pack(batch.num_columns)
        parts = []
        for row in zip(*self._values(batch), strict=True):
            fields = [prefix, head]
            prefix = b""
            for value in row:
                fields.append(_NULL if value is None else _I4.pack(len(value)) + value)
            body = b"".join(fields)
            parts.append(Backend.COPY_DATA + _I4.pack(len(body) + 4) + body)
        return b"".join(parts)

    def copy_text(self, batch: pa.RecordBatch) -> bytes:
        lines = []
        for row in zip(*self._values(batch), strict=True):
            fields = [b"\\N" if v is None else v.replace(b"\\", b"\\\\") for v in row]
            fields = [
                f.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
                for f in fields
            ]
            lines.append(b"\t".join(fields) + b"\n")
        return b"".join(lines)

    def copy_csv(self, batch: pa.RecordBatch, header: list[str] | None) -> bytes:
        """CSV as PostgreSQL writes it: NULL is an empty field, an empty string is ``""``."""
        lines = [b",".join(_csv_field(n.encode()) for n in header)] if header is not None else []
        for row in zip(*self._values(batch), strict=True):
            lines.append(b",".join(b"" if v is None else _csv_field(v) for v in row))
        return b"".join(line + b"\n" for line in lines)


@contextlib.contextmanager
def _naming(column: str) -> Iterator[None]:
    """A value PostgreSQL cannot carry names its column (22008, never XX000)."""
    try:
        yield
    except types.OutOfRange as exc:
        raise types.OutOfRange(f'column "{column}": {exc}') from None


def _csv_field(value: bytes) -> bytes:
    if value and not any(c in value for c in (b",", b'"', b"\n", b"\r")):
        return value
    return b'"' + value.replace(b'"', b'""') + b'"'


def _field(value: bytes) -> bytes:
    return _I4.pack(len(value)) + value


def copy_data(data: bytes) -> bytes:
    return message(Backend.COPY_DATA, data)
