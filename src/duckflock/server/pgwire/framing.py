"""Whole batches framed at once: DataRow messages, binary COPY rows, text and CSV COPY
lines, from each column's wire values (:func:`.types.columnar.encode_column`, an Arrow
binary array with NULL as null).

The lengths and headers are numpy arrays, the concatenation one Arrow ``take`` over
the parts made one array (messages and COPY lines alike): no Python call per row or
per value.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LIMIT = 2**31 - 1  # a binary array's int32 offsets; past it, large_binary


def _as_binary(values: pa.Array) -> pa.Array:
    """``values`` as a binary array (int32 offsets), without a copy where it can."""
    if values.type == pa.binary():
        return values
    if values.type == pa.string():
        return values.view(pa.binary())
    return values.cast(pa.binary())


def _lengths(values: pa.Array) -> np.ndarray:
    """Each value's byte length (int64; a NULL's is 0)."""
    offsets = np.frombuffer(values.buffers()[1], np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1].astype(np.int64)
    lengths = np.diff(offsets)
    if values.null_count:
        lengths[~pc.is_valid(values).to_numpy(zero_copy_only=False)] = 0
    return lengths


def _binary(rows: np.ndarray) -> pa.Array:
    """A 1-D array of fixed-size records (or a 2-D uint8 array) as a binary array, one
    record (row) each."""
    count = len(rows)
    width = rows.dtype.itemsize if rows.ndim == 1 else rows.shape[1] * rows.dtype.itemsize
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    data = pa.py_buffer(np.ascontiguousarray(rows))
    return pa.Array.from_buffers(pa.binary(), count, [None, pa.py_buffer(offsets), data])


@dataclass
class _Field:
    """One column's DataRow fields: the Int32 lengths (-1: NULL), then either the
    values' bytes as a (rows, width) block (all of one width, no NULL) or the values
    themselves (a binary array)."""

    prefix: np.ndarray
    fixed: np.ndarray | None
    values: pa.Array
    sizes: np.ndarray  # each field's bytes, its length included


def _field(values: pa.Array) -> _Field:
    values = _as_binary(values)
    lengths = _lengths(values)
    count = len(values)
    prefix = lengths
    if values.null_count:
        prefix = lengths.copy()
        prefix[~pc.is_valid(values).to_numpy(zero_copy_only=False)] = -1
    width = int(lengths[0]) if count else 0
    if not values.null_count and width and (lengths == width).all():
        start = int(np.frombuffer(values.buffers()[1], np.int32)[values.offset])
        data = np.frombuffer(values.buffers()[2], np.uint8, count * width, start)
        return _Field(prefix, data.reshape(count, width), values, lengths + 4)
    return _Field(prefix, None, values, lengths + 4)


class _Run:
    """Fixed-width parts of each row side by side (a message header, lengths, values of
    one width): one numpy record a row, each part written into it by one assignment
    (which turns it big-endian on the way) instead of stacked from copies."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, np.dtype, np.ndarray | int]] = []

    def add(self, dtype: str | tuple[str, int], values: np.ndarray | int) -> None:
        self.parts.append((f"f{len(self.parts)}", np.dtype(dtype), values))

    def rows(self, count: int) -> pa.Array:
        layout = np.dtype([(name, dtype) for name, dtype, _ in self.parts])
        records = np.empty(count, layout)
        for name, _, values in self.parts:
            records[name] = values
        self.parts = []
        return _binary(records)


def _contents(joined: pa.Array) -> bytes:
    """The bytes of a binary array's values, back to back."""
    offsets = joined.buffers()[1]
    width = 8 if pa.types.is_large_binary(joined.type) else 4
    kind = np.int64 if width == 8 else np.int32
    bounds = np.frombuffer(offsets, kind)[[joined.offset, joined.offset + len(joined)]]
    data: bytes = joined.buffers()[2].slice(int(bounds[0]), int(bounds[1] - bounds[0])).to_pybytes()
    return data


