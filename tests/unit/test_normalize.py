"""Table-driven tests of the normalizer against the traps in docs/formats.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamapp.domain import normalize as normalizing
from streamapp.domain import normalize_fields, normalize_s3
from streamapp.domain.events import parse_canonical
from streamapp.domain.normalize import Normalized, Outcome, Rejected, Skipped, normalize
from tests.factories import (
    dcache_record,
    dcache_transfer,
    minio_wrapped,
    raw,
    s3_notification,
    s3_record,
)

SOURCE = "dcache://dcache.example.org"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"down": value}
    return value


def only(outcomes: list[Outcome]) -> Outcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def event_of(record: Any, source: str = SOURCE) -> dict[str, Any]:
    outcome = only(normalize(raw(record), source))
    assert isinstance(outcome, Normalized), outcome
    return dict(outcome.event)


# --- dCache billing: (record, expected type, expected subject, expected size) ------------------

DCACHE_EVENTS = [
    pytest.param(
        dcache_transfer(),
        "storage.object.created",
        "/data/alice/run42/file.root",
        100709673,
        id="write-transfer",
    ),
    pytest.param(
        dcache_transfer(isWrite="read"),
        "storage.object.read",
        "/data/alice/run42/file.root",
        100709673,
        id="read-transfer",
    ),
    pytest.param(
        dcache_transfer(status={"code": 10006, "msg": "Transfer interrupted"}),
        "storage.transfer.failed",
        "/data/alice/run42/file.root",
        100709673,
        id="failed-transfer",
    ),
    pytest.param(
        dcache_transfer(
            billingPath="/data/alice/run42/final.root", transferPath="/upload/5/4f1c2d/final.root"
        ),
        "storage.object.created",
        "/data/alice/run42/final.root",
        100709673,
        id="billingPath-not-transferPath",
    ),
    pytest.param(
        dcache_transfer(fileSize="2048"),
        "storage.object.created",
        "/data/alice/run42/file.root",
        2048,
        id="size-as-string",
    ),
    pytest.param(
        dcache_transfer(fileSize=None),
        "storage.object.created",
        "/data/alice/run42/file.root",
        None,
        id="size-unknown",
    ),
    pytest.param(
        dcache_transfer(billingPath="//data/./alice//run42/tmp/../file.root"),
        "storage.object.created",
        "/data/alice/run42/file.root",
        100709673,
        id="path-normalized-within-root",
    ),
    pytest.param(
        {k: v for k, v in dcache_transfer().items() if k != "version"} | {"VERSION": "1.0"},
        "storage.object.created",
        "/data/alice/run42/file.root",
        100709673,
        id="upper-case-VERSION",
    ),
    pytest.param(
        dcache_record("remove"),
        "storage.object.deleted",
        "/data/alice/run42/file.root",
        4096,
        id="remove",
    ),
    pytest.param(
        dcache_record("store"),
        "storage.object.archived",
        "/data/alice/run42/file.root",
        4096,
        id="store-to-tape",
    ),
    pytest.param(
        dcache_record("restore"),
        "storage.object.staged",
        "/data/alice/run42/file.root",
        4096,
        id="restore-from-tape",
    ),
    pytest.param(
        dcache_record("store", status={"code": 31, "msg": "tape full"}),
        "storage.transfer.failed",
        "/data/alice/run42/file.root",
        4096,
        id="store-failed",
    ),
    pytest.param(
        dcache_record("restore", status={"code": 1, "msg": "no tape"}),
        "storage.transfer.failed",
        "/data/alice/run42/file.root",
        4096,
        id="restore-failed",
    ),
    pytest.param(
        dcache_transfer(billingPath="/data/ünï/データ.h5"),
        "storage.object.created",
        "/data/ünï/データ.h5",
        100709673,
        id="unicode-path",
    ),
]


@pytest.mark.parametrize(("record", "kind", "subject", "size"), DCACHE_EVENTS)
def test_dcache_records_become_events(
    record: dict[str, Any], kind: str, subject: str, size: int | None
) -> None:
    event = event_of(record)
    assert event["type"] == kind
    assert event["subject"] == subject
    assert event["data"]["path"] == subject
    assert event["data"]["size"] == size
    assert event["data"]["storage"] == "dcache"
    assert event["specversion"] == "1.0"
    assert event["source"] == SOURCE


DCACHE_SKIPPED = [
    pytest.param(dcache_transfer(isP2p=True), "pool-to-pool", id="pool-to-pool"),
    pytest.param(
        dcache_transfer(isP2p=True, status={"code": 1, "msg": "x"}),
        "pool-to-pool",
        id="failed-pool-to-pool",
    ),
    pytest.param(dcache_record("request"), "door request", id="request-with-VERSION"),
    pytest.param(dcache_record("hit"), "cache hit", id="hit"),
    pytest.param(dcache_record("warning"), "warning", id="warning"),
    pytest.param(
        dcache_record("remove", status={"code": 2, "msg": "denied"}),
        "removal failed",
        id="failed-remove",
    ),
]


@pytest.mark.parametrize(("record", "why"), DCACHE_SKIPPED)
def test_dcache_records_that_change_no_object_are_skipped(record: dict[str, Any], why: str) -> None:
    outcome = only(normalize(raw(record), SOURCE))
    assert isinstance(outcome, Skipped)
    assert why in outcome.reason


DCACHE_REJECTED = [
    pytest.param(
        dcache_record("remove", billingPath="parent:[0000ABCD]/file.root"),
        "parent reference",
        id="parent-path",
    ),
    pytest.param(dcache_transfer(billingPath="/../etc/passwd"), "escapes", id="traversal"),
    pytest.param(dcache_transfer(billingPath="/data/a/../../../x"), "escapes", id="deep-traversal"),
    pytest.param(dcache_transfer(billingPath="data/relative"), "not absolute", id="relative"),
    pytest.param(dcache_transfer(billingPath="/data/a\u0000b"), "NUL", id="nul-byte"),
    pytest.param(dcache_transfer(billingPath="/data/.."), "root '/'", id="resolves-to-root"),
    pytest.param(dcache_transfer(billingPath="//./"), "root '/'", id="root-itself"),
    pytest.param(dcache_transfer(billingPath="/data/a\tb"), "U+0009", id="control-character"),
    pytest.param(
        dcache_transfer(billingPath="/data/" + "x" * 70_000), "4096-byte limit", id="70kB-name"
    ),
    pytest.param(
        dcache_transfer(billingPath="/data/" + "é" * 128), "255-byte limit", id="256-byte-name"
    ),
    pytest.param(dcache_transfer(billingPath="/d" * 257), "257 segments", id="too-many-segments"),
    pytest.param(
        dcache_transfer(billingPath="/data" + "/abcdefghijklmnop" * 4300),
        "4096-byte limit",
        id="70kB-path",
    ),
    pytest.param(dcache_transfer(fileSize="9" * 5000), "int64", id="size-5000-digits"),
    pytest.param(dcache_transfer(fileSize=2**64 - 1), "int64", id="size-uint64"),
    pytest.param(
        dcache_transfer(date="0001-01-01T00:00:00+01:00"), "0001-9999", id="date-before-year-1"
    ),
    pytest.param(dcache_transfer(date="2026-05-04T10:18:30+" + "1" * 500), "ISO", id="long-date"),
    pytest.param(dcache_transfer(pad=nested(300)), "nested deeper than 64", id="nested-300-deep"),
    pytest.param(dcache_transfer(billingPath=None), "billingPath", id="no-billingPath"),
    pytest.param(dcache_transfer(isWrite=True), "isWrite", id="isWrite-not-a-string"),
    pytest.param(dcache_transfer(isP2p="false"), "isP2p", id="isP2p-not-bool"),
    pytest.param(dcache_transfer(status=None), "status", id="no-status"),
    pytest.param(dcache_transfer(status={"code": "0"}), "status.code", id="status-code-string"),
    pytest.param(dcache_transfer(date="yesterday"), "ISO-8601", id="bad-date"),
    pytest.param(dcache_transfer(date="2026-05-04T10:18:30"), "UTC offset", id="naive-date"),
    pytest.param(dcache_transfer(fileSize=-1), "negative", id="negative-size"),
    pytest.param(dcache_transfer(fileSize="12kB"), "fileSize", id="size-not-a-number"),
    pytest.param(
        dcache_transfer(msgType="frobnicate"), "unknown dCache msgType", id="unknown-msgType"
    ),
]


@pytest.mark.parametrize(("record", "why"), DCACHE_REJECTED)
def test_malformed_dcache_records_are_rejected(record: dict[str, Any], why: str) -> None:
    outcome = only(normalize(raw(record), SOURCE))
    assert isinstance(outcome, Rejected), outcome
    assert why in outcome.reason


def test_dcache_time_is_converted_to_utc_rfc3339() -> None:
    assert event_of(dcache_transfer(date="2026-05-04T10:18:30.123+02:00"))["time"] == (
        "2026-05-04T08:18:30.123Z"
    )
    assert event_of(dcache_transfer(date="2026-05-04T10:18:30.123456-05:00"))["time"] == (
        "2026-05-04T15:18:30.123456Z"
    )


def test_dcache_principals_never_reach_the_event() -> None:
    text = json.dumps(event_of(dcache_transfer()))
    for personal in ("UidPrincipal", "alice]", "198.51.100.7", "Origin["):
        assert personal not in text


def test_failed_transfer_carries_its_status() -> None:
    event = event_of(dcache_transfer(status={"code": 10006, "msg": "Transfer interrupted"}))
    assert event["data"]["status"] == {"code": 10006, "msg": "Transfer interrupted"}
    assert event["data"]["direction"] == "write"


# --- S3 family ----------------------------------------------------------------------------------

S3_EVENTS = [
    pytest.param(
        s3_notification(s3_record("ObjectCreated:Put")),
        "storage.object.created",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="aws-put-no-prefix",
    ),
    pytest.param(
        s3_notification(s3_record("s3:ObjectCreated:Put", event_source="minio:s3")),
        "storage.object.created",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="minio-s3-prefix",
    ),
    pytest.param(
        minio_wrapped(s3_record("s3:ObjectCreated:CompleteMultipartUpload")),
        "storage.object.created",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="minio-kafka-wrapper",
    ),
    pytest.param(
        s3_notification(s3_record("ObjectCreated:Copy", size="4096", event_source="ceph:s3")),
        "storage.object.created",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        4096,
        id="ceph-size-as-string",
    ),
    pytest.param(
        s3_notification(s3_record("ObjectRemoved:Delete", size=None)),
        "storage.object.deleted",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        None,
        id="delete-without-size",
    ),
    pytest.param(
        s3_notification(s3_record("ObjectRemoved:DeleteMarkerCreated")),
        "storage.object.deleted",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="delete-marker",
    ),
    pytest.param(
        s3_notification(s3_record("ObjectRestore:Completed")),
        "storage.object.staged",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="restore-completed",
    ),
    pytest.param(
        s3_notification(s3_record("s3:ObjectAccessed:Get")),
        "storage.object.read",
        "/beamtime-11012345/raw/scan 1/frame_000.tif",
        2048,
        id="minio-get",
    ),
    pytest.param(
        s3_notification(s3_record(key="a%2Bb/%C3%A9t%C3%A9+2026.h5")),
        "storage.object.created",
        "/beamtime-11012345/a+b/été 2026.h5",
        2048,
        id="url-encoded-key",
    ),
    pytest.param(
        s3_notification(s3_record(key="raw/..hidden/final..h5")),
        "storage.object.created",
        "/beamtime-11012345/raw/..hidden/final..h5",
        2048,
        id="dots-inside-a-segment-are-literal",
    ),
]


@pytest.mark.parametrize(("notification", "kind", "subject", "size"), S3_EVENTS)
def test_s3_notifications_become_events(
    notification: dict[str, Any], kind: str, subject: str, size: int | None
) -> None:
    event = event_of(notification, "s3://minio.example.org")
    assert event["type"] == kind
    assert event["subject"] == subject
    assert event["data"]["path"] == subject
    assert event["data"]["size"] == size
    assert event["data"]["storage"] == "s3"


def test_s3_subject_is_exactly_bucket_and_decoded_key() -> None:
    event = event_of(s3_notification(s3_record(key="raw/tmp/final+1%2B.h5")))
    assert event["subject"] == "/beamtime-11012345/raw/tmp/final 1+.h5"
    # the key is what an S3 client needs to fetch the object: decoded, never resolved
    assert (event["data"]["bucket"], event["data"]["key"]) == (
        "beamtime-11012345",
        "raw/tmp/final 1+.h5",
    )
    assert event["subject"] == f"/{event['data']['bucket']}/{event['data']['key']}"


S3_SKIPPED = [
    pytest.param(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2026-11-20T13:00:00Z",
            "Bucket": "b",
            "RequestId": "x",
            "HostId": "y",
        },
        id="aws-test-event",
    ),
    pytest.param(s3_notification(s3_record("ObjectRestore:Post")), id="restore-initiated"),
    pytest.param(s3_notification(s3_record("s3:ObjectAccessed:Head")), id="head"),
    pytest.param(s3_notification(s3_record("ObjectTagging:Put")), id="tagging"),
    pytest.param(
        s3_notification(s3_record("s3:ObjectCreated:PutTagging")), id="minio-tagging-under-created"
    ),
]


@pytest.mark.parametrize("notification", S3_SKIPPED)
def test_s3_events_that_change_no_object_are_skipped(notification: dict[str, Any]) -> None:
    assert isinstance(only(normalize(raw(notification), SOURCE)), Skipped)


S3_REJECTED = [
    # keys are literal: one that would not read back as itself from /<bucket>/<key> is refused
    pytest.param(
        s3_notification(s3_record(key="../other-bucket/x")), "'..' segment", id="key-escapes-bucket"
    ),
    pytest.param(s3_notification(s3_record(key="b/../a/x.h5")), "'..' segment", id="dotdot"),
    pytest.param(
        s3_notification(s3_record(key="b/%2E%2E/a/x.h5")), "'..' segment", id="encoded-dotdot"
    ),
    pytest.param(
        s3_notification(s3_record(key="a/%2E%2E/%2E%2E/x")), "'..' segment", id="encoded-traversal"
    ),
    pytest.param(s3_notification(s3_record(key="a/./x")), "'.' segment", id="dot-segment"),
    pytest.param(s3_notification(s3_record(key="/a/x")), "starts with '/'", id="leading-slash"),
    pytest.param(s3_notification(s3_record(key="%2Fa/x")), "starts with '/'", id="encoded-slash"),
    pytest.param(s3_notification(s3_record(key="a//x")), "empty segment", id="double-slash"),
    pytest.param(s3_notification(s3_record(key="a//x/")), "ends with '/'", id="folder-marker"),
    pytest.param(s3_notification(s3_record(key="a%00b")), "NUL", id="encoded-nul"),
    pytest.param(s3_notification(s3_record(key="a%0Ab")), "U+000A", id="encoded-newline"),
    pytest.param(s3_notification(s3_record(key="a%FFb")), "not UTF-8", id="non-utf8-escape"),
    pytest.param(s3_notification(s3_record(key="./")), "ends with '/'", id="dot-slash-key"),
    pytest.param(s3_notification(s3_record(key="")), "empty", id="empty-key"),
    pytest.param(
        s3_notification(s3_record(key="x" * 256)), "255-byte limit", id="segment-too-long"
    ),
    pytest.param(
        s3_notification(s3_record(key="/".join(["abcdefgh"] * 500))),
        "4096-byte limit",
        id="key-too-long",
    ),
    pytest.param(
        s3_notification(s3_record(key="/".join(["a"] * 300))), "segments", id="too-many-segments"
    ),
    pytest.param(s3_notification(s3_record(size="9" * 5000)), "int64", id="size-5000-digits"),
    pytest.param(s3_notification(s3_record(size=2**63)), "int64", id="size-over-int64"),
    pytest.param(
        s3_notification(s3_record(size="0" * 30 + "1" * 20)), "int64", id="size-20-digits"
    ),
    pytest.param(s3_notification(s3_record(bucket="")), "bucket", id="empty-bucket"),
    pytest.param(
        s3_notification(s3_record("Bogus:Thing")),
        "unrecognized S3 eventName",
        id="unknown-event-name",
    ),
    pytest.param(s3_notification(s3_record(size="huge")), "size", id="size-not-number"),
    pytest.param(s3_notification(s3_record(eventTime=None)), "eventTime", id="no-time"),
    pytest.param({"Records": []}, "no Records", id="empty-records"),
    pytest.param({"Records": ["x"]}, "not an object", id="record-not-object"),
    pytest.param(
        {"EventName": "s3:ObjectCreated:Put", "Key": "b/k"},
        "unrecognized",
        id="wrapper-without-records",
    ),
]


@pytest.mark.parametrize(("notification", "why"), S3_REJECTED)
def test_malformed_s3_notifications_are_rejected(notification: dict[str, Any], why: str) -> None:
    outcome = only(normalize(raw(notification), SOURCE))
    assert isinstance(outcome, Rejected), outcome
    assert why in outcome.reason


def test_several_records_in_one_message_yield_one_outcome_each() -> None:
    notification = s3_notification(
        s3_record(key="a.h5"),
        s3_record("ObjectRemoved:Delete", key="b.h5"),
        s3_record(key="../escape"),
        s3_record("ObjectTagging:Put", key="c.h5"),
    )
    outcomes = normalize(raw(notification), SOURCE)
    assert [type(o) for o in outcomes] == [Normalized, Normalized, Rejected, Skipped]
    first, second = (o.event for o in outcomes[:2] if isinstance(o, Normalized))
    assert (first["subject"], second["subject"]) == (
        "/beamtime-11012345/a.h5",
        "/beamtime-11012345/b.h5",
    )
    assert first["id"] != second["id"]
    rejected = outcomes[2]
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("Records[2]:")


# --- whole records -----------------------------------------------------------------------------

RAW_REJECTED = [
    pytest.param(b"\xff\xfe{not utf-8}", "UTF-8", id="non-utf8-bytes"),
    pytest.param(
        '{"msgType": "transfer", "billingPath": "/d/\xe9"}'.encode("latin-1"),
        "UTF-8",
        id="latin1-encoded",
    ),
    pytest.param(b"{truncated", "not valid JSON", id="truncated-json"),
    pytest.param(b"[1, 2]", "not an object", id="json-array"),
    pytest.param(b'"text"', "not an object", id="json-string"),
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b'{"hello": "world"}', "unrecognized", id="unknown-object"),
    pytest.param(b'{"msgType": "transfer", "fileSize": NaN}', "not valid JSON", id="nan"),
]


@pytest.mark.parametrize(("payload", "why"), RAW_REJECTED)
def test_unusable_payloads_are_rejected_not_raised(payload: bytes, why: str) -> None:
    outcome = only(normalize(payload, SOURCE))
    assert isinstance(outcome, Rejected)
    assert why in outcome.reason


def test_nesting_is_bounded_before_anything_re_serializes_the_record() -> None:
    assert isinstance(only(normalize(raw(dcache_transfer(pad=nested(62))), SOURCE)), Normalized)
    deep = only(normalize(raw(dcache_transfer(pad=nested(64))), SOURCE))
    assert isinstance(deep, Rejected)
    assert "nested deeper than 64" in deep.reason
    # deeper than orjson writes (255) and than it reads (1024): still a reason, not a raise
    for depth in (300, 2000):
        payload = b'{"msgType": "transfer", "x": ' + b"[" * depth + b"]" * depth + b"}"
        assert isinstance(only(normalize(payload, SOURCE)), Rejected)


def test_reasons_quoting_hostile_values_stay_short() -> None:
    outcome = only(normalize(raw(dcache_transfer(msgType="x" * 900_000)), SOURCE))
    assert isinstance(outcome, Rejected)
    assert "unknown dCache msgType" in outcome.reason
    assert len(outcome.reason) < 300


def test_an_unexpected_exception_becomes_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(record: Any) -> str:
        raise RuntimeError("boom " + "x" * 5000)

    monkeypatch.setattr(normalize_fields, "event_id", broken)
    outcome = only(normalize(raw(dcache_transfer()), SOURCE))
    assert isinstance(outcome, Rejected)
    assert outcome.reason.startswith("internal error normalizing record: RuntimeError: boom")
    assert len(outcome.reason) <= normalizing.MAX_REASON_CHARS
    # one S3 record's failure is its own: the others keep their outcomes
    monkeypatch.setattr(normalize_s3, "_s3_event_type", lambda name: 1 / 0)
    notification = s3_notification(s3_record(key="a.h5"), s3_record(key="b.h5"))
    outcomes = normalize(raw(notification), SOURCE)
    assert len(outcomes) == 2
    assert all("ZeroDivisionError" in o.reason for o in outcomes if isinstance(o, Rejected))


def test_oversized_records_are_rejected_before_parsing() -> None:
    outcome = only(normalize(raw(dcache_transfer(pad="x" * 2000)), SOURCE, max_bytes=1000))
    assert isinstance(outcome, Rejected)
    assert "exceeds" in outcome.reason


def test_ids_are_deterministic_and_content_based() -> None:
    record = dcache_transfer()
    same = json.dumps(dict(reversed(list(record.items()))), indent=2).encode()
    assert event_of(record)["id"] == only_event(same)["id"]
    assert event_of(record)["id"] != event_of(dcache_transfer(transferTime=1068))["id"]
    wrapped = minio_wrapped(s3_record("s3:ObjectCreated:Put"))
    bare = s3_notification(s3_record("s3:ObjectCreated:Put"))
    assert event_of(wrapped)["id"] == event_of(bare)["id"]


def only_event(payload: bytes) -> dict[str, Any]:
    outcome = only(normalize(payload, SOURCE))
    assert isinstance(outcome, Normalized)
    return dict(outcome.event)


def test_every_event_is_a_canonical_event() -> None:
    """What the normalizer emits passes the contract's own check (``domain.events``), as the
    sink and the policy simulator read it back."""
    for param in DCACHE_EVENTS + S3_EVENTS:
        event = event_of(param.values[0])
        assert parse_canonical(json.loads(json.dumps(event))) == event
        assert event["data"]["path"] == event["subject"]
