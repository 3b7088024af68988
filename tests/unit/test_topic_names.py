"""Tenant topic names Kafka cannot tell apart ('.' and '_' collide): refused when a policy is
applied (signed updates, seed files), never found out by a worker creating the topic.

The live consequence (the sink hung, the authorize agent crashed per event) is covered by
``test_authorize_agent.py`` (dead letter naming the tenant) and ``test_invoke_follow.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from streamapp.admin_keys import sign_update
from streamapp.agents import policy_updates
from streamapp.app import settings
from streamapp.domain.policy_fields import NAME_PATTERN
from streamapp.domain.topic_names import colliding_tenant, collision_key
from streamapp.domain.updates import KeyRing, UpdateRefusedError
from streamapp.seed import SeedError, load_seed

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)


def kafka_collides(a: str, b: str) -> bool:
    """Kafka's own rule (Topic.hasCollision): equal once every '.' is read as '_'."""
    return a.replace(".", "_") == b.replace(".", "_")


@given(names, names)
def test_two_tenants_collide_exactly_when_kafka_says_their_topics_do(a: str, b: str) -> None:
    assert NAME_PATTERN.fullmatch(a)
    assert NAME_PATTERN.fullmatch(b)
    found = colliding_tenant(b, [a], settings.tenant_topic)
    expected = a != b and kafka_collides(settings.tenant_topic(a), settings.tenant_topic(b))
    assert (found == a) is expected


@given(names, st.lists(st.sampled_from("._"), min_size=1, max_size=4))
def test_any_dot_underscore_variant_of_a_held_tenant_is_refused(
    base: str, separators: list[str]
) -> None:
    held = base + "".join(f"{sep}x" for sep in separators)
    variant = base + "".join(f"{'_' if sep == '.' else '.'}x" for sep in separators)
    assert colliding_tenant(variant, ["alpha", held], settings.tenant_topic) == held
    assert colliding_tenant(held, [held]) is None  # a tenant does not collide with itself


def test_collision_key() -> None:
    assert collision_key("tenant.co.ll.events") == collision_key("tenant.co_ll.events")
    assert collision_key("tenant.co-ll.events") != collision_key("tenant.co_ll.events")


# --- seed files ------------------------------------------------------------------------------


def test_seed_files_with_colliding_tenants_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tenants").mkdir()
    for name in ("co.ll", "co_ll", "co-ll"):
        (tmp_path / "tenants" / f"{name}.toml").write_text(f'tenant = "{name}"\n')
    with pytest.raises(SeedError) as caught:
        load_seed(tmp_path)
    [problem] = caught.value.problems
    assert problem.file.name == "co_ll.toml"
    assert problem.field == "tenant"
    assert "collides with tenant co.ll" in problem.message


# --- signed updates (the policy-updates agent's decision) --------------------------------------


@pytest.fixture
def signer(monkeypatch: pytest.MonkeyPatch) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    ring = KeyRing([key.public_key()])
    monkeypatch.setattr(policy_updates, "admin_keys", lambda: ring)
    return key


def tenant_update(key: ed25519.Ed25519PrivateKey, name: str) -> bytes:
    spec = {"tenant": name}
    return sign_update("tenant", "upsert", name, version=1, spec=spec, private_key=key).encode()


@pytest.mark.parametrize("deleted", [False, True])
def test_a_tenant_colliding_with_a_held_one_is_refused(
    signer: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch, deleted: bool
) -> None:
    held = {"co.ll": {"version": 1, "deleted": deleted, "spec": None, "kid": "k"}}
    monkeypatch.setattr(policy_updates, "TABLES", {"tenant": held, "dataset": {}})
    with pytest.raises(UpdateRefusedError, match=r"collides with tenant co\.ll's"):
        policy_updates.decide(tenant_update(signer, "co_ll"), settings.tenant_updates_topic)
    # an unrelated name, and the held tenant itself, are accepted
    for name in ("co-ll", "coll"):
        update = policy_updates.decide(tenant_update(signer, name), settings.tenant_updates_topic)
        assert update.name == name


# --- one update never stops the agent ------------------------------------------------------------


class Message:
    def __init__(self, value: bytes) -> None:
        self.key, self.value = b"k", value
        self.topic, self.partition, self.offset = settings.tenant_updates_topic, 0, 7


class Audit:
    def __init__(self) -> None:
        self.sent: list[dict[str, bytes]] = []

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> asyncio.Future[None]:
        self.sent.append(dict(headers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.mark.parametrize("error", [ValueError("Invalid IPv6 URL"), KeyError("x"), RecursionError()])
async def test_an_unexpected_error_deciding_an_update_is_an_audited_refusal(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    audit = Audit()
    monkeypatch.setattr(policy_updates, "updates_audit", audit)

    def decide(message: bytes, topic: str) -> Any:
        raise error

    monkeypatch.setattr(policy_updates, "decide", decide)
    await policy_updates._apply_update(Message(b"anything"))
    [headers] = audit.sent
    assert headers["streamapp.update.verdict"] == b"refused"
    assert headers["streamapp.update.reason"] == f"internal error: {type(error).__name__}".encode()
    assert headers["streamapp.update.offset"] == b"7"
