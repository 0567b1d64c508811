"""The README's promises about set-up: its quick start, followed literally, and what the
two front-door commands need and cost.

Its examples also run in test_docs.py like every other page's; here the quick start runs
on its own, in order, in a fresh directory: the demo (``make demo`` is the install plus
``duckflock demo``), the three next steps it prints — a query, ``duckflock serve`` (a real
uvicorn on 127.0.0.1, on a free port, stopped at the end) and an analysis on that server.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess
from test_docs import DEFAULT_URL

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def quickstart() -> list[str]:
    """The quick start's shell commands, in order (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quickstart")
    section = text[start : text.index("\n## ", start + 1)]
    commands = []
    for lang, code in re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", section, re.DOTALL | re.MULTILINE):
        assert lang == "sh", f"the quick start has a {lang!r} block"
        for line in code.splitlines():
            command = line.split("  #")[0].strip()
            if command:
                commands.append(command)
    return commands


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    commands = quickstart()
    assert commands[0] == "make demo"
    assert commands[-1] == "make test"  # CI runs it (the whole suite, this test too)
    server: ServerProcess | None = None
    outputs: dict[str, str] = {}
    demo = run("duckflock demo", tmp_path)  # what make demo runs once it has installed it
    assert demo.returncode == 0, demo.stderr
    try:
        for command in commands[1:-1]:
            if command.startswith("duckflock serve "):
                database = shlex.split(command)[2]
                server = ServerProcess(tmp_path / database, log_level="info")
                outputs[command] = server.output()
                continue
            if server is not None:
                command = command.replace(DEFAULT_URL, server.url)
            done = run(command, tmp_path)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            outputs[command] = done.stdout + done.stderr
    finally:
        if server is not None:
            assert server.stop() == 0, "the quick start's server did not stop cleanly"
    assert server is not None, "the quick start serves the demo's file"
    banner = next(out for command, out in outputs.items() if "serve" in command)
    assert f"dashboard  {server.url}/" in banner
    shown = next(out for command, out in outputs.items() if "analysis show" in command)
    assert "per_thread v" in shown
    assert "· 50 rows" in shown  # a row per writer of the demo
    assert "more rows" in shown or shown.count("write_thread_") == 50  # what fits is drawn


def test_the_demo_prints_the_quick_starts_next_steps(tmp_path: Path) -> None:
    demo = run("duckflock demo --writers 3 --readers 1", tmp_path)
    assert demo.returncode == 0, demo.stderr
    printed = demo.stdout[demo.stdout.index("Next, try:") :]
    steps = [line.strip().split("  #")[0].strip() for line in printed.splitlines()[1:4]]
    readme = quickstart()
    for step in steps:
        assert step in readme, f"the demo suggests {step!r}, which the README does not show"


def test_readme_shows_the_two_quickstart_commands_and_what_they_need() -> None:
    text = (ROOT / "README.md").read_text()
    assert re.search(r"^make demo\b", text, re.MULTILINE)
    assert re.search(r"^make test\b", text, re.MULTILINE)
    assert "Python 3.11" in text
    assert "chromium" in text  # the one thing make test installs beyond Python packages
    # the demo's set-up cost is measured and stated
    assert re.search(r"\d+ MB", text)
    assert re.search(r"\d+ s\b", text)


def test_readme_lists_the_extras() -> None:
    text = (ROOT / "README.md").read_text()
    for extra in ("duckflock[client]", "duckflock[server]", "duckflock[cli]", "duckflock[all]"):
        assert extra in text
