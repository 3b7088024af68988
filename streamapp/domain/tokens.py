"""dCache-compatible macaroons read as dCache reads them: caveats, scope, inspection, verification.

Caveat language (docs/formats.md §5, dCache's MacaroonContext): first-party caveats
``key:value``; an unknown key invalidates the macaroon. ``activity:`` sets intersect and
READ_METADATA is implied by any other activity; ``before:`` expires; ``path:`` caveats resolve
relative to each other, chroot-like (``..`` cannot climb out); ``root:`` narrows the namespace
and later paths are relative to it; ``ip:`` lists addresses/CIDRs; ``max-upload:`` bytes;
``id:``, ``iid:`` and ``home:`` carry context only.

Minting and attenuation build on this: ``token_minting``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pymacaroons import Macaroon, Verifier
from pymacaroons.exceptions import (
    MacaroonDeserializationException,
    MacaroonException,
)

from streamapp.domain.instants import parse_aware, rfc3339_utc
from streamapp.domain.policy import ACTIVITIES

KNOWN_CAVEATS: Final = frozenset(
    {"home", "root", "path", "activity", "id", "iid", "before", "ip", "max-upload"}
)


class TokenError(ValueError):
    """A token that cannot be parsed, or a grant that cannot be minted."""


# --- paths with chroot semantics -------------------------------------------------------------


def path_segments(path: str) -> list[str]:
    """The path's segments, without empty ones and ``.`` (``..`` is kept: see ``chroot``)."""
    return [s for s in path.split("/") if s not in ("", ".")]


def chroot(base: Sequence[str], value: str) -> list[str]:
    """``value`` resolved below ``base`` even when absolute; ``..`` stops at ``base``."""
    result = list(base)
    floor = len(base)
    for segment in path_segments(value):
        if segment == "..":
            if len(result) > floor:
                result.pop()
            continue
        result.append(segment)
    return result


def has_prefix(path: Sequence[str], prefix: Sequence[str]) -> bool:
    """Whether ``path`` lies at or below ``prefix``, segment by segment."""
    return len(path) >= len(prefix) and list(path[: len(prefix)]) == list(prefix)


def as_path(segments: Sequence[str]) -> str:
    """Segments joined into an absolute path (no segments: ``/``)."""
    return "/" + "/".join(segments)


# --- scope: what a chain of caveats allows ---------------------------------------------------


