"""``metrics.count``/``fold``: hot-path counts reach their prometheus counters at the next fold
(every scrape folds first), labelled and unlabelled, and nothing is counted twice; so do
histogram observations (``observe``)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streamapp.metrics import (
    DELIVERIES,
    INGEST_RECORDS,
    TOKEN_MINT_SECONDS,
    count,
    fold,
    observe,
)


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


def test_observations_reach_the_histogram_at_the_next_fold_once() -> None:
    fold()
    count_name, sum_name = "streamapp_token_mint_seconds_count", "streamapp_token_mint_seconds_sum"
    before = (sample(count_name), sample(sum_name))
    observe(TOKEN_MINT_SECONDS, 0.25)
    observe(TOKEN_MINT_SECONDS, 0.5)
    assert sample(count_name) == before[0]  # not before the fold
    fold()
    assert sample(count_name) == before[0] + 2
    assert sample(sum_name) == before[1] + 0.75
    fold()
    assert sample(count_name) == before[0] + 2


def test_observations_are_folded_when_many_wait_without_a_scrape() -> None:
    fold()
    before = sample("streamapp_token_mint_seconds_count")
    for _ in range(10_000):
        observe(TOKEN_MINT_SECONDS, 0.001)
    assert sample("streamapp_token_mint_seconds_count") == before + 10_000  # memory stays bounded
