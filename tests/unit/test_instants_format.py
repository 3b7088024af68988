"""``rfc3339_utc`` writes what ``datetime.isoformat`` writes, in RFC 3339's UTC form, for every
instant Python can hold: its millisecond form keeps the last minute's text (a token's expiry
is formatted per event), so instants in one minute, across minutes, before 1970 and at the
ends of the range must each come out as the reference says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.domain.instants import rfc3339_utc

# hypothesis takes naive bounds and attaches the zone itself
ALL_UTC = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def reference(moment: datetime, spec: str) -> str:
    return moment.astimezone(UTC).isoformat(timespec=spec).removesuffix("+00:00") + "Z"


@settings(max_examples=2000)
@given(ALL_UTC, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_milliseconds_are_isoformats_truncation_in_any_zone(moment: datetime, minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    assert rfc3339_utc(local, always_milliseconds=True) == reference(moment, "milliseconds")


@settings(max_examples=500)
@given(ALL_UTC, st.lists(st.integers(min_value=-125_000, max_value=125_000), max_size=20))
def test_instants_near_each_other_do_not_take_a_kept_minute(
    moment: datetime, offsets_ms: list[int]
) -> None:
    """Alternating between neighbouring minutes (and the same one) reuses no wrong text."""
    for offset in offsets_ms:
        near = moment + timedelta(milliseconds=offset, microseconds=offset % 997)
        assert rfc3339_utc(near, always_milliseconds=True) == reference(near, "milliseconds")
        assert rfc3339_utc(moment, always_milliseconds=True) == reference(moment, "milliseconds")


def test_the_ends_of_the_range_and_the_epoch() -> None:
    for moment in (
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(999, 1, 1, 0, 0, 5, 4000, tzinfo=UTC),  # a year of three digits: padded
    ):
        assert rfc3339_utc(moment, always_milliseconds=True) == reference(moment, "milliseconds")
    assert rfc3339_utc(datetime(999, 1, 1, 0, 0, 5, 4000, tzinfo=UTC)) == "0999-01-01T00:00:05.004Z"
    assert rfc3339_utc(datetime(2026, 5, 4, 8, 18, 30, 123456, tzinfo=UTC)) == (
        "2026-05-04T08:18:30.123456Z"  # microseconds when they are there
    )
