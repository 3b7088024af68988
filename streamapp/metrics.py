"""Prometheus metrics, named ``streamapp_<noun>_<unit>``. Label values are bounded by config."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
POLICY_UPDATES = Counter(
    "streamapp_policy_updates",
    "Signed policy/ownership updates by verdict.",
    ["verdict"],
)
AUTHORIZED_EVENTS = Counter(
    "streamapp_authorize_events",
    "Canonical events seen by the authorization agent, by outcome "
    "(delivered: to at least one tenant; denied: owned but no tenant entitled and matching; "
    "unowned: in no dataset).",
    ["outcome"],
)
DELIVERIES = Counter(
    "streamapp_deliveries",
    "Events delivered to tenant topics (one per tenant per event).",
)
TOKENS = Counter(
    "streamapp_tokens",
    "Delegated tokens, by kind (read/write) and result (minted, or why not).",
    ["kind", "result"],
)
TOKEN_MINT_SECONDS = Histogram(
    "streamapp_token_mint_seconds",
    "Time to mint (or attenuate) one delegated macaroon.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
POLICY_ENTRIES = Gauge(
    "streamapp_policy_entries",
    "Entries in this worker's policy index (it must match on every worker).",
    ["kind"],
)
