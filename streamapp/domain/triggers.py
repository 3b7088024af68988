"""Triggers: which of a tenant's authorized events invoke which OpenWhisk action. Pure: no I/O,
no clocks, no faust. The call itself and how its answer is judged: ``invocations``.

A trigger lives in the tenant policy (signed like the rest of it). Credentials are only a *name*
here, and always one of the policy's own tenant: the worker resolves it inside that tenant's
namespace of its secrets (``streamapp.clients.openwhisk``), so no policy can name another
tenant's key. ``api_host`` must also be in the operator's allow-list (``allowed_hosts``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit

import orjson

from streamapp.domain.events import EventType

# OpenWhisk entity names: start with a letter, digit or underscore; then also '@', '.', '-', ' '
# (docs/reference.md "Fully qualified names"); we refuse the space to keep URLs plain.
_ENTITY: Final = r"[A-Za-z0-9_][A-Za-z0-9_@.\-]{0,255}"
_ACTION_PATTERN: Final = re.compile(
    rf"/(?P<ns>{_ENTITY})/(?:(?P<pkg>{_ENTITY})/)?(?P<act>{_ENTITY})"
)
# Top-level names of the invocation body (``invocations.invocation_params``): no params override.
RESERVED_PARAMETERS: Final = frozenset({"event", "read", "write", "streamapp"})
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_TIMEOUT_S: Final = 60  # OpenWhisk's default action time limit


class TriggerError(ValueError):
    """A trigger or limits entry that cannot be used; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ActionRef:
    namespace: str
    package: str | None
    name: str

    @classmethod
    def parse(cls, text: Any) -> ActionRef:
        match = _ACTION_PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not /namespace/[package/]action")
        return cls(match["ns"], match["pkg"], match["act"])

    @property
    def path(self) -> str:
        """The REST path of the invoke call (without the query)."""
        action = f"{self.package}/{self.name}" if self.package else self.name
        return (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/actions/{quote(action, safe='/')}"
        )

    def __str__(self) -> str:
        return (
            f"/{self.namespace}/{self.package}/{self.name}"
            if self.package
            else (f"/{self.namespace}/{self.name}")
        )


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    action: ActionRef
    api_host: str
    credentials: str
    datasets: frozenset[str] = frozenset()  # empty: every dataset the tenant subscribes to
    types: frozenset[str] = frozenset()  # empty: every type
    paths: tuple[Any, ...] = ()  # PathGlob, relative to the dataset root; empty: every path
    params: Mapping[str, Any] = field(default_factory=dict)
    blocking: bool = False
    timeout_s: int = DEFAULT_TIMEOUT_S
    retry_failed: int = 0  # how often a failed *action* (502, result.error) is tried again
    storage_url: str | None = None  # base URL the file is read from (WebDAV door, S3 endpoint)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-tenant limits, set below the OpenWhisk namespace limits by the operator."""

    concurrency: int = DEFAULT_CONCURRENCY
    rate_per_minute: int | None = None  # None: no rate limit of our own (429s still obeyed)


_TRIGGER_FIELDS = {
    "name",
    "action",
    "api_host",
    "credentials",
    "datasets",
    "types",
    "paths",
    "params",
    "blocking",
    "timeout",
    "retry_failed",
    "storage_url",
}
_LIMIT_FIELDS = {"concurrency", "rate_per_minute"}
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # always with fullmatch


