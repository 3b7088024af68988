"""Issuing the delegated tokens that travel with an authorized event.

Where the authority comes from, in order (files under ``STREAMAPP_SECRETS_DIR``, never on a
topic, never logged):
1. ``macaroons/tenants/<tenant>.macaroon`` — a base macaroon the operator obtained from the
   storage for the tenant; attenuated here.
2. ``macaroons/datasets/<dataset>.macaroon`` — a base macaroon for the dataset; attenuated.
3. ``macaroon-root.key`` — the storage's root key, for storages that share it (and tests).
With none of them the event is delivered without tokens and the reason is attached.

Write tokens are reused: a write token names the dataset's output area, not the event, so the
one minted for (tenant, dataset, output area, activities, lifetime, authority) serves every
following event while at least half of its lifetime remains — the same grant, never a wider
one, and a token a consumer receives always has at least half its lifetime left. A changed
grant (activities, area, lifetime) or a rotated base macaroon or root key is a different key:
a new token. Read tokens name one file each: minted per event, once for the copies of the
event that share its inputs (authority, activities, lifetime): tenants sharing a dataset and
its secret get the same bytes a separate mint would give, and a copy with a read token only is
one shared (immutable) tokens object. A tenant with a base macaroon of its own never shares.
The authority of a copy is looked up per tenant (its own base macaroon), per dataset (the
dataset's) and once for the root key, each at most every few seconds, so a rotated or added
file is used within those seconds; no cache is keyed by (tenant, dataset) pairs, whose number
is the product of two large ones (10,000 datasets shared with 10 tenants each made every
lookup of such a cache a miss: three file reads per copy).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent, EventType
from streamapp.domain.token_minting import (
    MintedToken,
    attenuate_to,
    lifetime_until,
    root_key_token,
)
from streamapp.domain.tokens import TokenError
from streamapp.metrics import TOKEN_MINT_SECONDS

# A read token only makes sense while the object exists.
TOKEN_EVENT_TYPES = frozenset(
    {EventType.CREATED, EventType.READ, EventType.STAGED, EventType.ARCHIVED}
)
_CACHE_SECONDS = 5.0
_ROOT_KEY = "macaroon-root.key"
_TENANT_FILES = "macaroons/tenants"
_MACAROON_SUFFIX = ".macaroon"
# How many entries each cache keeps; past that the oldest entry goes (not the whole cache:
# with more (tenant, dataset) pairs than a cache holds, clearing it when full made every
# lookup a miss, three file reads per copy). Sized for a facility's pairs, not for a bench.
_TENANTS_KEPT = 65536  # tenants with events (their own base macaroon or none)
_DATASETS_KEPT = 262144  # datasets with events (their base macaroon or none)
_WRITE_TOKENS_KEPT = 16384  # distinct write grants
_INTERNED_KEPT = 4096  # distinct secret files


class DelegatedTokens(NamedTuple):
    """An event copy's tokens (immutable: one object may serve several tenants' copies; a
    named tuple is made in a third of a frozen dataclass's time, once or twice per event)."""

    read: MintedToken | None = None
    write: MintedToken | None = None
    problems: tuple[str, ...] = ()


@dataclass
class SecretFiles:
    """Reads secret files with a short cache, so a rotated file is picked up within seconds."""

    directory: Path
    clock: Callable[[], float] = time.monotonic
    # keyed by the relative name: no path is built while the cached content is fresh
    _cache: dict[str, tuple[float, bytes | None]] = field(default_factory=dict)

    def read(self, relative: str, *, fresh: bool = False) -> bytes | None:
        """The file's content (None: unreadable), read again if ``fresh`` or older than the
        cache's few seconds."""
        now = self.clock()
        cached = self._cache.get(relative)
        if not fresh and cached is not None and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        try:
            content: bytes | None = (self.directory / relative).read_bytes()
        except OSError:
            content = None
        if not fresh:  # a fresh read is the caller's to keep (the issuer keeps its lookups)
            self._cache[relative] = (now, content)
        return content

    def names(self, relative_directory: str, suffix: str) -> frozenset[str]:
        """The names, without ``suffix``, of the entries of a directory that end with it (none
        if it cannot be listed). Read at each call: callers keep it for their few seconds."""
        try:
            with os.scandir(self.directory / relative_directory) as entries:
                return frozenset(
                    entry.name[: -len(suffix)] for entry in entries if entry.name.endswith(suffix)
                )
        except OSError:
            return frozenset()


@dataclass(frozen=True, slots=True, eq=False)
class Authority:
    """The secret a (tenant, dataset)'s tokens are made from: ``relative`` names its file.
    One object per (file, content) (``TokenIssuer`` interns them), so identity is equality:
    the token caches' keys hash it without a Python-level ``__hash__``."""

    relative: str
    content: bytes
    key: bytes  # a root key's secret: ``content`` without its file's trailing newline
    text: str  # a base macaroon's file text (its parse is cached by it); "" for the root key


