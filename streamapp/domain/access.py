"""Who is calling: bearer JWTs (WLCG Common JWT profile) verified against configured issuers,
and the mapping from their groups and claims to tenants and the admin role. Pure: the issuers'
key sets are handed in (``streamapp.web.auth`` loads and caches them).

Refusals carry a status (401: no valid token; 403: a valid token without the right) and a
*public* detail that never says why a signature or a key failed — that goes to the log only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from streamapp.domain.jwt_claims import malformed_reason

# Asymmetric algorithms only, unless a deployment explicitly adds HMAC for an issuer.
ASYMMETRIC: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC: Final = frozenset({"HS256", "HS384", "HS512"})
ANY_AUDIENCE: Final = "https://wlcg.cern.ch/jwt/v1/any"
REQUIRED_CLAIMS: Final = ("iss", "sub", "exp", "iat", "aud")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # always with fullmatch
# The one public detail of a 401 for a bad token: why it failed goes to the log only
_INVALID: Final = "the bearer token is not valid"


class AccessConfigError(ValueError):
    """The access configuration cannot be used; the message names the field."""


class AccessDenied(Exception):  # noqa: N818 - it is a verdict, not a failure of ours
    """A request that gets nothing: ``status`` 401, 403 (or 404), ``detail`` safe to show."""

    def __init__(self, status: int, detail: str, log_reason: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.log_reason = log_reason or detail


JWKS_CACHE_S = 6 * 3600  # WLCG profile: cache keys for hours, refetch on an unknown kid
JWKS_MIN_REFRESH_S = 60  # ...but not more often than this


@dataclass(frozen=True, slots=True)
class Issuer:
    issuer: str
    algorithms: frozenset[str]
    jwks_file: str | None = None
    jwks_url: str | None = None
    hmac_secret: bytes | None = None  # only with an explicit HS* algorithm


@dataclass(frozen=True, slots=True)
class Grant:
    """``group`` (exact wlcg.groups entry) or ``claim``/``value`` -> tenants and/or admin."""

    tenants: tuple[str, ...] = ()
    admin: bool = False
    group: str | None = None
    claim: str | None = None
    value: str | None = None
    # only tokens of this issuer; the config always sets it (a mapping without one binds to
    # the only issuer, and is refused when there are several); None applies to no token
    issuer: str | None = None

    def applies(self, claims: Mapping[str, Any]) -> bool:
        if self.issuer is None or claims.get("iss") != self.issuer:
            return False
        if self.group is not None:
            groups = claims.get("wlcg.groups")
            return isinstance(groups, list) and self.group in groups
        if self.claim is not None:
            found = claims.get(self.claim)
            if isinstance(found, list):
                return self.value in found
            if isinstance(found, str) and self.claim == "scope":
                return self.value in found.split()
            return found == self.value
        return False


@dataclass(frozen=True, slots=True)
class AccessConfig:
    audience: str
    issuers: tuple[Issuer, ...]
    mappings: tuple[Grant, ...] = ()
    leeway_s: int = 30
    jwks_cache_s: int = JWKS_CACHE_S
    jwks_min_refresh_s: int = JWKS_MIN_REFRESH_S

    def issuer(self, name: str) -> Issuer | None:
        return next((i for i in self.issuers if i.issuer == name), None)


def parse_access_config(obj: Any) -> AccessConfig:
    if not isinstance(obj, Mapping):
        raise AccessConfigError("access config: must be a table")
    audience = obj.get("audience")
    if not isinstance(audience, str) or not audience:
        raise AccessConfigError("audience: must be this service's audience string")
    issuers = [
        _parse_issuer(item, f"issuers[{i}]") for i, item in enumerate(obj.get("issuers") or [])
    ]
    if not issuers:
        raise AccessConfigError("issuers: at least one issuer is required")
    mappings = [
        _parse_mapping(item, f"mappings[{i}]", issuers)
        for i, item in enumerate(obj.get("mappings") or [])
    ]
    return AccessConfig(
        audience=audience,
        issuers=tuple(issuers),
        mappings=tuple(mappings),
        leeway_s=_seconds(obj, "leeway", 30),
        jwks_cache_s=_seconds(obj, "jwks_cache_seconds", JWKS_CACHE_S),
        jwks_min_refresh_s=_seconds(obj, "jwks_min_refresh_seconds", JWKS_MIN_REFRESH_S),
    )


def _parse_issuer(item: Any, where: str) -> Issuer:
    """One ``[[issuers]]`` entry: its algorithms and where its keys come from. HMAC needs an
    explicit HS* algorithm and a secret; an asymmetric algorithm needs a key set."""
    if not isinstance(item, Mapping) or not isinstance(item.get("issuer"), str):
        raise AccessConfigError(f"{where}.issuer: must be the issuer URL")
    listed = item.get("algorithms") or ["RS256", "ES256", "EdDSA"]
    if not isinstance(listed, list | tuple) or not all(isinstance(a, str) for a in listed):
        raise AccessConfigError(f"{where}.algorithms: must be a list of algorithm names")
    for name in ("jwks_file", "jwks_url", "hmac_secret"):
        if item.get(name) is not None and not isinstance(item.get(name), str):
            raise AccessConfigError(f"{where}.{name}: must be a string")
    algorithms = frozenset(listed)
    if "none" in {a.lower() for a in algorithms}:
        raise AccessConfigError(f"{where}.algorithms: 'none' is never accepted")
    unknown = algorithms - ASYMMETRIC - HMAC
    if unknown:
        raise AccessConfigError(f"{where}.algorithms: unknown {sorted(unknown)[0]!r}")
    secret = item.get("hmac_secret")
    if algorithms & HMAC and not secret:
        raise AccessConfigError(f"{where}.hmac_secret: required for HMAC algorithms")
    if secret and not algorithms & HMAC:
        raise AccessConfigError(f"{where}.hmac_secret: only with an HS* algorithm")
    if algorithms & ASYMMETRIC and not (item.get("jwks_file") or item.get("jwks_url")):
        raise AccessConfigError(f"{where}: jwks_file or jwks_url is required")
    return Issuer(
        issuer=item["issuer"],
        algorithms=algorithms,
        jwks_file=item.get("jwks_file"),
        jwks_url=item.get("jwks_url"),
        hmac_secret=secret.encode() if isinstance(secret, str) else None,
    )


def _parse_mapping(item: Any, where: str, issuers: Sequence[Issuer]) -> Grant:
    """One ``[[mappings]]`` entry: exactly one of group or claim/value, granting tenants and/or
    admin, bound to one issuer (``_mapping_issuer``)."""
    if not isinstance(item, Mapping):
        raise AccessConfigError(f"{where}: must be a table")
    tenants = tuple(item.get("tenants") or ())
    if not all(isinstance(t, str) and _NAME.fullmatch(t) for t in tenants):
        raise AccessConfigError(f"{where}.tenants: must be tenant names")
    if (item.get("group") is None) == (item.get("claim") is None):
        raise AccessConfigError(f"{where}: exactly one of group or claim")
    for name in ("group", "claim"):
        if item.get(name) is not None and not isinstance(item.get(name), str):
            raise AccessConfigError(f"{where}.{name}: must be a string")
    if item.get("claim") is not None and not isinstance(item.get("value"), str):
        raise AccessConfigError(f"{where}.value: required with claim")
    if not isinstance(item.get("admin", False), bool):
        raise AccessConfigError(f"{where}.admin: must be true or false")
    if not tenants and not item.get("admin"):
        raise AccessConfigError(f"{where}: grants nothing (tenants or admin)")
    return Grant(
        tenants=tenants,
        admin=bool(item.get("admin")),
        group=item.get("group"),
        claim=item.get("claim"),
        value=item.get("value"),
        issuer=_mapping_issuer(item, where, issuers),
    )


def _mapping_issuer(item: Mapping[str, Any], where: str, issuers: Sequence[Issuer]) -> str:
    """The issuer a mapping binds to: the one it names (which must be configured), or the only
    configured issuer. With several issuers a group name means nothing without its issuer (two
    identity providers may both have a ``/petra3``), so such a mapping is refused."""
    named = item.get("issuer")
    what = item.get("group") if item.get("group") is not None else item.get("claim")
    if named is None:
        if len(issuers) > 1:
            raise AccessConfigError(
                f"{where} ({what!r}): with more than one issuer configured, every mapping must "
                "name its issuer"
            )
        return issuers[0].issuer
    if not isinstance(named, str) or not any(i.issuer == named for i in issuers):
        raise AccessConfigError(f"{where}.issuer: {named!r} is not a configured issuer")
    return named


def _seconds(obj: Mapping[str, Any], name: str, default: int) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AccessConfigError(f"{name}: must be a whole number of seconds ≥ 0")
    return value


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    issuer: str
    tenants: frozenset[str] = frozenset()
    admin: bool = False
    groups: tuple[str, ...] = field(default=())

    def may_read(self, tenant: str) -> bool:
        return self.admin or tenant in self.tenants


def bearer_token(header: str | None) -> str:
    if not header:
        raise AccessDenied(401, "a bearer token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AccessDenied(401, "a bearer token is required")
    return token.strip()


def authenticate(
    token: str,
    config: AccessConfig,
    keys: Mapping[str, Sequence[jwt.PyJWK]],
    now: float,
) -> Principal:
    """Verify ``token`` (signature, issuer, audience, times, WLCG claims) and map it.

    ``keys``: issuer -> its current JWKS keys. Raises ``AccessDenied`` (401 for anything wrong
    with the token; 403 when it is valid but maps to nothing)."""
    header, unverified = _unverified(token)
    alg = header.get("alg")
    issuer = config.issuer(str(unverified.get("iss")))
    if issuer is None:
        raise AccessDenied(401, _INVALID, f"unknown issuer {unverified.get('iss')!r}")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        raise AccessDenied(401, _INVALID, f"algorithm {alg!r} not allowed")
    if alg in HMAC:
        assert issuer.hmac_secret is not None
        key: Any = issuer.hmac_secret
    else:
        key = _key_for(keys.get(issuer.issuer, ()), header.get("kid"), alg)
    claims = _verified_claims(token, key, alg, issuer=issuer, config=config, now=now)
    tenants, admin = _granted(claims, config.mappings)
    if not tenants and not admin:
        raise AccessDenied(403, "the token grants no access to this service")
    return Principal(
        subject=str(claims["sub"]),
        issuer=issuer.issuer,
        tenants=frozenset(tenants),
        admin=admin,
        groups=tuple(claims.get("wlcg.groups", [])),
    )


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token's header and claims, read without trusting them: only to pick the issuer and
    key, and to refuse what no valid token has before anything else looks at it."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AccessDenied(401, _INVALID, f"undecodable token: {exc}") from None
    malformed = malformed_reason(header, claims)
    if malformed:
        raise AccessDenied(401, _INVALID, malformed)
    return header, claims


def _verified_claims(
    token: str, key: Any, alg: str, *, issuer: Issuer, config: AccessConfig, now: float
) -> dict[str, Any]:
    """The claims once the signature, audience, issuer, times and WLCG claim types hold."""
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=[config.audience, ANY_AUDIENCE],
            issuer=issuer.issuer,
            leeway=config.leeway_s,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError:
        raise AccessDenied(401, "the bearer token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AccessDenied(401, _INVALID, "token not yet valid (nbf/iat)") from None
    except jwt.PyJWTError as exc:
        raise AccessDenied(401, _INVALID, f"{type(exc).__name__}: {exc}") from None
    if claims["iat"] > now + config.leeway_s:
        raise AccessDenied(401, _INVALID, "iat in the future")
    if "wlcg.ver" in claims and not isinstance(claims["wlcg.ver"], str):
        raise AccessDenied(401, _INVALID, "wlcg.ver is not a string")
    groups = claims.get("wlcg.groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AccessDenied(401, _INVALID, "wlcg.groups is not a list of strings")
    return claims


def _granted(claims: Mapping[str, Any], mappings: Sequence[Grant]) -> tuple[set[str], bool]:
    """The tenants and admin role all mappings that apply to ``claims`` grant together."""
    tenants: set[str] = set()
    admin = False
    for mapping in mappings:
        if mapping.applies(claims):
            tenants.update(mapping.tenants)
            admin = admin or mapping.admin
    return tenants, admin


def _key_for(keys: Sequence[jwt.PyJWK], kid: Any, alg: str) -> Any:
    for candidate in keys:
        if candidate.key_id == kid:
            algorithm = getattr(candidate, "algorithm_name", None)
            if algorithm and alg not in (algorithm, "EdDSA"):
                raise AccessDenied(401, _INVALID, "alg does not fit the key")
            return candidate.key
    raise AccessDenied(401, _INVALID, f"unknown kid {kid!r}")


# --- worker-to-worker requests -----------------------------------------------------------------
# A worker that forwards a view to the worker holding the data (the stats view) never forwards
# the caller's token: it vouches for the request itself, after its own check, with an HMAC over
# exactly what it asks for (method, path and query, tenant) and when, keyed by a secret every
# worker of the deployment shares. The peer trusts that request for that tenant only.

PEER_HEADER: Final = "X-Streamapp-Peer"
PEER_MAX_AGE_S: Final = 30  # a signed request is good for this long (either way: clock skew)
PEER_SECRET_MIN_BYTES: Final = 32
PEER_SUBJECT: Final = "streamapp-peer"
_PEER_VALUE: Final = re.compile(r"v1 (?P<at>[0-9]{1,12}) (?P<mac>[0-9a-f]{64})")


def _peer_mac(secret: bytes, method: str, target: str, tenant: str, at: int) -> str:
    message = "\n".join(("streamapp-peer-v1", method.upper(), target, tenant, str(at)))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign_peer_request(secret: bytes, method: str, target: str, tenant: str, now: float) -> str:
    """The ``X-Streamapp-Peer`` value for a request to ``target`` (path and query, exactly as
    sent) on behalf of a caller already allowed to read ``tenant``."""
    at = int(now)
    return f"v1 {at} {_peer_mac(secret, method, target, tenant, at)}"


def verify_peer_request(
    value: str, secret: bytes | None, method: str, target: str, *, tenant: str, now: float
) -> Principal:
    """The peer's vouching for ``tenant`` if ``value`` signs exactly this request, recently;
    else ``AccessDenied`` (401)."""
    refused = "the peer credential is not valid"
    if secret is None:
        raise AccessDenied(401, refused, "peer request, but no peer secret is configured here")
    found = _PEER_VALUE.fullmatch(value)
    if found is None:
        raise AccessDenied(401, refused, "malformed peer header")
    at = int(found["at"])
    if abs(now - at) > PEER_MAX_AGE_S:
        raise AccessDenied(401, refused, f"peer request signed {now - at:.0f} s from now")
    if not hmac.compare_digest(found["mac"], _peer_mac(secret, method, target, tenant, at)):
        raise AccessDenied(401, refused, "peer signature does not verify")
    return Principal(subject=PEER_SUBJECT, issuer=PEER_SUBJECT, tenants=frozenset({tenant}))
