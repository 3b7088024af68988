"""Authentication attack suite (WLCG JWT profile): every forged, expired, misdirected or
confused token gets a 401, a valid token without a mapped right a 403, and the public detail
never says why a signature failed."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from streamapp.domain.access import (
    AccessConfigError,
    AccessDenied,
    authenticate,
    bearer_token,
    parse_access_config,
)

ISS = "https://keycloak.desy.example/realms/facility"
AUD = "https://streamapp.desy.example"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)

CONFIG = parse_access_config(
    {
        "audience": AUD,
        "issuers": [{"issuer": ISS, "jwks_file": "unused-in-unit-tests.json"}],
        "mappings": [
            {"group": "/petra3/p02", "tenants": ["petra3-p02"]},
            {"claim": "scope", "value": "streamapp.admin", "admin": True},
        ],
    }
)


def jwk(public: Any, kid: str, alg: str) -> jwt.PyJWK:
    if isinstance(public, rsa.RSAPublicKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    return jwt.PyJWK({**data, "kid": kid, "alg": alg})


KEYS = {
    ISS: [
        jwk(RSA_KEY.public_key(), "rsa-1", "RS256"),
        jwk(EC_KEY.public_key(), "ec-1", "ES256"),
        jwk(ED_KEY.public_key(), "ed-1", "EdDSA"),
    ]
}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": "j-1",
        "wlcg.ver": "1.0",
        "wlcg.groups": ["/petra3", "/petra3/p02"],
        "scope": "storage.read:/ compute.read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(
    key: Any = RSA_KEY,
    kid: str = "rsa-1",
    alg: str = "RS256",
    extra: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    payload = claims(**overrides)
    for name, value in (extra or {}).items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def verify(tok: str) -> Any:
    return authenticate(tok, CONFIG, KEYS, time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("key", "kid", "alg"),
    [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256"), (ED_KEY, "ed-1", "EdDSA")],
)
def test_valid_tokens_map_groups_to_tenants(key: Any, kid: str, alg: str) -> None:
    principal = verify(token(key, kid, alg))
    assert principal.tenants == {"petra3-p02"}
    assert not principal.admin
    assert principal.may_read("petra3-p02")
    assert not principal.may_read("xfel-da")


def test_scope_maps_to_admin_and_any_audience_is_accepted() -> None:
    principal = verify(
        token(scope="compute.read streamapp.admin", aud="https://wlcg.cern.ch/jwt/v1/any")
    )
    assert principal.admin
    assert principal.may_read("anyone")


def forged_none() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def hs_with_public_key() -> str:
    """The classic RS/HS confusion: HMAC keyed with the server's public key (PEM)."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    import hmac  # noqa: PLC0415
    from hashlib import sha256  # noqa: PLC0415

    signature = hmac.new(pem, f"{header}.{body}".encode(), sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def tampered() -> str:
    header, body, signature = token().split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["wlcg.groups"] = ["/xfel/da"]
    return f"{header}.{b64(json.dumps(payload).encode())}.{signature}"


ATTACKS: dict[str, Callable[[], str]] = {
    "alg none": forged_none,
    "HS256 keyed with the RSA public key": hs_with_public_key,
    "expired": lambda: token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "not yet valid": lambda: token(nbf=int(time.time()) + 3600),
    "issued in the future": lambda: token(iat=int(time.time()) + 3600),
    "wrong audience": lambda: token(aud="https://other.example"),
    "no audience": lambda: token(aud=None),
    "wrong issuer": lambda: token(iss="https://evil.example"),
    "unknown kid": lambda: token(kid="rsa-2"),
    "signed by another key": lambda: token(key=OTHER_RSA),
    "alg swapped to a key of another type": lambda: token(EC_KEY, "rsa-1", "ES256"),
    "tampered payload": tampered,
    "no subject": lambda: token(sub=None),
    "no expiry": lambda: token(exp=None),
    "groups not a list": lambda: token(extra={"wlcg.groups": "/petra3/p02"}),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_get_401_and_no_reason(attack: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        verify(ATTACKS[attack]())
    assert refused.value.status == 401, attack
    assert refused.value.detail in (
        "the bearer token is not valid",
        "the bearer token has expired",
    )
    for leak in ("signature", "kid", "key", "alg"):
        assert leak not in refused.value.detail


def test_a_valid_token_without_mapped_groups_gets_403() -> None:
    with pytest.raises(AccessDenied) as refused:
        verify(token(extra={"wlcg.groups": ["/xfel"]}, scope="storage.read:/"))
    assert refused.value.status == 403
    with pytest.raises(AccessDenied) as no_groups:
        verify(token(extra={"wlcg.groups": None}, scope="storage.read:/"))
    assert no_groups.value.status == 403


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwdw==", "Bearer ", "bearer"])
def test_missing_bearer_is_401(header: str | None) -> None:
    with pytest.raises(AccessDenied) as refused:
        bearer_token(header)
    assert refused.value.status == 401


def test_bearer_token_is_extracted() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuers": [{"issuer": ISS, "algorithms": ["none"], "jwks_file": "x"}]}, "never"),
        ({"issuers": [{"issuer": ISS, "algorithms": ["HS256"]}]}, "hmac_secret"),
        ({"issuers": [{"issuer": ISS}]}, "jwks_file or jwks_url"),
        ({"issuers": []}, "at least one issuer"),
        ({"mappings": [{"group": "/a", "tenants": ["Bad Name"]}]}, "tenant names"),
        ({"mappings": [{"group": "/a"}]}, "grants nothing"),
        ({"audience": ""}, "audience"),
    ],
)
def test_bad_configs_are_refused(change: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "audience": AUD,
        "issuers": [{"issuer": ISS, "jwks_file": "x"}],
        "mappings": [{"group": "/a", "tenants": ["a"]}],
    }
    with pytest.raises(AccessConfigError, match=message):
        parse_access_config({**base, **change})


def test_hmac_only_when_configured() -> None:
    config = parse_access_config(
        {
            "audience": AUD,
            "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "hmac_secret": "s" * 32}],
            "mappings": [{"group": "/petra3/p02", "tenants": ["petra3-p02"]}],
        }
    )
    good = jwt.encode(claims(), "s" * 32, algorithm="HS256")
    assert authenticate(good, config, {}, time.time()).tenants == {"petra3-p02"}
    with pytest.raises(AccessDenied):
        authenticate(token(), config, KEYS, time.time())  # RS256 is not allowed there
