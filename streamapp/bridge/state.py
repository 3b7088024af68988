"""The bridge's durable place, on a compacted Kafka topic (one partition, so in order).

Per frontend, two kinds of record (keys are ``<frontend>\\x00<kind>[\\x00<path>]``):

- ``checkpoint``: the channel URL, the last SSE id whose events are all on the raw topic, and
  the watches (path -> subscription URL: events name their subscription, not a path);
- ``file`` (one per path): the last known size and mtime of every file under the watched trees
  (a tombstone when it is gone). Resynchronising lists the trees and compares with these.

A checkpoint is written only after every envelope before it is acknowledged by the broker, so a
restart resumes at or before the first event not yet appended (at-least-once; envelopes of
the same change keep their event id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamapp.domain.inotify import FileState

log = logging.getLogger(__name__)
_SEP = "\x00"
_GONE = object()


@dataclass(slots=True)
class FrontendPlace:
    channel: str | None = None
    last_id: str | None = None
    watches: dict[str, str] = field(default_factory=dict)  # path -> subscription URL
    files: dict[str, FileState] = field(default_factory=dict)
    started_before: bool = False  # a checkpoint existed: the trees were listed once


async def ensure_state_topic(
    bootstrap: str, topic: str, kafka_options: Mapping[str, Any] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_options or {}))
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def load_places(
    bootstrap: str, topic: str, kafka_options: Mapping[str, Any] | None = None
) -> dict[str, FrontendPlace]:
    """Every frontend's place: the topic read from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **(kafka_options or {}),
    )
    await consumer.start()
    places: dict[str, FrontendPlace] = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                _apply(places, record.key, record.value)
    finally:
        await consumer.stop()
    return places


def _apply(places: dict[str, FrontendPlace], key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    frontend, _, rest = key.decode().partition(_SEP)
    kind, _, path = rest.partition(_SEP)
    place = places.setdefault(frontend, FrontendPlace())
    if kind == "file":
        if value is None:
            place.files.pop(path, None)
        else:
            place.files[path] = FileState.from_json(orjson.loads(value))
    elif kind == "checkpoint" and value is not None:
        point = orjson.loads(value)
        place.channel = point.get("channel")
        place.last_id = point.get("last_id")
        place.watches = dict(point.get("watches") or {})
        place.started_before = True


class PlaceWriter:
    """Writes one frontend's place. Known-file changes are staged and written with the next
    checkpoint, after every envelope sent before it is acknowledged: the state never claims a
    file was reported when its envelope is not on the broker."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, frontend: str) -> None:
        self._producer = producer
        self._topic = topic
        self._frontend = frontend
        self._pending: list[Any] = []
        self._files: dict[str, FileState | None] = {}

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """An output (an envelope) the next checkpoint must not overtake."""
        self._pending.append(await self._producer.send(topic, value, key=key))

    def file(self, path: str, state: FileState | None) -> None:
        self._files[path] = state

    async def checkpoint(
        self, channel: str | None, last_id: str | None, watches: Mapping[str, str]
    ) -> None:
        # kept until acknowledged: a checkpoint cancelled midway leaves them for the next one
        pending = list(self._pending)
        for future in pending:
            await future  # raises if the broker refused an envelope: no checkpoint past it
        del self._pending[: len(pending)]
        files = dict(self._files)
        writes = []
        for path, state in files.items():
            key = _SEP.join((self._frontend, "file", path)).encode()
            value = None if state is None else orjson.dumps(state.to_json())
            writes.append(await self._producer.send(self._topic, value, key=key))
        value = orjson.dumps({"channel": channel, "last_id": last_id, "watches": dict(watches)})
        key = _SEP.join((self._frontend, "checkpoint")).encode()
        writes.append(await self._producer.send(self._topic, value, key=key))
        for future in writes:
            await future
        for path, state in files.items():
            if self._files.get(path, _GONE) is state:  # not changed again meanwhile
                del self._files[path]
