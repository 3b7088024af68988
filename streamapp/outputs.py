"""What every producing agent needs for at-least-once output.

faust acknowledges an input once the agent moves on to the next one, and before it commits
offsets it flushes the producer: every output sent while handling an input is on the broker
before that input's offset is committed. What remains is an output the broker refuses for good
(after aiokafka's retries): ``exit_if_undelivered`` stops the worker at once, before the commit
that would cover its input, so the input is consumed again after a restart."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Final

from aiokafka import partitioner as aiokafka_partitioner
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.exceptions import NotReady

from streamapp.domain.deadletter import DeadLetterContext

log = logging.getLogger(__name__)

EXIT_OUTPUT_LOST = 70  # EX_SOFTWARE: the supervisor restarts us and we re-consume the input


def exit_if_undelivered(stage: str, future: Any) -> None:
    """Watch one output: if it cannot be written, exit before its input is committed. An
    output collected into a fetch's batches (``COLLECTED``) is watched with its batch."""
    if future is COLLECTED:
        return

    def check(done: Any) -> None:
        if done.cancelled() or done.exception() is None:
            return
        log.critical(
            "%s: an output could not be written (%r); exiting without committing its input",
            stage,
            done.exception(),
        )
        logging.shutdown()
        os._exit(EXIT_OUTPUT_LOST)

    future.add_done_callback(check)


# Sends one message (key, value, headers) and returns the producer's delivery future; raises if
# the producer refuses it at once (over its size limit, a closed producer...).
Send = Callable[[bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Any]]

_STAND_IN_REASON_CHARS = 400  # of the original reason, so where the original is stays in view
_STAND_IN_MAX_KEY_BYTES = 4096  # a longer key is left out of the stand-in (its length is said)


