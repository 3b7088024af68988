"""The dCache storage-events bridge against the dCache frontend test server (which stands in
for dCache: ``testkit.dcache_server``) and the real Kafka broker: what it appends to
the raw topic, normalized exactly as the ingest agent does, must be the canonical events a
careful operator expects — every file's completion once, moves as delete + create, nothing
lost across disconnects, overflows, lost channels and restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streamapp.bridge.config import BridgeConfig, FrontendConfig
from streamapp.bridge.dcache_events import run_bridges
from streamapp.clients.dcache import ChannelGoneError, DCacheClient, TokenFile
from streamapp.domain.normalize import Normalized, Rejected, normalize
from testkit.dcache_server import API, DCacheTestServer
from testkit.helpers import wait_until
from tests.integration.conftest import ROOT, TopicNames

pytestmark = pytest.mark.integration

SOURCE = "dcache://dcache.desy.example"
TOKEN = "bridge-token-1"
ROOT_DIR = "/data/alpha"


@pytest.fixture
async def frontend() -> AsyncIterator[DCacheTestServer]:
    server = DCacheTestServer({TOKEN: "bridge"}, ring_buffer_size=64)
    await server.start()
    server.mkdir(ROOT_DIR, parents=True)
    yield server
    await server.stop()


@pytest.fixture
def config(frontend: DCacheTestServer, topics: TopicNames, tmp_path: Path) -> BridgeConfig:
    token = tmp_path / "dcache.token"
    token.write_text(TOKEN + "\n")
    return BridgeConfig(
        raw_topic=f"{topics.prefix}.dcache.events",
        state_topic=f"{topics.prefix}.dcache.state",
        frontends=(
            FrontendConfig(
                name="desy",
                url=frontend.url,
                token_file=token,
                roots=(ROOT_DIR,),
                max_watches=50,
                competing_backoff_s=2,
                root_retry_s=1,
            ),
        ),
    )


class Bridge:
    """``run_bridges`` in this process (the test server shares its event loop)."""

    def __init__(self, config: BridgeConfig, bootstrap: str) -> None:
        self.config, self.bootstrap = config, bootstrap
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Bridge:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_bridges(self.config, self.bootstrap, self.stop))
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def bridge(config: BridgeConfig, bootstrap: str) -> AsyncIterator[Bridge]:
    running = Bridge(config, bootstrap)
    yield running
    if running.task is not None and not running.task.done():
        await running.close()


def watched(server: DCacheTestServer) -> set[str]:
    return server.watched_paths()


async def until_started(server: DCacheTestServer, timeout: float = 30) -> None:  # noqa: ASYNC109
    """The bridge watches the root and has listed it: its start-up listing records what exists
    without reporting it, so a file made before that listing would count as pre-existing (the
    test server answers a listing in the step that records its request)."""
    listing = f"{API}/namespace{ROOT_DIR}"

    def listed() -> bool:
        return any(
            r.method == "GET" and r.path == listing and "children=true" in r.query
            for r in server.requests
        )

    await wait_until(
        lambda: ROOT_DIR in watched(server) and listed(),
        timeout,
        "the start-up listing",
        interval=0.05,
    )


async def events(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], settle: float = 1.5
) -> list[dict[str, Any]]:
    """Canonical events from the raw topic (normalized as the ingest agent does) once ``done``
    holds and nothing more arrived for ``settle`` seconds (a late duplicate would show)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    deadline, quiet_since = time.monotonic() + 60, time.monotonic()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    for outcome in normalize(record.value, SOURCE):
                        assert not isinstance(outcome, Rejected), (outcome, record.value)
                        if isinstance(outcome, Normalized):
                            found.append(dict(outcome.event))
                    quiet_since = time.monotonic()
            if done(found) and time.monotonic() - quiet_since >= settle:
                return found
            assert time.monotonic() < deadline, summary(found)
    finally:
        await consumer.stop()


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((e["type"].rsplit(".", 1)[-1], e["subject"]) for e in found)


