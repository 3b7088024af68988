"""The ingest agent under faust's test_context: memory store, sends captured (no broker).

Live-broker behaviour (real topics, restarts) is in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from streamapp.agents import ingest as ingest_module
from streamapp.app import app
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.topics import dead_letters, storage_events
from tests.factories import dcache_record, dcache_transfer, raw, s3_notification, s3_record


class CapturedSends:
    """Stands in for the producer: records each message by topic, returns a delivered future."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[dict[str, Any]]] = {}

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        message = {"key": key, "value": value, "headers": headers}
        self.by_topic.setdefault(topic, []).append(message)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
async def sends(monkeypatch: pytest.MonkeyPatch) -> CapturedSends:
    app.finalize()
    app.conf.store = "memory://"  # type: ignore[assignment]  # faust coerces str to URL
    app.flow_control.resume()
    captured = CapturedSends()
    monkeypatch.setattr(ingest_module, "_produce", captured)
    return captured


async def test_agent_routes_events_skips_and_dead_letters(
    sends: CapturedSends,
) -> None:
    inputs = [
        raw(dcache_transfer()),
        raw(dcache_record("request")),  # skipped: no output at all
        b"\xff not json",
        raw(s3_notification(s3_record(key="a.h5"), s3_record(key="../escape"))),
    ]
    async with ingest_module.ingest.test_context() as agent:
        for number, value in enumerate(inputs):
            await agent.put(value=value, key=f"k{number}".encode())

    events = [json.loads(m["value"]) for m in sends.by_topic[storage_events.get_topic_name()]]
    assert [e["subject"] for e in events] == [
        "/data/alice/run42/file.root",
        "/beamtime-11012345/a.h5",
    ]
    # re-keyed by subject so one object's events stay in order on one partition
    assert [m["key"] for m in sends.by_topic[storage_events.get_topic_name()]] == [
        e["subject"].encode() for e in events
    ]
    assert all(
        dict(m["headers"])["content-type"] == b"application/cloudevents+json"
        for m in sends.by_topic[storage_events.get_topic_name()]
    )

    dead = sends.by_topic[dead_letters.get_topic_name()]
    assert [(m["key"], m["value"]) for m in dead] == [(b"k2", inputs[2]), (b"k3", inputs[3])]
    contexts = [DeadLetterContext.from_headers(m["headers"]) for m in dead]
    assert "UTF-8" in contexts[0].reason
    assert contexts[1].reason.startswith("Records[1]:")
    assert [c.offset for c in contexts] == [2, 3]
    assert all(c.stage == "ingest" for c in contexts)
