"""The sink: each tenant's authorized events → the OpenWhisk actions its triggers name.

Delivery, as users of the stock OpenWhisk Kafka feed wish they had it:

- at least once: a tenant-topic offset is committed only after the outcome of its record is
  durable — a ``success`` record on the invocations topic, a final ``action_failed`` record, or
  a dead letter (reason and attempt count in headers, original bytes as value);
- never twice after a recorded success: the key ``tenant/trigger/event-id`` of every success
  record is mirrored on every worker (``streamapp.sink.outcomes``) and checked before invoking
  (final failures too: a replay does not run a failed action again or dead-letter it twice);
- 429: the tenant's lane pauses and narrows (``streamapp.sink.lanes``) and the call is retried,
  never dropped; 5xx/408/409/timeouts/connection errors: exponential back-off with jitter up to
  ``STREAMAPP_SINK_MAX_ATTEMPTS``, then a dead letter; other 4xx: a dead letter at once;
- tenants are isolated: each record runs as its own task in its tenant's lane, offsets are
  committed per partition in order (``streamapp.domain.ledger``), and a tenant with too much
  unfinished work has only *its* topic paused;
- entitlement is checked again at invocation time (a revoked tenant's backlog is not run), and
  tokens about to expire (after an outage, say) are minted afresh from the same grant;
- no record stops the sink: whatever goes wrong with one (not an event, a trigger that cannot
  be evaluated, an error of any class from the client) becomes a dead letter with the reason;
  an ``api_host`` outside the allow-list or an unknown credential is a dead letter before any
  request is made;
- nothing the sink writes carries a token: dead letters hold the consumed event without
  ``readtoken``/``writetoken`` (header ``streamapp.dlq.tokens: stripped``), and reasons are
  bounded, sanitized excerpts of what endpoints answered (``domain.triggers.excerpt``).

Its collaborators (settings, the consumer factory, the OpenWhisk client, the token issuer, the
outcome store, the policy index, the outputs) come in as ``SinkParts`` (``sink/wiring.py``
builds them for a worker; the unit tests pass fakes).

Why a faust Service with its own aiokafka consumer rather than a faust agent: the topics to
consume change while workers run (a tenant gains or loses triggers through a policy update),
which a faust agent's fixed channel cannot follow, and an agent acknowledging out of order can
commit past a record still in flight (faust #606). The sink follows the policy table and
commits explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from streamapp import observed
from streamapp.clients.openwhisk import (
    CredentialsMissingError,
    HostNotAllowedError,
    OpenWhiskUnreachableError,
    PayloadTooLargeError,
)
from streamapp.domain.authorize import Delivery, authorize, authorized_event
from streamapp.domain.backoff import equal_jitter_delay
from streamapp.domain.deadletter import HEADER_PREFIX, DeadLetterContext
from streamapp.domain.events import CanonicalEvent, EventFormatError, parse_canonical
from streamapp.domain.ledger import PartitionLedger
from streamapp.domain.sink_rules import (
    Attempts,
    DeadLetter,
    Retry,
    RetryPolicy,
    next_step,
    outgrown,
    should_pause,
)
from streamapp.domain.tokens import format_instant
from streamapp.domain.triggers import (
    Limits,
    Outcome,
    Trigger,
    Verdict,
    excerpt,
    idempotency_key,
    invocation_params,
    judge,
    matching_triggers,
    parse_throttle,
    strip_tokens,
    tokens_expire_during_call,
)
from streamapp.metrics import (
    INVOCATION_ATTEMPTS,
    INVOCATION_SECONDS,
    INVOCATIONS,
    SINK_PAUSED,
    SINK_PENDING,
    SINK_TOPIC_ERRORS,
)
from streamapp.outputs import EXIT_OUTPUT_LOST, exit_if_undelivered
from streamapp.sink.lanes import TenantLane
from streamapp.sink.outcomes import FINAL_HEADER, OUTCOME_HEADER
from streamapp.sink.parts import SinkParts

log = logging.getLogger(__name__)


class InvocationSink(faust.Service):
    """Runs in every worker after its tables are recovered (faust starts services then)."""

    def __init__(self, parts: SinkParts, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts = parts
        self._settings = settings = parts.settings
        self._index = parts.index
        self._tenant_of_topic = re.compile(settings.tenant_topic_regex())
        self._ledgers: dict[TopicPartition, PartitionLedger] = {}
        self._jobs: dict[TopicPartition, set[asyncio.Task[bool]]] = defaultdict(set)
        self._abandon: dict[TopicPartition, asyncio.Event] = defaultdict(asyncio.Event)
        self._lanes: dict[str, TenantLane] = {}
        self._running: dict[str, _Claim] = {}  # idempotency key -> the copy that runs it
        self._paused: set[TopicPartition] = set()
        self._subscribed: list[str] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._last_commit = 0.0
        self._caught_up = asyncio.Event()  # success records read up to the last assignment
        self.outcomes = parts.outcomes
        self.client = parts.client
        self.issuer = parts.issuer

    # --- lifecycle -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self._parts.declare_topics()
        await self.outcomes.start()
        await self.client.start()
        consumer = self._parts.consumer_factory()
        await consumer.start()
        self._consumer = consumer
        try:
            await self._follow_policies()
        except Exception:  # the consume loop tries again within the discovery interval
            log.exception("invocation sink: following the policies failed")
        self._loop_task = asyncio.create_task(self._consume(), name="invocation-sink")
        self._loop_task.add_done_callback(_exit_if_crashed)
        observed.register_sink(self)
        log.info("invocation sink started as consumer group %s", self._settings.sink_group_id)

    async def on_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._consumer is not None:
            await self._release(set(self._ledgers))
            await self._consumer.stop()
        await self.client.close()
        await self.outcomes.stop()

    def recent_invocations(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's latest invocation records this sink has read, newest first."""
        return list(reversed(self.outcomes.recent.get(tenant, ())))

    def lag(self) -> int:
        """Records of this worker's tenant-topic partitions not yet finished (for /metrics)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        for tp, ledger in list(self._ledgers.items()):
            end, start = consumer.highwater(tp), ledger.unfinished_from()
            if end is not None and start is not None:
                total += max(0, end - start)
        return total

    # --- the consume loop ----------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        dispatched = 0
        reported = followed = time.monotonic()
        while True:
            if time.monotonic() - followed >= self._settings.sink_discovery_interval_s:
                followed = time.monotonic()
                try:
                    await self._follow_policies()
                except Exception:  # keep consuming what we follow; tried again next time
                    log.exception("invocation sink: following the policies failed")
            if not self._subscribed:
                await asyncio.sleep(self._settings.sink_discovery_interval_s)
                continue
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                # aiokafka fetches for new partitions while our assignment listener still runs:
                # take them on here too (their jobs wait until the success records caught up)
                if tp not in consumer.assignment():
                    continue  # revoked since the fetch: uncommitted, so the new owner reads them
                ledger = self._take(tp)
                for record in records:
                    self._dispatch(tp, ledger, record)
                dispatched += len(records)
            if time.monotonic() - reported >= 30:
                reported = time.monotonic()
                log.info(
                    "invocation sink: %d records taken in the last 30 s, %d unfinished, "
                    "%d of %d partitions paused",
                    dispatched,
                    sum(len(jobs) for jobs in self._jobs.values()),
                    len(self._paused),
                    len(self._ledgers),
                )
                dispatched = 0
            self._apply_backpressure()
            if time.monotonic() - self._last_commit >= self._settings.sink_commit_interval_s:
                await self._commit()

    async def _follow_policies(self) -> None:
        """Consume the topics of exactly the tenants whose policy has triggers: a tenant gains
        its first trigger -> its topic joins the subscription (one rebalance of the sink group,
        within ``STREAMAPP_SINK_DISCOVERY_INTERVAL``); it loses its last -> the topic leaves."""
        assert self._consumer is not None
        wanted = sorted(
            self._settings.tenant_topic(tenant)
            for tenant, policy in self._index.tenants.items()
            if policy.triggers
        )
        if wanted == self._subscribed:
            return
        usable = []
        for topic in wanted:
            match = self._tenant_of_topic.fullmatch(topic)
            if match and topic not in self._subscribed:
                # created with the configured partitions, never auto-created with one. A topic
                # that cannot be had (refused by Kafka, e.g. colliding with another's name)
                # costs its tenant only: skipped, tried again at the next discovery.
                try:
                    await self._parts.ensure_tenant_topic(match["tenant"])
                except Exception as exc:  # noqa: BLE001 - any failure: skip this tenant's topic
                    SINK_TOPIC_ERRORS.labels(match["tenant"]).inc()
                    log.error("invocation sink: tenant topic %s skipped: %r", topic, exc)
                    continue
            usable.append(topic)
        if usable == self._subscribed:
            return
        if usable:
            self._consumer.subscribe(topics=usable, listener=_Rebalance(self))
        else:
            self._consumer.unsubscribe()
            await self._release(set(self._ledgers))
        log.info("invocation sink follows %d tenant topics", len(usable))
        self._subscribed = usable

    def _dispatch(
        self, tp: TopicPartition, ledger: PartitionLedger, record: ConsumerRecord[Any, Any]
    ) -> None:
        match = self._tenant_of_topic.fullmatch(tp.topic)
        tenant = match["tenant"] if match else tp.topic
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = TenantLane(
                tenant,
                self._limits_of(tenant),
                throttle_base_s=self._settings.sink_throttle_base_s,
                throttle_cap_s=self._settings.sink_throttle_cap_s,
            )
        ledger.received(record.offset)
        lane.jobs += 1
        task = asyncio.create_task(self._handle(record, lane, self._abandon[tp]))
        jobs = self._jobs[tp]
        jobs.add(task)
        SINK_PENDING.inc()

        def done(finished: asyncio.Task[bool]) -> None:
            jobs.discard(finished)
            lane.jobs -= 1
            SINK_PENDING.dec()
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                # every error of the record itself is a dead letter (``_handle``): this is an
                # outcome that could not be written. Exit rather than hold the partition for
                # good: uncommitted, the record is replayed after the supervisor's restart.
                log.critical("invocation job for %s@%d failed: %r", tp, record.offset, error)
                logging.shutdown()
                os._exit(EXIT_OUTPUT_LOST)
            if finished.result():
                ledger.finished(record.offset)

        task.add_done_callback(done)

    def _apply_backpressure(self) -> None:
        """Pause the partitions of tenants with too much unfinished work; resume them at half."""
        assert self._consumer is not None
        high = self._settings.sink_max_pending
        for tp in list(self._ledgers):
            match = self._tenant_of_topic.fullmatch(tp.topic)
            lane = self._lanes.get(match["tenant"]) if match else None
            if lane is None:
                continue
            paused = tp in self._paused
            if should_pause(lane.jobs, high, paused) != paused:
                if paused:
                    self._consumer.resume(tp)
                    self._paused.discard(tp)
                else:
                    self._consumer.pause(tp)
                    self._paused.add(tp)
        SINK_PAUSED.set(len(self._paused))

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        # No lock here: a commit from the loop can wait for a rebalance whose revocation
        # listener commits too; serialising them would deadlock. Offsets only grow, and a
        # stale commit landing late only means a longer replay (final outcomes are skipped).
        self._last_commit = time.monotonic()
        offsets = {}
        for tp, ledger in self._ledgers.items():
            if only is not None and tp not in only:
                continue
            offset = ledger.committable()
            if offset is not None:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("sink commit deferred: %r", exc)
            return
        for tp, offset in offsets.items():
            held = self._ledgers.get(tp)
            if held is not None and (held.committed or -1) < offset:
                held.committed = offset

    # --- partitions coming and going -----------------------------------------------------------

    def _take(self, tp: TopicPartition) -> PartitionLedger:
        """The ledger of an assigned partition, and a fresh abandon flag if it was revoked."""
        ledger = self._ledgers.get(tp)
        if ledger is None:
            ledger = self._ledgers[tp] = PartitionLedger()
            if self._abandon[tp].is_set():
                self._abandon[tp] = asyncio.Event()
        return ledger

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._take(tp)
        # another worker may have recorded outcomes for these partitions: see them first
        await self.outcomes.catch_up()
        self._caught_up.set()
        log.info("invocation sink assigned %d tenant partitions", len(assigned))

    async def _release(self, revoked: set[TopicPartition]) -> None:
        """Stop work on ``revoked``: calls in progress may finish (up to the grace period),
        retries waiting are abandoned (their records stay uncommitted), then commit."""
        self._caught_up.clear()
        pending: set[asyncio.Task[bool]] = set()
        for tp in revoked:
            self._abandon[tp].set()
            pending |= self._jobs.get(tp, set())
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self._settings.sink_revoke_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        await self._commit(only=revoked)
        for tp in revoked:
            self._ledgers.pop(tp, None)
            self._jobs.pop(tp, None)
            self._paused.discard(tp)

    # --- one record ----------------------------------------------------------------------------

    async def _handle(
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
            await self._dead_letter(record, f"sink error: {_describe(exc)}", "-", 0)
            INVOCATIONS.labels("dead_lettered").inc()
            return True

    async def _handle_event(
        self, record: ConsumerRecord[Any, Any], lane: TenantLane, abandon: asyncio.Event
    ) -> bool:
        tenant = lane.tenant
        try:
            event: Any = parse_canonical(orjson.loads(record.value))
        except (orjson.JSONDecodeError, EventFormatError, TypeError) as exc:
            await self._dead_letter(record, f"not an authorized event: {_describe(exc)}", "-", 0)
            return True
        if event.get("tenant") != tenant:
            reason = f"an event for tenant {event.get('tenant')!r} on {tenant}'s topic"
            await self._dead_letter(record, reason, "-", 0)
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
            await self._record(
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
        tenant = lane.tenant
        attempt = 0
        attempts = Attempts()
        policy = RetryPolicy(self._settings.sink_max_attempts, trigger.retry_failed)
        while True:
            if abandon.is_set():
                return False
            attempt += 1
            status: int | None = None
            duration: float | None = None
            label: str
            try:
                async with lane.slot():
                    if abandon.is_set():
                        return False
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
                status, duration = answer.status, answer.duration_s
                INVOCATION_SECONDS.observe(duration)
                if verdict.activation_id is None and answer.activation_id:
                    verdict = Verdict(verdict.outcome, verdict.reason, answer.activation_id)
                label = verdict.outcome.value
            except OpenWhiskUnreachableError as exc:
                verdict, label = Verdict(Outcome.RETRYABLE, f"unreachable: {exc}"), "unreachable"
            except (PayloadTooLargeError, CredentialsMissingError, HostNotAllowedError) as exc:
                verdict, label = Verdict(Outcome.REJECTED, str(exc)), "rejected"
            except Exception as exc:  # noqa: BLE001 - any class: a dead letter, not a crash
                verdict = Verdict(Outcome.REJECTED, f"invocation error: {_describe(exc)}")
                label = "rejected"
            INVOCATION_ATTEMPTS.labels(label).inc()
            outcome = verdict.outcome
            step, attempts = next_step(outcome, attempts, policy)
            retry, dead = isinstance(step, Retry), isinstance(step, DeadLetter)
            if dead:  # the dead letter first: a final record must never stand for a lost one
                await self._dead_letter(
                    record, verdict.reason, trigger.name, attempt, secrets=_tokens_of(event)
                )
            await self._record(
                record,
                event,
                tenant,
                trigger,
                verdict,
                attempt,
                status,
                duration,
                outcome=label,
                final=not retry,
            )
            if not retry:
                self.outcomes.add(key, verdict.activation_id)
            if outcome is Outcome.SUCCESS:
                await lane.succeeded()
                INVOCATIONS.labels("success").inc()
                return True
            if isinstance(step, Retry):
                if step.backoff_tries is not None:  # (a throttled lane's slot waits it out)
                    await _sleep_unless(abandon, self._backoff(step.backoff_tries))
                continue
            INVOCATIONS.labels("dead_lettered" if dead else "action_failed").inc()
            return True

    def _backoff(self, failures: int) -> float:
        settings = self._settings
        return equal_jitter_delay(
            failures, settings.sink_retry_base_s, settings.sink_retry_cap_s, _RNG
        )

    def _limits_of(self, tenant: str) -> Limits:
        policy = self._index.tenants.get(tenant)
        return policy.limits if policy is not None else Limits()

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

    # --- durable outcomes ------------------------------------------------------------------------

    async def _record(  # noqa: PLR0917 - one field each of the record it writes
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
            "reason": excerpt(verdict.reason, secrets=_tokens_of(event)),
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

    async def _dead_letter(
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
        context = DeadLetterContext(
            reason=excerpt(reason, secrets=secrets),
            stage="invoke",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
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


class _Claim:
    __slots__ = ("holders", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holders = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: InvocationSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink._release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._sink.on_assigned(set(assigned))


def _exit_if_crashed(task: asyncio.Task[None]) -> None:
    """A sink that stopped consuming must not look alive: exit, the supervisor restarts us and
    the uncommitted records are consumed again."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("invocation sink crashed: %r", task.exception(), exc_info=task.exception())
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)


def _describe(exc: BaseException) -> str:
    """An exception as a reason: its class and a bounded, sanitized excerpt of its message."""
    return excerpt(f"{type(exc).__name__}: {exc}")


def _tokens_of(event: Any) -> tuple[str, ...]:
    if not isinstance(event, dict):
        return ()
    return tuple(v for k in ("readtoken", "writetoken") if isinstance(v := event.get(k), str))


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
