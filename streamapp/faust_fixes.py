"""Corrections to faust-streaming 0.15 that at-least-once delivery depends on.

Both were found by streamapp's live two-worker tests, where records produced while a worker
was joining the group went missing without any error:

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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)
_applied = False


async def _seek_to_committed_or_beginning(self: Any) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()

    async def seek() -> Mapping[Any, int]:
        committed: dict[Any, int] = dict(await consumer.seek_to_committed())
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        never_committed = [tp for tp, offset in committed.items() if offset is None]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed

    result: Mapping[Any, int] = await self.call_thread(seek)
    return result


def apply() -> None:
    global _applied  # noqa: PLW0603 - patch once per process
    if _applied:
        return
    _applied = True
    # monkeypatching is the point of this module:
    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = (  # type: ignore[method-assign]
        _seek_to_committed_or_beginning
    )

    base = faust_consumer.Consumer
    original_stop_flow = base.stop_flow
    original_wait_next_records = base._wait_next_records

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
        return await original_wait_next_records(self, timeout)

    base.stop_flow = stop_flow  # type: ignore[method-assign]
    base._wait_next_records = wait_next_records  # type: ignore[method-assign]
