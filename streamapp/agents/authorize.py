"""Authorization: each canonical event -> each entitled tenant's own topic, with delegated tokens.

Where events are authorized. Not an agent of its own: the ingest agent (agents/ingest.py)
calls ``deliver_event`` for every canonical event it has just written to ``storage.events``,
in the same pass over the raw record — one consume path per record instead of two. The
canonical topic stays a product for its other consumers. Decisions:
``streamapp.domain.authorize`` (who) and ``streamapp.delegation`` (which tokens).

At-least-once as in ingest: the raw record is acknowledged when the agent moves on, and faust
flushes the producer before it commits, so every tenant copy is on the broker before the raw
record's offset is committed; a copy the broker refuses for good stops the worker first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streamapp import observed
from streamapp.app import app, settings
from streamapp.delegation import DelegatedTokens, SecretFiles, TokenIssuer
from streamapp.domain.authorize import Delivery, authorize, authorized_event
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CONTENT_TYPE, CanonicalEvent, EventFormatError, parse_canonical
from streamapp.metrics import (
    AUTHORIZED_EVENTS,
    DELIVERIES,
    TOKENS,
    count,
)
from streamapp.outputs import (
    described,
    exit_if_undelivered,
    send_bytes,
    send_dead_letter,
)
from streamapp.tables import policy_index
from streamapp.topics import dead_letters, tenant_events

log = logging.getLogger(__name__)

_HEADERS = [("content-type", CONTENT_TYPE.encode())]

issuer = TokenIssuer(
    secrets=SecretFiles(settings.secrets_dir),
    identifier=settings.macaroon_identifier,
    location=settings.macaroon_location,
    identity=settings.macaroon_identity,
    max_lifetime_s=settings.token_max_lifetime_s,
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event came from, for its dead letters: the input record's coordinates, and
    the bytes a dead letter carries (the canonical event as written to ``storage.events``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


async def deliver_message(message: Any) -> None:
    """Authorize one canonical event given as a Kafka message (its JSON bytes): shape checked
    first, a malformed one is a dead letter."""
    value = message.value if isinstance(message.value, bytes) else b""
    origin = Origin(message.topic, message.partition, message.offset, message.key, value)
    try:
        event = parse_canonical(orjson.loads(value))
    except (orjson.JSONDecodeError, EventFormatError, TypeError) as exc:
        await _dead_letter(origin, f"not a canonical event: {exc}")
        return
    await deliver_event(event, origin)


async def deliver_event(event: CanonicalEvent, origin: Origin) -> None:
    """Authorize one canonical event and hand each tenant's copy to the producer.

    Whatever one event makes our code raise becomes a dead letter with the reason and the
    original bytes, and the stream goes on: one hostile record must not stop every tenant's
    events behind it. Only a broker that refuses an output stops the worker (outputs.py)."""
    try:
        decision = authorize(event, policy_index)
    except Exception as exc:
        log.exception("authorize: event %s could not be authorized", event.get("id"))
        await _dead_letter(origin, f"authorization failed: {_describe(exc)}")
        return
    if decision.ownership is None:
        count(AUTHORIZED_EVENTS, "unowned")
        return
    if not decision.deliveries:
        count(AUTHORIZED_EVENTS, "denied")
        return
    count(AUTHORIZED_EVENTS, "delivered")
    now = datetime.now(UTC)
    key = event["subject"].encode()
    issued = _issued_together(decision.deliveries, event, now)
    for index, delivery in enumerate(decision.deliveries):
        if issued is not None and not issuer.still_current():
            issued = None  # slow sends: the rest issued alone, on lookups within their seconds
        try:
            value = _tenant_copy(delivery, event, now, issued[index] if issued else None)
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
                origin, f"tenant {delivery.tenant}: copy not prepared: {type(exc).__name__}"
            )
            continue
        try:
            topic = await tenant_events(delivery.tenant)
        except Exception as exc:  # noqa: BLE001 - e.g. its topic collides: this tenant's copy only
            log.error("authorize: no topic for tenant %s: %r", delivery.tenant, exc)
            await _dead_letter(
                origin, f"tenant {delivery.tenant}: its topic is unavailable: {described(exc)}"
            )
            continue
        try:
            # straight to the producer: the value is serialized already (Topic.send's
            # per-message machinery is measurable at this rate: docs/benchmarks.md)
            future = await _produce(topic.get_topic_name(), key, value, _HEADERS)
        except Exception as exc:  # noqa: BLE001 - refused at once (too large...): a dead letter
            log.error("authorize: copy for tenant %s refused: %r", delivery.tenant, exc)
            await _dead_letter(
                origin, f"tenant {delivery.tenant}: copy refused by the producer: {described(exc)}"
            )
            continue
        exit_if_undelivered("authorize", future)  # the broker's failure after the send: exit
        count(DELIVERIES)
        observed.delivered(delivery.tenant, event)


def _issued_together(
    deliveries: Sequence[Delivery], event: CanonicalEvent, now: datetime
) -> list[DelegatedTokens] | None:
    """Every copy's tokens at once (the per-event work done once); None if that fails, and
    each copy is then issued alone, so that only the copies that fail become dead letters."""
    try:
        return issuer.issue_event(deliveries, event, now)  # it times the tokens it mints
    except Exception as exc:  # noqa: BLE001 - each copy is tried alone: a failure is its own
        log.warning(
            "authorize: tokens of event %s not issued together (%s): copy by copy",
            event.get("id"),
            type(exc).__name__,
        )
        return None


def _tenant_copy(
    delivery: Delivery, event: CanonicalEvent, now: datetime, tokens: DelegatedTokens | None
) -> bytes:
    if tokens is None:
        tokens = issuer.issue(delivery, event, now)
    _count_tokens(tokens.read is not None, tokens.write is not None, tokens.problems)
    value = authorized_event(event, delivery, tokens.read, tokens.write, tokens.problems)
    return orjson.dumps(value)


async def _dead_letter(origin: Origin, reason: str) -> None:
    context = DeadLetterContext.of("authorize", origin, reason)
    await send_dead_letter("authorize", _send_dead_letter, origin.key, origin.value, context)


async def _produce(
    topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    return await send_bytes(app.producer, topic, key, value, headers)


async def _send_dead_letter(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    # through send_bytes as every other output: in the batch-wise ingest a fetch's dead
    # letters then stay in the order they were made (outputs.FetchOutputs)
    return await _produce(dead_letters.get_topic_name(), key, value, headers)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _count_tokens(read: bool, write: bool, problems: Sequence[str]) -> None:
    if read:
        count(TOKENS, "read", "minted")
    if write:
        count(TOKENS, "write", "minted")
    if problems:
        count(TOKENS, "any", "not_minted", amount=len(problems))
