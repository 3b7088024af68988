"""dCache records -> canonical storage events.

Two inputs (facts: docs/formats.md §1 and §2):
- billing records as dCache's Kafka producer publishes them (``msgType`` ...): ``billing_event``;
- storage events (inotify) in the bridge's envelope (``streamapp.domain.inotify``):
  ``storage_event``.

Both raise ``MalformedError`` or ``Skip`` (``normalize_fields``) instead of returning an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from streamapp.domain import inotify
from streamapp.domain.events import (
    DATA_CONTENT_TYPE,
    SPEC_VERSION,
    CanonicalEvent,
    EventType,
    ObjectData,
    StorageKind,
)
from streamapp.domain.instants import from_epoch_milliseconds, rfc3339_utc
from streamapp.domain.normalize_fields import (
    MalformedError,
    Skip,
    event_id,
    object_event,
    optional_size,
    rfc3339_field,
    size_field,
    text_field,
)
from streamapp.domain.paths import PathError, check_object_path, normalize_absolute_path, shown

# --- billing records ---------------------------------------------------------------------------

# Valid billing records that say nothing about an object's state.
_NOT_STATE: Final = {
    "request": "dCache door request record (the pool's transfer record carries the outcome)",
    "hit": "dCache pool cache hit",
    "warning": "dCache warning record",
}
_HANDLED: Final = frozenset({"transfer", "remove", "store", "restore"})
# Tape operations: msgType -> (event type on success, on failure).
_TAPE_KINDS: Final = {
    "store": (EventType.ARCHIVED, EventType.TRANSFER_FAILED),
    "restore": (EventType.STAGED, EventType.TRANSFER_FAILED),
}


def billing_event(record: Mapping[str, Any], source: str) -> CanonicalEvent:
    """One billing record -> an event of the object it changed, or a skip."""
    msg_type = record.get("msgType")
    if not isinstance(msg_type, str):
        raise MalformedError("dCache msgType is not a string")
    if msg_type in _NOT_STATE:
        raise Skip(_NOT_STATE[msg_type])
    if msg_type not in _HANDLED:
        raise MalformedError(f"unknown dCache msgType {shown(msg_type)}")

    code, message = _status(record)
    kind, direction = _billing_kind(record, msg_type, code)
    path = _namespace_path(record.get("billingPath"))
    time = rfc3339_field(record.get("date"), "dCache date")
    data: ObjectData = {
        "path": path,
        "size": size_field(record.get("fileSize"), "dCache fileSize"),
        "storage": StorageKind.DCACHE.value,
        "operation": msg_type,
    }
    if (pnfsid := text_field(record.get("pnfsid"), "dCache pnfsid")) is not None:
        data["pnfsid"] = pnfsid
    if (storage_class := text_field(record.get("storageInfo"), "dCache storageInfo")) is not None:
        data["storageClass"] = storage_class
    if direction is not None:
        _add_transfer_fields(record, direction, data)
    if code != 0:
        data["status"] = {"code": code, "msg": text_field(message, "dCache status.msg") or ""}
    return object_event(record, source, kind, time, data)


def _billing_kind(
    record: Mapping[str, Any], msg_type: str, code: int
) -> tuple[EventType, str | None]:
    """The event type of a handled ``msg_type`` and, for a transfer, its direction."""
    if msg_type == "transfer":
        direction = _transfer_direction(record)
        if code != 0:
            return EventType.TRANSFER_FAILED, direction
        return (EventType.CREATED if direction == "write" else EventType.READ), direction
    if msg_type == "remove":
        if code != 0:
            raise Skip(f"dCache removal failed (status {code}): the object is unchanged")
        return EventType.DELETED, None
    succeeded, failed = _TAPE_KINDS[msg_type]
    return (succeeded if code == 0 else failed), None


def _transfer_direction(record: Mapping[str, Any]) -> str:
    p2p = record.get("isP2p", False)
    if not isinstance(p2p, bool):
        raise MalformedError(f"dCache isP2p {shown(p2p)} is not a boolean")
    if p2p:
        raise Skip("dCache pool-to-pool transfer (internal replication)")
    direction = record.get("isWrite")
    if direction not in ("write", "read"):
        raise MalformedError(f"dCache isWrite {shown(direction)} is neither 'write' nor 'read'")
    return str(direction)


def _add_transfer_fields(record: Mapping[str, Any], direction: str, data: ObjectData) -> None:
    data["direction"] = direction
    protocol_info = record.get("protocolInfo")
    if isinstance(protocol_info, dict) and isinstance(protocol_info.get("protocol"), str):
        protocol = text_field(protocol_info["protocol"], "dCache protocolInfo.protocol")
        data["protocol"] = protocol or ""
    if (transferred := optional_size(record.get("transferSize"))) is not None:
        data["transferSize"] = transferred


def _status(record: Mapping[str, Any]) -> tuple[int, str]:
    status = record.get("status")
    if not isinstance(status, dict):
        raise MalformedError("dCache status is missing or not an object")
    code = status.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise MalformedError(f"dCache status.code {shown(code)} is not an integer")
    message = status.get("msg")
    return code, message if isinstance(message, str) else ""


def _namespace_path(value: Any, field: str = "dCache billingPath") -> str:
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{field} is missing or not a string")
    if value.startswith("parent:"):
        # Namespace-side removals may name the parent directory's pnfsid instead of a path.
        raise MalformedError(f"{field} {shown(value)} is a parent reference, not a namespace path")
    try:
        # A dCache path is a namespace path: '.', '..' and '//' are resolved within '/', and
        # the result must still name an object ('/data/..' is '/', which names none).
        return check_object_path(normalize_absolute_path(value))
    except PathError as exc:
        raise MalformedError(f"{field}: {exc}") from None


# --- storage events (the bridge's envelope) ----------------------------------------------------


def storage_event(record: Mapping[str, Any], source: str) -> CanonicalEvent:
    """One envelope -> created/deleted, or a skip (table: ``inotify.FILE_EVENTS``).

    A move is its two halves, each standing alone: ``IN_MOVED_FROM`` deletes the old path,
    ``IN_MOVED_TO`` creates the new one, whichever arrives first; both carry the move's cookie
    (``data.move``) so a consumer can pair them. A half without a partner is right on its own
    (moved out of, or into, the watched tree).

    Ids: an event from the stream is named by its SSE position (channel, id), which a replay
    after a restart repeats and no other event shares (a file moved out and back is two
    creations, with one state); a change found by listing is named by the file's state
    (path, size, mtime), which a second listing of the same state repeats."""
    kind, path = record.get("kind"), _namespace_path(record.get("path"), "dCache envelope path")
    size = size_field(record.get("size"), "dCache envelope size")
    mtime, modified = _envelope_mtime(record.get("mtime"))
    frontend = record.get("frontend")
    if not isinstance(frontend, str) or not frontend:
        raise MalformedError("dCache envelope frontend is missing")
    canonical, operation, move = _envelope_change(record, kind)
    observed = rfc3339_field(record.get("observed"), "dCache envelope observed")
    created = canonical == inotify.CREATED
    time = rfc3339_utc(modified) if created and modified is not None else observed
    identity: dict[str, Any] = {"frontend": frontend, "path": path, "type": canonical}
    identity |= _identity_facts(record, kind, mtime, size if created else None, observed)
    data: ObjectData = {
        "path": path,
        "size": size if created else None,
        "storage": StorageKind.DCACHE.value,
        "operation": operation,
    }
    if move is not None:
        data["move"] = move
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(identity),
        "source": source,
        "type": canonical,
        "subject": path,
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": data,
    }


def _envelope_mtime(mtime: Any) -> tuple[int | None, datetime | None]:
    """The envelope's mtime (milliseconds since the epoch, optional) and its instant."""
    if mtime is None:
        return None, None
    if isinstance(mtime, bool) or not isinstance(mtime, int):
        raise MalformedError(f"dCache envelope mtime {shown(mtime)} is not milliseconds")
    try:
        return mtime, from_epoch_milliseconds(mtime)
    except ValueError as exc:
        raise MalformedError(f"dCache envelope mtime: {exc}") from None


