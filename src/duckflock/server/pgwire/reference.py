"""The per-value encoder: every value through its type's dumper, every row framed in
Python. It is what :class:`.encode.RowEncoder` did before columns were encoded at once,
kept as the reference the differential test (``tests/test_pgwire_columnar.py``) compares
the whole-column encoders with, byte for byte; the server does not use it."""

from __future__ import annotations

import pyarrow as pa

from duckflock.server.pgwire import framing
from duckflock.server.pgwire.encode import RowEncoder, naming
from duckflock.server.pgwire.messages import Backend, message
from duckflock.server.pgwire.types.adapt import I2, I4
from duckflock.sql import Quoting, quote_bytes

_NULL = b"\xff\xff\xff\xff"


class PerValueEncoder(RowEncoder):
    """:class:`.encode.RowEncoder`'s output, one value and one row at a time."""

    def values(self, batch: pa.RecordBatch) -> list[list[bytes | None]]:
        """Each column's encoded values (None for NULL)."""
        out = []
        for index, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
            with naming(name):
                out.append(self.per_value(index, column))
        return out

    def _rows(self, kind: bytes, batch: pa.RecordBatch, prefix: bytes) -> bytes:
        head = I2.pack(batch.num_columns)
        parts = []
        for row in zip(*self.values(batch), strict=True):
            fields = [prefix, head]
            prefix = b""
            for value in row:
                fields.append(_NULL if value is None else I4.pack(len(value)) + value)
            body = b"".join(fields)
            parts.append(kind + I4.pack(len(body) + 4) + body if kind else body)
        return b"".join(parts)

    def data_rows(self, batch: pa.RecordBatch) -> bytes:
        if not batch.num_columns:
            return super().data_rows(batch)
        return self._rows(Backend.DATA_ROW, batch, b"")

    def copy_binary(self, batch: pa.RecordBatch, prefix: bytes = b"", framed: bool = True) -> bytes:
        if not batch.num_columns:
            return super().copy_binary(batch, prefix, framed)
        return self._rows(Backend.COPY_DATA if framed else b"", batch, prefix)

    def copy_text(
        self, batch: pa.RecordBatch, header: list[str] | None = None, framed: bool = False
    ) -> bytes:
        lines = []
        if header is not None:
            lines.append(b"\t".join(_text_field(n.encode()) for n in header) + b"\n")
        for row in zip(*self.values(batch), strict=True):
            lines.append(b"\t".join(b"\\N" if v is None else _text_field(v) for v in row) + b"\n")
        if not batch.num_columns:
            lines += [b"\n"] * batch.num_rows
        return b"".join(message(Backend.COPY_DATA, line) if framed else line for line in lines)

    def copy_csv(
        self, batch: pa.RecordBatch, header: list[str] | None, framed: bool = False
    ) -> bytes:
        alone = batch.num_columns == 1
        lines = []
        if header is not None:
            lines.append(b",".join(csv_field(n.encode(), alone) for n in header))
        for row in zip(*self.values(batch), strict=True):
            lines.append(b",".join(b"" if v is None else csv_field(v, alone) for v in row))
        if not batch.num_columns:
            lines += [b""] * batch.num_rows
        ended = [line + b"\n" for line in lines]
        return b"".join(message(Backend.COPY_DATA, line) if framed else line for line in ended)


def _text_field(value: bytes) -> bytes:
    """One text COPY field as PostgreSQL writes it: backslash, tab, newline and carriage
    return escaped."""
    value = value.replace(b"\\", b"\\\\")
    return value.replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def csv_field(value: bytes, alone: bool = False) -> bytes:
    """One CSV field as PostgreSQL writes it: quoted when empty or holding a comma, a
    quote, a newline or a carriage return, and (``alone``: the only column) when it is
    the end-of-data marker ``\\.``."""
    plain = value and not any(c in value for c in (b",", b'"', b"\n", b"\r"))
    if plain and not (alone and value == framing.END_OF_DATA):
        return value
    return quote_bytes(value, Quoting.DOUBLED)
