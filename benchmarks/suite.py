"""Issue 21's table in one command: every ratio, the target beside it, met or missed.

Run: .venv/bin/python benchmarks/suite.py            (the quick set: `make bench`)
     .venv/bin/python benchmarks/suite.py --large    (20M rows and the full-size runs)
Options: --only ingest,shapes,...  run some steps; --sizes N,N,...  table sizes for the
shapes step (a smoke run: --sizes 20000,50000).

Each step is one of the existing benchmark scripts, run in its own process; its output is
shown as it comes (prefixed with the step's name) and the figures are read from the lines
it prints. A step that is absent, fails or prints no figure leaves its rows "not
measured" and the others still run. The table is printed last, in Markdown, with the
load average before and after: the figures are ratios measured side by side in the same
process run, but a loaded machine still moves them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import options

HERE = Path(__file__).resolve().parent

# step: script, arguments for the quick set, arguments for --large
STEPS: dict[str, tuple[str, list[str], list[str]]] = {
    "ingest": ("ingest.py", [], []),  # its quick sizes are too few rows for a p99
    "shapes": ("shapes.py", [], ["--large"]),
    "pgwire": ("pgwire.py", ["--quick"], []),
    "lake": ("lake.py", ["--quick"], []),
    "server": ("server.py", ["--quick"], []),
    "changes": ("changes.py", ["--quick"], []),
    "peers": ("peers.py", [], ["--large"]),
    "lake_analyses": ("lake_analyses.py", [], ["--large"]),
}

Row = tuple[str, str, str, bool | None]  # figure, measured, target, met (None: not measured)


def run_step(name: str, args: list[str], timeout: float) -> str | None:
    """Run one step's script, echoing its lines; its stdout, or None when it did not run."""
    script = HERE / STEPS[name][0]
    if not script.exists():
        print(f"[{name}] {script.name} is absent: skipped", flush=True)
        return None
    if "--quick" in args and "--quick" not in script.read_text():
        args = [a for a in args if a != "--quick"]  # a script without a quick mode
    command = [sys.executable, str(script), *args]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    # stderr (servers' banners, peers' logs) is shown only when the step fails
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            command, cwd=HERE, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process,
    ):
        assert process.stdout is not None
        deadline = threading.Timer(timeout, process.kill)  # a silent, stuck step too
        deadline.start()
        try:
            for line in process.stdout:
                lines.append(line)
                if not line.startswith("figures: "):
                    print(f"[{name}] {line}", end="", flush=True)
            code = process.wait()
        finally:
            deadline.cancel()
        if time.monotonic() - started >= timeout:
            print(f"[{name}] killed after {timeout:.0f} s", flush=True)
        if code != 0:
            errors.seek(0)
            for line in errors.read().splitlines()[-40:]:
                print(f"[{name}] {line}", flush=True)
    print(f"[{name}] exit {code} after {time.monotonic() - started:.0f} s", flush=True)
    return "".join(lines)


def number(pattern: str, text: str | None) -> float | None:
    """The first group of ``pattern`` in ``text`` as a number (thousands commas allowed)."""
    found = re.search(pattern, text or "")
    return float(found.group(1).replace(",", "")) if found else None


def figures_line(text: str | None) -> Any:
    """The JSON after the last ``figures:`` line of a step's output."""
    found = re.findall(r"^figures: (.*)$", text or "", re.MULTILINE)
    return json.loads(found[-1]) if found else None


def missing(figure: str, target: str) -> Row:
    return (figure, "not measured", target, None)


def ingest_rows(text: str | None) -> list[Row]:
    ratio, p99 = number(r"b / a = ([\d.]+)x", text), number(r"p99 ack ([\d.]+) ms", text)
    figure = "closed loop, 50 threads x one acknowledged row, vs the guide's pattern"
    target = "≥ 15x, p99 ack ≤ 5 ms"
    if ratio is None or p99 is None:
        return [missing(figure, target)]
    return [(figure, f"{ratio:.1f}x, p99 {p99:.1f} ms", target, ratio >= 15 and p99 <= 5)]


def shape_rows(text: str | None) -> list[Row]:
    figures = figures_line(text)
    if figures is None:
        return [missing("every shape, refresh after 10k rows vs full", "≥ 100x, ≤ 3 ms")]
    sizes: list[int] = figures["sizes"]
    shapes: dict[str, dict[str, list[float]]] = figures["shapes"]
    small, large = str(sizes[0]), str(sizes[-1])
    rows: list[Row] = []
    plain_ms, plain_full = shapes["plain"][large]
    rows.append(
        (
            f"plain group-by, refresh after 10k rows at {int(large):,} rows vs full",
            f"{plain_full / plain_ms:.0f}x ({plain_ms:.2f} vs {plain_full:.1f} ms)",
            "≥ 150x (≤ 1 ms) at 20M",
            plain_full / plain_ms >= 150 and plain_ms <= 1,
        )
    )
    for size, bound in (("5000000", 50), ("20000000", 100)):
        if size in shapes["date_trunc second"]:
            ms, full = shapes["date_trunc second"][size]
            rows.append(
                (
                    f"date_trunc('second') buckets at {int(size):,} rows "
                    f"({int(size) // 1000:,} groups), refresh vs full",
                    f"{full / ms:.0f}x ({ms:.1f} vs {full:.1f} ms)",
                    f"≥ {bound}x",
                    full / ms >= bound,
                )
            )
    for name, cells in shapes.items():
        ms, full = cells[large]
        flat = ms / cells[small][0]
        rows.append(
            (
                f"shape {name} at {int(large):,} rows; flat {int(small):,} → {int(large):,}",
                f"{full / ms:.0f}x, {ms:.2f} ms, flat {flat:.2f}x",
                "≥ 100x, ≤ 3 ms, flat ≤ 1.5x (at 20M)",
                full / ms >= 100 and ms <= 3 and flat <= 1.5,
            )
        )
    return rows


