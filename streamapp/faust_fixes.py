"""Corrections to faust-streaming 0.15 (and the aiokafka under it) that at-least-once
delivery depends on.

The first ones were found by streamapp's live two-worker tests, where records produced while
a worker was joining the group went missing without any error:

1. faust drops records it fetched while its flow is stopped (around a rebalance): mid-batch
   (``if not self.flow_active: break``), or while handing one to a stream when the flow is
   suspended (``wait_first(callback(message), suspend_flow.wait())`` then marks it read). The
   fetch position has already moved past them and nothing rewinds it: the records are never
   processed, and faust commits past them once later records are acknowledged. Fix: after
   every stop of the flow, the first fetch after it resumes seeks back to the committed
   offsets (replays are duplicates, never losses).
2. faust's "seek back to committed offsets" relies on aiokafka's ``seek_to_committed``, which
   only seeks partitions whose committed offset is > 0: a partition never committed (a new
   topic, a new group) or committed at 0 keeps its position past the dropped records. Fix:
   seek such partitions to where ``auto_offset_reset=earliest`` starts.
3. Recovery clears stream buffers that already hold new records. ``on_recovery_completed``
   resumes the stream partitions, awaits the seek to committed offsets, and only then calls
   ``flow_control.resume()``, which empties every stream queue. The consumer's flow is already
   running, so during the seek the fetcher fills the queues and the agents start on them: what
   is still queued at the clear is dropped, with the fetch position past it. Fix: resume the
   stream partitions only after the seek and the clear (nothing of theirs is fetched before).
4. The commit guard is off by one. ``_new_offset`` refuses to commit past a hole at the head
   of the acknowledged offsets only if ``min(acked) - committed > 1``, although the committed
   offset is the *next* record to process (committed 10, acked [11, 12] committed 13: record
   10 lost for good), and not at all when nothing was committed yet or the committed offset
   is 0. Fix: commit only when the acknowledged run starts at the committed offset, or when
   what lies below it is gone from the log (retention: the partition's log start is asked
   for); a record fetched and never acknowledged holds the commit back, and if that lasts,
   the partition is fetched again from the committed offset.
5. The livelock check crashes the consumer on a partition whose position is not known yet.
   Every 7 s faust's ``_commit_livelock_detector`` calls ``verify_event_path`` for each
   assigned partition, which reads aiokafka's ``TopicPartitionState.position`` — an
   ``assert`` that fails while the partition is assigned but not yet positioned (right after a
   rebalance, before the seek to committed offsets). The AssertionError stops the consumer and
   the worker exits ("We experienced a crash!"), seen once in the long chaos run
   (docs/reliability.md). Nothing is lost (offsets are committed only after outputs), but a
   worker dies for nothing. Fix: skip such a partition in that check (there is nothing to
   judge yet; it is checked again 7 s later). No upstream issue found.
6. aiokafka's producer strands a batch when a metadata refresh leaves its topic out. The
   client asks for the topics it tracks, or for every topic while it tracks none; a send only
   starts tracking its topic when the topic is missing from the metadata. So a send to a topic
   learnt from an all-topics refresh is never tracked: the next refresh for a newly tracked
   topic (say, one just being auto-created) drops it, the sender finds no leader for the
   lingering batch, and its refreshes never name the topic again. The batch waits until it
   expires (faust's producer request timeout: 20 minutes) and fails. Seen as a table write
   missing from its changelog (faust does not await changelog sends) in a worker's first
   second; a tenant copy would have held its raw record's offset just as long. Fix: every
   topic sent to is tracked. No upstream issue found.
7. Table replicas miss changelog records written while they recover. faust empties its
   changelog queue at every ``flow_control.resume()``, and a recovery resumes the flow several
   times: the last time in ``on_recovery_completed``, after standby partitions (every
   worker's copy of a GlobalTable) have been reading for a while. What they fetched in
   between is dropped with the fetch position already past it, so the record is never
   applied: the worker's table and policy index lack that entry (or that revocation) until
   the table is rebuilt. Fix 2 made it worse, seeking never-committed changelog partitions
   to their beginning just before that last clear. Seen in streamapp's two-worker tests
   (a worker holding 4 of 7 datasets for good); reproduced in
   tests/integration/test_table_replicas_live.py. Fix: the changelog queue is emptied at a
   revocation and at the first resume after it (stale records of the old assignment), never
   by the later resumes of the same recovery; fix 2 leaves changelog partitions to the
   recovery, which positions them itself. No upstream issue found.
8. A fetched batch outlives a pause or a seek of its partitions. faust's ``getmany`` skips
   the records of a partition paused while it walks a batch (the fetch position is already
   past them), and when the partition is resumed before the walk ends, hands on the rest;
   the drain loop then moves the partition's read offset past the records skipped. Recovery
   does exactly this to a GlobalTable's changelog (paused when the active reading ends,
   seeked back and resumed as a standby within the same batch): the skipped records were
   dropped as "already read" when fetched again. Seen with fix 7 in place (a worker lacking
   17 consecutive changelog records). Fix: the batch ends for a partition at its first
   record skipped as paused, and the partition is seeked back to that record (so it goes on
   from there when resumed, unless whoever paused it positions it); nor is anything of a
   batch handed on for a partition seeked since the batch was fetched (the fetch after the
   seek reads it again). No upstream issue found. Two gaps remain, neither a loss (fix 4's
   guard holds the commit): a seek landing while the consumer thread hands back a fetch is
   counted in that batch, and a seek landing while a record of the same partition is being
   handed on is undone by faust's drain loop (it sets the read offset after the hand-off); in
   both, fix 4's fetch-again of a hole waits for its next attempt (15 s later).

Each patch replaces a member of faust-streaming 0.15.x (6: of aiokafka 0.14.x); ``apply``
refuses another minor version, and tests/unit/test_faust_fixes.py fails if a replaced
member's source changes.
Upstream: 1 and 3 are faust-streaming issue #606's family (records lost around rebalances),
4 is the off-by-one discussed in faust-streaming PR #342's review of ``_new_offset``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiokafka
import faust
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition
from faust.tables import recovery as faust_recovery
from faust.tables.manager import TableManager
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.functional import consecutive_numbers
from mode.utils.queues import ThrowableQueue

SUPPORTED_FAUST = "0.15."
SUPPORTED_AIOKAFKA = "0.14."

log = logging.getLogger(__name__)
_applied = False
# What apply() replaced, by "Class.member": tests check these are still the code we patched.
REPLACED: dict[str, Any] = {}


async def _seek_to_committed_or_beginning(self: Any) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()
    changelog_topics = self.consumer.app.tables.changelog_topics

    def is_changelog(tp: Any) -> bool:
        return tp.topic in changelog_topics

    async def seek() -> Mapping[Any, int]:
        committed: dict[Any, int] = dict(await consumer.seek_to_committed())
        # changelog partitions are positioned by the recovery (fix 7), streams only here
        streams = {tp: offset for tp, offset in committed.items() if not is_changelog(tp)}
        for tp, offset in streams.items():
            if offset == 0:
                consumer.seek(tp, 0)
        never_committed = [tp for tp, offset in streams.items() if offset is None]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed

    result: Mapping[Any, int] = await self.call_thread(seek)
    return result


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """faust's ``Recovery.on_recovery_completed`` with the stream partitions resumed after
    the seek and the queue clear, not before (fix 3); otherwise unchanged."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    stream_partitions = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    try:
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        self.completed.set()
        self.log.dev("Resume stream partitions")
        self.app.flow_control.resume()  # empties the stream queues: nothing new is in them
        consumer.resume_flow()
    finally:
        # unless a new rebalance came meanwhile: it paused them, and its recovery resumes them
        if (
            not self.signal_recovery_start.is_set()
            and self.app.consumer_generation_id == generation_id
        ):
            consumer.resume_partitions(stream_partitions)
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def _new_offset(self: Any, tp: Any) -> int | None:
    """faust's ``Consumer._new_offset`` with a guard that holds (fix 4): the next offset to
    commit for ``tp``, or None while the record at the committed offset is unacknowledged."""
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        # Offsets the fetcher saw missing between two records (compaction, markers) count as
        # acknowledged, as in faust.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            missing: list[int] = []
            for entry in candidates:
                missing.extend(range(entry.begin, entry.end))
            acked.extend(missing)
            gap_for_tp.chop(0, max(missing[-1], max_offset + 1))
    acked.sort()
    if _head_is_missing(self, tp, acked[0]):
        return None
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    offset: int = batch[-1] + 1
    return offset


