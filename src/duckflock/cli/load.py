"""``duckflock load``: a file (or stdin) into a table of a database file or a server.

All or nothing by default: on a file, every chunk goes in one transaction (with the
``CREATE TABLE`` that makes a new table); on a server, the whole file goes in one
request, which commits atomically. ``--rejects`` keeps the good rows and writes each bad
line with its reason; ``--chunked`` commits chunk by chunk (for files too large for one
request to a server).

Into an existing table, each commit (the whole file, or each ``--chunked`` chunk) carries
an idempotency key made from the file's content, the table, the format and the chunk
size (:mod:`.resume`): running the same load again — to resume one that failed half-way
— skips what was committed and loads the rest, so no row is stored twice (keys are kept
a day by default: docs/delivery.md). ``--again`` loads the file again anyway.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
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

from duckflock.cli import rejects, render, resume, targets
from duckflock.cli.data import TOKEN
from duckflock.core import project
from duckflock.errors import DuckflockError, RowRejectedError
from duckflock.ingest import files as loading
from duckflock.ingest.loads import ChunkRejectedError, insert_all


@dataclass(frozen=True)
class _Job:
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
        return self.rejects_path is None and not self.chunked

    def chunks(self, reject: Callable[[loading.BadLine], None] | None = None) -> Iterator[Any]:
        return loading.chunks_of(self.path, self.kind, self.chunk_rows, reject)


Insert = rejects.Insert


class KeyedInsert(Protocol):
    """Inserts a chunk's rows under an idempotency key (None: without one)."""

    def __call__(self, chunk: pa.Table, key: str | None = None) -> int: ...


Advance = Callable[[loading.Chunk, int], None]
ONE_REQUEST_BYTES = 64 * 2**20  # a server's default --max-body: one atomic request at most
NOTHING_LOADED = "nothing was loaded: {table} is as it was"
KEEP_GOING = "--rejects FILE loads the good rows and writes the bad lines there"


