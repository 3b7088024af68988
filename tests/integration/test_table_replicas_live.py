"""Every worker holds every policy entry, including those written while a worker joins.

The dataset and tenant tables are faust GlobalTables: each worker reads their changelogs as
standby partitions. When a worker's recovery completes, faust empties its changelog queue
(``flow_control.resume()``); standby records fetched in the moments before were dropped with
the fetch position already past them, so a joining worker could miss entries written just
then and keep authorizing with a stale policy (a revocation it never saw). faust_fixes 7.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streamapp.admin_keys import load_private_key, sign_update
from streamapp.seed import load_seed
from testkit.helpers import wait_until
from tests.integration.conftest import Stack, TopicNames, Worker, collect

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TABLES = ROOT / "tables"
SEED = load_seed(TABLES)
SEED_DATASETS = sum(1 for e in SEED if e.kind == "dataset")


def dataset_entries(worker: Worker) -> float | None:
    return worker.metrics().get('streamapp_policy_entries{kind="dataset"}')


async def test_entries_written_while_workers_join_reach_every_replica(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
) -> None:
    """Datasets are written at ~80/s for the whole time a second and then a third worker join
    and recover; afterwards every worker's policy index holds every dataset. Every update is
    audited as accepted once; a replay (rebalances) or a second send of it is a duplicate,
    never a refusal."""
    first = worker_factory("w1").start()
    applied = stack.streamapp("tables", "apply", str(TABLES), "--key", str(stack.admin_key))
    assert applied.returncode == 0, applied.stderr.decode()
    await wait_until(lambda: dataset_entries(first) == SEED_DATASETS, 120, "the seed on w1")

    key = load_private_key(stack.admin_key)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    await producer.start()
    written = 0
    sent: list[bytes] = []

    async def write_for(seconds: float) -> None:
        nonlocal written
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            name = f"replica-check-{written:05d}"
            spec = {
                "id": name,
                "owner": "petra3-p06",
                "source": "dcache://dcache.desy.example",
                "prefixes": [f"/data/replica-check/{written:05d}"],
            }
            update = sign_update("dataset", "upsert", name, version=1, spec=spec, private_key=key)
            await producer.send(topics.dataset_updates, update.encode())
            sent.append(update.encode())
            written += 1
            await asyncio.sleep(0.0125)

    joined = []
    try:
        await write_for(2)
        for name in ("w2", "w3"):
            joined.append(worker_factory(name).start())
            await write_for(15)  # covers the join, the rebalance and the recovery
        await producer.send_and_wait(topics.dataset_updates, sent[0])  # sent twice
    finally:
        await producer.stop()

    workers = [first, *joined]
    expected = SEED_DATASETS + written

    def all_hold_everything() -> bool:
        return all(dataset_entries(worker) == expected for worker in workers)

    def held() -> str:
        counts = {worker.log_path.name: dataset_entries(worker) for worker in workers}
        return f"expected {expected} datasets on every worker, they hold {counts}"

    await wait_until(all_hold_everything, 120, "every dataset on every worker", held)

    def verdict(record: Any) -> str:
        return str(dict(record.headers)["streamapp.update.verdict"].decode())

    ours = set(sent)  # the audit also holds the seed's updates

    def all_audited(records: list[Any]) -> bool:
        mine = [r for r in records if r.value in ours]
        return len(mine) >= len(sent) + 1 and {r.value for r in mine} == ours

    audit = await collect(bootstrap, [topics.audit], all_audited, timeout=60)
    verdicts: dict[bytes, list[str]] = defaultdict(list)
    for record in audit:
        if record.value in ours:
            verdicts[record.value].append(verdict(record))
    assert set(verdicts) == set(sent)
    assert all(v.count("accepted") == 1 for v in verdicts.values())
    assert {v for vs in verdicts.values() for v in vs} <= {"accepted", "duplicate"}
    assert verdicts[sent[0]].count("duplicate") >= 1
