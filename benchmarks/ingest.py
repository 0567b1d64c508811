"""Ingest benchmark: the guide's pattern vs duckflock (also `duckflock bench ingest`).

Run: .venv/bin/python benchmarks/ingest.py [--quick]
Prints every figure, its ratio to the guide's pattern (a) measured in the same run, and
the issue's targets.
"""

from __future__ import annotations

import sys

from duckflock.cli.bench import Figure, Sizes, format_figure, run, summary


def show(figure: Figure, baseline: Figure | None) -> None:
    print(format_figure(figure, baseline), flush=True)


def main(argv: list[str]) -> None:
    sizes = Sizes.quick() if "--quick" in argv else Sizes()
    results = run(sizes, report=show)
    for line in summary(results):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
