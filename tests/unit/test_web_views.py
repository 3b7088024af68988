"""Web views under hostile or unlucky conditions, without a broker: every failure is an answer
with a reason (4xx, or 503 for what is unavailable), never a 500; the public ``/health`` cannot
be used to multiply Kafka admin connections."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from streamapp.domain.policy import parse_tenant
from streamapp.tables import policy_index
from streamapp.web import operations, tenants
from streamapp.web.auth import PRINCIPAL

# --- /health: one broker check at a time, cached ----------------------------------------------


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> bool:
        self.calls += 1
        await self.release.wait()
        return True


async def test_concurrent_health_requests_share_one_broker_check_and_it_is_cached() -> None:
    probe = Probe()
    check = operations.BrokerCheck(probe, ttl_s=0.2)
    waiting = [asyncio.ensure_future(check.reachable()) for _ in range(100)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()  # a client that goes away does not cancel the others' check
    probe.release.set()
    results = await asyncio.gather(*waiting[1:])
    assert results == [True] * 99
    assert probe.calls == 1
    assert await check.reachable() is True  # within ttl_s: no new check
    assert probe.calls == 1
    await asyncio.sleep(0.25)
    assert await check.reachable() is True
    assert probe.calls == 2


async def test_a_failing_probe_means_unreachable_and_is_cached_too() -> None:
    calls = 0

    async def broken() -> bool:
        nonlocal calls
        calls += 1
        raise OSError("refused")

    check = operations.BrokerCheck(broken, ttl_s=60)
    assert [await check.reachable() for _ in range(5)] == [False] * 5
    assert calls == 1


# --- views called as the router would, with an admitted principal -----------------------------


class Request(dict[Any, Any]):
    def __init__(self, body: bytes = b"", *, admin: bool = True) -> None:
        super().__init__()
        self[PRINCIPAL] = SimpleNamespace(admin=admin, may_read=lambda tenant: True)
        self.body = body
        self.headers: dict[str, str] = {}
        self.query: dict[str, str] = {}

    async def read(self) -> bytes:
        return self.body


@pytest.fixture
def big_params_policy() -> Iterator[None]:
    """A policy held from before params were bounded: an integer over 64 bits in params."""
    trigger = {"name": "t", "action": "/ns/a", "api_host": "http://ow:3233", "credentials": "c"}
    policy = parse_tenant({"tenant": "alpha", "triggers": [trigger]})
    held = dataclasses.replace(
        policy, triggers=(dataclasses.replace(policy.triggers[0], params={"n": 2**70}),)
    )
    policy_index.replace_all([], [held])
    yield
    policy_index.replace_all([], [])


async def test_the_policy_view_answers_for_a_policy_orjson_cannot_write(
    big_params_policy: None,
) -> None:
    response = await tenants.TenantPolicy.get(None, Request(), "alpha")  # type: ignore[arg-type]
    assert response.status == 200
    assert json.loads(response.body)["triggers"][0]["params"] == {"n": 2**70}


@pytest.mark.parametrize("error", [ValueError("Invalid IPv6 URL"), RecursionError(), KeyError()])
async def test_an_update_the_checks_raise_on_is_a_422_not_a_500(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def verify_update(body: bytes, keys: Any) -> Any:
        raise error

    monkeypatch.setattr(operations, "verify_update", verify_update)
    response = await operations.AdminUpdates.post(None, Request(b"x.y.z"))  # type: ignore[arg-type]
    assert response.status == 422
    detail = json.loads(response.body)["detail"]
    assert detail == f"update refused: internal error: {type(error).__name__}"


async def test_an_event_stream_whose_topic_cannot_be_had_is_a_503_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def tenant_events(tenant: str) -> Any:
        raise RuntimeError("InvalidTopicError: collides with existing topics")

    monkeypatch.setattr(tenants, "tenant_events", tenant_events)
    response = await tenants.TenantEvents._serve(
        None,  # type: ignore[arg-type]
        Request(),
        "co_ll",
        "end",
        set(),
        [],
    )
    assert response.status == 503
    assert (
        "co_ll's event topic is unavailable (RuntimeError)" in json.loads(response.body)["detail"]
    )
