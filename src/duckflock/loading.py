"""Reading CSV, Parquet and NDJSON files in bounded chunks, for ``duckflock load``.

pyarrow streams each format (gzip- or zstd-compressed too: ``rows.csv.gz``,
``events.ndjson.zst``), so memory stays at about one chunk whatever the file's size.
CSV values stay text: DuckDB casts them to the table's column types on insert, so a bad
value is reported by the insert with its row. Each chunk knows the file line of its
first row, so an error can name the line, not the row within a chunk.

A table that does not exist yet takes the schema DuckDB infers from the file
(:func:`inferred_columns`), read by DuckDB's own CSV sniffer / JSON and Parquet readers.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .names import quote

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


@dataclass(frozen=True)
class Chunk:
    """Rows of a file: the rows, the file line of the first (None for Parquet, whose
    rows have no lines) and how many bytes of the file were read so far."""

    table: pa.Table
    first_row: int  # index of the first row in the file, from 0
    first_line: int | None
    position: int

    def line_of(self, row_index: int) -> int | None:
        return None if self.first_line is None else self.first_line + row_index


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


def chunks_of(path: str, kind: str, rows: int) -> Iterator[Chunk]:
    """The file's rows in chunks of at most ``rows`` rows."""
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
    raw, stream = _open(path)
    try:
        if kind == "csv":
            header = csv_header(path)
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=1 << 22),
                parse_options=pa_csv.ParseOptions(delimiter=_delimiter(path)),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
                ),
            )
            yield from _rechunk(reader, rows, raw.tell, first_line=2)  # line 1: the header
        elif kind == "ndjson":
            reader = pa_json.open_json(stream, read_options=pa_json.ReadOptions(block_size=1 << 22))
            yield from _rechunk(reader, rows, raw.tell, first_line=1)
        else:
            raise ValueError(f"unknown format {kind!r}: csv, parquet or ndjson")
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
        "csv": "read_csv(?)",
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
    parts = [f"{quote(name)} {kind}" for name, kind in columns]
    if primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote(known[k.lower()]) for k in primary_key)})")
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    return f"{verb} {quoted_name} ({', '.join(parts)})"
