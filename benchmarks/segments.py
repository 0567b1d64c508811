"""What a segmented DOUBLE sum would cost under retention deletes (issue 21's last shape).

Run: .venv/bin/python benchmarks/segments.py [--rows 1000000,20000000] [--rounds 5]
     .venv/bin/python benchmarks/segments.py --refresh [--rows …]  (the refresh itself;
     PYTHONPATH=<other checkout>/src runs another version's code on the same rows)

The "retention delete 1%" shape with a DOUBLE sum (benchmarks/retention.py, ``double``)
recomputes every group a DELETE touches from the table: floats cannot be subtracted.
The design proposed for it keeps each group's sum per insertion *segment* and, on a
DELETE, re-reads only the segment the DELETE cuts. This measures what such a re-read
costs in DuckDB, for the two ways a segment can be named, against a full run of the
shape's SQL, on the table benchmarks/retention.py builds (50 groups, ``ts`` ascending,
one CHECKPOINT):

- by row id (``rowid >= a AND rowid < b``), and by a range of an ordered column
  (``ts >= a AND ts < b``, pruned by DuckDB's zonemaps), for segments of 1% of the rows,
  one row group (122,880 rows) and 16,384 rows: median wall and process CPU (DuckDB's
  threads included) of ``SELECT k, count(v), sum(v) … GROUP BY k``;
- whether row ids stay put: the newest row's ``rowid`` before and after five 1%
  deletes of the oldest rows and a CHECKPOINT (DuckDB vacuums deleted rows then);
- whether the segments' sums added in order equal, bit for bit, the sums of a
  ``threads = 1`` full run, and of five runs at the default threads (groups differing).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

import options

FULL = "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a FROM t GROUP BY k"
SPAN_US = 86_400_000_000  # one day, as benchmarks/retention.py's retention table
ROW_GROUP = 122_880


def _timed(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: list[object], rounds: int
) -> tuple[float, float]:
    """Median (wall ms, process CPU ms) of ``rounds`` runs of ``sql``."""
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        cursor.execute(sql, params).fetchall()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def _table(cursor: duckdb.DuckDBPyConnection, rows: int) -> None:
    cursor.execute(
        "CREATE TABLE t AS SELECT (range % 50)::INTEGER AS k, random() * 100 AS v, "
        f"TIMESTAMP '2026-01-01' + to_microseconds(range * {SPAN_US} // {rows}) AS ts "
        f"FROM range({rows})"
    )
    cursor.execute("CHECKPOINT")


def _at(rows: int, row: int) -> str:
    """The ``ts`` of row number ``row`` (the table's ts is a function of it)."""
    return f"TIMESTAMP '2026-01-01' + to_microseconds({row * SPAN_US // rows})"


def reads(cursor: duckdb.DuckDBPyConnection, rows: int, rounds: int) -> None:
    """The re-read of one segment (a third of the way in), by row id and by ``ts``."""
    full = _timed(cursor, FULL, [], rounds)
    print(f"  full run: {full[0]:.2f} ms wall, {full[1]:.2f} ms CPU")
    for size in (rows // 100, ROW_GROUP, 16_384):
        start = rows // 3
        by_id = _timed(
            cursor,
            "SELECT k, count(v), sum(v) FROM t WHERE rowid >= ? AND rowid < ? GROUP BY k",
            [start, start + size],
            rounds,
        )
        by_ts = _timed(
            cursor,
            "SELECT k, count(v), sum(v) FROM t "
            f"WHERE ts >= {_at(rows, start)} AND ts < {_at(rows, start + size)} GROUP BY k",
            [],
            rounds,
        )
        print(
            f"  segment of {size:,} rows: by rowid {by_id[0]:.2f} ms wall / {by_id[1]:.2f} CPU "
            f"({full[1] / by_id[1]:.0f}x less CPU than full); by ts {by_ts[0]:.2f} / "
            f"{by_ts[1]:.2f} ({full[1] / by_ts[1]:.0f}x)"
        )


def orders(cursor: duckdb.DuckDBPyConnection, rows: int) -> None:
    """The sums of 1% segments added in ``ts`` order against full runs, bit for bit."""
    segments = cursor.execute(
        f"SELECT k, (rowid * 100 // {rows}) AS seg, sum(v) AS s FROM t GROUP BY k, seg "
        "ORDER BY k, seg"
    ).fetchall()
    added: dict[int, float] = {}
    for k, _seg, s in segments:
        added[k] = added.get(k, 0.0) + s
    cursor.execute("SET threads = 1")
    single = dict(cursor.execute("SELECT k, sum(v) FROM t GROUP BY k").fetchall())
    cursor.execute("RESET threads")
    parallel = [dict(cursor.execute("SELECT k, sum(v) FROM t GROUP BY k").fetchall())]
    parallel += [dict(cursor.execute("SELECT k, sum(v) FROM t GROUP BY k").fetchall())]
    parallel += [dict(cursor.execute("SELECT k, sum(v) FROM t GROUP BY k").fetchall())]
    among = sum(any(run[k] == added[k] for run in [single, *parallel]) for k in added)
    print(
        f"  segment sums vs full runs: {sum(single[k] != added[k] for k in added)} of "
        f"{len(added)} groups differ from threads=1; "
        f"{sum(parallel[0][k] != single[k] for k in added)} groups differ between "
        f"threads=1 and a default run; {among} groups' segmented sum equals one of the "
        f"{1 + len(parallel)} full runs"
    )


def rowids(cursor: duckdb.DuckDBPyConnection, rows: int) -> None:
    """The newest row's rowid before and after five 1% deletes and a CHECKPOINT."""
    newest = "SELECT rowid FROM t ORDER BY ts DESC LIMIT 1"
    before = cursor.execute(newest).fetchall()[0][0]
    for i in range(1, 6):
        cursor.execute(f"DELETE FROM t WHERE ts < {_at(rows, i * rows // 100)}")
    cursor.execute("CHECKPOINT")
    after = cursor.execute(newest).fetchall()[0][0]
    print(f"  the newest row's rowid: {before:,} before, {after:,} after (deletes, CHECKPOINT)")


def refreshes(workdir: Path, rows: int, rounds: int) -> None:
    """``db.refresh`` after each 1% retention DELETE (benchmarks/retention.py's double
    shape on the same table) against a full run: median wall and process CPU (ms)."""
    import duckflock

    with duckflock.connect(workdir / f"r{rows}.duckdb") as db:
        _table(db.cursor(), rows)
        db.analysis("retain", FULL)
        db.result("retain", min_version=1, timeout=600)
        walls, cpus, threads, full_walls, full_cpus = [], [], [], [], []
        for i in range(1, rounds + 1):
            db.execute(f"DELETE FROM t WHERE ts < {_at(rows, i * rows // 100)}")
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            result = db.refresh("retain")  # on this thread
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
            threads.append((time.thread_time() - thread) * 1000)
            assert result.mode == "incremental", result.reason
            wall, cpu = time.perf_counter(), time.process_time()
            expected = db.execute(FULL).fetchall()
            full_walls.append((time.perf_counter() - wall) * 1000)
            full_cpus.append((time.process_time() - cpu) * 1000)
            assert sorted(r[:2] for r in result.rows()) == sorted(r[:2] for r in expected)
    refresh = statistics.median(walls), statistics.median(cpus)
    full = statistics.median(full_walls), statistics.median(full_cpus)
    print(
        f"  refresh after a 1% DELETE: {refresh[0]:.2f} ms wall, {refresh[1]:.2f} ms CPU "
        f"({statistics.median(threads):.2f} on the refreshing thread; first "
        f"{cpus[0]:.0f}); "
        f"full run {full[0]:.2f} / {full[1]:.2f}: {full[0] / refresh[0]:.1f}x wall, "
        f"{full[1] / refresh[1]:.1f}x CPU"
    )


def main() -> None:
    parser = options.parser(__doc__, "segments.py")
    parser.add_argument("--rows", type=options.positive_ints, default=[1_000_000, 5_000_000])
    parser.add_argument("--rounds", type=options.positive_int, default=5)
    parser.add_argument("--refresh", action="store_true", help="time db.refresh only")
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as workdir:
        for rows in args.rows:
            print(f"{rows:,} rows:")
            if args.refresh:
                refreshes(Path(workdir), rows, args.rounds)
                continue
            with duckdb.connect(str(Path(workdir) / f"s{rows}.duckdb")) as cursor:
                _table(cursor, rows)
                reads(cursor, rows, args.rounds)
                orders(cursor, rows)
                rowids(cursor, rows)


if __name__ == "__main__":
    main()
