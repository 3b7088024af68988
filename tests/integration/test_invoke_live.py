"""The invocation sink on the live broker with real worker processes, against the OpenWhisk
test server (``testkit.openwhisk_server``), which STANDS IN FOR OPENWHISK: it cannot
run on this machine; the server follows the documented REST API (docs/formats.md §6).

Three tenants: ``alpha`` and ``beta`` each own a dataset and trigger an action on new ``.nxs``
files (alpha also on deletions, beta with blocking calls); ``gamma``'s trigger names an action
that does not exist (every call is a 404: dead letters).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamapp.admin_keys import load_private_key, sign_update
from streamapp.domain import tokens
from streamapp.domain.deadletter import HEADER_PREFIX, DeadLetterContext
from testkit.helpers import wait_until
from testkit.openwhisk_server import Action, Fault, Namespace, OpenWhiskTestServer
from tests.factories import dcache_transfer, raw
from tests.integration.conftest import (
    DCACHE_SOURCE,
    Stack,
    TopicNames,
    Worker,
    collect,
    produce,
    raw_topics_group,
    wait_drained,
    wait_group_stable,
)

pytestmark = pytest.mark.integration

KEYS = {
    "alpha": "a1b2c3d4-0000-4000-8000-00000000000a:alpha-key",
    "beta": "b1b2c3d4-0000-4000-8000-00000000000b:beta-key",
    "gamma": "c1b2c3d4-0000-4000-8000-00000000000c:gamma-key",
}
ROOTS = {"alpha": "/data/alpha/2026", "beta": "/data/beta/2026", "gamma": "/data/gamma/2026"}


@dataclass
class Sink:
    server: OpenWhiskTestServer
    env: dict[str, str]
    invocations_topic: str


def tenant_spec(name: str, url: str) -> dict[str, Any]:
    dataset = f"ds-{name}"
    spec: dict[str, Any] = {
        "tenant": name,
        "subscriptions": [{"dataset": dataset, "write": True}],
        "limits": {"concurrency": 4},
    }
    if name == "alpha":
        # tokens shorter-lived than a call may take (60 s + margin): the sink mints them afresh
        spec["token_lifetime"] = 60
        spec["triggers"] = [
            {
                "name": "reduce",
                "action": "/alpha/reduce",
                "api_host": url,
                "credentials": "alpha-ow",
                "types": ["storage.object.created"],
                "paths": ["**/*.nxs"],
                "storage_url": "https://door.desy.example:2880",
                "params": {"threads": 2},
            },
            {
                "name": "forget",
                "action": "/alpha/forget",
                "api_host": url,
                "credentials": "alpha-ow",
                "types": ["storage.object.deleted"],
            },
        ]
    elif name == "beta":
        spec["triggers"] = [
            {
                "name": "reduce",
                "action": "/beta/pkg/reduce",
                "api_host": url,
                "credentials": "beta-ow",
                "types": ["storage.object.created"],
                "paths": ["**/*.nxs"],
                "blocking": True,
                "timeout": 20,
                "retry_failed": 2,
            },
        ]
    else:
        spec["triggers"] = [
            {
                "name": "broken",
                "action": "/gamma/no-such-action",
                "api_host": url,
                "credentials": "gamma-ow",
                "types": ["storage.object.created"],
            },
        ]
    return spec


def beta_reduce(params: dict[str, Any]) -> dict[str, Any]:
    """beta's action: fails on files named "poison" (every time), succeeds on the rest."""
    path = params["event"]["subject"]
    return {"error": "cannot reduce"} if "poison" in path else {"ok": True, "path": path}


