"""The canonical storage event: a CloudEvents 1.0 object in structured JSON form.

This module is the one definition of the contract: the normalizer builds these, the agents
write them as bytes, and ``parse_canonical`` is how every reader checks one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"


class EventType(StrEnum):
    CREATED = "storage.object.created"
    READ = "storage.object.read"
    DELETED = "storage.object.deleted"
    STAGED = "storage.object.staged"
    ARCHIVED = "storage.object.archived"
    TRANSFER_FAILED = "storage.transfer.failed"


class StorageKind(StrEnum):
    DCACHE = "dcache"
    S3 = "s3"


class ObjectData(TypedDict):
    """The ``data`` member. ``path`` equals the event's ``subject``; ``size`` is bytes or None."""

    path: str
    size: int | None
    storage: str
    # dCache
    operation: NotRequired[str]
    direction: NotRequired[str]
    pnfsid: NotRequired[str]
    storageClass: NotRequired[str]
    protocol: NotRequired[str]
    transferSize: NotRequired[int]
    status: NotRequired[dict[str, Any]]
    move: NotRequired[dict[str, str]]  # dCache storage events: {"cookie", "role": from|to}
    # S3
    bucket: NotRequired[str]
    key: NotRequired[str]
    etag: NotRequired[str]
    versionId: NotRequired[str]
    sequencer: NotRequired[str]
    eventName: NotRequired[str]
    eventSource: NotRequired[str]


class CanonicalEvent(TypedDict):
    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    data: ObjectData


class EventFormatError(ValueError):
    """A message on the canonical topic that is not a canonical event."""


_REQUIRED_STRINGS = ("specversion", "id", "source", "type", "subject", "time")


def parse_canonical(value: Any) -> CanonicalEvent:
    """Check the shape of a decoded canonical event (inside the pipeline: shape, not content)."""
    if not isinstance(value, dict):
        raise EventFormatError("not a JSON object")
    for name in _REQUIRED_STRINGS:
        if not isinstance(value.get(name), str):
            raise EventFormatError(f"{name} is missing or not a string")
    data = value.get("data")
    if not isinstance(data, dict) or data.get("path") != value["subject"]:
        raise EventFormatError("data.path does not equal subject")
    size = data.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise EventFormatError("data.size is not an integer or null")
    subject = value["subject"]
    if (
        not subject.startswith("/")
        or "\x00" in subject
        or any(segment in ("", ".", "..") for segment in subject[1:].split("/"))
    ):
        raise EventFormatError("subject is not a normalized absolute path")
    if value["type"] not in _TYPES:
        raise EventFormatError(f"unknown type {value['type']!r}")
    return value  # type: ignore[return-value]


_TYPES = frozenset(t.value for t in EventType)
