"""Changes over server-sent events, against a real ``duckflock serve`` (uvicorn): ids
are ``lineage.version``, a reconnect with ``Last-Event-ID`` resumes with no gap, and an
id the server no longer keeps (too old, or from before a restart) gets a snapshot first."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

import duckflock
from conftest import ServerProcess
from duckflock import Change

SQL = "SELECT p, count(*) AS n, sum(i) AS s FROM events GROUP BY p"


def events(http: httpx.Client, last: str | None = None) -> Iterator[dict[str, str]]:
    """The raw events of the change stream (event, id, data), opened with ``last``."""
    headers = {} if last is None else {"Last-Event-ID": last}
    with http.stream(
        "GET", "/v1/analyses/per_p/events", params={"changes": "1"}, headers=headers
    ) as response:
        assert response.status_code == 200, response.read()
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if "data" in event:
                    yield event
                event = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                event[field] = value.removeprefix(" ")


def rows_of(data: str) -> tuple[dict[str, object], pa.Table]:
    payload = json.loads(data)
    columns = payload["columns"]
    table = pa.table(
        {
            c: pa.array([row[i] for row in payload["rows"]], pa.int64())
            for i, c in enumerate(columns)
        }
    )
    return payload, table


def apply(held: pa.Table, payload: dict[str, object], change: pa.Table) -> pa.Table:
    """DuckDB's multiset difference and union of the held rows and a change."""
    if payload["snapshot"]:
        return change.drop_columns(["__diff"])
    db = duckdb.connect()
    db.register("held", held)
    db.register("change", change)
    out = db.sql(
        "(FROM held EXCEPT ALL SELECT p, n, s FROM change WHERE __diff = -1) "
        "UNION ALL SELECT p, n, s FROM change WHERE __diff = 1"
    ).to_arrow_table()
    db.close()
    return out


def truth(client: duckflock.Client) -> list[tuple[object, ...]]:
    """The analysis's rows as its SQL gives them now."""
    return sorted(client.execute(SQL).fetchall())


def held_rows(held: pa.Table) -> list[tuple[object, ...]]:
    return sorted(tuple(row.values()) for row in held.to_pylist())


def follow(
    stream: Iterator[dict[str, str]], held: pa.Table, version: int, expected: list[object]
) -> tuple[pa.Table, int, str]:
    """Apply the stream's changes, each right after the last (no gap), until the held
    rows are ``expected`` (the stream's read timeout bounds the wait)."""
    last = ""
    while held_rows(held) != expected:
        event = next(stream)
        payload, table = rows_of(event["data"])
        assert payload["since"] == version and payload["snapshot"] is False, payload
        held, version, last = apply(held, payload, table), int(payload["version"]), event["id"]
    return held, version, last


def test_change_stream_resumes_from_last_event_id(server: ServerProcess) -> None:
    with server.client() as client, server.http() as http:
        client.analysis("per_p", SQL, on_change=True, min_interval=0)
        client.insert("events", [{"p": p, "i": p} for p in range(5)])
        stream = events(http)
        first = next(stream)
        payload, table = rows_of(first["data"])
        assert first["event"] == "change" and payload["snapshot"] is True
        assert first["id"] == payload["id"] and first["id"].endswith(f".{payload['version']}")
        held, version, last = table.drop_columns(["__diff"]), int(payload["version"]), first["id"]
        for i in range(3):
            client.insert("events", [{"p": 1, "i": 10 + i}])
            held, version, last = follow(stream, held, version, truth(client))
        stream.close()  # the reader goes away; versions land meanwhile
        for i in range(4):
            client.insert("events", [{"p": 2 + i % 2, "i": i}, {"p": 9, "i": 1}])
        behind = truth_version(client)
        resumed = events(http, last)
        held, version, _ = follow(resumed, held, version, truth(client))
        assert version >= behind
        resumed.close()

        # an id the server no longer keeps: more versions than keep_changes since
        client.analysis("per_p", SQL, every=0.05)
        replaced = truth_version(client)
        client.result("per_p", min_version=replaced + 70, timeout=60)
        old = next(events(http, last))
        payload, _ = rows_of(old["data"])
        assert payload["snapshot"] is True
        lineage = old["id"].rpartition(".")[0]
        payload, _ = rows_of(next(events(http, f"{lineage}.1"))["data"])
        assert payload["snapshot"] is True  # this lineage, but too old


def truth_version(client: duckflock.Client) -> int:
    result = client.result("per_p")
    assert result is not None
    return result.version


