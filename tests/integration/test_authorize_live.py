"""Authorization on the live broker with two workers: signed seed data, per-tenant streams,
tokens, refused updates, and revocation."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streamapp.admin_keys import load_private_key, sign_update
from streamapp.domain import tokens
from streamapp.domain.authorize import authorize
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.normalize import Normalized, normalize
from streamapp.seed import build_index, load_seed
from testkit.helpers import create_topics
from tests.factories import dcache_transfer, raw
from tests.integration.conftest import (
    DCACHE_SOURCE,
    S3_SOURCE,
    Stack,
    TopicNames,
    Worker,
    collect,
    produce,
    wait_group_stable,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TABLES = ROOT / "tables"
SEED = load_seed(TABLES)
DATASETS = sum(1 for e in SEED if e.kind == "dataset")
TENANTS = sum(1 for e in SEED if e.kind == "tenant")


def generated_inputs(count: int) -> list[bytes]:
    """Events spread over every seeded dataset (and outside them), several partitions' worth."""
    roots = [
        "/data/petra3/p02.1/2026/11012345/raw",
        "/data/petra3/p02.1/2026/11012345/raw/calibration",
        "/data/petra3/p02.1/2026/11012345/processed",
        "/data/petra3/p06/2026/11012346/raw",
        "/data/flash/fl21/2026/11012400/raw",
        "/data/xfel/spb/202601/p002345/raw",
        "/data/xfel/spb/202601/p002345-other/raw",  # shares a prefix string, not a dataset
        "/data/unowned",
    ]
    kinds = ["write", "write", "read"]
    return [
        raw(
            dcache_transfer(
                billingPath=f"{roots[n % len(roots)]}/f{n:05d}.nxs",
                transferPath=f"{roots[n % len(roots)]}/f{n:05d}.nxs",
                isWrite=kinds[n % len(kinds)],
                fileSize=(n * 7919) % 900_000_000,
                pnfsid=f"{n:036d}",
            )
        )
        for n in range(count)
    ]


def expected_deliveries(dcache: list[bytes], s3: list[bytes]) -> dict[str, set[str]]:
    """tenant -> event ids, by the same pure code the workers and the simulator run."""
    index = build_index(SEED)
    expected: dict[str, set[str]] = defaultdict(set)
    for values, source in ((dcache, DCACHE_SOURCE), (s3, S3_SOURCE)):
        for value in values:
            for outcome in normalize(value, source):
                if isinstance(outcome, Normalized):
                    for delivery in authorize(outcome.event, index).deliveries:
                        expected[delivery.tenant].add(outcome.event["id"])
    return expected


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def policies_loaded(worker: Worker) -> bool:
    samples = worker.metrics()
    return (
        samples.get('streamapp_policy_entries{kind="dataset"}') == DATASETS
        and samples.get('streamapp_policy_entries{kind="tenant"}') == TENANTS
    )


async def start_two_workers_with_tables(
    bootstrap: str, topics: TopicNames, stack: Stack, worker_factory: Callable[..., Worker]
) -> list[Worker]:
    workers = [worker_factory("w1").start(), worker_factory("w2").start()]
    applied = stack.streamapp("tables", "apply", str(TABLES), "--key", str(stack.admin_key))
    assert applied.returncode == 0, applied.stderr.decode()
    # every replica must hold every policy and ownership entry, not just the one that wrote it
    for worker in workers:
        wait_for(partial(policies_loaded, worker), 120, f"policies on {worker.log_path.name}")
    await wait_group_stable(bootstrap, topics.app_id, workers)
    return workers


