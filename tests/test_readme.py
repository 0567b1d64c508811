"""The README's promises about set-up: two commands, what they need, what they cost.

Its examples run in test_docs.py like every other page's.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
