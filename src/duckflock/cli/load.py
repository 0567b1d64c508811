"""``duckflock load``: a file into a table of a database file or a server, in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

from .. import loading
from ..errors import DuckflockError, RowRejectedError
from . import render, targets
from .data import TOKEN

Insert = Callable[[pa.Table], int]
Run = Callable[[str], object]


@contextmanager
def _connection(
    target: str, table: str, token: str | None
) -> Iterator[tuple[Insert, Run, Callable[[], list[str]]]]:
    """(insert a chunk into ``table``, run DDL, list table names) on a file or a server.

    ``table`` goes to the library as data, as the user typed it."""
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            yield (
                lambda chunk: remote.insert(table, chunk, chunk_rows=chunk.num_rows),
                remote.run,
                lambda: [t["name"] for t in remote.tables()],
            )
        return
    with targets.database(target, read_only=False) as db:
        yield (
            lambda chunk: db.insert(table, chunk).rows,
            db.execute,
            lambda: [t["name"] for t in db.tables()],
        )


@click.command()
@click.argument("target")
@click.argument("table")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "csv", "parquet", "ndjson"]),
    default="auto",
    show_default=True,
    help="File format (auto: from the extension; .gz and .zst are read compressed).",
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
    "--chunk-rows",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per insert call; each chunk commits atomically.",
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
    chunk_rows: int,
    token: str | None,
) -> None:
    """Load FILE (CSV, TSV, Parquet or NDJSON; .gz/.zst too) into TABLE of TARGET.

    TARGET is a database file (created if missing) or a server URL. A TABLE that does
    not exist is created with the columns DuckDB infers from FILE (--no-create refuses
    instead); --replace recreates it. Rows go in chunks of --chunk-rows, each committed
    atomically: a bad row stops the load, naming its line in FILE and how many rows
    were already committed.

    \b
    duckflock load events.duckdb readings readings.csv.gz --pk id
    duckflock load http://127.0.0.1:8765 readings more.ndjson
    """
    try:
        kind = loading.file_format(file) if fmt == "auto" else fmt
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    name, wanted = targets.table_name(table)
    with _connection(target, table, token) as (insert, run, listed):
        exists = any(targets.same_table(n, wanted) for n in listed())
        if replace or not exists:
            if not exists and not create:
                raise click.UsageError(
                    f"table {table!r} does not exist in {target} (without --no-create, "
                    "load creates it from the file)"
                )
            try:
                columns, notes = loading.inferred_columns(file, kind)
                ddl = loading.create_table_sql(
                    name, columns, primary_key=primary_key, replace=replace
                )
            except ValueError as exc:
                raise click.UsageError(str(exc)) from exc
            except Exception as exc:  # DuckDB could not read the file to infer it
                raise click.ClickException(
                    f"{file}: DuckDB cannot infer its columns: {exc}"
                ) from None
            run(ddl)
            click.echo(f"created {table} ({', '.join(f'{c} {t}' for c, t in columns)})", err=True)
            for note in notes:
                click.echo(f"note: {note}", err=True)
        elif primary_key:
            raise click.UsageError(
                f"--pk applies to a table being created; {table!r} exists (add --replace)"
            )
        try:
            loaded = _stream(file, kind, chunk_rows, insert, table)
        except click.ClickException as exc:
            if not (replace or not exists):
                raise
            hint = f" This load created {table}: --replace starts it over."
            raise click.ClickException(exc.message + hint) from None
    render.console(stderr=True).print(f"loaded {loaded:,} rows into {table}")


def _stream(file: str, kind: str, chunk_rows: int, insert: Insert, table: str) -> int:
    """Insert every chunk with a progress bar; an error names the line and the rows
    committed before it."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=render.console(stderr=True),
        transient=True,
    )
    loaded = 0
    chunk: loading.Chunk | None = None
    with progress:
        task = progress.add_task(f"{file} -> {table}", total=Path(file).stat().st_size, rows=0)
        try:
            for chunk in loading.chunks_of(file, kind, chunk_rows):
                loaded += insert(chunk.table)
                progress.update(task, completed=chunk.position, rows=loaded)
        except RowRejectedError as exc:
            raise _failed(file, chunk, loaded, exc, exc.row_index) from None
        except DuckflockError as exc:
            raise _failed(file, chunk, loaded, exc, None) from None
        except (pa.ArrowException, ValueError) as exc:  # the file itself does not parse
            raise _failed(file, None, loaded, exc, None) from None
    return loaded


def _failed(
    file: str, chunk: loading.Chunk | None, committed: int, exc: Exception, row: int | None
) -> click.ClickException:
    if chunk is not None and row is not None:
        line = chunk.line_of(row)
        where = f"line {line}" if line is not None else f"row {chunk.first_row + row + 1}"
    elif chunk is not None:
        where = f"the chunk from {_where(chunk)}"
    else:
        where = f"after {committed:,} rows"
    cause: Any = getattr(exc, "cause", None)
    reason = cause.message if row is not None and cause is not None else str(exc)
    return click.ClickException(
        f"{file}, {where}: {type(exc).__name__}: {reason}\n"
        f"{committed:,} rows of the file were committed before it (each chunk commits "
        "whole; the failing chunk committed nothing)."
    )


def _where(chunk: loading.Chunk) -> str:
    line = chunk.line_of(0)
    return f"line {line}" if line is not None else f"row {chunk.first_row + 1}"
