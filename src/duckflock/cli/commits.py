"""How ``duckflock load`` (:mod:`duckflock.cli.load`) commits a file: into a database
file or through a server, all or nothing or chunk by chunk, with a progress bar, and
errors that name the file's line and column and say what was committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import click
import pyarrow as pa
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from duckflock.cli import rejects, render
from duckflock.errors import DuckflockError, RowRejectedError
from duckflock.ingest import files as loading
from duckflock.ingest.loads import ChunkRejectedError, insert_all


@dataclass(frozen=True)
class Job:
    """One load: the file to read (stdin already copied to one), its format, the table
    as typed and as quoted SQL, the CREATE TABLE it starts with, and how to commit."""

    path: str
    kind: str
    table: str
    name: str
    chunk_rows: int
    ddl: str | None
    rejects_path: str | None
    chunked: bool
    key: str | None = None  # the load's idempotency key; None: none (--rejects)

    def key_of(self, chunk: int | None) -> str | None:
        """The idempotency key of chunk number ``chunk`` (None: the whole file)."""
        if self.key is None:
            return None
        return f"{self.key}:{'all' if chunk is None else chunk}"

    @property
    def all_or_nothing(self) -> bool:
        """Whether the whole file commits at once (no --rejects, no --chunked)."""
        return self.rejects_path is None and not self.chunked

    def chunks(self, reject: Callable[[loading.BadLine], None] | None = None) -> Iterator[Any]:
        """The file's chunks (bad lines handed to ``reject``, when given)."""
        return loading.chunks_of(self.path, self.kind, self.chunk_rows, reject)


class KeyedInsert(Protocol):
    """Inserts a chunk's rows under an idempotency key (None: without one)."""

    def __call__(self, chunk: pa.Table, key: str | None = None) -> int: ...


Advance = Callable[[loading.Chunk, int], None]
ONE_REQUEST_BYTES = 64 * 2**20  # a server's default --max-body: one atomic request at most
NOTHING_LOADED = "nothing was loaded: {table} is as it was"
KEEP_GOING = "--rejects FILE loads the good rows and writes the bad lines there"


