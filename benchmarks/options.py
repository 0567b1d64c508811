"""The benchmark scripts' command lines: one argparse parser each, built here.

Every script under benchmarks/ with a ``__main__`` parses its arguments with
:func:`parser` so that ``--help`` prints the script's docstring and exits before anything
runs, an unknown flag is an error, and numbers are checked where they enter
(:func:`positive_int`, :func:`positive_ints`).
"""

from __future__ import annotations

import argparse


def parser(doc: str | None, prog: str) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring, laid out as written."""
    return argparse.ArgumentParser(
        prog=f"benchmarks/{prog}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str) -> int:
    """A whole number above zero (``1000000`` or ``1_000_000``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above zero")
    return value


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of whole numbers above zero (``20000,50000``)."""
    return [positive_int(part.strip()) for part in text.split(",")]


def names(text: str) -> list[str]:
    """A comma-separated list of names, each stripped (``groupby,mv``)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def workload(
    doc: str | None, prog: str, workloads: dict[str, tuple[str, ...]], argv: list[str]
) -> tuple[str, list[int]]:
    """A peer side's command line, ``WORKLOAD N...``: the workload's name and its numbers.

    ``workloads`` maps each name to the names of its numbers (``{"mv": ("ROUNDS",)}``).
    """
    top = parser(doc, prog)
    chosen = top.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    for name, numbers in workloads.items():
        one = chosen.add_parser(name, help=f"{name} {' '.join(numbers)}")
        for number in numbers:
            one.add_argument(number.lower(), metavar=number, type=positive_int)
    args = top.parse_args(argv)
    return args.workload, [getattr(args, number.lower()) for number in workloads[args.workload]]
