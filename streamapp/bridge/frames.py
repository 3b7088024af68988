"""One dCache frontend's SSE frames, handled: an inotify event becomes an envelope on the raw
topic (and may change what is watched), a SYSTEM frame steers the loop, an unreadable one
costs only itself. How this fits the bridge's loop: ``streamapp.bridge.dcache_events``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streamapp.bridge.config import FrontendConfig
from streamapp.bridge.state import FrontendPlace
from streamapp.bridge.trees import WatchedTrees, observed_now
from streamapp.clients.dcache import DCacheClient, ForbiddenError, RequestRefusedError
from streamapp.domain.inotify import FileState, child_path, inotify_envelope
from streamapp.metrics import DCACHE_EVENTS, DCACHE_GAPS
from streamapp.sse import UNREADABLE, SseFrame

log = logging.getLogger(__name__)


class CompetingClient(Exception):  # noqa: N818 - a signal to the loop, not a failure
    """Another client took over the channel (COMPETING_CLIENT)."""


class FrameHandler:
    """The frames of one frontend's stream, handled in order; ``place.last_id`` follows."""

    def __init__(
        self,
        config: FrontendConfig,
        place: FrontendPlace,
        client: DCacheClient,
        trees: WatchedTrees,
        lost: Callable[[str], None],
    ) -> None:
        self.config = config
        self.place = place
        self.client = client
        self.trees = trees
        self.lost = lost  # the channel is gone (SHUTDOWN): the loop makes a new one
        # the highest SSE id read, and the one the last overflow resync began at: a queued
        # IN_Q_OVERFLOW that such a resync already covers needs no listing of its own
        self._received = -1
        self._covered = -1
        self._unknown_warned = False

    def new_channel(self) -> None:
        self._received = self._covered = -1  # SSE ids restart on a new channel

    def arrived(self, frame: SseFrame) -> None:
        """A frame was read (it is handled later): note how far the stream has got."""
        if (number := _sse_number(frame.id)) is not None:
            self._received = number

    async def handle(self, frame: SseFrame) -> None:
        if frame.event == UNREADABLE or (
            frame.event == "inotify" and not isinstance(frame.data, dict)
        ):
            # whatever it said is unknown: count it, and find what changed by listing
            why = frame.data if frame.event == UNREADABLE else "data is not a JSON object"
            self.trees.problem("unreadable_frame", "frame %s unreadable (%s)", frame.id, why)
            DCACHE_GAPS.labels(self.config.name, "unreadable-frame").inc()
            await self.trees.resync("unreadable-frame", emit=True)
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
            await self.trees.resync("EVENT_LOSS", emit=True)
        elif kind == "SHUTDOWN":
            log.warning("%s: the frontend is shutting down", self.config.name)
            self.lost("SHUTDOWN")
        elif kind == "COMPETING_CLIENT":
            raise CompetingClient
        elif kind == "SUBSCRIPTION_CLOSED":
            self.trees.forget_subscription(str(data.get("subscription")))
        elif kind == "NEW_SUBSCRIPTION":
            self.trees.subscription_created(str(data.get("subscription")))

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
            await self._overflow(frame.id)
            return
        subscription = str(data.get("subscription"))
        watched = self._watched(subscription)
        if watched is None:
            return
        name = event.get("name") if isinstance(event.get("name"), str) else None
        try:
            path = child_path(watched, name)
        except ValueError as exc:  # no genuine dCache sends it: no path to report
            self.trees.problem("bad_frame", "%s in frame %s ignored", exc, frame.id)
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
            if not self.trees.file_written(path, state):
                return  # the listing already reported this very file
        elif first in ("IN_DELETE", "IN_MOVED_FROM"):
            state = self.trees.file_removed(path)
            if state is None:
                return  # a listing reported it gone already, or it was never reported
        envelope = inotify_envelope(
            frontend=self.config.url,
            channel=self.place.channel or "",
            sse_id=frame.id,
            watched=watched,
            name=name,
            mask=[str(m) for m in mask],
            cookie=cookie,
            state=state,
            observed=observed_now(),
        )
        await self.trees.append(path, envelope)

    async def _overflow(self, frame_id: str | None) -> None:
        number = _sse_number(frame_id)
        if number is not None and number <= self._covered:
            return  # a resync begun after it arrived covered it
        self._covered = self._received
        log.warning("%s: IN_Q_OVERFLOW: resynchronising by listing", self.config.name)
        DCACHE_GAPS.labels(self.config.name, "IN_Q_OVERFLOW").inc()
        await self.trees.resync("IN_Q_OVERFLOW", emit=True)

    def _watched(self, subscription: str) -> str | None:
        watched = self.trees.watched(subscription)
        if watched is None:
            # normal for a watch just dropped; if it never stops, the frontend names
            # subscriptions differently from the Location it answered (a proxy?)
            log_at = logging.DEBUG if self._unknown_warned else logging.WARNING
            self._unknown_warned = True
            log.log(log_at, "%s: event of an unknown watch %s", self.config.name, subscription)
        return watched

    async def _stat(self, path: str) -> FileState:
        """The file's size and mtime; unknown if the frontend will not say (this one path is
        refused, e.g. a name too long for a URL): the event is still reported."""
        try:
            return await self.client.stat(path) or FileState(None, None)
        except (ForbiddenError, RequestRefusedError) as exc:
            self.trees.problem("refused", "%s: size and mtime unknown (%s)", path, exc)
            return FileState(None, None)

    async def _directory(self, first: str, path: str) -> None:
        if first in ("IN_CREATE", "IN_MOVED_TO"):
            # new, or moved in (from elsewhere in the tree or outside it): watch and list it
            await self.trees.watch_tree(
                path,
                reason="new-directory" if first == "IN_CREATE" else "moved-directory",
                emit=True,
            )
        elif first in ("IN_DELETE", "IN_MOVED_FROM"):
            await self.trees.drop_tree(
                path, reason="moved-directory" if first == "IN_MOVED_FROM" else "deleted-directory"
            )

    async def _self_gone(self, watched: str, subscription: str, first: str) -> None:
        if first == "IN_MOVE_SELF" and watched in self.config.roots:
            # a root moved away: its watch follows the inode out of the configured path
            log.warning("%s: watched root %s was moved away", self.config.name, watched)
            await self.trees.unsubscribe(subscription)
            await self.trees.drop_tree(watched, reason="moved-directory")
        elif first in ("IN_DELETE_SELF", "IN_IGNORED"):
            self.trees.forget_subscription(subscription)


def _sse_number(frame_id: str | None) -> int | None:
    """An SSE id as the number dCache counts with, if it is one (int() of any digits would
    also take '٣' and raise on 5,000 digits)."""
    if frame_id is None or not frame_id.isascii() or not frame_id.isdigit():
        return None
    return int(frame_id) if len(frame_id) <= 19 else None
