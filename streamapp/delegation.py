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
a new token. Read tokens name one file each: minted per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent, EventType
from streamapp.domain.token_minting import (
    Grant,
    MintedToken,
    attenuate,
    lifetime_until,
    mint_with_root_key,
)
from streamapp.domain.tokens import TokenError

# A read token only makes sense while the object exists.
TOKEN_EVENT_TYPES = frozenset(
    {EventType.CREATED, EventType.READ, EventType.STAGED, EventType.ARCHIVED}
)
_CACHE_SECONDS = 5.0
_WRITE_TOKENS_KEPT = 4096  # distinct write grants remembered; cleared when full


@dataclass(frozen=True, slots=True)
class DelegatedTokens:
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

    def read(self, relative: str) -> bytes | None:
        now = self.clock()
        cached = self._cache.get(relative)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        try:
            content: bytes | None = (self.directory / relative).read_bytes()
        except OSError:
            content = None
        self._cache[relative] = (now, content)
        return content


@dataclass
class TokenIssuer:
    secrets: SecretFiles
    identifier: str
    location: str
    identity: str
    max_lifetime_s: int
    _write_tokens: dict[tuple[object, ...], tuple[MintedToken, datetime]] = field(
        default_factory=dict, repr=False
    )

    def issue(self, delivery: Delivery, event: CanonicalEvent, now: datetime) -> DelegatedTokens:
        subscription = delivery.subscription
        if event["type"] not in TOKEN_EVENT_TYPES:
            return DelegatedTokens()
        expires = lifetime_until(now, subscription.token_lifetime_s, self.max_lifetime_s)
        problems: list[str] = []
        read = write = None
        if subscription.read and delivery.read_refused is not None:
            problems.append(f"no read token: {delivery.read_refused}")
        elif subscription.read:
            read = self._mint(
                delivery, Grant(event["subject"], subscription.read, expires), now, problems
            )
        output = delivery.dataset.output
        if delivery.write_refused is not None:
            problems.append(f"no write token: {delivery.write_refused}")
        elif delivery.write and output is not None:  # granted by domain/authorize.write_grant
            write = self._write_token(
                delivery, Grant(output, delivery.write, expires), now, problems
            )
        return DelegatedTokens(read, write, tuple(problems))

    def _write_token(
        self, delivery: Delivery, grant: Grant, now: datetime, problems: list[str]
    ) -> MintedToken | None:
        """A write token minted for the same grant and authority, while at least half of its
        lifetime remains; else a new one."""
        key = (
            delivery.tenant,
            delivery.dataset.id,
            grant.path,
            grant.activities,
            grant.expires - now,
            self._authority(delivery),
        )
        kept = self._write_tokens.get(key)
        if kept is not None:
            earlier, minted_at = kept
            if earlier.expires - now >= (earlier.expires - minted_at) / 2:
                return earlier
        token = self._mint(delivery, grant, now, problems)
        if token is not None:
            if len(self._write_tokens) >= _WRITE_TOKENS_KEPT:
                self._write_tokens.clear()
            self._write_tokens[key] = (token, now)
        return token

    def _authority(self, delivery: Delivery) -> tuple[str, bytes] | None:
        """Which secret a token for ``delivery`` is made from, and its content."""
        for relative in (
            f"macaroons/tenants/{delivery.tenant}.macaroon",
            f"macaroons/datasets/{delivery.dataset.id}.macaroon",
            "macaroon-root.key",
        ):
            content = self.secrets.read(relative)
            if content is not None:
                return relative, content
        return None

    def _mint(
        self, delivery: Delivery, grant: Grant, now: datetime, problems: list[str]
    ) -> MintedToken | None:
        for relative in (
            f"macaroons/tenants/{delivery.tenant}.macaroon",
            f"macaroons/datasets/{delivery.dataset.id}.macaroon",
        ):
            base = self.secrets.read(relative)
            if base is not None:
                try:
                    return attenuate(base.decode("ascii", "replace").strip(), grant, now=now)
                except TokenError as exc:
                    problems.append(f"{relative.split('/')[1][:-1]} base macaroon: {exc}")
                    return None
        root_key = self.secrets.read("macaroon-root.key")
        if root_key is None:
            problems.append("no macaroon issuer configured for this dataset")
            return None
        try:
            return mint_with_root_key(
                grant,
                key=strip_trailing_newline(root_key),
                identifier=self.identifier,
                location=self.location,
                identity=self.identity or None,
            )
        except TokenError as exc:
            problems.append(f"root key: {exc}")
            return None


def strip_trailing_newline(secret: bytes) -> bytes:
    """A secret file's trailing newline is not part of the secret."""
    if secret.endswith(b"\r\n"):
        return secret[:-2]
    if secret.endswith(b"\n"):
        return secret[:-1]
    return secret
