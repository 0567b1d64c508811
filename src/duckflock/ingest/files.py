"""Reading CSV, Parquet and NDJSON files in bounded chunks, for ``duckflock load``
(the exact, record-by-record reading is :mod:`duckflock.ingest.lines`).

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
import enum
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from duckflock.core.cursors import first_row

# Chunk, BadLine and BadFileError are part of this module's face (``duckflock load``
# reads them here), defined with the exact reading that shares them
from duckflock.ingest.lines import (
    CSV_NULLS,
    compression,
    delimiter,
    first_bad,
    lenient,
    open_stream,
)
from duckflock.ingest.lines import BadFileError as BadFileError
from duckflock.ingest.lines import BadLine as BadLine
from duckflock.ingest.lines import Chunk as Chunk
from duckflock.sql import quote_ident


class FileFormat(enum.StrEnum):
    """The formats ``duckflock load`` reads (``--format`` takes their values)."""

    CSV = "csv"  # and TSV, told by its extension
    PARQUET = "parquet"
    NDJSON = "ndjson"

    @classmethod
    def named(cls, kind: str) -> FileFormat:
        """``kind`` as a format; ValueError naming the choices."""
        try:
            return cls(kind)
        except ValueError:
            raise ValueError(f"unknown format {kind!r}: csv, parquet or ndjson") from None


FORMATS = {
    ".csv": FileFormat.CSV,
    ".tsv": FileFormat.CSV,
    ".parquet": FileFormat.PARQUET,
    ".pq": FileFormat.PARQUET,
    ".ndjson": FileFormat.NDJSON,
    ".jsonl": FileFormat.NDJSON,
    ".json": FileFormat.NDJSON,
}
_HEADER_BYTES = 1 << 20  # a CSV header longer than this is not a header


def csv_convert_options(header: Sequence[str]) -> pa_csv.ConvertOptions:
    """pyarrow's CSV reading for every reader of CSV (files and request bodies):
    each of ``header``'s columns as text, NULL only for :data:`CSV_NULLS`."""
    return pa_csv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()),
        null_values=sorted(CSV_NULLS),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def file_format(path: str) -> FileFormat:
    """The format named by ``path``'s extension (before any .gz/.zst)."""
    name = Path(path)
    if compression(path):
        name = name.with_suffix("")
    suffix = name.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; pass --format")
    return FORMATS[suffix]


def csv_header(path: str) -> list[str]:
    """The column names on a CSV file's first line."""
    raw, stream = open_stream(path)
    try:
        head = stream.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
    finally:
        raw.close()
    first = head.splitlines()[0] if head else ""
    return next(csv.reader([first], delimiter=delimiter(path)), [])


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
    kind = FileFormat.named(kind)
    if kind == FileFormat.PARQUET:
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
    if rejects is not None:
        yield from lenient(path, rows, rejects, csv_=kind == FileFormat.CSV)
        return
    raw, stream = open_stream(path)
    done = 0
    try:
        if kind == FileFormat.CSV:
            header = csv_header(path)
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=1 << 22),
                parse_options=pa_csv.ParseOptions(delimiter=delimiter(path)),
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
        bad = first_bad(path, done, csv_=kind == FileFormat.CSV)
        line, reason = (bad.line, bad.reason) if bad is not None else (None, str(exc))
        raise BadFileError(path, line, reason) from None
    finally:
        raw.close()


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
    kind = FileFormat.named(kind)
    reader = {
        # a bad line (too few fields) must not make the sniffer read one column
        FileFormat.CSV: "read_csv(?, ignore_errors = true)",
        FileFormat.NDJSON: "read_json(?, format = 'newline_delimited')",
        FileFormat.PARQUET: "read_parquet(?)",
    }[kind]
    notes = []
    with duckdb.connect() as con:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}", [path]).fetchall()
        columns = [(str(row[0]), str(row[1])) for row in described]
        if kind == FileFormat.CSV:
            sniffed = first_row(
                con.execute("SELECT DateFormat, TimestampFormat FROM sniff_csv(?)", [path])
            )
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
