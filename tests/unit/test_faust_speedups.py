"""streamapp/faust_speedups.py: the consumer's per-message ``wait_first`` fast path is checked
against the faust/mode code it replaces and calls, and behaves as mode's ``wait_first`` on
every path (finished at once, blocked, raised, suspended, stopped, cancelled). No broker: the
patched method runs on a stand-in with the consumer's events."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.consumer import Consumer
from hypothesis import given, settings
from hypothesis import strategies as st
from mode.utils.locks import Event

from streamapp import faust_speedups

# sha256 of mode-streaming's Service.wait_first (what the slow path still runs), of
# faust-streaming 0.15.3's Consumer._drain_messages (the call site the fast path assumes:
# ``wait_first(callback(message), self.suspend_flow.wait())``, no timeout) and of aiokafka's
# murmur2 (the function replaced).
SOURCES = {
    "Consumer.wait_first": "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e",
    "Consumer._drain_messages": "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    "murmur2": "62179ca184949379a640dfece86b25050b0f1bc8299b7cf6ebb7fe821db78326",
}


@pytest.fixture(scope="module", autouse=True)
def applied() -> None:
    faust_speedups.apply()


def digest(member: Any) -> str:
    return hashlib.sha256(inspect.getsource(member).encode()).hexdigest()


def test_the_replaced_and_calling_code_is_unchanged() -> None:
    assert digest(faust_speedups.REPLACED["Consumer.wait_first"]) == SOURCES["Consumer.wait_first"]
    drain = inspect.getsource(Consumer._drain_messages)
    assert "await self.wait_first(\n" in drain
    assert "callback(message), self.suspend_flow.wait()" in drain
    assert digest(Consumer._drain_messages) == SOURCES["Consumer._drain_messages"]


@pytest.fixture
async def consumer() -> SimpleNamespace:
    return SimpleNamespace(
        _stopped=Event(),
        _crashed=Event(),
        suspend_flow=Event(),
        loop=asyncio.get_running_loop(),
    )


@pytest.fixture
def tasks_made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []
    real = asyncio.ensure_future

    def counting(coro: Any, **kwargs: Any) -> Any:
        made.append(coro)
        return real(coro, **kwargs)

    monkeypatch.setattr(asyncio, "ensure_future", counting)
    return made


async def wait_first(consumer: SimpleNamespace, *coros: Any) -> Any:
    return await Consumer.wait_first(consumer, *coros)  # type: ignore[arg-type]


async def test_a_callback_that_finishes_at_once_makes_no_task(
    consumer: SimpleNamespace, tasks_made: list[Any]
) -> None:
    async def callback() -> str:
        return "handed on"

    first, other = callback(), consumer.suspend_flow.wait()
    result = await wait_first(consumer, first, other)
    assert (result.done, result.results, result.stopped) == ([first], ["handed on"], False)
    assert tasks_made == []
    assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED


async def test_a_callback_that_blocks_is_continued_through_modes_wait_first(
    consumer: SimpleNamespace, tasks_made: list[Any]
) -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def callback() -> str:
        steps.append("before")
        value = await gate
        steps.append("after")
        await asyncio.sleep(0)
        return value

    waiting = asyncio.ensure_future(wait_first(consumer, callback(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["before"]
    gate.set_result("queued")
    result = await waiting
    assert result.results == ["queued"]
    assert result.stopped is False
    assert steps == ["before", "after"]
    assert len(tasks_made) >= 4  # the slow path: mode's own Tasks, as before


@pytest.mark.parametrize("blocks", [False, True])
async def test_exceptions_are_raised_as_before(consumer: SimpleNamespace, blocks: bool) -> None:
    async def callback() -> None:
        if blocks:
            await asyncio.sleep(0.001)
        raise LookupError("from the callback")

    other = consumer.suspend_flow.wait()
    with pytest.raises(LookupError, match="from the callback"):
        await wait_first(consumer, callback(), other)
    await asyncio.sleep(0)  # mode's path cancels the other's Task; that runs on the next turn
    assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED


async def test_a_suspension_while_blocked_cancels_the_callback_as_before(
    consumer: SimpleNamespace,
) -> None:
    cleaned: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def callback() -> None:
        try:
            await gate
        finally:
            cleaned.append("callback cleaned up")

    waiting = asyncio.ensure_future(wait_first(consumer, callback(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    result = await waiting
    assert result.stopped is False
    assert result.results == [True]  # the suspend event won, as with mode's wait_first
    await asyncio.sleep(0)
    assert cleaned == ["callback cleaned up"]
    assert gate.cancelled()


@pytest.mark.parametrize("event", ["_stopped", "_crashed", "suspend_flow"])
async def test_a_stopped_crashed_or_suspended_consumer_takes_modes_path(
    consumer: SimpleNamespace, tasks_made: list[Any], event: str
) -> None:
    getattr(consumer, event).set()

    async def callback() -> str:
        return "x"

    result = await wait_first(consumer, callback(), consumer.suspend_flow.wait())
    assert tasks_made  # mode's path, unchanged
    assert result.stopped is (event != "suspend_flow")


async def test_a_bare_yield_is_one_turn_of_the_loop(consumer: SimpleNamespace) -> None:
    async def callback() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return 3

    result = await wait_first(consumer, callback(), consumer.suspend_flow.wait())
    assert result.results == [3]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_is_aiokafkas_for_any_key(key: bytes) -> None:
    original = faust_speedups.REPLACED["aiokafka.partitioner.murmur2"]
    assert faust_speedups.murmur2(key) == original(key)
    assert faust_speedups.recent_murmur2(key) == original(key)
    assert faust_speedups.recent_murmur2(key) == original(key)  # remembered: same


def test_keys_land_on_the_partitions_the_java_client_chooses() -> None:
    """Kafka's own murmur2 test vectors (clients/src/test/.../UtilsTest.java, testMurmur2)
    and the partitioner using the patched function."""
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, java in vectors.items():
        assert faust_speedups.murmur2(key) == java & 0xFFFFFFFF, key
    partitioner = DefaultPartitioner()
    for key, java in vectors.items():
        expected = (java & 0x7FFFFFFF) % 12
        assert partitioner(key, list(range(12)), list(range(12))) == expected


def test_the_replaced_murmur2_is_unchanged() -> None:
    assert digest(faust_speedups.REPLACED["aiokafka.partitioner.murmur2"]) == SOURCES["murmur2"]
