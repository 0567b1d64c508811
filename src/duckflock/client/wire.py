"""What travels between the client and a server: event streams, JSON and Arrow bodies,
error replies, path segments — the client's half of the HTTP API (docs/http-api.md)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa

from duckflock.errors import DuckflockError, QueryError, from_payload
from duckflock.live.results import Mode, Result

ARROW = "application/vnd.apache.arrow.stream"


class RemoteResults:
    """A query's rows, fetched: the DuckDB-style accessors over an Arrow table."""

    def __init__(self, table: pa.Table, truncated: bool) -> None:
        self.table = table
        self.truncated = truncated  # the server's row cap cut the result short

    @property
    def description(self) -> list[tuple[str, str]]:
        return [(field.name, str(field.type)) for field in self.table.schema]

    def fetchall(self) -> list[tuple[Any, ...]]:
        columns = [column.to_pylist() for column in self.table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.table.slice(0, 1)
        return self.__class__(rows, False).fetchall()[0] if rows.num_rows else None

    def arrow(self) -> pa.Table:
        return self.table

    def df(self) -> Any:
        return self.table.to_pandas()

    def pl(self) -> Any:
        import polars

        return polars.from_arrow(self.table)


def sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str]]:
    """(event, id, data) of a server-sent event stream (comments and pings skipped)."""
    event, ident, data = "message", "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, ident, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "id":
                ident = value
            elif field == "data":
                data.append(value)


# how the server's JSON spells the floats JSON has no number for (docs/http-api.md)
_NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def column_from_json(values: list[Any], type_name: str | None) -> pa.Array:
    """One column of a JSON table: floats with their ±Infinity spelled back (NaN
    arrives as null: JSON has none), other values as pyarrow reads them."""
    if type_name in ("double", "float", "halffloat"):
        values = [_NON_FINITE.get(v, v) if isinstance(v, str) else v for v in values]
        return pa.array(values, pa.float64())
    return pa.array(values)


def table_from_json(payload: dict[str, Any], width: int | None = None) -> pa.Table:
    """The first ``width`` columns (all: None) of a JSON table (``columns``, ``types``,
    ``rows``)."""
    columns = payload["columns"][:width]
    types = list(payload.get("types") or [None] * len(columns))
    rows = payload["rows"]
    return pa.table(
        {
            c: column_from_json([row[i] for row in rows], types[i] if i < len(types) else None)
            for i, c in enumerate(columns)
        }
    )


def result_from_json(payload: dict[str, Any]) -> Result:
    table = table_from_json(payload)
    error = payload.get("error")
    rebuilt = from_payload(error) if error else None
    return Result(
        name=payload["name"],
        table=table,
        version=int(payload["version"]),
        refreshed_at=datetime.fromisoformat(payload["refreshed_at"]),
        duration=float(payload["duration"]),
        watermark=int(payload["watermark"]),
        mode=Mode(payload["mode"]),
        error=rebuilt if isinstance(rebuilt, QueryError) else None,
        reason=str(payload.get("reason", "")),
        now=datetime.fromisoformat(payload["now"]) if payload.get("now") else None,
    )


def read_arrow(data: bytes) -> tuple[pa.Table, bool]:
    """An Arrow IPC stream from the server, and whether it was cut short (its last,
    empty batch then carries ``duckflock.truncated``; a cut made by an error raises)."""
    reader = pa.ipc.open_stream(data)
    batches = []
    truncated = False
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        marker = metadata.get(b"duckflock.truncated") if metadata else None
        if marker is not None:
            truncated = True
            details = json.loads(marker)
            if details.get("reason") == "error" and details.get("error"):
                raise from_payload(details["error"])
            continue
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema), truncated


def json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        payload = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise DuckflockError(
            f"HTTP {response.status_code} from the server: {response.text[:200]}"
        ) from None
    raise from_payload(payload)


def segment(name: str) -> str:
    """A table or analysis name as one URL path segment (``?``, ``#``, ``%`` escaped)."""
    return quote(name, safe="")


def plain(value: Any) -> Any:
    """JSON for values json cannot write: text DuckDB casts to the column's type."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds()} seconds"
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(
        f"a {type(value).__name__} value cannot be sent as JSON; pass the rows as an Arrow "
        "table or a DataFrame instead"
    )


def json_rows(rows: list[Any]) -> bytes:
    try:
        return json.dumps(rows, default=plain, allow_nan=False).encode()
    except ValueError:
        raise ValueError(
            "NaN and infinities cannot be sent as JSON; pass the rows as an Arrow table or "
            "a DataFrame instead"
        ) from None


def json_ready_rows(data: Any, columns: Sequence[str] | None) -> list[Any]:
    """The rows of an insert sent as JSON: dicts, or lists in ``columns``' order."""
    if isinstance(data, dict | tuple):
        data = [data]
    elif isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise TypeError(
            "insert takes a dict or tuple (one row), an iterable of them, a DataFrame "
            f"or an Arrow table, not {type(data).__name__}"
        )
    rows = list(data)
    if columns is not None:
        names = list(columns)
        return [
            dict(zip(names, row, strict=True)) if not isinstance(row, dict) else row for row in rows
        ]
    return [list(row) if isinstance(row, tuple) else row for row in rows]
