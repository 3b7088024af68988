"""Live-broker fixtures: the real Apache Kafka broker of scripts/kafka, real worker processes.

Every test gets its own topic names and consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from streamapp.admin_keys import generate_admin_keypair
from testkit.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = ROOT / "scripts" / "kafka"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory needs the broker: marked here (a ``pytestmark`` in a
    conftest is ignored by pytest, so a module without its own would go unmarked)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """Start the project's broker if it is not running (idempotent) and return its address."""
    subprocess.run([str(KAFKA_SCRIPT), "start"], check=True, timeout=600)
    address = subprocess.run(
        [str(KAFKA_SCRIPT), "bootstrap"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert address, "scripts/kafka bootstrap printed nothing"
    return address


DCACHE_SOURCE = "dcache://dcache.desy.example"  # the sources tables/ seeds datasets on
S3_SOURCE = "s3://minio.desy.example"


@dataclass
class TopicNames:
    prefix: str
    dcache: str
    s3: str
    normalized: str
    deadletter: str
    app_id: str
    dataset_updates: str
    tenant_updates: str
    audit: str

    def tenant(self, name: str) -> str:
        return f"{self.prefix}.tenant.{name}.events"


@pytest.fixture
def topics() -> TopicNames:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return TopicNames(
        prefix=prefix,
        dcache=f"{prefix}.dcache.billing",
        s3=f"{prefix}.s3.events",
        normalized=f"{prefix}.storage.events",
        deadletter=f"{prefix}.deadletter",
        app_id=f"{prefix}-app",
        dataset_updates=f"{prefix}.updates.datasets",
        tenant_updates=f"{prefix}.updates.tenants",
        audit=f"{prefix}.updates.audit",
    )


@dataclass
class Stack:
    """The environment one test's workers and commands share: topics, keys, secrets."""

    env: dict[str, str]
    admin_key: Path
    secrets: Path
    root_key: bytes

    def streamapp(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "streamapp", *args],
            env=self.env,
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            timeout=300,
            check=False,
        )


@pytest.fixture
def stack(bootstrap: str, topics: TopicNames, tmp_path: Path) -> Stack:
    private, public = generate_admin_keypair(tmp_path / "keys")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    root_key = os.urandom(32).hex().encode()
    (secrets / "macaroon-root.key").write_bytes(root_key + b"\n")
    env = {
        **os.environ,
        "STREAMAPP_APP_ID": topics.app_id,
        "STREAMAPP_BROKER": f"kafka://{bootstrap}",
        "STREAMAPP_RAW_TOPICS": f"{topics.dcache}={DCACHE_SOURCE},{topics.s3}={S3_SOURCE}",
        "STREAMAPP_NORMALIZED_TOPIC": topics.normalized,
        "STREAMAPP_DEADLETTER_TOPIC": topics.deadletter,
        "STREAMAPP_DATASET_UPDATES_TOPIC": topics.dataset_updates,
        "STREAMAPP_TENANT_UPDATES_TOPIC": topics.tenant_updates,
        "STREAMAPP_UPDATES_AUDIT_TOPIC": topics.audit,
        "STREAMAPP_TENANT_TOPIC_PATTERN": f"{topics.prefix}.tenant.{{tenant}}.events",
        "STREAMAPP_ADMIN_PUBLIC_KEYS": str(public),
        "STREAMAPP_SECRETS_DIR": str(secrets),
        # the OpenWhisk test server's address in tables/ (tests with their own add theirs)
        "STREAMAPP_OPENWHISK_ALLOWED_HOSTS": "127.0.0.1:3233",
        "STREAMAPP_TOPIC_PARTITIONS": "2",
        "STREAMAPP_SESSION_TIMEOUT": "10",
        "STREAMAPP_HEARTBEAT_INTERVAL": "1",
    }
    return Stack(env=env, admin_key=private, secrets=secrets, root_key=root_key)


@dataclass
class Worker:
    """A ``streamapp worker`` process, as an operator runs it (Procfile)."""

    env: dict[str, str]
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    web_port: int = field(default_factory=free_port)

    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamapp",
                "worker",
                "-l",
                "info",
                "--web-port",
                str(self.web_port),
                "--web-host",
                "127.0.0.1",
            ],
            env={**self.env, "STREAMAPP_DATA_DIR": str(self.data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is committed on the way out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def metrics(self) -> dict[str, float]:
        """This worker's Prometheus samples, ``name{labels}`` -> value (empty if unreachable)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/metrics", timeout=5
            ) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def health(self) -> dict[str, Any]:
        """This worker's ``GET /health`` body (503 bodies included)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/health", timeout=10
            ) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        return body

    def recovered(self) -> bool:
        """Serving its current assignment: tables recovered and no rebalance in progress
        (``GET /health``; faust clears ``rebalancing`` once the new assignment is recovered)."""
        try:
            body = self.health()
        except (OSError, ValueError):  # not listening yet
            return False
        return bool(body.get("tables_recovered")) and body.get("rebalancing") is False

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(params=["agent", "batch"])
def ingest_mode(request: pytest.FixtureRequest, stack: Stack) -> str:
    """Run a test once with faust's ingest agent and once with the batch-wise ingest
    (``STREAMAPP_INGEST_BATCH``, streamapp/ingest_batches.py): the same guarantees must hold."""
    mode: str = request.param
    stack.env["STREAMAPP_INGEST_BATCH"] = "true" if mode == "batch" else "false"
    return mode


@pytest.fixture
def worker_factory(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(name: str = "worker", **overrides: str) -> Worker:
        worker = Worker(
            env={**stack.env, **overrides},
            data_dir=tmp_path / f"{name}-data",
            log_path=tmp_path / f"{name}.log",
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


async def produce(bootstrap: str, topic: str, values: Iterable[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topic_names: list[str],
    done: Callable[[list[ConsumerRecord[Any, Any]]], bool],
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole read, not one call
    alive: Callable[[], bool] = lambda: True,
) -> list[ConsumerRecord[Any, Any]]:
    """Read ``topic_names`` from the beginning until ``done(records)``, ``timeout`` seconds, or
    ``alive()`` turning false (the worker under test died: no point waiting)."""
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records) and time.monotonic() < deadline and alive():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def raw_topics_group(app_id: str, env: Mapping[str, str] | None = None) -> str:
    """The consumer group that commits the raw topics: the batch-wise ingest's (the default)
    or, with ``STREAMAPP_INGEST_BATCH=false``, faust's own (the app id)."""
    value = (os.environ if env is None else env).get("STREAMAPP_INGEST_BATCH", "true")
    return f"{app_id}-ingest" if value.lower() in ("1", "true", "yes") else app_id


async def wait_drained(
    bootstrap: str,
    groups: dict[str, list[str]],
    timeout: float = 120,  # noqa: ASYNC109 - a deadline for the whole wait
) -> None:
    """Wait until each consumer group (``group -> topics``) has committed every partition of
    its topics up to the partition's end, twice in a row 1 s apart. A worker commits a record
    only once all of its outputs (or its outcome) are on the broker, so after this nothing
    more comes from those records: exact counts can be asserted without a fixed sleep."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    deadline, settled_once = time.monotonic() + timeout, False
    behind: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            behind = {}
            for group, names in groups.items():
                committed = await admin.list_consumer_group_offsets(group)
                partitions = [
                    TopicPartition(topic["topic"], partition["partition"])
                    for topic in await admin.describe_topics(names)
                    if topic["error_code"] == 0
                    for partition in topic["partitions"]
                ]
                if not partitions:
                    behind[f"{group} {names}"] = -1  # the topics do not exist yet
                    continue
                reader.assign(partitions)  # end_offsets needs their metadata
                ends = await reader.end_offsets(partitions)
                for tp in partitions:
                    at = committed.get(tp)
                    offset = at.offset if at is not None else 0
                    if offset < ends[tp]:
                        behind[f"{group} {tp.topic}[{tp.partition}]"] = ends[tp] - offset
            if not behind and settled_once:
                return
            settled_once = not behind
            await asyncio.sleep(1)
    finally:
        await reader.stop()
        await admin.close()
    raise AssertionError(f"not drained within {timeout} s: {behind}")


async def wait_group_stable(
    bootstrap: str,
    group: str,
    workers: list[Worker],
    timeout: float = 120,  # noqa: ASYNC109 - a deadline for the whole wait
) -> None:
    """Wait until the consumer group has settled with these workers and each has finished
    faust's recovery after the last rebalance. Records produced *during* a rebalance are the
    subject of their own test; the other tests start on a settled group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            described = await admin.describe_consumer_groups([group])
            _error, _name, state, _type, _protocol, group_members = described[0].groups[0]
            if (
                state == "Stable"
                and len(group_members) == len(workers)
                and all(worker.recovered() for worker in workers)
            ):
                await asyncio.sleep(1)
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    raise AssertionError(f"group {group} did not settle with {len(workers)} members")
