"""The one back-off every retry loop uses (the sink's retries and 429 pauses, the dCache bridge's
reconnects).

"Equal jitter" in the terms of the AWS Architecture Blog's "Exponential Backoff And Jitter"
(2015): the delay doubles per attempt up to a cap, and a uniformly random half of it is dropped,
so replicas retrying together spread out while each still waits at least half the ceiling.
"""

from __future__ import annotations

import random


def equal_jitter_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 1 failures so far): uniform
    in [ceiling / 2, ceiling], ceiling = min(cap, base * 2 ** (attempt - 1))."""
    ceiling = min(cap_s, base_s * (2 ** min(max(0, attempt - 1), 62)))
    return rng.uniform(ceiling / 2, ceiling)
