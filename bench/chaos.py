"""Chaos run: real workers on the local broker while raw records arrive and faults happen, then
every raw record accounted for (issue #12).

What it does, on the broker of ``scripts/kafka`` (topics unique to the run):

1. starts the OpenWhisk test server (``testkit.openwhisk_server``, a stand-in for
   OpenWhisk) and ``--workers`` ``streamapp worker`` processes, applies a copy of ``tables/``
   signed with a fresh admin key (petra3-p02's trigger pointed at the test server and its rate
   limit raised so that the sink keeps up), with a root macaroon key;
2. feeds raw records at a steady rate: generated dCache transfers over every seeded dataset
   (and outside them), dCache ``request`` records (skipped), malformed records (dead-lettered),
   S3 notifications into the xfel bucket, and ``samples/*.jsonl`` once;
3. applies the schedule's faults at their moments: a worker added (``up``), SIGTERM to the
   oldest (``term``, its exit time measured against the shutdown grace period), SIGKILL
   (``kill``), ``scripts/kafka restart``, ``scripts/kafka stop`` … ``start`` (an outage), and
   OpenWhisk answering 503 (``ow-errors``) or slowly (``ow-slow``) for a while;
4. waits until the consumer groups are stable and every expected output is there (or the
   settle timeout), then accounts: canonical events by id (expected: the offline normalizer),
   dead letters by their original bytes, skips (decided offline: they leave no record),
   deliveries per tenant (expected: ``streamapp.domain.authorize`` over the seed index),
   invocations per entitled event and trigger (at least once; duplicates counted).

Each replay (an output seen more than once) is attributed to the last fault before the copy
was written, with the reason that fault causes replays. Output: the JSON report and a one-line
verdict; the exit status is 1 if anything was lost or a worker overran its grace period.

    .venv/bin/python -m bench.chaos --schedule short    # ~2 min of faults, runs in CI too
    .venv/bin/python -m bench.chaos --schedule long     # >= 100,000 records, 12 membership changes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamapp.admin_keys import generate_admin_keypair
from streamapp.domain.authorize import authorize
from streamapp.domain.normalize import Normalized, Rejected, Skipped, normalize
from streamapp.domain.triggers import matching_triggers
from streamapp.seed import build_index, load_seed
from streamapp.settings import Settings
from testkit.helpers import create_topics, free_port
from testkit.openwhisk_server import Fault, Namespace, OpenWhiskTestServer

ROOT = Path(__file__).resolve().parents[1]
KAFKA = ROOT / "scripts" / "kafka"
DCACHE_SOURCE = "dcache://dcache.desy.example"  # the sources tables/ seeds datasets on
S3_SOURCE = "s3://minio.desy.example"
OW_KEY = "c4a05000-0000-4000-8000-00000000c4a0:chaos-key"
PARTITIONS = 4

log = logging.getLogger("chaos")

# --- schedules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the feed started
    action: (
        str  # up | term | kill | broker-restart | broker-stop | broker-start | ow-errors | ow-slow
    )
    seconds: float = 0.0  # how long an ow-* phase lasts


@dataclass(frozen=True)
class Schedule:
    name: str
    workers: int
    records: int
    rate: float  # raw records per second
    steps: tuple[Step, ...]
    settle_s: float


SHORT = Schedule(
    name="short",
    workers=2,
    records=7200,
    rate=80,
    steps=(
        Step(8, "up"),  # 3 workers
        Step(20, "kill"),  # 2
        Step(28, "ow-errors", 10),
        Step(32, "up"),  # 3
        Step(44, "term"),  # 2: SIGTERM under load
        Step(52, "ow-slow", 8),
        Step(60, "broker-stop"),  # an outage of ~25 s ...
        Step(62, "term"),  # 1: ... with a SIGTERM in it, outlasting the 15 s grace
        Step(78, "broker-start"),
        Step(82, "up"),  # 2
    ),
    settle_s=300,
)


def _long_steps() -> tuple[Step, ...]:
    cycle = (
        (0, "up"),
        (40, "kill"),
        (70, "up"),
        (110, "term"),
        (140, "broker-restart"),
        (170, "up"),
        (200, "ow-errors", 20),
        (240, "term"),
    )
    steps: list[Step] = []
    for base in (20, 300):
        steps += [Step(base + at, action, *rest) for at, action, *rest in cycle]
    # a broker unreachable for 60 s, a SIGTERM during it, then a worker added
    steps += [
        Step(580, "broker-stop"),
        Step(590, "term"),
        Step(640, "broker-start"),
        Step(660, "up"),
        Step(690, "ow-slow", 20),
    ]
    return tuple(steps)


LONG = Schedule(
    name="long", workers=2, records=100_000, rate=140, steps=_long_steps(), settle_s=900
)
SCHEDULES = {s.name: s for s in (SHORT, LONG)}
MEMBERSHIP = {"up", "term", "kill"}
MOVES = MEMBERSHIP | {"crash", "broker-restart", "broker-stop", "broker-start", "start"}

WHY = {
    "up": "a worker joined: partitions moved, and records the previous owner had already "
    "written outputs for but not yet committed (faust commits every 2.8 s, the sink every "
    "1 s) were processed again by the new owner",
    "term": "a worker left with SIGTERM: it committed what it had finished; records fetched "
    "or in flight beyond that commit were processed again by the partitions' new owners",
    "kill": "SIGKILL: nothing committed on the way out; everything after the victim's last "
    "commit (up to one commit interval plus the records in flight) was processed again",
    "broker-restart": "the broker restarted: commits failed while it was away, so outputs "
    "written before it left whose offsets were not committed were written again after the "
    "group re-formed",
    "broker-stop": "the broker was unreachable: commits failed, sessions expired and the group "
    "re-formed; outputs written but not committed before the outage were written again",
    "broker-start": "the broker came back: the group re-formed and every partition resumed from "
    "its last successful commit",
    "ow-errors": "OpenWhisk answered 503: calls retried (each retry is an attempt, not a "
    "duplicate activation); replays here come from the membership changes around it",
    "ow-slow": "OpenWhisk answered slowly: calls in flight when partitions moved were finished "
    "or abandoned after the revoke grace; abandoned ones ran again on the new owner",
    "start": "before any fault: a replay here would be unexplained",
    "crash": "a worker exited by itself (see crashes[]): like a SIGKILL, everything after its "
    "last commit was processed again by the partitions' new owners",
}


# --- raw records -----------------------------------------------------------------------------

ROOTS = (
    "/data/petra3/p02.1/2026/11012345/raw",
    "/data/petra3/p02.1/2026/11012345/raw/calibration",
    "/data/petra3/p02.1/2026/11012345/processed",
    "/data/petra3/p06/2026/11012346/raw",
    "/data/flash/fl21/2026/11012400/raw",
    "/data/xfel/spb/202601/p002345/raw",
    "/data/xfel/spb/202601/p002345-other/raw",  # shares a prefix string, not a dataset
    "/data/unowned",
)


def _transfer(run: str, n: int) -> dict[str, Any]:
    root = ROOTS[n % len(ROOTS)]
    path = f"{root}/{run}/f{n:06d}.nxs"
    size = (n * 7919) % 900_000_000
    return {
        "version": "1.0",
        "msgType": "transfer",
        "date": "2026-11-26T10:18:30.123+01:00",
        "queuingTime": 0,
        "cellName": "pool_write",
        "cellType": "pool",
        "cellDomain": "poolDomain",
        "status": {"code": 0, "msg": ""},
        "session": "door:WebDAV-door@webdavDomain:AAX6FqLTdag",
        "subject": ["UidPrincipal[1000]", "UserNamePrincipal[alice]"],
        "pnfsid": f"{n:036d}",
        "billingPath": path,
        "fileSize": size,
        "storageInfo": "petra3:raw@osm",
        "transferSize": size,
        "transferTime": 1067,
        "isWrite": ("write", "write", "read")[n % 3],
        "protocolInfo": {"protocol": "Http", "versionMajor": 1, "versionMinor": 1},
        "initiator": "door:WebDAV-door@webdavDomain:AAX6FqLTdag",
        "isP2p": False,
        "transferPath": path,
    }


def raw_records(run: str, count: int) -> Iterator[tuple[str, bytes]]:
    """(``dcache`` | ``s3``, value): the samples once, then generated records. Every value is
    unique, so each dead letter is matched to its record by its bytes."""
    samples = ROOT / "samples"
    s3_sample = None
    for kind, name in (("dcache", "dcache-billing.jsonl"), ("s3", "s3-notifications.jsonl")):
        for line in (samples / name).read_bytes().splitlines():
            if line.strip():
                if kind == "s3" and s3_sample is None:
                    s3_sample = orjson.loads(line)
                yield kind, line
    assert s3_sample is not None
    produced = 43
    n = 0
    while produced < count:
        if n % 23 == 7:  # malformed: a relative path is rejected, never guessed
            record = _transfer(run, n) | {"billingPath": f"relative/{run}/r{n}.nxs"}
            yield "dcache", orjson.dumps(record)
        elif n % 17 == 5:  # a door's request record: skipped
            yield "dcache", orjson.dumps(_transfer(run, n) | {"msgType": "request"})
        elif n % 9 == 4:  # an object in the xfel bucket
            key = f"{run}/run{n % 7}/frame_{n:06d}.h5"
            record = json.loads(json.dumps(s3_sample))
            record["Key"] = f"xfel-spb-2026/{key}"
            record["Records"][0]["s3"]["bucket"]["name"] = "xfel-spb-2026"
            record["Records"][0]["s3"]["object"]["key"] = key
            record["Records"][0]["s3"]["object"]["size"] = 1000 + n
            yield "s3", orjson.dumps(record)
        else:
            yield "dcache", orjson.dumps(_transfer(run, n))
        produced += 1
        n += 1


# --- what must come out ----------------------------------------------------------------------


@dataclass
class Expected:
    events: dict[str, int] = field(default_factory=dict)  # id -> raw records producing it
    dead_letters: set[bytes] = field(default_factory=set)
    skips: int = 0
    skipped_records: int = 0
    deliveries: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    invocations: set[tuple[str, str, str]] = field(default_factory=set)  # tenant, trigger, id
    per_record: list[tuple[bytes, tuple[str, ...], bool]] = field(default_factory=list)


def expect(fed: list[tuple[str, bytes]], tables: Path) -> Expected:
    """The same pure code the workers run: normalize, authorize, matching_triggers."""
    index = build_index(load_seed(tables))
    out = Expected()
    counts: Counter[str] = Counter()
    for kind, value in fed:
        outcomes = normalize(value, DCACHE_SOURCE if kind == "dcache" else S3_SOURCE)
        ids: list[str] = []
        rejected = any(isinstance(o, Rejected) for o in outcomes)
        skipped = [o for o in outcomes if isinstance(o, Skipped)]
        out.skips += len(skipped)
        if skipped and len(skipped) == len(outcomes):
            out.skipped_records += 1
        if rejected:
            out.dead_letters.add(value)
        for outcome in outcomes:
            if not isinstance(outcome, Normalized):
                continue
            event = outcome.event
            ids.append(event["id"])
            counts[event["id"]] += 1
            decision = authorize(event, index)
            for delivery in decision.deliveries:
                out.deliveries[delivery.tenant].add(event["id"])
                policy = index.tenants.get(delivery.tenant)
                if policy is None or not policy.triggers or decision.ownership is None:
                    continue
                copy = {**event, "dataset": delivery.dataset.id}
                for trigger in matching_triggers(
                    policy.triggers, copy, decision.ownership.relative
                ):
                    out.invocations.add((delivery.tenant, trigger.name, event["id"]))
        out.per_record.append((value, tuple(ids), rejected))
    out.events = dict(counts)
    return out


# --- what came out ---------------------------------------------------------------------------


@dataclass
class Seen:
    events: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[bytes] = field(default_factory=Counter)
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    invocations: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sink_dead_letters: int = 0
    # (kind, wall time of the copy) for every copy beyond the first
    replays: list[tuple[str, float]] = field(default_factory=list)


class Collector:
    """Reads the run's output topics from the beginning for the whole run."""

    def __init__(self, bootstrap: str, names: Names, tenants: list[str]) -> None:
        self.names = names
        self.tenant_of = {names.tenant(t): t for t in tenants}
        self.seen = Seen()
        self.consumer = AIOKafkaConsumer(
            names.normalized,
            names.deadletter,
            *self.tenant_of,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()

    async def _run(self) -> None:
        seen = self.seen
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            except KafkaError:
                await asyncio.sleep(1)
                continue
            for batch in batches.values():
                for record in batch:
                    at = record.timestamp / 1000
                    if record.topic == self.names.normalized:
                        key = orjson.loads(record.value)["id"]
                        seen.events[key] += 1
                        if seen.events[key] > 1:
                            seen.replays.append(("events", at))
                    elif record.topic == self.names.deadletter:
                        headers = dict(record.headers)
                        if headers.get("streamapp.dlq.stage") != b"ingest":
                            seen.sink_dead_letters += 1
                            continue
                        seen.dead_letters[record.value] += 1
                        if seen.dead_letters[record.value] > 1:
                            seen.replays.append(("dead_letters", at))
                    else:
                        pair = (self.tenant_of[record.topic], orjson.loads(record.value)["id"])
                        seen.deliveries[pair] += 1
                        if seen.deliveries[pair] > 1:
                            seen.replays.append(("deliveries", at))


def activations(server: OpenWhiskTestServer, seen: Seen) -> None:
    seen.invocations.clear()
    seen.replays = [r for r in seen.replays if r[0] != "invocations"]
    for activation in sorted(server.activations, key=lambda a: a.wall):
        if not activation.success:
            continue
        meta = activation.params.get("streamapp") or {}
        event = activation.params.get("event") or {}
        key = (str(meta.get("tenant")), str(meta.get("trigger")), str(event.get("id")))
        seen.invocations[key] += 1
        if seen.invocations[key] > 1:
            seen.replays.append(("invocations", activation.wall))


def missing(expected: Expected, seen: Seen) -> dict[str, int]:
    return {
        "events": sum(1 for i in expected.events if i not in seen.events),
        "dead_letters": sum(1 for v in expected.dead_letters if v not in seen.dead_letters),
        "deliveries": sum(
            1
            for tenant, ids in expected.deliveries.items()
            for i in ids
            if (tenant, i) not in seen.deliveries
        ),
        "invocations": sum(1 for k in expected.invocations if k not in seen.invocations),
    }


# --- processes -------------------------------------------------------------------------------


@dataclass
class Names:
    prefix: str

    def __getattr__(self, name: str) -> str:
        suffix = {
            "dcache": "dcache.billing",
            "s3": "s3.events",
            "normalized": "storage.events",
            "deadletter": "deadletter",
            "invocations": "invocations",
            "dataset_updates": "updates.datasets",
            "tenant_updates": "updates.tenants",
            "audit": "updates.audit",
        }.get(name)
        if suffix is None:
            raise AttributeError(name)
        return f"{self.prefix}.{suffix}"

    @property
    def app_id(self) -> str:
        return f"{self.prefix}-app"

    def tenant(self, tenant: str) -> str:
        return f"{self.prefix}.tenant.{tenant}.events"


@dataclass
class Worker:
    name: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    web_port: int = field(default_factory=free_port)
    exit_s: float | None = None
    signaled: bool = False

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Worker:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "streamapp", "worker", "-l", "info"),
                    *("--web-port", str(self.web_port), "--web-host", "127.0.0.1"),
                ],
                env={**self.env, "STREAMAPP_DATA_DIR": str(self.workdir / f"{self.name}-data")},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_and_wait(self, signum: int, limit_s: float) -> tuple[float, int]:
        """Send ``signum``; seconds until the process exited and its status (SIGKILL after
        ``limit_s``: then the status is -9)."""
        assert self.process is not None
        started = time.monotonic()
        self.signaled = True
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=30)
        self.exit_s = time.monotonic() - started
        return self.exit_s, code

    def metrics(self) -> dict[str, float]:
        try:
            url = f"http://127.0.0.1:{self.web_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[name] = float(value)
        return samples

    def last_error(self) -> str:
        """The last ERROR/CRITICAL line of the worker's log and the exception line after it."""
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [i for i, line in enumerate(lines) if "[ERROR]" in line or "[CRITICAL]" in line]
        crashed = [i for i in errors if "Crashed reason" in lines[i]]
        at = (crashed or errors or [len(lines) - 1])[0] if lines else 0
        return " ".join(lines[at : at + 1])[:300] if lines else ""

    def log_lines(self, level: str) -> int:
        if not self.log_path.exists():
            return 0
        pattern = re.compile(rf"\b{level}\b")
        with self.log_path.open(errors="replace") as f:
            return sum(1 for line in f if pattern.search(line))


