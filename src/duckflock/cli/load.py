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

This module holds the command, its options and what it checks before loading; how the
file is committed is :mod:`duckflock.cli.commits`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from duckflock.cli import render, resume, targets
from duckflock.cli.commits import Job, into_database, into_server
from duckflock.cli.data import TOKEN
from duckflock.core import project
from duckflock.ingest import files as loading


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
                job = Job(path, kind, table, name, chunk_rows, ddl, rejects_path, chunked, key)
                loaded = into_server(remote, job)
        else:
            with targets.database(target, read_only=False) as db:
                exists = any(targets.same_table(t["name"], wanted) for t in db.tables())
                ddl = _ddl(path, kind, table, target, name, exists, create, replace, primary_key)
                key = resume.key(path, kind, name, chunk_rows, ddl, rejects_path, again)
                job = Job(path, kind, table, name, chunk_rows, ddl, rejects_path, chunked, key)
                loaded = into_database(db, job)
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
