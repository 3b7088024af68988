"""The watched trees of one dCache frontend: watches, listings, and the files known there.

A directory is watched, then listed: a file written before its watch existed is found only by
listing. What a listing finds that differs from the known files (``FrontendPlace.files``) is
appended to the raw topic as a ``resync`` envelope, and the known files are brought in step.
How this fits the bridge's loop: ``streamapp.bridge.dcache_events``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from streamapp.bridge.config import FrontendConfig
from streamapp.bridge.state import FrontendPlace, PlaceWriter
from streamapp.clients.dcache import (
    DCacheClient,
    DCacheError,
    ForbiddenError,
    NotFoundError,
    RequestRefusedError,
)
from streamapp.domain.inotify import (
    WATCH_FLAGS,
    FileState,
    diff_tree,
    is_under,
    listed_child,
    resync_envelope,
)
from streamapp.domain.instants import rfc3339_utc
from streamapp.metrics import DCACHE_PROBLEMS, DCACHE_RESYNC_CHANGES, DCACHE_WATCHES

log = logging.getLogger(__name__)


class WatchLimitError(DCacheError):
    """The configured number of watched directories is reached."""


class WatchedTrees:
    """The configured roots of one frontend, watched recursively on its channel."""

    def __init__(
        self,
        config: FrontendConfig,
        place: FrontendPlace,
        client: DCacheClient,
        writer: PlaceWriter,
        raw_topic: str,
    ) -> None:
        self.config = config
        self.place = place
        self.client = client
        self.writer = writer
        self.raw_topic = raw_topic
        self.by_subscription = {url: path for path, url in place.watches.items()}
        # files a listing reported in this session whose IN_CLOSE_WRITE may still be queued:
        # the event then says nothing new (same size and mtime) and is not appended again
        self._listed: set[str] = set()
        # subscriptions we deleted: their closing notices (IN_IGNORED, SUBSCRIPTION_CLOSED) may
        # still be queued after we watched the same directory again (dCache reuses the URL:
        # it names the inode) and must not end the new watch; NEW_SUBSCRIPTION clears them
        self._stale: set[str] = set()
        DCACHE_WATCHES.labels(config.name).set(len(place.watches))

    def new_channel(self) -> None:
        """A new channel has no subscriptions: every watch is to be made again."""
        self.place.watches.clear()
        self.by_subscription.clear()

    def watched(self, subscription: str) -> str | None:
        """The directory a subscription watches, if it is one of ours."""
        return self.by_subscription.get(subscription)

    # --- listings ------------------------------------------------------------------------------

    async def resync(self, reason: str, *, emit: bool) -> None:
        for root in self.config.roots:
            await self.watch_tree(root, reason=reason, emit=emit)

    async def watch_tree(self, root: str, *, reason: str, emit: bool) -> None:
        """Watch ``root`` and every directory under it, list them, and report (or, with
        ``emit`` false, only record) the files that differ from what was known."""
        listed, present, unlisted = await self._walk(root)
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
        now = observed_now()
        for path, state in diff.deleted:
            await self._listed_change(path, "deleted", reason, state, now, emit=emit)
        for path, state in diff.created:
            await self._listed_change(path, "created", reason, state, now, emit=emit)
        DCACHE_WATCHES.labels(self.config.name).set(len(self.place.watches))

    async def _walk(self, root: str) -> tuple[dict[str, FileState], set[str], list[str]]:
        """Watch and list ``root`` and the directories under it: the files found, the
        directories that exist (listed, or not ours to list), and of those the unlisted ones
        (nothing is known under them)."""
        channel = self.place.channel
        assert channel is not None
        listed: dict[str, FileState] = {}
        present: set[str] = set()
        unlisted: list[str] = []
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
                    self.problem("bad_listing", "%s: entry skipped: %s", directory, exc)
                    continue
                if kind == "DIR":
                    pending.append(path)
                elif kind == "REGULAR":
                    listed[path] = state
        return listed, present, unlisted

    async def drop_tree(self, root: str, *, reason: str) -> None:
        """``root`` left the watched tree: forget its watches, report its files deleted."""
        for path in [p for p in self.place.watches if is_under(p, root)]:
            await self._drop_watch(path)
        now = observed_now()
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
            await self.append(path, envelope)
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

    # --- files an event reported ---------------------------------------------------------------

    def file_written(self, path: str, state: FileState) -> bool:
        """Record a file an event reported written; False if a listing in this session already
        reported this very file (the event is then not appended again)."""
        if path in self._listed and (
            self.place.files.get(path) == state or state == FileState(None, None)
        ):
            self._listed.discard(path)
            return False
        self._listed.discard(path)
        self.place.files[path] = state
        self.writer.file(path, state)
        return True

    def file_removed(self, path: str) -> FileState | None:
        """Forget a file an event reported gone; its last known state, or None if a listing
        reported it gone already, or it was never reported (nothing to append)."""
        state = self.place.files.pop(path, None)
        self._listed.discard(path)
        if state is not None:
            self.writer.file(path, None)
        return state

    # --- watches -------------------------------------------------------------------------------

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

    async def _drop_watch(self, path: str) -> None:
        subscription = self.place.watches.pop(path)
        if self.by_subscription.get(subscription) == path:
            del self.by_subscription[subscription]
            await self.unsubscribe(subscription)

    async def unsubscribe(self, subscription: str) -> None:
        self._stale.add(subscription)
        await self.client.unsubscribe(subscription)

    def subscription_created(self, subscription: str) -> None:
        """NEW_SUBSCRIPTION: closing notices of this URL from now on are about this watch."""
        self._stale.discard(subscription)

    def forget_subscription(self, subscription: str) -> None:
        if subscription in self._stale:
            return  # the echo of our own DELETE, or of a watch since replaced
        path = self.by_subscription.pop(subscription, None)
        if path is not None and self.place.watches.get(path) == subscription:
            del self.place.watches[path]
        DCACHE_WATCHES.labels(self.config.name).set(len(self.place.watches))

    # --- output --------------------------------------------------------------------------------

    async def append(self, path: str, envelope: dict[str, Any]) -> None:
        """Send an envelope to the raw topic, keyed by its path."""
        await self.writer.send(self.raw_topic, path.encode(), orjson.dumps(envelope))

    def problem(self, problem: str, message: str, *args: Any) -> None:
        """Count and log input that costs one frame or entry, never the bridge."""
        DCACHE_PROBLEMS.labels(self.config.name, problem).inc()
        log.warning("%s: " + message, self.config.name, *args)


def observed_now() -> str:
    """Now, to the millisecond, as the envelopes' ``observed``."""
    now = datetime.now(UTC)
    return rfc3339_utc(now.replace(microsecond=now.microsecond // 1000 * 1000))