def pgwire_rows(text: str | None) -> list[Row]:
    rows: list[Row] = []
    target = "≥ 50% of HTTP Arrow"
    for label, rows_s, ratio in re.findall(
        r"^\(b\) [\d,]+-row result, (.+?)\s+([\d,]+) rows/s.*ratio to http arrow\s+([\d.]+)",
        text or "",
        re.MULTILINE,
    ):
        if "http arrow" not in label:
            measured = f"{float(ratio):.0%} ({rows_s} rows/s)"
            figure = f"big result over the Postgres port: {label}"
            rows.append((figure, measured, target, float(ratio) >= 0.5))
    return rows or [missing("big result over the Postgres port vs HTTP Arrow", target)]


def lake_rows(text: str | None) -> list[Row]:
    figure = "4-process chunk ingest into a lake vs embedded"
    ratio = number(r"chunk ingest: (\d+)%", text)
    if ratio is None:
        return [missing(figure, "≥ 80%")]
    return [(figure, f"{ratio:.0f}%", "≥ 80%", ratio >= 80)]


def server_rows(text: str | None) -> list[Row]:
    figure = "HTTP single-row ingest: server CPU per acknowledged request (4 lean clients)"
    cpu = number(r"server CPU per acknowledged request ([\d.]+) ms", text)
    rate = number(r"4 stdlib http.client processes:\s+([\d,]+) req/s", text)
    if cpu is None:
        return [missing(figure, "≤ 0.2 ms")]
    return [(figure, f"{cpu:.2f} ms ({rate or 0:,.0f} req/s)", "≤ 0.2 ms", cpu <= 0.2)]


def peer_rows(text: str | None) -> list[Row]:
    table = figures_line(text)
    if table is None:
        return [missing("peers (Pathway, chDB)", "")]
    rows: list[Row] = []
    for row in table:
        target = "≥ 3x" if row["peer"] == "Pathway" else "(no target)"
        figure = f"vs {row['peer']}: {row['name']}"
        if "ratio" not in row:
            rows.append((figure, row["status"], target, None))
            continue
        key = "round_ms" if "round_ms" in row["duckflock"] else "rows_per_s"
        measured = (
            f"{row['ratio']:.2f}x (duckflock {row['duckflock'][key]:,.1f}, "
            f"{row['peer']} {row['theirs'][key]:,.1f}; {row['status']})"
        )
        met = row["ratio"] >= 3 if row["peer"] == "Pathway" else None
        rows.append((figure, measured, target, met))
    return rows


def lake_analysis_rows(text: str | None) -> list[Row]:
    figures = figures_line(text)
    target = "≥ 50x at 20M"
    if figures is None:
        figure = "analyses on a DuckLake table, refresh after 10k rows vs full"
        return [missing(figure, target)]
    figure = (
        f"analyses on a DuckLake table, refresh after 10k rows appended by another process "
        f"at {figures['rows']:,} lake rows vs full"
    )
    measured = (
        f"{figures['ratio']:.0f}x ({figures['refresh_ms']:.1f} vs {figures['full_ms']:.1f} ms)"
    )
    return [(figure, measured, target, figures["ratio"] >= 50)]


READERS: dict[str, Callable[[str | None], list[Row]]] = {
    "ingest": ingest_rows,
    "shapes": shape_rows,
    "pgwire": pgwire_rows,
    "lake": lake_rows,
    "server": server_rows,
    "peers": peer_rows,
}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = options.parser(__doc__, "suite.py")
    parser.add_argument(
        "--large", action="store_true", help="20M-row tables and the full-size runs (long)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(STEPS),
        metavar="STEP,...",
        help=f"run only these steps (default: all of {', '.join(STEPS)})",
    )
    parser.add_argument(
        "--sizes",
        type=options.positive_ints,
        metavar="N,N,...",
        help="table sizes for the shapes step (smoke: 20000,50000)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; the steps are {list(STEPS)}")
    return args


def main(argv: list[str]) -> None:
    chosen = parse(argv)
    large, only = chosen.large, chosen.only
    before = load()
    outputs: dict[str, str | None] = {}
    for name in only:
        args = STEPS[name][2] if large else STEPS[name][1]
        if name == "shapes" and chosen.sizes:
            args = [*args, "--sizes", ",".join(map(str, chosen.sizes))]
        outputs[name] = run_step(name, args, timeout=7200 if large else 1200)
    rows: list[Row] = []
    for name in ("ingest", "shapes", "pgwire"):
        if name in only:
            rows += READERS[name](outputs[name])
    if "lake_analyses" in only:
        rows += lake_analysis_rows(outputs["lake_analyses"])
    if "lake" in only:
        rows += lake_rows(outputs["lake"])
    for name in ("peers", "server"):
        if name in only:
            rows += READERS[name](outputs[name])
    print()
    print(
        f"issue 21's table, {'--large' if large else 'quick set'}; load average before "
        f"{before}, after {load()} (1, 5, 15 min)"
    )
    print()
    print("| figure | measured | target | |")
    print("| --- | --- | --- | --- |")
    for figure, measured, target, met in rows:
        verdict = "met" if met else "**missed**" if met is False else ""
        print(f"| {figure} | {measured} | {target} | {verdict} |")
    if outputs.get("changes"):
        print("\nbenchmarks/changes.py printed (not part of the table):")
        print(outputs["changes"])


if __name__ == "__main__":
    main(sys.argv[1:])
