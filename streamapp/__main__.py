"""Console script ``streamapp``: faust's CLI with streamapp's commands.

The event loop is uvloop unless ``-L aio`` / ``--loop aio`` or ``STREAMAPP_LOOP=aio`` say
otherwise. faust-streaming 0.15 accepts ``-L`` but never acts on it (its CLI only records the
choice), so the loop policy is installed here, before faust creates its loop.
"""

from __future__ import annotations

import asyncio
import sys

from streamapp.settings import current  # no faust: safe before the loop policy is set


def chosen_loop(argv: list[str], configured: str) -> str:
    """The loop named by ``-L X`` / ``--loop X`` / ``--loop=X`` before the command, else the
    configured one (``STREAMAPP_LOOP``, uvloop by default)."""
    for index, arg in enumerate(argv[1:], start=1):
        if arg in ("-L", "--loop") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--loop="):
            return arg.split("=", 1)[1]
        if not arg.startswith("-"):
            break  # the command: options after it are the command's
    return configured


def install_loop(name: str) -> None:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 - only when chosen

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    install_loop(chosen_loop(sys.argv, current().event_loop))
    from streamapp.app import app  # noqa: PLC0415 - after the loop policy is in place

    app.main()


if __name__ == "__main__":
    main()
