"""Every benchmark script still imports: the library's layout moves under them.

`make bench` runs each script in its own process and a step that fails prints "not
measured"; issue 20's move left `benchmarks/changes.py` importing a name that had moved,
and nothing noticed until the next idle-machine run. Importing each script (its `main`
stays behind `if __name__ == "__main__"`) catches that in the test suite. The optional
peers (Pathway, chDB, ADBC) are the `[bench]` extra and may be absent here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
OPTIONAL = ("pathway", "chdb", "adbc_driver_postgresql", "adbc_driver_manager")


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_the_benchmark_script_imports(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {script}"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 and any(f"No module named '{name}" in done.stderr for name in OPTIONAL):
        pytest.skip(f"{script} needs an optional peer: {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
