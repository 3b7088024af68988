"""Minting and attenuating delegated tokens (dCache macaroons; caveat language: ``tokens``).

A token minted here is never wider than its grant: one file or one output area, the granted
activities (intersected with what a base macaroon allows), and an expiry no later than asked.
The fast path extends a prepared chain (``token_chain``), cached per base and grant; a base
macaroon that is not v1 goes through pymacaroons.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from pymacaroons import Macaroon
from pymacaroons.exceptions import MacaroonException

from streamapp.domain.policy import ACTIVITIES
from streamapp.domain.token_chain import ChainError, TokenPrefix, prefix_of, root_prefix
from streamapp.domain.tokens import (
    Scope,
    TokenError,
    as_path,
    chroot,
    deserialize,
    first_party_caveats,
    format_instant,
    has_prefix,
    path_segments,
    scope_of,
)

# The macaroon v1 wire format frames each caveat in a packet whose length is four hex digits
# (at most 65,535 bytes); a longer caveat cannot be serialized at all. Paths are held far
# below that (ingest refuses paths over 4,096 bytes), and so is every caveat we add.
MAX_CAVEAT_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class Grant:
    """What one delegated token may do: ``activities`` on ``path`` until ``expires``."""

    path: str
    activities: tuple[str, ...]
    expires: datetime


class MintedToken(NamedTuple):
    """A delegated token and what it grants (immutable: one object may serve several copies;
    a named tuple is made in a third of a frozen dataclass's time, once per token minted)."""

    token: str
    path: str
    activities: tuple[str, ...]
    expires: datetime  # the effective expiry: never later than the grant's


def mint_with_root_key(
    grant: Grant, *, key: bytes, identifier: str, location: str, identity: str | None = None
) -> MintedToken:
    """A new macaroon signed with the storage's root key (storages sharing it; tests)."""
    return root_key_token(
        grant.path,
        grant.activities,
        grant.expires,
        key=key,
        identifier=identifier,
        location=location,
        identity=identity,
    )


def root_key_token(
    path: str,
    activities: tuple[str, ...],
    expires: datetime,
    *,
    key: bytes,
    identifier: str,
    location: str,
    identity: str | None = None,
) -> MintedToken:
    """``mint_with_root_key`` of ``Grant(path, activities, expires)`` without making the
    grant (the issuer's path: once per event)."""
    if not activities:
        raise TokenError("a grant without activities needs no token")
    if not _names_a_segment(path):
        # without a path caveat a root-key token reaches the whole storage: never minted
        raise TokenError("a grant on the root '/' is never minted with the root key")
    chain = _root_activity_chain(key, identifier, location, identity or None, activities)
    return MintedToken(_extend_chain(chain, path, expires), path, activities, expires)


def _names_a_segment(path: str) -> bool:
    """``path`` resolved as dCache resolves a ``path:`` caveat (``chroot``: ``..`` stops at
    the root) names a segment, i.e. is not the whole storage. Without ``..`` (the common case,
    one C call each): a character besides ``/`` and ``.`` is in some segment, or a segment of
    three dots or more; with ``..`` the resolution decides (``/data/..`` is ``/``)."""
    if ".." in path:
        return bool(chroot([], path))
    return bool(path.strip("/.")) or bool(path_segments(path))


def attenuate(base_token: str, grant: Grant, *, now: datetime) -> MintedToken:
    """Narrow a base macaroon (obtained from the storage) to ``grant`` without its secret.

    The result intersects with what the base allows: a path outside the base's scope, an
    activity the base does not allow, or an expired base yields no token (``TokenError``).
    """
    return attenuate_to(base_token, grant.path, grant.activities, grant.expires, now=now)


def attenuate_to(
    base_token: str,
    path: str,
    activities: Sequence[str],
    expires: datetime,
    *,
    now: datetime,
) -> MintedToken:
    """``attenuate`` of ``Grant(path, activities, expires)`` without making the grant (the
    issuer's path: once per token; with a base macaroon per tenant, once per copy)."""
    base = _parsed_base(base_token)
    expiry = base.scope.expiry
    if expiry is not None and expiry <= now:
        raise TokenError("base macaroon has expired")
    if ".." in path and ".." in path_segments(path):
        # compared segment by segment, ``/data/exp/run/../../x`` would pass a base confined to
        # /data/exp and the storage resolve it to /data/exp/x: not the grant's file (events
        # never carry ``..``; found by a review, defence in depth as for root-key tokens)
        raise TokenError(f"{path} has a '..' segment: never attenuated")
    relative = _relative_within(path, base.confined)
    if relative is None:
        raise TokenError(f"{path} is outside the base macaroon's scope")
    granted = activities if type(activities) is tuple else tuple(activities)
    if base.listed is not None:
        granted = _listed_of(granted, base.listed)
    if not granted:
        raise TokenError("the base macaroon allows none of the granted activities")
    if base.prefix is not None:
        token = _extend(base.prefix, granted, relative, expires)
    else:  # not v1: pymacaroons serializes it (slow path)
        macaroon = base.macaroon.copy()  # add_first_party_caveat mutates: never the base
        for caveat in _grant_caveats(granted, relative, expires):
            macaroon.add_first_party_caveat(caveat)
        token = _serialize(macaroon)
    return MintedToken(token, path, granted, expires if expiry is None else min(expires, expiry))


@functools.lru_cache(maxsize=256)  # the copies of an event name one path: a hit for most
def _relative_within(path: str, confined: tuple[str, ...]) -> str | None:
    """``path`` relative to the base's ``confined`` directory (None: not at or below it)."""
    target = path_segments(path)
    if not has_prefix(target, confined):
        return None
    return as_path(target[len(confined) :])


@functools.lru_cache(maxsize=1024)
def _listed_of(activities: tuple[str, ...], listed: frozenset[str]) -> tuple[str, ...]:
    """Of ``activities``, those a base lists explicitly: dCache refuses an activity caveat
    that would enlarge the set (READ_METADATA being implied does not make it listable)."""
    return tuple(a for a in activities if a in listed)


@dataclass(frozen=True, slots=True, eq=False)
class _Base:
    macaroon: Macaroon
    scope: Scope
    prefix: TokenPrefix | None  # None: not extendable on the fast path
    confined: tuple[str, ...]  # the scope's root and path: a grant's path lies at or below
    listed: frozenset[str] | None  # the activities the base lists (None: unrestricted)


@functools.lru_cache(maxsize=1024)
def _parsed_base(token: str) -> _Base:
    """A base macaroon parsed once (its file is re-read on change; a new text is a new key)."""
    macaroon = deserialize(token)
    scope = scope_of(first_party_caveats(macaroon))
    try:
        prefix: TokenPrefix | None = prefix_of(macaroon)
    except ChainError:
        prefix = None
    listed = None if scope.activities is None else frozenset(scope.activities)
    return _Base(macaroon, scope, prefix, (*scope.root, *scope.path), listed)


@functools.lru_cache(maxsize=256)
def _root_chain(key: bytes, identifier: str, location: str, identity: str | None) -> TokenPrefix:
    try:
        prefix = root_prefix(key, identifier, location)
    except ChainError as exc:
        raise TokenError(str(exc)) from None
    if identity:
        caveat = f"id:{identity}"
        _check_caveat(caveat)
        prefix = _extended(prefix, caveat)
    return prefix


def _extended(prefix: TokenPrefix, caveat: str) -> TokenPrefix:
    try:
        return prefix.extended(caveat)
    except ChainError as exc:
        raise TokenError(f"macaroon cannot be serialized: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _with_activities(prefix: TokenPrefix, activities: tuple[str, ...]) -> TokenPrefix:
    """The chain up to a grant's activity caveat: the same for every event of a grant."""
    _check_activities(activities)
    caveat = f"activity:{','.join(activities)}"
    _check_caveat(caveat)
    return _extended(prefix, caveat)


@functools.lru_cache(maxsize=1024)
def _root_activity_chain(
    key: bytes, identifier: str, location: str, identity: str | None, activities: tuple[str, ...]
) -> TokenPrefix:
    """A root key's chain up to a grant's activity caveat: one cache lookup per token."""
    return _with_activities(_root_chain(key, identifier, location, identity), activities)


def _extend(prefix: TokenPrefix, activities: Sequence[str], path: str, expires: datetime) -> str:
    """``prefix`` with the grant's caveats (``_grant_caveats``' order): only the ``path:``
    caveat is per event; the chains through the activity and ``before:`` caveats are cached."""
    return _extend_chain(_with_activities(prefix, tuple(activities)), path, expires)


def _extend_chain(chain: TokenPrefix, path: str, expires: datetime) -> str:
    """A chain that ends with the activity caveat, with ``before:`` and then ``path:``.

    ``before:`` comes first so that the chain through it is shared by every token with the
    same expiry (the issuer's expiries are whole tenths of a second: a busy worker mints many
    per tenth) and a token costs one HMAC, its path's. First-party caveats are conjunctive: the
    order changes no token's reach; ``path:`` stays after every caveat of a base macaroon
    (a ``root:`` there is what it is relative to)."""
    # in UTC: two instants of one zone differing only in ``fold`` are equal as keys but an
    # hour apart (found by the adversary review)
    timed = _with_before(chain, expires if expires.tzinfo is UTC else expires.astimezone(UTC))
    try:
        if path == "/":
            return timed.token_of()
        return timed.token_of_one(_path_caveat(path))
    except ChainError as exc:
        raise TokenError(f"macaroon cannot be serialized: {exc}") from None


@functools.lru_cache(maxsize=1024)  # ~100 s of tenths per chain; an entry holds a base's bytes
def _with_before(chain: TokenPrefix, expires: datetime) -> TokenPrefix:
    """``chain`` with the ``before:`` caveat of ``expires`` (our own ASCII: no check)."""
    return _extended(chain, f"before:{format_instant(expires)}")


def _grant_caveats(activities: Sequence[str], path: str, expires: datetime) -> list[str]:
    _check_activities(activities)
    caveats = [f"activity:{','.join(activities)}", f"before:{format_instant(expires)}"]
    if path != "/":
        caveats.append(f"path:{path}")
    for caveat in caveats:
        _check_caveat(caveat)
    return caveats


@functools.lru_cache(maxsize=256)  # the copies of an event with a token each share its path
def _path_caveat(path: str) -> bytes:
    return _checked_caveat(f"path:{path}")


def _check_activities(activities: Sequence[str]) -> None:
    """Only dCache's activity names: a grant comes from a checked policy, but a base without
    an activity caveat would otherwise pass any name into the token (found by a review)."""
    unknown = set(activities) - ACTIVITIES
    if unknown:
        raise TokenError(f"unknown activity {sorted(unknown)[0]!r}")


def _checked_caveat(caveat: str) -> bytes:
    """``caveat`` as UTF-8 if it may be a caveat (``_check_caveat``); one encoding when it is."""
    try:
        data = caveat.encode("utf-8")
    except UnicodeEncodeError:
        data = b""  # a lone surrogate: _check_caveat says which limit it fails first
    if not data or len(data) > MAX_CAVEAT_BYTES or b"\n" in data or b"\x00" in data:
        _check_caveat(caveat)
    return data


def _check_caveat(caveat: str) -> None:
    size = len(caveat.encode("utf-8", "surrogatepass"))
    if size > MAX_CAVEAT_BYTES:
        raise TokenError(f"caveat of {size} bytes exceeds {MAX_CAVEAT_BYTES} bytes")
    if "\n" in caveat or "\x00" in caveat:
        raise TokenError("caveat contains a newline or NUL")
    try:
        caveat.encode("utf-8")
    except UnicodeEncodeError:
        raise TokenError("caveat is not valid UTF-8 (a lone surrogate)") from None


def _serialize(macaroon: Macaroon) -> str:
    try:
        return str(macaroon.serialize())
    except (MacaroonException, ValueError, UnicodeError) as exc:
        raise TokenError(f"macaroon cannot be serialized: {type(exc).__name__}") from None


def lifetime_until(now: datetime, seconds: int, cap_seconds: int) -> datetime:
    return now + _lifetime(seconds, cap_seconds)


@functools.lru_cache(maxsize=256)
def _lifetime(seconds: int, cap_seconds: int) -> timedelta:
    return timedelta(seconds=max(1, min(seconds, cap_seconds)))
