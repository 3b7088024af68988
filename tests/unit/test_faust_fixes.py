"""streamapp/faust_fixes.py: each patch is checked against the faust code it replaces, and
the two rebalance losses of issue #12 are reproduced deterministically on faust's own code
(which loses the records) and shown closed by the patch. No broker: faust's methods run on
small stand-ins for the consumer and the recovery service; the live rebalance tests are in
tests/integration/test_ingest_live.py."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.consumer.subscription_state import TopicPartitionState
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP as TOPIC_PARTITION
from intervaltree import IntervalTree  # type: ignore[import-untyped]  # ships no types
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streamapp import faust_fixes

# sha256 of the source of each faust member replaced, as in faust-streaming 0.15.3. A change
# means faust changed the code under a patch: re-read it and re-check the patch.
PATCHED_SOURCES = {
    "Recovery.on_recovery_completed": (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    ),
    "Consumer._new_offset": "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
    "Consumer.stop_flow": "cf7e875a2b0d40e8e45df69720709199c47b710c983cf79371cce3a58888a6ac",
    "Consumer._wait_next_records": (
        "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6"
    ),
    "AIOKafkaConsumerThread.seek_to_committed": (
        "775ab0adc4b052abee204d5347a556412b1f77ed4de971adde69a55a1cb6f908"
    ),
    "AIOKafkaConsumerThread.verify_event_path": (
        "b983e7735f647cb34650530fb0f1bc709e8cb67d54c483b939b14b49b8d931e0"
    ),
    "Consumer.getmany": "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
    "Consumer.seek": "b86a9fe05f956b30cf299c787b6787c6e0349cbf1ae556f2456a1e97b15dbb22",
    "Consumer.perform_seek": "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6",
    "ThreadDelegateConsumer.seek_wait": (
        "e9db5bbc4ceb2543830e020a97ba36d762de5affe579278f933d20bc42af9b9b"
    ),
    "TableManager.changelog_queue": (
        "9c7f4cac57ef170647f12c135f4419000d27be45c536bf07ec013d8d3d028e2e"
    ),
    # aiokafka 0.14.0 (fix 6; reproduced live in tests/integration/test_producer_metadata_live.py)
    "AIOKafkaClient._wait_on_metadata": (
        "52b0a5ee78ef3aa0c21c82b69baa20eb6983d9e5871e9e66784198cb2f1bf256"
    ),
}


@pytest.fixture(scope="module", autouse=True)
def applied() -> None:
    faust_fixes.apply()


def test_the_faust_version_is_the_one_patched() -> None:
    assert faust.__version__.startswith(faust_fixes.SUPPORTED_FAUST)


@pytest.mark.parametrize("member", sorted(PATCHED_SOURCES))
def test_patched_faust_code_is_unchanged(member: str) -> None:
    original = faust_fixes.REPLACED[member]
    digest = hashlib.sha256(inspect.getsource(original).encode()).hexdigest()
    assert digest == PATCHED_SOURCES[member], f"faust's {member} changed: re-check the patch"


def test_every_replaced_member_is_patched_with_the_same_signature() -> None:
    """Each member the fixes replace still exists (REPLACED holds faust's / aiokafka's own),
    is replaced now, and keeps the original's parameters, so callers are unaffected."""
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 - only this test needs it

    owners = {
        "Recovery": Recovery,
        "Consumer": Consumer,
        "AIOKafkaConsumerThread": AIOKafkaConsumerThread,
        "AIOKafkaClient": AIOKafkaClient,
        "TableManager": TableManager,
        "ThreadDelegateConsumer": ThreadDelegateConsumer,
    }
    assert set(faust_fixes.REPLACED) == set(PATCHED_SOURCES)
    for member, original in faust_fixes.REPLACED.items():
        owner, name = member.split(".")
        current = getattr(owners[owner], name)
        if isinstance(current, property):  # a property is replaced by its getter
            current = current.fget
        assert current is not original, f"{member} is not patched"
        assert list(inspect.signature(current).parameters) == list(
            inspect.signature(original).parameters
        ), member


