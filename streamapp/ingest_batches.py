"""Batch-wise ingest: how the raw topics are consumed by default (``STREAMAPP_INGEST_BATCH``,
true unless set otherwise; false: faust's ingest agent, ``agents/ingest.py``). Measured in
docs/benchmarks.md: about half the agent's CPU per record, a few ms of latency.

Instead of faust's agent, one aiokafka consumer of its own group (``<app id>-ingest``) takes a
fetch at a time and runs every record through the same code as the agent
(``agents.ingest.ingest_record``: normalize, canonical event, the tenant copies, dead letters),
then, in the background while the next fetches are processed, waits until the producer has
every output of the fetch acknowledged and commits it (in order; fetches settling together in
one commit). The fetch is the batch: once all of
its outputs are handed to the producer they are sent without waiting out the producer's linger
(``outputs.send_lingering_now``). What it saves is faust's per-event consume path (conductor,
stream, ack, sensors).

At-least-once, as the agent: nothing of a fetch is committed before all of its outputs are on
the broker; an output the broker refuses stops the worker before that commit
(``outputs.exit_if_undelivered``). A revocation waits for the fetch in progress and the one
settling to be committed (the lock), and records fetched for a partition revoked meanwhile
(or in a fetch taken before a revocation completed) are left to its next owner.
Switching: a partition starts at the agent group's committed offset (the app id) when that is
further than this group's own (``agent_offsets_ahead``), so a deployment moving from the agent
to this path neither replays nor skips (a fetch returning while that offset is looked up
waits for it, and records below it are passed over: they were processed under the agent's
group). The other way, faust's agent starts from its group's
last commit: what the batch-wise ingest processed since is read again (at-least-once; event
ids are stable, consumers deduplicate on them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError

from streamapp import observed
from streamapp.agents.ingest import RawRecord, ingest_record
from streamapp.app import app, settings
from streamapp.gc_tuning import settle_long_lived
from streamapp.kafka_auth import aiokafka_options
from streamapp.outputs import (
    EXIT_OUTPUT_LOST,
    aiokafka_of,
    collecting,
    fetch_outputs,
    send_lingering_now,
)
from streamapp.topics import dead_letters, raw_storage_records, storage_events

log = logging.getLogger(__name__)

MAX_RECORDS = 1000  # per fetch: one commit, one producer flush
STOP_TIMEOUT_S = 10.0
HANDOVER_TIMEOUT_S = 10.0  # reading both groups' committed offsets at an assignment
# a turn for the loop's other tasks every this many records (~10-30 ms of work); yielding after
# every record cost ~90 µs of CPU per record (docs/benchmarks.md)
YIELD_EVERY = 64
# settlings outstanding before the next fetch waits: bounds what a stalled broker leaves in the
# producer and what a crash reads again (a settling whose offsets wait for a later one's commit
# is done, so up to about twice as many fetches are uncommitted at a time)
MAX_UNSETTLED = 4


class BatchIngest(faust.Service):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # a fetch in progress; a revocation waits for it
        self._revoking = False  # a revocation waits: the fetch in progress stops early
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._settling: asyncio.Task[None] | None = None  # the last fetch's flush and commit
        self._unsettled: list[asyncio.Task[None]] = []  # settlings not done, oldest first
        # offsets whose outputs are acknowledged, left by a settling to a later one's commit
        self._committable: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}  # next offset to process, per partition
        self._revocations = 0  # completed revocations: a fetch taken before one is dropped
        # the hand-over from the agent's group: where each partition starts (records below
        # were processed under that group), and whether it is still being looked up
        self._floors: dict[TopicPartition, int] = {}
        self._handed_over = asyncio.Event()
        self._handed_over.set()

    async def on_start(self) -> None:
        # the outputs' topics exist with their configured partitions before anything is sent
        for topic in (raw_storage_records, storage_events, dead_letters):
            await topic.maybe_declare()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            **aiokafka_options(settings),
            group_id=ingest_group(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=30_000,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
            # the same limits faust gives its own consumer (aiokafka's defaults are shorter: a
            # revocation waiting for a slow flush would have this member dropped and rejoin)
            rebalance_timeout_ms=int(app.conf.broker_rebalance_timeout * 1000),
            max_poll_interval_ms=int((app.conf.broker_max_poll_interval or 1000) * 1000),
            request_timeout_ms=int(app.conf.broker_request_timeout * 1000),
            max_poll_records=MAX_RECORDS,
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="batch-ingest")
        self._task.add_done_callback(functools.partial(_exit_if_crashed, self))
        observed.register_ingest_lag(self.lag)
        log.info("batch ingest started as consumer group %s", ingest_group())

    async def on_stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()  # a fetch cut short is not committed: read again, nothing lost
            await asyncio.gather(self._task, return_exceptions=True)
        if self._settling is not None:  # the last whole fetch: committed if it can be, bounded
            try:
                await asyncio.wait_for(asyncio.shield(self._settling), STOP_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("batch ingest: the last fetch was not committed (read again)")
        if self._consumer is not None:
            # bounded: leaving the group can wait for a join or a coordinator lookup, and the
            # worker must stop within its grace period (uncommitted records are read again)
            try:
                await asyncio.wait_for(self._consumer.stop(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("batch ingest: consumer did not stop within %s s", STOP_TIMEOUT_S)

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        # Not before the policy tables are recovered: an event authorized against a half-read
        # index would count as unowned and reach no tenant (the agent is held back by faust's
        # recovery in the same way).
        await getattr(app.tables, "recovery").completed.wait()  # noqa: B009 - untyped in faust
        settle_long_lived()  # the tables are in memory: what lives now lives on
        consumer.subscribe(topics=list(settings.raw_topics), listener=_Rebalance(self))
        log.info("batch ingest: tables recovered, consuming %s", ", ".join(settings.raw_topics))
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            # read as the fetch returns, not before: a getmany waiting through a rebalance
            # returns the new assignment's records (aiokafka holds it until then)
            revocations = self._revocations
            await _let_the_fetcher_ask_again()
            # a fetch may return while the hand-over is looked up, from this group's position
            await self._handed_over.wait()
            if fetched:
                async with self._lock:
                    if self._revocations != revocations:
                        # taken before a revocation that has completed since (aiokafka keeps
                        # the old assignment until the new one is known): not ours to process;
                        # whoever owns the partitions next reads them from the last commit
                        continue
                    offsets = await self._ingest(consumer, fetched)
                    send_lingering_now(aiokafka_of(app.producer))
                    self._read.update(offsets)
                    if offsets:
                        await self._settle_after(consumer, offsets)

    async def _ingest(
        self, consumer: AIOKafkaConsumer, fetched: dict[Any, list[Any]]
    ) -> dict[TopicPartition, int]:
        """Every record of the fetch through the agent's code; the offsets to commit. The
        fetch's outputs go to the producer as one batch per topic partition at its end
        (``outputs.FetchOutputs``), before anything of it can be committed."""
        outputs = fetch_outputs(app.producer, "ingest")
        with collecting(outputs):
            offsets = await self._ingest_records(consumer, fetched)
        if outputs is not None:
            await outputs.submit()
        return offsets

    async def _ingest_records(
        self, consumer: AIOKafkaConsumer, fetched: dict[Any, list[Any]]
    ) -> dict[TopicPartition, int]:
        offsets: dict[TopicPartition, int] = {}
        taken = 0
        for tp, records in fetched.items():
            if tp not in consumer.assignment():
                continue  # revoked since the fetch: uncommitted, its new owner reads them
            floor = self._floors.get(tp, -1)
            for message in records:
                if self._revoking:
                    break  # the rest of the fetch is read again by whoever owns it next
                if message.offset < floor:
                    continue  # processed under the agent's group (hand-over)
                value = message.value if message.value is not None else b""
                await ingest_record(
                    RawRecord(message.topic, message.partition, message.offset, message.key, value)
                )
                offsets[tp] = message.offset + 1
                taken += 1
                if taken % YIELD_EVERY == 0:  # heartbeats, views and revocations get a turn
                    await asyncio.sleep(0)
        return offsets

    async def _settle_after(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        """Commit ``offsets`` once every output sent so far is acknowledged — in the background,
        so the next fetches are taken and processed while this one's outputs are on their way.

        Waiting for them before the next fetch made each cycle fetch + work + produce round trip
        + commit round trip, and aiokafka fetches a partition again only once its last fetch
        was taken: a record waited up to two cycles (p99 ~90 ms at 1,000 records/s). Waiting
        for the previous fetch's settling still put its produce round trip and its commit in
        front of the next fetch: a commit slow for 20-220 ms, or a produce request the broker
        held, delayed every record behind it by that much plus a cycle (docs/benchmarks.md).
        Now up to MAX_UNSETTLED fetches settle at once; commits stay in order (each settling
        waits for the one before), and one whose successor exists leaves its offsets to that
        one's commit (a commit in flight at a time, not one per fetch)."""
        self._unsettled = [task for task in self._unsettled if not task.done()]
        if len(self._unsettled) >= MAX_UNSETTLED:
            await asyncio.shield(self._unsettled[0])
        task = asyncio.create_task(
            self._settle(consumer, offsets, self._settling), name="batch-ingest-commit"
        )
        task.add_done_callback(_exit_if_settling_failed)
        self._settling = task
        self._unsettled.append(task)

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        offsets: dict[TopicPartition, int],
        previous: asyncio.Task[None] | None,
    ) -> None:
        # every output of the records taken acknowledged (a refused one has stopped the worker)
        await app.producer.flush()
        if previous is not None:
            # the fetches before this one are merged (or committed) first; one cancelled (none
            # is, but a chain must not end there: every later commit would be skipped) is
            # covered by this flush; one that failed has stopped the worker: commit nothing
            await asyncio.wait([previous])
            if not previous.cancelled() and previous.exception() is not None:
                return
        _merge(self._committable, offsets)
        if self._settling is not asyncio.current_task():
            return  # a later fetch's settling commits these with its own
        await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the offsets merged so far; a commit that fails leaves them for the next one
        (never further back: merged by maximum)."""
        committable, self._committable = self._committable, {}
        try:
            await consumer.commit(committable)
        except (CommitFailedError, KafkaError) as exc:  # else replayed by the next owner
            log.warning("batch ingest: commit failed: %r", exc)
            _merge(self._committable, committable)

    async def _settled(self) -> None:
        """Every fetch's outputs acknowledged and its offsets committed (or failed): the last
        settling waits for the ones before it."""
        if self._settling is not None:
            await asyncio.shield(self._settling)

    def lag(self) -> int:
        """Records in the assigned raw partitions past the last one processed (/metrics)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        for tp in consumer.assignment():
            end, read = consumer.highwater(tp), self._read.get(tp)
            if end is not None and read is not None:
                total += max(0, end - read)
        return total

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start each partition where the faust agent's group left it, when that is further
        than this group's own commit (or this group has none): switching a deployment between
        the agent and batch-wise ingest then neither replays the raw topics from the start nor
        skips a record — both groups commit only what has all its outputs on the broker."""
        assert self._consumer is not None
        self._handed_over.clear()  # before the first await: no fetch of these has returned
        try:
            ahead = await agent_offsets_ahead(assigned)
            for tp, offset in ahead.items():
                self._floors[tp] = offset
                # a fetch taken meanwhile may already be past it (then reading on is right)
                position = _known_position(self._consumer, tp)
                if position is None or position < offset:
                    self._consumer.seek(tp, offset)
        finally:
            self._handed_over.set()
        if ahead:
            log.info("batch ingest: %d partitions start at the agent group's offsets", len(ahead))

    async def on_revoked(self) -> None:
        """The records taken so far are flushed and committed before the partitions go."""
        self._revoking = True
        try:
            async with self._lock:
                await self._settled()
                if self._committable and self._consumer is not None:
                    await self._commit(self._consumer)  # what an earlier commit failed to
                # offsets of partitions that may be read elsewhere now: never committed later
                self._committable.clear()
                self._read.clear()  # positions of partitions that may be read elsewhere now
                self._floors.clear()
                self._revocations += 1
        finally:
            self._revoking = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: BatchIngest) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._service.on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("batch ingest assigned %d raw partitions", len(assigned))
        await self._service.on_assigned(assigned)


def _known_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """aiokafka's fetch position of ``tp`` if it has one (None while it is being reset)."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:  # no subscription or assignment (yet)
        return None
    if state is None or not state.has_valid_position:
        return None
    position: int = state.position
    return position


