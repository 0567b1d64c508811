"""The guide's scenario — 50 writer and 5 reader threads on one database — on duckflock.

Faithful to ``multiple-python-threads.md``: the same table, thread names, counts, seed and
shuffle, and readers that print ``(thread_name, row_counter, current_timestamp)``. What the
guide does by hand (a ``cursor()`` per thread, one autocommit INSERT each) is duckflock's
job here: readers just call ``db.execute`` and writers ``db.insert``, which the writer
thread group-commits.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from duckflock.database import Database
from duckflock.live.results import Result

CREATE_TABLE = """
    CREATE OR REPLACE TABLE my_inserts (
        thread_name VARCHAR,
        insert_time TIMESTAMP DEFAULT current_timestamp
    )
"""

READ_COUNT = """
    SELECT ? AS thread_name, count(*) AS row_counter, current_timestamp
    FROM my_inserts
"""


LIVE_ANALYSIS = """
    SELECT thread_name, count(*) AS row_counter
    FROM my_inserts
    GROUP BY thread_name
    ORDER BY thread_name
"""


@dataclass
class DemoReport:
    """What a demo run saw: every reader's line, the final table, and the timing."""

    reads: list[tuple[str, int, datetime]] = field(default_factory=list)
    rows: list[tuple[str, datetime]] = field(default_factory=list)
    elapsed: float = 0.0
    versions: list[Result] = field(default_factory=list)  # --live: every version seen


def _writer(db: Database) -> Callable[[], object]:
    """The guide's writer: insert this thread's name (group-committed, durable on return)."""
    return lambda: db.insert("my_inserts", {"thread_name": threading.current_thread().name})


def _run_shuffled(jobs: list[tuple[str, Callable[[], object]]], seed: int) -> None:
    """One thread per (name, job), shuffled with the guide's seed, all started, all
    joined; a failure in any thread is raised here, not lost."""
    failures: list[BaseException] = []

    def guarded(job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except BaseException as exc:  # reported after join, not lost in a thread
                failures.append(exc)

        return run

    threads = [threading.Thread(target=guarded(job), name=name) for name, job in jobs]
    random.seed(seed)
    random.shuffle(threads)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _table_rows(db: Database) -> list[tuple[str, datetime]]:
    return [
        (name, at)
        for name, at in db.execute(
            "SELECT thread_name, insert_time FROM my_inserts ORDER BY insert_time"
        ).fetchall()
    ]


def run_demo(
    db: Database,
    *,
    writers: int = 50,
    readers: int = 5,
    seed: int = 6,
    on_read: Callable[[tuple[str, int, datetime]], None] | None = None,
) -> DemoReport:
    """Run the scenario on ``db``: create the table, start the shuffled threads, collect."""
    if writers < 0 or readers < 0:
        raise ValueError("writers and readers must be >= 0")
    report = DemoReport()
    # guards report.reads: readers append from their own threads
    reads_lock = threading.Lock()

    def read_from_thread() -> None:
        row: Any = db.execute(READ_COUNT, [threading.current_thread().name]).fetchone()
        line = (row[0], row[1], row[2])
        with reads_lock:
            report.reads.append(line)
        if on_read is not None:
            on_read(line)

    db.execute(CREATE_TABLE)
    jobs = [(f"write_thread_{i}", _writer(db)) for i in range(writers)]
    jobs += [(f"read_thread_{j}", read_from_thread) for j in range(readers)]
    started = time.perf_counter()
    _run_shuffled(jobs, seed)
    report.elapsed = time.perf_counter() - started
    report.rows = _table_rows(db)
    return report


def run_live_demo(
    db: Database,
    *,
    writers: int = 50,
    seed: int = 6,
    on_version: Callable[[Result], None] | None = None,
) -> DemoReport:
    """The scenario with its readers replaced by a live analysis.

    ``rows_per_thread`` re-runs after commits (incrementally: it is an append-only
    aggregate) and every version is handed to ``on_version`` as it lands.
    """
    if writers < 0:
        raise ValueError("writers must be >= 0")
    report = DemoReport()
    db.execute(CREATE_TABLE)
    db.analysis("rows_per_thread", LIVE_ANALYSIS, on_change=True, min_interval=0.005)

    def seen(result: Result) -> None:
        report.versions.append(result)
        if on_version is not None:
            on_version(result)

    subscription = db.subscribe("rows_per_thread", seen)
    started = time.perf_counter()
    try:
        _run_shuffled([(f"write_thread_{i}", _writer(db)) for i in range(writers)], seed)
        final = db.refresh("rows_per_thread")  # reflects every acknowledged insert
    finally:
        subscription.cancel()
    report.elapsed = time.perf_counter() - started
    if not report.versions or report.versions[-1].version < final.version:
        seen(final)
    report.rows = _table_rows(db)
    return report


def next_steps(database: str, program: str = "duckflock") -> list[str]:
    """The three things to try after the demo, on the file it wrote: look at the rows,
    serve them, and (while it serves) define an analysis that keeps itself fresh."""
    url = "http://127.0.0.1:8765"
    per_thread = "SELECT thread_name, count(*) AS n FROM my_inserts GROUP BY 1"
    return [
        f"{program} query {database} "
        '"SELECT thread_name, insert_time FROM my_inserts ORDER BY insert_time"',
        f"{program} serve {database}    # then open {url}/ (Ctrl-C stops it)",
        f'{program} analysis define {url} per_thread "{per_thread}" --on-change'
        f"    # in a second terminal; then: {program} analysis watch {url} per_thread",
    ]


def program_name() -> str:
    """How to call this ``duckflock``: by name when PATH finds this one, else its path
    (``make demo`` leaves it in .venv/bin without activating anything)."""
    here = Path(sys.argv[0]) if Path(sys.argv[0]).name == "duckflock" else None
    here = here or Path(sys.executable).parent / "duckflock"
    found = shutil.which("duckflock")
    if found and Path(found).resolve() == here.resolve():
        return "duckflock"
    try:
        return str(here.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(here)
