"""Character types: text, varchar, bpchar, name, "char", unknown: UTF-8 both ways."""

from __future__ import annotations

from typing import Any

from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.table import Oid


def dump_text(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else str(value).encode()


def _load_binary(data: bytes) -> str:
    return data.decode()


ADAPTERS = (
    Adapter(Oid.TEXT, dump_text, dump_text, load_binary=_load_binary),
    *(
        Adapter(oid, load_binary=_load_binary)
        for oid in (Oid.VARCHAR, Oid.BPCHAR, Oid.NAME, Oid.CHAR, Oid.UNKNOWN, Oid.UNSPECIFIED)
    ),
)
