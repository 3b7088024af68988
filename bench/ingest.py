"""Ingest benchmark (issue #2): the faust ingest agent against a plain aiokafka loop.

Both read the same raw topic on the live broker (``scripts/kafka``), normalize with the same pure
code and write events keyed by subject plus dead letters (the original bytes) under the same
at-least-once contract: an input offset is committed only after its outputs are acknowledged by
the broker (acks=all). The baseline awaits the deliveries of each ``getmany`` batch and then
commits; the faust worker flushes its producer before every commit.

Throughput is measured the same way for both: input records / (last - first output record
timestamp), the timestamps being the CreateTime the producer stamps on each output record. That
leaves out the worker's start-up (imports, group join, table recovery) and shutdown. Results and
method: docs/benchmarks.md.

    .venv/bin/python -m bench.ingest [--records N] [--repeat K] [--variant NAME ...]

Run ``--list`` for the variants. Each repetition measures the baseline and then every chosen
variant, so a change of machine load hits both sides. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.records import generate
from streamapp.domain.deadletter import DeadLetterContext
from streamapp.domain.events import CONTENT_TYPE
from streamapp.domain.normalize import DEFAULT_MAX_RECORD_BYTES, Normalized, Rejected, normalize
from streamapp.metrics import INGEST_EVENTS, INGEST_RECORDS
from testkit.helpers import create_topics, free_port

ROOT: Final = Path(__file__).resolve().parents[1]
DOC: Final = ROOT / "docs" / "benchmarks.md"
SOURCE: Final = "dcache://bench"
PARTITIONS: Final = 4
BATCH_MAX: Final = 1000  # records per getmany batch of the baseline
_EVENT_HEADERS: Final = [("content-type", CONTENT_TYPE.encode())]


@dataclass(frozen=True)
class Variant:
    """One way of running the faust worker: env overrides, CLI options, bench patches."""

    name: str
    description: str
    env: Mapping[str, str] = field(default_factory=dict)
    global_options: Sequence[str] = ()  # faust options before ``worker`` (-L uvloop)
    loglevel: str = "warn"  # ``worker -l``; warn is faust's default
    # bench.faust_worker patches; () runs the real ``python -m streamapp`` with every agent
    patches: Sequence[str] = ("ingest-only",)


def _variants(*variants: Variant) -> dict[str, Variant]:
    return {variant.name: variant for variant in variants}


VARIANTS: Final = _variants(
    Variant("defaults", "ingest agent alone, streamapp defaults (linger 5 ms), -l warn"),
    Variant(
        "log-info",
        "-l info (as the Procfile and Dockerfile): no faust spinner, root logger at INFO",
        loglevel="info",
    ),
    Variant(
        "quiet-root",
        "patch: root logger back to WARN after start (-l warn)",
        patches=("ingest-only", "quiet-root"),
    ),
    Variant("uvloop", "-L uvloop", global_options=("-L", "uvloop")),
    Variant("linger-0", "PRODUCER_LINGER=0", {"STREAMAPP_PRODUCER_LINGER": "0"}),
    Variant("linger-50ms", "PRODUCER_LINGER=0.05", {"STREAMAPP_PRODUCER_LINGER": "0.05"}),
    Variant(
        "producer-batch-256k",
        "faust PRODUCER_MAX_BATCH_SIZE=262144 (default 16384)",
        {"PRODUCER_MAX_BATCH_SIZE": "262144"},
    ),
    Variant(
        "stream-buffer-16k",
        "faust STREAM_BUFFER_MAXSIZE=16384, BROKER_MAX_POLL_RECORDS=4000",
        {"STREAM_BUFFER_MAXSIZE": "16384", "BROKER_MAX_POLL_RECORDS": "4000"},
    ),
    Variant(
        "inline-await",
        "patch, measurement only: no Task+shield per event (finish_even_if_cancelled)",
        patches=("ingest-only", "inline-await"),
    ),
    Variant(
        "config-only",
        "-L uvloop, -l info, PRODUCER_LINGER=0.05: configuration alone, no code change",
        {"STREAMAPP_PRODUCER_LINGER": "0.05"},
        global_options=("-L", "uvloop"),
        loglevel="info",
    ),
    Variant(
        "config+inline",
        "config-only + the inline-await patch (measurement only)",
        {"STREAMAPP_PRODUCER_LINGER": "0.05"},
        global_options=("-L", "uvloop"),
        loglevel="info",
        patches=("ingest-only", "inline-await"),
    ),
)
# The whole worker (ingest + authorization with seeded policies) is bench/pipeline.py's: a
# worker here would load no policies and measure ingest with every event unowned.
DEFAULT_VARIANTS: Final = ("defaults", "log-info", "linger-50ms", "config-only")


@dataclass
class Expected:
    records: int
    events: int
    dead_letters: int


@dataclass
class Outputs:
    events: str
    dead_letters: str

    @property
    def names(self) -> list[str]:
        return [self.events, self.dead_letters]


@dataclass
class Measurement:
    side: str  # "baseline" or the variant name
    repetition: int
    records: int
    span_s: float  # last - first output record timestamp
    events_per_s: float  # input records / span_s
    wall_s: float | None  # baseline: first record consumed -> last output acked and committed
    cpu_us_per_record: float | None  # process CPU time of the consuming side / input records
    broker_cpu_us_per_record: float | None  # the Kafka broker's CPU time / input records
    other_cores: float  # CPU used by everything else on the machine during the window, in cores
    records_per_batch: float | None  # events per produce batch on the broker (from its log files)
    startup_s: float | None  # faust: worker start -> first output visible
    outputs: int
    duplicates: int  # outputs beyond the expected count (at-least-once redelivery)
    loadavg: str  # /proc/loadavg 1-minute figure before and after


# --- broker helpers ------------------------------------------------------------------------------


async def delete_topics_with_prefixes(bootstrap: str, prefixes: Sequence[str]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


async def produce_raw(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262_144, acks="all"
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, partition=index % PARTITIONS)
            for index, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _output_consumer(bootstrap: str) -> Any:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)


async def output_counts(consumer: Any, partitions: Sequence[Any]) -> dict[str, int]:
    ends: dict[Any, int] = await consumer.end_offsets(list(partitions))
    counts: dict[str, int] = {}
    for tp, end in ends.items():
        counts[tp.topic] = counts.get(tp.topic, 0) + end
    return counts


def _partitions(outputs: Outputs) -> list[Any]:
    return [TopicPartition(name, p) for name in outputs.names for p in range(PARTITIONS)]


async def timestamp_span(bootstrap: str, outputs: Outputs) -> tuple[float, int]:
    """(last - first output timestamp in seconds, number of outputs). Producers stamp records
    in send order, so per partition the first record is the earliest and the last the latest."""
    consumer = _output_consumer(bootstrap)
    await consumer.start()
    try:
        partitions = _partitions(outputs)
        consumer.assign(partitions)
        ends: dict[Any, int] = await consumer.end_offsets(partitions)
        stamps: list[int] = []
        for tp, end in ends.items():
            for offset in {0, end - 1} if end else set():
                consumer.seek(tp, offset)
                fetched = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
                stamps.extend(record.timestamp for record in fetched.get(tp, []))
        if len(stamps) < 2:
            raise RuntimeError(f"no output records on {outputs.names}")
        return (max(stamps) - min(stamps)) / 1000.0, sum(ends.values())
    finally:
        await consumer.stop()


# --- the pure normalizer -------------------------------------------------------------------------


def expected_outputs(values: Sequence[bytes]) -> Expected:
    events = dead = 0
    for value in values:
        outcomes = normalize(value, SOURCE)
        events += sum(1 for outcome in outcomes if isinstance(outcome, Normalized))
        dead += any(isinstance(outcome, Rejected) for outcome in outcomes)
    return Expected(records=len(values), events=events, dead_letters=dead)


def time_normalizer(values: Sequence[bytes], repeat: int) -> list[float]:
    """µs per record of ``normalize`` over ``values``, once per repetition."""
    timings: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        for value in values:
            normalize(value, SOURCE, max_bytes=DEFAULT_MAX_RECORD_BYTES)
        timings.append((time.perf_counter() - started) / len(values) * 1e6)
    return timings


# --- the baseline: a plain aiokafka loop -------------------------------------------------------


async def run_baseline(
    bootstrap: str, raw_topic: str, outputs: Outputs, expected: Expected, group: str
) -> tuple[float, float, float, float]:
    """Consume -> normalize -> produce -> await delivery -> commit, one getmany batch at a time.

    Does what ``streamapp.agents.ingest.ingest_records`` does per record (including its two
    metric increments), without faust. Returns (wall seconds, CPU seconds, broker CPU seconds,
    machine busy CPU seconds) from the first record consumed to the last batch committed.
    """
    consumer = AIOKafkaConsumer(
        raw_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    await consumer.start()
    try:
        consumed = 0
        started = cpu_started = broker_started = busy_started = 0.0
        while consumed < expected.records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH_MAX)
            if not batches:
                continue
            if not consumed:
                started, cpu_started = time.perf_counter(), time.process_time()
                broker_started, busy_started = _broker_cpu_seconds(), _busy_seconds()
            pending: list[Any] = []
            for records in batches.values():
                consumed += len(records)
                for record in records:
                    pending.extend(await _baseline_record(producer, outputs, record))
            results = await asyncio.gather(*pending, return_exceptions=True)
            failures = [result for result in results if isinstance(result, BaseException)]
            if failures:
                raise RuntimeError(f"{len(failures)} outputs not written: {failures[0]!r}")
            await consumer.commit()
        return (
            time.perf_counter() - started,
            time.process_time() - cpu_started,
            _broker_cpu_seconds() - broker_started,
            _busy_seconds() - busy_started,
        )
    finally:
        await consumer.stop()
        await producer.stop()


async def _baseline_record(producer: Any, outputs: Outputs, record: Any) -> list[Any]:
    value: bytes = record.value if record.value is not None else b""
    outcomes = normalize(value, SOURCE, max_bytes=DEFAULT_MAX_RECORD_BYTES)
    pending: list[Any] = []
    rejections = [outcome.reason for outcome in outcomes if isinstance(outcome, Rejected)]
    produced = False
    for outcome in outcomes:
        if isinstance(outcome, Normalized):
            event = outcome.event
            pending.append(
                await producer.send(
                    outputs.events,
                    orjson.dumps(event),
                    key=event["subject"].encode(),
                    headers=_EVENT_HEADERS,
                )
            )
            INGEST_EVENTS.labels(event["type"]).inc()
            produced = True
    if rejections:
        context = DeadLetterContext(
            reason="; ".join(rejections),
            stage="ingest",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        pending.append(
            await producer.send(
                outputs.dead_letters, value, key=record.key, headers=context.headers()
            )
        )
    outcome_label = "rejected" if rejections else ("event" if produced else "skipped")
    INGEST_RECORDS.labels(record.topic, outcome_label).inc()
    return pending


async def measure_baseline(
    bootstrap: str, raw_topic: str, expected: Expected, prefix: str, repetition: int
) -> Measurement:
    label = f"{prefix}.baseline{repetition}"
    outputs = Outputs(f"{label}.events", f"{label}.deadletter")
    await create_topics(bootstrap, outputs.names, PARTITIONS)
    load_before = _loadavg()
    wall, cpu, broker_cpu, busy = await run_baseline(
        bootstrap, raw_topic, outputs, expected, f"{label}-group"
    )
    span, count = await timestamp_span(bootstrap, outputs)
    return Measurement(
        side="baseline",
        repetition=repetition,
        records=expected.records,
        span_s=span,
        events_per_s=expected.records / span,
        wall_s=wall,
        cpu_us_per_record=cpu / expected.records * 1e6,
        broker_cpu_us_per_record=broker_cpu / expected.records * 1e6,
        other_cores=max(busy - cpu - broker_cpu, 0.0) / wall,
        records_per_batch=records_per_batch(outputs.events),
        startup_s=None,
        outputs=count,
        duplicates=count - expected.events - expected.dead_letters,
        loadavg=f"{load_before} -> {_loadavg()}",
    )


# --- faust: the real worker in a subprocess ----------------------------------------------------


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _kafka_state() -> Path:
    return Path(os.environ.get("STREAMAPP_KAFKA_STATE", ROOT / ".kafka"))


def _broker_cpu_seconds() -> float:
    """CPU seconds of the broker of scripts/kafka (0 if its pid file is not found)."""
    try:
        return _cpu_seconds(int((_kafka_state() / "kafka.pid").read_text().strip()))
    except (OSError, ValueError):
        return 0.0


def records_per_batch(topic: str) -> float | None:
    """Mean records per record batch (= per producer batch) of ``topic``, read from the
    broker's log segments (scripts/kafka keeps them under .kafka/data); None if not local."""
    batches = records = 0
    for segment in (_kafka_state() / "data").glob(f"{glob.escape(topic)}-*/*.log"):
        data = segment.read_bytes()
        position = 0
        while position + 61 <= len(data):
            # v2 record batch: baseOffset i64, batchLength i32, ..., recordsCount i32 at 57
            (length,) = struct.unpack_from(">i", data, position + 8)
            if length <= 0:
                break
            (count,) = struct.unpack_from(">i", data, position + 57)
            batches, records = batches + 1, records + count
            position += 12 + length
    return records / batches if batches else None


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_command(variant: Variant, web_port: int) -> list[str]:
    module = "bench.faust_worker" if variant.patches else "streamapp"
    return [
        sys.executable,
        "-m",
        module,
        *variant.global_options,
        "worker",
        "-l",
        variant.loglevel,
        "--web-port",
        str(web_port),
        "--web-host",
        "127.0.0.1",
    ]


