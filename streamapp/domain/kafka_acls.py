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
(``agents/kafka_acls.py``) owns every ACL of the cluster except those of reserved principals:
``plan`` deletes whatever is not desired.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from streamapp.domain.policy import Dataset, TenantPolicy

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


@dataclass(frozen=True, slots=True)
class AclPlan:
    create: frozenset[AclEntry]
    delete: frozenset[AclEntry]
    drift: frozenset[AclEntry]  # of ``delete``: not granted by the previous desired set either

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete


def plan(
    desired: frozenset[AclEntry],
    actual: Iterable[AclEntry],
    scope: AclScope,
    previous: frozenset[AclEntry] | None = None,
) -> AclPlan:
    """What to create and delete so the managed ACLs equal ``desired``. ACLs of reserved
    principals are left alone. A deletion is drift when the agent never wanted the ACL (it was
    added by hand, or by someone else); with no previous set (a new leader), every deletion is."""
    managed = {acl for acl in actual if acl.principal not in scope.reserved_principals}
    delete = frozenset(managed - desired)
    before = previous if previous is not None else frozenset()
    return AclPlan(
        create=frozenset(desired - managed),
        delete=delete,
        drift=frozenset(acl for acl in delete if acl not in before),
    )
