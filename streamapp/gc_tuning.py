"""The worker's garbage collector, set for a steady stream instead of a script.

Measured in a worker at 1,000 records/s (docs/benchmarks.md, "Collector pauses"): Python's full
(generation 2) collections walked 100,000-190,000 live objects — faust, aiokafka, the policy
index, every module — and each stopped the event loop for 60-100 ms, every 15-20 s in steady
state and several times a second in the first seconds: they were the latency tail. Almost all
of those objects live as long as the process, so once the worker is ready to consume they are
moved out of the collector's view (``gc.freeze``: they are never freed, as they would not be
anyway), and the youngest generation is collected after more allocations than CPython's 700
(a record allocates dozens of objects: with 700, several young collections per fetch).
Cyclic garbage made later is still collected.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

log = logging.getLogger(__name__)

YOUNG_THRESHOLD: Final = 10_000


def settle_long_lived() -> None:
    """Everything alive now as permanent; called once, when consuming starts."""
    gc.collect()  # start-up's garbage first: it must not be frozen
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.info("gc: %d long-lived objects frozen", gc.get_freeze_count())
