"""The sink follows the tenants whose policies have triggers; a tenant topic that cannot be had
(Kafka refused to create it: its name collides with another's, '.' vs '_') is skipped and
counted, and the other tenants' topics are followed as usual.

Before: ``follow_policies`` raised from ``on_start`` and the worker hung at "Flush producer
buffer" (alive, never restarted), following no tenant at all."""

from __future__ import annotations

from typing import Any

from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.metrics import SINK_TOPIC_ERRORS
from streamapp.settings import Settings
from streamapp.sink.parts import SinkParts
from streamapp.sink.service import InvocationSink

SETTINGS = Settings()


def with_trigger(tenant: str) -> Any:
    trigger = {
        "name": "t",
        "action": "/ns/act",
        "api_host": "http://127.0.0.1:3233",
        "credentials": "ow",
    }
    return parse_tenant({"tenant": tenant, "triggers": [trigger]})


class Consumer:
    def __init__(self) -> None:
        self.subscriptions: list[list[str]] = []

    def subscribe(self, *, topics: list[str], listener: Any) -> None:
        self.subscriptions.append(list(topics))

    def unsubscribe(self) -> None:
        self.subscriptions.append([])


def unused(*_: Any) -> Any:
    raise AssertionError("not used by this test")


def sink(ensure_tenant_topic: Any) -> tuple[InvocationSink, Consumer]:
    index = PolicyIndex()
    index.replace_all([], [with_trigger("alpha"), with_trigger("co_ll")])
    parts = SinkParts(
        settings=SETTINGS,
        index=index,
        client=None,
        issuer=None,
        outcomes=None,
        consumer_factory=unused,
        send_invocation=unused,
        send_dead_letter=unused,
        ensure_tenant_topic=ensure_tenant_topic,
        declare_topics=unused,
    )
    built = InvocationSink(parts)
    consumer = Consumer()
    built.consumer.attach(consumer)
    return built, consumer


async def test_a_tenant_topic_that_cannot_be_created_is_skipped_and_counted() -> None:
    broken = {"co_ll"}

    async def tenant_events(tenant: str) -> None:
        if tenant in broken:
            raise RuntimeError("InvalidTopicError: collides with existing topics")

    before = SINK_TOPIC_ERRORS.labels("co_ll")._value.get()
    fake, consumer = sink(tenant_events)

    await fake.consumer.follow_policies()  # must not raise

    alpha, co_ll = SETTINGS.tenant_topic("alpha"), SETTINGS.tenant_topic("co_ll")
    assert consumer.subscriptions == [[alpha]]
    assert fake.consumer.subscribed == [alpha]
    assert SINK_TOPIC_ERRORS.labels("co_ll")._value.get() == before + 1

    # tried again at the next discovery; nothing changes while it still fails
    await fake.consumer.follow_policies()
    assert consumer.subscriptions == [[alpha]]
    assert SINK_TOPIC_ERRORS.labels("co_ll")._value.get() == before + 2

    broken.clear()  # the operator fixed it: followed from the next discovery on
    await fake.consumer.follow_policies()
    assert consumer.subscriptions[-1] == sorted([alpha, co_ll])
