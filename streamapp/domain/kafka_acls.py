"""Which Kafka ACLs the policy table allows, and how to bring the broker's ACLs there. Pure.

A tenant whose policy names ``kafka_principals`` and that is entitled to at least one of the
datasets it subscribes to (it owns it or the dataset is shared with it) gets, for each of its
principals, exactly:

- ``READ`` and ``DESCRIBE`` on its own topic (``tenant.<t>.events``), LITERAL: the name must be
  equal, so tenant ``a`` never reaches ``tenant.ab.events``;
- ``READ`` on consumer groups PREFIXED ``<t>:`` (committing offsets, joining its groups). The
  separator is ``:``, a character no tenant name may contain: with ``<t>.``, tenant ``a``'s
  prefix ``a.`` would cover tenant ``a.b``'s groups ``a.b.…``.

Nothing else, ever: no ACL on another tenant's topic, on the raw, canonical, policy, audit,
dead-letter, invocation or internal topics, no wildcard resource or principal, no prefixed
topic ACL, no WRITE. A principal claimed by two tenants, or one reserved for the workers and
the operator, gets nothing (``principal_conflicts`` says why). The ACL agent
(``agents/kafka_acls.py``) owns the ALLOW ACLs of tenants' principals and every ALLOW on a
tenant's stream or groups (``owned``); ``plan`` deletes those that are not desired. DENY ACLs,
the platform's principals and other services' ACLs on their own resources are left alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from streamapp.domain.datasets import Dataset
from streamapp.domain.policy import TenantPolicy, principal_of_tenant
from streamapp.domain.policy_fields import NAME_PATTERN

GROUP_SEPARATOR: Final = ":"  # not in tenant names ([a-z0-9._-]): group prefixes never nest
TOPIC: Final = "TOPIC"
GROUP: Final = "GROUP"
LITERAL: Final = "LITERAL"
PREFIXED: Final = "PREFIXED"
READ: Final = "READ"
DESCRIBE: Final = "DESCRIBE"
ALLOW: Final = "ALLOW"
ANY_HOST: Final = "*"


@dataclass(frozen=True, slots=True, order=True)
class AclEntry:
    """One ACL binding as the broker stores it."""

    principal: str
    resource_type: str  # TOPIC | GROUP (others may exist on the broker: then they are drift)
    resource_name: str
    pattern_type: str  # LITERAL | PREFIXED
    operation: str  # READ | DESCRIBE | ...
    permission: str = ALLOW
    host: str = ANY_HOST

    def __str__(self) -> str:
        return (
            f"{self.permission} {self.principal} {self.operation} {self.resource_type}:"
            f"{self.pattern_type}:{self.resource_name} from {self.host}"
        )


@dataclass(frozen=True, slots=True)
class AclScope:
    """What the decision needs to know besides the tables (from the settings)."""

    tenant_topic: Callable[[str], str]  # tenant -> its topic name
    reserved_principals: frozenset[str]  # workers, operator: never granted, never touched
    protected_topics: frozenset[str] = frozenset()  # raw, canonical, policy, audit, ... topics
    protected_prefixes: tuple[str, ...] = ("__",)  # internal topics, the app's changelogs

    def protected(self, topic: str) -> bool:
        return topic in self.protected_topics or topic.startswith(self.protected_prefixes)


def group_prefix(tenant: str) -> str:
    return f"{tenant}{GROUP_SEPARATOR}"


def entitled(policy: TenantPolicy, datasets: Mapping[str, Dataset]) -> bool:
    """True when at least one subscription names a dataset the tenant may receive."""
    for subscription in policy.subscriptions:
        dataset = datasets.get(subscription.dataset)
        if dataset is not None and policy.tenant in dataset.entitled:
            return True
    return False


def principal_conflicts(tenants: Mapping[str, TenantPolicy], scope: AclScope) -> dict[str, str]:
    """Principals that get no ACL at all, with the reason."""
    claimed: dict[str, list[str]] = defaultdict(list)
    for name in sorted(tenants):
        for principal in tenants[name].kafka_principals:
            claimed[principal].append(name)
    conflicts: dict[str, str] = {}
    for principal, owners in claimed.items():
        if principal in scope.reserved_principals:
            conflicts[principal] = f"{principal} is reserved for the workers or the operator"
        elif len(owners) > 1:
            conflicts[principal] = f"{principal} is claimed by tenants {', '.join(owners)}"
    return conflicts


def tenant_acls(tenant: str, principal: str, scope: AclScope) -> frozenset[AclEntry]:
    topic = scope.tenant_topic(tenant)
    return frozenset(
        {
            AclEntry(principal, TOPIC, topic, LITERAL, READ),
            AclEntry(principal, TOPIC, topic, LITERAL, DESCRIBE),
            AclEntry(principal, GROUP, group_prefix(tenant), PREFIXED, READ),
        }
    )


def desired_acls(
    tenants: Mapping[str, TenantPolicy], datasets: Mapping[str, Dataset], scope: AclScope
) -> frozenset[AclEntry]:
    """Exactly the ACLs the policy table allows."""
    conflicts = principal_conflicts(tenants, scope)
    desired: set[AclEntry] = set()
    for name, policy in tenants.items():
        if name != policy.tenant or not policy.kafka_principals:
            continue
        if not entitled(policy, datasets):
            continue  # every share revoked, no dataset of its own: nothing to read
        if scope.protected(scope.tenant_topic(name)):
            continue  # a pattern that would name a service topic: never granted
        for principal in policy.kafka_principals:
            if principal not in conflicts:
                desired |= tenant_acls(name, principal, scope)
    return frozenset(desired)


UNKNOWN: Final = "UNKNOWN"  # what the admin client reports for a type it cannot name


def tenant_resource(acl: AclEntry, scope: AclScope, tenants: Iterable[str] = ()) -> bool:
    """True when ``acl``'s resource is, or may cover, a tenant's stream or consumer groups: a
    tenant topic (literal, prefixed or ``*``) or a group under a tenant's ``<t>:`` prefix.

    Never a protected (service) topic. With a topic pattern that starts with a fixed part
    (``tenant.{tenant}.events``) every name of that shape counts, so the topic of a tenant
    removed while no leader watched is still cleaned up; with a pattern that starts with the
    tenant's name (``{tenant}.events``) only the topics of tenants in the table do, since
    other services' topics share that shape. Groups: only those of tenants in the table."""
    known = set(tenants)
    lead, _, trail = scope.tenant_topic("\0").partition("\0")
    name = acl.resource_name
    if name == "*":
        return acl.resource_type in (TOPIC, GROUP)
    if acl.resource_type == TOPIC:
        topics = [scope.tenant_topic(t) for t in sorted(known)]
        if acl.pattern_type == PREFIXED:
            if any(topic.startswith(name) and not scope.protected(topic) for topic in topics):
                return True
            return bool(lead) and (name.startswith(lead) or lead.startswith(name))
        if scope.protected(name):
            return False
        if not lead:
            return name in topics
        middle = name[len(lead) : len(name) - len(trail)] if trail else name[len(lead) :]
        return (
            len(name) > len(lead) + len(trail)
            and name.startswith(lead)
            and name.endswith(trail)
            and NAME_PATTERN.fullmatch(middle) is not None
        )
    if acl.resource_type == GROUP:
        head, separator, _ = name.partition(GROUP_SEPARATOR)
        if separator and head in known:
            return True
        if acl.pattern_type == PREFIXED:
            return any(group_prefix(t).startswith(name) for t in known)
    return False


