"""Which analysis SQL can refresh incrementally (the planner moved to
:mod:`duckflock.live.plan.planner`; this front is split out in the next commit)."""

from duckflock.live.plan.planner import Shape, inspect

__all__ = ["Shape", "inspect"]