def kafka(command: str) -> float:
    """``scripts/kafka <command>``; its duration."""
    started = time.monotonic()
    subprocess.run([str(KAFKA), command], check=True, timeout=600, capture_output=True)
    return time.monotonic() - started


def bootstrap_address() -> str:
    kafka("start")
    return subprocess.run(
        [str(KAFKA), "bootstrap"], check=True, capture_output=True, text=True
    ).stdout.strip()


async def groups_stable(bootstrap: str, groups: dict[str, int]) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        for group, count in groups.items():
            # one group a call: aiokafka 0.12 cannot decode a response describing several
            described = await admin.describe_consumer_groups([group])
            _error, _name, state, _type, _protocol, members = described[0].groups[0]
            if state != "Stable" or len(members) != count:
                return False
    except KafkaError:
        return False
    finally:
        await admin.close()
    return True


# --- the run ---------------------------------------------------------------------------------


def prepare_tables(workdir: Path, server_url: str) -> Path:
    """tables/ with petra3-p02's trigger aimed at this run's test server; its rate limit raised
    so the sink keeps up with the feed (the limit is not what is under test here)."""
    tables = workdir / "tables"
    shutil.copytree(ROOT / "tables", tables)
    p02 = tables / "tenants" / "petra3-p02.toml"
    text = p02.read_text()
    text = text.replace('api_host = "http://127.0.0.1:3233"', f'api_host = "{server_url}"')
    text = text.replace("rate_per_minute = 60", "rate_per_minute = 60000")
    p02.write_text(text)
    return tables


