"""Prometheus metrics, named ``streamapp_<noun>_<unit>``. Label values are bounded by config."""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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


class LoopHistogram:
    """A Prometheus histogram for a hot path of the event loop's thread: bucket counts and a
    sum in a plain list, no lock and no value objects (prometheus-client's ``observe`` locks
    twice per call: ~1.8 µs, once per minted token). Exposed like a ``Histogram`` (same
    family, buckets, ``_count`` and ``_sum``) by ``collect``. Only that thread observes; a
    scrape from another thread may see a bucket and the sum one observation apart."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name, self.documentation = name, documentation
        bounds = sorted(buckets)
        self._bounds = (*bounds, math.inf) if not bounds or bounds[-1] != math.inf else (*bounds,)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._created = time.time()
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        self._sum += value
        if not math.isnan(value):  # NaN is in no bucket (as prometheus-client counts it)
            self._counts[bisect.bisect_left(self._bounds, value)] += 1  # le: value <= bound

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, counted in zip(self._bounds, self._counts, strict=True):
            cumulative += counted
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        family = HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )
        family.add_sample(f"{self.name}_created", {}, self._created)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


TOKEN_MINT_SECONDS = LoopHistogram(
    "streamapp_token_mint_seconds",
    "Time to mint (or attenuate) one delegated macaroon.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
POLICY_ENTRIES = Gauge(
    "streamapp_policy_entries",
    "Entries in this worker's policy index (it must match on every worker).",
    ["kind"],
)
INVOCATION_ATTEMPTS = Counter(
    "streamapp_invocation_attempts",
    "OpenWhisk invoke calls by outcome (success, action_failed, throttled, retryable, "
    "unreachable, rejected).",
    ["outcome"],
)
INVOCATIONS = Counter(
    "streamapp_invocations",
    "Final outcome per event and trigger (success, action_failed, dead_lettered, revoked, "
    "duplicate: skipped because a success record exists).",
    ["outcome"],
)
INVOCATION_SECONDS = Histogram(
    "streamapp_invocation_seconds",
    "Duration of one OpenWhisk invoke call (HTTP round trip).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SINK_PENDING = Gauge(
    "streamapp_sink_pending_records",
    "Records of tenant topics this worker holds unfinished (in flight or waiting to retry).",
)
SINK_PAUSED = Gauge(
    "streamapp_sink_paused_partitions",
    "Tenant topic partitions paused because their tenant has too much unfinished work.",
)
SINK_TOPIC_ERRORS = Counter(
    "streamapp_sink_topic_errors",
    "Tenant topics the sink could not create or look up: skipped, tried again at the next "
    "discovery (the other tenants' topics are followed as usual).",
    ["tenant"],
)

# the dCache storage-events bridge (``streamapp dcache-events``); frontend = configured name
DCACHE_EVENTS = Counter(
    "streamapp_dcache_events",
    "SSE frames from dCache frontends, by frontend and kind (inotify, system, other).",
    ["frontend", "kind"],
)
DCACHE_GAPS = Counter(
    "streamapp_dcache_gaps",
    "Times the bridge could not see events and resynchronised by listing, by frontend and "
    "reason (EVENT_LOSS, IN_Q_OVERFLOW, SHUTDOWN, channel-gone).",
    ["frontend", "reason"],
)
DCACHE_RESYNC_CHANGES = Counter(
    "streamapp_dcache_resync_changes",
    "Changes found by listing (new directories, resynchronisation), by frontend and change.",
    ["frontend", "change"],
)
DCACHE_WATCHES = Gauge(
    "streamapp_dcache_watches", "Directories the bridge watches, by frontend.", ["frontend"]
)
DCACHE_PROBLEMS = Counter(
    "streamapp_dcache_problems",
    "Conditions an operator must look at, by frontend and problem (competing_client, "
    "watch_limit, auth, unreachable, refused).",
    ["frontend", "problem"],
)

# the ACL agent (agents/kafka_acls.py): broker ACLs kept equal to what the policies allow
KAFKA_ACLS = Gauge(
    "streamapp_kafka_acls",
    "Tenant ACLs on the broker the ACL agent manages (after its last reconciliation; leader only).",
)
ACL_RECONCILIATIONS = Counter(
    "streamapp_acl_reconciliations",
    "Reconciliations of the broker's ACLs with the policy table, by outcome (ok, failed).",
    ["outcome"],
)
ACL_CHANGES = Counter(
    "streamapp_acl_changes",
    "ACLs created or deleted by the ACL agent, by change (created, deleted).",
    ["change"],
)
ACL_STUCK = Gauge(
    "streamapp_kafka_acls_stuck",
    "ACLs no policy grants that the admin client cannot address (newer resource types or "
    "operations): remove them with Kafka's own tools.",
)
ACL_DRIFT_CORRECTIONS = Counter(
    "streamapp_acl_drift_corrections",
    "ACLs deleted that the policy never granted (added by hand or by another tool).",
)
ACL_RECONCILE_SECONDS = Histogram(
    "streamapp_acl_reconcile_seconds",
    "Duration of one reconciliation (describe, create, delete).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Counts added on the hot path, not yet in their prometheus-client counters (see ``count``).
_pending: dict[tuple[Any, tuple[str, ...]], float] = {}


def count(metric: Any, *labels: str, amount: float = 1) -> None:
    """Add to a counter (``labels`` of a labelled one) without prometheus-client's lock and
    value object per call: a dict entry, folded into the counter by ``fold`` before every scrape
    (web/metrics.py). Per raw record the pipeline counts ~6 times; with a locked ``inc`` each
    that was ~10 % of its CPU (issue #13). Only the event loop's thread counts and folds."""
    key = (metric, labels)
    _pending[key] = _pending.get(key, 0) + amount


def fold() -> None:
    """Move the pending counts into their counters (before a scrape reads them)."""
    if not _pending:
        return
    pending = list(_pending.items())
    _pending.clear()
    for (metric, labels), amount in pending:
        (child(metric, *labels) if labels else metric).inc(amount)


@functools.cache
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus-client checks and locks on every
    ``labels()`` call, measurable once per record (issue #13). Label values here come from
    bounded sets (configured topics, event types, fixed outcomes)."""
    return metric.labels(*labels)