def _interleaved(parts: Sequence[pa.Array], total: int) -> pa.Array:
    """Each row's parts back to back, row after row (a NULL part adds nothing): the
    parts made one array and taken in that order, which costs Arrow less than its
    element-wise join does (0.05 against 0.08 CPU s for 1M rows of nine parts)."""
    if total >= _LIMIT:
        parts = [p.cast(pa.large_binary()) for p in parts]
    count = len(parts[0])
    order = _order if count * len(parts) <= _CACHED else _order.__wrapped__
    return pa.concat_arrays(parts).take(order(count, len(parts)))


# most batches of a result have one size (32,768 rows: 1.2 MB of order for nine parts);
# orders of a very wide result's batches are not kept
_CACHED = 1 << 20


@functools.lru_cache(maxsize=4)
def _order(count: int, parts: int) -> pa.Array:
    """Part after part of row after row, in an array holding ``parts`` arrays of
    ``count`` values each, one after the other."""
    kind = "int32" if count * parts < _LIMIT else "int64"
    starts: np.ndarray = np.arange(parts, dtype=kind) * count
    order = starts + np.arange(count, dtype=kind)[:, None]
    return pa.array(order.reshape(-1))


def messages(kind: bytes, columns: Sequence[pa.Array], prefix: bytes = b"") -> bytes:
    """One message of type ``kind`` a row: Int32 length, Int16 column count, then each
    column's field (DataRow, and binary COPY's CopyData). ``prefix`` (binary COPY's file
    header) leads the first message's body. Without a ``kind``, the rows bare (binary
    COPY's tuples, for one message of many rows), after ``prefix``.

    Runs of fixed-width parts (the message header, each length, values of one width)
    are written side by side by numpy; one Arrow take then puts them and the
    variable-width values together, for the whole batch."""
    count = len(columns[0])
    fields = [_field(column) for column in columns]
    sizes = np.full(count, 6, np.int64)
    for field in fields:
        sizes += field.sizes
    run = _Run()
    if kind:
        run.add("u1", kind[0])
        run.add(">i4", sizes)
    run.add(">i2", len(columns))
    pieces: list[pa.Array] = []
    for field in fields:
        run.add(">i4", field.prefix)
        if field.fixed is not None:
            run.add(("u1", field.fixed.shape[1]), field.fixed)
        else:
            pieces += [run.rows(count), field.values]
    if not pieces:  # every value of a fixed width: one numpy block
        data = _contents(run.rows(count))
    else:
        if run.parts:
            pieces.append(run.rows(count))
        data = _contents(_interleaved(pieces, int(sizes.sum()) + count))
    if not kind:
        return prefix + data if count else b""
    if not prefix or not count:
        return data
    first = int(sizes[0]) + len(prefix)
    return data[:1] + first.to_bytes(4, "big") + prefix + data[5:]


def _holds(values: pa.Array, chars: bytes) -> bool:
    """Whether a value of ``values`` (binary) may hold a byte of ``chars`` (ASCII: never
    inside a UTF-8 sequence): one numpy scan of the bytes, not a regex a value."""
    offsets = np.frombuffer(values.buffers()[1], np.int32)
    start, end = offsets[[values.offset, values.offset + len(values)]]
    data = np.frombuffer(values.buffers()[2] or b"", np.uint8)[start:end]
    found = np.zeros(len(data), bool)
    for char in chars:
        found |= data == char
    return bool(found.any())


def _empty(values: pa.Array) -> bool:
    """Whether a value (not NULL) of ``values`` is empty."""
    empty = _lengths(values) == 0
    if values.null_count:
        empty &= pc.is_valid(values).to_numpy(zero_copy_only=False)
    return bool(empty.any())


def _escaped(values: pa.Array) -> pa.Array:
    """Text COPY's escapes: backslash, tab, newline and carriage return."""
    if not _holds(values, b"\\\t\n\r"):
        return values
    for char, escape in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        values = pc.replace_substring(values, char, escape)
    return values


# a line of just this ends the data of a COPY FROM in CSV: PostgreSQL quotes a value that
# would make one (a row of one column)
END_OF_DATA = b"\\."


