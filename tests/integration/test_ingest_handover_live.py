"""Switching a deployment between faust's ingest agent and the batch-wise ingest, live: the
batch-wise ingest's group (``<app id>-ingest``) starts each raw partition where the agent's
group (the app id) committed it, so nothing is read twice and nothing is skipped."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest

from tests.factories import dcache_transfer, raw
from tests.integration.conftest import TopicNames, Worker, collect, produce, wait_drained

pytestmark = pytest.mark.integration


def transfers(first: int, count: int) -> list[bytes]:
    return [
        raw(dcache_transfer(billingPath=f"/data/switch/{n:05d}.h5", pnfsid=f"{n:036d}"))
        for n in range(first, first + count)
    ]


async def test_batch_ingest_starts_where_the_agent_group_left(
    bootstrap: str, topics: TopicNames, worker_factory: Callable[..., Worker]
) -> None:
    await produce(bootstrap, topics.dcache, transfers(0, 1500))
    agent = worker_factory("agent", STREAMAPP_INGEST_BATCH="false").start()
    await wait_drained(bootstrap, {topics.app_id: [topics.dcache]})  # all committed by the agent
    agent.stop()
    assert not agent.alive()

    await produce(bootstrap, topics.dcache, transfers(1500, 500))
    batch = worker_factory("batch", STREAMAPP_INGEST_BATCH="true").start()
    await wait_drained(bootstrap, {f"{topics.app_id}-ingest": [topics.dcache]})
    assert batch.alive(), batch.log_tail()

    records = await collect(bootstrap, [topics.normalized], lambda r: len(r) >= 2000, 60)
    subjects = Counter(json.loads(r.value)["subject"] for r in records)
    assert len(subjects) == 2000, batch.log_tail()  # nothing skipped
    replayed = {s: n for s, n in subjects.items() if n > 1}
    assert not replayed, f"{len(replayed)} read twice\n{batch.log_tail()}"
    assert "start at the agent group's offsets" in batch.log_path.read_text(errors="replace")
