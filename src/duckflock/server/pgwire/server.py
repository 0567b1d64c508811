"""The Postgres port's listener: one named thread accepting, one per connection.

Blocking threads, not asyncio: every statement is a blocking DuckDB call anyway, a
connection is mostly idle between statements, and the number of connections is capped:
``max_connections`` past start-up, and apart from them ``max_startups`` still starting
up (and ``max_startups_per_peer`` from one address). A refused connection gets
``too_many_connections`` once its first packet is read. Statements run at once are
capped by the serving service's query slots — the same pool as the HTTP side's, so
``concurrency`` counts both protocols together. ``stop()`` stops accepting, interrupts
running queries, closes every connection and joins the threads within a bound.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time

from duckflock.database import Database
from duckflock.server.connections import PeerLimit
from duckflock.server.pgwire import connection
from duckflock.server.pgwire.execute import Executor
from duckflock.server.pgwire.host import Cancellable
from duckflock.server.pgwire.messages import (
    CANCEL_REQUEST,
    GSS_REQUEST,
    SSL_REQUEST,
    ProtocolError,
    Reader,
    error,
)
from duckflock.server.pgwire.scram import ScramKeys
from duckflock.server.pgwire.session import Session
from duckflock.server.service import Service
from duckflock.server.settings import PgSettings, ServerSettings

log = logging.getLogger("duckflock.pgwire")
_REFUSERS = 8  # refused connections answered at once; past that they are closed unanswered
_REFUSE_SECONDS = 2.0  # how long a refused client has to send its first packet


class PgServer:
    """Serves ``db`` over the PostgreSQL protocol: a protocol layer over ``service`` (the
    serving service it shares with the HTTP app; made from ``db`` and ``settings`` when
    not given), with the listener options of ``pg``."""

    def __init__(
        self,
        db: Database,
        settings: ServerSettings | None,
        pg: PgSettings,
        *,
        service: Service | None = None,
    ) -> None:
        if service is None:
            service = Service(db, settings)
        elif service.db is not db or (settings is not None and settings != service.settings):
            raise ValueError("PgServer: the service serves another database or settings")
        settings = service.settings
        self.db = db
        self.pg = pg
        self.service = service
        self.backoff = service.backoff  # the HTTP app's too: one back-off for both ports
        self.peers = PeerLimit(pg.max_connections_per_peer)
        self.max_sql = settings.max_request_json  # the HTTP query body's cap, for SQL text
        self.guard = service.guard
        self.executor = Executor(service)
        self.row_cap = settings.query_row_cap
        self.per_client = settings.per_client  # suspended results one connection may hold
        self.byte_cap = settings.query_byte_cap
        self.tokens = service.tokens
        self.scram = ScramKeys(settings.all_tokens())
        self.cleartext = pg.cleartext
        self.require_tls = pg.require_tls
        self.startup_timeout = pg.startup_timeout
        self.tls: ssl.SSLContext | None = None
        if pg.certfile:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(pg.certfile, pg.keyfile)
        self._lock = threading.Lock()  # guards _sessions, _connections, _next_pid
        self._sessions: dict[int, Cancellable] = {}  # authenticated, by backend pid
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._starting: dict[threading.Thread, str] = {}  # in start-up: the peer's address
        self._logged_in: dict[threading.Thread, str] = {}  # past start-up: counted in peers
        self._refusing = 0  # threads answering a refused connection (at most _REFUSERS)
        self._next_pid = 1000
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        assert self._listener is not None, "start() the server first"
        return int(self._listener.getsockname()[1])

    def start(self) -> PgServer:
        listener = socket.create_server((self.pg.host, self.pg.port), backlog=128)
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, name="duckflock-pg-accept", daemon=True
        )
        self._acceptor.start()
        log.info("Postgres protocol on %s:%d", self.pg.host, self.port)
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        count = 0
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except OSError:
                return  # the listener was closed: stop() is running
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = str(address[0])
            with self._lock:
                refusal = self._refusal(peer)
                if refusal is None:
                    count += 1
                    thread = threading.Thread(
                        target=self._serve, args=(sock,), name=f"duckflock-pg-{count}", daemon=True
                    )
                    self._connections[thread] = sock
                    self._starting[thread] = peer
                    thread.start()
                    continue
                answer = self._refusing < _REFUSERS
                self._refusing += answer
            if answer:
                threading.Thread(
                    target=self._refuse,
                    args=(sock, refusal),
                    name="duckflock-pg-refuse",
                    daemon=True,
                ).start()
            else:  # a flood: no thread more, the socket is closed unanswered
                sock.close()

    def _refusal(self, peer: str) -> str | None:
        """Why a new connection from ``peer`` is refused, or None (under the lock)."""
        if self._stopping.is_set():
            return "the server is shutting down"
        same_peer = sum(1 for other in self._starting.values() if other == peer)
        if (
            len(self._starting) >= self.pg.max_startups
            or same_peer >= self.pg.max_startups_per_peer
        ):
            return "too many connections starting up on this server"
        if len(self._connections) - len(self._starting) >= self.pg.max_connections:
            return "too many connections to this server"
        return None

    def _refuse(self, sock: socket.socket, text: str) -> None:
        """Read the client's first packet (answering an SSL request with N), then send
        53300: an error sent before it is read is taken for a failed TLS exchange. A
        cancel request is still carried out."""
        try:
            reader = Reader(sock, time.monotonic() + _REFUSE_SECONDS)
            sock.settimeout(_REFUSE_SECONDS)
            code, body = reader.startup()
            if code in (SSL_REQUEST, GSS_REQUEST):
                sock.sendall(b"N")
                code, body = reader.startup()
            if code == CANCEL_REQUEST and len(body) >= 8:
                self.cancel(*struct.unpack("!ii", body[:8]))
            else:
                sock.sendall(error(text, "53300", "FATAL"))
        except (OSError, ProtocolError, struct.error):
            pass  # a client that sends nothing useful in time just gets the end
        finally:
            sock.close()
            with self._lock:
                self._refusing -= 1

    def _serve(self, sock: socket.socket) -> None:
        try:
            connection.serve(Session(self, sock))
        except Exception:  # the session's own handlers report to the client
            log.exception("Postgres connection failed")
        finally:
            with self._lock:
                self._connections.pop(threading.current_thread(), None)
                self._starting.pop(threading.current_thread(), None)
                peer = self._logged_in.pop(threading.current_thread(), None)
            if peer is not None:
                self.peers.leave(peer)

    def established(self) -> str | None:
        """The calling session's start-up is done: it counts against ``max_connections``
        and its address's ``max_connections_per_peer`` from now on (or why it must end:
        a budget is full)."""
        thread = threading.current_thread()
        with self._lock:
            peer = self._starting.pop(thread, "unknown")
            if len(self._connections) - len(self._starting) > self.pg.max_connections:
                self._connections.pop(thread, None)
                return "too many connections to this server"
            if not self.peers.enter(peer):
                self._connections.pop(thread, None)
                return "too many connections from this address"
            self._logged_in[thread] = peer
            return None

    def register(self, session: Cancellable) -> int:
        with self._lock:
            self._next_pid += 1
            self._sessions[self._next_pid] = session
            return self._next_pid

    def unregister(self, session: Cancellable) -> None:
        with self._lock:
            if self._sessions.get(session.pid) is session:
                del self._sessions[session.pid]

    def cancel(self, pid: int, secret: int) -> None:
        with self._lock:
            session = self._sessions.get(pid)
        if session is not None:
            session.cancel(secret)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, interrupt queries, close connections; bounded by ``timeout``."""
        self._stopping.set()
        self.service.stop()
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes accept(), which close() alone does not
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            connections = dict(self._connections)
        for sock in connections.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        for thread in connections:
            thread.join(timeout / max(len(connections), 1))
