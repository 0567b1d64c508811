"""Results streamed to the client in JSON, NDJSON, CSV, Arrow or Parquet, within a row and
a byte cap.

A :class:`Pump` pulls record batches one at a time (from a DuckDB record-batch reader or
a stored result), encodes them in the asked-for format and hands out bytes, so the
server holds one batch at a time whatever the result's size. JSON is built only when
JSON is asked for.

When a result stops early — the row cap, the byte cap, or an error after the first
bytes were sent (the status line is gone by then) — the stream still ends well-formed
and says why, in the format's own way:

- JSON: ``"truncated": true`` and ``"truncation": {"reason", "message", "rows"}`` after
  ``"rows"`` (``"truncated": false`` when complete);
- NDJSON: a last line ``{"duckflock_truncated": {"reason", "message", "rows"}}``;
- CSV: a last line ``#duckflock_truncated,<reason>,<rows>,<message>``;
- Arrow IPC: a last, empty record batch whose custom metadata holds
  ``duckflock.truncated`` (the same JSON object);
- Parquet: the file footer's key-value metadata holds ``duckflock.truncated``. Each
  batch becomes a row group as it comes, so a big answer streams like the others; the
  footer (written last) makes the file readable, so a stream cut by an error after its
  start is still a valid file that says so.

``reason`` is ``"rows"``, ``"bytes"`` or ``"error"`` (then ``"error"`` holds the error's
``type`` and ``message``). When the whole result fits in what is read before the
response starts, the ``X-Duckflock-Truncated`` header says ``true``/``false`` as well.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from duckflock.errors import DuckflockError, RequestError
from duckflock.live.results import Result
from duckflock.server import values
from duckflock.server.formats import MediaType

PREFETCH_BYTES = 256 * 1024  # encoded before the status line goes out
TRUNCATED_KEY = "duckflock.truncated"


class _Text:
    """Row-at-a-time text formats."""

    def __init__(self, schema: pa.Schema, head: dict[str, Any] | None = None) -> None:
        self.names = schema.names
        self.schema = schema
        self.head = head or {}
        self.first = True

    def start(self) -> bytes:
        raise NotImplementedError

    def rows(self, batch: pa.RecordBatch) -> list[bytes]:
        raise NotImplementedError

    def end(self, truncation: dict[str, Any] | None) -> bytes:
        raise NotImplementedError


def _dump(value: Any) -> str:
    return json.dumps(value, default=values.plain, separators=(",", ":"), allow_nan=False)


class JsonEncoder(_Text):
    media_type = MediaType.JSON

    def start(self) -> bytes:
        head = {
            **self.head,
            "columns": self.names,
            "types": [str(field.type) for field in self.schema],
        }
        return (_dump(head)[:-1] + ',"rows":[').encode()

    def rows(self, batch: pa.RecordBatch) -> list[bytes]:
        out = []
        for row in values.rows(batch):
            text = _dump(row)
            out.append(text.encode() if self.first else b"," + text.encode())
            self.first = False
        return out

    def end(self, truncation: dict[str, Any] | None) -> bytes:
        if truncation is None:
            return b'],"truncated":false}'
        return ('],"truncated":true,"truncation":' + _dump(truncation) + "}").encode()


class NdjsonEncoder(_Text):
    media_type = MediaType.NDJSON

    def start(self) -> bytes:
        return b""

    def rows(self, batch: pa.RecordBatch) -> list[bytes]:
        return [
            (_dump(dict(zip(self.names, row, strict=True))) + "\n").encode()
            for row in values.rows(batch)
        ]

    def end(self, truncation: dict[str, Any] | None) -> bytes:
        if truncation is None:
            return b""
        return (_dump({"duckflock_truncated": truncation}) + "\n").encode()


class CsvEncoder(_Text):
    media_type = MediaType.CSV

    def _line(self, cells: list[Any]) -> bytes:
        sink = io.StringIO()
        csv.writer(sink, lineterminator="\n").writerow(cells)
        return sink.getvalue().encode()

    def start(self) -> bytes:
        return self._line(self.names)

    def rows(self, batch: pa.RecordBatch) -> list[bytes]:
        out = []
        for row in values.rows(batch):
            cells = [_csv_cell(v) for v in row]
            out.append(self._line(cells))
        return out

    def end(self, truncation: dict[str, Any] | None) -> bytes:
        if truncation is None:
            return b""
        return self._line(
            [
                "#duckflock_truncated",
                truncation["reason"],
                truncation["rows"],
                truncation["message"],
            ]
        )


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _dump(value)
    return value


class _Binary:
    """Batch-at-a-time binary formats: a writer fills a buffer, each step takes what it
    wrote. The byte cap is checked against a batch's Arrow size before it is written."""

    media_type: str

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._sink = io.BytesIO()

    def _take(self) -> bytes:
        data = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return data

    def start(self) -> bytes:
        return self._take()  # what the writer wrote when it opened: schema, magic bytes

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self._write(batch)
        return self._take()

    def end(self, truncation: dict[str, Any] | None) -> bytes:
        self._close(None if truncation is None else _dump(truncation))
        return self._take()

    def _write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def _close(self, truncation: str | None) -> None:
        raise NotImplementedError


