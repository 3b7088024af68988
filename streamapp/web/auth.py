"""Authentication for the worker's web views: aiohttp middleware (installed by ``app.py``
through faust's ``web_application_options``) that verifies the bearer JWT of every ``/v1/``
request (``streamapp.domain.access``) and puts the ``Principal`` on the request.

Configured by the TOML file named in ``STREAMAPP_ACCESS_CONFIG`` (schema in
``docs/access.md``); without it every protected request is refused: deny by default. Issuer
keys come from a JWKS file (re-read when it changes) or URL (cached for hours, fetched again
for an unknown ``kid`` at most once a minute, as the WLCG profile recommends). Errors are
``application/problem+json``; why a token failed goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
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
    AccessConfig,
    AccessConfigError,
    AccessDenied,
    Issuer,
    Principal,
    authenticate,
    bearer_token,
    parse_access_config,
)
from streamapp.domain.policy import NAME_PATTERN
from streamapp.settings import Settings

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)
PUBLIC_PREFIXES = ("/health", "/metrics", "/openapi.json", "/ui")
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


class Access:
    """The configured verifier, loaded once per worker."""

    def __init__(self, settings: Settings) -> None:
        self.config: AccessConfig | None = None
        self.store: KeyStore | None = None
        path = settings.access_config
        if path is None:
            log.warning("no STREAMAPP_ACCESS_CONFIG: every /v1/ request is refused")
            return
        try:
            self.config = parse_access_config(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError, AccessConfigError) as exc:
            log.error("access config %s unusable (%s): every /v1/ request is refused", path, exc)
            return
        self.store = KeyStore(self.config)

    async def principal(self, request: web.Request) -> Principal:
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
    if not request.path.startswith("/v1/"):
        return await handler(request)
    if _access is None:
        _access = Access(Settings.from_env())
    # one place turns every refusal into a problem response: the token check here, and a
    # view's own check (``require_tenant``) raised from inside the handler
    try:
        request[PRINCIPAL] = await _access.principal(request)
        return await handler(request)
    except AccessDenied as denied:
        log.info("refused %s %s: %s", request.method, request.path, denied.log_reason)
        title = HTTPStatus(denied.status).phrase
        extra = {"WWW-Authenticate": 'Bearer realm="streamapp"'} if denied.status == 401 else {}
        return problem(denied.status, title, denied.detail, **extra)


def require_tenant(request: web.Request, tenant: str) -> Principal:
    """The caller, if it may read ``tenant``; else ``AccessDenied`` (403; 404 for a name no
    tenant can have)."""
    principal = request[PRINCIPAL]
    if not NAME_PATTERN.match(tenant):  # no tenant can have it, whoever asks
        raise AccessDenied(404, "not a tenant name")
    if not principal.may_read(tenant):
        raise AccessDenied(403, f"no access to tenant {tenant!r}")
    return principal
