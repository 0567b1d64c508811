"""A load file read record by record: each row keeps its exact line and text, and a
line that cannot be a row is told apart as a :class:`BadLine`.

This is the slower, exact reading of :func:`duckflock.ingest.files.chunks_of` (Python's
csv and json modules rather than pyarrow's readers): with a rejects file, and to find
the line pyarrow's error does not name. The pieces every reading shares live here too:
:class:`Chunk`, :class:`BadLine`, :class:`BadFileError`, compression and delimiters.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import pyarrow as pa

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# What a CSV field reads as NULL: the empty field only (quoted too), as DuckDB's own
# read_csv reads it by default. pyarrow's default list ("NaN", "nan", "NULL", "N/A",
# "null", "#N/A" …) made a NaN NULL; DuckDB reads it as NaN, "NULL" as the text NULL.
CSV_NULLS = frozenset({""})


@dataclass(frozen=True)
class Chunk:
    """Rows of a file: the rows, the file line of the first (None for Parquet, whose
    rows have no lines) and how many bytes of the file were read so far. Read with
    ``keep_text`` (the lenient reading that sets bad lines aside), each row also has
    its own line and its text as it stood in the file."""

    table: pa.Table
    first_row: int  # index of the first row in the file, from 0
    first_line: int | None
    position: int
    lines: list[int] | None = None  # each row's line, when rows are not one per line
    texts: list[str] | None = None  # each row's text in the file

    def line_of(self, row_index: int) -> int | None:
        if self.lines is not None:
            return self.lines[row_index]
        return None if self.first_line is None else self.first_line + row_index

    def text_of(self, row_index: int) -> str:
        if self.texts is not None:
            return self.texts[row_index]
        row = self.table.slice(row_index, 1).to_pylist()[0]
        return json.dumps(row, default=str)

    def without(self, row_index: int) -> tuple[Chunk, Chunk]:
        """(the rows before ``row_index``, the rows after it)."""

        def part(start: int, stop: int) -> Chunk:
            return Chunk(
                self.table.slice(start, stop - start),
                self.first_row + start,
                self.line_of(start) if start < self.table.num_rows else None,
                self.position,
                None if self.lines is None else self.lines[start:stop],
                None if self.texts is None else self.texts[start:stop],
            )

        return part(0, row_index), part(row_index + 1, self.table.num_rows)


class BadLine(NamedTuple):
    """A line of a file that cannot be a row: where, why, and what it said."""

    line: int | None  # None for formats without lines (Parquet: see ``row``)
    reason: str
    text: str
    row: int | None = None  # the row's index in the file, from 0, when it had one


class BadFileError(ValueError):
    """The file itself does not parse at ``line`` (a CSV record with the wrong number
    of fields, NDJSON that is not JSON)."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"line {line}" if line is not None else "a line"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


def compression(path: str) -> str | None:
    """``gzip`` or ``zstd`` when ``path``'s last suffix says so, else None."""
    return COMPRESSIONS.get(Path(path).suffix.lower())


def delimiter(path: str) -> str:
    """The field delimiter of a CSV file: a tab for ``.tsv``."""
    name = Path(path).with_suffix("") if compression(path) else Path(path)
    return "\t" if name.suffix.lower() == ".tsv" else ","


def open_stream(path: str) -> tuple[pa.NativeFile, pa.NativeFile]:
    """(the file, the stream to read): they differ when the file is compressed."""
    raw = pa.OSFile(path)
    codec = compression(path)
    return raw, pa.CompressedInputStream(raw, codec) if codec else raw


