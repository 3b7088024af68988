"""Line-oriented I/O shared by the offline commands (normalize, authorize...)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import orjson


class InputError(Exception):
    """The input named on the command line cannot be read."""


def numbered_lines(file: str, *, max_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each non-blank line of FILE (``-``: stdin).

    Lines are bytes: a record that is not UTF-8 is the normalizer's to reject, not ours. With
    ``max_bytes``, a longer line is cut after ``max_bytes + 1`` bytes (the rest is skipped): that
    is enough to reject it, and a hostile gigabyte line costs no gigabyte of memory.
    """
    stream: BinaryIO
    if file in ("-", ""):
        stream = sys.stdin.buffer
        yield from _lines(stream, max_bytes)
        return
    path = Path(file)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
    with stream:
        yield from _lines(stream, max_bytes)


def _lines(stream: BinaryIO, max_bytes: int | None) -> Iterator[tuple[int, bytes]]:
    if max_bytes is None:
        lines: Iterator[bytes] = iter(stream)
    else:
        lines = _bounded_lines(stream, max_bytes + 1)
    for number, line in enumerate(lines, start=1):
        record = line.rstrip(b"\r\n")
        if record.strip():
            yield number, record


def _bounded_lines(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    while line := stream.readline(limit):
        if len(line) == limit and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass  # the rest of an over-long line: skipped, never held
        yield line


def write_json_line(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")


def fail(command: str, message: str, code: int = 2) -> NoReturn:
    """End a command with ``streamapp COMMAND: MESSAGE`` on stderr and exit status ``code``."""
    print(f"streamapp {command}: {message}", file=sys.stderr)
    raise SystemExit(code)
