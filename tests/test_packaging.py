"""The embedded library stands alone; the client, server and CLI are extras named when
missing; the Makefile and CI run what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTTP_AND_CLI = ("httpx", "starlette", "uvicorn", "sse_starlette", "prometheus_client")
HTTP_AND_CLI += ("click", "rich", "uvloop", "httptools")


def python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter: nothing imported by other tests leaks in."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_duckflock_imports_no_http_or_cli_library() -> None:
    run = python(
        f"""
        import sys
        import duckflock

        db = duckflock.connect()
        db.execute("CREATE TABLE t (x INTEGER)")
        db.insert("t", {{"x": 1}})
        db.close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HTTP_AND_CLI!r})
        print(loaded)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_client_is_imported_on_first_use() -> None:
    run = python(
        """
        import sys
        import duckflock

        assert "httpx" not in sys.modules
        client = duckflock.Client("http://127.0.0.1:9")
        assert "httpx" in sys.modules
        print(type(client).__module__)
        """
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "duckflock.client"


def test_a_missing_client_extra_is_named() -> None:
    run = python(
        """
        import sys
        sys.modules["httpx"] = None  # as if httpx were not installed
        import duckflock
        try:
            duckflock.Client
        except ImportError as exc:
            print(exc)
        """
    )
    assert run.returncode == 0, run.stderr
    assert "pip install 'duckflock[client]'" in run.stdout
    assert "httpx is not installed" in run.stdout


def test_a_missing_cli_extra_is_named() -> None:
    run = python(
        """
        import sys
        sys.modules["rich"] = None
        try:
            import duckflock.cli
        except ImportError as exc:
            print(exc)
        """
    )
    assert run.returncode == 0, run.stderr
    assert "pip install 'duckflock[cli]'" in run.stdout


def test_the_command_without_the_cli_extra_says_which_extra() -> None:
    run = python(
        """
        import sys
        sys.modules["click"] = None
        sys.argv = ["duckflock", "--help"]
        from duckflock.__main__ import run
        run()
        """
    )
    assert run.returncode == 1
    assert run.stderr.strip() == (
        "error: the duckflock command needs the 'cli' extra (click is not installed): "
        "pip install 'duckflock[cli]'"
    )


def test_serve_without_the_server_extra_says_which_extra(tmp_path: Path) -> None:
    run = python(
        f"""
        import sys
        sys.modules["starlette"] = None
        sys.argv = ["duckflock", "serve", {str(tmp_path / "x.duckdb")!r}]
        from duckflock.cli import main
        main()
        """
    )
    assert run.returncode == 1
    assert "pip install 'duckflock[server]'" in run.stderr
    assert "Traceback" not in run.stderr


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_are_duckdb_and_pyarrow_and_extras_hold_the_rest() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirement_names(project["dependencies"]) == {"duckdb", "pyarrow", "pytz"}
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["client"]) == {"httpx"}
    assert {"starlette", "uvicorn", "sse-starlette", "prometheus-client"} <= (
        _requirement_names(extras["server"])
    )
    assert {"click", "rich", "httpx"} == _requirement_names(extras["cli"])
    assert extras["all"] == ["duckflock[client,server,cli,pandas,polars,lake]"]
    # the DuckLake extensions' wheels, for exactly the pinned DuckDB, and psycopg for the
    # catalog's reads between refreshes (lake/direct.py)
    duckdb_pin = next(r for r in project["dependencies"] if r.startswith("duckdb"))
    version = duckdb_pin.split("==")[1]
    assert sorted(extras["lake"]) == [
        f"duckdb-extension-ducklake=={version}",
        f"duckdb-extension-postgres-scanner=={version}",
        "psycopg[binary]>=3.2,<4",
    ]
    assert "duckflock[all]" in extras["dev"]


def _make_recipe(target: str) -> str:
    """The commands ``make -n TARGET`` would run, in a copy with no venv."""
    run = subprocess.run(
        ["make", "-n", "-B", target, "VENV=/nonexistent-venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_make_demo_installs_the_cli_and_server_extras_and_make_test_the_dev_extras() -> None:
    demo = _make_recipe("demo")
    assert "-e '.[cli,server]'" in demo  # the README's `duckflock serve` works after it
    assert "dev" not in demo
    test = _make_recipe("test")
    assert "-e '.[dev]'" in test
    assert ".ci/system-deps" in test
    assert "pytest" in test


def test_ci_runs_exactly_the_readmes_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.startswith((" ", "#", "set ", "cd ", "export ", "if ", "fi"))
    ]
    assert commands == ["make demo", "make test"]  # the README's two commands, in order
    assert re.search(r"^make demo\b", readme, re.MULTILINE)


@pytest.mark.skipif(not Path("/usr/bin/id").exists(), reason="needs /usr/bin/id")
def test_system_deps_fail_early_with_one_sentence_when_they_cannot_install(
    tmp_path: Path,
) -> None:
    """No chromium, no curl, no apt-get on PATH: one sentence naming what to install."""
    (tmp_path / "id").symlink_to("/usr/bin/id")
    run = subprocess.run(
        ["/bin/bash", str(ROOT / ".ci" / "system-deps")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
        timeout=30,
        check=False,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "chromium" in lines[0]
    assert "make test" in lines[0]
