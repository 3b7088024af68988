"""Per-minute delivery counts: the deliveries topic (keyed by tenant) -> the windowed stats table.

Counts are at-least-once like every agent here: a replay after a crash can count a delivery
twice; they are operators' figures, not billing.
"""

from __future__ import annotations

from typing import Any

from streamapp.app import app
from streamapp.tables import tenant_stats
from streamapp.topics import deliveries


@app.agent(deliveries)
async def count_deliveries(stream: Any) -> None:
    # the window is the one of the delivery record's timestamp (when authorize sent it)
    async for event in stream.events():
        tenant_stats[event.key] += 1