@pytest.fixture
async def sink(bootstrap: str, topics: TopicNames, stack: Stack) -> AsyncIterator[Sink]:
    server = OpenWhiskTestServer({ns: Namespace(key) for ns, key in KEYS.items()})
    for action in ("/alpha/reduce", "/alpha/forget"):
        server.action(action)
    server.action("/beta/pkg/reduce", Action(beta_reduce))
    await server.start()
    # credentials per tenant: <secrets>/openwhisk/<tenant>/<name> or the environment
    for tenant in ("alpha", "gamma"):
        (stack.secrets / "openwhisk" / tenant).mkdir(parents=True)
        (stack.secrets / "openwhisk" / tenant / f"{tenant}-ow").write_text(KEYS[tenant] + "\n")
    env = {
        **stack.env,
        "STREAMAPP_OPENWHISK_BETA__BETA_HOW": KEYS["beta"],  # the other way to hold credentials
        "STREAMAPP_OPENWHISK_ALLOWED_HOSTS": f"127.0.0.1:{server.port}",
        "STREAMAPP_INVOCATIONS_TOPIC": f"{topics.prefix}.invocations",
        "STREAMAPP_SINK_RETRY_BASE": "0.2",
        "STREAMAPP_SINK_RETRY_CAP": "2",
        "STREAMAPP_SINK_THROTTLE_BASE": "0.5",
        "STREAMAPP_SINK_THROTTLE_CAP": "4",
        "STREAMAPP_SINK_DISCOVERY_INTERVAL": "1",
        "STREAMAPP_SINK_MAX_ATTEMPTS": "40",
        "STREAMAPP_SINK_REVOKE_GRACE": "3",
    }
    stack.env.update(env)
    key = load_private_key(stack.admin_key)
    version = int(time.time() * 1000)
    datasets = [
        sign_update(
            "dataset",
            "upsert",
            f"ds-{name}",
            version=version,
            private_key=key,
            spec={
                "id": f"ds-{name}",
                "owner": name,
                "source": DCACHE_SOURCE,
                "prefixes": [root],
                "output": f"{root}/processed",
            },
        )
        for name, root in ROOTS.items()
    ]
    tenants = [
        sign_update(
            "tenant",
            "upsert",
            name,
            version=version,
            spec=tenant_spec(name, server.url),
            private_key=key,
        )
        for name in ROOTS
    ]
    await produce(bootstrap, topics.dataset_updates, [t.encode() for t in datasets])
    await produce(bootstrap, topics.tenant_updates, [t.encode() for t in tenants])
    try:
        yield Sink(server, env, f"{topics.prefix}.invocations")
    finally:
        server.release()
        await server.close()


def writes(tenant: str, count: int, start: int = 0, suffix: str = ".nxs") -> list[bytes]:
    return [
        raw(
            dcache_transfer(
                billingPath=f"{ROOTS[tenant]}/scan{n // 50}/f{n:05d}{suffix}", fileSize=1000 + n
            )
        )
        for n in range(start, start + count)
    ]


def path_of(record: bytes) -> str:
    return str(orjson.loads(record)["billingPath"])


def ready(worker: Worker) -> bool:
    samples = worker.metrics()
    return samples.get('streamapp_policy_entries{kind="tenant"}') == len(ROOTS)


def answered(server: OpenWhiskTestServer) -> str:
    """What the server answered so far (for a timed-out wait)."""
    statuses = Counter((r.namespace, r.status) for r in server.requests)
    return f"the server answered {dict(statuses)}, {len(server.succeeded())} succeeded"


async def start_workers(
    bootstrap: str, topics: TopicNames, factory: Callable[..., Worker], *names: str, **env: str
) -> list[Worker]:
    workers = [factory(name, **env).start() for name in names]
    for worker in workers:
        await wait_until(partial(ready, worker), 120, f"policies on {worker.log_path.name}")
    await wait_group_stable(bootstrap, topics.app_id, workers)
    return workers


async def drained(bootstrap: str, topics: TopicNames, *tenants: str) -> None:
    """The workers committed the raw topic, and the sink these tenants' topics, to the end:
    every record's outputs and every event's outcome are on the broker."""
    await wait_drained(
        bootstrap,
        {
            raw_topics_group(topics.app_id): [topics.dcache],
            f"{topics.app_id}-sink": [topics.tenant(t) for t in tenants],
        },
    )


def subjects(
    server: OpenWhiskTestServer, namespace: str, action: str | None = None
) -> Counter[str]:
    return Counter(
        a.params["event"]["subject"]
        for a in server.succeeded(namespace)
        if action is None or a.action == action
    )


async def invocation_records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    records = await collect(bootstrap, [topic], lambda _: False, timeout=3)
    return [orjson.loads(r.value) | {"_raw": r.value} for r in records]


