"""An analysis on a DuckLake table: the refresh from the lake's change feed vs a full run.

Run: .venv/bin/python benchmarks/lake_analyses.py [--large] [--rows N] [--rounds N]

Starts a throw-away PostgreSQL (Debian's, as the tests do: tests/pgcluster.py) for the
catalog, with Parquet files in a temporary folder, and fills a lake table with N rows
(1M; ``--large`` 20M). This process defines a group-by over it (50 groups). Each round,
ANOTHER process (this script with ``--child``: plain DuckDB with the ducklake extension)
appends 10,000 rows in one commit; then this process times ``db.refresh`` (wall: the
feed read in one transaction and folded into the state) and a full run of the same SQL,
and checks the two agree, and counts the statements PostgreSQL logged during the refresh
(``log_statement = all`` on the lake's database). (Round 0 reads through DuckLake's
functions, which teaches the refresh the table's column types; later rounds read the
new Parquet file straight after one catalog query: duckflock.lake.listing. Each line
prints the reason.)
``--direct``: odd rounds read the catalog through psycopg (a dev dependency, not the
library's: the figure for a direct PostgreSQL client behind ``lake.session.Session``),
even rounds as the library does; both medians are printed, measured interleaved.
Then one round where the other process deletes 10,000 rows
(taken out of the state by retraction; or rebuilt, when the files holding the deleted
rows are most of the table: DuckLake reads them whole). Medians over the rounds.

The last line, ``figures: {json}``, carries the medians for benchmarks/suite.py:
``{"rows": N, "refresh_ms": …, "refresh_best_ms": …, "full_ms": …, "ratio": …, "statements": …,
"delete_refresh_ms": …, "delete_full_ms": …, "refresh_cpu_ms": …}`` (statements: the median
per refresh; refresh_cpu_ms: this process's CPU time per refresh, median; with
``--direct``, ``direct_refresh_ms`` and ``direct_cpu_ms`` too, and the others are the
library's rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import duckflock  # noqa: E402
import options  # noqa: E402

NEW_ROWS = 10_000
GROUPS = 50
SQL = "SELECT k, count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi FROM t GROUP BY k"
TABLE = (
    "CREATE TABLE t AS SELECT (range % {groups})::INTEGER AS k, "
    "(range * 7919) % 100000 AS v, 's' || (range % 97) AS s FROM range({rows})"
)
APPEND = (
    "INSERT INTO t SELECT (range % {groups})::INTEGER, (range * 7919) % 100000, "
    "'s' || (range % 97) FROM range({start}, {end})"
)


def child(target: str, data: str) -> None:
    """The other process: run each SQL line of stdin, answer with the lake's snapshot."""
    from duckflock.lake.connection import LakeOptions, open_lake, snapshot_id

    options = LakeOptions(maintenance_interval=None)
    con = open_lake(target, data_path=data, options=options, read_only=False, config={})
    for line in sys.stdin:
        con.execute(line)
        print(snapshot_id(con), flush=True)
    con.close()


class Other:
    def __init__(self, target: str, data: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", target, data],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, sql: str) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(sql.replace("\n", " ") + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the writing process died")
        return int(line)

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


def timed(fn: object) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000, out


