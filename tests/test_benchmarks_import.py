"""Every benchmark script still imports, and its command line is checked before it runs.

`make bench` runs each script in its own process and a step that fails prints "not
measured"; issue 20's move left `benchmarks/changes.py` importing a name that had moved,
and nothing noticed until the next idle-machine run. Running each script with ``--help``
imports all it imports and must return at once, without running the benchmark (each
parses its arguments with argparse: benchmarks/options.py); the modules without a
``__main__`` (the peers' shared rows, the replay server) are imported. The optional peers
(Pathway, chDB, ADBC) are the `[bench]` extra and may be absent here.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
_MAIN = re.compile(r'^if __name__ == "__main__":$', re.M)
OPTIONAL = ("pathway", "chdb", "adbc_driver_postgresql", "adbc_driver_manager")
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if _MAIN.search(p.read_text()))
MODULES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in SCRIPTS)


def _skip_missing_peer(done: subprocess.CompletedProcess[str], script: str) -> None:
    if done.returncode != 0 and any(f"No module named '{name}" in done.stderr for name in OPTIONAL):
        pytest.skip(f"{script} needs an optional peer: {done.stderr.splitlines()[-1]}")


@pytest.mark.parametrize("script", MODULES)
def test_the_benchmark_module_imports(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {script}"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _skip_missing_peer(done, script)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_the_script_and_runs_nothing(script: str) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, f"{script}.py", "--help"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    _skip_missing_peer(done, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: benchmarks/{script}.py"), done.stdout
    # the script's docstring: what it measures, and how to run it
    doc = ast.get_docstring(ast.parse((BENCHMARKS / f"{script}.py").read_text()))
    assert doc is not None and doc.splitlines()[0] in done.stdout, done.stdout
    assert took < 60, f"--help took {took:.1f} s: did the benchmark run?"


# one bad command line per script, each refused before anything runs (exit 2); a
# script that ignored it would run its benchmark and overrun the timeout
REFUSED = {script: [["--no-such-flag"]] for script in SCRIPTS}
REFUSED["shapes"] += [["--sizes", "1000,0"], ["--sizes", "1000,x"], ["--only", "no such shape"]]
REFUSED["pgwire"] += [["--rounds", "0"], ["--rounds"]]
REFUSED["lake_analyses"] += [["--rows", "-5"]]
REFUSED["plain_refresh"] += [["many"], ["1000", "0"]]
REFUSED["cli_output"] += [["0"]]
REFUSED["peer_duckflock"] += [["mv", "0"], ["acks", "8"], ["nothing", "5"]]
REFUSED["peers"] += [["--only"]]
REFUSED["suite"] += [["--only", "no_such_step"]]

_DRIVER = """
import json, runpy, sys
codes = {}
for script, argvs in json.loads(sys.argv[1]).items():
    for argv in argvs:
        sys.argv = [script + ".py", *argv]
        try:
            runpy.run_path(script + ".py", run_name="__main__")
        except ModuleNotFoundError as exc:  # an optional peer
            codes[script] = "absent: " + str(exc.name)
            break
        except SystemExit as exc:
            codes.setdefault(script, []).append(exc.code)
        else:
            codes.setdefault(script, []).append("ran")
print(json.dumps(codes))
"""


def test_unknown_flags_and_bad_numbers_are_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(REFUSED)],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout.splitlines()[-1])
    for script, argvs in REFUSED.items():
        found = codes[script]
        if isinstance(found, str):
            assert found.split(": ")[1].split(".")[0] in OPTIONAL, found
            continue
        assert found == [2] * len(argvs), (script, argvs, found, done.stderr)
