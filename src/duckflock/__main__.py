"""``python -m duckflock`` and the ``duckflock`` console script: the CLI.

The CLI is the ``[cli]`` extra; without it, one line says what to install instead of
a traceback.
"""

from __future__ import annotations


def run() -> None:
    try:
        from duckflock.cli import main
    except ImportError as exc:
        raise SystemExit(f"error: {exc}") from None
    main()


if __name__ == "__main__":
    run()