def worker_env(
    bootstrap: str, names: Names, workdir: Path, public: Path, server_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMAPP_APP_ID": names.app_id,
        "STREAMAPP_BROKER": f"kafka://{bootstrap}",
        "STREAMAPP_RAW_TOPICS": f"{names.dcache}={DCACHE_SOURCE},{names.s3}={S3_SOURCE}",
        "STREAMAPP_NORMALIZED_TOPIC": names.normalized,
        "STREAMAPP_DEADLETTER_TOPIC": names.deadletter,
        "STREAMAPP_DATASET_UPDATES_TOPIC": names.dataset_updates,
        "STREAMAPP_TENANT_UPDATES_TOPIC": names.tenant_updates,
        "STREAMAPP_UPDATES_AUDIT_TOPIC": names.audit,
        "STREAMAPP_INVOCATIONS_TOPIC": names.invocations,
        "STREAMAPP_TENANT_TOPIC_PATTERN": f"{names.prefix}.tenant.{{tenant}}.events",
        "STREAMAPP_ADMIN_PUBLIC_KEYS": str(public),
        "STREAMAPP_SECRETS_DIR": str(workdir / "secrets"),
        "STREAMAPP_OPENWHISK_ALLOWED_HOSTS": f"127.0.0.1:{server_port}",
        "STREAMAPP_TOPIC_PARTITIONS": str(PARTITIONS),
        "STREAMAPP_SESSION_TIMEOUT": "10",
        "STREAMAPP_HEARTBEAT_INTERVAL": "1",
        "STREAMAPP_SINK_DISCOVERY_INTERVAL": "1",
        "STREAMAPP_SINK_RETRY_BASE": "0.2",
        "STREAMAPP_SINK_RETRY_CAP": "2",
        "STREAMAPP_SINK_MAX_ATTEMPTS": "60",
        "STREAMAPP_SINK_REVOKE_GRACE": "3",
        # shorter than the default 30 s so that the SIGTERM during the outage meets the deadline
        "STREAMAPP_SHUTDOWN_GRACE": "15",
    }


