"""Authorization: canonical events -> each entitled tenant's own topic, with delegated tokens.

Decisions: ``streamapp.domain.authorize`` (who) and ``streamapp.delegation`` (which tokens).
At-least-once as in ingest: a batch is acknowledged only once all its outputs are on the broker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from streamapp.agents.outputs import finish_even_if_cancelled, wait_delivered
from streamapp.app import app, settings
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize, authorized_event
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CONTENT_TYPE, EventFormatError, parse_canonical
from streamapp.metrics import AUTHORIZED_EVENTS, DELIVERIES, TOKEN_MINT_SECONDS, TOKENS
from streamapp.tables import policy_index
from streamapp.topics import dead_letters, storage_events_raw, tenant_events

_HEADERS = [("content-type", CONTENT_TYPE.encode())]

issuer = TokenIssuer(
    secrets=SecretFiles(settings.secrets_dir),
    identifier=settings.macaroon_identifier,
    location=settings.macaroon_location,
    identity=settings.macaroon_identity,
    max_lifetime_s=settings.token_max_lifetime_s,
)


@app.agent(storage_events_raw, concurrency=1)
async def authorize_events(stream: Any) -> None:
    async for batch in stream.take_events(
        settings.ingest_batch_max, within=settings.ingest_batch_within
    ):
        await finish_even_if_cancelled(deliver(batch))


async def deliver(batch: Sequence[Any]) -> None:
    pending: list[Awaitable[Any]] = []
    now = datetime.now(UTC)
    for item in batch:
        message = item.message
        try:
            event = parse_canonical(orjson.loads(message.value))
        except (orjson.JSONDecodeError, EventFormatError, TypeError) as exc:
            context = DeadLetterContext(
                reason=f"not a canonical event: {exc}",
                stage="authorize",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            pending.append(
                await dead_letters.send(
                    key=message.key, value=message.value, headers=context.headers()
                )
            )
            continue
        decision = authorize(event, policy_index)
        if decision.ownership is None:
            AUTHORIZED_EVENTS.labels("unowned").inc()
            continue
        if not decision.deliveries:
            AUTHORIZED_EVENTS.labels("denied").inc()
            continue
        AUTHORIZED_EVENTS.labels("delivered").inc()
        for delivery in decision.deliveries:
            started = time.perf_counter()
            tokens = issuer.issue(delivery, event, now)
            TOKEN_MINT_SECONDS.observe(time.perf_counter() - started)
            _count_tokens(tokens.read is not None, tokens.write is not None, tokens.problems)
            value = authorized_event(event, delivery, tokens.read, tokens.write, tokens.problems)
            topic = await tenant_events(delivery.tenant)
            pending.append(
                await topic.send(
                    key=event["subject"].encode(), value=orjson.dumps(value), headers=_HEADERS
                )
            )
            DELIVERIES.inc()
    await wait_delivered("authorize", pending)


def _count_tokens(read: bool, write: bool, problems: Sequence[str]) -> None:
    if read:
        TOKENS.labels("read", "minted").inc()
    if write:
        TOKENS.labels("write", "minted").inc()
    if problems:
        TOKENS.labels("any", "not_minted").inc(len(problems))
