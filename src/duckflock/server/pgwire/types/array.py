"""One-dimensional arrays of any type with an adapter: ``{1,NULL,"a b"}`` as text, the
elements' own binary forms (with a header) as binary; both ways."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from duckflock.server.pgwire.types.adapt import I4, Encoder
from duckflock.server.pgwire.types.bool import SPACE

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
            text = b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
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


def load_text(text: str, load_element: Callable[[str], Any]) -> list[Any]:
    """A one-dimensional array literal (``{1,NULL,"a b"}``), each element read by
    ``load_element``."""
    text = text.strip(SPACE)
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"{text!r} is not an array literal")
    values: list[Any] = []
    at, end = 1, len(text) - 1
    while at < end:
        if text[at] == '"':
            at += 1
            chars = []
            while text[at] != '"':
                if text[at] == "\\":
                    at += 1
                chars.append(text[at])
                at += 1
            values.append(load_element("".join(chars)))
            at += 1
        else:
            comma = text.find(",", at)
            comma = end if comma < 0 else comma
            item = text[at:comma].strip(SPACE)
            if "{" in item:
                raise ValueError("only one-dimensional array parameters are supported")
            values.append(None if item.upper() == "NULL" else load_element(item))
            at = comma
        if at < end and text[at] == ",":
            at += 1
    return values
