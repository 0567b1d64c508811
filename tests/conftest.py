from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import duckflock


@pytest.fixture(params=["memory", "file"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[duckflock.Database]:
    """A Database in memory and on a file: most behaviour must hold for both."""
    target = ":memory:" if request.param == "memory" else str(tmp_path / "test.duckdb")
    database = duckflock.connect(target)
    yield database
    database.close()


@pytest.fixture
def memdb() -> Iterator[duckflock.Database]:
    database = duckflock.connect()
    yield database
    database.close()
