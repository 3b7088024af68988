"""Prometheus metrics, named ``streamapp_<noun>_<unit>``. Label values are bounded by config."""

from __future__ import annotations

from prometheus_client import Counter

INGEST_RECORDS = Counter(
    "streamapp_ingest_records",
    "Raw records consumed by the ingest agent, by raw topic and outcome "
    "(event: at least one canonical event; skipped; rejected: dead-lettered).",
    ["topic", "outcome"],
)
INGEST_EVENTS = Counter(
    "streamapp_ingest_events",
    "Canonical storage events produced, by CloudEvents type.",
    ["type"],
)
