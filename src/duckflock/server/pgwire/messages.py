"""Protocol 3.0 messages: reading frames from a socket, building the server's replies.

Every message after start-up is a type byte, a 4-byte length (itself included) and a
body; the start-up packet has no type byte. A frame over :data:`MAX_MESSAGE` bytes is
refused before it is read, so a client cannot make the server buffer gigabytes.
Errors map onto SQLSTATE codes by the ``sqlstate`` each duckflock error class declares
(:func:`sqlstate`).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from enum import Enum

from duckflock.errors import DuckflockError, RowRejectedError
from duckflock.server.pgwire.types import NotUtf8 as TextNotUtf8
from duckflock.server.pgwire.types import OutOfRange

MAX_MESSAGE = 64 * 2**20  # bytes of one client message (a Bind's parameters, a long query)
# bytes of a password or SASL message, read before anyone is authenticated: PostgreSQL's
# own PG_MAX_AUTH_TOKEN_LENGTH (16 start-ups announcing 64 MiB each held ~1 GB before)
MAX_AUTH_MESSAGE = 65_535
MAX_ERROR_TEXT = 4000  # characters of an error message (one may echo a 64 MiB parameter)
SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST, PROTOCOL_3 = 80877103, 80877104, 80877102, 196608

_I2, _I4 = struct.Struct("!h"), struct.Struct("!i")


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed after saying so."""


class Disconnected(Exception):
    """The client went away."""


class Reader:
    """Frames from a socket (plain or TLS). With a ``deadline`` (``time.monotonic()``)
    every read ends by it: a socket timeout alone bounds each recv, so a client sending
    a byte at a time would never be cut off."""

    def __init__(self, sock: socket.socket, deadline: float | None = None) -> None:
        self.sock = sock
        self.deadline = deadline

    def exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the client took too long to start up")
                self.sock.settimeout(left)
            chunk = self.sock.recv(min(count, 1 << 20))
            if not chunk:
                raise Disconnected
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def startup(self) -> tuple[int, bytes]:
        """The start-up packet's code and body."""
        length = _I4.unpack(self.exactly(4))[0]
        if not 8 <= length <= 10_000:
            raise ProtocolError(f"a start-up packet of {length} bytes")
        body = self.exactly(length - 4)
        return _I4.unpack(body[:4])[0], body[4:]

    def message(self, limit: int = MAX_MESSAGE) -> tuple[bytes, bytes]:
        """The next message's type byte and body; one announcing more than ``limit``
        bytes is refused before its body is read."""
        head = self.exactly(5)
        length = _I4.unpack(head[1:])[0]
        if length < 4 or length > limit:
            raise ProtocolError(f"a message of {length} bytes (the limit is {limit})")
        return head[:1], self.exactly(length - 4)


