"""Authenticated web views on a live worker: JWT (WLCG profile) against a JWKS file, tenant
isolation (B gets 403 and no byte of A's events), and the SSE stream resumed across a
disconnect with Last-Event-ID: every event exactly once."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok

from streamapp.admin_keys import load_private_key, sign_update
from streamapp.domain.access import PEER_HEADER, sign_peer_request
from streamapp.sse import SseParser
from testkit.helpers import wait_until, wlcg_token
from tests.factories import dcache_transfer, raw
from tests.integration.conftest import (
    DCACHE_SOURCE,
    Stack,
    TopicNames,
    Worker,
    produce,
    wait_group_stable,
)

pytestmark = pytest.mark.integration

ISS = "https://keycloak.test.example/realms/facility"
AUD = "https://streamapp.test.example"
KEY = ec.generate_private_key(ec.SECP256R1())
# a second trusted identity provider, which has a group called /alpha too (not mapped for it)
ISS2 = "https://login.other.test.example/oidc"
KEY2 = ec.generate_private_key(ec.SECP256R1())
ROOTS = {"alpha": "/data/alpha", "beta": "/data/beta"}


def token(groups: list[str], key: Any = KEY, **overrides: Any) -> str:
    """A token of KEY's provider (ISS), or of KEY2's (ISS2)."""
    return wlcg_token(key, ISS if key is KEY else ISS2, AUD, groups, **{"jti": "j", **overrides})


@pytest.fixture
def web_worker(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    tmp_path: Path,
    worker_factory: Callable[..., Worker],
) -> Worker:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256"}]})
    )
    jwk2 = jwt.algorithms.ECAlgorithm.to_jwk(KEY2.public_key(), as_dict=True)
    (tmp_path / "jwks2.json").write_text(
        json.dumps({"keys": [{**jwk2, "kid": "k1", "alg": "ES256"}]})
    )
    # two issuers: every mapping names its own (a mapping without one is refused at load)
    (tmp_path / "access.toml").write_text(
        f"""audience = "{AUD}"

[[issuers]]
issuer = "{ISS}"
jwks_file = "{tmp_path / "jwks.json"}"
algorithms = ["ES256"]

[[issuers]]
issuer = "{ISS2}"
jwks_file = "{tmp_path / "jwks2.json"}"
algorithms = ["ES256"]

[[mappings]]
issuer = "{ISS}"
group = "/alpha"
tenants = ["alpha"]

[[mappings]]
issuer = "{ISS}"
group = "/beta"
tenants = ["beta"]

[[mappings]]
issuer = "{ISS}"
group = "/streamapp/admins"
admin = true

