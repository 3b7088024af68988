"""Field readers every raw-record format shares (``normalize_dcache``, ``normalize_s3``).

Each reader returns the field as a canonical event holds it, or raises ``MalformedError`` (the
record is refused, with the reason) or ``Skip`` (valid, but no object-state change);
``normalize`` turns both into outcomes. Bounds: sizes at most ``MAX_SIZE_DIGITS`` digits and
below 2**63 (int64, what Kafka, Java and every consumer hold); times within years 0001-9999
(RFC 3339); every free-text field copied into an event's ``data`` at most ``MAX_TEXT_CHARS``
characters (paths are bounded by ``domain.paths``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

from streamapp.domain.events import (
    DATA_CONTENT_TYPE,
    SPEC_VERSION,
    CanonicalEvent,
    EventType,
    ObjectData,
)
from streamapp.domain.instants import parse_aware, rfc3339_utc
from streamapp.domain.paths import shown

MAX_SIZE_DIGITS: Final = 19  # every size below 2**63 has at most 19 digits
MAX_SIZE: Final = 2**63 - 1
# Every free-text field copied into an event's data: with the whole-event bound
# (``normalize.MAX_EVENT_BYTES``), no tenant copy (event + tokens) outgrows a Kafka message.
MAX_TEXT_CHARS: Final = 1024


class MalformedError(Exception):
    """The record is malformed or unrecognized: it is rejected (dead-lettered)."""


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The record is valid but not an object-state change: it is skipped."""


def text_field(value: Any, field: str) -> str | None:
    """A free-text field for the event's data: a non-empty string (else None, left out) of at
    most ``MAX_TEXT_CHARS`` characters (else the record is refused)."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_TEXT_CHARS:
        raise MalformedError(
            f"{field} has {len(value)} characters, over the {MAX_TEXT_CHARS}-character limit"
        )
    return value


def rfc3339_field(value: Any, field: str) -> str:
    """A required ISO-8601 timestamp with a zone, written as RFC 3339 in UTC."""
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{field} is missing or not a string")
    if len(value) > 64:  # the longest ISO-8601 form Python reads is 38 characters
        raise MalformedError(f"{field} {shown(value, 40)} is not an ISO-8601 timestamp")
    try:
        return rfc3339_utc(parse_aware(value))
    except ValueError as exc:
        raise MalformedError(f"{field} {exc}") from None


def size_field(value: Any, field: str) -> int | None:
    """Integer bytes; Ceph documents ``size`` as a string, so digit strings are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedError(f"{field} is a boolean, not a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (digits := value.strip()).isdigit() and digits.isascii():
        if len(digits.lstrip("0")) > MAX_SIZE_DIGITS:
            raise MalformedError(
                f"{field} has {len(digits)} digits: over the int64 size limit (2**63 - 1)"
            )
        size = int(digits.lstrip("0") or "0")
    else:
        raise MalformedError(f"{field} {shown(value)} is not an integer number of bytes")
    if size < 0:
        raise MalformedError(f"{field} {shown(value)} is negative")
    if size > MAX_SIZE:
        raise MalformedError(f"{field} {shown(value)} is over the int64 size limit (2**63 - 1)")
    return size


def optional_size(value: Any) -> int | None:
    """An optional size we cannot use (not a size, over int64...) is left out, never fatal."""
    try:
        return size_field(value, "size")
    except (MalformedError, ValueError):
        return None


def event_id(record: Mapping[str, Any]) -> str:
    """A deterministic id from the record's content (key order and whitespace do not matter)."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def object_event(
    record: Mapping[str, Any], source: str, kind: EventType, time: str, data: ObjectData
) -> CanonicalEvent:
    """The canonical event of ``record``, named by the record's content (``event_id``)."""
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
