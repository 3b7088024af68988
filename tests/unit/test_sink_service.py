"""The invocation sink (streamapp/sink/service.py) with fakes for its parts: an in-memory
consumer, an OpenWhisk client whose answers each test scripts, an in-memory outcome store and
output callables that record what they are given. The sink's own code runs unchanged (dispatch,
attempts, records, back-pressure, commits, revocation); no broker, each test in milliseconds.
The live tests (tests/integration/test_invoke_live.py) run the same code against Kafka."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import TopicPartition

from streamapp.clients.openwhisk import Answer
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.allowed_hosts import AllowedHosts
from streamapp.domain.authorize import authorize, authorized_event
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.index import PolicyIndex
from streamapp.domain.invocations import idempotency_key
from streamapp.domain.normalize import Normalized, normalize
from streamapp.domain.policy import parse_tenant
from streamapp.settings import Settings
from streamapp.sink.parts import SinkParts
from streamapp.sink.service import InvocationSink

SOURCE = "dcache://dcache.desy.example"
HOST = "http://127.0.0.1:3233"
SETTINGS = replace(
    Settings(),
    sink_throttle_base_s=0.01,
    sink_throttle_cap_s=0.02,
    sink_retry_base_s=0.001,
    sink_retry_cap_s=0.002,
    sink_revoke_grace_s=0.05,
    sink_max_pending=4,
    openwhisk_allowed_hosts=AllowedHosts.parse(HOST),
)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused: set[TopicPartition] = set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)


class FakeOutcomes:
    def __init__(self) -> None:
        self.finals: dict[str, str | None] = {}
        self.recent: dict[str, list[Any]] = defaultdict(list)
        self.catch_ups = 0

    def __contains__(self, key: object) -> bool:
        return key in self.finals

    def add(self, key: str, activation_id: str | None) -> None:
        self.finals[key] = activation_id

    async def catch_up(self) -> None:
        self.catch_ups += 1


Script = Callable[[str, dict[str, Any]], Awaitable[Answer]]


class FakeClient:
    """Answers each call with the test's script; remembers (tenant, subject) of every call."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    async def invoke(
        self,
        api_host: str,
        action: Any,
        credentials: str,
        params: dict[str, Any],
        *,
        tenant: str,
        blocking: bool,
        timeout_s: float,
    ) -> Answer:
        self.calls.append((tenant, params["event"]["subject"]))
        return await self.script(tenant, params)


def accepted(n: int = 0) -> Answer:
    return Answer(202, {"activationId": f"act-{n}"}, f"act-{n}", 0.001)


THROTTLED = Answer(
    429, {"error": "Too many requests in the last minute (count: 61, allowed: 60)."}, None, 0.001
)


class Outputs:
    def __init__(self) -> None:
        self.invocations: list[dict[str, Any]] = []
        self.dead_letters: list[bytes | None] = []

    async def invocation(self, key: Any, value: Any, headers: Any) -> Awaitable[None]:
        self.invocations.append(orjson.loads(value))
        return _done()

    async def dead_letter(self, key: Any, value: Any, headers: Any) -> Awaitable[None]:
        self.dead_letters.append(value)
        return _done()


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def policies() -> PolicyIndex:
    index = PolicyIndex()
    for tenant in ("alpha", "beta"):
        index.put_dataset(
            parse_dataset(
                {"id": tenant, "owner": tenant, "source": SOURCE, "prefixes": [f"/data/{tenant}"]}
            )
        )
        index.put_tenant(
            parse_tenant(
                {
                    "tenant": tenant,
                    "subscriptions": [{"dataset": tenant}],
                    "triggers": [
                        {"name": "t", "action": "/ns/act", "api_host": HOST, "credentials": "ow"}
                    ],
                }
            )
        )
    return index


@dataclass
class Harness:
    sink: InvocationSink
    consumer: FakeConsumer
    client: FakeClient
    outcomes: FakeOutcomes
    outputs: Outputs
    issuer: TokenIssuer
    index: PolicyIndex

    def record(self, tenant: str, offset: int, name: str | None = None) -> Record:
        """A tenant copy as the authorization stage writes it, at ``offset`` of partition 0."""
        raw = orjson.dumps(
            {
                "version": "1.0",
                "msgType": "transfer",
                "date": "2026-11-26T10:00:00.000+01:00",
                "status": {"code": 0, "msg": ""},
                "pnfsid": f"{offset:036d}",
                "billingPath": f"/data/{tenant}/{name or f'f{offset}'}.h5",
                "fileSize": 10,
                "isWrite": "write",
                "isP2p": False,
                "transferSize": 10,
            }
        )
        event = next(o.event for o in normalize(raw, SOURCE) if isinstance(o, Normalized))
        delivery = next(d for d in authorize(event, self.index).deliveries if d.tenant == tenant)
        tokens = self.issuer.issue(delivery, event, datetime.now(UTC))
        copy = authorized_event(event, delivery, tokens.read, tokens.write, tokens.problems)
        return Record(SETTINGS.tenant_topic(tenant), 0, offset, None, orjson.dumps(copy))

    def dispatch(self, *records: Record) -> None:
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self.sink.consumer.dispatch(tp, self.sink.consumer.take(tp), record)


@pytest.fixture
def make(tmp_path: Path) -> Callable[[Script], Harness]:
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")

    def build(script: Script) -> Harness:
        consumer, outcomes, outputs = FakeConsumer(), FakeOutcomes(), Outputs()
        client = FakeClient(script)
        index = policies()
        issuer = TokenIssuer(SecretFiles(tmp_path), "id", "loc", "", 3600)

        async def nothing(*_: Any) -> None:
            return None

        parts = SinkParts(
            settings=SETTINGS,
            index=index,
            client=client,
            issuer=issuer,
            outcomes=outcomes,
            consumer_factory=lambda: consumer,
            send_invocation=outputs.invocation,
            send_dead_letter=outputs.dead_letter,
            ensure_tenant_topic=nothing,
            declare_topics=nothing,
        )
        sink = InvocationSink(parts)
        sink.consumer.attach(consumer)
        return Harness(sink, consumer, client, outcomes, outputs, issuer, index)

    return build


