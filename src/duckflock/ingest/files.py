"""Reading CSV, Parquet and NDJSON files in bounded chunks, for ``duckflock load``.

pyarrow streams each format (gzip- or zstd-compressed too: ``rows.csv.gz``,
``events.ndjson.zst``), so memory stays at about one chunk whatever the file's size.
CSV values stay text: DuckDB casts them to the table's column types on insert, so a bad
value is reported by the insert with its row. Only an empty field is NULL, as in
DuckDB's own ``read_csv`` (:data:`CSV_NULLS`): ``NaN``, ``NULL`` or ``N/A`` stay text.
Each chunk knows the file line of its first row, so an error can name the line, not
the row within a chunk. A line that is not UTF-8 is a bad line, named like any other.

A table that does not exist yet takes the schema DuckDB infers from the file
(:func:`inferred_columns`), read by DuckDB's own CSV sniffer / JSON and Parquet readers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from duckflock.sql import quote_ident

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}

_HEADER_BYTES = 1 << 20  # a CSV header longer than this is not a header
# What a CSV field reads as NULL: the empty field only (quoted too), as DuckDB's own
# read_csv reads it by default. pyarrow's default list ("NaN", "nan", "NULL", "N/A",
# "null", "#N/A" …) made a NaN NULL; DuckDB reads it as NaN, "NULL" as the text NULL.
CSV_NULLS = frozenset({""})


def csv_convert_options(header: Sequence[str]) -> pa_csv.ConvertOptions:
    """pyarrow's CSV reading for every reader of CSV (files and request bodies):
    each of ``header``'s columns as text, NULL only for :data:`CSV_NULLS`."""
    return pa_csv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()),
        null_values=sorted(CSV_NULLS),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


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


def file_format(path: str) -> str:
    """The format named by ``path``'s extension (before any .gz/.zst)."""
    name = Path(path)
    if compression(path):
        name = name.with_suffix("")
    suffix = name.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; pass --format")
    return FORMATS[suffix]


def _delimiter(path: str) -> str:
    name = Path(path).with_suffix("") if compression(path) else Path(path)
    return "\t" if name.suffix.lower() == ".tsv" else ","


def _open(path: str) -> tuple[pa.NativeFile, pa.NativeFile]:
    """(the file, the stream to read): they differ when the file is compressed."""
    raw = pa.OSFile(path)
    codec = compression(path)
    return raw, pa.CompressedInputStream(raw, codec) if codec else raw


def csv_header(path: str) -> list[str]:
    """The column names on a CSV file's first line."""
    raw, stream = _open(path)
    try:
        head = stream.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
    finally:
        raw.close()
    first = head.splitlines()[0] if head else ""
    return next(csv.reader([first], delimiter=_delimiter(path)), [])


def chunks_of(
    path: str, kind: str, rows: int, rejects: Callable[[BadLine], None] | None = None
) -> Iterator[Chunk]:
    """The file's rows in chunks of at most ``rows`` rows.

    Without ``rejects`` a line that cannot be a row raises :class:`BadFileError` naming
    it. With ``rejects``, such lines go to it and reading goes on; the lines are then
    read by Python's csv and json modules (slower than pyarrow's readers, but each
    row keeps its exact line and text for the rows DuckDB refuses later).
    """
    if rows < 1:
        raise ValueError("chunks need at least one row")
    if kind == "parquet":
        if compression(path):
            raise ValueError("a Parquet file compresses itself: give the .parquet file")
        parquet = pq.ParquetFile(path)
        size = Path(path).stat().st_size
        done = 0
        total = max(1, parquet.metadata.num_rows)
        for batch in parquet.iter_batches(batch_size=rows):
            first = done
            done += batch.num_rows
            yield Chunk(pa.Table.from_batches([batch]), first, None, size * done // total)
        return
    if kind not in ("csv", "ndjson"):
        raise ValueError(f"unknown format {kind!r}: csv, parquet or ndjson")
    if rejects is not None:
        yield from _lenient(path, kind, rows, rejects)
        return
    raw, stream = _open(path)
    done = 0
    try:
        if kind == "csv":
            header = csv_header(path)
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=1 << 22),
                parse_options=pa_csv.ParseOptions(delimiter=_delimiter(path)),
                convert_options=csv_convert_options(header),
            )
            first_line = 2  # line 1: the header
        else:
            reader = pa_json.open_json(stream, read_options=pa_json.ReadOptions(block_size=1 << 22))
            first_line = 1
        for chunk in _rechunk(reader, rows, raw.tell, first_line):
            done = chunk.first_row + chunk.table.num_rows
            yield chunk
    except pa.ArrowInvalid as exc:
        # pyarrow's message has no line: find it, reading again from the first row not
        # yet handed out (only the failing block is read twice)
        bad = _first_bad(path, kind, done)
        line, reason = (bad.line, bad.reason) if bad is not None else (None, str(exc))
        raise BadFileError(path, line, reason) from None
    finally:
        raw.close()


