"""A dCache storage-events test server. It STANDS IN FOR A dCACHE FRONTEND's storage-events API
(and a sliver of its namespace API), which cannot run on this machine: it is not dCache, has no
pools, doors or PnfsManager, and keeps its whole namespace in memory.

It follows the frontend's documented API and, where the documentation is silent, dCache's source
(dCache/dcache ``modules/dcache-frontend/.../restful/resources/EventResources.java``,
``.../restful/events/{Channel,Registrar}.java``, ``.../events/streams/inotify/*.java``,
``.../frontend/inotify/{event,selector}-schema.json``,
``modules/dcache/.../diskCacheV111/namespace/MonitoringNameSpaceProvider.java``,
``docs/UserGuide/.../frontend.md``; summarised in ``docs/formats.md`` §2):

- Everything under ``/api/v1`` needs ``Authorization: Bearer <token>`` from the accepted set
  (changeable at run time, ``set_tokens``); tokens map to users, channels belong to users
  (another user's channel: 403). Errors have dCache's body
  ``{"errors": [{"message": ..., "status": "<code>"}]}``: the reason phrase, or for 400 the
  reason itself ("Bad selector: ...").
- ``POST /api/v1/events/channels`` (optional ``{"client-id": ...}``): 201, ``Location`` = absolute
  channel URL (id: 16 random bytes, base64url); 429 past 128 channels per user.
  ``GET /api/v1/events/channels[?client-id=]`` lists the caller's channel URLs.
  ``GET`` a channel with ``Accept: application/json``: ``{"timeout": <s>}``; with any other
  Accept (``text/event-stream``, ``*/*``): the SSE stream. ``PATCH {"timeout": s}``: 204 (1 s to
  1 day, else 400). ``DELETE``: 204, ``SUBSCRIPTION_CLOSED`` per subscription, the stream ends.
- A channel nobody reads closes after its timeout (300 s by default), counted from creation or
  from the reader's disconnection. The timer is real (``loop.call_later``); ``time_scale``
  multiplies every timeout so tests can use tiny ones. (dCache itself notices a disconnected
  reader only when it next tries to send; this server notices at once.)
- SSE frames: ``event: inotify`` / ``id: <n>`` / ``data: {"event": {...}, "subscription": URL}``;
  ids count from 0 per channel. ``SYSTEM`` frames (``NEW_SUBSCRIPTION``, ``SUBSCRIPTION_CLOSED``,
  ``EVENT_LOSS``, ``COMPETING_CLIENT``, ``SHUTDOWN``) carry **no id** and are **never buffered**:
  a client that is not connected when one happens never sees it (as in ``Channel.java``).
- ``Last-Event-ID`` (as ``Channel.acceptConnection``): the ring buffer (16384 inotify events by
  default) is trimmed up to the event with that id; if found, everything after it is replayed;
  if not, the buffer ends up EMPTY, one ``EVENT_LOSS`` is sent and the stream goes on with new
  events only: nothing from the buffer is replayed. Without a (numeric) ``Last-Event-ID``
  nothing is replayed at all: events that happened while nobody was connected are only
  reachable by resuming from the id of an event seen earlier.
- A second reader of a channel takes over: the first gets ``COMPETING_CLIENT``, then its stream
  ends.
- ``POST .../subscriptions/inotify`` with ``{"path": "/abs", "flags": [...]}``: 201 + ``Location``
  (``.../subscriptions/inotify/<id>``, the id being the watched entry's PNFS-ID in base64url);
  ``NEW_SUBSCRIPTION`` to a connected reader. A channel holds one subscription per watched
  *entry* (inode): a second POST for the same entry answers 303 to the existing one and
  replaces its flags (``IN_MASK_ADD``: merges them in the stored selector), whether or not the
  selector is identical. 400 for a bad selector (unknown key or flag, path not absolute or
  ending in ``/``, ``IN_DONT_FOLLOW``/``IN_EXCL_UNLINK``), for a path that does not exist
  ("Not found: ...": dCache answers 400, not 404), for ``IN_ONLYDIR`` on a file, and for an
  event type other than ``inotify``. ``GET .../subscriptions`` lists URLs,
  ``GET .../subscriptions/inotify/<id>`` returns the selector, ``DELETE`` it: 204, an
  ``IN_IGNORED`` event and ``SUBSCRIPTION_CLOSED``.
- Flags select event types (absent: all 12; ``[]``: none); ``IN_ISDIR`` is not a selectable
  flag but marks events about directories; ``IN_IGNORED`` and ``IN_Q_OVERFLOW`` always arrive.
  ``IN_ONESHOT`` closes the subscription after its first event.
- Watches are not recursive and follow the watched inode when it moves (as the selector schema
  says). Child events (``name`` = child name) go to subscriptions on the parent directory; self
  events (no ``name``) go to subscriptions on the entry itself. ``IN_DELETE_SELF`` closes the
  subscription: the event (if selected), ``SUBSCRIPTION_CLOSED``, then ``IN_IGNORED``.
- ``GET /api/v1/namespace/<path>[?children=true]``: dCache's JSON
  (``fileMimeType, [children], fileType, pnfsId, nlink, mtime, creationTime, size, mode``;
  children add ``fileName``); 404 for a missing path. Listing a directory is a read of it:
  like dCache's ``MonitoringNameSpaceProvider`` this sends ``IN_OPEN`` then
  ``IN_CLOSE_NOWRITE`` (with ``IN_ISDIR``) to the directory's own subscriptions and to its
  parent's (``listing_events=False`` turns that off).
- ``GET /healthz``: no authentication.

The namespace changes through Python methods (``mkdir``, ``upload``, ``attrib``, ``move``,
``delete``, ``rmdir``) that emit what dCache emits; faults through ``overflow``,
``lose_events``, ``disconnect_readers``, ``shutdown``, ``drop_channel``. Every request is
recorded in ``requests``. Methods must be called on the server's event loop. Run it alone with
``python -m testkit.dcache_server --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

API = "/api/v1"
EVENT_TYPE = "inotify"  # the only event type served (real dCache also has "metronome")
DEFAULT_RING_BUFFER = 16384  # Channel.java: EvictingQueue.create(16384)
MAX_CHANNELS_PER_USER = 128  # frontend.limit.events.channels-per-user
DEFAULT_TIMEOUT_S = 300  # frontend.limit.events.disconnect-timeout.default = 5 MINUTES
MAX_TIMEOUT_S = 86400  # frontend.limit.events.disconnect-timeout.maximum = 1 DAYS
MIN_TIMEOUT_S = 1  # EventResources.MINIMUM_DISCONNECT_TIMEOUT
MAX_CLIENT_ID_LENGTH = 256  # EventResources.MAX_CLIENT_ID_LENGTH
ROOT_PNFSID = "000000000000000000000000000000000000"

# AddWatchFlag.java: the event types a selector may select, in enum order...
EVENT_TYPES = (
    "IN_ACCESS",
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CLOSE_NOWRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_MODIFY",
    "IN_MOVE_SELF",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_OPEN",
)
# ...macros...
MACROS = {
    "IN_ALL_EVENTS": EVENT_TYPES,
    "IN_CLOSE": ("IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE"),
    "IN_MOVE": ("IN_MOVED_FROM", "IN_MOVED_TO"),
}
# ...and modifiers (InotifySelector.UNSUPPORTED_FLAGS are refused).
MODIFIERS = ("IN_DONT_FOLLOW", "IN_EXCL_UNLINK", "IN_MASK_ADD", "IN_ONESHOT", "IN_ONLYDIR")
UNSUPPORTED_FLAGS = frozenset({"IN_DONT_FOLLOW", "IN_EXCL_UNLINK"})
SELECTOR_FLAGS = (*EVENT_TYPES, *MACROS, *MODIFIERS)
_FLAG_ORDER = {flag: index for index, flag in enumerate(SELECTOR_FLAGS)}
# selector-schema.json: an absolute path, no trailing "/" (except the root itself). dCache's
# Java code does not visibly check this pattern; refusing other paths with 400 is an assumption.
_PATH_PATTERN = re.compile(r"^/(.*[^/])?$")
_INT_PATTERN = re.compile(r"^[+-]?\d{1,10}$")  # Guava Ints.tryParse: optional sign, digits only

# dCache guesses a file's MIME type with Java's URLConnection.getFileNameMap() (the JDK's
# content-types.properties); this is the common part of that table (an approximation: HDF5 and
# most scientific formats are not in it, so they are application/octet-stream).
_MIME_TYPES = {
    "txt": "text/plain",
    "text": "text/plain",
    "htm": "text/html",
    "html": "text/html",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gif": "image/gif",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "tiff": "image/tiff",
}
_USER = web.RequestKey("user", str)


class ApiError(Exception):
    """An error answer: dCache's ErrorResponseProvider body."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or HTTPStatus(status).phrase)
        self.status = status
        self.message = message or HTTPStatus(status).phrase