def owned(
    acl: AclEntry,
    scope: AclScope,
    claimed: frozenset[str],
    previous: frozenset[AclEntry],
    tenants: Iterable[str] = (),
) -> bool:
    """Whether the agent decides over ``acl``: an ALLOW of a tenant's principal, one it granted
    itself, or an ALLOW of anyone on a tenant's stream or groups. Never a DENY (it only
    narrows: an operator's DENY stays), never an ACL of a reserved principal, never another
    service's ACL on its own resources."""
    if acl.principal in scope.reserved_principals or acl.permission != ALLOW:
        return False
    return acl.principal in claimed or acl in previous or tenant_resource(acl, scope, tenants)


@dataclass(frozen=True, slots=True)
class AclPlan:
    create: frozenset[AclEntry]
    delete: frozenset[AclEntry]
    drift: frozenset[AclEntry]  # of ``delete``: not granted by the previous desired set either
    stuck: frozenset[AclEntry] = frozenset()  # should go, but the admin client cannot name it

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete


def plan(
    desired: frozenset[AclEntry],
    actual: Iterable[AclEntry],
    scope: AclScope,
    previous: frozenset[AclEntry] | None = None,
    tenants: Mapping[str, TenantPolicy] | None = None,
) -> AclPlan:
    """What to create and delete so the ACLs the agent owns (``owned``) equal ``desired``.
    A deletion is drift when the agent never wanted the ACL (added by hand, or by someone
    else); with no previous set (a new leader), every deletion is. An ACL that must go but
    has a field the admin client reports as UNKNOWN (a resource type or operation newer than
    it) cannot be addressed: it is ``stuck``, reported, never sent."""
    tenants = tenants or {}
    claimed = frozenset(p for policy in tenants.values() for p in policy.kafka_principals)
    before = previous if previous is not None else frozenset()
    mine = {acl for acl in actual if owned(acl, scope, claimed, before, tenants)}
    unwanted = mine - desired
    stuck = frozenset(acl for acl in unwanted if UNKNOWN in _fields(acl))
    delete = frozenset(unwanted - stuck)
    return AclPlan(
        create=frozenset(desired - set(actual)),
        delete=delete,
        drift=frozenset(acl for acl in delete if acl not in before),
        stuck=stuck,
    )