async def settle(harness: Harness) -> None:
    """Until every dispatched record's task has finished."""
    for _ in range(200):
        jobs = [
            job for jobs in harness.sink.consumer.jobs.values() for job in jobs if not job.done()
        ]
        if not jobs:
            return
        await asyncio.wait(jobs, timeout=1)
    raise AssertionError("jobs did not finish")


async def assigned(harness: Harness, *tenants: str) -> None:
    await harness.sink.consumer.on_assigned(
        {TopicPartition(SETTINGS.tenant_topic(t), 0) for t in tenants}
    )


async def test_commit_never_passes_an_unfinished_record(make: Callable[[Script], Harness]) -> None:
    release = asyncio.Event()

    async def script(tenant: str, params: dict[str, Any]) -> Answer:
        if params["event"]["subject"].endswith("/f0.h5"):
            await release.wait()  # the first record's call hangs
        return accepted()

    harness = make(script)
    await assigned(harness, "alpha")
    harness.dispatch(*(harness.record("alpha", n) for n in range(3)))
    for _ in range(50):  # records 1 and 2 finish, record 0 is still in its call
        await asyncio.sleep(0)
    await harness.sink.consumer.commit()
    tp = TopicPartition(SETTINGS.tenant_topic("alpha"), 0)
    assert all(commit.get(tp, 0) <= 0 for commit in harness.consumer.commits)
    assert len(harness.outputs.invocations) == 2
    release.set()
    await settle(harness)
    await harness.sink.consumer.commit()
    assert harness.consumer.commits[-1][tp] == 3
    assert len(harness.outputs.invocations) == 3


async def test_a_throttled_tenant_pauses_only_its_own_lane(
    make: Callable[[Script], Harness],
) -> None:
    throttles = {"alpha": 3}

    async def script(tenant: str, params: dict[str, Any]) -> Answer:
        if throttles.get(tenant, 0):
            throttles[tenant] -= 1
            return THROTTLED
        return accepted()

    harness = make(script)
    await assigned(harness, "alpha", "beta")
    harness.dispatch(harness.record("alpha", 0), *(harness.record("beta", n) for n in range(5)))
    await settle(harness)
    order = [tenant for tenant, _ in harness.client.calls]
    # beta's five calls all went out while alpha was throttled (alpha's success is its 4th call)
    assert order.count("alpha") == 4
    last_alpha = len(order) - 1 - order[::-1].index("alpha")
    assert [t for t in order[:last_alpha] if t == "beta"] == ["beta"] * 5
    finals = [r for r in harness.outputs.invocations if r["final"]]
    assert sorted(r["tenant"] for r in finals) == ["alpha"] + ["beta"] * 5
    assert not harness.outputs.dead_letters  # a throttled event is retried, never dropped


async def test_revoked_during_a_call_leaves_the_record_uncommitted(
    make: Callable[[Script], Harness],
) -> None:
    async def script(tenant: str, params: dict[str, Any]) -> Answer:
        await asyncio.sleep(10)  # longer than the revocation grace
        return accepted()

    harness = make(script)
    await assigned(harness, "alpha")
    harness.dispatch(harness.record("alpha", 0))
    for _ in range(20):
        await asyncio.sleep(0)
    assert harness.client.calls  # the call is in flight
    tp = TopicPartition(SETTINGS.tenant_topic("alpha"), 0)
    await harness.sink.consumer.release({tp})
    assert all(tp not in commit or commit[tp] == 0 for commit in harness.consumer.commits)
    assert not harness.outputs.invocations  # no record claims an outcome it does not have
    assert tp not in harness.sink.consumer.ledgers


async def test_records_wait_for_the_outcome_catch_up_and_skip_what_already_ran(
    make: Callable[[Script], Harness],
) -> None:
    harness = make(lambda tenant, params: _answer(accepted()))
    done = harness.record("alpha", 0)
    event_id = orjson.loads(done.value)["id"]
    harness.outcomes.add(idempotency_key("alpha", event_id, "t"), "act-earlier")
    harness.dispatch(done, harness.record("alpha", 1))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not harness.client.calls  # nothing runs before the success records are caught up
    await assigned(harness, "alpha")
    await settle(harness)
    assert harness.outcomes.catch_ups == 1
    assert [subject for _, subject in harness.client.calls] == ["/data/alpha/f1.h5"]


async def test_a_busy_tenant_is_paused_at_the_limit_and_resumed_at_half(
    make: Callable[[Script], Harness],
) -> None:
    release = asyncio.Event()

    async def script(tenant: str, params: dict[str, Any]) -> Answer:
        await release.wait()
        return accepted()

    harness = make(script)
    await assigned(harness, "alpha", "beta")
    alpha = TopicPartition(SETTINGS.tenant_topic("alpha"), 0)
    harness.dispatch(*(harness.record("alpha", n) for n in range(SETTINGS.sink_max_pending)))
    harness.dispatch(harness.record("beta", 0))
    harness.sink.consumer.apply_backpressure()
    assert harness.consumer.paused == {alpha}  # beta, under its limit, keeps flowing
    release.set()
    await settle(harness)
    harness.sink.consumer.apply_backpressure()
    assert harness.consumer.paused == set()


async def _answer(answer: Answer) -> Answer:
    return answer
