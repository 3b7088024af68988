"""The access middleware on a real aiohttp server: deny by default (only the public routes
answer without a token, faust's own views need the admin role), any failure while verifying a
token is a 401 (never a 500), and a peer's forwarded request is trusted only when its HMAC
verifies, only on the routes meant for it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from streamapp.domain.access import PEER_HEADER, sign_peer_request
from streamapp.settings import Settings
from streamapp.web import auth
from testkit.helpers import wlcg_token

ISS = "https://idp.test.example/realms/facility"
AUD = "https://streamapp.test.example"
KEY = ec.generate_private_key(ec.SECP256R1())
SECRET = b"0123456789abcdef0123456789abcdef"


def token(groups: list[str], **overrides: Any) -> str:
    return wlcg_token(KEY, ISS, AUD, groups, **overrides)


def bearer(groups: list[str], **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(groups, **overrides)}"}


async def ok(request: web.Request) -> web.Response:
    principal = request.get(auth.PRINCIPAL)
    return web.json_response(
        {
            "subject": principal.subject if principal else None,
            "forwarded": bool(request.get(auth.FORWARDED)),
        }
    )


async def tenant_view(request: web.Request) -> web.Response:
    auth.require_tenant(request, request.match_info["tenant"])
    return await ok(request)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    (tmp_path / "access.toml").write_text(
        f'audience = "{AUD}"\n[[issuers]]\nissuer = "{ISS}"\n'
        f'jwks_file = "{tmp_path / "jwks.json"}"\nalgorithms = ["ES256"]\n'
        '[[mappings]]\ngroup = "/alpha"\ntenants = ["alpha"]\n'
        '[[mappings]]\ngroup = "/admins"\nadmin = true\n'
    )
    (tmp_path / "secrets").mkdir()
    settings = Settings(access_config=tmp_path / "access.toml", secrets_dir=tmp_path / "secrets")
    auth._access = auth.Access(settings)
    app = web.Application(middlewares=[auth.access_middleware])
    for path in ("/health", "/metrics", "/openapi.json", "/ui", "/", "/router/"):
        app.router.add_get(path, ok)
    app.router.add_get("/router/{name}/{key}/", ok)
    app.router.add_get("/v1/tenants/{tenant}/stats", tenant_view)
    app.router.add_get("/v1/tenants/{tenant}/policy", tenant_view)
    app.router.add_post("/v1/admin/updates", ok)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    auth._access = None


async def test_only_the_public_routes_answer_without_a_token(client: Any) -> None:
    for path in ("/health", "/metrics", "/openapi.json", "/ui"):
        response = await client.get(path)
        assert response.status == 200, path
    # every other route, faust's included, and paths that only look like public ones
    for path in (
        "/",
        "/router/",
        "/router/streamapp-stats/alpha/",
        "/v1/tenants/alpha/policy",
        "/v1/tenants/alpha/stats",
        "/health/",
        "/healthz",
        "/ui/../router/",
        "/%2Fhealth",
        "/no/such/route",
    ):
        response = await client.get(path)
        assert response.status == 401, path
        assert response.headers["Content-Type"] == "application/problem+json"
    response = await client.post("/v1/admin/updates", data=b"x")
    assert response.status == 401


async def test_fausts_own_views_need_the_admin_role(client: Any) -> None:
    for path in ("/", "/router/", "/router/streamapp-stats/alpha/"):
        response = await client.get(path, headers=bearer(["/alpha"]))
        assert response.status == 403, path
        response = await client.get(path, headers=bearer(["/admins"]))
        assert response.status == 200, path
    response = await client.get("/v1/tenants/alpha/policy", headers=bearer(["/alpha"]))
    assert response.status == 200


@pytest.mark.parametrize(
    "overrides",
    [
        {"iat": "yesterday"},
        {"iat": [1]},
        {"iat": True},
        {"exp": "tomorrow"},
        {"nbf": {"a": 1}},
        {"wlcg.groups": "/alpha"},
        {"scope": ["a"]},
    ],
)
async def test_hostile_claims_get_401_not_500(client: Any, overrides: dict[str, Any]) -> None:
    response = await client.get("/v1/tenants/alpha/policy", headers=bearer(["/alpha"], **overrides))
    assert response.status == 401
    assert (await response.json())["detail"] == "the bearer token is not valid"


async def test_a_failure_while_verifying_is_a_401(client: Any, tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text("{ not json")
    auth._access = auth.Access(
        Settings(access_config=tmp_path / "access.toml", secrets_dir=tmp_path / "secrets")
    )
    response = await client.get("/v1/tenants/alpha/policy", headers=bearer(["/alpha"]))
    assert response.status == 401


def peer(target: str, tenant: str = "alpha", secret: bytes = SECRET) -> dict[str, str]:
    return {PEER_HEADER: sign_peer_request(secret, "GET", target, tenant, time.time())}


async def test_a_peers_request_is_trusted_only_when_it_verifies(
    client: Any, tmp_path: Path
) -> None:
    target = "/v1/tenants/alpha/stats?minutes=5"
    # no peer secret on this worker: nothing a peer says is trusted
    response = await client.get(target, headers=peer(target))
    assert response.status == 401
    (tmp_path / "secrets" / "peer.key").write_bytes(SECRET + b"\n")
    response = await client.get(target, headers=peer(target))
    assert response.status == 200
    assert await response.json() == {"subject": "streamapp-peer", "forwarded": True}
    # signed for another tenant, query or route; another secret; replayed elsewhere
    for path, headers in (
        (target, peer(target, secret=b"x" * 32)),
        (target, peer("/v1/tenants/alpha/stats?minutes=6")),
        ("/v1/tenants/beta/stats?minutes=5", peer("/v1/tenants/beta/stats?minutes=5", "alpha")),
        ("/v1/tenants/alpha/policy", peer("/v1/tenants/alpha/policy")),
        ("/router/", peer("/router/")),
        (target, {PEER_HEADER: "v1 1 " + "0" * 64}),
    ):
        response = await client.get(path, headers=headers)
        assert response.status == 401, path
    # a peer header wins over (and cannot be helped by) a valid bearer token
    response = await client.get(
        target, headers={**bearer(["/admins"]), PEER_HEADER: "v1 1 " + "0" * 64}
    )
    assert response.status == 401
    # a short secret is not used at all
    (tmp_path / "secrets" / "peer.key").write_bytes(b"short")
    response = await client.get(target, headers=peer(target, secret=b"short"))
    assert response.status == 401
