"""The one place that reads private members of faust-streaming and aiokafka.

Each function names what it needs and why no public API gives it. The versions are pinned and
checked (``faust_fixes.check_version``), and tests/unit/test_private_access.py fails if one of
these members disappears, so an upgrade cannot silently turn a view's figure into an error or
a zero.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

# (owner, member) read below; the guard test checks each one exists on the pinned versions
MEMBERS = (
    ("faust.App", "_consumer"),
    ("faust.transport.consumer.Consumer", "_read_offset"),
    ("faust.tables.table.Table", "_windowed_timestamp"),
    ("faust.transport.drivers.aiokafka.Producer", "_ensure_producer"),
    ("aiokafka.AIOKafkaConsumer", "_client"),
)


def started_consumer(app: Any) -> Any | None:
    """The app's consumer if it exists (``app.consumer`` would create one: a scrape must not)."""
    return app._consumer


def read_offset(consumer: Any, tp: Any) -> int | None:
    """The last offset faust handed to a stream for ``tp`` (faust has no public getter)."""
    offset: int | None = consumer._read_offset.get(tp)
    return offset


def windowed_value(table: Any, key: Any, moment: float) -> Any:
    """A windowed table's value for ``key`` in the window holding ``moment``; faust's public
    accessors are relative to the current event, which a web request does not have."""
    return table._windowed_timestamp(key, moment)


async def producer_partitions_for(producer: Any, topic: str) -> Any:
    """Make faust's producer learn ``topic``'s partitions (its router hashes keys with them)."""
    return await producer._ensure_producer().partitions_for(topic)


async def refresh_metadata(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Ask the broker for ``topic``'s metadata now (aiokafka has no public refresh). The client
    tracks the topic first: a client tracking no topic asks for every topic of the cluster,
    and decoding thousands stopped a worker's loop ~150 ms, here once per web request for a
    tenant's events (docs/benchmarks.md). ``add_topic`` would not refresh a tracked topic."""
    client = consumer._client
    client._topics.add(topic)
    await client.force_metadata_update()
