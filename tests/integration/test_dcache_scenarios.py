"""Held-out-style scenarios for the dCache storage-events bridge: one test per scenario.

Each scenario gets a fresh dCache frontend — the test server ``testkit.dcache_server``,
which stands in for dCache here (a ring buffer of 48 events per channel) — fresh topics on the
real broker, and the bridge running in this process (``run_bridges``). Every record the bridge
appends to the raw topic is normalized as the ingest agent does. A scenario changes the
namespace (files, moves, directories made and removed, overflows, lost events, lost channels,
disconnects, restarts) and records what a careful operator expects; then it is checked that

- the multiset of canonical ``(type, path)`` equals the expected one, give or take the optional
  extras a scenario tolerates (say, the intermediate name of a quick double rename);
- the events of each path alternate created/deleted, starting with created (an overwriting
  move excepted: dCache says nothing of the file it replaces);
- no two distinct events share an id (a consumer that dedupes by id would lose one);
- the normalizer rejects no record, and the bridge does not stop by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.bridge.config import BridgeConfig, FrontendConfig
from streamapp.bridge.dcache_events import run_bridges
from streamapp.domain.normalize import Normalized, Rejected, normalize
from testkit.dcache_server import DCacheTestServer
from tests.integration.conftest import TopicNames

pytestmark = pytest.mark.integration

SOURCE = "dcache://dcache.review.example"
TOKEN = "review-token"
R = "/data/alpha"  # the bridge's root
OUT = "/data/outside"  # not watched: moves in and out of the tree
RING = 48
C, D = "created", "deleted"
SCENARIO_TIMEOUT_S = 180
QUIET_S = 1.5  # nothing more for this long after the expected events: a late duplicate shows


def watched(server: DCacheTestServer) -> set[str]:
    return server.watched_paths()


def listings(server: DCacheTestServer, path: str) -> int:
    """How many listings of ``path`` the frontend has answered."""
    want = "/api/v1/namespace" + quote(path)
    return sum(
        1
        for r in server.requests
        if r.path == want and r.query == "children=true" and r.status is not None
    )


async def until(condition: Callable[[], bool], timeout: float = 20) -> bool:  # noqa: ASYNC109 - a deadline for the whole wait
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def when(condition: Callable[[], bool], timeout: float = 20) -> None:  # noqa: ASYNC109 - a deadline for the whole wait
    """Busy-wait (one loop tick at a time): act in the bridge's subscribe -> list window."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - the test server has no event for this
        await asyncio.sleep(0)


def kind(event: dict[str, Any]) -> str:
    return str(event["type"]).rsplit(".", 1)[-1]


