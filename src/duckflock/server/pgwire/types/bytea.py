"""bytea: ``\\x`` and hex digits as text, the bytes themselves as binary."""

from __future__ import annotations

from typing import Any

from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.table import Oid


def _dump_text(value: Any) -> bytes:
    return b"\\x" + bytes(value).hex().encode()


def _load_text(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


ADAPTERS = (Adapter(Oid.BYTEA, _dump_text, bytes, _load_text, bytes),)
