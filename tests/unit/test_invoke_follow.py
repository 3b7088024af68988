"""The sink follows the tenants whose policies have triggers; a tenant topic that cannot be had
(Kafka refused to create it: its name collides with another's, '.' vs '_') is skipped and
counted, and the other tenants' topics are followed as usual.

Before: ``_follow_policies`` raised from ``on_start`` and the worker hung at "Flush producer
buffer" (alive, never restarted), following no tenant at all."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from streamapp.agents import invoke
from streamapp.app import settings
from streamapp.domain.policy import parse_tenant
from streamapp.metrics import SINK_TOPIC_ERRORS
from streamapp.tables import policy_index


def with_trigger(tenant: str) -> Any:
    trigger = {
        "name": "t",
        "action": "/ns/act",
        "api_host": "http://127.0.0.1:3233",
        "credentials": "ow",
    }
    return parse_tenant({"tenant": tenant, "triggers": [trigger]})


@pytest.fixture
def tenants() -> Iterator[None]:
    policy_index.replace_all([], [with_trigger("alpha"), with_trigger("co_ll")])
    yield
    policy_index.replace_all([], [])


class Consumer:
    def __init__(self) -> None:
        self.subscriptions: list[list[str]] = []

    def subscribe(self, *, topics: list[str], listener: Any) -> None:
        self.subscriptions.append(list(topics))

    def unsubscribe(self) -> None:
        self.subscriptions.append([])


def sink() -> Any:
    async def release(_: Any) -> None:
        return None

    return SimpleNamespace(
        _consumer=Consumer(),
        _subscribed=[],
        _tenant_of_topic=re.compile(settings.tenant_topic_regex()),
        _release=release,
    )


async def test_a_tenant_topic_that_cannot_be_created_is_skipped_and_counted(
    tenants: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {"co_ll"}

    async def tenant_events(tenant: str) -> None:
        if tenant in broken:
            raise RuntimeError("InvalidTopicError: collides with existing topics")

    monkeypatch.setattr(invoke, "tenant_events", tenant_events)
    before = SINK_TOPIC_ERRORS.labels("co_ll")._value.get()
    fake = sink()

    await invoke.InvocationSink._follow_policies(fake)  # must not raise

    alpha, co_ll = settings.tenant_topic("alpha"), settings.tenant_topic("co_ll")
    assert fake._consumer.subscriptions == [[alpha]]
    assert fake._subscribed == [alpha]
    assert SINK_TOPIC_ERRORS.labels("co_ll")._value.get() == before + 1

    # tried again at the next discovery; nothing changes while it still fails
    await invoke.InvocationSink._follow_policies(fake)
    assert fake._consumer.subscriptions == [[alpha]]
    assert SINK_TOPIC_ERRORS.labels("co_ll")._value.get() == before + 2

    broken.clear()  # the operator fixed it: followed from the next discovery on
    await invoke.InvocationSink._follow_policies(fake)
    assert fake._consumer.subscriptions[-1] == sorted([alpha, co_ll])
