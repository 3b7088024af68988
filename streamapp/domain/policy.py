"""Dataset ownership and tenant policies: the records and their validation (globs: ``globs``).

Both arrive as JSON-like mappings (seed files, signed updates, table values) and are validated
once here into frozen dataclasses; a ``PolicyError`` names the field that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamapp.domain.events import EventType
from streamapp.domain.globs import PathGlob
from streamapp.domain.paths import (
    PathError,
    check_object_path,
    normalize_absolute_path,
    resolve_segments,
)
from streamapp.domain.triggers import Limits, Trigger, TriggerError, parse_limits, parse_triggers

NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
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


class PolicyError(ValueError):
    """A dataset or tenant policy that cannot be used; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- readers ---------------------------------------------------------------------------------


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise PolicyError(
            where, f"{value!r} is not a name (lower-case letters, digits, '.', '_', '-'; ≤ 63)"
        )
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError(where, "must be a list of names")
    names = tuple(_name(item, f"{where}[{i}]") for i, item in enumerate(value))
    return tuple(dict.fromkeys(names))


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(where, "must be an absolute path string")
    try:
        normal = normalize_absolute_path(value)
        if normal == "/":
            raise PolicyError(where, "the root '/' cannot be a dataset prefix or output area")
        return check_object_path(normal)  # the bounds every event path is held to
    except PathError as exc:
        raise PolicyError(where, str(exc)) from None


def _int(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(where, f"{value!r} is not an integer")
    if value < minimum:
        raise PolicyError(where, f"{value} is below {minimum}")
    return value


def _unknown_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise PolicyError(f"{prefix}{unknown[0]}", "unknown field")


# --- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str
    owner: str
    source: str
    prefixes: tuple[str, ...]
    output: str | None = None
    shared_with: tuple[str, ...] = ()
    write_shared_with: tuple[str, ...] = ()  # of shared_with: may also write into output

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "source": self.source,
            "prefixes": list(self.prefixes),
            "output": self.output,
            "shared_with": list(self.shared_with),
            "write_shared_with": list(self.write_shared_with),
        }

    @property
    def entitled(self) -> tuple[str, ...]:
        """The owner first, then the tenants it shares the dataset with."""
        return tuple(dict.fromkeys((self.owner, *self.shared_with)))

    def may_write(self, tenant: str) -> bool:
        """Write tokens go to the owner, and to a shared tenant only by a write share."""
        return tenant == self.owner or tenant in self.write_shared_with

    def seen_by(self, tenant: str) -> dict[str, Any]:
        """The dataset as ``tenant`` may see it: the owner sees whom it shares with; a tenant
        it is shared with sees its own access, not the other tenants' names."""
        if tenant == self.owner:
            return self.to_json()
        view = self.to_json()
        del view["shared_with"], view["write_shared_with"]
        view["access"] = "read-write" if self.may_write(tenant) else "read"
        return view


_DATASET_FIELDS = {
    "id",
    "owner",
    "source",
    "prefixes",
    "output",
    "shared_with",
    "write_shared_with",
}


def parse_dataset(obj: Any) -> Dataset:
    if not isinstance(obj, Mapping):
        raise PolicyError("dataset", "must be an object")
    _unknown_keys(obj, _DATASET_FIELDS, "")
    source = obj.get("source")
    if not isinstance(source, str) or not source or any(c.isspace() for c in source):
        raise PolicyError("source", "must be the storage's CloudEvents source URI")
    prefixes = obj.get("prefixes")
    if not isinstance(prefixes, list) or not prefixes:
        raise PolicyError("prefixes", "must be a non-empty list of absolute paths")
    normal = tuple(
        dict.fromkeys(_path(prefix, f"prefixes[{i}]") for i, prefix in enumerate(prefixes))
    )
    output = obj.get("output")
    owner = _name(obj.get("owner"), "owner")
    shared = tuple(t for t in _names(obj.get("shared_with"), "shared_with") if t != owner)
    write_shared = _names(obj.get("write_shared_with"), "write_shared_with")
    for i, tenant in enumerate(write_shared):
        if tenant != owner and tenant not in shared:
            raise PolicyError(f"write_shared_with[{i}]", f"{tenant!r} is not in shared_with")
    write_shared = tuple(t for t in write_shared if t != owner)
    if write_shared and output is None:
        raise PolicyError("write_shared_with", "needs an output area to write into")
    return Dataset(
        id=_name(obj.get("id"), "id"),
        owner=owner,
        source=source,
        prefixes=normal,
        output=None if output is None else _path(output, "output"),
        shared_with=shared,
        write_shared_with=write_shared,
    )


# --- tenant policies -------------------------------------------------------------------------


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
    return _int(value, where, minimum=1)


def _subscription(obj: Any, where: str, default_lifetime: int) -> Subscription:
    if not isinstance(obj, Mapping):
        raise PolicyError(where, "must be an object")
    _unknown_keys(obj, _SUBSCRIPTION_FIELDS, where)
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
        min_size=None if min_size is None else _int(min_size, f"{where}.min_size"),
        max_size=None if max_size is None else _int(max_size, f"{where}.max_size"),
    )
    if (
        filters.min_size is not None
        and filters.max_size is not None
        and filters.min_size > filters.max_size
    ):
        raise PolicyError(f"{where}.max_size", "is smaller than min_size")
    return Subscription(
        dataset=_name(obj.get("dataset"), f"{where}.dataset"),
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
    _unknown_keys(obj, _TENANT_FIELDS, "")
    tenant = _name(obj.get("tenant"), "tenant")
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


def relative_to(path: str, prefix: str) -> str | None:
    """``path`` relative to ``prefix`` on component boundaries, or None if not under it."""
    if path == prefix:
        return ""
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix) + 1 :]
    return None


def segments_of(path: str) -> Sequence[str]:
    return resolve_segments(path[1:], what="path") if path.startswith("/") else ()
