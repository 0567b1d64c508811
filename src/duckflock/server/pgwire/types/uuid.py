"""uuid: its canonical text, or its 16 bytes."""

from __future__ import annotations

import uuid

from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.table import Oid

ADAPTERS = (
    Adapter(
        Oid.UUID,
        dump_text=lambda v: str(v).encode(),
        dump_binary=lambda v: uuid.UUID(str(v)).bytes,
        load_binary=lambda data: str(uuid.UUID(bytes=bytes(data))),
    ),
)
