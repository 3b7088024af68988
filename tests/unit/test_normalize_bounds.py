"""Bounds on what one record may cost and what one event may carry (adversarial review of
issue 11):

- a 1 MB ``storageInfo`` became a 1 MB canonical event whose tenant copy (event + tokens) was
  over the producer's 1,000,000-byte limit and crashed the authorize agent: every free-text
  field copied into ``data`` is bounded (1,024 characters) and so is the whole event (64 KiB);
- ``{"Records": [{}, ... 330,000]}`` took ~1 s of the event loop: at most 1,000 S3 records and
  100,000 values a record, each refused with one reason before any per-record work;
- ``"0" * 5000 + "7"`` passed the 19-digit check and made ``int()`` raise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.domain import normalize as normalize_module
from streamapp.domain.normalize import MAX_EVENT_BYTES, MAX_VALUES, Normalized, Rejected, normalize
from streamapp.domain.normalize_fields import MAX_TEXT_CHARS
from streamapp.domain.normalize_s3 import MAX_S3_RECORDS
from tests.factories import dcache_transfer, raw, s3_notification, s3_record

DCACHE = "dcache://dcache.example.org"
S3 = "s3://s3.example.org"


def envelope(**overrides: Any) -> dict[str, Any]:
    return {
        "envelope": "dcache-storage-event/1",
        "kind": "inotify",
        "frontend": "https://dcache.example.org:3880",
        "path": "/data/a.h5",
        "mask": ["IN_MOVED_TO"],
        "cookie": "c1",
        "observed": "2026-11-26T10:00:00Z",
    } | overrides


def s3_with_object(**fields: Any) -> dict[str, Any]:
    record = s3_record()
    record["s3"]["object"].update(fields)
    return s3_notification(record)


def failed_transfer(msg: str) -> dict[str, Any]:
    return dcache_transfer(status={"code": 666, "msg": msg})


# (field as the reason names it, a record with that field set to the given text, source)
FREE_TEXT: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
    ("dCache pnfsid", lambda text: dcache_transfer(pnfsid=text), DCACHE),
    ("dCache storageInfo", lambda text: dcache_transfer(storageInfo=text), DCACHE),
    (
        "dCache protocolInfo.protocol",
        lambda text: dcache_transfer(protocolInfo={"protocol": text}),
        DCACHE,
    ),
    ("dCache status.msg", failed_transfer, DCACHE),
    ("dCache envelope cookie", lambda text: envelope(cookie=text), DCACHE),
    ("S3 eventSource", lambda text: s3_notification(s3_record(event_source=text)), S3),
    ("S3 eventName", lambda text: s3_notification(s3_record("ObjectCreated:" + text)), S3),
    ("S3 s3.object.eTag", lambda text: s3_with_object(eTag=text), S3),
    ("S3 s3.object.versionId", lambda text: s3_with_object(versionId=text), S3),
    ("S3 s3.object.sequencer", lambda text: s3_with_object(sequencer=text), S3),
]


@pytest.mark.parametrize(("field", "build", "source"), FREE_TEXT, ids=[f[0] for f in FREE_TEXT])
def test_every_free_text_field_is_bounded(field: str, build: Any, source: str) -> None:
    at_limit = "x" * (MAX_TEXT_CHARS - len("ObjectCreated:") * (field == "S3 eventName"))
    [fits] = normalize(raw(build(at_limit)), source)
    assert isinstance(fits, Normalized), fits
    [over] = normalize(raw(build("x" * (MAX_TEXT_CHARS + 1) + "é" * 100_000)), source)
    assert isinstance(over, Rejected)
    assert field in over.reason
    assert f"over the {MAX_TEXT_CHARS}-character limit" in over.reason
    assert len(over.reason) < 200


def test_the_reviewers_record_is_refused_not_made_a_1_mb_event() -> None:
    [outcome] = normalize(raw(dcache_transfer(storageInfo="s" * 999_300)), DCACHE)
    assert isinstance(outcome, Rejected)
    assert "storageInfo has 999300 characters" in outcome.reason


def test_the_whole_event_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backstop below the field bounds: whatever a future field adds, no event is larger."""
    [event] = normalize(raw(dcache_transfer()), DCACHE)
    assert isinstance(event, Normalized)
    size = len(orjson.dumps(event.event))
    monkeypatch.setattr(normalize_module, "MAX_EVENT_BYTES", size - 1)
    [outcome] = normalize(raw(dcache_transfer()), DCACHE)
    assert isinstance(outcome, Rejected)
    assert (
        f"the event would be {size} bytes, over the {size - 1}-byte event limit" == outcome.reason
    )


