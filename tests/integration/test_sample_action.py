"""The sample OpenWhisk action (docker/openwhisk/nexus_summary.py) against a local storage test
server standing in for a dCache WebDAV door (bearer tokens, GET and PUT): it reads with the read
token only, writes with the write token only, and reports failures as ``{"error": …}``."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
CONTENT = b"NeXus" * 300_000  # 1.5 MB: more than one read chunk


def load_action() -> Any:
    spec = importlib.util.spec_from_file_location(
        "nexus_summary", ROOT / "docker" / "openwhisk" / "nexus_summary.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def storage() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    written: dict[str, bytes] = {}

    async def get(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer READ":
            return web.Response(status=401)
        return web.Response(body=CONTENT)

    async def put(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer WRITE":
            return web.Response(status=401)
        written[request.path] = await request.read()
        return web.Response(status=201)

    app = web.Application()
    app.router.add_get("/data/raw/{name}", get)
    app.router.add_put("/data/processed/{name}", put)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", written
    await runner.cleanup()


def params(url: str, read: str = "READ", write: str = "WRITE") -> dict[str, Any]:
    return {
        "event": {"id": "e-1", "subject": "/data/raw/f.nxs"},
        "read": {"path": "/data/raw/f.nxs", "url": f"{url}/data/raw/f.nxs", "token": read},
        "write": {"path": "/data/processed", "url": f"{url}/data/processed", "token": write},
        "detector": "lambda-750k",
    }


async def test_reads_with_the_read_token_and_writes_with_the_write_token(
    storage: tuple[str, dict[str, bytes]],
) -> None:
    url, written = storage
    result = await asyncio.to_thread(load_action().main, params(url))
    assert "error" not in result, result
    summary = json.loads(written["/data/processed/f.nxs.summary.json"])
    assert summary == result["summary"]
    assert summary["size"] == len(CONTENT)
    assert summary["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert summary["detector"] == "lambda-750k"


async def test_a_refused_token_is_an_action_error(storage: tuple[str, dict[str, bytes]]) -> None:
    url, written = storage
    action = load_action()
    swapped = await asyncio.to_thread(action.main, params(url, read="WRITE", write="READ"))
    assert "error" in swapped
    assert "401" in swapped["error"]
    bad_write = await asyncio.to_thread(action.main, params(url, write="READ"))
    assert "error" in bad_write
    assert not written
    assert "error" in await asyncio.to_thread(action.main, {"event": {}})