def test_another_faust_minor_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(RuntimeError, match=r"0\.15\.x, but 0\.16\.0 is installed"):
        faust_fixes.check_version()


def test_another_aiokafka_minor_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka, "__version__", "0.15.0")
    with pytest.raises(RuntimeError, match=r"aiokafka 0\.14\.x, but 0\.15\.0 is installed"):
        faust_fixes.check_version()


# --- the commit guard (fix 4) ---------------------------------------------------------------

TP = ("events", 0)


class FakeConsumer:
    """The attributes faust's ``Consumer._new_offset`` reads, and the calls our guard makes."""

    def __init__(self, committed: int | None, log_start: int = 0) -> None:
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._gap: dict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[TP] = committed
        self.log_start = log_start
        self.seeks: list[tuple[Any, int]] = []

    def ack(self, *offsets: int) -> None:
        self._acked[TP].extend(offsets)
        self._acked_index[TP].update(offsets)

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, self.log_start)

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def original_new_offset(consumer: FakeConsumer) -> int | None:
    result: int | None = faust_fixes.REPLACED["Consumer._new_offset"](consumer, TP)
    return result


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("committed", "acked", "faust_commits"),
    [
        pytest.param(10, [11, 12], 13, id="record-at-committed-offset-dropped"),
        pytest.param(0, [1, 2], 3, id="committed-zero-guard-off"),
        pytest.param(None, [5, 6], 7, id="never-committed-guard-off"),
    ],
)
async def test_faust_commits_past_a_dropped_record_and_the_patch_does_not(
    committed: int | None, acked: list[int], faust_commits: int
) -> None:
    consumer = FakeConsumer(committed)
    consumer.ack(*acked)
    assert original_new_offset(consumer) == faust_commits  # the loss, reproduced

    consumer = FakeConsumer(committed)
    consumer.ack(*acked)
    assert faust_fixes._new_offset(consumer, TP) is None
    await settle()  # the log start (0) is read: it explains nothing
    assert faust_fixes._new_offset(consumer, TP) is None


async def test_consecutive_acks_from_the_committed_offset_are_committed() -> None:
    consumer = FakeConsumer(10)
    consumer.ack(10, 11, 13)
    assert faust_fixes._new_offset(consumer, TP) == 12
    consumer._committed_offset[TP] = 12
    assert faust_fixes._new_offset(consumer, TP) is None  # 12 missing: held
    consumer.ack(12)
    assert faust_fixes._new_offset(consumer, TP) == 14


async def test_a_partition_never_committed_commits_from_its_log_start() -> None:
    consumer = FakeConsumer(None, log_start=0)
    consumer.ack(0, 1)
    assert faust_fixes._new_offset(consumer, TP) is None  # log start not known yet
    await settle()
    assert faust_fixes._new_offset(consumer, TP) == 2


async def test_a_hole_below_the_log_start_does_not_hold_the_commit() -> None:
    """Retention removed what lies below the committed offset's successor: committable."""
    consumer = FakeConsumer(100, log_start=500)
    consumer.ack(500, 501)
    assert faust_fixes._new_offset(consumer, TP) is None
    await settle()
    assert faust_fixes._new_offset(consumer, TP) == 502


async def test_gaps_the_fetcher_saw_count_as_acknowledged() -> None:
    consumer = FakeConsumer(10)
    consumer._gap[TP].addi(10, 12)
    consumer.ack(12)
    assert faust_fixes._new_offset(consumer, TP) == 13


async def test_a_lasting_hole_fetches_the_partition_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    consumer = FakeConsumer(10)
    consumer.ack(11, 12)
    assert faust_fixes._new_offset(consumer, TP) is None
    await settle()
    clock[0] += faust_fixes.REFETCH_AFTER_S - 1
    assert faust_fixes._new_offset(consumer, TP) is None
    await settle()
    assert consumer.seeks == []
    clock[0] += 2
    assert faust_fixes._new_offset(consumer, TP) is None
    await settle()
    assert consumer.seeks == [(TP, 10)]  # record 10 is fetched again
    consumer.ack(10)
    assert faust_fixes._new_offset(consumer, TP) == 13