Record = tuple[int, str, "list[str] | dict[str, Any] | BadLine"]  # (line, text, value)
# a byte that is not UTF-8, as the surrogateescape error handler reads it
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def records(path: str, *, csv_: bool) -> Iterator[tuple[list[str] | None, Record, int]]:
    """(the CSV header, record, bytes read) for each data record; a record of the wrong
    width is a :class:`BadLine`."""
    raw, stream = open_stream(path)
    try:
        # a byte that is not UTF-8 reads as a lone surrogate, found below: its line is bad
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        records = _csv_records(text, delimiter(path)) if csv_ else _json_records(text)
        header: list[str] | None = None
        for line, raw_text, value in records:
            not_utf8 = _NOT_UTF8.search(raw_text)
            if not_utf8 is not None and not isinstance(value, BadLine):
                data = raw_text.encode("utf-8", "surrogateescape")
                at = len(raw_text[: not_utf8.start()].encode("utf-8", "surrogateescape"))
                reason = f"not UTF-8: byte 0x{data[at]:02x} at byte {at + 1} of the line"
                if header is None and csv_:
                    raise BadFileError(path, line, f"the header is {reason}")
                # the text as valid UTF-8 still: each bad byte written \xff
                value = BadLine(line, reason, data.decode("utf-8", "backslashreplace"))
            if isinstance(value, list):
                if header is None:
                    header = value
                    continue
                if len(value) != len(header):
                    found = len(value)
                    reason = f"expected {len(header)} fields (as the header has), found {found}"
                    value = BadLine(line, reason, raw_text)
            yield header, (line, raw_text, value), raw.tell()
    finally:
        raw.close()


def first_bad(path: str, skip: int, *, csv_: bool) -> BadLine | None:
    """The first bad line after ``skip`` good rows."""
    done = 0
    for _, (_, _, value), _ in records(path, csv_=csv_):
        if isinstance(value, BadLine):
            if done >= skip:
                return value
        else:
            done += 1
    return None


def lenient(
    path: str, rows: int, rejects: Callable[[BadLine], None], *, csv_: bool
) -> Iterator[Chunk]:
    """Chunks read record by record (exact lines and texts); bad lines to ``rejects``."""
    pending: list[Record] = []
    header: list[str] | None = None
    done = 0
    position = 0
    for header, record, position in records(path, csv_=csv_):
        value = record[2]
        if isinstance(value, BadLine):
            rejects(value)
            continue
        done += 1
        pending.append(record)
        if len(pending) == rows:
            yield _chunk_of(pending, header, done - len(pending), position)
            pending = []
    if pending:
        yield _chunk_of(pending, header, done - len(pending), position)


def _csv_records(text: io.TextIOWrapper, delimiter: str) -> Iterator[Record]:
    """(line, text, fields) of each CSV record; a record may span several lines."""
    taken: list[str] = []

    def lines() -> Iterator[str]:
        for line in text:
            taken.append(line)
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    start = 1
    while True:
        taken.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            record = "".join(taken).rstrip("\r\n")
            yield start, record, BadLine(start, f"not CSV: {exc}", record)
        else:
            if fields:  # a blank line is no record
                yield start, "".join(taken).rstrip("\r\n"), fields
        start = reader.line_num + 1


def _json_records(text: io.TextIOWrapper) -> Iterator[Record]:
    """(line, text, object) of each NDJSON line."""
    for number, line in enumerate(text, start=1):
        record = line.rstrip("\r\n")
        if not record.strip():
            continue
        try:
            value = json.loads(record)
        except ValueError as exc:
            yield number, record, BadLine(number, f"not JSON: {exc}", record)
            continue
        if not isinstance(value, dict):
            yield number, record, BadLine(number, "not a JSON object", record)
            continue
        yield number, record, value


def _chunk_of(pending: list[Record], header: list[str] | None, first: int, position: int) -> Chunk:
    values = [value for _, _, value in pending]
    if header is not None:  # CSV: every value as text, DuckDB casts it on insert
        fields = cast("list[list[str]]", values)
        table = pa.table(
            {
                name: pa.array(
                    [None if row[i] in CSV_NULLS else row[i] for row in fields], pa.string()
                )
                for i, name in enumerate(header)
            }
        )
    else:
        table = pa.Table.from_pylist(values)
    lines = [line for line, _, _ in pending]
    return Chunk(table, first, lines[0], position, lines, [text for _, text, _ in pending])