@dataclass(eq=False)
class Entry:
    """A namespace entry (an inode: watches follow it when it moves)."""

    name: str
    is_dir: bool
    pnfsid: str
    parent: Entry | None = field(repr=False)
    size: int
    mtime: int  # ms since the epoch
    creation_time: int  # ms since the epoch
    mode: int
    children: dict[str, Entry] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        parts: list[str] = []
        entry: Entry | None = self
        while entry is not None and entry.parent is not None:
            parts.append(entry.name)
            entry = entry.parent
        return "/" + "/".join(reversed(parts))

    @property
    def file_type(self) -> str:
        return "DIR" if self.is_dir else "REGULAR"


@dataclass(eq=False)
class Subscription:
    """An inotify subscription: one watched entry of one channel."""

    id: str  # base64url of the watched entry's PNFS-ID (WatchIdentity.java)
    channel: Channel = field(repr=False)
    target: Entry
    selector: dict[str, Any]  # as GET returns it: {"path": ..., ["flags": [...]]}
    flags: frozenset[str]  # the supplied flags with macros expanded
    selected: frozenset[str]  # the event types delivered
    url: str  # as the channel's events carry it
    closed: bool = False

    @property
    def path(self) -> str:
        """Where the watched entry is now (it may have moved since the subscription)."""
        return self.target.path


class Reader:
    """One open SSE response of a channel."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self.frames_sent = 0

    def send(self, frame: bytes) -> None:
        if not self.closed:
            self.queue.put_nowait(frame)

    def close(self) -> None:
        """End the stream cleanly once the queued frames are written."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def abort(self) -> None:
        """Cut the connection: the client sees the body end mid-stream."""
        transport = self.request.transport
        if transport is not None:
            transport.close()
        self.close()


