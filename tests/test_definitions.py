"""Analysis definitions outlive the process: kept in the file, defined again on open."""

from __future__ import annotations

from pathlib import Path

import pytest

import duckflock


def test_analyses_come_back_when_the_file_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "kept.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (k VARCHAR, v INTEGER)")
        db.insert("t", [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
        db.analysis(
            "per_k",
            "SELECT k, sum(v) AS s FROM t WHERE v > ? GROUP BY k ORDER BY k",
            params=[0],
            on_change=True,
            min_interval=0.5,
            timeout=5,
        )
        db.analysis("gone", "SELECT count(*) AS n FROM t")
        db.analysis("private", "SELECT 1 AS one", persist=False)
        db.drop_analysis("gone")
        assert [t["name"] for t in db.tables()] == ["t"]  # the bookkeeping table is hidden
    with duckflock.connect(path) as db:
        status = {a["name"]: a for a in db.analyses()}
        assert set(status) == {"per_k"}
        assert status["per_k"]["on_change"] is True
        assert status["per_k"]["min_interval"] == 0.5
        assert status["per_k"]["timeout"] == 5
        db.insert("t", {"k": "a", "v": 10})
        assert db.refresh("per_k").rows() == [("a", 11), ("b", 2)]
    with duckflock.connect(path, restore_analyses=False) as db:
        assert db.analyses() == []


def test_a_kept_analysis_that_no_longer_binds_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stale.duckdb"
    with duckflock.connect(path) as db:
        db.execute("CREATE TABLE t (v INTEGER)")
        db.analysis("n", "SELECT count(*) AS n FROM t")
        db.analysis("still", "SELECT 42 AS answer")
    with duckflock.connect(path, restore_analyses=False) as db:
        db.execute("DROP TABLE t")
    with duckflock.connect(path) as db:
        listed = {a["name"]: a for a in db.analyses()}
        assert listed["still"]["refused"] is None and listed["still"]["mode"] != "refused"
        assert "could not be defined again" in listed["n"]["refused"]  # listed, not run
        assert listed["n"]["mode"] == "refused"
        with pytest.raises(duckflock.UnknownAnalysisError):
            db.result("n")
        assert "'n'" in caplog.text and "was not run" in caplog.text
        db.execute("CREATE TABLE t (v INTEGER)")
    with duckflock.connect(path) as db:  # kept: back once its table is
        assert {a["name"] for a in db.analyses()} == {"n", "still"}


def test_params_that_cannot_be_kept_are_refused_before_defining(tmp_path: Path) -> None:
    with duckflock.connect(tmp_path / "p.duckdb") as db:
        with pytest.raises(ValueError, match="persist=False"):
            db.analysis("p", "SELECT ? AS x", params=[object()])
        assert db.analyses() == []
        db.analysis("p", "SELECT ?::VARCHAR AS x", params=[str(object())], persist=False)
        assert [a["name"] for a in db.analyses()] == ["p"]


def test_a_read_only_file_restores_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    with duckflock.connect(path) as db:
        db.analysis("answer", "SELECT 42 AS a")
    with duckflock.connect(path, read_only=True) as db:
        assert db.refresh("answer").rows() == [(42,)]
        db.analysis("other", "SELECT 1 AS one")  # runs, is not kept (read-only)
        db.drop_analysis("answer")
    with duckflock.connect(path) as db:
        assert [a["name"] for a in db.analyses()] == ["answer"]


def test_wait_says_at_definition_that_the_first_run_fails(
    memdb: duckflock.Database,
) -> None:
    memdb.execute("CREATE TABLE t (note VARCHAR)")
    memdb.insert("t", {"note": "not a number"})
    with pytest.raises(duckflock.ConversionError, match="not a number"):
        memdb.analysis("bad", "SELECT CAST(note AS INTEGER) AS x FROM t", wait=True)
    assert memdb.analyses() == []
    first = memdb.analysis("good", "SELECT count(*) AS n FROM t", wait=True)
    assert first is not None and first.rows() == [(1,)]
    # without wait, the definition stands and the error is on the result
    assert memdb.analysis("later", "SELECT CAST(note AS INTEGER) AS x FROM t") is None
    assert memdb.refresh("later").error is not None
