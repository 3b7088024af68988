"""Live-broker invocations per second and added latency per event (issue #4).

Against the OpenWhisk test server (``testkit.openwhisk_server`` — a stand-in for
OpenWhisk, which cannot run here), on the broker of ``scripts/kafka``:

(a) floor: a plain aiokafka loop reading the raw records and POSTing one invoke call per
    record straight to the server (aiohttp, the same concurrency as the tenant's lane, offsets
    committed after the answers) — the least any sink must do;
(a') same work: a plain loop doing the pipeline's work in one process with the same pure code:
    normalize, write the canonical event, authorize against the same policies, mint the read
    and write macaroons, write the tenant copy, match the trigger, POST the same invoke body,
    write an invocations record, commit after every output and answer;
(b) streamapp: a real ``streamapp worker`` with one tenant whose trigger fires on every record,
    the whole pipeline: ingest -> normalize -> authorize (+ macaroons) -> tenant topic -> sink ->
    invoke -> invocations record.

Throughput = records / span from the first produce to the last activation. Latency = activation
time - produce time, with the records paced (``--rate`` per second) so that it is not queueing.
Not part of the test run.

    .venv/bin/python -m bench.invoke_live [--records 3000] [--rate 50] [--seconds 30]
        [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.authorize_live import BOOTSTRAP, ROOT, wait_for_policies
from streamapp.admin_keys import generate_admin_keypair, load_private_key, sign_update
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize, authorized_event
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.index import PolicyIndex
from streamapp.domain.invocations import invocation_params
from streamapp.domain.normalize import Normalized, normalize
from streamapp.domain.policy import parse_tenant
from streamapp.domain.triggers import matching_triggers
from testkit.helpers import create_topics, free_port
from testkit.openwhisk_server import Namespace, OpenWhiskTestServer

SOURCE = "dcache://dcache.bench.example"
KEY = "b0000000-0000-4000-8000-000000000001:bench-key"


def record(n: int) -> bytes:
    return orjson.dumps(
        {
            "version": "1.0",
            "msgType": "transfer",
            "date": "2026-11-26T10:00:00.000+01:00",
            "status": {"code": 0, "msg": ""},
            "pnfsid": f"{n:036d}",
            "billingPath": f"/data/bench/raw/run-{n % 13}/scan_{n:06d}.nxs",
            "fileSize": 1000 + n,
            "isWrite": "write",
            "isP2p": False,
            "transferSize": 1000 + n,
        }
    )


async def produce_paced(topic: str, start: int, count: int, rate: float | None) -> dict[str, float]:
    """Produce ``count`` records, paced at ``rate`` per second in 10 ms slices (a sleep per
    record cannot pace 1,000/s or more); returns path -> wall time of its send."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=2, acks="all")
    await producer.start()
    sent: dict[str, float] = {}
    per_slice = max(1, int(rate // 100)) if rate else count
    began = time.monotonic()
    try:
        for first in range(start, start + count, per_slice):
            if rate:
                delay = began + (first - start) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            for n in range(first, min(first + per_slice, start + count)):
                value = record(n)
                sent[orjson.loads(value)["billingPath"]] = time.time()
                await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def wait_activations(server: OpenWhiskTestServer, count: int, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while len(server.activations) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another object's list
        await asyncio.sleep(0.05)


def latencies(server: OpenWhiskTestServer, sent: dict[str, float]) -> list[float]:
    out = []
    for activation in server.activations:
        event = activation.params.get("event") or {}
        path = event.get("subject") or activation.params.get("path")
        if path in sent:
            out.append(activation.wall - sent[path])
    return sorted(out)


async def baseline(topic: str, count: int, server: OpenWhiskTestServer, concurrency: int) -> None:
    """Consume raw records and invoke the action for each, ``concurrency`` calls in flight."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{topic}-baseline",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    auth = "Basic " + base64.b64encode(KEY.encode()).decode()
    url = f"{server.url}/api/v1/namespaces/bench/actions/reduce?blocking=false"
    gate = asyncio.Semaphore(concurrency)
    done = 0
    async with aiohttp.ClientSession() as session:

        async def invoke(value: bytes) -> None:
            nonlocal done
            body = {"path": orjson.loads(value)["billingPath"]}
            async with gate, session.post(url, json=body, headers={"Authorization": auth}) as r:
                await r.read()
            done += 1

        try:
            while done < count:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                calls = [invoke(m.value) for msgs in batches.values() for m in msgs]
                if calls:
                    await asyncio.gather(*calls)
                    await consumer.commit()
        finally:
            await consumer.stop()


def policies(server_url: str, concurrency: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one dataset and the one tenant (trigger on every record) both sides use."""
    dataset = {
        "id": "bench",
        "owner": "bench",
        "source": SOURCE,
        "prefixes": ["/data/bench"],
        "output": "/data/bench/processed",
    }
    tenant = {
        "tenant": "bench",
        "subscriptions": [{"dataset": "bench", "write": True}],
        "limits": {"concurrency": concurrency},
        "triggers": [
            {
                "name": "reduce",
                "action": "/bench/reduce",
                "api_host": server_url,
                "credentials": "bench-ow",
            }
        ],
    }
    return dataset, tenant


async def same_work(
    prefix: str, count: int, server: OpenWhiskTestServer, concurrency: int, secrets: Path
) -> None:
    """The pipeline's work in one plain loop (see the module docstring, a')."""
    dataset, tenant = policies(server.url, concurrency)
    index = PolicyIndex()
    index.put_dataset(parse_dataset(dataset))
    index.put_tenant(parse_tenant(tenant))
    triggers = index.tenants["bench"].triggers
    issuer = TokenIssuer(SecretFiles(secrets), "bench", "bench", "", 3600)
    consumer = AIOKafkaConsumer(
        f"{prefix}.raw",
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{prefix}-same-work",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=50, acks="all")
    await consumer.start()
    await producer.start()
    auth = "Basic " + base64.b64encode(KEY.encode()).decode()
    url = f"{server.url}/api/v1/namespaces/bench/actions/reduce?blocking=false"
    gate = asyncio.Semaphore(concurrency)
    headers = [("content-type", b"application/cloudevents+json")]
    done = 0
    async with aiohttp.ClientSession() as session:

        async def invoke(copy: dict[str, Any], event: Any, key: bytes) -> None:
            nonlocal done
            recheck = authorize(event, index)  # the sink re-checks the entitlement
            relative = recheck.ownership.relative if recheck.ownership else None
            for trigger in matching_triggers(triggers, copy, relative):
                body = invocation_params(copy, trigger, "bench")
                async with gate, session.post(url, json=body, headers={"Authorization": auth}) as r:
                    answer = await r.read()
                record = {"tenant": "bench", "trigger": trigger.name, "id": copy["id"]}
                record["activation"] = orjson.loads(answer).get("activationId")
                await (await producer.send(f"{prefix}.invocations", orjson.dumps(record), key=key))
            done += 1

        try:
            while done < count:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                now = datetime.now(UTC)
                outputs: list[Any] = []
                calls: list[Any] = []
                for msgs in batches.values():
                    for message in msgs:
                        for outcome in normalize(message.value, SOURCE):
                            if not isinstance(outcome, Normalized):
                                continue
                            event = outcome.event
                            key = event["subject"].encode()
                            outputs.append(
                                await producer.send(
                                    f"{prefix}.storage.events",
                                    orjson.dumps(event),
                                    key=key,
                                    headers=headers,
                                )
                            )
                            for delivery in authorize(event, index).deliveries:
                                tokens = issuer.issue(delivery, event, now)
                                copy = authorized_event(
                                    event, delivery, tokens.read, tokens.write, tokens.problems
                                )
                                outputs.append(
                                    await producer.send(
                                        f"{prefix}.tenant.bench.events",
                                        orjson.dumps(copy),
                                        key=key,
                                        headers=headers,
                                    )
                                )
                                calls.append(invoke(copy, event, key))
                if calls or outputs:
                    await asyncio.gather(*outputs, *calls)
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()


def worker_env(prefix: str, work: Path, public: Path, secrets: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMAPP_APP_ID": f"{prefix}-app",
        "STREAMAPP_BROKER": f"kafka://{BOOTSTRAP}",
        "STREAMAPP_RAW_TOPICS": f"{prefix}.raw-worker={SOURCE}",
        "STREAMAPP_NORMALIZED_TOPIC": f"{prefix}.storage.events",
        "STREAMAPP_DEADLETTER_TOPIC": f"{prefix}.deadletter",
        "STREAMAPP_DATASET_UPDATES_TOPIC": f"{prefix}.updates.datasets",
        "STREAMAPP_TENANT_UPDATES_TOPIC": f"{prefix}.updates.tenants",
        "STREAMAPP_UPDATES_AUDIT_TOPIC": f"{prefix}.updates.audit",
        "STREAMAPP_TENANT_TOPIC_PATTERN": f"{prefix}.tenant.{{tenant}}.events",
        "STREAMAPP_INVOCATIONS_TOPIC": f"{prefix}.invocations",
        "STREAMAPP_ADMIN_PUBLIC_KEYS": str(public),
        "STREAMAPP_SECRETS_DIR": str(secrets),
        "STREAMAPP_DATA_DIR": str(work / "data"),
        "STREAMAPP_TOPIC_PARTITIONS": "4",
        "STREAMAPP_SINK_DISCOVERY_INTERVAL": "1",
        "STREAMAPP_OPENWHISK_BENCH__BENCH_HOW": KEY,  # tenant bench's credential "bench-ow"
    }


async def run(records: int, rate: float, concurrency: int, seconds: int) -> dict[str, Any]:
    prefix = f"bench-inv-{uuid.uuid4().hex[:8]}"
    server = OpenWhiskTestServer({"bench": Namespace(KEY)})
    server.action("/bench/reduce")
    await server.start()
    result: dict[str, Any] = {"records": records, "rate": rate, "concurrency": concurrency}
    try:
        # (a) baseline: throughput, then paced latency
        await create_topics(BOOTSTRAP, [f"{prefix}.raw"], 4)
        await produce_paced(f"{prefix}.raw", 0, records, None)
        started = time.time()
        await baseline(f"{prefix}.raw", records, server, concurrency)
        result["baseline_inv_s"] = records / (server.activations[-1].wall - started)
        server.activations.clear()
        paced = int(rate * seconds)
        # a side slower than the rate drains its backlog after the paced window: wait for it
        drain_s = max(120.0, paced / 200)
        task = asyncio.create_task(baseline(f"{prefix}.raw", paced, server, concurrency))
        sent = await produce_paced(f"{prefix}.raw", records, paced, rate)
        await asyncio.wait_for(task, drain_s)
        base_lat = latencies(server, sent)
        server.activations.clear()

        # (a') the same work in a plain loop: throughput, then paced latency
        same = f"{prefix}-sw"
        await create_topics(
            BOOTSTRAP,
            [
                f"{same}.raw",
                f"{same}.storage.events",
                f"{same}.tenant.bench.events",
                f"{same}.invocations",
            ],
            4,
        )
        with tempfile.TemporaryDirectory() as scratch:
            secrets = Path(scratch)
            (secrets / "macaroon-root.key").write_bytes(b"bench-root-key")
            await produce_paced(f"{same}.raw", 0, records, None)
            started = time.time()
            await same_work(same, records, server, concurrency, secrets)
            result["same_work_inv_s"] = records / (server.activations[-1].wall - started)
            server.activations.clear()
            task = asyncio.create_task(same_work(same, paced, server, concurrency, secrets))
            sent = await produce_paced(f"{same}.raw", records, paced, rate)
            await asyncio.wait_for(task, drain_s)
            same_lat = latencies(server, sent)
            server.activations.clear()

        # (b) the streamapp worker
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            private, public = generate_admin_keypair(work / "keys")
            secrets = work / "secrets"
            secrets.mkdir()
            (secrets / "macaroon-root.key").write_bytes(b"bench-root-key")
            version = int(time.time() * 1000)
            key = load_private_key(private)
            dataset, tenant = policies(server.url, concurrency)
            producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
            await producer.start()
            await producer.send_and_wait(
                f"{prefix}.updates.datasets",
                sign_update(
                    "dataset", "upsert", "bench", version=version, spec=dataset, private_key=key
                ).encode(),
            )
            await producer.send_and_wait(
                f"{prefix}.updates.tenants",
                sign_update(
                    "tenant", "upsert", "bench", version=version, spec=tenant, private_key=key
                ).encode(),
            )
            await producer.stop()
            port = free_port()
            log = Path(os.environ.get("BENCH_WORKER_LOG", os.devnull)).open("ab")  # noqa: ASYNC230, SIM115 - once, closed with the worker
            worker = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped below
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
                    str(port),
                ],
                env={
                    **worker_env(prefix, work, public, secrets),
                    "STREAMAPP_OPENWHISK_ALLOWED_HOSTS": f"127.0.0.1:{server.port}",
                },
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await wait_for_policies(port, 1, 300)
                # the worker has declared its raw topic already (faust creates it): no error
                await create_topics(BOOTSTRAP, [f"{prefix}.raw-worker"], 4, exist_ok=True)
                # warm-up: the tenant topic exists and the sink has subscribed to it
                await produce_paced(f"{prefix}.raw-worker", 10**6, 1, None)
                await wait_activations(server, 1, 120)
                server.activations.clear()
                started = time.time()
                await produce_paced(f"{prefix}.raw-worker", 0, records, None)
                await wait_activations(server, records, 600)
                result["streamapp_inv_s"] = len(server.activations) / (
                    server.activations[-1].wall - started
                )
                result["streamapp_invocations"] = len(server.activations)
                server.activations.clear()
                sent = await produce_paced(f"{prefix}.raw-worker", records, paced, rate)
                await wait_activations(server, paced, drain_s)
                lat = latencies(server, sent)
            finally:
                worker.send_signal(signal.SIGTERM)
                # in a thread: this loop also serves the OpenWhisk test server the worker calls
                try:
                    await asyncio.to_thread(worker.wait, 60)
                except subprocess.TimeoutExpired:
                    print("  the worker did not stop within 60 s; killed", file=sys.stderr)
                    worker.kill()
                log.close()
    finally:
        await server.close()
    result["ratio"] = result["streamapp_inv_s"] / result["baseline_inv_s"]
    result["same_work_ratio"] = result["streamapp_inv_s"] / result["same_work_inv_s"]
    for name, values in (("baseline", base_lat), ("same_work", same_lat), ("streamapp", lat)):
        result[f"{name}_p50_ms"] = 1000 * values[len(values) // 2]
        result[f"{name}_p99_ms"] = 1000 * values[int(len(values) * 0.99)]
        result[f"{name}_max_ms"] = 1000 * values[-1]
        result[f"{name}_measured"] = len(values)
    result["added_p50_ms"] = result["streamapp_p50_ms"] - result["baseline_p50_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="records/s for the latency run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=30, help="length of the latency run")
    args = parser.parse_args()
    result = asyncio.run(run(args.records, args.rate, args.concurrency, args.seconds))
    print(
        f"invocations/s: floor {result['baseline_inv_s']:.0f}, same work "
        f"{result['same_work_inv_s']:.0f}, streamapp {result['streamapp_inv_s']:.0f} (ratio to "
        f"the floor {result['ratio']:.2f}, to the same work {result['same_work_ratio']:.2f}); "
        f"latency at {args.rate:.0f}/s: floor p50 {result['baseline_p50_ms']:.1f} ms p99 "
        f"{result['baseline_p99_ms']:.1f} ms, same work p50 {result['same_work_p50_ms']:.1f} ms "
        f"p99 {result['same_work_p99_ms']:.1f} ms, streamapp p50 "
        f"{result['streamapp_p50_ms']:.1f} ms "
        f"p99 {result['streamapp_p99_ms']:.1f} ms max {result['streamapp_max_ms']:.0f} ms "
        f"(added p50 {result['added_p50_ms']:.1f} ms)"
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
