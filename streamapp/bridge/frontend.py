"""One dCache frontend's loop: its channel, the SSE stream read on it, checkpoints, and what
to do when the stream ends or fails. How this fits the bridge: ``streamapp.bridge.dcache_events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from streamapp.bridge.config import FrontendConfig
from streamapp.bridge.frames import CompetingClient, FrameHandler
from streamapp.bridge.state import FrontendPlace, PlaceWriter
from streamapp.bridge.trees import WatchedTrees
from streamapp.clients.dcache import (
    ChannelGoneError,
    DCacheAuthError,
    DCacheClient,
    DCacheError,
    DCacheUnreachableError,
    TokenFile,
)
from streamapp.domain.backoff import equal_jitter_delay
from streamapp.metrics import DCACHE_GAPS, DCACHE_PROBLEMS

log = logging.getLogger(__name__)
_RNG = random.Random()  # noqa: S311 - jitter, not secrets

CHECKPOINT_EVERY: Final = 200  # frames; also whenever the stream goes quiet
_END: Final = object()


class FrontendBridge:
    """Bridges one frontend until cancelled: sessions on its channel, one after another."""

    def __init__(
        self,
        config: FrontendConfig,
        place: FrontendPlace,
        producer: AIOKafkaProducer,
        raw_topic: str,
        state_topic: str,
        *,
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self.config = config
        self.place = place
        self.client = DCacheClient(config.url, TokenFile(config.token_file))
        self.writer = PlaceWriter(producer, state_topic, config.name)
        self.trees = WatchedTrees(config, place, self.client, self.writer, raw_topic)
        self.frames = FrameHandler(config, place, self.client, self.trees, self._lost)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self._resync_reason: str | None = None
        self._baseline = False  # the trees were listed once in this process

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._session()
                    failures = 0
                except CompetingClient:
                    DCACHE_PROBLEMS.labels(self.config.name, "competing_client").inc()
                    log.error(
                        "%s: another client took over channel %s (COMPETING_CLIENT); "
                        "not taking it back for %.0f s",
                        self.config.name,
                        self.place.channel,
                        self.config.competing_backoff_s,
                    )
                    await asyncio.sleep(self.config.competing_backoff_s)
                except ChannelGoneError:
                    log.warning("%s: channel %s is gone", self.config.name, self.place.channel)
                    self._lost("channel-gone")
                except DCacheAuthError as exc:
                    DCACHE_PROBLEMS.labels(self.config.name, "auth").inc()
                    failures += 1
                    log.error("%s: refused (%s); is the token file current?", self.config.name, exc)
                    await asyncio.sleep(self._backoff(failures))
                except DCacheUnreachableError as exc:
                    DCACHE_PROBLEMS.labels(self.config.name, "unreachable").inc()
                    failures += 1
                    log.warning("%s: %s; retrying", self.config.name, exc)
                    await asyncio.sleep(self._backoff(failures))
                except DCacheError as exc:  # refused for another reason: say so, keep trying
                    DCACHE_PROBLEMS.labels(self.config.name, "refused").inc()
                    failures += 1
                    log.error("%s: %s; retrying", self.config.name, exc)
                    await asyncio.sleep(self._backoff(failures))
        finally:
            with contextlib.suppress(Exception):  # stopping: keep the place if we can
                await asyncio.shield(self._checkpoint())
            await self.client.close()

    def _backoff(self, failures: int) -> float:
        return equal_jitter_delay(failures + 1, self.retry_base_s, self.retry_cap_s, _RNG)

    def _lost(self, reason: str) -> None:
        """The channel is gone: the next session makes a new one and resynchronises."""
        self.place.channel = None
        self.place.last_id = None
        self._resync_reason = reason

    async def _session(self) -> None:
        """One connection to the stream, until it ends."""
        fresh = self.place.channel is None or not await self.client.channel_exists(
            self.place.channel
        )
        if fresh:
            await self._new_channel()
        channel = self.place.channel
        assert channel is not None
        frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        connected = asyncio.Event()
        reader = asyncio.create_task(self._read(channel, self.place.last_id, frames, connected))
        resume_blind = not fresh and self.place.last_id is None
        try:
            await _first(connected, reader)
            if resume_blind:
                # no event seen yet on this channel: dCache replays nothing without a
                # Last-Event-ID, so what happened while we were away is found by listing
                DCACHE_GAPS.labels(self.config.name, "no-resume-point").inc()
                emit = self.place.started_before or self._baseline or self.config.emit_existing
                await self.trees.resync("no-resume-point", emit=emit)
                self._baseline = True
            if fresh:
                reason = self._resync_reason
                if reason is not None:
                    DCACHE_GAPS.labels(self.config.name, reason).inc()
                emit = reason is not None or self.place.started_before or self.config.emit_existing
                await self.trees.resync(reason or "start", emit=emit)
                self._resync_reason = None
                self._baseline = True
                await self._checkpoint()
            await self._consume(frames)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, DCacheError):
                await reader

    async def _new_channel(self) -> None:
        """A channel in place of none or of one that vanished. Nothing is watched on it yet:
        the session connects first (dCache replays nothing to a first connection)."""
        if self.place.channel is not None and self._resync_reason is None:
            self._resync_reason = "channel-gone"
        client_id = f"streamapp-{self.config.name}-{socket.gethostname()}"
        self.place.channel = await self.client.create_channel(client_id)
        self.place.last_id = None
        self.frames.new_channel()
        self.trees.new_channel()
        await self.client.set_channel_timeout(self.place.channel, self.config.channel_timeout_s)
        log.info("%s: new channel %s", self.config.name, self.place.channel)

    async def _read(
        self,
        channel: str,
        last_id: str | None,
        frames: asyncio.Queue[Any],
        connected: asyncio.Event,
    ) -> None:
        try:
            async for frame in self.client.stream(channel, last_id, on_connect=connected.set):
                self.frames.arrived(frame)
                await frames.put(frame)
        except Exception as exc:  # the consumer must hear of any end, or it waits for ever
            if not connected.is_set():
                raise  # the session waits for the connection: it gets this error there
            if not isinstance(exc, DCacheError):
                log.exception("%s: reading the stream failed", self.config.name)
                exc = DCacheUnreachableError(f"stream failed: {type(exc).__name__}")
            await frames.put(exc)
            return
        await frames.put(_END)

    async def _consume(self, frames: asyncio.Queue[Any]) -> None:
        handled = 0
        while True:
            if frames.empty() and handled:
                await self._checkpoint()  # quiet: make the place durable now
                handled = 0
            item = await self._next(frames)
            if item is _END:
                await self._checkpoint()
                log.info("%s: stream ended; resuming", self.config.name)
                return
            if isinstance(item, BaseException):
                await self._checkpoint()
                raise item
            await self.frames.handle(item)
            handled += 1
            if handled >= CHECKPOINT_EVERY:
                await self._checkpoint()
                handled = 0

    async def _next(self, frames: asyncio.Queue[Any]) -> Any:
        """The next frame; meanwhile, a configured root that is not watched (it did not exist,
        or was deleted or moved away) is looked for every ``root_retry`` seconds."""
        while True:
            missing = [root for root in self.config.roots if root not in self.place.watches]
            if not missing:
                return await frames.get()
            try:
                return await asyncio.wait_for(frames.get(), self.config.root_retry_s)
            except TimeoutError:
                for root in missing:
                    await self.trees.watch_tree(root, reason="root-appeared", emit=True)
                    if root in self.place.watches:
                        log.info("%s: watching root %s again", self.config.name, root)

    async def _checkpoint(self) -> None:
        await self.writer.checkpoint(self.place.channel, self.place.last_id, self.place.watches)


async def _first(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Wait until ``event`` is set, or re-raise what ended ``task`` first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not event.is_set():
        task.result()  # the reader failed before connecting: raise its error
        raise DCacheUnreachableError("the stream ended before it started")