class Ctx:
    """One scenario: its frontend, topics, bridge, the events collected and those expected."""

    def __init__(self, bootstrap: str, prefix: str, token_file: Path) -> None:
        self.bootstrap = bootstrap
        self.raw_topic = f"{prefix}.dcache.events"
        self.state_topic = f"{prefix}.dcache.state"
        self.token_file = token_file
        self.server = DCacheTestServer({TOKEN: "bridge"}, ring_buffer_size=RING)
        self.required: Counter[tuple[str, str]] = Counter()
        self.optional: Counter[tuple[str, str]] = Counter()
        self.no_lifecycle: set[str] = set()  # paths exempt from the created/deleted alternation
        self.found: list[dict[str, Any]] = []
        self.rejected: list[tuple[Rejected, Any]] = []
        self.last_record = time.monotonic()
        self.timed_out = False
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # --- expectations ------------------------------------------------------------------------

    def created(self, path: str, n: int = 1) -> None:
        self.required[(C, path)] += n

    def deleted(self, path: str, n: int = 1) -> None:
        self.required[(D, path)] += n

    def maybe(self, event_kind: str, path: str, n: int = 1) -> None:
        self.optional[(event_kind, path)] += n

    def up(
        self,
        path: str,
        size: int,
        *,
        via_upload_dir: bool = False,
        attrib_first: bool = False,
        modifies: int = 1,
    ) -> None:
        """Upload a file; under the root it is expected created."""
        self.server.upload(
            path,
            size=size,
            via_upload_dir=via_upload_dir,
            attrib_first=attrib_first,
            modifies=modifies,
        )
        if path.startswith(R + "/"):
            self.created(path)

    # --- the bridge ----------------------------------------------------------------------------

    @property
    def config(self) -> BridgeConfig:
        return BridgeConfig(
            raw_topic=self.raw_topic,
            state_topic=self.state_topic,
            frontends=(
                FrontendConfig(
                    name="review",
                    url=self.server.url,
                    token_file=self.token_file,
                    roots=(R,),
                    max_watches=200,
                    competing_backoff_s=2,
                ),
            ),
        )

    async def start_bridge(self) -> None:
        """Start the bridge and wait until it watches the root and has listed it."""
        self.stop = asyncio.Event()
        task = self.task = asyncio.create_task(run_bridges(self.config, self.bootstrap, self.stop))
        ready = await until(
            lambda: (R in watched(self.server) and listings(self.server, R) > 0) or task.done(),
            30,
        )
        if task.done():
            task.result()  # its error, if it failed
            raise AssertionError("the bridge stopped while starting")
        assert ready, "the bridge did not watch and list the root in 30 s"

    async def stop_bridge(self) -> None:
        self.stop.set()
        if self.task is not None:
            task, self.task = self.task, None
            await asyncio.wait_for(task, 30)

    async def listed(self, *directories: str) -> None:
        """Wait until the bridge watches these new directories and has listed them."""
        ready = await until(
            lambda: all(
                d in watched(self.server) and listings(self.server, d) > 0 for d in directories
            )
        )
        assert ready, f"the bridge did not watch and list {directories} in 20 s"

    async def collect(self) -> None:
        """Normalize every record of the raw topic (one partition: topic order) into ``found``."""
        consumer = AIOKafkaConsumer(
            self.raw_topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self.last_record = time.monotonic()
                        for outcome in normalize(record.value, SOURCE):
                            if isinstance(outcome, Rejected):
                                self.rejected.append((outcome, record.value))
                            elif isinstance(outcome, Normalized):
                                self.found.append(dict(outcome.event))
        finally:
            await consumer.stop()

    def counter(self) -> Counter[tuple[str, str]]:
        return Counter((kind(e), e["subject"]) for e in self.found)

    async def settle(self, timeout: float = 20) -> None:  # noqa: ASYNC109 - a deadline for the whole wait
        """Wait for every expected event, then until the topic has been quiet for ``QUIET_S``.
        Not an assertion: what is still missing then is reported by ``problems``."""
        if not await until(lambda: not (self.required - self.counter()), timeout):
            self.timed_out = True
        while (quiet := time.monotonic() - self.last_record) < QUIET_S:  # noqa: ASYNC110 - waits for records not to come
            await asyncio.sleep(QUIET_S - quiet)

    # --- the verdict ---------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong with the events collected, for a maintainer to read (empty: all good)."""
        got = self.counter()
        allowed = self.required + self.optional
        missing = self.required - got
        extra = got - allowed
        lines: list[str] = []
        concerned: set[str] = set()  # paths whose events are listed at the end
        if missing:
            lines.append(f"missing: {sorted(missing.elements())}")
            concerned |= {path for _, path in missing}
        duplicated = sorted(key for key in extra if key in allowed)
        if duplicated:
            counts = [(key, f"{got[key]} seen, {allowed[key]} expected") for key in duplicated]
            lines.append(f"duplicated: {counts}")
        new = Counter({key: n for key, n in extra.items() if key not in allowed})
        if new:
            lines.append(f"extra: {sorted(new.elements())}")
        concerned |= {path for _, path in extra}

        life: dict[str, list[str]] = {}
        for e in self.found:
            life.setdefault(e["subject"], []).append(kind(e))
        broken = sorted(
            path
            for path, seq in life.items()
            if path not in self.no_lifecycle
            and any(k != (C if i % 2 == 0 else D) for i, k in enumerate(seq))
        )
        if broken:
            lines.append("lifecycle broken (created/deleted must alternate, created first):")
            lines.extend(f"  {path}: {life[path]}" for path in broken)
            concerned |= set(broken)

        # ids name (type, path) among other things: events sharing one are either a repeated
        # delivery (over-represented above: a duplicate) or distinct events a consumer that
        # dedupes by id would merge into one
        by_id: dict[str, list[dict[str, Any]]] = {}
        for e in self.found:
            by_id.setdefault(e["id"], []).append(e)
        for event_id, events in by_id.items():
            if len(events) > 1 and not any((kind(e), e["subject"]) in extra for e in events):
                shared = [(kind(e), e["subject"], e["data"]["operation"]) for e in events]
                lines.append(
                    f"distinct events share the id {event_id} (a consumer deduping by id "
                    f"loses one): {shared}"
                )
                concerned |= {e["subject"] for e in events}

        if self.rejected:
            lines.append(f"rejected records ({len(self.rejected)}): {self.rejected[:3]}")
        if self.task is not None and self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            lines.append(f"the bridge stopped by itself: {error!r}")
        if lines and self.timed_out:
            lines.insert(0, "(timed out waiting for the expected events)")
        if concerned:
            lines.append("events of the paths concerned, in topic order (type, data.operation):")
            for path in sorted(concerned):
                seq = [
                    (kind(e), e["data"]["operation"]) for e in self.found if e["subject"] == path
                ]
                lines.append(f"  {path}: {seq}")
        return lines


# =============================================================================================
# scenarios: each gets a Ctx whose bridge is running and has watched and listed the root
# =============================================================================================


async def deep_nesting(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/a/b/c/d/e", parents=True)
    c.up(f"{R}/a/x1", 11)
    c.up(f"{R}/a/b/c/x2", 12)
    c.up(f"{R}/a/b/c/d/e/x3", 13)
    await asyncio.sleep(0.05)
    s.mkdir(f"{R}/a/b/c/d/e/f/g", parents=True)
    c.up(f"{R}/a/b/y1", 21)
    c.up(f"{R}/a/b/c/d/e/f/g/y2", 22)
    c.up(f"{R}/a/y3", 23)
    await asyncio.sleep(0.01)
    s.mkdir(f"{R}/h/i/j", parents=True)
    c.up(f"{R}/h/i/j/z1", 31)
    c.up(f"{R}/h/z2", 32)
    await c.settle()
    c.up(f"{R}/a/b/c/d/e/f/g/late", 41)  # its watch exists now
    await c.settle()


async def dir_moved_in_from_outside(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{OUT}/in/sub/deep", parents=True)
    s.upload(f"{OUT}/in/f1", size=1)
    s.upload(f"{OUT}/in/sub/f2", size=2)
    s.upload(f"{OUT}/in/sub/deep/f3", size=3, silent=True)
    s.move(f"{OUT}/in", f"{R}/in")
    c.created(f"{R}/in/f1")
    c.created(f"{R}/in/sub/f2")
    c.created(f"{R}/in/sub/deep/f3")
    c.up(f"{R}/in/sub/late", 4)
    await c.settle()
    c.up(f"{R}/in/sub/deep/later", 5)
    await c.settle()


async def dir_moved_out(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/out/sub", parents=True)
    await c.listed(f"{R}/out", f"{R}/out/sub")
    c.up(f"{R}/out/f1", 1)
    c.up(f"{R}/out/sub/f2", 2)
    await c.settle()
    s.move(f"{R}/out", f"{OUT}/out")
    c.deleted(f"{R}/out/f1")
    c.deleted(f"{R}/out/sub/f2")
    s.upload(f"{OUT}/out/sub/f3", size=3)  # outside: nothing
    s.delete(f"{OUT}/out/f1")  # outside: nothing
    await c.settle()
    c.up(f"{R}/after", 4)
    await c.settle()


async def dir_renamed_twice_quickly(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/d/sub", parents=True)
    await c.listed(f"{R}/d", f"{R}/d/sub")
    c.up(f"{R}/d/f1", 1)
    c.up(f"{R}/d/sub/f2", 2)
    await c.settle()
    s.move(f"{R}/d", f"{R}/e")
    s.move(f"{R}/e", f"{R}/f")
    for p in ("f1", "sub/f2"):
        c.deleted(f"{R}/d/{p}")
        c.created(f"{R}/f/{p}")
        c.maybe(C, f"{R}/e/{p}")
        c.maybe(D, f"{R}/e/{p}")
    c.up(f"{R}/f/sub/late", 3)
    await c.settle()
    c.up(f"{R}/f/f3", 4)
    c.up(f"{R}/f/sub/f4", 5)
    await c.settle()


async def dir_renamed_twice_slowly(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/d/sub", parents=True)
    await c.listed(f"{R}/d", f"{R}/d/sub")
    c.up(f"{R}/d/f1", 1)
    c.up(f"{R}/d/sub/f2", 2)
    await c.settle()
    s.move(f"{R}/d", f"{R}/e")
    for p in ("f1", "sub/f2"):
        c.deleted(f"{R}/d/{p}")
        c.created(f"{R}/e/{p}")
    await c.settle()
    s.move(f"{R}/e", f"{R}/f")
    for p in ("f1", "sub/f2"):
        c.deleted(f"{R}/e/{p}")
        c.created(f"{R}/f/{p}")
    await c.settle()
    s.move(f"{R}/f", f"{R}/d")  # back to the first name
    for p in ("f1", "sub/f2"):
        c.deleted(f"{R}/f/{p}")
        c.created(f"{R}/d/{p}")
    await c.settle()
    c.up(f"{R}/d/sub/late", 3)
    await c.settle()


async def file_between_dirs(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/A")
    s.mkdir(f"{R}/B")
    await c.listed(f"{R}/A", f"{R}/B")
    c.up(f"{R}/A/x", 1)
    c.up(f"{R}/B/y", 2)
    await c.settle()
    s.move(f"{R}/A/x", f"{R}/B/x")
    s.move(f"{R}/B/y", f"{R}/A/y")
    c.deleted(f"{R}/A/x")
    c.created(f"{R}/B/x")
    c.deleted(f"{R}/B/y")
    c.created(f"{R}/A/y")
    await c.settle()


async def file_out_and_back(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/x", 7)
    await c.settle()
    s.move(f"{R}/x", f"{OUT}/x")
    c.deleted(f"{R}/x")
    await c.settle()
    s.move(f"{OUT}/x", f"{R}/x")
    c.created(f"{R}/x")
    await c.settle()


async def delete_tree_bottom_up(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/t/u/v", parents=True)
    await c.listed(f"{R}/t", f"{R}/t/u", f"{R}/t/u/v")
    files = [f"{R}/t/a", f"{R}/t/u/b", f"{R}/t/u/v/c", f"{R}/t/u/v/d"]
    for i, p in enumerate(files):
        c.up(p, i + 1)
    await c.settle()
    for p in reversed(files):
        s.delete(p)
        c.deleted(p)
    s.rmdir(f"{R}/t/u/v")
    s.rmdir(f"{R}/t/u")
    s.rmdir(f"{R}/t")
    s.mkdir(f"{R}/t")
    c.up(f"{R}/t/new", 9)
    await c.settle()
    c.up(f"{R}/t/new2", 10)
    await c.settle()


async def rmdir_remkdir_same_name(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/r")
    await c.listed(f"{R}/r")
    c.up(f"{R}/r/f", 1)
    await c.settle()
    s.delete(f"{R}/r/f")
    c.deleted(f"{R}/r/f")
    s.rmdir(f"{R}/r")
    s.mkdir(f"{R}/r")
    c.up(f"{R}/r/f", 2)
    await c.settle()
    c.up(f"{R}/r/g", 3)
    await c.settle()


async def delete_and_reupload_same_name(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/same", 1)
    await c.settle()
    s.delete(f"{R}/same")
    c.deleted(f"{R}/same")
    await asyncio.sleep(0.01)
    c.up(f"{R}/same", 2)
    s.delete(f"{R}/same")
    c.deleted(f"{R}/same")
    await asyncio.sleep(0.01)
    c.up(f"{R}/same", 3)
    await c.settle()


async def via_upload_dir(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/u1", 1, via_upload_dir=True)
    s.mkdir(f"{R}/ud")
    c.up(f"{R}/ud/u2", 2, via_upload_dir=True)
    await c.listed(f"{R}/ud")
    c.up(f"{R}/ud/u3", 3, via_upload_dir=True)
    await c.settle()


async def attrib_first(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/af1", 1, attrib_first=True, modifies=3)
    s.mkdir(f"{R}/ad")
    c.up(f"{R}/ad/af2", 2, attrib_first=True)
    await c.listed(f"{R}/ad")
    c.up(f"{R}/ad/af3", 3, attrib_first=True)
    s.attrib(f"{R}/ad/af3")
    await c.settle()


async def overflow_mid_burst(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/od")
    await c.listed(f"{R}/od")
    c.up(f"{R}/od/k1", 100)
    for i in range(10):
        c.up(f"{R}/f{i:02d}", i)
    await c.settle()
    for i in range(10, 15):
        c.up(f"{R}/f{i:02d}", i)
    s.overflow()
    for i in range(15, 20):
        c.up(f"{R}/f{i:02d}", i)
    s.delete(f"{R}/f00")
    s.delete(f"{R}/f01")
    c.deleted(f"{R}/f00")
    c.deleted(f"{R}/f01")
    s.move(f"{R}/f02", f"{R}/g02")
    c.deleted(f"{R}/f02")
    c.created(f"{R}/g02")
    s.delete(f"{R}/od/k1")
    c.deleted(f"{R}/od/k1")
    s.rmdir(f"{R}/od")
    await c.settle()
    c.up(f"{R}/after", 5)
    await c.settle()


async def overflow_then_dir_move(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/D/s", parents=True)
    await c.listed(f"{R}/D", f"{R}/D/s")
    c.up(f"{R}/D/f1", 1)
    c.up(f"{R}/D/s/f2", 2)
    await c.settle()
    s.overflow()
    s.move(f"{R}/D", f"{R}/E")
    c.deleted(f"{R}/D/f1")
    c.deleted(f"{R}/D/s/f2")
    c.created(f"{R}/E/f1")
    c.created(f"{R}/E/s/f2")
    c.up(f"{R}/E/s/late", 3)
    await c.settle()
    c.up(f"{R}/E/s/later", 4)
    await c.settle()


async def drop_channel_mid_burst(c: Ctx) -> None:
    s = c.server
    for i in range(5):
        c.up(f"{R}/a{i}", i)
    s.drop_channel(next(iter(s.channels)))
    for i in range(5):
        c.up(f"{R}/b{i}", i)
    await asyncio.sleep(0.3)
    for i in range(5):
        c.up(f"{R}/c{i}", i)
    s.delete(f"{R}/a0")
    c.deleted(f"{R}/a0")
    await c.settle()
    c.up(f"{R}/after", 5)
    await c.settle()


async def shutdown_then_changes(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/a", 1)
    c.up(f"{R}/b", 2)
    s.mkdir(f"{R}/keep")
    c.up(f"{R}/keep/k", 3)
    await c.settle()
    s.shutdown()
    c.up(f"{R}/c", 4)
    c.up(f"{R}/d", 5)
    s.move(f"{R}/a", f"{R}/a2")
    c.deleted(f"{R}/a")
    c.created(f"{R}/a2")
    s.mkdir(f"{R}/sub")
    c.up(f"{R}/sub/e", 6)
    s.delete(f"{R}/b")
    c.deleted(f"{R}/b")
    await c.settle()
    c.up(f"{R}/after", 7)
    c.up(f"{R}/keep/after", 8)
    await c.settle()


async def disconnect_during_dir_move(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/m/sub", parents=True)
    await c.listed(f"{R}/m", f"{R}/m/sub")
    c.up(f"{R}/m/f1", 1)
    c.up(f"{R}/m/sub/f2", 2)
    await c.settle()
    s.move(f"{R}/m", f"{R}/n")
    s.disconnect_readers(abort=True)
    c.deleted(f"{R}/m/f1")
    c.deleted(f"{R}/m/sub/f2")
    c.created(f"{R}/n/f1")
    c.up(f"{R}/n/late", 3)
    await asyncio.sleep(0.3)
    s.move(f"{R}/n/sub", f"{R}/n/sub2")
    c.maybe(C, f"{R}/n/sub/f2")
    c.maybe(D, f"{R}/n/sub/f2")
    c.created(f"{R}/n/sub2/f2")
    s.disconnect_readers(abort=False)
    c.up(f"{R}/n/sub2/later", 4)
    await c.settle()
    c.up(f"{R}/n/sub2/last", 5)
    await c.settle()


async def disconnect_during_dir_move_processed(c: Ctx) -> None:
    """The bridge has started working on the move when the stream is cut."""
    s = c.server
    s.mkdir(f"{R}/m/sub", parents=True)
    await c.listed(f"{R}/m", f"{R}/m/sub")
    for i in range(5):
        c.up(f"{R}/m/f{i}", i)
        c.up(f"{R}/m/sub/g{i}", 10 + i)
    await c.settle()
    s.move(f"{R}/m", f"{R}/n")
    for i in range(5):
        c.deleted(f"{R}/m/f{i}")
        c.deleted(f"{R}/m/sub/g{i}")
        c.created(f"{R}/n/f{i}")
        c.created(f"{R}/n/sub/g{i}")
    await asyncio.sleep(0.02)
    s.disconnect_readers(abort=True)
    c.up(f"{R}/n/sub/late", 3)
    await asyncio.sleep(0.02)
    s.disconnect_readers(abort=False)
    c.up(f"{R}/n/late2", 4)
    await c.settle()
    c.up(f"{R}/n/sub/last", 5)
    await c.settle()


async def disconnect_mid_burst_new_dir(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/nb")
    for i in range(24):
        c.up(f"{R}/nb/{i:02d}", i)
        if i == 7:
            s.disconnect_readers(abort=False)
        if i == 15:
            await asyncio.sleep(0.05)
            s.disconnect_readers(abort=True)
        if i % 5 == 0:
            await asyncio.sleep(0.02)
    await c.settle()


async def event_loss(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/el/sub", parents=True)
    await c.listed(f"{R}/el", f"{R}/el/sub")
    c.up(f"{R}/el/k1", 1)
    c.up(f"{R}/el/sub/k2", 2)
    c.up(f"{R}/keep", 3)
    c.up(f"{R}/doomed", 4)
    c.up(f"{R}/mover", 5)
    await c.settle()
    s.set_tokens({"someone-else": "other"})
    locked_out = len(s.requests)
    s.disconnect_readers()
    for i in range(30):
        c.up(f"{R}/gap{i:02d}", 100 + i)
    s.delete(f"{R}/doomed")
    c.deleted(f"{R}/doomed")
    s.move(f"{R}/mover", f"{R}/mover2")
    c.deleted(f"{R}/mover")
    c.created(f"{R}/mover2")
    s.move(f"{R}/el", f"{R}/el2")
    c.deleted(f"{R}/el/k1")
    c.deleted(f"{R}/el/sub/k2")
    c.created(f"{R}/el2/k1")
    c.created(f"{R}/el2/sub/k2")
    s.mkdir(f"{R}/newdir/deep", parents=True)
    c.up(f"{R}/newdir/deep/n1", 6)
    # the bridge tries to come back and is refused before its token is accepted again
    refused = await until(lambda: any(r.status == 401 for r in s.requests[locked_out:]))
    assert refused, "the bridge did not try to reconnect while locked out"
    s.set_tokens({TOKEN: "bridge"})
    await c.settle()
    c.up(f"{R}/el2/sub/late", 7)
    c.up(f"{R}/newdir/deep/n2", 8)
    await c.settle()


async def lose_events_then_disconnect(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/a", 1)
    await c.settle()
    s.disconnect_readers()
    s.lose_events()
    c.up(f"{R}/b", 2)
    s.delete(f"{R}/a")
    c.deleted(f"{R}/a")
    await c.settle()
    c.up(f"{R}/c", 3)
    await c.settle()


async def move_then_delete_in_moved_dir(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/D")
    await c.listed(f"{R}/D")
    c.up(f"{R}/D/f", 1)
    c.up(f"{R}/D/g", 2)
    await c.settle()
    s.move(f"{R}/D", f"{R}/E")
    s.delete(f"{R}/E/f")
    c.deleted(f"{R}/D/f")
    c.deleted(f"{R}/D/g")
    c.created(f"{R}/E/g")
    c.maybe(C, f"{R}/E/f")
    c.maybe(D, f"{R}/E/f")
    await c.settle()


async def new_dir_moved_before_watch(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/q")
    s.upload(f"{R}/q/f", size=1)
    c.maybe(C, f"{R}/q/f")
    c.maybe(D, f"{R}/q/f")
    s.move(f"{R}/q", f"{R}/q2")
    c.created(f"{R}/q2/f")
    c.up(f"{R}/q2/g", 2)
    await c.settle()
    c.up(f"{R}/q2/h", 3)
    await c.settle()


async def upload_then_parent_moved(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/p")
    await c.listed(f"{R}/p")
    s.upload(f"{R}/p/f", size=5)
    s.move(f"{R}/p", f"{R}/p2")
    c.maybe(C, f"{R}/p/f")
    c.maybe(D, f"{R}/p/f")
    c.created(f"{R}/p2/f")
    await c.settle()


async def root_removed_and_recreated(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/x", 1)
    await c.settle()
    s.delete(f"{R}/x")
    c.deleted(f"{R}/x")
    s.rmdir(R)
    s.mkdir(R)
    await asyncio.sleep(0.5)
    c.up(f"{R}/y", 2)
    await c.settle()


async def restart_resume_and_channel_gone(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/dir")
    await c.listed(f"{R}/dir")
    c.up(f"{R}/a", 1)
    c.up(f"{R}/dir/b", 2)
    c.up(f"{R}/c", 3)
    await c.settle()
    await c.stop_bridge()
    # while stopped (the channel buffers, within its ring)
    c.up(f"{R}/d", 4)
    s.delete(f"{R}/a")
    c.deleted(f"{R}/a")
    s.move(f"{R}/dir", f"{R}/dir2")
    c.deleted(f"{R}/dir/b")
    c.created(f"{R}/dir2/b")
    await c.start_bridge()
    await c.settle()
    c.up(f"{R}/dir2/e", 5)
    await c.settle()
    await c.stop_bridge()
    # while stopped, the channel vanishes: the files known from the state topic drive the resync
    s.drop_channel(next(iter(s.channels)))
    c.up(f"{R}/f", 6)
    s.delete(f"{R}/c")
    c.deleted(f"{R}/c")
    s.move(f"{R}/dir2", f"{R}/dir3")
    for p in ("b", "e"):
        c.deleted(f"{R}/dir2/{p}")
    c.created(f"{R}/dir3/b")
    c.created(f"{R}/dir3/e")
    await c.start_bridge()
    await c.settle()
    c.up(f"{R}/dir3/g", 7)
    await c.settle()


async def overflow_many_watches(c: Ctx) -> None:
    """IN_Q_OVERFLOW arrives once per subscription: N watches must not mean N full resyncs."""
    s = c.server
    directories = [f"{R}/w{i:02d}" for i in range(12)]
    for directory in directories:
        s.mkdir(directory)
    await c.listed(*directories)
    for i, directory in enumerate(directories):
        c.up(f"{directory}/f", i)
    await c.settle()
    watches = len(watched(s))
    before = sum(1 for r in s.requests if r.query == "children=true")
    s.overflow()
    c.up(f"{R}/w00/g", 1)
    await c.settle()
    caused = sum(1 for r in s.requests if r.query == "children=true") - before
    assert caused <= watches, (
        f"one overflow() with {watches} watches caused {caused} directory listings "
        f"(more than one resync of the tree)"
    )


async def delete_and_reupload_same_name_sync(c: Ctx) -> None:
    """Delete and re-upload the same name in one go: the first IN_CLOSE_WRITE is stat'ed late."""
    s = c.server
    s.mkdir(f"{R}/s")
    await c.listed(f"{R}/s")
    c.up(f"{R}/s/same", 1)
    s.delete(f"{R}/s/same")
    c.deleted(f"{R}/s/same")
    c.up(f"{R}/s/same", 2)
    await c.settle()


async def rename_file_twice_quickly(c: Ctx) -> None:
    s = c.server
    c.up(f"{R}/a", 1)
    await c.settle()
    s.move(f"{R}/a", f"{R}/b")
    s.move(f"{R}/b", f"{R}/c")
    c.deleted(f"{R}/a")
    c.maybe(C, f"{R}/b")
    c.maybe(D, f"{R}/b")
    c.created(f"{R}/c")
    await c.settle()


async def move_overwrite(c: Ctx) -> None:
    """mv a b over an existing b (dCache sends no event for the replaced b)."""
    s = c.server
    c.up(f"{R}/a", 1)
    c.up(f"{R}/b", 2)
    await c.settle()
    s.move(f"{R}/a", f"{R}/b", overwrite=True)
    c.deleted(f"{R}/a")
    c.no_lifecycle.add(f"{R}/b")
    c.created(f"{R}/b")  # S3-like overwrite: a second created for b (no deleted for the old b)
    await c.settle()


async def dir_moved_into_new_parent(c: Ctx) -> None:
    """The move's IN_MOVED_TO goes to a parent nobody watches yet."""
    s = c.server
    s.mkdir(f"{R}/d/s", parents=True)
    await c.listed(f"{R}/d", f"{R}/d/s")
    c.up(f"{R}/d/f", 1)
    c.up(f"{R}/d/s/g", 2)
    await c.settle()
    s.mkdir(f"{R}/new/parent", parents=True)
    s.move(f"{R}/d", f"{R}/new/parent/d")
    c.deleted(f"{R}/d/f")
    c.deleted(f"{R}/d/s/g")
    c.created(f"{R}/new/parent/d/f")
    c.created(f"{R}/new/parent/d/s/g")
    await c.settle()
    c.up(f"{R}/new/parent/d/s/late", 3)
    await c.settle()


async def dir_reparented(c: Ctx) -> None:
    s = c.server
    s.mkdir(f"{R}/x/d/s", parents=True)
    s.mkdir(f"{R}/y")
    await c.listed(f"{R}/x", f"{R}/x/d", f"{R}/x/d/s", f"{R}/y")
    c.up(f"{R}/x/d/f", 1)
    c.up(f"{R}/x/d/s/g", 2)
    await c.settle()
    s.move(f"{R}/x/d", f"{R}/y/d")
    s.upload(f"{R}/y/d/s/h", size=3)  # its parent moves on at once: maybe seen under y
    s.move(f"{R}/y", f"{R}/z")
    for p in ("d/f", "d/s/g"):
        c.deleted(f"{R}/x/{p}")
        c.maybe(C, f"{R}/y/{p}")
        c.maybe(D, f"{R}/y/{p}")
        c.created(f"{R}/z/{p}")
    c.maybe(C, f"{R}/y/d/s/h")
    c.maybe(D, f"{R}/y/d/s/h")
    c.created(f"{R}/z/d/s/h")
    await c.settle()
    c.up(f"{R}/z/d/s/late", 4)
    await c.settle()


async def event_loss_then_immediate_changes(c: Ctx) -> None:
    """Changes right after the bridge reconnects and gets EVENT_LOSS (racy by nature)."""
    s = c.server
    for i in range(6):
        c.up(f"{R}/k{i}", i)
    await c.settle()
    s.set_tokens({"someone-else": "other"})
    s.disconnect_readers()
    for i in range(30):
        c.up(f"{R}/gap{i:02d}", 100 + i)
    s.set_tokens({TOKEN: "bridge"})
    # the moment the bridge's stream is accepted (before it has listed anything)
    await when(lambda: any(ch.connected for ch in s.channels.values()))
    s.delete(f"{R}/k0")
    c.deleted(f"{R}/k0")
    s.move(f"{R}/k1", f"{R}/k1-moved")
    c.deleted(f"{R}/k1")
    c.created(f"{R}/k1-moved")
    await c.settle()


async def restart_with_event_loss(c: Ctx) -> None:
    """Bridge stopped while more than the ring buffer passes; resumes, gets EVENT_LOSS."""
    s = c.server
    s.mkdir(f"{R}/d")
    await c.listed(f"{R}/d")
    c.up(f"{R}/a", 1)
    c.up(f"{R}/d/b", 2)
    c.up(f"{R}/c", 3)
    await c.settle()
    await c.stop_bridge()
    for i in range(30):
        c.up(f"{R}/gap{i:02d}", 10 + i)
    s.delete(f"{R}/a")
    c.deleted(f"{R}/a")
    s.move(f"{R}/d", f"{R}/d2")
    c.deleted(f"{R}/d/b")
    c.created(f"{R}/d2/b")
    await c.start_bridge()
    await c.settle()
    c.up(f"{R}/d2/later", 5)
    await c.settle()


async def shutdown_then_immediate_changes(c: Ctx) -> None:
    """Frontend restart; a file is deleted right after the new channel watches the root."""
    s = c.server
    for i in range(4):
        c.up(f"{R}/k{i}", i)
    await c.settle()
    old = set(s.channels)
    s.shutdown()
    await when(lambda: any(k not in old and ch.subscriptions for k, ch in s.channels.items()))
    s.delete(f"{R}/k0")
    c.deleted(f"{R}/k0")
    s.move(f"{R}/k1", f"{R}/k1-moved")
    c.deleted(f"{R}/k1")
    c.created(f"{R}/k1-moved")
    await c.settle()


async def new_dir_file_deleted_while_listing(c: Ctx) -> None:
    """A directory is made and filled; one file is deleted just after the bridge watched it."""
    s = c.server
    s.mkdir(f"{R}/nd")
    s.upload(f"{R}/nd/gone", size=1)
    c.up(f"{R}/nd/stays", 2)
    await when(lambda: f"{R}/nd" in watched(s))
    s.delete(f"{R}/nd/gone")
    c.maybe(C, f"{R}/nd/gone")
    c.maybe(D, f"{R}/nd/gone")
    await c.settle()


async def overflow_then_upload_then_move(c: Ctx) -> None:
    """A file written right after IN_Q_OVERFLOW is found by the resync listing, then renamed
    before the bridge reaches its (queued) IN_CLOSE_WRITE."""
    s = c.server
    c.up(f"{R}/before", 1)
    await c.settle()
    n = listings(s, R)
    s.overflow()
    s.upload(f"{R}/x", size=5)
    await when(lambda: listings(s, R) > n)
    s.move(f"{R}/x", f"{R}/y")
    c.maybe(C, f"{R}/x")
    c.maybe(D, f"{R}/x")
    c.created(f"{R}/y")
    await c.settle()


async def new_dir_upload_then_move_while_listing(c: Ctx) -> None:
    """Same race on a new directory: watched, file written, listed, then renamed."""
    s = c.server
    s.mkdir(f"{R}/nd")
    await when(lambda: f"{R}/nd" in watched(s))
    s.upload(f"{R}/nd/x", size=5)
    await when(lambda: listings(s, f"{R}/nd") > 0)
    s.move(f"{R}/nd/x", f"{R}/nd/y")
    c.maybe(C, f"{R}/nd/x")
    c.maybe(D, f"{R}/nd/x")
    c.created(f"{R}/nd/y")
    await c.settle()


async def clean_stop_right_after_listing(c: Ctx) -> None:
    """A clean stop (SIGTERM-like) just after a new directory was listed; restart resumes."""
    s = c.server
    s.mkdir(f"{R}/nd")
    await when(lambda: f"{R}/nd" in watched(s))
    c.up(f"{R}/nd/x", 5)  # after the watch: its IN_CLOSE_WRITE is queued behind the listing
    await when(lambda: listings(s, f"{R}/nd") > 0)
    await c.stop_bridge()
    c.up(f"{R}/nd/y", 6)
    await c.start_bridge()
    await c.settle()


Scenario = Callable[[Ctx], Awaitable[None]]

SCENARIOS: list[Scenario] = [
    deep_nesting,
    dir_moved_in_from_outside,
    dir_moved_out,
    dir_renamed_twice_quickly,
    dir_renamed_twice_slowly,
    file_between_dirs,
    file_out_and_back,
    delete_tree_bottom_up,
    rmdir_remkdir_same_name,
    delete_and_reupload_same_name,
    via_upload_dir,
    attrib_first,
    overflow_mid_burst,
    overflow_then_dir_move,
    drop_channel_mid_burst,
    shutdown_then_changes,
    disconnect_during_dir_move,
    disconnect_during_dir_move_processed,
    disconnect_mid_burst_new_dir,
    event_loss,
    lose_events_then_disconnect,
    move_then_delete_in_moved_dir,
    new_dir_moved_before_watch,
    upload_then_parent_moved,
    restart_resume_and_channel_gone,
    overflow_many_watches,
    root_removed_and_recreated,
    delete_and_reupload_same_name_sync,
    rename_file_twice_quickly,
    move_overwrite,
    dir_moved_into_new_parent,
    dir_reparented,
    event_loss_then_immediate_changes,
    restart_with_event_loss,
    shutdown_then_immediate_changes,
    new_dir_file_deleted_while_listing,
    overflow_then_upload_then_move,
    new_dir_upload_then_move_while_listing,
    clean_stop_right_after_listing,
]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def ctx(
    bootstrap: str, topics: TopicNames, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Ctx]:
    """A fresh frontend with the root (and the outside directory), a one-partition raw topic
    being collected, and the bridge started: it watches and has listed the root."""
    caplog.set_level(logging.INFO, logger="streamapp")  # the bridge's log, shown on failure
    token_file = tmp_path / "dcache.token"
    token_file.write_text(TOKEN + "\n")
    c = Ctx(bootstrap, topics.prefix, token_file)
    async with contextlib.AsyncExitStack() as stack:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        stack.push_async_callback(admin.close)
        await admin.create_topics([NewTopic(c.raw_topic, 1, 1)])
        stack.push_async_callback(_delete_topics, admin, [c.raw_topic, c.state_topic])
        await c.server.start()
        stack.push_async_callback(c.server.stop)
        c.server.mkdir(R, parents=True, silent=True)
        c.server.mkdir(OUT, parents=True, silent=True)
        stack.push_async_callback(_cancel, asyncio.create_task(c.collect()))
        stack.push_async_callback(_stop_bridge, c)
        await c.start_bridge()
        yield c


async def _delete_topics(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    with contextlib.suppress(Exception):  # best effort: the names are unique to this test
        await admin.delete_topics(names)


async def _stop_bridge(c: Ctx) -> None:
    if c.task is not None and c.task.done():
        return  # it stopped by itself: the test reported that (with its error) already
    await c.stop_bridge()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_scenario(scenario: Scenario, ctx: Ctx) -> None:
    try:
        await asyncio.wait_for(scenario(ctx), SCENARIO_TIMEOUT_S)
    except Exception as exc:
        problems = ctx.problems()
        if problems:
            exc.add_note("\n".join(["and what is wrong with the events so far:", *problems]))
        raise
    problems = ctx.problems()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
