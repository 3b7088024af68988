"""What this worker has seen lately, for the dashboard: bounded in-memory rings and counts.
No tokens, no credentials: only what an operator may look at."""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any, Final

RECENT: Final = 50

recent_deliveries: deque[dict[str, Any]] = deque(maxlen=RECENT)
deliveries_by_tenant: Counter[str] = Counter()  # bounded: tenants are the policies' names


def delivered(tenant: str, event: dict[str, Any]) -> None:
    deliveries_by_tenant[tenant] += 1
    recent_deliveries.append(
        {
            "at": time.time(),
            "tenant": tenant,
            "type": event.get("type"),
            "subject": event.get("subject"),
            "source": event.get("source"),
        }
    )
