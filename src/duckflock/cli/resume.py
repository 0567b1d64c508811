"""The idempotency keys of ``duckflock load``: how running a load again resumes it.

Into an existing table, each commit of a load (the whole file, or each ``--chunked``
chunk) carries a key made from the file's bytes, its format, the table and the chunk
size, which together fix every chunk: the same load run again finds the keys of what it
committed before and skips those commits (docs/delivery.md).
"""

from __future__ import annotations

import hashlib
import uuid

from duckflock.cli import render


def load_key(path: str, kind: str, name: str, chunk_rows: int) -> str:
    """The idempotency key of loading the file at ``path`` into ``name``: a SHA-256 of
    the file's bytes, its format, the table and the chunk size (which fix the chunks)."""
    digest = hashlib.sha256(f"{kind}\0{name}\0{chunk_rows}\0".encode("utf-8", "surrogatepass"))
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return f"duckflock-load:{digest.hexdigest()}"


def key(
    path: str,
    kind: str,
    name: str,
    chunk_rows: int,
    ddl: str | None,
    rejects_path: str | None,
    again: bool,
) -> str | None:
    """The key of this load: from the file (:func:`load_key`) into an existing table;
    a new one when the load creates or replaces the table (nothing in it can be from
    an earlier run) or with ``--again``; None with ``--rejects`` (its chunks go in in
    pieces)."""
    if rejects_path is not None:
        return None
    if ddl is not None or again:
        return f"duckflock-load:{uuid.uuid4().hex}"
    with render.working("reading the file for its key…"):
        return load_key(path, kind, name, chunk_rows)
