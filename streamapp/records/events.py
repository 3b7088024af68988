"""faust models of the canonical storage event (contract: ``streamapp.domain.events``)."""

from __future__ import annotations

from typing import Any

import faust

# Members the contract requires even when null (``size`` is null when unknown).
_ALWAYS_PRESENT = frozenset({"path", "size", "storage"})


class ObjectData(faust.Record, include_metadata=False, serializer="json"):
    """``data`` of a storage event; ``path`` equals the event's ``subject``."""

    path: str
    size: int | None
    storage: str
    operation: str | None = None
    direction: str | None = None
    pnfsid: str | None = None
    storageClass: str | None = None  # noqa: N815 - CloudEvents JSON member name
    protocol: str | None = None
    transferSize: int | None = None  # noqa: N815
    status: dict[str, Any] | None = None
    move: dict[str, str] | None = None
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    versionId: str | None = None  # noqa: N815
    sequencer: str | None = None
    eventName: str | None = None  # noqa: N815
    eventSource: str | None = None  # noqa: N815


class StorageEvent(faust.Record, include_metadata=False, serializer="json"):
    """A CloudEvents 1.0 storage event in structured JSON mode."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    data: ObjectData
    datacontenttype: str = "application/json"

    def to_cloudevent(self) -> dict[str, Any]:
        """The structured-mode JSON object, without members that are absent (None)."""
        data = {
            name: value
            for name, value in self.data.asdict().items()
            if value is not None or name in _ALWAYS_PRESENT
        }
        event = {name: value for name, value in self.asdict().items() if value is not None}
        return event | {"data": data}
