"""Keys from a JWKS URL (an issuer's ``jwks_uri``): fetched once and cached, refetched when a
token names a key not yet seen (a rotation) but not more often than the configured minimum,
and kept when the issuer is unreachable. The issuer is a real aiohttp server in the test; the
request objects only carry the Authorization header into ``Access.principal``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.asymmetric import ec

from streamapp.domain.access import AccessDenied, Principal
from streamapp.settings import Settings
from streamapp.web.auth import Access
from testkit.helpers import wlcg_token

ISS = "https://idp.test.example/realms/facility"
AUD = "https://streamapp.test.example"
KEYS = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2", "k3")}


@dataclass
class Issuer:
    """Serves ``published`` as its JWKS; counts fetches; ``down`` answers 503."""

    published: list[str] = field(default_factory=lambda: ["k1"])
    fetches: int = 0
    down: bool = False

    async def jwks(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503)
        keys = []
        for kid in self.published:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(KEYS[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
        return web.json_response({"keys": keys})


@pytest.fixture
async def issuer(unused_tcp_port: int) -> AsyncIterator[tuple[Issuer, str]]:
    state = Issuer()
    application = web.Application()
    application.router.add_get("/certs", state.jwks)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    yield state, f"http://127.0.0.1:{unused_tcp_port}/certs"
    await runner.cleanup()


def access_for(url: str, tmp_path: Path, min_refresh: int) -> Access:
    config = tmp_path / "access.toml"
    config.write_text(
        f"""audience = "{AUD}"
jwks_min_refresh_seconds = {min_refresh}

[[issuers]]
issuer = "{ISS}"
jwks_url = "{url}"
algorithms = ["ES256"]

[[mappings]]
group = "/alpha"
tenants = ["alpha"]
"""
    )
    return Access(Settings(access_config=config))


def token(kid: str) -> str:
    return wlcg_token(KEYS[kid], ISS, AUD, ["/alpha"], kid=kid, lifetime_s=300)


async def ask(access: Access, bearer: str) -> Principal:
    request: Any = make_mocked_request(
        "GET", "/v1/tenants/alpha/policy", headers={"Authorization": f"Bearer {bearer}"}
    )
    return await access.principal(request)


async def test_keys_are_fetched_once_and_cached(issuer: tuple[Issuer, str], tmp_path: Path) -> None:
    state, url = issuer
    access = access_for(url, tmp_path, min_refresh=60)
    for _ in range(5):
        principal = await ask(access, token("k1"))
        assert principal.may_read("alpha")
    assert state.fetches == 1


async def test_a_rotated_key_is_fetched_on_first_sight(
    issuer: tuple[Issuer, str], tmp_path: Path
) -> None:
    state, url = issuer
    access = access_for(url, tmp_path, min_refresh=0)
    await ask(access, token("k1"))
    state.published = ["k2"]  # the issuer rotates: k1 retired, k2 in use
    principal = await ask(access, token("k2"))
    assert principal.may_read("alpha")
    assert state.fetches == 2
    with pytest.raises(AccessDenied) as refused:  # the retired key no longer verifies
        await ask(access, token("k1"))
    assert refused.value.status == 401


async def test_unknown_kids_cannot_make_the_worker_hammer_the_issuer(
    issuer: tuple[Issuer, str], tmp_path: Path
) -> None:
    state, url = issuer
    access = access_for(url, tmp_path, min_refresh=60)
    await ask(access, token("k1"))
    for _ in range(20):  # k3 is not published: every one is refused
        with pytest.raises(AccessDenied) as refused:
            await ask(access, token("k3"))
        assert refused.value.status == 401
        assert "kid" not in refused.value.detail  # the reason stays in the log
    assert state.fetches == 1  # the first fetch is less than a minute old: no refetch


async def test_keys_survive_an_unreachable_issuer(
    issuer: tuple[Issuer, str], tmp_path: Path
) -> None:
    state, url = issuer
    access = access_for(url, tmp_path, min_refresh=0)
    await ask(access, token("k1"))
    state.down = True
    with pytest.raises(AccessDenied):  # unknown kid: a refetch is tried and fails
        await ask(access, token("k2"))
    assert state.fetches == 2
    principal = await ask(access, token("k1"))  # the cached key still verifies
    assert principal.may_read("alpha")
