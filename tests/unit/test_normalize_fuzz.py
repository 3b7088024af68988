"""Property-based fuzzing of ``normalize``: every supported kind of raw record, well formed,
mutated into hostile shapes, and raw bytes, over 10,000 records a run (the examples of the four
tests below add up to 10,500).

What must hold for every input: no exception escapes; every outcome is exactly one of
Normalized / Skipped / Rejected; every event's subject is its ``data.path`` and the literal
storage path (S3: exactly ``/<bucket>/<decoded key>``; dCache: the namespace path resolved
within ``/``), never ``/``, within the path bounds, and the event serializes with orjson.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamapp.domain.inotify import ENVELOPE, FILE_EVENTS
from streamapp.domain.normalize import (
    MAX_REASON_CHARS,
    Normalized,
    Outcome,
    Rejected,
    Skipped,
    normalize,
)
from streamapp.domain.normalize_fields import MAX_SIZE
from streamapp.domain.paths import MAX_PATH_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENTS
from tests.factories import dcache_record, dcache_transfer, s3_record

SOURCE = "dcache://fuzz.example.org"
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6})?Z")
CONTROL = re.compile("[\x00-\x1f\x7f]")

# --- well-formed records of every kind --------------------------------------------------------

# st.one_of draws each branch alike: the plain ones come twice, so most records are valid
plain_segments = st.from_regex(r"[A-Za-z0-9_.+ -]{1,12}", fullmatch=True)
segment_text = st.one_of(
    plain_segments,
    plain_segments,
    st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=12),
    st.sampled_from([".", "..", "", "%2E%2E", "%2F", "a+b", "%00", "é", "データ", "..a", "~"]),
)
segments = st.lists(segment_text, min_size=0, max_size=8)
absolute_paths = st.builds(
    lambda s, tail: "/" + "/".join(s) + tail, segments, st.sampled_from(["", "/"])
)
s3_keys = st.one_of(
    st.builds("/".join, segments),
    st.builds(lambda s: quote("/".join(s), safe="/"), segments),  # as S3 writes them: encoded
    st.lists(plain_segments, min_size=1, max_size=5).map("/".join),
    st.sampled_from(["b/../a/x.h5", "b/%2E%2E/a/x.h5", "/a/x", "a//x/", "a/./x", "raw/f.h5"]),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-05-04T10:18:30Z"]
    ),
)
sizes = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=10**13),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=0, max_value=2**63).map(str),
)
mtimes = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2 * 10**12),
    st.integers(min_value=-(2**63), max_value=2**63),
)


@st.composite
def dcache_billing(draw: st.DrawFn) -> dict[str, Any]:
    msg_type = draw(st.sampled_from(["transfer", "remove", "store", "restore", "request", "hit"]))
    fields = {
        "billingPath": draw(absolute_paths),
        "fileSize": draw(sizes),
        "date": draw(timestamps),
        "status": {"code": draw(st.sampled_from([0, 0, 1, 10006])), "msg": draw(st.text())},
    }
    if msg_type == "transfer":
        fields |= {
            "isWrite": draw(st.sampled_from(["write", "read"])),
            "isP2p": draw(st.booleans()),
        }
        return dcache_transfer(**fields)
    return dcache_record(msg_type, **fields)


@st.composite
def s3_records(draw: st.DrawFn) -> dict[str, Any]:
    event_name = draw(
        st.sampled_from(
            [
                "ObjectCreated:Put",
                "s3:ObjectCreated:CompleteMultipartUpload",
                "ObjectCreated:Copy",
                "ObjectRemoved:Delete",
                "s3:ObjectRemoved:DeleteMarkerCreated",
                "LifecycleExpiration:Delete",
                "ObjectRestore:Completed",
                "s3:ObjectAccessed:Get",
                "s3:ObjectCreated:PutTagging",
                "ObjectTagging:Put",
            ]
        )
    )
    return s3_record(
        event_name,
        bucket=draw(st.sampled_from(["beamtime-11012345", "b", "b", "b", "..", "", "a/b", "é"])),
        key=draw(s3_keys),
        size=draw(sizes),
        event_source=draw(st.sampled_from(["aws:s3", "ceph:s3", "minio:s3"])),
        eventTime=draw(timestamps),
    )


@st.composite
def s3_notifications(draw: st.DrawFn) -> dict[str, Any]:
    records = draw(st.lists(s3_records(), min_size=1, max_size=3))
    if draw(st.booleans()):  # MinIO's Kafka value wrapper
        first = records[0]
        key = f"{first['s3']['bucket']['name']}/{first['s3']['object']['key']}"
        return {"EventName": first["eventName"], "Key": key, "Records": records}
    return {"Records": records}


@st.composite
def dcache_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["inotify", "resync"]))
    envelope: dict[str, Any] = {
        "envelope": ENVELOPE,
        "kind": kind,
        "frontend": "https://dcache.example.org:3880",
        "channel": None,
        "sse_id": None,
        "path": draw(absolute_paths),
        "watched": None,
        "name": None,
        "mask": [],
        "cookie": None,
        "change": None,
        "reason": None,
        "size": draw(sizes),
        "mtime": draw(mtimes),
        "observed": draw(timestamps),
    }
    if kind == "inotify":
        envelope |= {
            "channel": "https://dcache.example.org:3880/api/v1/events/channels/x",
            "sse_id": str(draw(st.integers(0, 10**6))),
            "mask": [
                draw(st.sampled_from(sorted(FILE_EVENTS))),
                *draw(st.lists(st.just("IN_ISDIR"), max_size=1)),
            ],
            "cookie": draw(st.none() | st.text(max_size=8)),
        }
    else:
        envelope |= {
            "change": draw(st.sampled_from(["created", "deleted"])),
            "reason": draw(st.sampled_from(["EVENT_LOSS", "IN_Q_OVERFLOW", "listing", None])),
        }
    return envelope


records_of_every_kind = st.one_of(
    dcache_billing(),
    s3_notifications(),
    dcache_envelopes(),
    st.builds(lambda: {"Event": "s3:TestEvent"}),  # fresh: mutations change it in place
)

# --- hostile values and mutations --------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 0
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


hostile_values = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**17, -(10**17), 10**20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=40, max_value=400).map(nested),
    st.integers(min_value=1, max_value=80_000).map(lambda n: "/data/" + "x" * n),
    st.integers(min_value=1, max_value=600).map(lambda n: "/a" * n),
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", "/", "/data/..", "..", "\x00", "\u202e", "\ufeff", "NaN", "∞", "٣٤"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def containers(value: Any) -> list[Any]:
    """Every dict and list inside ``value`` (itself included)."""
    found: list[Any] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict | list):
            found.append(item)
            pending.extend(item.values() if isinstance(item, dict) else item)
    return found


@st.composite
def mutated_records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = draw(records_of_every_kind)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        target = draw(st.sampled_from(containers(record)))
        if isinstance(target, dict):
            keys = sorted(target) or ["new"]
            key = draw(st.sampled_from([*keys, "extra"]))
            if draw(st.integers(0, 4)) == 0:
                target.pop(key, None)  # a missing field
            else:
                target[key] = draw(hostile_values)
        elif target:
            target[draw(st.integers(0, len(target) - 1))] = draw(hostile_values)
    return record


def encoded(record: dict[str, Any], rng: random.Random) -> bytes:
    """JSON as a hostile producer might write it: any integer size, NaN, escaped or raw
    Unicode, now and then a BOM, a stray invalid byte or a truncation."""
    text = json.dumps(record, ensure_ascii=rng.random() < 0.5)
    data = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.05:
        data = b"\xef\xbb\xbf" + data
    elif roll < 0.10 and data:
        at = rng.randrange(len(data))
        data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + data[at:]
    elif roll < 0.13:
        data = data[: rng.randrange(len(data) + 1)]
    return data


# --- the properties ----------------------------------------------------------------------------


def resolved(path: str) -> str:
    """An independent oracle of dCache resolution within '/'."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    return "/" + "/".join(kept)


