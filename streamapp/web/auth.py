"""Authentication for the worker's web views: aiohttp middleware (installed by ``app.py``
through faust's ``web_application_options``) that verifies the bearer JWT of every request
(``streamapp.domain.access``) and puts the ``Principal`` on the request.

Deny by default: only the routes in ``PUBLIC_ROUTES`` answer without a token, judged by the
route aiohttp matched (not by the path's text), so a route added later — ours or faust's
(``/router``, ``/``, ``/graph``, …) — needs a token from the start; routes outside ``/v1/``
(faust's own views) need the admin role. A request another worker forwards (``PEER_ROUTES``)
carries that worker's HMAC over the request instead of the caller's token.

Configured by the TOML file named in ``STREAMAPP_ACCESS_CONFIG`` (schema in
``docs/access.md``); without it every protected request is refused: deny by default. Issuer
keys come from a JWKS file (re-read when it changes) or URL (cached for hours, fetched again
for an unknown ``kid`` at most once a minute, as the WLCG profile recommends). Errors are
``application/problem+json``; why a token failed goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web

from streamapp.domain.access import (
    PEER_HEADER,
    PEER_SECRET_MIN_BYTES,
    AccessConfig,
    AccessDenied,
    Issuer,
    Principal,
    authenticate,
    bearer_token,
    parse_access_config,
    verify_peer_request,
)
from streamapp.domain.policy_fields import NAME_PATTERN
from streamapp.settings import Settings, current

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
# set (True) on a request another worker forwarded and vouched for: answer it, never route on
FORWARDED = web.RequestKey("forwarded", bool)
# routes (as registered, aiohttp's ``canonical``) that answer without a token; /ui has no
# separate assets (its script and style are inline) and holds no data itself
PUBLIC_ROUTES = frozenset({"/health", "/metrics", "/openapi.json", "/ui"})
# routes a worker may forward to another with its peer credential (GET only)
PEER_ROUTES = frozenset({"/v1/tenants/{tenant}/stats"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str, **headers: str) -> web.Response:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class KeyStore:
    """The current JWKS keys of each configured issuer."""

    def __init__(self, config: AccessConfig) -> None:
        self._config = config
        self._keys: dict[str, list[jwt.PyJWK]] = {}
        self._loaded: dict[str, float] = {}
        self._mtimes: dict[str, float] = {}

    async def keys(self, force_issuer: str | None = None) -> dict[str, list[jwt.PyJWK]]:
        now = time.monotonic()
        for issuer in self._config.issuers:
            stale = now - self._loaded.get(issuer.issuer, -1e9)
            forced = force_issuer == issuer.issuer and stale > self._config.jwks_min_refresh_s
            if issuer.jwks_file:
                if stale < 5 and not forced:  # look at the file at most every 5 s
                    continue
                mtime, content = await asyncio.to_thread(
                    _read_if_changed, Path(issuer.jwks_file), self._mtimes.get(issuer.issuer)
                )
                self._loaded[issuer.issuer] = now
                if content is not None:
                    self._keys[issuer.issuer] = _parse_jwks(orjson.loads(content), issuer)
                    self._mtimes[issuer.issuer] = mtime
            elif issuer.jwks_url and (forced or stale > self._config.jwks_cache_s):
                try:
                    self._keys[issuer.issuer] = await _fetch_jwks(issuer)
                    self._loaded[issuer.issuer] = now
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("JWKS of %s not refreshed: %r", issuer.issuer, exc)
        return self._keys


def _read_if_changed(path: Path, known: float | None) -> tuple[float, bytes | None]:
    mtime = path.stat().st_mtime
    return mtime, (None if mtime == known else path.read_bytes())


def _parse_jwks(document: Any, issuer: Issuer) -> list[jwt.PyJWK]:
    keys = []
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("a JWKS key of %s is unusable: %s", issuer.issuer, exc)
            continue
        keys.append(key)
    return keys


async def _fetch_jwks(issuer: Issuer) -> list[jwt.PyJWK]:
    assert issuer.jwks_url is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(issuer.jwks_url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        response.raise_for_status()
        return _parse_jwks(orjson.loads(await response.read()), issuer)


class PeerSecret:
    """The secret the workers of a deployment share to vouch for forwarded requests:
    ``<STREAMAPP_SECRETS_DIR>/peer.key`` (at least 32 bytes; surrounding whitespace ignored),
    re-read when it changes. None when absent or too short (then nothing is forwarded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: tuple[int, int] | None = None
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes | None:
        with self._lock:
            try:
                stat = self.path.stat()
                known = (stat.st_mtime_ns, stat.st_size)
                if known != self._known:
                    value = self.path.read_bytes().strip()
                    self._known = known
                    self._value = value if len(value) >= PEER_SECRET_MIN_BYTES else None
                    if self._value is None:
                        log.error(
                            "peer secret %s is shorter than %d bytes: not used",
                            self.path,
                            PEER_SECRET_MIN_BYTES,
                        )
            except FileNotFoundError:
                self._known, self._value = None, None
            except OSError as exc:
                log.error("peer secret %s unreadable: %s", self.path, exc)
                self._known, self._value = None, None
            return self._value


_peer_secrets: dict[Path, PeerSecret] = {}


def peer_secret(settings: Settings) -> bytes | None:
    path = settings.secrets_dir / "peer.key"
    return _peer_secrets.setdefault(path, PeerSecret(path)).get()


def route_of(request: web.Request) -> str | None:
    """The route aiohttp matched, as registered (``/v1/tenants/{tenant}/stats``); None when
    nothing matched (404, 405)."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


class Access:
    """The configured verifier, loaded once per worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: AccessConfig | None = None
        self.store: KeyStore | None = None
        path = settings.access_config
        if path is None:
            log.warning("no STREAMAPP_ACCESS_CONFIG: every request with a token is refused")
            return
        try:
            self.config = parse_access_config(tomllib.loads(path.read_text()))
        # AccessConfigError is a ValueError; TypeError: a value of a type the parser missed
        except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
            log.error("access config %s unusable (%s): every token is refused", path, exc)
            return
        self.store = KeyStore(self.config)

    async def principal(self, request: web.Request) -> Principal:
        """Who is asking: a valid bearer token's principal, or a peer's vouching. Any failure
        while verifying — whatever raises it — is a 401 with the reason logged, never a 500."""
        try:
            peer = request.headers.get(PEER_HEADER)
            if peer is not None:
                return self._peer(request, peer)
            return await self._token(request)
        except AccessDenied:
            raise
        except Exception as exc:  # noqa: BLE001 - a token we cannot verify is not valid
            log.warning("verifying a token failed: %s: %s", type(exc).__name__, exc)
            raise AccessDenied(
                401, "the bearer token is not valid", f"verification failed: {type(exc).__name__}"
            ) from None

    def _peer(self, request: web.Request, value: str) -> Principal:
        if route_of(request) not in PEER_ROUTES or request.method != "GET":
            raise AccessDenied(401, "the peer credential is not valid", "peer header off its route")
        principal = verify_peer_request(
            value,
            peer_secret(self.settings),
            request.method,
            request.raw_path,
            tenant=request.match_info.get("tenant", ""),
            now=time.time(),
        )
        request[FORWARDED] = True
        return principal

    async def _token(self, request: web.Request) -> Principal:
        if self.config is None or self.store is None:
            raise AccessDenied(401, "authentication is not configured on this service")
        token = bearer_token(request.headers.get("Authorization"))
        keys = await self.store.keys()
        try:
            return authenticate(token, self.config, keys, time.time())
        except AccessDenied as denied:
            if "unknown kid" not in denied.log_reason:
                raise
            issuer = _unverified_issuer(token)
            keys = await self.store.keys(force_issuer=issuer)  # a key rotated in?
            return authenticate(token, self.config, keys, time.time())


def _unverified_issuer(token: str) -> str | None:
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("iss"))
    except jwt.PyJWTError:
        return None


