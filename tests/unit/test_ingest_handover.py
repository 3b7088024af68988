"""streamapp/ingest_batches.py: the hand-over from the agent's group when a fetch races it.

A fetch of a newly assigned partition can return while ``on_assigned`` is still asking the
broker for the agent group's offsets (seen in CI: records 0..999, processed by the agent,
were processed again before the seek to its offset 1,500). No broker: the consumer is a
stand-in holding aiokafka's position state; the live hand-over is in
tests/integration/test_ingest_handover_live.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streamapp import ingest_batches
from streamapp.agents.ingest import RawRecord

TP = TopicPartition("raw", 0)


class Consumer:
    """What BatchIngest uses of aiokafka's consumer, with a fetch position per partition."""

    def __init__(self, position: int | None) -> None:
        self.position = position
        self.seeks: list[int] = []
        state = SimpleNamespace(
            has_valid_position=position is not None, position=position if position else 0
        )
        self.state = state
        assignment = SimpleNamespace(state_value=lambda tp: state if tp == TP else None)
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.state.position = offset


def record(offset: int) -> Any:
    return SimpleNamespace(topic="raw", partition=0, offset=offset, key=None, value=b"{}")


@pytest.fixture
def ingested(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    offsets: list[int] = []

    async def ingest_record(raw: RawRecord) -> None:
        offsets.append(raw.offset)

    monkeypatch.setattr(ingest_batches, "ingest_record", ingest_record)
    return offsets


async def hand_over_while_a_fetch_returns(
    monkeypatch: pytest.MonkeyPatch, consumer: Consumer, fetched: list[int]
) -> tuple[ingest_batches.BatchIngest, dict[TopicPartition, int]]:
    """``on_assigned`` looks up the agent group's offset (1,500) while the fetch loop takes
    a fetch of ``fetched``: the loop waits for the hand-over, then processes the fetch."""
    looked_up = asyncio.Event()
    answer = asyncio.Event()

    async def agent_offsets_ahead(assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        looked_up.set()
        await answer.wait()
        return {TP: 1500}

    monkeypatch.setattr(ingest_batches, "agent_offsets_ahead", agent_offsets_ahead)
    service = ingest_batches.BatchIngest()
    service._consumer = consumer
    assigning = asyncio.create_task(service.on_assigned({TP}))
    await looked_up.wait()

    async def fetch_loop_turn() -> dict[TopicPartition, int]:
        await service._handed_over.wait()  # as _run does after each getmany
        return await service._ingest(consumer, {TP: [record(o) for o in fetched]})

    turn = asyncio.create_task(fetch_loop_turn())
    await asyncio.sleep(0)
    assert not turn.done(), "the fetch must wait for the hand-over"
    answer.set()
    await assigning
    return service, await turn


async def test_a_fetch_below_the_agent_offset_is_not_processed_again(
    monkeypatch: pytest.MonkeyPatch, ingested: list[int]
) -> None:
    consumer = Consumer(position=1000)  # the fetch of 0..999 has returned
    _, offsets = await hand_over_while_a_fetch_returns(monkeypatch, consumer, list(range(1000)))
    assert ingested == []
    assert offsets == {}
    assert consumer.seeks == [1500]


async def test_a_fetch_across_the_agent_offset_goes_on_from_it_without_a_seek_back(
    monkeypatch: pytest.MonkeyPatch, ingested: list[int]
) -> None:
    consumer = Consumer(position=2000)  # the fetch of 1000..1999 has returned
    _, offsets = await hand_over_while_a_fetch_returns(
        monkeypatch, consumer, list(range(1000, 2000))
    )
    assert ingested == list(range(1500, 2000))
    assert offsets == {TP: 2000}
    assert consumer.seeks == []  # a seek back to 1,500 would read 1500..1999 twice


async def test_a_partition_not_positioned_yet_is_seeked(
    monkeypatch: pytest.MonkeyPatch, ingested: list[int]
) -> None:
    consumer = Consumer(position=None)
    await hand_over_while_a_fetch_returns(monkeypatch, consumer, [])
    assert consumer.seeks == [1500]


async def test_a_revocation_forgets_the_floors(
    monkeypatch: pytest.MonkeyPatch, ingested: list[int]
) -> None:
    service, _ = await hand_over_while_a_fetch_returns(monkeypatch, Consumer(1000), [])
    assert service._floors == {TP: 1500}
    await service.on_revoked()
    assert service._floors == {}
