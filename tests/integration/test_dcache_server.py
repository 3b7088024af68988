"""The dCache storage-events test server over loopback HTTP, read with the bridge's SSE parser.

The server (``testkit.dcache_server``) stands in for a dCache frontend's storage-events
API (docs/formats.md §2, dCache's EventResources/Channel/Inotify sources). These tests pin
what clients of the real thing rely on: the SSE framing, the inotify sequences, replay with
``Last-Event-ID``, and the ways a stream ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamapp.sse import SseFrame, SseParser
from testkit.dcache_server import DCacheTestServer
from testkit.helpers import wait_until

pytestmark = pytest.mark.integration

TOKEN = "alice-macaroon"
BOB = "bob-macaroon"
SSE = {"Accept": "text/event-stream"}
JSON = {"Accept": "application/json"}
CHANNEL_URL = re.compile(r"^http://127\.0\.0\.1:\d+/api/v1/events/channels/[A-Za-z0-9_-]{22}$")
SUBSCRIPTION_URL = re.compile(r"/subscriptions/inotify/[A-Za-z0-9_-]{24}$")


# --- a small SSE client ---------------------------------------------------------------------------


class EventStream:
    """Reads frames with the bridge's own parser, from the chunks as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = SseParser()
        self.pending: collections.deque[SseFrame] = collections.deque()

    async def next(self, wait_s: float = 2.0) -> SseFrame | None:
        """The next frame, or None at the end of the stream."""
        async with asyncio.timeout(wait_s):
            while not self.pending:
                chunk = await self.response.content.readany()
                if not chunk:
                    return None
                self.pending.extend(self.parser.feed(chunk))
        return self.pending.popleft()

    async def take(self, count: int) -> list[SseFrame]:
        frames: list[SseFrame] = []
        for _ in range(count):
            frame = await self.next()
            assert frame is not None, f"stream ended after {frames}"
            frames.append(frame)
        return frames

    async def at_end(self) -> bool:
        return await self.next() is None