class Body:
    """Reads the fields of one message body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def int16(self) -> int:
        try:
            value = _I2.unpack_from(self.data, self.at)[0]
        except struct.error:
            raise ProtocolError("a message ends in the middle of a field") from None
        self.at += 2
        return int(value)

    def int32(self) -> int:
        try:
            value = _I4.unpack_from(self.data, self.at)[0]
        except struct.error:
            raise ProtocolError("a message ends in the middle of a field") from None
        self.at += 4
        return int(value)

    def string(self) -> str:
        end = self.data.find(b"\x00", self.at)
        if end < 0:
            raise ProtocolError("a string field has no terminating zero byte")
        try:
            text = self.data[self.at : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUtf8.of(exc, "a string field", "field") from None
        self.at = end + 1
        return text

    def raw(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            raise ProtocolError("a field runs past the end of its message")
        value = self.data[self.at : self.at + count]
        self.at += count
        return value


class Frontend(bytes, Enum):
    """The type byte of each message a client sends after start-up."""

    QUERY = b"Q"
    PARSE = b"P"
    BIND = b"B"
    DESCRIBE = b"D"
    EXECUTE = b"E"
    CLOSE = b"C"
    FLUSH = b"H"
    SYNC = b"S"
    TERMINATE = b"X"
    PASSWORD = b"p"  # a password, or a SASL message
    COPY_DATA = b"d"
    COPY_DONE = b"c"
    COPY_FAIL = b"f"


class Backend(bytes, Enum):
    """The type byte of each message this server sends."""

    AUTHENTICATION = b"R"
    BACKEND_KEY_DATA = b"K"
    PARAMETER_STATUS = b"S"
    READY_FOR_QUERY = b"Z"
    PARSE_COMPLETE = b"1"
    BIND_COMPLETE = b"2"
    CLOSE_COMPLETE = b"3"
    PARAMETER_DESCRIPTION = b"t"
    NO_DATA = b"n"
    ROW_DESCRIPTION = b"T"
    DATA_ROW = b"D"
    EMPTY_QUERY = b"I"
    PORTAL_SUSPENDED = b"s"
    COMMAND_COMPLETE = b"C"
    COPY_OUT_RESPONSE = b"H"
    COPY_DATA = b"d"
    COPY_DONE = b"c"
    NOTIFICATION = b"A"
    NOTICE = b"N"
    ERROR = b"E"


def message(kind: Backend, body: bytes = b"") -> bytes:
    return kind + _I4.pack(len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\x00", b"") + b"\x00"


def parameter_status(name: str, value: str) -> bytes:
    return message(Backend.PARAMETER_STATUS, cstr(name) + cstr(value))


def ready(status: bytes) -> bytes:
    return message(Backend.READY_FOR_QUERY, status)


def command_complete(tag: str) -> bytes:
    return message(Backend.COMMAND_COMPLETE, cstr(tag))


def row_description(columns: Iterable[tuple[str, int, int, int]]) -> bytes:
    """``columns``: (name, type OID, type size, format code)."""
    parts = []
    for name, oid, size, fmt in columns:
        parts.append(cstr(name) + struct.pack("!ihihih", 0, 0, oid, size, -1, fmt))
    return message(Backend.ROW_DESCRIPTION, _I2.pack(len(parts)) + b"".join(parts))


def notification(pid: int, channel: str, payload: str) -> bytes:
    return message(Backend.NOTIFICATION, _I4.pack(pid) + cstr(channel) + cstr(payload))


def notice(text: str, code: str = "01000") -> bytes:
    fields = b"SWARNING\x00VWARNING\x00C" + cstr(code) + b"M" + cstr(text)
    return message(Backend.NOTICE, fields + b"\x00")


def error(text: str, code: str, severity: str = "ERROR") -> bytes:
    fields = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code)
    return message(Backend.ERROR, fields + b"M" + cstr(text) + b"\x00")


class NotUtf8(ProtocolError, TextNotUtf8):
    """A whole message whose string field is not UTF-8: after start-up an ERROR
    (PostgreSQL's 22021, character_not_in_repertoire) and the session goes on, as the
    message's bounds were read; during start-up a protocol violation like any other."""


class LimitExceeded(ValueError):
    """A per-connection limit was reached (prepared statements, portals)."""


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE code for a duckflock error (XX000, internal_error, when unknown)."""
    if isinstance(exc, LimitExceeded):
        return "54000"  # program_limit_exceeded
    if isinstance(exc, TextNotUtf8):  # a message's field or a parameter
        return "22021"  # character_not_in_repertoire
    if isinstance(exc, OutOfRange):
        return "22008"  # datetime_field_overflow
    if isinstance(exc, RowRejectedError) and isinstance(exc.cause, DuckflockError):
        return sqlstate(exc.cause)  # the row's own fault: a conversion, a constraint
    if isinstance(exc, DuckflockError):
        return exc.sqlstate  # declared on the class (duckflock.errors)
    if isinstance(exc, ValueError | TypeError):
        return "22023"  # invalid_parameter_value
    return "XX000"
