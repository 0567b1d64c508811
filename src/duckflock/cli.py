"""The ``duckflock`` command: each subcommand parses, makes one library call, renders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .bench import Figure, Sizes, format_figure, run, summary
from .client import Client
from .database import connect
from .demo import run_demo, run_live_demo
from .errors import DuckflockError
from .results import Result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="duckflock")
def cli() -> None:
    """duckflock: a live DuckDB for Python.

    Many threads write into one DuckDB database while analyses over it stay fresh.
    Run `duckflock COMMAND --help` for each command.
    """


@cli.command()
@click.option(
    "--database",
    "database",
    default="my_persistent_db.duckdb",
    show_default=True,
    help="DuckDB file to write (created if missing; the table is replaced).",
)
@click.option("--memory", is_flag=True, help="Use an in-memory database instead of a file.")
@click.option("--writers", default=50, show_default=True, type=click.IntRange(min=0))
@click.option("--readers", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=6, show_default=True, help="Seed for shuffling the threads.")
@click.option(
    "--live",
    is_flag=True,
    help="Replace the readers by a live analysis (rows per thread, refreshed on change) "
    "and print each version as it arrives.",
)
def demo(database: str, memory: bool, writers: int, readers: int, seed: int, live: bool) -> None:
    """Replay DuckDB's "multiple Python threads" guide on duckflock.

    WRITERS threads each insert their name; READERS threads each print
    (thread_name, row_counter, current_timestamp). The threads start in a shuffled
    order, then the whole table is shown ordered by insert_time. With --live the
    readers give way to an analysis that refreshes itself as rows commit.
    """
    console = Console()
    target = ":memory:" if memory else database
    with connect(target) as db:
        if live:
            report = run_live_demo(db, writers=writers, seed=seed, on_version=_print_version)
        else:
            report = run_demo(
                db,
                writers=writers,
                readers=readers,
                seed=seed,
                on_read=lambda line: click.echo(repr([line])),
            )
    console.print(_table(["thread_name", "insert_time"], report.rows, title="my_inserts"))
    where = "in memory" if memory else database
    seen = f"{len(report.versions)} live versions" if live else f"{len(report.reads)} reads"
    console.print(
        f"{len(report.rows)} rows from {writers} writers, {seen}, "
        f"{report.elapsed * 1000:.1f} ms ({where})"
    )


def _print_version(result: Result) -> None:
    rows = result.rows()
    total = sum(int(count) for _, count in rows)
    click.echo(
        f"rows_per_thread v{result.version} ({result.mode}, {result.duration * 1000:.1f} ms): "
        f"{total} rows from {len(rows)} threads"
    )


@cli.group()
def bench() -> None:
    """Benchmarks that print their figures and ratios (see BENCHMARKS.md)."""


@bench.command("ingest")
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of a few seconds.")
def bench_ingest(quick: bool) -> None:
    """Ingest throughput: the guide's pattern vs duckflock, SQLite for comparison.

    (a) the guide: 50 threads, a cursor each, one autocommit INSERT per row;
    (b) 50 threads each waiting for db.insert's acknowledgement; (c) 8 threads
    streaming single rows with wait=False; (d) 8 threads inserting 10,000-row Arrow
    chunks; (e) raw DuckDB's one-INSERT ceiling; (f) SQLite WAL. Ratios are to (a),
    measured in the same run.
    """
    console = Console()
    sizes = Sizes.quick() if quick else Sizes()

    def show(figure: Figure, baseline: Figure | None) -> None:
        console.print(format_figure(figure, baseline), highlight=False)

    results = run(sizes, report=show)
    for line in summary(results):
        console.print(line, highlight=False)


@cli.command()
@click.argument("database")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file declaring [[tables]] (sql = DDL) and [[analyses]] (name, sql, every, "
    "on_change, min_interval).",
)
@click.option(
    "--token",
    envvar="DUCKFLOCK_TOKEN",
    help="Admin bearer token (or $DUCKFLOCK_TOKEN; at least 16 characters). More tokens with "
    "roles: $DUCKFLOCK_{READ,WRITE,ADMIN}_TOKEN or [[tokens]] in the config. Required to "
    "listen on anything but loopback.",
)
@click.option("--max-body", default=64 * 2**20, show_default=True, help="Body size cap, bytes.")
@click.option("--row-cap", default=100_000, show_default=True, help="Rows a query returns at most.")
@click.option(
    "--byte-cap", default=64 * 2**20, show_default=True, help="Bytes one response sends at most."
)
@click.option(
    "--query-timeout",
    default=30.0,
    show_default=True,
    help="Seconds from a query's arrival to its last byte.",
)
@click.option(
    "--concurrency", default=8, show_default=True, help="Queries running at once (all clients)."
)
@click.option("--per-client", default=4, show_default=True, help="Queries one client may run.")
@click.option(
    "--queue-timeout",
    default=10.0,
    show_default=True,
    help="Seconds a request waits for a free slot before 503.",
)
@click.option(
    "--max-wait",
    default=60.0,
    show_default=True,
    help="Seconds a long poll (?timeout= of a result) may wait at most.",
)
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    help="Seconds the shutdown (commit, checkpoint) may take; exit 1 past it.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    help="Seconds a connection may take to send a request's headers (then 408).",
)
@click.option(
    "--max-connections", default=1000, show_default=True, help="Open connections at most."
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    database: str,
    host: str,
    port: int,
    config_path: str | None,
    token: str | None,
    max_body: int,
    row_cap: int,
    byte_cap: int,
    query_timeout: float,
    concurrency: int,
    per_client: int,
    queue_timeout: float,
    max_wait: float,
    shutdown_timeout: float,
    header_timeout: float,
    max_connections: int,
    log_level: str,
) -> None:
    """Serve DATABASE over HTTP: ingest, read-only queries, live analyses, a dashboard.

    Other processes and machines write and read through it (DuckDB allows one writing
    process per file). The database is locked down: queries cannot touch files,
    extensions or settings. SIGINT/SIGTERM interrupt queries, commit what was accepted,
    checkpoint and exit 0 (1 if that failed); a second signal exits at once. The
    dashboard is at http://HOST:PORT/ (add ?access_token=… with a token).
    """
    import os
    import sys

    from .server.app import ServerSettings
    from .server.auth import tokens_from_env
    from .server.serve import ServeConfig
    from .server.serve import serve as run

    try:
        config = ServeConfig.load(config_path) if config_path else None
        settings = ServerSettings(
            token=token,
            tokens=tokens_from_env(),
            max_body=max_body,
            query_row_cap=row_cap,
            query_byte_cap=byte_cap,
            query_timeout=query_timeout,
            concurrency=concurrency,
            per_client=per_client,
            queue_timeout=queue_timeout,
            max_wait=max_wait,
        )
        code = run(
            database,
            host=host,
            port=port,
            settings=settings,
            config=config,
            log_level=log_level,
            shutdown_timeout=shutdown_timeout,
            header_timeout=header_timeout,
            max_connections=max_connections,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the database is closed; no stray thread may hold the exit


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _emit(table: Any, fmt: str) -> None:
    if fmt == "json":
        import json

        columns = table.column_names
        rows = [dict(zip(columns, row, strict=True)) for row in _rows_of(table)]
        click.echo(json.dumps(rows, default=str, indent=2))
    elif fmt == "csv":
        import io

        import pyarrow.csv as pa_csv

        sink = io.BytesIO()
        pa_csv.write_csv(table, sink)
        click.echo(sink.getvalue().decode(), nl=False)
    else:
        Console().print(_table(table.column_names, _rows_of(table)))


def _rows_of(table: Any) -> list[tuple[Any, ...]]:
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns, strict=True)) if columns else []


@cli.command()
@click.argument("target")
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--token", envvar="DUCKFLOCK_TOKEN", help="Bearer token for a server URL.")
def query(target: str, sql: str, fmt: str, token: str | None) -> None:
    """Run SQL against TARGET: a database file (opened read-only) or a server URL.

    \b
    duckflock query events.duckdb "SELECT count(*) FROM my_inserts"
    duckflock query http://127.0.0.1:8765 "SELECT * FROM my_inserts LIMIT 5" --format csv
    """
    if _is_url(target):
        with Client(target, token=token) as client:
            results = client.execute(sql)
            table = results.table
            if results.truncated:
                Console(stderr=True).print("[yellow]truncated to the server's row cap[/yellow]")
    else:
        with connect(target, read_only=True) as db:
            table = db.execute(sql).to_arrow_table()
    _emit(table, fmt)


@cli.command()
@click.argument("target")
@click.argument("table")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "csv", "parquet", "ndjson"]),
    default="auto",
    show_default=True,
    help="File format (auto: from the extension).",
)
@click.option("--chunk-rows", default=100_000, show_default=True, help="Rows per insert call.")
@click.option("--token", envvar="DUCKFLOCK_TOKEN", help="Bearer token for a server URL.")
def load(target: str, table: str, file: str, fmt: str, chunk_rows: int, token: str | None) -> None:
    """Load FILE (CSV, Parquet or NDJSON) into TABLE of TARGET, in chunks, with progress.

    TARGET is a database file or a server URL. Each chunk is one atomic insert; a bad
    row stops the load and names the chunk and row.
    """
    from .loading import chunks_of, file_format

    try:
        kind = file_format(file) if fmt == "auto" else fmt
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
    )
    loaded = 0
    with progress:
        task = progress.add_task(f"{file} -> {table}", total=Path(file).stat().st_size, rows=0)
        if _is_url(target):
            with Client(target, token=token) as client:
                for chunk, position in chunks_of(file, kind, chunk_rows):
                    loaded += client.insert(table, chunk, chunk_rows=chunk_rows)
                    progress.update(task, completed=position, rows=loaded)
        else:
            with connect(target) as db:
                for chunk, position in chunks_of(file, kind, chunk_rows):
                    loaded += db.insert(table, chunk).rows
                    progress.update(task, completed=position, rows=loaded)
    Console().print(f"loaded {loaded:,} rows into {table}")


@cli.command()
@click.argument("url")
@click.option("--token", envvar="DUCKFLOCK_TOKEN", help="Bearer token.")
def status(url: str, token: str | None) -> None:
    """Show a server's health, tables, ingest statistics and analyses."""
    console = Console()
    with Client(url, token=token) as client:
        health = client.health()
        console.print(f"[bold]{url}[/bold] {health['status']} (duckflock {health['version']})")
        console.print(
            _table(
                ["table", "rows", "columns"],
                [
                    (t["name"], f"{t['rows']:,}", ", ".join(c["name"] for c in t["columns"]))
                    for t in client.tables()
                ],
                title="tables",
            )
        )
        stats = client.stats()
        console.print(
            f"ingest: {stats['rows_committed']:,} rows in {stats['batches_committed']:,} "
            f"batches, {stats['rows_queued']:,} queued, {stats['calls_rejected']:,} rejected, "
            f"commit p50 {stats['commit_ms'].get('p50', 0):.2f} ms"
        )
        console.print(
            _table(
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
                    for a in client.analyses()
                ],
                title="analyses",
            )
        )


def reference() -> str:
    """The CLI reference in Markdown, made from every command's ``--help``."""
    lines = [
        "# CLI",
        "",
        "Generated from `--help` by `make docs` (a test keeps it in step).",
        "`python -m duckflock` is the same program.",
    ]

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(
            command,
            info_name=path[-1],
            parent=parent,
            terminal_width=88,
            max_content_width=88,
            **command.context_settings,
        )
        lines.extend(["", f"## `{' '.join(path)}`", "", "```", command.get_help(ctx), "```"])
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], ctx)

    walk(cli, ["duckflock"], None)
    return "\n".join(lines) + "\n"


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> Table:
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("NULL" if value is None else str(value) for value in row))
    return table


def main() -> None:
    """Console-script entry point: duckflock errors print as one line, exit 1."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except DuckflockError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
