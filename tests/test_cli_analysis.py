"""``duckflock analysis define|list|show|watch|drop``, through the real command."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import duckflock
from conftest import ServerProcess
from test_cli import cli_run

WATCH = [sys.executable, "-m", "duckflock", "analysis", "watch"]
PER_P = "SELECT p, count(*) AS n, sum(i) AS total FROM events GROUP BY p ORDER BY p"


def make_events(path: Path, rows: int = 30) -> Path:
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE events (p INTEGER, i INTEGER, note VARCHAR)")
        db.insert("events", [{"p": i % 3, "i": i, "note": f"n{i}"} for i in range(rows)])
    return path


def expected(path: Path, sql: str) -> list[dict[str, object]]:
    """What DuckDB itself answers, as JSON rows."""
    with duckflock.connect(path, read_only=True, restore_analyses=False) as db:
        cursor = db.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_define_list_show_drop_on_a_file(tmp_path: Path) -> None:
    path = make_events(tmp_path / "a.duckdb")
    defined = cli_run("analysis", "define", str(path), "per_p", PER_P, "--every", "60")
    assert defined.returncode == 0, defined.stderr
    assert "defined per_p, kept in" in defined.stdout
    assert "per_p v1" in defined.stdout  # its first result, shown
    listed = cli_run("analysis", "list", str(path))
    assert listed.returncode == 0, listed.stderr
    assert "per_p" in listed.stdout
    assert "every 60 s" in listed.stdout
    shown = cli_run("analysis", "show", str(path), "per_p", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == expected(path, PER_P)
    dropped = cli_run("analysis", "drop", str(path), "per_p")
    assert dropped.returncode == 0, dropped.stderr
    assert "no analyses" in cli_run("analysis", "list", str(path)).stdout
    gone = cli_run("analysis", "show", str(path), "per_p")
    assert gone.returncode == 1
    assert "UnknownAnalysisError" in gone.stderr
    assert "next: `duckflock analysis list TARGET`" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_first_run_that_fails_defines_nothing(tmp_path: Path) -> None:
    path = make_events(tmp_path / "f.duckdb")
    failed = cli_run(
        "analysis", "define", str(path), "bad", "SELECT CAST(note AS INTEGER) AS n FROM events"
    )
    assert failed.returncode == 1
    assert "ConversionError" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "no analyses" in cli_run("analysis", "list", str(path)).stdout


def test_define_show_watch_and_drop_on_a_server(server: ServerProcess) -> None:
    with server.client() as client:
        client.insert("events", [{"p": 1, "i": i, "note": "a"} for i in range(5)])
    defined = cli_run("analysis", "define", server.url, "per_p", PER_P, "--on-change")
    assert defined.returncode == 0, defined.stderr
    assert "defined per_p: reads" in defined.stdout
    assert "on change" in defined.stdout
    shown = cli_run("analysis", "show", server.url, "per_p", "--format", "json")
    with server.client() as client:
        truth = client.execute(PER_P).fetchall()
    assert [tuple(r.values()) for r in json.loads(shown.stdout)] == truth
    # watch in a pipe: each version written after the last; --versions bounds it
    watcher = subprocess.Popen(
        [*WATCH, server.url, "per_p", "--versions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the current version, before anything changes
        assert first.startswith("per_p v1"), first
        with server.client() as client:
            client.insert("events", [{"p": 2, "i": 100, "note": "b"}])
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert "per_p v2" in out
    dropped = cli_run("analysis", "drop", server.url, "per_p")
    assert dropped.returncode == 0, dropped.stderr
    listed = cli_run("analysis", "list", server.url)
    assert "no analyses" in listed.stdout


def _plain(raw: bytes) -> bytes:
    """``raw`` without terminal control sequences (colours, cursor moves)."""
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw)


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    seen = b""
    while wanted not in _plain(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} never came; saw {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _drain(fd: int, deadline: float) -> bytes:
    """What is left to read once the other side has exited (until EOF or the deadline)."""
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_watch_redraws_what_fits_a_terminal_and_ctrl_c_exits_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t AS SELECT range AS k FROM range(100)")
        db.analysis("many", "SELECT k FROM t ORDER BY k", every=0.2)  # kept in the file
    controller, terminal = pty.openpty()
    rows, columns = 20, 100
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS")}
    watcher = subprocess.Popen(
        [*WATCH, str(path), "many"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm"},
    )
    os.close(terminal)
    try:
        seen = _read_until(controller, b"many v3", time.monotonic() + 60)  # redrawn live
        # 20 lines: the version line, the table's borders and header, the rest rows
        assert b"87 more rows" in seen
        assert b"\x1b[" in seen  # drawn in place with cursor moves, not printed again
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=30)
        seen += _drain(controller, time.monotonic() + 10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(controller)
    assert watcher.returncode in (0, 130), seen[-2000:]
    assert b"Traceback" not in seen
