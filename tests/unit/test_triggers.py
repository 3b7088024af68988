"""Triggers in tenant policies, the invocation body, judging OpenWhisk answers, back-off, the
offset ledger and tenant lanes (no network)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamapp.domain.ledger import PartitionLedger
from streamapp.domain.policy import PolicyError, parse_tenant
from streamapp.domain.triggers import (
    MAX_PARAMETER_BYTES,
    ActionRef,
    Limits,
    Outcome,
    Throttle,
    backoff_delay,
    idempotency_key,
    invocation_params,
    judge,
    matching_triggers,
    parse_throttle,
    tokens_expire_during_call,
)
from streamapp.sink.lanes import TenantLane

TRIGGER = {
    "name": "reduce",
    "action": "/p02/reduction/summary",
    "api_host": "https://openwhisk.desy.example",
    "credentials": "p02-openwhisk",
}


def tenant(**extra: Any) -> Any:
    spec = {
        "tenant": "p02",
        "subscriptions": [{"dataset": "raw", "write": True}, {"dataset": "calib"}],
        **extra,
    }
    return parse_tenant(spec)


def event(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": "dcache://dcache.desy.example",
        "type": "storage.object.created",
        "subject": "/data/p02/raw/scan 1/f.nxs",
        "time": "2026-11-26T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"path": "/data/p02/raw/scan 1/f.nxs", "size": 10},
        "tenant": "p02",
        "dataset": "raw",
        "readtoken": "READ-SECRET",
        "writetoken": "WRITE-SECRET",
        "writepath": "/data/p02/processed",
        "tokenexpires": "2026-11-26T10:10:00Z",
        **extra,
    }


# --- policy ------------------------------------------------------------------------------------


def test_triggers_and_limits_parse_with_defaults() -> None:
    policy = tenant(
        triggers=[{**TRIGGER, "types": ["storage.object.created"], "paths": ["**/*.nxs"]}],
        limits={"concurrency": 3, "rate_per_minute": 90},
    )
    (trigger,) = policy.triggers
    assert trigger.action == ActionRef("p02", "reduction", "summary")
    assert trigger.action.path == "/api/v1/namespaces/p02/actions/reduction/summary"
    assert not trigger.blocking
    assert trigger.timeout_s == 60
    assert policy.limits == Limits(concurrency=3, rate_per_minute=90)
    assert tenant().limits == Limits()
    assert policy.canonical()["triggers"][0]["credentials"] == "p02-openwhisk"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": "p02/summary"}, "triggers[0].action"),
        ({"action": "/p02/a/b/c"}, "triggers[0].action"),
        ({"api_host": "ftp://ow.example"}, "triggers[0].api_host"),
        ({"api_host": "https://user:pw@ow.example"}, "triggers[0].api_host"),
        (
            {"credentials": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2"},
            "triggers[0].credentials",
        ),
        ({"types": ["storage.object.exploded"]}, "triggers[0].types"),
        ({"paths": ["a/**b"]}, "triggers[0].paths[0]"),
        ({"params": {"read": "x"}}, "triggers[0].params.read"),
        ({"blocking": "yes"}, "triggers[0].blocking"),
        ({"timeout": 0}, "triggers[0].timeout"),
        ({"datasets": ["someone-elses"]}, "triggers[0].datasets"),
        ({"token": "x"}, "triggers[0].token"),
    ],
)
def test_bad_triggers_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as error:
        tenant(triggers=[{**TRIGGER, **change}])
    assert error.value.field == field


def test_trigger_names_are_unique_and_limits_are_checked() -> None:
    with pytest.raises(PolicyError, match="appears twice"):
        tenant(triggers=[TRIGGER, TRIGGER])
    with pytest.raises(PolicyError) as error:
        tenant(limits={"concurrency": 0})
    assert error.value.field == "limits.concurrency"


def test_matching_only_narrows() -> None:
    policy = tenant(
        triggers=[
            {**TRIGGER, "name": "all"},
            {**TRIGGER, "name": "nexus", "paths": ["**/*.nxs"]},
            {**TRIGGER, "name": "calib-only", "datasets": ["calib"]},
            {**TRIGGER, "name": "deletes", "types": ["storage.object.deleted"]},
        ]
    )
    names = [t.name for t in matching_triggers(policy.triggers, event(), "scan 1/f.nxs")]
    assert names == ["all", "nexus"]
    names = [t.name for t in matching_triggers(policy.triggers, event(), "scan 1/f.h5")]
    assert names == ["all"]
    deleted = event(type="storage.object.deleted", dataset="calib")
    names = [t.name for t in matching_triggers(policy.triggers, deleted, "x")]
    assert names == ["all", "calib-only", "deletes"]


def test_params_carry_references_and_tokens_but_no_token_inside_the_event() -> None:
    (trigger,) = tenant(
        triggers=[{**TRIGGER, "storage_url": "https://door.desy.example:2880", "params": {"n": 4}}]
    ).triggers
    params = invocation_params(event(), trigger, "p02")
    assert params["n"] == 4
    assert params["read"] == {
        "path": "/data/p02/raw/scan 1/f.nxs",
        "token": "READ-SECRET",
        "url": "https://door.desy.example:2880/data/p02/raw/scan%201/f.nxs",
    }
    assert params["write"]["token"] == "WRITE-SECRET"
    assert params["write"]["url"] == "https://door.desy.example:2880/data/p02/processed"
    assert "SECRET" not in orjson.dumps(params["event"]).decode()
    assert params["streamapp"]["trigger"] == "reduce"
    assert len(orjson.dumps(params)) < MAX_PARAMETER_BYTES


def test_tokens_are_renewed_only_when_they_would_expire_during_the_call() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert not tokens_expire_during_call("2026-11-26T10:10:00Z", now, 60)
    assert tokens_expire_during_call("2026-11-26T10:01:20Z", now, 60)  # < 60 s + margin left
    assert tokens_expire_during_call("2026-11-26T09:59:00Z", now, 60)  # already expired
    assert not tokens_expire_during_call(None, now, 60)  # a deletion carries no tokens
    assert tokens_expire_during_call("not a time", now, 60)


def test_idempotency_key_separates_tenants_and_triggers() -> None:
    keys = {idempotency_key(t, "e-1", r) for t in ("a", "b") for r in ("x", "y")}
    assert len(keys) == 4


# --- judging answers ---------------------------------------------------------------------------


def activation(success: bool, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "activationId": "abc",
        "response": {
            "status": "success" if success else "application error",
            "success": success,
            "result": result,
        },
    }


@pytest.mark.parametrize(
    ("status", "body", "blocking", "outcome"),
    [
        (202, {"activationId": "abc"}, False, Outcome.SUCCESS),
        (202, {"activationId": "abc"}, True, Outcome.SUCCESS),  # blocking past the wait
        (200, activation(True, {"ok": 1}), True, Outcome.SUCCESS),
        (200, activation(False, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (200, activation(True, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (200, {"error": "boom"}, True, Outcome.ACTION_FAILED),  # result=true
        (502, activation(False, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (
            429,
            {"error": "Too many requests in the last minute (count: 9, allowed: 8)."},
            False,
            Outcome.THROTTLED,
        ),
        (500, {"error": "Internal"}, False, Outcome.RETRYABLE),
        (503, None, False, Outcome.RETRYABLE),
        (408, None, False, Outcome.RETRYABLE),
        (409, None, False, Outcome.RETRYABLE),
        (400, {"error": "malformed"}, False, Outcome.REJECTED),
        (401, {"error": "The supplied authentication is invalid."}, False, Outcome.REJECTED),
        (403, None, False, Outcome.REJECTED),
        (404, {"error": "The requested resource does not exist."}, False, Outcome.REJECTED),
        (413, None, False, Outcome.REJECTED),
    ],
)
def test_judge(status: int, body: Any, blocking: bool, outcome: Outcome) -> None:
    verdict = judge(status, body, blocking)
    assert verdict.outcome is outcome
    if isinstance(body, dict) and "activationId" in body:
        assert verdict.activation_id == "abc"


def test_throttle_messages_name_the_limit() -> None:
    assert parse_throttle(
        "Too many requests in the last minute (count: 121, allowed: 120)."
    ) == Throttle("rate", 120)
    assert parse_throttle(
        "throttled: Too many concurrent requests in flight (count: 100, allowed: 100)."
    ) == Throttle("concurrency", 100)
    assert parse_throttle("slow down") == Throttle("unknown")


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_backoff_grows_and_stays_under_the_cap(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, 0.5, 30.0, random.Random(seed))
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


# --- the offset ledger -------------------------------------------------------------------------


def test_ledger_commits_only_below_the_oldest_record_in_flight() -> None:
    ledger = PartitionLedger()
    assert ledger.committable() is None
    for offset in (10, 11, 12, 13):
        ledger.received(offset)
    ledger.finished(11)
    ledger.finished(13)
    assert ledger.committable() == 10  # 10 still in flight: nothing past it
    ledger.committed = 10
    assert ledger.committable() is None
    ledger.finished(10)
    assert ledger.committable() == 12
    ledger.finished(12)
    assert ledger.committable() == 14


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_ledger_never_passes_an_unfinished_record(order: list[int], finished_count: int) -> None:
    ledger = PartitionLedger()
    for offset in range(30):
        ledger.received(offset)
    finished = set(order[:finished_count])
    for offset in order[:finished_count]:
        ledger.finished(offset)
    commit = ledger.committable()
    unfinished = set(range(30)) - finished
    if unfinished:
        assert commit == min(unfinished)
    else:
        assert commit == 30
    assert all(offset in finished for offset in range(commit or 0))


# --- tenant lanes ------------------------------------------------------------------------------


async def test_lane_caps_concurrency() -> None:
    lane = TenantLane("t", Limits(concurrency=3))
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with lane.slot():
            peak = max(peak, lane.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(call() for _ in range(20)))
    assert peak == 3
    assert lane.in_flight == 0


async def test_lane_paces_its_rate() -> None:
    lane = TenantLane("t", Limits(concurrency=10, rate_per_minute=1200))  # one per 50 ms
    starts: list[float] = []

    async def call() -> None:
        async with lane.slot():
            starts.append(time.monotonic())

    await asyncio.gather(*(call() for _ in range(5)))
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps


async def test_a_throttled_lane_pauses_halves_and_recovers() -> None:
    lane = TenantLane(
        "t", Limits(concurrency=8), throttle_base_s=0.2, throttle_cap_s=1.0, rng=random.Random(1)
    )
    pause = await lane.throttled(Throttle("rate", 120))
    assert 0.1 <= pause <= 0.2
    assert lane.limit == 4
    started = time.monotonic()
    async with lane.slot():
        waited = time.monotonic() - started
    assert waited >= pause - 0.02
    second = await lane.throttled(Throttle("concurrency", 2))
    assert 0.2 <= second <= 0.4  # consecutive 429s back off further
    assert lane.limit == 1
    for _ in range(10):
        await lane.succeeded()
    assert lane.limit == 2
    assert lane.consecutive_throttles == 0
