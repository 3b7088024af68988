"""Ingest: raw storage records -> canonical storage events (and, in the same pass, each
entitled tenant's authorized copy), or dead letters.

One consume path per raw record: the agent normalizes it, writes each canonical event to
``storage.events`` and hands the event straight to the authorization stage
(``agents/authorize.deliver_event``), which writes the tenant copies. The decisions live in
``streamapp.domain.normalize`` and ``streamapp.domain.authorize``; this agent only moves bytes.
At-least-once:
a batch's input offsets are acknowledged only after every output of the batch (event or dead
letter) has been acknowledged by the broker; an output that cannot be written stops the worker
before the input is acknowledged, so the records are consumed again after a restart.

No record stops ingest: anything that goes wrong while handling one record (an exception, an
output the producer refuses at once, such as a message over its size limit) makes that record
a dead letter with the reason, and the agent goes on. Only a producer that cannot write even
that dead letter stops the worker, as an undeliverable output does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from streamapp.agents.authorize import Origin, deliver_event
from streamapp.app import app, settings
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CONTENT_TYPE
from streamapp.domain.normalize import Normalized, Rejected, normalize
from streamapp.metrics import INGEST_EVENTS, INGEST_RECORDS, count
from streamapp.outputs import (
    described,
    exit_if_undelivered,
    finish_even_if_cancelled,
    send_bytes,
    send_dead_letter,
)
from streamapp.topics import dead_letters, raw_storage_records, storage_events

log = logging.getLogger(__name__)

_EVENT_HEADERS = [("content-type", CONTENT_TYPE.encode())]
_MAX_DEAD_LETTER_REASON_CHARS = 4000  # one Kafka header; each rejection is bounded already


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


async def _ingest_stream(stream: Any) -> None:
    # One event at a time: with stream.take_events() our two-worker tests saw records stall
    # until shutdown around rebalances. faust acknowledges an event when the agent moves on,
    # and flushes the producer before every commit, so outputs are on the broker first.
    async for event in stream.events():
        await finish_even_if_cancelled(ingest_record(_raw_record(event)))


ingest: Any = None  # faust's agent, when declared


def declare_agent() -> Any:
    """faust's ingest agent over the raw topics. Declared at import only with
    ``STREAMAPP_INGEST_BATCH=false``: by default streamapp/ingest_batches.py consumes the raw
    topics and there is no agent (unit tests declare it to drive it under faust's
    test_context). concurrency>1 could commit past records still in flight."""
    global ingest  # noqa: PLW0603 - one agent per process, declared once
    if ingest is None:
        ingest = app.agent(
            raw_storage_records, concurrency=1, name="streamapp.agents.ingest.ingest"
        )(_ingest_stream)
    return ingest


if not settings.ingest_batch:
    declare_agent()


def _raw_record(event: Any) -> RawRecord:
    message = event.message
    value = message.value if message.value is not None else b""
    return RawRecord(
        topic=message.topic or "",
        partition=message.partition if message.partition is not None else -1,
        offset=message.offset if message.offset is not None else -1,
        key=message.key,
        value=value if isinstance(value, bytes) else str(value).encode(),
    )


async def ingest_record(record: RawRecord) -> None:
    """Normalize one raw record and hand its outputs (events, or a dead letter) to the producer."""
    try:
        await _ingest(record)
    except Exception as exc:  # one record's bug must not stop every tenant's events
        log.exception(
            "ingest: record %s/%s/%s failed", record.topic, record.partition, record.offset
        )
        await _dead_letter(record, f"internal error ingesting record: {described(exc)}")
        count(INGEST_RECORDS, record.topic, "rejected")


async def _ingest(record: RawRecord) -> None:
    outcomes = normalize(
        record.value, settings.source_for(record.topic), max_bytes=settings.max_record_bytes
    )
    rejections = [outcome.reason for outcome in outcomes if isinstance(outcome, Rejected)]
    produced = False
    for outcome in outcomes:
        if isinstance(outcome, Normalized):
            key, value = outcome.event["subject"].encode(), outcome.json()
            try:
                sent = await _produce(storage_events.get_topic_name(), key, value, _EVENT_HEADERS)
            except Exception as exc:  # noqa: BLE001 - refused at once (too large...): this record's
                rejections.append(
                    f"event {outcome.event['subject']!r} not written: {described(exc)}"
                )
                continue
            exit_if_undelivered("ingest", sent)
            count(INGEST_EVENTS, outcome.event["type"])
            produced = True
            origin = Origin(record.topic, record.partition, record.offset, key, value)
            await deliver_event(outcome.event, origin)
    if rejections:
        await _dead_letter(record, "; ".join(rejections))
    outcome_label = "rejected" if rejections else ("event" if produced else "skipped")
    count(INGEST_RECORDS, record.topic, outcome_label)


async def _dead_letter(record: RawRecord, reason: str) -> None:
    """The record, byte for byte, with the reason; if the producer refuses it at once (over its
    size limit), a dead letter without the value that says where the original is."""
    if len(reason) > _MAX_DEAD_LETTER_REASON_CHARS:
        reason = reason[: _MAX_DEAD_LETTER_REASON_CHARS - 1] + "…"
    context = DeadLetterContext.of("ingest", record, reason)
    await send_dead_letter("ingest", _send_dead_letter, record.key, record.value, context)


async def _send_dead_letter(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    return await _produce(dead_letters.get_topic_name(), key, value, headers)


async def _produce(
    topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> Any:
    """Straight to the producer: the values are already serialized, and Topic.send's
    per-message machinery cost ~40 % of ingest throughput (docs/benchmarks.md)."""
    return await send_bytes(app.producer, topic, key, value, headers)
