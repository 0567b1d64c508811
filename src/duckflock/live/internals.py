"""The documented internal interface to a Database's analyses: for tests and debugging.

Not part of the public API (``duckflock.__all__``) and not for applications: it hands
out the live records the scheduler's threads work on, so what a caller changes there
(a plan, a cursor, a limit) is fault injection, at the caller's risk. It exists so that
tests need not reach private attributes (``db._scheduler``, ``scheduler._analyses``),
and so the layout behind it can change without rewriting them.

- :func:`scheduler` — the Database's :class:`~duckflock.live.scheduler.Scheduler`;
- :func:`analysis` — one analysis's :class:`~duckflock.live.record.Analysis` (its spec,
  schedule, changes and state);
- :func:`use_clock` — the :class:`~duckflock.live.clock.Clock` a Database's analyses
  read (window instants, due times), set before its first analysis.
"""

from __future__ import annotations

from duckflock.live import clock as clocks
from duckflock.live import scheduler as schedulers
from duckflock.live.record import Analysis
from duckflock.live.scheduler import Scheduler


def scheduler(db: object) -> Scheduler:
    """The scheduler of ``db``; LookupError before its first analysis."""
    found = schedulers.of(db)
    if found is None:
        raise LookupError("this database has no analyses yet: it has no scheduler")
    return found


def analysis(db: object, name: str) -> Analysis:
    """The record of the analysis ``name`` of ``db`` (UnknownAnalysisError)."""
    return scheduler(db).analysis(name)


def use_clock(db: object, clock: clocks.Clock) -> None:
    """Make ``db``'s analyses read ``clock``; only before its first analysis (the
    scheduler takes its clock when it is created)."""
    if schedulers.of(db) is not None:
        raise RuntimeError("use_clock() comes before the database's first analysis")
    clocks.assign(db, clock)
