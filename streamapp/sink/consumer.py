"""The sink's consumer: which tenant topics it follows, what it takes, when it commits.

- follows the policy table: a tenant with triggers has its topic in the subscription (created
  with the configured partitions first; a topic that cannot be had costs its tenant only);
- hands each record to the ``Invoker`` as its own task in its tenant's lane;
- commits per partition in order through ``domain.ledger.PartitionLedger``: never past a record
  whose outcome is not durable;
- pauses a tenant's partitions at ``STREAMAPP_SINK_MAX_PENDING`` unfinished records and resumes
  them at half (``domain.sink_rules.should_pause``);
- on revocation lets calls in flight finish within the grace period, abandons waiting retries
  (their records stay uncommitted for the next owner), then commits what finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import defaultdict
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord

from streamapp.domain.ledger import PartitionLedger
from streamapp.domain.sink_rules import should_pause
from streamapp.domain.triggers import Limits
from streamapp.metrics import SINK_PAUSED, SINK_PENDING, SINK_TOPIC_ERRORS
from streamapp.outputs import EXIT_OUTPUT_LOST
from streamapp.sink.invoker import Invoker
from streamapp.sink.lanes import TenantLane
from streamapp.sink.parts import SinkParts

log = logging.getLogger(__name__)


class SinkConsumer:
    """Owns the aiokafka consumer (``attach``) and the per-partition bookkeeping."""

    def __init__(self, parts: SinkParts, invoker: Invoker, caught_up: asyncio.Event) -> None:
        self._parts = parts
        self._settings = settings = parts.settings
        self._index = parts.index
        self._invoker = invoker
        self._caught_up = caught_up  # success records read up to the last assignment
        self._tenant_of_topic = re.compile(settings.tenant_topic_regex())
        self.ledgers: dict[TopicPartition, PartitionLedger] = {}
        self.jobs: dict[TopicPartition, set[asyncio.Task[bool]]] = defaultdict(set)
        self._abandon: dict[TopicPartition, asyncio.Event] = defaultdict(asyncio.Event)
        self._lanes: dict[str, TenantLane] = {}
        self._paused: set[TopicPartition] = set()
        self.subscribed: list[str] = []
        self._consumer: Any = None  # an AIOKafkaConsumer (or a fake with its methods)
        self._last_commit = 0.0

    def attach(self, consumer: Any) -> None:
        """The started consumer to work with."""
        self._consumer = consumer

    @property
    def attached(self) -> bool:
        return self._consumer is not None

    async def stop(self) -> None:
        """Release every partition (finish or abandon its work, commit), then stop consuming."""
        await self.release(set(self.ledgers))
        await self._consumer.stop()

    def lag(self) -> int:
        """Records of this worker's tenant-topic partitions not yet finished (for /metrics)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        for tp, ledger in list(self.ledgers.items()):
            end, start = consumer.highwater(tp), ledger.unfinished_from()
            if end is not None and start is not None:
                total += max(0, end - start)
        return total

    # --- the consume loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """The consume loop (until cancelled)."""
        assert self._consumer is not None
        consumer = self._consumer
        dispatched = 0
        reported = followed = time.monotonic()
        while True:
            if time.monotonic() - followed >= self._settings.sink_discovery_interval_s:
                followed = time.monotonic()
                try:
                    await self.follow_policies()
                except Exception:  # keep consuming what we follow; tried again next time
                    log.exception("invocation sink: following the policies failed")
            if not self.subscribed:
                await asyncio.sleep(self._settings.sink_discovery_interval_s)
                continue
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                # aiokafka fetches for new partitions while our assignment listener still runs:
                # take them on here too (their jobs wait until the success records caught up)
                if tp not in consumer.assignment():
                    continue  # revoked since the fetch: uncommitted, so the new owner reads them
                ledger = self.take(tp)
                for record in records:
                    self.dispatch(tp, ledger, record)
                dispatched += len(records)
            if time.monotonic() - reported >= 30:
                reported = time.monotonic()
                log.info(
                    "invocation sink: %d records taken in the last 30 s, %d unfinished, "
                    "%d of %d partitions paused",
                    dispatched,
                    sum(len(jobs) for jobs in self.jobs.values()),
                    len(self._paused),
                    len(self.ledgers),
                )
                dispatched = 0
            self.apply_backpressure()
            if time.monotonic() - self._last_commit >= self._settings.sink_commit_interval_s:
                await self.commit()

    async def follow_policies(self) -> None:
        """Consume the topics of exactly the tenants whose policy has triggers: a tenant gains
        its first trigger -> its topic joins the subscription (one rebalance of the sink group,
        within ``STREAMAPP_SINK_DISCOVERY_INTERVAL``); it loses its last -> the topic leaves."""
        assert self._consumer is not None
        wanted = sorted(
            self._settings.tenant_topic(tenant)
            for tenant, policy in self._index.tenants.items()
            if policy.triggers
        )
        if wanted == self.subscribed:
            return
        usable = []
        for topic in wanted:
            match = self._tenant_of_topic.fullmatch(topic)
            if match and topic not in self.subscribed:
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
        if usable == self.subscribed:
            return
        if usable:
            self._consumer.subscribe(topics=usable, listener=_Rebalance(self))
        else:
            self._consumer.unsubscribe()
            await self.release(set(self.ledgers))
        log.info("invocation sink follows %d tenant topics", len(usable))
        self.subscribed = usable

    def dispatch(
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
        task = asyncio.create_task(self._invoker.handle(record, lane, self._abandon[tp]))
        jobs = self.jobs[tp]
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

    def apply_backpressure(self) -> None:
        """Pause the partitions of tenants with too much unfinished work; resume them at half."""
        assert self._consumer is not None
        high = self._settings.sink_max_pending
        for tp in list(self.ledgers):
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

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        # No lock here: the loop and the revocation listener may both commit. Offsets only
        # grow, and a stale commit landing late only means a longer replay (final outcomes
        # are skipped). (aiokafka 0.14's commit does not wait for a rebalance in progress.)
        self._last_commit = time.monotonic()
        offsets = {}
        for tp, ledger in self.ledgers.items():
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
            held = self.ledgers.get(tp)
            if held is not None and (held.committed or -1) < offset:
                held.committed = offset

    # --- partitions coming and going -----------------------------------------------------------

    def take(self, tp: TopicPartition) -> PartitionLedger:
        """The ledger of an assigned partition, and a fresh abandon flag if it was revoked."""
        ledger = self.ledgers.get(tp)
        if ledger is None:
            ledger = self.ledgers[tp] = PartitionLedger()
            if self._abandon[tp].is_set():
                self._abandon[tp] = asyncio.Event()
        return ledger

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self.take(tp)
        # another worker may have recorded outcomes for these partitions: see them first
        await self._invoker.outcomes.catch_up()
        self._caught_up.set()
        log.info("invocation sink assigned %d tenant partitions", len(assigned))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Stop work on ``revoked``: calls in progress may finish (up to the grace period),
        retries waiting are abandoned (their records stay uncommitted), then commit."""
        self._caught_up.clear()
        pending: set[asyncio.Task[bool]] = set()
        for tp in revoked:
            self._abandon[tp].set()
            pending |= self.jobs.get(tp, set())
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self._settings.sink_revoke_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        await self.commit(only=revoked)
        for tp in revoked:
            self.ledgers.pop(tp, None)
            self.jobs.pop(tp, None)
            self._paused.discard(tp)

    def _limits_of(self, tenant: str) -> Limits:
        policy = self._index.tenants.get(tenant)
        return policy.limits if policy is not None else Limits()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: SinkConsumer) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._sink.on_assigned(set(assigned))