def worker_env(
    variant: Variant,
    *,
    bootstrap: str,
    raw_topic: str,
    outputs: Outputs,
    label: str,
    workdir: Path,
) -> dict[str, str]:
    """STREAMAPP_* settings that give the worker topics, group, tables and files of its own."""
    secrets = workdir / f"{label}-secrets"
    secrets.mkdir(exist_ok=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("STREAMAPP_", "BENCH_"))
    }
    env.update(
        # faust's internal topics (table changelogs, assignor) start with the app id
        STREAMAPP_APP_ID=f"{label}-app",
        STREAMAPP_BROKER=f"kafka://{bootstrap}",
        STREAMAPP_RAW_TOPICS=f"{raw_topic}={SOURCE}",
        STREAMAPP_NORMALIZED_TOPIC=outputs.events,
        STREAMAPP_DEADLETTER_TOPIC=outputs.dead_letters,
        STREAMAPP_DATASET_UPDATES_TOPIC=f"{label}.updates.datasets",
        STREAMAPP_TENANT_UPDATES_TOPIC=f"{label}.updates.tenants",
        STREAMAPP_UPDATES_AUDIT_TOPIC=f"{label}.updates.audit",
        STREAMAPP_TENANT_TOPIC_PATTERN=f"{label}.tenant.{{tenant}}.events",
        STREAMAPP_ADMIN_PUBLIC_KEYS=str(workdir / "no-admin-key.pem"),
        STREAMAPP_SECRETS_DIR=str(secrets),
        STREAMAPP_DATA_DIR=str(workdir / f"{label}-data"),
        STREAMAPP_TOPIC_PARTITIONS=str(PARTITIONS),
        # this benchmark measures faust's ingest agent (issue #2); the batch-wise ingest, the
        # default now, is measured by bench.pipeline
        STREAMAPP_INGEST_BATCH="false",
        BENCH_PATCHES=",".join(variant.patches),
        **variant.env,
    )
    return env


