"""Databases dropped unclosed (shared by test_database and test_round7_attacks): the
threads a Database started, that it is collected and they end, and a script that forgets
``close()`` exiting cleanly, run several times on one file."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any


def started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads started since ``before``, but the process-wide reaper (it outlives
    every Database by design)."""
    return [t for t in set(threading.enumerate()) - before if t.name != "duckflock-reaper"]


def assert_collected(dropped: weakref.ref[Any], threads: list[threading.Thread]) -> None:
    """After the caller's ``del``: the Database is collected and its threads end."""
    gc.collect()
    assert dropped() is None
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), thread.name


def run_cleanly(script: str, path: Path, times: int) -> None:
    """Run ``script`` (``sys.argv[1]`` is ``path``) ``times`` times: each exits 0, and
    neither DuckDB's abort nor a traceback reaches its stderr."""
    for _ in range(times):
        run = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert "terminate called" not in run.stderr
        assert "Traceback" not in run.stderr
