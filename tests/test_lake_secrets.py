"""A lake's PostgreSQL password stays out of errors and their tracebacks, in both of
libpq's spellings (``password=…`` and a ``postgresql://user:password@host`` URI)."""

from __future__ import annotations

import traceback

import pytest

import duckflock
from duckflock.lake.connection import redact

SECRET = "S3CRET-pw-42"


@pytest.mark.parametrize(
    "text",
    [
        f"host=h password={SECRET} dbname=x",
        f"host=h password='{SECRET}' dbname=x",
        f"postgresql://user:{SECRET}@127.0.0.1:5432/x",
        f"postgres://user:{SECRET}@h/x?sslmode=disable",
        f'Unable to connect to Postgres at "postgresql://u:{SECRET}@h:1/x": refused',
    ],
)
def test_redact_hides_the_password(text: str) -> None:
    assert SECRET not in redact(text)


@pytest.mark.parametrize(
    "target",
    [
        f"ducklake:postgres:host=127.0.0.1 port=1 password={SECRET} dbname=x",
        f"ducklake:postgres:postgresql://u:{SECRET}@127.0.0.1:1/x",
    ],
)
def test_a_lake_that_cannot_be_opened_keeps_its_password_out_of_the_traceback(
    target: str, tmp_path: object
) -> None:
    with pytest.raises(duckflock.OpenError) as failed:
        duckflock.connect(target, data_path=str(tmp_path))
    shown = "".join(traceback.format_exception(failed.value))  # what logging.exception writes
    assert "Unable to connect" in shown or "connect" in shown
    assert SECRET not in shown
    assert SECRET not in repr(failed.value.fields())


def test_repr_and_closed_errors_of_a_lake_hide_the_password(tmp_path: object) -> None:
    # a DuckDB-file catalog has no password: a file named like one stands in for the
    # connection string of a PostgreSQL catalog (shown the same way)
    db = duckflock.connect(f"ducklake:{tmp_path}/password={SECRET}", data_path=f"{tmp_path}/d")
    db.close()
    assert SECRET not in repr(db)
    with pytest.raises(duckflock.ClosedError) as closed:
        db.execute("SELECT 1")
    assert SECRET not in str(closed.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"expire_older_than": "banana"}, ValueError),
        ({"expire_older_than": 3600}, TypeError),
        ({"maintenance": "flush"}, TypeError),
    ],
)
def test_lake_options_refuse_what_maintenance_would_fail_on_later(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error, match=next(iter(options))):
        duckflock.LakeOptions(**options)  # type: ignore[arg-type]
    assert duckflock.LakeOptions(expire_older_than="2 days").expire_older_than == "2 days"
