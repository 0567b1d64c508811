"""The guide's scenario: its invariants in memory and on a file, and the CLI around it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import duckflock
from duckflock.cli import cli
from duckflock.cli.demo import run_demo, run_live_demo

READ_LINE = r"read_thread_\d: row_counter=\d+ at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.\d]*\+00:00"


def test_scenario_invariants(db: duckflock.Database) -> None:
    report = run_demo(db, writers=50, readers=5, seed=6)
    names = [name for name, _ in report.rows]
    assert len(names) == 50
    assert sorted(names) == sorted(f"write_thread_{i}" for i in range(50))
    times = [at for _, at in report.rows]
    assert times == sorted(times)
    assert sorted(name for name, _, _ in report.reads) == [f"read_thread_{j}" for j in range(5)]
    assert all(0 <= count <= 50 for _, count, _ in report.reads)


def test_scenario_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "demo.duckdb"
    with duckflock.connect(path) as db:
        report = run_demo(db, writers=20, readers=2)
    with duckflock.connect(path, read_only=True) as again:
        rows = again.execute(
            "SELECT thread_name, insert_time FROM my_inserts ORDER BY insert_time"
        ).fetchall()
    assert rows == report.rows


def test_demo_command_prints_readers_table_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(cli, ["demo", "--database", str(path), "--writers", "12"])
    assert result.exit_code == 0, result.output
    reader_lines = [line for line in result.output.splitlines() if line.startswith("read_")]
    assert len(reader_lines) == 5
    # readable: the thread, its count and an ISO timestamp, no Python reprs
    assert all(re.fullmatch(READ_LINE, line) for line in reader_lines), reader_lines
    assert "my_inserts" in result.output
    assert result.output.count("write_thread_") == 12
    assert "12 rows from 12 writers, 5 reads" in result.output
    with duckflock.connect(path, read_only=True) as db:
        assert db.execute("SELECT count(*) FROM my_inserts").fetchone() == (12,)


def test_python_dash_m_runs_the_demo_in_memory(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "duckflock", "demo", "--memory", "--writers", "3", "--readers", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "3 rows from 3 writers, 1 reads" in run.stdout
    assert not list(tmp_path.iterdir()), "--memory must not create a database file"


def test_demo_rejects_negative_counts() -> None:
    result = CliRunner().invoke(cli, ["demo", "--memory", "--writers", "-1"])
    assert result.exit_code == 2
    assert "--writers" in result.output


def test_help_explains_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert "--writers" in result.output
    assert "--memory" in result.output


def test_cli_reference_in_docs_is_generated_from_help() -> None:
    from duckflock.cli import reference

    path = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert path.read_text() == reference(), "docs/cli.md is stale: run `make docs`"


def test_bench_ingest_quick_prints_every_figure_and_ratio() -> None:
    result = CliRunner().invoke(cli, ["bench", "ingest", "--quick"])
    assert result.exit_code == 0, result.output
    for key in ("(a)", "(b)", "(c)", "(c2)", "(d)", "(d2)", "(e)", "(f)"):
        assert key in result.output
    assert "b / a = " in result.output
    assert "x a" in result.output


def test_live_demo_versions_grow_to_the_final_count(db: duckflock.Database) -> None:
    report = run_live_demo(db, writers=30)
    versions = [r.version for r in report.versions]
    assert versions == sorted(set(versions))
    totals = [sum(n for _, n in r.rows()) for r in report.versions]
    assert all(0 <= t <= 30 for t in totals)
    assert totals == sorted(totals)  # each version reflects at least what the last did
    final = report.versions[-1].rows()
    assert sorted(name for name, _ in final) == sorted(f"write_thread_{i}" for i in range(30))
    assert all(count == 1 for _, count in final)
    assert len(report.rows) == 30


def test_demo_live_command_prints_versions() -> None:
    result = CliRunner().invoke(cli, ["demo", "--memory", "--live", "--writers", "15"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("rows_per_thread v")]
    assert lines
    assert lines[-1].endswith("15 rows from 15 threads")
    assert "live versions" in result.output
