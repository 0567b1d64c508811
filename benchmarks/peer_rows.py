"""The rows every side of the peer benchmarks (benchmarks/peers.py) works on, and how a
side reports: one ``result: {json}`` line on stdout, read by the orchestrator."""

from __future__ import annotations

import json
from typing import Any

GROUPS = 50
BANDS = 5


def rows(count: int, start: int = 0) -> list[tuple[int, float]]:
    """``count`` rows ``(k, v)``: ``k`` in 0..GROUPS-1, ``v`` a deterministic DOUBLE."""
    return [(i % GROUPS, float(i % 997) / 10) for i in range(start, start + count)]


def totals(groups: dict[int, tuple[int, float]]) -> dict[str, Any]:
    """What two sides must agree on: groups, the rows counted and the sum of ``v``."""
    return {
        "groups": len(groups),
        "count": sum(n for n, _ in groups.values()),
        "sum": round(sum(s for _, s in groups.values()), 3),
    }


def report(**figures: Any) -> None:
    print("result: " + json.dumps(figures), flush=True)
