"""Raw storage records -> canonical storage events (CloudEvents 1.0).

One raw record (a Kafka message value, or a line for ``streamapp normalize``) yields a list of
outcomes: a canonical event, a skip (a valid record that is not an object-state change) or a
rejection (malformed or unrecognized: the service dead-letters it). Nothing here raises on bad
input and nothing here does I/O; the ingest agent and the CLI share this code path.

Recognized inputs (facts: docs/formats.md §1 and §3):
- dCache billing records as dCache's Kafka producer publishes them (``msgType`` ...);
- S3 event notifications from AWS S3, Ceph RGW and MinIO (``{"Records": [...]}``), including
  MinIO's Kafka value wrapper ``{"EventName", "Key", "Records"}``, and the S3 test event;
- dCache storage events (inotify) in the bridge's envelope (``streamapp.domain.inotify``).

Bounds, each refused with its reason: a record at most ``max_bytes`` long and nested at most
``MAX_NESTING_DEPTH`` levels (ids re-serialize the record; orjson cannot write 255 levels);
sizes at most ``MAX_SIZE_DIGITS`` digits and below 2**63 (int64, what Kafka, Java and every
consumer hold); times within years 0001-9999 (RFC 3339); paths as ``domain.paths`` bounds them;
at most ``MAX_VALUES`` values in all of a record's containers and ``MAX_S3_RECORDS`` entries in
one S3 notification (the work one record may cost the event loop); every free-text field copied
into an event's ``data`` at most ``MAX_TEXT_CHARS`` characters and the serialized event at most
``MAX_EVENT_BYTES`` (its tenant copies, with tokens, stay far below a Kafka message's 1 MB).
Anything else that goes wrong becomes a rejection too ("internal error ...").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson

from streamapp.domain import inotify
from streamapp.domain.events import (
    DATA_CONTENT_TYPE,
    SPEC_VERSION,
    CanonicalEvent,
    EventType,
    ObjectData,
    StorageKind,
)
from streamapp.domain.instants import from_epoch_milliseconds, parse_aware, rfc3339_utc
from streamapp.domain.paths import (
    PathError,
    check_object_path,
    normalize_absolute_path,
    s3_object_path,
    shown,
)

DEFAULT_MAX_RECORD_BYTES: Final = 1_048_576
MAX_NESTING_DEPTH: Final = 64
MAX_SIZE_DIGITS: Final = 19  # every size below 2**63 has at most 19 digits
MAX_SIZE: Final = 2**63 - 1
MAX_REASON_CHARS: Final = 1000  # reasons travel in a Kafka header
# Work bounds: a 1 MB record of 330,000 empty S3 records took ~1 s of the event loop.
MAX_VALUES: Final = 100_000  # values (members and items) of all containers in one record
MAX_S3_RECORDS: Final = 1_000  # S3 entries in one notification (AWS and MinIO send one)
# Every free-text field copied into an event's data, and the whole serialized event: no
# canonical event can grow into a tenant copy (event + tokens) over a Kafka message's 1 MB.
MAX_TEXT_CHARS: Final = 1024
MAX_EVENT_BYTES: Final = 65_536


@dataclass(frozen=True, slots=True)
class Normalized:
    event: CanonicalEvent


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


Outcome = Normalized | Skipped | Rejected


class _MalformedError(Exception):
    """Internal: the record is malformed or unrecognized."""


class _Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Internal: the record is valid but not an object-state change."""


