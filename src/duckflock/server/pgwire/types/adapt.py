"""What an adapter is: how the values of one PostgreSQL type travel, each way, each form.

As in psycopg 3 (``psycopg/adapt.py``): a *dumper* turns a Python value into the wire's
bytes (result columns: DataRow, COPY), a *loader* turns the wire's bytes into a Python
value (Bind parameters), each in text (format 0) and binary (format 1). Each family
module (:mod:`.bool`, :mod:`.numeric`, :mod:`.text`, :mod:`.bytea`, :mod:`.uuid`,
:mod:`.json`, :mod:`.datetime`) declares its adapters; :mod:`.registry` holds them in one
map by OID.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from duckflock.server.pgwire.types.table import Oid

Encoder = Callable[[Any], bytes]  # a non-null Python value -> its wire form
I2, I4, I8 = struct.Struct("!h"), struct.Struct("!i"), struct.Struct("!q")


class Format(IntEnum):
    """A value's wire format code (RowDescription, Bind, COPY)."""

    TEXT = 0
    BINARY = 1


@dataclass(frozen=True)
class Adapter:
    """How values of one type travel (``None``: this port has no such form)."""

    oid: Oid
    dump_text: Encoder | None = None
    dump_binary: Encoder | None = None
    # a text parameter -> Python; None: the text itself, which DuckDB casts where used
    load_text: Callable[[str], Any] | None = None
    # a binary parameter -> Python; None: refused (the client can send it as text)
    load_binary: Callable[[bytes], Any] | None = None

    def dumper(self, fmt: Format) -> Encoder:
        """The dumper for ``fmt`` (KeyError when this type has no dumper)."""
        found = self.dump_binary if fmt == Format.BINARY else self.dump_text
        if found is None:
            raise KeyError(f"no {fmt.name.lower()} dumper for type OID {int(self.oid)}")
        return found
