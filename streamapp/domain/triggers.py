"""Triggers: which of a tenant's authorized events invoke which OpenWhisk action, and how the
outcome of one invocation attempt is judged and retried. Pure: no I/O, no clocks, no faust.

A trigger lives in the tenant policy (signed like the rest of it). Credentials are only a *name*
here, and always one of the policy's own tenant: the worker resolves it inside that tenant's
namespace of its secrets (``streamapp.clients.openwhisk``), so no policy can name another
tenant's key. ``api_host`` must be in the operator's allow-list (``AllowedHosts``), checked when
a policy is applied and again before every call. Anything an endpoint answers reaches records
and dead-letter headers only as an ``excerpt`` (bounded, control characters and secrets removed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote, urlsplit

import orjson

from streamapp.domain.events import EventType
from streamapp.domain.instants import parse_aware

# OpenWhisk entity names: start with a letter, digit or underscore; then also '@', '.', '-', ' '
# (docs/reference.md "Fully qualified names"); we refuse the space to keep URLs plain.
_ENTITY: Final = r"[A-Za-z0-9_][A-Za-z0-9_@.\-]{0,255}"
_ACTION_PATTERN: Final = re.compile(
    rf"/(?P<ns>{_ENTITY})/(?:(?P<pkg>{_ENTITY})/)?(?P<act>{_ENTITY})"
)
MAX_PARAMETER_BYTES: Final = 1_048_576  # OpenWhisk's limit on the invocation body
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
    """One ``[[triggers]]`` entry. ``glob`` builds a path glob (``policy.PathGlob``)."""
    if not isinstance(obj, Mapping):
        raise TriggerError(where, "must be an object")
    unknown = sorted(set(obj) - _TRIGGER_FIELDS)
    if unknown:
        raise TriggerError(f"{where}.{unknown[0]}", "unknown field")
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TriggerError(f"{where}.name", "must be a name (lower-case letters, digits, . _ -)")
    try:
        action = ActionRef.parse(obj.get("action"))
    except ValueError as exc:
        raise TriggerError(f"{where}.action", str(exc)) from None
    credentials = obj.get("credentials")
    if isinstance(credentials, str) and any(c in credentials for c in "/\\:"):
        raise TriggerError(
            f"{where}.credentials",
            "names one of this tenant's own credentials: a plain name, never a path, another "
            "tenant's credential or a key",
        )
    if not isinstance(credentials, str) or not _NAME.fullmatch(credentials):
        raise TriggerError(
            f"{where}.credentials",
            "must be the *name* of one of this tenant's credentials held by the workers",
        )
    datasets = obj.get("datasets", [])
    if not isinstance(datasets, list) or not all(
        isinstance(d, str) and _NAME.fullmatch(d) for d in datasets
    ):
        raise TriggerError(f"{where}.datasets", "must be a list of dataset ids")
    types = obj.get("types", [])
    known = {t.value for t in EventType}
    if not isinstance(types, list) or not all(t in known for t in types):
        raise TriggerError(
            f"{where}.types", f"must be a list of event types ({', '.join(sorted(known))})"
        )
    paths = obj.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise TriggerError(f"{where}.paths", "must be a list of globs")
    globs = []
    for i, pattern in enumerate(paths):
        try:
            globs.append(glob(pattern))
        except ValueError as exc:
            raise TriggerError(f"{where}.paths[{i}]", str(exc)) from None
    params = obj.get("params", {})
    if not isinstance(params, Mapping):
        raise TriggerError(f"{where}.params", "must be a table of extra parameters")
    clash = sorted(RESERVED_PARAMETERS & set(params))
    if clash:
        raise TriggerError(f"{where}.params.{clash[0]}", "is reserved for what streamapp sends")
    try:  # they are sent as JSON (orjson): e.g. integers within 64 bits, string keys
        orjson.dumps(params)
    except orjson.JSONEncodeError as exc:
        raise TriggerError(
            f"{where}.params", f"must be JSON-serializable (integers within 64 bits): {exc}"
        ) from None
    blocking = obj.get("blocking", False)
    if not isinstance(blocking, bool):
        raise TriggerError(f"{where}.blocking", "must be true or false")
    storage_url = obj.get("storage_url")
    return Trigger(
        name=name,
        action=action,
        api_host=_http_url(obj.get("api_host"), f"{where}.api_host"),
        credentials=credentials,
        datasets=frozenset(datasets),
        types=frozenset(types),
        paths=tuple(globs),
        params=dict(params),
        blocking=blocking,
        timeout_s=_positive(obj.get("timeout", DEFAULT_TIMEOUT_S), f"{where}.timeout", minimum=1),
        retry_failed=_positive(obj.get("retry_failed", 0), f"{where}.retry_failed", minimum=0),
        storage_url=None if storage_url is None else _http_url(storage_url, f"{where}.storage_url"),
    )


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


# --- matching and the invocation body ---------------------------------------------------------


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


_TOKEN_ATTRIBUTES = ("readtoken", "writetoken", "writepath", "tokenexpires", "tokenerror")


def invocation_params(event: Mapping[str, Any], trigger: Trigger, tenant: str) -> dict[str, Any]:
    """The JSON body of the invoke call: references and tokens, never file contents.

    ``event`` is the CloudEvent without the token attributes; ``read``/``write`` hold the tokens
    and the URLs they open (when the trigger names the storage's base URL)."""
    plain = {k: v for k, v in event.items() if k not in _TOKEN_ATTRIBUTES}
    path = str(event.get("subject", ""))
    read: dict[str, Any] = {"path": path, "token": event.get("readtoken")}
    write: dict[str, Any] = {"path": event.get("writepath"), "token": event.get("writetoken")}
    if trigger.storage_url is not None:
        read["url"] = trigger.storage_url + quote(path)
        if write["path"]:
            write["url"] = trigger.storage_url + quote(str(write["path"]))
    return {
        **trigger.params,
        "event": plain,
        "read": read,
        "write": write,
        "streamapp": {
            "tenant": tenant,
            "trigger": trigger.name,
            "tokenexpires": event.get("tokenexpires"),
            "tokenerror": event.get("tokenerror"),
        },
    }


TOKEN_MARGIN_S: Final = 30  # time for the action to start and open the file


def tokens_expire_during_call(expires: Any, now: datetime, timeout_s: int) -> bool:
    """Would the event's tokens expire before a call made ``now`` could use them? Then they
    are minted again from the same grant (an event held back by an outage or throttling)."""
    if not isinstance(expires, str):
        return False  # no tokens (e.g. a deletion): nothing to renew
    try:
        moment = parse_aware(expires)
    except ValueError:
        return True
    return moment <= now + timedelta(seconds=timeout_s + TOKEN_MARGIN_S)


def idempotency_key(tenant: str, event_id: str, trigger: str) -> str:
    """One action per event per trigger: the key of the success record that prevents a second."""
    return f"{tenant}/{trigger}/{event_id}"


# --- judging one attempt -----------------------------------------------------------------------


class Outcome(StrEnum):
    SUCCESS = "success"  # accepted (202) or ran and succeeded (200)
    ACTION_FAILED = "action_failed"  # the action ran and failed: 502, or a result holding error
    THROTTLED = "throttled"  # 429: wait and try again, never dropped
    RETRYABLE = "retryable"  # 5xx, 408, 409, timeouts, connection errors: bounded retries
    REJECTED = "rejected"  # other 4xx: retrying cannot help; dead-letter at once


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    activation_id: str | None = None


def judge(status: int, body: Any, blocking: bool) -> Verdict:
    """Classify one HTTP answer of the invoke call (``body`` decoded JSON, or None)."""
    activation = body.get("activationId") if isinstance(body, Mapping) else None
    activation_id = activation if isinstance(activation, str) else None
    error = body.get("error") if isinstance(body, Mapping) else None
    if status == 202:
        return Verdict(Outcome.SUCCESS, "accepted", activation_id)
    if status == 200:
        if not blocking:
            return Verdict(Outcome.SUCCESS, "accepted", activation_id)
        response = body.get("response") if isinstance(body, Mapping) else None
        if isinstance(response, Mapping):
            result = response.get("result")
            if response.get("success") is False or (
                isinstance(result, Mapping) and "error" in result
            ):
                return Verdict(
                    Outcome.ACTION_FAILED,
                    excerpt(f"action failed: {response.get('status')}"),
                    activation_id,
                )
        elif isinstance(body, Mapping) and "error" in body:  # result=true answers the result only
            return Verdict(
                Outcome.ACTION_FAILED, "action failed: result holds error", activation_id
            )
        return Verdict(Outcome.SUCCESS, "completed", activation_id)
    if status == 502:
        return Verdict(
            Outcome.ACTION_FAILED, excerpt(f"action failed (502): {error!r}"), activation_id
        )
    if status == 429:
        return Verdict(Outcome.THROTTLED, excerpt(f"throttled: {error}"), activation_id)
    if status in (408, 409) or status >= 500:
        return Verdict(Outcome.RETRYABLE, excerpt(f"HTTP {status}: {error}"), activation_id)
    if 300 <= status < 400:  # never followed: a redirect could lead anywhere
        return Verdict(Outcome.REJECTED, f"HTTP {status}: redirect not followed", activation_id)
    return Verdict(Outcome.REJECTED, excerpt(f"HTTP {status}: {error}"), activation_id)


# --- what an endpoint answers, as it may be kept ----------------------------------------------

EXCERPT_CHARS: Final = 256
_REDACTED: Final = "[redacted]"
_SECRET_PATTERNS: Final = (
    # an Authorization header or its value, however quoted
    re.compile(
        r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|macaroon)\s+)?[^\s\"',;}\]]*"
    ),
    re.compile(r"(?i)\b(?:basic|bearer|macaroon)\s+[A-Za-z0-9+/=._~-]+"),
    # an OpenWhisk credential (uuid:key)
    re.compile(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:\S+"),
    # a long base64 run: a macaroon, a JWT part or a key; real messages have none
    re.compile(r"[A-Za-z0-9+/_=-]{64,}"),
)


def excerpt(text: Any, *, secrets: Iterable[str | None] = (), limit: int = EXCERPT_CHARS) -> str:
    """What may be kept of text an endpoint (or an exception) produced: at most ``limit``
    characters, only printable ones (no newlines, escapes, bidi overrides, unassigned…), no
    ``secrets`` (the call's tokens, say), nothing that looks like a credential or a token."""
    raw = text if isinstance(text, str) else str(text)
    window = raw[: limit * 8]  # bounded work on a huge answer; later text is cut anyway
    for secret in secrets:
        if secret and len(secret) >= 4:
            window = window.replace(secret, _REDACTED)
    # control, format (bidi overrides, zero-width), surrogate, private or unassigned: a space
    cleaned = "".join(c if c.isprintable() else " " for c in window)
    cleaned = " ".join(cleaned.split())
    for pattern in _SECRET_PATTERNS:
        cleaned = pattern.sub(_REDACTED, cleaned)
    if len(cleaned) > limit or len(raw) > len(window):
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


# --- the api_host allow-list -------------------------------------------------------------------

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allow-list entry: ``host[:port]`` (either scheme; without a port, the scheme's
    default) or an origin ``http(s)://host[:port]`` (that scheme only)."""

    host: str
    port: int | None = None
    scheme: str | None = None

    def __str__(self) -> str:
        where = f"[{self.host}]" if ":" in self.host else self.host
        where += f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{where}" if self.scheme else where


def _host(name: str | None) -> str:
    return (name or "").lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """The OpenWhisk API hosts triggers may call (``STREAMAPP_OPENWHISK_ALLOWED_HOSTS``).
    Hosts are compared literally (no DNS): list names whose DNS you control. Empty: none."""

    rules: tuple[HostRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        """Comma-separated entries; ``ValueError`` names a bad one."""
        rules = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                parts = urlsplit(item if "://" in item else "//" + item)
                port = parts.port
            except ValueError:
                raise ValueError(f"{item!r}: bad port or host") from None
            if (
                ("://" in item and parts.scheme not in _DEFAULT_PORTS)
                or not _host(parts.hostname)
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or "@" in parts.netloc
                or "*" in item
            ):
                raise ValueError(f"{item!r} is not host[:port] or http(s)://host[:port]")
            rules.append(HostRule(_host(parts.hostname), port, parts.scheme or None))
        return cls(tuple(rules))

    def allows(self, api_host: str) -> bool:
        try:  # a URL urlsplit cannot read is allowed nowhere
            parts = urlsplit(api_host)
            scheme = parts.scheme.lower()
            if scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
                return False
            port = parts.port or _DEFAULT_PORTS[scheme]
            host = _host(parts.hostname)
        except ValueError:
            return False
        for rule in self.rules:
            if rule.scheme not in (None, scheme) or rule.host != host:
                continue
            if (rule.port if rule.port is not None else _DEFAULT_PORTS[scheme]) == port:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(str(rule) for rule in self.rules) or "(none)"


def disallowed_hosts(triggers: Sequence[Trigger], allowed: AllowedHosts) -> list[tuple[int, str]]:
    """(index, api_host) of every trigger whose host is not allowed: a policy naming one is
    refused when applied."""
    return [(i, t.api_host) for i, t in enumerate(triggers) if not allowed.allows(t.api_host)]


# --- dead letters without tokens ---------------------------------------------------------------

TOKEN_FIELDS: Final = ("readtoken", "writetoken")
_TOKEN_TEXT: Final = re.compile(rb'("(?:readtoken|writetoken)"\s*:\s*)"(?:[^"\\]|\\.)*"')


def strip_tokens(value: bytes | None) -> tuple[bytes | None, bool]:
    """A tenant event without its tokens (``readtoken``, ``writetoken``), and whether any were
    removed: JSON objects lose the attributes (and are re-encoded); anything else has token
    values blanked where they appear as ``"readtoken": "…"``."""
    if not value:
        return value, False
    stripped = value
    try:
        decoded = orjson.loads(value)
    except (orjson.JSONDecodeError, RecursionError):
        decoded = None
    if isinstance(decoded, dict) and any(k in decoded for k in TOKEN_FIELDS):
        try:
            stripped = orjson.dumps({k: v for k, v in decoded.items() if k not in TOKEN_FIELDS})
        except (TypeError, RecursionError):
            stripped = value
    stripped = _TOKEN_TEXT.sub(rb'\1"[stripped]"', stripped)
    return stripped, stripped != value


_THROTTLE: Final = re.compile(
    r"Too many (?P<kind>requests in the last minute|concurrent requests in flight)"
    r"\s*\(count:\s*(?P<count>\d+),\s*allowed:\s*(?P<allowed>\d+)\)"
)


@dataclass(frozen=True, slots=True)
class Throttle:
    kind: str  # "rate" | "concurrency" | "unknown"
    allowed: int | None = None


def parse_throttle(message: str) -> Throttle:
    """OpenWhisk's 429 messages name the limit hit and its value."""
    match = _THROTTLE.search(message or "")
    if match is None:
        return Throttle("unknown")
    kind = "rate" if match["kind"].startswith("requests") else "concurrency"
    return Throttle(kind, int(match["allowed"]))
