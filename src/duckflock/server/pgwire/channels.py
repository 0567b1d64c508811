"""LISTEN/NOTIFY: a connection's channels are analyses, notified when a version lands.

``LISTEN per_thread`` subscribes to the analysis (``db.subscribe``); each newer version
queues a NotificationResponse (channel: the analysis, payload: its version) and wakes
the connection's thread through a socket pair, because only that thread may write to
its socket. A slow connection skips versions, as every duckflock watcher does.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import threading

from duckflock.database import Database
from duckflock.live.results import Result, Subscription
from duckflock.server.pgwire.messages import notification


class Channels:
    """The analyses one connection listens to, and notifications not yet sent."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._subscriptions: dict[str, Subscription] = {}
        self._notes: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()  # guards _notes and _wake
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def listening(self) -> bool:
        return bool(self._subscriptions)

    def listen(self, name: str, pid: int) -> None:
        if name in self._subscriptions:
            return
        current = self.db.result(name)  # UnknownAnalysisError now
        seen = current.version if current is not None else 0

        def deliver(result: Result) -> None:  # on the subscription's thread
            if result.version > seen:
                self._queue(notification(pid, name, str(result.version)))

        with self._lock:
            if self._wake is None:
                self._wake = socket.socketpair()
        self._subscriptions[name] = self.db.subscribe(name, deliver)

    def unlisten(self, name: str) -> None:
        names = list(self._subscriptions) if name == "*" else [name]
        for each in names:
            subscription = self._subscriptions.pop(each, None)
            if subscription is not None:
                subscription.cancel(timeout=1.0)

    def _queue(self, note: bytes) -> None:
        with self._lock:
            self._notes.append(note)
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    self._wake[1].send(b"\x00")

    def take(self) -> list[bytes]:
        """The notifications to send now."""
        with self._lock:
            notes = list(self._notes)
            self._notes.clear()
        return notes

    def wait(self, sock: socket.socket, timeout: float | None = None) -> bool:
        """Wait for the client (True), or a notification or ``timeout`` seconds (False)."""
        wake = self._wake
        if wake is None and timeout is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if wake is not None:
            poller.register(wake[0].fileno(), select.POLLIN)
        events = dict(poller.poll(None if timeout is None else int(timeout * 1000) + 1))
        if wake is not None and wake[0].fileno() in events:
            with contextlib.suppress(OSError):
                wake[0].recv(4096)
        return sock.fileno() in events

    def close(self) -> None:
        self.unlisten("*")
        with self._lock:
            wake, self._wake = self._wake, None
        for end in wake or ():
            end.close()