# --- recovery (fix 3) -----------------------------------------------------------------------


class Partition:
    """One stream partition: records at offsets 0.., a fetch position, a committed offset."""

    def __init__(self, committed: int) -> None:
        self.committed = committed
        self.position = committed
        self.paused = True


class RecoveryStage:
    """Stand-ins for the app, consumer, fetcher and stream queue around
    ``on_recovery_completed``. While a stream partition is resumed, every pass of the event
    loop fetches one record into the stream queue; ``flow_control.resume()`` empties the
    queue, as mode's FlowControlEvent does for faust's stream queues."""

    def __init__(self) -> None:
        self.partition = Partition(committed=10)
        self.new_rebalance = asyncio.Event()  # Recovery.signal_recovery_start
        self.queue: list[int] = []
        self.handed: list[int] = []  # what reached the agent
        self.calls: list[str] = []
        stage = self

        class Consumer:
            def assignment(self) -> set[str]:
                return {"events-0"}

            def resume_partitions(self, tps: set[str]) -> None:
                stage.calls.append("resume_partitions")
                stage.partition.paused = False

            async def perform_seek(self) -> None:
                stage.calls.append("perform_seek")
                await asyncio.sleep(0)
                stage.partition.position = stage.partition.committed
                for _ in range(3):  # the seek takes a while: the fetcher keeps running
                    await asyncio.sleep(0)

            def resume_flow(self) -> None:
                stage.calls.append("resume_flow")

        class FlowControl:
            def resume(self) -> None:
                stage.calls.append("flow_control.resume")
                stage.queue.clear()

        async def nothing(*_: Any, **__: Any) -> None:
            return None

        self.app = SimpleNamespace(
            consumer=Consumer(),
            flow_control=FlowControl(),
            on_rebalance_complete=SimpleNamespace(send=nothing),
            consumer_generation_id=1,
            conf=SimpleNamespace(broker_request_timeout=30),
            _fetcher=SimpleNamespace(maybe_start=nothing),
            assignor=SimpleNamespace(assigned_standbys=list),
            on_rebalance_end=lambda: None,
        )

    def recovery(self) -> Any:
        async def wait(coro: Any, timeout: float | None = None) -> None:  # noqa: ASYNC109
            await coro

        return SimpleNamespace(
            app=self.app,
            log=SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=print),
            _set_recovery_ended=lambda: None,
            tables=SimpleNamespace(
                values=list, on_actives_ready=lambda: None, on_standbys_ready=lambda: None
            ),
            actives_for_table={},
            standbys_for_table={},
            _is_changelog_tp=lambda tp: False,
            _wait=wait,
            completed=asyncio.Event(),
            signal_recovery_start=self.new_rebalance,
        )

    async def fetch_and_process(self, stop: asyncio.Event) -> None:
        """The fetcher and the agent: fetch while resumed, hand queued records on."""
        while not stop.is_set():
            if not self.partition.paused:
                self.queue.append(self.partition.position)
                self.partition.position += 1
            if len(self.queue) > 2:  # the agent takes a record now and then
                self.handed.append(self.queue.pop(0))
            await asyncio.sleep(0)

    async def run(self, on_recovery_completed: Any) -> list[int]:
        """Recover, let the fetcher and agent run on, and return the offsets never handed on."""
        stop = asyncio.Event()
        loop_task = asyncio.create_task(self.fetch_and_process(stop))
        await on_recovery_completed(self.recovery(), 1)
        for _ in range(20):
            await asyncio.sleep(0)
        stop.set()
        await loop_task
        self.handed.extend(self.queue)  # what is still queued reaches the agent later
        seen = set(self.handed)
        return [
            o for o in range(self.partition.committed, self.partition.position) if o not in seen
        ]


