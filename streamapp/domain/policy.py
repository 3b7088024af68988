"""Tenant policies: what each tenant subscribes to, which triggers run for it, its limits and
Kafka principals (dataset ownership: ``datasets``; globs: ``globs``).

A policy arrives as a JSON-like mapping (seed file, signed update, table value) and is validated
once here into a frozen ``TenantPolicy``; a ``PolicyError`` names the field that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streamapp.domain.events import EventType
from streamapp.domain.globs import PathGlob
from streamapp.domain.policy_fields import (
    PolicyError,
    read_int,
    read_name,
    refuse_unknown_fields,
)
from streamapp.domain.triggers import Limits, Trigger, TriggerError, parse_limits, parse_triggers

ACTIVITIES: Final = frozenset(
    {"READ_METADATA", "UPDATE_METADATA", "LIST", "DOWNLOAD", "MANAGE", "UPLOAD", "DELETE", "STAGE"}
)
# What a delegated token may ever carry: reading the event's file, writing into the output area.
READ_ACTIVITIES: Final = frozenset({"DOWNLOAD", "READ_METADATA"})
WRITE_ACTIVITIES: Final = frozenset({"UPLOAD", "READ_METADATA", "LIST"})
DEFAULT_READ: Final = ("DOWNLOAD", "READ_METADATA")
DEFAULT_WRITE: Final = ("UPLOAD", "READ_METADATA")
DEFAULT_TOKEN_LIFETIME_S: Final = 600
# A tenant's Kafka principal (SASL/SCRAM user name; docs/kafka-security.md): ``User:`` and a
# plain name, never the wildcard ``User:*`` or anything an ACL would read as a pattern.
KAFKA_PRINCIPAL_PATTERN: Final = re.compile(r"User:[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_KAFKA_PRINCIPALS: Final = 16


@dataclass(frozen=True, slots=True)
class Filters:
    types: frozenset[str] = frozenset()  # empty: every type
    paths: tuple[PathGlob, ...] = ()  # empty: every path
    min_size: int | None = None
    max_size: int | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    dataset: str
    filters: Filters = field(default_factory=Filters)
    read: tuple[str, ...] = DEFAULT_READ
    write: tuple[str, ...] = ()
    token_lifetime_s: int = DEFAULT_TOKEN_LIFETIME_S


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    tenant: str
    subscriptions: tuple[Subscription, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    limits: Limits = field(default_factory=Limits)
    kafka_principals: tuple[str, ...] = ()  # who reads tenant.<t>.events straight from Kafka
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    by_dataset: Mapping[str, Subscription] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_dataset", {s.dataset: s for s in self.subscriptions})

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)

    def canonical(self) -> dict[str, Any]:
        """The policy with every default applied: two specs that mean the same compare equal."""
        return {
            "tenant": self.tenant,
            "subscriptions": sorted(
                (
                    {
                        "dataset": s.dataset,
                        "types": sorted(s.filters.types),
                        "paths": [g.pattern for g in s.filters.paths],
                        "min_size": s.filters.min_size,
                        "max_size": s.filters.max_size,
                        "read": list(s.read),
                        "write": list(s.write),
                        "token_lifetime": s.token_lifetime_s,
                    }
                    for s in self.subscriptions
                ),
                key=lambda sub: str(sub["dataset"]),
            ),
            "triggers": [_canonical_trigger(t) for t in self.triggers],
            "limits": {
                "concurrency": self.limits.concurrency,
                "rate_per_minute": self.limits.rate_per_minute,
            },
            "kafka_principals": sorted(self.kafka_principals),
        }


def _canonical_trigger(trigger: Trigger) -> dict[str, Any]:
    return {
        "name": trigger.name,
        "action": str(trigger.action),
        "api_host": trigger.api_host,
        "credentials": trigger.credentials,
        "datasets": sorted(trigger.datasets),
        "types": sorted(trigger.types),
        "paths": [g.pattern for g in trigger.paths],
        "params": dict(trigger.params),
        "blocking": trigger.blocking,
        "timeout": trigger.timeout_s,
        "retry_failed": trigger.retry_failed,
        "storage_url": trigger.storage_url,
    }


_TENANT_FIELDS = {
    "tenant",
    "token_lifetime",
    "subscriptions",
    "triggers",
    "limits",
    "kafka_principals",
}
_SUBSCRIPTION_FIELDS = {
    "dataset",
    "types",
    "paths",
    "min_size",
    "max_size",
    "read",
    "write",
    "token_lifetime",
}


def _activities(
    value: Any, where: str, allowed: frozenset[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    if value is None or value is True:
        return default
    if value is False:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(where, "must be true, false, or a list of activities")
    unknown = [v for v in value if v not in ACTIVITIES]
    if unknown:
        raise PolicyError(where, f"unknown activity {unknown[0]!r}")
    wider = [v for v in value if v not in allowed]
    if wider:
        raise PolicyError(
            where, f"{wider[0]} cannot be delegated here (allowed: {', '.join(sorted(allowed))})"
        )
    return tuple(dict.fromkeys(value))


def _lifetime(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    return read_int(value, where, minimum=1)


def _filters(obj: Mapping[str, Any], where: str) -> Filters:
    """A subscription's filters: event types, path globs and size bounds (each optional)."""
    types_value = obj.get("types")
    types: frozenset[str] = frozenset()
    if types_value is not None:
        if not isinstance(types_value, list):
            raise PolicyError(f"{where}.types", "must be a list of event types")
        known = {t.value for t in EventType}
        for i, kind in enumerate(types_value):
            if kind not in known:
                raise PolicyError(f"{where}.types[{i}]", f"unknown event type {kind!r}")
        types = frozenset(types_value)
    paths_value = obj.get("paths")
    globs: list[PathGlob] = []
    if paths_value is not None:
        if not isinstance(paths_value, list):
            raise PolicyError(f"{where}.paths", "must be a list of globs")
        for i, pattern in enumerate(paths_value):
            if not isinstance(pattern, str):
                raise PolicyError(f"{where}.paths[{i}]", "must be a string")
            try:
                globs.append(PathGlob(pattern))
            except ValueError as exc:
                raise PolicyError(f"{where}.paths[{i}]", str(exc)) from None
    min_size = obj.get("min_size")
    max_size = obj.get("max_size")
    filters = Filters(
        types=types,
        paths=tuple(globs),
        min_size=None if min_size is None else read_int(min_size, f"{where}.min_size"),
        max_size=None if max_size is None else read_int(max_size, f"{where}.max_size"),
    )
    if (
        filters.min_size is not None
        and filters.max_size is not None
        and filters.min_size > filters.max_size
    ):
        raise PolicyError(f"{where}.max_size", "is smaller than min_size")
    return filters