def created(found: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["subject"] for e in found if e["type"] == "storage.object.created")


def deleted(found: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["subject"] for e in found if e["type"] == "storage.object.deleted")


async def test_a_tree_built_while_watched_yields_each_file_once(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    """Nested directories made and filled at once (files land before the bridge can watch
    their directory: the listing catches those), then moves and deletions."""
    bridge.start()
    await until_started(frontend)
    expected = set()
    for run in range(3):
        frontend.mkdir(f"{ROOT_DIR}/run{run}")
        for scan in range(2):
            directory = f"{ROOT_DIR}/run{run}/scan{scan}"
            frontend.mkdir(directory)
            frontend.mkdir(f"{directory}/deeper")
            for n in range(4):
                frontend.upload(f"{directory}/f{n}.h5", size=100 + n, attrib_first=n % 2 == 0)
                frontend.upload(f"{directory}/deeper/g{n}.h5", size=200 + n)
                expected |= {f"{directory}/f{n}.h5", f"{directory}/deeper/g{n}.h5"}
        await asyncio.sleep(0.05)  # let the bridge watch some while others are still filled
    found = await events(bootstrap, config.raw_topic, lambda f: set(created(f)) >= expected)
    assert created(found) == dict.fromkeys(expected, 1), summary(found)
    assert not deleted(found)
    sizes = {e["subject"]: e["data"]["size"] for e in found}
    assert sizes[f"{ROOT_DIR}/run1/scan0/f3.h5"] == 103
    assert sizes[f"{ROOT_DIR}/run2/scan1/deeper/g2.h5"] == 202
    assert len(watched(frontend)) == 1 + 3 * 5  # every directory, one watch each

    # a file moved within the tree, one deleted, a directory moved, one file written into the
    # moved directory afterwards (its watch followed it), an empty directory removed
    frontend.move(f"{ROOT_DIR}/run0/scan0/f0.h5", f"{ROOT_DIR}/run0/f0-renamed.h5")
    frontend.delete(f"{ROOT_DIR}/run0/scan0/f1.h5")
    frontend.move(f"{ROOT_DIR}/run1", f"{ROOT_DIR}/run1-done")
    frontend.upload(f"{ROOT_DIR}/run1-done/scan0/late.h5", size=7)
    frontend.mkdir(f"{ROOT_DIR}/empty")
    frontend.rmdir(f"{ROOT_DIR}/empty")
    moved_files = sorted(p for p in expected if p.startswith(f"{ROOT_DIR}/run1/"))
    renamed = [p.replace("/run1/", "/run1-done/", 1) for p in moved_files]

    def complete(f: list[dict[str, Any]]) -> bool:
        return f"{ROOT_DIR}/run1-done/scan0/late.h5" in created(f) and set(deleted(f)) >= set(
            moved_files
        )

    found = await events(bootstrap, config.raw_topic, complete)
    after = found[len(expected) :]
    assert deleted(after) == dict.fromkeys(
        [f"{ROOT_DIR}/run0/scan0/f0.h5", f"{ROOT_DIR}/run0/scan0/f1.h5", *moved_files], 1
    ), summary(after)
    assert created(after) == dict.fromkeys(
        [f"{ROOT_DIR}/run0/f0-renamed.h5", *renamed, f"{ROOT_DIR}/run1-done/scan0/late.h5"], 1
    ), summary(after)
    halves = [e["data"]["move"] for e in after if "move" in e["data"]]
    assert sorted(h["role"] for h in halves) == ["from", "to"]
    assert halves[0]["cookie"] == halves[1]["cookie"]
    # the moved directories are still watched by the bridge: a file written there now is
    # reported by its own event (not by a listing)
    frontend.upload(f"{ROOT_DIR}/run1-done/scan1/deeper/later.h5", size=9)
    found = await events(
        bootstrap,
        config.raw_topic,
        lambda f: f"{ROOT_DIR}/run1-done/scan1/deeper/later.h5" in created(f),
    )
    assert found[-1]["subject"] == f"{ROOT_DIR}/run1-done/scan1/deeper/later.h5"
    assert found[-1]["data"]["operation"] == "inotify:IN_CLOSE_WRITE"
    assert created(found)[found[-1]["subject"]] == 1
    assert f"{ROOT_DIR}/empty" not in watched(frontend)
    assert f"{ROOT_DIR}/run1-done/scan0" in watched(frontend)
    assert f"{ROOT_DIR}/run1/scan0" not in watched(frontend)


async def test_a_disconnect_mid_stream_resumes_without_gap_or_duplicate(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    bridge.start()
    await until_started(frontend)
    paths = [f"{ROOT_DIR}/f{n:03d}.h5" for n in range(40)]
    for n, path in enumerate(paths):
        frontend.upload(path, size=n)
        if n in (10, 25):
            await asyncio.sleep(0.1)
            assert frontend.disconnect_readers(abort=n == 25) == 1
    found = await events(bootstrap, config.raw_topic, lambda f: set(created(f)) >= set(paths))
    assert created(found) == dict.fromkeys(paths, 1)
    resumed = [r for r in frontend.requests if r.method == "GET" and r.last_event_id]
    assert len(resumed) >= 2, "the bridge reconnected without Last-Event-ID"
    assert not any(
        r.method == "POST" and r.path.endswith("/channels") for r in frontend.requests[1:]
    )


async def test_events_lost_from_the_buffer_are_found_by_listing(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    """The bridge is locked out (its token refused) while 60 files are written: 300 events,
    far past the 64-event ring buffer. On its return dCache says EVENT_LOSS; the listing finds
    every file written meanwhile, and one deleted meanwhile is reported deleted."""
    bridge.start()
    await until_started(frontend)
    frontend.upload(f"{ROOT_DIR}/before.h5", size=1)
    frontend.upload(f"{ROOT_DIR}/doomed.h5", size=2)
    await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 2)
    frontend.set_tokens({"someone-else": "other"})
    frontend.disconnect_readers()
    gap = [f"{ROOT_DIR}/gap-{n:02d}.h5" for n in range(60)]
    for n, path in enumerate(gap):
        frontend.upload(path, size=n)
    frontend.delete(f"{ROOT_DIR}/doomed.h5")
    frontend.set_tokens({TOKEN: "bridge"})

    def complete(f: list[dict[str, Any]]) -> bool:
        return set(created(f)) >= set(gap) and f"{ROOT_DIR}/doomed.h5" in deleted(f)

    found = await events(bootstrap, config.raw_topic, complete)
    assert created(found) == dict.fromkeys(
        [*gap, f"{ROOT_DIR}/before.h5", f"{ROOT_DIR}/doomed.h5"], 1
    )
    assert deleted(found) == {f"{ROOT_DIR}/doomed.h5": 1}
    ops = {e["data"]["operation"] for e in found if e["subject"] in gap}
    assert ops == {"resync:EVENT_LOSS"}


async def test_an_overflow_and_a_vanished_channel_resynchronise(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    bridge.start()
    await until_started(frontend)
    frontend.upload(f"{ROOT_DIR}/seen.h5", size=1)
    frontend.upload(f"{ROOT_DIR}/quiet-1.h5", size=5, silent=True)  # its events were dropped
    frontend.overflow()
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 2)
    assert created(found) == {f"{ROOT_DIR}/seen.h5": 1, f"{ROOT_DIR}/quiet-1.h5": 1}
    first_channel = next(iter(frontend.channels))

    frontend.shutdown()  # the frontend restarts: every channel is gone
    frontend.upload(f"{ROOT_DIR}/quiet-2.h5", size=6, silent=True)
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 3)
    assert created(found)[f"{ROOT_DIR}/quiet-2.h5"] == 1
    await wait_until(
        lambda: ROOT_DIR in watched(frontend), 30, "the new channel's root watch", interval=0.05
    )
    assert first_channel not in frontend.channels
    frontend.upload(f"{ROOT_DIR}/after.h5", size=7)
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 4)
    assert set(created(found).values()) == {1}


