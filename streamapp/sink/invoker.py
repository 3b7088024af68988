"""One record of a tenant topic through its triggers: the per-record half of the sink.

For each trigger the record fires: claim the event's idempotency key (one copy of a
duplicated event runs, the other finds its outcome), call the action within the tenant's lane,
and let ``domain.sink_rules.next_step`` decide between retry, a final record and a dead letter.
Every decision is written (invocations record, dead letter) and acknowledged by the broker
before the record counts as finished; tokens are minted afresh when they would expire during
the call or are wider than the grant now. What is written never carries a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.clients.openwhisk import (
    CredentialsMissingError,
    HostNotAllowedError,
    OpenWhiskUnreachableError,
    PayloadTooLargeError,
)
from streamapp.domain.authorize import Delivery, authorize, authorized_event
from streamapp.domain.backoff import equal_jitter_delay
from streamapp.domain.events import CanonicalEvent, EventFormatError, parse_canonical
from streamapp.domain.invocations import (
    Outcome,
    Verdict,
    idempotency_key,
    invocation_params,
    judge,
    parse_throttle,
    tokens_expire_during_call,
)
from streamapp.domain.redaction import excerpt
from streamapp.domain.sink_rules import (
    Attempts,
    DeadLetter,
    Retry,
    RetryPolicy,
    next_step,
    outgrown,
)
from streamapp.domain.triggers import Trigger, matching_triggers
from streamapp.metrics import INVOCATION_ATTEMPTS, INVOCATION_SECONDS, INVOCATIONS
from streamapp.sink.lanes import TenantLane
from streamapp.sink.parts import SinkParts
from streamapp.sink.records import SinkRecords, tokens_of

log = logging.getLogger(__name__)


class Invoker:
    """Runs records through their triggers; ``caught_up`` is set while the outcome store has
    read the success records of every assigned partition (nothing runs before that)."""

    def __init__(self, parts: SinkParts, caught_up: asyncio.Event) -> None:
        self._parts = parts
        self._settings = parts.settings
        self._index = parts.index
        self._caught_up = caught_up
        self._running: dict[str, _Claim] = {}  # idempotency key -> the copy that runs it
        self.outcomes = parts.outcomes
        self.client = parts.client
        self.issuer = parts.issuer
        self._write = SinkRecords(parts)

    async def handle(
        self, record: ConsumerRecord[Any, Any], lane: TenantLane, abandon: asyncio.Event
    ) -> bool:
        """Run every trigger the record fires. True once its outcome is durable; False if the
        partition was revoked first (the record is then replayed by its next owner)."""
        await _first_of(self._caught_up, abandon)
        if abandon.is_set():
            return False
        try:
            return await self._handle_event(record, lane, abandon)
        except Exception as exc:  # noqa: BLE001 - one record must never stop the sink
            log.warning(
                "sink: %s[%d]@%d dead-lettered after %s",
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            await self._write.dead_letter(record, f"sink error: {_describe(exc)}", "-", 0)
            INVOCATIONS.labels("dead_lettered").inc()
            return True

    async def _handle_event(
        self, record: ConsumerRecord[Any, Any], lane: TenantLane, abandon: asyncio.Event
    ) -> bool:
        tenant = lane.tenant
        try:
            event: Any = parse_canonical(orjson.loads(record.value))
        except (orjson.JSONDecodeError, EventFormatError, TypeError) as exc:
            await self._write.dead_letter(
                record, f"not an authorized event: {_describe(exc)}", "-", 0
            )
            return True
        if event.get("tenant") != tenant:
            reason = f"an event for tenant {event.get('tenant')!r} on {tenant}'s topic"
            await self._write.dead_letter(record, reason, "-", 0)
            return True
        policy = self._index.tenants.get(tenant)
        if policy is None or not policy.triggers:
            return True
        lane.update_limits(policy.limits)
        decision = authorize(event, self._index)
        delivery = next((d for d in decision.deliveries if d.tenant == tenant), None)
        if delivery is None or decision.ownership is None:
            # entitlement withdrawn since the event was authorized: its backlog is not run
            INVOCATIONS.labels("revoked").inc()
            withdrawn = Verdict(Outcome.REJECTED, "tenant no longer entitled to this event")
            await self._write.outcome(
                record, event, tenant, None, withdrawn, 0, None, None, outcome="revoked"
            )
            return True
        for trigger in matching_triggers(policy.triggers, event, decision.ownership.relative):
            if not await self._run_trigger(
                record, event=event, delivery=delivery, trigger=trigger, lane=lane, abandon=abandon
            ):
                return False
        return True

    async def _run_trigger(
        self,
        record: ConsumerRecord[Any, Any],
        *,
        event: dict[str, Any],
        delivery: Delivery,
        trigger: Trigger,
        lane: TenantLane,
        abandon: asyncio.Event,
    ) -> bool:
        tenant = lane.tenant
        key = idempotency_key(tenant, event["id"], trigger.name)
        # The same event can arrive twice (the stages before are at-least-once): one copy runs,
        # the other waits for it and then finds its success record.
        claim = self._running.setdefault(key, _Claim())
        claim.holders += 1
        try:
            async with claim.lock:
                if key in self.outcomes:
                    INVOCATIONS.labels("duplicate").inc()
                    return True
                return await self._attempts(
                    record,
                    event,
                    key=key,
                    delivery=delivery,
                    trigger=trigger,
                    lane=lane,
                    abandon=abandon,
                )
        finally:
            claim.holders -= 1
            if not claim.holders:
                del self._running[key]

    async def _attempts(
        self,
        record: ConsumerRecord[Any, Any],
        event: dict[str, Any],
        *,
        key: str,
        delivery: Delivery,
        trigger: Trigger,
        lane: TenantLane,
        abandon: asyncio.Event,
    ) -> bool:
        """Call until ``next_step`` says stop. True once the outcome is durable; False if the
        partition was revoked meanwhile (nothing recorded for the unfinished attempt)."""
        tenant = lane.tenant
        attempt = 0
        attempts = Attempts()
        policy = RetryPolicy(self._settings.sink_max_attempts, trigger.retry_failed)
        while True:
            if abandon.is_set():
                return False
            attempt += 1
            call = await self._call(event, delivery, trigger, lane, abandon)
            if call is None:
                return False
            event = call.event
            INVOCATION_ATTEMPTS.labels(call.label).inc()
            verdict = call.verdict
            step, attempts = next_step(verdict.outcome, attempts, policy)
            retry, dead = isinstance(step, Retry), isinstance(step, DeadLetter)
            if dead:  # the dead letter first: a final record must never stand for a lost one
                await self._write.dead_letter(
                    record, verdict.reason, trigger.name, attempt, secrets=tokens_of(event)
                )
            await self._write.outcome(
                record,
                event,
                tenant,
                trigger,
                verdict,
                attempt,
                call.status,
                call.duration,
                outcome=call.label,
                final=not retry,
            )
            if not retry:
                self.outcomes.add(key, verdict.activation_id)
            if verdict.outcome is Outcome.SUCCESS:
                await lane.succeeded()
                INVOCATIONS.labels("success").inc()
                return True
            if isinstance(step, Retry):
                if step.backoff_tries is not None:  # (a throttled lane's slot waits it out)
                    await _sleep_unless(abandon, self._backoff(step.backoff_tries))
                continue
            INVOCATIONS.labels("dead_lettered" if dead else "action_failed").inc()
            return True

    async def _call(
        self,
        event: dict[str, Any],
        delivery: Delivery,
        trigger: Trigger,
        lane: TenantLane,
        abandon: asyncio.Event,
    ) -> _Call | None:
        """One attempt within the tenant's lane, judged; None if abandoned before the call.
        Whatever the client raises becomes a verdict (a dead letter at worst), never a crash."""
        tenant = lane.tenant
        try:
            async with lane.slot():
                if abandon.is_set():
                    return None
                # checked once the slot is ours: a throttled lane may have waited minutes
                event = self._fresh_tokens(event, delivery, trigger)
                answer = await self.client.invoke(
                    trigger.api_host,
                    trigger.action,
                    trigger.credentials,
                    invocation_params(event, trigger, tenant),
                    tenant=tenant,
                    blocking=trigger.blocking,
                    timeout_s=trigger.timeout_s,
                )
                verdict = judge(answer.status, answer.body, trigger.blocking)
                if verdict.outcome is Outcome.THROTTLED:
                    # pause the lane before this slot frees: no other call slips through
                    await lane.throttled(parse_throttle(verdict.reason))
        except OpenWhiskUnreachableError as exc:
            verdict = Verdict(Outcome.RETRYABLE, f"unreachable: {exc}")
            return _Call(event, verdict, "unreachable", None, None)
        except (PayloadTooLargeError, CredentialsMissingError, HostNotAllowedError) as exc:
            return _Call(event, Verdict(Outcome.REJECTED, str(exc)), "rejected", None, None)
        except Exception as exc:  # noqa: BLE001 - any class: a dead letter, not a crash
            verdict = Verdict(Outcome.REJECTED, f"invocation error: {_describe(exc)}")
            return _Call(event, verdict, "rejected", None, None)
        INVOCATION_SECONDS.observe(answer.duration_s)
        if verdict.activation_id is None and answer.activation_id:
            verdict = Verdict(verdict.outcome, verdict.reason, answer.activation_id)
        return _Call(event, verdict, verdict.outcome.value, answer.status, answer.duration_s)

    def _backoff(self, failures: int) -> float:
        settings = self._settings
        return equal_jitter_delay(
            failures, settings.sink_retry_base_s, settings.sink_retry_cap_s, _RNG
        )

    def _fresh_tokens(
        self, event: dict[str, Any], delivery: Delivery, trigger: Trigger
    ) -> dict[str, Any]:
        """The event with tokens valid for the whole call and no wider than the grant now:
        minted again when the ones it carries expire too soon (after an outage or a long
        back-log), or carry a token the current grant no longer gives (a write share or the
        read token revoked since the event was authorized)."""
        now = datetime.now(UTC)
        if not tokens_expire_during_call(
            event.get("tokenexpires"), now, trigger.timeout_s
        ) and not outgrown(event, delivery):
            return event
        canonical: CanonicalEvent = {k: event[k] for k in CanonicalEvent.__annotations__}  # type: ignore[assignment]
        tokens = self.issuer.issue(delivery, canonical, now)
        # Built as the authorization stage builds it, so nothing of the old grant survives
        # (a write path without its token, a stale token error).
        return authorized_event(canonical, delivery, tokens.read, tokens.write, tokens.problems)


@dataclass(frozen=True)
class _Call:
    """One attempt: the event as sent (tokens perhaps minted afresh) and how it went."""

    event: dict[str, Any]
    verdict: Verdict
    label: str  # the attempt's metric label and the record's outcome
    status: int | None
    duration: float | None


class _Claim:
    __slots__ = ("holders", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holders = 0


def _describe(exc: BaseException) -> str:
    """An exception as a reason: its class and a bounded, sanitized excerpt of its message."""
    return excerpt(f"{type(exc).__name__}: {exc}")


async def _first_of(*events: asyncio.Event) -> None:
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


_RNG = random.Random()  # noqa: S311 - jitter, not secrets
