"""The verdict on a verified policy update against what the workers hold, pure.

``domain.updates`` checks an update on its own (signature, claims, spec); these are the checks
against the tables and the worker's configuration: newer than the held entry, no prefix another
dataset owns, write areas apart, no Kafka principal the tenant may not claim, no tenant topic
Kafka could not tell from a held one, only allowed OpenWhisk hosts. The agent
(agents/policy_updates.py) gathers the inputs and writes the verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamapp.domain.allowed_hosts import AllowedHosts, disallowed_hosts
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.domain.topic_names import colliding_tenant, collision_reason
from streamapp.domain.updates import (
    Update,
    UpdateRefusedError,
    check_dataset_areas,
    check_newer,
)


@dataclass(frozen=True, slots=True)
class UpdateRules:
    """The worker's configuration the verdict depends on."""

    allowed_hosts: AllowedHosts  # OpenWhisk hosts triggers may name
    reserved_principals: frozenset[str]  # the workers', the operator's, other services'
    tenant_topic: Callable[[str], str]  # tenant -> its topic name


def principal_owner(
    principal: str, tenant: str, index: PolicyIndex, reserved: frozenset[str]
) -> str | None:
    """Why ``tenant`` may not claim ``principal`` (reserved, or another tenant's), or None."""
    if principal in reserved:
        return "is reserved for the workers or the operator"
    for other in index.tenants.values():
        if other.tenant != tenant and principal in other.kafka_principals:
            return f"is already tenant {other.tenant}'s"
    return None


def check_update(
    update: Update,
    held: Mapping[str, Any] | None,
    index: PolicyIndex,
    held_tenants: Iterable[str],
    rules: UpdateRules,
) -> None:
    """Raise ``UpdateRefusedError`` with the reason if ``update`` may not be applied."""
    check_newer(update, held)
    if update.op != "upsert":
        return
    assert update.spec is not None
    if update.kind == "dataset":
        dataset = parse_dataset(update.spec)
        conflicts = index.conflicts(dataset)
        if conflicts:
            prefix, other = conflicts[0]
            raise UpdateRefusedError(f"prefix {prefix} is already owned by dataset {other}")
        check_dataset_areas(dataset, index.datasets.values())
        return
    policy = parse_tenant(update.spec)
    # a Kafka principal reads one tenant's stream: never the workers', never another's
    for position, principal in enumerate(policy.kafka_principals):
        owner = principal_owner(principal, policy.tenant, index, rules.reserved_principals)
        if owner is not None:
            raise UpdateRefusedError(
                f"invalid tenant spec: kafka_principals[{position}]: {principal} {owner}"
            )
    # two tenants whose topics Kafka cannot tell apart ('.' is '_' to it): the second one's
    # topic could never be created (tombstoned tenants' topics remain too)
    collision = colliding_tenant(policy.tenant, list(held_tenants), rules.tenant_topic)
    if collision is not None:
        raise UpdateRefusedError(collision_reason(policy.tenant, collision, rules.tenant_topic))
    # the workers' allow-list (checked again before every call); credentials need no check
    # here: a policy can only name its own tenant's (plain names, resolved per tenant)
    for position, host in disallowed_hosts(policy.triggers, rules.allowed_hosts):
        raise UpdateRefusedError(
            f"invalid tenant spec: triggers[{position}].api_host: {host} is not among the "
            f"allowed OpenWhisk hosts ({rules.allowed_hosts})"
        )