# How often a partition's log start is asked for while a hole at the head of its acknowledged
# offsets is unexplained, and after how long such a hole makes us fetch the partition again.
LOG_START_LOOKUP_S = 2.0
REFETCH_AFTER_S = 15.0


@dataclass
class _Hole:
    since: float
    asked: float = 0.0
    log_start: int | None = None


def _head_is_missing(consumer: Any, tp: Any, first_acked: int) -> bool:
    """Whether records below ``first_acked`` (from the committed offset on) may still exist
    unacknowledged. A hole entirely below the partition's log start (retention) does not
    hold the commit; any other hole does, and if it lasts, the partition is fetched again
    from the committed offset (a record fetched and never handed on is fetched again)."""
    committed = consumer._committed_offset[tp]
    holes: dict[Any, _Hole] = consumer.__dict__.setdefault("_streamapp_holes", {})
    if committed is not None and first_acked <= committed:
        holes.pop(tp, None)
        return False
    now = time.monotonic()
    hole = holes.setdefault(tp, _Hole(since=now))
    if hole.log_start is not None and hole.log_start >= first_acked:
        holes.pop(tp, None)
        return False  # nothing below the first acknowledged record exists any more
    if now - hole.asked >= LOG_START_LOOKUP_S:
        hole.asked = now
        _in_background(_look_up_log_start(consumer, tp, hole))
    if committed is not None and now - hole.since >= REFETCH_AFTER_S:
        log.warning(
            "%s: offsets %d..%d were fetched but never acknowledged; fetching again from %d",
            tp,
            committed,
            first_acked - 1,
            committed,
        )
        holes.pop(tp, None)
        _in_background(consumer.seek(tp, committed))
    return True


