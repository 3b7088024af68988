"""Logical object paths: one normal form for every storage, so datasets can match on them."""

from __future__ import annotations


class PathError(ValueError):
    """A path that cannot be resolved to a normal absolute path inside its root."""


def normalize_absolute_path(path: str) -> str:
    """Resolve ``path`` lexically to ``/a/b/c``: no empty, ``.`` or ``..`` segments, no NUL.

    ``..`` may climb within the path but never above ``/``: such a path escapes its root and is
    refused, as is a relative path (it has no root to resolve against).
    """
    if not path.startswith("/"):
        raise PathError(f"path is not absolute: {path!r}")
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


def s3_object_path(bucket: str, key: str) -> str:
    """``/<bucket>/<key>`` with the key resolved inside its bucket (``..`` may not leave it)."""
    if not bucket or "/" in bucket or bucket in (".", "..") or "\x00" in bucket:
        raise PathError(f"invalid bucket name {bucket!r}")
    segments = resolve_segments(key, what="object key")
    if not segments:
        raise PathError(f"object key {key!r} names no object inside bucket {bucket!r}")
    return "/" + "/".join([bucket, *segments])
