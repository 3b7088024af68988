"""Timestamps with a zone: parsed once, written in UTC.

Every instant stays within RFC 3339's years 0001-9999 in UTC (Python's ``datetime`` range): one
outside is a ``ValueError`` with the reason, never an ``OverflowError`` from deep inside.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
EARLIEST_EPOCH_MILLISECONDS: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MILLISECOND
LATEST_EPOCH_MILLISECONDS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MILLISECOND


def parse_aware(value: str) -> datetime:
    """An ISO-8601 timestamp that names its zone, in UTC. ``ValueError`` says what is wrong."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is year 0 in UTC
        raise ValueError(f"{value!r} is outside years 0001-9999 in UTC") from None


def from_epoch_milliseconds(milliseconds: int) -> datetime:
    """Milliseconds since 1970 in UTC; ``ValueError`` outside years 0001-9999."""
    if not EARLIEST_EPOCH_MILLISECONDS <= milliseconds <= LATEST_EPOCH_MILLISECONDS:
        raise ValueError(f"{milliseconds} ms since 1970 is outside years 0001-9999")
    return _EPOCH + timedelta(milliseconds=milliseconds)


def rfc3339_utc(moment: datetime, *, always_milliseconds: bool = False) -> str:
    """``2026-05-04T08:18:30.123Z`` (microseconds only when they are there)."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if always_milliseconds or utc.microsecond % 1000 == 0:
        return _with_milliseconds(utc)
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"  # an aware UTC one ends "+00:00"


def _with_milliseconds(utc: datetime) -> str:
    """``utc.isoformat(timespec="milliseconds")`` in RFC 3339's UTC form, in a third of its
    time (an aware ``isoformat`` asks the zone for its offset: 2.5 µs, and every delegated
    token formats its expiry): the minute's text is kept, seconds and milliseconds appended.
    Milliseconds are truncated, as ``isoformat`` does (the floor of the total is the same)."""
    minute, within = divmod((utc - _EPOCH) // _MILLISECOND, 60_000)
    kept_minute, text = _minute_text[0]
    if minute != kept_minute:
        text = utc.isoformat(timespec="minutes")[:-6] + ":"
        _minute_text[0] = (minute, text)
    return "%s%02d.%03dZ" % (text, within // 1000, within % 1000)  # noqa: UP031 - the fastest


# the last minute formatted (an event's instants, a token's expiry, share it); replaced whole
_minute_text: list[tuple[int | None, str]] = [(None, "")]
