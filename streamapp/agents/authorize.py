"""Authorization: canonical events -> each entitled tenant's own topic, with delegated tokens.

Decisions: ``streamapp.domain.authorize`` (who) and ``streamapp.delegation`` (which tokens).
At-least-once as in ingest: a batch is acknowledged only once all its outputs are on the broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from streamapp import observed
from streamapp.agents.outputs import (
    described,
    exit_if_undelivered,
    finish_even_if_cancelled,
    send_dead_letter,
)
from streamapp.app import app, settings
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import Delivery, authorize, authorized_event
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CONTENT_TYPE, CanonicalEvent, EventFormatError, parse_canonical
from streamapp.metrics import AUTHORIZED_EVENTS, DELIVERIES, TOKEN_MINT_SECONDS, TOKENS
from streamapp.tables import policy_index
from streamapp.topics import dead_letters, deliveries, storage_events_raw, tenant_events

log = logging.getLogger(__name__)

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
    async for event in stream.events():  # one at a time: see agents/ingest.py
        await finish_even_if_cancelled(deliver(event.message))


async def deliver(message: Any) -> None:
    """Authorize one canonical event and hand each tenant's copy to the producer.

    Whatever one record makes our code raise becomes a dead letter with the reason and the
    original bytes, and the stream goes on: one hostile record must not stop every tenant's
    events behind it. Only a broker that refuses an output stops the worker (outputs.py)."""
    try:
        event = parse_canonical(orjson.loads(message.value))
    except (orjson.JSONDecodeError, EventFormatError, TypeError) as exc:
        await _dead_letter(message, f"not a canonical event: {exc}")
        return
    try:
        decision = authorize(event, policy_index)
    except Exception as exc:
        log.exception("authorize: event %s could not be authorized", event.get("id"))
        await _dead_letter(message, f"authorization failed: {_describe(exc)}")
        return
    if decision.ownership is None:
        AUTHORIZED_EVENTS.labels("unowned").inc()
        return
    if not decision.deliveries:
        AUTHORIZED_EVENTS.labels("denied").inc()
        return
    AUTHORIZED_EVENTS.labels("delivered").inc()
    now = datetime.now(UTC)
    for delivery in decision.deliveries:
        try:
            value = _tenant_copy(delivery, event, now)
        except Exception as exc:  # noqa: BLE001 - any failure of one copy: dead letter, go on
            # Only the exception's class: minting errors are not ours to word, and a
            # message from a token library has no place on a topic.
            log.error(
                "authorize: copy of event %s for tenant %s failed: %s",
                event.get("id"),
                delivery.tenant,
                type(exc).__name__,
            )
            await _dead_letter(
                message, f"tenant {delivery.tenant}: copy not prepared: {type(exc).__name__}"
            )
            continue
        try:
            topic = await tenant_events(delivery.tenant)
        except Exception as exc:  # noqa: BLE001 - e.g. its topic collides: this tenant's copy only
            log.error("authorize: no topic for tenant %s: %r", delivery.tenant, exc)
            await _dead_letter(
                message, f"tenant {delivery.tenant}: its topic is unavailable: {described(exc)}"
            )
            continue
        try:
            future = await topic.send(key=event["subject"].encode(), value=value, headers=_HEADERS)
        except Exception as exc:  # noqa: BLE001 - refused at once (too large...): a dead letter
            log.error("authorize: copy for tenant %s refused: %r", delivery.tenant, exc)
            await _dead_letter(
                message, f"tenant {delivery.tenant}: copy refused by the producer: {described(exc)}"
            )
            continue
        exit_if_undelivered("authorize", future)  # the broker's failure after the send: exit
        DELIVERIES.inc()
        observed.delivered(delivery.tenant, dict(event))
        counted = await deliveries.send(key=delivery.tenant, value=b"")
        exit_if_undelivered("authorize", counted)


def _tenant_copy(delivery: Delivery, event: CanonicalEvent, now: datetime) -> bytes:
    started = time.perf_counter()
    tokens = issuer.issue(delivery, event, now)
    TOKEN_MINT_SECONDS.observe(time.perf_counter() - started)
    _count_tokens(tokens.read is not None, tokens.write is not None, tokens.problems)
    value = authorized_event(event, delivery, tokens.read, tokens.write, tokens.problems)
    return orjson.dumps(value)


async def _dead_letter(message: Any, reason: str) -> None:
    context = DeadLetterContext(
        reason=reason,
        stage="authorize",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    value = message.value if isinstance(message.value, bytes) else b""
    await send_dead_letter("authorize", _send_dead_letter, message.key, value, context)


async def _send_dead_letter(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    return await dead_letters.send(key=key, value=value, headers=headers)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _count_tokens(read: bool, write: bool, problems: Sequence[str]) -> None:
    if read:
        TOKENS.labels("read", "minted").inc()
    if write:
        TOKENS.labels("write", "minted").inc()
    if problems:
        TOKENS.labels("any", "not_minted").inc(len(problems))