@click.command()
@click.argument("target")
@click.argument("table")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "csv", "parquet", "ndjson"]),
    default="auto",
    show_default=True,
    help="File format (auto: from the extension; .gz and .zst are read compressed; "
    "stdin needs it).",
)
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create TABLE when it does not exist, with the column types DuckDB infers from the file.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace TABLE (its rows and columns) by a new one inferred from the file.",
)
@click.option(
    "--pk",
    "primary_key",
    multiple=True,
    metavar="COLUMN",
    help="Primary key column of a table being created (repeat for a composite key).",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Keep going past bad lines: load the good rows, write each bad line to this CSV "
    "file (line, reason, text).",
)
@click.option(
    "--chunked",
    is_flag=True,
    help="Commit each chunk on its own instead of all or nothing (a file too large for one "
    "request to a server).",
)
@click.option(
    "--chunk-rows",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows read (and, with --chunked or --rejects, committed) at a time.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Load the file again even if this same load committed it before (without it, "
    "running a load again resumes it: what was committed is skipped).",
)
@TOKEN
def load(
    target: str,
    table: str,
    file: str,
    fmt: str,
    create: bool,
    replace: bool,
    primary_key: tuple[str, ...],
    rejects_path: str | None,
    chunked: bool,
    chunk_rows: int,
    again: bool,
    token: str | None,
) -> None:
    """Load FILE (CSV, TSV, Parquet or NDJSON; .gz/.zst too; - for stdin) into TABLE.

    TARGET is a database file (created if missing) or a server URL. A TABLE that does
    not exist is created with the columns DuckDB infers from FILE (--no-create refuses
    instead); --replace recreates it. The load is all or nothing: a bad line stops it,
    naming its line and column, and TABLE stays as it was. --rejects FILE loads the
    good rows and writes each bad line there with its reason; --chunked commits chunk
    by chunk. On a server, all or nothing means one request (64 MiB of Arrow at most);
    larger files need --chunked or --rejects. As in DuckDB's read_csv, only an empty
    CSV field is NULL (NaN, NULL, N/A are values); a line that is not UTF-8 is a bad line.

    Into an existing TABLE, each commit carries a key made from the file's content: the
    same load run again (after a failure half-way, say) skips what it committed before
    and loads the rest, so no row is stored twice; --again loads it all again.

    \b
    duckflock load events.duckdb readings readings.csv.gz --pk id
    duckflock load events.duckdb readings more.csv --rejects bad-lines.csv
    zcat big.csv.gz | duckflock load http://127.0.0.1:8765 readings - --format csv
    """
    if rejects_path is not None and chunked:
        raise click.UsageError("--rejects commits the good rows as it goes: drop --chunked")
    shown = "stdin" if file == "-" else file
    with _readable(file, fmt) as (path, kind), _naming(shown):
        name, wanted = targets.table_name(table)
        if project.names_schema(name):  # the rule every write asks (loads.insert_all too)
            raise click.BadParameter(
                f"{table!r} names {project.SCHEMA!r}, duckflock's own schema: no load writes "
                "it; load into a table of another schema",
                param_hint="TABLE",
            )
        if targets.is_url(target):
            with targets.client(target, token) as remote:
                exists = any(targets.same_table(t["name"], wanted) for t in remote.tables())
                ddl = _ddl(path, kind, table, target, name, exists, create, replace, primary_key)
                key = resume.key(path, kind, name, chunk_rows, ddl, rejects_path, again)
                job = _Job(path, kind, table, name, chunk_rows, ddl, rejects_path, chunked, key)
                loaded = _remote(remote, job)
        else:
            with targets.database(target, read_only=False) as db:
                exists = any(targets.same_table(t["name"], wanted) for t in db.tables())
                ddl = _ddl(path, kind, table, target, name, exists, create, replace, primary_key)
                key = resume.key(path, kind, name, chunk_rows, ddl, rejects_path, again)
                job = _Job(path, kind, table, name, chunk_rows, ddl, rejects_path, chunked, key)
                loaded = _local(db, job)
    render.console(stderr=True).print(f"loaded {loaded:,} rows from {shown} into {table}")


@contextmanager
def _naming(shown: str) -> Iterator[None]:
    """Errors of the load (not of its arguments) start with the file they are about."""
    try:
        yield
    except click.UsageError:
        raise
    except click.ClickException as exc:
        where = ", " if exc.message.startswith(("line", "row")) else ": "
        raise click.ClickException(f"{shown}{where}{exc.message}") from None


@contextmanager
def _readable(file: str, fmt: str) -> Iterator[tuple[str, str]]:
    """(a path to read, its format); stdin is first copied into a temporary file, so it
    is read like any file (DuckDB infers its columns, errors name its lines)."""
    if file != "-":
        if not Path(file).is_file():
            raise click.BadParameter(f"no file {file!r}", param_hint="FILE")
        try:
            yield file, loading.file_format(file) if fmt == "auto" else fmt
        except ValueError as exc:
            if "--format" in str(exc) and fmt == "auto":
                raise click.UsageError(str(exc)) from None
            raise
        return
    if fmt == "auto":
        raise click.UsageError("stdin has no extension to tell its format: pass --format csv")
    with tempfile.TemporaryDirectory(prefix="duckflock-load-") as folder:
        spooled = Path(folder) / f"stdin.{fmt}"
        with render.working("reading stdin…"), spooled.open("wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        yield str(spooled), fmt


def _ddl(
    path: str,
    kind: str,
    table: str,
    target: str,
    name: str,
    exists: bool,
    create: bool,
    replace: bool,
    primary_key: tuple[str, ...],
) -> str | None:
    """The CREATE TABLE this load starts with, or None for an existing table."""
    if exists and not replace:
        if primary_key:
            raise click.UsageError(
                f"--pk applies to a table being created; {table!r} exists (add --replace)"
            )
        return None
    if not exists and not create:
        raise click.UsageError(
            f"table {table!r} does not exist in {target} (without --no-create, load "
            "creates it from the file)"
        )
    try:
        columns, notes = loading.inferred_columns(path, kind)
        ddl = loading.create_table_sql(name, columns, primary_key=primary_key, replace=replace)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # DuckDB could not read the file to infer it
        raise click.ClickException(f"DuckDB cannot infer the file's columns: {exc}") from None
    err = render.console(stderr=True)
    err.print(
        f"{'replacing' if exists else 'creating'} {table} "
        f"({', '.join(f'{c} {t}' for c, t in columns)})",
        markup=False,
        highlight=False,
    )
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    return ddl


@contextmanager
def _progress(path: str, table: str) -> Iterator[Advance]:
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


def _local(db: Any, job: _Job) -> int:
    if job.all_or_nothing:
        try:
            with _progress(job.path, job.table) as advance:
                return insert_all(db, job.name, job.chunks(), create=job.ddl, on_chunk=advance)
        except ChunkRejectedError as exc:
            raise _rejected(exc.chunk, exc.error, job.table) from None
        except loading.BadFileError as exc:
            raise click.ClickException(f"{exc}\n{_nothing(job.table)}") from None
    if job.ddl is not None:
        db.execute(job.ddl)

    def insert(chunk: pa.Table, key: str | None = None) -> int:
        return int(db.insert(job.table, chunk, idempotency_key=key).rows)

    return _stepwise(insert, job)


def _remote(remote: Any, job: _Job) -> int:
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


def _in_one_request(job: _Job) -> loading.Chunk | None:
    """The whole file as one chunk (None when it has no rows), refused when it is over
    what one request may carry."""
    parts: list[loading.Chunk] = []
    size = 0
    with _progress(job.path, job.table) as advance:
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


def _stepwise(insert: KeyedInsert, job: _Job) -> int:
    """Chunk by chunk, each committed on its own; with ``--rejects``, a refused row is
    written there and the rest of its chunk goes on."""
    table, created = job.table, job.ddl is not None
    loaded = 0
    chunk: loading.Chunk | None = None
    with rejects.rejects_file(job.rejects_path) as reject, _progress(job.path, table) as advance:
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
