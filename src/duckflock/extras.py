"""Optional parts of duckflock and the one error that names the extra to install.

The core (``import duckflock``) needs DuckDB and pyarrow only; the HTTP client, the
server and the command line each come with an extra: ``pip install 'duckflock[client]'``,
``[server]``, ``[cli]``, or ``[all]``.
"""

from __future__ import annotations

import importlib


def require(extra: str, what: str, *modules: str) -> None:
    """Import ``modules`` or raise an ImportError naming the extra that provides them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise missing(extra, what, exc) from exc


def missing(extra: str, what: str, exc: ImportError) -> ImportError:
    """The ImportError to raise when ``what`` cannot import a module of ``extra``."""
    name = exc.name or str(exc)
    return ImportError(
        f"{what} needs the {extra!r} extra ({name} is not installed): "
        f"pip install 'duckflock[{extra}]'"
    )
