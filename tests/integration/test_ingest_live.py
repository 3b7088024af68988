"""Ingest on the live broker: every raw record is accounted for, and a SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.normalize import Normalized, Rejected, normalize
from tests.factories import dcache_record, dcache_transfer, raw, s3_notification, s3_record
from tests.integration.conftest import (
    DCACHE_SOURCE,
    S3_SOURCE,
    TopicNames,
    Worker,
    collect,
    produce,
    wait_group_stable,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ingest_mode")]
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SOURCES = {"dcache": DCACHE_SOURCE, "s3": S3_SOURCE}


def mixed_dcache_inputs() -> list[bytes]:
    lines = [line for line in (SAMPLES / "dcache-billing.jsonl").read_bytes().splitlines() if line]
    lines += [
        raw(dcache_record("request")),
        raw(dcache_record("remove", billingPath="parent:[0000AB]/x")),
        raw(dcache_transfer(billingPath="/../escape")),
        b"\xff\xfe garbage",
        b"[]",
        raw(dcache_record("restore")),
    ]
    return lines


def mixed_s3_inputs() -> list[bytes]:
    lines = [
        line for line in (SAMPLES / "s3-notifications.jsonl").read_bytes().splitlines() if line
    ]
    lines += [
        raw(s3_notification(s3_record(key="x%00y"))),
        raw(s3_notification(s3_record(key="one.h5"), s3_record(key="two.h5"))),
        raw({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
    ]
    return lines


def expected_outputs(inputs: list[bytes], source: str) -> tuple[set[str], set[int]]:
    """Event ids and the input offsets that must be dead-lettered, by the same pure code."""
    ids: set[str] = set()
    rejected: set[int] = set()
    for offset, value in enumerate(inputs):
        for outcome in normalize(value, source):
            if isinstance(outcome, Normalized):
                ids.add(outcome.event["id"])
            elif isinstance(outcome, Rejected):
                rejected.add(offset)
    return ids, rejected


async def test_every_raw_record_is_accounted_for(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    dcache_inputs, s3_inputs = mixed_dcache_inputs(), mixed_s3_inputs()
    # one partition per raw topic so the input offsets are the list positions
    await produce(bootstrap, topics.dcache, dcache_inputs)
    await produce(bootstrap, topics.s3, s3_inputs)
    dcache_ids, dcache_rejected = expected_outputs(dcache_inputs, SOURCES["dcache"])
    s3_ids, s3_rejected = expected_outputs(s3_inputs, SOURCES["s3"])
    assert dcache_rejected
    assert s3_rejected
    assert dcache_ids
    assert s3_ids

    worker = worker_factory().start()
    want_events = len(dcache_ids) + len(s3_ids)
    want_dead = len(dcache_rejected) + len(s3_rejected)

    def done(records: list[Any]) -> bool:
        events = sum(1 for r in records if r.topic == topics.normalized)
        return events >= want_events and len(records) - events >= want_dead

    records = await collect(
        bootstrap, [topics.normalized, topics.deadletter], done, timeout=120, alive=worker.alive
    )
    events = [r for r in records if r.topic == topics.normalized]
    dead = [r for r in records if r.topic == topics.deadletter]
    assert done(records), f"missing outputs; worker log:\n{worker.log_tail()}"

    decoded = [json.loads(r.value) for r in events]
    assert sorted(e["id"] for e in decoded) == sorted(dcache_ids | s3_ids)  # no loss, no extra
    for record, event in zip(events, decoded, strict=True):
        assert record.key.decode() == event["subject"]
        assert event["source"] == (
            SOURCES["dcache"] if event["data"]["storage"] == "dcache" else SOURCES["s3"]
        )

    by_origin = {(ctx.topic, ctx.offset): r for r in dead if (ctx := context_of(r))}
    assert set(by_origin) == {(topics.dcache, o) for o in dcache_rejected} | {
        (topics.s3, o) for o in s3_rejected
    }
    for (topic, offset), record in by_origin.items():
        original = (dcache_inputs if topic == topics.dcache else s3_inputs)[offset]
        assert record.value == original  # the original bytes, untouched
        assert context_of(record).reason


def context_of(record: Any) -> DeadLetterContext:
    return DeadLetterContext.from_headers(record.headers)


async def test_sigkill_mid_stream_loses_no_record(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    total = 20_000
    inputs = [
        raw(dcache_transfer(billingPath=f"/data/run/{n:06d}.h5", pnfsid=f"{n:036d}"))
        for n in range(total)
    ]
    bad_every = 1000
    for n in range(0, total, bad_every):
        inputs[n] = b"not json %d" % n
    expected_ids, expected_dead = expected_outputs(inputs, SOURCES["dcache"])
    await produce(bootstrap, topics.dcache, inputs)

    first = worker_factory("first").start()
    seen_before_kill = await collect(
        bootstrap,
        [topics.normalized],
        lambda records: len(records) >= 2000,
        timeout=120,
        alive=first.alive,
    )
    assert len(seen_before_kill) >= 2000, first.log_tail()
    first.kill()
    partial = await collect(bootstrap, [topics.normalized], lambda _: False, timeout=3)
    assert len(partial) < len(expected_ids), "worker finished before the kill: test proves nothing"

    second = worker_factory("second").start()

    def complete(records: list[Any]) -> bool:
        ids = {json.loads(r.value)["id"] for r in records if r.topic == topics.normalized}
        dead = sum(1 for r in records if r.topic == topics.deadletter)
        return ids >= expected_ids and dead >= len(expected_dead)

    records = await collect(
        bootstrap, [topics.normalized, topics.deadletter], complete, 180, second.alive
    )
    assert complete(records), second.log_tail()
    ids = Counter(json.loads(r.value)["id"] for r in records if r.topic == topics.normalized)
    assert set(ids) == expected_ids
    dead_offsets = {context_of(r).offset for r in records if r.topic == topics.deadletter}
    assert dead_offsets == expected_dead
    duplicates = sum(count - 1 for count in ids.values())
    # at-least-once: replays are allowed, but only of what the first worker had not committed
    assert duplicates <= len(partial)
    print(f"killed after {len(partial)} of {len(expected_ids)} events; {duplicates} replayed")


async def test_two_workers_share_ingest_without_loss(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    workers = [worker_factory("w1").start(), worker_factory("w2").start()]
    await wait_group_stable(bootstrap, topics.app_id, workers)
    inputs = [
        raw(dcache_transfer(billingPath=f"/data/two/{n:05d}.h5", pnfsid=f"{n:036d}"))
        for n in range(2000)
    ]
    expected_ids, _ = expected_outputs(inputs, SOURCES["dcache"])
    await produce(bootstrap, topics.dcache, inputs)
    records = await collect(
        bootstrap,
        [topics.normalized],
        lambda r: {json.loads(x.value)["id"] for x in r} >= expected_ids,
        timeout=120,
    )
    ids = {json.loads(r.value)["id"] for r in records}
    missing = expected_ids - ids
    assert not missing, f"{len(missing)} lost\n{workers[0].log_tail(30)}"


async def test_poison_records_are_dead_lettered_and_the_next_record_still_delivered(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    envelope = {
        "envelope": "dcache-storage-event/1",
        "kind": "inotify",
        "frontend": "https://dcache.example.org:3880",
        "path": "/data/poison.h5",
        "mask": ["IN_CLOSE_WRITE"],
        "observed": "2026-11-26T10:00:00Z",
    }
    poison = [
        json.dumps(envelope | {"mtime": 10**20}).encode(),  # read as a float: not milliseconds
        json.dumps(envelope | {"mtime": 10**17}).encode(),  # an int past year 9999
        json.dumps(envelope | {"mtime": -(10**17)}).encode(),
        b'{"msgType": "transfer", "x": ' + b"[" * 300 + b"]" * 300 + b"}",
        raw(dcache_transfer(fileSize="9" * 5000)),
        raw(dcache_transfer(billingPath="/data/..")),
    ]
    # within max_record_bytes, but over faust's producer request size: its dead letter is a
    # stand-in saying where the original is
    too_big_to_copy = raw(dcache_transfer(msgType="x" * 1_000_100))
    valid = raw(dcache_transfer(billingPath="/data/after/the/poison.h5"))
    inputs = [*poison, too_big_to_copy, valid]
    await produce(bootstrap, topics.dcache, inputs)

    worker = worker_factory().start()

    def done(records: list[Any]) -> bool:
        return any(r.topic == topics.normalized for r in records) and (
            sum(r.topic == topics.deadletter for r in records) >= len(poison) + 1
        )

    records = await collect(
        bootstrap, [topics.normalized, topics.deadletter], done, timeout=120, alive=worker.alive
    )
    assert done(records), f"stalled; worker log:\n{worker.log_tail()}"
    assert worker.alive()
    [delivered] = [json.loads(r.value) for r in records if r.topic == topics.normalized]
    assert delivered["subject"] == "/data/after/the/poison.h5"

    dead = {context_of(r).offset: r for r in records if r.topic == topics.deadletter}
    assert set(dead) == set(range(len(poison) + 1))
    for offset, original in enumerate(poison):
        assert dead[offset].value == original
        assert context_of(dead[offset]).stage == "ingest"
    reasons = [context_of(dead[offset]).reason for offset in range(len(poison) + 1)]
    expected = ["not milliseconds", "0001-9999", "0001-9999", "nested deeper than 64"]
    expected += ["int64", "root '/'", "value is not kept here"]
    for reason, why in zip(reasons, expected, strict=True):
        assert why in reason, reason
    assert dead[len(poison)].value in (b"", None)


async def test_compressed_raw_batches_of_every_codec_are_read(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    """Any producer may compress its batches with any codec Kafka knows: a codec the worker
    could not decode would stop the raw partition for good (every restart, every owner)."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - this test's own producers

    expected: set[str] = set()
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        inputs = [
            raw(dcache_transfer(billingPath=f"/data/{codec}/{n:03d}.h5", pnfsid=f"{codec}{n:032d}"))
            for n in range(20)
        ]
        expected |= expected_outputs(inputs, SOURCES["dcache"])[0]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(topics.dcache, value) for value in inputs])
        finally:
            await producer.stop()
    worker = worker_factory().start()
    records = await collect(
        bootstrap,
        [topics.normalized],
        lambda r: {json.loads(x.value)["id"] for x in r} >= expected,
        timeout=120,
        alive=worker.alive,
    )
    assert {json.loads(r.value)["id"] for r in records} >= expected, worker.log_tail()