[[mappings]]
issuer = "{ISS2}"
group = "/beamline-users"
tenants = ["beta"]
"""
    )
    key = load_private_key(stack.admin_key)
    version = int(time.time() * 1000)
    updates_ds, updates_t = [], []
    for name, root in ROOTS.items():
        spec = {"id": f"ds-{name}", "owner": name, "source": DCACHE_SOURCE, "prefixes": [root]}
        updates_ds.append(
            sign_update(
                "dataset", "upsert", f"ds-{name}", version=version, spec=spec, private_key=key
            ).encode()
        )
        tenant = {"tenant": name, "subscriptions": [{"dataset": f"ds-{name}"}]}
        updates_t.append(
            sign_update(
                "tenant", "upsert", name, version=version, spec=tenant, private_key=key
            ).encode()
        )
    asyncio.run(produce(bootstrap, topics.dataset_updates, updates_ds))
    asyncio.run(produce(bootstrap, topics.tenant_updates, updates_t))
    worker = worker_factory(
        "w1",
        STREAMAPP_ACCESS_CONFIG=str(tmp_path / "access.toml"),
        STREAMAPP_SSE_HEARTBEAT="1",
        STREAMAPP_SSE_WRITE_TIMEOUT="4",
    ).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.metrics().get('streamapp_policy_entries{kind="tenant"}') == 2:
            return worker
        time.sleep(0.5)
    raise AssertionError("the worker never loaded the policies")


def writes(tenant: str, start: int, count: int) -> list[bytes]:
    return [
        raw(dcache_transfer(billingPath=f"{ROOTS[tenant]}/f{n:05d}.h5", fileSize=n + 1))
        for n in range(start, start + count)
    ]


async def read_sse(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    count: int,
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole read
) -> tuple[list[dict[str, Any]], str | None]:
    """Read ``count`` events (or until timeout); returns them and the id of the last one."""
    events: list[dict[str, Any]] = []
    last_id: str | None = None
    parser = SseParser()
    async with session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        try:
            async for chunk in response.content.iter_any():
                for frame in parser.feed(chunk):
                    last_id = frame.id if frame.id is not None else last_id
                    events.append(frame.data)
                    if len(events) >= count:
                        return events, last_id
        except TimeoutError:
            pass
    return events, last_id


async def test_tokens_decide_and_tenants_are_isolated(
    bootstrap: str, topics: TopicNames, web_worker: Worker
) -> None:
    base = f"http://127.0.0.1:{web_worker.web_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/tenants/alpha/policy") as response:
            assert response.status == 401
            assert response.headers["Content-Type"] == "application/problem+json"
            assert (await response.json())["status"] == 401
        expired = token(["/alpha"], exp=int(time.time()) - 60, iat=int(time.time()) - 700)
        for bad in (expired, token(["/alpha"], aud="https://elsewhere"), token(["/alpha"]) + "x"):
            async with session.get(
                f"{base}/v1/tenants/alpha/policy", headers={"Authorization": f"Bearer {bad}"}
            ) as response:
                assert response.status == 401
                assert "signature" not in (await response.text()).lower()
        beta = {"Authorization": f"Bearer {token(['/beta'])}"}
        alpha = {"Authorization": f"Bearer {token(['/alpha'])}"}
        async with session.get(f"{base}/v1/tenants/alpha/policy", headers=beta) as response:
            assert response.status == 403
        async with session.get(f"{base}/v1/tenants/alpha/policy", headers=alpha) as response:
            assert response.status == 200
            assert (await response.json())["tenant"] == "alpha"
        # the second issuer's /alpha is not the first's: no mapping of its own, no access
        other = {"Authorization": f"Bearer {token(['/alpha', '/beamline-users'], KEY2)}"}
        async with session.get(f"{base}/v1/tenants/alpha/policy", headers=other) as response:
            assert response.status == 403
        async with session.get(f"{base}/v1/tenants/beta/policy", headers=other) as response:
            assert response.status == 200
        async with session.get(f"{base}/v1/tenants/alpha/datasets", headers=alpha) as response:
            assert [d["id"] for d in (await response.json())["datasets"]] == ["ds-alpha"]
        await produce(bootstrap, topics.dcache, writes("alpha", 0, 5))
        async with session.get(
            f"{base}/v1/tenants/alpha/events?from=beginning", headers=beta
        ) as response:
            assert response.status == 403
            body = await response.read()
            assert b"/data/alpha" not in body
        events, _ = await read_sse(
            session, f"{base}/v1/tenants/alpha/events?from=beginning", alpha, 5, 60
        )
        assert sorted(e["subject"] for e in events) == [
            f"/data/alpha/f{n:05d}.h5" for n in range(5)
        ]
        assert all(e["tenant"] == "alpha" for e in events)


async def test_sse_resumes_without_gap_or_duplicate(
    bootstrap: str, topics: TopicNames, web_worker: Worker
) -> None:
    base = f"http://127.0.0.1:{web_worker.web_port}"
    alpha = {"Authorization": f"Bearer {token(['/alpha'])}"}
    await produce(bootstrap, topics.dcache, writes("alpha", 0, 60) + writes("beta", 0, 20))
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        first, last_id = await read_sse(
            session, f"{base}/v1/tenants/alpha/events?from=beginning", alpha, 25, 60
        )
        seen += [e["id"] for e in first]
        assert last_id is not None
        await produce(bootstrap, topics.dcache, writes("alpha", 60, 40))  # while disconnected
        rest, _ = await read_sse(
            session, f"{base}/v1/tenants/alpha/events", {**alpha, "Last-Event-ID": last_id}, 75, 60
        )
        seen += [e["id"] for e in rest]
    assert len(first) == 25
    assert len(seen) == 100, len(seen)
    assert len(set(seen)) == 100  # no duplicate
    narrowed: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        narrowed, _ = await read_sse(
            session,
            f"{base}/v1/tenants/alpha/events?from=beginning&paths=data/alpha/f0000*.h5",
            alpha,
            10,
            10,
        )
    assert sorted(e["subject"] for e in narrowed) == [f"/data/alpha/f{n:05d}.h5" for n in range(10)]


async def test_health_openapi_invocations_and_admin_updates(
    bootstrap: str, stack: Stack, web_worker: Worker
) -> None:
    base = f"http://127.0.0.1:{web_worker.web_port}"
    alpha = {"Authorization": f"Bearer {token(['/alpha'])}"}
    beta = {"Authorization": f"Bearer {token(['/beta'])}"}
    admin = {"Authorization": f"Bearer {token(['/streamapp/admins'])}"}
    key = load_private_key(stack.admin_key)
    spec = {"tenant": "gamma", "subscriptions": [{"dataset": "ds-alpha"}]}
    update = sign_update(
        "tenant", "upsert", "gamma", version=int(time.time() * 1000), spec=spec, private_key=key
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/health") as response:
            health = await response.json()
            assert response.status == 200, health
            assert health["broker"]
            assert health["tables_recovered"]
        async with session.get(f"{base}/openapi.json") as response:
            document = await response.json()
            assert "/v1/tenants/{tenant}/events" in document["paths"]
        async with session.get(f"{base}/v1/tenants/alpha/invocations", headers=alpha) as response:
            assert response.status == 200
            assert (await response.json())["invocations"] == []
        async with session.get(f"{base}/v1/tenants/alpha/invocations", headers=beta) as response:
            assert response.status == 403
        url = f"{base}/v1/admin/updates"
        async with session.post(url, data=update, headers=alpha) as response:
            assert response.status == 403
        async with session.post(url, data=b"not a jws", headers=admin) as response:
            assert response.status == 422
            assert "not a JWS" in (await response.json())["detail"]
        async with session.post(url, data=update, headers=admin) as response:
            assert response.status == 202, await response.text()
            assert (await response.json())["name"] == "gamma"
    await wait_until(
        lambda: web_worker.metrics().get('streamapp_policy_entries{kind="tenant"}') == 3,
        60,
        "the admin update to be applied",
        interval=0.5,
    )


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium(args: list[str], user_data: Path) -> str:
    """Run Debian's chromium headless (scripts/setup installs it); fail, not skip, without."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (scripts/setup installs Debian's chromium)"
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_dashboard_shows_live_numbers_in_a_real_browser(
    bootstrap: str, topics: TopicNames, web_worker: Worker, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{web_worker.web_port}"
    admin_token = token(["/streamapp/admins"])
    await produce(bootstrap, topics.dcache, writes("alpha", 0, 7) + writes("beta", 0, 3))
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(
                f"{base}/v1/admin/overview", headers={"Authorization": f"Bearer {admin_token}"}
            ) as response:
                overview = await response.json()
            if overview["deliveries"] == {"alpha": 7, "beta": 3}:
                break
            assert time.monotonic() < deadline, overview
            await asyncio.sleep(0.5)
        async with session.get(f"{base}/ui") as response:
            page = await response.text()
            assert response.status == 200
            assert admin_token not in page
    url = f"{base}/ui#token={admin_token}"
    dom = await asyncio.to_thread(
        chromium, ["--dump-dom", "--virtual-time-budget=6000", url], tmp_path / "chromium-1"
    )
    assert "live from" in dom, dom[-3000:]
    assert ">alpha<" in dom
    assert ">7<" in dom  # alpha's delivered count, rendered by the page's script
    assert ">beta<" in dom
    assert "/data/alpha/f00006.h5" in dom  # a recent delivery
    assert admin_token not in dom  # the token is never shown
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await asyncio.to_thread(
        chromium,
        [f"--screenshot={shot}", "--window-size=1400,1000", "--virtual-time-budget=6000", url],
        tmp_path / "chromium-2",
    )
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")


async def test_stats_are_answered_by_the_owner_on_any_worker(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    web_worker: Worker,
    tmp_path: Path,
    worker_factory: Callable[..., Worker],
) -> None:
    """Per-minute counts live in a partitioned windowed table; with two workers sharing its
    partitions, either answers for any tenant (the GET is forwarded to the owner, which the
    ``served_by`` field of the answer shows) — with the workers' peer credential, never the
    caller's token: without the shared peer secret a worker answers 503 for a tenant it does
    not hold."""
    second = worker_factory(
        "w2", STREAMAPP_ACCESS_CONFIG=str(tmp_path / "access.toml"), STREAMAPP_SSE_HEARTBEAT="1"
    ).start()
    await wait_group_stable(bootstrap, topics.app_id, [web_worker, second])
    await produce(bootstrap, topics.dcache, writes("alpha", 0, 7) + writes("beta", 0, 3))
    admin = {"Authorization": f"Bearer {token(['/streamapp/admins'])}"}
    expected = {"alpha": 7, "beta": 3}
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        # no peer secret yet: per tenant, its owner answers and the other worker says why not
        while True:
            statuses: dict[str, list[int]] = {}
            for worker in (web_worker, second):
                for tenant in expected:
                    url = f"http://127.0.0.1:{worker.web_port}/v1/tenants/{tenant}/stats"
                    async with session.get(url, headers=admin) as response:
                        statuses.setdefault(tenant, []).append(response.status)
                        if response.status == 503:
                            assert "peer secret" in (await response.json())["detail"]
                        else:
                            assert response.status == 200, await response.text()
            if all(sorted(s) == [200, 503] for s in statuses.values()):
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(1)
        secret = b"peer-secret-of-this-test-" + b"x" * 16
        (stack.secrets / "peer.key").write_bytes(secret + b"\n")
        # a worker trusts a peer's request only when its signature verifies, and only there
        target = "/v1/tenants/alpha/stats?minutes=5"
        signed = sign_peer_request(secret, "GET", target, "alpha", time.time())
        for path, value, status in (
            (target, signed, 200),
            ("/v1/tenants/alpha/stats?minutes=6", signed, 401),
            ("/v1/tenants/alpha/policy", signed, 401),
            (target, "v1 1 " + "0" * 64, 401),
        ):
            url = f"http://127.0.0.1:{web_worker.web_port}{path}"
            async with session.get(url, headers={PEER_HEADER: value}) as response:
                assert response.status == status, (path, await response.text())
        while True:
            answers: dict[tuple[int, str], tuple[int, str]] = {}
            for worker in (web_worker, second):
                for tenant in expected:
                    url = f"http://127.0.0.1:{worker.web_port}/v1/tenants/{tenant}/stats?minutes=5"
                    async with session.get(url, headers=admin) as response:
                        assert response.status == 200, await response.text()
                        body = await response.json()
                    assert len(body["per_minute"]) == 5
                    total = sum(m["deliveries"] for m in body["per_minute"])
                    answers[worker.web_port, tenant] = (total, body["served_by"])
            if all(answers[key][0] == expected[key[1]] for key in answers):
                break
            assert time.monotonic() < deadline, answers
            await asyncio.sleep(1)
        # one owner per tenant, whichever worker was asked
        for tenant in expected:
            owner = answers[web_worker.web_port, tenant][1]
            assert owner == answers[second.web_port, tenant][1]
            assert owner in {f"http://127.0.0.1:{w.web_port}" for w in (web_worker, second)}
        beta = {"Authorization": f"Bearer {token(['/beta'])}"}
        for worker in (web_worker, second):
            url = f"http://127.0.0.1:{worker.web_port}/v1/tenants/alpha/stats"
            async with session.get(url, headers=beta) as response:
                assert response.status == 403
                assert "deliveries" not in await response.text()
            url = f"http://127.0.0.1:{worker.web_port}/v1/tenants/beta/stats?minutes=0"
            async with session.get(url, headers=beta) as response:
                assert response.status == 400


@schemathesis.serializer("application/jose")
def _jose(_context: Any, value: Any) -> bytes:
    """A JWS in compact form is plain text; schemathesis sends whatever string it generated."""
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def test_every_answer_keeps_to_the_openapi_description(web_worker: Worker) -> None:
    """schemathesis against the live worker's /openapi.json: generated valid and invalid
    requests (admin token; its own checks also send none) must get documented statuses,
    content types and bodies, and no 5xx. The SSE view never ends a response, so it is left to
    the stream tests above."""
    base = f"http://127.0.0.1:{web_worker.web_port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(
        path="/v1/tenants/{tenant}/events"
    )
    # the token is ours to send: generated cases must not count a stripped one as "invalid"
    schema.config.generation.update(with_security_parameters=False)
    headers = {"Authorization": f"Bearer {token(['/streamapp/admins', '/alpha'])}"}
    calls: list[tuple[str, str, int]] = []
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the description has an operation that is invalid"
    # Each operation gets its own examples (one strategy over all of them could leave one
    # out by chance), positive and negative.
    for operation in operations:
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        )
        @given(case=strategy)
        def conforms(case: Any) -> None:
            # a generated JWS never carries an admin's signature: 422 is the right answer
            excluded = [positive_data_acceptance] if case.path == "/v1/admin/updates" else []
            response = case.call_and_validate(
                base_url=base, headers=headers, excluded_checks=excluded, timeout=10
            )
            calls.append((case.method, case.path, response.status_code))

        conforms()
    seen = {(method, path) for method, path, _ in calls}
    # every documented operation was exercised, and answered with success at least once
    assert len(seen) == len(operations), seen
    # (/openapi.json itself was fetched above to load the description)
    assert {path for _, path, status in calls if status < 300} >= {
        "/health",
        "/v1/tenants/{tenant}/stats",
        "/v1/tenants/{tenant}/datasets",
        "/v1/admin/overview",
    }, calls