def ingest_group() -> str:
    return f"{settings.app_id}-ingest"


async def agent_offsets_ahead(assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
    """The partitions of ``assigned`` whose committed offset in the agent's group (faust's
    group: the app id) is past this group's, with that offset. Nothing (the group's own
    offsets, or the earliest, apply) if the broker cannot say within HANDOVER_TIMEOUT_S:
    records are then read again, never skipped."""
    if not assigned:
        return {}
    partitions = sorted(assigned)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **aiokafka_options(settings)
    )
    try:
        async with asyncio.timeout(HANDOVER_TIMEOUT_S):
            await admin.start()
            own = await admin.list_consumer_group_offsets(ingest_group(), partitions=partitions)
            agent = await admin.list_consumer_group_offsets(settings.app_id, partitions=partitions)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("batch ingest: the agent group's offsets unknown (%r): not handed over", exc)
        return {}
    finally:
        await admin.close()
    ahead = {}
    for tp in partitions:
        theirs = agent[tp].offset if tp in agent else -1
        ours = own[tp].offset if tp in own else -1
        if theirs > ours:  # -1: no commit
            ahead[tp] = theirs
    return ahead


def _exit_if_crashed(service: BatchIngest, task: asyncio.Task[None]) -> None:
    """A loop that ended other than by our stop leaves the raw topics unread: exit (the
    supervisor restarts the worker; uncommitted records are read again)."""
    if task.cancelled():
        # only a stop cancels it — ours, or mode's when the worker stops before this service
        # started (a SIGTERM during start-up): not a crash, nothing was committed unprocessed
        log.info("batch ingest: stopped")
        return
    if service._stopping and task.exception() is None:
        return
    error = task.exception()
    log.critical("batch ingest stopped consuming: %r", error or "returned", exc_info=error)
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)


async def _let_the_fetcher_ask_again() -> None:
    """A few turns of the event loop before a fetch is processed: aiokafka asks the broker for
    a partition again only once its fetched records are taken, and from its own task (woken,
    then a request task started). Without these turns the next request went out only when the
    fetch's processing first waited, and a record arriving meanwhile waited a whole extra
    cycle (1,000 records/s: p50 20-30 ms with, 6 ms without; docs/benchmarks.md)."""
    for _ in range(3):
        await asyncio.sleep(0)


def _merge(into: dict[TopicPartition, int], offsets: dict[TopicPartition, int]) -> None:
    """``offsets`` into ``into``, the further offset of each partition kept."""
    for tp, offset in offsets.items():
        if offset > into.get(tp, -1):
            into[tp] = offset


def _exit_if_settling_failed(task: asyncio.Task[None]) -> None:
    """A flush or commit that raised something unforeseen: exit before anything later is
    committed (uncommitted records are read again after the restart)."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("batch ingest: settling a fetch failed: %r", task.exception())
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)


if settings.ingest_batch:

    @app.service
    class WorkerBatchIngest(BatchIngest):
        """Registered only when ``STREAMAPP_INGEST_BATCH`` is on (the agent is off then)."""
