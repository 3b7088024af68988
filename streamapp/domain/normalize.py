"""Raw storage records -> canonical storage events (CloudEvents 1.0).

One raw record (a Kafka message value, or a line for ``streamapp normalize``) yields a list of
outcomes: a canonical event, a skip (a valid record that is not an object-state change) or a
rejection (malformed or unrecognized: the service dead-letters it). Nothing here raises on bad
input and nothing here does I/O; the ingest agent and the CLI share this code path.

This module reads the record and dispatches it by shape; each format has its own module:
- dCache billing records (``msgType`` ...) and dCache storage events (inotify) in the bridge's
  envelope: ``normalize_dcache``;
- S3 event notifications from AWS S3, Ceph RGW and MinIO (``{"Records": [...]}``):
  ``normalize_s3``; the S3 test event is skipped here;
- the field readers and bounds they share (sizes, times, free text): ``normalize_fields``.

Bounds kept here, each refused with its reason: a record at most ``max_bytes`` long and nested
at most ``MAX_NESTING_DEPTH`` levels (ids re-serialize the record; orjson cannot write 255
levels); at most ``MAX_VALUES`` values in all of a record's containers (the work one record may
cost the event loop); the serialized event at most ``MAX_EVENT_BYTES`` (its tenant copies, with
tokens, stay far below a Kafka message's 1 MB); reasons at most ``MAX_REASON_CHARS``.
Anything else that goes wrong becomes a rejection too ("internal error ...").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import orjson

from streamapp.domain import inotify
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.normalize_dcache import billing_event, storage_event
from streamapp.domain.normalize_fields import MalformedError, Skip
from streamapp.domain.normalize_s3 import s3_event, s3_records

DEFAULT_MAX_RECORD_BYTES: Final = 1_048_576
MAX_NESTING_DEPTH: Final = 64
MAX_REASON_CHARS: Final = 1000  # reasons travel in a Kafka header
# Work bound: a 1 MB record of 330,000 empty S3 records took ~1 s of the event loop.
MAX_VALUES: Final = 100_000  # values (members and items) of all containers in one record
# The whole serialized event: with the free-text bound (``normalize_fields.MAX_TEXT_CHARS``),
# no canonical event can grow into a tenant copy (event + tokens) over a Kafka message's 1 MB.
MAX_EVENT_BYTES: Final = 65_536


@dataclass(frozen=True, slots=True)
class Normalized:
    event: CanonicalEvent
    # the event as JSON (orjson), when normalize has serialized it already (its size bound)
    serialized: bytes | None = field(default=None, compare=False, repr=False)

    def json(self) -> bytes:
        """The event as ``orjson.dumps`` writes it."""
        return self.serialized if self.serialized is not None else orjson.dumps(self.event)


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


Outcome = Normalized | Skipped | Rejected


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
            return [_outcome(partial(billing_event, record, source))]
        if "Records" in record:
            return _s3_outcomes(record, source)
        if record.get("envelope") == inotify.ENVELOPE:
            return [_outcome(partial(storage_event, record, source))]
        if record.get("Event") == "s3:TestEvent":
            return [Skipped("S3 test event (sent when notifications are configured)")]
    except MalformedError as exc:
        return [_rejected(str(exc))]
    return [
        Rejected(
            "unrecognized record: neither a dCache billing record (msgType) "
            "nor an S3 notification (Records)"
        )
    ]


def _s3_outcomes(notification: Mapping[str, Any], source: str) -> list[Outcome]:
    """One outcome per entry: an entry's rejection (or bug) is its own, not its siblings'."""
    records = s3_records(notification)
    outcomes: list[Outcome] = []
    for index, record in enumerate(records):
        outcome = _outcome(partial(s3_event, record, source))
        if isinstance(outcome, Rejected) and len(records) > 1:
            outcome = Rejected(f"Records[{index}]: {outcome.reason}")
        outcomes.append(outcome)
    return outcomes


def _outcome(build: Callable[[], CanonicalEvent]) -> Outcome:
    try:
        event = build()
        return Normalized(event, _bounded_json(event))
    except Skip as exc:
        return Skipped(_bounded(str(exc)))
    except MalformedError as exc:
        return _rejected(str(exc))
    except Exception as exc:  # noqa: BLE001 - one S3 record's bug must not cost its siblings
        return _internal_error(exc)


def _bounded_json(event: CanonicalEvent) -> bytes:
    serialized = orjson.dumps(event)
    if len(serialized) > MAX_EVENT_BYTES:
        raise MalformedError(
            f"the event would be {len(serialized)} bytes, "
            f"over the {MAX_EVENT_BYTES}-byte event limit"
        )
    return serialized


# --- parsing ---------------------------------------------------------------------------------


def _parse_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise MalformedError(f"record of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise MalformedError("empty record")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" in str(exc) or "surrogate" in str(exc):
            raise MalformedError(f"record is not valid UTF-8 JSON: {exc}") from None
        raise MalformedError(f"record is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedError(f"record is a JSON {type(value).__name__}, not an object")
    problem = _shape_problem(value, MAX_NESTING_DEPTH, MAX_VALUES)
    if problem is not None:
        raise MalformedError(problem)
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
        children = container.values() if type(container) is dict else container
        for child in children:  # a plain loop: this runs for every raw record
            if type(child) is dict or type(child) is list:  # what orjson.loads makes
                pending.append((child, depth + 1))  # noqa: PERF401 - no generator per record
    return None
