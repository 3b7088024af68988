"""The desired ACL set (domain/kafka_acls.py): properties over generated policy tables."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.domain.datasets import Dataset, parse_dataset
from streamapp.domain.kafka_acls import (
    ALLOW,
    DESCRIBE,
    GROUP,
    LITERAL,
    PREFIXED,
    READ,
    TOPIC,
    UNKNOWN,
    AclEntry,
    AclScope,
    credential_refusal,
    default_principal,
    desired_acls,
    group_prefix,
    owned,
    plan,
    principal_conflicts,
    tenant_resource,
)
from streamapp.domain.policy import TenantPolicy, parse_tenant
from streamapp.domain.policy_fields import PolicyError
from streamapp.kafka_auth import (
    KafkaAuthError,
    aiokafka_options,
    confluent_config,
    faust_credentials,
)
from streamapp.settings import Settings, SettingsError

DENY = "DENY"

PATTERN = "tenant.{tenant}.events"
RESERVED = frozenset({"User:streamapp", "User:operator", "User:ANONYMOUS"})
PROTECTED = frozenset(
    {"storage.events", "dcache.billing", "streamapp.updates.tenants", "streamapp.updates.audit"}
)


def scope(pattern: str = PATTERN) -> AclScope:
    return AclScope(
        tenant_topic=lambda t: pattern.format(tenant=t),
        reserved_principals=RESERVED,
        protected_topics=PROTECTED,
        protected_prefixes=("__", "streamapp-"),
    )


# Names chosen so that prefixes collide: a / ab / a.b / a-b / a.b.c, and the tenant topic of
# "a" is a prefix of nothing but its own name only when ACLs are literal.
TENANT_NAMES = ["a", "ab", "a.b", "a-b", "a.b.c", "b", "events", "tenant"]
PRINCIPALS = [
    "User:alice",
    "User:bob",
    "User:a",
    "User:ab",
    "User:streamapp",  # reserved: never granted
    "User:operator",
    "User:shared",
]


@st.composite
def tables(draw: Any) -> tuple[dict[str, TenantPolicy], dict[str, Dataset]]:
    tenant_names = draw(st.lists(st.sampled_from(TENANT_NAMES), unique=True, max_size=6))
    datasets: dict[str, Dataset] = {}
    for i in range(draw(st.integers(0, 5))):
        if not tenant_names:
            break
        owner = draw(st.sampled_from(tenant_names))
        shared = draw(st.lists(st.sampled_from(tenant_names), unique=True, max_size=3))
        datasets[f"d{i}"] = parse_dataset(
            {
                "id": f"d{i}",
                "owner": owner,
                "source": "dcache://x",
                "prefixes": [f"/data/d{i}"],
                "shared_with": shared,
            }
        )
    ids = [*datasets, "missing"]
    tenants: dict[str, TenantPolicy] = {}
    for name in tenant_names:
        subs = draw(st.lists(st.sampled_from(ids), unique=True, max_size=3))
        own = [f"User:{name}", f"User:{name}@monitor", f"User:{name}@flink"]
        principals = draw(st.lists(st.sampled_from(own), unique=True, max_size=3))
        policy = parse_tenant(
            {
                "tenant": name,
                "subscriptions": [{"dataset": d} for d in subs],
                "kafka_principals": principals,
            }
        )
        if draw(st.booleans()):
            # a table written before principals were namespaced (or by a buggy tool): any
            # names, shared and reserved ones included — the decision must still hold
            foreign = draw(st.lists(st.sampled_from(PRINCIPALS), unique=True, max_size=3))
            policy = dataclasses.replace(policy, kafka_principals=tuple(foreign))
        tenants[name] = policy
    return tenants, datasets


def owner_of(principal: str, tenants: dict[str, TenantPolicy]) -> list[str]:
    return [t for t, p in tenants.items() if principal in p.kafka_principals]


@settings(max_examples=400, deadline=None)
@given(tables(), st.sampled_from([*TENANT_NAMES, "zz", "a.b.c.d", "ab-c"]))
def test_never_another_tenants_resource(
    table: tuple[dict[str, TenantPolicy], dict[str, Dataset]], outsider: str
) -> None:
    tenants, datasets = table
    sc = scope()
    for acl in desired_acls(tenants, datasets, sc):
        owners = owner_of(acl.principal, tenants)
        assert len(owners) == 1, f"{acl} granted to a principal of {owners}"
        (tenant,) = owners
        assert acl.principal not in RESERVED
        assert acl.permission == "ALLOW"
        assert acl.host == "*"
        assert "*" not in acl.principal
        assert acl.resource_name not in ("*", "")
        assert acl.operation in (READ, DESCRIBE)
        if acl.resource_type == TOPIC:
            # literal, and exactly the tenant's own topic: never another's, never a service topic
            assert acl.pattern_type == LITERAL
            assert acl.resource_name == sc.tenant_topic(tenant)
            assert not sc.protected(acl.resource_name)
        else:
            assert acl.resource_type == GROUP
            assert acl.operation == READ
            assert acl.pattern_type == PREFIXED
            assert acl.resource_name == group_prefix(tenant)
        # a prefixed ACL never covers another tenant's topic or groups, whatever its name
        if acl.pattern_type == PREFIXED and outsider != tenant:
            assert not sc.tenant_topic(outsider).startswith(acl.resource_name)
            assert not f"{group_prefix(outsider)}job".startswith(acl.resource_name)
            for other in TENANT_NAMES:
                if other != tenant:
                    assert not sc.tenant_topic(other).startswith(acl.resource_name)
                    assert not group_prefix(other).startswith(acl.resource_name)


@settings(max_examples=300, deadline=None)
@given(tables())
def test_exactly_what_entitled_tenants_need(
    table: tuple[dict[str, TenantPolicy], dict[str, Dataset]],
) -> None:
    tenants, datasets = table
    sc = scope()
    desired = desired_acls(tenants, datasets, sc)
    conflicts = principal_conflicts(tenants, sc)
    for name, policy in tenants.items():
        entitled = any(
            s.dataset in datasets and name in datasets[s.dataset].entitled
            for s in policy.subscriptions
        )
        for principal in policy.kafka_principals:
            expected = {
                AclEntry(principal, TOPIC, sc.tenant_topic(name), LITERAL, READ),
                AclEntry(principal, TOPIC, sc.tenant_topic(name), LITERAL, DESCRIBE),
                AclEntry(principal, GROUP, f"{name}:", PREFIXED, READ),
            }
            mine = {acl for acl in desired if acl.principal == principal}
            if entitled and principal not in conflicts:
                assert mine == expected
            else:
                assert not mine  # revoked shares, reserved or contested principals: nothing


@settings(max_examples=300, deadline=None)
@given(
    tables(),
    st.sets(
        st.builds(
            AclEntry,
            principal=st.sampled_from([*PRINCIPALS, "User:svc", "User:broker"]),
            resource_type=st.sampled_from([TOPIC, GROUP, "BROKER", UNKNOWN]),
            resource_name=st.sampled_from(
                ["tenant.a.events", "tenant.", "ten", "*", "a:", "a", "svc.in", "kafka-cluster"]
            ),
            pattern_type=st.sampled_from([LITERAL, PREFIXED]),
            operation=st.sampled_from([READ, DESCRIBE, "WRITE", "ALL", UNKNOWN]),
            permission=st.sampled_from([ALLOW, DENY]),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_plan_converges_on_what_it_owns_and_leaves_the_rest(
    table: tuple[dict[str, TenantPolicy], dict[str, Dataset]],
    actual: set[AclEntry],
    new_leader: bool,
) -> None:
    tenants, datasets = table
    sc = scope()
    desired = desired_acls(tenants, datasets, sc)
    previous = None if new_leader else desired
    steps = plan(desired, actual, sc, previous, tenants)
    after = (set(actual) - steps.delete) | steps.create
    claimed = frozenset(p for policy in tenants.values() for p in policy.kafka_principals)
    before = previous or frozenset()
    mine_after = {acl for acl in after if owned(acl, sc, claimed, before, tenants)}
    assert mine_after - steps.stuck == desired
    assert desired <= after
    # nothing it does not own is touched: reserved principals, DENYs, other services' own ACLs
    for acl in actual:
        if not owned(acl, sc, claimed, before, tenants):
            assert acl in after, acl
        if acl.permission == DENY or acl.principal in RESERVED:
            assert acl not in steps.delete
    # a binding the admin client cannot name is reported, never sent
    assert not any(UNKNOWN in (a.resource_type, a.operation) for a in steps.delete)
    assert steps.stuck.isdisjoint(steps.delete)
    assert steps.drift <= steps.delete
    assert not steps.drift & desired
    # after the step, an ACL that lets a non-reserved principal READ a tenant's topic is desired
    for acl in after:
        exposed = acl.resource_type == TOPIC and tenant_resource(acl, sc, tenants)
        if acl.permission == ALLOW and acl.principal not in RESERVED and exposed:
            assert acl in desired or acl in steps.stuck, acl


def test_other_services_and_operator_denies_are_left_alone() -> None:
    sc = scope()
    service_topic = AclEntry("User:svc", TOPIC, "svc.in", LITERAL, READ)
    service_group = AclEntry("User:svc", GROUP, "svc-consumers", PREFIXED, READ)
    deny = AclEntry("User:a@alice", TOPIC, "tenant.a.events", LITERAL, READ, DENY)
    on_tenant = AclEntry("User:svc", TOPIC, "tenant.a.events", LITERAL, READ)
    wildcard = AclEntry("User:svc", TOPIC, "*", LITERAL, READ)
    prefixed = AclEntry("User:svc", TOPIC, "tenant.a", PREFIXED, READ)
    group_of_a = AclEntry("User:svc", GROUP, "a:", PREFIXED, READ)
    steps = plan(
        frozenset(),
        {service_topic, service_group, deny, on_tenant, wildcard, prefixed, group_of_a},
        sc,
        None,
        {"a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@alice"]})},
    )
    assert steps.delete == {on_tenant, wildcard, prefixed, group_of_a}
    assert steps.drift == steps.delete


def test_an_acl_the_client_cannot_name_is_stuck_not_sent() -> None:
    sc = scope()
    token = AclEntry("User:a@alice", UNKNOWN, "alice", LITERAL, UNKNOWN)
    steps = plan(
        frozenset(),
        {token},
        sc,
        None,
        {"a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@alice"]})},
    )
    assert steps.stuck == {token}
    assert not steps.delete


@pytest.mark.parametrize(
    ("action", "tenant", "principal", "refused"),
    [
        ("create", "a", "User:a@reader", None),
        ("rotate", "a", "User:a@reader", None),
        ("delete", "a", "User:a@reader", None),
        ("create", "a", "User:operator", "reserved"),
        ("rotate", "a", "User:streamapp", "reserved"),
        ("delete", "a", "User:broker", "reserved"),
        ("create", "gone", "User:controller", "reserved"),
        ("create", "a", "User:b", "namespace"),
        ("delete", "gone", "User:b", "namespace"),
        ("delete", "gone", "User:s3-gateway", "namespace"),
        ("create", "a", "User:a", "does not name"),
        ("create", "gone", "User:gone", "does not name"),
        ("rotate", "gone", "User:gone", "does not name"),
        ("delete", "gone", "User:gone", None),  # a removed tenant's namespace: cleanup
        ("delete", "gone", "User:gone@x", None),
        ("delete", "never", "User:never", "does not name"),  # never a tenant: not ours
        ("delete", "a", "User:a", "does not name"),
    ],
)
def test_credentials_only_for_a_tenants_own_principal(
    action: str, tenant: str, principal: str, refused: str | None
) -> None:
    tenants = {
        "a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@reader"]}),
        "b": parse_tenant({"tenant": "b", "kafka_principals": ["User:b"]}),
    }
    reserved = Settings.from_env({}).kafka_reserved_principals
    reason = credential_refusal(
        action, tenant, principal, tenants, reserved, removed=frozenset({"gone"})
    )
    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert refused in reason


def test_default_principal_is_the_policys_only_one() -> None:
    one = {"a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@reader"]})}
    two = {"a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@x", "User:a@y"]})}
    assert default_principal("a", one) == "User:a@reader"
    assert default_principal("a", two) == "User:a"
    assert default_principal("gone", one) == "User:gone"


def test_platform_principals_are_reserved_by_default_and_settings_are_checked() -> None:
    reserved = Settings.from_env({}).kafka_reserved_principals
    assert {"User:operator", "User:broker", "User:controller", "User:streamapp"} <= reserved
    assert "User:ANONYMOUS" in reserved
    extra = Settings.from_env({"STREAMAPP_KAFKA_ACL_UNMANAGED_PRINCIPALS": "User:svc, User:mon"})
    assert {"User:svc", "User:mon"} <= extra.kafka_reserved_principals
    for bad in ("svc", "User:*", "Group:x"):
        with pytest.raises(SettingsError, match="UNMANAGED_PRINCIPALS"):
            Settings.from_env({"STREAMAPP_KAFKA_ACL_UNMANAGED_PRINCIPALS": bad})


def test_hand_added_acl_is_drift_and_revocation_is_not() -> None:
    sc = scope()
    a_topic = AclEntry("User:alice", TOPIC, "tenant.a.events", LITERAL, READ)
    on_b = AclEntry("User:alice", TOPIC, "tenant.b.events", LITERAL, READ)
    steps = plan(frozenset(), {a_topic, on_b}, sc, previous=frozenset({a_topic}))
    assert steps.delete == {a_topic, on_b}
    assert steps.drift == {on_b}  # a_topic was granted before: a revocation, not drift


def test_prefix_neighbours_and_nested_names() -> None:
    datasets = {
        "d": parse_dataset(
            {"id": "d", "owner": "a", "source": "s", "prefixes": ["/d"], "shared_with": []}
        )
    }
    tenants = {
        "a": parse_tenant(
            {"tenant": "a", "subscriptions": [{"dataset": "d"}], "kafka_principals": ["User:a"]}
        )
    }
    desired = desired_acls(tenants, datasets, scope())
    names = {acl.resource_name for acl in desired}
    assert names == {"tenant.a.events", "a:"}
    assert not any("tenant.ab.events".startswith(n) for n in names if n != "tenant.a.events")
    assert not "a.b:monitor".startswith("a:")


def test_share_revoked_removes_acls() -> None:
    def table(shared: list[str]) -> tuple[dict[str, TenantPolicy], dict[str, Dataset]]:
        datasets = {
            "bd": parse_dataset(
                {"id": "bd", "owner": "b", "source": "s", "prefixes": ["/b"], "shared_with": shared}
            )
        }
        tenants = {
            "a": parse_tenant(
                {
                    "tenant": "a",
                    "subscriptions": [{"dataset": "bd"}],
                    "kafka_principals": ["User:a"],
                }
            )
        }
        return tenants, datasets

    assert len(desired_acls(*table(["a"]), scope())) == 3
    assert desired_acls(*table([]), scope()) == frozenset()


def test_service_topic_pattern_is_never_granted() -> None:
    datasets = {
        "d": parse_dataset({"id": "d", "owner": "storage", "source": "s", "prefixes": ["/d"]})
    }
    tenants = {
        "storage": parse_tenant(
            {
                "tenant": "storage",
                "subscriptions": [{"dataset": "d"}],
                "kafka_principals": ["User:storage"],
            }
        )
    }
    assert desired_acls(tenants, datasets, scope("{tenant}.events")) == frozenset()


@pytest.mark.parametrize(
    "value",
    [
        "User:*",
        "*",
        "alice",
        "Group:x",
        "User:",
        "User:a b",
        "User:a\n",
        "User:a,b",
        "User:" + "x" * 200,
        7,
        "User:other",  # another name: not in tenant t's namespace
        "User:t-2",  # tenant t-2's user
        "User:t.b",  # tenant t.b's user
        "User:tx",
        "User:t@",
    ],
)
def test_policy_refuses_unusable_principals(value: object) -> None:
    with pytest.raises(PolicyError, match=r"kafka_principals"):
        parse_tenant({"tenant": "t", "kafka_principals": [value]})


def test_policy_keeps_principals_in_canonical_form() -> None:
    policy = parse_tenant({"tenant": "t", "kafka_principals": ["User:t", "User:t", "User:t@2"]})
    assert policy.kafka_principals == ("User:t", "User:t@2")
    assert policy.canonical()["kafka_principals"] == ["User:t", "User:t@2"]
    with pytest.raises(PolicyError, match=r"^kafka_principals:"):
        parse_tenant({"tenant": "t", "kafka_principals": "User:t"})


def test_settings_never_show_the_password() -> None:
    settings_ = Settings.from_env(
        {"STREAMAPP_KAFKA_SASL_USERNAME": "streamapp", "STREAMAPP_KAFKA_SASL_PASSWORD": "s3cr3t-pw"}
    )
    assert "s3cr3t-pw" not in repr(settings_)
    assert settings_.kafka_principal == "User:streamapp"
    assert "User:streamapp" in settings_.kafka_reserved_principals
    assert re.fullmatch(r"User:\w+", settings_.kafka_principal)


def test_client_options_read_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw-from-file\n")
    configured = Settings.from_env(
        {
            "STREAMAPP_KAFKA_SASL_USERNAME": "streamapp",
            "STREAMAPP_KAFKA_SASL_PASSWORD_FILE": str(secret),
        }
    )
    options = aiokafka_options(configured)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "pw-from-file"
    assert confluent_config(configured)["sasl.password"] == "pw-from-file"
    credentials = faust_credentials(configured)
    assert credentials is not None
    assert "pw-from-file" not in repr(credentials)
    assert aiokafka_options(Settings.from_env({})) == {}
    assert faust_credentials(Settings.from_env({})) is None
    missing = Settings.from_env({"STREAMAPP_KAFKA_SASL_USERNAME": "streamapp"})
    with pytest.raises(KafkaAuthError, match="no password"):
        aiokafka_options(missing)
    secret.unlink()
    with pytest.raises(KafkaAuthError) as info:
        aiokafka_options(configured)
    assert "pw-from-file" not in str(info.value)


def settings_scope(pattern: str) -> AclScope:
    configured = Settings.from_env({"STREAMAPP_TENANT_TOPIC_PATTERN": pattern})
    protected = {
        *configured.raw_topics,
        configured.normalized_topic,
        configured.deadletter_topic,
        configured.dcache_events_topic,
    }
    return AclScope(
        tenant_topic=configured.tenant_topic,
        reserved_principals=configured.kafka_reserved_principals,
        protected_topics=frozenset(protected),
        protected_prefixes=("__", f"{configured.app_id}-"),
    )


@pytest.mark.parametrize("pattern", ["tenant.{tenant}.events", "{tenant}.events", "t-{tenant}"])
def test_other_services_acls_survive_any_topic_pattern(pattern: str) -> None:
    """Found by review: with ``{tenant}.events`` the raw topics dcache.events and s3.events
    looked like tenant topics, and every prefixed ACL and every ``x:`` group counted as the
    agent's, so a first pass deleted the storage systems' WRITE ACLs."""
    tenants = {"petra3": parse_tenant({"tenant": "petra3", "kafka_principals": ["User:petra3"]})}
    services = {
        AclEntry("User:s3-gateway", TOPIC, "s3.events", LITERAL, "WRITE"),
        AclEntry("User:dcache-door", TOPIC, "dcache.events", LITERAL, "WRITE"),
        AclEntry("User:billing", TOPIC, "billing-", PREFIXED, "WRITE"),
        AclEntry("User:billing", TOPIC, "billing.orders", LITERAL, READ),
        AclEntry("User:billing", GROUP, "billing:workers", LITERAL, READ),
    }
    sc = settings_scope(pattern)
    exposing = {
        AclEntry("User:svc", TOPIC, sc.tenant_topic("petra3"), LITERAL, READ),
        AclEntry("User:svc", GROUP, "petra3:", PREFIXED, READ),
        AclEntry("User:svc", TOPIC, sc.tenant_topic("petra3")[:4], PREFIXED, READ),
    }
    steps = plan(frozenset(), services | exposing, sc, None, tenants)
    assert steps.delete == exposing


@pytest.mark.parametrize("pattern", ["{tenant}", "{tenant}.{tenant}", "tenant.events"])
def test_a_topic_pattern_must_hold_the_tenant_once_with_a_fixed_part(pattern: str) -> None:
    with pytest.raises(SettingsError, match="TENANT_TOPIC_PATTERN"):
        Settings.from_env({"STREAMAPP_TENANT_TOPIC_PATTERN": pattern})


@pytest.mark.parametrize("interval", ["0", "0.2", "-1", "nan"])
def test_the_acl_interval_has_a_floor(interval: str) -> None:
    with pytest.raises(SettingsError, match="KAFKA_ACL_INTERVAL"):
        Settings.from_env({"STREAMAPP_KAFKA_ACL_INTERVAL": interval})
