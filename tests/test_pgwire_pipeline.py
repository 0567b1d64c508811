"""The Postgres port encodes a result's batches on the server's encoding threads while
the connection's thread fetches and sends: in order, at most a few batches ahead, with
errors raised where their batch would have been sent, and the caps exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import duckflock
from duckflock.errors import QueryTimeoutError
from duckflock.server.pgwire import PgServer, PgSettings, pipeline
from duckflock.server.settings import ServerSettings

BIG = pipeline.INLINE_ROWS  # rows of a job that goes to the encoding threads


def _jobs(
    count: int, rows: int, encode: Callable[[int], bytes]
) -> Callable[[], pipeline.Job | None]:
    taken = iter(range(count))

    def next_job() -> pipeline.Job | None:
        index = next(taken, None)
        return None if index is None else (rows, lambda: encode(index))

    return next_job


def test_jobs_come_back_in_order_whatever_order_they_finish_in() -> None:
    def encode(index: int) -> bytes:
        time.sleep(0.002 * (index % 3 == 0))  # the first of every three finishes last
        return index.to_bytes(4, "big")

    with ThreadPoolExecutor(4) as threads:
        got = list(pipeline.encoded(threads, _jobs(30, BIG, encode), time.monotonic() + 30))
    assert got == [(BIG, i.to_bytes(4, "big")) for i in range(30)]


def test_at_most_AHEAD_jobs_are_taken_before_their_bytes_are() -> None:
    taken = 0
    inner = _jobs(50, BIG, lambda i: b"x")

    def next_job() -> pipeline.Job | None:
        nonlocal taken
        job = inner()
        taken += job is not None
        return job

    with ThreadPoolExecutor(2) as threads:
        for index, _ in enumerate(pipeline.encoded(threads, next_job, time.monotonic() + 30)):
            assert taken <= index + 1 + pipeline.AHEAD


def test_an_error_is_raised_in_its_place_and_the_jobs_ahead_are_dropped() -> None:
    def encode(index: int) -> bytes:
        if index == 3:
            raise ValueError("bad batch 3")
        return b"ok"

    got: list[bytes] = []
    with ThreadPoolExecutor(2) as threads, pytest.raises(ValueError, match="bad batch 3"):
        for _, data in pipeline.encoded(threads, _jobs(20, BIG, encode), time.monotonic() + 30):
            got.append(data)
    assert got == [b"ok"] * 3


def test_small_jobs_are_encoded_in_the_callers_thread() -> None:
    where: list[str] = []

    def encode(index: int) -> bytes:
        where.append(threading.current_thread().name)
        return b""

    with ThreadPoolExecutor(2, thread_name_prefix="elsewhere") as threads:
        list(pipeline.encoded(threads, _jobs(5, BIG - 1, encode), time.monotonic() + 30))
        list(pipeline.encoded(threads, _jobs(5, BIG, encode), time.monotonic() + 30))
    caller = threading.current_thread().name
    assert where[:5] == [caller] * 5
    assert all(name.startswith("elsewhere") for name in where[5:])


def test_an_encoding_past_the_deadline_is_a_query_timeout() -> None:
    release = threading.Event()

    def encode(index: int) -> bytes:
        release.wait(30)
        return b""

    with ThreadPoolExecutor(1) as threads:
        with pytest.raises(QueryTimeoutError, match="time limit"):
            list(pipeline.encoded(threads, _jobs(3, BIG, encode), time.monotonic() + 0.2))
        release.set()


def test_a_server_shut_down_refuses_new_encodings_as_a_query_timeout() -> None:
    threads = ThreadPoolExecutor(1)
    threads.shutdown()
    with pytest.raises(QueryTimeoutError, match="shutting down"):
        list(pipeline.encoded(threads, _jobs(1, BIG, lambda i: b""), time.monotonic() + 30))


# -- end to end: a real server and psycopg ----------------------------------------------------


def test_a_big_result_is_encoded_on_the_encoding_threads_and_arrives_whole(
    db: duckflock.Database,
) -> None:
    sql = "SELECT range AS i, range / 2 AS x, 'n' || range AS s FROM range(200000) ORDER BY i"
    server = PgServer(db, ServerSettings(query_row_cap=300_000), PgSettings(port=0)).start()
    try:
        with psycopg.connect(f"host=127.0.0.1 port={server.port} user=u", autocommit=True) as c:
            for binary in (False, True):
                rows = c.cursor(binary=binary).execute(sql).fetchall()
                assert rows == [(i, i * 0.5, f"n{i}") for i in range(200000)]
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith("duckflock-pg-encode") for n in names), names
    finally:
        server.stop()


def test_the_byte_cap_counts_the_rows_sent_not_the_rows_encoded_ahead(
    db: duckflock.Database,
) -> None:
    sql = "SELECT repeat('x', 100) AS s FROM range(500000)"
    settings = ServerSettings(query_row_cap=1_000_000, query_byte_cap=3_000_000)
    server = PgServer(db, settings, PgSettings(port=0)).start()
    notes: list[str] = []
    try:
        with psycopg.connect(f"host=127.0.0.1 port={server.port} user=u", autocommit=True) as c:
            c.add_notice_handler(lambda diag: notes.append(diag.message_primary or ""))
            cursor = c.cursor()
            rows = cursor.execute(sql).fetchall()
            assert cursor.statusmessage == f"SELECT {len(rows)}"
            assert 0 < len(rows) < 500000
    finally:
        server.stop()
    assert any("byte cap" in note for note in notes), notes
