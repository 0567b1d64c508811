"""One-dimensional arrays of any type with an adapter: ``{1,NULL,"a b"}`` as text, the
elements' own binary forms (with a header) as binary; both ways."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from duckflock.server.pgwire.types.adapt import I4, Encoder
from duckflock.server.pgwire.types.bool import SPACE
from duckflock.sql import LexError, Quoting, quote_bytes, read_quoted

# PostgreSQL's array_out quotes an element that is empty, spells NULL, or holds
# whitespace or one of {},"\\ -- whatever its type
_NEEDS_QUOTES = re.compile(rb'[{},"\\\s]')


def dump_text(values: list[Any], encode: Encoder) -> bytes:
    parts = []
    for value in values:
        if value is None:
            parts.append(b"NULL")
            continue
        text = encode(value)
        if not text or _NEEDS_QUOTES.search(text) or text.upper() == b"NULL":
            text = quote_bytes(text, Quoting.BACKSLASH)
        parts.append(text)
    return b"{" + b",".join(parts) + b"}"


def dump_binary(values: list[Any], element: int, encode: Encoder) -> bytes:
    if not values:  # PostgreSQL sends an empty array with no dimensions
        return struct.pack("!iii", 0, 0, element)
    has_null = any(v is None for v in values)
    out = [struct.pack("!iiiii", 1, int(has_null), element, len(values), 1)]
    for value in values:
        if value is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            data = encode(value)
            out.append(I4.pack(len(data)) + data)
    return b"".join(out)


def load_binary(data: bytes, load_element: Callable[[int, bytes], Any]) -> list[Any]:
    """A one-dimensional array in binary form (the elements' own binary forms, each
    read by ``load_element(element OID, bytes)``)."""
    dims, _, element = struct.unpack_from("!iii", data)
    if dims == 0:
        return []
    if dims != 1:
        raise ValueError("only one-dimensional array parameters are supported")
    count, _ = struct.unpack_from("!ii", data, 12)
    at, values = 20, list[Any]()
    for _ in range(count):
        size = I4.unpack_from(data, at)[0]
        at += 4
        if size < 0:
            values.append(None)
        else:
            values.append(load_element(element, data[at : at + size]))
            at += size
    return values


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in SPACE:
        at += 1
    return at


# an unquoted element: up to a comma or brace that no backslash escapes (possessive: no
# backtracking state kept, which took 285 MB for 2 MB of escapes); a backslash and the
# character it escapes (split on it: the text between, then each escaped character)
_UNQUOTED = re.compile(r"(?:[^\\,}]|\\.)*+", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)


def _unquoted(text: str, at: int) -> tuple[str | None, int]:
    """The unquoted element at ``text[at]`` (after its leading space), as PostgreSQL's
    array_in reads it: a backslash escapes the next character, unescaped space at the end
    is dropped, and NULL (unescaped, any case) is None; and the index after it."""
    found = _UNQUOTED.match(text, at)
    stop = at if found is None else found.end()  # (never None: the pattern matches "")
    if text.startswith("\\", stop):
        raise LexError(text, "has a backslash at its end", stop)
    parts = _ESCAPE.split(text[at:stop])  # as written, escaped, as written, …
    parts[-1] = parts[-1].rstrip(SPACE)
    item, plain = "".join(parts), "".join(parts[::2])
    if not item:
        raise LexError(text, "has an empty array element", at)
    if "{" in plain:
        raise ValueError("only one-dimensional array parameters are supported")
    if '"' in plain:  # at: where the element starts
        raise LexError(text, "has a quote inside an unquoted array element", at)
    return (None if len(parts) == 1 and item.upper() == "NULL" else item), stop


_SPECIAL = re.compile(r'[{}"\\]')  # what the reader below is needed for, inside the braces


def _plain(text: str) -> list[str] | None:
    """The elements of ``text`` (``{…}``, stripped) when none is quoted or escaped, none
    is empty and none nests: the commas split it, each element without its surrounding
    space, as the reader below reads it (one ``str.split``, not a regex per element:
    a million-element parameter). None: the reader decides, and names any error."""
    inner = text[1:-1]
    if not text.endswith("}") or _SPECIAL.search(inner) or not inner.strip(SPACE):
        return None
    items = [item.strip(SPACE) for item in inner.split(",")]
    return None if "" in items else items


def load_text(text: str, load_element: Callable[[str], Any]) -> list[Any]:
    """A one-dimensional array literal (``{1,NULL,"a b"}``; in or out of quotes a
    backslash escapes the next character), each element read by ``load_element``.
    LexError, naming where, for an unclosed quote or brace, an empty element, text beside
    a quoted one or a backslash at the end."""
    text = text.strip(SPACE)
    if not text.startswith("{"):
        raise LexError(text, "is not an array literal: it does not start with {", 0)
    plain = _plain(text)
    if plain is not None:
        return [None if item.upper() == "NULL" else load_element(item) for item in plain]
    values: list[Any] = []
    at = _skip_space(text, 1)
    if text.startswith("}", at):
        at += 1  # {} or { }
    while at < len(text) and text[at - 1] != "}":
        at = _skip_space(text, at)
        if text.startswith('"', at):
            item, at = read_quoted(text, at, '"', Quoting.BACKSLASH, "array element")
            values.append(load_element(item))
            at = _skip_space(text, at)
            if at < len(text) and text[at] not in ",}":
                raise LexError(text, "has text after a quoted array element", at)
        else:
            bare, at = _unquoted(text, at)
            values.append(None if bare is None else load_element(bare))
        at += 1  # past the comma or the closing brace
    if at != len(text) or text[-1] != "}":
        reason = "has text after its closing }" if at < len(text) else "has no closing }"
        raise LexError(text, reason, min(at, len(text)))
    return values


def braced(column: pa.ChunkedArray) -> bool:
    """Whether a value of the text ``column`` starts with ``{`` (may be an array literal)."""
    return bool(pc.any(pc.starts_with(pc.utf8_trim_whitespace(column), "{")).as_py())


def literals(column: pa.ChunkedArray) -> pa.Array | None:
    """A text column bound for an array column, read as PostgreSQL reads text there: a
    client's array parameter of unknown type (psycopg sends ``list[str]`` so) arrives as
    an array literal, ``{a,NULL,"b c"}``. Its values as lists of their elements' text
    (DuckDB casts them into the column's type); None when a value is not one (DuckDB
    then reads it as its own ``[a, b]`` text, or says why it cannot)."""
    try:
        lists = [None if t is None else load_text(t, str) for t in column.to_pylist()]
    except ValueError:  # (LexError too) not one: DuckDB's error names it
        return None
    return pa.array(lists, pa.list_(pa.string()))