def normalize(
    raw: bytes, source: str, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> list[Outcome]:
    """Normalize one raw record published by a storage system identified by ``source``.

    Never raises: whatever goes wrong with a record is that record's rejection."""
    try:
        return _normalize(raw, source, max_bytes)
    except Exception as exc:  # noqa: BLE001 - a bug costs one record a dead letter, not ingest
        return [_internal_error(exc)]


def _internal_error(exc: Exception) -> Rejected:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - even a broken __str__ must not escape
        message = "<message unavailable>"
    return _rejected(f"internal error normalizing record: {type(exc).__name__}: {message[:300]}")


def _rejected(reason: str) -> Rejected:
    return Rejected(_bounded(reason))


def _bounded(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _normalize(raw: bytes, source: str, max_bytes: int) -> list[Outcome]:
    try:
        record = _parse_object(raw, max_bytes)
        if "msgType" in record:
            return [_outcome(lambda: _dcache_billing(record, source))]
        if "Records" in record:
            return _s3_notification(record, source)
        if record.get("envelope") == inotify.ENVELOPE:
            return [_outcome(lambda: _dcache_storage_event(record, source))]
        if record.get("Event") == "s3:TestEvent":
            return [Skipped("S3 test event (sent when notifications are configured)")]
    except _MalformedError as exc:
        return [_rejected(str(exc))]
    return [
        Rejected(
            "unrecognized record: neither a dCache billing record (msgType) "
            "nor an S3 notification (Records)"
        )
    ]


def _outcome(build: Any) -> Outcome:
    try:
        return Normalized(_bounded_event(build()))
    except _Skip as exc:
        return Skipped(_bounded(str(exc)))
    except _MalformedError as exc:
        return _rejected(str(exc))
    except Exception as exc:  # noqa: BLE001 - one S3 record's bug must not cost its siblings
        return _internal_error(exc)


def _bounded_event(event: CanonicalEvent) -> CanonicalEvent:
    size = len(orjson.dumps(event))
    if size > MAX_EVENT_BYTES:
        raise _MalformedError(
            f"the event would be {size} bytes, over the {MAX_EVENT_BYTES}-byte event limit"
        )
    return event


def _text(value: Any, field: str) -> str | None:
    """A free-text field for the event's data: a non-empty string (else None, left out) of at
    most ``MAX_TEXT_CHARS`` characters (else the record is refused)."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_TEXT_CHARS:
        raise _MalformedError(
            f"{field} has {len(value)} characters, over the {MAX_TEXT_CHARS}-character limit"
        )
    return value


# --- parsing ---------------------------------------------------------------------------------


def _parse_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise _MalformedError(f"record of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise _MalformedError("empty record")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "surrogate" in str(exc):
            raise _MalformedError(f"record is not valid UTF-8 JSON: {exc}") from None
        raise _MalformedError(f"record is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _MalformedError(f"record is a JSON {type(value).__name__}, not an object")
    problem = _shape_problem(value, MAX_NESTING_DEPTH, MAX_VALUES)
    if problem is not None:
        raise _MalformedError(problem)
    return value


def _shape_problem(value: Any, depth_limit: int, values_limit: int) -> str | None:
    """Why the record's shape is refused: containers nested more than ``depth_limit`` deep
    (the record itself is level 1), or more than ``values_limit`` values in all its containers.
    The walk stops at the limit: it visits at most ``values_limit`` values plus one container's."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    values = 0
    while pending:  # iterative: a deep record must not exhaust Python's stack either
        container, depth = pending.pop()
        if depth > depth_limit:
            return f"record is nested deeper than {depth_limit} levels"
        values += len(container)
        if values > values_limit:
            return f"record holds more than {values_limit} values"
        children = container.values() if isinstance(container, dict) else container
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None


def event_id(record: Mapping[str, Any]) -> str:
    """A deterministic id from the record's content (key order and whitespace do not matter)."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def _rfc3339(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _MalformedError(f"{field} is missing or not a string")
    if len(value) > 64:  # the longest ISO-8601 form Python reads is 38 characters
        raise _MalformedError(f"{field} {shown(value, 40)} is not an ISO-8601 timestamp")
    try:
        return rfc3339_utc(parse_aware(value))
    except ValueError as exc:
        raise _MalformedError(f"{field} {exc}") from None


def _size(value: Any, field: str) -> int | None:
    """Integer bytes; Ceph documents ``size`` as a string, so digit strings are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _MalformedError(f"{field} is a boolean, not a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (digits := value.strip()).isdigit() and digits.isascii():
        if len(digits.lstrip("0")) > MAX_SIZE_DIGITS:
            raise _MalformedError(
                f"{field} has {len(digits)} digits: over the int64 size limit (2**63 - 1)"
            )
        size = int(digits.lstrip("0") or "0")
    else:
        raise _MalformedError(f"{field} {shown(value)} is not an integer number of bytes")
    if size < 0:
        raise _MalformedError(f"{field} {shown(value)} is negative")
    if size > MAX_SIZE:
        raise _MalformedError(f"{field} {shown(value)} is over the int64 size limit (2**63 - 1)")
    return size


def _object_event(
    record: Mapping[str, Any], source: str, kind: EventType, time: str, data: ObjectData
) -> CanonicalEvent:
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(record),
        "source": source,
        "type": kind.value,
        "subject": data["path"],
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": data,
    }


# --- dCache billing ----------------------------------------------------------------------------

# Valid billing records that say nothing about an object's state.
_DCACHE_NOT_STATE: Final = {
    "request": "dCache door request record (the pool's transfer record carries the outcome)",
    "hit": "dCache pool cache hit",
    "warning": "dCache warning record",
}
_DCACHE_HANDLED: Final = frozenset({"transfer", "remove", "store", "restore"})


def _dcache_billing(record: Mapping[str, Any], source: str) -> CanonicalEvent:
    msg_type = record.get("msgType")
    if not isinstance(msg_type, str):
        raise _MalformedError("dCache msgType is not a string")
    if msg_type in _DCACHE_NOT_STATE:
        raise _Skip(_DCACHE_NOT_STATE[msg_type])
    if msg_type not in _DCACHE_HANDLED:
        raise _MalformedError(f"unknown dCache msgType {shown(msg_type)}")

    code, message = _dcache_status(record)
    direction: str | None = None
    if msg_type == "transfer":
        p2p = record.get("isP2p", False)
        if not isinstance(p2p, bool):
            raise _MalformedError(f"dCache isP2p {shown(p2p)} is not a boolean")
        if p2p:
            raise _Skip("dCache pool-to-pool transfer (internal replication)")
        direction = record.get("isWrite")
        if direction not in ("write", "read"):
            raise _MalformedError(
                f"dCache isWrite {shown(direction)} is neither 'write' nor 'read'"
            )
        if code != 0:
            kind = EventType.TRANSFER_FAILED
        else:
            kind = EventType.CREATED if direction == "write" else EventType.READ
    elif msg_type == "remove":
        if code != 0:
            raise _Skip(f"dCache removal failed (status {code}): the object is unchanged")
        kind = EventType.DELETED
    elif msg_type == "store":
        kind = EventType.ARCHIVED if code == 0 else EventType.TRANSFER_FAILED
    else:  # restore
        kind = EventType.STAGED if code == 0 else EventType.TRANSFER_FAILED

    path = _dcache_path(record.get("billingPath"))
    time = _rfc3339(record.get("date"), "dCache date")
    data: ObjectData = {
        "path": path,
        "size": _size(record.get("fileSize"), "dCache fileSize"),
        "storage": StorageKind.DCACHE.value,
        "operation": msg_type,
    }
    if (pnfsid := _text(record.get("pnfsid"), "dCache pnfsid")) is not None:
        data["pnfsid"] = pnfsid
    if (storage_class := _text(record.get("storageInfo"), "dCache storageInfo")) is not None:
        data["storageClass"] = storage_class
    if direction is not None:
        data["direction"] = direction
        protocol_info = record.get("protocolInfo")
        if isinstance(protocol_info, dict) and isinstance(protocol_info.get("protocol"), str):
            protocol = _text(protocol_info["protocol"], "dCache protocolInfo.protocol")
            data["protocol"] = protocol or ""
        if (transferred := _optional_size(record.get("transferSize"))) is not None:
            data["transferSize"] = transferred
    if code != 0:
        data["status"] = {"code": code, "msg": _text(message, "dCache status.msg") or ""}
    return _object_event(record, source, kind, time, data)


def _optional_size(value: Any) -> int | None:
    """An optional size we cannot use (not a size, over int64...) is left out, never fatal."""
    try:
        return _size(value, "size")
    except (_MalformedError, ValueError):
        return None


def _dcache_status(record: Mapping[str, Any]) -> tuple[int, str]:
    status = record.get("status")
    if not isinstance(status, dict):
        raise _MalformedError("dCache status is missing or not an object")
    code = status.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise _MalformedError(f"dCache status.code {shown(code)} is not an integer")
    message = status.get("msg")
    return code, message if isinstance(message, str) else ""


def _dcache_path(value: Any, field: str = "dCache billingPath") -> str:
    if not isinstance(value, str) or not value:
        raise _MalformedError(f"{field} is missing or not a string")
    if value.startswith("parent:"):
        # Namespace-side removals may name the parent directory's pnfsid instead of a path.
        raise _MalformedError(f"{field} {shown(value)} is a parent reference, not a namespace path")
    try:
        # A dCache path is a namespace path: '.', '..' and '//' are resolved within '/', and
        # the result must still name an object ('/data/..' is '/', which names none).
        return check_object_path(normalize_absolute_path(value))
    except PathError as exc:
        raise _MalformedError(f"{field}: {exc}") from None


# --- dCache storage events (the bridge's envelope) ---------------------------------------------


def _dcache_storage_event(record: Mapping[str, Any], source: str) -> CanonicalEvent:
    """One envelope -> created/deleted, or a skip (table: ``inotify.FILE_EVENTS``).

    A move is its two halves, each standing alone: ``IN_MOVED_FROM`` deletes the old path,
    ``IN_MOVED_TO`` creates the new one, whichever arrives first; both carry the move's cookie
    (``data.move``) so a consumer can pair them. A half without a partner is right on its own
    (moved out of, or into, the watched tree).

    Ids: an event from the stream is named by its SSE position (channel, id), which a replay
    after a restart repeats and no other event shares (a file moved out and back is two
    creations, with one state); a change found by listing is named by the file's state
    (path, size, mtime), which a second listing of the same state repeats."""
    kind, path = record.get("kind"), _dcache_path(record.get("path"), "dCache envelope path")
    size = _size(record.get("size"), "dCache envelope size")
    mtime = record.get("mtime")
    if mtime is not None and (isinstance(mtime, bool) or not isinstance(mtime, int)):
        raise _MalformedError(f"dCache envelope mtime {shown(mtime)} is not milliseconds")
    try:
        modified = None if mtime is None else from_epoch_milliseconds(mtime)
    except ValueError as exc:
        raise _MalformedError(f"dCache envelope mtime: {exc}") from None
    frontend = record.get("frontend")
    if not isinstance(frontend, str) or not frontend:
        raise _MalformedError("dCache envelope frontend is missing")
    move: dict[str, str] | None = None
    if kind == "inotify":
        mask = record.get("mask")
        if not isinstance(mask, list) or not mask or not all(isinstance(m, str) for m in mask):
            raise _MalformedError("dCache envelope mask is not a list of inotify flags")
        if mask[0] not in inotify.FILE_EVENTS:
            raise _MalformedError(f"unknown inotify event {shown(mask[0])}")
        if "IN_ISDIR" in mask:
            raise _Skip(f"dCache {mask[0]} of a directory (files are reported one by one)")
        canonical = inotify.FILE_EVENTS[mask[0]]
        if canonical is None:
            raise _Skip(f"dCache {mask[0]} changes no object's state")
        operation = f"inotify:{mask[0]}"
        if mask[0] in ("IN_MOVED_FROM", "IN_MOVED_TO") and isinstance(record.get("cookie"), str):
            role = "from" if mask[0] == "IN_MOVED_FROM" else "to"
            cookie = _text(record["cookie"], "dCache envelope cookie")
            if cookie is not None:
                move = {"cookie": cookie, "role": role}
    elif kind == "resync":
        change = record.get("change")
        if change not in ("created", "deleted"):
            raise _MalformedError(f"dCache resync change {shown(change)} is not created/deleted")
        reason = record.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            raise _MalformedError(f"dCache resync reason {shown(reason)} is not a short string")
        canonical = inotify.CREATED if change == "created" else inotify.DELETED
        operation = f"resync:{reason or 'listing'}"
    else:
        raise _MalformedError(f"dCache envelope kind {shown(kind)} is neither inotify nor resync")
    observed = _rfc3339(record.get("observed"), "dCache envelope observed")
    time = observed
    if canonical == inotify.CREATED and modified is not None:
        time = rfc3339_utc(modified)
    identity: dict[str, Any] = {"frontend": frontend, "path": path, "type": canonical}
    if kind == "inotify" and isinstance(record.get("sse_id"), str):
        identity |= {"channel": record.get("channel"), "sse_id": record["sse_id"]}
    elif mtime is not None:
        identity |= {"mtime": mtime, "size": size if canonical == inotify.CREATED else None}
    else:  # neither: unique, if not stable
        identity |= {"observed": observed, "reason": record.get("reason")}
    data: ObjectData = {
        "path": path,
        "size": size if canonical == inotify.CREATED else None,
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


# --- S3 notifications ------------------------------------------------------------------------

# MinIO files metadata-only changes under ObjectCreated; they create no data.
_S3_METADATA_ONLY_CREATED: Final = frozenset(
    {"PutRetention", "PutLegalHold", "PutTagging", "DeleteTagging"}
)
# Known event families that never change an object's data.
_S3_NOT_STATE_FAMILIES: Final = frozenset(
    {
        "ObjectTagging",
        "ObjectAcl",
        "Replication",
        "IntelligentTiering",
        "LifecycleTransition",
        "ObjectTransition",
        "BucketCreated",
        "BucketRemoved",
        "Scanner",
        "TestEvent",
    }
)


def _s3_notification(notification: Mapping[str, Any], source: str) -> list[Outcome]:
    records = notification.get("Records")
    if not isinstance(records, list) or not records:
        raise _MalformedError("S3 notification has no Records")
    if len(records) > MAX_S3_RECORDS:
        raise _MalformedError(
            f"S3 notification has {len(records)} Records, over the limit of {MAX_S3_RECORDS}"
        )
    outcomes: list[Outcome] = []
    for index, record in enumerate(records):
        outcome = _outcome(lambda record=record: _s3_record(record, source))
        if isinstance(outcome, Rejected) and len(records) > 1:
            outcome = Rejected(f"Records[{index}]: {outcome.reason}")
        outcomes.append(outcome)
    return outcomes


def _s3_event_type(event_name: str) -> EventType:
    # MinIO writes "s3:ObjectCreated:Put"; AWS and Ceph write "ObjectCreated:Put".
    name = event_name.removeprefix("s3:")
    family, _, action = name.partition(":")
    if family == "ObjectCreated":
        if action in _S3_METADATA_ONLY_CREATED:
            raise _Skip(f"S3 {name}: metadata change, no new data")
        return EventType.CREATED
    if family == "ObjectRemoved":
        return EventType.DELETED
    if family == "LifecycleExpiration" and action in ("Delete", "DeleteMarkerCreated"):
        return EventType.DELETED
    if family == "ObjectRestore":
        if action == "Completed":
            return EventType.STAGED
        raise _Skip(f"S3 {name}: restore request or expiry of a restored copy")
    if family == "ObjectAccessed":
        if action == "Get":
            return EventType.READ
        raise _Skip(f"S3 {name}: access without reading the data")
    if family in _S3_NOT_STATE_FAMILIES or family == "LifecycleExpiration":
        raise _Skip(f"S3 {name}: not an object-state change")
    raise _MalformedError(f"unrecognized S3 eventName {shown(event_name)}")


def _s3_record(record: Any, source: str) -> CanonicalEvent:
    if not isinstance(record, dict):
        raise _MalformedError("S3 record is not an object")
    event_name = _text(record.get("eventName"), "S3 eventName")
    if event_name is None:
        raise _MalformedError("S3 eventName is missing or not a string")
    kind = _s3_event_type(event_name)

    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise _MalformedError("S3 record has no s3 object")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(bucket.get("name"), str):
        raise _MalformedError("S3 s3.bucket.name is missing or not a string")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise _MalformedError("S3 s3.object.key is missing or not a string")
    bucket_name: str = bucket["name"]
    try:
        # Keys arrive URL-encoded with '+' for space; a non-UTF-8 escape is malformed.
        key = unquote_plus(obj["key"], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _MalformedError(
            f"S3 object key {shown(obj['key'])} is not UTF-8 once URL-decoded"
        ) from None
    try:
        path = s3_object_path(bucket_name, key)
    except PathError as exc:
        raise _MalformedError(f"S3 object: {exc}") from None

    time = _rfc3339(record.get("eventTime"), "S3 eventTime")
    data: ObjectData = {
        "path": path,
        "size": _size(obj.get("size"), "S3 object size"),
        "storage": StorageKind.S3.value,
        "bucket": bucket_name,
        "key": key,
        "eventName": event_name.removeprefix("s3:"),
    }
    if (event_source := _text(record.get("eventSource"), "S3 eventSource")) is not None:
        data["eventSource"] = event_source
    for field, target in (("eTag", "etag"), ("versionId", "versionId"), ("sequencer", "sequencer")):
        if (value := _text(obj.get(field), f"S3 s3.object.{field}")) is not None:
            data[target] = value  # type: ignore[literal-required]
    return _object_event(record, source, kind, time, data)