def _quoted(values: pa.Array, alone: bool) -> pa.Array:
    """CSV's fields as PostgreSQL writes them: quoted when empty or holding a comma,
    quote, newline or carriage return (NULL stays null: an empty field), and (``alone``:
    the only column) when ``\\.``, which alone on a line ends a COPY FROM's data."""
    marker = alone and _holds(values, b"\\")
    if not marker and not _holds(values, b',"\n\r') and not _empty(values):
        return values
    needs = pc.or_(
        pc.equal(pc.binary_length(values), 0), pc.match_substring_regex(values, '[,"\\n\\r]')
    )
    if marker:
        needs = pc.or_(needs, pc.equal(values, pa.scalar(END_OF_DATA, values.type)))
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise(b'"', pc.replace_substring(values, '"', '""'), b'"', b"")
    return pc.if_else(needs, quoted, values)


def _lines(fields: Sequence[pa.Array], separator: bytes, null: bytes, kind: bytes) -> bytes:
    """Each row's fields (NULL: ``null``), ``separator`` between them and a newline
    after, row after row: the fields and the two marks made one array and taken in that
    order (0.07 against 0.09 CPU s for 1M rows of five fields by Arrow's element-wise
    join of the fields, then of each line and its newline). With a message ``kind``
    (``b"d"``: CopyData), each line is its own message, headed by its type and length:
    PostgreSQL sends a COPY's rows one a message, and clients read them so (psycopg's
    ``Copy.rows()`` parses one row from each message and drops the rest)."""
    count, parts = len(fields[0]), len(fields)
    filled = [f.fill_null(pa.scalar(null, f.type)) if f.null_count else f for f in fields]
    sizes = np.full(count, parts, np.int64)  # the separators and the newline
    for f in filled:
        sizes += _lengths(f)
    total = int(sizes.sum())
    arrays = [*filled, pa.array([separator, b"\n"], pa.binary())]
    if kind:
        run = _Run()
        run.add("u1", kind[0])
        run.add(">i4", sizes + 4)
        arrays.append(run.rows(count))
        total += 5 * count
    if total >= _LIMIT:
        arrays = [a.cast(pa.large_binary()) for a in arrays]
    order = _line_order if count * parts * 2 <= _CACHED else _line_order.__wrapped__
    return _contents(pa.concat_arrays(arrays).take(order(count, parts, bool(kind))))


@functools.lru_cache(maxsize=4)
def _line_order(count: int, parts: int, headed: bool) -> pa.Array:
    """Where each byte string of a line comes from, line after line, in an array holding
    ``parts`` arrays of ``count`` fields each, then the separator and the newline, then
    (``headed``) each line's message header."""
    kind = "int32" if (count + 1) * (parts + 1) + 2 < _LIMIT else "int64"
    order = np.empty((count, 2 * parts + headed), kind)
    rows = np.arange(count, dtype=kind)
    order[:, headed::2] = np.arange(parts, dtype=kind) * count + rows[:, None]
    order[:, headed + 1 :: 2] = parts * count  # the separator
    order[:, -1] = parts * count + 1  # the newline
    if headed:
        order[:, 0] = parts * count + 2 + rows
    return pa.array(order.reshape(-1))


def copy_text(columns: Sequence[pa.Array], plain: Sequence[bool], kind: bytes = b"") -> bytes:
    """Text COPY lines: tab-separated, ``\\N`` for NULL, escaped (``plain`` columns
    hold no character to escape: numbers, dates, times); each a message of ``kind``
    when given."""
    fields = [c if p else _escaped(c) for c, p in zip(map(_as_binary, columns), plain, strict=True)]
    return _lines(fields, b"\t", b"\\N", kind)


def copy_csv(columns: Sequence[pa.Array], plain: Sequence[bool], kind: bytes = b"") -> bytes:
    """CSV COPY lines: comma-separated, NULL an empty field, ``""`` an empty string
    (``plain`` columns hold no empty text and no character to quote); each a message of
    ``kind`` when given."""
    alone = len(columns) == 1
    pairs = zip(map(_as_binary, columns), plain, strict=True)
    fields = [c if p else _quoted(c, alone) for c, p in pairs]
    return _lines(fields, b",", b"", kind)