async def test_every_entitled_event_invokes_exactly_its_actions(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    sink: Sink,
    worker_factory: Callable[..., Worker],
) -> None:
    """Two workers share the sink; every .nxs write in alpha's and beta's datasets runs the
    tenant's action once, nothing else runs anything, tokens open exactly the file."""
    await start_workers(bootstrap, topics, worker_factory, "w1", "w2")
    alpha, beta = writes("alpha", 150), writes("beta", 150)
    other = writes("alpha", 20, start=500, suffix=".h5") + writes(
        "beta", 20, start=500, suffix=".log"
    )
    reads = [raw(dcache_transfer(billingPath=path_of(r), isWrite="read")) for r in alpha[:10]]
    deletes = [raw(dcache_transfer(msgType="remove", billingPath=path_of(r))) for r in alpha[:5]]
    await produce(bootstrap, topics.dcache, alpha + beta + other + reads + deletes)
    server = sink.server
    await wait_until(
        lambda: len(server.succeeded()) >= len(alpha) + len(beta) + len(deletes),
        180,
        "activations",
        partial(answered, server),
    )
    await drained(bootstrap, topics, "alpha", "beta")  # nothing extra can show up after this

    assert subjects(server, "alpha", "alpha/reduce") == Counter(path_of(r) for r in alpha)
    assert subjects(server, "beta") == Counter(path_of(r) for r in beta)
    assert subjects(server, "alpha", "alpha/forget") == Counter(path_of(r) for r in deletes)
    assert all(a.blocking for a in server.succeeded("beta"))
    assert not any(a.blocking for a in server.succeeded("alpha"))

    # the body: the event (without tokens), the read/write tokens and URLs, the extra params
    now = datetime.now(UTC)
    for activation in server.succeeded("alpha")[:20]:
        params = activation.params
        if activation.action != "alpha/reduce":
            continue
        path = params["event"]["subject"]
        assert params["threads"] == 2
        assert "readtoken" not in params["event"]
        assert params["read"]["url"] == "https://door.desy.example:2880" + path
        assert tokens.verify(
            params["read"]["token"], key=stack.root_key, path=path, activity="DOWNLOAD", at=now
        ).valid
        assert not tokens.verify(
            params["read"]["token"],
            key=stack.root_key,
            path=path + "x",
            activity="DOWNLOAD",
            at=now,
        ).valid
        assert tokens.verify(
            params["write"]["token"],
            key=stack.root_key,
            path=f"{ROOTS['alpha']}/processed/r.h5",
            activity="UPLOAD",
            at=now,
        ).valid
        assert not tokens.verify(
            params["write"]["token"], key=stack.root_key, path=path, activity="UPLOAD", at=now
        ).valid

    # alpha's tokens (60 s) were too short-lived for a call of up to 60 s: renewed by the sink
    # from the same grant, so they differ from the ones on alpha's topic, and still verify
    delivered = await collect(bootstrap, [topics.tenant("alpha")], lambda _: False, timeout=3)
    topic_tokens = {orjson.loads(r.value).get("readtoken") for r in delivered} - {None}
    sent_tokens = {
        a.params["read"]["token"] for a in server.succeeded("alpha") if a.action == "alpha/reduce"
    }
    assert len(sent_tokens) == len(alpha)
    assert not (topic_tokens & sent_tokens)
    beta_topic = await collect(bootstrap, [topics.tenant("beta")], lambda _: False, timeout=3)
    beta_tokens = {orjson.loads(r.value).get("readtoken") for r in beta_topic}
    # beta's 600 s tokens go as they are
    assert {a.params["read"]["token"] for a in server.succeeded("beta")} <= beta_tokens

    # one success record per invocation, with its activation id; no token in any record
    records = await invocation_records(bootstrap, sink.invocations_topic)
    successes = [r for r in records if r["outcome"] == "success"]
    assert len(successes) == len(server.succeeded())
    assert {r["activation_id"] for r in successes} == {a.activation_id for a in server.succeeded()}
    assert all(r["status"] in (200, 202) and r["duration_ms"] is not None for r in successes)
    secret_fragments = [a.params["read"]["token"][:40] for a in server.succeeded()[:10]]
    blob = b"".join(r["_raw"] for r in records)
    assert not any(fragment.encode() in blob for fragment in secret_fragments)
    assert KEYS["alpha"].split(":")[1].encode() not in blob


