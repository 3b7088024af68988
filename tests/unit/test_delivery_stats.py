"""Delivery statistics summed in process and published once a second (agents/stats.py)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streamapp import observed
from streamapp.agents import stats
from streamapp.app import app
from streamapp.topics import deliveries


async def test_sums_are_published_per_tenant_with_a_timestamp_in_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []

    class Producer:
        async def send(self, topic: str, key: bytes, value: bytes, **kwargs: Any) -> None:
            sent.append({"topic": topic, "key": key, "value": value, **kwargs})

    monkeypatch.setattr(app, "_producer", Producer(), raising=False)
    monkeypatch.setattr(type(app), "producer", property(lambda self: self._producer))
    observed.unpublished_deliveries.clear()
    for tenant in ("alpha", "alpha", "beta", "alpha"):
        observed.delivered(tenant, {"type": "t", "subject": "/s", "source": "x"})
    await stats.publish_delivery_counts()
    by_key = {orjson.loads(m["key"]): m for m in sent}
    assert {k: int(m["value"]) for k, m in by_key.items()} == {"alpha": 3, "beta": 1}
    assert {m["topic"] for m in sent} == {deliveries.get_topic_name()}
    # faust's producer takes seconds: a millisecond value would land 1000x in the future
    assert all(abs(m["timestamp"] - time.time()) < 60 for m in sent)
    assert not observed.unpublished_deliveries
    sent.clear()
    await stats.publish_delivery_counts()
    assert sent == []  # nothing new: nothing published


@pytest.mark.parametrize(
    ("value", "count"),
    [(b"", 1), (None, 1), (b"7", 7), (b"0", 0), (b"-3", 0), (b"x", 0), (b"12\n", 12)],
)
def test_a_deliveries_record_counts_its_value(value: bytes | None, count: int) -> None:
    assert stats.delivery_count(value) == count
