"""The ``duckflock`` group, its demo, bench and serve commands, and the entry point."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from duckflock import __version__
from duckflock.cli import analysis, banner, data, load, render
from duckflock.cli.bench import Figure, Sizes, format_figure, run, summary
from duckflock.cli.demo import next_steps, program_name, run_demo, run_live_demo
from duckflock.cli.hints import next_step
from duckflock.database import connect
from duckflock.errors import DuckflockError
from duckflock.extras import require
from duckflock.live.results import Result
from duckflock.server.settings import ListenSettings, PgSettings, ServerSettings, flagged


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="duckflock")
def cli() -> None:
    """duckflock: a live DuckDB for Python.

    Many threads write into one DuckDB database while analyses over it stay fresh.
    Every command that takes a TARGET works on a database file or on a server's URL
    (`duckflock serve`). Run `duckflock COMMAND --help` for each command.

    \b
    duckflock load events.duckdb readings readings.csv     # creates the table
    duckflock sql events.duckdb "DELETE FROM readings WHERE value < 0"
    duckflock query events.duckdb "SELECT count(*) FROM readings"
    duckflock serve events.duckdb                          # then use its URL
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
    console = render.console()
    target = ":memory:" if memory else database
    with connect(target, restore_analyses=False) as db:
        if live:
            report = run_live_demo(db, writers=writers, seed=seed, on_version=_print_version)
        else:
            report = run_demo(
                db,
                writers=writers,
                readers=readers,
                seed=seed,
                on_read=_print_read,
            )
    console.print(render.table(["thread_name", "insert_time"], report.rows, title="my_inserts"))
    where = "in memory" if memory else database
    seen = f"{len(report.versions)} live versions" if live else f"{len(report.reads)} reads"
    console.print(
        f"{len(report.rows)} rows from {writers} writers, {seen}, "
        f"{report.elapsed * 1000:.1f} ms ({where})"
    )
    if not memory:
        console.print("\n[bold]Next, try:[/bold]")
        for step in next_steps(database, program_name()):
            console.print(f"  {step}", markup=False, soft_wrap=True)


def _print_read(line: tuple[str, int, Any]) -> None:
    name, count, at = line
    click.echo(f"{name}: row_counter={count} at {render.text(at)}")


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
    streaming single rows with wait=False, as dicts, and (c2) as tuples with
    columns=; (d) 8 threads inserting 10,000-row Arrow
    chunks; (e) raw DuckDB's one-INSERT ceiling; (f) SQLite WAL. Ratios are to (a),
    measured in the same run.
    """
    console = render.console()
    sizes = Sizes.quick() if quick else Sizes()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=render.console(stderr=True),
        transient=True,
    )
    task = progress.add_task("(a) the guide's pattern", total=None)

    def show(figure: Figure, baseline: Figure | None) -> None:
        console.print(format_figure(figure, baseline))
        progress.update(task, description=f"after ({figure.key}): the next scenario")

    with progress:
        results = run(sizes, report=show)
    for line in summary(results):
        console.print(line)


SERVER_FLAGS = [spec.name for _, spec in flagged(ServerSettings)]


def serve_settings(command: Any) -> Any:
    """The options of ``serve`` that are settings: each one's flag, default and help come
    from its field (:mod:`duckflock.server.settings`), in the order declared there."""
    found = [*flagged(ServerSettings), *flagged(ListenSettings)]
    for flag, spec in reversed(found):  # click lists options in the order applied
        command = click.option(
            flag, spec.name, default=spec.default, show_default=True, help=spec.metadata["help"]
        )(command)
    return command


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
@serve_settings
@click.option(
    "--pg-port",
    type=click.IntRange(0, 65535),
    help="Also serve the PostgreSQL wire protocol on this port (psql, drivers, BI tools): "
    "the same database, tokens (as passwords) and limits. Off unless given (or [pg] port "
    "in the config).",
)
@click.option(
    "--pg-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="TLS certificate (PEM) for the Postgres port; the key in it or --pg-key.",
)
@click.option("--pg-key", type=click.Path(exists=True, dir_okay=False), help="Its TLS key (PEM).")
@click.option("--log-level", default="info", show_default=True)
def serve(
    database: str,
    host: str,
    port: int,
    config_path: str | None,
    token: str | None,
    pg_port: int | None,
    pg_cert: str | None,
    pg_key: str | None,
    log_level: str,
    **limits: Any,
) -> None:
    """Serve DATABASE over HTTP: ingest, read-only queries, live analyses, a dashboard.

    Other processes and machines write and read through it (DuckDB allows one writing
    process per file). The database is locked down: queries cannot touch files,
    extensions or settings. SIGINT/SIGTERM interrupt queries, commit what was accepted,
    checkpoint and exit 0 (1 if that failed); a second signal exits at once. The
    dashboard is at http://HOST:PORT/ (add ?access_token=… with a token). With
    --pg-port, psql and PostgreSQL drivers connect too (docs/postgres.md).
    """
    import os
    import sys

    try:
        require("server", "duckflock serve", "starlette", "uvicorn", "sse_starlette")
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    from duckflock.server.auth import tokens_from_env
    from duckflock.server.serve import ServeConfig
    from duckflock.server.serve import serve as run

    try:
        config = ServeConfig.load(config_path) if config_path else None
        server_limits = {k: limits.pop(k) for k in SERVER_FLAGS}
        settings = ServerSettings(token=token, tokens=tokens_from_env(), **server_limits)
        options = dict(config.pg) if config is not None else {}
        for key, value in (("port", pg_port), ("certfile", pg_cert), ("keyfile", pg_key)):
            if value is not None:
                options[key] = value
        pg = PgSettings(host=host, **options) if "port" in options else None
        click.echo(
            banner.text(
                database,
                host=host,
                port=port,
                settings=settings,
                pg=pg,
                sources=banner.token_sources(
                    token, settings.tokens, config.tokens if config else {}
                ),
            ),
            err=True,
        )
        code = run(
            database,
            host=host,
            port=port,
            settings=settings,
            config=config,
            log_level=log_level,
            pg=pg,
            **limits,  # the HTTP listener's (ListenSettings)
        )
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the database is closed; no stray thread may hold the exit


for command in (
    data.query,
    data.sql_command,
    data.tables,
    load.load,
    data.status,
    analysis.analysis,
):
    cli.add_command(command)


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

    lines.extend(["", "## Examples", "", EXAMPLES.strip("\n")])
    walk(cli, ["duckflock"], None)
    return "\n".join(lines) + "\n"


# run by the docs test like every example: on a file, then against a running server
EXAMPLES = """
Everything on a database file, then the same against a server (`$DUCKFLOCK_URL`):