hostile_text = st.text(st.characters(codec="utf-8"), min_size=0, max_size=3000)


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        dict.fromkeys(range(len(FREE_TEXT)), hostile_text),
    ),
    st.sampled_from(["\u0001", "\U0010ffff", '"', "é"]),
)
def test_no_event_exceeds_the_event_bound_whatever_the_free_text(
    texts: dict[int, str], filler: str
) -> None:
    """The worst each field can be (1,024 characters of 6-byte JSON escapes or 4-byte UTF-8),
    a maximal path and key: still far below 64 KiB, and so is its tenant copy with tokens."""
    for index, (_, build, source) in enumerate(FREE_TEXT):
        text = texts[index] or filler * MAX_TEXT_CHARS
        for outcome in normalize(raw(build(text)), source):
            if isinstance(outcome, Normalized):
                assert len(orjson.dumps(outcome.event)) <= MAX_EVENT_BYTES


def test_a_record_with_every_field_at_its_worst_fits_the_event_bound() -> None:
    worst = "\u0001" * MAX_TEXT_CHARS  # 6 bytes each as JSON
    key = "/".join(["\U0010ffff" * 63] * 16)  # 4,096 bytes: the path bound
    record = s3_record(key=key, event_source=worst)
    record["s3"]["object"].update(eTag=worst, versionId=worst, sequencer=worst)
    [outcome] = normalize(raw(s3_notification(record)), S3)
    assert isinstance(outcome, Normalized), outcome
    assert len(orjson.dumps(outcome.event)) < MAX_EVENT_BYTES


# --- work bounds -----------------------------------------------------------------------------


def test_too_many_s3_records_are_one_rejection() -> None:
    many = raw(s3_notification(*[s3_record(key=f"k{i}") for i in range(MAX_S3_RECORDS + 1)]))
    [outcome] = normalize(many, S3)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == (
        f"S3 notification has {MAX_S3_RECORDS + 1} Records, over the limit of {MAX_S3_RECORDS}"
    )
    at_limit = raw(s3_notification(*[s3_record(key=f"k{i}") for i in range(MAX_S3_RECORDS)]))
    assert all(isinstance(o, Normalized) for o in normalize(at_limit, S3))


@pytest.mark.parametrize(
    "value",
    [
        b'{"Records":[' + b",".join([b"{}"] * 330_000) + b"]}",
        b'{"Records":[' + b",".join([b"1"] * 480_000) + b"]}",
        b'{"a":[' + b",".join([b"[]"] * 330_000) + b"]}",
        b'{"a":[' + b",".join([b"[" * 30 + b"]" * 30] * 16_000) + b"]}",
        json.dumps({f"k{i}": 1 for i in range(MAX_VALUES + 1)}).encode(),
    ],
    ids=["330k empty records", "480k scalar records", "330k lists", "16k nests", "100k keys"],
)
def test_records_with_too_many_values_are_refused_before_any_per_record_work(
    value: bytes,
) -> None:
    [outcome] = normalize(value, S3, max_bytes=2_000_000)
    assert outcome == Rejected(f"record holds more than {MAX_VALUES} values")


def test_a_record_just_within_the_values_budget_is_judged_on_its_content() -> None:
    record = dcache_transfer(padding=[0] * (MAX_VALUES - 100))
    [outcome] = normalize(raw(record), DCACHE, max_bytes=2_000_000)
    assert isinstance(outcome, Normalized)


# --- size digits -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["fileSize", "transferSize"])
def test_leading_zeros_beyond_pythons_int_digit_limit_are_a_size(field: str) -> None:
    [outcome] = normalize(raw(dcache_transfer(**{field: "0" * 5000 + "7"})), DCACHE)
    assert isinstance(outcome, Normalized), outcome
    assert outcome.event["data"]["size" if field == "fileSize" else "transferSize"] == 7


@pytest.mark.parametrize("digits", ["0" * 5000 + "9" * 30, "9" * 30, "9" * 5000, "-1", "x"])
def test_an_unusable_transfer_size_is_dropped(digits: str) -> None:
    [outcome] = normalize(raw(dcache_transfer(transferSize=digits)), DCACHE)
    assert isinstance(outcome, Normalized), outcome
    assert "transferSize" not in outcome.event["data"]
