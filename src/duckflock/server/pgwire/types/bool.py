"""boolean: ``t``/``f`` as text, one byte as binary."""

from __future__ import annotations

from duckflock.server.pgwire.types.adapt import Adapter
from duckflock.server.pgwire.types.table import Oid

# what PostgreSQL's boolin takes (any prefix of true/false/yes/no, on/off, 1/0)
_TRUE_TEXT = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE_TEXT = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}
SPACE = " \t\n\r\v\f"  # what PostgreSQL's input functions skip (not str.strip's \x1c-\x1f)


def _load_text(text: str) -> bool:
    word = text.strip(SPACE).lower()
    if word in _TRUE_TEXT or word in _FALSE_TEXT:
        return word in _TRUE_TEXT
    raise ValueError(f"invalid input syntax for type boolean: {text!r}")


ADAPTERS = (
    Adapter(
        Oid.BOOL,
        dump_text=lambda v: b"t" if v else b"f",
        dump_binary=lambda v: b"\x01" if v else b"\x00",
        load_text=_load_text,
        load_binary=lambda data: data != b"\x00",
    ),
)
