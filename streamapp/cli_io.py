"""Line-oriented I/O shared by the offline commands (normalize, authorize...)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson


class InputError(Exception):
    """The input named on the command line cannot be read."""


def numbered_lines(file: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each non-blank line of FILE (``-``: stdin).

    Lines are bytes: a record that is not UTF-8 is the normalizer's to reject, not ours.
    """
    stream: BinaryIO
    if file in ("-", ""):
        stream = sys.stdin.buffer
        yield from _lines(stream)
        return
    path = Path(file)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
    with stream:
        yield from _lines(stream)


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        record = line.rstrip(b"\r\n")
        if record.strip():
            yield number, record


def write_json_line(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
