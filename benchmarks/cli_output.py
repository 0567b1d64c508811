"""How fast ``duckflock query`` writes a large result, in each format, into a file.

Run: ``python benchmarks/cli_output.py [ROWS]`` (default 2,700,000: the size of the table
whose ``query --limit 0`` took 18 minutes as a drawn table). Each format runs the real
command in a subprocess with stdout into a file; the figure is rows per second over the
command's own footer time (from the query's start to its last byte), and the wall time
with the interpreter's start-up. The table format draws what fits the terminal and
counts the rest.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

import options

SQL = "SELECT * FROM readings"
TABLE = (
    "CREATE TABLE readings AS SELECT range AS id, 's' || (range % 100) AS sensor, "
    "range / 7.0 AS value, TIMESTAMP '2024-01-01' + INTERVAL (range) SECOND AS ts "
    "FROM range({rows})"
)


def main(argv: list[str]) -> None:
    parser = options.parser(__doc__, "cli_output.py")
    parser.add_argument("rows", nargs="?", type=options.positive_int, default=2_700_000)
    rows = parser.parse_args(argv).rows
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute(TABLE.format(rows=rows))
        for fmt in ("table", "csv", "json", "arrow"):
            out = Path(folder) / f"out.{fmt}"
            command = [sys.executable, "-m", "duckflock", "query", str(path), SQL]
            command += ["--limit", "0", "--format", fmt]
            with out.open("wb") as sink:
                run = subprocess.run(
                    command, stdout=sink, stderr=subprocess.PIPE, text=True, check=True
                )
            footer = run.stderr.strip().splitlines()[-1]
            found = re.search(r"([\d,]+) rows in ([\d,.]+) ms", footer)
            assert found, footer
            done = int(found.group(1).replace(",", ""))
            ms = float(found.group(2).replace(",", ""))
            size = out.stat().st_size / 2**20
            print(
                f"{fmt:>5}: {done:,} rows in {ms / 1000:.2f} s = {done / ms * 1000:,.0f} rows/s "
                f"({size:,.1f} MiB written)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
