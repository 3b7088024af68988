"""S3 event notifications -> canonical storage events.

Notifications from AWS S3, Ceph RGW and MinIO (``{"Records": [...]}``), including MinIO's Kafka
value wrapper ``{"EventName", "Key", "Records"}`` (facts: docs/formats.md §3). A notification
holds at most ``MAX_S3_RECORDS`` entries (the work one record may cost the event loop); each
entry is its own event, skip or rejection (``normalize`` keeps them apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote_plus

from streamapp.domain.events import CanonicalEvent, EventType, ObjectData, StorageKind
from streamapp.domain.normalize_fields import (
    MalformedError,
    Skip,
    object_event,
    rfc3339_field,
    size_field,
    text_field,
)
from streamapp.domain.paths import PathError, s3_object_path, shown

MAX_S3_RECORDS: Final = 1_000  # S3 entries in one notification (AWS and MinIO send one)

# MinIO files metadata-only changes under ObjectCreated; they create no data.
_METADATA_ONLY_CREATED: Final = frozenset(
    {"PutRetention", "PutLegalHold", "PutTagging", "DeleteTagging"}
)
# Known event families that never change an object's data.
_NOT_STATE_FAMILIES: Final = frozenset(
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
# Optional object fields copied into the event's data: S3 name -> data name.
_OBJECT_FIELDS: Final = (("eTag", "etag"), ("versionId", "versionId"), ("sequencer", "sequencer"))


def s3_records(notification: Mapping[str, Any]) -> list[Any]:
    """The notification's entries, each for ``s3_event``; the notification itself is refused
    when it has none or too many."""
    records = notification.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedError("S3 notification has no Records")
    if len(records) > MAX_S3_RECORDS:
        raise MalformedError(
            f"S3 notification has {len(records)} Records, over the limit of {MAX_S3_RECORDS}"
        )
    return records


def s3_event(record: Any, source: str) -> CanonicalEvent:
    """One entry of a notification -> an event, or a skip."""
    if not isinstance(record, dict):
        raise MalformedError("S3 record is not an object")
    event_name = text_field(record.get("eventName"), "S3 eventName")
    if event_name is None:
        raise MalformedError("S3 eventName is missing or not a string")
    kind = _s3_event_type(event_name)
    bucket_name, key, obj = _bucket_key(record.get("s3"))
    try:
        path = s3_object_path(bucket_name, key)
    except PathError as exc:
        raise MalformedError(f"S3 object: {exc}") from None

    time = rfc3339_field(record.get("eventTime"), "S3 eventTime")
    data: ObjectData = {
        "path": path,
        "size": size_field(obj.get("size"), "S3 object size"),
        "storage": StorageKind.S3.value,
        "bucket": bucket_name,
        "key": key,
        "eventName": event_name.removeprefix("s3:"),
    }
    if (event_source := text_field(record.get("eventSource"), "S3 eventSource")) is not None:
        data["eventSource"] = event_source
    for field, target in _OBJECT_FIELDS:
        if (value := text_field(obj.get(field), f"S3 s3.object.{field}")) is not None:
            data[target] = value  # type: ignore[literal-required]
    return object_event(record, source, kind, time, data)


def _s3_event_type(event_name: str) -> EventType:
    # MinIO writes "s3:ObjectCreated:Put"; AWS and Ceph write "ObjectCreated:Put".
    name = event_name.removeprefix("s3:")
    family, _, action = name.partition(":")
    if family == "ObjectCreated":
        if action in _METADATA_ONLY_CREATED:
            raise Skip(f"S3 {name}: metadata change, no new data")
        return EventType.CREATED
    if family == "ObjectRemoved":
        return EventType.DELETED
    if family == "LifecycleExpiration" and action in ("Delete", "DeleteMarkerCreated"):
        return EventType.DELETED
    if family == "ObjectRestore":
        if action == "Completed":
            return EventType.STAGED
        raise Skip(f"S3 {name}: restore request or expiry of a restored copy")
    if family == "ObjectAccessed":
        if action == "Get":
            return EventType.READ
        raise Skip(f"S3 {name}: access without reading the data")
    if family in _NOT_STATE_FAMILIES or family == "LifecycleExpiration":
        raise Skip(f"S3 {name}: not an object-state change")
    raise MalformedError(f"unrecognized S3 eventName {shown(event_name)}")


def _bucket_key(s3: Any) -> tuple[str, str, dict[str, Any]]:
    """(bucket name, decoded object key, the object) of an entry's ``s3`` member."""
    if not isinstance(s3, dict):
        raise MalformedError("S3 record has no s3 object")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(bucket.get("name"), str):
        raise MalformedError("S3 s3.bucket.name is missing or not a string")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise MalformedError("S3 s3.object.key is missing or not a string")
    try:
        # Keys arrive URL-encoded with '+' for space; a non-UTF-8 escape is malformed.
        key = unquote_plus(obj["key"], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedError(
            f"S3 object key {shown(obj['key'])} is not UTF-8 once URL-decoded"
        ) from None
    return bucket["name"], key, obj
