"""Every topic streamapp reads or writes, declared once. Agents import these; never the reverse.

All are declared ``internal``: faust then creates them (with these partition counts) before it
subscribes, instead of a producer auto-creating them with the broker's default.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streamapp.app import app, settings


def _bytes_topic(*names: str, partitions: int = settings.topic_partitions) -> Any:
    """A topic whose keys and values stay bytes: faust never decodes them."""
    return app.topic(
        *names,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=True,
    )


# Raw records exactly as storage systems publish them.
raw_storage_records = _bytes_topic(*settings.raw_topics)

# Canonical CloudEvents (contract: domain/events.py), keyed by subject (the object's path) so
# per-object order holds; written pre-serialized by the ingest agent.
storage_events = _bytes_topic(settings.normalized_topic)

# Records no stage could use: the original key and bytes, with the reason in headers.
dead_letters = _bytes_topic(settings.deadletter_topic)

# Signed policy and ownership updates (JWS), one partition each so updates apply in order.
dataset_updates = _bytes_topic(settings.dataset_updates_topic, partitions=1)
tenant_updates = _bytes_topic(settings.tenant_updates_topic, partitions=1)
# Every update with its verdict (accepted or refused, and why) in headers; value untouched.
updates_audit = _bytes_topic(settings.updates_audit_topic, partitions=1)

# One record per invocation attempt's outcome (audit, views); ``success`` ones are the
# records that stop a replay from invoking the same trigger for the same event twice.
invocations = _bytes_topic(settings.invocations_topic)

# Delivery counts: per worker, tenant and second, one record whose value is the count (ASCII),
# keyed by tenant (JSON-serialized, as the stats table's changelog keys are: faust routes a
# tenant's view to the worker owning that partition). agents/stats.py.
deliveries = app.topic(
    settings.deliveries_topic,
    key_type=str,
    key_serializer="json",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,
)

_tenant_topics: dict[str, Any] = {}
_creating: dict[str, asyncio.Lock] = {}
# faust's topic creation makes concurrent callers for one name wait on one shared future that
# a failed first attempt never resolves (they would wait for ever): one creation per tenant at
# a time, bounded, so a failure reaches its caller as an error (a dead letter, a skipped topic)
TENANT_TOPIC_CREATE_TIMEOUT_S = 60.0


async def tenant_events(tenant: str) -> Any:
    """The tenant's own authorized-event topic, created on first use."""
    topic = _tenant_topics.get(tenant)
    if topic is not None:
        return topic
    async with _creating.setdefault(tenant, asyncio.Lock()):
        topic = _tenant_topics.get(tenant)
        if topic is None:
            topic = _bytes_topic(settings.tenant_topic(tenant))
            await asyncio.wait_for(topic.maybe_declare(), TENANT_TOPIC_CREATE_TIMEOUT_S)
            _tenant_topics[tenant] = topic
    return topic