def scrape(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse /metrics with prometheus-client's own parser: (sample name, labels) -> value."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_show_consumer_lag_while_behind_and_none_after(
    bootstrap: str, topics: TopicNames, web_worker: Worker
) -> None:
    """4,000 records land faster than the worker reads them: the scraped lag of whatever reads
    the raw topics (faust's agents, or the batch-wise ingest: the default) is above zero while
    it catches up and back to zero once every event is delivered."""

    def lag(samples: dict[Any, float]) -> float:
        return sum(
            samples[("streamapp_consumer_lag", (("consumer", reader),))]
            for reader in ("agents", "ingest")
        )

    delivered = ("streamapp_deliveries_total", ())
    before = scrape(web_worker)
    assert lag(before) == 0
    await produce(bootstrap, topics.dcache, writes("alpha", 0, 4000))
    highest, deadline = 0.0, time.monotonic() + 120
    while True:
        samples = await asyncio.to_thread(scrape, web_worker)
        highest = max(highest, lag(samples))
        if samples[delivered] - before[delivered] >= 4000 and lag(samples) == 0:
            break
        assert time.monotonic() < deadline, samples
        await asyncio.sleep(0.05)
    assert highest > 0
    assert ("streamapp_consumer_lag", (("consumer", "sink"),)) in samples


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_client_that_reads_nothing_cannot_fill_the_workers_memory(
    bootstrap: str, topics: TopicNames, web_worker: Worker
) -> None:
    """80 MB of alpha's events wait in its topic; a client asks for all of them and never
    reads. The worker holds only what the socket and one fetch take (RSS grows by far less
    than the backlog), and drops the client once it has taken nothing for the write timeout
    (4 s here), saying so in its log."""
    assert web_worker.process is not None
    await produce(bootstrap, topics.dcache, writes("alpha", 0, 1))  # the topic, as workers make it
    headers = {"Authorization": f"Bearer {token(['/alpha'])}"}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{web_worker.web_port}/v1/tenants/alpha/events?from=beginning"
        first, _ = await read_sse(session, url, headers, count=1, timeout=60)
    assert len(first) == 1
    filler = b"x" * 3800
    backlog = [
        orjson.dumps(
            {
                "type": "storage.object.created",
                "subject": f"/data/alpha/b{n}",
                "pad": filler.decode(),
            }
        )
        for n in range(20_000)
    ]
    await produce(bootstrap, topics.tenant("alpha"), backlog)
    baseline = rss_bytes(web_worker.process.pid)

    reader, writer = await asyncio.open_connection("127.0.0.1", web_worker.web_port, limit=4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        b"GET /v1/tenants/alpha/events?from=beginning HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        + f"Authorization: {headers['Authorization']}\r\n".encode()
        + b"Accept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    reader._transport.pause_reading()  # type: ignore[attr-defined] # take nothing more
    peak = baseline
    started = time.monotonic()
    while time.monotonic() - started < 8:
        peak = max(peak, rss_bytes(web_worker.process.pid))
        await asyncio.sleep(0.2)
    backlog_bytes = sum(len(v) for v in backlog)
    print(f"worker RSS grew {(peak - baseline) / 1e6:.1f} MB; backlog {backlog_bytes / 1e6:.0f} MB")
    assert peak - baseline < backlog_bytes / 4, (peak - baseline, backlog_bytes)
    assert "SSE client of alpha took nothing for 4 s: dropped" in web_worker.log_path.read_text()
    # the worker reset the connection, discarding what the kernel still held for the client
    reader._transport.resume_reading()  # type: ignore[attr-defined]
    received = 0
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += len(chunk)
    except ConnectionResetError:
        pass
    writer.close()
    assert received < backlog_bytes / 4


ROUTES_OF_THE_WORKER = """
import orjson
from streamapp.app import app
app.discover()
web = app.web
web.init_server()  # what a worker does when its web server starts: faust's blueprints, ours
print(orjson.dumps([
    [route.method, route.resource.canonical]
    for route in web.web_app.router.routes()
    if route.resource is not None
]).decode())
"""


async def test_every_route_but_the_public_ones_needs_a_token(
    stack: Stack, web_worker: Worker
) -> None:
    """Deny by default: walk every route the worker's aiohttp router holds (faust's own views
    included, whatever a later version or a new view adds) and ask each without a token —
    only /health, /metrics, /openapi.json and /ui answer; faust's own views want an admin."""
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", ROUTES_OF_THE_WORKER],
        env={**stack.env, **web_worker.env},
        capture_output=True,
        timeout=120,
        check=True,
    )
    routes = {(method, path) for method, path in orjson.loads(listed.stdout.splitlines()[-1])}
    paths = {path for _, path in routes}
    assert "/router/" in paths  # faust's routing views are there: the walk sees faust's routes
    assert "/v1/tenants/{tenant}/stats" in paths
    public = {"/health", "/metrics", "/openapi.json", "/ui"}
    base = f"http://127.0.0.1:{web_worker.web_port}"
    alpha = {"Authorization": f"Bearer {token(['/alpha'])}"}
    checked = 0
    async with aiohttp.ClientSession() as session:
        for method, pattern in sorted(routes):
            if method == "HEAD" or pattern in public:
                continue
            path = re.sub(r"\{[^}]+\}", "alpha", pattern)
            async with session.request(
                method, base + path, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                assert response.status == 401, (method, pattern, response.status)
                assert response.headers["Content-Type"] == "application/problem+json"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            if not pattern.startswith("/v1/"):  # faust's own: a member's token is not enough
                async with session.request(method, base + path, headers=alpha) as response:
                    assert response.status == 403, (method, pattern, response.status)
            checked += 1
        for pattern in public:
            async with session.get(base + pattern) as response:
                assert response.status in (200, 503), pattern  # /health: 503 while not ready
    assert checked >= 10, routes


async def test_hostile_requests_get_4xx_never_500(web_worker: Worker) -> None:
    """Tokens with claims of the wrong type, stream positions beyond Kafka's integers, query
    values out of type or range, oversized headers: each a 4xx, never a 500."""
    base = f"http://127.0.0.1:{web_worker.web_port}"
    alpha = {"Authorization": f"Bearer {token(['/alpha'])}"}
    async with aiohttp.ClientSession() as session:
        for hostile in ({"iat": "yesterday"}, {"iat": [1]}, {"exp": True}, {"sub": 5}):
            headers = {"Authorization": f"Bearer {token(['/alpha'], **hostile)}"}
            async with session.get(f"{base}/v1/tenants/alpha/policy", headers=headers) as response:
                assert response.status == 401, hostile
        for position in (
            "0:" + "9" * 30,
            "9" * 12 + ":0",
            "0:-1",
            "0:x",
            ",".join(["0:1"] * 2000),
        ):
            async with session.get(
                f"{base}/v1/tenants/alpha/events",
                headers={**alpha, "Last-Event-ID": position},
            ) as response:
                assert response.status == 400, (position[:40], await response.text())
        for paths in (
            "*a" * 17,  # 17 wildcards
            "a" * 257,
            ",".join(["a"] * 17),
            "raw/../x",
            "raw/a**",
        ):
            async with session.get(
                f"{base}/v1/tenants/alpha/events", params={"paths": paths}, headers=alpha
            ) as response:
                assert response.status == 400, (paths[:40], await response.text())
        # the adversarial glob is within the bounds: accepted (and matched in linear
        # time; bench/globs.py) — the stream opens
        async with session.get(
            f"{base}/v1/tenants/alpha/events",
            params={"paths": "**/*a*a*a*a*b", "from": "end"},
            headers=alpha,
            timeout=aiohttp.ClientTimeout(sock_read=5),
        ) as response:
            assert response.status == 200
        for query in ("minutes=1e9", "minutes=-1", "minutes=%D9%A3", "minutes=" + "9" * 5000):
            async with session.get(f"{base}/v1/tenants/alpha/stats?{query}", headers=alpha) as r:
                assert r.status == 400, query
        for query in ("limit=1e9", "limit=" + "9" * 5000, "limit=0"):
            url = f"{base}/v1/tenants/alpha/invocations?{query}"
            async with session.get(url, headers=alpha) as r:
                assert r.status == 400, query
        async with session.get(
            f"{base}/v1/tenants/alpha/policy", headers={**alpha, "X-Big": "x" * 70_000}
        ) as response:
            assert 400 <= response.status < 500
        async with session.get(f"{base}/v1/tenants/alpha%0A/policy", headers=alpha) as response:
            assert response.status == 404
