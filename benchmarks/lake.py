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
``--modes chunks,serial`` picks which.
"""

from __future__ import annotations

import os
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
from pgcluster import Cluster  # noqa: E402
from test_lake_lock import rollbacks  # noqa: E402

WRITER = str(ROOT / "tests" / "lake_writer.py")
CHUNK = 10_000


def writers(target: str, count: int, rows: int, mode: str) -> float:
    """Rows/s of ``count`` writer processes, each inserting ``rows`` rows."""
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


def profiled(target: str, count: int, rows: int, mode: str) -> tuple[float, str]:
    """Rows/s of ``count`` lake writers, and the run's catalog rollbacks per chunk."""
    rolled_back = rollbacks(target)
    rate = writers(target, count, rows, mode)  # the writers have exited: their figures are in
    after = rollbacks(target)
    commits = count * -(-rows // CHUNK)  # at most: a pipelined writer commits fewer
    return rate, f"{(after - rolled_back) / commits:.2f} catalog rollbacks per chunk"


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


def four(cluster: Cluster, folder: Path, name: str, rows: int, mode: str) -> float:
    """Embedded vs 4 lake processes, ``mode`` chunks: prints the line, returns the ratio."""
    embedded = writers(fresh("file", cluster, folder, f"file_{name}"), 1, 4 * rows, mode)
    lake, profile = profiled(fresh("lake", cluster, folder, name), 4, rows, mode)
    print(
        f"{mode:>9}: embedded {embedded:>11,.0f}, 4-process lake {lake:>11,.0f} rows/s = "
        f"{lake / embedded:.0%}  ({profile})",
        flush=True,
    )
    return lake / embedded


def chunks_only(cluster: Cluster, folder: Path, rows: int, rounds: int, modes: str) -> None:
    """The embedded and 4-process figures only, ``rounds`` times, then the medians."""
    ratios: dict[str, list[float]] = {mode: [] for mode in modes.split(",")}
    for round_ in range(rounds):
        for mode, ratio in ratios.items():
            ratio.append(four(cluster, folder, f"{mode}{round_}", rows, mode))
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
    args = parser.parse_args(argv)
    single_rows = 5_000 if args.quick else 20_000
    chunk_rows = 50_000 if args.quick else 200_000
    with Cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.chunks_only:
            chunks_only(cluster, folder, chunk_rows, max(1, args.rounds), args.modes)
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
