"""One lane per tenant: its own concurrency limit, rate limit and throttling back-off.

Lanes share nothing, so a tenant whose endpoint is slow, down or throttling waits in its own
lane while the others go on. On a 429 the whole lane pauses (exponential back-off with jitter,
growing with consecutive 429s) and halves its concurrency; successes restore it one step at a
time (additive increase, multiplicative decrease), so a throttled tenant settles just below the
namespace's limits instead of hammering them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from streamapp.domain.backoff import equal_jitter_delay
from streamapp.domain.invocations import Throttle
from streamapp.domain.triggers import Limits


class TenantLane:
    def __init__(
        self,
        tenant: str,
        limits: Limits,
        *,
        throttle_base_s: float = 1.0,
        throttle_cap_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.tenant = tenant
        self.limits = limits
        self.limit = limits.concurrency  # current, adaptive, ≤ limits.concurrency
        self.in_flight = 0
        self.jobs = 0  # records of this tenant not finished (bounded by the sink: pause)
        self.throttled_until = 0.0
        self.consecutive_throttles = 0
        self._throttle_base_s = throttle_base_s
        self._throttle_cap_s = throttle_cap_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._next_start = 0.0
        self._changed = asyncio.Condition()
        self._successes_since_decrease = 0

    def update_limits(self, limits: Limits) -> None:
        if limits != self.limits:
            self.limits = limits
            self.limit = min(self.limit, limits.concurrency) or 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for the lane: not throttled, under the rate limit, under concurrency."""
        async with self._changed:
            while True:
                now = time.monotonic()
                if now < self.throttled_until:
                    await _wait(self._changed, self.throttled_until - now)
                    continue
                if self.in_flight >= self.limit:
                    await self._changed.wait()
                    continue
                break
            self.in_flight += 1
            rate = self.limits.rate_per_minute
            start_at = now
            if rate is not None:
                start_at = max(now, self._next_start)
                self._next_start = start_at + 60.0 / rate
        try:
            if start_at > now:
                await asyncio.sleep(start_at - now)
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def throttled(self, throttle: Throttle) -> float:
        """A 429: pause the whole lane and lower its concurrency; returns the pause."""
        async with self._changed:
            self.consecutive_throttles += 1
            pause = equal_jitter_delay(
                self.consecutive_throttles, self._throttle_base_s, self._throttle_cap_s, self._rng
            )
            self.throttled_until = max(self.throttled_until, time.monotonic() + pause)
            cap = self.limits.concurrency
            if throttle.kind == "concurrency" and throttle.allowed:
                cap = min(cap, max(1, throttle.allowed - 1))
            self.limit = max(1, min(cap, self.limit // 2))
            self._successes_since_decrease = 0
            self._changed.notify_all()
            return pause

    async def succeeded(self) -> None:
        async with self._changed:
            self.consecutive_throttles = 0
            self._successes_since_decrease += 1
            if self.limit < self.limits.concurrency and self._successes_since_decrease >= 10:
                self.limit += 1
                self._successes_since_decrease = 0
                self._changed.notify_all()


async def _wait(condition: asyncio.Condition, seconds: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(condition.wait(), timeout=seconds)
