"""Result batches as DataRow messages or COPY data, in text or binary form.

Each column is encoded at once (:func:`.types.columnar.encode_column`: Arrow casts and
numpy), and each batch framed at once (:mod:`.framing`); a column whose type has no
whole-column form is encoded value by value by its type's dumpers, the same dumpers
:class:`.reference.PerValueEncoder` (the per-row reference a differential test compares
with) uses for every column.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence

import pyarrow as pa

from duckflock.server.pgwire import framing, types
from duckflock.server.pgwire.messages import Backend, message
from duckflock.server.pgwire.types.columnar import encode_column

_I2, _I4 = struct.Struct("!h"), struct.Struct("!i")
# types whose whole-column text is never empty and holds no character COPY escapes or
# CSV quotes (digits, signs, points, colons, dashes, spaces, letters)
_PLAIN = {
    types.Oid.BOOL,
    types.Oid.INT2,
    types.Oid.INT4,
    types.Oid.INT8,
    types.Oid.FLOAT4,
    types.Oid.FLOAT8,
    types.Oid.NUMERIC,
    types.Oid.DATE,
    types.Oid.TIME,
    types.Oid.TIMESTAMP,
    types.Oid.TIMESTAMPTZ,
    types.Oid.INTERVAL,
    types.Oid.UUID,
}
# rows encoded at once: each of the encoder's Arrow and numpy calls has a fixed cost, so
# DuckDB's batches go in groups of this many (running.gathered)
GATHER_ROWS = 32_768
GATHER_BYTES = 1 << 20  # and at most about this much Arrow data
DUCKDB_ROWS = 2048  # DuckDB's vector: its batches' size when a row's width is unknown
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + _I4.pack(0) + _I4.pack(0)
COPY_TRAILER = _I2.pack(-1)


def batch_rows(duck_types: Sequence[str]) -> int:
    """The rows DuckDB should hand over at once for a result of these column types:
    when each column has a fixed width, as many as fill :data:`GATHER_BYTES` (at most
    :data:`GATHER_ROWS`: the encoder's group, which then needs no gathering, 0.01 to 0.03
    CPU s less a million rows); else :data:`DUCKDB_ROWS` (a text or nested value may
    be of any size, and a batch is in memory whole before the byte cap is checked)."""
    sizes = [types.column_type(t).size for t in duck_types]
    if not sizes or min(sizes) < 1:
        return DUCKDB_ROWS
    rows = GATHER_BYTES // sum(sizes) // DUCKDB_ROWS * DUCKDB_ROWS
    return max(DUCKDB_ROWS, min(GATHER_ROWS, rows))


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

    def per_value(self, index: int, column: pa.Array) -> list[bytes | None]:
        """Column ``index``'s values encoded one by one by its type's dumper (None:
        NULL)."""
        encode = self.encoders[index]
        values = types.column_values(column, self.duck_types[index])
        return [None if v is None else encode(v) for v in values]

    def wire_values(self, batch: pa.RecordBatch) -> list[pa.Array]:
        """Each column's values in wire form, as an Arrow binary array (NULL: null)."""
        return self._wire(batch)[0]

    def _wire(self, batch: pa.RecordBatch) -> tuple[list[pa.Array], list[bool]]:
        """Each column's wire values, and whether its text is plain (never empty, no
        character COPY escapes or CSV quotes)."""
        out, plain = [], []
        for index, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
            with naming(name):
                values, whole = self._wire_column(index, column)
            out.append(values)
            plain.append(whole and self.columns[index].oid in _PLAIN)
        return out, plain

    def _wire_column(self, index: int, column: pa.Array) -> tuple[pa.Array, bool]:
        def some(rows: pa.Array) -> list[bytes | None]:
            return self.per_value(index, rows)

        oid, fmt = self.columns[index].oid, self.formats[index]
        encoded = encode_column(column, oid, fmt, some)
        if encoded is None:
            return pa.array(some(column), pa.binary()), False
        return encoded, True

    def data_rows(self, batch: pa.RecordBatch) -> bytes:
        """One DataRow message per row of ``batch``."""
        if not batch.num_columns:
            return (Backend.DATA_ROW + _I4.pack(6) + _I2.pack(0)) * int(batch.num_rows)
        return framing.messages(Backend.DATA_ROW, self.wire_values(batch))

    def copy_binary(self, batch: pa.RecordBatch, prefix: bytes = b"", framed: bool = True) -> bytes:
        """CopyData messages, one per row as PostgreSQL sends them (ADBC's reader takes
        one row from each message); ``prefix`` (the file header) leads the first. Not
        ``framed``: the rows (tuples) bare after ``prefix``, for one message."""
        if not batch.num_columns:
            if not framed:
                return prefix + _I2.pack(0) * int(batch.num_rows) if batch.num_rows else b""
            body = prefix + _I2.pack(0)
            first = Backend.COPY_DATA + _I4.pack(len(body) + 4) + body
            rest = (Backend.COPY_DATA + _I4.pack(6) + _I2.pack(0)) * (int(batch.num_rows) - 1)
            return first + rest if batch.num_rows else b""
        kind = Backend.COPY_DATA if framed else b""
        return framing.messages(kind, self.wire_values(batch), prefix)

    def copy_text(
        self, batch: pa.RecordBatch, header: list[str] | None = None, framed: bool = False
    ) -> bytes:
        """Text COPY lines, after a ``header`` line of the names (escaped as the values
        are) when given; ``framed``: each line its own CopyData message, as PostgreSQL
        sends a COPY's rows (clients may read one row a message)."""
        kind = Backend.COPY_DATA if framed else None
        head = b""
        if header is not None:
            names = [pa.array([name.encode()], pa.binary()) for name in header]
            plain = [False] * len(names)
            head = framing.copy_text(names, plain, kind or b"") if names else _bare_lines(1, kind)
        if not batch.num_columns:
            return head + _bare_lines(int(batch.num_rows), kind)
        return head + framing.copy_text(*self._wire(batch), kind or b"")

    def copy_csv(
        self, batch: pa.RecordBatch, header: list[str] | None, framed: bool = False
    ) -> bytes:
        """CSV as PostgreSQL writes it: NULL is an empty field, an empty string is ``""``;
        ``framed`` as :meth:`copy_text` (the header line a message of its own)."""
        kind = Backend.COPY_DATA if framed else None
        head = b""
        if header is not None:  # a line of one row, quoted as the rows are
            names = [pa.array([name.encode()], pa.binary()) for name in header]
            plain = [False] * len(names)
            head = framing.copy_csv(names, plain, kind or b"") if names else _bare_lines(1, kind)
        if not batch.num_columns:
            return head + _bare_lines(int(batch.num_rows), kind)
        return head + framing.copy_csv(*self._wire(batch), kind or b"")


def _bare_lines(count: int, kind: Backend | None) -> bytes:
    """``count`` lines of no field (a result of no columns), each a message of ``kind``
    when given."""
    line = b"\n"
    return (message(kind, line) if kind else line) * count


@contextlib.contextmanager
def naming(column: str) -> Iterator[None]:
    """A value PostgreSQL cannot carry names its column (22008, never XX000)."""
    try:
        yield
    except types.OutOfRange as exc:
        raise types.OutOfRange(f'column "{column}": {exc}') from None


def copy_data(data: bytes) -> bytes:
    return message(Backend.COPY_DATA, data)