_background: set[asyncio.Future[Any]] = set()


def _in_background(work: Any) -> None:
    """Run ``work`` without waiting (called from faust's synchronous commit path)."""
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _look_up_log_start(consumer: Any, tp: Any, hole: _Hole) -> None:
    try:
        hole.log_start = (await consumer.earliest_offsets(tp)).get(tp)
    except Exception as exc:  # noqa: BLE001 - asked again at the next commit
        log.warning("log start of %s could not be read: %r", tp, exc)


class ChangelogQueue(ThrowableQueue):  # type: ignore[type-arg]  # mode's queue is generic
    """faust's changelog queue (``TableManager.changelog_queue``), emptied only when what it
    holds may be stale (fix 7): at a revocation (the flow is suspended) and at the first
    resume after it. A later resume within the same recovery keeps the records fetched from
    the positions that recovery set. While the flow is suspended nothing is taken in: the
    conductor waits for the resume before it puts, so what comes then is a put woken just
    before the revocation, from the old assignment (applied, it would move the recovery's
    start past the records the revocation dropped)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stale_until_resumed = True

    def put_nowait(self, item: Any) -> None:
        if self._flow_control.is_active():
            super().put_nowait(item)
        # else a put that was already woken when the revocation emptied the queue: stale

    def force_put_nowait(self, item: Any) -> None:
        if self._flow_control.is_active():
            super().force_put_nowait(item)

    def clear(self) -> None:
        if not self._flow_control.is_active():  # a revocation: the assignment is changing
            self.stale_until_resumed = True
        elif self.stale_until_resumed:  # the first resume after it
            self.stale_until_resumed = False
        else:
            return
        super().clear()


def _changelog_queue(self: Any) -> ThrowableQueue:  # type: ignore[type-arg]
    """``TableManager.changelog_queue`` making a ``ChangelogQueue`` (fix 7)."""
    if self._changelog_queue is None:
        self._changelog_queue = ChangelogQueue(
            maxsize=self.app.conf.stream_buffer_maxsize,
            flow_control=self.app.flow_control,
            clear_on_resume=True,
        )
    queue: ThrowableQueue = self._changelog_queue  # type: ignore[type-arg]
    return queue


def check_version() -> None:
    """Refuse to patch a faust-streaming or aiokafka minor version the patches were not
    written against (an upgrade could otherwise silently disable a fix)."""
    for name, supported, installed in (
        ("faust-streaming", SUPPORTED_FAUST, faust.__version__),
        ("aiokafka", SUPPORTED_AIOKAFKA, aiokafka.__version__),
    ):
        if not installed.startswith(supported):
            raise RuntimeError(
                f"streamapp's faust fixes (streamapp/faust_fixes.py) were written against "
                f"{name} {supported}x, but {installed} is installed: check each patched "
                f"member against the new release before widening the pin"
            )


async def _track_and_wait_on_metadata(self: Any, topic: str) -> Any:
    """aiokafka's ``AIOKafkaClient._wait_on_metadata``, tracking every topic sent to (fix 6)."""
    if topic not in self._topics and self.cluster.partitions_for_topic(topic) is not None:
        # known from an all-topics refresh: track it, or a later refresh may drop it
        self._topics.add(topic)
    return await REPLACED["AIOKafkaClient._wait_on_metadata"](self, topic)


