"""Per-minute delivery counts: in-process sums per tenant -> the deliveries topic -> the
windowed stats table.

The authorization stage counts each delivery in memory (``observed.delivered``); once a second
every worker publishes one record per tenant with the sum since the last publication (keyed
by tenant, value the count as ASCII digits), and ``count_deliveries`` adds it to the tenant's
window. So a delivery costs a counter increment, not a record and a changelog write.

What it costs: a worker that stops or crashes loses the counts of its last unpublished second,
and a replay after a crash counts its deliveries again; a sum published just after a minute
boundary lands in the next window. These are operators' figures, not billing
(docs/access.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from streamapp import observed
from streamapp.app import app
from streamapp.tables import tenant_stats
from streamapp.topics import deliveries

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 1.0


async def publish_delivery_counts() -> None:
    if not observed.unpublished_deliveries:
        return
    counts = dict(observed.unpublished_deliveries)
    observed.unpublished_deliveries.clear()
    now_s = time.time()  # faust's producer takes seconds (and converts to Kafka's ms)
    topic = deliveries.get_topic_name()
    for tenant, count in counts.items():
        try:
            await app.producer.send(
                topic,
                orjson.dumps(tenant),  # as faust's json key serializer writes it
                str(count).encode(),
                partition=None,
                timestamp=now_s,
                headers=None,
            )
        except Exception as exc:  # noqa: BLE001 - statistics must never stop deliveries
            log.warning("delivery counts of tenant %s not published: %r", tenant, exc)


app.timer(PUBLISH_INTERVAL_S)(publish_delivery_counts)


def delivery_count(value: Any) -> int:
    """The count a deliveries record carries (an empty value, as older workers wrote: one)."""
    if not value:
        return 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        return 0
    return count if count > 0 else 0


@app.agent(deliveries)
async def count_deliveries(stream: Any) -> None:
    # the window is the one of the record's timestamp (when its sum was published)
    async for event in stream.events():
        count = delivery_count(event.value)
        if count:
            tenant_stats[event.key] += count
