"""Fix 6 of streamapp/faust_fixes.py on the real broker: aiokafka's producer strands a batch
whose topic a metadata refresh leaves out.

The sequence is the one seen in a worker's first second (a table write missing from its
changelog): the producer learns topic A from an all-topics refresh, a record for A lingers,
then a send to a topic B it does not know yet makes the client ask for the topics it tracks.
Unpatched, A is not among them: the batch finds no leader until it expires and fails. Patched,
every topic sent to is tracked and the record is delivered.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamapp import faust_fixes
from testkit.helpers import create_topics

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_MS = 5_000  # how long aiokafka keeps a batch without a leader before failing it


async def records_in(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def send_after_a_narrowing_refresh(bootstrap: str) -> tuple[Any, str]:
    """Send one record to A while a refresh for a new topic B happens; the send's outcome."""
    run = uuid.uuid4().hex[:10]
    known, new = f"fix6-{run}.known", f"fix6-{run}.new"
    await create_topics(bootstrap, [known], 1)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=1_000, request_timeout_ms=REQUEST_TIMEOUT_MS
    )
    await producer.start()
    try:
        client = producer.client
        await client.force_metadata_update()  # tracks nothing yet: every topic is fetched
        assert client.cluster.partitions_for_topic(known) is not None
        lingering = await producer.send(known, b"must arrive")
        await create_topics(bootstrap, [new], 1)  # unknown to the producer's metadata
        await producer.send_and_wait(new, b"other")  # refresh for the tracked topics
        try:
            outcome: Any = await asyncio.wait_for(lingering, REQUEST_TIMEOUT_MS / 1000 + 30)
        except KafkaError as exc:
            outcome = exc
    finally:
        await producer.stop()
    return outcome, known


async def test_aiokafka_strands_a_record_whose_topic_a_refresh_drops(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    faust_fixes.apply()
    original = faust_fixes.REPLACED["AIOKafkaClient._wait_on_metadata"]
    monkeypatch.setattr(AIOKafkaClient, "_wait_on_metadata", original)
    outcome, topic = await send_after_a_narrowing_refresh(bootstrap)
    assert isinstance(outcome, KafkaError), outcome  # expired without a leader
    assert await records_in(bootstrap, topic) == 0


async def test_patched_producer_delivers_the_record(bootstrap: str) -> None:
    faust_fixes.apply()
    outcome, topic = await send_after_a_narrowing_refresh(bootstrap)
    assert not isinstance(outcome, BaseException), outcome
    assert outcome.topic == topic
    assert outcome.offset == 0
    assert await records_in(bootstrap, topic) == 1
