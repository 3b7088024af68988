"""The authorization stage (agents/authorize.py, called by the ingest agent for every
canonical event) with its sends captured, no broker: one hostile record or one failing copy
is dead-lettered and the stream goes on.

Live-broker behaviour is in tests/integration/test_authorize_live.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymacaroons import Macaroon

from streamapp.agents import authorize as authorize_module
from streamapp.app import app
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.policy import parse_tenant
from streamapp.domain.tokens import deserialize
from streamapp.tables import policy_index

SOURCE = "dcache://unit"


def canonical(subject: str, event_id: str = "e1") -> CanonicalEvent:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": "storage.object.created",
        "subject": subject,
        "time": "2026-11-28T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"path": subject, "size": 1, "storage": "dcache", "operation": "transfer"},
    }


DEAD_LETTER_TOPIC = "unit.deadletter"  # dead letters go through the same _produce


class Captured:
    def __init__(self) -> None:
        self.tenant: list[tuple[str, bytes]] = []
        self.dead: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.refused: set[str] = set()  # tenants whose copies the producer refuses at once
        self.dead_letter_limit: int | None = None  # dead letters with larger values refused

    @staticmethod
    def _done() -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def seeded_index() -> Iterator[None]:
    policy_index.replace_all(
        [
            parse_dataset(
                {"id": "exp", "owner": "alice", "source": SOURCE, "prefixes": ["/data/exp"]}
            )
        ],
        [parse_tenant({"tenant": "alice", "subscriptions": [{"dataset": "exp"}]})],
    )
    yield
    policy_index.replace_all([], [])


@pytest.fixture
async def captured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seeded_index: None) -> Captured:
    app.finalize()
    app.conf.store = "memory://"  # type: ignore[assignment]  # faust coerces str to URL
    app.flow_control.resume()
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
    sent = Captured()

    class TenantTopic:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def get_topic_name(self) -> str:
            return self.tenant

    async def tenant_events(tenant: str) -> TenantTopic:
        return TenantTopic(tenant)

    async def produce(
        topic: str, key: bytes | None, value: bytes, headers: Any
    ) -> asyncio.Future[None]:
        if topic in sent.refused:
            raise ValueError("MessageSizeTooLargeError: 1000472 bytes")
        if topic == DEAD_LETTER_TOPIC:
            if sent.dead_letter_limit is not None and len(value) > sent.dead_letter_limit:
                raise ValueError("MessageSizeTooLargeError")
            sent.dead.append((key, value, headers))
        else:
            sent.tenant.append((topic, value))
        return Captured._done()

    class DeadLetters:
        def get_topic_name(self) -> str:
            return DEAD_LETTER_TOPIC

    monkeypatch.setattr(authorize_module, "tenant_events", tenant_events)
    monkeypatch.setattr(authorize_module, "_produce", produce)
    monkeypatch.setattr(authorize_module, "dead_letters", DeadLetters())
    return sent


@dataclass
class Message:
    value: bytes
    key: bytes | None
    topic: str = "dcache.billing"
    partition: int = 0
    offset: int = 0


async def put_all(inputs: list[tuple[bytes, bytes | None]]) -> None:
    for offset, (value, key) in enumerate(inputs):
        await authorize_module.deliver_message(Message(value, key, offset=offset))


async def test_a_path_too_long_to_mint_gets_no_token_and_the_next_event_does(
    captured: Captured,
) -> None:
    """A 70 KB path made pymacaroons' serializer raise inside minting (not a TokenError) and
    crashed the agent: now the copy goes out without a token, saying why, and the next one
    is minted as usual."""
    huge = canonical("/data/exp/" + "x" * 70_000, "huge")
    inputs = [orjson.dumps(huge), orjson.dumps(canonical("/data/exp/ok.h5", "ok"))]
    await put_all([(value, f"k{number}".encode()) for number, value in enumerate(inputs)])

    delivered = [orjson.loads(value) for _, value in captured.tenant]
    assert [e["id"] for e in delivered] == ["huge", "ok"]
    assert "readtoken" not in delivered[0]
    assert "exceeds" in delivered[0]["tokenerror"]
    assert delivered[1]["readtoken"]
    assert captured.dead == []


async def test_any_exception_while_authorizing_is_a_dead_letter(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = authorize

    def flaky(event: CanonicalEvent, index: Any) -> Any:
        if event["id"] == "poison":
            raise RecursionError("deliberately raised")
        return real(event, index)

    monkeypatch.setattr(authorize_module, "authorize", flaky)
    inputs = [
        orjson.dumps(canonical("/data/exp/a.h5", "poison")),
        b"\xff not json",
        orjson.dumps({"specversion": "1.0"}),
        orjson.dumps(canonical("/data/exp/b.h5", "fine")),
    ]
    await put_all([(value, f"k{number}".encode()) for number, value in enumerate(inputs)])

    assert [orjson.loads(v)["id"] for _, v in captured.tenant] == ["fine"]
    assert [(k, v) for k, v, _ in captured.dead] == [
        (b"k0", inputs[0]),
        (b"k1", inputs[1]),
        (b"k2", inputs[2]),
    ]
    reasons = [DeadLetterContext.from_headers(h).reason for _, _, h in captured.dead]
    assert reasons[0] == "authorization failed: RecursionError: deliberately raised"
    assert reasons[1].startswith("not a canonical event")
    assert reasons[2].startswith("not a canonical event")


async def test_a_failing_copy_for_one_tenant_spares_the_others(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_index.replace_all(
        [
            parse_dataset(
                {
                    "id": "exp",
                    "owner": "alice",
                    "source": SOURCE,
                    "prefixes": ["/data/exp"],
                    "shared_with": ["bob"],
                }
            )
        ],
        [
            parse_tenant({"tenant": "alice", "subscriptions": [{"dataset": "exp"}]}),
            parse_tenant({"tenant": "bob", "subscriptions": [{"dataset": "exp"}]}),
        ],
    )
    # the tokens of alice's copy fail, whether an event's copies are issued together (the
    # agent's path: one failure fails the lot, and each copy is then issued alone) or alone
    real_tokens = authorize_module.issuer._tokens

    def tokens(delivery: Any, event: CanonicalEvent, now: datetime, authority: Any) -> Any:
        if delivery.tenant == "alice":
            raise OverflowError("secret-looking detail")
        return real_tokens(delivery, event, now, authority)

    monkeypatch.setattr(authorize_module.issuer, "_tokens", tokens)
    await put_all([(orjson.dumps(canonical("/data/exp/a.h5")), b"k")])

    assert [tenant for tenant, _ in captured.tenant] == ["bob"]
    ((_, _, headers),) = captured.dead
    reason = DeadLetterContext.from_headers(headers).reason
    assert reason == "tenant alice: copy not prepared: OverflowError"
    assert "secret" not in reason


def _share_with_bob() -> None:
    policy_index.replace_all(
        [
            parse_dataset(
                {
                    "id": "exp",
                    "owner": "alice",
                    "source": SOURCE,
                    "prefixes": ["/data/exp"],
                    "shared_with": ["bob"],
                }
            )
        ],
        [
            parse_tenant({"tenant": "alice", "subscriptions": [{"dataset": "exp"}]}),
            parse_tenant({"tenant": "bob", "subscriptions": [{"dataset": "exp"}]}),
        ],
    )


async def test_a_tenant_whose_topic_cannot_be_had_gets_a_dead_letter_the_others_their_copy(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka refused to create a colliding tenant topic (``co.ll`` vs ``co_ll``): the agent
    crashed on every event at ``tenant_events()``. Now: a dead letter naming the tenant, and
    the other tenants' copies still go out."""
    _share_with_bob()
    real = vars(authorize_module)["tenant_events"]  # the fixture's stand-in

    async def tenant_events(tenant: str) -> Any:
        if tenant == "alice":
            raise RuntimeError("InvalidTopicError: topic collides")
        return await real(tenant)

    monkeypatch.setattr(authorize_module, "tenant_events", tenant_events)
    await put_all(
        [
            (orjson.dumps(canonical("/data/exp/a.h5", "one")), b"k0"),
            (orjson.dumps(canonical("/data/exp/b.h5", "two")), b"k1"),
        ]
    )

    assert [(t, orjson.loads(v)["id"]) for t, v in captured.tenant] == [
        ("bob", "one"),
        ("bob", "two"),
    ]
    assert [key for key, _, _ in captured.dead] == [b"k0", b"k1"]
    reason = DeadLetterContext.from_headers(captured.dead[0][2]).reason
    assert reason.startswith("tenant alice: its topic is unavailable: RuntimeError")


