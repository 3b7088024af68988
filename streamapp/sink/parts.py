"""What the invocation sink works with, passed in rather than imported: a worker builds these
from its app (``sink/wiring.py``); tests pass fakes (tests/unit/test_sink_service.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from streamapp.domain.index import PolicyIndex
from streamapp.settings import Settings

# (key, value, headers) -> the broker's acknowledgement (awaited by the sink before it moves on)
Send = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]]


@dataclass(frozen=True)
class SinkParts:
    settings: Settings
    index: PolicyIndex  # the tenant policies, kept current by the tables
    client: Any  # streamapp.clients.openwhisk.OpenWhiskClient or a stand-in with its methods
    issuer: Any  # streamapp.delegation.TokenIssuer or a stand-in
    outcomes: Any  # streamapp.sink.outcomes.FinalOutcomes or a stand-in
    consumer_factory: Callable[[], Any]  # a new, unstarted AIOKafkaConsumer (or a fake)
    send_invocation: Send  # to the invocations topic
    send_dead_letter: Send  # to the dead-letter topic
    ensure_tenant_topic: Callable[[str], Awaitable[Any]]  # create/declare a tenant's topic
    declare_topics: Callable[[], Awaitable[None]]  # the invocations and dead-letter topics
