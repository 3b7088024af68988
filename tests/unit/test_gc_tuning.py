"""``gc_tuning.settle_long_lived``: what is alive when consuming starts leaves the collector's
view, young collections come after more allocations, and later cyclic garbage is still freed."""

from __future__ import annotations

import gc
import weakref

from streamapp.gc_tuning import YOUNG_THRESHOLD, settle_long_lived


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_long_lived_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = gc.get_threshold()
    alive_before = _Node()
    try:
        settle_long_lived()
        assert gc.get_freeze_count() > 1000  # modules, classes, this test's objects...
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        later = _Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None  # made after the freeze: collected
        assert alive_before.me is alive_before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