def apply() -> None:
    global _applied  # noqa: PLW0603 - patch once per process
    if _applied:
        return
    check_version()
    _applied = True
    _patch_recovery_and_commit_guard()
    _patch_reseek_after_flow_stop()
    _patch_livelock_check()
    _patch_metadata_tracking()
    _patch_changelog_queue()
    _patch_batches_end_at_pause_or_seek()


def _patch_recovery_and_commit_guard() -> None:
    REPLACED.update(
        {
            "Recovery.on_recovery_completed": faust_recovery.Recovery.on_recovery_completed,
            "Consumer._new_offset": faust_consumer.Consumer._new_offset,
            "AIOKafkaConsumerThread.seek_to_committed": (
                faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed
            ),
        }
    )
    # monkeypatching is the point of this module:
    faust_recovery.Recovery.on_recovery_completed = (  # type: ignore[method-assign]
        _on_recovery_completed
    )
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = (  # type: ignore[method-assign]
        _seek_to_committed_or_beginning
    )


def _patch_reseek_after_flow_stop() -> None:
    base = faust_consumer.Consumer
    REPLACED["Consumer.stop_flow"] = original_stop_flow = base.stop_flow
    REPLACED["Consumer._wait_next_records"] = original_wait_next_records = base._wait_next_records

    def stop_flow(self: Any) -> None:
        self._streamapp_reseek = True
        original_stop_flow(self)

    async def wait_next_records(self: Any, timeout: float) -> Any:  # noqa: ASYNC109
        if not self.flow_active:
            await self.wait(self.can_resume_flow)
        if getattr(self, "_streamapp_reseek", False) and self.flow_active:
            self._streamapp_reseek = False
            if self.assignment():
                try:
                    await self.perform_seek()
                except Exception as exc:  # noqa: BLE001 - keep fetching; faust logs the same way
                    log.warning("seek to committed offsets after a flow stop failed: %r", exc)
        records, active_partitions = await original_wait_next_records(self, timeout)
        if active_partitions is None:  # client-only: faust does not filter either
            self._streamapp_batch = None
            return records, active_partitions
        # fix 8: faust's getmany hands on every record; _handed_on decides which may go on
        self._streamapp_batch = _Batch(seeks=dict(_seek_counts(self)))
        return records, None

    base.stop_flow = stop_flow  # type: ignore[method-assign]
    base._wait_next_records = wait_next_records  # type: ignore[method-assign]


@dataclass
class _Batch:
    """The records one fetch returned, while faust's ``getmany`` hands them on (fix 8)."""

    seeks: dict[Any, int]  # each partition's seek count when the batch was fetched
    ended: set[Any] = field(default_factory=set)  # partitions nothing more is handed on for


def _seek_counts(consumer: Any) -> Counter[Any]:
    counts: Counter[Any] = consumer.__dict__.setdefault("_streamapp_seeks", Counter())
    return counts


def _count_seeks(consumer: Any, tps: Any) -> None:
    counts = _seek_counts(consumer)
    for tp in tps:
        counts[tp] += 1


def _still_active(consumer: Any, batch: _Batch, counts: Counter[Any], tp: Any) -> bool:
    """The common case, without a coroutine per record: ``tp`` is active and was not seeked
    since the batch was fetched (``_handed_on`` decides the rest)."""
    return (
        tp not in batch.ended
        and counts.get(tp, 0) == batch.seeks.get(tp, 0)
        and (tp in (consumer._active_partitions or ()) or tp in consumer._buffered_partitions)
    )


