"""Request bodies in, results out: JSON, NDJSON, CSV and Arrow IPC, by content type."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from ..errors import RequestError, UnsupportedMediaTypeError
from ..results import Result

JSON = "application/json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
_ALIASES = {
    "application/json": JSON,
    "application/x-ndjson": NDJSON,
    "application/ndjson": NDJSON,
    "application/jsonlines": NDJSON,
    "text/csv": CSV,
    "application/vnd.apache.arrow.stream": ARROW,
    "application/x-arrow": ARROW,
}


def media_type(header: str | None, default: str | None = None) -> str | None:
    """The canonical media type named by a Content-Type or Accept header (first match)."""
    if not header:
        return default
    for part in header.split(","):
        name = part.split(";")[0].strip().lower()
        if name in _ALIASES:
            return _ALIASES[name]
        if name in ("*/*", "application/*") and default is not None:
            return default
    return None


def parse_rows(
    body: bytes, content_type: str | None
) -> list[dict[str, Any]] | list[Any] | pa.Table:
    """An ingest body as rows (JSON object/array, NDJSON, CSV) or an Arrow table."""
    kind = media_type(content_type)
    if kind is None:
        raise UnsupportedMediaTypeError(
            f"cannot ingest Content-Type {content_type!r}; use {JSON}, {NDJSON}, {CSV} or {ARROW}"
        )
    if not body.strip():
        raise RequestError("the request body is empty")
    if kind == JSON:
        data = loads(body, "JSON")
        if isinstance(data, dict):
            return [data]
        if not isinstance(data, list):
            raise RequestError("a JSON body is one object (a row) or an array of rows")
        if any(not isinstance(row, dict | list) for row in data):
            raise RequestError("each row in a JSON array is an object or an array")
        return [tuple(row) if isinstance(row, list) else row for row in data]
    if kind == NDJSON:
        rows = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            row = loads(line, f"NDJSON on line {number}")
            if not isinstance(row, dict):
                raise RequestError(f"NDJSON line {number} is not a JSON object")
            rows.append(row)
        return rows
    if kind == CSV:
        return _csv(body)
    try:
        return pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(f"malformed Arrow IPC stream: {exc}") from exc


def loads(text: bytes, what: str) -> Any:
    """JSON, or RequestError with the parser's message (too deep nesting included)."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"malformed {what}: {exc}") from exc
    except RecursionError:
        raise RequestError(f"malformed {what}: nested too deeply") from None


def _csv(body: bytes) -> pa.Table:
    """CSV with a header row; every value stays text so DuckDB casts it to the column."""
    try:
        first_line = body.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
        header = next(csv.reader([first_line]))
        return pa_csv.read_csv(
            io.BytesIO(body),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise RequestError(f"malformed CSV: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)  # HUGEINT sums arrive as scale-0 decimals
        return str(value)  # exact: a JSON number would round
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def table_json(table: pa.Table) -> dict[str, Any]:
    """Columns, their types and the rows (as arrays) of an Arrow table."""
    columns = [column.to_pylist() for column in table.columns]
    return {
        "columns": table.column_names,
        "types": [str(field.type) for field in table.schema],
        "rows": [[_plain(v) for v in row] for row in zip(*columns, strict=True)] if columns else [],
    }


def result_json(result: Result) -> dict[str, Any]:
    return {
        "name": result.name,
        "version": result.version,
        "refreshed_at": result.refreshed_at.isoformat(),
        "duration": result.duration,
        "watermark": result.watermark,
        "mode": result.mode,
        "error": None
        if result.error is None
        else {"type": type(result.error).__name__, "message": result.error.message},
        **table_json(result.table),
    }


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    return sink.getvalue()


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_plain, separators=(",", ":")).encode()