async def test_outage_throttling_and_failures_lose_nothing(
    bootstrap: str, topics: TopicNames, sink: Sink, worker_factory: Callable[..., Worker]
) -> None:
    """An outage, sustained 429s, failing actions and 503s in turn: afterwards every event has
    run exactly once; the 429s were waited out (no busy loop); gamma's 404s are dead letters."""
    (worker,) = await start_workers(bootstrap, topics, worker_factory, "w1")
    server = sink.server
    # warm up: tenant topics exist and the sink consumes them
    await produce(
        bootstrap, topics.dcache, writes("alpha", 1, start=900) + writes("beta", 1, start=900)
    )
    await wait_until(lambda: len(server.succeeded()) >= 2, 120, "warm-up activations")

    batches: list[list[bytes]] = []

    async def send(count: int) -> None:
        batch = writes("alpha", count, start=1000 + 100 * len(batches)) + writes(
            "beta", count, start=1000 + 100 * len(batches)
        )
        batches.append(batch)
        await produce(bootstrap, topics.dcache, batch)

    # 1. outage: the endpoint refuses connections for 8 s while events arrive
    await server.down()
    await send(20)
    await asyncio.sleep(8)
    before_recovery = len(server.succeeded())
    await server.up()
    await wait_until(lambda: len(server.succeeded()) >= 2 + 40, 120, "invocations after the outage")
    assert before_recovery == 2

    # 2. sustained throttling: every call is a 429 for 10 s
    server.schedule(
        Fault(
            status=429,
            count=None,
            message="Too many requests in the last minute (count: 120, allowed: 120).",
        )
    )
    throttle_started = time.monotonic()
    await send(20)
    await asyncio.sleep(10)
    server.clear_faults()
    throttled = [r for r in server.requests if r.status == 429 and r.at >= throttle_started - 1]
    await wait_until(lambda: len(server.succeeded()) >= 2 + 80, 120, "invocations after throttling")

    # 3. failing actions (beta's blocking calls see them; its policy retries twice): two
    # transient failures, retried to success, and one file that fails every time (a final
    # failure, recorded); then 503s, retried with back-off
    server.schedule(Fault(status=502, count=2, namespace="beta"), Fault(status=503, count=10))
    await send(20)
    poison = raw(dcache_transfer(billingPath=f"{ROOTS['beta']}/poison.nxs", fileSize=5))
    await produce(bootstrap, topics.dcache, [poison])
    await wait_until(
        lambda: len(server.succeeded()) >= 2 + 120 and len(server.activations) >= 2 + 120 + 5,
        120,
        "invocations after errors",
        partial(answered, server),
    )

    # 4. gamma's action does not exist: dead letters at once, with reason and attempt count
    gamma = writes("gamma", 5)
    await produce(bootstrap, topics.dcache, gamma)
    letters = await collect(
        bootstrap, [topics.deadletter], lambda r: len(r) >= len(gamma), timeout=60
    )
    await drained(bootstrap, topics, "alpha", "beta", "gamma")

    expected = Counter(path_of(r) for batch in batches for r in batch)
    got = subjects(server, "alpha") + subjects(server, "beta")
    for path in expected:
        assert got[path] == 1, (path, got[path])
    failed = Counter(a.params["event"]["subject"] for a in server.activations if not a.success)
    failed_path = path_of(poison)
    assert failed.pop(failed_path) == 3  # tried, then retried twice as beta's policy says
    assert got[failed_path] == 0
    assert sum(failed.values()) == 2
    assert all(got[path] == 1 for path in failed)  # the transient failures were retried
    print(
        f"429 answers during 10 s of throttling: {len(throttled)} "
        f"(calls spaced by the lane's back-off; a busy loop would make thousands)"
    )
    assert len(throttled) <= 40, len(throttled)
    assert len(throttled) >= 2
    invoke_letters = [
        r for r in letters if DeadLetterContext.from_headers(r.headers).stage == "invoke"
    ]
    # the dead letter is the record the sink consumed (gamma's authorized event) without tokens
    assert sorted(orjson.loads(r.value)["subject"] for r in invoke_letters) == sorted(
        path_of(r) for r in gamma
    )
    assert all(orjson.loads(r.value)["tenant"] == "gamma" for r in invoke_letters)
    for letter in invoke_letters:
        value = orjson.loads(letter.value)
        assert "readtoken" not in value
        assert "writetoken" not in value
        assert value["writepath"]  # the rest of the event is kept
        assert dict(letter.headers)[HEADER_PREFIX + "tokens"] == b"stripped"
    for letter in invoke_letters:
        context = DeadLetterContext.from_headers(letter.headers)
        headers = dict(letter.headers)
        assert "404" in context.reason
        assert headers[HEADER_PREFIX + "attempts"] == b"1"
        assert headers[HEADER_PREFIX + "trigger"] == b"broken"
    records = await invocation_records(bootstrap, sink.invocations_topic)
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["unreachable"] >= 1
    assert outcomes["throttled"] == len(throttled)
    assert outcomes["action_failed"] == 5
    final_failures = [r for r in records if r["outcome"] == "action_failed" and r["final"]]
    assert [r["subject"] for r in final_failures] == [failed_path]
    assert outcomes["retryable"] >= 1
    assert outcomes["success"] == len(server.succeeded())
    samples = worker.metrics()
    assert samples['streamapp_invocations_total{outcome="dead_lettered"}'] == len(gamma)


