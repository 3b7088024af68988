"""What the sink writes, each acknowledged by the broker before the sink moves on: one
invocations record per attempt (no token, no credential; the final one is what the outcome
store mirrors) and dead letters (the consumed record without its tokens, with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.domain.deadletter import HEADER_PREFIX, DeadLetterContext
from streamapp.domain.invocations import Verdict, idempotency_key
from streamapp.domain.redaction import excerpt, strip_tokens
from streamapp.domain.tokens import format_instant
from streamapp.domain.triggers import Trigger
from streamapp.outputs import exit_if_undelivered
from streamapp.sink.outcomes import FINAL_HEADER, OUTCOME_HEADER
from streamapp.sink.parts import SinkParts


class SinkRecords:
    def __init__(self, parts: SinkParts) -> None:
        self._parts = parts

    async def outcome(  # noqa: PLR0917 - one field each of the record it writes
        self,
        record: ConsumerRecord[Any, Any],
        event: dict[str, Any],
        tenant: str,
        trigger: Trigger | None,
        verdict: Verdict,
        attempt: int,
        status: int | None,
        duration: float | None,
        *,
        outcome: str,
        final: bool = True,
    ) -> None:
        """One invocations record (no token, no credential), acknowledged by the broker."""
        trigger_name = trigger.name if trigger else "-"
        value = {
            "event_id": event.get("id"),
            "tenant": tenant,
            "dataset": event.get("dataset"),
            "subject": event.get("subject"),
            "type": event.get("type"),
            "trigger": trigger_name,
            "action": str(trigger.action) if trigger else None,
            "attempt": attempt,
            "outcome": outcome,
            "final": final,
            "status": status,
            "activation_id": verdict.activation_id,
            "duration_ms": None if duration is None else round(duration * 1000, 3),
            # readable by the tenant over the web: bounded, sanitized, without the call's tokens
            "reason": excerpt(verdict.reason, secrets=tokens_of(event)),
            "time": format_instant(datetime.now(UTC)),
            "source": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        }
        key = idempotency_key(tenant, str(event.get("id")), trigger_name)
        future = await self._parts.send_invocation(
            key.encode(),
            orjson.dumps(value),
            [
                (OUTCOME_HEADER, outcome.encode()),
                (FINAL_HEADER, b"1" if final else b"0"),
                ("content-type", b"application/json"),
            ],
        )
        exit_if_undelivered("invoke", future)
        await future

    async def dead_letter(
        self,
        record: ConsumerRecord[Any, Any],
        reason: str,
        trigger: str,
        attempts: int,
        *,
        secrets: tuple[str, ...] = (),
    ) -> None:
        """The consumed record as a dead letter, without its tokens (the event's other bytes
        as they were when nothing had to be removed)."""
        value, stripped = strip_tokens(record.value)
        context = DeadLetterContext.of("invoke", record, excerpt(reason, secrets=secrets))
        headers = [
            *context.headers(),
            (HEADER_PREFIX + "trigger", trigger.encode()),
            (HEADER_PREFIX + "attempts", str(attempts).encode()),
        ]
        if stripped:
            headers.append((HEADER_PREFIX + "tokens", b"stripped"))
        future = await self._parts.send_dead_letter(record.key, value, headers)
        exit_if_undelivered("invoke", future)
        await future


def tokens_of(event: Any) -> tuple[str, ...]:
    if not isinstance(event, dict):
        return ()
    return tuple(v for k in ("readtoken", "writetoken") if isinstance(v := event.get(k), str))