```sh
printf 'id,sensor,value\\n1,s1,0.5\\n2,s2,1.5\\n3,s1,2.5\\n' > readings.csv
gzip -k readings.csv
duckflock load readings.duckdb readings readings.csv --pk id     # creates the table
duckflock sql readings.duckdb "UPDATE readings SET value = value * 2 WHERE sensor = 's1'"
duckflock query readings.duckdb "SELECT sensor, sum(value) AS total FROM readings GROUP BY 1"
duckflock query readings.duckdb "SELECT * FROM range(1000000)" --limit 5 --format csv
duckflock query readings.duckdb "SELECT * FROM range(1000000)" --limit 0 --format arrow > all.arrow
duckflock tables readings.duckdb
duckflock status readings.duckdb
printf 'id,sensor,value\n4,s2,oops\n5,s2,3.5\n' | duckflock load readings.duckdb readings - \
    --format csv --rejects bad-lines.csv                          # stdin; bad lines set aside
duckflock analysis define readings.duckdb per_sensor \
    "SELECT sensor, count(*) AS n FROM readings GROUP BY 1"
duckflock analysis show readings.duckdb per_sensor --format csv
duckflock load "$DUCKFLOCK_URL" readings readings.csv.gz          # .gz and .zst read as is
duckflock sql "$DUCKFLOCK_URL" "DELETE FROM readings WHERE value > 4"
duckflock query "$DUCKFLOCK_URL" "SELECT count(*) AS n FROM readings" --format json
duckflock status "$DUCKFLOCK_URL"
duckflock analysis define "$DUCKFLOCK_URL" total \
    "SELECT sum(value) AS total FROM readings" --on-change
duckflock analysis watch "$DUCKFLOCK_URL" total --versions 1      # live until Ctrl-C without it
duckflock analysis list "$DUCKFLOCK_URL"
duckflock analysis drop "$DUCKFLOCK_URL" total
```
"""


def utf8_arguments(arguments: list[str]) -> None:
    """A usage error for an argument that is not UTF-8 (Python reads its bytes as lone
    surrogates): names, SQL and paths reach DuckDB, JSON and HTTP as UTF-8 text, where
    such a string fails with a traceback far from the argument."""
    for number, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError as exc:
            data = os.fsencode(argument)
            at = len(os.fsencode(argument[: exc.start]))
            shown = data.decode("utf-8", "backslashreplace")
            raise click.UsageError(
                f"argument {number} ({shown}) is not UTF-8: byte 0x{data[at]:02x} at byte "
                f"{at + 1}; names, SQL and file paths must be UTF-8 text"
            ) from None


def main() -> None:
    """Console-script entry point: duckflock errors print as one line, exit 1."""
    try:
        utf8_arguments(sys.argv[1:])
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except DuckflockError as exc:
        err = render.console(stderr=True)
        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        hint = next_step(exc)
        if hint is not None:
            err.print(f"[bold]next:[/bold] {escape(hint)}", highlight=False)
        raise SystemExit(1) from None
    except ImportError as exc:  # an extra that is not installed: the message names it
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