async def test_sigkill_during_invocations_loses_nothing(
    bootstrap: str, topics: TopicNames, sink: Sink, worker_factory: Callable[..., Worker]
) -> None:
    """Kill the only worker while it invokes; a new worker (empty data directory) takes over.
    No event is lost; an event runs twice only if no success record of it had been written."""
    server = sink.server
    for namespace in server.namespaces.values():
        namespace.latency_s = 0.03
    first = worker_factory("w1").start()
    await wait_until(partial(ready, first), 120, "policies")
    events = writes("alpha", 400) + writes("beta", 400)
    await produce(bootstrap, topics.dcache, events)
    await wait_until(lambda: len(server.succeeded()) >= 150, 120, "invocations under way")
    first.kill()
    killed_at = len(server.succeeded())
    assert killed_at < len(events), "the worker finished before it could be killed"
    second = worker_factory("w2").start()
    await wait_until(
        lambda: len({a.params["event"]["subject"] for a in server.succeeded()}) >= len(events),
        240,
        "every event invoked",
    )
    await drained(bootstrap, topics, "alpha", "beta")

    got = subjects(server, "alpha") + subjects(server, "beta")
    assert set(got) == {path_of(r) for r in events}  # none lost
    records = await invocation_records(bootstrap, sink.invocations_topic)
    success_by_activation = {r["activation_id"]: r for r in records if r["outcome"] == "success"}
    per_key = Counter(
        (r["tenant"], r["trigger"], r["event_id"]) for r in success_by_activation.values()
    )
    assert max(per_key.values()) == 1, "an event ran again although its success was recorded"
    duplicated = {path for path, n in got.items() if n > 1}
    by_path: dict[str, list[str]] = defaultdict(list)
    for activation in server.succeeded():
        by_path[activation.params["event"]["subject"]].append(activation.activation_id)
    for path in duplicated:
        recorded = [a for a in by_path[path] if a in success_by_activation]
        assert len(recorded) <= 1, path
        # the first run of a duplicated event has no success record: it died with the worker
        assert by_path[path][0] not in success_by_activation or len(recorded) == 1
    print(
        f"SIGKILL after {killed_at} of {len(events)} invocations: {len(duplicated)} ran twice "
        f"(invoked, then killed before the success record), 0 lost"
    )
    assert second.alive()


