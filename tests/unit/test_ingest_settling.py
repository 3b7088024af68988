"""streamapp/ingest_batches.py: settling fetches (outputs acknowledged, then offsets committed)
without holding up the fetches after them.

At-least-once needs two things of the settling: a fetch's offsets are committed only once the
producer has acknowledged everything sent up to the end of that fetch, and commits never move
a partition back. Latency needs a third: a slow commit or a produce request the broker holds
must not stop the next fetches from being processed (docs/benchmarks.md: commits of 20-220 ms
sat in front of every record behind them). No broker: the producer's flush and the consumer's
commit are stand-ins the test completes when it chooses; the live guarantees (kills,
rebalances) are in tests/integration/test_chaos_live.py and test_rebalance_live.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from streamapp import ingest_batches

P0, P1 = TopicPartition("raw", 0), TopicPartition("raw", 1)


class Producer:
    """``flush`` waits until the test acknowledges it (``acknowledge(n)``: the n-th flush)."""

    def __init__(self) -> None:
        self.flushes: list[asyncio.Future[None]] = []

    async def flush(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.flushes.append(future)
        await future

    def acknowledge(self, n: int) -> None:
        self.flushes[n].set_result(None)


class Consumer:
    """``commit`` records what it was asked to commit and, while ``held``, does not return."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.held: asyncio.Event = asyncio.Event()
        self.held.set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        await self.held.wait()


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Producer:
    stand_in = Producer()
    monkeypatch.setattr(ingest_batches, "app", SimpleNamespace(producer=stand_in))
    return stand_in


async def turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def settled(service: Any) -> None:
    """``_settled`` bounded: a settling that never ends fails the test instead of hanging it."""
    await asyncio.wait_for(service._settled(), 10)


async def settle(service: Any, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
    """What ``_run`` does after a fetch's outputs are handed to the producer (bounded, as
    ``settled``)."""
    await asyncio.wait_for(service._settle_after(consumer, offsets), 10)
    await turns()  # the settling task starts and asks for its flush


async def test_a_slow_commit_does_not_hold_the_next_fetch(producer: Producer) -> None:
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    consumer.held.clear()  # the broker sits on the first commit
    await settle(service, consumer, {P0: 10})
    producer.acknowledge(0)
    await turns()
    assert consumer.commits == [{P0: 10}]  # in flight, not returned
    after = asyncio.create_task(settle(service, consumer, {P0: 20}))
    await turns(40)  # settle's own turns and more
    assert after.done(), "the next fetch waited for the previous fetch's commit"
    producer.acknowledge(1)
    await turns()
    assert consumer.commits == [{P0: 10}], "a second commit while the first is in flight"
    consumer.held.set()
    await settled(service)
    assert consumer.commits == [{P0: 10}, {P0: 20}]


async def test_nothing_is_committed_before_its_outputs_are_acknowledged(
    producer: Producer,
) -> None:
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    await settle(service, consumer, {P0: 10})
    await settle(service, consumer, {P0: 20, P1: 5})
    await settle(service, consumer, {P1: 9})
    # acknowledged out of order: the latest first (the stand-in allows what the producer
    # would not, to show the order is the settling's own)
    producer.acknowledge(2)
    producer.acknowledge(1)
    await turns()
    assert consumer.commits == []  # the first fetch's outputs are not acknowledged yet
    producer.acknowledge(0)
    await settled(service)
    # one commit for the three (the later settlings take the earlier ones' offsets along)
    assert consumer.commits == [{P0: 20, P1: 9}]


async def test_commits_never_move_a_partition_back(producer: Producer) -> None:
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    offsets = [{P0: 10}, {P1: 3}, {P0: 15, P1: 4}, {P1: 8}, {P0: 30}, {P0: 31, P1: 9}]
    for n, fetch in enumerate(offsets):
        await settle(service, consumer, fetch)
        producer.acknowledge(n)
        if n % 2:
            await turns()  # some settle alone, some together
    await settled(service)
    committed: dict[TopicPartition, int] = {}
    for commit in consumer.commits:
        for tp, offset in commit.items():
            assert offset > committed.get(tp, -1), consumer.commits
            committed[tp] = offset
    assert committed == {P0: 31, P1: 9}


async def test_at_most_max_unsettled_fetches_are_on_their_way(producer: Producer) -> None:
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    for n in range(ingest_batches.MAX_UNSETTLED):
        await settle(service, consumer, {P0: n + 1})
    waiting = asyncio.create_task(settle(service, consumer, {P0: 99}))
    await turns(40)
    assert not waiting.done(), "more fetches unsettled than MAX_UNSETTLED"
    producer.acknowledge(0)  # the oldest settles
    await turns(40)
    assert waiting.done()
    for n in range(1, ingest_batches.MAX_UNSETTLED + 1):
        producer.acknowledge(n)
    await settled(service)
    assert consumer.commits[-1] == {P0: 99}


async def test_settled_means_every_fetch_committed(producer: Producer) -> None:
    """What a revocation and a stop wait for: the last settling, and with it every earlier one."""
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    await settle(service, consumer, {P0: 10})
    await settle(service, consumer, {P1: 4})
    waiting = asyncio.create_task(settled(service))
    producer.acknowledge(1)
    await turns()
    assert not waiting.done()
    producer.acknowledge(0)
    await waiting
    assert consumer.commits == [{P0: 10, P1: 4}]


class FailingOnce(Consumer):
    """The first commit fails as a commit during a rebalance can (CommitFailedError)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not self.failed:
            self.failed = True
            raise CommitFailedError("rebalancing")
        await super().commit(offsets)


async def test_a_failed_commit_is_retried_with_the_next(producer: Producer) -> None:
    service, consumer = ingest_batches.BatchIngest(), FailingOnce()
    await settle(service, consumer, {P0: 10, P1: 5})
    producer.acknowledge(0)
    await settled(service)
    assert consumer.failed
    assert consumer.commits == []
    await settle(service, consumer, {P0: 12})
    producer.acknowledge(1)
    await settled(service)
    assert consumer.commits == [{P0: 12, P1: 5}]  # P1's progress is not left behind


async def test_a_revocation_commits_what_failed_before_and_keeps_nothing(
    producer: Producer,
) -> None:
    service, consumer = ingest_batches.BatchIngest(), FailingOnce()
    service._consumer = consumer
    await settle(service, consumer, {P1: 5})
    producer.acknowledge(0)
    await settled(service)
    assert consumer.commits == []
    await asyncio.wait_for(service.on_revoked(), 10)
    assert consumer.commits == [{P1: 5}]
    assert service._committable == {}  # nothing of a revoked partition is committed later


async def test_a_cancelled_settling_does_not_end_the_commits(producer: Producer) -> None:
    """No settling is cancelled today (every wait on one is shielded); if one ever is, the
    ones after it still commit (their flush covers its outputs)."""
    service, consumer = ingest_batches.BatchIngest(), Consumer()
    await settle(service, consumer, {P0: 10})
    first = service._settling
    assert first is not None
    await settle(service, consumer, {P0: 20})
    first.cancel()
    producer.acknowledge(1)
    await settled(service)
    assert consumer.commits == [{P0: 20}]
