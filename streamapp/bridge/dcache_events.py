"""The dCache storage-events bridge: inotify over SSE from dCache frontends -> the raw topic.

Per frontend, one loop (``streamapp.bridge.frontend.FrontendBridge.run``):

1. Its place (channel, last SSE id, watches, known files) comes from the state topic
   (``streamapp.bridge.state``). If the channel still exists, the stream resumes with
   ``Last-Event-ID``; else a new channel is made.
2. A new channel is connected *before* anything is subscribed (dCache replays nothing to a
   first connection), then every configured root and, recursively, every directory under it is
   watched, then listed; what changed since the known files is appended as ``resync`` records
   (on the very first start, with ``emit_existing = false``, only recorded).
3. Each frame: an inotify event becomes an envelope on the raw topic (path = the watched
   directory + ``name``; created files get their size and mtime from the namespace). A new
   directory is watched and listed at once (files written before its watch existed); a
   directory moved in is watched (a watch follows its inode: dCache answers 303 and the watch
   is re-pointed) and listed; one moved out or deleted loses its watches, and its known files
   are reported deleted. ``IN_Q_OVERFLOW`` and ``EVENT_LOSS`` -> the trees are listed again
   and the difference emitted (``streamapp_dcache_gaps_total``).
4. The place is checkpointed after every batch of frames, once its envelopes are acknowledged.
   A stream that ends is resumed; a vanished channel (frontend restart, ``SHUTDOWN``) is
   replaced and the trees resynchronised; ``COMPETING_CLIENT`` is logged and counted and the
   bridge stays away for ``competing_backoff`` seconds instead of taking the channel back.

Hostile or broken input costs one frame, never the bridge: a frame too large or not UTF-8
(``UNREADABLE``), a name that is not one path component, a listing entry with such a name, a
file the frontend refuses to describe — each is logged and counted
(``streamapp_dcache_problems_total``); where a change may have been missed the trees are
listed again. Values dCache reports (sizes, mtimes, long names) are passed on in the envelope
as they are: the normalizer bounds them and dead-letters an envelope it refuses, with the reason.

Modules: this one starts a loop per frontend (``run_bridges``); ``frontend`` is the loop (channel,
stream, checkpoints, reconnects), ``frames`` handles each frame, ``trees`` keeps the watches and
the known files and lists the trees, ``state`` keeps the place, ``config`` reads the TOML.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from streamapp.bridge.config import BridgeConfig
from streamapp.bridge.frontend import FrontendBridge
from streamapp.bridge.state import FrontendPlace, ensure_state_topic, load_places

log = logging.getLogger(__name__)


async def run_bridges(
    config: BridgeConfig,
    bootstrap: str,
    stop: asyncio.Event,
    kafka_options: Mapping[str, Any] | None = None,
) -> None:
    """Bridge every configured frontend until ``stop`` is set; each keeps its place.
    ``kafka_options``: the clients' authentication (``streamapp.kafka_auth.aiokafka_options``)."""
    options = dict(kafka_options or {})
    await ensure_state_topic(bootstrap, config.state_topic, options)
    places = await load_places(bootstrap, config.state_topic, options)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, **options
    )
    await producer.start()
    tasks = []
    try:
        for frontend in config.frontends:
            place = places.get(frontend.name, FrontendPlace())
            log.info(
                "%s: %s, watching %s; resuming from %s",
                frontend.name,
                frontend.url,
                ", ".join(frontend.roots),
                f"channel {place.channel} after id {place.last_id}" if place.channel else "nothing",
            )
            bridge = FrontendBridge(frontend, place, producer, config.raw_topic, config.state_topic)
            tasks.append(asyncio.create_task(bridge.run(), name=f"dcache-{frontend.name}"))
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter:
                task.result()  # a bridge that ended by itself crashed: say why
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