class ArrowEncoder(_Binary):
    """Arrow IPC stream, one record batch per message."""

    media_type = MediaType.ARROW

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__(schema)
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def _write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def _close(self, truncation: str | None) -> None:
        if truncation is not None:
            empty = pa.RecordBatch.from_pylist([], schema=self.schema)
            self._writer.write_batch(empty, custom_metadata={TRUNCATED_KEY: truncation})
        self._writer.close()


class ParquetEncoder(_Binary):
    """A Parquet file, one row group per record batch, streamed as it is written."""

    media_type = MediaType.PARQUET

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__(schema)
        try:
            self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
            raise RequestError(
                f"this result cannot be written as Parquet ({exc}); ask for Arrow "
                f"({MediaType.ARROW}) or CSV, or cast the column in the SQL"
            ) from exc

    def _write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def _close(self, truncation: str | None) -> None:
        if truncation is not None:
            self._writer.add_key_value_metadata({TRUNCATED_KEY: truncation})
        self._writer.close()


Encoder = JsonEncoder | NdjsonEncoder | CsvEncoder | ArrowEncoder | ParquetEncoder


def encoder_for(kind: str, schema: pa.Schema, head: dict[str, Any] | None = None) -> Encoder:
    if kind == MediaType.PARQUET:
        return ParquetEncoder(schema)
    if kind == MediaType.ARROW:
        return ArrowEncoder(schema)
    if kind == MediaType.CSV:
        return CsvEncoder(schema)
    if kind == MediaType.NDJSON:
        return NdjsonEncoder(schema)
    return JsonEncoder(schema, head)


class Pump:
    """Pulls batches from ``next_batch`` (None at the end), encodes them, caps them.

    ``step()`` runs in a worker thread; it returns the next bytes to send, or None when
    the stream is over. Errors before :meth:`prefetch` returns propagate (the route still
    sends a proper error status); later ones end the stream with a truncation marker.
    """

    def __init__(
        self,
        next_batch: Callable[[], pa.RecordBatch | None],
        encoder: Encoder,
        *,
        row_cap: int | None,
        byte_cap: int,
    ) -> None:
        self.next_batch = next_batch
        self.encoder = encoder
        self.row_cap = row_cap
        self.byte_cap = byte_cap
        self.rows = 0
        self.bytes = 0
        self.truncation: dict[str, Any] | None = None
        self.finished = False
        self._started = False
        self._streaming = False  # True once the status line is out: errors become markers
        self._pending: pa.RecordBatch | None = None

    def prefetch(self) -> tuple[bytes, bool]:
        """What to send first, and whether that is the whole stream."""
        parts = []
        size = 0
        while size < PREFETCH_BYTES:
            chunk = self.step()
            if chunk is None:
                break
            parts.append(chunk)
            size += len(chunk)
        self._streaming = True
        return b"".join(parts), self.finished

    def step(self) -> bytes | None:
        if self.finished:
            return None
        if not self._started:
            self._started = True
            return self.encoder.start()
        try:
            batch = self._pending if self._pending is not None else self.next_batch()
            self._pending = None
        except DuckflockError as exc:
            if not self._streaming:
                raise
            return self._end("error", str(exc), error=exc)
        if batch is None:
            return self._end(None, "")
        if self.row_cap is not None and self.rows + batch.num_rows > self.row_cap:
            if self.rows >= self.row_cap:
                return self._end("rows", f"the result has more than {self.row_cap:,} rows")
            self._pending = batch.slice(self.row_cap - self.rows)
            batch = batch.slice(0, self.row_cap - self.rows)
        data, taken = self._encode(batch, self.byte_cap - self.bytes)
        self.rows += taken
        self.bytes += len(data)
        if taken < batch.num_rows:
            self._pending = None
            tail = self._end(
                "bytes", f"the result is over the {self.byte_cap:,}-byte limit of one response"
            )
            return data + (tail or b"")
        return data

    def _encode(self, batch: pa.RecordBatch, budget: int) -> tuple[bytes, int]:
        if isinstance(self.encoder, _Binary):
            rows = batch.num_rows
            while rows > 0:
                part = batch.slice(0, rows)
                if pa.ipc.get_record_batch_size(part) <= budget:
                    return self.encoder.batch(part), rows
                rows //= 2
            return b"", 0
        pieces = self.encoder.rows(batch)
        out = []
        size = 0
        for piece in pieces:
            if size + len(piece) > budget:
                break
            out.append(piece)
            size += len(piece)
        return b"".join(out), len(out)

    def _end(self, reason: str | None, message: str, error: DuckflockError | None = None) -> bytes:
        self.finished = True
        if reason is not None:
            self.truncation = {"reason": reason, "message": message, "rows": self.rows}
            if error is not None:
                self.truncation["error"] = {"type": type(error).__name__, "message": str(error)}
        return self.encoder.end(self.truncation)


def result_headers(result: Result) -> dict[str, str]:
    """The HTTP headers that describe an analysis's result."""
    headers = {
        "X-Duckflock-Version": str(result.version),
        "X-Duckflock-Refreshed-At": result.refreshed_at.isoformat(),
        "X-Duckflock-Duration": f"{result.duration:.6f}",
        "X-Duckflock-Watermark": str(result.watermark),
        "X-Duckflock-Mode": result.mode,
    }
    if result.now is not None:  # a sliding window's instant
        headers["X-Duckflock-Now"] = result.now.isoformat()
    if result.error is not None:
        headers["X-Duckflock-Error"] = json.dumps(
            {"type": type(result.error).__name__, "message": result.error.message}
        )
    return headers
