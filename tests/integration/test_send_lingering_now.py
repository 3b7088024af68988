"""``outputs.send_lingering_now`` on the real broker: the batch-wise ingest has a fetch's
outputs sent at once instead of after the producer's linger, without making the next sends
wait (aiokafka 0.14 internals; this fails if they change)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from streamapp.outputs import send_lingering_now
from testkit.helpers import create_topics

pytestmark = pytest.mark.integration

LINGER_MS = 600_000  # ten minutes: a record sent only after its linger never arrives in this test


async def test_lingering_records_are_sent_at_once_and_later_sends_do_not_wait(
    bootstrap: str,
) -> None:
    topic = f"send-now-{uuid.uuid4().hex[:10]}"
    await create_topics(bootstrap, [topic], 3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"r%d" % n, key=b"k%d" % n) for n in range(30)]
        await asyncio.sleep(0.5)
        assert not any(future.done() for future in sent)  # lingering, as configured
        send_lingering_now(producer)
        # a send right after it is not held up by the batches being sent
        later = await asyncio.wait_for(producer.send(topic, b"later", key=b"k0"), 5)
        delivered = await asyncio.wait_for(asyncio.gather(*sent), 60)
        assert len({(m.partition, m.offset) for m in delivered}) == 30  # each at its own offset
        send_lingering_now(producer)  # the later one too, on a second call
        await asyncio.wait_for(later, 60)
    finally:
        send_lingering_now(producer)  # stop flushes: without this it would wait out the linger
        await producer.stop()
