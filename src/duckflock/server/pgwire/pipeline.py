"""A result's batches encoded on the server's encoding threads while its connection's
thread fetches the next ones from DuckDB and sends the ones before.

Encoding a batch (Arrow casts, numpy framing) runs in C with the GIL released, and so
does DuckDB's fetch: with the work split this way, a big result's rows go out at the
pace of the slowest of the three steps instead of their sum. Each connection keeps at
most :data:`AHEAD` batches in flight (bounded memory: a gathered batch is at most about
1 MiB of Arrow data); the threads are shared by every connection of the server, so the
encoding of all of them together takes at most :data:`ENCODERS` cores. Batches of fewer
than :data:`INLINE_ROWS` rows (a small result) are encoded in the connection's own
thread: handing them over would cost more than it saves.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from duckflock.errors import QueryTimeoutError

# encoding threads of one server: the cores the encoding of all its results may take
ENCODERS = max(1, min(4, os.cpu_count() or 1))
AHEAD = ENCODERS + 1  # batches one result has in flight: every thread busy, one to send
INLINE_ROWS = 4096

# one batch's work: its rows and how to encode them (run on an encoding thread)
Job = tuple[int, Callable[[], bytes]]


def encoding_threads() -> Executor:
    """The server's encoding threads (owner: the server, which shuts them down)."""
    return ThreadPoolExecutor(ENCODERS, thread_name_prefix="duckflock-pg-encode")


def encoded(
    threads: Executor, next_job: Callable[[], Job | None], deadline: float
) -> Iterator[tuple[int, bytes]]:
    """Each job's rows and encoded bytes, in the order ``next_job`` gave them (None:
    no more). ``next_job`` is called in the caller's thread, up to :data:`AHEAD` jobs
    before their bytes are taken; the caller may stop at any point (what was encoded
    ahead is dropped). Waiting past ``deadline`` (``time.monotonic()``) for an encoding
    raises QueryTimeoutError."""
    ahead: deque[tuple[int, Future[bytes]]] = deque()
    more = True
    try:
        while True:
            while more and len(ahead) < AHEAD:
                job = next_job()
                if job is None:
                    more = False
                else:
                    ahead.append((job[0], _start(threads, job)))
            if not ahead:
                return
            rows, future = ahead.popleft()
            try:
                data = future.result(timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError as exc:
                if future.done() and not future.cancelled():  # the job's own TimeoutError
                    raise
                raise QueryTimeoutError(
                    "the result's rows were not encoded within the query time limit"
                ) from exc
            yield rows, data
    finally:
        for _, future in ahead:
            future.cancel()


def _start(threads: Executor, job: Job) -> Future[bytes]:
    rows, encode = job
    if rows >= INLINE_ROWS:
        try:
            return threads.submit(encode)
        except RuntimeError as exc:  # shut down: the server is stopping
            raise QueryTimeoutError("the server is shutting down") from exc
    done: Future[bytes] = Future()
    try:
        done.set_result(encode())
    except Exception as exc:  # raised where the caller takes the bytes, in order
        done.set_exception(exc)
    return done
