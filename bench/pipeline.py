"""The whole pipeline against a plain loop doing the same work, on the same broker (issue #13).

Throughput (``throughput``): the same raw dCache billing records go through
(a) a plain aiokafka loop in this process that does exactly the worker's work with the same
    pure code — normalize, write the canonical event to ``storage.events``, authorize against
    a PolicyIndex, mint the macaroons, write each tenant copy, sum deliveries per tenant and
    publish the sums once a second, commit after every output is acknowledged — and
(b) one or more real ``streamapp worker`` processes (their shipped defaults: uvloop, linger
    50 ms) seeded with the same datasets and tenants through signed updates.
Every topic either side writes (canonical, tenant topics, deliveries, dead letters) is created
before the measured window, with the same partition count. Throughput = raw records / span of
the output timestamps; CPU = process CPU time (utime+stime) over the window / raw records;
the machine's load is the 1-minute load average and the CPU the rest of the machine used
during the window (/proc/stat minus the measured side: the broker, and for the workers the
filler that produces their input). The outputs are read only after each side has finished
(the workers' completion is watched through end offsets), so reading them takes no CPU from
either side.

Latency (``latency``): raw records paced at each rate for ``--seconds``, first into a floor
(the same consume -> produce -> commit loop without the work: what broker, client and machine
give), then the plain loop (a child process), then one worker, each side on its own topics;
each record's send time is taken when it is handed to the producer (linger 0), the raw and
tenant topics use LogAppendTime, so send -> tenant topic latency = append time of the copy -
send time of the raw record (one clock), split into the load generator's leg (send -> raw
topic) and the pipeline's (raw topic -> tenant topic: ``<side>_from_raw_topic``). Each side
first gets 5 s of records at the same rate, not measured (a worker's first seconds: group
assignment, first metadata and token caches).

    .venv/bin/python -m bench.pipeline throughput [--records 100000] [--tenants 1 10]
        [--repeat 3] [--workers 1]
    .venv/bin/python -m bench.pipeline latency [--rates 1000 3000] [--seconds 30]
        [--repeat N] [--sides floor baseline worker]
    .venv/bin/python -m bench.pipeline minting-share [--records 200000] [--tenants 10]
        [--pairs 3] [--interleaved SLICE_S | --timed | --sampled [--gil-only]]
        [--tenant-macaroons]

Minting's share (``minting-share``): runs with minting against runs whose workers' ``issue`` is
stubbed (bench/minting_stub), in pairs; or, with ``--interleaved``, ``--pairs`` runs of one
worker each that alternates the two every SLICE_S seconds (CPU per copy compared slice-wise);
or, with ``--timed``, ``--pairs`` runs of one worker each whose issuer is timed by the thread's
CPU clock inside it (bench/minting_timer); or, with ``--sampled``, ``--pairs`` runs of one
worker each profiled by py-spy (samples with an issuer frame / all samples; py-spy is not a
dependency: ``.venv/bin/python -m pip install py-spy``). ``--tenant-macaroons`` gives every
tenant a base macaroon of its own: no copy shares a token (minting's worst case per event).

Needs the broker of ``scripts/kafka``. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymacaroons import Macaroon

from bench.authorize import SOURCE, build_index
from bench.authorize_live import (
    output_span,
    produce,
    raw_records,
    seed_updates,
    wait_for_policies,
)
from bench.ingest import delete_topics_with_prefixes
from streamapp.admin_keys import generate_admin_keypair
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize, authorized_event
from streamapp.domain.index import PolicyIndex
from streamapp.domain.normalize import Normalized, normalize
from streamapp.outputs import send_lingering_now
from streamapp.settings import Settings
from testkit.helpers import create_topics, free_port

BOOTSTRAP = "127.0.0.1:19092"
ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
DATASETS = 10
LINGER_MS = int(Settings.from_env().producer_linger_s * 1000)  # as the workers (environment)
BATCH_BYTES = Settings.from_env().producer_max_batch_bytes  # as the workers (environment)
SIDES = ("floor", "baseline", "worker")  # latency: no work, the same-work loop, a worker
CONTENT = [("content-type", b"application/cloudevents+json")]


@dataclass
class Names:
    prefix: str

    @property
    def raw(self) -> str:
        return f"{self.prefix}.raw"

    @property
    def canonical(self) -> str:
        return f"{self.prefix}.storage.events"

    @property
    def deliveries(self) -> str:
        return f"{self.prefix}-app-deliveries"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}.tenant.{tenant}.events"


def receiving_tenants(index: PolicyIndex, values: list[bytes]) -> list[str]:
    tenants: set[str] = set()
    for value in values[:2000]:
        for outcome in normalize(value, SOURCE):
            if isinstance(outcome, Normalized):
                tenants |= {d.tenant for d in authorize(outcome.event, index).deliveries}
    return sorted(tenants)


def output_topics(names: Names, tenants: list[str]) -> list[str]:
    return [
        names.canonical,
        names.deliveries,
        names.deadletter,
        *(names.tenant(t) for t in tenants),
    ]


class MachineCpu:
    """CPU seconds the whole machine used (all cores, /proc/stat) and the load average."""

    def __init__(self) -> None:
        self.start = self.busy()
        self.load_start = os.getloadavg()[0]

    @staticmethod
    def busy() -> float:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def used(self) -> float:
        return self.busy() - self.start


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_outputs(topics: list[str], expected: int, timeout_s: float) -> None:
    """Until the topics hold ``expected`` records, asking only for end offsets (cheap: reading
    the records meanwhile would take CPU from the side being measured)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(partitions)
            if sum(ends.values()) >= expected:
                return
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


