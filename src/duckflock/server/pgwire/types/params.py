"""Bind parameters: text or binary, with the OID the client chose, as the Python values
DuckDB binds (text of a type without a text loader stays a string, which DuckDB casts
where it is used)."""

from __future__ import annotations

import decimal
import struct
from collections.abc import Callable
from typing import Any

from duckflock.server.pgwire.types import array
from duckflock.server.pgwire.types.registry import ADAPTERS, PARAMETER_ARRAYS


def _binary(oid: int, data: bytes) -> Any:
    if oid in PARAMETER_ARRAYS:
        return array.load_binary(data, _binary)
    adapter = ADAPTERS.get(oid)
    if adapter is None or adapter.load_binary is None:
        raise ValueError(
            f"binary parameters of type OID {oid} are not supported; send them as text"
        )
    return adapter.load_binary(data)


def _same(text: str) -> str:
    return text  # dates, times, uuids, json, unknown: DuckDB casts the string where used


def _text_loader(oid: int) -> Callable[[str], Any]:
    """What reads a text parameter of type ``oid`` (found once for all of an array's
    elements, not once per element)."""
    if oid in PARAMETER_ARRAYS:
        element = _text_loader(PARAMETER_ARRAYS[oid])
        return lambda text: array.load_text(text, element)
    adapter = ADAPTERS.get(oid)
    if adapter is None or adapter.load_text is None:
        return _same
    return adapter.load_text


def _text(oid: int, text: str) -> Any:
    return _text_loader(oid)(text)


class NotUtf8(ValueError):
    """Text from a client that is not UTF-8: PostgreSQL's 22021 (character_not_in_repertoire)."""

    @classmethod
    def of(cls, exc: UnicodeDecodeError, what: str, unit: str) -> NotUtf8:
        """``what`` (a string field) is not UTF-8, spelled as the CLI and the loaders
        spell it: the byte and where it is in the ``unit`` (the field)."""
        byte = f"byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1} of the {unit}"
        return cls(f"{what} is not UTF-8: {byte}")


def decode_param(oid: int, binary: bool, data: bytes | None) -> Any:
    """One Bind parameter as a Python value (ValueError when it cannot be read)."""
    if data is None:
        return None
    try:
        return _binary(oid, data) if binary else _text(oid, data.decode())
    except UnicodeDecodeError as exc:
        raise NotUtf8.of(exc, f"a parameter of type OID {oid}", "parameter") from None
    except (
        struct.error,
        decimal.InvalidOperation,
        IndexError,
        OverflowError,
    ) as exc:
        raise ValueError(f"cannot read a parameter of type OID {oid}: {exc}") from None
