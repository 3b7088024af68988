"""What this worker has seen lately, for the dashboard: bounded in-memory rings and counts.
No tokens, no credentials: only what an operator may look at.

The read-only registry between the running parts and the web views: agents and the sink
write here (or register a view of themselves), ``web/`` reads here and never imports
``agents/`` or ``sink/``."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

RECENT: Final = 50

# (at, tenant, type, subject, source) per delivery: a tuple, made into a dict only when the
# dashboard reads it (``recent_delivery_rows``): this runs once per tenant copy
recent_deliveries: deque[tuple[float, str, Any, Any, Any]] = deque(maxlen=RECENT)
deliveries_by_tenant: Counter[str] = Counter()  # bounded: tenants are the policies' names
# deliveries not yet published to the stats table (agents/stats.py drains it every second)
unpublished_deliveries: Counter[str] = Counter()


def delivered(tenant: str, event: Mapping[str, Any]) -> None:
    deliveries_by_tenant[tenant] += 1
    unpublished_deliveries[tenant] += 1
    recent_deliveries.append(
        (time.time(), tenant, event.get("type"), event.get("subject"), event.get("source"))
    )


def recent_delivery_rows(limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` deliveries, newest first, as the dashboard shows them."""
    fields = ("at", "tenant", "type", "subject", "source")
    return [dict(zip(fields, row, strict=True)) for row in reversed(recent_deliveries)][:limit]


@dataclass
class AclAgentStatus:
    """The ACL agent's state for /health (agents/kafka_acls.py writes, the web reads)."""

    enabled: bool = False
    running: bool = False
    leader: bool = False
    last_ok_at: float | None = None
    managed: int = 0
    stuck: int = 0
    failures: int = 0  # consecutive
    last_error: str = ""

    def started(self) -> None:
        self.enabled = self.running = True

    def stopped(self) -> None:
        self.running = False

    def standby(self) -> None:
        self.leader, self.failures, self.last_error = False, 0, ""

    def reconciled(self, managed: int, stuck: int) -> None:
        self.leader, self.managed, self.stuck = True, managed, stuck
        self.last_ok_at, self.failures, self.last_error = time.time(), 0, ""

    def failed(self, error: str) -> None:
        self.leader, self.failures, self.last_error = True, self.failures + 1, error[:300]

    def view(self) -> dict[str, Any]:
        if not self.enabled:
            return {"state": "off"}
        state = (
            "stopped"
            if not self.running
            else "standby"
            if not self.leader
            else "failing"
            if self.failures
            else "ok"
        )
        return {
            "state": state,
            "managed": self.managed,
            "stuck": self.stuck,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_ok_age_s": None
            if self.last_ok_at is None
            else round(time.time() - self.last_ok_at, 1),
        }


acl_agent_status = AclAgentStatus()


class SinkView(Protocol):
    """What the web may read of an invocation sink."""

    def lag(self) -> int: ...

    def recent_invocations(self, tenant: str) -> list[dict[str, Any]]: ...


_sinks: list[SinkView] = []


def register_sink(sink: SinkView) -> None:
    _sinks.append(sink)


_ingest_lags: list[Callable[[], int]] = []


def register_ingest_lag(lag: Callable[[], int]) -> None:
    """The batch-wise ingest's lag (its own consumer: faust's does not read the raw topics)."""
    _ingest_lags.append(lag)


def ingest_lag() -> int:
    return sum(lag() for lag in _ingest_lags)


def sink_lag() -> int:
    return sum(sink.lag() for sink in _sinks)


def recent_invocations(tenant: str) -> list[dict[str, Any]]:
    """This worker's view of the tenant's latest invocation records (every worker reads them
    all), newest first."""
    for sink in _sinks:
        return sink.recent_invocations(tenant)
    return []