async def plain_loop_clients(names: Names, side: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A plain loop's consumer of the raw topic (its own group) and producer (the workers'
    linger and batch size, acks=all), started."""
    consumer = AIOKafkaConsumer(
        names.raw,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{names.prefix}-{side}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES, acks="all"
    )
    await consumer.start()
    await producer.start()
    return consumer, producer


async def baseline(names: Names, tenants: int, issuer: TokenIssuer, records: int) -> float:
    """The plain loop, the worker's work: CPU seconds of this process while it ran."""
    index = build_index(DATASETS, tenants)
    consumer, producer = await plain_loop_clients(names, "baseline")
    counts: Counter[str] = Counter()
    published = time.monotonic()
    cpu_start = time.process_time()
    seen = 0
    try:
        while seen < records:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            now = datetime.now(UTC)
            pending = []
            for batch in batches.values():
                for record in batch:
                    seen += 1
                    for outcome in normalize(record.value, SOURCE):
                        if not isinstance(outcome, Normalized):
                            continue
                        event = outcome.event
                        key = event["subject"].encode()
                        value = orjson.dumps(event)
                        pending.append(
                            await producer.send(names.canonical, value, key=key, headers=CONTENT)
                        )
                        for delivery in authorize(event, index).deliveries:
                            tokens = issuer.issue(delivery, event, now)
                            copy = authorized_event(
                                event, delivery, tokens.read, tokens.write, tokens.problems
                            )
                            pending.append(
                                await producer.send(
                                    names.tenant(delivery.tenant),
                                    orjson.dumps(copy),
                                    key=key,
                                    headers=CONTENT,
                                )
                            )
                            counts[delivery.tenant] += 1
            if time.monotonic() - published >= 1.0 or seen >= records:
                published = time.monotonic()
                for tenant, count in counts.items():
                    pending.append(
                        await producer.send(
                            names.deliveries, str(count).encode(), key=orjson.dumps(tenant)
                        )
                    )
                counts.clear()
            send_lingering_now(producer)  # as the batch-wise worker: the fetch was the batch
            await asyncio.gather(*pending)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
    return time.process_time() - cpu_start


def worker_env(names: Names, work: Path, public: Path, secrets: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMAPP_APP_ID": f"{names.prefix}-app",
        "STREAMAPP_BROKER": f"kafka://{BOOTSTRAP}",
        "STREAMAPP_RAW_TOPICS": f"{names.raw}={SOURCE}",
        "STREAMAPP_NORMALIZED_TOPIC": names.canonical,
        "STREAMAPP_DEADLETTER_TOPIC": names.deadletter,
        "STREAMAPP_DATASET_UPDATES_TOPIC": f"{names.prefix}.updates.datasets",
        "STREAMAPP_TENANT_UPDATES_TOPIC": f"{names.prefix}.updates.tenants",
        "STREAMAPP_UPDATES_AUDIT_TOPIC": f"{names.prefix}.updates.audit",
        "STREAMAPP_INVOCATIONS_TOPIC": f"{names.prefix}.invocations",
        "STREAMAPP_TENANT_TOPIC_PATTERN": names.tenant("{tenant}"),
        "STREAMAPP_ADMIN_PUBLIC_KEYS": str(public),
        "STREAMAPP_SECRETS_DIR": str(secrets),
        "STREAMAPP_TOPIC_PARTITIONS": str(PARTITIONS),
    }


def write_tenant_macaroons(secrets: Path, tenants: list[str]) -> None:
    """A base macaroon of each tenant's own (``macaroons/tenants/<tenant>.macaroon``, from the
    storage's root key, confined to ``/data``), as an operator would install them: the issuer
    then attenuates one per copy, and no copy shares another's token — minting's worst case
    per event."""
    directory = secrets / "macaroons" / "tenants"
    directory.mkdir(parents=True, exist_ok=True)
    for tenant in tenants:
        base = Macaroon(location="bench", identifier=f"bench-{tenant}", key="bench-root-key")
        base.add_first_party_caveat("path:/data")
        (directory / f"{tenant}.macaroon").write_text(base.serialize() + "\n")


