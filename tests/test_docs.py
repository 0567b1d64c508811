"""Every example in every doc page runs as written (README.md and docs/*.md).

Each page's fenced blocks run in order, in a fresh directory, sharing one namespace:

- ``python`` blocks are executed;
- ``sh`` blocks run in bash (``-euo pipefail``) with the venv's ``duckflock`` on PATH;
- a ``sh`` block that is one ``duckflock serve …`` command starts that server for real
  (on a free port) and later blocks talk to it; it must stop cleanly (exit 0);
- a ``toml`` block is the page's ``duckflock.toml``, written before anything runs.

Examples address a server as ``http://127.0.0.1:8765`` (the default) or
``$DUCKFLOCK_URL``, and its Postgres port as ``5433``: all are pointed at the page's
server, which is the one its own ``duckflock serve`` started or else one whose database
has ``events (p INTEGER, i INTEGER, note VARCHAR)``, as docs/http-api.md says. ``make
demo`` runs as the ``duckflock demo`` it ends with (CI runs the install itself). Not run,
on purpose: ``make test`` (CI runs the suite through it), a ``nginx`` block (another
program's configuration) and docs/cli.md's ``--help`` output (test_demo checks it is
current).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_PG_PORT = "5433"
NOT_RUN = {"make test"}  # the front-door command CI runs
DEMO = "make demo"  # runs here as the program it installs and runs: `duckflock demo`


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, in order."""
    found = re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", path.read_text(), re.DOTALL | re.MULTILINE)
    return [(lang, code) for lang, code in found]


def _commands(code: str) -> list[str]:
    return [line.split("#")[0].strip() for line in code.splitlines() if line.split("#")[0].strip()]


class Page:
    """One page's run: its directory, its server, its Python namespace."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.servers: list[ServerProcess] = []
        self.namespace: dict[str, object] = {"__name__": "__docs__"}
        self.pg_port: int | None = None  # the page's server's --pg-port, on a free port

    @property
    def url(self) -> str:
        if not self.servers:  # the server the HTTP page describes
            config = self.workdir / "docs-events.toml"
            config.write_text(
                "[[tables]]\n"
                'sql = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"\n'
            )
            self.servers.append(
                ServerProcess(self.workdir / "docs-events.duckdb", "--config", str(config))
            )
        return self.servers[-1].url

    def _addressed(self, code: str) -> str:
        if self.pg_port is not None:
            code = code.replace(DEFAULT_PG_PORT, str(self.pg_port))
        if DEFAULT_URL in code or "DUCKFLOCK_URL" in code:
            return code.replace(DEFAULT_URL, self.url)
        return code

    def python(self, code: str) -> None:
        exec(compile(self._addressed(code), str(self.path), "exec"), self.namespace)

    def sh(self, code: str) -> None:
        commands = _commands(code)
        if set(commands) <= NOT_RUN:
            return
        if DEMO in commands:
            code = "\n".join(
                "duckflock demo" if command == DEMO else command
                for command in commands
                if command not in NOT_RUN
            )
        if len(commands) == 1 and commands[0].startswith("duckflock serve "):
            self.serve(commands[0])
            return
        code = self._addressed(code)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        if self.servers:
            env["DUCKFLOCK_URL"] = self.servers[-1].url
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, f"{self.path.name}:\n{code}\n{run.stdout}\n{run.stderr}"

    def serve(self, command: str) -> None:
        """``duckflock serve DATABASE [options]``, started on a free port."""
        args = shlex.split(command)[2:]
        if "--port" in args:
            at = args.index("--port")
            del args[at : at + 2]
        if "--pg-port" in args:
            self.pg_port = free_port()
            args[args.index("--pg-port") + 1] = str(self.pg_port)
        database, options = args[0], args[1:]
        self.servers.append(ServerProcess(self.workdir / database, *options))

    def close(self) -> None:
        for server in self.servers:
            assert server.stop() == 0, f"{self.path.name}: the server did not stop cleanly"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_example_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = blocks(path)
    languages = {lang for lang, _ in found}
    allowed = {"python", "sh", "toml", "nginx"} | ({""} if path.name == "cli.md" else set())
    allowed |= {"text"} if path.name == "architecture.md" else set()  # its pictures
    assert languages <= allowed, f"{path.name}: blocks nobody runs: {languages - allowed}"
    configs = [code for lang, code in found if lang == "toml"]
    assert len(configs) <= 1, f"{path.name}: one duckflock.toml per page"
    for config in configs:
        (tmp_path / "duckflock.toml").write_text(config)
    page = Page(path, tmp_path)
    try:
        for lang, code in found:
            if lang == "python":
                page.python(code)
            elif lang == "sh":
                page.sh(code)
    finally:
        page.close()


def test_pages_show_examples() -> None:
    """Each page but the generated CLI reference carries at least one runnable example."""
    for path in PAGES:
        runnable = [code for lang, code in blocks(path) if lang in ("python", "sh")]
        assert runnable, f"{path.name} has no example"