@dataclass(eq=False)
class Channel:
    id: str
    owner: str
    client_id: str | None
    base_url: str  # of the request that created it: its events' subscription URLs use it
    timeout_s: int
    ring: deque[tuple[int, bytes]] = field(repr=False)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    next_event_id: int = 0
    reader: Reader | None = None
    closed: bool = False
    close_timer: asyncio.TimerHandle | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}{API}/events/channels/{self.id}"

    @property
    def connected(self) -> bool:
        return self.reader is not None

    @property
    def buffered_ids(self) -> list[int]:
        return [event_id for event_id, _ in self.ring]


@dataclass
class RecordedRequest:
    at: float  # monotonic
    method: str
    path: str
    query: str
    token: str | None  # the bearer token presented, if any
    last_event_id: str | None
    accept: str | None
    status: int | None = None  # None while an SSE stream is being opened


_RECORD = web.RequestKey("record", RecordedRequest)


class DCacheTestServer:
    """The stand-in frontend. ``tokens``: token -> user name, or bare tokens (user "user")."""

    def __init__(
        self,
        tokens: Mapping[str, str] | Iterable[str],
        *,
        ring_buffer_size: int = DEFAULT_RING_BUFFER,
        max_channels_per_user: int = MAX_CHANNELS_PER_USER,
        default_timeout_s: int = DEFAULT_TIMEOUT_S,
        max_timeout_s: int = MAX_TIMEOUT_S,
        time_scale: float = 1.0,
        listing_events: bool = True,
    ) -> None:
        self._tokens: dict[str, str] = {}
        self.set_tokens(tokens)
        self.ring_buffer_size = ring_buffer_size
        self.max_channels_per_user = max_channels_per_user
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.time_scale = time_scale
        self.listing_events = listing_events
        self.channels: dict[str, Channel] = {}
        self.requests: list[RecordedRequest] = []
        now = _now_ms()
        self.root = Entry("", True, ROOT_PNFSID, None, 512, now, now, 0o755)
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0: a free one) and return the base URL."""
        self.host = host
        self._loop = asyncio.get_running_loop()

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware])
        app.router.add_get("/healthz", self._healthz)
        events = f"{API}/events"
        channel = f"{events}/channels/{{channel_id}}"
        subscription = f"{channel}/subscriptions/{{type}}/{{subscription_id}}"
        app.router.add_get(events, self._service_metadata)
        app.router.add_get(f"{events}/channels", self._list_channels)
        app.router.add_post(f"{events}/channels", self._new_channel)
        app.router.add_get(channel, self._get_channel)
        app.router.add_patch(channel, self._modify_channel)
        app.router.add_delete(channel, self._delete_channel)
        app.router.add_get(f"{channel}/subscriptions", self._list_subscriptions)
        app.router.add_post(f"{channel}/subscriptions/{{type}}", self._subscribe)
        app.router.add_get(subscription, self._get_subscription)
        app.router.add_delete(subscription, self._delete_subscription)
        app.router.add_get(f"{API}/namespace", self._namespace)
        app.router.add_get(f"{API}/namespace/{{path:.*}}", self._namespace)
        # handler_cancellation: a reader that hangs up cancels its handler, so the channel's
        # disconnect timer starts at once.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server: Any = site._server  # aiohttp exposes the bound port only here
        self.port = server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        for channel in self.channels.values():
            self._cancel_timer(channel)
            if channel.reader is not None:
                channel.reader.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- test controls: credentials and observation ---------------------------------------------

    def set_tokens(self, tokens: Mapping[str, str] | Iterable[str]) -> None:
        """Replace the accepted tokens (token -> user; bare tokens belong to user "user")."""
        if isinstance(tokens, Mapping):
            self._tokens = {str(token): str(user) for token, user in tokens.items()}
        else:
            self._tokens = dict.fromkeys(tokens, "user")

    def watched_paths(self) -> set[str]:
        """The current paths of every entry some channel's subscription watches."""
        return {
            subscription.target.path
            for channel in self.channels.values()
            for subscription in channel.subscriptions.values()
        }

    def channel(self, ref: str) -> Channel:
        """A live channel by id or URL (KeyError if there is none)."""
        return self.channels[ref.rstrip("/").rsplit("/", 1)[-1]]

    def subscription(self, url: str) -> Subscription:
        """A live subscription by URL (KeyError if there is none)."""
        head, _, subscription_id = url.rstrip("/").rpartition("/")
        channel_id = head.split("/channels/", 1)[1].split("/", 1)[0]
        return self.channels[channel_id].subscriptions[subscription_id]

    def entry(self, path: str) -> Entry | None:
        entry: Entry | None = self.root
        for part in _parts(path):
            entry = entry.children.get(part) if entry is not None else None
        return entry

    # --- test controls: the namespace ----------------------------------------------------------

    def mkdir(self, path: str, *, parents: bool = False, silent: bool = False) -> Entry:
        """Create a directory: ``IN_CREATE``+``IN_ISDIR`` to the parent's subscriptions."""
        if parents:
            entry = self.root
            for part in _parts(path):
                child = entry.children.get(part)
                if child is None:
                    child = self.mkdir(f"{entry.path.rstrip('/')}/{part}", silent=silent)
                elif not child.is_dir:
                    raise NotADirectoryError(child.path)
                entry = child
            return entry
        parent, name = self._new_name(path)
        entry = self._link(parent, name, is_dir=True, size=512)
        if not silent:
            self._child_event(parent, "IN_CREATE", name, is_dir=True)
        return entry

    def upload(
        self,
        path: str,
        size: int = 0,
        *,
        attrib_first: bool = False,
        modifies: int = 1,
        silent: bool = False,
        via_upload_dir: bool = False,
    ) -> Entry:
        """Write a new file as a door does: ``IN_CREATE``, ``IN_OPEN``, ``IN_MODIFY`` (x
        ``modifies``), then ``IN_CLOSE_WRITE`` and ``IN_ATTRIB`` (``attrib_first`` swaps those).

        ``silent``: no events at all (a file written before any watch existed, or whose events
        were lost). ``via_upload_dir``: the door wrote into dCache's upload directory and
        committed the file (``MonitoringNameSpaceProvider.commitUpload``): the parent's
        subscriptions see one lone ``IN_MOVED_TO`` with a cookie that no ``IN_MOVED_FROM``
        shares. File events (open/modify/close/attrib) also go to subscriptions on the file
        itself, without a name (as inotify(7) and dCache's ``notifySelfEvent`` do)."""
        parent, name = self._new_name(path)
        entry = self._link(parent, name, is_dir=False, size=0)
        if silent or via_upload_dir:
            entry.size = size
            if via_upload_dir and not silent:
                self._child_event(parent, "IN_MOVED_TO", name, is_dir=False, cookie=_cookie())
            return entry
        self._child_event(parent, "IN_CREATE", name, is_dir=False)
        self._file_event(entry, "IN_OPEN")
        for _ in range(modifies):
            self._file_event(entry, "IN_MODIFY")
        entry.size = size
        entry.mtime = _now_ms()
        finish = ["IN_CLOSE_WRITE", "IN_ATTRIB"]
        if attrib_first:
            finish.reverse()
        for event_type in finish:
            self._file_event(entry, event_type)
        return entry

    def attrib(self, path: str) -> None:
        """A metadata change (``setFileAttributes``): ``IN_ATTRIB`` to the entry's own
        subscriptions and its parent's."""
        self._file_event(self._existing(path), "IN_ATTRIB")

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> str:
        """Rename ``src`` to ``dst`` (``MonitoringNameSpaceProvider.rename``) and return the
        cookie: ``IN_MOVE_SELF`` to the entry's own subscriptions (files too; ``IN_ISDIR`` for a
        directory), ``IN_MOVED_FROM`` to the old parent's, ``IN_MOVED_TO`` to the new parent's,
        both with the cookie. A moved directory takes its subtree along; subscriptions follow the
        moved inodes. ``overwrite`` replaces an existing file at ``dst`` without any event for it
        (dCache sends none)."""
        entry = self._existing(src)
        if entry.parent is None:
            raise PermissionError("cannot move the root")
        parent, name = self._parent_and_name(dst)
        ancestor: Entry | None = parent
        while ancestor is not None:
            if ancestor is entry:
                raise OSError(f"cannot move {src} into itself")
            ancestor = ancestor.parent
        existing = parent.children.get(name)
        if existing is entry:
            raise FileExistsError(dst)
        if existing is not None:
            if not overwrite:
                raise FileExistsError(dst)
            if existing.is_dir or entry.is_dir:
                raise IsADirectoryError(dst)
            del parent.children[name]
        old_parent, old_name = entry.parent, entry.name
        del old_parent.children[old_name]
        entry.parent, entry.name = parent, name
        parent.children[name] = entry
        now = _now_ms()
        old_parent.mtime = parent.mtime = now
        cookie = _cookie()
        self._self_event(entry, "IN_MOVE_SELF")
        self._child_event(old_parent, "IN_MOVED_FROM", old_name, is_dir=entry.is_dir, cookie=cookie)
        self._child_event(parent, "IN_MOVED_TO", name, is_dir=entry.is_dir, cookie=cookie)
        return cookie

    def delete(self, path: str) -> None:
        """Remove a file: ``IN_DELETE_SELF`` to its own subscriptions (which then close), then
        ``IN_DELETE`` to the parent's."""
        entry = self._existing(path)
        if entry.is_dir:
            raise IsADirectoryError(path)
        self._unlink(entry)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory: ``IN_DELETE_SELF``+``IN_ISDIR`` to its own subscriptions,
        each followed by ``SUBSCRIPTION_CLOSED`` and ``IN_IGNORED``; then ``IN_DELETE``+
        ``IN_ISDIR`` to the parent's."""
        entry = self._existing(path)
        if not entry.is_dir:
            raise NotADirectoryError(path)
        if entry.parent is None:
            raise PermissionError("cannot remove the root")
        if entry.children:
            raise OSError(f"directory not empty: {path}")
        self._unlink(entry)

    # --- test controls: faults -----------------------------------------------------------------

    def overflow(self, channel_id: str | None = None) -> None:
        """dCache dropped events: ``IN_Q_OVERFLOW`` to every subscription (of one channel)."""
        for channel in self._channels(channel_id):
            for subscription in list(channel.subscriptions.values()):
                self._deliver(subscription, {"mask": ["IN_Q_OVERFLOW"]})

    def lose_events(self, channel_id: str | None = None) -> None:
        """Empty the ring buffer(s): whoever resumes next with ``Last-Event-ID`` gets
        ``EVENT_LOSS`` (as if 16384 events had passed while disconnected)."""
        for channel in self._channels(channel_id):
            channel.ring.clear()

    def disconnect_readers(self, *, abort: bool = False) -> int:
        """Cut every open stream (channels stay; their disconnect timers start). ``abort``: close
        the connection mid-body instead of ending the response. Returns how many were cut."""
        count = 0
        for channel in self.channels.values():
            reader = channel.reader
            if reader is not None:
                count += 1
                self._detach(channel, reader)
                if abort:
                    reader.abort()
                else:
                    reader.close()
        return count

    def shutdown(self) -> None:
        """A frontend restart: ``SHUTDOWN`` to every connected reader, streams end, and every
        channel (with its subscriptions and buffer) is forgotten: old channel URLs answer 404."""
        for channel in list(self.channels.values()):
            if channel.reader is not None:
                channel.reader.send(_system_frame({"type": "SHUTDOWN"}))
            self._forget(channel)

    def drop_channel(self, channel_id: str) -> None:
        """The channel vanishes without a word (its stream just ends): 404 afterwards."""
        self._forget(self.channel(channel_id))

    # --- events --------------------------------------------------------------------------------

    def _watchers(self, target: Entry) -> list[Subscription]:
        return [
            subscription
            for channel in self.channels.values()
            for subscription in channel.subscriptions.values()
            if subscription.target is target and not subscription.closed
        ]

    def _dispatch(self, target: Entry, payload: dict[str, Any], event_type: str) -> None:
        """One namespace event for the subscriptions watching ``target`` (Inotify.java)."""
        for subscription in self._watchers(target):
            if event_type in subscription.selected:
                self._deliver(subscription, payload)
                if "IN_ONESHOT" in subscription.flags:
                    self._close_subscription(subscription, ignored_first=False)
            if event_type == "IN_DELETE_SELF" and not subscription.closed:
                self._close_subscription(subscription, ignored_first=False)

    def _self_event(self, entry: Entry, event_type: str) -> None:
        self._dispatch(entry, {"mask": _mask(event_type, entry.is_dir)}, event_type)

    def _child_event(
        self,
        parent: Entry,
        event_type: str,
        name: str,
        *,
        is_dir: bool,
        cookie: str | None = None,
    ) -> None:
        # InotifyEventPayload's field order: name, cookie, mask (cookie only for moves)
        payload: dict[str, Any] = {"name": name}
        if cookie is not None:
            payload["cookie"] = cookie
        payload["mask"] = _mask(event_type, is_dir)
        self._dispatch(parent, payload, event_type)

    def _file_event(self, entry: Entry, event_type: str) -> None:
        """An event about an entry: to its own subscriptions, then its parent's."""
        self._self_event(entry, event_type)
        if entry.parent is not None:
            self._child_event(entry.parent, event_type, entry.name, is_dir=entry.is_dir)

    def _deliver(self, subscription: Subscription, event: dict[str, Any]) -> None:
        """Channel.sendEvent: number it, keep it in the ring buffer, send it if connected."""
        channel = subscription.channel
        if channel.closed:
            return
        event_id = channel.next_event_id
        channel.next_event_id += 1
        data = orjson.dumps({"event": event, "subscription": subscription.url})
        frame = b"event: inotify\nid: %d\ndata: %s\n\n" % (event_id, data)
        channel.ring.append((event_id, frame))
        if channel.reader is not None:
            channel.reader.send(frame)

    @staticmethod
    def _system(channel: Channel, data: dict[str, Any]) -> None:
        """A SYSTEM event: no id, not buffered, lost if nobody is connected."""
        if channel.reader is not None:
            channel.reader.send(_system_frame(data))

    def _close_subscription(self, subscription: Subscription, *, ignored_first: bool) -> None:
        """Close a subscription. In dCache ``IN_IGNORED`` is queued for an executor while
        ``SUBSCRIPTION_CLOSED`` is sent by the closing thread, so the order depends on who
        closes: a DELETE request (``ignored_first``; ZooKeeper is updated between the two) or the
        inotify sender itself after ``IN_DELETE_SELF``/``IN_ONESHOT`` (``SUBSCRIPTION_CLOSED``
        first, ``IN_IGNORED`` on its next run). Clients must accept both orders."""
        if subscription.closed:
            return
        subscription.closed = True
        channel = subscription.channel
        channel.subscriptions.pop(subscription.id, None)
        closed = {"type": "SUBSCRIPTION_CLOSED", "subscription": subscription.url}
        if ignored_first:
            self._deliver(subscription, {"mask": ["IN_IGNORED"]})
            self._system(channel, closed)
        else:
            self._system(channel, closed)
            self._deliver(subscription, {"mask": ["IN_IGNORED"]})

    # --- channels ------------------------------------------------------------------------------

    def _channels(self, channel_id: str | None) -> list[Channel]:
        if channel_id is None:
            return list(self.channels.values())
        return [self.channel(channel_id)]

    def _schedule_close(self, channel: Channel) -> None:
        self._cancel_timer(channel)
        loop = self._loop or asyncio.get_running_loop()
        channel.close_timer = loop.call_later(
            channel.timeout_s * self.time_scale, self._expire, channel
        )

    @staticmethod
    def _cancel_timer(channel: Channel) -> None:
        if channel.close_timer is not None:
            channel.close_timer.cancel()
            channel.close_timer = None

    def _expire(self, channel: Channel) -> None:
        channel.close_timer = None
        if self.channels.get(channel.id) is channel and channel.reader is None:
            self._close_channel(channel)

    def _close_channel(self, channel: Channel) -> None:
        """Channel.close (DELETE or timeout): subscriptions close (``SUBSCRIPTION_CLOSED`` to a
        connected reader; their ``IN_IGNORED`` arrives after the channel is closed and is
        dropped), the stream ends, the buffer is cleared."""
        channel.closed = True
        for subscription in list(channel.subscriptions.values()):
            subscription.closed = True
            self._system(channel, {"type": "SUBSCRIPTION_CLOSED", "subscription": subscription.url})
        channel.subscriptions.clear()
        self._forget(channel)

    def _forget(self, channel: Channel) -> None:
        channel.closed = True
        for subscription in channel.subscriptions.values():
            subscription.closed = True
        channel.subscriptions.clear()
        channel.ring.clear()
        self._cancel_timer(channel)
        if channel.reader is not None:
            channel.reader.close()
            channel.reader = None
        if self.channels.get(channel.id) is channel:
            del self.channels[channel.id]

    def _accept_connection(self, channel: Channel, reader: Reader, last_id: str | None) -> None:
        """Channel.acceptConnection."""
        previous = channel.reader
        if previous is not None:
            previous.send(_system_frame({"type": "COMPETING_CLIENT"}))
            previous.close()
        self._cancel_timer(channel)
        channel.reader = reader
        if last_id is None or not _INT_PATTERN.fullmatch(last_id):
            return
        wanted = int(last_id)
        # Drop everything before the client's last event (it stays, so that the same
        # Last-Event-ID gives the same output again); if it is not there, the buffer empties.
        while channel.ring and channel.ring[0][0] != wanted:
            channel.ring.popleft()
        if not channel.ring:
            reader.send(_system_frame({"type": "EVENT_LOSS"}))
            return
        for _, frame in list(channel.ring)[1:]:
            reader.send(frame)

    def _detach(self, channel: Channel, reader: Reader) -> None:
        if channel.reader is reader:
            channel.reader = None
            if not channel.closed:
                self._schedule_close(channel)

    # --- namespace internals -------------------------------------------------------------------

    def _existing(self, path: str) -> Entry:
        entry = self.entry(path)
        if entry is None:
            raise FileNotFoundError(path)
        return entry

    def _parent_and_name(self, path: str) -> tuple[Entry, str]:
        parts = _parts(path)
        if not parts:
            raise FileExistsError("/")
        parent = self._existing("/" + "/".join(parts[:-1]))
        if not parent.is_dir:
            raise NotADirectoryError(parent.path)
        return parent, parts[-1]

    def _new_name(self, path: str) -> tuple[Entry, str]:
        parent, name = self._parent_and_name(path)
        if name in parent.children:
            raise FileExistsError(path)
        return parent, name

    @staticmethod
    def _link(parent: Entry, name: str, *, is_dir: bool, size: int) -> Entry:
        now = _now_ms()
        pnfsid = "0000" + secrets.token_hex(16).upper()  # Chimera's 36 hex digits
        entry = Entry(name, is_dir, pnfsid, parent, size, now, now, 0o755 if is_dir else 0o644)
        parent.children[name] = entry
        parent.mtime = now
        return entry

    def _unlink(self, entry: Entry) -> None:
        """MonitoringNameSpaceProvider.deleteEntry: self first, then the parent."""
        parent = entry.parent
        assert parent is not None
        del parent.children[entry.name]
        parent.mtime = _now_ms()
        self._self_event(entry, "IN_DELETE_SELF")
        self._child_event(parent, "IN_DELETE", entry.name, is_dir=entry.is_dir)

    # --- HTTP ----------------------------------------------------------------------------------

    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = _bearer(request.headers.get("Authorization"))
        record = RecordedRequest(
            at=time.monotonic(),
            method=request.method,
            path=request.path,
            query=request.query_string,
            token=token,
            last_event_id=request.headers.get("Last-Event-ID"),
            accept=request.headers.get("Accept"),
        )
        self.requests.append(record)
        request[_RECORD] = record
        try:
            if request.path.startswith(f"{API}/") or request.path == API:
                request[_USER] = self._authenticate(token)
            response = await handler(request)
        except ApiError as error:
            response = _error(error.status, error.message)
        except web.HTTPException as error:  # aiohttp's own 404/405 for unknown routes
            response = _error(error.status)
        record.status = response.status
        return response

    def _authenticate(self, token: str | None) -> str:
        user = self._tokens.get(token) if token is not None else None
        if user is None:
            raise ApiError(401)
        return user

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok"})

    async def _service_metadata(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "channels": {
                    "maximumPerUser": self.max_channels_per_user,
                    "lifetimeWhenDisconnected": {
                        "minimum": MIN_TIMEOUT_S,
                        "maximum": self.max_timeout_s,
                        "default": self.default_timeout_s,
                    },
                }
            }
        )

    def _channel_for(self, request: web.Request) -> Channel:
        channel = self.channels.get(request.match_info["channel_id"])
        if channel is None:
            raise ApiError(404)
        if channel.owner != request[_USER]:
            raise ApiError(403)
        return channel

    async def _list_channels(self, request: web.Request) -> web.StreamResponse:
        user = request[_USER]
        wanted = request.query.get("client-id")
        client_id = _client_id(wanted) if wanted is not None else None
        base = _base_url(request)
        return _json(
            [
                f"{base}{API}/events/channels/{channel.id}"
                for channel in self.channels.values()
                if channel.owner == user and (wanted is None or channel.client_id == client_id)
            ]
        )

    async def _new_channel(self, request: web.Request) -> web.StreamResponse:
        user = request[_USER]
        body = await _json_body(request)
        client_id = None
        if body is not None:
            if not isinstance(body, dict):
                raise ApiError(400, "Bad request")
            value = body.get("client-id")
            if value is not None and not isinstance(value, str):
                raise ApiError(400, "Bad request")
            client_id = _client_id(value) if value is not None else None
        owned = sum(1 for channel in self.channels.values() if channel.owner == user)
        if owned >= self.max_channels_per_user:
            raise ApiError(429)
        channel_id = _b64url(secrets.token_bytes(16))
        channel = Channel(
            id=channel_id,
            owner=user,
            client_id=client_id,
            base_url=_base_url(request),
            timeout_s=self.default_timeout_s,
            ring=deque(maxlen=self.ring_buffer_size),
        )
        self.channels[channel_id] = channel
        self._schedule_close(channel)  # the client must connect within the timeout
        location = f"{_base_url(request)}{API}/events/channels/{channel_id}"
        return web.Response(status=201, headers={"Location": location})

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel_for(request)
        accept = request.headers.get("Accept", "")
        if "application/json" in accept and "text/event-stream" not in accept:
            return _json({"timeout": channel.timeout_s})
        return await self._stream(request, channel)

    async def _stream(self, request: web.Request, channel: Channel) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        reader = Reader(request)
        # Take over the channel before answering: once the client has the response headers,
        # every event is on its way to it.
        self._accept_connection(channel, reader, request.headers.get("Last-Event-ID"))
        try:
            await response.prepare(request)
            request[_RECORD].status = 200
            while True:
                frame = await reader.queue.get()
                if frame is None:
                    break
                await response.write(frame)
                reader.frames_sent += 1
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            reader.closed = True
            self._detach(channel, reader)
        return response

    async def _modify_channel(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel_for(request)
        body = await _json_body(request)
        timeout = body.get("timeout", 0) if isinstance(body, dict) else None
        if not isinstance(timeout, int) or isinstance(timeout, bool):
            raise ApiError(400, "Bad request")
        if timeout < MIN_TIMEOUT_S:
            raise ApiError(400, "Timeout shorter than minimum allowed")
        if timeout > self.max_timeout_s:
            raise ApiError(400, "Timeout longer than maximum allowed")
        channel.timeout_s = timeout
        if channel.close_timer is not None:  # Channel.rescheduleClose: only while disconnected
            self._schedule_close(channel)
        return web.Response(status=204)

    async def _delete_channel(self, request: web.Request) -> web.StreamResponse:
        self._close_channel(self._channel_for(request))
        return web.Response(status=204)

    async def _list_subscriptions(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel_for(request)
        base = _base_url(request)
        return _json(
            [
                _subscription_url(base, channel.id, subscription.id)
                for subscription in channel.subscriptions.values()
            ]
        )

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if body is None:
            raise ApiError(400, "Missing JSON entity in POST request")
        channel = self._channel_for(request)
        event_type = request.match_info["type"]
        if event_type != EVENT_TYPE:
            raise ApiError(400, f"Unknown event type: {event_type}")
        path, supplied, flags = _parse_selector(body)
        target = self.entry(path)
        if target is None:
            raise ApiError(400, f"Not found: Problem with path: {path}")
        if "IN_ONLYDIR" in flags and not target.is_dir:
            raise ApiError(400, "Failed condition: IN_ONLYDIR with REGULAR target")
        subscription_id = _b64url(bytes.fromhex(target.pnfsid))
        location = _subscription_url(_base_url(request), channel.id, subscription_id)
        selector: dict[str, Any] = {"path": path}
        if supplied is not None:
            selector["flags"] = supplied
        selected = _event_types(flags)
        existing = channel.subscriptions.get(subscription_id)
        if existing is not None:  # Inotify.InotifySelection.accept: a MERGED selection
            if "IN_MASK_ADD" in flags:
                merged = (flags | existing.flags) - {"IN_MASK_ADD"}
                selector["flags"] = sorted(merged, key=_FLAG_ORDER.__getitem__)
                existing.flags = frozenset(merged)
            else:
                existing.flags = flags
            existing.selector = selector
            # dCache recomputes the selected events from the *new* selector only, even with
            # IN_MASK_ADD (a quirk of InotifySelection.accept, reproduced here).
            existing.selected = selected
            return web.Response(status=303, headers={"Location": location})
        subscription = Subscription(
            id=subscription_id,
            channel=channel,
            target=target,
            selector=selector,
            flags=flags,
            selected=selected,
            url=_subscription_url(channel.base_url, channel.id, subscription_id),
        )
        channel.subscriptions[subscription_id] = subscription
        self._system(channel, {"type": "NEW_SUBSCRIPTION", "subscription": subscription.url})
        return web.Response(status=201, headers={"Location": location})

    def _subscription_of(self, request: web.Request) -> Subscription:
        channel = self._channel_for(request)
        subscription = None
        if request.match_info["type"] == EVENT_TYPE:
            subscription = channel.subscriptions.get(request.match_info["subscription_id"])
        if subscription is None:
            raise ApiError(404)
        return subscription

    async def _get_subscription(self, request: web.Request) -> web.StreamResponse:
        return _json(self._subscription_of(request).selector)

    async def _delete_subscription(self, request: web.Request) -> web.StreamResponse:
        self._close_subscription(self._subscription_of(request), ignored_first=True)
        return web.Response(status=204)

    async def _namespace(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info.get("path", "")
        entry = self.entry(path)
        if entry is None:
            raise ApiError(404)
        body = _attributes(entry)
        if entry.is_dir and request.query.get("children", "").lower() == "true":
            children = [
                _attributes(child, named=True) for _, child in sorted(entry.children.items())
            ]
            # dCache's JSON puts "children" right after "fileMimeType"
            body = {"fileMimeType": body.pop("fileMimeType"), "children": children, **body}
            if self.listing_events:
                self._file_event(entry, "IN_OPEN")
                self._file_event(entry, "IN_CLOSE_NOWRITE")
        return _json(body)


# --- helpers -----------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parts(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    return [part for part in path.split("/") if part]


def _mask(event_type: str, is_dir: bool) -> list[str]:
    # EventFlag order: the event type, then IN_ISDIR
    return [event_type, "IN_ISDIR"] if is_dir else [event_type]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cookie() -> str:
    # dCache: base64 (standard alphabet, no padding) of a 128-bit murmur3 hash
    return base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def _system_frame(data: dict[str, Any]) -> bytes:
    return b"event: SYSTEM\ndata: %s\n\n" % orjson.dumps(data)


def _subscription_url(base: str, channel_id: str, subscription_id: str) -> str:
    return f"{base}{API}/events/channels/{channel_id}/subscriptions/{EVENT_TYPE}/{subscription_id}"


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _client_id(value: str) -> str | None:
    return value[:MAX_CLIENT_ID_LENGTH] if value else None  # "" is no client-id


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Bad request") from None


def _parse_selector(body: Any) -> tuple[str, list[str] | None, frozenset[str]]:
    """The selector as InotifySelector reads it: (path, supplied flags, expanded flags)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Bad selector: Bad selector value: not a JSON object")
    unknown = sorted(set(body) - {"path", "flags"})
    if unknown:
        raise ApiError(400, f"Bad selector: Bad selector value: unrecognized field {unknown[0]}")
    path = body.get("path")
    if path is None:
        raise ApiError(400, "Bad selector: Missing path")
    if not isinstance(path, str) or not _PATH_PATTERN.fullmatch(path):
        raise ApiError(400, f"Bad selector: Bad selector value: bad path {path!r}")
    raw_flags = body.get("flags")
    if raw_flags is None:
        return path, None, frozenset(EVENT_TYPES)
    if not isinstance(raw_flags, list) or not all(isinstance(flag, str) for flag in raw_flags):
        raise ApiError(400, "Bad selector: Bad selector value: flags must be a list of names")
    bad = [flag for flag in raw_flags if flag not in _FLAG_ORDER]
    if bad:
        raise ApiError(400, f"Bad selector: Bad selector value: unknown flag {bad[0]}")
    supplied = sorted(set(raw_flags), key=_FLAG_ORDER.__getitem__)
    expanded: set[str] = set()
    for flag in supplied:
        expanded.update(MACROS.get(flag, (flag,)))
    unsupported = sorted(expanded & UNSUPPORTED_FLAGS, key=_FLAG_ORDER.__getitem__)
    if unsupported:
        raise ApiError(400, f"Bad selector: Unsupported flags: [{', '.join(unsupported)}]")
    return path, supplied, frozenset(expanded)


def _event_types(flags: frozenset[str]) -> frozenset[str]:
    return frozenset(flag for flag in flags if flag in EVENT_TYPES)


def _attributes(entry: Entry, *, named: bool = False) -> dict[str, Any]:
    """JsonFileAttributes with the attributes FileResources fetches by default."""
    body: dict[str, Any] = {"fileName": entry.name} if named else {}
    if entry.is_dir:
        mime = "application/vnd.dcache.folder"
    else:
        extension = entry.name.rpartition(".")[2].lower() if "." in entry.name else ""
        mime = _MIME_TYPES.get(extension, "application/octet-stream")
    body["fileMimeType"] = mime
    body["fileType"] = entry.file_type
    body["pnfsId"] = entry.pnfsid
    subdirs = sum(1 for child in entry.children.values() if child.is_dir)
    body["nlink"] = 2 + subdirs if entry.is_dir else 1
    body["mtime"] = entry.mtime
    body["creationTime"] = entry.creation_time
    body["size"] = entry.size
    body["mode"] = entry.mode
    return body


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _error(status: int, message: str | None = None) -> web.Response:
    text = message or HTTPStatus(status).phrase
    return _json({"errors": [{"message": text, "status": str(status)}]}, status)


async def _serve(args: argparse.Namespace, tokens: list[str]) -> None:
    server = DCacheTestServer(tokens, ring_buffer_size=args.ring_buffer)
    for path in args.mkdir:
        server.mkdir(path, parents=True, silent=True)
    await server.start(args.host, args.port)
    print(
        f"dCache storage-events test server (a stand-in, not dCache) on {server.url}{API}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3880, help="dCache's frontend port: 3880")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accepted bearer token (repeatable); @FILE reads it from FILE",
    )
    parser.add_argument(
        "--mkdir", action="append", default=[], metavar="PATH", help="create this directory"
    )
    parser.add_argument(
        "--ring-buffer",
        type=int,
        default=DEFAULT_RING_BUFFER,
        metavar="N",
        help="events kept per channel for Last-Event-ID",
    )
    args = parser.parse_args()
    if not args.token:
        parser.error("at least one --token is needed (anonymous access gets 401)")
    tokens = [
        Path(token[1:]).read_text().strip() if token.startswith("@") else token
        for token in args.token
    ]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, tokens))


if __name__ == "__main__":
    main()
