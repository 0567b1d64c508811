"""The package's layout rules (docs/architecture.md), as CI enforces them.

The layers and the forbidden imports are import-linter contracts in pyproject.toml, run by
``make lint``; here they run on the real tree, and on a copy with one bad import added, to
show the contracts really fail on the imports they forbid (a contract that cannot fail
proves nothing). The other rules of the house are checked on the source itself: how many
modules the top level holds, how long a module may grow, and that no module reaches into
another's private names.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "duckflock"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the package found under ``source_root``, with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=source_root,
        timeout=300,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    run = lint_imports(ROOT / "src")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "complaint"),
    [
        # an arrow pointing up: the core may not know the server exists
        ("core/checks.py", "import duckflock.server.limits", "duckflock.core is not allowed"),
        # TYPE_CHECKING imports count too: types cross upwards only as Protocols
        (
            "ingest/rows.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import duckflock.live",
            "duckflock.ingest is not allowed to import duckflock.live",
        ),
        # the library stays lean: no HTTP framework below the server
        ("live/results.py", "import starlette.responses", "starlette"),
    ],
)
def test_a_bad_import_breaks_the_build(
    tmp_path: Path, module: str, bad_import: str, complaint: str
) -> None:
    copy = tmp_path / "duckflock"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0, run.stdout
    assert complaint in run.stdout, run.stdout


def top_level_modules() -> list[str]:
    return sorted(p.name for p in PACKAGE.glob("*.py"))


def test_the_top_level_holds_at_most_eight_modules() -> None:
    """The public face and the entry point; everything else lives in a wing."""
    modules = top_level_modules()
    assert len(modules) <= 8, modules


def private_imports(path: Path) -> list[str]:
    """``from duckflock.x import _name`` (a private name taken from another module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("duckflock"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]
    found = [hit for path in sources for hit in private_imports(path)]
    assert found == []


LINE_LIMIT = 410  # "about 400": a docstring more does not make a second idea
# modules allowed past the limit, each with why it is still one idea
LONGER = {
    "errors.py": "the one tree of every error: a class each, with its status and SQLSTATE",
}


def test_modules_stay_small() -> None:
    """Each module one idea and under ~400 lines; the exceptions say why."""
    over = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text().splitlines()) > LINE_LIMIT
    }
    assert set(over) <= set(LONGER), over