async def test_a_copy_the_producer_refuses_is_a_dead_letter_and_the_stream_goes_on(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant copy over the producer's size limit raised from ``topic.send`` and crashed the
    agent (the record lost, no dead letter). Now the refusal is the dead letter's reason."""
    _share_with_bob()
    captured.refused.add("alice")
    inputs = [orjson.dumps(canonical("/data/exp/a.h5", "big"))]
    await put_all([(inputs[0], b"k0")])

    assert [t for t, _ in captured.tenant] == ["bob"]
    [(key, value, headers)] = captured.dead
    assert (key, value) == (b"k0", inputs[0])
    reason = DeadLetterContext.from_headers(headers).reason
    assert reason.startswith("tenant alice: copy refused by the producer: ValueError")
    assert "MessageSizeTooLarge" in reason


async def test_a_dead_letter_the_producer_refuses_leaves_a_stand_in(
    captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared with ingest (``streamapp.outputs.send_dead_letter``): the original value too large
    for a dead letter -> an empty-valued one saying where the original stays."""
    captured.refused.add("alice")
    captured.dead_letter_limit = 100  # bytes of value: the original is refused, a stand-in not
    value = orjson.dumps(canonical("/data/exp/a.h5", "big"))
    await put_all([(value, b"k0"), (orjson.dumps(canonical("/data/exp/b.h5", "next")), b"k1")])

    assert captured.tenant == []
    [(key, empty, headers), _] = captured.dead
    assert (key, empty) == (b"k0", b"")
    context = DeadLetterContext.from_headers(headers)
    assert context.reason.startswith("tenant alice: copy refused by the producer")
    assert f"the original {len(value)}-byte value is not kept here" in context.reason
    assert context.reason.endswith(f"{context.topic}/{context.partition}/{context.offset}")


async def test_copies_sent_after_a_slow_send_use_files_added_meanwhile(
    captured: Captured, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An event's copies are issued together, then sent one by one; when a send is slow (the
    broker holds it a minute) the later copies are issued again on lookups within their few
    seconds, so bob's base macaroon, added meanwhile, is used for bob's copy. (Found by the
    adversary review of issuing copies together.)"""

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(
        authorize_module,
        "issuer",
        TokenIssuer(SecretFiles(tmp_path, clock=clock), "unit", "unit", "", 600),
    )
    _share_with_bob()
    base = Macaroon(location="unit", identifier="bob-base", key=b"bobs-key")
    base.add_first_party_caveat("path:/data/exp")
    captured_produce = authorize_module._produce

    async def slow_produce(
        topic: str, key: bytes | None, value: bytes, headers: Any
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = await captured_produce(topic, key, value, headers)
        if topic == "alice":  # a minute on the broker; bob's own file appears meanwhile
            (tmp_path / "macaroons" / "tenants").mkdir(parents=True, exist_ok=True)
            (tmp_path / "macaroons" / "tenants" / "bob.macaroon").write_text(base.serialize())
            clock.now += 60.0
        return future

    monkeypatch.setattr(authorize_module, "_produce", slow_produce)
    origin = authorize_module.Origin("storage.events", 0, 0, None, b"{}")
    await authorize_module.deliver_event(canonical("/data/exp/a.h5"), origin)

    identifiers = {
        tenant: deserialize(orjson.loads(value)["readtoken"]).identifier
        for tenant, value in captured.tenant
    }
    assert identifiers == {"alice": "unit", "bob": "bob-base"}
