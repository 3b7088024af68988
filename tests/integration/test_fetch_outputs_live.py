"""``outputs.FetchOutputs`` on the real broker: a fetch's outputs written as one batch per topic
partition keep what one ``send`` per message gave — the partition aiokafka's default
partitioner picks for each key, each partition's order, every header — and a message over the
producer's request limit is refused at once, as ``send`` refuses it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from streamapp.outputs import (
    COLLECTED,
    FetchOutputs,
    collecting,
    send_bytes,
    send_lingering_now,
)
from testkit.helpers import create_topics

pytestmark = pytest.mark.integration

HEADERS = [("content-type", b"application/cloudevents+json")]


class _FaustLike:
    """What ``send_bytes`` takes: faust's producer, whose ``_ensure_producer`` is aiokafka's."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self._producer


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[int, bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        assert dict(record.headers) == dict(HEADERS)
                        found.append((record.partition, record.key, record.value))
    finally:
        await consumer.stop()
    return found


async def _written(producer: AIOKafkaProducer, outputs: FetchOutputs) -> None:
    """As the batch-wise ingest ends a fetch: the batches handed over, sent now, acknowledged."""
    await outputs.submit()
    send_lingering_now(producer)
    await asyncio.wait_for(producer.flush(), 60)


async def test_batches_land_where_sends_would_in_order(bootstrap: str) -> None:
    """The same keys through ``send`` (one topic) and through the fetch's batches (another,
    same partition count): every key on the same partition, each partition in send order.
    A small batch limit makes batches fill up and roll over mid-fetch."""
    by_send, by_batch = (f"fetch-outputs-{uuid.uuid4().hex[:8]}-{n}" for n in range(2))
    await create_topics(bootstrap, [by_send, by_batch], 5)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=2048)
    await producer.start()
    try:
        keys = [f"/data/exp-{n % 17}/run-{n}/scan_{n:05d}.nxs".encode() for n in range(600)]
        sent = [await producer.send(by_send, b"v", key=key, headers=HEADERS) for key in keys]
        await asyncio.gather(*sent)
        assert FetchOutputs.usable(producer)
        outputs = FetchOutputs(producer, "test")
        faust_like = _FaustLike(producer)
        with collecting(outputs):
            for n, key in enumerate(keys):
                value = b"%05d" % n + b"x" * (n % 300)
                assert await send_bytes(faust_like, by_batch, key, value, HEADERS) is COLLECTED
        assert outputs.messages == len(keys)
        await _written(producer, outputs)
        outside = await send_bytes(faust_like, by_batch, b"after", b"99999", HEADERS)
        assert outside is not COLLECTED  # outside ``collecting``: a plain send, its future back
        await asyncio.wait_for(outside, 60)
    finally:
        await producer.stop()

    expected = {key: partition for partition, key, _ in await _read_all(bootstrap, by_send, 600)}
    written = await _read_all(bootstrap, by_batch, 601)
    assert len(written) == 601
    assert all(expected[key] == partition for partition, key, _ in written if key != b"after")
    for partition in {p for p, _, _ in written}:
        numbers = [int(v[:5]) for p, k, v in written if p == partition and k != b"after"]
        assert numbers == sorted(numbers)  # a partition's messages in the order handed over


async def test_a_message_over_the_request_limit_is_refused_at_once(bootstrap: str) -> None:
    topic = f"fetch-outputs-big-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=10_000)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send(topic, b"x" * 20_000, key=b"k")  # what send does
        outputs = FetchOutputs(producer, "test")
        with pytest.raises(MessageSizeTooLargeError):
            await outputs.add(topic, b"k", b"x" * 20_000, HEADERS)
        await outputs.add(topic, b"k", b"small", HEADERS)  # the next one is taken
        await _written(producer, outputs)
    finally:
        await producer.stop()
    assert [value for _, _, value in await _read_all(bootstrap, topic, 1)] == [b"small"]


async def test_a_topic_not_yet_in_the_metadata_is_waited_for(bootstrap: str) -> None:
    """A tenant topic created just before its first copy: the producer has no metadata for it
    yet, and ``add`` waits for it as ``send`` does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    topic = f"fetch-outputs-new-{uuid.uuid4().hex[:8]}"
    try:
        await create_topics(bootstrap, [topic], 3)
        assert producer.client.cluster.partitions_for_topic(topic) is None
        outputs = FetchOutputs(producer, "test")
        await asyncio.wait_for(outputs.add(topic, b"k", b"first", HEADERS), 30)
        await _written(producer, outputs)
    finally:
        await producer.stop()
    assert [value for _, _, value in await _read_all(bootstrap, topic, 1)] == [b"first"]


async def test_outputs_with_and_without_a_key_keep_the_order_they_were_made(
    bootstrap: str,
) -> None:
    """Dead letters may have no key: collected too (a random available partition, as the
    default partitioner), so a topic's messages are not reordered around them."""
    topic = f"fetch-outputs-order-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        outputs = FetchOutputs(producer, "test")
        with collecting(outputs):
            for n in range(30):
                key = None if n % 3 == 1 else b"same-key"
                assert await send_bytes(_FaustLike(producer), topic, key, b"%02d" % n, HEADERS) is (
                    COLLECTED
                )
        await _written(producer, outputs)
    finally:
        await producer.stop()
    assert [value for _, _, value in await _read_all(bootstrap, topic, 30)] == [
        b"%02d" % n for n in range(30)
    ]


async def test_submit_does_not_wait_out_another_sends_linger(bootstrap: str) -> None:
    """A batch another task's ``send`` left lingering on the same partition: aiokafka's
    ``send_batch`` waits until it is sent; ``submit`` has it sent at once rather than after
    the linger (ten minutes here)."""
    topic = f"fetch-outputs-linger-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=600_000)
    await producer.start()
    try:
        elsewhere = await producer.send(topic, b"plain", key=b"k", headers=HEADERS)
        outputs = FetchOutputs(producer, "test")
        await outputs.add(topic, b"k", b"collected", HEADERS)
        await asyncio.wait_for(outputs.submit(), 10)
        send_lingering_now(producer)
        await asyncio.wait_for(asyncio.gather(elsewhere, producer.flush()), 60)
    finally:
        send_lingering_now(producer)
        await producer.stop()
    assert [value for _, _, value in await _read_all(bootstrap, topic, 2)] == [
        b"plain",
        b"collected",
    ]
