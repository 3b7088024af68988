"""The dCache storage-events bridge: inotify over SSE from dCache frontends -> the raw topic.

Per frontend, one loop (``FrontendBridge.run``):

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer

from streamapp.bridge.config import BridgeConfig, FrontendConfig
from streamapp.bridge.state import (
    FrontendPlace,
    PlaceWriter,
    ensure_state_topic,
    load_places,
)
from streamapp.clients.dcache import UNREADABLE as UNREADABLE_FRAME
from streamapp.clients.dcache import (
    ChannelGoneError,
    DCacheAuthError,
    DCacheClient,
    DCacheError,
    DCacheUnreachableError,
    ForbiddenError,
    NotFoundError,
    RequestRefusedError,
    SseFrame,
    TokenFile,
)
from streamapp.domain.backoff import equal_jitter_delay
from streamapp.domain.inotify import (
    WATCH_FLAGS,
    FileState,
    child_path,
    diff_tree,
    inotify_envelope,
    is_under,
    listed_child,
    resync_envelope,
)
from streamapp.domain.instants import rfc3339_utc
from streamapp.metrics import (
    DCACHE_EVENTS,
    DCACHE_GAPS,
    DCACHE_PROBLEMS,
    DCACHE_RESYNC_CHANGES,
    DCACHE_WATCHES,
)

log = logging.getLogger(__name__)
_RNG = random.Random()  # noqa: S311 - jitter, not secrets

CHECKPOINT_EVERY: Final = 200  # frames; also whenever the stream goes quiet
_END: Final = object()


class WatchLimitError(DCacheError):
    """The configured number of watched directories is reached."""


class _Competing(Exception):  # noqa: N818 - a signal inside the loop
    pass


class FrontendBridge:
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
        self.raw_topic = raw_topic
        self.writer = PlaceWriter(producer, state_topic, config.name)
        self.by_subscription = {url: path for path, url in place.watches.items()}
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        # files a listing reported in this session whose IN_CLOSE_WRITE may still be queued:
        # the event then says nothing new (same size and mtime) and is not appended again
        self._listed: set[str] = set()
        self._resync_reason: str | None = None
        # subscriptions we deleted: their closing notices (IN_IGNORED, SUBSCRIPTION_CLOSED) may
        # still be queued after we watched the same directory again (dCache reuses the URL:
        # it names the inode) and must not end the new watch; NEW_SUBSCRIPTION clears them
        self._stale: set[str] = set()
        # the highest SSE id read, and the one the last overflow resync began at: a queued
        # IN_Q_OVERFLOW that such a resync already covers needs no listing of its own
        self._received = -1
        self._covered = -1
        self._baseline = False  # the trees were listed once in this process
        self._unknown_warned = False
        DCACHE_WATCHES.labels(config.name).set(len(place.watches))

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._session()
                    failures = 0
                except _Competing:
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
            if self.place.channel is not None and self._resync_reason is None:
                self._resync_reason = "channel-gone"
            client_id = f"streamapp-{self.config.name}-{socket.gethostname()}"
            self.place.channel = await self.client.create_channel(client_id)
            self.place.last_id = None
            self._received = self._covered = -1  # SSE ids restart on a new channel
            self.place.watches.clear()
            self.by_subscription.clear()
            await self.client.set_channel_timeout(self.place.channel, self.config.channel_timeout_s)
            log.info("%s: new channel %s", self.config.name, self.place.channel)
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
                await self._resync("no-resume-point", emit=emit)
                self._baseline = True
            if fresh:
                reason = self._resync_reason
                if reason is not None:
                    DCACHE_GAPS.labels(self.config.name, reason).inc()
                emit = reason is not None or self.place.started_before or self.config.emit_existing
                await self._resync(reason or "start", emit=emit)
                self._resync_reason = None
                self._baseline = True
                await self._checkpoint()
            await self._consume(frames)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, DCacheError):
                await reader

    async def _read(
        self,
        channel: str,
        last_id: str | None,
        frames: asyncio.Queue[Any],
        connected: asyncio.Event,
    ) -> None:
        try:
            async for frame in self.client.stream(channel, last_id, on_connect=connected.set):
                if (number := _sse_number(frame.id)) is not None:
                    self._received = number
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
            await self._handle(item)
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
                    await self._watch_tree(root, reason="root-appeared", emit=True)
                    if root in self.place.watches:
                        log.info("%s: watching root %s again", self.config.name, root)

    async def _checkpoint(self) -> None:
        await self.writer.checkpoint(self.place.channel, self.place.last_id, self.place.watches)

    # --- frames --------------------------------------------------------------------------------

    async def _handle(self, frame: SseFrame) -> None:
        if frame.event == UNREADABLE_FRAME or (
            frame.event == "inotify" and not isinstance(frame.data, dict)
        ):
            # whatever it said is unknown: count it, and find what changed by listing
            why = frame.data if frame.event == UNREADABLE_FRAME else "data is not a JSON object"
            self._problem("unreadable_frame", "frame %s unreadable (%s)", frame.id, why)
            DCACHE_GAPS.labels(self.config.name, "unreadable-frame").inc()
            await self._resync("unreadable-frame", emit=True)
            if frame.id is not None:
                self.place.last_id = frame.id
            return
        if frame.event == "SYSTEM":
            DCACHE_EVENTS.labels(self.config.name, "system").inc()
            await self._system(frame.data if isinstance(frame.data, dict) else {})
            return
        if frame.event != "inotify" or not isinstance(frame.data, dict):
            DCACHE_EVENTS.labels(self.config.name, "other").inc()
            log.warning("%s: unexpected frame %r ignored", self.config.name, frame.event)
            return
        DCACHE_EVENTS.labels(self.config.name, "inotify").inc()
        await self._inotify(frame)
        if frame.id is not None:
            self.place.last_id = frame.id

    async def _system(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "EVENT_LOSS":
            log.warning("%s: EVENT_LOSS: resynchronising by listing", self.config.name)
            DCACHE_GAPS.labels(self.config.name, "EVENT_LOSS").inc()
            await self._resync("EVENT_LOSS", emit=True)
        elif kind == "SHUTDOWN":
            log.warning("%s: the frontend is shutting down", self.config.name)
            self._lost("SHUTDOWN")
        elif kind == "COMPETING_CLIENT":
            raise _Competing
        elif kind == "SUBSCRIPTION_CLOSED":
            self._forget_subscription(str(data.get("subscription")))
        elif kind == "NEW_SUBSCRIPTION":
            self._stale.discard(str(data.get("subscription")))

    async def _inotify(self, frame: SseFrame) -> None:
        data: dict[str, Any] = frame.data
        event = data.get("event") if isinstance(data.get("event"), dict) else {}
        assert isinstance(event, dict)
        mask = event.get("mask")
        if not isinstance(mask, list) or not mask:
            log.warning("%s: inotify frame %s without a mask ignored", self.config.name, frame.id)
            return
        first, is_dir = str(mask[0]), "IN_ISDIR" in mask
        if first == "IN_Q_OVERFLOW":
            number = _sse_number(frame.id)
            if number is not None and number <= self._covered:
                return  # a resync begun after it arrived covered it
            self._covered = self._received
            log.warning("%s: IN_Q_OVERFLOW: resynchronising by listing", self.config.name)
            DCACHE_GAPS.labels(self.config.name, "IN_Q_OVERFLOW").inc()
            await self._resync("IN_Q_OVERFLOW", emit=True)
            return
        subscription = str(data.get("subscription"))
        watched = self.by_subscription.get(subscription)
        if watched is None:
            # normal for a watch just dropped; if it never stops, the frontend names
            # subscriptions differently from the Location it answered (a proxy?)
            log_at = logging.DEBUG if self._unknown_warned else logging.WARNING
            self._unknown_warned = True
            log.log(log_at, "%s: event of an unknown watch %s", self.config.name, subscription)
            return
        name = event.get("name") if isinstance(event.get("name"), str) else None
        try:
            path = child_path(watched, name)
        except ValueError as exc:  # no genuine dCache sends it: no path to report
            self._problem("bad_frame", "%s in frame %s ignored", exc, frame.id)
            return
        cookie = event.get("cookie") if isinstance(event.get("cookie"), str) else None
        state: FileState | None = None
        if not name:  # about the watched directory itself
            if first in ("IN_DELETE_SELF", "IN_MOVE_SELF", "IN_IGNORED"):
                await self._self_gone(watched, subscription, first)
        elif is_dir:
            await self._directory(first, path)
        elif first in ("IN_CLOSE_WRITE", "IN_MOVED_TO"):
            state = await self._stat(path)
            if path in self._listed and (
                self.place.files.get(path) == state or state == FileState(None, None)
            ):
                self._listed.discard(path)  # the listing already reported this very file
                return
            self._listed.discard(path)
            self.place.files[path] = state
            self.writer.file(path, state)
        elif first in ("IN_DELETE", "IN_MOVED_FROM"):
            state = self.place.files.pop(path, None)
            self._listed.discard(path)
            if state is None:
                return  # a listing reported it gone already, or it was never reported
            self.writer.file(path, None)
        envelope = inotify_envelope(
            frontend=self.config.url,
            channel=self.place.channel or "",
            sse_id=frame.id,
            watched=watched,
            name=name,
            mask=[str(m) for m in mask],
            cookie=cookie,
            state=state,
            observed=_now(),
        )
        await self._append(path, envelope)

    async def _stat(self, path: str) -> FileState:
        """The file's size and mtime; unknown if the frontend will not say (this one path is
        refused, e.g. a name too long for a URL): the event is still reported."""
        try:
            return await self.client.stat(path) or FileState(None, None)
        except (ForbiddenError, RequestRefusedError) as exc:
            self._problem("refused", "%s: size and mtime unknown (%s)", path, exc)
            return FileState(None, None)

    def _problem(self, problem: str, message: str, *args: Any) -> None:
        DCACHE_PROBLEMS.labels(self.config.name, problem).inc()
        log.warning("%s: " + message, self.config.name, *args)

    async def _directory(self, first: str, path: str) -> None:
        if first in ("IN_CREATE", "IN_MOVED_TO"):
            # new, or moved in (from elsewhere in the tree or outside it): watch and list it
            await self._watch_tree(
                path,
                reason="new-directory" if first == "IN_CREATE" else "moved-directory",
                emit=True,
            )
        elif first in ("IN_DELETE", "IN_MOVED_FROM"):
            await self._drop_tree(
                path, reason="moved-directory" if first == "IN_MOVED_FROM" else "deleted-directory"
            )

    async def _self_gone(self, watched: str, subscription: str, first: str) -> None:
        if first == "IN_MOVE_SELF" and watched in self.config.roots:
            # a root moved away: its watch follows the inode out of the configured path
            log.warning("%s: watched root %s was moved away", self.config.name, watched)
            await self._unsubscribe(subscription)
            await self._drop_tree(watched, reason="moved-directory")
        elif first in ("IN_DELETE_SELF", "IN_IGNORED"):
            self._forget_subscription(subscription)

    # --- watches and listings ------------------------------------------------------------------

    async def _resync(self, reason: str, *, emit: bool) -> None:
        for root in self.config.roots:
            await self._watch_tree(root, reason=reason, emit=emit)

    async def _watch_tree(self, root: str, *, reason: str, emit: bool) -> None:
        """Watch ``root`` and every directory under it, list them, and report (or, with
        ``emit`` false, only record) the files that differ from what was known."""
        channel = self.place.channel
        assert channel is not None
        listed: dict[str, FileState] = {}
        present: set[str] = set()  # directories that exist (listed, or not ours to list)
        unlisted: list[str] = []  # ... of which these could not be listed: nothing known there
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                await self._watch(channel, directory)
                listing = await self.client.list_directory(directory)
            except NotFoundError:
                continue  # gone meanwhile: its parent's events tell
            except WatchLimitError as exc:
                DCACHE_PROBLEMS.labels(self.config.name, "watch_limit").inc()
                log.error("%s: %s", self.config.name, exc)
                present.add(directory)
                unlisted.append(directory)
                continue
            except (ForbiddenError, RequestRefusedError) as exc:
                DCACHE_PROBLEMS.labels(self.config.name, "refused").inc()
                log.error("%s: %s not watched: %s", self.config.name, directory, exc)
                present.add(directory)
                unlisted.append(directory)
                continue
            present.add(directory)
            for name, (kind, state) in sorted(listing.items()):
                try:
                    path = listed_child(directory, name)
                except ValueError as exc:  # '', '.', '..', 'a/b': listing it again would loop
                    self._problem("bad_listing", "%s: entry skipped: %s", directory, exc)
                    continue
                if kind == "DIR":
                    pending.append(path)
                elif kind == "REGULAR":
                    listed[path] = state
        # watches of directories that no longer exist (left over from before a gap)
        for path in [p for p in self.place.watches if is_under(p, root) and p not in present]:
            if not any(is_under(path, d) for d in unlisted):
                await self._drop_watch(path)
        known = {
            p: s
            for p, s in self.place.files.items()
            if is_under(p, root) and not any(is_under(p, d) for d in unlisted)
        }
        diff = diff_tree(known, listed, root)
        now = _now()
        for path, state in diff.deleted:
            await self._listed_change(path, "deleted", reason, state, now, emit=emit)
        for path, state in diff.created:
            await self._listed_change(path, "created", reason, state, now, emit=emit)
        DCACHE_WATCHES.labels(self.config.name).set(len(self.place.watches))

    async def _watch(self, channel: str, directory: str) -> None:
        if (
            directory not in self.place.watches
            and len(self.place.watches) >= self.config.max_watches
        ):
            raise WatchLimitError(
                f"watch limit ({self.config.max_watches} directories, max_watches) reached: "
                f"{directory} and what is under it are not watched"
            )
        subscription = await self.client.subscribe(channel, directory, WATCH_FLAGS)
        old = self.by_subscription.get(subscription)
        if old is not None and old != directory:
            self.place.watches.pop(old, None)  # the watch followed its directory (a move)
        self.place.watches[directory] = subscription
        self.by_subscription[subscription] = directory

    async def _drop_tree(self, root: str, *, reason: str) -> None:
        """``root`` left the watched tree: forget its watches, report its files deleted."""
        for path in [p for p in self.place.watches if is_under(p, root)]:
            await self._drop_watch(path)
        now = _now()
        for path, state in sorted((p, s) for p, s in self.place.files.items() if is_under(p, root)):
            await self._listed_change(path, "deleted", reason, state, now, emit=True)
        DCACHE_WATCHES.labels(self.config.name).set(len(self.place.watches))

    async def _listed_change(
        self, path: str, change: str, reason: str, state: FileState, now: str, *, emit: bool
    ) -> None:
        """A change found without an event (listing, moved directory): report it (unless only
        recording) and bring the known files in step."""
        if emit:
            envelope = resync_envelope(
                frontend=self.config.url,
                path=path,
                change=change,
                reason=reason,
                state=state,
                observed=now,
            )
            await self._append(path, envelope)
            DCACHE_RESYNC_CHANGES.labels(self.config.name, change).inc()
        if change == "created":
            if emit:
                self._listed.add(path)
            self.place.files[path] = state
            self.writer.file(path, state)
        else:
            self.place.files.pop(path, None)
            self._listed.discard(path)
            self.writer.file(path, None)

    async def _drop_watch(self, path: str) -> None:
        subscription = self.place.watches.pop(path)
        if self.by_subscription.get(subscription) == path:
            del self.by_subscription[subscription]
            await self._unsubscribe(subscription)

    async def _unsubscribe(self, subscription: str) -> None:
        self._stale.add(subscription)
        await self.client.unsubscribe(subscription)

    def _forget_subscription(self, subscription: str) -> None:
        if subscription in self._stale:
            return  # the echo of our own DELETE, or of a watch since replaced
        path = self.by_subscription.pop(subscription, None)
        if path is not None and self.place.watches.get(path) == subscription:
            del self.place.watches[path]
        DCACHE_WATCHES.labels(self.config.name).set(len(self.place.watches))

    async def _append(self, path: str, envelope: dict[str, Any]) -> None:
        await self.writer.send(self.raw_topic, path.encode(), orjson.dumps(envelope))


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


def _sse_number(frame_id: str | None) -> int | None:
    """An SSE id as the number dCache counts with, if it is one (int() of any digits would
    also take '٣' and raise on 5,000 digits)."""
    if frame_id is None or not frame_id.isascii() or not frame_id.isdigit():
        return None
    return int(frame_id) if len(frame_id) <= 19 else None


def _now() -> str:
    now = datetime.now(UTC)
    return rfc3339_utc(now.replace(microsecond=now.microsecond // 1000 * 1000))


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