_access: Access | None = None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    global _access  # noqa: PLW0603 - built on first request, when settings are final
    route = route_of(request)
    if route in PUBLIC_ROUTES:
        return await handler(request)
    if _access is None:
        _access = Access(current())
    # one place turns every refusal into a problem response: the token check here, and a
    # view's own check (``require_tenant``) raised from inside the handler
    try:
        request[PRINCIPAL] = _admitted(route, await _access.principal(request))
        return await handler(request)
    except AccessDenied as denied:
        log.info("refused %s %s: %s", request.method, request.path, denied.log_reason)
        title = HTTPStatus(denied.status).phrase
        extra = {"WWW-Authenticate": 'Bearer realm="streamapp"'} if denied.status == 401 else {}
        return problem(denied.status, title, denied.detail, **extra)


def _admitted(route: str | None, principal: Principal) -> Principal:
    """faust's own views (``/router``, its index, …) and unknown paths: operators only."""
    if not (route or "").startswith("/v1/") and not principal.admin:
        raise AccessDenied(403, "admin role required")
    return principal


def require_tenant(request: web.Request, tenant: str) -> Principal:
    """The caller, if it may read ``tenant``; else ``AccessDenied`` (403; 404 for a name no
    tenant can have)."""
    principal = request[PRINCIPAL]
    if not NAME_PATTERN.fullmatch(tenant):  # no tenant can have it, whoever asks
        raise AccessDenied(404, "not a tenant name")
    if not principal.may_read(tenant):
        raise AccessDenied(403, f"no access to tenant {tenant!r}")
    return principal
