"""Request bodies in, results out: JSON, NDJSON, CSV and Arrow IPC, by content type;
results also as Parquet (an answer format only: ingest takes files through ``load``)."""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import sys
import threading
from enum import StrEnum
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv

from duckflock.errors import RequestError, UnsupportedMediaTypeError
from duckflock.ingest.files import csv_convert_options
from duckflock.ingest.rows import validate
from duckflock.live.changes import Change
from duckflock.live.results import Result
from duckflock.server import values


class MediaType(StrEnum):
    """The media types the HTTP API reads (Content-Type) and writes (Accept)."""

    JSON = "application/json"
    NDJSON = "application/x-ndjson"
    CSV = "text/csv"
    ARROW = "application/vnd.apache.arrow.stream"
    PARQUET = "application/vnd.apache.parquet"  # IANA-registered in 2024; answers only


# what an ingest body may be (Content-Type); answers may also be Parquet (Accept)
_ALIASES = {
    "application/json": MediaType.JSON,
    "application/x-ndjson": MediaType.NDJSON,
    "application/ndjson": MediaType.NDJSON,
    "application/jsonlines": MediaType.NDJSON,
    "text/csv": MediaType.CSV,
    "application/vnd.apache.arrow.stream": MediaType.ARROW,
    "application/x-arrow": MediaType.ARROW,
}
_ANSWER_ALIASES = {
    **_ALIASES,
    MediaType.PARQUET: MediaType.PARQUET,
    "application/x-parquet": MediaType.PARQUET,
}


def media_type(header: str | None, default: MediaType | None = None) -> MediaType | None:
    """The canonical media type an Accept header asks for (its first known entry)."""
    if not header:
        return default
    for part in header.split(","):
        name = part.split(";")[0].strip().lower()
        if name in _ANSWER_ALIASES:
            return _ANSWER_ALIASES[name]
        if name in ("*/*", "application/*") and default is not None:
            return default
    return None


@functools.lru_cache(maxsize=64)  # parsed twice per ingest, and clients send a few values
def content_type(header: str | None) -> MediaType | None:
    """The canonical media type of a Content-Type header, or None.

    Strict on purpose: a Content-Type names exactly one type, so
    ``text/plain;,application/json`` is ``text/plain`` — a type a web page may send
    to any origin without a CORS preflight, which must never reach a parser.
    """
    if not header:
        return None
    name = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(name)


