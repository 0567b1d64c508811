"""The lake verbs of a Database: ``maintain`` and ``lake_state`` (:mod:`duckflock.lake`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckflock.database.base import Base


class Lake(Base):
    """A DuckLake's maintenance and snapshot state (a plain database has neither)."""

    def maintain(self, steps: Sequence[str] | None = None) -> dict[str, Any]:
        """Maintain a lake now: flush inlined rows to Parquet, merge adjacent files,
        expire old snapshots, delete unreferenced files (or only ``steps``, a subset
        of ``"flush"``, ``"merge"``, ``"expire"``, ``"cleanup"``). Returns the data
        files before and after, the seconds taken and any step's error."""
        if self._lake is None:
            raise ValueError(f"maintain() is for a 'ducklake:' database, not {self._shown!r}")
        with self._life.running():
            return self._lake.maintain(None if steps is None else tuple(steps))

    def lake_state(self) -> dict[str, Any] | None:
        """A lake's latest snapshot id and maintenance state (None: not a lake)."""
        return None if self._lake is None else self._lake.state()
