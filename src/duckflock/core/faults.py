"""The fault hooks: the seams where tests inject a fault instead of patching modules.

A hook is called with the name of the point reached (``"ran"``, ``"commit"`` …, listed
where each hook lives: ``Database.fault_hook``, ``Writer.fault_hook``) on the thread
that reached it; it raises to simulate a fault there (a Ctrl-C, a full disk, an
invalidated database), or blocks to hold that thread. In production it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

FaultHook = Callable[[str], None]


def no_fault(point: str) -> None:
    """The default hook: nothing happens at ``point``."""