def _subscription(obj: Any, where: str, default_lifetime: int) -> Subscription:
    if not isinstance(obj, Mapping):
        raise PolicyError(where, "must be an object")
    refuse_unknown_fields(obj, _SUBSCRIPTION_FIELDS, where)
    filters = _filters(obj, where)
    return Subscription(
        dataset=read_name(obj.get("dataset"), f"{where}.dataset"),
        filters=filters,
        read=_activities(obj.get("read"), f"{where}.read", READ_ACTIVITIES, DEFAULT_READ),
        write=_activities(
            obj.get("write", False), f"{where}.write", WRITE_ACTIVITIES, DEFAULT_WRITE
        ),
        token_lifetime_s=_lifetime(
            obj.get("token_lifetime"), f"{where}.token_lifetime", default_lifetime
        ),
    )


def principal_of_tenant(principal: str, tenant: str) -> bool:
    """A tenant's Kafka principals live in its own namespace: ``User:<tenant>`` or
    ``User:<tenant>@<suffix>`` ('@' is in no tenant name, so no two tenants' namespaces
    overlap, and no tenant can name a service's or another tenant's user)."""
    name = principal.removeprefix("User:")
    return name == tenant or (name.startswith(f"{tenant}@") and len(name) > len(tenant) + 1)


def _kafka_principals(value: Any, tenant: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError("kafka_principals", "must be a list of principals ('User:<name>')")
    if len(value) > MAX_KAFKA_PRINCIPALS:
        raise PolicyError("kafka_principals", f"at most {MAX_KAFKA_PRINCIPALS} principals")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not KAFKA_PRINCIPAL_PATTERN.fullmatch(item):
            raise PolicyError(
                f"kafka_principals[{i}]",
                f"{item!r} is not a Kafka principal 'User:<name>' (letters, digits, '.', '_', "
                "'@', '-'; ≤ 128; no wildcard)",
            )
        if not principal_of_tenant(item, tenant):
            raise PolicyError(
                f"kafka_principals[{i}]",
                f"{item!r} is not in tenant {tenant}'s namespace: 'User:{tenant}' or "
                f"'User:{tenant}@<suffix>'",
            )
    return tuple(dict.fromkeys(value))


def parse_tenant(obj: Any) -> TenantPolicy:
    if not isinstance(obj, Mapping):
        raise PolicyError("tenant", "must be an object")
    refuse_unknown_fields(obj, _TENANT_FIELDS, "")
    tenant = read_name(obj.get("tenant"), "tenant")
    default_lifetime = _lifetime(
        obj.get("token_lifetime"), "token_lifetime", DEFAULT_TOKEN_LIFETIME_S
    )
    subs_value = obj.get("subscriptions", [])
    if not isinstance(subs_value, list):
        raise PolicyError("subscriptions", "must be a list")
    subscriptions = [
        _subscription(item, f"subscriptions[{i}]", default_lifetime)
        for i, item in enumerate(subs_value)
    ]
    seen: set[str] = set()
    for i, sub in enumerate(subscriptions):
        if sub.dataset in seen:
            raise PolicyError(f"subscriptions[{i}].dataset", f"{sub.dataset!r} appears twice")
        seen.add(sub.dataset)
    try:
        triggers = parse_triggers(obj.get("triggers"), PathGlob)
        limits = parse_limits(obj.get("limits"))
    except TriggerError as exc:
        raise PolicyError(exc.field, exc.message) from None
    for i, trigger in enumerate(triggers):
        strays = sorted(trigger.datasets - seen)
        if strays:
            # a trigger only narrows what the tenant receives; it cannot reach other datasets
            raise PolicyError(
                f"triggers[{i}].datasets", f"{strays[0]!r} is not among the subscriptions"
            )
    return TenantPolicy(
        tenant=tenant,
        subscriptions=tuple(subscriptions),
        triggers=triggers,
        limits=limits,
        kafka_principals=_kafka_principals(obj.get("kafka_principals"), tenant),
        raw=dict(obj),
    )
