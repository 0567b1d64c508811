"""Fault suite: a damaged WAL tail after a kill.

A child commits batches through duckflock and is SIGKILLed, leaving its commits in the
WAL; each trial truncates that WAL at a random byte or flips bits in its tail, then
opens the database. Opening either recovers a complete prefix of the batches (DuckDB
1.5.5 stops replaying at a torn entry) or fails with :class:`DatabaseDamagedError`
naming the WAL and the way out (checksums catch flipped bits) — never another error,
never half a batch. ``DUCKFLOCK_WAL_TRIALS`` (default 80 x ``DUCKFLOCK_FAULT_SCALE``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import duckflock

SCALE = max(1, int(os.environ.get("DUCKFLOCK_FAULT_SCALE", "1")))
TRIALS = int(os.environ.get("DUCKFLOCK_WAL_TRIALS", str(80 * SCALE)))
BATCHES = 40
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

CHILD = r"""
import sys, threading
import duckflock
db = duckflock.connect(sys.argv[1])
db.execute("CREATE TABLE t (batch INTEGER, i INTEGER)")
db.execute("CHECKPOINT")
for batch in range(int(sys.argv[2])):
    db.insert("t", [(batch, i) for i in range(5 + batch * 13)])
print("acked", flush=True)
threading.Event().wait()
"""


def _size(batch: int) -> int:
    return 5 + batch * 13


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose batches live only in its WAL, as a kill -9 leaves it."""
    path = tmp_path_factory.mktemp("wal") / "killed.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(BATCHES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "acked"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert Path(str(path) + ".wal").stat().st_size > 10_000
    return path


def _damage(wal: bytes, rng: random.Random) -> tuple[str, bytes]:
    data = bytearray(wal)
    if rng.random() < 0.5:
        return "truncated", bytes(data[: rng.randrange(len(data))])
    tail = rng.choice([64, 512, 4096, len(data)])
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(max(0, len(data) - tail), len(data))
        data[position] ^= 1 << rng.randrange(8)
    return "flipped", bytes(data)


def test_a_damaged_wal_opens_to_a_whole_prefix_or_names_the_way_out(
    killed: Path, tmp_path: Path
) -> None:
    wal = Path(str(killed) + ".wal").read_bytes()
    rng = random.Random(int(os.environ.get("DUCKFLOCK_WAL_SEED", "11")))
    figures = {"trials": 0, "recovered_prefix": 0, "refused_with_advice": 0}
    figures |= {"batches_recovered": 0, "followed_advice": 0}
    for trial in range(TRIALS):
        target = tmp_path / f"trial{trial}.duckdb"
        shutil.copy(killed, target)
        how, damaged = _damage(wal, rng)
        Path(str(target) + ".wal").write_bytes(damaged)
        figures["trials"] += 1
        refused: duckflock.DatabaseDamagedError | None = None
        try:
            db = duckflock.connect(target)
        except duckflock.DatabaseDamagedError as exc:
            refused = exc
        if refused is not None:
            figures["refused_with_advice"] += 1
            assert refused.wal == str(target) + ".wal"
            assert refused.wal in str(refused) and "mv " in str(refused), str(refused)
            if figures["followed_advice"] < 3:  # the way out works
                os.replace(refused.wal, refused.wal + ".damaged")
                with duckflock.connect(target) as db:
                    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
                figures["followed_advice"] += 1
            continue
        with db:
            rows = db.execute(
                "SELECT batch, count(*), count(DISTINCT i) FROM t GROUP BY 1 ORDER BY 1"
            ).fetchall()
        batches = [batch for batch, _, _ in rows]
        assert batches == list(range(len(batches))), (how, batches)  # a prefix
        for batch, count, distinct in rows:
            assert count == distinct == _size(batch), (how, batch, count)  # whole
        if how == "truncated":
            assert len(batches) <= BATCHES
        figures["recovered_prefix"] += 1
        figures["batches_recovered"] += len(batches)
        for suffix in ("", ".wal"):
            Path(str(target) + suffix).unlink(missing_ok=True)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "wal-damage.json").write_text(json.dumps(figures, indent=1))
    assert figures["recovered_prefix"] > 0 and figures["refused_with_advice"] > 0, figures


def test_an_intact_wal_after_a_kill_recovers_every_batch(killed: Path, tmp_path: Path) -> None:
    target = tmp_path / "intact.duckdb"
    shutil.copy(killed, target)
    shutil.copy(str(killed) + ".wal", str(target) + ".wal")
    with duckflock.connect(target) as db:
        assert db.execute("SELECT count(DISTINCT batch), count(*) FROM t").fetchone() == (
            BATCHES,
            sum(_size(b) for b in range(BATCHES)),
        )