async def _handed_on(consumer: Any, batch: _Batch, tp: Any, offset: int) -> bool:
    """Whether the record at ``offset`` of ``tp`` from ``batch`` may go to the streams."""
    if tp in batch.ended:
        return False
    if _seek_counts(consumer).get(tp, 0) != batch.seeks.get(tp, 0):
        batch.ended.add(tp)  # repositioned since the fetch: the next fetch reads from there
        return False
    if tp in consumer._get_active_partitions() or tp in consumer._buffered_partitions:
        return True
    batch.ended.add(tp)
    try:  # paused: go on from this record when resumed
        await consumer.seek(tp, offset)
    except Exception as exc:  # noqa: BLE001 - not assigned any more: its next owner reads it
        log.debug("%s: not put back to %d after a pause: %r", tp, offset, exc)
    return False


def _patch_batches_end_at_pause_or_seek() -> None:
    base = faust_consumer.Consumer
    delegate = faust_consumer.ThreadDelegateConsumer
    REPLACED["Consumer.getmany"] = original_getmany = base.getmany
    REPLACED["Consumer.seek"] = original_seek = base.seek
    REPLACED["Consumer.perform_seek"] = original_perform_seek = base.perform_seek
    REPLACED["ThreadDelegateConsumer.seek_wait"] = original_seek_wait = delegate.seek_wait

    async def getmany(self: Any, timeout: float) -> Any:  # noqa: ASYNC109
        counts = _seek_counts(self)
        async for tp, message in original_getmany(self, timeout):
            batch = getattr(self, "_streamapp_batch", None)
            if (
                batch is None
                or _still_active(self, batch, counts, tp)
                or await _handed_on(self, batch, tp, message.offset)
            ):
                yield tp, message

    async def seek(self: Any, partition: Any, offset: int) -> None:
        _count_seeks(self, [partition])
        await original_seek(self, partition, offset)

    async def perform_seek(self: Any) -> None:
        # stream partitions only: changelog partitions keep their position (fix 7)
        _count_seeks(self, [tp for tp in self.assignment() if not self._is_changelog_tp(tp)])
        await original_perform_seek(self)

    async def seek_wait(self: Any, partitions: Any) -> None:
        _count_seeks(self, partitions)
        await original_seek_wait(self, partitions)

    base.getmany = getmany  # type: ignore[method-assign]
    base.seek = seek  # type: ignore[method-assign]
    base.perform_seek = perform_seek  # type: ignore[method-assign]
    delegate.seek_wait = seek_wait  # type: ignore[method-assign]


def _patch_livelock_check() -> None:
    """5: the livelock check skips partitions not positioned yet."""
    thread = faust_aiokafka.AIOKafkaConsumerThread
    REPLACED["AIOKafkaConsumerThread.verify_event_path"] = thread.verify_event_path
    original_verify_event_path = thread.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        if not _has_position(self, tp):
            return None
        return original_verify_event_path(self, now, tp)

    thread.verify_event_path = verify_event_path  # type: ignore[method-assign]


def _patch_metadata_tracking() -> None:
    """6: aiokafka's producer tracks every topic it sends to."""
    REPLACED["AIOKafkaClient._wait_on_metadata"] = AIOKafkaClient._wait_on_metadata
    AIOKafkaClient._wait_on_metadata = _track_and_wait_on_metadata


def _patch_changelog_queue() -> None:
    """7: the changelog queue is not emptied by the resumes within a recovery."""
    REPLACED["TableManager.changelog_queue"] = vars(TableManager)["changelog_queue"].fget
    TableManager.changelog_queue = property(_changelog_queue)  # type: ignore[assignment,method-assign]


def _has_position(thread: Any, tp: Any) -> bool:
    """Whether aiokafka knows the fetch position of ``tp`` (False while it is being reset)."""
    consumer = getattr(thread, "_consumer", None)
    if consumer is None:
        return True  # faust's own code handles a consumer not started
    try:
        assignment = consumer._fetcher._subscriptions.subscription.assignment
        state = assignment.state_value(TopicPartition(tp.topic, tp.partition))
    except AttributeError:  # no subscription or assignment (yet): nothing to verify
        return False
    return state is not None and bool(state.has_valid_position)
