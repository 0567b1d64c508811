"""DuckLake benchmark: rows/s into one lake from 1, 2 and 4 writer processes.

Run: .venv/bin/python benchmarks/lake.py [--quick]

Starts a throw-away PostgreSQL (Debian's, as the tests do: tests/pgcluster.py) for the
catalog, with Parquet files in a temporary folder. Each figure is rows committed per
second of wall time, from the moment every writer process is connected and told to go to
the moment the last one reports its rows acknowledged (its ``done`` line: closing the
database and leaving the process are not ingest): single rows (``db.insert(row,
wait=False)``, then ``flush()``) and 10,000-row chunks (Arrow, each acknowledged). The
embedded single-file figure is measured in the same run the same way (one process, a
DuckDB file, as many rows as the 4 lake writers together), and the issue's target is the
4-process chunk figure over it (>= 80%). "pipelined" is the same 10,000-row chunks from
a producer that keeps up to 4 calls in flight (``wait=False``, each receipt waited for in
order): the writer then commits the chunks queued meanwhile together, on both sides.
"serial" is "chunks" with the lake's commit lock (``LakeOptions(serial_commits=…)``:
one lake writer commits at a time, none loses a race).
Each 4-process lake line ends with its catalog profile: PostgreSQL transactions
committed and rolled back in the lake's database during the run (a rollback is mostly a
commit that lost the race for the next snapshot id and was retried by DuckLake).
Last, the data files of the 4-process chunk lake before and after ``db.maintain()``.

``--chunks-only`` measures only the embedded and 4-process chunk figures (and skips
maintenance); ``--rounds N`` repeats them, printing each round and the medians;
``--modes chunks,serial`` picks which. ``--profile`` (with ``--chunks-only``) logs every
statement of the 4-process lake run in PostgreSQL (``log_min_duration_statement = 0``:
it costs the server a little) and prints where a chunk's time goes: catalog transactions
and round trips per chunk, PostgreSQL's own execution time per chunk, the median catalog
transaction (BEGIN to COMMIT/ROLLBACK, wall time) and the share of the writers' time
spent inside one. In ``serial`` the lock's wait counts as PostgreSQL executing; where the
lock is the extension's transaction lock (no psycopg) that transaction is one of them too
(on another connection, overlapping DuckLake's: the share can pass 100%).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402

import duckflock  # noqa: E402
import options  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from test_lake_lock import rollbacks  # noqa: E402

WRITER = str(ROOT / "tests" / "lake_writer.py")
CHUNK = 10_000


def writers(
    target: str, count: int, rows: int, mode: str, ready: Callable[[], None] | None = None
) -> float:
    """Rows/s of ``count`` writer processes, each inserting ``rows`` rows; ``ready`` is
    called once every writer is warmed up, before they are told to go."""
    env = {**os.environ, "LAKE_WRITER_GO": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, WRITER, target, str(w), str(rows), str(CHUNK), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(count)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    if ready is not None:
        ready()
    started = time.perf_counter()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:  # each prints "done <seconds>" once its rows are acknowledged
        assert process.stdout is not None
        done = process.stdout.readline()
        assert done.startswith("done"), done
    seconds = time.perf_counter() - started
    for process in processes:
        process.communicate(timeout=600)
        assert process.returncode == 0
    return count * rows / seconds


# a statement in PostgreSQL's log with the prefix Statements.PREFIX sets
_LOGGED = re.compile(
    r"^(\S+ \S+) \S+ \[(\d+)\] LOG:  duration: ([\d.]+) ms  (?:statement|execute [^:]*): (\w*)"
)


class Statements:
    """PostgreSQL's log of one lake's statements during a run (``--profile``)."""

    PREFIX = "%m [%p] "  # the log line's time (ms) and backend pid

    def __init__(self, cluster: Cluster, target: str) -> None:
        self.cluster = cluster
        self.database = target.rsplit("dbname=", 1)[1].split()[0]
        self.offset = 0
        with psycopg.connect(cluster.dsn, autocommit=True) as admin:
            admin.execute(f"ALTER SYSTEM SET log_line_prefix = '{self.PREFIX}'")
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(f"ALTER DATABASE {self.database} SET log_min_duration_statement = 0")

    def mark(self) -> None:
        """From now on (the writers are warmed up): what the run's statements are."""
        self.offset = self.cluster.log.stat().st_size

    def summary(self, chunks: int, writer_seconds: float) -> str:
        """Where the run's chunks spent their time in the catalog."""
        with self.cluster.log.open() as log:
            log.seek(self.offset)
            lines = log.read().splitlines()
        statements, executing = 0, 0.0
        began: dict[str, float] = {}
        spans: list[float] = []
        for line in lines:
            found = _LOGGED.match(line)
            if found is None:
                continue
            stamp, pid, took, verb = found.groups()
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            statements += 1
            executing += float(took)
            if verb.upper() == "BEGIN":
                began[pid] = at - float(took) / 1000
            elif verb.upper() in ("COMMIT", "ROLLBACK") and pid in began:
                spans.append(at - began.pop(pid))
        if not spans:
            return "no catalog transactions logged"
        return (
            f"per chunk: {len(spans) / chunks:.2f} catalog transactions, "
            f"{statements / chunks:.1f} statements (failed ones not counted), PostgreSQL "
            f"executing {executing / chunks:.2f} ms; a catalog transaction "
            f"{statistics.median(spans) * 1000:.1f} ms median; "
            f"{sum(spans) / writer_seconds:.0%} of the writers' time inside one"
        )


