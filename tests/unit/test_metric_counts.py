"""``metrics.count``/``fold``: hot-path counts reach their prometheus counters at the next fold
(every scrape folds first), labelled and unlabelled, and nothing is counted twice."""

from __future__ import annotations

import math

from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest

from streamapp.metrics import DELIVERIES, INGEST_RECORDS, LoopHistogram, count, fold


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_counts_reach_the_counters_at_the_next_fold_once() -> None:
    labels = {"topic": "test-metric-counts.raw", "outcome": "event"}
    fold()  # what other tests in this process counted
    records = "streamapp_ingest_records_total"
    before = (sample("streamapp_deliveries_total"), sample(records, labels))
    count(DELIVERIES)
    count(DELIVERIES, amount=2)
    count(INGEST_RECORDS, "test-metric-counts.raw", "event")
    assert sample("streamapp_deliveries_total") == before[0]  # not before the fold
    fold()
    assert sample("streamapp_deliveries_total") == before[0] + 3
    assert sample(records, labels) == before[1] + 1
    fold()  # nothing pending: nothing added again
    assert sample("streamapp_deliveries_total") == before[0] + 3


def test_the_loop_histogram_exposes_what_prometheus_clients_histogram_would() -> None:
    """The same observations (on, between and beyond the bounds) give the same samples."""
    buckets = (0.001, 0.01, 0.1)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopHistogram("unit_mint_seconds", "doc", buckets, registry=ours_registry)
    theirs = Histogram("unit_mint_seconds", "doc", buckets=buckets, registry=theirs_registry)
    for value in (0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 7.0, -1.0, math.inf, math.nan):
        ours.observe(value)
        theirs.observe(value)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], str]:
        return {  # the sum is NaN (one observation was): compared as text
            (s.name, s.labels.get("le", "")): "created"
            if s.name.endswith("_created")
            else str(s.value)
            for family in registry.collect()
            for s in family.samples
        }

    assert samples(ours_registry) == samples(theirs_registry)
    assert samples(ours_registry)[("unit_mint_seconds_bucket", "0.001")] == "4.0"  # -1 too
    assert samples(ours_registry)[("unit_mint_seconds_count", "")] == "11.0"  # not the NaN
    exposed = generate_latest(ours_registry).decode()
    assert "# TYPE unit_mint_seconds histogram" in exposed
    assert 'unit_mint_seconds_bucket{le="+Inf"} 11.0' in exposed
    assert exposed.count('le="+Inf"') == 1
    with_inf = LoopHistogram("unit_inf_seconds", "doc", (1.0, math.inf), registry=None)
    with_inf.observe(2.0)
    assert [f.samples[1].value for f in with_inf.collect()] == [1.0]  # one +Inf bucket
