"""The OpenWhisk REST client: one class around one ``aiohttp.ClientSession``.

It makes exactly one invoke call per ``invoke()`` and reports what happened; deciding whether to
retry is ``streamapp.domain.invocations.judge`` and the sink's business. Transport failures
(connection refused, reset, timeout) raise ``OpenWhiskUnreachableError`` — retryable; a body over
OpenWhisk's 1 MB limit raises ``PayloadTooLargeError`` before anything is sent — poison.

Credentials (``uuid:key``) are looked up by tenant and name in the worker's secrets (a tenant's
policy can only reach that tenant's own) and go only into the ``Authorization`` header: never
into a log line, an exception message or a record. Only API hosts in the operator's allow-list
are called (``HostNotAllowedError`` otherwise, before anything is sent), and redirects are never
followed.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from streamapp.domain.allowed_hosts import AllowedHosts
from streamapp.domain.invocations import MAX_PARAMETER_BYTES
from streamapp.domain.triggers import ActionRef

ACTIVATION_HEADER = "x-openwhisk-activation-id"


class OpenWhiskError(Exception):
    """Base of everything the OpenWhisk client raises."""


class OpenWhiskUnreachableError(OpenWhiskError):
    """No HTTP answer: connection refused or reset, DNS, or the request timed out. Retryable."""


class PayloadTooLargeError(OpenWhiskError):
    """The invocation body exceeds OpenWhisk's parameter limit. Poison: never sent."""


class CredentialsMissingError(OpenWhiskError):
    """A trigger names credentials this worker does not hold for its tenant. Poison."""


class HostNotAllowedError(OpenWhiskError):
    """The trigger's ``api_host`` is not in the allow-list. Poison: never sent."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer of the invoke call."""

    status: int
    body: Any  # decoded JSON, or None
    activation_id: str | None
    duration_s: float


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # tenant and credential names
_ESCAPES = {".": "_D", "-": "_H", "_": "_U"}


def env_part(name: str) -> str:
    """A tenant or credential name in an environment variable name: upper case, ``.`` ``-``
    ``_`` as ``_D`` ``_H`` ``_U``; no two names give the same text and none contains ``__``."""
    return "".join(_ESCAPES.get(c, c.upper()) for c in name)


class Credentials:
    """``uuid:key`` pairs per tenant, by name: ``<secrets>/openwhisk/<tenant>/<name>`` (first
    line), else the environment variable ``STREAMAPP_OPENWHISK_<TENANT>__<NAME>`` (each part
    as ``env_part`` writes it: ``petra3-p02`` / ``ow-key`` is
    ``STREAMAPP_OPENWHISK_PETRA3_HP02__OW_HKEY``). A tenant's policy can only name its own: the
    name is looked up in that tenant's namespace and nowhere else. Files are re-read when they
    change, so a rotated key takes effect without a restart."""

    def __init__(self, secrets_dir: Path, env: Mapping[str, str]) -> None:
        """``env``: the ``STREAMAPP_OPENWHISK_*`` variables (Settings.openwhisk_env_credentials)."""
        self._dir = secrets_dir / "openwhisk"
        self._env = env
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    @staticmethod
    def env_name(tenant: str, name: str) -> str:
        return f"STREAMAPP_OPENWHISK_{env_part(tenant)}__{env_part(name)}"

    def path(self, tenant: str, name: str) -> Path:
        return self._dir / tenant / name

    def authorization(self, tenant: str, name: str) -> str:
        """The ``Authorization`` header value for the tenant's named credential."""
        pair = self._lookup(tenant, name)
        if ":" not in pair:
            raise CredentialsMissingError(f"credential {name!r} is not of the form uuid:key")
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _lookup(self, tenant: str, name: str) -> str:
        # the names come from validated policies; checked again: never a path out of the tenant
        if not (_NAME.fullmatch(tenant) and _NAME.fullmatch(name)):
            raise CredentialsMissingError(f"unknown credential {name!r}")
        path = self.path(tenant, name)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            value = self._env.get(self.env_name(tenant, name), "").strip()
            if not value:
                # the message reaches the tenant's records: no file path of the worker in it
                raise CredentialsMissingError(
                    f"unknown credential {name!r} of tenant {tenant!r}"
                ) from None
            return value
        cached = self._cache.get((tenant, name))
        if cached is None or cached[0] != mtime:
            lines = path.read_text().splitlines()
            cached = (mtime, lines[0].strip() if lines else "")
            self._cache[(tenant, name)] = cached
        return cached[1]