async def test_two_workers_deliver_exactly_the_entitled_events(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
) -> None:
    workers = await start_two_workers_with_tables(bootstrap, topics, stack, worker_factory)
    samples = ROOT / "samples"
    dcache = [line for line in (samples / "dcache-billing.jsonl").read_bytes().splitlines() if line]
    dcache += generated_inputs(400)
    s3 = [line for line in (samples / "s3-notifications.jsonl").read_bytes().splitlines() if line]
    expected = expected_deliveries(dcache, s3)
    assert set(expected) >= {"petra3-p02", "hereon-analysis", "xfel-da", "petra3-detector"}
    assert "mallory" not in expected
    await produce(bootstrap, topics.dcache, dcache)
    await produce(bootstrap, topics.s3, s3)

    tenant_topics = [topics.tenant(e.name) for e in SEED if e.kind == "tenant"]
    total = sum(len(ids) for ids in expected.values())
    records = await collect(bootstrap, tenant_topics, lambda r: len(r) >= total, timeout=180)
    # give stragglers (leaks, duplicates) a moment to show up before judging
    records += await collect(bootstrap, tenant_topics, lambda _: False, timeout=3)
    records = list({(r.topic, r.partition, r.offset): r for r in records}.values())

    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        got[record.topic].append(json.loads(record.value))
    for tenant, ids in expected.items():
        delivered = got.get(topics.tenant(tenant), [])
        delivered_ids = {e["id"] for e in delivered}
        # at-least-once: a rebalance may replay an event (same id); nothing missing, nothing extra
        assert delivered_ids == ids, (
            f"{tenant}: missing {sorted(ids - delivered_ids)[:5]}, "
            f"not entitled {sorted(delivered_ids - ids)[:5]}"
        )
        assert all(e["tenant"] == tenant for e in delivered)
    assert not got.get(topics.tenant("mallory")), "an unshared dataset leaked to mallory"
    # both replicas did part of the work
    for worker in workers:
        assert worker.metrics().get("streamapp_deliveries_total", 0) > 0, worker.log_tail()

    # tokens: scoped to the event's file, the granted activities, and the lifetime
    now = datetime.now(UTC)
    event = next(e for e in got[topics.tenant("petra3-p02")] if "readtoken" in e)
    path = event["subject"]
    verdict = tokens.verify(
        event["readtoken"], key=stack.root_key, path=path, activity="DOWNLOAD", at=now
    )
    assert verdict.valid, verdict
    sibling = path.rsplit("/", 1)[0] + "/someone-elses.nxs"
    for request_path, activity, at in (
        (sibling, "DOWNLOAD", now),
        (path, "UPLOAD", now),
        (path, "DELETE", now),
        (path, "DOWNLOAD", tokens.parse_instant(event["tokenexpires"]) + timedelta(seconds=1)),
    ):
        assert not tokens.verify(
            event["readtoken"], key=stack.root_key, path=request_path, activity=activity, at=at
        ).valid, (request_path, activity, at)
    write = tokens.verify(
        event["writetoken"],
        key=stack.root_key,
        path=event["writepath"] + "/result.h5",
        activity="UPLOAD",
        at=now,
    )
    assert write.valid, write
    assert not tokens.verify(
        event["writetoken"], key=stack.root_key, path=path, activity="UPLOAD", at=now
    ).valid, "the write token must not reach the raw data"
    hereon = got[topics.tenant("hereon-analysis")][0]
    assert "writetoken" not in hereon  # its grant asks for none
    assert not tokens.verify(
        hereon["readtoken"], key=stack.root_key, path=hereon["subject"], activity="LIST", at=now
    ).valid


async def test_refused_updates_are_audited_with_their_reason(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
) -> None:
    await start_two_workers_with_tables(bootstrap, topics, stack, worker_factory)
    key = load_private_key(stack.admin_key)
    spec = next(e.spec for e in SEED if e.name == "flash-fl21-11012400")
    old = sign_update("dataset", "upsert", spec["id"], version=1, spec=spec, private_key=key)
    evil_spec = dict(spec, shared_with=["mallory"])
    unsigned = old.rsplit(".", 1)[0] + "."  # signature stripped
    forged = (
        sign_update(
            "dataset", "upsert", spec["id"], version=2**40, spec=evil_spec, private_key=key
        ).rsplit(".", 1)[0]
        + "."
        + old.rsplit(".", 1)[1]
    )  # someone else's signature
    wrong_topic = sign_update(
        "tenant", "upsert", "mallory", version=2**40, spec={"tenant": "mallory"}, private_key=key
    )
    messages = [old.encode(), unsigned.encode(), forged.encode(), wrong_topic.encode(), b"{}"]
    await produce(bootstrap, topics.dataset_updates, messages)

    def verdicts(records: list[Any]) -> dict[bytes, str]:
        return {
            r.value: dict(r.headers)["streamapp.update.reason"].decode()
            for r in records
            if dict(r.headers)["streamapp.update.verdict"] == b"refused"
        }

    records = await collect(
        bootstrap, [topics.audit], lambda r: set(messages) <= set(verdicts(r)), timeout=60
    )
    refused = verdicts(records)
    accepted = [r for r in records if dict(r.headers)["streamapp.update.verdict"] == b"accepted"]
    assert not [r for r in accepted if r.value in messages]
    assert "stale" in refused[old.encode()]
    assert "signature" in refused[unsigned.encode()] or "JWS" in refused[unsigned.encode()]
    assert "bad signature" in refused[forged.encode()]
    assert "tenant update on the dataset" in refused[wrong_topic.encode()]
    assert "not a JWS" in refused[b"{}"]