@dataclass
class TokenIssuer:
    secrets: SecretFiles
    identifier: str
    location: str
    identity: str
    max_lifetime_s: int
    # Expiries are rounded down to this many microseconds (a divisor of a second): tokens of
    # one step share their chain through ``before:`` (domain/token_minting), so each costs one
    # HMAC. A tenth of a second for the authorization stage; the sink, which mints one token
    # per call to renew one, keeps the caveat's millisecond (a renewal is a new token).
    expiry_step_us: int = 100_000
    # grant -> the token, when minted, the last instant it is handed out again
    _write_tokens: OrderedDict[tuple[object, ...], tuple[MintedToken, datetime, datetime]] = field(
        default_factory=OrderedDict, repr=False
    )
    _interned: OrderedDict[tuple[str, bytes], Authority] = field(
        default_factory=OrderedDict, repr=False
    )
    # name -> when looked up (secrets' clock), the authority its file holds (None: no file)
    _tenant_files: OrderedDict[str, tuple[float, Authority | None]] = field(
        default_factory=OrderedDict, repr=False
    )
    _dataset_files: OrderedDict[str, tuple[float, Authority | None]] = field(
        default_factory=OrderedDict, repr=False
    )
    _root_file: tuple[float, Authority | None] = field(default=(float("-inf"), None), repr=False)
    _tenant_names: tuple[float, frozenset[str]] = field(
        default=(float("-inf"), frozenset()), repr=False
    )
    # The event whose copies are being issued (together by ``issue_event``, or one after the
    # other by ``issue``; another event in between only costs a recomputation): its read
    # tokens, its read-only copies' tokens by what they depend on, its expiries by lifetime.
    _event: CanonicalEvent | None = field(default=None, repr=False)
    _event_now: datetime | None = field(default=None, repr=False)
    _event_subject: str = field(default="", repr=False)
    _event_type: str = field(default="", repr=False)
    _event_wants_tokens: bool = field(default=False, repr=False)
    _read_tokens: dict[tuple[object, ...], MintedToken] = field(default_factory=dict, repr=False)
    _read_only_copies: dict[tuple[object, ...], DelegatedTokens] = field(
        default_factory=dict, repr=False
    )
    _expiries: dict[int, datetime] = field(default_factory=dict, repr=False)  # by lifetime
    _current_until: float = field(default=float("-inf"), repr=False)  # still_current

    def __post_init__(self) -> None:
        if not 0 < self.expiry_step_us <= 1_000_000 or 1_000_000 % self.expiry_step_us:
            raise ValueError("expiry_step_us must divide a second (1..1000000 microseconds)")

    def issue(self, delivery: Delivery, event: CanonicalEvent, now: datetime) -> DelegatedTokens:
        """The tokens of one copy of ``event``. Copies of one event issued one after the other
        share what they can (the fields above); the clock is read per copy: an event's copies
        may be minutes apart (a slow broker), and a rotated file must be used within the
        lookup's seconds of each copy."""
        return self.issue_event((delivery,), event, now)[0]

    def issue_event(
        self, deliveries: Sequence[Delivery], event: CanonicalEvent, now: datetime
    ) -> list[DelegatedTokens]:
        """The tokens of each of ``deliveries`` (copies of ``event``), in their order: what
        ``issue`` gives for each in turn at one instant of the clock, with the per-event work
        done once — an event's copies prepared together, as the authorization agent does (at
        ten tenants per event the per-copy overhead was most of what minting cost, so this
        loop is written out)."""
        if now.tzinfo is not UTC:  # a lifetime added in a zone's wall time may cross a DST hour
            now = now.astimezone(UTC)
        subject, kind = event["subject"], event["type"]
        if (  # the first copy of an event (a dict changed in place counts as another)
            event is not self._event
            or now != self._event_now
            or subject != self._event_subject
            or kind != self._event_type
        ):
            self._event, self._event_now = event, now
            self._event_subject, self._event_type = subject, kind
            self._event_wants_tokens = kind in TOKEN_EVENT_TYPES
            self._read_tokens.clear()
            self._read_only_copies.clear()
            self._expiries.clear()
        if not self._event_wants_tokens:
            self._current_until = float("inf")  # no token, no file behind it
            return [_NO_TOKENS] * len(deliveries)
        clock = self.secrets.clock()
        fresh_for = _CACHE_SECONDS
        tenant_files = self._tenant_files
        read_only_copies = self._read_only_copies
        # tenants with a base macaroon of their own (often none: then no lookup per copy)
        with_own = self._tenants_with_files(clock)
        oldest = self._tenant_names[0]  # the oldest lookup these tokens rest on
        shared: dict[str, tuple[float, Authority | None]] = {}  # by dataset (one, normally)
        copies = []
        for delivery in deliveries:
            authority = None
            if with_own and delivery.tenant in with_own:
                cached = tenant_files.get(delivery.tenant)
                if cached is None or clock - cached[0] >= fresh_for:
                    cached = self._tenant_file(delivery.tenant, clock)
                authority = cached[1]
                oldest = min(oldest, cached[0])
            if authority is None:  # no base macaroon of its own: the dataset's, or the root key
                dataset_id = delivery.dataset.id
                fallback = shared.get(dataset_id)
                if fallback is None:
                    fallback = shared[dataset_id] = self._dataset_or_root(dataset_id, clock)
                    oldest = min(oldest, fallback[0])
                authority = fallback[1]
            if delivery.write_refused is not None or (
                delivery.write and delivery.dataset.output is not None
            ):
                copies.append(self._tokens(delivery, event, now, authority))
                continue
            # A copy with a read token only is a function of the event, the instant, the
            # authority, the read activities and lifetime, and a refusal: the copies of one
            # event for tenants sharing those get one tokens object (most of a shared
            # dataset's copies).
            subscription = delivery.subscription
            key = (
                authority,
                subscription.read,
                subscription.token_lifetime_s,
                delivery.read_refused,
            )
            tokens = read_only_copies.get(key)
            if tokens is None:
                tokens = read_only_copies[key] = self._tokens(delivery, event, now, authority)
            copies.append(tokens)
        self._current_until = oldest + fresh_for
        return copies

    def still_current(self) -> bool:
        """Whether every file lookup behind the last ``issue_event`` is still within its few
        seconds. A caller that sends an event's copies one by one (awaiting the broker between
        them) issues the rest alone (``issue``) once this is false, so an added, rotated or
        removed file is used within those seconds for each copy, however slow the sends."""
        return self.secrets.clock() < self._current_until

    def _tokens(
        self,
        delivery: Delivery,
        event: CanonicalEvent,
        now: datetime,
        authority: Authority | None,
    ) -> DelegatedTokens:
        subscription = delivery.subscription
        lifetime = subscription.token_lifetime_s
        expires = self._expiries.get(lifetime)
        if expires is None:  # once per lifetime and event
            expires = _rounded_down(
                lifetime_until(now, lifetime, self.max_lifetime_s), self.expiry_step_us
            )
            self._expiries[lifetime] = expires
        problems: list[str] = []
        read = write = None
        if subscription.read and delivery.read_refused is not None:
            problems.append(f"no read token: {delivery.read_refused}")
        elif subscription.read:
            read = self._read_token(
                authority, event["subject"], subscription.read, expires, now=now, problems=problems
            )
        output = delivery.dataset.output
        if delivery.write_refused is not None:
            problems.append(f"no write token: {delivery.write_refused}")
        elif delivery.write and output is not None:  # granted by domain/authorize.write_grant
            write = self._write_token(
                delivery, authority, output, expires, now=now, problems=problems
            )
        return DelegatedTokens(read, write, tuple(problems))

    def _read_token(
        self,
        authority: Authority | None,
        path: str,
        activities: tuple[str, ...],
        expires: datetime,
        *,
        now: datetime,
        problems: list[str],
    ) -> MintedToken | None:
        """The read token of this grant from this authority, minted once for all the copies
        of an event that share them: tenants whose tokens come from a dataset macaroon or the
        root key with the same activities and lifetime (every input of the token is in the key,
        so the bytes are those minting again would give; ``expires`` carries the event's
        instant). Kept for the event's copies only: another event names another file.
        A failure is not kept: each copy says why."""
        key = (authority, activities, path, expires)
        token = self._read_tokens.get(key)
        if token is None:
            token = self._mint(authority, path, activities, expires, now=now, problems=problems)
            if token is not None:
                self._read_tokens[key] = token
        return token

    def _write_token(
        self,
        delivery: Delivery,
        authority: Authority | None,
        path: str,
        expires: datetime,
        *,
        now: datetime,
        problems: list[str],
    ) -> MintedToken | None:
        """A write token minted for the same grant and authority, while at least half of its
        lifetime remains; else a new one."""
        activities = delivery.write
        key = (
            delivery.tenant,
            delivery.dataset.id,
            path,
            activities,
            delivery.subscription.token_lifetime_s,
            self.max_lifetime_s,  # a lowered cap is another grant
            authority,
        )
        kept = self._write_tokens.get(key)
        if kept is not None:
            earlier, minted_at, half_life = kept
            # minted_at <= now: a clock stepped back must not stretch a token past its lifetime
            if minted_at <= now <= half_life:
                return earlier
        token = self._mint(authority, path, activities, expires, now=now, problems=problems)
        if token is not None:
            # the last instant at which at least half of its lifetime remains
            half_life = token.expires - (token.expires - now) / 2
            _keep(self._write_tokens, key, (token, now, half_life), _WRITE_TOKENS_KEPT)
        return token

    # The authority of a copy, in the order of the module's docstring: each file looked up at
    # most every few seconds (``clock``: the secrets' clock), not per copy — three file names
    # per token were measurable.
    def _tenants_with_files(self, clock: float) -> frozenset[str]:
        """The tenants whose own base macaroon file exists, listed at most every few seconds:
        a file added or removed is seen within them, as a changed one is (``_tenant_file``)."""
        listed = self._tenant_names
        if clock - listed[0] >= _CACHE_SECONDS:
            names = self.secrets.names(_TENANT_FILES, _MACAROON_SUFFIX)
            listed = self._tenant_names = (clock, names)
        return listed[1]

    def _tenant_file(self, tenant: str, clock: float) -> tuple[float, Authority | None]:
        entry = (clock, self._file_authority(f"{_TENANT_FILES}/{tenant}{_MACAROON_SUFFIX}"))
        _keep(self._tenant_files, tenant, entry, _TENANTS_KEPT)
        return entry

    def _dataset_or_root(self, dataset_id: str, clock: float) -> tuple[float, Authority | None]:
        """The dataset's base macaroon, else the root key, and when the older of the lookups
        it rests on was made."""
        cached = self._dataset_files.get(dataset_id)
        if cached is None or clock - cached[0] >= _CACHE_SECONDS:
            cached = (clock, self._file_authority(f"macaroons/datasets/{dataset_id}.macaroon"))
            _keep(self._dataset_files, dataset_id, cached, _DATASETS_KEPT)
        if cached[1] is not None:
            return cached
        root = self._root_file
        if clock - root[0] >= _CACHE_SECONDS:
            root = self._root_file = (clock, self._file_authority(_ROOT_KEY))
        return min(cached[0], root[0]), root[1]

    def _file_authority(self, relative: str) -> Authority | None:
        """The authority ``relative`` holds now (None: no such file). One object per (file,
        content): the token caches' keys compare authorities by identity."""
        content = self.secrets.read(relative, fresh=True)  # the lookups' age is the bound
        if content is None:
            return None
        found = self._interned.get((relative, content))
        if found is None:
            found = Authority(
                relative,
                content,
                strip_trailing_newline(content),
                "" if relative == _ROOT_KEY else content.decode("ascii", "replace").strip(),
            )
            _keep(self._interned, (relative, content), found, _INTERNED_KEPT)
        return found

    def _mint(
        self,
        authority: Authority | None,
        path: str,
        activities: tuple[str, ...],
        expires: datetime,
        *,
        now: datetime,
        problems: list[str],
    ) -> MintedToken | None:
        """A token for ``activities`` on ``path`` until ``expires`` from ``authority``, or None
        with the reason in ``problems``. The histogram times tokens minted (not copies served
        from a cache, not refusals)."""
        if authority is None:
            problems.append("no macaroon issuer configured for this dataset")
            return None
        started = time.perf_counter()
        if authority.relative != _ROOT_KEY:
            try:
                token = attenuate_to(authority.text, path, activities, expires, now=now)
            except TokenError as exc:
                problems.append(f"{authority.relative.split('/')[1][:-1]} base macaroon: {exc}")
                return None
        else:
            try:
                token = root_key_token(
                    path,
                    activities,
                    expires,
                    key=authority.key,
                    identifier=self.identifier,
                    location=self.location,
                    identity=self.identity or None,
                )
            except TokenError as exc:
                problems.append(f"root key: {exc}")
                return None
        TOKEN_MINT_SECONDS.observe(time.perf_counter() - started)
        return token


_NO_TOKENS = DelegatedTokens()
K = TypeVar("K")
V = TypeVar("V")


def _keep(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Remember ``value``; past ``limit`` entries the oldest one goes."""
    cache[key] = value
    cache.move_to_end(key)  # a refreshed entry is the newest
    if len(cache) > limit:
        cache.popitem(last=False)


def _rounded_down(expires: datetime, step_us: int) -> datetime:
    """``expires`` rounded down to a multiple of ``step_us`` within its second: never later
    than asked (a lifetime is at least a second, a step at most one)."""
    return expires.replace(microsecond=expires.microsecond - expires.microsecond % step_us)


def strip_trailing_newline(secret: bytes) -> bytes:
    """A secret file's trailing newline is not part of the secret."""
    if secret.endswith(b"\r\n"):
        return secret[:-2]
    if secret.endswith(b"\n"):
        return secret[:-1]
    return secret
