"""Plain aiokafka clients for operator commands (feed, watch): no worker, no consumer group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamapp.domain.deadletter import HEADER_PREFIX, DeadLetterContext
from streamapp.kafka_auth import aiokafka_options
from streamapp.private_access import refresh_metadata
from streamapp.settings import current


def _auth() -> dict[str, Any]:
    """SASL options of the configured credentials (``streamapp.kafka_auth``), if any."""
    return aiokafka_options(current())


async def feed_lines(bootstrap: str, topic: str, lines: Iterable[tuple[int, bytes]]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **_auth())
    await producer.start()
    try:
        futures = [await producer.send(topic, value) for _, value in lines]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


def render_json(record: Any) -> str:
    try:
        value: Any = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        value = record.value.decode("utf-8", "backslashreplace")
    line = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    return orjson.dumps(line | {"value": value}).decode()


def render_human(record: Any) -> str:
    headers = record.headers or ()
    if any(name.startswith(HEADER_PREFIX) for name, _ in headers):
        ctx = DeadLetterContext.from_headers(headers)
        return (
            f"DEAD-LETTER  {ctx.topic}[{ctx.partition}]@{ctx.offset}  {ctx.reason}"
            f"  ({len(record.value)} original bytes kept)"
        )
    try:
        event = orjson.loads(record.value)
        data = event.get("data") or {}
        size = data.get("size")
        extra = f"  tenant={event['tenant']}" if "tenant" in event else ""
        return (
            f"{event['time']}  {event['type']:<24} {event['subject']}"
            f"  size={size if size is not None else '?'}{extra}"
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return f"{record.topic}@{record.offset}: {record.value[:200]!r}"


async def watch(
    bootstrap: str,
    topics: list[str],
    *,
    count: int,
    idle_seconds: float,
    render: Callable[[Any], str],
) -> int:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        **_auth(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=2000,
    )
    await consumer.start()
    seen = 0
    last = time.monotonic()
    try:
        while not (count and seen >= count):
            batches = await consumer.getmany(timeout_ms=250)
            records = [record for batch in batches.values() for record in batch]
            for record in records[: count - seen if count else None]:
                print(render(record), flush=True)
                seen += 1
                last = time.monotonic()
            if idle_seconds and time.monotonic() - last > idle_seconds:
                break
    finally:
        await consumer.stop()
    return seen


def _table_key(raw: bytes | None) -> str:
    if raw is None:
        return ""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
    return decoded if isinstance(decoded, str) else raw.decode(errors="replace")


async def read_compacted(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The latest JSON value per key of ``topic`` (a table changelog), read up to its end.

    Keys are the names faust's json key serializer wrote (``"petra3"`` on the wire, ``petra3``
    here). A topic that does not exist yet reads as empty.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **_auth(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    state: dict[str, Any] = {}
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await refresh_metadata(consumer, topic)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return state
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for record in batch:
                    key = _table_key(record.key)
                    state[key] = orjson.loads(record.value) if record.value else None
    finally:
        await consumer.stop()
    return state


async def publish(
    bootstrap: str,
    messages: Iterable[tuple[str, bytes | None, bytes]],
    on_sent: Callable[[], None] = lambda: None,
) -> int:
    """Send ``(topic, key, value)`` messages and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **_auth())
    await producer.start()
    count = 0
    try:
        pending = []
        for topic, key, value in messages:
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(lambda _f: on_sent())
            pending.append(future)
            count += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count
