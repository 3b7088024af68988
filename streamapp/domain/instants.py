"""Timestamps with a zone: parsed once, written in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_aware(value: str) -> datetime:
    """An ISO-8601 timestamp that names its zone, in UTC. ``ValueError`` says what is wrong."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return moment.astimezone(UTC)


def rfc3339_utc(moment: datetime, *, always_milliseconds: bool = False) -> str:
    """``2026-05-04T08:18:30.123Z`` (microseconds only when they are there)."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if always_milliseconds or utc.microsecond % 1000 == 0 else "microseconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")
