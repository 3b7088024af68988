"""The dCache part of scripts/demo: the dCache frontend test server (a stand-in for dCache,
which cannot run here) on 127.0.0.1:3880, the ``streamapp dcache-events`` bridge as its own
process, a beamline's session of directory creations, uploads, a move, a deletion, a dropped
connection and a buffer overflow; then the canonical events the worker made of it.

Usage (from scripts/demo, with its STREAMAPP_* environment): demo_dcache.py RAW_TOPIC STATE_DIR
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from streamapp.kafka_tools import render_human
from streamapp.settings import Settings
from testkit.dcache_server import DCacheTestServer

BEAMTIME = "/data/petra3/p02.1/2026/11012345/raw"
TOKEN = "demo-bridge-token"  # noqa: S105 - the test server's token, not a secret


async def main(raw_topic: str, state: Path) -> int:
    settings = Settings.from_env()
    server = DCacheTestServer({TOKEN: "p02-bridge"}, ring_buffer_size=32)
    await server.start(port=3880)
    server.mkdir(BEAMTIME, parents=True)
    (state / "dcache.token").write_text(TOKEN + "\n")
    config = state / "dcache-events.toml"
    config.write_text(
        f'raw_topic = "{raw_topic}"\nstate_topic = "{raw_topic}.bridge-state"\n\n'
        f'[[frontends]]\nname = "desy"\nurl = "{server.url}"\n'
        f'token_file = "{state / "dcache.token"}"\nroots = ["{BEAMTIME}"]\n'
    )
    log = (state / "dcache-bridge.log").open("ab")
    bridge = await asyncio.create_subprocess_exec(
        ".venv/bin/streamapp",
        "dcache-events",
        "--config",
        str(config),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await _until_watched(server, BEAMTIME)
        print(f"-- the bridge watches {BEAMTIME} (log: {state}/dcache-bridge.log)")
        scan = f"{BEAMTIME}/scan-001"
        print("-- mkdir scan-001 and scan-001/frames, five uploads at once")
        server.mkdir(scan)
        server.mkdir(f"{scan}/frames")
        for name, size in (("a.nxs", 1_000), ("b.nxs", 2_000), ("c.nxs", 3_000)):
            server.upload(f"{scan}/{name}", size=size)
        for name in ("f0001.h5", "f0002.h5"):
            server.upload(f"{scan}/frames/{name}", size=4_096)
        await asyncio.sleep(1)
        print("-- mv a.nxs a-final.nxs; rm b.nxs")
        server.move(f"{scan}/a.nxs", f"{scan}/a-final.nxs")
        server.delete(f"{scan}/b.nxs")
        await asyncio.sleep(1)
        print("-- the connection drops; two uploads meanwhile")
        server.disconnect_readers(abort=True)
        server.upload(f"{scan}/d.nxs", size=5_000)
        server.upload(f"{scan}/e.nxs", size=6_000)
        await asyncio.sleep(2)
        print("-- the bridge is locked out while 40 files land: far past the 32-event buffer")
        server.set_tokens({"rotated": "p02-bridge"})
        server.disconnect_readers()
        for n in range(40):
            server.upload(f"{BEAMTIME}/scan-002-{n:04d}.h5", size=8_192)
        server.set_tokens({TOKEN: "p02-bridge"})
        expected = 5 + 2 + 1 + 2 + 40
        print(
            f"== canonical events from the bridge on {settings.normalized_topic} "
            f"(expecting {expected}: moves are a delete and a create; after EVENT_LOSS the "
            "listing finds every file)"
        )
        seen = await _canonical(settings, expected)
        return 0 if seen == expected else 1
    finally:
        bridge.terminate()
        await asyncio.wait_for(bridge.wait(), 30)
        await server.stop()


async def _until_watched(server: DCacheTestServer, path: str) -> None:
    for _ in range(600):
        if path in server.watched_paths():
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the bridge never watched " + path)


async def _canonical(settings: Settings, expected: int) -> int:
    """Print the worker's canonical events that came from the bridge (operation inotify:* or
    resync:*) until ``expected`` arrived or nothing came for 30 s."""
    consumer = AIOKafkaConsumer(
        settings.normalized_topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=2000,
    )
    await consumer.start()
    seen, last = 0, time.monotonic()
    try:
        while seen < expected and time.monotonic() - last < 30:
            batches = await consumer.getmany(timeout_ms=250)
            for record in (r for batch in batches.values() for r in batch):
                operation = str(orjson.loads(record.value).get("data", {}).get("operation", ""))
                if operation.startswith(("inotify:", "resync:")):
                    print(f"{render_human(record)}  [{operation}]", flush=True)
                    seen += 1
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return seen


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]))))
