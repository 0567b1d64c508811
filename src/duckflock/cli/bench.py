"""The ingest benchmark: the guide's pattern against duckflock, in one process run.

Each scenario writes into a fresh DuckDB (or SQLite) file in a temporary directory, on the
guide's table ``my_inserts (thread_name VARCHAR, insert_time TIMESTAMP DEFAULT
current_timestamp)``. Figures are rows per second; ratios are to the baseline (a) measured
in the same run, because machines are noisy and ratios hold.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from duckflock.database import Database, connect

TABLE = """CREATE OR REPLACE TABLE my_inserts (
    thread_name VARCHAR, insert_time TIMESTAMP DEFAULT current_timestamp)"""


@dataclass
class Figure:
    """One scenario's outcome."""

    key: str
    label: str
    rows: int
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class Sizes:
    """How much each scenario writes; the defaults take about a minute here."""

    guide_rows_per_thread: int = 60
    closed_loop_rows_per_thread: int = 400
    streaming_rows_per_thread: int = 60_000
    chunks_per_thread: int = 25
    chunk_rows: int = 10_000
    sqlite_rows_per_thread: int = 60

    @classmethod
    def quick(cls) -> Sizes:
        """A smoke run of a few seconds."""
        return cls(
            guide_rows_per_thread=10,
            closed_loop_rows_per_thread=40,
            streaming_rows_per_thread=5_000,
            chunks_per_thread=3,
            sqlite_rows_per_thread=10,
        )


def format_figure(figure: Figure, baseline: Figure | None) -> str:
    """One line: the scenario, rows, seconds, rows/s and the ratio to the baseline."""
    ratio = f"{figure.rate / baseline.rate:8.1f}x a" if baseline else "  baseline"
    extra = "  ".join(f"{k}={v:.2f}" for k, v in figure.extra.items())
    return (
        f"({figure.key}) {figure.label:60s} {figure.rows:>10,} rows {figure.seconds:7.2f} s "
        f"{figure.rate:>12,.0f} rows/s {ratio}  {extra}"
    ).rstrip()