async def test_a_hanging_tenant_does_not_delay_the_others(
    bootstrap: str, topics: TopicNames, sink: Sink, worker_factory: Callable[..., Worker]
) -> None:
    """alpha's endpoint hangs (requests never answered, the client gives up after 30 s); beta's
    invocations go on: each within 5 s of its event being produced (the stated bound; typically
    under 0.1 s), while alpha's topic is paused. A shared queue would hold beta for ≥ 30 s."""
    (worker,) = await start_workers(
        bootstrap, topics, worker_factory, "w1", STREAMAPP_SINK_MAX_PENDING="30"
    )
    server = sink.server
    await produce(
        bootstrap, topics.dcache, writes("alpha", 1, start=900) + writes("beta", 1, start=900)
    )
    await wait_until(lambda: len(server.succeeded()) >= 2, 120, "warm-up activations")

    server.schedule(Fault(hang=True, count=None, namespace="alpha"))
    await produce(bootstrap, topics.dcache, writes("alpha", 80))
    produced_at: dict[str, float] = {}
    for n in range(40):
        record = writes("beta", 1, start=n)
        produced_at[path_of(record[0])] = time.time()
        await produce(bootstrap, topics.dcache, record)
        await asyncio.sleep(0.1)
    await wait_until(lambda: len(server.succeeded("beta")) >= 41, 60, "beta's invocations")
    latencies = sorted(
        a.wall - produced_at[a.params["event"]["subject"]]
        for a in server.succeeded("beta")
        if a.params["event"]["subject"] in produced_at
    )
    assert len(latencies) == 40
    print(f"beta while alpha hangs: p50 {latencies[20]:.3f} s, max {latencies[-1]:.3f} s")
    assert latencies[-1] < 5.0
    assert len(server.succeeded("alpha")) == 1  # alpha's calls are all hanging
    # alpha's backlog (80 records, 30 allowed unfinished) paused only alpha's topic
    assert worker.metrics().get("streamapp_sink_paused_partitions", 0) >= 1
    server.clear_faults()  # the endpoint answers again: alpha's backlog runs
    await wait_until(lambda: len(server.succeeded("alpha")) >= 81, 120, "alpha after the hang")
    assert subjects(server, "alpha") == Counter(
        [path_of(r) for r in writes("alpha", 80)] + [path_of(writes("alpha", 1, start=900)[0])]
    )


HOSTILE_ROOTS = {name: f"/data/{name}/2026" for name in ("delta", "epsilon", "noisy", "zeta")}
NOISY_KEY = "d1b2c3d4-0000-4000-8000-00000000000d:noisy-key"
EPSILON_KEY = "e1b2c3d4-0000-4000-8000-00000000000e:epsilon-key"


def hostile_specs(url: str, elsewhere: str) -> dict[str, dict[str, Any]]:
    """delta names alpha's and beta's credentials (by their names: "alpha-ow", "beta-ow");
    epsilon's host is allowed when applied, not later; noisy's action answers garbage;
    zeta points at the metadata address; eta names a credential as another tenant's path."""

    def spec(name: str, *triggers: dict[str, Any]) -> dict[str, Any]:
        base = {"types": ["storage.object.created"], "api_host": url}
        return {
            "tenant": name,
            "subscriptions": [{"dataset": f"ds-{name}", "write": True}],
            "triggers": [base | t for t in triggers],
        }

    return {
        "delta": spec(
            "delta",
            {"name": "steal-file", "action": "/alpha/forget", "credentials": "alpha-ow"},
            {"name": "steal-env", "action": "/beta/pkg/reduce", "credentials": "beta-ow"},
        ),
        "epsilon": spec(
            "epsilon",
            {"name": "r", "action": "/epsilon/r", "credentials": "own", "api_host": elsewhere},
        ),
        "noisy": spec("noisy", {"name": "r", "action": "/noisy/r", "credentials": "noisy-ow"}),
        "zeta": spec(
            "zeta",
            {
                "name": "r",
                "action": "/zeta/r",
                "credentials": "zeta-ow",
                "api_host": "http://169.254.169.254",
            },
        ),
        "eta": spec("eta", {"name": "r", "action": "/eta/r", "credentials": "alpha/alpha-ow"})
        | {"subscriptions": []},
    }


def hostile_writes(tenant: str, count: int) -> list[bytes]:
    return [
        raw(dcache_transfer(billingPath=f"{HOSTILE_ROOTS[tenant]}/f{n}.nxs", fileSize=10 + n))
        for n in range(count)
    ]


