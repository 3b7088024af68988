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
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from streamapp.domain.deadletter import DeadLetterContext

log = logging.getLogger(__name__)

EXIT_OUTPUT_LOST = 70  # EX_SOFTWARE: the supervisor restarts us and we re-consume the input


def exit_if_undelivered(stage: str, future: Any) -> None:
    """Watch one output: if it cannot be written, exit before its input is committed."""

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
) -> Awaitable[Any]:
    """Hand one serialized message to the aiokafka producer inside faust's ``producer``; the
    delivery future back. faust's own ``send`` adds a signal dispatch and argument conversions
    per message (~5 % of the pipeline's CPU, issue #13) and nothing we use; faust's ``flush``,
    before its commits and the batch-wise ingest's, flushes this same aiokafka producer."""
    future: Awaitable[Any] = await aiokafka_of(producer).send(
        topic, value, key=key, headers=headers
    )
    return future


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
