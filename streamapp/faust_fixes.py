"""A correction to faust-streaming 0.15 that at-least-once delivery depends on.

When faust fetches records while its flow is stopped (around a rebalance, between resuming a
partition and resuming the flow), it drops them and "seeks back to committed offsets". But
aiokafka's ``seek_to_committed`` only seeks partitions whose committed offset is > 0: for a
partition with no committed offset yet (a new topic, a new consumer group) or one committed at
0, the position stays past the dropped records and they are never processed. Seen here as
records 0..18 of a fresh partition silently missing after two workers joined.

The fix seeks such partitions to where ``auto_offset_reset=earliest`` would start: the
committed offset if any, otherwise the beginning of the partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_applied = False


async def _seek_to_committed_or_beginning(self: Any) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()

    async def seek() -> Mapping[Any, int]:
        committed: dict[Any, int] = dict(await consumer.seek_to_committed())
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        never_committed = [tp for tp, offset in committed.items() if offset is None]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed

    result: Mapping[Any, int] = await self.call_thread(seek)
    return result


def apply() -> None:
    global _applied  # noqa: PLW0603 - patch once per process
    if not _applied:
        faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed_or_beginning
        _applied = True
