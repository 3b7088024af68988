"""The sink: each tenant's authorized events → the OpenWhisk actions its triggers name.

Delivery, as users of the stock OpenWhisk Kafka feed wish they had it:

- at least once: a tenant-topic offset is committed only after the outcome of its record is
  durable — a ``success`` record on the invocations topic, a final ``action_failed`` record, or
  a dead letter (reason and attempt count in headers, original bytes as value);
- never twice after a recorded success: the key ``tenant/trigger/event-id`` of every success
  record is mirrored on every worker (``streamapp.sink.outcomes``) and checked before invoking
  (final failures too: a replay does not run a failed action again or dead-letter it twice);
- 429: the tenant's lane pauses and narrows (``streamapp.sink.lanes``) and the call is retried,
  never dropped; 5xx/408/409/timeouts/connection errors: exponential back-off with jitter up to
  ``STREAMAPP_SINK_MAX_ATTEMPTS``, then a dead letter; other 4xx: a dead letter at once;
- tenants are isolated: each record runs as its own task in its tenant's lane, offsets are
  committed per partition in order (``streamapp.domain.ledger``), and a tenant with too much
  unfinished work has only *its* topic paused;
- entitlement is checked again at invocation time (a revoked tenant's backlog is not run), and
  tokens about to expire (after an outage, say) are minted afresh from the same grant;
- no record stops the sink: whatever goes wrong with one (not an event, a trigger that cannot
  be evaluated, an error of any class from the client) becomes a dead letter with the reason;
  an ``api_host`` outside the allow-list or an unknown credential is a dead letter before any
  request is made;
- nothing the sink writes carries a token: dead letters hold the consumed event without
  ``readtoken``/``writetoken`` (header ``streamapp.dlq.tokens: stripped``), and reasons are
  bounded, sanitized excerpts of what endpoints answered (``domain.redaction.excerpt``).

Its collaborators (settings, the consumer factory, the OpenWhisk client, the token issuer, the
outcome store, the policy index, the outputs) come in as ``SinkParts`` (``sink/wiring.py``
builds them for a worker; the unit tests pass fakes). This module is the faust Service and its
wiring only: ``sink/consumer.py`` follows, takes, pauses and commits; ``sink/invoker.py`` runs
one record through its triggers.

Why a faust Service with its own aiokafka consumer rather than a faust agent: the topics to
consume change while workers run (a tenant gains or loses triggers through a policy update),
which a faust agent's fixed channel cannot follow, and an agent acknowledging out of order can
commit past a record still in flight (faust #606). The sink follows the policy table and
commits explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust

from streamapp import observed
from streamapp.outputs import EXIT_OUTPUT_LOST
from streamapp.sink.consumer import SinkConsumer
from streamapp.sink.invoker import Invoker
from streamapp.sink.parts import SinkParts

log = logging.getLogger(__name__)


class InvocationSink(faust.Service):
    """Runs in every worker after its tables are recovered (faust starts services then)."""

    def __init__(self, parts: SinkParts, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._parts = parts
        caught_up = asyncio.Event()  # success records read up to the last assignment
        self.invoker = Invoker(parts, caught_up)
        self.consumer = SinkConsumer(parts, self.invoker, caught_up)
        self.outcomes = parts.outcomes
        self.client = parts.client
        self._loop_task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        await self._parts.declare_topics()
        await self.outcomes.start()
        await self.client.start()
        consumer = self._parts.consumer_factory()
        await consumer.start()
        self.consumer.attach(consumer)
        try:
            await self.consumer.follow_policies()
        except Exception:  # the consume loop tries again within the discovery interval
            log.exception("invocation sink: following the policies failed")
        self._loop_task = asyncio.create_task(self.consumer.run(), name="invocation-sink")
        self._loop_task.add_done_callback(_exit_if_crashed)
        observed.register_sink(self)
        log.info("invocation sink started as consumer group %s", self._parts.settings.sink_group_id)

    async def on_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self.consumer.attached:
            await self.consumer.stop()
        await self.client.close()
        await self.outcomes.stop()

    def recent_invocations(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's latest invocation records this sink has read, newest first."""
        return list(reversed(self.outcomes.recent.get(tenant, ())))

    def lag(self) -> int:
        """Records of this worker's tenant-topic partitions not yet finished (for /metrics)."""
        return self.consumer.lag()


def _exit_if_crashed(task: asyncio.Task[None]) -> None:
    """A sink that stopped consuming must not look alive: exit, the supervisor restarts us and
    the uncommitted records are consumed again."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("invocation sink crashed: %r", task.exception(), exc_info=task.exception())
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)
