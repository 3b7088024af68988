"""Server-sent events read incrementally from byte chunks, with a bound on every frame.

One parser for every SSE stream streamapp reads: the dCache bridge's (``clients.dcache``) and
the tests' readers of the dCache stand-in and of the workers' own ``/events`` view. Pure: no
I/O, ``SseParser.feed`` takes what a connection read and returns the frames it completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

# A frame over this size (or not UTF-8) is not decoded but reported as UNREADABLE: the stream
# stays bounded in memory whatever the server (or something in between) sends.
MAX_FRAME_BYTES: Final = 1 << 20
MAX_EVENT_ID_CHARS: Final = 200  # an id we would echo back as Last-Event-ID
UNREADABLE: Final = "streamapp:unreadable"  # the event name of a frame that could not be read


@dataclass(frozen=True, slots=True)
class SseFrame:
    event: str  # UNREADABLE: over MAX_FRAME_BYTES or not UTF-8; data is then the reason
    id: str | None
    data: Any  # decoded JSON, or None if the data was not JSON


class SseParser:
    """Server-sent events, incrementally from byte chunks, with a bound on every frame.

    A frame without ``data`` (a heartbeat, a bare ``id`` or ``retry``) is not returned; each
    frame's ``id`` is its own (None if it named none), not carried over from an earlier one."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._partial = bytearray()  # an unfinished line
        self._discarding = False  # the rest of an over-long line
        self._reset()

    def _reset(self) -> None:
        self._event = "message"
        self._id: str | None = None
        self._data: list[str] = []
        self._size = 0
        self._problem: str | None = None

    def feed(self, chunk: bytes) -> list[SseFrame]:
        frames: list[SseFrame] = []
        lines = chunk.split(b"\n")
        for number, piece in enumerate(lines):
            last = number == len(lines) - 1
            if self._discarding:
                self._discarding = last  # discarding ends with this line's newline
                continue
            self._partial += piece
            if len(self._partial) > self.max_frame_bytes:
                self._problem = f"a line over {self.max_frame_bytes} bytes"
                self._partial.clear()
                self._discarding = last
                continue
            if last:
                break
            line = bytes(self._partial).removesuffix(b"\r")
            self._partial.clear()
            if frame := self._line(line):
                frames.append(frame)
        return frames

    def _line(self, raw: bytes) -> SseFrame | None:
        if not raw:
            return self._dispatch()
        self._size += len(raw)
        if self._size > self.max_frame_bytes:
            self._problem = f"a frame over {self.max_frame_bytes} bytes"
            self._data.clear()
            return None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._problem = "a line that is not UTF-8"
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "id":
            # too long to send back as Last-Event-ID, or with a NUL (SSE ignores that too)
            if len(value) <= MAX_EVENT_ID_CHARS and "\x00" not in value:
                self._id = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> SseFrame | None:
        frame: SseFrame | None = None
        if self._problem is not None:
            frame = SseFrame(UNREADABLE, self._id, self._problem)
        elif self._data:
            frame = SseFrame(self._event, self._id, _json("\n".join(self._data)))
        self._reset()
        return frame


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # also JSON nested past orjson's depth limit
        return None