@contextlib.asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession, channel: str, last_event_id: str | None = None
) -> AsyncIterator[EventStream]:
    headers = dict(SSE)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with session.get(channel, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        yield EventStream(response)


def inotify(frame: SseFrame) -> tuple[str | None, list[str]]:
    assert frame.event == "inotify", frame
    return frame.data["event"].get("name"), frame.data["event"]["mask"]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[DCacheTestServer]:
    # a tiny ring buffer and 1/100 of real time for channel timeouts (300 s -> 3 s)
    async with DCacheTestServer(
        {TOKEN: "alice", BOB: "bob"}, ring_buffer_size=8, time_scale=0.01
    ) as server:
        server.mkdir("/data")
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def new_channel(session: aiohttp.ClientSession, server: DCacheTestServer) -> str:
    async with session.post(f"{server.url}/api/v1/events/channels") as response:
        assert response.status == 201
        return response.headers["Location"]


async def subscribe(
    session: aiohttp.ClientSession, channel: str, path: str, flags: list[str] | None = None
) -> aiohttp.ClientResponse:
    selector: dict[str, Any] = {"path": path}
    if flags is not None:
        selector["flags"] = flags
    async with session.post(
        f"{channel}/subscriptions/inotify", json=selector, allow_redirects=False
    ) as response:
        await response.read()
        return response


async def watch(session: aiohttp.ClientSession, channel: str, path: str) -> str:
    response = await subscribe(session, channel, path)
    assert response.status == 201, await response.text()
    return response.headers["Location"]


# --- authentication -------------------------------------------------------------------------------


async def test_requests_without_an_accepted_bearer_token_get_401(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channels = f"{server.url}/api/v1/events/channels"
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
            async with anonymous.post(channels, headers=headers) as response:
                assert response.status == 401
                assert await response.json() == {
                    "errors": [{"message": "Unauthorized", "status": "401"}]
                }
            async with anonymous.get(f"{server.url}/api/v1/namespace/data", headers=headers) as r:
                assert r.status == 401
        async with anonymous.get(f"{server.url}/healthz") as response:
            assert response.status == 200
    assert not server.channels
    assert [r.token for r in server.requests if r.method == "POST"] == [None, "nope", None]

    channel = await new_channel(session, server)
    server.set_tokens({"rotated": "alice"})  # alice's macaroon was renewed
    async with session.get(channels) as response:
        assert response.status == 401
    async with session.get(channels, headers={"Authorization": "Bearer rotated"}) as response:
        assert response.status == 200
        assert await response.json() == [channel]  # channels belong to the user, not the token


# --- channels -------------------------------------------------------------------------------------


async def test_channels_are_created_listed_owned_and_deleted(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channels = f"{server.url}/api/v1/events/channels"
    first = await new_channel(session, server)
    assert CHANNEL_URL.match(first), first
    async with session.post(channels, json={"client-id": "ingest-1"}) as response:
        assert response.status == 201
        second = response.headers["Location"]
    assert first != second
    async with session.get(channels) as response:
        assert await response.json() == [first, second]
    async with session.get(channels, params={"client-id": "ingest-1"}) as response:
        assert await response.json() == [second]
    async with session.get(channels, params={"client-id": ""}) as response:
        assert await response.json() == [first]
    async with session.get(first, headers=JSON) as response:
        assert await response.json() == {"timeout": 300}

    bob = {"Authorization": f"Bearer {BOB}"}
    async with session.get(channels, headers=bob) as response:
        assert await response.json() == []
    async with session.get(first, headers={**bob, **JSON}) as response:
        assert response.status == 403

    async with session.delete(first) as response:
        assert response.status == 204
    async with session.get(first, headers=JSON) as response:
        assert response.status == 404
        assert await response.json() == {"errors": [{"message": "Not Found", "status": "404"}]}
    async with session.get(channels) as response:
        assert await response.json() == [second]


async def test_429_past_128_channels_per_user(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    created = [await new_channel(session, server) for _ in range(128)]
    channels = f"{server.url}/api/v1/events/channels"
    async with session.post(channels) as response:
        assert response.status == 429
        assert (await response.json())["errors"][0]["status"] == "429"
    async with session.post(channels, headers={"Authorization": f"Bearer {BOB}"}) as response:
        assert response.status == 201  # the limit is per user
    async with session.delete(created[0]) as response:
        assert response.status == 204
    async with session.post(channels) as response:
        assert response.status == 201


async def test_a_disconnected_channel_expires_after_its_timeout(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    async with session.patch(channel, json={"timeout": 0}) as response:
        assert response.status == 400
    async with session.patch(channel, json={"timeout": 86401}) as response:
        assert response.status == 400
    live = server.channel(channel)
    async with open_stream(session, channel):
        async with session.patch(channel, json={"timeout": 5}) as response:
            assert response.status == 204
        async with session.get(channel, headers=JSON) as response:
            assert await response.json() == {"timeout": 5}
        await asyncio.sleep(0.15)  # three times the (scaled) timeout: connected, so it stays
        assert server.channels.get(live.id) is live
    # 0.05 s after the reader left (the server's state changes when its loop gets to it)
    await wait_until(lambda: live.id not in server.channels, 2, "the channel's end", interval=0.005)
    async with session.get(channel, headers=JSON) as response:
        assert response.status == 404


# --- subscriptions --------------------------------------------------------------------------------


async def test_a_subscription_is_created_then_the_same_entry_answers_303(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    async with open_stream(session, channel) as stream:
        created = await subscribe(session, channel, "/data", ["IN_CLOSE_WRITE"])
        assert created.status == 201
        location = created.headers["Location"]
        assert location.startswith(f"{channel}/subscriptions/inotify/")
        assert SUBSCRIPTION_URL.search(location), location
        again = await subscribe(session, channel, "/data", ["IN_CLOSE_WRITE"])
        assert again.status == 303
        assert again.headers["Location"] == location
        (announced,) = await stream.take(1)
        assert announced == SseFrame(
            "SYSTEM", None, {"type": "NEW_SUBSCRIPTION", "subscription": location}
        )
        # dCache keys subscriptions by the watched entry: other flags replace the old ones
        other = await subscribe(session, channel, "/data", ["IN_CREATE"])
        assert other.status == 303
        assert other.headers["Location"] == location
        server.upload("/data/f.h5", 3)
        (frame,) = await stream.take(1)
        assert inotify(frame) == ("f.h5", ["IN_CREATE"])
    async with session.get(f"{channel}/subscriptions") as response:
        assert await response.json() == [location]
    async with session.get(location) as response:
        assert await response.json() == {"path": "/data", "flags": ["IN_CREATE"]}


async def test_bad_selectors_and_unknown_targets_are_refused(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    server.upload("/data/file.h5", silent=True)
    for selector in (
        {"path": "data"},  # not absolute
        {"path": "/data/"},  # the schema's pattern: no trailing slash
        {"path": "/data", "flags": ["IN_EVERYTHING"]},
        {"path": "/data", "flags": ["IN_DONT_FOLLOW"]},  # unsupported by dCache
        {"path": "/data", "recursive": True},  # additionalProperties: false
        {"flags": ["IN_CREATE"]},
        {"path": "/nowhere"},  # dCache answers 400 "Not found: ...", not 404
        {"path": "/data/file.h5", "flags": ["IN_ONLYDIR"]},
    ):
        async with session.post(f"{channel}/subscriptions/inotify", json=selector) as response:
            assert response.status == 400, selector
            assert (await response.json())["errors"][0]["status"] == "400"
    async with session.post(f"{channel}/subscriptions/metronome", json={}) as response:
        assert response.status == 400
    assert not server.channel(channel).subscriptions
    missing = f"{server.url}/api/v1/events/channels/AAAAAAAAAAAAAAAAAAAAAA"
    async with session.post(f"{missing}/subscriptions/inotify", json={"path": "/data"}) as r:
        assert r.status == 404
    async with session.get(missing, headers=SSE) as response:
        assert response.status == 404


# --- events ---------------------------------------------------------------------------------------


async def test_an_upload_yields_create_open_modify_then_close_write_and_attrib(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    location = await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        server.upload("/data/run1.h5", 1024)
        frames = await stream.take(5)
        assert [(f.event, f.id) for f in frames] == [("inotify", str(i)) for i in range(5)]
        assert [inotify(f) for f in frames] == [
            ("run1.h5", ["IN_CREATE"]),
            ("run1.h5", ["IN_OPEN"]),
            ("run1.h5", ["IN_MODIFY"]),
            ("run1.h5", ["IN_CLOSE_WRITE"]),
            ("run1.h5", ["IN_ATTRIB"]),
        ]
        # no absolute path, size or cookie: the watched path + name is all there is
        assert frames[3].data == {
            "event": {"name": "run1.h5", "mask": ["IN_CLOSE_WRITE"]},
            "subscription": location,
        }
        server.upload("/data/run2.h5", 1, attrib_first=True, modifies=2)
        frames = await stream.take(6)
        assert [inotify(f)[1][0] for f in frames] == [
            "IN_CREATE",
            "IN_OPEN",
            "IN_MODIFY",
            "IN_MODIFY",
            "IN_ATTRIB",
            "IN_CLOSE_WRITE",
        ]
        server.upload("/data/committed.h5", 1, via_upload_dir=True)
        (frame,) = await stream.take(1)
        name, mask = inotify(frame)
        assert (name, mask) == ("committed.h5", ["IN_MOVED_TO"])
        assert len(frame.data["event"]["cookie"]) == 22  # a lone MOVED_TO, cookie unmatched
    entry = server.entry("/data/run1.h5")
    assert entry is not None
    assert entry.size == 1024


async def test_watches_are_not_recursive(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        server.mkdir("/data/sub")
        (frame,) = await stream.take(1)
        assert inotify(frame) == ("sub", ["IN_CREATE", "IN_ISDIR"])
        server.upload("/data/sub/deep.h5", 1)  # nothing for the /data watch
        server.upload("/data/top.h5", 1)
        (frame,) = await stream.take(1)
        assert inotify(frame) == ("top.h5", ["IN_CREATE"])
        assert frame.id == "1"
        await stream.take(4)
        sub = await watch(session, channel, "/data/sub")  # the client adds the new directory
        (announced,) = await stream.take(1)
        assert announced.data == {"type": "NEW_SUBSCRIPTION", "subscription": sub}
        server.delete("/data/sub/deep.h5")
        (frame,) = await stream.take(1)
        assert inotify(frame) == ("deep.h5", ["IN_DELETE"])
        assert frame.data["subscription"] == sub


async def test_moves_share_a_cookie_and_watches_follow_the_moved_directory(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    server.mkdir("/data/a", silent=True)
    server.mkdir("/data/b", silent=True)
    server.upload("/data/a/x.h5", 5, silent=True)
    channel = await new_channel(session, server)
    a = await watch(session, channel, "/data/a")
    b = await watch(session, channel, "/data/b")
    top = await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        cookie = server.move("/data/a/x.h5", "/data/b/y.h5")
        moved_from, moved_to = await stream.take(2)
        assert moved_from.data == {
            "event": {"name": "x.h5", "cookie": cookie, "mask": ["IN_MOVED_FROM"]},
            "subscription": a,
        }
        assert moved_to.data == {
            "event": {"name": "y.h5", "cookie": cookie, "mask": ["IN_MOVED_TO"]},
            "subscription": b,
        }
        assert re.fullmatch(r"[A-Za-z0-9+/]{22}", cookie)

        second = server.move("/data/b", "/data/c")
        frames = await stream.take(3)
        assert [(f.data["subscription"], f.data["event"]) for f in frames] == [
            (b, {"mask": ["IN_MOVE_SELF", "IN_ISDIR"]}),
            (top, {"name": "b", "cookie": second, "mask": ["IN_MOVED_FROM", "IN_ISDIR"]}),
            (top, {"name": "c", "cookie": second, "mask": ["IN_MOVED_TO", "IN_ISDIR"]}),
        ]
        assert second != cookie
        server.upload("/data/c/z.h5", 1)  # the watch on "/data/b" followed the inode
        (frame,) = await stream.take(1)
        assert inotify(frame) == ("z.h5", ["IN_CREATE"])
        assert frame.data["subscription"] == b
    assert server.subscription(b).path == "/data/c"


async def test_rmdir_gives_delete_self_then_ignored_and_closes_the_subscription(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    server.mkdir("/data/sub", silent=True)
    channel = await new_channel(session, server)
    top = await watch(session, channel, "/data")
    sub = await watch(session, channel, "/data/sub")
    async with open_stream(session, channel) as stream:
        server.rmdir("/data/sub")
        frames = await stream.take(4)
        assert [(f.event, f.id, f.data) for f in frames] == [
            (
                "inotify",
                "0",
                {"event": {"mask": ["IN_DELETE_SELF", "IN_ISDIR"]}, "subscription": sub},
            ),
            ("SYSTEM", None, {"type": "SUBSCRIPTION_CLOSED", "subscription": sub}),
            ("inotify", "1", {"event": {"mask": ["IN_IGNORED"]}, "subscription": sub}),
            (
                "inotify",
                "2",
                {"event": {"name": "sub", "mask": ["IN_DELETE", "IN_ISDIR"]}, "subscription": top},
            ),
        ]
    async with session.get(sub) as response:
        assert response.status == 404
    async with session.get(f"{channel}/subscriptions") as response:
        assert await response.json() == [top]


async def test_flags_filter_events_but_ignored_and_overflow_always_arrive(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    response = await subscribe(session, channel, "/data", ["IN_CLOSE_WRITE", "IN_MOVE"])
    location = response.headers["Location"]
    async with open_stream(session, channel) as stream:
        server.upload("/data/f.h5", 1)
        server.mkdir("/data/d")  # IN_CREATE: not selected
        server.move("/data/f.h5", "/data/g.h5")
        frames = await stream.take(3)
        assert [inotify(f) for f in frames] == [
            ("f.h5", ["IN_CLOSE_WRITE"]),
            ("f.h5", ["IN_MOVED_FROM"]),
            ("g.h5", ["IN_MOVED_TO"]),
        ]
        server.overflow()
        (frame,) = await stream.take(1)
        assert frame.data == {"event": {"mask": ["IN_Q_OVERFLOW"]}, "subscription": location}
        async with session.delete(location) as deleted:
            assert deleted.status == 204
        ignored, closed = await stream.take(2)
        assert ignored.data == {"event": {"mask": ["IN_IGNORED"]}, "subscription": location}
        assert closed == SseFrame(
            "SYSTEM", None, {"type": "SUBSCRIPTION_CLOSED", "subscription": location}
        )
        server.upload("/data/h.h5", 1)  # no subscription left: nothing more
        server.overflow()
    assert server.channel(channel).next_event_id == 5


# --- resuming and ending streams ------------------------------------------------------------------


async def test_last_event_id_resumes_without_gap_or_duplicate(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        server.upload("/data/one.h5", 1)
        seen = await stream.take(5)
    last = seen[-1].id
    assert last == "4"
    live = server.channel(channel)
    await wait_until(lambda: not live.connected, 2, "the reader gone", interval=0.005)
    server.upload("/data/two.h5", 1)  # while nobody reads: buffered
    async with open_stream(session, channel, last_event_id=last) as stream:
        replayed = await stream.take(5)
        assert [f.id for f in replayed] == ["5", "6", "7", "8", "9"]
        assert {inotify(f)[0] for f in replayed} == {"two.h5"}
        server.mkdir("/data/live")
        (frame,) = await stream.take(1)
        assert frame.id == "10"
    assert server.requests[-1].last_event_id == "4"
    # without Last-Event-ID nothing is replayed: only what happens from now on
    async with open_stream(session, channel) as stream:
        server.delete("/data/one.h5")
        (frame,) = await stream.take(1)
        assert (frame.id, inotify(frame)) == ("11", ("one.h5", ["IN_DELETE"]))


async def test_event_loss_when_the_resume_point_has_left_the_buffer(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        server.mkdir("/data/first")
        (frame,) = await stream.take(1)
    assert frame.id == "0"
    live = server.channel(channel)
    await wait_until(lambda: not live.connected, 2, "the reader gone", interval=0.005)
    server.upload("/data/a.h5", 1)
    server.upload("/data/b.h5", 1)  # ids 1..10: the 8-event buffer keeps 3..10
    assert live.buffered_ids == list(range(3, 11))
    async with open_stream(session, channel, last_event_id="0") as stream:
        (loss,) = await stream.take(1)
        assert loss == SseFrame("SYSTEM", None, {"type": "EVENT_LOSS"})
        server.mkdir("/data/after")
        (frame,) = await stream.take(1)  # dCache replays nothing after EVENT_LOSS
        assert (frame.id, inotify(frame)) == ("11", ("after", ["IN_CREATE", "IN_ISDIR"]))
    assert live.buffered_ids == [11]

    server.lose_events()
    async with open_stream(session, channel, last_event_id="11") as stream:
        (loss,) = await stream.take(1)
        assert loss.data == {"type": "EVENT_LOSS"}


async def test_a_second_reader_ends_the_first_with_competing_client(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    await watch(session, channel, "/data")
    async with open_stream(session, channel) as first, open_stream(session, channel) as second:
        (frame,) = await first.take(1)
        assert frame == SseFrame("SYSTEM", None, {"type": "COMPETING_CLIENT"})
        assert await first.at_end()
        server.mkdir("/data/x")
        (frame,) = await second.take(1)
        assert inotify(frame) == ("x", ["IN_CREATE", "IN_ISDIR"])


async def test_shutdown_ends_streams_and_forgets_every_channel(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    subscription = await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        server.shutdown()
        (frame,) = await stream.take(1)
        assert frame == SseFrame("SYSTEM", None, {"type": "SHUTDOWN"})
        assert await stream.at_end()
    for url in (channel, subscription):
        async with session.get(url, headers=JSON) as response:
            assert response.status == 404
    async with session.get(f"{server.url}/api/v1/events/channels") as response:
        assert await response.json() == []
    assert CHANNEL_URL.match(await new_channel(session, server))


async def test_cut_streams_and_silently_dropped_channels(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        assert server.disconnect_readers(abort=True) == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await stream.next()
    assert channel.rsplit("/", 1)[1] in server.channels  # the channel survives
    async with open_stream(session, channel) as stream:
        assert server.disconnect_readers() == 1
        assert await stream.at_end()
    async with open_stream(session, channel) as stream:
        server.drop_channel(channel)
        assert await stream.at_end()  # no SYSTEM event: it just ends
    async with session.get(channel, headers=SSE) as response:
        assert response.status == 404

    channel = await new_channel(session, server)
    subscription = await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        async with session.delete(channel) as response:
            assert response.status == 204
        (frame,) = await stream.take(1)
        assert frame == SseFrame(
            "SYSTEM", None, {"type": "SUBSCRIPTION_CLOSED", "subscription": subscription}
        )
        assert await stream.at_end()


# --- namespace ------------------------------------------------------------------------------------


async def test_namespace_entries_and_listings_have_dcaches_shape(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    server.upload("/data/b.h5", 123, silent=True)
    server.mkdir("/data/a", silent=True)
    server.upload("/data/notes.txt", 7, silent=True)
    namespace = f"{server.url}/api/v1/namespace"
    async with session.get(f"{namespace}/data", params={"children": "true"}) as response:
        assert response.status == 200
        listing = await response.json()
    assert list(listing) == [
        "fileMimeType",
        "children",
        "fileType",
        "pnfsId",
        "nlink",
        "mtime",
        "creationTime",
        "size",
        "mode",
    ]
    assert listing["fileMimeType"] == "application/vnd.dcache.folder"
    assert listing["fileType"] == "DIR"
    assert listing["nlink"] == 3
    assert [(c["fileName"], c["fileType"]) for c in listing["children"]] == [
        ("a", "DIR"),
        ("b.h5", "REGULAR"),
        ("notes.txt", "REGULAR"),
    ]
    b = listing["children"][1]
    assert b["size"] == 123
    assert b["fileMimeType"] == "application/octet-stream"
    assert listing["children"][2]["fileMimeType"] == "text/plain"
    assert re.fullmatch(r"[0-9A-F]{36}", b["pnfsId"])
    assert isinstance(b["mtime"], int)
    assert isinstance(b["creationTime"], int)

    async with session.get(f"{namespace}/data/b.h5", params={"children": "true"}) as response:
        entry = await response.json()
    assert entry == {k: v for k, v in b.items() if k != "fileName"}
    async with session.get(namespace) as response:
        assert (await response.json())["pnfsId"] == "000000000000000000000000000000000000"
    async with session.get(f"{namespace}/data/missing.h5") as response:
        assert response.status == 404
        assert await response.json() == {"errors": [{"message": "Not Found", "status": "404"}]}


async def test_listing_a_watched_directory_sends_open_and_close_nowrite(
    server: DCacheTestServer, session: aiohttp.ClientSession
) -> None:
    channel = await new_channel(session, server)
    top = await watch(session, channel, "/")
    data = await watch(session, channel, "/data")
    async with open_stream(session, channel) as stream:
        async with session.get(f"{server.url}/api/v1/namespace/data?children=true") as response:
            assert response.status == 200
        frames = await stream.take(4)
        assert [(f.data["subscription"], f.data["event"]) for f in frames] == [
            (data, {"mask": ["IN_OPEN", "IN_ISDIR"]}),
            (top, {"name": "data", "mask": ["IN_OPEN", "IN_ISDIR"]}),
            (data, {"mask": ["IN_CLOSE_NOWRITE", "IN_ISDIR"]}),
            (top, {"name": "data", "mask": ["IN_CLOSE_NOWRITE", "IN_ISDIR"]}),
        ]


def test_the_command_line_explains_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testkit.dcache_server", "--help"],
        cwd=Path(__file__).resolve().parents[2],  # testkit/ is importable from the checkout
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "STANDS IN FOR A dCACHE FRONTEND" in result.stdout
    assert "--token" in result.stdout
    assert "--port" in result.stdout
