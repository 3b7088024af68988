"""Every topic streamapp reads or writes, declared once. Agents import these; never the reverse."""

from __future__ import annotations

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

# Records no stage could use: the original key and bytes, with the reason in headers.
dead_letters = app.topic(
    settings.deadletter_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,  # faust creates internal topics before it subscribes
)
