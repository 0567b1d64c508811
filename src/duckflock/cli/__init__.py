"""The ``duckflock`` command (the ``[cli]`` extra): thin skins over the library.

Each command parses its arguments, makes one library call (or one Client call for a
server URL) and renders the result. The demo and benchmark scenarios live here too:
they are programs of the command line, not part of the embedded library.
"""

from __future__ import annotations

from duckflock.extras import require

require("cli", "the duckflock command", "click", "rich")

from duckflock.cli.app import cli, main, reference  # noqa: E402  (after the check that names the extra)

__all__ = ["cli", "main", "reference"]