class Workers:
    """``count`` real workers (the console script's defaults), seeded, policies loaded."""

    def __init__(self, names: Names, tenants: int, count: int, work: Path) -> None:
        self.names, self.tenants, self.count, self.work = names, tenants, count, work
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    async def start(self, private: Path, env: dict[str, str]) -> None:
        ds, ts = seed_updates(DATASETS, self.tenants, private)
        await produce(f"{self.names.prefix}.updates.datasets", ds)
        await produce(f"{self.names.prefix}.updates.tenants", ts)
        for n in range(self.count):
            port = free_port()
            log = (self.work / f"worker-{n}.log").open("wb")
            self.processes.append(
                subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
                    [
                        sys.executable,
                        "-m",
                        "streamapp",
                        "worker",
                        "-l",
                        "info",
                        "--web-port",
                        str(port),
                    ],
                    env={**env, "STREAMAPP_DATA_DIR": str(self.work / f"data-{n}")},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.ports.append(port)
        for port in self.ports:
            await wait_for_policies(port, DATASETS, 600)
        await asyncio.sleep(5 if self.count > 1 else 1)  # the group settles

    def cpu_s(self) -> float:
        return sum(process_cpu_s(p.pid) for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


async def dropping_topics(prefixes: list[str]) -> None:
    """Delete the topics a run made (its prefixes; a worker's internal topics start with them
    too). Left behind, they piled up on the test broker — thousands of topics, tens of GB —
    and every later run measured that broker: its start, its metadata responses (one took a
    worker's loop 156 ms to decode) and its page cache (docs/benchmarks.md)."""
    deleted = await delete_topics_with_prefixes(BOOTSTRAP, prefixes)
    print(f"bench: {deleted} topics of this run deleted", file=sys.stderr, flush=True)


async def throughput_once(
    records: int,
    tenants: int,
    workers: int,
    *,
    minting_stub: bool = False,
    worker_env_extra: dict[str, str] | None = None,
    sampled_to: Path | None = None,
    tenant_macaroons: bool = False,
) -> dict[str, Any]:
    names_base = Names(f"bench-pipe-{uuid.uuid4().hex[:8]}")
    names_app = Names(f"bench-pipe-{uuid.uuid4().hex[:8]}")
    try:
        return await _throughput(
            names_base,
            names_app,
            records=records,
            tenants=tenants,
            workers=workers,
            stub=minting_stub,
            env_extra=worker_env_extra or {},
            sampled_to=sampled_to,
            tenant_macaroons=tenant_macaroons,
        )
    finally:
        await dropping_topics([names_base.prefix, names_app.prefix])


async def _throughput(
    names_base: Names,
    names_app: Names,
    *,
    records: int,
    tenants: int,
    workers: int,
    stub: bool,
    env_extra: dict[str, str],
    sampled_to: Path | None = None,
    tenant_macaroons: bool = False,
) -> dict[str, Any]:
    index = build_index(DATASETS, tenants)
    values = raw_records(records, DATASETS)
    receivers = receiving_tenants(index, values)
    expected = records * tenants
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        private, public = generate_admin_keypair(work / "keys")
        secrets = work / "secrets"
        secrets.mkdir()
        (secrets / "macaroon-root.key").write_bytes(b"bench-root-key")
        if tenant_macaroons:
            write_tenant_macaroons(secrets, receivers)
        issuer = TokenIssuer(SecretFiles(secrets), "bench", "bench", "", 3600)

        # (a) the plain loop: every topic exists and the input is on the broker first
        await create_topics(
            BOOTSTRAP, [names_base.raw, *output_topics(names_base, receivers)], PARTITIONS
        )
        await produce(names_base.raw, values)
        machine = MachineCpu()
        base_cpu = await baseline(names_base, tenants, issuer, records)
        base_others = machine.used() - base_cpu
        base_span, base_count = await output_span(
            [names_base.tenant(t) for t in receivers], expected, 120
        )
        base_load = machine.load_start

        # (b) the workers: same topics made first; the input goes in once policies are loaded
        await create_topics(
            BOOTSTRAP, [names_app.raw, *output_topics(names_app, receivers)], PARTITIONS
        )
        app = Workers(names_app, tenants, workers, work)
        try:
            env = worker_env(names_app, work, public, secrets)
            env.update(env_extra)
            if stub:  # the workers' TokenIssuer.issue serves first tokens (no minting)
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(ROOT / "bench" / "minting_stub"), env.get("PYTHONPATH")) if p
                )
            await app.start(private, env)
            # py-spy from here (policies loaded) until the outputs are in: the run itself
            sampler = start_sampler(app.processes[0].pid, sampled_to) if sampled_to else None
            machine = MachineCpu()
            cpu_before = app.cpu_s()
            started = time.monotonic()
            filler = time.process_time()
            await produce(names_app.raw, values)
            filler_cpu = time.process_time() - filler
            outputs = [names_app.tenant(t) for t in receivers]
            await wait_outputs(outputs, expected, 1800)
            app_cpu = app.cpu_s() - cpu_before
            wall = time.monotonic() - started
            if sampler is not None:
                stop_sampler(sampler)
            app_others = machine.used() - app_cpu
            span, count = await output_span(outputs, expected, 300)
            app_load = machine.load_start
        finally:
            app.stop()
    base_rate = records / base_span if base_count >= expected else float("nan")
    rate = records / span if count >= expected else float("nan")
    return {
        "records": records,
        "tenants": tenants,
        "workers": workers,
        "baseline_rec_s": round(base_rate),
        "worker_rec_s": round(rate),
        "ratio": round(rate / base_rate, 3),
        "baseline_cpu_us": round(base_cpu / records * 1e6),
        "worker_cpu_us": round(app_cpu / records * 1e6),
        "baseline_others_cpu_pct": round(100 * base_others / max(base_span, 1e-9)),
        "worker_others_cpu_pct": round(100 * (app_others - filler_cpu) / max(wall, 1e-9)),
        "load_1m": [round(base_load, 2), round(app_load, 2)],
        "worker_cpu_s": round(app_cpu, 2),
        "outputs": [base_count, count],
    }