def parse_rows(
    body: bytes, content_type_header: str | None
) -> list[dict[str, Any]] | list[Any] | pa.Table:
    """An ingest body as rows (JSON object/array, NDJSON, CSV) or an Arrow table.

    Runs in a worker thread (bodies can be megabytes). Text that is not valid Unicode
    — a lone surrogate escaped in JSON, invalid UTF-8 in CSV or Arrow — is refused here
    with a 400, before it can reach the writer.
    """
    kind = content_type(content_type_header)
    if kind is None:
        raise UnsupportedMediaTypeError(
            f"cannot ingest Content-Type {content_type_header!r}; "
            f"use {MediaType.JSON}, {MediaType.NDJSON}, {MediaType.CSV} or {MediaType.ARROW}"
        )
    if not body.strip():
        raise RequestError("the request body is empty")
    if kind == MediaType.JSON:
        # up to 1 MiB json.loads is fastest (milliseconds); beyond, parse element by element
        chunked = len(body) > _CHUNKED_ABOVE and body.lstrip()[:1] == b"["
        data = _json_array(body) if chunked else loads(body, "JSON", rows=True)
        if isinstance(data, dict):
            return [data]
        if not isinstance(data, list):
            raise RequestError("a JSON body is one object (a row) or an array of rows")
        if any(not isinstance(row, dict | list) for row in data):
            raise RequestError("each row in a JSON array is an object or an array")
        return [tuple(row) if isinstance(row, list) else row for row in data]
    if kind == MediaType.NDJSON:
        rows = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            row = loads(line, f"NDJSON on line {number}", rows=True)
            if not isinstance(row, dict):
                raise RequestError(f"NDJSON line {number} is not a JSON object")
            rows.append(row)
        return rows
    if kind == MediaType.CSV:
        return _csv(body)
    try:
        source = pa.BufferReader(body)
        table = pa.ipc.open_stream(source).read_all()
        validate(table)  # invalid UTF-8 in a string column, bad offsets
        if source.tell() != len(body):  # a second stream, or bytes after the end mark
            raise RequestError(
                f"the body has {len(body) - source.tell():,} bytes after the Arrow IPC "
                "stream's end: send one stream per request"
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(f"malformed Arrow IPC stream: {exc}") from exc
    unreadable = _unreadable(table.schema)
    if unreadable is not None:
        raise RequestError(unreadable)
    return table


_SCANNER = duckdb.connect()  # asks DuckDB which Arrow types it reads (a cursor per thread)
_SCANNER_CURSORS = threading.local()  # .cursor: this thread's
_SCANNER_LOCK = threading.Lock()  # taken to make a cursor of the shared connection


def _scanner() -> duckdb.DuckDBPyConnection:
    """This thread's cursor on :data:`_SCANNER`: a DuckDB connection is not thread-safe
    (DuckDB's Python docs: a cursor per thread); it goes with its thread."""
    cursor: duckdb.DuckDBPyConnection | None = getattr(_SCANNER_CURSORS, "cursor", None)
    if cursor is None:
        with _SCANNER_LOCK:
            cursor = _SCANNER_CURSORS.cursor = _SCANNER.cursor()
    return cursor


@functools.lru_cache(maxsize=256)  # thread-safe: one lookup, never a KeyError mid-eviction
def _unreadable(schema: pa.Schema) -> str | None:
    """Why DuckDB cannot read Arrow columns of ``schema`` (a halffloat, say: DuckDB has no
    such type), naming the column; None when it can. DuckDB answers, once per schema."""
    scanner = _scanner()
    try:
        scanner.from_arrow(schema.empty_table()).fetchall()
    except duckdb.Error:
        for spec in schema:
            try:
                scanner.from_arrow(pa.schema([spec]).empty_table()).fetchall()
            except duckdb.Error as exc:
                return f"column {spec.name!r}: DuckDB cannot read Arrow type {spec.type} ({exc})"
    return None


_DECODER = json.JSONDecoder()
_CHUNKED_ABOVE = 2**20  # bytes
_SPACE = re.compile(r"[ \t\n\r]*")


def _json_array(body: bytes) -> list[Any]:
    """A JSON array parsed one element at a time: the same result as ``json.loads``, but
    the GIL changes hands between elements, so a big body in a worker thread does not
    stall the event loop for the whole parse."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from exc
    rows: list[Any] = []
    position = _SPACE.match(text, 0).end() + 1  # type: ignore[union-attr]  # past the "["
    position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
    try:
        if text[position : position + 1] == "]":
            position += 1
        else:
            while True:
                row, position = _DECODER.raw_decode(text, position)
                rows.append(row)
                position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
                separator = text[position : position + 1]
                position = _SPACE.match(text, position + 1).end()  # type: ignore[union-attr]
                if separator == "]":
                    break
                if separator != ",":
                    raise json.JSONDecodeError("expected ',' or ']'", text, position - 1)
        if text[position:].strip():
            raise json.JSONDecodeError("extra data", text, position)
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError:  # an integer past Python's digit limit, in this row
        raise _too_long(text, position, "JSON", rows=True, row=len(rows)) from None
    if _SURROGATE_ESCAPE.search(body):
        check_text(rows, "JSON")
    return rows


class _LongInt:
    """A JSON integer past Python's digit limit, as the lenient decoder keeps it."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _lenient_int(text: str) -> Any:
    long = len(text) - text.startswith("-") > sys.get_int_max_str_digits()
    return _LongInt(text) if long else int(text)


_LENIENT = json.JSONDecoder(parse_int=_lenient_int)  # only once json gave up on one


def _too_long(text: str, start: int, what: str, *, rows: bool, row: int | None = None) -> Any:
    """A RequestError naming the integer of too many digits in the JSON value at
    ``start`` of ``text`` (re-read keeping such integers), by row and column for rows
    (``row``: the index of that value, when it is one row of an array)."""
    path: list[int | str] = [] if row is None else [row]
    stack: list[tuple[Any, list[int | str]]] = [(_LENIENT.raw_decode(text, start)[0], [])]
    found = None
    while stack and found is None:
        item, at = stack.pop()
        if isinstance(item, _LongInt):
            found, path = item, path + at
        elif isinstance(item, dict):
            stack.extend((v, [*at, k]) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, [*at, i]) for i, v in reversed(list(enumerate(item))))
    assert found is not None, "json refused an integer the lenient decoder took"
    words = []
    if rows and path and isinstance(path[0], int):
        words.append(f"row {path.pop(0)}")
    if rows and path:
        step = path.pop(0)
        words.append(f"column {step!r}" if isinstance(step, str) else f"value {step}")
    if path:
        words.append("at " + "".join(f"[{step!r}]" for step in path))
    return RequestError(
        f"malformed {what}: {', '.join(words) or 'the value'}: an integer of "
        f"{found.digits:,} digits; JSON integers may have at most "
        f"{sys.get_int_max_str_digits():,}"
    )


# a \uD800-\uDFFF escape: JSON allows it, Python decodes it, UTF-8 cannot hold it alone
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


