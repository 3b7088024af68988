"""aiokafka's two ways to produce, on the same broker and data: ``send`` per message against one
``create_batch``/``send_batch`` per partition and round — what ``outputs.FetchOutputs`` does with
a fetch's outputs (docs/benchmarks.md, issue #13).

60,000 messages of 1.3 KB with path-like keys, 4 partitions, rounds of 1,000 messages each
followed by a flush, linger 50 ms, 256 KiB batches, the same murmur2 partitioning on both
sides; CPU = process CPU over the rounds / messages; the two alternate twice.

    .venv/bin/python -m bench.produce_api

Needs the broker of ``scripts/kafka``. Not part of the test run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer

from streamapp.outputs import key_partition
from testkit.helpers import create_topics

BOOTSTRAP = "127.0.0.1:19092"
MESSAGES = 60_000
ROUND = 1_000
PARTITIONS = 4
VALUE = b"v" * 1300
HEADERS = [("content-type", b"application/cloudevents+json")]
KEYS = [f"/data/facility-1/beamtime-3/raw/run-1/scan_{n:06d}.nxs".encode() for n in range(MESSAGES)]


async def _producer() -> tuple[str, AIOKafkaProducer]:
    topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
    await create_topics(BOOTSTRAP, [topic], PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, linger_ms=50, acks="all", max_batch_size=262_144
    )
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up", key=b"k")
    return topic, producer


async def per_message() -> float:
    topic, producer = await _producer()
    started = time.process_time()
    for first in range(0, MESSAGES, ROUND):
        for n in range(first, first + ROUND):
            sent = await producer.send(topic, VALUE, key=KEYS[n], headers=HEADERS)
            sent.add_done_callback(lambda _: None)  # as exit_if_undelivered watches each
        await producer.flush()
    used = time.process_time() - started
    await producer.stop()
    return used


async def batched() -> float:
    topic, producer = await _producer()
    started = time.process_time()
    for first in range(0, MESSAGES, ROUND):
        batches: dict[int, Any] = {}
        for n in range(first, first + ROUND):
            partition = key_partition(KEYS[n], PARTITIONS)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=KEYS[n], value=VALUE, timestamp=None, headers=HEADERS) is None:
                sent = await producer.send_batch(batch, topic, partition=partition)
                sent.add_done_callback(lambda _: None)
                batch = batches[partition] = producer.create_batch()
                batch.append(key=KEYS[n], value=VALUE, timestamp=None, headers=HEADERS)
        for partition, batch in batches.items():
            sent = await producer.send_batch(batch, topic, partition=partition)
            sent.add_done_callback(lambda _: None)
        await producer.flush()
    used = time.process_time() - started
    await producer.stop()
    return used


def main() -> None:
    sides: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
        ("send per message", per_message),
        ("send_batch per partition", batched),
    ] * 2
    for name, side in sides:
        used = asyncio.run(side())
        print(f"{name}: {1e6 * used / MESSAGES:.1f} µs CPU per message")


if __name__ == "__main__":
    main()
