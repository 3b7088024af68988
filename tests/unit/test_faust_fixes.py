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
from aiokafka.structs import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from intervaltree import IntervalTree  # type: ignore[import-untyped]  # ships no types

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
    }
    assert set(faust_fixes.REPLACED) == set(PATCHED_SOURCES)
    for member, original in faust_fixes.REPLACED.items():
        owner, name = member.split(".")
        current = getattr(owners[owner], name)
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