@dataclass(slots=True)
class Scope:
    """The context dCache extracts from a macaroon's caveats."""

    root: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # relative to root
    activities: set[str] | None = None  # None: unrestricted
    expiry: datetime | None = None
    ip: list[list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = field(default_factory=list)
    max_upload: int | None = None
    identity: str | None = None
    issue_id: str | None = None
    home: list[str] = field(default_factory=list)

    @property
    def namespace_path(self) -> str:
        """The directory or file all access is confined to, in the full namespace."""
        return as_path([*self.root, *self.path])

    @property
    def allowed_activities(self) -> set[str]:
        if self.activities is None:
            return set(ACTIVITIES)
        return self.activities | {"READ_METADATA"} if self.activities else set()

    def apply(self, caveat: str) -> None:
        """Fold one caveat into the scope, raising ``TokenError`` where dCache would refuse."""
        key, sep, value = caveat.partition(":")
        if not sep:
            raise TokenError(f"caveat {caveat!r} is not key:value")
        if key not in KNOWN_CAVEATS:
            raise TokenError(f"unknown caveat {key!r}")
        if key == "activity":
            names = {a.strip() for a in value.split(",") if a.strip()}
            unknown = names - ACTIVITIES
            if unknown:
                raise TokenError(f"unknown activity {sorted(unknown)[0]!r}")
            self.activities = names if self.activities is None else self.activities & names
        elif key == "before":
            moment = parse_instant(value)
            self.expiry = moment if self.expiry is None else min(self.expiry, moment)
        elif key == "path":
            self.path = chroot(self.path, value)
        elif key == "root":
            self._apply_root(value)
        elif key == "home":
            self.home = chroot(self.root, value)
        elif key == "ip":
            self.ip.append(_networks(value))
        elif key == "max-upload":
            try:
                limit = int(value)
            except ValueError:
                raise TokenError(f"bad max-upload {value!r}") from None
            if limit <= 0:
                raise TokenError("max-upload must be positive")
            self.max_upload = limit if self.max_upload is None else min(self.max_upload, limit)
        elif key == "id":
            if not value:
                raise TokenError("empty id caveat")
            self.identity = value
        else:  # iid
            self.issue_id = value

    def _apply_root(self, value: str) -> None:
        delta = chroot([], value)
        compare = delta[: len(self.path)] if len(self.path) < len(delta) else delta
        if not has_prefix(self.path, compare):
            raise TokenError("root extends outside of path")
        self.path = self.path[len(compare) :]
        self.home = self.home[len(delta) :] if has_prefix(self.home, delta) else []
        self.root = chroot(self.root, value)

    def permits_path(self, path: str) -> bool:
        """``path`` is resolved first, as dCache does: ``/d/f/../g`` is ``/d/g``."""
        return has_prefix(chroot([], path), [*self.root, *self.path])

    def permits_ip(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return all(any(ip in net for net in networks) for networks in self.ip)


def _networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(v.strip(), strict=False) for v in value.split(",") if v]
    except ValueError:
        raise TokenError(f"bad ip caveat {value!r}") from None


def parse_instant(value: str) -> datetime:
    try:
        return parse_aware(value)
    except ValueError as exc:
        if "offset" in str(exc):
            raise TokenError(f"timestamp {value!r} has no zone") from None
        raise TokenError(f"bad ISO 8601 timestamp {value!r}") from None


def format_instant(moment: datetime) -> str:
    """dCache's form: ``2019-04-17T09:51:22.840Z``."""
    if moment.tzinfo is not UTC:  # equal instants of one zone may differ by an hour (fold)
        moment = moment.astimezone(UTC)
    return _formatted_utc(moment)


@functools.lru_cache(maxsize=256)
def _formatted_utc(moment: datetime) -> str:
    """Kept for a few instants: each copy of an event states its tokens' expiry
    (``tokenexpires``), and a reused write token's and the event's read token's alternate;
    the issuer's expiries are whole tenths, so they repeat for a tenth."""
    return rfc3339_utc(moment, always_milliseconds=True)


def deserialize(token: str) -> Macaroon:
    text = token.strip()
    try:
        macaroon = Macaroon.deserialize(text)
    except (MacaroonDeserializationException, MacaroonException, ValueError, IndexError) as exc:
        raise TokenError(f"not a macaroon: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pymacaroons raises assorted errors on junk input
        raise TokenError(f"not a macaroon: {type(exc).__name__}") from None
    # pymacaroons accepts cut-off serializations; a whole macaroon has an identifier and a
    # 32-byte signature
    signature = macaroon.signature
    if (
        not macaroon.identifier
        or not isinstance(signature, str)
        or len(signature) != 64
        or any(c not in "0123456789abcdef" for c in signature)
    ):
        raise TokenError("not a macaroon: truncated or incomplete")
    return macaroon


def first_party_caveats(macaroon: Macaroon) -> list[str]:
    caveats = []
    for caveat in macaroon.caveats:
        if not caveat.first_party():
            raise TokenError("third-party caveats are not supported")
        caveat_id = caveat.caveat_id
        caveats.append(caveat_id if isinstance(caveat_id, str) else caveat_id.decode())
    return caveats


def scope_of(caveats: Iterable[str]) -> Scope:
    scope = Scope()
    for caveat in caveats:
        scope.apply(caveat)
    return scope


# --- inspection and verification -------------------------------------------------------------


def inspect(token: str) -> dict[str, Any]:
    macaroon = deserialize(token)
    caveats = first_party_caveats(macaroon)
    return {
        "location": macaroon.location,
        "identifier": macaroon.identifier,
        "caveats": caveats,
        "signature": macaroon.signature,
    }


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    reason: str | None = None
    scope: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"valid": self.valid}
        if self.reason is not None:
            body["reason"] = self.reason
        return body | self.scope


def verify(
    token: str,
    *,
    key: bytes,
    path: str,
    activity: str,
    at: datetime,
    client_ip: str | None = None,
) -> Verdict:
    """Judge ``token`` as dCache would for ``activity`` on ``path`` at time ``at``."""
    if activity not in ACTIVITIES:
        return Verdict(False, f"unknown activity {activity!r}")
    try:
        macaroon = deserialize(token)
        caveats = first_party_caveats(macaroon)
        scope = scope_of(caveats)
    except TokenError as exc:
        return Verdict(False, str(exc))
    verifier = Verifier()
    verifier.satisfy_general(lambda _caveat: True)  # each caveat was judged above
    try:
        verifier.verify(macaroon, key)
    except MacaroonException:
        return Verdict(False, "signature does not match the secret")
    except Exception as exc:  # noqa: BLE001 - pymacaroons raises assorted errors on junk input
        return Verdict(False, f"signature check failed: {type(exc).__name__}")
    details = {
        "path": scope.namespace_path,
        "activities": sorted(scope.allowed_activities),
        "expires": format_instant(scope.expiry) if scope.expiry else None,
    }
    if scope.expiry is not None and at > scope.expiry:
        return Verdict(False, f"expired at {format_instant(scope.expiry)}", details)
    if activity not in scope.allowed_activities:
        return Verdict(False, f"activity {activity} not allowed", details)
    if not scope.permits_path(path):
        return Verdict(False, f"path {path} outside {scope.namespace_path}", details)
    if client_ip is not None and not scope.permits_ip(client_ip):
        return Verdict(False, f"client address {client_ip} not allowed", details)
    return Verdict(True, None, details)
