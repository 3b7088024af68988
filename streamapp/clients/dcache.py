"""The dCache frontend's REST API as the bridge uses it: storage-event channels and
subscriptions, their SSE stream, and namespace listings (facts: docs/formats.md §2).

Errors are classes, so the bridge decides by kind: ``ChannelGoneError`` (404: the frontend
restarted or the channel timed out), ``DCacheAuthError`` (401/403: the token), and
``DCacheUnreachableError`` (connection refused, timeouts, 5xx). The bearer token is read from
its file on every request that needs it when the file changed, and never logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from streamapp.domain.inotify import FileState
from streamapp.sse import SseFrame, SseParser

log = logging.getLogger(__name__)


class DCacheError(Exception):
    """A call to the dCache frontend failed; the message never includes the token."""


class DCacheUnreachableError(DCacheError):
    """No answer, a timeout or a 5xx: worth retrying with back-off."""


class DCacheAuthError(DCacheError):
    """401/403: the token is missing, expired or lacks the right."""


class ForbiddenError(DCacheAuthError):
    """403: the token is valid but may not do this (e.g. read one directory)."""


class ChannelGoneError(DCacheError):
    """The channel no longer exists (frontend restarted, channel timed out or deleted)."""


class NotFoundError(DCacheError):
    """The namespace path does not exist (any more)."""


class RequestRefusedError(DCacheError):
    """Another 4xx: a request the frontend will never accept as it is."""


@dataclass(slots=True)
class TokenFile:
    """A bearer token (OIDC access token or macaroon) in a file, re-read when it changes."""

    path: Path
    _mtime: float | None = None
    _token: str = ""

    def current(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise DCacheAuthError(f"token file {self.path} unreadable: {exc.strerror}") from None
        if mtime != self._mtime:
            self._token = self.path.read_text().strip()
            self._mtime = mtime
            log.info("dCache token read from %s", self.path)
        return self._token


@dataclass(slots=True)
class DCacheClient:
    base_url: str  # e.g. https://dcache.example.org:3880 (the API is under /api/v1)
    token: TokenFile
    timeout_s: float = 30.0
    # a stream silent this long is reconnected (with Last-Event-ID): a half-open connection
    # must not hang the bridge for ever, and a quiet reconnect costs nothing
    stream_idle_s: float = 600.0
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.current()}", **extra}

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/api/v1" + path

    async def _call(
        self, method: str, url: str, *, body: Any = None, accept: str = "application/json"
    ) -> tuple[int, dict[str, str], Any]:
        headers = self._headers(Accept=accept)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        try:
            async with self._http().request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as response:
                raw = await response.read()
                status, answer = response.status, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DCacheUnreachableError(f"{method} {url}: {type(exc).__name__}") from None
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        _raise_for(status, f"{method} {url}", _error_message(payload))
        return status, answer, payload

    # --- channels and subscriptions ----------------------------------------------------------

    async def create_channel(self, client_id: str) -> str:
        status, headers, _ = await self._call(
            "POST", self.url("/events/channels"), body={"client-id": client_id}
        )
        location = headers.get("Location")
        if status != 201 or not location:
            raise DCacheError(f"channel not created: HTTP {status} without Location")
        return location

    async def channel_exists(self, channel: str) -> bool:
        """Whether ``channel`` is there and ours (403: another user's, e.g. after the token
        was replaced by one of another identity: a new channel is needed)."""
        try:
            await self._call("GET", channel)
        except (ChannelGoneError, ForbiddenError):
            return False
        return True

    async def set_channel_timeout(self, channel: str, seconds: int) -> None:
        await self._call("PATCH", channel, body={"timeout": seconds})

    async def subscribe(self, channel: str, path: str, flags: tuple[str, ...]) -> str:
        """Watch ``path``; returns the subscription URL (also when it existed: 303)."""
        try:
            status, headers, _ = await self._call(
                "POST",
                channel.rstrip("/") + "/subscriptions/inotify",
                body={"path": path, "flags": list(flags)},
            )
        except RequestRefusedError as exc:
            if "Not found" in str(exc) or "not found" in str(exc):
                raise NotFoundError(f"cannot watch {path}: it does not exist") from None
            raise
        location = headers.get("Location")
        if status not in (201, 303) or not location:
            raise DCacheError(f"subscription to {path} not created: HTTP {status}")
        return location

    async def unsubscribe(self, subscription: str) -> None:
        with contextlib.suppress(ChannelGoneError, NotFoundError):  # gone: what we wanted
            await self._call("DELETE", subscription)

    async def stream(
        self,
        channel: str,
        last_event_id: str | None,
        on_connect: Callable[[], None] = lambda: None,
    ) -> AsyncIterator[SseFrame]:
        """The channel's SSE frames from after ``last_event_id``, until the stream ends;
        ``on_connect`` is called once the frontend accepted the connection."""
        headers = self._headers(Accept="text/event-stream")
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        connected = False
        try:
            async with self._http().get(
                channel,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=self.stream_idle_s
                ),
            ) as response:
                _raise_for(response.status, f"GET {channel}")
                connected = True
                on_connect()
                # our bounded parser (streamapp.sse): aiohttp's line reader raises on a long line
                parser = SseParser()
                async for chunk in response.content.iter_chunked(1 << 16):
                    for frame in parser.feed(chunk):
                        yield frame
        except (aiohttp.ServerTimeoutError, TimeoutError):
            if not connected:
                raise DCacheUnreachableError(f"stream of {channel}: no answer") from None
            log.info("stream of %s silent for %.0f s: reconnecting", channel, self.stream_idle_s)
        except aiohttp.ClientError as exc:
            raise DCacheUnreachableError(f"stream of {channel}: {type(exc).__name__}") from None

    # --- namespace ---------------------------------------------------------------------------

    async def list_directory(self, path: str) -> dict[str, tuple[str, FileState]]:
        """child name -> (fileType, state) of a directory (``NotFoundError`` if it is gone)."""
        _, _, body = await self._call("GET", self._namespace(path) + "?children=true")
        children = body.get("children") if isinstance(body, dict) else None
        listing: dict[str, tuple[str, FileState]] = {}
        for child in children or []:
            if isinstance(child, dict) and isinstance(child.get("fileName"), str):
                listing[child["fileName"]] = (str(child.get("fileType")), _state(child))
        return listing

    async def stat(self, path: str) -> FileState | None:
        """A file's size and mtime, or None if it is gone or not a file."""
        try:
            _, _, body = await self._call("GET", self._namespace(path))
        except NotFoundError:
            return None
        if not isinstance(body, dict) or body.get("fileType") != "REGULAR":
            return None
        return _state(body)

    def _namespace(self, path: str) -> str:
        return self.url("/namespace" + quote(path))