def _envelope_change(
    record: Mapping[str, Any], kind: Any
) -> tuple[str, str, dict[str, str] | None]:
    """(canonical type, operation, move) of an inotify or resync envelope."""
    if kind == "inotify":
        return _inotify_change(record)
    if kind == "resync":
        return _resync_change(record)
    raise MalformedError(f"dCache envelope kind {shown(kind)} is neither inotify nor resync")


def _inotify_change(record: Mapping[str, Any]) -> tuple[str, str, dict[str, str] | None]:
    mask = record.get("mask")
    if not isinstance(mask, list) or not mask or not all(isinstance(m, str) for m in mask):
        raise MalformedError("dCache envelope mask is not a list of inotify flags")
    flag = mask[0]
    if flag not in inotify.FILE_EVENTS:
        raise MalformedError(f"unknown inotify event {shown(flag)}")
    if "IN_ISDIR" in mask:
        raise Skip(f"dCache {flag} of a directory (files are reported one by one)")
    canonical = inotify.FILE_EVENTS[flag]
    if canonical is None:
        raise Skip(f"dCache {flag} changes no object's state")
    return canonical, f"inotify:{flag}", _move(record, flag)


def _move(record: Mapping[str, Any], flag: str) -> dict[str, str] | None:
    """Which half of a move this is, and the cookie both halves carry (None: not a move)."""
    if flag not in ("IN_MOVED_FROM", "IN_MOVED_TO") or not isinstance(record.get("cookie"), str):
        return None
    cookie = text_field(record["cookie"], "dCache envelope cookie")
    if cookie is None:
        return None
    return {"cookie": cookie, "role": "from" if flag == "IN_MOVED_FROM" else "to"}


def _resync_change(record: Mapping[str, Any]) -> tuple[str, str, None]:
    change = record.get("change")
    if change not in ("created", "deleted"):
        raise MalformedError(f"dCache resync change {shown(change)} is not created/deleted")
    reason = record.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
        raise MalformedError(f"dCache resync reason {shown(reason)} is not a short string")
    canonical = inotify.CREATED if change == "created" else inotify.DELETED
    return canonical, f"resync:{reason or 'listing'}", None


def _identity_facts(
    record: Mapping[str, Any], kind: Any, mtime: int | None, size: int | None, observed: str
) -> dict[str, Any]:
    """What names the event besides frontend, path and type (see ``storage_event``)."""
    if kind == "inotify" and isinstance(record.get("sse_id"), str):
        return {"channel": record.get("channel"), "sse_id": record["sse_id"]}
    if mtime is not None:
        return {"mtime": mtime, "size": size}
    # neither: unique, if not stable
    return {"observed": observed, "reason": record.get("reason")}