class Run:
    def __init__(self, schedule: Schedule, workdir: Path) -> None:
        self.schedule = schedule
        self.workdir = workdir
        self.names = Names(f"chaos{uuid.uuid4().hex[:8]}")
        self.workers: list[Worker] = []
        self.events: list[dict[str, Any]] = []  # faults as applied
        self.shutdowns: list[dict[str, Any]] = []
        self.crashes: list[dict[str, Any]] = []
        self.fed: list[tuple[str, bytes]] = []
        self.feed_failures = 0
        self.server = OpenWhiskTestServer({"p02": Namespace(OW_KEY)})
        self.server.action("/p02/reduction/nexus-summary")
        self.env: dict[str, str] = {}
        self.bootstrap = ""
        self.grace_s = Settings().shutdown_grace_s
        self._background: set[asyncio.Task[Any]] = set()

    # -- set-up --

    async def setup(self) -> Path:
        self.bootstrap = await asyncio.to_thread(bootstrap_address)
        await self.server.start()
        private, public = generate_admin_keypair(self.workdir / "keys")
        secrets = self.workdir / "secrets"
        (secrets / "openwhisk" / "petra3-p02").mkdir(parents=True)
        (secrets / "openwhisk" / "petra3-p02" / "p02-openwhisk").write_text(OW_KEY + "\n")
        (secrets / "macaroon-root.key").write_bytes(os.urandom(32).hex().encode() + b"\n")
        tables = prepare_tables(self.workdir, self.server.url)
        self.env = worker_env(self.bootstrap, self.names, self.workdir, public, self.server.port)
        self.grace_s = Settings.from_env(self.env).shutdown_grace_s
        tenants = [e.name for e in load_seed(tables) if e.kind == "tenant"]
        n = self.names
        await create_topics(
            self.bootstrap,
            [n.dcache, n.s3, n.normalized, n.deadletter, n.invocations]
            + [n.tenant(t) for t in tenants],
            PARTITIONS,
        )
        for _ in range(self.schedule.workers):
            self.add_worker()
        applied = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "streamapp",
                "tables",
                "apply",
                str(tables),
                "--key",
                str(private),
            ],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if applied.returncode != 0:
            raise RuntimeError(f"tables apply failed: {applied.stderr.decode()}")
        seeded = load_seed(tables)
        wanted = {kind: sum(1 for e in seeded if e.kind == kind) for kind in ("dataset", "tenant")}
        await self.wait(
            lambda: all(
                w.metrics().get(f'streamapp_policy_entries{{kind="{k}"}}') == c
                for w in self.workers
                for k, c in wanted.items()
            ),
            300,
            "the policies on every worker",
        )
        await self.wait_stable(300)
        return tables

    def add_worker(self) -> Worker:
        worker = Worker(f"w{len(self.workers) + 1}", self.env, self.workdir).start()
        self.workers.append(worker)
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive() and w.exit_s is None]

    async def wait(self, condition: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(condition):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}")

    async def wait_stable(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Both consumer groups Stable with exactly the live workers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = len(self.live())
            groups = {self.names.app_id: count, f"{self.names.app_id}-sink": count}
            if await groups_stable(self.bootstrap, groups):
                return True
            await asyncio.sleep(1)
        return False

    # -- the feed --

    async def feed(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            enable_idempotence=True,
            request_timeout_ms=120_000,
        )
        await producer.start()
        topics = {"dcache": self.names.dcache, "s3": self.names.s3}
        records = raw_records(self.names.prefix, self.schedule.records)
        tick = 0.25
        per_tick = max(1, round(self.schedule.rate * tick))
        started = time.monotonic()
        try:
            batch_no = 0
            while True:
                batch = [r for _, r in zip(range(per_tick), records, strict=False)]
                if not batch:
                    break
                futures = [await producer.send(topics[kind], value) for kind, value in batch]
                results = await asyncio.gather(*futures, return_exceptions=True)
                for item, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        self.feed_failures += 1  # not on the broker: not expected either
                    else:
                        self.fed.append(item)
                batch_no += 1
                delay = started + batch_no * tick - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await producer.stop()

    # -- faults --

    async def apply(self, step: Step, t0: float) -> None:
        at = time.time()
        entry: dict[str, Any] = {"at_s": round(time.monotonic() - t0, 1), "action": step.action}
        if step.action == "up":
            entry["worker"] = self.add_worker().name
        elif step.action in {"term", "kill"}:
            victim = self.live()[0]
            victim.exit_s = -1.0  # leaving: not counted as live any more
            entry["worker"] = victim.name
            signum = signal.SIGTERM if step.action == "term" else signal.SIGKILL
            task = asyncio.create_task(self._stop(victim, signum, entry))
            self._background.add(task)
        elif step.action == "broker-restart":
            entry["took_s"] = round(await asyncio.to_thread(kafka, "restart"), 1)
        elif step.action == "broker-stop":
            entry["took_s"] = round(await asyncio.to_thread(kafka, "stop"), 1)
        elif step.action == "broker-start":
            entry["took_s"] = round(await asyncio.to_thread(kafka, "start"), 1)
        elif step.action == "ow-errors":
            fault = Fault(status=503, count=None)
            self.server.schedule(fault)
            self._later(step.seconds, lambda: self.server.faults.remove(fault))
            entry["seconds"] = step.seconds
        elif step.action == "ow-slow":
            namespace = self.server.namespaces["p02"]
            namespace.latency_s = 1.0
            self._later(step.seconds, lambda: setattr(namespace, "latency_s", 0.0))
            entry["seconds"] = step.seconds
        else:
            raise ValueError(step.action)
        # replays follow the moment a broker fault ends (the group re-forms then)
        entry["wall"] = time.time() if step.action.startswith("broker") else at
        log.info("fault %s", entry)
        self.events.append(entry)

    def _later(self, seconds: float, action: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(seconds)
            action()

        task = asyncio.create_task(run())
        self._background.add(task)

    async def _stop(self, worker: Worker, signum: int, entry: dict[str, Any]) -> None:
        limit = self.grace_s + 60 if signum == signal.SIGTERM else 30
        exit_s, code = await asyncio.to_thread(worker.signal_and_wait, signum, limit)
        record = {
            "worker": worker.name,
            "signal": signal.Signals(signum).name,
            "exit_s": round(exit_s, 1),
            "status": code,
            "within_grace": signum != signal.SIGTERM or exit_s <= self.grace_s + 2,
        }
        entry["exit"] = record
        self.shutdowns.append(record)

    async def watch(self, t0: float) -> None:
        """Record workers that exit without having been signalled (crashes)."""
        while True:
            for worker in self.workers:
                if worker.signaled or worker.alive() or worker.process is None:
                    continue
                if any(c["worker"] == worker.name for c in self.crashes):
                    continue
                worker.exit_s = -1.0
                crash = {
                    "worker": worker.name,
                    "at_s": round(time.monotonic() - t0, 1),
                    "status": worker.process.returncode,
                    "reason": worker.last_error(),
                }
                self.crashes.append(crash)
                self.events.append({"action": "crash", **crash, "wall": time.time()})
                log.warning("worker crashed: %s", crash)
            await asyncio.sleep(1)

    async def faults(self, t0: float) -> None:
        for step in self.schedule.steps:
            delay = t0 + step.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.apply(step, t0)

    # -- the whole run --

    async def run(self) -> dict[str, Any]:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        run_started = time.monotonic()
        tables = await self.setup()
        tenants = [e.name for e in load_seed(tables) if e.kind == "tenant"]
        collector = Collector(self.bootstrap, self.names, tenants)
        await collector.start()
        try:
            t0 = time.monotonic()
            self.events.append({"at_s": 0.0, "action": "start", "wall": time.time()})
            watcher = asyncio.create_task(self.watch(t0))
            await asyncio.gather(self.feed(), self.faults(t0))
            fed_s = time.monotonic() - t0
            if self._background:
                await asyncio.gather(*self._background)
            expected = await asyncio.to_thread(expect, self.fed, tables)
            settle_started = time.monotonic()
            deadline = settle_started + self.schedule.settle_s
            stable = False
            while time.monotonic() < deadline:
                activations(self.server, collector.seen)
                if not any(missing(expected, collector.seen).values()):
                    stable = await self.wait_stable(max(1.0, deadline - time.monotonic()))
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(3)  # late copies (replays) are counted, never waited for
            activations(self.server, collector.seen)
            settled_s = time.monotonic() - settle_started
            metrics = [w.metrics() for w in self.live()]
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for worker in self.live():
                await self._stop(worker, signal.SIGTERM, {})
        finally:
            await collector.stop()
            for worker in self.workers:
                if worker.alive():
                    assert worker.process is not None
                    worker.process.kill()
            await self.server.close()
        report = self.report(expected, collector.seen, metrics, stable)
        report["timings_s"] = {
            "feed_and_faults": round(fed_s, 1),
            "settle": round(settled_s, 1),
            "total": round(time.monotonic() - run_started, 1),
        }
        return report

    def report(
        self, expected: Expected, seen: Seen, metrics: list[dict[str, float]], stable: bool
    ) -> dict[str, Any]:
        lost = missing(expected, seen)
        lost_records = sum(
            1
            for value, ids, rejected in expected.per_record
            if any(i not in seen.events for i in ids)
            or (rejected and value not in seen.dead_letters)
        )
        changes = [e for e in self.events if e["action"] in MEMBERSHIP]
        faults = sorted(self.events, key=lambda e: e["wall"])
        per_fault: dict[int, Counter[str]] = defaultdict(Counter)
        for kind, at in seen.replays:
            index = 0
            for i, fault in enumerate(faults):
                # OpenWhisk phases move no partitions: only invocations can be replayed by them
                if fault["wall"] <= at and (kind == "invocations" or fault["action"] in MOVES):
                    index = i
            per_fault[index][kind] += 1
        for i, fault in enumerate(faults):
            fault["replays"] = dict(per_fault.get(i, Counter()))
            if fault["replays"]:
                fault["why"] = WHY[fault["action"]]
            fault.pop("wall", None)
        skips_counted = sum(
            v
            for m in metrics
            for k, v in m.items()
            if k.startswith("streamapp_ingest_records_total") and 'outcome="skipped"' in k
        )
        over_grace = [s for s in self.shutdowns if not s["within_grace"]]
        deliveries_expected = sum(len(ids) for ids in expected.deliveries.values())
        report: dict[str, Any] = {
            "schedule": self.schedule.name,
            "prefix": self.names.prefix,
            "records": {
                "fed": len(self.fed),
                "not_accepted_by_broker": self.feed_failures,
                "rate_per_s": self.schedule.rate,
            },
            "workers": {"started": len(self.workers), "membership_changes": len(changes)},
            "expected": {
                "events": len(expected.events),
                "dead_letters": len(expected.dead_letters),
                "skips": expected.skips,
                "skipped_records": expected.skipped_records,
                "deliveries": deliveries_expected,
                "deliveries_per_tenant": {t: len(i) for t, i in expected.deliveries.items()},
                "invocations": len(expected.invocations),
            },
            "seen": {
                "events": len(seen.events),
                "event_copies": sum(seen.events.values()),
                "dead_letters": len(seen.dead_letters),
                "deliveries": len(seen.deliveries),
                "delivery_copies": sum(seen.deliveries.values()),
                "invocations": len(seen.invocations),
                "activations": sum(seen.invocations.values()),
                "sink_dead_letters": seen.sink_dead_letters,
                "skips_on_metrics_of_final_workers": skips_counted,
            },
            "lost": {"raw_records": lost_records, **lost},
            "duplicates": {
                "events": sum(seen.events.values()) - len(seen.events),
                "dead_letters": sum(seen.dead_letters.values()) - len(seen.dead_letters),
                "deliveries": sum(seen.deliveries.values()) - len(seen.deliveries),
                "invocations": sum(seen.invocations.values()) - len(seen.invocations),
            },
            "unexpected": {
                "events": sum(1 for i in seen.events if i not in expected.events),
                "deliveries": sum(
                    1 for t, i in seen.deliveries if i not in expected.deliveries.get(t, ())
                ),
                "invocations": sum(1 for k in seen.invocations if k not in expected.invocations),
            },
            "faults": faults,
            "shutdowns": self.shutdowns,
            "shutdown_grace_s": self.grace_s,
            "groups_stable_at_end": stable,
            "worker_log_lines": {
                w.name: {"ERROR": w.log_lines("ERROR"), "suppressed_summaries": _summaries(w)}
                for w in self.workers
            },
            "note": "skips leave no record; they are decided offline, and the skip counters on "
            "/metrics count since each worker's start (they reset on restart)",
        }
        report["crashes"] = self.crashes
        total_lost = sum(report["lost"].values())
        ok = (
            total_lost == 0
            and not over_grace
            and not self.crashes
            and not any(report["unexpected"].values())
        )
        report["ok"] = ok
        report["verdict"] = (
            f"{'PASS' if ok else 'FAIL'} chaos/{self.schedule.name}: {len(self.fed)} raw records, "
            f"{len(changes)} membership changes; lost: {lost_records} raw records, "
            f"{lost['events']} events, {lost['dead_letters']} dead letters, "
            f"{lost['deliveries']} deliveries, {lost['invocations']} invocations; replays: "
            f"{report['duplicates']['events']} events, {report['duplicates']['deliveries']} "
            f"deliveries, {report['duplicates']['invocations']} invocations; "
            f"{len(over_grace)} of {len(self.shutdowns)} SIGTERM/SIGKILL exits over the "
            f"{self.grace_s:.0f} s grace; {len(self.crashes)} workers crashed"
        )
        return report


def _summaries(worker: Worker) -> int:
    if not worker.log_path.exists():
        return 0
    with worker.log_path.open(errors="replace") as f:
        return sum(1 for line in f if "similar messages suppressed" in line)


async def run(schedule: Schedule, workdir: Path) -> dict[str, Any]:
    return await Run(schedule, workdir).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="short")
    parser.add_argument("--records", type=int, help="override the schedule's record count")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    schedule = SCHEDULES[args.schedule]
    if args.records:
        schedule = Schedule(**{**schedule.__dict__, "records": args.records})
    workdir = Path(tempfile.mkdtemp(prefix="streamapp-chaos-"))
    try:
        report = asyncio.run(run(schedule, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory (worker logs): {workdir}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    print(report["verdict"])
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