# json.loads's own scanner (C), one value per call (typeshed leaves the attribute out)
_SCAN_ONCE = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def one_object(text: bytes) -> Any:
    """``json.loads(text)`` for a body that is one UTF-8 object with nothing around it
    (a one-row ingest): its scanner called directly, without ``json.loads``'s encoding
    detection (a ``{`` then a non-zero byte is UTF-8 to it) and whitespace matches; None
    for anything else, or for whatever the scanner refuses (``json.loads`` then parses,
    or says why not, as ever)."""
    if text[:1] != b"{" or text[-1:] != b"}" or text[1:2] == b"\x00":
        return None
    try:
        decoded = text.decode("utf-8", "surrogatepass")  # as json.loads decodes it
        value, end = _SCAN_ONCE(decoded, 0)
    except (StopIteration, ValueError, RecursionError):  # UnicodeDecodeError included
        return None
    return value if end == len(decoded) else None


def loads(text: bytes, what: str, *, rows: bool = False) -> Any:
    """JSON, or RequestError with the parser's message (too deep nesting and lone
    surrogates included)."""
    try:
        value = one_object(text)
        if value is None:
            value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"malformed {what}: {exc}") from exc
    except RecursionError:
        raise RequestError(f"malformed {what}: nested too deeply") from None
    except ValueError:  # an integer past Python's digit limit: say where
        # decoded as json.loads decoded it (a BOM, UTF-16/32, encoded surrogates)
        decoded = text.decode(json.detect_encoding(text), "surrogatepass")
        raise _too_long(decoded, 0, what, rows=rows) from None
    if _SURROGATE_ESCAPE.search(text):  # rare: then check every string for real
        check_text(value, what)
    return value


def check_text(value: Any, what: str) -> None:
    """RequestError if any string in ``value`` (keys too) is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RequestError(
                    f"malformed {what}: a string holds a lone surrogate "
                    f"({item[exc.start]!r} at position {exc.start}); text must be valid Unicode"
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _csv(body: bytes) -> pa.Table:
    """CSV with a header row; every value stays text so DuckDB casts it to the column."""
    try:
        first_line = body.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
        header = next(csv.reader([first_line]))
        return pa_csv.read_csv(
            io.BytesIO(body),
            convert_options=csv_convert_options(header),  # NULL as DuckDB's read_csv
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise RequestError(f"malformed CSV: {exc}") from exc


def table_json(table: pa.Table) -> dict[str, Any]:
    """Columns, their types and the rows (as arrays) of an Arrow table."""
    return {
        "columns": table.column_names,
        "types": [str(field.type) for field in table.schema],
        "rows": values.rows(table),
    }


def result_json_head(result: Result) -> dict[str, Any]:
    """A result's fields but its columns and rows."""
    return {
        "name": result.name,
        "version": result.version,
        "refreshed_at": result.refreshed_at.isoformat(),
        "duration": result.duration,
        "watermark": result.watermark,
        "mode": result.mode,
        "reason": result.reason,
        "now": None if result.now is None else result.now.isoformat(),  # a sliding window's
        "error": None
        if result.error is None
        else {"type": type(result.error).__name__, "message": result.error.message},
    }


def result_event(result: Result, byte_cap: int) -> str:
    """One server-sent event's data: the result as JSON, or — over ``byte_cap`` — its
    fields with no rows and ``"truncated": true`` (fetch it from /result instead)."""
    text = dumps(result_json(result))
    if len(text) > byte_cap:
        head = result_json_head(result)
        text = dumps({**head, "columns": result.table.column_names, "rows": [], "truncated": True})
    return text.decode()


def result_json(result: Result) -> dict[str, Any]:
    return {**result_json_head(result), **table_json(result.table)}


# one encoder for every answer (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(default=values.plain, separators=(",", ":"), allow_nan=False)


def dumps(payload: Any) -> bytes:
    """Strict JSON (never NaN or Infinity: a non-finite float becomes null)."""
    try:
        text = _ENCODER.encode(payload)
    except ValueError:
        text = _ENCODER.encode(values.clean(payload))
    return text.encode()


def change_event(change: Change, byte_cap: int) -> str:
    """One change event's data: its fields, columns and rows (the last column is
    ``__diff``), or — over ``byte_cap`` — no rows and ``"truncated": true`` (fetch the
    result at that version instead, then resume after it)."""
    head = {
        "name": change.name,
        "id": change.id,
        "since": change.since,
        "version": change.version,
        "snapshot": change.snapshot,
    }
    text = dumps({**head, **table_json(change.table)})
    if len(text) > byte_cap:
        text = dumps({**head, "columns": change.table.column_names, "rows": [], "truncated": True})
    return text.decode()
