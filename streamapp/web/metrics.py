"""``GET /metrics``: the Prometheus text exposition of this worker's metrics, including the
consumer lag, computed when scraped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamapp.app import app
from streamapp.metrics import fold
from streamapp.observed import ingest_lag, sink_lag
from streamapp.private_access import read_offset, started_consumer


def agents_lag() -> int:
    """Records in this worker's assigned partitions past what its agents have read."""
    consumer: Any = started_consumer(app)
    if consumer is None:
        return 0
    total = 0
    with contextlib.suppress(Exception):  # not started or mid-rebalance: nothing to report
        for tp in consumer.assignment():
            read = read_offset(consumer, tp)
            end = consumer.highwater(tp) if read is not None else None
            if end is not None:
                total += max(0, end - read - 1)
    return total


class ConsumerLag(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamapp_consumer_lag",
            "Records waiting in this worker's assigned partitions: agents (raw, canonical, "
            "update and delivery topics: not yet read), ingest (raw topics read by the "
            "batch-wise ingest: not yet processed) and sink (tenant topics: not finished).",
            labels=["consumer"],
        )
        family.add_metric(["agents"], agents_lag())
        family.add_metric(["ingest"], ingest_lag())
        family.add_metric(["sink"], sink_lag())
        yield family


REGISTRY.register(ConsumerLag())


@app.page("/metrics")
class Metrics(web.View):
    async def get(self, request: web.Request) -> Any:
        fold()  # the counts the hot path added since the last scrape
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