def run_threads(count: int, target: Callable[[int], None], name: str) -> float:
    """Start ``count`` threads at one barrier; return the seconds until all are done."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), name=f"{name}_{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="duckflock-bench-") as path:
        yield Path(path)


def _count(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM my_inserts").fetchone()
    return int(row[0]) if row else 0


def guide_pattern(workdir: Path, threads: int, per_thread: int) -> Figure:
    """(a) the guide exactly: a cursor per thread, one autocommit INSERT per row."""
    path = workdir / "a.duckdb"
    con = duckdb.connect(str(path))
    con.execute(TABLE)

    def write(i: int) -> None:
        local = con.cursor()
        name = threading.current_thread().name
        for _ in range(per_thread):
            local.execute("INSERT INTO my_inserts (thread_name) VALUES (?)", (name,)).fetchall()
        local.close()

    seconds = run_threads(threads, write, "write_thread")
    con.close()
    rows = _count(path)
    return Figure("a", f"guide pattern, {threads} threads, autocommit per row", rows, seconds)


def closed_loop(workdir: Path, threads: int, per_thread: int) -> Figure:
    """(b) the same threads, each ``db.insert(row)`` waiting for its acknowledgement."""
    path = workdir / "b.duckdb"
    latencies: list[list[float]] = [[] for _ in range(threads)]
    with connect(path) as db:
        db.execute(TABLE)

        def write(i: int) -> None:
            name = threading.current_thread().name
            mine = latencies[i]
            clock = time.perf_counter
            for _ in range(per_thread):
                started = clock()
                db.insert("my_inserts", {"thread_name": name})
                mine.append(clock() - started)

        seconds = run_threads(threads, write, "write_thread")
    ordered = sorted(x for per in latencies for x in per)
    extra = {
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[(len(ordered) * 99) // 100] * 1000,
    }
    return Figure(
        "b", f"duckflock closed loop, {threads} threads, ack per row", _count(path), seconds, extra
    )


def streaming(
    workdir: Path,
    threads: int,
    per_thread: int,
    setup: Callable[[Database], Any] | None = None,
    *,
    tuples: bool = False,
    **options: Any,
) -> Figure:
    """(c) 8 threads inserting single rows with ``wait=False``, then ``flush()``.

    Rows are dicts, or with ``tuples`` (c2) the same rows as tuples with a column list:
    ``insert("my_inserts", (name,), columns=["thread_name"], wait=False)``.
    ``setup`` runs on the fresh database before the clock starts (e.g. to define
    analyses that then refresh while the rows stream in); ``options`` go to ``connect``.
    """
    kind = f"c{'_setup' if setup else ''}{'_tuples' if tuples else ''}"
    # a new file per call: the analyses benchmark calls this many times in one directory
    path = workdir / f"{kind}{len(list(workdir.glob(kind + '*.duckdb')))}.duckdb"
    with connect(path, **options) as db:
        db.execute(TABLE)
        if setup is not None:
            setup(db)

        def write(i: int) -> None:
            name = threading.current_thread().name
            insert = db.insert
            if tuples:
                columns = ["thread_name"]
                for _ in range(per_thread):
                    insert("my_inserts", (name,), columns=columns, wait=False)
                return
            row = {"thread_name": name}
            for _ in range(per_thread):
                insert("my_inserts", row, wait=False)

        def write_and_flush(i: int) -> None:
            write(i)
            db.flush()

        seconds = run_threads(threads, write_and_flush, "stream")
    if tuples:
        label = f"duckflock streaming tuples + columns=, {threads} threads, wait=False"
        return Figure("c2", label, _count(path), seconds)
    return Figure("c", f"duckflock streaming, {threads} threads, wait=False", _count(path), seconds)


def _chunk(name: str, rows: int) -> pa.Table:
    return pa.table({"thread_name": pa.array([name] * rows, pa.string())})


def chunks(workdir: Path, threads: int, per_thread: int, chunk_rows: int, *, wait: bool) -> Figure:
    """(d) 8 threads inserting 10,000-row Arrow chunks: each acknowledged (``wait=True``),
    or streamed with ``wait=False`` and a final ``flush()``."""
    path = workdir / f"d_{wait}.duckdb"
    data = [_chunk(f"chunk_{i}", chunk_rows) for i in range(threads)]
    with connect(path) as db:
        db.execute(TABLE)

        def write(i: int) -> None:
            for _ in range(per_thread):
                db.insert("my_inserts", data[i], wait=wait)
            db.flush()

        seconds = run_threads(threads, write, "chunk")
    mode = "ack per chunk" if wait else "wait=False"
    return Figure(
        "d" if wait else "d2",
        f"duckflock chunks, {threads} threads, {chunk_rows // 1000}k-row Arrow, {mode}",
        _count(path),
        seconds,
    )


def ceiling(workdir: Path, rows: int) -> Figure:
    """(e) raw DuckDB, one thread, one INSERT … SELECT from an Arrow table."""
    path = workdir / "e.duckdb"
    arrow_table = _chunk("ceiling", rows)
    con = duckdb.connect(str(path))
    con.execute(TABLE)
    con.register("arrow_table", arrow_table)
    started = time.perf_counter()
    con.execute("INSERT INTO my_inserts (thread_name) SELECT * FROM arrow_table")
    seconds = time.perf_counter() - started
    con.close()
    return Figure("e", "raw DuckDB ceiling, one Arrow INSERT", _count(path), seconds)


def sqlite_wal(workdir: Path, threads: int, per_thread: int, synchronous: str) -> Figure:
    """(f) SQLite in WAL mode, a connection per thread, one commit per row."""
    path = workdir / f"f_{synchronous}.sqlite"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(
        "CREATE TABLE my_inserts (thread_name TEXT, insert_time TEXT DEFAULT CURRENT_TIMESTAMP)"
    )
    setup.commit()

    def write(i: int) -> None:
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        con.execute(f"PRAGMA synchronous={synchronous}")
        name = threading.current_thread().name
        for _ in range(per_thread):
            con.execute("INSERT INTO my_inserts (thread_name) VALUES (?)", (name,))
        con.close()

    seconds = run_threads(threads, write, "sqlite")
    rows = setup.execute("SELECT count(*) FROM my_inserts").fetchone()[0]
    setup.close()
    return Figure("f", f"SQLite WAL synchronous={synchronous}, {threads} threads", rows, seconds)


def run(
    sizes: Sizes | None = None,
    *,
    writers: int = 50,
    producers: int = 8,
    report: Callable[[Figure, Figure | None], Any] | None = None,
) -> dict[str, Figure]:
    """Run every scenario; ``report(figure, baseline)`` is called as each one finishes."""
    sizes = sizes or Sizes()
    results: dict[str, Figure] = {}

    def done(figure: Figure, key: str | None = None) -> None:
        results[key or figure.key] = figure
        if report is not None:
            report(figure, results.get("a"))

    with _workdir() as workdir:
        done(guide_pattern(workdir, writers, sizes.guide_rows_per_thread))
        done(closed_loop(workdir, writers, sizes.closed_loop_rows_per_thread))
        done(streaming(workdir, producers, sizes.streaming_rows_per_thread))
        done(streaming(workdir, producers, sizes.streaming_rows_per_thread, tuples=True))
        done(chunks(workdir, producers, sizes.chunks_per_thread, sizes.chunk_rows, wait=True))
        done(chunks(workdir, producers, sizes.chunks_per_thread, sizes.chunk_rows, wait=False))
        total = producers * sizes.chunks_per_thread * sizes.chunk_rows
        done(ceiling(workdir, total))
        done(sqlite_wal(workdir, writers, sizes.sqlite_rows_per_thread, "FULL"), "f_full")
        done(sqlite_wal(workdir, writers, sizes.sqlite_rows_per_thread, "NORMAL"), "f_normal")
    return results


def summary(results: dict[str, Figure]) -> list[str]:
    """The target lines: what each ratio is, and whether it meets the issue's target."""
    a, b, c, d, e = (results[k] for k in "abcde")
    return [
        f"b / a = {b.rate / a.rate:.1f}x (target >= 15x), "
        f"p99 ack {b.extra['p99_ms']:.1f} ms (target <= 5 ms)",
        f"c = {c.rate:,.0f} rows/s (target >= 300,000); the same rows as tuples with "
        f"columns= (c2): {results['c2'].rate:,.0f} rows/s = {results['c2'].rate / c.rate:.2f}x "
        "dicts (target >= 1.0x)",
        f"d / e = {d.rate / e.rate:.0%} acknowledged per chunk, "
        f"{results['d2'].rate / e.rate:.0%} streamed (target >= 70%)",
    ]