async def test_faust_recovery_drops_records_fetched_during_the_seek() -> None:
    stage = RecoveryStage()
    lost = await stage.run(faust_fixes.REPLACED["Recovery.on_recovery_completed"])
    assert stage.calls.index("resume_partitions") < stage.calls.index("perform_seek")
    assert lost, "faust's order should reproduce the loss"


async def test_patched_recovery_resumes_stream_partitions_after_the_seek_and_clear() -> None:
    stage = RecoveryStage()
    lost = await stage.run(faust_fixes._on_recovery_completed)
    assert stage.calls == [
        "perform_seek",
        "flow_control.resume",
        "resume_flow",
        "resume_partitions",
    ]
    assert lost == []
    assert stage.handed[0] == stage.partition.committed


# --- the changelog queue across a recovery's resumes (fix 7) --------------------------------


def changelog_queue(queue_type: Any) -> tuple[Any, FlowControlEvent]:
    flow = FlowControlEvent()  # initially suspended, as faust's app.flow_control
    return queue_type(maxsize=100, flow_control=flow, clear_on_resume=True), flow


def a_recovery(queue: Any, flow: FlowControlEvent) -> list[int]:
    """The queue's life through a revocation and the recovery after it, as faust drives it
    (app.on_rebalance_start, Recovery._restart_recovery and on_recovery_completed): returns
    what remains queued for the changelog reader at the end."""
    queue.put_nowait(1)  # read before the rebalance: stale once the assignment changes
    flow.suspend()
    flow.clear()  # revocation
    queue.put_nowait(2)  # a put woken just before that clear lands after it: stale
    flow.resume()  # first resume: active changelog partitions seeked and resumed
    queue.put_nowait(10)  # standby partitions read from the positions recovery set
    queue.put_nowait(11)
    flow.resume()  # on_recovery_completed
    return [queue.get_nowait() for _ in range(queue.qsize())]


def test_faust_changelog_queue_drops_what_standbys_read_during_recovery() -> None:
    assert a_recovery(*changelog_queue(ThrowableQueue)) == []


def test_patched_changelog_queue_keeps_it_and_drops_only_stale_records() -> None:
    queue, flow = changelog_queue(faust_fixes.ChangelogQueue)
    assert a_recovery(queue, flow) == [10, 11]
    # the next rebalance empties it again, once
    queue.put_nowait(12)
    assert a_recovery(queue, flow) == [10, 11]


def test_patched_changelog_queue_takes_nothing_in_while_the_flow_is_suspended() -> None:
    """The conductor waits for the resume before it puts: a put while suspended was woken
    before the revocation emptied the queue and comes from the old assignment. Applied, it
    would move the next recovery's start past the records the revocation dropped."""
    queue, flow = changelog_queue(faust_fixes.ChangelogQueue)
    flow.resume()
    queue.put_nowait(1)
    flow.suspend()
    flow.clear()
    queue.put_nowait(2)
    queue.force_put_nowait(3)
    assert queue.qsize() == 0
    flow.resume()
    queue.force_put_nowait(4)
    assert queue.get_nowait() == 4


def test_the_table_manager_makes_the_patched_queue() -> None:
    app = SimpleNamespace(
        conf=SimpleNamespace(stream_buffer_maxsize=7), flow_control=FlowControlEvent()
    )
    manager = SimpleNamespace(app=app, _changelog_queue=None)
    queue = TableManager.changelog_queue.fget(manager)  # type: ignore[attr-defined]
    assert isinstance(queue, faust_fixes.ChangelogQueue)
    assert queue.maxsize == 7
    assert TableManager.changelog_queue.fget(manager) is queue  # type: ignore[attr-defined]