def _fields(acl: AclEntry) -> tuple[str, ...]:
    return (acl.resource_type, acl.pattern_type, acl.operation, acl.permission)


def credential_refusal(
    action: str,
    tenant: str,
    principal: str,
    tenants: Mapping[str, TenantPolicy],
    reserved: frozenset[str],
    *,
    removed: frozenset[str] = frozenset(),
) -> str | None:
    """Why the operator command may not create, rotate or delete ``principal``'s SCRAM
    credential for ``tenant`` (None: it may). A credential is the tenant's only when the
    principal is in the tenant's namespace (``User:<t>`` or ``User:<t>@…``), its policy names
    it and no other tenant's does; the platform's own principals are never a tenant's,
    whatever a policy says, so the command can never replace or delete their passwords.
    Deleting the credential of a tenant that was removed (``removed``: deleted in the table)
    is allowed for its namespace."""
    if principal in reserved:
        return f"{principal} is reserved for the platform (workers, operator, broker)"
    if not principal_of_tenant(principal, tenant):
        return (
            f"{principal} is not in tenant {tenant}'s namespace "
            f"('User:{tenant}' or 'User:{tenant}@<suffix>')"
        )
    others = sorted(
        name
        for name, policy in tenants.items()
        if name != tenant and principal in policy.kafka_principals
    )
    if others:
        return f"{principal} is named by tenant {', '.join(others)}'s policy"
    policy = tenants.get(tenant)
    if policy is not None and principal in policy.kafka_principals:
        return None
    if action == "delete" and policy is None and tenant in removed:
        return None  # cleaning up after a removed tenant
    return (
        f"tenant {tenant}'s policy does not name {principal}: add it to kafka_principals "
        "(a signed update) first"
    )


def default_principal(tenant: str, tenants: Mapping[str, TenantPolicy]) -> str:
    """The principal the command acts on when no ``--user`` is given: the tenant's only one."""
    policy = tenants.get(tenant)
    if policy is not None and len(policy.kafka_principals) == 1:
        return policy.kafka_principals[0]
    return f"User:{tenant}"
