"""duckflock over the PostgreSQL wire protocol (protocol 3.0): psql, drivers, BI tools.

Written here rather than taken from a library: buenavista 0.5.0 (the one that installs)
offers MD5 authentication only, answers a cancel request by dropping the session,
sends errors without SQLSTATE codes and text results only, and has no LISTEN/NOTIFY;
those are the parts this port needs most. The protocol itself is small: framing
(:mod:`.messages`), types (:mod:`.types`, adapter families as psycopg 3 lays them out;
:mod:`.encode`), SCRAM (:mod:`.scram`), client chatter (:mod:`.compat`), the server's
policy (:mod:`.execute`), one connection (its state :mod:`.session`; :mod:`.startup`,
:mod:`.connection` with the simple query, :mod:`.extended`, :mod:`.running`) and the
listener (:mod:`.server`, which sessions reach through :mod:`.host`).
"""

from duckflock.server.pgwire.server import PgServer
from duckflock.server.settings import PgSettings

__all__ = ["PgServer", "PgSettings"]
