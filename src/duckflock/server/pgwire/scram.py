"""SCRAM-SHA-256 (RFC 5802/7677) with the server's tokens as passwords.

Tokens have no user names: the user name a client sends is ignored and the proof is
checked against every token's keys. That works because all tokens share one salt and
iteration count (made at start), so the server's first message does not depend on
which token the client holds. The proof is compared against every token, in constant
time each, so the time taken does not tell which one matched. The token itself never
crosses the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

ITERATIONS = 4096
MECHANISM = "SCRAM-SHA-256"


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@dataclass(frozen=True)
class _Keys:
    stored: bytes
    server: bytes
    role: str
    token: int  # its index in the tokens given (the service's name for the token)


class ScramKeys:
    """Every token's stored and server keys, under one salt."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.salt = secrets.token_bytes(16)
        self._keys = []
        for index, (token, role) in enumerate(tokens.items()):
            salted = hashlib.pbkdf2_hmac("sha256", token.encode(), self.salt, ITERATIONS)
            client_key = _hmac(salted, b"Client Key")
            stored = hashlib.sha256(client_key).digest()
            self._keys.append(_Keys(stored, _hmac(salted, b"Server Key"), role, index))

    def exchange(self) -> ScramExchange:
        return ScramExchange(self)

    def match(self, proof: bytes, auth_message: bytes) -> _Keys | None:
        found = None
        for keys in self._keys:
            signature = _hmac(keys.stored, auth_message)
            client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
            ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), keys.stored)
            if ok and found is None:
                found = keys
        return found


def _attributes(message: str) -> dict[str, str]:
    found = {}
    for part in message.split(","):
        if len(part) >= 2 and part[1] == "=":
            found[part[0]] = part[2:]
    return found


class ScramExchange:
    """One client's authentication: first message in, final message in, role out."""

    def __init__(self, keys: ScramKeys) -> None:
        self.keys = keys
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.token: int | None = None  # the index of the token that matched, once one did

    def server_first(self, client_first: bytes) -> bytes:
        """The challenge for the client's first message (ValueError when malformed)."""
        text = client_first.decode("utf-8")
        if not text.startswith(("n,", "y,")):
            raise ValueError("SCRAM channel binding is not supported here; use sslmode without it")
        header_end = text.index(",", 2) + 1
        self._client_first_bare = text[header_end:]
        client_nonce = _attributes(self._client_first_bare).get("r", "")
        if not client_nonce:
            raise ValueError("the SCRAM client-first message has no nonce")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.keys.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={ITERATIONS}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes) -> tuple[str, bytes] | None:
        """(role, the server's final message) when the proof matches a token, else None."""
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            return None  # a failed authentication, not an internal error
        attributes = _attributes(text)
        proof_at = text.rfind(",p=")
        if attributes.get("r") != self._nonce or "p" not in attributes or proof_at < 0:
            return None
        without_proof = text[:proof_at]
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        try:
            proof = base64.b64decode(attributes["p"], validate=True)
        except ValueError:
            return None
        keys = self.keys.match(proof, auth_message.encode())
        if keys is None:
            return None
        self.token = keys.token
        signature = base64.b64encode(_hmac(keys.server, auth_message.encode())).decode()
        return keys.role, f"v={signature}".encode()
