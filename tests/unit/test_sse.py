"""The SSE parser (``streamapp.sse``): frames from byte chunks however they are cut, bounded,
and a bad frame costs only itself."""

from __future__ import annotations

import pytest

from streamapp.sse import UNREADABLE, SseFrame, SseParser


def frames_of(stream: bytes, *, chunk: int, limit: int = 100) -> list[SseFrame]:
    parser = SseParser(limit)
    return [f for at in range(0, len(stream), chunk) for f in parser.feed(stream[at : at + chunk])]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_sse_frames_are_bounded_and_a_bad_one_costs_only_itself(chunk: int) -> None:
    stream = (
        b'event: inotify\nid: 1\ndata: {"a": 1}\n\n'
        + b"id: 2\ndata: "
        + b"x" * 500
        + b"\n\n"  # one line over the bound
        + b"id: 3\ndata: "
        + b"y" * 250
        + b"\ndata: "
        + b"z" * 250
        + b"\n\n"  # a frame over the bound
        + b'id: 4\ndata: "\xff"\n\n'  # not UTF-8
        + b"id: "
        + b"9" * 300
        + b'\ndata: {"b": 2}\n\n'  # an id too long to send back: dropped
        + b': comment\r\nevent: SYSTEM\r\ndata: {"type": "X"}\r\n\r\n'
    )
    assert frames_of(stream, chunk=chunk, limit=400) == [
        SseFrame("inotify", "1", {"a": 1}),
        SseFrame(UNREADABLE, "2", "a line over 400 bytes"),
        SseFrame(UNREADABLE, "3", "a frame over 400 bytes"),
        SseFrame(UNREADABLE, "4", "a line that is not UTF-8"),
        SseFrame("message", None, {"b": 2}),
        SseFrame("SYSTEM", None, {"type": "X"}),
    ]


def test_sse_data_too_deep_for_json_is_no_data() -> None:
    stream = b"event: inotify\nid: 5\ndata: " + b"[" * 2000 + b"]" * 2000 + b"\n\n"
    assert frames_of(stream, chunk=4096, limit=10_000) == [SseFrame("inotify", "5", None)]


def test_a_frame_without_data_is_not_returned_and_ids_are_not_carried_over() -> None:
    # what the workers' /events view sends first and as heartbeats: an id, no data
    stream = b"retry: 2000\nid: 0:5\n\n: heartbeat\nid: 0:6\n\nevent: x\ndata: 1\n\n"
    assert frames_of(stream, chunk=5) == [SseFrame("x", None, 1)]
