"""``load --rejects``: the good rows in, each bad line written aside with its reason.

A refused row (DuckDB's cast, NOT NULL, key or CHECK error, found by the writer's
prefix search) is written with its line and text; the rows before it go in, and the
rest of its chunk is tried again. Lines that do not parse come from the reader.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import pyarrow as pa

from duckflock.errors import RowRejectedError
from duckflock.ingest import files as loading

Insert = Callable[[pa.Table], int]


def insert_keeping(
    insert: Insert, chunk: loading.Chunk, reject: Callable[[loading.BadLine], None]
) -> int:
    """Insert ``chunk``; each refused row goes to ``reject`` and the others in."""
    loaded = 0
    pending = [chunk]
    while pending:
        part = pending.pop()
        if not part.table.num_rows:
            continue
        try:
            loaded += insert(part.table)
        except RowRejectedError as exc:
            why = reason(exc)
            row = exc.row_index
            if row is None or not 0 <= row < part.table.num_rows:
                for i in range(part.table.num_rows):  # the call could not be narrowed
                    reject(
                        loading.BadLine(part.line_of(i), why, part.text_of(i), part.first_row + i)
                    )
                continue
            reject(loading.BadLine(part.line_of(row), why, part.text_of(row), part.first_row + row))
            head, tail = part.without(row)
            pending.extend([tail, head])  # the head goes in first: the file's order
    return loaded


def reason(exc: RowRejectedError, column_first: bool = True) -> str:
    """DuckDB's reason, with the column when it is known: ``column i: ConversionError: …``."""
    cause: Any = getattr(exc, "cause", None)
    message = cause.message if cause is not None else str(exc)
    column = getattr(exc, "column", None)
    kind = type(cause).__name__ if cause is not None else type(exc).__name__
    return f"{f'column {column}: ' if column and column_first else ''}{kind}: {message}"


class Rejects:
    """Writes each bad line to a CSV file (line, reason, text) in the file's order, and
    counts them. Lines that do not parse come while their chunk is read, refused rows
    once it is inserted: each chunk's are held until :meth:`flush`, then sorted."""

    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.writer(out)
        self._writer.writerow(["line", "reason", "text"])
        self._held: list[loading.BadLine] = []
        self.count = 0

    def __call__(self, bad: loading.BadLine) -> None:
        self._held.append(bad)
        self.count += 1

    def flush(self) -> None:
        for bad in sorted(self._held, key=lambda b: (b.line or 0, b.row or 0)):
            where = bad.line if bad.line is not None else f"row {(bad.row or 0) + 1}"
            self._writer.writerow([where, bad.reason, bad.text])
        self._held = []


@contextmanager
def rejects_file(path: str | None) -> Iterator[Rejects | None]:
    if path is None:
        yield None
        return
    with open(path, "w", newline="", encoding="utf-8") as out:
        rejects = Rejects(out)
        try:
            yield rejects
        finally:
            rejects.flush()
