"""The write path's figures: rows and batches committed, batch sizes and commit
latencies, and its health (:class:`WriterState`), as ``Database.stats()`` reports them."""

from __future__ import annotations

import bisect
import enum
import itertools
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_SAMPLES = 4096  # batch sizes and commit latencies kept for percentiles
# upper bounds (seconds) of the commit-latency histogram exported as metrics
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WriterState(enum.StrEnum):
    """The write path's health, as ``Database.stats().state`` reports it."""

    OK = "ok"
    # the last commit failed on storage, or reopening failed: the next batch tries again
    FAILED = "failed"
    RECOVERING = "recovering"  # reopening an invalidated database now


@dataclass(frozen=True)
class IngestStats:
    """A snapshot of the write path (see ``Database.stats``)."""

    rows_committed: int
    batches_committed: int
    calls_rejected: int
    rows_queued: int
    rows_queued_peak: int
    max_queued_rows: int
    batch_rows: dict[str, float]
    commit_ms: dict[str, float]
    # cumulative counts per COMMIT_BUCKETS bound (then +Inf), and the sum in seconds
    commit_histogram: tuple[int, ...] = ()
    commit_seconds: float = 0.0
    state: WriterState = WriterState.OK  # the write path's health
    storage_failures: int = 0  # batches whose commit failed on storage
    reopens: int = 0  # times the database was reopened after DuckDB invalidated it
    last_storage_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "p50": ordered[last // 2],
        "p90": ordered[(last * 9) // 10],
        "p99": ordered[(last * 99) // 100],
        "max": ordered[last],
    }


class Counters:
    """The figures of one writer. Owner: the writer thread, which records each batch
    and reopen; :meth:`snapshot` reads them from any thread. ``_lock`` guards them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows_committed = 0
        self._batches_committed = 0
        self._calls_rejected = 0
        self._batch_rows: deque[float] = deque(maxlen=_SAMPLES)
        self._commit_ms: deque[float] = deque(maxlen=_SAMPLES)
        self._commit_counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self._commit_seconds = 0.0
        self._state = WriterState.OK
        self._storage_failures = 0
        self._reopens = 0
        self._last_storage_error: str | None = None

    def batch(
        self, rows: int, committed: int, rejected: int, seconds: float, failure: str | None
    ) -> None:
        """A batch of ``rows`` took ``seconds``: ``committed`` rows went in, ``rejected``
        calls were refused; ``failure``: the storage failed it."""
        with self._lock:
            self._rows_committed += committed
            self._calls_rejected += rejected
            if committed:
                self._batches_committed += 1
            self._batch_rows.append(rows)
            self._commit_ms.append(seconds * 1000)
            self._commit_counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
            self._commit_seconds += seconds
            if failure is not None:
                self._storage_failures += 1
                self._last_storage_error = failure
                self._state = WriterState.FAILED
            else:
                self._state = WriterState.OK

    def recovering(self) -> None:
        """Reopening an invalidated database now."""
        with self._lock:
            self._state = WriterState.RECOVERING

    def reopen_failed(self, message: str) -> None:
        with self._lock:
            self._state = WriterState.FAILED
            self._last_storage_error = message

    def reopened(self) -> None:
        with self._lock:
            self._reopens += 1
            self._state = WriterState.OK

    def snapshot(self, queued: int, peak: int, max_queued_rows: int) -> IngestStats:
        with self._lock:
            return IngestStats(
                rows_committed=self._rows_committed,
                batches_committed=self._batches_committed,
                calls_rejected=self._calls_rejected,
                rows_queued=queued,
                rows_queued_peak=peak,
                max_queued_rows=max_queued_rows,
                batch_rows=percentiles(self._batch_rows),
                commit_ms=percentiles(self._commit_ms),
                commit_histogram=tuple(itertools.accumulate(self._commit_counts)),
                commit_seconds=self._commit_seconds,
                state=self._state,
                storage_failures=self._storage_failures,
                reopens=self._reopens,
                last_storage_error=self._last_storage_error,
            )
