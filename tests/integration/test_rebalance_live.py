"""Records arriving while workers join and leave the group are never lost (issue #12).

A worker with the seed tables applied receives a steady trickle of raw records; a second
worker joins while they arrive and later leaves with SIGTERM (two rebalances, each with a
recovery on both sides). Every canonical event must reach ``storage.events`` and every
entitled tenant's copy its tenant topic: strict, no xfail. The join and leave moments are
parametrized, since the loss faust_fixes.py closes (fixes 3 and 4) depended on timing.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from streamapp.domain.normalize import Normalized, normalize
from tests.integration.conftest import (
    DCACHE_SOURCE,
    Stack,
    TopicNames,
    Worker,
    collect,
    produce,
)
from tests.integration.test_authorize_live import (
    SEED,
    TABLES,
    expected_deliveries,
    generated_inputs,
    policies_loaded,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ingest_mode")]

RECORDS = 3000
BATCH = 100
PAUSE_S = 0.4  # 30 batches: about 12 s of arrivals


@pytest.mark.parametrize(
    ("join_after_s", "leave_after_s"),
    [
        pytest.param(1.0, 5.0, id="join-early-leave-mid"),
        pytest.param(4.0, 3.0, id="join-mid-leave-soon"),
        pytest.param(0.3, 9.0, id="join-at-once-leave-late"),
    ],
)
async def test_records_arriving_during_rebalances_are_not_lost(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
    join_after_s: float,
    leave_after_s: float,
) -> None:
    first = worker_factory("w1").start()
    applied = stack.streamapp("tables", "apply", str(TABLES), "--key", str(stack.admin_key))
    assert applied.returncode == 0, applied.stderr.decode()
    await asyncio.to_thread(wait_for, partial(policies_loaded, first), 120, "policies on w1")

    inputs = generated_inputs(RECORDS)
    expected_ids = {
        outcome.event["id"]
        for value in inputs
        for outcome in normalize(value, DCACHE_SOURCE)
        if isinstance(outcome, Normalized)
    }
    entitled = expected_deliveries(inputs, [])
    assert sum(len(ids) for ids in entitled.values()) > RECORDS // 2

    async def trickle() -> None:
        for start in range(0, len(inputs), BATCH):
            await produce(bootstrap, topics.dcache, inputs[start : start + BATCH])
            await asyncio.sleep(PAUSE_S)

    feeding = asyncio.create_task(trickle())
    await asyncio.sleep(join_after_s)
    second = worker_factory("w2").start()  # join: a rebalance while records arrive
    await asyncio.sleep(leave_after_s)
    await asyncio.to_thread(second.stop)  # graceful leave: another rebalance
    await feeding

    tenant_topics = {topics.tenant(e.name): e.name for e in SEED if e.kind == "tenant"}

    def all_seen(records: list[Any]) -> bool:
        ids: dict[str, set[str]] = defaultdict(set)
        for record in records:
            ids[record.topic].add(json.loads(record.value)["id"])
        return ids[topics.normalized] >= expected_ids and all(
            ids[topics.tenant(tenant)] >= wanted for tenant, wanted in entitled.items()
        )

    records = await collect(
        bootstrap, [topics.normalized, *tenant_topics], all_seen, 180, first.alive
    )
    seen: dict[str, list[str]] = defaultdict(list)
    for record in records:
        seen[record.topic].append(json.loads(record.value)["id"])
    missing = expected_ids - set(seen[topics.normalized])
    assert not missing, f"{len(missing)} of {len(expected_ids)} lost\n{first.log_tail(30)}"
    for tenant, wanted in entitled.items():
        lost = wanted - set(seen[topics.tenant(tenant)])
        assert not lost, f"{tenant}: {len(lost)} of {len(wanted)} deliveries lost"
    replays = len(seen[topics.normalized]) - len(set(seen[topics.normalized]))
    print(f"{replays} events replayed across two rebalances, none lost")