class Direct:
    """The lake's catalog reads through psycopg while ``on`` (Session.query replaced:
    the same SQL, one autocommit statement, prepared where the library prepares it)."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        from duckflock.lake import session

        self.on = False
        connection = psycopg.connect(dsn, autocommit=True)
        library = session.Session.query

        def query(self_: object, cursor: object, sql: str, *, prepared: bool = False) -> object:
            if not self.on:
                return library(self_, cursor, sql, prepared=prepared)  # type: ignore[arg-type]
            return [tuple(row) for row in connection.execute(sql, prepare=prepared).fetchall()]

        session.Session.query = query  # type: ignore[assignment,method-assign]


def measure(rows: int, rounds: int, direct: bool = False) -> dict[str, float]:
    from pgcluster import Cluster

    with Cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        dsn = cluster.create_database("lake_analyses")
        target = "ducklake:postgres:" + dsn
        client = Direct(dsn) if direct else None
        logging = "ALTER DATABASE lake_analyses SET log_statement = 'all'"
        psql = [str(cluster.bin / "psql"), "-q", cluster.dsn, "-c", logging]
        subprocess.run(psql, check=True, capture_output=True, timeout=60)
        data = str(Path(tmp) / "data")
        options = duckflock.LakeOptions(maintenance_interval=None)
        with duckflock.connect(target, data_path=data, lake=options) as db:
            started = time.perf_counter()
            db.execute(TABLE.format(groups=GROUPS, rows=rows))
            print(f"lake table t: {rows:,} rows in {time.perf_counter() - started:.1f} s")
            db.analysis("per_k", SQL)
            first = db.refresh("per_k")
            print(f"first refresh ({first.mode}): {first.duration * 1000:.0f} ms")
            other = Other(target, data)
            try:
                refreshes, fulls, counts, cpus = [], [], [], []
                directs: list[tuple[float, float]] = []  # (ms, cpu ms)
                for round_ in range(rounds * (2 if direct else 1)):
                    start = rows + round_ * NEW_ROWS
                    other.run(APPEND.format(groups=GROUPS, start=start, end=start + NEW_ROWS))
                    at = cluster.log.stat().st_size
                    if client is not None:
                        client.on = round_ % 2 == 1
                    cpu = time.process_time()
                    ms, result = timed(lambda: db.refresh("per_k"))
                    cpu = (time.process_time() - cpu) * 1000
                    if client is not None and client.on:
                        client.on = False
                        directs.append((ms, cpu))
                        full_ms, full = timed(lambda: db.sql(SQL).to_arrow_table())
                        check(result, full, "append")
                        print(f"round {round_}: refresh {ms:.2f} ms, psycopg catalog reads")
                        continue
                    counts.append(statements(cluster.log, at))
                    cpus.append(cpu)
                    full_ms, full = timed(lambda: db.sql(SQL).to_arrow_table())
                    check(result, full, "append")
                    refreshes.append(ms)
                    fulls.append(full_ms)
                    print(
                        f"round {round_}: refresh {ms:.2f} ms ({result.mode}), full "
                        f"{full_ms:.1f} ms: {full_ms / ms:.0f}x; {counts[-1]} PostgreSQL "
                        f"statement(s); {result.reason}"
                    )
                # one delete of 10,000 rows by the other process: retraction
                # values in the middle: no group loses its min or max, subtraction alone
                low, high = 40_000, 40_000 + NEW_ROWS * 100_000 // rows - 1
                other.run(f"DELETE FROM t WHERE v BETWEEN {low} AND {high}")
                delete_ms, result = timed(lambda: db.refresh("per_k"))
                delete_full, full = timed(lambda: db.sql(SQL).to_arrow_table())
                # a rebuild when the files holding the deleted rows are most of the table
                check(result, full, "delete", rebuild="rebuilding reads less")
                print(f"delete: refresh {delete_ms:.2f} ms ({result.reason})")
                print(f"        full {delete_full:.1f} ms")
            finally:
                other.close()
    refresh, full_run = statistics.median(refreshes), statistics.median(fulls)
    return (
        {
            "rows": rows,
            "refresh_ms": round(refresh, 3),
            "refresh_best_ms": round(min(refreshes[1:] or refreshes), 3),  # (under load)
            "full_ms": round(full_run, 3),
            "ratio": round(full_run / refresh, 1),
            "statements": statistics.median(counts[1:] or counts),  # round 0: DuckLake's read
            "delete_refresh_ms": round(delete_ms, 3),
            "delete_full_ms": round(delete_full, 3),
            "refresh_cpu_ms": round(statistics.median(cpus[1:] or cpus), 3),
        }
        | (
            {
                "direct_refresh_ms": round(statistics.median(ms for ms, _ in directs), 3),
                "direct_cpu_ms": round(statistics.median(cpu for _, cpu in directs), 3),
            }
            if directs
            else {}
        )
    )


def statements(log: Path, start: int) -> int:
    """The statements PostgreSQL logged from byte ``start`` of its ``log`` on (each
    entry begins with its time stamp; a statement's own lines follow it)."""
    with log.open(errors="replace") as file:
        file.seek(start)
        text = file.read()
    return sum(" statement: " in entry for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", text))


def check(result: duckflock.Result, full: object, what: str, rebuild: str = "") -> None:
    """The refresh must equal the full run (as multisets of rows), and be incremental
    (or a rebuild whose reason says ``rebuild``)."""
    import pyarrow as pa

    assert isinstance(full, pa.Table)
    chosen = bool(rebuild) and result.mode == "full" and rebuild in result.reason
    if result.error is not None or (result.mode != "incremental" and not chosen):
        raise SystemExit(f"{what}: the refresh was {result.mode}: {result.reason} {result.error}")
    mine = sorted(map(repr, result.table.to_pylist()))
    theirs = sorted(map(repr, full.to_pylist()))
    if mine != theirs:
        raise SystemExit(f"{what}: the refresh and the full run differ")


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "lake_analyses.py")
    parser.add_argument("--large", action="store_true", help="20M rows")
    parser.add_argument("--rows", type=options.positive_int, help="the lake table's rows")
    parser.add_argument("--rounds", type=options.positive_int, default=5, help="append rounds")
    parser.add_argument(
        "--direct", action="store_true", help="odd rounds: catalog reads through psycopg"
    )
    parser.add_argument("--child", nargs=2, metavar=("TARGET", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    rows = args.rows or (20_000_000 if args.large else 1_000_000)
    rounds = args.rounds
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    figures = measure(rows, rounds, args.direct)
    print(
        f"lake analysis at {rows:,} rows: refresh after {NEW_ROWS:,} rows appended by "
        f"another process {figures['refresh_ms']:.2f} ms vs full {figures['full_ms']:.1f} ms "
        f"= {figures['ratio']:.0f}x (target >= 50x at 20M), {figures['statements']:g} PostgreSQL "
        f"statement(s) per refresh; load before {load}"
    )
    if "direct_refresh_ms" in figures:
        direct = figures["direct_refresh_ms"]
        print(
            f"with psycopg for the catalog reads (interleaved rounds): {direct:.2f} ms = "
            f"{figures['full_ms'] / direct:.0f}x; CPU per refresh {figures['direct_cpu_ms']:.2f} "
            f"vs {figures['refresh_cpu_ms']:.2f} ms"
        )
    print("figures: " + json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
