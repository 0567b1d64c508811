"""``query``, ``sql``, ``tables`` and ``status``: on a database file or a server URL."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from duckflock.cli import render, targets
from duckflock.core.wide import description_types, repair_reader
from duckflock.lake.connection import redact

# rows per Arrow batch read from DuckDB: 8,192 spent a third of a 2.7M-row export in
# per-batch overhead; 65,536 is still a few ms before the first row shows
BATCH_ROWS = 65_536

TOKEN = click.option(
    "--token", envvar="DUCKFLOCK_TOKEN", help="Bearer token for a server URL ($DUCKFLOCK_TOKEN)."
)
FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in render.Format]),
    default=render.Format.TABLE.value,
    show_default=True,
    callback=lambda _ctx, _param, value: render.Format(value),
    help="table: the rows that fit the terminal (the rest counted); csv, json or arrow "
    "(Arrow IPC): every row up to --limit, streamed as it arrives (> file).",
)
LIMIT = click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rows to show at most (0: all of them, streamed).",
)


# the columns of DuckDB's answer to a statement that has nothing to show (DDL, SET)
_STATUS_COLUMNS: tuple[list[str], ...] = ([], ["Count"], ["Success"])


def write_rows(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    fmt: render.Format,
    limit: int,
    started: float,
    note: str = "",
    statement: str | None = None,
) -> None:
    """Write the rows as they come (at most ``limit``), then the footer on stderr.

    The answer of a ``statement`` with nothing to show (DDL's empty Count) is one line
    instead: ``CREATE done in 2.1 ms``."""
    if statement is not None and schema.names in _STATUS_COLUMNS:
        first = next(batches, None)
        if first is None or (first.num_rows == 0 and next(batches, None) is None):
            took = (time.perf_counter() - started) * 1000
            click.echo(f"{render.statement_kind(statement)} done in {took:,.1f} ms", err=True)
            return
        batches = itertools.chain([first], batches)
    emitter = render.Emitter(fmt, schema)
    more = False
    for batch in render.limited(batches, limit + 1 if limit else 0):
        if limit and emitter.rows + batch.num_rows > limit:
            batch = batch.slice(0, limit - emitter.rows)
            more = True
        if batch.num_rows:
            emitter.write(batch)
    emitter.close()
    took = (time.perf_counter() - started) * 1000
    footer = f"{emitter.rows:,} row{'s' if emitter.rows != 1 else ''} in {took:,.1f} ms"
    hidden = emitter.rows - emitter.shown
    if hidden:
        footer += (
            f"; {hidden:,} not drawn (the table shows what fits the terminal; "
            "--format csv, json or arrow writes every row, e.g. into a file)"
        )
    if more:
        footer += f"; more rows exist (--limit {limit} stopped here, --limit 0 reads all)"
    if note:
        footer += f"; {note}"
    click.echo(footer, err=True)


def _remote(results: Any) -> tuple[Iterator[pa.RecordBatch], pa.Schema, str]:
    table = results.table
    note = "truncated to the server's row cap" if results.truncated else ""
    return iter(table.to_batches(max_chunksize=BATCH_ROWS)), table.schema, note


@click.command()
@click.argument("target")
@click.argument("sql")
@FORMAT
@LIMIT
@TOKEN
def query(target: str, sql: str, fmt: render.Format, limit: int, token: str | None) -> None:
    """Run a read-only SELECT against TARGET: a database file or a server URL.

    Rows are written as DuckDB produces them, at most --limit of them (0: all), with a
    footer (row count, time) on stderr. A file is opened read-only; if a running
    `duckflock serve` holds it, query the server's URL instead.

    \b
    duckflock query events.duckdb "SELECT count(*) FROM my_inserts"
    duckflock query http://127.0.0.1:8765 "SELECT * FROM my_inserts" --format csv
    """
    started = time.perf_counter()
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            with render.working("querying the server…"):
                fetched = remote.execute(sql)
            batches, schema, note = _remote(fetched)
            write_rows(batches, schema, fmt, limit, started, note)
        return
    with targets.database(target, read_only=True) as db:
        results = db.execute(sql)
        reader = repair_reader(results.to_arrow_reader(BATCH_ROWS), description_types(results))
        write_rows(render.started(reader, "running…"), reader.schema, fmt, limit, started)


@click.command("sql")
@click.argument("target")
@click.argument("statement")
@FORMAT
@LIMIT
@TOKEN
def sql_command(
    target: str, statement: str, fmt: render.Format, limit: int, token: str | None
) -> None:
    """Run DDL or DML (CREATE, INSERT, UPDATE, DELETE…) on TARGET: a file or a server.

    A database file is created when missing. On a server this needs its token (write
    rights). What DML returns (DuckDB's Count, RETURNING rows) is shown; DDL, which
    returns nothing to show, prints one line saying it is done.

    \b
    duckflock sql events.duckdb "CREATE TABLE readings (sensor VARCHAR, value DOUBLE)"
    duckflock sql http://127.0.0.1:8765 "DELETE FROM readings WHERE value < 0"
    """
    started = time.perf_counter()
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            with render.working("running on the server…"):
                done = remote.run(statement)
            batches, schema, note = _remote(done)
            write_rows(batches, schema, fmt, limit, started, note, statement)
        return
    with targets.database(target, read_only=False) as db:
        with render.working("running…"):
            results = db.execute(statement)
        if results.description is None:
            write_rows(iter(()), pa.schema([]), fmt, limit, started, statement=statement)
            return
        reader = repair_reader(results.to_arrow_reader(BATCH_ROWS), description_types(results))
        batches = render.started(reader, "running…")
        write_rows(batches, reader.schema, fmt, limit, started, statement=statement)


def _tables(target: str, token: str | None) -> list[dict[str, Any]]:
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            return remote.tables()
    with targets.database(target, read_only=True) as db:
        return db.tables()


def _tables_grid(listing: list[dict[str, Any]]) -> Any:
    return render.table(
        ["table", "rows", "columns"],
        [
            (
                t["name"],
                f"{t['rows']:,}",
                ", ".join(f"{c['name']} {c['type']}" for c in t["columns"]),
            )
            for t in listing
        ],
        title="tables",
        numeric=[False, True, False],
    )


@click.command()
@click.argument("target")
@TOKEN
def tables(target: str, token: str | None) -> None:
    """List the tables of TARGET (a file or a server URL): rows and typed columns."""
    render.console().print(_tables_grid(_tables(target, token)))


@click.command()
@click.argument("target")
@TOKEN
def status(target: str, token: str | None) -> None:
    """Show TARGET's state: a server's health, tables, ingest and analyses, or a file's
    size and tables."""
    out = render.console()
    if not targets.is_url(target):
        path = Path(target)
        wal = Path(f"{target}.wal")
        size = path.stat().st_size if path.exists() else 0
        listing = _tables(target, token)
        extra = f", WAL {wal.stat().st_size:,} bytes" if wal.exists() else ""
        out.print(f"[bold]{target}[/bold] database file, {size:,} bytes{extra}")
        out.print(_tables_grid(listing))
        return
    with targets.client(target, token) as remote:
        health = remote.health()
        out.print(
            f"[bold]{redact(target)}[/bold] {health['status']} (duckflock {health['version']})"
        )
        out.print(_tables_grid(remote.tables()))
        stats = remote.stats()
        out.print(
            f"ingest: {stats['rows_committed']:,} rows in {stats['batches_committed']:,} "
            f"batches, {stats['rows_queued']:,} queued, {stats['calls_rejected']:,} rejected, "
            f"commit p50 {stats['commit_ms'].get('p50', 0):.2f} ms"
        )
        analyses = remote.analyses()
        if not analyses:
            out.print("analyses: none defined")
            return
        out.print(
            render.table(
                ["analysis", "version", "mode", "rows", "last ms", "error"],
                [
                    (
                        a["name"],
                        a["version"],
                        a["mode"],
                        a["rows"],
                        "" if a["duration"] is None else f"{a['duration'] * 1000:.1f}",
                        a["error"] or "",
                    )
                    for a in analyses
                ],
                title="analyses",
            )
        )
