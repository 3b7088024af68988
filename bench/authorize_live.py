"""Live-broker throughput of normalize -> authorize -> mint (issue #3).

For each configuration (datasets x entitled tenants per event) the same raw records go through
(a) a plain aiokafka loop doing exactly the same work with the same pure code (normalize,
authorize against a PolicyIndex, mint macaroons, produce to tenant topics, commit after the
broker acknowledged) and (b) a real ``streamapp worker`` seeded with the same datasets and
tenants through signed updates. Throughput = raw records / span of the output timestamps.
Needs the broker of ``scripts/kafka``. Not part of the test run.

    .venv/bin/python -m bench.authorize_live [--records N] [--datasets 10 10000] [--tenants 1 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.authorize import SOURCE, build_index
from streamapp.admin_keys import generate_admin_keypair, load_private_key, sign_update
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize, authorized_event
from streamapp.domain.normalize import Normalized, normalize
from testkit.helpers import create_topics, free_port

BOOTSTRAP = "127.0.0.1:19092"
ROOT = Path(__file__).resolve().parents[1]


def raw_records(count: int, datasets: int) -> list[bytes]:
    out = []
    for n in range(count):
        ds = (n * 7919) % datasets
        path = f"/data/facility-{ds % 7}/beamtime-{ds}/raw/run-{n % 13}/scan_{n:06d}.nxs"
        out.append(
            orjson.dumps(
                {
                    "version": "1.0",
                    "msgType": "transfer",
                    "date": "2026-11-26T10:00:00.000+01:00",
                    "status": {"code": 0, "msg": ""},
                    "pnfsid": f"{n:036d}",
                    "billingPath": path,
                    "fileSize": 1000 + n,
                    "isWrite": "write",
                    "isP2p": False,
                    "transferSize": 1000 + n,
                }
            )
        )
    return out


async def produce(topic: str, values: list[bytes], keys: list[bytes] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, key=keys[i] if keys else None)
            for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def output_span(
    topics: list[str],
    expected: int,
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole read
) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=BOOTSTRAP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                stamps.extend(r.timestamp for r in batch)
    finally:
        await consumer.stop()
    if len(stamps) < 2:
        return float("nan"), len(stamps)
    return (max(stamps) - min(stamps)) / 1000, len(stamps)


async def baseline(
    raw_topic: str, prefix: str, datasets: int, tenants: int, issuer: TokenIssuer
) -> None:
    """The plain aiokafka loop: same pure code, same outputs, commit after delivery."""
    index = build_index(datasets, tenants)
    consumer = AIOKafkaConsumer(
        raw_topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{prefix}-baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, acks="all")
    await consumer.start()
    await producer.start()
    idle = 0
    try:
        while idle < 6:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batches:
                idle += 1
                continue
            idle = 0
            now = datetime.now(UTC)
            pending = []
            for batch in batches.values():
                for record in batch:
                    for outcome in normalize(record.value, SOURCE):
                        if not isinstance(outcome, Normalized):
                            continue
                        event = outcome.event
                        for delivery in authorize(event, index).deliveries:
                            tokens = issuer.issue(delivery, event, now)
                            value = authorized_event(event, delivery, tokens.read, tokens.write)
                            pending.append(
                                await producer.send(
                                    f"{prefix}.base.tenant.{delivery.tenant}.events",
                                    orjson.dumps(value),
                                    key=event["subject"].encode(),
                                )
                            )
            await asyncio.gather(*pending)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def seed_updates(datasets: int, tenants: int, key_path: Path) -> tuple[list[bytes], list[bytes]]:
    index = build_index(datasets, tenants)
    key = load_private_key(key_path)
    version = int(time.time() * 1000)
    ds = [
        sign_update(
            "dataset", "upsert", d.id, version=version, spec=d.to_json(), private_key=key
        ).encode()
        for d in index.datasets.values()
    ]
    ts = [
        sign_update(
            "tenant", "upsert", t.tenant, version=version, spec=dict(t.raw), private_key=key
        ).encode()
        for t in index.tenants.values()
    ]
    return ds, ts


async def wait_for_policies(
    port: int,
    datasets: int,
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole wait
) -> None:
    import urllib.request  # noqa: PLC0415 - only here

    wanted = f'streamapp_policy_entries{{kind="dataset"}} {float(datasets)}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = await asyncio.to_thread(
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                    .read()
                    .decode()
                )
            )
        except OSError:
            text = ""
        if wanted in text:
            return
        await asyncio.sleep(1)
    raise TimeoutError("the worker did not load every dataset")


async def run(records: int, datasets: int, tenants: int) -> dict[str, Any]:
    prefix = f"bench-auth-{uuid.uuid4().hex[:8]}"
    raw_topic = f"{prefix}.raw"
    values = raw_records(records, datasets)
    entitled = tenants  # every generated event lands in a dataset with `tenants` subscribers
    expected = records * entitled
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        private, public = generate_admin_keypair(work / "keys")
        secrets = work / "secrets"
        secrets.mkdir()
        (secrets / "macaroon-root.key").write_bytes(b"bench-root-key")
        issuer = TokenIssuer(SecretFiles(secrets), "bench", "bench", "", 3600)
        await create_topics(BOOTSTRAP, [raw_topic], 4)
        await produce(raw_topic, values)

        started = time.monotonic()
        await baseline(raw_topic, prefix, datasets, tenants, issuer)
        base_topics = sorted(
            {f"{prefix}.base.tenant.{t}.events" for t in build_index(datasets, tenants).tenants}
        )
        base_span, base_count = await output_span(base_topics, expected, 60)
        print(f"  baseline done in {time.monotonic() - started:.1f} s", file=sys.stderr)

        env = {
            **os.environ,
            "STREAMAPP_APP_ID": f"{prefix}-app",
            "STREAMAPP_BROKER": f"kafka://{BOOTSTRAP}",
            "STREAMAPP_RAW_TOPICS": f"{raw_topic}-worker={SOURCE}",
            "STREAMAPP_NORMALIZED_TOPIC": f"{prefix}.storage.events",
            "STREAMAPP_DEADLETTER_TOPIC": f"{prefix}.deadletter",
            "STREAMAPP_DATASET_UPDATES_TOPIC": f"{prefix}.updates.datasets",
            "STREAMAPP_TENANT_UPDATES_TOPIC": f"{prefix}.updates.tenants",
            "STREAMAPP_UPDATES_AUDIT_TOPIC": f"{prefix}.updates.audit",
            "STREAMAPP_TENANT_TOPIC_PATTERN": f"{prefix}.tenant.{{tenant}}.events",
            "STREAMAPP_ADMIN_PUBLIC_KEYS": str(public),
            "STREAMAPP_SECRETS_DIR": str(secrets),
            "STREAMAPP_DATA_DIR": str(work / "data"),
            "STREAMAPP_TOPIC_PARTITIONS": "4",
        }
        # seed first, with the raw topic not yet subscribed: a worker on an empty raw topic
        ds, ts = seed_updates(datasets, tenants, private)
        await produce(f"{prefix}.updates.datasets", ds)
        await produce(f"{prefix}.updates.tenants", ts)
        web_port = free_port()
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
            [
                sys.executable,
                "-m",
                "streamapp",
                "-L",
                "uvloop",
                "worker",
                "-l",
                "info",
                "--web-port",
                str(web_port),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # the records go in only once every dataset and tenant is in the worker's index
            await wait_for_policies(web_port, datasets, 600)
            # the worker has declared its raw topic already (faust creates it): no error
            await create_topics(BOOTSTRAP, [f"{raw_topic}-worker"], 4, exist_ok=True)
            await produce(f"{raw_topic}-worker", values)
            topics = [f"{prefix}.tenant.{t}.events" for t in build_index(datasets, tenants).tenants]
            span, count = await output_span(topics, expected, 900)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    base_rate = records / base_span if base_count >= expected else float("nan")
    rate = records / span if count >= expected else float("nan")
    return {
        "datasets": datasets,
        "tenants": tenants,
        "records": records,
        "deliveries": expected,
        "baseline_ev_s": base_rate,
        "faust_ev_s": rate,
        "ratio": rate / base_rate,
        "faust_outputs": count,
        "baseline_outputs": base_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--datasets", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    rows = []
    for datasets in args.datasets:
        for tenants in args.tenants:
            print(f"datasets={datasets} tenants={tenants}", file=sys.stderr)
            rows.append(asyncio.run(run(args.records, datasets, tenants)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print("| datasets | tenants/event | records | baseline ev/s | worker ev/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['datasets']:,} | {r['tenants']} | {r['records']:,} | "
            f"{r['baseline_ev_s']:,.0f} | {r['faust_ev_s']:,.0f} | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
