"""Reading CSV, Parquet and NDJSON files in bounded chunks, for ``duckflock load``.

pyarrow streams each format, so memory stays at about one chunk whatever the file's
size. CSV values stay text: DuckDB casts them to the table's column types on insert.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}


def file_format(path: str) -> str:
    """The format named by ``path``'s extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path!r} from its extension; pass --format")
    return FORMATS[suffix]


def chunks_of(path: str, kind: str, rows: int) -> Iterator[tuple[pa.Table, int]]:
    """(chunk, bytes read so far) pairs of at most ``rows`` rows each."""
    if rows < 1:
        raise ValueError("chunks need at least one row")
    size = Path(path).stat().st_size
    if kind == "parquet":
        parquet = pq.ParquetFile(path)
        done = 0
        total = max(1, parquet.metadata.num_rows)
        for batch in parquet.iter_batches(batch_size=rows):
            done += batch.num_rows
            yield pa.Table.from_batches([batch]), size * done // total
        return
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader([handle.readline()]), [])
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        with open(path, "rb") as source:
            reader = pa_csv.open_csv(
                source,
                read_options=pa_csv.ReadOptions(block_size=1 << 22),
                parse_options=pa_csv.ParseOptions(delimiter=delimiter),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
                ),
            )
            yield from _rechunk(reader, rows, source.tell)
        return
    if kind == "ndjson":
        with open(path, "rb") as source:
            reader = pa_json.open_json(source, read_options=pa_json.ReadOptions(block_size=1 << 22))
            yield from _rechunk(reader, rows, source.tell)
        return
    raise ValueError(f"unknown format {kind!r}: csv, parquet or ndjson")


def _rechunk(
    reader: pa.RecordBatchReader, rows: int, position: Callable[[], int]
) -> Iterator[tuple[pa.Table, int]]:
    """Batches of whatever size the reader makes, re-cut to ``rows`` rows."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows), position()
            rest = table.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending), position()