async def test_seek_after_a_flow_stop_leaves_changelog_partitions_to_the_recovery() -> None:
    """Fix 2 seeks never-committed stream partitions to their beginning; a changelog partition
    (never committed either: faust does not commit them) keeps the position recovery gave it."""
    stream, changelog = TopicPartition("events", 0), TopicPartition("app-datasets-changelog", 0)
    seeks: list[Any] = []

    class AIOKafkaConsumer:
        async def seek_to_committed(self) -> dict[Any, int | None]:
            return {stream: None, changelog: None}

        async def seek_to_beginning(self, *tps: Any) -> None:
            seeks.extend(tps)

        def seek(self, tp: Any, offset: int) -> None:
            seeks.append((tp, offset))

    async def call_thread(work: Any) -> Any:
        return await work()

    aiokafka_consumer = AIOKafkaConsumer()
    thread = SimpleNamespace(
        _ensure_consumer=lambda: aiokafka_consumer,
        call_thread=call_thread,
        consumer=SimpleNamespace(
            app=SimpleNamespace(tables=SimpleNamespace(changelog_topics={changelog.topic}))
        ),
    )
    committed = await faust_fixes._seek_to_committed_or_beginning(thread)
    assert committed == {stream: None, changelog: None}
    assert seeks == [stream]


# --- a batch ends for a partition paused or seeked while it is handed on (fix 8) -----------


class FetchStage:
    """faust's own consumer (getmany, the drain loop, pause, resume, seek) over a fake log:
    two partitions of ten records each; a fetch returns the next five records of each active
    partition from its position, as aiokafka's fetcher does. ``during`` maps (partition,
    offset) to what recovery does while that record is handed on."""

    A, B = TOPIC_PARTITION("changelog", 0), TOPIC_PARTITION("other", 0)

    def __init__(self, during: dict[tuple[Any, int], Any]) -> None:
        self.app = faust.App(f"fix8-{id(self)}", broker="kafka://127.0.0.1:1", store="memory://")
        self.consumer: Any = self.app.consumer  # faust's aiokafka Consumer, never started
        self.position = {self.A: 0, self.B: 0}
        self.handed: dict[Any, list[int]] = defaultdict(list)
        self.fetches = 0
        self.during = during
        consumer: Any = self.consumer
        consumer._set_active_tps({self.A, self.B})
        consumer.assignment = lambda: {self.A, self.B}
        consumer.highwater = lambda tp: 10
        consumer._getmany = self.fetch
        consumer._seek = self.seek
        consumer.callback = self.hand_on
        # faust's seek_wait delegates to its consumer thread: aiokafka's seek, read offset set
        consumer._thread = SimpleNamespace(seek_wait=self.seek_wait)
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def fetch(self, active_partitions: Any, timeout: float) -> dict[Any, list[Any]]:  # noqa: ASYNC109
        self.fetches += 1
        if self.fetches > 4:
            self.fetcher._stopped.set()
            return {}
        records = {}
        for tp in sorted(active_partitions):
            start = self.position[tp]
            batch = [
                ConsumerRecord(tp.topic, tp.partition, o, 0, 0, None, b"v", None, 1, 1, ())
                for o in range(start, min(start + 5, 10))
            ]
            self.position[tp] += len(batch)
            if batch:
                records[tp] = batch
        return records

    async def seek(self, tp: Any, offset: int) -> None:
        self.position[tp] = offset

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        for tp, offset in partitions.items():
            await self.seek(tp, offset)
            self.consumer._read_offset[tp] = offset or None

    async def hand_on(self, message: Any) -> None:
        self.handed[message.tp].append(message.offset)
        action = self.during.pop((message.tp, message.offset), None)
        if action is not None:
            await action(self.consumer)

    async def run(self) -> dict[Any, list[int]]:
        await self.consumer._drain_messages(self.fetcher)
        return self.handed


def recovery_moves() -> dict[tuple[Any, int], Any]:
    """While A@1 is handed on, A's active reading ends (paused); while B@3 is, A is seeked
    back to 0 as a standby and resumed: all within one fetched batch."""
    changelog, other = FetchStage.A, FetchStage.B

    async def pause(consumer: Any) -> None:
        consumer.pause_partitions({changelog})

    async def seek_and_resume(consumer: Any) -> None:
        await consumer.seek_wait({changelog: 0})
        consumer.resume_partitions({changelog})

    return {(changelog, 1): pause, (other, 3): seek_and_resume}


