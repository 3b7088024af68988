"""A tenant follows its events over the workers' SSE view and resumes with Last-Event-ID.

    python examples/sse_consumer.py --url http://127.0.0.1:6066 --tenant petra3-p02 \\
        --token-file p02.jwt [--position-file p02.position]

Each SSE event's ``id`` is the stream position after it (``p:offset,…``); it is written to the
position file once the event is handled, and sent back as ``Last-Event-ID`` when the stream is
reopened (after a restart, a dropped connection or a worker going away), so nothing is skipped
(at least once: deduplicate on the event ``id``). The bearer token (a JWT of the facility's
identity provider naming the tenant's group) is read from a file, never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp


def handle(event: dict[str, object]) -> None:
    print(event.get("type"), event.get("subject"))


async def follow(args: argparse.Namespace) -> None:
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    position = Path(args.position_file)
    url = f"{args.url.rstrip('/')}/v1/tenants/{args.tenant}/events"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)  # heartbeats every 15 s
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            if position.exists():
                headers["Last-Event-ID"] = position.read_text().strip()
            try:
                async with session.get(url, headers=headers) as response:
                    if response.status in (401, 403, 404):
                        raise SystemExit(f"refused: {response.status} {await response.text()}")
                    response.raise_for_status()
                    await read_stream(response, position)
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"stream interrupted ({exc!r}); resuming in 2 s")
            await asyncio.sleep(2)


async def read_stream(response: aiohttp.ClientResponse, position: Path) -> None:
    event_id, data = "", []
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line:  # end of one SSE event
            if data:
                handle(json.loads("\n".join(data)))
                if event_id:
                    position.write_text(event_id)  # after handling: resume point
            event_id, data = "", []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a worker's web address")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--position-file", default="sse.position")
    asyncio.run(follow(parser.parse_args()))


if __name__ == "__main__":
    main()
