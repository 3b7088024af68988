"""A CPU saving in faust-streaming 0.15's consume path, kept apart from the correctness fixes
(faust_fixes.py) and guarded the same way.

For every fetched message faust's consumer runs
``await self.wait_first(callback(message), self.suspend_flow.wait())`` (``_drain_messages``):
mode's ``Service.wait_first`` wraps both coroutines and the service's stopped and crashed
events in four Tasks and an ``asyncio.wait``, although the callback (the conductor handing the
message to a stream's queue) almost always finishes without blocking. Profiled under load:
~6 % of a worker's CPU (issue #13).

The fast path: when the flow is not suspended and the service neither stopped nor crashed,
step the callback once. Finished -> its result, no Task at all. It would block (a full stream
queue) -> the rest of the coroutine, continued where it stopped, goes through mode's own
``wait_first`` exactly as before, so suspension, stop, crash and cancellation behave as they
did. Exceptions are raised as before.

Second, aiokafka's key -> partition hash: its ``murmur2`` (the Java client's MurmurHash2,
so a key lands on the partition a Java producer would choose) mixes one byte at a time with a
mask after every operation, ~5 % of a worker's CPU. ``murmur2`` here reads 4-byte words with
``struct`` and masks only where a value can exceed 32 bits (2x faster): the same function,
property-tested against aiokafka's for every length and byte; and recent keys are remembered,
since an event's canonical record and every tenant copy share the key.

``apply`` refuses another faust minor version; tests/unit/test_faust_speedups.py checks the
source of each replaced member and of the call site, and the behaviour of both paths.
"""

from __future__ import annotations

import asyncio
import inspect
import struct
import types
from collections.abc import Coroutine, Generator
from typing import Any

from aiokafka import partitioner as aiokafka_partitioner
from faust.transport import consumer as faust_consumer
from mode.services import WaitResults

from streamapp.faust_fixes import check_version

# What apply() replaced, by "Class.member": the tests check it is still the code we patched.
REPLACED: dict[str, Any] = {}
_applied = False


def apply() -> None:
    global _applied  # noqa: PLW0603 - patch once per process
    if _applied:
        return
    check_version()
    _applied = True
    consumer = faust_consumer.Consumer
    original = consumer.wait_first
    REPLACED["Consumer.wait_first"] = original

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
        if timeout is None and len(coros) == 2 and _may_step(self, coros[0]):
            first, other = coros
            try:
                yielded = first.send(None)
            except StopIteration as finished:
                other.close()  # never started: closing it avoids "never awaited"
                return WaitResults([first], [finished.value], False)
            except BaseException:
                other.close()
                raise
            return await original(self, _continued(first, yielded), other)
        return await original(self, *coros, timeout=timeout)

    consumer.wait_first = wait_first  # type: ignore[method-assign]

    REPLACED["aiokafka.partitioner.murmur2"] = aiokafka_partitioner.murmur2
    aiokafka_partitioner.murmur2 = recent_murmur2  # DefaultPartitioner looks it up there


_RECENT: dict[bytes, int] = {}
_RECENT_MAX = 4096


def recent_murmur2(data: bytes) -> int:
    """``murmur2`` remembering recent keys: an event's canonical record and each tenant's copy
    share its key (the object's path), so with N tenants a key is hashed N + 1 times."""
    value = _RECENT.get(data)
    if value is None:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        value = _RECENT[data] = murmur2(data)
    return value


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as aiokafka computes it."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    words = length >> 2
    if words:
        unpack = _WORDS.get(words)
        if unpack is None:
            unpack = _WORDS.setdefault(words, struct.Struct(f"<{words}I"))
        for word in unpack.unpack_from(data):
            k = (word * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def _may_step(service: Any, first: Any) -> bool:
    return (
        inspect.iscoroutine(first)
        and not service._stopped.is_set()
        and not service._crashed.is_set()
        and not service.suspend_flow.is_set()
    )


async def _continued(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Run ``coro`` on from where one ``send(None)`` left it (it yielded ``yielded``), as a
    Task would: wait for the future it waits on, then resume it; a cancellation of this
    coroutine is thrown into ``coro`` so its own cleanup runs."""
    while True:
        try:
            await _wait_for(yielded)
        except asyncio.CancelledError as cancelled:
            if isinstance(yielded, asyncio.Future):
                yielded.cancel()  # as Task.cancel() cancels the future its coroutine waits on
            try:
                yielded = coro.throw(cancelled)
            except StopIteration as finished:
                return finished.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as finished:
            return finished.value


async def _wait_for(yielded: Any) -> None:
    """Wait until what a coroutine yielded is done; its outcome is read by the coroutine
    itself when resumed (an asyncio future raises or returns from its own ``await``)."""
    if isinstance(yielded, asyncio.Future):
        yielded._asyncio_future_blocking = False  # as a Task does before waiting on it
        await asyncio.wait([yielded])
    else:  # a bare ``yield`` (asyncio.sleep(0)): one turn of the loop
        await _one_turn()


@types.coroutine
def _one_turn() -> Generator[None, None, None]:
    yield
