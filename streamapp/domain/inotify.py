"""dCache storage events (inotify over SSE): the bridge's envelope and its pure decisions.

Facts (docs/formats.md §2): a watch covers one directory, not its subtree; an event
names only the child (``name``), so the absolute path is the watched directory + ``name``;
``IN_CLOSE_WRITE`` means the data is complete (``IN_CREATE`` only that a name exists);
``IN_MOVED_FROM``/``IN_MOVED_TO`` share a ``cookie``.

The envelope (``ENVELOPE``, one JSON object per raw-topic record) carries what normalizing
needs without asking dCache again::

    {"envelope": "dcache-storage-event/1",
     "kind": "inotify" | "resync",
     "frontend": "https://dcache.example.org:3880",  # the frontend's base URL
     "channel": "<channel URL>" | null, "sse_id": "<SSE id>" | null,
     "path": "/abs/path", "watched": "/abs" | null, "name": "path" | null,
     "mask": ["IN_CLOSE_WRITE"], "cookie": "<cookie>" | null,  # inotify records
     "change": "created" | "deleted" | null, "reason": "<why>" | null,  # resync records
     "size": <bytes> | null, "mtime": <ms since epoch> | null,  # from the namespace, if known
     "observed": "<RFC 3339 UTC>"}

``resync`` records are what a listing found changed after the bridge could not see events (a
new directory's contents before its watch existed, ``EVENT_LOSS``, ``IN_Q_OVERFLOW``, a lost
channel, a moved directory's files): ``change`` says what happened to the file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

ENVELOPE: Final = "dcache-storage-event/1"

# What the bridge subscribes to on every watched directory. Not IN_OPEN/IN_ACCESS/IN_MODIFY/
# IN_ATTRIB/IN_CLOSE_NOWRITE: they change nothing a tenant acts on (and listing a directory
# itself causes IN_OPEN/IN_CLOSE_NOWRITE). IN_IGNORED and IN_Q_OVERFLOW always arrive.
WATCH_FLAGS: Final = (
    "IN_CREATE",
    "IN_CLOSE_WRITE",
    "IN_DELETE",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_DELETE_SELF",
    "IN_MOVE_SELF",
)

# inotify event -> canonical event type (``None``: skipped, with the reason). Documented in
# docs/dcache-events.md; the normalizer uses exactly this table.
CREATED: Final = "storage.object.created"
DELETED: Final = "storage.object.deleted"
FILE_EVENTS: Final[Mapping[str, str | None]] = {
    "IN_CLOSE_WRITE": CREATED,  # the writer closed the file: its data is complete
    "IN_MOVED_TO": CREATED,  # a file appeared under this name (a move's new path)
    "IN_DELETE": DELETED,
    "IN_MOVED_FROM": DELETED,  # a file left this name (a move's old path)
    "IN_CREATE": None,  # a name exists, its data does not yet: IN_CLOSE_WRITE follows
    "IN_OPEN": None,
    "IN_ACCESS": None,
    "IN_MODIFY": None,
    "IN_ATTRIB": None,
    "IN_CLOSE_NOWRITE": None,
    "IN_DELETE_SELF": None,  # the watched entry itself: its parent reports IN_DELETE
    "IN_MOVE_SELF": None,  # likewise IN_MOVED_FROM/IN_MOVED_TO in the parent
    "IN_IGNORED": None,
    "IN_Q_OVERFLOW": None,  # the bridge resynchronises and emits resync records
}


@dataclass(frozen=True, slots=True)
class FileState:
    """What the namespace says about a file (sizes in bytes, mtime in ms)."""

    size: int | None
    mtime: int | None

    def to_json(self) -> dict[str, int | None]:
        return {"size": self.size, "mtime": self.mtime}

    @classmethod
    def from_json(cls, value: Any) -> FileState:
        if not isinstance(value, Mapping):
            return cls(None, None)
        size, mtime = value.get("size"), value.get("mtime")
        return cls(
            size if isinstance(size, int) else None, mtime if isinstance(mtime, int) else None
        )


def child_path(directory: str, name: str | None) -> str:
    """The absolute path of ``name`` in ``directory`` (the directory itself for self events)."""
    if not name:
        return directory
    if "/" in name or name in (".", ".."):
        raise ValueError(f"not a single path component: {name!r}")
    return posixpath.join(directory, name)


def listed_child(directory: str, name: str) -> str:
    """The absolute path of a listing entry: ``name`` must be one non-empty component (an empty
    one would name the directory itself, and listing it again would never end)."""
    if not name:
        raise ValueError("empty name in a directory listing")
    return child_path(directory, name)


def is_under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def moved(path: str, old: str, new: str) -> str:
    """``path`` under ``old`` as it is after ``old`` moved to ``new``."""
    return new + path[len(old) :]


def inotify_envelope(
    *,
    frontend: str,
    channel: str,
    sse_id: str | None,
    watched: str,
    name: str | None,
    mask: Iterable[str],
    cookie: str | None,
    state: FileState | None,
    observed: str,
) -> dict[str, Any]:
    return {
        "envelope": ENVELOPE,
        "kind": "inotify",
        "frontend": frontend,
        "channel": channel,
        "sse_id": sse_id,
        "path": child_path(watched, name),
        "watched": watched,
        "name": name or None,
        "mask": list(mask),
        "cookie": cookie,
        "change": None,
        "reason": None,
        "size": state.size if state else None,
        "mtime": state.mtime if state else None,
        "observed": observed,
    }


def resync_envelope(
    *, frontend: str, path: str, change: str, reason: str, state: FileState, observed: str
) -> dict[str, Any]:
    assert change in ("created", "deleted")
    return {
        "envelope": ENVELOPE,
        "kind": "resync",
        "frontend": frontend,
        "channel": None,
        "sse_id": None,
        "path": path,
        "watched": None,
        "name": None,
        "mask": [],
        "cookie": None,
        "change": change,
        "reason": reason,
        "size": state.size,
        "mtime": state.mtime,
        "observed": observed,
    }


@dataclass(frozen=True, slots=True)
class TreeDiff:
    created: list[tuple[str, FileState]]  # new, or changed size/mtime
    deleted: list[tuple[str, FileState]]  # known before, not listed now


def diff_tree(
    known: Mapping[str, FileState], listed: Mapping[str, FileState], root: str
) -> TreeDiff:
    """What changed under ``root`` between what the bridge knew and what a listing shows."""
    created = [
        (path, state)
        for path, state in sorted(listed.items())
        if known.get(path) != state or path not in known
    ]
    deleted = [
        (path, state)
        for path, state in sorted(known.items())
        if is_under(path, root) and path not in listed
    ]
    return TreeDiff(created, deleted)