async def test_faust_loses_records_skipped_while_their_partition_was_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for member in ("getmany", "_wait_next_records", "seek", "perform_seek"):
        monkeypatch.setattr(Consumer, member, faust_fixes.REPLACED[f"Consumer.{member}"])
    original_seek_wait = faust_fixes.REPLACED["ThreadDelegateConsumer.seek_wait"]
    monkeypatch.setattr(ThreadDelegateConsumer, "seek_wait", original_seek_wait)
    handed = await FetchStage(recovery_moves()).run()
    assert set(range(10)) - set(handed[FetchStage.A]), "faust's own code should lose records"
    assert sorted(set(handed[FetchStage.B])) == list(range(10))


async def test_patched_batches_end_at_a_pause_and_every_record_is_handed_on() -> None:
    handed = await FetchStage(recovery_moves()).run()
    assert sorted(set(handed[FetchStage.A])) == list(range(10))
    assert sorted(set(handed[FetchStage.B])) == list(range(10))


async def test_patched_recovery_leaves_partitions_a_new_rebalance_paused() -> None:
    """A rebalance completing during the seek pauses every partition and starts a new
    recovery (``_wait`` raises RebalanceAgain): the old recovery must not resume them."""

    class RebalanceAgainError(Exception):
        pass

    stage = RecoveryStage()
    recovery = stage.recovery()

    async def wait(coro: Any, timeout: float | None = None) -> None:  # noqa: ASYNC109
        coro.close()
        stage.new_rebalance.set()
        stage.app.consumer_generation_id = 2
        raise RebalanceAgainError

    recovery._wait = wait
    with pytest.raises(RebalanceAgainError):
        await faust_fixes._on_recovery_completed(recovery, 1)
    assert "resume_partitions" not in stage.calls
    assert stage.partition.paused


# --- the livelock check on a partition not positioned yet (fix 5) -----------------------------


def livelock_thread(*, positioned: bool) -> tuple[Any, Any]:
    """A consumer thread stand-in with one assigned partition, as aiokafka holds it right after
    a rebalance (no position until the seek) or once positioned."""
    tp = TopicPartition("events", 0)
    state = TopicPartitionState(assignment=None)
    if positioned:
        state._position = 42
    assignment = SimpleNamespace(state_value=lambda key: state if key == tp else None)
    aiokafka_consumer = SimpleNamespace(
        _fetcher=SimpleNamespace(
            _subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        )
    )
    app = SimpleNamespace(monitor=object(), topics=SimpleNamespace(acks_enabled_for=lambda t: 1))
    thread = SimpleNamespace(
        _consumer=aiokafka_consumer,
        _ensure_consumer=lambda: aiokafka_consumer,
        _verify_aiokafka_event_path=lambda now, tp: False,
        consumer=SimpleNamespace(app=app),
        time_started=time.monotonic(),
        tp_stream_timeout_secs=300.0,
        tp_commit_timeout_secs=300.0,
        tp_fetch_request_timeout_secs=300.0,
        log=SimpleNamespace(error=lambda *a, **k: None),
    )
    return thread, tp


async def test_faust_livelock_check_crashes_on_a_partition_without_position() -> None:
    thread, tp = livelock_thread(positioned=False)
    original = faust_fixes.REPLACED["AIOKafkaConsumerThread.verify_event_path"]
    with pytest.raises(AssertionError):  # what stopped a worker in the long chaos run
        original(thread, time.monotonic(), tp)


async def test_patched_livelock_check_skips_a_partition_without_position() -> None:
    verify: Any = AIOKafkaConsumerThread.verify_event_path
    thread, tp = livelock_thread(positioned=False)
    assert verify(thread, time.monotonic(), tp) is None  # no AssertionError
    # a positioned partition still goes through faust's check
    positioned, tp = livelock_thread(positioned=True)
    calls: list[Any] = []

    def faust_check(now: float, checked: Any) -> bool:
        calls.append(checked)
        return True

    positioned._verify_aiokafka_event_path = faust_check
    verify(positioned, time.monotonic(), tp)
    assert calls == [tp]