def latency_summary(rate: int, sides: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side, the p50/p99/max of each run and their medians (raw record on its topic ->
    copy on the tenant topic, and from the load generator's send)."""
    summary: dict[str, Any] = {"summary": f"latency rate={rate}", "runs": len(results)}
    for side in sides:
        for leg in (side, f"{side}_from_raw_topic"):
            figures = [r[leg] for r in results if r.get(leg, {}).get("received")]
            summary[leg] = {
                q: {
                    "runs": [f[q] for f in figures],
                    "median": statistics.median(f[q] for f in figures) if figures else None,
                }
                for q in ("p50_ms", "p99_ms", "max_ms")
            }
    return summary


async def latency_once(
    rate: int, seconds: int, sides: list[str] | tuple[str, ...] = SIDES
) -> dict[str, Any]:
    """Both sides paced at ``rate``: the plain loop (a child process running ``baseline``) and
    one worker, each on its own topics, one after the other."""
    total = rate * seconds
    warm = 5 * rate  # 5 s at the same rate first, on both sides: not measured
    everything = raw_records(warm + total, DATASETS)
    warm_up, values = everything[:warm], everything[warm:]
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "records": total,
        "warm_up_records": warm,
    }
    made: list[str] = []
    try:
        await _latency_sides(rate, warm_up, values, sides, result=result, made=made)
    finally:
        await dropping_topics(made)
    return result


async def _latency_sides(
    rate: int,
    warm_up: list[bytes],
    values: list[bytes],
    sides: list[str] | tuple[str, ...],
    *,
    result: dict[str, Any],
    made: list[str],
) -> None:
    """The three sides of ``latency_once`` (figures into ``result``; topic prefixes into
    ``made``, for deleting)."""
    warm, total, everything = len(warm_up), len(values), warm_up + values
    for side in sides:
        names = Names(f"bench-lat-{uuid.uuid4().hex[:8]}")
        made.append(names.prefix)
        receivers = receiving_tenants(build_index(DATASETS, 1), everything)
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            private, public = generate_admin_keypair(work / "keys")
            secrets = work / "secrets"
            secrets.mkdir()
            (secrets / "macaroon-root.key").write_bytes(b"bench-root-key")
            append_time = {"message.timestamp.type": "LogAppendTime"}
            await create_topics(
                BOOTSTRAP,
                [names.raw, *output_topics(names, receivers)],
                PARTITIONS,
                configs=dict.fromkeys([names.raw, *map(names.tenant, receivers)], append_time),
            )
            stop: Any
            if side == "worker":
                app = Workers(names, 1, 1, work)
                await app.start(private, worker_env(names, work, public, secrets))
                stop = app.stop
            else:
                loop = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped below
                    [
                        sys.executable,
                        "-m",
                        "bench.pipeline",
                        "serve-baseline",
                        names.prefix,
                        str(warm + total),
                        str(secrets),
                        *(
                            ["--floor", names.tenant(sorted(receivers)[0])]
                            if side == "floor"
                            else []
                        ),
                    ],
                    cwd=ROOT,
                )
                await asyncio.sleep(3)  # joined its group (auto_offset_reset=earliest anyway)
                stop = loop.terminate
            try:
                await paced(names.raw, warm_up, rate)
                sent_at = await paced(names.raw, values, rate)
                appended = await append_times(
                    [names.tenant(t) for t in receivers], warm + total, 120
                )
                raw_appended = await append_times([names.raw], warm + total, 120, raw=True)
            finally:
                stop()
                if (dump := os.environ.get("BENCH_LATENCY_DUMP")) and side == "worker":
                    shutil.copy(work / "worker-0.log", f"{dump}-worker-{rate}.log")
        result[side] = latency_figures(sent_at, appended)
        # the pipeline's own leg: the raw record on its topic -> the copy on the tenant topic
        # (without the load generator's produce request, which both sides share)
        measured = {k: t for k, t in raw_appended.items() if k in sent_at}  # not the warm-up
        result[f"{side}_from_raw_topic"] = latency_figures(measured, appended)
        result[f"{side}_to_raw_topic"] = latency_figures(sent_at, raw_appended)
        if dump := os.environ.get("BENCH_LATENCY_DUMP"):  # per-record times, for finding a tail
            Path(f"{dump}-{side}-{rate}.json").write_bytes(  # noqa: ASYNC240 - once, after the run
                orjson.dumps({"sent": sent_at, "raw": raw_appended, "appended": appended})
            )