def test_a_restarted_server_sends_a_snapshot_first(tmp_path: Path) -> None:
    database = tmp_path / "restart.duckdb"
    with duckflock.connect(database) as db:
        db.execute("CREATE TABLE events (p INTEGER, i INTEGER)")
    server = ServerProcess(database)
    try:
        with server.client() as client:
            client.analysis("per_p", SQL, on_change=True, min_interval=0)
            client.insert("events", [{"p": 1, "i": 1}])
            watcher = client.changes("per_p")
            change: Change = next(watcher)
            assert change.snapshot
            while change.version < truth_version(client):
                change = next(watcher)
            last = change.id
            watcher.close()
    finally:
        server.stop()
    server = ServerProcess(database)  # the definition is kept in the file: defined again
    try:
        with server.client() as client:
            version = client.result("per_p", min_version=1, timeout=30).version
            watcher = client.changes("per_p", since=last)
            change = next(watcher)
            assert change.snapshot, change  # the version numbers of the last run mean nothing
            assert change.lineage != last.rpartition(".")[0]
            assert change.version >= version
            rows = sorted(tuple(r.values())[:3] for r in change.table.to_pylist())
            assert rows == truth(client)
            watcher.close()
            with pytest.raises(duckflock.DuckflockError, match="change id"):
                next(client.changes("per_p", since="not an id"))
    finally:
        server.stop()


def test_cli_watch_changes_writes_one_json_line_per_version(server: ServerProcess) -> None:
    with server.client() as client:
        client.analysis("per_p", SQL, on_change=True, min_interval=0)
        client.insert("events", [{"p": 1, "i": 1}, {"p": 2, "i": 2}])
        first = client.result("per_p", min_version=1, timeout=30)
    command = [sys.executable, "-m", "duckflock", "analysis", "watch", server.url, "per_p"]
    watcher = subprocess.Popen(
        [*command, "--changes", "--versions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        snapshot = json.loads(watcher.stdout.readline())
        assert snapshot["snapshot"] is True and snapshot["version"] >= first.version
        assert snapshot["columns"] == ["p", "n", "s", "__diff"]
        with server.client() as client:
            client.insert("events", [{"p": 2, "i": 40}])
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    change = json.loads(out)
    assert change["since"] == snapshot["version"] and change["snapshot"] is False
    # the group p=2 changed: its old row out, its new one in; p=1 untouched
    assert sorted(change["rows"]) == [[2, 1, 2, -1], [2, 2, 42, 1]]


def test_a_change_over_the_byte_cap_comes_as_the_result_at_its_version(tmp_path: Path) -> None:
    database = tmp_path / "capped.duckdb"
    with duckflock.connect(database) as db:
        db.execute("CREATE TABLE events (p INTEGER, i INTEGER)")
    server = ServerProcess(database, "--byte-cap", "2000")
    try:
        with server.client() as client:
            client.analysis("per_p", SQL, on_change=True, min_interval=0)
            watcher = client.changes("per_p")
            first = next(watcher)
            assert first.snapshot and first.table.num_rows == 0
            client.insert("events", [{"p": p, "i": p} for p in range(400)])  # a big change
            change = next(watcher)
            while change.table.num_rows == 0:  # an empty version published before the rows
                change = next(watcher)
            assert change.snapshot  # fetched from /result: whole, not a change
            rows = sorted(tuple(r.values())[:3] for r in change.table.to_pylist())
            assert rows == truth(client)
            watcher.close()
    finally:
        server.stop()


def test_non_finite_doubles_reach_the_clients_change_and_watch_streams(
    server: ServerProcess,
) -> None:
    """±Infinity travels in the JSON as "Infinity"/"-Infinity" (NaN as null: JSON has no
    NaN, docs/http-api.md): Client.changes and Client.watch rebuild the column as DOUBLE
    instead of failing on a string in a float column."""
    with server.client() as client, server.http() as http:
        made = http.post("/v1/sql", json={"sql": "CREATE TABLE nn (g DOUBLE, v INTEGER)"})
        assert made.status_code == 200, made.text
        client.analysis("per_g", "SELECT g, count(*) AS n FROM nn GROUP BY g", on_change=True)
        rows = "('inf', 1), ('-inf', 1), (1.5, 1), (NULL, 1)"
        added = http.post("/v1/sql", json={"sql": f"INSERT INTO nn VALUES {rows}"})
        assert added.status_code == 200, added.text
        want = {(math.inf, 1), (-math.inf, 1), (1.5, 1), (None, 1)}
        for change in client.changes("per_g"):
            assert change.table.schema.field("g").type == pa.float64()
            if {row[:2] for row in change.rows()} == want:
                break
        for result in client.watch("per_g"):
            if set(result.rows()) == want:
                break
