"""``duckflock analysis define|list|show|watch|drop``: live analyses from the shell.

On a server URL each command is one Client call; on a database file, one Database call
on the file opened with the analyses it keeps (every analysis defined on a file is kept
in it and defined again when the file is opened).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.live import Live

from duckflock.cli import data, render, targets
from duckflock.cli.data import FORMAT, LIMIT, TOKEN, write_rows
from duckflock.lake.connection import redact
from duckflock.live.results import Result

_FIRST_RESULT_WAIT = 60.0  # seconds show waits for an analysis's first result


@click.group()
def analysis() -> None:
    """Live analyses on TARGET (a database file or a server URL): SQL that keeps its
    result fresh, re-run on a timer (--every) and/or after commits (--on-change).

    \b
    duckflock analysis define events.duckdb per_sensor \\
        "SELECT sensor, count(*) AS n FROM readings GROUP BY 1" --on-change
    duckflock analysis list events.duckdb
    duckflock analysis show events.duckdb per_sensor
    duckflock analysis watch http://127.0.0.1:8765 per_sensor    # Ctrl-C stops
    duckflock analysis drop events.duckdb per_sensor
    """


@contextmanager
def _live(target: str, token: str | None) -> Iterator[Any]:
    """The Client for a URL, or the file opened with its kept analyses: the same verbs."""
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            yield remote
        return
    with targets.database(target, read_only=False, restore=True) as db:
        yield db


@analysis.command("define")
@click.argument("target")
@click.argument("name")
@click.argument("sql")
@click.option("--every", type=click.FloatRange(min=0.01), help="Re-run every this many seconds.")
@click.option("--on-change", is_flag=True, help="Re-run after commits to the tables it reads.")
@click.option(
    "--min-interval",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between two runs at least (a burst of commits makes one run).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.01), help="Seconds one run may take at most."
)
@TOKEN
def define(
    target: str,
    name: str,
    sql: str,
    every: float | None,
    on_change: bool,
    min_interval: float,
    timeout: float | None,
    token: str | None,
) -> None:
    """Define (or replace) analysis NAME on TARGET and show its first result.

    On a file the first run happens here, and an error in it defines nothing; the
    definition is kept in the file. On a server it needs the admin token.
    """
    options: dict[str, Any] = {
        "every": every,
        "on_change": on_change,
        "min_interval": min_interval,
        "timeout": timeout,
    }
    out = render.console()
    if targets.is_url(target):
        with targets.client(target, token) as remote:
            status = remote.analysis(name, sql, **options)
        out.print(_defined(status), highlight=False)
        return
    with (
        targets.database(target, read_only=False, restore=True) as db,
        render.working(f"running {name} for the first time…"),
    ):
        first = db.analysis(name, sql, wait=True, **options)
    assert first is not None
    out.print(f"defined {name}, kept in {redact(target)}", highlight=False, markup=False)
    out.print(render.result_view(first, out))


def _defined(status: dict[str, Any]) -> str:
    when = [f"every {status['every']:g} s"] if status.get("every") else []
    when += ["on change"] if status.get("on_change") else []
    reads = ", ".join(status.get("tables") or []) or "no table"
    return (
        f"defined {status['name']}: reads {reads}; refreshes {' and '.join(when) or 'on demand'}"
        f"; {status['mode']} ({status.get('reason') or 'append-only aggregate'})"
    )


@analysis.command("list")
@click.argument("target")
@TOKEN
def list_(target: str, token: str | None) -> None:
    """List TARGET's analyses: schedule, mode, version, rows, last error."""
    with _live(target, token) as live:
        statuses = live.analyses()
    if not statuses:
        click.echo(f"no analyses on {redact(target)} (define one with `duckflock analysis define`)")
        return
    render.console().print(
        render.table(
            ["analysis", "refreshes", "mode", "version", "rows", "last ms", "sql", "error"],
            [
                (
                    s["name"],
                    ", ".join(
                        ([f"every {s['every']:g} s"] if s["every"] else [])
                        + (["on change"] if s["on_change"] else [])
                    )
                    or "on demand",
                    s["mode"],
                    s["version"],
                    "" if s["rows"] is None else f"{s['rows']:,}",
                    "" if s["duration"] is None else f"{s['duration'] * 1000:,.1f}",
                    " ".join(s["sql"].split()),
                    s["error"] or "",
                )
                for s in statuses
            ],
            title="analyses",
        )
    )


@analysis.command("show")
@click.argument("target")
@click.argument("name")
@FORMAT
@LIMIT
@TOKEN
def show(target: str, name: str, fmt: render.Format, limit: int, token: str | None) -> None:
    """Show NAME's latest result (waiting for its first, up to a minute)."""
    started = time.perf_counter()
    with _live(target, token) as live:
        result: Result = live.result(name, min_version=1, timeout=_FIRST_RESULT_WAIT)
    if fmt is render.Format.TABLE:
        out = render.console()
        out.print(render.result_view(result, out))
        return
    table = result.table
    write_rows(
        iter(table.to_batches(max_chunksize=data.BATCH_ROWS)), table.schema, fmt, limit, started
    )


@analysis.command("watch")
@click.argument("target")
@click.argument("name")
@click.option(
    "--versions",
    default=0,
    type=click.IntRange(min=0),
    help="Stop after this many versions (0: until Ctrl-C).",
)
@click.option(
    "--changes",
    "changes",
    is_flag=True,
    help="Write what changed, one JSON line per version (rows with __diff +1/-1; a "
    "snapshot first), instead of the whole result.",
)
@TOKEN
def watch(target: str, name: str, versions: int, changes: bool, token: str | None) -> None:
    """Show NAME's result refreshing live, in place, until Ctrl-C (or --versions).

    On a terminal the rows that fit it are redrawn as each version lands; into a pipe,
    each version is written after the last. On a database file nothing else can write
    while this holds it, so only --every refreshes it: watch a server instead.

    With --changes each version is one line of JSON: id, since, version, snapshot,
    columns and rows (the last column __diff: +1 added, -1 removed).
    """
    out = render.console()
    seen = 0
    with _live(target, token) as live:
        if changes:
            from duckflock.server.formats import change_event

            for change in live.changes(name):
                click.echo(change_event(change, byte_cap=sys.maxsize))
                seen += 1
                if seen == versions:
                    return
            return
        stream = live.watch(name)
        if not out.is_terminal:
            for result in stream:
                out.print(render.result_view(result, out))
                seen += 1
                if seen == versions:
                    return
            return
        with Live(console=out, auto_refresh=False, transient=False) as screen:
            for result in stream:
                screen.update(render.result_view(result, out), refresh=True)
                seen += 1
                if seen == versions:
                    return


@analysis.command("drop")
@click.argument("target")
@click.argument("name")
@TOKEN
def drop(target: str, name: str, token: str | None) -> None:
    """Drop analysis NAME from TARGET (and from the file that keeps it)."""
    with _live(target, token) as live:
        live.drop_analysis(name)
    click.echo(f"dropped {name}", err=True)
