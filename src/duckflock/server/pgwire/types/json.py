"""json and jsonb; and JSON text for the types PostgreSQL has no match for (STRUCT,
MAP, UNION, nested lists: sent as ``text`` every client can read)."""

from __future__ import annotations

import json
from typing import Any

from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.datetime import Beyond, Unrepresentable
from duckflock.server.pgwire.types.table import Oid


def _json_default(value: Any) -> str:
    if isinstance(value, Beyond):
        return value.text.decode()
    return value.text if isinstance(value, Unrepresentable) else str(value)


def as_json_text(value: Any) -> bytes:
    """Nested values as JSON; a scalar PostgreSQL has no type for (TIMETZ, BIT) as its
    own text."""
    if isinstance(value, bytes):  # BIT's storage, say: as bytea's text, valid UTF-8
        return b"\\x" + value.hex().encode()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=_json_default, ensure_ascii=False).encode()
    return str(value).encode()


def _dump(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else as_json_text(value)


def _load_binary(data: bytes) -> str:
    return data.decode()


ADAPTERS = (
    Adapter(Oid.JSON, _dump, _dump, load_binary=_load_binary),
    Adapter(Oid.JSONB, load_binary=lambda data: data[1:].decode()),  # a version byte, then text
)