def _state(entry: dict[str, Any]) -> FileState:
    # passed on as dCache said: the normalizer bounds sizes and times (and dead-letters the
    # envelope with the reason), one place for the bounds
    size, mtime = entry.get("size"), entry.get("mtime")
    return FileState(
        size if isinstance(size, int) and not isinstance(size, bool) else None,
        mtime if isinstance(mtime, int) and not isinstance(mtime, bool) else None,
    )


def _error_message(payload: Any) -> str:
    """dCache's error body: ``{"errors": [{"message": ..., "status": ...}]}``."""
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
        messages = [e.get("message") for e in payload["errors"] if isinstance(e, dict)]
        return "; ".join(str(m) for m in messages if m)
    return ""


def _raise_for(status: int, what: str, detail: str = "") -> None:
    if status < 400:
        return
    if detail:
        what = f"{what} ({detail[:200]})"
    if status == 403:
        raise ForbiddenError(f"{what}: HTTP 403")
    if status == 401:
        raise DCacheAuthError(f"{what}: HTTP 401")
    if status == 404:
        if "/events/channels" in what:
            raise ChannelGoneError(f"{what}: HTTP 404")
        raise NotFoundError(f"{what}: HTTP 404")
    if status >= 500 or status in (408, 429):
        raise DCacheUnreachableError(f"{what}: HTTP {status}")
    raise RequestRefusedError(f"{what}: HTTP {status}")
