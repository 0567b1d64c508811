"""A one-object JSON body parsed by json's scanner directly (``formats.one_object``):
the value ``json.loads`` gives, or no fast answer (``json.loads`` then parses, or says
why not)."""

from __future__ import annotations

import json

import pytest

from duckflock.errors import RequestError
from duckflock.server import formats
from duckflock.server.formats import loads, one_object

BODIES = [
    b'{"p": 1, "i": 2}',
    b"{}",
    b'{"a": [1, 2, {"b": null}], "c": "\\ud800", "d": true}',
    b'{"x": 1e999, "n": NaN, "m": -Infinity}',
    b'{"s": "\xc3\xa9", "k": 123456789012345678901234567890}',
    b'{"a": 1, "a": 2}',
    b'{"a":' * 50 + b"{}" + b"}" * 50,
    b'{"x": 1} ',  # the rest: json.loads's to parse or refuse
    b' {"x": 1}',
    b'{"x": 1}}',
    b'{"x": 1}{"y": 2}',
    b'{"s": "\xff"}',
    b'{\x00"\x00}\x00',
    b'{"k": ' + b"9" * 5000 + b"}",
    b'{"a":' * 5000 + b"}" * 5000,
    b'{"x": }',
    b"[1]",
]


def _outcome(body: bytes) -> str:
    try:
        return repr(loads(body, "JSON"))
    except RequestError as exc:
        return f"RequestError: {exc}"


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_one_object_is_what_json_loads_gives(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = one_object(body)
    try:
        expected: object = json.loads(body)
    except (ValueError, RecursionError):
        assert fast is None
    else:
        assert fast is None or repr(fast) == repr(expected)
    with_fast = _outcome(body)
    monkeypatch.setattr(formats, "one_object", lambda text: None)
    assert with_fast == _outcome(body)  # value or error, as without the fast path