@contextmanager
def progress_bar(path: str, table: str) -> Iterator[Advance]:
    """A progress bar (bytes read, rows loaded) on stderr while the load runs."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=render.console(stderr=True),
        transient=True,
        disable=not render.console(stderr=True).is_terminal,
    )
    with progress:
        task = progress.add_task(f"-> {table}", total=Path(path).stat().st_size, rows=0)
        yield lambda chunk, rows: progress.update(task, completed=chunk.position, rows=rows)


def into_database(db: Any, job: Job) -> int:
    """Load ``job`` into the open Database ``db``; the rows loaded."""
    if job.all_or_nothing:
        try:
            with progress_bar(job.path, job.table) as advance:
                return insert_all(
                    db,
                    job.name,
                    job.chunks(),
                    create=job.ddl,
                    on_chunk=advance,
                    key=job.key_of(None),
                )
        except ChunkRejectedError as exc:
            raise _rejected(exc.chunk, exc.error, job.table) from None
        except loading.BadFileError as exc:
            raise click.ClickException(f"{exc}\n{_nothing(job.table)}") from None
    if job.ddl is not None:
        db.execute(job.ddl)

    def insert(chunk: pa.Table, key: str | None = None) -> int:
        return int(db.insert(job.table, chunk, idempotency_key=key).rows)

    return _stepwise(insert, job)


def into_server(remote: Any, job: Job) -> int:
    """Load ``job`` through the server client ``remote``; the rows loaded."""

    def insert(chunk: pa.Table, key: str | None = None) -> int:
        return int(
            remote.insert(job.table, chunk, chunk_rows=max(1, chunk.num_rows), idempotency_key=key)
        )

    if job.ddl is not None and not job.all_or_nothing:
        remote.run(job.ddl)
    if not job.all_or_nothing:
        return _stepwise(insert, job)
    try:
        whole = _in_one_request(job)
    except loading.BadFileError as exc:
        raise click.ClickException(f"{exc}\n{_nothing(job.table)}") from None
    if job.ddl is not None:
        remote.run(job.ddl)
    if whole is None:
        return 0
    try:
        with render.working(f"sending {whole.table.num_rows:,} rows in one request…"):
            return insert(whole.table, job.key_of(None))
    except RowRejectedError as exc:
        if job.ddl is not None and "REPLACE" not in job.ddl:  # the table this load made
            remote.run(f"DROP TABLE IF EXISTS {job.name}")
        raise _rejected(whole, exc, job.table) from None


def _in_one_request(job: Job) -> loading.Chunk | None:
    """The whole file as one chunk (None when it has no rows), refused when it is over
    what one request may carry."""
    parts: list[loading.Chunk] = []
    size = 0
    with progress_bar(job.path, job.table) as advance:
        for chunk in job.chunks():
            parts.append(chunk)
            size += chunk.table.nbytes
            if size > ONE_REQUEST_BYTES:
                raise click.ClickException(
                    f"over {ONE_REQUEST_BYTES // 2**20} MiB as Arrow: too large for one "
                    "request, so it cannot be loaded all or nothing on a server. --chunked "
                    "commits it chunk by chunk; --rejects keeps the good rows; or load it into "
                    "a database file. Nothing was loaded."
                )
            advance(chunk, sum(p.table.num_rows for p in parts))
    if not parts:
        return None
    return loading.Chunk(
        # one batch: the client sends a table's batches as requests of their own
        pa.concat_tables([p.table for p in parts]).combine_chunks(),
        0,
        parts[0].first_line,
        parts[-1].position,
        _joined([p.lines for p in parts]),
        _joined([p.texts for p in parts]),
    )


def _joined(parts: list[list[Any] | None]) -> list[Any] | None:
    if any(p is None for p in parts):
        return None
    return [item for p in parts for item in p or []]


def _stepwise(insert: KeyedInsert, job: Job) -> int:
    """Chunk by chunk, each committed on its own; with ``--rejects``, a refused row is
    written there and the rest of its chunk goes on."""
    table, created = job.table, job.ddl is not None
    loaded = 0
    chunk: loading.Chunk | None = None
    with rejects.rejects_file(job.rejects_path) as reject, progress_bar(job.path, table) as advance:
        try:
            for number, chunk in enumerate(job.chunks(reject)):
                if reject is None:
                    loaded += insert(chunk.table, job.key_of(number))
                else:
                    loaded += rejects.insert_keeping(insert, chunk, reject)
                    reject.flush()
                advance(chunk, loaded)
        except RowRejectedError as exc:
            assert chunk is not None
            raise _committed(_rejected(chunk, exc, table), loaded, created, table) from None
        except loading.BadFileError as exc:
            raise _committed(click.ClickException(str(exc)), loaded, created, table) from None
        except DuckflockError as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise _committed(click.ClickException(message), loaded, created, table) from None
    if reject is not None and reject.count:
        render.console(stderr=True).print(
            f"{reject.count:,} bad lines written to {job.rejects_path}", markup=False
        )
    return loaded


def _rejected(chunk: loading.Chunk, exc: RowRejectedError, table: str) -> click.ClickException:
    """A refused row as the file's line and column, and what to do about it."""
    row = exc.row_index
    if row is not None and 0 <= row < chunk.table.num_rows:
        line = chunk.line_of(row)
        where = f"line {line}" if line is not None else f"row {chunk.first_row + row + 1}"
    else:
        first, last = chunk.line_of(0), chunk.line_of(chunk.table.num_rows - 1)
        if first is None:
            where = f"rows {chunk.first_row + 1}-{chunk.first_row + chunk.table.num_rows}"
        else:
            where = f"line {first}" if first == last else f"lines {first}-{last}"
        where += " (they go in alone: together with the earlier lines they do not)"
    column = getattr(exc, "column", None)
    where += f", column {column}" if column else ""
    return click.ClickException(f"{where}: {rejects.reason(exc, False)}\n{_nothing(table)}")


def _nothing(table: str) -> str:
    return f"{NOTHING_LOADED.format(table=table)} ({KEEP_GOING})."


def _committed(
    error: click.ClickException, loaded: int, created: bool, table: str
) -> click.ClickException:
    """``error`` of a chunk-by-chunk load, saying what was committed before it."""
    message = error.message.split("\n")[0]
    message += (
        f"\n{loaded:,} rows of the file were committed before it (each chunk commits "
        "whole; the failing chunk committed nothing)."
    )
    if created:
        message += f" This load created {table}: --replace starts it over."
    return click.ClickException(message)