def _http_url(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TriggerError(where, "must be an http(s) URL")
    try:
        # urlsplit raises ValueError on a bad IPv6 literal ("http://[::1") or a netloc that
        # NFKC-normalizes into another (a fullwidth solidus before @); .port on a port out of range
        parts = urlsplit(value)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise TriggerError(where, f"{value[:200]!r} is not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise TriggerError(where, f"{value!r} is not an http(s) URL without query or fragment")
    if "@" in parts.netloc:
        raise TriggerError(where, "credentials do not belong in the URL; name them instead")
    if not host or port == 0 or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise TriggerError(where, f"{value[:200]!r} has no usable host and port")
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TriggerError(where, f"{value[:200]!r}: [{host}] is not an IPv6 address") from None
    return value.rstrip("/")


def _positive(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TriggerError(where, f"must be an integer ≥ {minimum}")
    return value


def parse_trigger(obj: Any, where: str, glob: Any) -> Trigger:
    """One ``[[triggers]]`` entry. ``glob`` builds a path glob (``policy.PathGlob``).

    Fields are checked in a fixed order; the first bad one is the error."""
    if not isinstance(obj, Mapping):
        raise TriggerError(where, "must be an object")
    unknown = sorted(set(obj) - _TRIGGER_FIELDS)
    if unknown:
        raise TriggerError(f"{where}.{unknown[0]}", "unknown field")
    name = _name(obj.get("name"), f"{where}.name")
    action = _action(obj.get("action"), f"{where}.action")
    credentials = _credentials(obj.get("credentials"), f"{where}.credentials")
    datasets = _datasets(obj.get("datasets", []), f"{where}.datasets")
    types = _types(obj.get("types", []), f"{where}.types")
    globs = _globs(obj.get("paths", []), f"{where}.paths", glob)
    params = _params(obj.get("params", {}), f"{where}.params")
    blocking = obj.get("blocking", False)
    if not isinstance(blocking, bool):
        raise TriggerError(f"{where}.blocking", "must be true or false")
    storage_url = obj.get("storage_url")
    return Trigger(
        name=name,
        action=action,
        api_host=_http_url(obj.get("api_host"), f"{where}.api_host"),
        credentials=credentials,
        datasets=datasets,
        types=types,
        paths=globs,
        params=params,
        blocking=blocking,
        timeout_s=_positive(obj.get("timeout", DEFAULT_TIMEOUT_S), f"{where}.timeout", minimum=1),
        retry_failed=_positive(obj.get("retry_failed", 0), f"{where}.retry_failed", minimum=0),
        storage_url=None if storage_url is None else _http_url(storage_url, f"{where}.storage_url"),
    )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise TriggerError(where, "must be a name (lower-case letters, digits, . _ -)")
    return value


def _action(value: Any, where: str) -> ActionRef:
    try:
        return ActionRef.parse(value)
    except ValueError as exc:
        raise TriggerError(where, str(exc)) from None


def _credentials(value: Any, where: str) -> str:
    """A credential *name*: anything path- or key-like is refused with its own reason."""
    if isinstance(value, str) and any(c in value for c in "/\\:"):
        raise TriggerError(
            where,
            "names one of this tenant's own credentials: a plain name, never a path, another "
            "tenant's credential or a key",
        )
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise TriggerError(
            where, "must be the *name* of one of this tenant's credentials held by the workers"
        )
    return value


def _datasets(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(d, str) and _NAME.fullmatch(d) for d in value
    ):
        raise TriggerError(where, "must be a list of dataset ids")
    return frozenset(value)


def _types(value: Any, where: str) -> frozenset[str]:
    known = {t.value for t in EventType}
    if not isinstance(value, list) or not all(t in known for t in value):
        raise TriggerError(where, f"must be a list of event types ({', '.join(sorted(known))})")
    return frozenset(value)


def _globs(value: Any, where: str, glob: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TriggerError(where, "must be a list of globs")
    globs = []
    for i, pattern in enumerate(value):
        try:
            globs.append(glob(pattern))
        except ValueError as exc:
            raise TriggerError(f"{where}[{i}]", str(exc)) from None
    return tuple(globs)


def _params(value: Any, where: str) -> dict[str, Any]:
    """Extra parameters, sent beside what streamapp sends and never in place of it."""
    if not isinstance(value, Mapping):
        raise TriggerError(where, "must be a table of extra parameters")
    clash = sorted(RESERVED_PARAMETERS & set(value))
    if clash:
        raise TriggerError(f"{where}.{clash[0]}", "is reserved for what streamapp sends")
    try:  # they are sent as JSON (orjson): e.g. integers within 64 bits, string keys
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise TriggerError(
            where, f"must be JSON-serializable (integers within 64 bits): {exc}"
        ) from None
    return dict(value)


def parse_triggers(value: Any, glob: Any) -> tuple[Trigger, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TriggerError("triggers", "must be a list")
    triggers = tuple(parse_trigger(item, f"triggers[{i}]", glob) for i, item in enumerate(value))
    seen: set[str] = set()
    for i, trigger in enumerate(triggers):
        if trigger.name in seen:
            raise TriggerError(f"triggers[{i}].name", f"{trigger.name!r} appears twice")
        seen.add(trigger.name)
    return triggers


def parse_limits(value: Any) -> Limits:
    if value is None:
        return Limits()
    if not isinstance(value, Mapping):
        raise TriggerError("limits", "must be a table")
    unknown = sorted(set(value) - _LIMIT_FIELDS)
    if unknown:
        raise TriggerError(f"limits.{unknown[0]}", "unknown field")
    rate = value.get("rate_per_minute")
    return Limits(
        concurrency=_positive(
            value.get("concurrency", DEFAULT_CONCURRENCY), "limits.concurrency", minimum=1
        ),
        rate_per_minute=None
        if rate is None
        else _positive(rate, "limits.rate_per_minute", minimum=1),
    )


# --- matching ----------------------------------------------------------------------------------


def matching_triggers(
    triggers: Sequence[Trigger], event: Mapping[str, Any], relative: str | None
) -> list[Trigger]:
    """The triggers an authorized event fires, in policy order. Triggers can only narrow what
    the tenant already receives: the event is already authorized for this tenant."""
    matched = []
    for trigger in triggers:
        if trigger.datasets and event.get("dataset") not in trigger.datasets:
            continue
        if trigger.types and event.get("type") not in trigger.types:
            continue
        if trigger.paths and (
            relative is None or not any(g.matches(relative) for g in trigger.paths)
        ):
            continue
        matched.append(trigger)
    return matched
