"""Every topic streamapp reads or writes, declared once. Agents import these; never the reverse."""

from __future__ import annotations

from typing import Any

from streamapp.app import app, settings
from streamapp.records.events import StorageEvent

# Raw records exactly as storage systems publish them: bytes in, never decoded by faust.
raw_storage_records = app.topic(
    *settings.raw_topics,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,  # faust creates internal topics before it subscribes
)

# Canonical CloudEvents, keyed by subject (the object's path) so per-object order holds.
storage_events = app.topic(
    settings.normalized_topic,
    key_type=str,
    value_type=StorageEvent,
    partitions=settings.topic_partitions,
    internal=True,  # faust creates internal topics before it subscribes
)

# The same topic read as bytes by the authorization agent, which checks each message's shape
# itself and dead-letters what is not a canonical event (a decode error must not stop it).
storage_events_raw = app.topic(
    settings.normalized_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,
)

# Records no stage could use: the original key and bytes, with the reason in headers.
dead_letters = app.topic(
    settings.deadletter_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,  # faust creates internal topics before it subscribes
)

# Signed policy and ownership updates (JWS), one partition each so updates apply in order.
dataset_updates = app.topic(
    settings.dataset_updates_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=1,
    internal=True,
)
tenant_updates = app.topic(
    settings.tenant_updates_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=1,
    internal=True,
)
# Every update with its verdict (accepted or refused, and why) in headers; value untouched.
updates_audit = app.topic(
    settings.updates_audit_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=1,
    internal=True,
)

_tenant_topics: dict[str, Any] = {}


async def tenant_events(tenant: str) -> Any:
    """The tenant's own authorized-event topic, created on first use."""
    topic = _tenant_topics.get(tenant)
    if topic is None:
        topic = app.topic(
            settings.tenant_topic(tenant),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            internal=True,
        )
        await topic.maybe_declare()
        _tenant_topics[tenant] = topic
    return topic
