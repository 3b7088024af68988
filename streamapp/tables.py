"""The stateful tables, declared once: dataset ownership, tenant policies, per-minute stats.

Both are faust GlobalTables on RocksDB with changelog topics: every worker holds every entry
(authorization of any event needs all of them). ``partitions=1, recovery_buffer_size=1`` is the
documented workaround for GlobalTable recovery loops with several workers (faust #283).

Each worker keeps a ``PolicyIndex`` (a trie over path segments) in step with the tables: rebuilt
from the table contents after recovery, then updated by every changelog event (including the
echo of its own writes) and by the update agent's own writes. A per-entry version guard keeps a
late echo of an older entry from undoing a newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from streamapp.app import app, settings
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.index import PolicyIndex, PrefixConflictError
from streamapp.domain.policy import parse_tenant
from streamapp.domain.policy_fields import PolicyError
from streamapp.metrics import POLICY_ENTRIES

log = logging.getLogger(__name__)

policy_index = PolicyIndex()
_applied_versions: dict[tuple[str, str], int] = {}
# called after every change of the index (the ACL agent reconciles on them); must not block
index_listeners: list[Callable[[], None]] = []


def _notify() -> None:
    for listener in index_listeners:
        listener()


def apply_entry(kind: str, name: str, entry: Mapping[str, Any] | None) -> None:
    """Bring the index in step with one table entry (idempotent, never goes backwards)."""
    version = int(entry.get("version", 0)) if entry else 0
    if entry is not None and _applied_versions.get((kind, name), -1) >= version:
        return
    try:
        if entry is None or entry.get("deleted") or entry.get("spec") is None:
            (policy_index.remove_dataset if kind == "dataset" else policy_index.remove_tenant)(name)
        elif kind == "dataset":
            policy_index.put_dataset(parse_dataset(entry["spec"]))
        else:
            policy_index.put_tenant(parse_tenant(entry["spec"]))
    except (PolicyError, PrefixConflictError) as exc:
        # Entries were validated before they were written; this means a hand-edited changelog.
        log.error("table entry %s %r not applied to the index: %s", kind, name, exc)
        return
    _applied_versions[(kind, name)] = version
    _update_gauges()
    _notify()


def _update_gauges() -> None:
    POLICY_ENTRIES.labels("dataset").set(len(policy_index.datasets))
    POLICY_ENTRIES.labels("tenant").set(len(policy_index.tenants))


def rebuild_index() -> None:
    """Rebuild the index from both tables (after recovery: RocksDB plus changelog)."""
    datasets: list[Any] = []
    tenants: list[Any] = []
    _applied_versions.clear()
    for kind, table, parse, target in (
        ("dataset", dataset_table, parse_dataset, datasets),
        ("tenant", tenant_table, parse_tenant, tenants),
    ):
        for name, entry in table.items():
            if not entry or entry.get("deleted") or entry.get("spec") is None:
                continue
            try:
                target.append(parse(entry["spec"]))
            except PolicyError as exc:
                log.error("table entry %s %r is invalid: %s", kind, name, exc)
                continue
            _applied_versions[(kind, name)] = int(entry.get("version", 0))
    policy_index.replace_all(datasets, tenants)
    _update_gauges()
    _notify()
    log.info("policy index rebuilt: %d datasets, %d tenants", len(datasets), len(tenants))


def _changelog_listener(kind: str) -> Callable[[Any], Any]:
    async def on_changelog_event(event: Any) -> None:
        apply_entry(kind, event.key, event.value)

    return on_changelog_event


async def _on_recovered() -> None:
    rebuild_index()


def _table_options() -> dict[str, Any]:
    return {
        "key_type": str,
        "partitions": 1,
        "recovery_buffer_size": 1,
        "on_recover": _on_recovered,
        # RocksDB's default block cache is 2 GiB per table per worker; these tables are small.
        # (a fresh dict per table: faust's RocksDB store pops keys from it)
        "options": {"block_cache_size": 8 * 1024 * 1024},
    }


dataset_table = app.GlobalTable(
    "datasets",
    on_changelog_event=_changelog_listener("dataset"),
    help="Dataset ownership: dataset id -> {version, deleted, spec, kid}.",
    **_table_options(),
)
tenant_table = app.GlobalTable(
    "tenants",
    on_changelog_event=_changelog_listener("tenant"),
    help="Tenant policies: tenant -> {version, deleted, spec, kid}.",
    **_table_options(),
)

TABLES = {"dataset": dataset_table, "tenant": tenant_table}


# Deliveries per tenant per minute: tumbling windows kept an hour, fed by the deliveries topic
# (keyed by tenant). Partitioned: a tenant's counts live on the worker owning its partition,
# and the stats view routes each GET there.
STATS_WINDOW_S = 60
STATS_KEPT = timedelta(hours=1)
tenant_stats = app.Table(
    "tenant-stats",
    default=int,
    key_type=str,
    value_type=int,
    partitions=settings.topic_partitions,
    help="Deliveries per tenant per minute.",
).tumbling(STATS_WINDOW_S, expires=STATS_KEPT)