def profiled(
    target: str, count: int, rows: int, mode: str, statements: Statements | None = None
) -> tuple[float, str]:
    """Rows/s of ``count`` lake writers, and the run's catalog rollbacks per chunk (and,
    with ``statements``, its catalog profile)."""
    rolled_back = rollbacks(target)
    ready = None if statements is None else statements.mark
    rate = writers(target, count, rows, mode, ready)  # exited: their figures are in
    after = rollbacks(target)
    commits = count * -(-rows // CHUNK)  # at most: a pipelined writer commits fewer
    profile = f"{(after - rolled_back) / commits:.2f} catalog rollbacks per chunk"
    if statements is not None:
        profile += "; " + statements.summary(commits, count * count * rows / rate)  # writer-seconds
    return rate, profile


def fresh(kind: str, cluster: Cluster, folder: Path, name: str) -> str:
    """A new empty target with the ``events`` table."""
    if kind == "file":
        target = str(folder / f"{name}.duckdb")
        data = None
    else:
        target = "ducklake:postgres:" + cluster.create_database(name)
        data = str(folder / name)
    with duckflock.connect(target, data_path=data) if data else duckflock.connect(target) as db:
        db.execute("CREATE TABLE events (worker INTEGER, k BIGINT)")
    return target


def four(
    cluster: Cluster, folder: Path, name: str, rows: int, mode: str, profile: bool = False
) -> float:
    """Embedded vs 4 lake processes, ``mode`` chunks: prints the line, returns the ratio."""
    embedded = writers(fresh("file", cluster, folder, f"file_{name}"), 1, 4 * rows, mode)
    target = fresh("lake", cluster, folder, name)
    statements = Statements(cluster, target) if profile else None
    lake, profile_ = profiled(target, 4, rows, mode, statements)
    print(
        f"{mode:>9}: embedded {embedded:>11,.0f}, 4-process lake {lake:>11,.0f} rows/s = "
        f"{lake / embedded:.0%}  ({profile_})",
        flush=True,
    )
    return lake / embedded


def chunks_only(
    cluster: Cluster, folder: Path, rows: int, rounds: int, modes: str, profile: bool
) -> None:
    """The embedded and 4-process figures only, ``rounds`` times, then the medians."""
    ratios: dict[str, list[float]] = {mode: [] for mode in modes.split(",")}
    for round_ in range(rounds):
        for mode, ratio in ratios.items():
            ratio.append(four(cluster, folder, f"{mode}{round_}", rows, mode, profile))
    for mode, ratio in ratios.items():
        print(f"median {mode}: 4-process lake / embedded = {statistics.median(ratio):.0%}")


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "lake.py")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--chunks-only", action="store_true", help="only the 4-process ratio")
    parser.add_argument(
        "--rounds", type=options.positive_int, default=1, help="rounds of --chunks-only"
    )
    parser.add_argument(
        "--modes", default="chunks,serial,pipelined", help="the --chunks-only modes, in order"
    )
    parser.add_argument(
        "--profile", action="store_true", help="with --chunks-only: the catalog's profile"
    )
    args = parser.parse_args(argv)
    single_rows = 5_000 if args.quick else 20_000
    chunk_rows = 50_000 if args.quick else 200_000
    with Cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.chunks_only:
            chunks_only(cluster, folder, chunk_rows, max(1, args.rounds), args.modes, args.profile)
            return
        # one process writes what the 4 lake writers write together: the same work
        embedded = {
            mode: writers(fresh("file", cluster, folder, f"file_{mode}"), 1, 4 * rows, mode)
            for mode, rows in (("rows", single_rows), ("chunks", chunk_rows))
        }
        print(f"{'writers':>8} {'single rows/s':>15} {'chunk rows/s':>15}")
        print(f"{'embedded':>8} {embedded['rows']:>15,.0f} {embedded['chunks']:>15,.0f}")
        chunk_lake = ""
        figures = {}
        for count in (1, 2, 4):
            single = writers(
                fresh("lake", cluster, folder, f"rows{count}"), count, single_rows, "rows"
            )
            target = fresh("lake", cluster, folder, f"chunks{count}")
            chunks = writers(target, count, chunk_rows, "chunks")
            figures[count] = (single, chunks)
            chunk_lake = target
            print(f"{count:>8} {single:>15,.0f} {chunks:>15,.0f}", flush=True)
        ratio = figures[4][1] / embedded["chunks"]
        print(
            f"4-process lake chunk ingest / embedded single-file chunk ingest: {ratio:.0%} "
            f"(target >= 80%: {'met' if ratio >= 0.8 else 'missed'})"
        )
        for mode in ("chunks", "serial", "pipelined"):
            four(cluster, folder, f"four_{mode}", chunk_rows, mode)
        with duckflock.connect(
            chunk_lake, lake=duckflock.LakeOptions(maintenance_interval=None)
        ) as db:
            report = db.maintain()
            print(
                f"4-process chunk lake: {report['files_before']} data files before maintenance, "
                f"{report['files_after']} after ({report['seconds']:.2f} s)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
