"""Console script ``streamapp``: faust's CLI with streamapp's commands.

The event loop defaults to uvloop (faust's own default is asyncio's): ``-L``/``--loop`` on the
command line, or ``STREAMAPP_LOOP=aio``, choose another.
"""

from __future__ import annotations

import os
import sys

from streamapp.app import app

DEFAULT_LOOP = "uvloop"


def with_default_loop(argv: list[str], env: dict[str, str] | os._Environ[str]) -> list[str]:
    """``argv`` with ``-L <loop>`` added before the command unless a loop is chosen already."""
    if any(arg in ("-L", "--loop") or arg.startswith("--loop=") for arg in argv[1:]):
        return argv
    loop = env.get("STREAMAPP_LOOP", "") or DEFAULT_LOOP
    return [argv[0], "-L", loop, *argv[1:]]


def main() -> None:
    sys.argv = with_default_loop(sys.argv, os.environ)
    app.main()


if __name__ == "__main__":
    main()
