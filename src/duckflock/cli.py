"""The ``duckflock`` command: each subcommand parses, makes one library call, renders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .bench import Figure, Sizes, format_figure, run, summary
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