Record = tuple[int, str, "list[str] | dict[str, Any] | BadLine"]  # (line, text, value)
# a byte that is not UTF-8, as the surrogateescape error handler reads it
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _records(path: str, kind: str) -> Iterator[tuple[list[str] | None, Record, int]]:
    """(the CSV header, record, bytes read) for each data record; a record of the wrong
    width is a :class:`BadLine`."""
    raw, stream = _open(path)
    try:
        # a byte that is not UTF-8 reads as a lone surrogate, found below: its line is bad
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        records = _csv_records(text, _delimiter(path)) if kind == "csv" else _json_records(text)
        header: list[str] | None = None
        for line, raw_text, value in records:
            not_utf8 = _NOT_UTF8.search(raw_text)
            if not_utf8 is not None and not isinstance(value, BadLine):
                data = raw_text.encode("utf-8", "surrogateescape")
                at = len(raw_text[: not_utf8.start()].encode("utf-8", "surrogateescape"))
                reason = f"not UTF-8: byte 0x{data[at]:02x} at byte {at + 1} of the line"
                if header is None and kind == "csv":
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


def _first_bad(path: str, kind: str, skip: int) -> BadLine | None:
    """The first bad line after ``skip`` good rows."""
    done = 0
    for _, (_, _, value), _ in _records(path, kind):
        if isinstance(value, BadLine):
            if done >= skip:
                return value
        else:
            done += 1
    return None


def _lenient(
    path: str, kind: str, rows: int, rejects: Callable[[BadLine], None]
) -> Iterator[Chunk]:
    """Chunks read record by record (exact lines and texts); bad lines to ``rejects``."""
    pending: list[Record] = []
    header: list[str] | None = None
    done = 0
    position = 0
    for header, record, position in _records(path, kind):
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


def _rechunk(
    reader: pa.RecordBatchReader, rows: int, position: Callable[[], int], first_line: int
) -> Iterator[Chunk]:
    """Batches of whatever size the reader makes, re-cut to ``rows`` rows."""
    pending: list[pa.RecordBatch] = []
    count = 0
    done = 0
    for batch in reader:
        # pyarrow's JSON reader takes bytes that are not UTF-8 into its strings (its CSV
        # reader refuses them); DuckDB would refuse them later, and with no line
        batch.validate(full=True)
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending, schema=reader.schema)
            yield Chunk(table.slice(0, rows), done, first_line + done, position())
            done += rows
            rest = table.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        table = pa.Table.from_batches(pending, schema=reader.schema)
        yield Chunk(table, done, first_line + done, position())


_ISO_DATES = {"%Y-%m-%d"}
_ISO_TIMESTAMPS = {"%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"}


def inferred_columns(path: str, kind: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, DuckDB type) of each column as DuckDB reads the file by itself, and notes
    on the columns kept as text.

    The rows travel as text and DuckDB casts them on insert, which reads ISO dates and
    timestamps only: a CSV whose dates DuckDB's sniffer read in another form
    (``01/02/2024``) keeps those columns as VARCHAR rather than fail on every row.
    """
    reader = {
        # a bad line (too few fields) must not make the sniffer read one column
        "csv": "read_csv(?, ignore_errors = true)",
        "ndjson": "read_json(?, format = 'newline_delimited')",
        "parquet": "read_parquet(?)",
    }.get(kind)
    if reader is None:
        raise ValueError(f"unknown format {kind!r}: csv, parquet or ndjson")
    notes = []
    with duckdb.connect() as con:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}", [path]).fetchall()
        columns = [(str(row[0]), str(row[1])) for row in described]
        if kind == "csv":
            sniffed = con.execute(
                "SELECT DateFormat, TimestampFormat FROM sniff_csv(?)", [path]
            ).fetchone()
            dates, stamps = sniffed if sniffed else (None, None)
            for kept, form in (("DATE", dates), ("TIMESTAMP", stamps)):
                if form is None or form in _ISO_DATES | _ISO_TIMESTAMPS:
                    continue
                names = [name for name, kind_ in columns if kind_ == kept]
                if names:
                    columns = [(n, "VARCHAR" if t == kept else t) for n, t in columns]
                    notes.append(
                        f"{', '.join(names)} kept as VARCHAR: {kept.lower()}s written as "
                        f"{form} (convert with strptime(column, '{form}'))"
                    )
    return columns, notes


def create_table_sql(
    quoted_name: str,
    columns: Sequence[tuple[str, str]],
    *,
    primary_key: Sequence[str] = (),
    replace: bool = False,
) -> str:
    """``CREATE [OR REPLACE] TABLE`` for ``columns``; names quoted, keys checked."""
    known = {name.lower(): name for name, _ in columns}
    missing = [key for key in primary_key if key.lower() not in known]
    if missing:
        raise ValueError(
            f"--pk {missing[0]!r} is not a column of the file; its columns are "
            f"{', '.join(name for name, _ in columns)}"
        )
    parts = [f"{quote_ident(name)} {kind}" for name, kind in columns]
    if primary_key:
        parts.append(
            f"PRIMARY KEY ({', '.join(quote_ident(known[k.lower()]) for k in primary_key)})"
        )
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    return f"{verb} {quoted_name} ({', '.join(parts)})"