class OpenWhiskClient:
    """Invokes actions; one session (connection pool) for every API host."""

    def __init__(
        self,
        credentials: Credentials,
        allowed_hosts: AllowedHosts,
        *,
        connect_timeout_s: float = 10.0,
        limit: int = 256,
    ) -> None:
        self._credentials = credentials
        self._allowed = allowed_hosts
        self._connect_timeout_s = connect_timeout_s
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                raise_for_status=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def invoke(
        self,
        api_host: str,
        action: ActionRef,
        credentials: str,
        params: Mapping[str, Any],
        *,
        tenant: str,
        blocking: bool,
        timeout_s: float,
    ) -> Answer:
        """POST the invoke call once with ``tenant``'s credential ``credentials``. A blocking
        call waits up to ``timeout_s`` for the action (OpenWhisk answers 202 itself after
        ~60 s); the HTTP timeout allows a margin on top."""
        body = self._checked_body(api_host, params)
        authorization = self._credentials.authorization(tenant, credentials)
        headers = {
            "Authorization": authorization,
            "Content-Type": "application/json",
        }
        await self.start()
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(
                api_host + action.path,
                params=_query(blocking, timeout_s),
                data=body,
                headers=headers,
                allow_redirects=False,  # a 3xx is an answer (rejected), never followed
                timeout=aiohttp.ClientTimeout(
                    total=(timeout_s + 15) if blocking else 30, connect=self._connect_timeout_s
                ),
            ) as response:
                raw = await response.read()
                activation = response.headers.get(ACTIVATION_HEADER)
                status = response.status
        except TimeoutError as exc:
            raise OpenWhiskUnreachableError(
                f"timed out after {time.monotonic() - started:.1f} s"
            ) from exc
        except aiohttp.ClientError as exc:
            # the message names host and errno, never the Authorization header
            raise OpenWhiskUnreachableError(f"{type(exc).__name__}: {exc}") from exc
        decoded, activation = _decode(_redacted(raw, authorization), activation)
        return Answer(status, decoded, activation, time.monotonic() - started)

    def _checked_body(self, api_host: str, params: Mapping[str, Any]) -> bytes:
        """The invoke call's body, if it may be sent at all (allowed host, size in bounds)."""
        if not self._allowed.allows(api_host):
            raise HostNotAllowedError(f"api_host not allowed: {api_host}")
        body = orjson.dumps(params)
        if len(body) > MAX_PARAMETER_BYTES:
            raise PayloadTooLargeError(
                f"{len(body)} bytes exceed OpenWhisk's {MAX_PARAMETER_BYTES}"
            )
        return body


def _query(blocking: bool, timeout_s: float) -> dict[str, str]:
    query = {"blocking": "true" if blocking else "false"}
    if blocking:
        query["timeout"] = str(int(timeout_s * 1000))
    return query


def _redacted(raw: bytes, authorization: str) -> bytes:
    """An endpoint echoing the credential back gets it blanked before anyone reads the answer
    (``authorization``: ``Basic <base64 of uuid:key>``; both forms are blanked)."""
    for secret in (authorization[6:], base64.b64decode(authorization[6:]).decode()):
        raw = raw.replace(secret.encode(), b"[redacted]")
    return raw


def _decode(raw: bytes, activation: str | None) -> tuple[Any, str | None]:
    """The answer's JSON body (None if it is none), and the activation id: the header's, else
    the body's ``activationId``."""
    try:
        decoded: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        decoded = None
    if activation is None and isinstance(decoded, dict):
        found = decoded.get("activationId")
        activation = found if isinstance(found, str) else None
    return decoded, activation