def latency_figures(sent_at: dict[str, int], appended: dict[str, int]) -> dict[str, Any]:
    latencies = sorted(appended[k] - sent_at[k] for k in appended if k in sent_at)
    if not latencies:
        return {"received": 0}

    def pct(q: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(q * len(latencies)))])

    return {
        "received": len(latencies),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": float(latencies[-1]),
        "mean_ms": round(statistics.fmean(latencies), 1),
    }


def serve_baseline(prefix: str, records: int, secrets: str, floor_topic: str | None) -> None:
    """The plain loop as its own process (latency: paced input, its own CPU); with
    ``floor_topic``, the floor instead."""
    if floor_topic is not None:
        asyncio.run(floor(Names(prefix), floor_topic, records))
        return
    issuer = TokenIssuer(SecretFiles(Path(secrets)), "bench", "bench", "", 3600)
    asyncio.run(baseline(Names(prefix), 1, issuer, records))


async def floor(names: Names, topic: str, records: int) -> None:
    """The same loop without the work: each raw record wrapped as ``{"data": raw}`` to ``topic``
    (one produce per record, the fetch's outputs sent at once, flushed, committed) — what the
    broker, the client library and this machine give before any pipeline work."""
    consumer, producer = await plain_loop_clients(names, "floor")
    seen = 0
    try:
        while seen < records:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            pending = []
            for batch in batches.values():
                for record in batch:
                    seen += 1
                    value = b'{"data":' + record.value + b"}"
                    pending.append(await producer.send(topic, value, key=record.key))
            send_lingering_now(producer)
            await asyncio.gather(*pending)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def paced(topic: str, values: list[bytes], rate: int) -> dict[str, int]:
    """Send ``values`` at ``rate`` per second (in 10 ms slices); pnfsid -> send time (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=0, acks=1)
    await producer.start()
    sent: dict[str, int] = {}
    per_slice = max(1, rate // 100)
    start = time.monotonic()
    try:
        for n in range(0, len(values), per_slice):
            due = start + (n / rate)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for value in values[n : n + per_slice]:
                now_ms = int(time.time() * 1000)
                sent[orjson.loads(value)["pnfsid"]] = now_ms
                await producer.send(topic, value, timestamp_ms=now_ms)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def append_times(
    topics: list[str], expected: int, timeout_s: float, *, raw: bool = False
) -> dict[str, int]:
    """pnfsid -> the broker's append time of its record on ``topics`` (raw records or copies)."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    parsed = orjson.loads(record.value)
                    out[(parsed if raw else parsed["data"])["pnfsid"]] = record.timestamp
    finally:
        await consumer.stop()
    return out


