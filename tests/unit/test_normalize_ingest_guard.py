"""The ingest agent's guard: no record stops ingest (faust test_context, sends captured).

Live-broker form of the same promise: tests/integration/test_ingest_live.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from streamapp.agents import ingest as ingest_module
from streamapp.app import app
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.normalize import normalize
from streamapp.topics import dead_letters, storage_events
from tests.factories import dcache_transfer, raw


class RefusingSends:
    """Stands in for the producer: refuses messages (key and value) over ``limit`` bytes at
    once (as aiokafka's max_request_size check does), delivers the rest."""

    def __init__(self, limit: int = 10**9, only_on: str | None = None) -> None:
        self.limit = limit
        self.only_on = only_on
        self.by_topic: dict[str, list[dict[str, Any]]] = {}

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        size = len(value) + len(key or b"")
        if size > self.limit and self.only_on in (None, topic):
            raise RuntimeError(f"message of {size} bytes is over the request size")
        self.by_topic.setdefault(topic, []).append({"key": key, "value": value, "headers": headers})
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def dead(self) -> list[tuple[bytes | None, bytes, DeadLetterContext]]:
        return [
            (m["key"], m["value"], DeadLetterContext.from_headers(m["headers"]))
            for m in self.by_topic.get(dead_letters.get_topic_name(), [])
        ]

    def subjects(self) -> list[str]:
        return [
            json.loads(m["value"])["subject"]
            for m in self.by_topic.get(storage_events.get_topic_name(), [])
        ]


def producer(monkeypatch: pytest.MonkeyPatch, sends: RefusingSends) -> RefusingSends:
    app.finalize()
    app.conf.store = "memory://"  # type: ignore[assignment]  # faust coerces str to URL
    app.flow_control.resume()
    monkeypatch.setattr(ingest_module, "_produce", sends)
    return sends


async def put_all(values: list[bytes], keys: list[bytes] | None = None) -> None:
    async with ingest_module.declare_agent().test_context() as agent:
        for number, value in enumerate(values):
            key = keys[number] if keys else f"k{number}".encode()
            await agent.put(value=value, key=key)


async def test_an_exception_while_handling_a_record_dead_letters_it_and_ingest_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = producer(monkeypatch, RefusingSends())
    real_normalize = normalize

    def normalize_that_fails_on_poison(value: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"poison" in value:
            raise RuntimeError("unexpected")
        return real_normalize(value, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "normalize", normalize_that_fails_on_poison)
    poison = raw(dcache_transfer(note="poison"))
    await put_all([poison, raw(dcache_transfer())])

    assert sends.subjects() == ["/data/alice/run42/file.root"]
    [(key, value, context)] = sends.dead()
    assert (key, value, context.stage, context.offset) == (b"k0", poison, "ingest", 0)
    assert context.reason == "internal error ingesting record: RuntimeError: unexpected"


async def test_hostile_records_are_dead_lettered_with_their_reason_and_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = producer(monkeypatch, RefusingSends())
    deep = b'{"msgType": "transfer", "x": ' + b"[" * 300 + b"]" * 300 + b"}"
    envelope = {
        "envelope": "dcache-storage-event/1",
        "kind": "inotify",
        "frontend": "https://dcache.example.org:3880",
        "path": "/data/a.h5",
        "mask": ["IN_CLOSE_WRITE"],
        "mtime": 10**17,
        "observed": "2026-11-26T10:00:00Z",
    }
    hostile = [
        deep,
        json.dumps(envelope).encode(),
        raw(dcache_transfer(fileSize="9" * 5000)),
        raw(dcache_transfer(billingPath="/data/..")),
    ]
    await put_all([*hostile, raw(dcache_transfer())])

    assert sends.subjects() == ["/data/alice/run42/file.root"]
    dead = sends.dead()
    assert [value for _, value, _ in dead] == hostile
    reasons = [context.reason for _, _, context in dead]
    for reason, expected in zip(
        reasons, ("nested deeper", "0001-9999", "int64", "root '/'"), strict=True
    ):
        assert expected in reason


async def test_a_record_the_producer_refuses_to_dead_letter_leaves_a_stand_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = producer(monkeypatch, RefusingSends(limit=5000))
    huge = raw(dcache_transfer(msgType="x" * 6000))
    await put_all([huge, raw(dcache_transfer())])

    assert sends.subjects() == ["/data/alice/run42/file.root"]
    [(key, value, context)] = sends.dead()
    assert (key, value, context.offset) == (b"k0", b"", 0)
    assert "unknown dCache msgType" in context.reason
    assert f"the original {len(huge)}-byte value is not kept here" in context.reason


async def test_a_record_with_a_huge_key_leaves_a_stand_in_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key near the producer's limit would refuse the stand-in too, and the worker would exit
    on the same record after every restart: the stand-in leaves the key out and says so."""
    sends = producer(monkeypatch, RefusingSends(limit=5000))
    await put_all([b"not json", raw(dcache_transfer())], keys=[b"k" * 6000, b"k1"])

    assert sends.subjects() == ["/data/alice/run42/file.root"]
    [(key, value, context)] = sends.dead()
    assert (key, value, context.offset) == (None, b"", 0)
    assert "(nor its 6000-byte key)" in context.reason


async def test_an_event_the_producer_refuses_makes_its_record_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends = producer(
        monkeypatch, RefusingSends(limit=1500, only_on=storage_events.get_topic_name())
    )
    # normalize bounds every event (64 KiB; free text 1,024 characters a field): the producer's
    # limit stands in lower here, as a broker's max.message.bytes set below it would
    big_event = raw(dcache_transfer(pnfsid="p" * 1000, storageInfo="s" * 1000))
    await put_all([big_event, raw(dcache_transfer())])

    assert sends.subjects() == ["/data/alice/run42/file.root"]
    [(_, value, context)] = sends.dead()
    assert value == big_event
    assert "not written: RuntimeError" in context.reason
