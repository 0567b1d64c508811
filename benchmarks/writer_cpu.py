"""CPU time of the write path for one producer thread, for comparing two versions.

Wall-clock figures move by several times on a shared machine; CPU time moves far less.
Prints rows per CPU second for 100,000 single-row ``wait=False`` inserts + ``flush``, the
CPU microseconds per acknowledged single-row insert, and rows per CPU second for 60
acknowledged 10,000-row Arrow chunks. Compare with another checkout by running it with
``PYTHONPATH=<that checkout>/src``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import pyarrow as pa

import duckflock
import options


def main(argv: list[str]) -> None:
    options.parser(__doc__, "writer_cpu.py").parse_args(argv)  # no options: --help
    with tempfile.TemporaryDirectory() as directory:
        db = duckflock.connect(os.path.join(directory, "cpu.duckdb"))
        db.execute("CREATE TABLE t (thread_name VARCHAR, n INTEGER)")
        started = time.process_time()
        for i in range(100_000):
            db.insert("t", {"thread_name": "w", "n": i}, wait=False)
        db.flush()
        streaming = 100_000 / (time.process_time() - started)
        started = time.process_time()
        for i in range(1500):
            db.insert("t", {"thread_name": "w", "n": i})
        acknowledged = (time.process_time() - started) / 1500 * 1e6
        chunk = pa.table(
            {"thread_name": pa.array(["w"] * 10_000), "n": pa.array(range(10_000), pa.int32())}
        )
        started = time.process_time()
        for _ in range(60):
            db.insert("t", chunk)
        arrow = 600_000 / (time.process_time() - started)
        db.close()
    print(
        f"streaming single rows {streaming:,.0f} rows/CPU-s   "
        f"acknowledged single row {acknowledged:,.0f} CPU-us   "
        f"acknowledged Arrow chunks {arrow:,.0f} rows/CPU-s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