def minting_share_interleaved(
    records: int, tenants: int, runs: int, slice_s: float, tenant_macaroons: bool
) -> None:
    """One worker per run alternating between minting and the stub every ``slice_s`` (the
    stub's ``BENCH_MINTING_TOGGLE_S``): minting's share = 1 - (CPU per copy in the stubbed
    slices) / (CPU per copy in the minting slices), over the slices with the worker busy."""
    pooled = {0: [0.0, 0], 1: [0.0, 0]}  # parity -> CPU s, copies
    shares = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            slices = Path(scratch) / "slices.txt"
            run = asyncio.run(
                throughput_once(
                    records,
                    tenants,
                    1,
                    minting_stub=True,
                    worker_env_extra={
                        "BENCH_MINTING_TOGGLE_S": str(slice_s),
                        "BENCH_MINTING_SLICES": str(slices),
                    },
                    tenant_macaroons=tenant_macaroons,
                )
            )
            per = busy_slices(slices.read_text().split("\n"))
        run_totals = {0: [0.0, 0], 1: [0.0, 0]}
        for parity, cpu, copies in per:
            for totals in (pooled, run_totals):
                totals[parity][0] += cpu
                totals[parity][1] += copies
        share = 1 - (run_totals[1][0] / run_totals[1][1]) / (run_totals[0][0] / run_totals[0][1])
        shares.append(round(100 * share, 1))
        print(
            json.dumps(
                {
                    **run,
                    "interleaved_slices": [sum(1 for p in per if p[0] == q) for q in (0, 1)],
                    "minting_us_per_copy": round(1e6 * run_totals[0][0] / run_totals[0][1], 2),
                    "stubbed_us_per_copy": round(1e6 * run_totals[1][0] / run_totals[1][1], 2),
                    "share_pct": shares[-1],
                }
            ),
            flush=True,
        )
    share = 1 - (pooled[1][0] / pooled[1][1]) / (pooled[0][0] / pooled[0][1])
    print(
        json.dumps(
            {
                "summary": f"minting share interleaved, tenants={tenants}, slices of {slice_s} s",
                "share_pct_per_run": shares,
                "pooled_share_pct": round(100 * share, 1),
            }
        ),
        flush=True,
    )


def minting_share_timed(records: int, tenants: int, runs: int, tenant_macaroons: bool) -> None:
    """One worker per run whose ``issue_event`` and ``_mint`` are timed by the thread's CPU
    clock (bench/minting_timer): minting's share = CPU inside ``issue_event`` / the process's
    CPU, over the seconds in which the worker issued tokens (the first and last are partly
    idle: left out). A direct measurement within the worker, beside the two by difference."""
    shares: list[float] = []
    inside_total = process_total = 0.0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            times = Path(scratch) / "times.txt"
            run = asyncio.run(
                throughput_once(
                    records,
                    tenants,
                    1,
                    worker_env_extra={
                        "PYTHONPATH": str(ROOT / "bench" / "minting_timer"),
                        "BENCH_MINTING_TIMES": str(times),
                    },
                    tenant_macaroons=tenant_macaroons,
                )
            )
            rows = [
                [float(x) for x in line.split()]
                for line in times.read_text().splitlines()
                if line.strip()
            ]
        busy = [
            (before, after)
            for before, after in itertools.pairwise(rows)
            if after[2] > before[2] and before[2] > 0
        ]
        busy = busy[:-1]  # the last second with copies is partly idle
        process_cpu = sum(after[0] - before[0] for before, after in busy)
        inside = sum(after[1] - before[1] for before, after in busy) / 1e9
        minted = sum(after[4] - before[4] for before, after in busy) / 1e9
        events = sum(after[2] - before[2] for before, after in busy)
        shares.append(round(100 * inside / process_cpu, 1))
        inside_total += inside
        process_total += process_cpu
        print(
            json.dumps(
                {
                    **run,
                    "busy_seconds": len(busy),
                    "issue_event_us_per_event": round(1e6 * inside / events, 1),
                    "of_it_minting_us_per_event": round(1e6 * minted / events, 1),
                    "process_us_per_event": round(1e6 * process_cpu / events, 1),
                    "share_pct": shares[-1],
                    "minted_tokens_share_pct": round(100 * minted / process_cpu, 1),
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "summary": f"minting share timed in the worker, tenants={tenants}",
                "share_pct_per_run": shares,
                "pooled_share_pct": round(100 * inside_total / process_total, 1),
            }
        ),
        flush=True,
    )


# Frames of the issuer: everything it does for an event's copies (lookups, sharing, caches,
# minting) runs in these files, and only the issuer calls into the token modules.
ISSUER_FILES = (
    "(streamapp/delegation.py)",
    "(streamapp/domain/token_minting.py)",
    "(streamapp/domain/token_chain.py)",
)
MINT_FRAME = "_mint (streamapp/delegation.py)"
# Token work outside the issuer, for the wider reading: counting the tokens of a copy and
# formatting its ``tokenexpires`` (putting the token strings into the copy is a few lines of
# ``authorized_event``, not a frame of its own: not counted).
BOOKKEEPING_FRAMES = (
    "_count_tokens (streamapp/agents/authorize.py)",
    "format_instant (streamapp/domain/tokens.py)",
)
SAMPLES_PER_S = 200
# ``--gil-only``: only samples of a thread holding the GIL. py-spy counts every thread in state R
# as running, and on two busy cores that includes a loop woken from epoll and still waiting
# for a core (the samples' seconds came to 1.3x the worker's CPU seconds): those hold no GIL.
# C work without the GIL (sockets, compression) then leaves the denominator: a bound from above.
GIL_ONLY: list[str] = []