async def measure_faust(
    *,
    bootstrap: str,
    raw_topic: str,
    expected: Expected,
    prefix: str,
    variant: Variant,
    repetition: int,
    workdir: Path,
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole run, not one call
) -> Measurement:
    label = f"{prefix}.{re.sub(r'[^a-zA-Z0-9_-]', '-', variant.name)}{repetition}"
    outputs = Outputs(f"{label}.events", f"{label}.deadletter")
    await create_topics(bootstrap, outputs.names, PARTITIONS)
    log_path = workdir / f"{variant.name}{repetition}.log"
    env = worker_env(
        variant,
        bootstrap=bootstrap,
        raw_topic=raw_topic,
        outputs=outputs,
        label=label,
        workdir=workdir,
    )
    want = {outputs.events: expected.events, outputs.dead_letters: expected.dead_letters}
    load_before = _loadavg()
    consumer = _output_consumer(bootstrap)
    await consumer.start()
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *worker_command(variant, free_port()),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.perf_counter()
        first_seen: float | None = None
        cpu_first = broker_first = busy_first = 0.0
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"worker exited {process.returncode}:\n{_tail(log_path)}")
            if _crashed(log_path):
                raise RuntimeError(f"an agent crashed:\n{_tail(log_path)}")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"worker did not finish in {timeout} s:\n{_tail(log_path)}")
            counts = await output_counts(consumer, _partitions(outputs))
            if first_seen is None and any(counts.values()):
                first_seen, cpu_first = time.perf_counter(), _cpu_seconds(process.pid)
                broker_first, busy_first = _broker_cpu_seconds(), _busy_seconds()
            if all(counts.get(topic, 0) >= count for topic, count in want.items()):
                cpu = _cpu_seconds(process.pid) - cpu_first
                broker_cpu = _broker_cpu_seconds() - broker_first
                busy = _busy_seconds() - busy_first
                window = time.perf_counter() - (first_seen or started)
                break
            await asyncio.sleep(0.1)
        load_after = _loadavg()
    finally:
        await consumer.stop()
        await _stop(process)
    span, count = await timestamp_span(bootstrap, outputs)
    assert first_seen is not None
    return Measurement(
        side=variant.name,
        repetition=repetition,
        records=expected.records,
        span_s=span,
        events_per_s=expected.records / span,
        wall_s=None,
        cpu_us_per_record=cpu / expected.records * 1e6,
        broker_cpu_us_per_record=broker_cpu / expected.records * 1e6,
        other_cores=max(busy - cpu - broker_cpu, 0.0) / window,
        records_per_batch=records_per_batch(outputs.events),
        startup_s=first_seen - started,
        outputs=count,
        duplicates=count - expected.events - expected.dead_letters,
        loadavg=f"{load_before} -> {load_after}",
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, as a supervisor stops a worker; SIGKILL after 60 s."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()


def _crashed(path: Path) -> bool:
    return b"Crashed reason=" in path.read_bytes()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- reporting -----------------------------------------------------------------------------------


@dataclass
class Summary:
    side: str
    best: float
    median: float
    cpu_us: float
    broker_cpu_us: float
    per_batch: float
    runs: list[float]


def summarize(measurements: Sequence[Measurement]) -> dict[str, Summary]:
    sides: dict[str, list[Measurement]] = {}
    for m in measurements:
        sides.setdefault(m.side, []).append(m)
    return {
        side: Summary(
            side=side,
            best=max(m.events_per_s for m in ms),
            median=statistics.median(m.events_per_s for m in ms),
            cpu_us=statistics.median(m.cpu_us_per_record or 0.0 for m in ms),
            broker_cpu_us=statistics.median(m.broker_cpu_us_per_record or 0.0 for m in ms),
            per_batch=statistics.median(m.records_per_batch or 0.0 for m in ms),
            runs=[m.events_per_s for m in ms],
        )
        for side, ms in sides.items()
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip()


def streamapp_commit() -> str:
    """The commit streamapp is at, flagged when ``streamapp/`` has uncommitted changes."""
    dirty = " + uncommitted changes" if _git("status", "--porcelain", "streamapp") else ""
    return _git("rev-parse", "--short", "HEAD") + dirty


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    versions = {
        name: metadata.version(name) for name in ("faust-streaming", "aiokafka", "orjson", "uvloop")
    }
    return {
        "commit": streamapp_commit(),
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "kafka": os.environ.get("STREAMAPP_KAFKA_VERSION", "4.0.0")
        + " (scripts/kafka, KRaft single node, 512 MiB heap, same host)",
    }


def render(
    *,
    args: argparse.Namespace,
    expected: Expected,
    normalizer_us: Sequence[float],
    measurements: Sequence[Measurement],
    variants: Sequence[Variant],
    info: Mapping[str, str],
    started_at: str,
    duration_s: float,
) -> str:
    summaries = summarize(measurements)
    base = summaries["baseline"]
    lines = [
        f"Run {started_at}, {duration_s:.0f} s in all. Command: "
        f"`.venv/bin/python -m bench.ingest {' '.join(args.argv)}`".rstrip(),
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['ram']} RAM, Linux "
        f"{info['kernel']}. Broker: Apache Kafka {info['kafka']}.",
        f"Versions: Python {info['python']}, faust-streaming {info['faust-streaming']}, aiokafka "
        f"{info['aiokafka']}, orjson {info['orjson']}, uvloop {info['uvloop']}; streamapp at "
        f"{info['commit']}"
        + (
            f" (at {args.started_commit} when the run started)."
            if args.started_commit != info["commit"]
            else "."
        ),
        "",
        f"Data: {expected.records:,} raw records on one {PARTITIONS}-partition topic, "
        f"{expected.events:,} events and {expected.dead_letters:,} dead letters expected "
        f"(mean record {args.mean_bytes:.0f} bytes).",
        "",
        f"Pure normalizer: **{min(normalizer_us):.1f} µs/record** best, "
        f"{statistics.median(normalizer_us):.1f} µs median of {len(normalizer_us)} passes "
        f"(= {1e6 / min(normalizer_us):,.0f} records/s on one core).",
        "",
        "| variant | baseline ev/s | faust ev/s | ratio faust/baseline | best of "
        f"{args.repeat}: baseline / faust / ratio | client CPU µs/rec | broker CPU µs/rec "
        "| events/produce batch | all runs (ev/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| baseline: plain aiokafka loop | {base.median:,.0f} | | | {base.best:,.0f} | "
        f"{base.cpu_us:.0f} | {base.broker_cpu_us:.0f} | {base.per_batch:.1f} | "
        + ", ".join(f"{r:,.0f}" for r in base.runs)
        + " |",
    ]
    for variant in variants:
        s = summaries.get(variant.name)
        if s is None:
            continue
        lines.append(
            f"| {variant.name}: {variant.description} | {base.median:,.0f} | {s.median:,.0f} | "
            f"**{s.median / base.median:.2f}** | {base.best:,.0f} / {s.best:,.0f} / "
            f"{s.best / base.best:.2f} | {s.cpu_us:.0f} | {s.broker_cpu_us:.0f} | "
            f"{s.per_batch:.1f} | " + ", ".join(f"{r:,.0f}" for r in s.runs) + " |"
        )
    loads = ", ".join(m.loadavg for m in measurements)
    others: dict[str, list[str]] = {}
    for m in measurements:
        others.setdefault(m.side, []).append(f"{m.other_cores:.2f}")
    other = "; ".join(f"{side} {', '.join(values)}" for side, values in others.items())
    dupes = sum(m.duplicates for m in measurements)
    startups = [m.startup_s for m in measurements if m.startup_s is not None]
    walls = [m.wall_s for m in measurements if m.wall_s is not None]
    lines += [
        "",
        f"ev/s = input records / (last - first output record timestamp); baseline wall clock "
        f"(first record consumed -> last batch committed) median "
        f"{statistics.median(walls):.2f} s vs timestamp span median "
        f"{statistics.median(m.span_s for m in measurements if m.side == 'baseline'):.2f} s. "
        f"Faust start-up (process start -> first output) median "
        f"{statistics.median(startups):.1f} s, excluded. Client CPU µs/rec: CPU time of the "
        f"consuming process (the benchmark process for the baseline, the worker for faust) "
        f"over the measured window / input records; broker CPU µs/rec: the same for the "
        f"Kafka JVM. Events/produce batch: mean records per record batch in the events "
        f"topic's log segments (one batch = one producer batch). Outputs beyond the "
        f"expected count (redeliveries): {dupes}.",
        "",
        f"Load: CPU used by the rest of the machine during each window, in cores (of "
        f"{os.cpu_count()}): {other}. Load average (1 min) before -> after each "
        f"measurement: {loads}.",
    ]
    return "\n".join(lines)


def write_doc(block: str, label: str) -> None:
    """Replace the block between this label's markers in docs/benchmarks.md (or append it)."""
    begin, end = f"<!-- bench.ingest:{label}:begin -->", f"<!-- bench.ingest:{label}:end -->"
    text = DOC.read_text() if DOC.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = f"{head}{begin}\n{block}\n{end}{tail}"
    else:
        text += f"\n{begin}\n{block}\n{end}\n"
    DOC.write_text(text)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="raw records (100000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every side (3)")
    parser.add_argument(
        "--variant",
        action="append",
        choices=[*VARIANTS, "all"],
        help=f"faust variant(s), repeatable; default: {' '.join(DEFAULT_VARIANTS)}",
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("STREAMAPP_BENCH_BOOTSTRAP", "127.0.0.1:19092"),
        help="Kafka bootstrap servers (127.0.0.1:19092, the broker of scripts/kafka)",
    )
    parser.add_argument("--seed", type=int, default=2, help="seed of the record generator")
    parser.add_argument("--timeout", type=float, default=300.0, help="per faust run (s)")
    parser.add_argument(
        "--write-doc", action="store_true", help=f"update the --label block of docs/{DOC.name}"
    )
    parser.add_argument("--label", default="main", help="which results block to update (main)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    parser.add_argument("--logs", type=Path, help="keep the worker logs in this directory")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def chosen_variants(args: argparse.Namespace) -> list[Variant]:
    names: list[str] = args.variant or list(DEFAULT_VARIANTS)
    if "all" in names:
        return list(VARIANTS.values())
    return [VARIANTS[name] for name in dict.fromkeys(names)]


@contextlib.contextmanager
def _workdir(logs: Path | None) -> Iterator[Path]:
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        yield logs
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        yield Path(name)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace) -> int:
    started_at = time.strftime("%Y-%m-%d %H:%M %Z")
    args.started_commit = streamapp_commit()  # workers import streamapp anew: note any change
    t0 = time.perf_counter()
    variants = chosen_variants(args)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench.{run_id}"
    raw_topic = f"{prefix}.raw"

    values = generate(args.records, args.seed)
    args.mean_bytes = sum(map(len, values)) / len(values)
    expected = expected_outputs(values)
    _say(f"{len(values):,} records: {expected.events:,} events, {expected.dead_letters:,} DLQ")
    normalizer_us = time_normalizer(values, max(args.repeat, 3))
    _say(f"normalizer: {', '.join(f'{t:.2f}' for t in normalizer_us)} µs/record")

    await create_topics(args.bootstrap, [raw_topic], PARTITIONS)
    measurements: list[Measurement] = []
    try:
        await produce_raw(args.bootstrap, raw_topic, values)
        del values
        _say(f"produced {raw_topic} in {time.perf_counter() - t0:.1f} s")
        with _workdir(args.logs) as workdir:
            for repetition in range(1, args.repeat + 1):
                m = await measure_baseline(args.bootstrap, raw_topic, expected, prefix, repetition)
                measurements.append(m)
                _say(
                    f"[{repetition}] baseline: {m.events_per_s:,.0f} ev/s, "
                    f"{m.cpu_us_per_record:.0f} CPU µs/record, other load "
                    f"{m.other_cores:.2f} cores ({m.loadavg})"
                )
                for variant in variants:
                    m = await measure_faust(
                        bootstrap=args.bootstrap,
                        raw_topic=raw_topic,
                        expected=expected,
                        prefix=prefix,
                        variant=variant,
                        repetition=repetition,
                        workdir=workdir,
                        timeout=args.timeout,
                    )
                    measurements.append(m)
                    _say(
                        f"[{repetition}] {variant.name}: {m.events_per_s:,.0f} ev/s, "
                        f"{m.cpu_us_per_record:.0f} CPU µs/record, start-up "
                        f"{m.startup_s:.1f} s, other load {m.other_cores:.2f} cores "
                        f"({m.loadavg})"
                    )
    finally:
        if not args.keep_topics:
            deleted = await delete_topics_with_prefixes(args.bootstrap, [prefix])
            _say(f"deleted {deleted} topics")

    block = render(
        args=args,
        expected=expected,
        normalizer_us=normalizer_us,
        measurements=measurements,
        variants=variants,
        info=machine(),
        started_at=started_at,
        duration_s=time.perf_counter() - t0,
    )
    print(block)
    if args.write_doc:
        write_doc(block, args.label)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "expected": asdict(expected),
                    "normalizer_us": normalizer_us,
                    "machine": machine(),
                    "measurements": [asdict(m) for m in measurements],
                },
                indent=2,
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for variant in VARIANTS.values():
            default = " (default)" if variant.name in DEFAULT_VARIANTS else ""
            print(f"{variant.name}{default}: {variant.description}")
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
