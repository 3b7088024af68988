"""Issuing the delegated tokens that travel with an authorized event.

Where the authority comes from, in order (files under ``STREAMAPP_SECRETS_DIR``, never on a
topic, never logged):
1. ``macaroons/tenants/<tenant>.macaroon`` — a base macaroon the operator obtained from the
   storage for the tenant; attenuated here.
2. ``macaroons/datasets/<dataset>.macaroon`` — a base macaroon for the dataset; attenuated.
3. ``macaroon-root.key`` — the storage's root key, for storages that share it (and tests).
With none of them the event is delivered without tokens and the reason is attached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent, EventType
from streamapp.domain.tokens import (
    Grant,
    MintedToken,
    TokenError,
    attenuate,
    lifetime_until,
    mint_with_root_key,
)

# A read token only makes sense while the object exists.
TOKEN_EVENT_TYPES = frozenset(
    {EventType.CREATED, EventType.READ, EventType.STAGED, EventType.ARCHIVED}
)
_CACHE_SECONDS = 5.0


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
            write = self._mint(delivery, Grant(output, delivery.write, expires), now, problems)
        return DelegatedTokens(read, write, tuple(problems))

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