def described(exc: BaseException) -> str:
    """An exception as a reason: its class and a bounded message."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


async def send_dead_letter(
    stage: str, send: Send, key: bytes | None, value: bytes, context: DeadLetterContext
) -> None:
    """Write one dead letter: the input byte for byte with its context. If the producer refuses
    it at once (over its size limit), write a stand-in with an empty value whose reason says
    where the original is (topic/partition/offset); if even that is refused, the producer
    cannot write at all: exit as for an undelivered output, before the input is committed."""
    try:
        sent = await send(key, value, context.headers())
    except Exception as exc:  # noqa: BLE001 - refused at once: write the stand-in below
        refused = described(exc)
    else:
        exit_if_undelivered(stage, sent)
        return
    reason = context.reason
    if len(reason) > _STAND_IN_REASON_CHARS:
        reason = reason[: _STAND_IN_REASON_CHARS - 1] + "…"
    kept_key = key if key is None or len(key) <= _STAND_IN_MAX_KEY_BYTES else None
    key_note = "" if kept_key is key else f" (nor its {len(key or b'')}-byte key)"
    stand_in = replace(
        context,
        reason=(
            f"{reason}; the original {len(value)}-byte value is not kept here{key_note}, the "
            f"producer refused it ({refused}): it stays at "
            f"{context.topic}/{context.partition}/{context.offset}"
        ),
    )
    try:
        # without a huge key too: a key near the size limit would refuse the stand-in as well,
        # and the worker would exit on the same record after every restart
        exit_if_undelivered(stage, await send(kept_key, b"", stand_in.headers()))
    except Exception:  # noqa: BLE001 - the producer cannot write at all: as an undelivered output
        log.critical("%s: cannot write a dead letter; exiting without committing its input", stage)
        logging.shutdown()
        os._exit(EXIT_OUTPUT_LOST)


async def send_bytes(
    producer: Any, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    """Hand one serialized message to the aiokafka producer inside faust's ``producer``; the
    delivery future back, or ``COLLECTED`` while a fetch's outputs are being collected
    (``FetchOutputs``). faust's own ``send`` adds a signal dispatch and argument conversions
    per message (~5 % of the pipeline's CPU, issue #13) and nothing we use; faust's ``flush``,
    before its commits and the batch-wise ingest's, flushes this same aiokafka producer."""
    outputs = _collecting.get()
    if outputs is not None:
        await outputs.add(topic, key, value, headers)
        return COLLECTED
    return await aiokafka_of(producer).send(topic, value, key=key, headers=headers)


class _Collected:
    """What ``send_bytes`` returns for an output collected into a fetch's batches."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "COLLECTED"


COLLECTED: Final = _Collected()
_collecting: ContextVar[FetchOutputs | None] = ContextVar("streamapp_fetch_outputs", default=None)


class FetchOutputs:
    """The outputs of one fetch, written as one produce batch per topic partition (aiokafka's
    public batch API: ``create_batch``, ``send_batch``) instead of a ``send`` per message.

    Per message, ``send`` costs a coroutine, a partitioner call over fresh partition lists, a
    delivery future and its done callback; ~15 µs of the ~35 µs a message cost the worker
    (docs/benchmarks.md, "Produce batches"). Here a message costs a hash and an append; a batch
    costs one future, watched by ``exit_if_undelivered`` like a message before.

    What stays as with ``send``: the same partition for the same key (the producer's own
    murmur2, the default partitioner's rule: Java clients agree), a message over the producer's
    request limit refused at once (``MessageSizeTooLargeError``: the callers' dead-letter
    path), the order of a partition's messages (a partition's batches go in order), and
    nothing of the fetch is committed before ``submit`` and the producer's flush. A message
    without a key goes to a random available partition, as the default partitioner sends it.
    Every output of the fetch's task is collected (dead letters too), so a topic's messages
    stay in the order they were made."""

    def __init__(self, producer: Any, stage: str) -> None:
        self._producer = producer
        self._stage = stage
        self._cluster = producer.client.cluster
        self._max_request_bytes: int = producer._max_request_size
        self._batches: dict[tuple[str, int], Any] = {}
        self._partition_counts: dict[str, int] = {}
        self.messages = 0

    @staticmethod
    def usable(producer: Any) -> bool:
        """Whether ``producer`` is an aiokafka producer this can write through: no serializers
        (values are bytes already), the default partitioner, no transactions."""
        return (
            getattr(producer, "_key_serializer", 0) is None
            and getattr(producer, "_value_serializer", 0) is None
            and isinstance(
                getattr(producer, "_partitioner", None), aiokafka_partitioner.DefaultPartitioner
            )
            and getattr(producer, "_txn_manager", 0) is None
            and isinstance(getattr(producer, "_max_request_size", None), int)
            and hasattr(producer, "send_batch")
        )

    async def add(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self._max_request_bytes:  # as aiokafka's send: refused before it is queued
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size "
                "configuration"
            )
        count = self._partition_counts.get(topic)  # per fetch: aiokafka copies a set per call
        if count is None:
            partitions = self._cluster.partitions_for_topic(topic)
            if not partitions:
                await self._producer.client._wait_on_metadata(topic)  # as send: unknown topic
                partitions = self._cluster.partitions_for_topic(topic)
            count = self._partition_counts[topic] = len(partitions)
        if key is not None:
            slot = (topic, key_partition(key, count))
        else:  # as DefaultPartitioner: any available partition (else any)
            available = self._cluster.available_partitions_for_topic(topic) or range(count)
            slot = (topic, random.choice(list(available)))  # noqa: S311 - spreading, not secrecy
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self._send(slot, batch)  # full: it goes now, and a new one takes the message
            batch = self._batches[slot] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)  # always fits
        self.messages += 1

    async def submit(self) -> None:
        """Queue every batch collected so far with the producer (sent at its linger, or at
        once with ``send_lingering_now``); a batch the broker refuses stops the worker."""
        batches, self._batches = self._batches, {}
        for slot, batch in batches.items():
            await self._send(slot, batch)

    async def _send(self, slot: tuple[str, int], batch: Any) -> None:
        # send_batch waits until a batch the producer already holds for the partition has
        # been sent: one from another task's send would otherwise keep it for its linger
        send_lingering_now(self._producer)
        future = await self._producer.send_batch(batch, slot[0], partition=slot[1])
        exit_if_undelivered(self._stage, future)


def fetch_outputs(producer: Any, stage: str) -> FetchOutputs | None:
    """A collector for one fetch's outputs through faust's ``producer``; None when its aiokafka
    producer cannot be written through that way (the outputs are then sent one by one)."""
    try:
        inner = aiokafka_of(producer)
    except NotReady:  # not started (unit tests): each send says so itself
        return None
    return FetchOutputs(inner, stage) if FetchOutputs.usable(inner) else None


def key_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's DefaultPartitioner (and the Java client's) picks for ``key``
    among ``partitions``: all of them (0..n-1), indexed by the positive murmur2 of the key
    (tests/unit/test_fetch_outputs.py compares the two)."""
    hashed: int = aiokafka_partitioner.murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@contextmanager
def collecting(outputs: FetchOutputs | None) -> Iterator[None]:
    """``send_bytes`` in this task (its context) collects into ``outputs`` meanwhile."""
    token = _collecting.set(outputs)
    try:
        yield
    finally:
        _collecting.reset(token)


def aiokafka_of(producer: Any) -> Any:
    """The aiokafka producer inside faust's ``producer`` (started with the app)."""
    return producer._ensure_producer()


def send_lingering_now(producer: Any) -> None:
    """Have aiokafka's ``producer`` send every batch it holds without waiting out the linger.

    The batch-wise ingest hands a whole fetch's outputs over, then this: the fetch was the
    batching, and the linger would only add its length to every record's latency. With
    linger 0 instead, each produce request carried the few records added while the previous one
    was in flight (many more requests per fetch, more CPU). The batches stay open (closing them,
    as aiokafka's ``flush_for_commit`` does, made the next fetch's sends wait for the drain).
    Uses private attributes of aiokafka 0.14's accumulator and batches (checked on a real
    broker by tests/integration/test_send_lingering_now.py); without them (another aiokafka),
    nothing happens: the records go when their linger ends, as correct, slower."""
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    waiter = getattr(accumulator, "_waiter_future", None)
    if batches is None or waiter is None:
        return
    for queue in batches.values():
        for batch in queue:
            batch._linger_time = 0.0
    if not waiter.done():
        waiter.set_result(None)  # the sender waits on it: it drains the batches now


async def finish_even_if_cancelled(work: Awaitable[None]) -> None:
    """Run ``work`` to the end even if the agent is cancelled (graceful stop): the stream
    acknowledges the batch when we return or raise, so half a batch must never be left."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