def sink_letters(records: list[Any]) -> list[Any]:
    return [r for r in records if DeadLetterContext.from_headers(r.headers).stage == "invoke"]


async def test_hostile_policies_answers_and_records_cannot_reach_across_or_stop_the_sink(
    bootstrap: str,
    topics: TopicNames,
    stack: Stack,
    sink: Sink,
    worker_factory: Callable[..., Worker],
) -> None:
    """Tenant A naming B's credential gets "unknown credential" at the worker, and B's key is
    never sent; a policy naming another tenant's credential path or a host outside the
    allow-list is refused when applied, and a host taken off the list later is refused at call
    time (nothing sent); an action answering 200 KB with control characters leaves a bounded,
    clean excerpt; poison records on a tenant topic are dead-lettered (without tokens) and the
    valid records after them invoked."""
    server = sink.server
    server.namespaces["noisy"] = Namespace(NOISY_KEY)
    garbage = "\x1b[2J\x00evil\r\nAuthorization: Basic " + "QUJD" * 30 + "\u202e" + "x" * 200_000
    server.schedule(
        Fault(status=400, count=None, namespace="noisy", body=orjson.dumps({"error": garbage}))
    )
    elsewhere = OpenWhiskTestServer({"epsilon": Namespace(EPSILON_KEY)})
    elsewhere.action("/epsilon/r")
    await elsewhere.start()
    for tenant, key in (("noisy", NOISY_KEY), ("epsilon", EPSILON_KEY)):
        (stack.secrets / "openwhisk" / tenant).mkdir(parents=True)
        name = "own" if tenant == "epsilon" else f"{tenant}-ow"
        (stack.secrets / "openwhisk" / tenant / name).write_text(key + "\n")
    signer = load_private_key(stack.admin_key)
    version = int(time.time() * 1000) + 1
    specs = hostile_specs(server.url, elsewhere.url)
    updates = [
        sign_update(
            "dataset",
            "upsert",
            f"ds-{name}",
            version=version,
            private_key=signer,
            spec={
                "id": f"ds-{name}",
                "owner": name,
                "source": DCACHE_SOURCE,
                "prefixes": [root],
                "output": f"{root}/processed",
            },
        )
        for name, root in HOSTILE_ROOTS.items()
    ]
    await produce(bootstrap, topics.dataset_updates, [u.encode() for u in updates])
    tenant_updates = {
        name: sign_update(
            "tenant", "upsert", name, version=version, spec=spec, private_key=signer
        ).encode()
        for name, spec in specs.items()
    }
    await produce(bootstrap, topics.tenant_updates, tenant_updates.values())
    both = f"127.0.0.1:{server.port},127.0.0.1:{elsewhere.port}"
    try:
        first = worker_factory("w1", STREAMAPP_OPENWHISK_ALLOWED_HOSTS=both).start()
        await wait_until(
            lambda: first.metrics().get('streamapp_policy_entries{kind="tenant"}') == 6,
            120,
            "alpha, beta, gamma, delta, epsilon and noisy applied",
        )

        # refused when applied: zeta's host, eta's credential path; with their reasons
        audit = await collect(
            bootstrap,
            [topics.audit],
            lambda r: set(tenant_updates.values()) <= {x.value for x in r},
            timeout=30,
        )
        verdicts = {r.value: dict(r.headers) for r in audit if r.value in tenant_updates.values()}
        refused = {
            name: verdicts[value]["streamapp.update.reason"].decode()
            for name, value in tenant_updates.items()
            if verdicts[value]["streamapp.update.verdict"] == b"refused"
        }
        assert set(refused) == {"zeta", "eta"}, refused
        assert "169.254.169.254 is not among the allowed OpenWhisk hosts" in refused["zeta"]
        assert "triggers[0].credentials" in refused["eta"]

        # poison on alpha's topic (both partitions), then valid alpha events
        await produce(bootstrap, topics.dcache, writes("alpha", 1, start=700))
        await wait_until(lambda: len(server.succeeded("alpha")) >= 1, 120, "alpha's topic")
        secret = "SECRET-TOKEN-" + "z" * 40
        poison = [
            b"\xff not json",
            orjson.dumps({"tenant": "alpha", "readtoken": secret, "id": 5}),
            b'{"tenant": "alpha", "writetoken": "' + secret.encode() + b'", broken',
            b"[" * 100_000 + b"]" * 100_000,
            orjson.dumps({"tenant": "beta", "id": "x"}),
        ]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for partition in (0, 1):
                for value in poison:
                    await producer.send_and_wait(topics.tenant("alpha"), value, partition=partition)
        finally:
            await producer.stop()
        valid = writes("alpha", 8, start=710)
        await produce(
            bootstrap,
            topics.dcache,
            valid + hostile_writes("delta", 2) + hostile_writes("noisy", 2),
        )
        await wait_until(
            lambda: subjects(server, "alpha", "alpha/reduce") >= Counter(path_of(r) for r in valid),
            120,
            "the valid alpha events after the poison",
            partial(answered, server),
        )
        letters = await collect(
            bootstrap,
            [topics.deadletter],
            lambda r: len(sink_letters(r)) >= 2 * len(poison) + 4 + 2,
            timeout=60,
        )
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for letter in sink_letters(letters):
            by_topic[DeadLetterContext.from_headers(letter.headers).topic].append(letter)
        # every poison record dead-lettered, with a reason, never with a token
        assert len(by_topic[topics.tenant("alpha")]) == 2 * len(poison)
        for letter in sink_letters(letters):
            assert secret.encode() not in letter.value
            assert b"readtoken" not in letter.value or b'"[stripped]"' in letter.value
            assert DeadLetterContext.from_headers(letter.headers).reason
        # delta: alpha's and beta's credential names resolve only among delta's: unknown
        delta = by_topic[topics.tenant("delta")]
        assert len(delta) == 4
        for letter in delta:
            reason = DeadLetterContext.from_headers(letter.headers).reason
            assert reason.startswith("unknown credential '"), reason
            assert "of tenant 'delta'" in reason
        assert not [path for path, _ in server.received if path.endswith("/alpha/forget")]
        assert KEYS["beta"] not in {key for _, key in server.received}
        # noisy: the answer kept only as a bounded, clean excerpt
        noisy = by_topic[topics.tenant("noisy")]
        assert len(noisy) == 2
        records = [
            r
            for r in await invocation_records(bootstrap, sink.invocations_topic)
            if r["tenant"] == "noisy"
        ]
        assert len(records) == 2
        reasons = [r["reason"] for r in records] + [
            DeadLetterContext.from_headers(letter.headers).reason for letter in noisy
        ]
        for reason in reasons:
            assert reason.startswith("HTTP 400: ")
            assert len(reason) <= 256
            assert reason.isprintable()
            assert "QUJD" * 16 not in reason
            assert "Basic" not in reason
        for record in await invocation_records(bootstrap, sink.invocations_topic):
            assert b"readtoken" not in record["_raw"]
            assert b"writetoken" not in record["_raw"]

        # epsilon's host taken off the list: dead letters at call time, nothing sent there
        first.stop()
        second = worker_factory(
            "w2", STREAMAPP_OPENWHISK_ALLOWED_HOSTS=f"127.0.0.1:{server.port}"
        ).start()
        await wait_until(partial(ready_with, second, 6), 120, "policies on w2")
        await produce(bootstrap, topics.dcache, hostile_writes("epsilon", 2))
        letters = await collect(
            bootstrap,
            [topics.deadletter],
            lambda r: (
                sum(
                    DeadLetterContext.from_headers(x.headers).topic == topics.tenant("epsilon")
                    for x in r
                )
                >= 2
            ),
            timeout=90,
        )
        epsilon = [
            letter
            for letter in letters
            if DeadLetterContext.from_headers(letter.headers).topic == topics.tenant("epsilon")
        ]
        for letter in epsilon:
            reason = DeadLetterContext.from_headers(letter.headers).reason
            assert reason == f"api_host not allowed: {elsewhere.url}", reason
            assert b"readtoken" not in letter.value
        assert not elsewhere.received
    finally:
        await elsewhere.close()


def ready_with(worker: Worker, tenants: int) -> bool:
    return worker.metrics().get('streamapp_policy_entries{kind="tenant"}') == tenants
