"""dCache storage events bridged per second (issue #6), against the dCache frontend test server
(``testkit.dcache_server``, a stand-in for dCache, which cannot run here) and the
broker of ``scripts/kafka``, both measured in the same run on the same burst of uploads:

(a) baseline: a plain loop that opens a channel, subscribes the one directory with the same
    flags, reads the SSE stream and produces every inotify frame as it is to Kafka — the least
    any bridge must do;
(b) streamapp: ``run_bridges`` — envelopes with absolute paths, a namespace stat per completed
    file (size, mtime), the known-file state and checkpoints on the compacted state topic.

A burst of ``--files`` uploads lands in one watched directory (each gives IN_CREATE and
IN_CLOSE_WRITE under those flags); the figure is completed files per second from the first
upload until the last file's record is acknowledged. Not part of the test run.

    .venv/bin/python -m bench.dcache_bridge [--files 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.authorize_live import BOOTSTRAP
from streamapp.bridge.config import BridgeConfig, FrontendConfig
from streamapp.bridge.dcache_events import run_bridges
from streamapp.domain.inotify import WATCH_FLAGS
from testkit.dcache_server import DCacheTestServer

TOKEN = "bench-token"
DIRECTORY = "/data/bench"


async def count_until(topic: str, needed: int, match: bytes) -> float:
    """Wait until ``needed`` records containing ``match`` are on ``topic``; when that was."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=500,
    )
    await consumer.start()
    seen = 0
    try:
        while seen < needed:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            seen += sum(match in r.value for batch in batches.values() for r in batch)
        return time.perf_counter()
    finally:
        await consumer.stop()


async def baseline(server: DCacheTestServer, topic: str, files: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connected = asyncio.Event()

    async def forward(session: aiohttp.ClientSession, channel: str) -> None:
        async with session.get(
            channel, headers={**headers, "Accept": "text/event-stream"}, timeout=None
        ) as response:
            connected.set()
            data = b""
            async for line in response.content:
                if line.startswith(b"data:"):
                    data = line[5:].strip()
                elif line == b"\n" and data:
                    await producer.send(topic, data)
                    data = b""

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/api/v1/events/channels", headers=headers, json={}
        ) as response:
            channel = response.headers["Location"]
        reader = asyncio.create_task(forward(session, channel))
        await connected.wait()
        async with session.post(
            f"{channel}/subscriptions/inotify",
            headers=headers,
            json={"path": DIRECTORY, "flags": list(WATCH_FLAGS)},
        ):
            pass
        elapsed = await burst(server, "base", files, topic, b"IN_CLOSE_WRITE")
        reader.cancel()
    await producer.stop()
    return elapsed


async def streamapp(server: DCacheTestServer, topic: str, files: int, work: Path) -> float:
    (work / "token").write_text(TOKEN)
    config = BridgeConfig(
        raw_topic=topic,
        state_topic=f"{topic}.state",
        frontends=(
            FrontendConfig(
                name="bench", url=server.url, token_file=work / "token", roots=(DIRECTORY,)
            ),
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_bridges(config, BOOTSTRAP, stop))
    while DIRECTORY not in server.watched_paths():  # noqa: ASYNC110 - no event for it
        await asyncio.sleep(0.05)
    elapsed = await burst(server, "app", files, topic, b"IN_CLOSE_WRITE")
    stop.set()
    await task
    return elapsed


async def burst(
    server: DCacheTestServer, prefix: str, files: int, topic: str, match: bytes
) -> float:
    counting = asyncio.create_task(count_until(topic, files, match))
    await asyncio.sleep(1)  # the counter is subscribed
    started = time.perf_counter()
    for n in range(files):
        server.upload(f"{DIRECTORY}/{prefix}-{n:07d}.h5", size=n)
        if n % 200 == 0:
            await asyncio.sleep(0)  # let the stream flow while the burst goes on
    return await counting - started


async def main(files: int) -> None:
    run = uuid.uuid4().hex[:8]
    results = {}
    for name in ("baseline", "streamapp"):
        server = DCacheTestServer({TOKEN: "bench"}, ring_buffer_size=10 * files)
        await server.start()
        server.mkdir(DIRECTORY, parents=True)
        topic = f"bench-{run}.{name}.dcache.events"
        with tempfile.TemporaryDirectory() as work:
            if name == "baseline":
                results[name] = await baseline(server, topic, files)
            else:
                results[name] = await streamapp(server, topic, files, Path(work))
        await server.stop()
        rate = files / results[name]
        print(f"{name:>9}: {files} files in {results[name]:.2f} s = {rate:,.0f} files/s")
    ratio = results["baseline"] / results["streamapp"]
    print(orjson.dumps({"files": files, **results, "ratio": round(ratio, 2)}).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    asyncio.run(main(parser.parse_args().files))
