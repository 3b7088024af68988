"""``metrics.count``/``fold``: hot-path counts reach their prometheus counters at the next fold
(every scrape folds first), labelled and unlabelled, and nothing is counted twice."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streamapp.metrics import DELIVERIES, INGEST_RECORDS, count, fold


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