def start_sampler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (blocking: the process is paused for each sample, so every
    sample is a whole stack; non-blocking ones fail in fast-changing code and undercount it)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/python -m pip install py-spy")
    command = [spy, "record", "-p", str(pid), "-r", str(SAMPLES_PER_S), "-f", "raw", "--nolineno"]
    command += GIL_ONLY
    with output.with_suffix(".log").open("wb") as log:  # what py-spy says, if it fails
        return subprocess.Popen([*command, "-o", str(output)], stdout=log, stderr=subprocess.STDOUT)


def stop_sampler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()


@dataclass(frozen=True)
class SampledShares:
    samples: int
    issuer: int  # samples with an issuer frame
    minted: int  # of those, inside ``_mint``
    with_bookkeeping: int  # issuer or token bookkeeping


def sampled_shares(raw: str) -> SampledShares:
    """The counts of a py-spy raw profile (one line per distinct stack: frames joined by ';',
    then a space and the count). Idle stacks are not in it (py-spy leaves out threads that are
    not running)."""
    total = issuer = minted = wider = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        if any(name in stack for name in ISSUER_FILES):
            issuer += count
            wider += count
            if MINT_FRAME in stack:
                minted += count
        elif any(name in stack for name in BOOKKEEPING_FRAMES):
            wider += count
    return SampledShares(total, issuer, minted, wider)


def minting_share_sampled(records: int, tenants: int, runs: int, tenant_macaroons: bool) -> None:
    """One worker per run profiled by py-spy (blocking, 200 Hz) from the moment its policies
    are loaded until the last copy is out: minting's share = samples with an issuer frame in
    their stack / all samples of the worker's running threads — a sampling profile, as the
    issue's own figures were taken. Also: the share with the token bookkeeping outside the
    issuer, and the samples' seconds against the worker's CPU seconds (a check that the
    profile saw the run: py-spy counts a runnable thread waiting for a core as running)."""
    shares: list[float] = []
    sampled_total = issuer_total = 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as scratch:
            profile = Path(scratch) / "profile.txt"
            run = asyncio.run(
                throughput_once(
                    records, tenants, 1, sampled_to=profile, tenant_macaroons=tenant_macaroons
                )
            )
            spy_log = profile.with_suffix(".log").read_text(errors="replace")
            if not profile.exists():
                raise SystemExit(f"py-spy wrote no profile: {spy_log}")
            counts = sampled_shares(profile.read_text())
        if counts.issuer == 0:
            raise SystemExit("no sample in the issuer: the profile did not see the run")
        shares.append(round(100 * counts.issuer / counts.samples, 1))
        sampled_total += counts.samples
        issuer_total += counts.issuer
        errors = [line for line in spy_log.splitlines() if "rror" in line or "behind" in line]
        print(
            json.dumps(
                {
                    **run,
                    "samples": counts.samples,
                    "sampled_s": round(counts.samples / SAMPLES_PER_S, 1),
                    "share_pct": shares[-1],
                    "minted_tokens_share_pct": round(100 * counts.minted / counts.samples, 1),
                    "with_bookkeeping_share_pct": round(
                        100 * counts.with_bookkeeping / counts.samples, 1
                    ),
                    "py_spy_said": errors[-3:],
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "summary": f"minting share sampled by py-spy in the worker, tenants={tenants}"
                + (", a base macaroon per tenant" if tenant_macaroons else "")
                + (", GIL holders only" if GIL_ONLY else ""),
                "share_pct_per_run": shares,
                "pooled_share_pct": round(100 * issuer_total / max(sampled_total, 1), 1),
            }
        ),
        flush=True,
    )


def busy_slices(lines: list[str]) -> list[tuple[int, float, int]]:
    """(parity, CPU s, copies) of each whole slice in which the worker was busy: consecutive
    lines of the stub's slice log, keeping slices with at least half the median's copies (the
    first and last of the run are partly idle)."""
    rows = [tuple(line.split()) for line in lines if line.strip()]
    parsed = [(int(i), int(p), float(c), int(n)) for i, p, c, n in rows]
    out = []
    for before, after in itertools.pairwise(parsed):
        if after[0] == before[0] + 1 and after[3] > before[3]:
            out.append((after[1], after[2] - before[2], after[3] - before[3]))
    if not out:
        return []
    median = statistics.median(n for _, _, n in out)
    return [s for s in out if s[2] >= median / 2]


