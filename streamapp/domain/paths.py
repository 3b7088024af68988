"""Logical object paths: one normal form for every storage, so datasets can match on them.

Bounds on an object's path (``check_object_path``), each a limit something downstream has:
at most ``MAX_PATH_BYTES`` bytes of UTF-8 (Linux ``PATH_MAX``, and every token minted for the
file carries the path in a caveat), at most ``MAX_SEGMENTS`` segments, each at most
``MAX_SEGMENT_BYTES`` bytes (``NAME_MAX``), no NUL and no other control character (U+0000 to
U+001F, U+007F: no data file needs one, and they forge log lines and break line-based formats).
"""

from __future__ import annotations

import re
from typing import Final

MAX_PATH_BYTES: Final = 4096
MAX_SEGMENTS: Final = 256
MAX_SEGMENT_BYTES: Final = 255
_CONTROL_CHARACTER: Final = re.compile("[\\x00-\\x1f\\x7f]")


class PathError(ValueError):
    """A path that cannot be resolved to a normal absolute path inside its root."""


def normalize_absolute_path(path: str) -> str:
    """Resolve ``path`` lexically to ``/a/b/c``: no empty, ``.`` or ``..`` segments, no NUL.

    ``..`` may climb within the path but never above ``/``: such a path escapes its root and is
    refused, as is a relative path (it has no root to resolve against).
    """
    if not path.startswith("/"):
        raise PathError(f"path is not absolute: {path!r}")
    if "//" not in path and "/." not in path and "\x00" not in path and path[-1] != "/":
        return path  # already normal (the usual case): what resolving would give back
    return "/" + "/".join(resolve_segments(path[1:], what="path"))


def resolve_segments(relative: str, *, what: str) -> list[str]:
    """Resolve the ``/``-separated ``relative`` into clean segments, refusing escapes and NULs."""
    if "\x00" in relative:
        raise PathError(f"{what} contains a NUL byte")
    segments: list[str] = []
    for segment in relative.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise PathError(f"{what} escapes its root via '..'")
            segments.pop()
            continue
        segments.append(segment)
    return segments


def check_object_path(path: str, *, what: str = "path") -> str:
    """``path`` (already normal: ``/a/b``) if it names an object within the bounds above."""
    if path == "/":
        raise PathError(f"{what} is the root '/', which names no object")
    _refuse_control_characters(path, what)
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise PathError(f"{what} is not valid Unicode (a lone surrogate)") from None
    if size > MAX_PATH_BYTES:
        raise PathError(f"{what} is {size} bytes of UTF-8, over the {MAX_PATH_BYTES}-byte limit")
    segments = path[1:].split("/")
    if len(segments) > MAX_SEGMENTS:
        raise PathError(f"{what} has {len(segments)} segments, over the {MAX_SEGMENTS} limit")
    if size == len(path) and max(map(len, segments)) <= MAX_SEGMENT_BYTES:
        return path  # ASCII (a character is a byte) and every segment short: the usual path
    for segment in segments:
        if len(encoded := segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise PathError(
                f"{what} has a segment of {len(encoded)} bytes, "
                f"over the {MAX_SEGMENT_BYTES}-byte limit: {shown(segment)}"
            )
    return path


def s3_object_path(bucket: str, key: str) -> str:
    """``/<bucket>/<key>``, the key taken literally: a key that would not read back as itself
    from that path (``.``/``..``/empty segments, a leading or trailing ``/``) is refused, never
    rewritten: rewriting would name another object, possibly in another tenant's dataset."""
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise PathError(f"invalid bucket name {shown(bucket)}")
    _refuse_control_characters(bucket, "bucket name")
    _refuse_control_characters(key, "object key")
    if not key:
        raise PathError(f"object key is empty: it names no object inside bucket {shown(bucket)}")
    if key.startswith("/"):
        raise PathError(f"object key {shown(key)} starts with '/' (keys are taken literally)")
    if key.endswith("/"):
        raise PathError(f"object key {shown(key)} ends with '/': a folder marker, not an object")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            name = f"a {segment!r}" if segment else "an empty"
            raise PathError(
                f"object key {shown(key)} has {name} segment (keys are taken literally, "
                "never resolved)"
            )
    return check_object_path(f"/{bucket}/{key}", what="S3 object path")


def shown(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to about ``limit`` characters: reasons quote hostile input, bounded."""
    try:
        text = repr(value[:limit] if isinstance(value, str) else value)
    except (ValueError, RecursionError):  # an int too long to print, a too deep value
        text = f"<{type(value).__name__}>"
    if len(text) > limit + 2:
        text = text[:limit] + "…"
    if isinstance(value, str) and len(value) > limit:
        text += f"… ({len(value)} characters)"
    return text


def _refuse_control_characters(text: str, what: str) -> None:
    if found := _CONTROL_CHARACTER.search(text):
        character = found.group()
        name = "a NUL byte" if character == "\x00" else f"control character U+{ord(character):04X}"
        raise PathError(f"{what} contains {name}")