async def test_a_competing_client_is_reported_not_fought(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    """Someone else reads the bridge's channel: the bridge stays away for competing_backoff
    (2 s here) instead of kicking them, then resumes; no event is lost meanwhile."""
    import aiohttp  # noqa: PLC0415 - only this test plays the other client

    bridge.start()
    await until_started(frontend)
    frontend.upload(f"{ROOT_DIR}/before.h5", size=1)
    await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 1, settle=0.2)
    channel_url = next(iter(frontend.channels.values())).url
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            channel_url,
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"},
        )
        taken = time.monotonic()
        frontend.upload(f"{ROOT_DIR}/during.h5", size=1)
        await asyncio.sleep(1)
        streams = [
            r for r in frontend.requests if r.method == "GET" and r.accept == "text/event-stream"
        ]
        assert len(streams) == 2, "the bridge took the channel back at once"
        response.close()
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 2)
    assert created(found) == {f"{ROOT_DIR}/before.h5": 1, f"{ROOT_DIR}/during.h5": 1}
    assert time.monotonic() - taken >= 2
    # replayed from dCache's buffer after the bridge's own last id, not found by listing
    assert found[-1]["data"]["operation"] == "inotify:IN_CLOSE_WRITE"


async def test_a_restarted_bridge_continues_from_its_stored_place(
    frontend: DCacheTestServer,
    config: BridgeConfig,
    bootstrap: str,
    topics: TopicNames,
    tmp_path: Path,
) -> None:
    """``streamapp dcache-events`` as a process: stopped (SIGTERM) and later killed (SIGKILL)
    while files arrive, then restarted: it resumes the same channel with Last-Event-ID and
    every file is reported (exactly once after the clean stop; after the SIGKILL some perhaps
    twice, none lost)."""
    frontend_config = config.frontends[0]
    toml = tmp_path / "bridge.toml"
    toml.write_text(
        f"""raw_topic = "{config.raw_topic}"
state_topic = "{config.state_topic}"

[[frontends]]
name = "desy"
url = "{frontend.url}"
token_file = "{frontend_config.token_file}"
roots = ["{ROOT_DIR}"]
"""
    )
    env = {**os.environ, "STREAMAPP_BROKER": f"kafka://{bootstrap}", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "bridge.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "streamapp", "dcache-events", "--config", str(toml)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    process = start()
    try:
        await until_started(frontend, timeout=60)
        first = [f"{ROOT_DIR}/a{n:02d}.h5" for n in range(20)]
        for path in first:
            frontend.upload(path, size=1)
        await events(bootstrap, config.raw_topic, lambda f: set(created(f)) >= set(first))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, log.read_text()[-3000:]
        second = [f"{ROOT_DIR}/b{n:02d}.h5" for n in range(20)]
        for path in second:  # while no bridge runs: the channel buffers them
            frontend.upload(path, size=2)
        process = start()
        found = await events(
            bootstrap, config.raw_topic, lambda f: set(created(f)) >= set(first + second)
        )
        assert created(found) == dict.fromkeys(first + second, 1)  # a clean stop: exactly once
        third = [f"{ROOT_DIR}/c{n:03d}.h5" for n in range(100)]
        for n, path in enumerate(third):
            frontend.upload(path, size=3)
            if n == 50:
                await asyncio.sleep(0.3)
                process.kill()
                await asyncio.to_thread(process.wait, 30)
                process = start()
        found = await events(bootstrap, config.raw_topic, lambda f: set(created(f)) >= set(third))
        # none lost; repeated at most what came after the last checkpoint before the kill
        # (replayed from the channel with the same ids, or found again by listing after the
        # kill let dCache's 64-event buffer overflow)
        again = created(found)
        assert all(again[path] >= 1 for path in third)
        assert sum(again[path] - 1 for path in third) <= 51
        channels = [
            r
            for r in frontend.requests
            if r.method == "POST" and r.path == "/api/v1/events/channels"
        ]
        assert len(channels) == 1, "a restart made a new channel instead of resuming"
        resumed = [
            r.last_event_id for r in frontend.requests if r.method == "GET" and r.last_event_id
        ]
        assert len(resumed) >= 2
    finally:
        process.kill()
        process.wait(timeout=30)
    text = log.read_text()
    assert "resuming from channel" in text
    assert TOKEN not in text  # the token never reaches the log


async def test_a_rotated_token_is_read_from_its_file(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    """dCache accepts only a new token from now on; the operator's token refresher rewrites
    the file. The bridge picks it up without a restart and nothing is lost meanwhile."""
    bridge.start()
    await until_started(frontend)
    frontend.set_tokens({"bridge-token-2": "bridge"})
    frontend.disconnect_readers()
    frontend.upload(f"{ROOT_DIR}/while-refused.h5", size=1)
    await asyncio.sleep(1)
    config.frontends[0].token_file.write_text("bridge-token-2\n")
    frontend.upload(f"{ROOT_DIR}/after-refresh.h5", size=2)
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 2)
    assert created(found) == {f"{ROOT_DIR}/while-refused.h5": 1, f"{ROOT_DIR}/after-refresh.h5": 1}
    refused = [r for r in frontend.requests if r.status == 401]
    assert refused, "the old token was never refused: the test proved nothing"
    assert any(r.token == "bridge-token-2" for r in frontend.requests)


async def test_the_watch_limit_is_a_clear_error_not_a_crash(
    frontend: DCacheTestServer,
    config: BridgeConfig,
    bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """max_watches = 3: the root and two directories are watched; the third new directory is
    refused with an error naming it and the setting, and the bridge carries on."""
    limited = replace(config, frontends=(replace(config.frontends[0], max_watches=3),))
    running = Bridge(limited, bootstrap).start()
    try:
        await until_started(frontend)
        for name in ("one", "two", "three"):
            frontend.mkdir(f"{ROOT_DIR}/{name}")
            await asyncio.sleep(0.3)
        await wait_until(
            lambda: "watch limit" in caplog.text, 30, "the watch-limit error", interval=0.05
        )
        assert f"{ROOT_DIR}/three" in caplog.text
        assert "max_watches" in caplog.text
        assert watched(frontend) == {ROOT_DIR, f"{ROOT_DIR}/one", f"{ROOT_DIR}/two"}
        frontend.upload(f"{ROOT_DIR}/two/still-working.h5", size=1)
        found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 1)
        assert created(found) == {f"{ROOT_DIR}/two/still-working.h5": 1}
    finally:
        await running.close()


async def test_a_silent_stream_ends_quietly_for_a_reconnect(
    frontend: DCacheTestServer, config: BridgeConfig
) -> None:
    """No frame for ``stream_idle_s``: the stream ends without an error (the bridge resumes
    with Last-Event-ID), so a half-open connection cannot hang it for ever."""
    client = DCacheClient(
        frontend.url, TokenFile(config.frontends[0].token_file), stream_idle_s=0.5
    )
    try:
        channel = await client.create_channel("idle-test")
        started = time.monotonic()
        frames = [frame async for frame in client.stream(channel, None)]
        assert frames == []
        assert 0.4 < time.monotonic() - started < 10
        frontend.drop_channel(channel)
        with pytest.raises(ChannelGoneError):
            async for _ in client.stream(channel, None):
                pass
    finally:
        await client.close()


async def test_a_root_deleted_and_made_again_is_watched_again(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    bridge.start()
    await until_started(frontend)
    frontend.upload(f"{ROOT_DIR}/x.h5", size=1)
    await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 1, settle=0.2)
    frontend.delete(f"{ROOT_DIR}/x.h5")
    frontend.rmdir(ROOT_DIR)
    await wait_until(
        lambda: ROOT_DIR not in watched(frontend), 30, "the root watch to end", interval=0.05
    )
    frontend.mkdir(ROOT_DIR)
    frontend.upload(f"{ROOT_DIR}/y.h5", size=2)  # before the bridge looks again: listed
    await wait_until(
        lambda: ROOT_DIR in watched(frontend), 30, "the root watched again", interval=0.05
    )
    frontend.upload(f"{ROOT_DIR}/z.h5", size=3)  # after: its own event
    found = await events(bootstrap, config.raw_topic, lambda f: len(created(f)) == 3)
    assert created(found) == {f"{ROOT_DIR}/{n}.h5": 1 for n in "xyz"}
    assert deleted(found) == {f"{ROOT_DIR}/x.h5": 1}


async def test_hostile_frames_cost_one_frame_never_the_bridge(
    frontend: DCacheTestServer, bridge: Bridge, config: BridgeConfig, bootstrap: str
) -> None:
    """Frames no genuine dCache sends — a 300 kB line (past aiohttp's line limit), a frame past
    the bridge's 1 MiB bound, bytes that are not UTF-8, JSON 2,000 levels deep, an id of 5,000
    digits, a name that is not one component — neither stop nor stall the bridge: a file
    uploaded after them is reported, and one uploaded while an unreadable frame hid its event
    is found by the listing that frame causes."""
    bridge.start()
    await until_started(frontend)
    [channel] = frontend.channels.values()
    await wait_until(lambda: channel.reader is not None, 30, "the stream", interval=0.05)
    assert channel.reader is not None
    root_subscription = next(s.url for s in channel.subscriptions.values() if s.path == ROOT_DIR)

    def inotify(name: str, frame_id: bytes = b"9000") -> bytes:
        data = b'{"event": {"name": "%s", "mask": ["IN_CLOSE_WRITE"]}, "subscription": "%s"}' % (
            name.encode(),
            root_subscription.encode(),
        )
        return b"event: inotify\nid: %s\ndata: %s\n\n" % (frame_id, data)

    # the event of this upload is lost: only the listing after the unreadable frame finds it
    channel.closed, hidden = True, f"{ROOT_DIR}/hidden.h5"
    frontend.upload(hidden, size=7)
    channel.closed = False
    for frame in (
        inotify("x" * 300_000),  # reported, then refused by the normalizer (path bounds)
        b"event: inotify\nid: 9001\ndata: " + b"y" * 1_100_000 + b"\n\n",
        b'event: inotify\nid: 9002\ndata: {"event": "\xff\xfe"}\n\n',
        b"event: inotify\nid: 9003\ndata: " + b"[" * 2000 + b"]" * 2000 + b"\n\n",
        inotify("f.h5", frame_id=b"9" * 5000),
        inotify("a/b"),
        inotify(".."),
    ):
        channel.reader.send(frame)
    after = f"{ROOT_DIR}/after.h5"
    frontend.upload(after, size=3)

    consumer = AIOKafkaConsumer(
        config.raw_topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    outcomes: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    outcomes += normalize(record.value, SOURCE)
            subjects = {o.event["subject"] for o in outcomes if isinstance(o, Normalized)}
            if {hidden, after} <= subjects:
                break
    finally:
        await consumer.stop()
    subjects = {o.event["subject"] for o in outcomes if isinstance(o, Normalized)}
    assert {hidden, after} <= subjects, outcomes
    assert bridge.task is not None
    assert not bridge.task.done()
    rejected = [o.reason for o in outcomes if isinstance(o, Rejected)]
    assert any("4096-byte limit" in reason for reason in rejected), rejected
