"""The ingest agent under faust's test_context: memory store, sends captured (no broker);
with the authorization stage it calls in the same pass.

Live-broker behaviour (real topics, restarts) is in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamapp import observed
from streamapp.agents import authorize as authorize_module
from streamapp.agents import ingest as ingest_module
from streamapp.app import app, settings
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.policy import parse_tenant
from streamapp.tables import policy_index
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
    async with ingest_module.declare_agent().test_context() as agent:
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


@pytest.fixture
def tenant_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sends: CapturedSends
) -> Iterator[CapturedSends]:
    """The authorization stage's sends captured too, a root key for minting, alice's policy."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-test-root-key")
    monkeypatch.setattr(
        authorize_module,
        "issuer",
        TokenIssuer(
            secrets=SecretFiles(tmp_path),
            identifier="unit",
            location="unit",
            identity="",
            max_lifetime_s=600,
        ),
    )
    copies = CapturedSends()
    monkeypatch.setattr(authorize_module, "_produce", copies)

    async def dead_letter(
        key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        return await sends(dead_letters.get_topic_name(), key, value, headers)

    monkeypatch.setattr(authorize_module, "_send_dead_letter", dead_letter)

    class TenantTopic:  # declaring a real one needs a broker
        def __init__(self, tenant: str) -> None:
            self.name = settings.tenant_topic(tenant)

        def get_topic_name(self) -> str:
            return self.name

    async def tenant_events(tenant: str) -> TenantTopic:
        return TenantTopic(tenant)

    monkeypatch.setattr(authorize_module, "tenant_events", tenant_events)
    # faust's test_context delivers on an in-memory channel: the source for an unknown topic
    source = settings.source_for("<internal>")
    policy_index.replace_all(
        [parse_dataset({"id": "d", "owner": "alice", "source": source, "prefixes": ["/data"]})],
        [parse_tenant({"tenant": "alice", "subscriptions": [{"dataset": "d", "read": True}]})],
    )
    observed.unpublished_deliveries.clear()
    yield copies
    policy_index.replace_all([], [])
    observed.unpublished_deliveries.clear()


async def test_one_pass_writes_the_canonical_event_and_the_tenant_copy(
    sends: CapturedSends, tenant_copies: CapturedSends
) -> None:
    """Issue 13: the raw record is consumed once; its canonical event and each entitled
    tenant's authorized copy are written in the same pass (no second consume of
    storage.events), and the delivery is counted in process for the stats table."""
    async with ingest_module.declare_agent().test_context() as agent:
        await agent.put(value=raw(dcache_transfer()), key=b"k0")
        await agent.put(value=raw(dcache_transfer(billingPath="/elsewhere/x")), key=b"k1")

    [canonical] = [
        json.loads(m["value"])
        for m in sends.by_topic[storage_events.get_topic_name()]
        if json.loads(m["value"])["subject"].startswith("/data/")
    ]
    [copy] = tenant_copies.by_topic[settings.tenant_topic("alice")]
    delivered = json.loads(copy["value"])
    assert delivered["id"] == canonical["id"]
    assert delivered["subject"] == canonical["subject"] == "/data/alice/run42/file.root"
    assert delivered["readtoken"]
    assert copy["key"] == canonical["subject"].encode()
    assert set(tenant_copies.by_topic) == {settings.tenant_topic("alice")}  # /elsewhere: nobody's
    assert observed.unpublished_deliveries == {"alice": 1}
    assert dead_letters.get_topic_name() not in sends.by_topic


async def test_an_authorization_failure_is_a_dead_letter_after_the_canonical_event(
    sends: CapturedSends, tenant_copies: CapturedSends, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(event: Any, index: Any) -> Any:
        raise RecursionError("deliberately raised")

    monkeypatch.setattr(authorize_module, "authorize", failing)
    async with ingest_module.declare_agent().test_context() as agent:
        await agent.put(value=raw(dcache_transfer()), key=b"k0")

    [written] = sends.by_topic[storage_events.get_topic_name()]
    [dead] = sends.by_topic[dead_letters.get_topic_name()]
    context = DeadLetterContext.from_headers(dead["headers"])
    # the dead letter carries the canonical event as written, and points at the raw record
    assert (dead["key"], dead["value"]) == (written["key"], written["value"])
    assert context.stage == "authorize"
    assert context.reason == "authorization failed: RecursionError: deliberately raised"
    assert context.offset == 0
    assert tenant_copies.by_topic == {}