async def test_revocation_stops_deliveries(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
) -> None:
    """Remove hereon-analysis from the beamtime's shares while events stream in: after the
    update is appended, deliveries to it stop. Prints the measured delays (p50/p99)."""
    await start_two_workers_with_tables(bootstrap, topics, stack, worker_factory)
    key = load_private_key(stack.admin_key)
    spec = next(e.spec for e in SEED if e.name == "petra3-p02.1-11012345")
    root = "/data/petra3/p02.1/2026/11012345/raw"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    await producer.start()
    revoked_at: list[float] = []
    version = int(time.time() * 1000)
    counter = 0

    async def stream_for(seconds: float) -> None:
        nonlocal counter
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            record = dcache_transfer(billingPath=f"{root}/s{counter:06d}.nxs", fileSize=1000)
            await producer.send(topics.dcache, raw(record))
            counter += 1
            await asyncio.sleep(0.01)

    async def set_shares(shared: list[str]) -> float:
        nonlocal version
        version += 1
        body = dict(spec, shared_with=shared)
        token = sign_update(
            "dataset", "upsert", spec["id"], version=version, spec=body, private_key=key
        )
        metadata = await producer.send_and_wait(topics.dataset_updates, token.encode())
        return float(metadata.timestamp) / 1000

    try:
        await stream_for(8)  # warm: both workers authorizing
        for _ in range(5):
            revoked_at.append(await set_shares([]))
            await stream_for(3)
            await set_shares(["hereon-analysis"])
            await stream_for(3)
        revoked_at.append(await set_shares([]))
        await stream_for(3)
    finally:
        await producer.stop()

    records = await collect(bootstrap, [topics.tenant("hereon-analysis")], lambda _: False, 15)
    delivered_at = sorted(r.timestamp / 1000 for r in records)
    assert delivered_at, "hereon-analysis never received the shared events"
    delays = []
    for index, revoke in enumerate(revoked_at):
        regrant = revoked_at[index] + 3.0  # the next re-grant comes ~3 s of streaming later
        window = [t for t in delivered_at if revoke <= t < regrant]
        delays.append(max(window) - revoke if window else 0.0)
    # after the last revocation, nothing more reaches the tenant once the update is applied
    assert all(t - revoked_at[-1] < 5.0 for t in delivered_at if t >= revoked_at[-1]), delays
    delays.sort()
    p50 = delays[len(delays) // 2]
    p99 = delays[-1]
    print(f"revocation delay over {len(delays)} revocations: p50 {p50:.3f} s, p99 {p99:.3f} s")
    assert p99 < 5.0, f"revocation took {p99:.3f} s"


async def test_write_tokens_go_to_the_owner_and_write_shares_only(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """A dataset shared with beta (read) and gamma (write), every tenant asking for write: on
    their tenant topics the owner's and gamma's events carry a write token scoped to the output
    area, beta's none (and the reason). Datasets whose areas overlap that output are refused
    by the worker at apply, with the reason in the audit."""
    seed = tmp_path / "tables"
    (seed / "datasets").mkdir(parents=True)
    (seed / "tenants").mkdir()
    (seed / "datasets" / "shared-exp.toml").write_text(
        'id = "shared-exp"\nowner = "alpha"\nsource = "dcache://dcache.desy.example"\n'
        'prefixes = ["/data/share/exp"]\noutput = "/data/share/exp/out"\n'
        'shared_with = ["beta", "gamma"]\nwrite_shared_with = ["gamma"]\n'
    )
    for tenant in ("alpha", "beta", "gamma"):
        (seed / "tenants" / f"{tenant}.toml").write_text(
            f'tenant = "{tenant}"\n[[subscriptions]]\ndataset = "shared-exp"\nwrite = true\n'
        )
    worker = worker_factory("w1").start()
    applied = stack.streamapp("tables", "apply", str(seed), "--key", str(stack.admin_key))
    assert applied.returncode == 0, applied.stderr.decode()

    def loaded() -> bool:
        samples = worker.metrics()
        return (
            samples.get('streamapp_policy_entries{kind="dataset"}') == 1
            and samples.get('streamapp_policy_entries{kind="tenant"}') == 3
        )

    wait_for(loaded, 120, "the write-share policies")
    subject = "/data/share/exp/raw/f00001.nxs"
    await produce(
        bootstrap,
        topics.dcache,
        [raw(dcache_transfer(billingPath=subject, transferPath=subject, fileSize=1000))],
    )
    names = {topics.tenant(t): t for t in ("alpha", "beta", "gamma")}
    records = await collect(
        bootstrap, list(names), lambda r: {x.topic for x in r} == set(names), 120, worker.alive
    )
    got = {names[r.topic]: json.loads(r.value) for r in records}
    assert set(got) == {"alpha", "beta", "gamma"}, worker.log_tail()
    now = datetime.now(UTC)
    for tenant in ("alpha", "gamma"):
        event = got[tenant]
        assert event["writepath"] == "/data/share/exp/out", event
        assert tokens.verify(
            event["writetoken"],
            key=stack.root_key,
            path="/data/share/exp/out/result.h5",
            activity="UPLOAD",
            at=now,
        ).valid
        assert not tokens.verify(
            event["writetoken"], key=stack.root_key, path=subject, activity="UPLOAD", at=now
        ).valid
        assert "tokenerror" not in event
    beta = got["beta"]
    assert "writetoken" not in beta
    assert "writepath" not in beta
    assert "readtoken" in beta  # reading is what the share grants
    assert "shared with the tenant for reading only" in beta["tokenerror"]

    # another tenant's dataset over alpha's output, or with an output into alpha's dataset
    key = load_private_key(stack.admin_key)
    version = int(time.time() * 1000) + 1000
    over_output = sign_update(
        "dataset",
        "upsert",
        "delta-over",
        version=version,
        spec={
            "id": "delta-over",
            "owner": "delta",
            "source": DCACHE_SOURCE,
            "prefixes": ["/data/share/exp/out/delta"],
        },
        private_key=key,
    )
    into_dataset = sign_update(
        "dataset",
        "upsert",
        "delta-into",
        version=version,
        spec={
            "id": "delta-into",
            "owner": "delta",
            "source": DCACHE_SOURCE,
            "prefixes": ["/data/delta"],
            "output": "/data/share",
        },
        private_key=key,
    )
    messages = [over_output.encode(), into_dataset.encode()]
    await produce(bootstrap, topics.dataset_updates, messages)

    def verdicts(records: list[Any]) -> dict[bytes, tuple[bytes, str]]:
        return {
            r.value: (
                dict(r.headers)["streamapp.update.verdict"],
                dict(r.headers).get("streamapp.update.reason", b"").decode(),
            )
            for r in records
            if r.value in messages
        }

    audit = await collect(
        bootstrap, [topics.audit], lambda r: len(verdicts(r)) == len(messages), 60, worker.alive
    )
    found = verdicts(audit)
    assert found[over_output.encode()] == (
        b"refused",
        "prefixes: prefix /data/share/exp/out/delta overlaps the output /data/share/exp/out of "
        "dataset shared-exp (owner alpha)",
    )
    verdict, reason = found[into_dataset.encode()]
    assert verdict == b"refused"
    assert reason.startswith("output: output /data/share overlaps prefix /data/share/exp"), reason


async def test_a_tenant_topic_kafka_refuses_costs_that_tenant_only(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    worker_factory: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """A topic ``tenant.co.ll.events`` exists already (left by an earlier tenant, or made by
    hand): Kafka refuses ``tenant.co_ll.events`` ('.' and '_' collide). Before, the authorize
    agent crashed on every event of tenant co_ll and the sink hung the worker at start. Now
    co_ll's copy is a dead letter naming it, alpha's copy goes out, the worker lives on."""
    await create_topics(bootstrap, [topics.tenant("co.ll")], 1)
    seed = tmp_path / "tables"
    (seed / "datasets").mkdir(parents=True)
    (seed / "tenants").mkdir()
    (seed / "datasets" / "coll.toml").write_text(
        f'id = "coll"\nowner = "alpha"\nsource = "{DCACHE_SOURCE}"\n'
        'prefixes = ["/data/coll"]\nshared_with = ["co_ll"]\n'
    )
    (seed / "tenants" / "alpha.toml").write_text(
        'tenant = "alpha"\n[[subscriptions]]\ndataset = "coll"\n'
    )
    (seed / "tenants" / "co_ll.toml").write_text(
        'tenant = "co_ll"\n[[subscriptions]]\ndataset = "coll"\n[[triggers]]\nname = "t"\n'
        'action = "/ns/act"\napi_host = "http://127.0.0.1:3233"\ncredentials = "ow"\n'
    )
    worker = worker_factory("w1").start()
    applied = stack.streamapp("tables", "apply", str(seed), "--key", str(stack.admin_key))
    assert applied.returncode == 0, applied.stderr.decode()
    wait_for(
        lambda: worker.metrics().get('streamapp_policy_entries{kind="tenant"}') == 2,
        120,
        "policies",
    )

    # the command reads the applied tables (the workers' changelogs, written moments after the
    # index counts an entry): the same seed again changes nothing, and a seed with a tenant
    # whose topic collides with a held tenant's is refused before publishing
    def nothing_to_send() -> bool:
        diff = stack.streamapp("tables", "diff", str(seed))
        assert diff.returncode == 0, diff.stderr.decode()
        return b"0 to send, 3 unchanged" in diff.stderr

    wait_for(nothing_to_send, 60, "the applied tables in the changelogs")
    again = stack.streamapp("tables", "apply", str(seed), "--key", str(stack.admin_key))
    assert again.returncode == 0, again.stderr.decode()
    assert b"0 to send, 3 unchanged" in again.stderr, again.stderr.decode()
    (seed / "tenants" / "co.ll.toml").write_text('tenant = "co.ll"\n')
    refused = stack.streamapp("tables", "apply", str(seed), "--key", str(stack.admin_key))
    assert refused.returncode == 2, refused.stdout.decode()
    assert b"co_ll" in refused.stderr, refused.stderr.decode()
    (seed / "tenants" / "co.ll.toml").unlink()
    inputs = [
        raw(dcache_transfer(billingPath=f"/data/coll/f{n}.h5", pnfsid=f"{n:036d}"))
        for n in range(2)
    ]
    await produce(bootstrap, topics.dcache, inputs)

    def done(records: list[Any]) -> bool:
        copies = [r for r in records if r.topic == topics.tenant("alpha")]
        dead = [r for r in records if r.topic == topics.deadletter]
        return len(copies) == 2 and len(dead) == 2

    records = await collect(
        bootstrap,
        [topics.tenant("alpha"), topics.deadletter],
        done,
        timeout=90,
        alive=worker.alive,
    )
    dead = [
        DeadLetterContext.from_headers(r.headers) for r in records if r.topic == topics.deadletter
    ]
    assert {d.stage for d in dead} == {"authorize"}
    assert all(d.reason.startswith("tenant co_ll: its topic is unavailable") for d in dead)
    assert worker.alive()
    wait_for(
        lambda: (
            (worker.metrics().get('streamapp_sink_topic_errors_total{tenant="co_ll"}') or 0) >= 1
        ),
        60,
        "the sink to count the topic it cannot have",
    )
    assert worker.alive()
    # and a tenant whose topic would collide with a held tenant's is refused, audited
    key = load_private_key(stack.admin_key)
    colliding = sign_update(
        "tenant", "upsert", "co.ll", version=1, spec={"tenant": "co.ll"}, private_key=key
    ).encode()
    await produce(bootstrap, topics.tenant_updates, [colliding])
    audit = await collect(
        bootstrap,
        [topics.audit],
        lambda rs: any(r.value == colliding for r in rs),
        timeout=60,
        alive=worker.alive,
    )
    [verdict] = [dict(r.headers) for r in audit if r.value == colliding]
    assert verdict["streamapp.update.verdict"] == b"refused"
    assert b"collides with tenant co_ll's" in verdict["streamapp.update.reason"]
