"""Loaded only by the workers of ``bench.pipeline minting-share --timed`` (on their
``PYTHONPATH``): ``TokenIssuer.issue_event`` (everything the issuer does for an event's copies:
file lookups, sharing, caches, minting) and ``TokenIssuer._mint`` (the tokens minted: HMAC
chain and serialization) timed by the thread's CPU clock. A thread writes, every second, the
process's CPU time and the totals (``BENCH_MINTING_TIMES``, one line per second): minting's
share is the CPU inside ``issue_event`` over the process's CPU, in the seconds the worker was
busy — measured directly in the worker, not by difference between runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from streamapp import delegation
from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent

_real_issue_event = delegation.TokenIssuer.issue_event
_real_mint = delegation.TokenIssuer._mint
# CPU ns inside issue_event, events, copies, CPU ns inside _mint (one thread: the loop's)
_totals = [0, 0, 0, 0]


def _timed_issue_event(
    self: delegation.TokenIssuer,
    deliveries: Sequence[Delivery],
    event: CanonicalEvent,
    now: datetime,
) -> list[delegation.DelegatedTokens]:
    started = time.thread_time_ns()
    try:
        return _real_issue_event(self, deliveries, event, now)
    finally:
        _totals[0] += time.thread_time_ns() - started
        _totals[1] += 1
        _totals[2] += len(deliveries)


def _timed_mint(self: delegation.TokenIssuer, *args: Any, **kwargs: Any) -> Any:
    started = time.thread_time_ns()
    try:
        return _real_mint(self, *args, **kwargs)
    finally:
        _totals[3] += time.thread_time_ns() - started


def _write_totals(path: str) -> None:
    with open(path, "a", buffering=1) as out:
        while True:
            time.sleep(1.0)
            out.write(f"{time.process_time():.6f} {' '.join(map(str, _totals))}\n")


delegation.TokenIssuer.issue_event = _timed_issue_event  # type: ignore[method-assign]
delegation.TokenIssuer._mint = _timed_mint  # type: ignore[method-assign]
threading.Thread(
    target=_write_totals, args=(os.environ["BENCH_MINTING_TIMES"],), daemon=True
).start()