def original_paths(raw: bytes) -> set[str]:
    """What the raw record names: dCache paths resolved, S3 ``/<bucket>/<decoded key>``."""
    record = json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    found = set()
    if isinstance(path := record.get("billingPath", record.get("path")), str):
        found.add(resolved(path))
    for s3 in record.get("Records") or []:
        try:
            bucket, key = s3["s3"]["bucket"]["name"], s3["s3"]["object"]["key"]
            found.add(f"/{bucket}/{unquote_plus(key, errors='strict')}")
        except (TypeError, KeyError, AttributeError, UnicodeDecodeError):
            continue  # a mangled record: normalize rejects it, no path to compare
    return found


def check(raw: bytes) -> list[Outcome]:
    outcomes = normalize(raw, SOURCE)  # must not raise: any exception fails the property
    assert outcomes
    for outcome in outcomes:
        assert type(outcome) in (Normalized, Skipped, Rejected)
        event(type(outcome).__name__)  # --hypothesis-show-statistics: the mix of outcomes
        if isinstance(outcome, Rejected | Skipped):
            assert isinstance(outcome.reason, str)
            assert 0 < len(outcome.reason) <= MAX_REASON_CHARS
            continue
        canonical = outcome.event
        subject = canonical["subject"]
        assert subject == canonical["data"]["path"]
        assert subject.startswith("/")
        assert subject != "/"
        path_segments = subject[1:].split("/")
        assert all(s not in ("", ".", "..") for s in path_segments)
        assert len(subject.encode()) <= MAX_PATH_BYTES
        assert len(path_segments) <= MAX_SEGMENTS
        assert all(len(s.encode()) <= MAX_SEGMENT_BYTES for s in path_segments)
        assert not CONTROL.search(subject)
        assert subject in original_paths(raw)
        if canonical["data"]["storage"] == "s3":
            assert subject == "/" + canonical["data"]["bucket"] + "/" + canonical["data"]["key"]
        size = canonical["data"]["size"]
        assert size is None or 0 <= size <= MAX_SIZE
        assert RFC3339.fullmatch(canonical["time"]), canonical["time"]
        datetime.fromisoformat(canonical["time"])
        orjson.loads(orjson.dumps(canonical))
    return outcomes


@settings(FUZZ, max_examples=2500)
@given(records_of_every_kind)
def test_well_formed_records_of_every_kind(record: dict[str, Any]) -> None:
    check(json.dumps(record).encode())


@settings(FUZZ, max_examples=5000)
@given(mutated_records(), st.randoms(use_true_random=False))
def test_mutated_and_hostile_records(record: dict[str, Any], rng: random.Random) -> None:
    check(encoded(record, rng))


@settings(FUZZ, max_examples=2500)
@given(st.binary(max_size=300))
def test_raw_bytes(raw: bytes) -> None:
    check(raw)


@settings(FUZZ, max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=64).map(lambda b: b'{"msgType": "transfer", "billingPath": "' + b),
        st.binary(max_size=64).map(lambda b: b'{"Records": [{"s3": ' + b + b"}]}"),
        st.binary(max_size=64).map(lambda b: b'{"envelope": "' + ENVELOPE.encode() + b'"' + b),
        st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(0, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    )
)
def test_raw_bytes_shaped_like_records(raw: bytes) -> None:
    check(raw)
