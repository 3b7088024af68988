"""The final outcomes every worker knows of: "this trigger already ran for this event" (or
failed for good, or was dead-lettered), so a replay does not run it again.

The durable record is the final entry on the invocations topic (``success``, or any outcome
with ``streamapp.final: 1``), written and acknowledged by the broker before the source offset
may be committed; a dead letter is written before its final entry. Each worker mirrors those
entries into a local RocksDB (rocksdict) by tailing the topic, with its read positions in the
same store, so a restart resumes the tail instead of re-reading it. When the sink is given
partitions another worker owned (a rebalance, a crash), it waits until the mirror has caught up
with the topic's end before replaying anything: what the other worker recorded is then seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from streamapp.private_access import refresh_metadata

log = logging.getLogger(__name__)

RECENT = 200
OUTCOME_HEADER = "streamapp.outcome"
FINAL_HEADER = "streamapp.final"
_POSITION = b"\x00position/"


class FinalOutcomes:
    def __init__(
        self,
        path: Path,
        bootstrap: str,
        topic: str,
        ttl_s: int,
        client_options: dict[str, Any] | None = None,  # SASL (streamapp.kafka_auth)
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options()
        options.create_if_missing(True)
        # entries live as long as the records they mirror (the topic's retention), then
        # compaction drops them: the store does not grow without bound
        self._db = Rdict(str(path), options, access_type=AccessType.with_ttl(ttl_s))
        self._bootstrap = bootstrap
        self._client_options = client_options or {}
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # the latest records of each tenant, for the invocations view (bounded: RECENT each)
        self.recent: dict[str, deque[dict[str, Any]]] = {}

    def __contains__(self, key: str) -> bool:
        return key.encode() in self._db

    def add(self, key: str, activation_id: str | None) -> None:
        self._db[key.encode()] = (activation_id or "").encode()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            **self._client_options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await _partitions(consumer, self._topic)
        tps = [TopicPartition(self._topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            stored = self._db.get(_POSITION + str(tp.partition).encode())
            if stored is not None:
                self._positions[tp.partition] = int(stored)
                consumer.seek(tp, int(stored))
            else:
                await consumer.seek_to_beginning(tp)
                self._positions[tp.partition] = 0
        self._task = asyncio.create_task(self._tail(), name="final-outcomes-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        self._db.close()

    async def _tail(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if record.key and _is_final(record.headers):
                        self._db[record.key] = b""
                    self._remember(record.value)
                self._positions[tp.partition] = records[-1].offset + 1
                self._db[_POSITION + str(tp.partition).encode()] = str(
                    records[-1].offset + 1
                ).encode()
            if batches:
                self._advanced.set()
                self._advanced = asyncio.Event()
            for tp in self._consumer.assignment():
                # also count the end of a partition with nothing (left) to read as reached
                position = await self._consumer.position(tp)
                self._positions[tp.partition] = max(self._positions.get(tp.partition, 0), position)

    def _remember(self, value: bytes | None) -> None:
        try:
            entry = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return
        tenant = entry.get("tenant") if isinstance(entry, dict) else None
        if isinstance(tenant, str):
            self.recent.setdefault(tenant, deque(maxlen=RECENT)).append(entry)

    async def catch_up(self, timeout_s: float = 60.0) -> bool:
        """Wait until every final record on the topic now has been mirrored."""
        assert self._consumer is not None
        tps = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(self._positions.get(tp.partition, 0) < end for tp, end in ends.items()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                log.error(
                    "final outcomes not caught up within %.0f s; replay may repeat", timeout_s
                )
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), timeout=min(remaining, 0.5))
        return True


def _is_final(headers: Any) -> bool:
    found = dict(headers or ())
    return found.get(OUTCOME_HEADER) == b"success" or found.get(FINAL_HEADER) == b"1"


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(100):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await refresh_metadata(consumer, topic)  # the topic may be brand new
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions (does it exist?)")
