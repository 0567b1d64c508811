"""The failed-authentication back-off (server/backoff.py) on a test clock, and the log
redaction (server/redaction.py) that keeps what it logs free of secrets."""

from __future__ import annotations

import logging
import threading

import pytest

from duckflock.server.backoff import Backoff, Door, Refused
from duckflock.server.redaction import RedactingFilter, redact, remember


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(
    backoff: Backoff, times: int, address: str = "10.0.0.1", token: str | None = None
) -> None:
    for _ in range(times):
        backoff.failed(address, token, Door.HTTP)


def test_failures_cost_nothing_at_first_then_double_up_to_the_cap() -> None:
    clock = Clock()
    backoff = Backoff(free=2, base=0.1, cap=0.8, max_wait=100, clock=clock)
    waits = []
    for _ in range(7):
        waits.append(backoff.reserve("10.0.0.1", None, Door.HTTP))
        clock.now += waits[-1]  # the caller waits it out, then its check fails
        backoff.failed("10.0.0.1", None, Door.HTTP)
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 0.8])
    assert backoff.failures[Door.HTTP] == 7


def test_parallel_attempts_queue_behind_each_other_and_the_bound_refuses_unchecked() -> None:
    clock = Clock()
    backoff = Backoff(free=0, base=1.0, cap=1.0, max_wait=3.0, clock=clock)
    _fail(backoff, 1)
    # ten connections at once from one address: each waits one step more than the one
    # before; past max_wait they are refused without a check
    waits = []
    with pytest.raises(Refused) as refused:
        for _ in range(10):
            waits.append(backoff.reserve("10.0.0.1", None, Door.HTTP))
    assert waits == [1.0, 2.0, 3.0]
    assert refused.value.retry_after > 3.0 and "retry in" in str(refused.value)
    assert backoff.refusals[Door.HTTP] == 1


def test_another_address_and_the_right_token_are_not_slowed() -> None:
    clock = Clock()
    backoff = Backoff(free=0, base=1.0, cap=2.0, max_wait=5.0, clock=clock)
    _fail(backoff, 20, "10.0.0.1", "wrong-token")
    assert backoff.reserve("10.0.0.2", "right-token", Door.POSTGRES) == 0.0
    # a wrong token is slowed from any address: its own failures, not the address's
    assert backoff.reserve("10.0.0.3", "wrong-token", Door.POSTGRES) > 0


def test_the_back_off_recovers_and_its_memory_is_bounded() -> None:
    clock = Clock()
    backoff = Backoff(free=0, base=1.0, cap=2.0, max_wait=5.0, forget=60, max_keys=100, clock=clock)
    _fail(backoff, 5)
    assert backoff.reserve("10.0.0.1", None, Door.HTTP) > 0
    clock.now += 61
    assert backoff.reserve("10.0.0.1", None, Door.HTTP) == 0.0  # forgotten: afresh
    for i in range(1000):
        backoff.failed(f"10.1.{i // 256}.{i % 256}", f"token-{i}", Door.HTTP)
    assert backoff.tracked == 100
    clock.now += 61
    backoff.failed("10.9.9.9", None, Door.HTTP)  # the forgotten ones go with the next failure
    assert backoff.tracked == 1


def test_the_back_off_is_thread_safe() -> None:
    backoff = Backoff(free=1000, max_keys=50)
    start = threading.Barrier(8)

    def hammer(n: int) -> None:
        start.wait()
        for i in range(500):
            backoff.reserve(f"10.0.{n}.{i % 30}", f"t{i}", Door.HTTP)
            backoff.failed(f"10.0.{n}.{i % 30}", f"t{i}", Door.HTTP)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert backoff.failures[Door.HTTP] == 4000
    assert backoff.tracked == 50


def test_a_failure_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "duckflock.server.auth"):
        Backoff().failed("10.0.0.9", "secret-token-0123456789", Door.POSTGRES)
    assert "failed authentication over postgres from 10.0.0.9" in caplog.text
    assert "secret-token" not in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        "GET /v1/tables?access_token=SECRET HTTP/1.1",
        "GET /v1/tables?access%5Ftoken=SECRET HTTP/1.1",
        "GET /v1/tables?a=1&%61ccess%5ftoken=SECRET&b=2 HTTP/1.1",
        "GET /v1/tables?ACCESS_TOKEN=SECRET",
        # spellings the server does not take as a token, but whose value may be one
        "GET /v1/tables?access_token%3DSECRET HTTP/1.1",
        "GET /v1/tables?access+token=SECRET HTTP/1.1",
        "GET /v1/tables?;access_token=SECRET HTTP/1.1",
        "GET /v1/tables?access_token[]=SECRET HTTP/1.1",
        "Authorization: Bearer SECRET",
        "cannot open postgresql://user:SECRET@host/db",
        "ducklake:postgres:dbname=x password=SECRET host=y",
    ],
)
def test_redaction_hides_secrets_however_spelled(line: str) -> None:
    assert "SECRET" not in redact(line)


KNOWN = "known-token/+&=0123456789"  # a configured token, with URL-special characters
KNOWN_ENCODED = "known-token%2F%2B%26%3D0123456789"


@pytest.mark.parametrize(
    "line",
    [
        f"GET /v1/tables?access_token%3D{KNOWN_ENCODED} HTTP/1.1",
        f"GET /v1/tables?access+token={KNOWN_ENCODED} HTTP/1.1",
        f"GET /v1/tables?;access_token={KNOWN} HTTP/1.1",
        f"GET /v1/tables?access_token[]={KNOWN} HTTP/1.1",
        f"GET /v1/tables?anything={KNOWN_ENCODED}&b=2 HTTP/1.1",
        f"GET /v1/tables/{KNOWN_ENCODED.replace('k', '%6B')} HTTP/1.1",
        "GET /v1/tables?x=%6Bnown-token/+%26=0123456789 HTTP/1.1",  # split over pieces
        f"GET /v1/tables?x={KNOWN.replace('+', '%2B')} HTTP/1.1",
        f"a header: {KNOWN}",
    ],
)
def test_a_known_token_is_hidden_whatever_carries_it(line: str) -> None:
    remember([KNOWN])
    cleaned = redact(line)
    assert "<hidden>" in cleaned
    for spelling in (KNOWN, KNOWN_ENCODED, "0123456789"):
        assert spelling not in cleaned, cleaned


def test_the_filter_cleans_arguments_apart_and_tracebacks() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "x",
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/?access%5Ftoken=SECRET"),
        None,
    )
    try:
        raise ValueError("postgresql://u:SECRET@h/db")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert record.args == ("1.2.3.4", "GET", "/?access%5Ftoken=<hidden>")  # still apart
    assert record.exc_text is not None and "SECRET" not in record.exc_text
