"""Triggers in tenant policies, the invocation body, judging OpenWhisk answers, back-off, the
offset ledger and tenant lanes (no network)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from streamapp.admin_keys import sign_update
from streamapp.clients.openwhisk import Credentials, CredentialsMissingError
from streamapp.domain.allowed_hosts import AllowedHosts, disallowed_hosts
from streamapp.domain.backoff import equal_jitter_delay
from streamapp.domain.invocations import (
    MAX_PARAMETER_BYTES,
    Outcome,
    Throttle,
    idempotency_key,
    invocation_params,
    judge,
    parse_throttle,
    tokens_expire_during_call,
)
from streamapp.domain.ledger import PartitionLedger
from streamapp.domain.policy import parse_tenant
from streamapp.domain.policy_fields import PolicyError
from streamapp.domain.redaction import EXCERPT_CHARS, excerpt, strip_tokens
from streamapp.domain.triggers import ActionRef, Limits, matching_triggers
from streamapp.domain.updates import KeyRing, UpdateRefusedError, verify_update
from streamapp.seed import SeedError, load_seed
from streamapp.settings import Settings, SettingsError
from streamapp.sink.lanes import TenantLane

NAMES = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True)

TRIGGER = {
    "name": "reduce",
    "action": "/p02/reduction/summary",
    "api_host": "https://openwhisk.desy.example",
    "credentials": "p02-openwhisk",
}


def tenant(**extra: Any) -> Any:
    spec = {
        "tenant": "p02",
        "subscriptions": [{"dataset": "raw", "write": True}, {"dataset": "calib"}],
        **extra,
    }
    return parse_tenant(spec)


def event(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": "dcache://dcache.desy.example",
        "type": "storage.object.created",
        "subject": "/data/p02/raw/scan 1/f.nxs",
        "time": "2026-11-26T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"path": "/data/p02/raw/scan 1/f.nxs", "size": 10},
        "tenant": "p02",
        "dataset": "raw",
        "readtoken": "READ-SECRET",
        "writetoken": "WRITE-SECRET",
        "writepath": "/data/p02/processed",
        "tokenexpires": "2026-11-26T10:10:00Z",
        **extra,
    }


# --- policy ------------------------------------------------------------------------------------


def test_triggers_and_limits_parse_with_defaults() -> None:
    policy = tenant(
        triggers=[{**TRIGGER, "types": ["storage.object.created"], "paths": ["**/*.nxs"]}],
        limits={"concurrency": 3, "rate_per_minute": 90},
    )
    (trigger,) = policy.triggers
    assert trigger.action == ActionRef("p02", "reduction", "summary")
    assert trigger.action.path == "/api/v1/namespaces/p02/actions/reduction/summary"
    assert not trigger.blocking
    assert trigger.timeout_s == 60
    assert policy.limits == Limits(concurrency=3, rate_per_minute=90)
    assert tenant().limits == Limits()
    assert policy.canonical()["triggers"][0]["credentials"] == "p02-openwhisk"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"action": "p02/summary"}, "triggers[0].action"),
        ({"action": "/p02/a/b/c"}, "triggers[0].action"),
        ({"api_host": "ftp://ow.example"}, "triggers[0].api_host"),
        ({"api_host": "https://user:pw@ow.example"}, "triggers[0].api_host"),
        (
            {"credentials": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2"},
            "triggers[0].credentials",
        ),
        ({"types": ["storage.object.exploded"]}, "triggers[0].types"),
        ({"paths": ["a/**b"]}, "triggers[0].paths[0]"),
        ({"params": {"read": "x"}}, "triggers[0].params.read"),
        ({"blocking": "yes"}, "triggers[0].blocking"),
        ({"timeout": 0}, "triggers[0].timeout"),
        ({"datasets": ["someone-elses"]}, "triggers[0].datasets"),
        ({"token": "x"}, "triggers[0].token"),
        # credentials are the tenant's own: never a path, another tenant's, or with a newline
        ({"credentials": "other-tenant/their-key"}, "triggers[0].credentials"),
        ({"credentials": "../other-tenant/their-key"}, "triggers[0].credentials"),
        ({"credentials": "..\\their-key"}, "triggers[0].credentials"),
        ({"credentials": "p02-openwhisk\n"}, "triggers[0].credentials"),
        ({"credentials": ".."}, "triggers[0].credentials"),
        ({"name": "reduce\n"}, "triggers[0].name"),
        ({"action": "/p02/summary\n"}, "triggers[0].action"),
    ],
)
def test_bad_triggers_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as error:
        tenant(triggers=[{**TRIGGER, **change}])
    assert error.value.field == field


def test_trigger_names_are_unique_and_limits_are_checked() -> None:
    with pytest.raises(PolicyError, match="appears twice"):
        tenant(triggers=[TRIGGER, TRIGGER])
    with pytest.raises(PolicyError) as error:
        tenant(limits={"concurrency": 0})
    assert error.value.field == "limits.concurrency"


def test_matching_only_narrows() -> None:
    policy = tenant(
        triggers=[
            {**TRIGGER, "name": "all"},
            {**TRIGGER, "name": "nexus", "paths": ["**/*.nxs"]},
            {**TRIGGER, "name": "calib-only", "datasets": ["calib"]},
            {**TRIGGER, "name": "deletes", "types": ["storage.object.deleted"]},
        ]
    )
    names = [t.name for t in matching_triggers(policy.triggers, event(), "scan 1/f.nxs")]
    assert names == ["all", "nexus"]
    names = [t.name for t in matching_triggers(policy.triggers, event(), "scan 1/f.h5")]
    assert names == ["all"]
    deleted = event(type="storage.object.deleted", dataset="calib")
    names = [t.name for t in matching_triggers(policy.triggers, deleted, "x")]
    assert names == ["all", "calib-only", "deletes"]


def test_params_carry_references_and_tokens_but_no_token_inside_the_event() -> None:
    (trigger,) = tenant(
        triggers=[{**TRIGGER, "storage_url": "https://door.desy.example:2880", "params": {"n": 4}}]
    ).triggers
    params = invocation_params(event(), trigger, "p02")
    assert params["n"] == 4
    assert params["read"] == {
        "path": "/data/p02/raw/scan 1/f.nxs",
        "token": "READ-SECRET",
        "url": "https://door.desy.example:2880/data/p02/raw/scan%201/f.nxs",
    }
    assert params["write"]["token"] == "WRITE-SECRET"
    assert params["write"]["url"] == "https://door.desy.example:2880/data/p02/processed"
    assert "SECRET" not in orjson.dumps(params["event"]).decode()
    assert params["streamapp"]["trigger"] == "reduce"
    assert len(orjson.dumps(params)) < MAX_PARAMETER_BYTES


def test_tokens_are_renewed_only_when_they_would_expire_during_the_call() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert not tokens_expire_during_call("2026-11-26T10:10:00Z", now, 60)
    assert tokens_expire_during_call("2026-11-26T10:01:20Z", now, 60)  # < 60 s + margin left
    assert tokens_expire_during_call("2026-11-26T09:59:00Z", now, 60)  # already expired
    assert not tokens_expire_during_call(None, now, 60)  # a deletion carries no tokens
    assert tokens_expire_during_call("not a time", now, 60)


def test_idempotency_key_separates_tenants_and_triggers() -> None:
    keys = {idempotency_key(t, "e-1", r) for t in ("a", "b") for r in ("x", "y")}
    assert len(keys) == 4


# --- judging answers ---------------------------------------------------------------------------


def activation(success: bool, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "activationId": "abc",
        "response": {
            "status": "success" if success else "application error",
            "success": success,
            "result": result,
        },
    }


@pytest.mark.parametrize(
    ("status", "body", "blocking", "outcome"),
    [
        (202, {"activationId": "abc"}, False, Outcome.SUCCESS),
        (202, {"activationId": "abc"}, True, Outcome.SUCCESS),  # blocking past the wait
        (200, activation(True, {"ok": 1}), True, Outcome.SUCCESS),
        (200, activation(False, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (200, activation(True, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (200, {"error": "boom"}, True, Outcome.ACTION_FAILED),  # result=true
        (502, activation(False, {"error": "boom"}), True, Outcome.ACTION_FAILED),
        (
            429,
            {"error": "Too many requests in the last minute (count: 9, allowed: 8)."},
            False,
            Outcome.THROTTLED,
        ),
        (500, {"error": "Internal"}, False, Outcome.RETRYABLE),
        (503, None, False, Outcome.RETRYABLE),
        (408, None, False, Outcome.RETRYABLE),
        (409, None, False, Outcome.RETRYABLE),
        (400, {"error": "malformed"}, False, Outcome.REJECTED),
        (401, {"error": "The supplied authentication is invalid."}, False, Outcome.REJECTED),
        (403, None, False, Outcome.REJECTED),
        (404, {"error": "The requested resource does not exist."}, False, Outcome.REJECTED),
        (413, None, False, Outcome.REJECTED),
    ],
)
def test_judge(status: int, body: Any, blocking: bool, outcome: Outcome) -> None:
    verdict = judge(status, body, blocking)
    assert verdict.outcome is outcome
    if isinstance(body, dict) and "activationId" in body:
        assert verdict.activation_id == "abc"


def test_throttle_messages_name_the_limit() -> None:
    assert parse_throttle(
        "Too many requests in the last minute (count: 121, allowed: 120)."
    ) == Throttle("rate", 120)
    assert parse_throttle(
        "throttled: Too many concurrent requests in flight (count: 100, allowed: 100)."
    ) == Throttle("concurrency", 100)
    assert parse_throttle("slow down") == Throttle("unknown")


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=2**32))
def test_backoff_grows_and_stays_under_the_cap(attempt: int, seed: int) -> None:
    """domain/backoff.py: the one back-off of the sink and the dCache bridge."""
    delay = equal_jitter_delay(attempt, 0.5, 30.0, random.Random(seed))
    ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay <= ceiling


# --- the offset ledger -------------------------------------------------------------------------


def test_ledger_commits_only_below_the_oldest_record_in_flight() -> None:
    ledger = PartitionLedger()
    assert ledger.committable() is None
    for offset in (10, 11, 12, 13):
        ledger.received(offset)
    ledger.finished(11)
    ledger.finished(13)
    assert ledger.committable() == 10  # 10 still in flight: nothing past it
    ledger.committed = 10
    assert ledger.committable() is None
    ledger.finished(10)
    assert ledger.committable() == 12
    ledger.finished(12)
    assert ledger.committable() == 14


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_ledger_never_passes_an_unfinished_record(order: list[int], finished_count: int) -> None:
    ledger = PartitionLedger()
    for offset in range(30):
        ledger.received(offset)
    finished = set(order[:finished_count])
    for offset in order[:finished_count]:
        ledger.finished(offset)
    commit = ledger.committable()
    unfinished = set(range(30)) - finished
    if unfinished:
        assert commit == min(unfinished)
    else:
        assert commit == 30
    assert all(offset in finished for offset in range(commit or 0))


# --- tenant lanes ------------------------------------------------------------------------------


async def test_lane_caps_concurrency() -> None:
    lane = TenantLane("t", Limits(concurrency=3))
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with lane.slot():
            peak = max(peak, lane.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(call() for _ in range(20)))
    assert peak == 3
    assert lane.in_flight == 0


async def test_lane_paces_its_rate() -> None:
    lane = TenantLane("t", Limits(concurrency=10, rate_per_minute=1200))  # one per 50 ms
    starts: list[float] = []

    async def call() -> None:
        async with lane.slot():
            starts.append(time.monotonic())

    await asyncio.gather(*(call() for _ in range(5)))
    gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), gaps


async def test_a_throttled_lane_pauses_halves_and_recovers() -> None:
    lane = TenantLane(
        "t", Limits(concurrency=8), throttle_base_s=0.2, throttle_cap_s=1.0, rng=random.Random(1)
    )
    pause = await lane.throttled(Throttle("rate", 120))
    assert 0.1 <= pause <= 0.2
    assert lane.limit == 4
    started = time.monotonic()
    async with lane.slot():
        waited = time.monotonic() - started
    assert waited >= pause - 0.02
    second = await lane.throttled(Throttle("concurrency", 2))
    assert 0.2 <= second <= 0.4  # consecutive 429s back off further
    assert lane.limit == 1
    for _ in range(10):
        await lane.succeeded()
    assert lane.limit == 2
    assert lane.consecutive_throttles == 0


# --- credentials per tenant, the api_host allow-list, excerpts, token-free dead letters ------


def test_a_credential_name_resolves_only_among_its_tenants(tmp_path: Path) -> None:
    """alpha naming beta's credential ("b-key") finds nothing: not beta's file, not beta's
    variable; its own of the same name is found, in its own directory."""
    (tmp_path / "openwhisk" / "beta").mkdir(parents=True)
    (tmp_path / "openwhisk" / "beta" / "b-key").write_text("u-beta:BETA-SECRET\n")
    env = {Credentials.env_name("beta", "b-env"): "u-beta:BETA-ENV-SECRET"}
    credentials = Credentials(tmp_path, env=env)
    assert credentials.authorization("beta", "b-key").startswith("Basic ")
    assert credentials.authorization("beta", "b-env").startswith("Basic ")
    for name in ("b-key", "b-env", "../beta/b-key", "beta/b-key", "b-key\n"):
        with pytest.raises(CredentialsMissingError) as error:
            credentials.authorization("alpha", name)
        assert "SECRET" not in str(error.value)
        assert str(tmp_path) not in str(error.value)  # no worker path in a tenant's record
    (tmp_path / "openwhisk" / "alpha").mkdir()
    (tmp_path / "openwhisk" / "alpha" / "b-key").write_text("u-alpha:ALPHA\n")
    header = credentials.authorization("alpha", "b-key")
    assert header == "Basic " + base64.b64encode(b"u-alpha:ALPHA").decode()


@given(
    st.tuples(NAMES, NAMES),
    st.tuples(NAMES, NAMES),
)
def test_credential_variable_names_are_unambiguous(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """No two (tenant, name) pairs share a variable: "a-b"/"c" and "a"/"b-c", "a_b" and "a-b"
    and "a.b" all differ."""
    if first != second:
        assert Credentials.env_name(*first) != Credentials.env_name(*second)
    assert re.fullmatch(r"STREAMAPP_OPENWHISK_[A-Z0-9_]+", Credentials.env_name(*first))


def test_credential_variable_examples() -> None:
    assert (
        Credentials.env_name("petra3-p02", "ow-key") == "STREAMAPP_OPENWHISK_PETRA3_HP02__OW_HKEY"
    )
    assert Credentials.env_name("a-b", "c") != Credentials.env_name("a", "b-c")
    assert Credentials.env_name("a_b", "c") != Credentials.env_name("a-b", "c")
    # the allow-list variable can never be a credential's (no "__" in it)
    assert "__" not in "STREAMAPP_OPENWHISK_ALLOWED_HOSTS"


@pytest.mark.parametrize(
    ("api_host", "allowed"),
    [
        ("http://127.0.0.1:3233", True),
        ("http://127.0.0.1:3233/", True),
        ("https://ow.desy.example", True),
        ("https://ow.desy.example:443/base", True),
        ("https://OW.DESY.EXAMPLE.", True),
        ("http://ow.desy.example", False),  # the origin names https
        ("http://ow2.desy.example", True),  # host alone: either scheme, its default port
        ("https://ow2.desy.example", True),
        ("http://ow2.desy.example:8080", False),
        ("http://[::1]:3233", True),
        ("http://127.0.0.1:3234", False),  # another loopback port
        ("http://127.0.0.2:3233", False),
        ("http://localhost:3233", False),  # literal: no DNS, no aliases
        ("http://169.254.169.254", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://10.0.0.1:3233", False),
        ("http://127.0.0.1:3233@169.254.169.254", False),
        ("ftp://127.0.0.1:3233", False),
        ("http://127.0.0.1:99999", False),
    ],
)
def test_the_api_host_allow_list(api_host: str, allowed: bool) -> None:
    hosts = AllowedHosts.parse(
        "127.0.0.1:3233, https://ow.desy.example ,ow2.desy.example,[::1]:3233,"
    )
    assert hosts.allows(api_host) is allowed


def test_an_empty_allow_list_allows_nothing_and_bad_entries_are_refused() -> None:
    assert not AllowedHosts.parse("").allows("http://127.0.0.1:3233")
    assert not AllowedHosts().allows("https://ow.desy.example")
    for bad in ("*", "*.desy.example", "ftp://x", "http://x/path", "x:port", "u@x", "http://"):
        with pytest.raises(ValueError, match=r"is not|bad port"):
            AllowedHosts.parse(bad)
    with pytest.raises(SettingsError, match="OPENWHISK_ALLOWED_HOSTS"):
        Settings.from_env({"STREAMAPP_OPENWHISK_ALLOWED_HOSTS": "http://x/y"})
    settings = Settings.from_env({"STREAMAPP_OPENWHISK_ALLOWED_HOSTS": "127.0.0.1:3233"})
    assert settings.openwhisk_allowed_hosts.allows("http://127.0.0.1:3233")
    assert not Settings.from_env({}).openwhisk_allowed_hosts.rules


def test_policies_with_hosts_off_the_list_are_found() -> None:
    policy = tenant(
        triggers=[
            TRIGGER,
            {**TRIGGER, "name": "meta", "api_host": "http://169.254.169.254"},
        ]
    )
    allowed = AllowedHosts.parse("https://openwhisk.desy.example")
    assert disallowed_hosts(policy.triggers, allowed) == [(1, "http://169.254.169.254")]
    assert disallowed_hosts(policy.triggers, AllowedHosts()) == [
        (0, "https://openwhisk.desy.example"),
        (1, "http://169.254.169.254"),
    ]


def test_an_update_naming_another_tenants_credential_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    keys = KeyRing([key.public_key()])
    spec = {
        "tenant": "alpha",
        "triggers": [{**TRIGGER, "credentials": "beta/b-key"}],
    }
    message = sign_update("tenant", "upsert", "alpha", version=1, spec=spec, private_key=key)
    with pytest.raises(UpdateRefusedError, match=r"triggers\[0\]\.credentials"):
        verify_update(message.encode(), keys)


def test_excerpts_are_bounded_printable_and_hold_no_secrets() -> None:
    answer = (
        "\x1b[31mboom\x00\r\n\u202eevil\u200b "
        '{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="} '
        "bearer abc.def.ghi "
        "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1 "
        "READ-SECRET " + "M" * 80 + " tail" + "x" * 100_000
    )
    text = excerpt(answer, secrets=["READ-SECRET", None, ""])
    assert len(text) <= EXCERPT_CHARS
    assert text.isprintable()
    assert text.endswith("…")
    for secret in ("dXNlcjpwYXNzd29yZA", "abc.def.ghi", "123zO3x", "READ-SECRET", "M" * 64):
        assert secret not in text
    assert text.startswith("[31mboom evil ")
    assert excerpt("HTTP 404: The requested resource does not exist.") == (
        "HTTP 404: The requested resource does not exist."
    )
    assert excerpt(None) == "None"
    assert len(excerpt("é" * 10_000)) == EXCERPT_CHARS


@given(st.text(max_size=3000))
def test_any_text_makes_a_bounded_printable_excerpt(text: str) -> None:
    out = excerpt(text)
    assert len(out) <= EXCERPT_CHARS
    assert out.isprintable() or not out


def test_judged_answers_are_excerpts() -> None:
    huge = {"error": "\x07bad\n" + "y" * 5000}
    for status in (400, 500, 429):
        verdict = judge(status, huge, False)
        assert len(verdict.reason) <= EXCERPT_CHARS
        assert verdict.reason.isprintable()
    verdict = judge(302, None, False)
    assert verdict.outcome is Outcome.REJECTED
    assert verdict.reason == "HTTP 302: redirect not followed"


def test_dead_letters_lose_their_tokens() -> None:
    value = orjson.dumps(event())
    stripped, changed = strip_tokens(value)
    assert changed
    assert stripped is not None
    kept = orjson.loads(stripped)
    assert "readtoken" not in kept
    assert "writetoken" not in kept
    assert kept == {k: v for k, v in event().items() if k not in ("readtoken", "writetoken")}
    # not JSON (or not an object): token values blanked in place, the rest byte for byte
    broken = b'{"readtoken": "READ-SECRET", "writetoken":"W\\"S", oops'
    stripped, changed = strip_tokens(broken)
    assert changed
    assert stripped == b'{"readtoken": "[stripped]", "writetoken":"[stripped]", oops'
    assert strip_tokens(b"\xff\xfe") == (b"\xff\xfe", False)
    assert strip_tokens(None) == (None, False)
    nested = b"[" * 2000 + b'"readtoken": "S"' + b"]" * 2000
    stripped, changed = strip_tokens(nested)
    assert changed
    assert stripped is not None
    assert b'"S"' not in stripped
    plain = orjson.dumps({"id": "x", "subject": "/a"})
    assert strip_tokens(plain) == (plain, False)


@given(
    st.binary(max_size=400)
    | st.builds(
        orjson.dumps,
        st.dictionaries(
            st.sampled_from(["readtoken", "writetoken", "id", "x"]), st.text(max_size=20)
        ),
    )
)
def test_stripped_values_never_hold_a_token_value(value: bytes) -> None:
    stripped, _ = strip_tokens(value)
    assert stripped is not None
    try:
        decoded = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return
    if isinstance(decoded, dict):
        assert decoded.get("readtoken") in (None, "[stripped]")
        assert decoded.get("writetoken") in (None, "[stripped]")


def test_seed_files_naming_another_tenants_credential_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "alpha.toml").write_text(
        'tenant = "alpha"\n[[triggers]]\nname = "r"\naction = "/a/r"\n'
        'api_host = "https://ow.desy.example"\ncredentials = "beta/b-key"\n'
    )
    with pytest.raises(SeedError) as error:
        load_seed(tmp_path)
    (problem,) = error.value.problems
    assert problem.field == "triggers[0].credentials"


# --- URLs urlsplit cannot read: a refusal, never a ValueError escaping the parser -----------------

UNREADABLE_URLS = [
    "http://[::1",  # urlsplit: Invalid IPv6 URL
    "http://openwhisk\uff0f@evil:3233",  # urlsplit: invalid characters under NFKC normalization
    "http://[::1]:3233x",  # .port: not an integer
    "http://a:99999",  # .port: out of range
    "http://a:-1",
    "http://a:0",
    "http://[v1.x]:1",  # IPvFuture: no address we could call
    "http://:3233",  # no host
    "http://a b:80",
]


@pytest.mark.parametrize("field", ["api_host", "storage_url"])
@pytest.mark.parametrize("url", UNREADABLE_URLS)
def test_an_unreadable_url_is_a_policy_error_and_a_refused_update(field: str, url: str) -> None:
    trigger = {"name": "t", "action": "/ns/a", "api_host": "http://ow:3233", "credentials": "c"}
    spec = {"tenant": "alpha", "triggers": [trigger | {field: url}]}
    with pytest.raises(PolicyError, match=rf"triggers\[0\]\.{field}"):
        parse_tenant(spec)
    key = ed25519.Ed25519PrivateKey.generate()
    token = sign_update("tenant", "upsert", "alpha", version=1, spec=spec, private_key=key)
    with pytest.raises(UpdateRefusedError, match="invalid tenant spec"):
        verify_update(token.encode(), KeyRing([key.public_key()]), expected_kind="tenant")


@given(st.text(max_size=40))
def test_no_api_host_text_makes_the_parser_or_the_allow_list_raise_anything_else(
    text: str,
) -> None:
    trigger = {"name": "t", "action": "/ns/a", "api_host": "http://" + text, "credentials": "c"}
    with contextlib.suppress(PolicyError):
        parse_tenant({"tenant": "alpha", "triggers": [trigger]})
    assert AllowedHosts.parse("ow:3233").allows("http://" + text) in (True, False)


@pytest.mark.parametrize(
    "params", [{"n": 2**64}, {"n": -(2**63) - 1}, {"deep": [{"n": 10**30}]}, {"k": {1: "x"}}]
)
def test_params_orjson_cannot_write_are_refused_at_parse_time(params: dict[str, Any]) -> None:
    """They went into the policy view (a 500) and into every invocation's body."""
    trigger = {"name": "t", "action": "/ns/a", "api_host": "http://ow:3233", "credentials": "c"}
    with pytest.raises(PolicyError, match=r"triggers\[0\]\.params: must be JSON-serializable"):
        parse_tenant({"tenant": "alpha", "triggers": [trigger | {"params": params}]})
    assert parse_tenant({"tenant": "alpha", "triggers": [trigger | {"params": {"n": 2**63 - 1}}]})