def minting_share(records: int, tenants: int, pairs: int, tenant_macaroons: bool) -> None:
    """Alternating runs with minting and with the workers' ``issue`` stubbed
    (bench/minting_stub): minting's share = the CPU per record it adds / the CPU with it."""
    with_minting: list[int] = []
    stubbed: list[int] = []
    for _ in range(pairs):
        for stub, runs in ((False, with_minting), (True, stubbed)):
            run = asyncio.run(
                throughput_once(
                    records, tenants, 1, minting_stub=stub, tenant_macaroons=tenant_macaroons
                )
            )
            runs.append(run["worker_cpu_us"])
            print(json.dumps({**run, "minting_stub": stub}), flush=True)
    shares = [round(100 * (w - s) / w, 1) for w, s in zip(with_minting, stubbed, strict=True)]
    pooled = 100 * (sum(with_minting) - sum(stubbed)) / sum(with_minting)
    print(
        json.dumps(
            {
                "summary": f"minting share, tenants={tenants}",
                "pairs_us": list(zip(with_minting, stubbed, strict=True)),
                "share_pct_per_pair": shares,
                "pooled_share_pct": round(pooled, 1),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    thr = sub.add_parser("throughput")
    thr.add_argument("--records", type=int, default=100_000)
    thr.add_argument("--tenants", type=int, nargs="+", default=[1, 10])
    thr.add_argument("--workers", type=int, nargs="+", default=[1])
    thr.add_argument("--repeat", type=int, default=3)
    share = sub.add_parser("minting-share", help="minting's share of the worker's CPU")
    share.add_argument("--records", type=int, default=200_000)  # 40,000: 6 s of work, too short
    share.add_argument("--tenants", type=int, default=10)
    share.add_argument("--pairs", type=int, default=3)
    share.add_argument(
        "--interleaved",
        type=float,
        default=0.0,
        metavar="SLICE_S",
        help="instead: one worker per run alternating minting and the stub every SLICE_S",
    )
    share.add_argument(
        "--timed",
        action="store_true",
        help="instead: one worker per run, the issuer timed inside it (--pairs runs)",
    )
    share.add_argument(
        "--sampled",
        action="store_true",
        help="instead: one worker per run, profiled by py-spy (--pairs runs)",
    )
    share.add_argument(
        "--gil-only",
        action="store_true",
        help="with --sampled: only samples of a thread holding the GIL",
    )
    share.add_argument(
        "--tenant-macaroons",
        action="store_true",
        help="every tenant has a base macaroon of its own (no token shared between copies)",
    )
    lat = sub.add_parser("latency")
    lat.add_argument("--rates", type=int, nargs="+", default=[1000, 3000])
    lat.add_argument("--seconds", type=int, default=30)
    lat.add_argument("--repeat", type=int, default=1, help="runs per rate (medians reported)")
    lat.add_argument(
        "--sides", nargs="+", choices=SIDES, default=list(SIDES), help="which sides to run"
    )
    serve = sub.add_parser("serve-baseline", help="(internal) the plain loop for latency")
    serve.add_argument("prefix")
    serve.add_argument("records", type=int)
    serve.add_argument("secrets")
    serve.add_argument("--floor", default=None, help="the floor's output topic")
    args = parser.parse_args()
    if args.mode == "serve-baseline":
        serve_baseline(args.prefix, args.records, args.secrets, args.floor)
        return
    if args.mode == "minting-share":
        own = args.tenant_macaroons
        if args.gil_only:
            GIL_ONLY.append("--gil")
        if args.timed:
            minting_share_timed(args.records, args.tenants, args.pairs, own)
        elif args.sampled:
            minting_share_sampled(args.records, args.tenants, args.pairs, own)
        elif args.interleaved > 0:
            minting_share_interleaved(args.records, args.tenants, args.pairs, args.interleaved, own)
        else:
            minting_share(args.records, args.tenants, args.pairs, own)
        return
    if args.mode == "latency":
        for rate in args.rates:
            results = []
            for _ in range(args.repeat):
                results.append(asyncio.run(latency_once(rate, args.seconds, args.sides)))
                print(json.dumps(results[-1]), flush=True)
            if args.repeat > 1:
                print(json.dumps(latency_summary(rate, args.sides, results)), flush=True)
        return
    for workers in args.workers:
        for tenants in args.tenants:
            runs = []
            for _ in range(args.repeat):
                runs.append(asyncio.run(throughput_once(args.records, tenants, workers)))
                print(json.dumps(runs[-1]), flush=True)
            ratios = [r["ratio"] for r in runs]
            cpu = [r["worker_cpu_us"] for r in runs]
            print(
                json.dumps(
                    {
                        "summary": f"workers={workers} tenants={tenants}",
                        "median_ratio": statistics.median(ratios),
                        "median_worker_rec_s": statistics.median(r["worker_rec_s"] for r in runs),
                        "median_baseline_rec_s": statistics.median(
                            r["baseline_rec_s"] for r in runs
                        ),
                        "median_worker_cpu_us": statistics.median(cpu),
                        "median_baseline_cpu_us": statistics.median(
                            r["baseline_cpu_us"] for r in runs
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
