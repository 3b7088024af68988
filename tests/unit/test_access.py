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
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.bridge.config import BridgeConfigError, parse_bridge_config
from streamapp.domain.access import (
    AccessConfigError,
    AccessDenied,
    authenticate,
    bearer_token,
    parse_access_config,
    sign_peer_request,
    verify_peer_request,
)
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.policy import parse_tenant
from streamapp.domain.policy_fields import NAME_PATTERN, PolicyError

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


# --- issue 11: hostile claim types, issuers of mappings, peer requests, full-match names ---------


def raw_jws(header: str, payload: str, key: Any = RSA_KEY) -> str:
    """A signed token with exactly this header and payload JSON (pyjwt's encoder would refuse
    some of them)."""
    signing_input = f"{b64(header.encode())}.{b64(payload.encode())}"
    algorithm = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key))}"


HEADER = json.dumps({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"})
HOSTILE_VALUES = [
    '"yesterday"',
    '"1700000000"',
    "true",
    "false",
    "null",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-5",
    "1" + "0" * 30,
    "[1700000000]",
    "[]",
    '{"a": 1}',
    '""',
    '["x", 1]',
]


def with_claim(name: str, value_json: str) -> str:
    """The valid claims with ``name`` set to the JSON text ``value_json`` (a later duplicate
    key wins in every JSON parser pyjwt may use)."""
    body = json.dumps(claims())
    return raw_jws(HEADER, f'{body[:-1]}, "{name}": {value_json}}}')


def test_the_raw_helper_makes_valid_tokens() -> None:
    assert verify(raw_jws(HEADER, json.dumps(claims()))).tenants == {"petra3-p02"}
    assert verify(with_claim("iat", str(int(time.time()) - 5))).tenants == {"petra3-p02"}


def _valid_there(claim: str, value: str) -> bool:
    """Values of the hostile list that are of the right type for ``claim`` (not hostile)."""
    return (claim == "sub" and value.startswith('"') and value != '""') or (
        claim == "wlcg.groups" and value == "[]"
    )


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        (claim, value)
        for claim in ["exp", "iat", "nbf", "aud", "iss", "sub", "wlcg.groups"]
        for value in HOSTILE_VALUES
        if not _valid_there(claim, value)
    ],
)
def test_claims_of_a_wrong_type_get_401_never_an_exception(claim: str, value: str) -> None:
    """A signed token whose claim has a type no valid token has (``iat: "yesterday"``, a bool,
    NaN, a list …) is refused with a 401 — not a TypeError that the web turns into a 500."""
    with pytest.raises(AccessDenied) as refused:
        verify(with_claim(claim, value))
    assert refused.value.status == 401, (claim, value)


@pytest.mark.parametrize("value", ["true", "1", "[]", '{"a": 1}', "NaN", "null"])
@pytest.mark.parametrize("claim", ["scope", "wlcg.ver", "jti"])
def test_string_claims_of_another_type_get_401(claim: str, value: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        verify(with_claim(claim, value))
    assert refused.value.status == 401


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": ["rsa-1"]},
        {"alg": "RS256", "kid": 1},
        {"alg": "RS256", "kid": {"a": 1}},
        {"alg": ["RS256"], "kid": "rsa-1"},
        {"alg": None, "kid": "rsa-1"},
        {"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]},
    ],
)
def test_headers_of_a_wrong_type_get_401(header: dict[str, Any]) -> None:
    with pytest.raises(AccessDenied) as refused:
        verify(raw_jws(json.dumps(header), json.dumps(claims())))
    assert refused.value.status == 401


@pytest.mark.parametrize("payload", ["[]", "1", '"x"', "null", "{", "[" * 10_000])
def test_payloads_that_are_no_object_get_401(payload: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        verify(raw_jws(HEADER, payload))
    assert refused.value.status == 401


SECOND = "https://login.other-facility.example/oidc"


def two_issuers(mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "audience": AUD,
        "issuers": [
            {"issuer": ISS, "jwks_file": "x"},
            {"issuer": SECOND, "jwks_file": "y"},
        ],
        "mappings": mappings,
    }


def test_with_several_issuers_every_mapping_names_its_issuer() -> None:
    with pytest.raises(AccessConfigError, match=r"mappings\[1\] \('/petra3/p02'\).*issuer"):
        parse_access_config(
            two_issuers(
                [
                    {"group": "/a", "tenants": ["a"], "issuer": ISS},
                    {"group": "/petra3/p02", "tenants": ["petra3-p02"]},
                ]
            )
        )
    with pytest.raises(AccessConfigError, match=r"mappings\[0\]\.issuer.*not a configured"):
        parse_access_config(
            two_issuers([{"group": "/a", "tenants": ["a"], "issuer": "https://elsewhere"}])
        )


def test_with_one_issuer_a_mapping_binds_to_it() -> None:
    assert {m.issuer for m in CONFIG.mappings} == {ISS}


def test_a_second_issuers_group_does_not_reach_a_tenant_mapped_for_the_first() -> None:
    """Both identity providers know a group ``/petra3/p02``; only the first's is mapped."""
    config = parse_access_config(
        two_issuers(
            [
                {"group": "/petra3/p02", "tenants": ["petra3-p02"], "issuer": ISS},
                {"group": "/other/users", "tenants": ["other"], "issuer": SECOND},
            ]
        )
    )
    keys = {ISS: KEYS[ISS], SECOND: [jwk(OTHER_RSA.public_key(), "other-1", "RS256")]}
    own = authenticate(token(), config, keys, time.time())
    assert own.tenants == {"petra3-p02"}
    foreign = token(OTHER_RSA, "other-1", iss=SECOND)
    with pytest.raises(AccessDenied) as refused:
        authenticate(foreign, config, keys, time.time())
    assert refused.value.status == 403
    both = token(OTHER_RSA, "other-1", iss=SECOND, extra={"wlcg.groups": ["/other/users"]})
    assert authenticate(both, config, keys, time.time()).tenants == {"other"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"leeway": "30"}, "leeway"),
        ({"leeway": -1}, "leeway"),
        ({"jwks_cache_seconds": 1.5}, "jwks_cache_seconds"),
        ({"mappings": [{"group": ["/a"], "tenants": ["a"]}]}, "group"),
        ({"mappings": [{"group": "/a", "tenants": ["a"], "admin": "yes"}]}, "admin"),
    ],
)
def test_config_values_of_a_wrong_type_are_refused(change: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "audience": AUD,
        "issuers": [{"issuer": ISS, "jwks_file": "x"}],
        "mappings": [{"group": "/a", "tenants": ["a"]}],
    }
    with pytest.raises(AccessConfigError, match=message):
        parse_access_config({**base, **change})


PEER_SECRET = b"s" * 32
TARGET = "/v1/tenants/alpha/stats?minutes=5"


def test_a_peer_request_vouches_for_exactly_what_it_signs() -> None:
    now = time.time()
    value = sign_peer_request(PEER_SECRET, "GET", TARGET, "alpha", now)
    principal = verify_peer_request(value, PEER_SECRET, "GET", TARGET, tenant="alpha", now=now)
    assert principal.tenants == {"alpha"}
    assert not principal.admin
    assert principal.may_read("alpha")
    assert not principal.may_read("beta")


@pytest.mark.parametrize(
    "case",
    [
        "other tenant",
        "other target",
        "other query",
        "other method",
        "other secret",
        "no secret here",
        "too old",
        "from the future",
        "malformed",
        "trailing newline",
        "upper-case mac",
    ],
)
def test_a_peer_request_that_does_not_verify_gets_401(case: str) -> None:
    now = time.time()
    value = sign_peer_request(PEER_SECRET, "GET", TARGET, "alpha", now)
    secret: bytes | None = PEER_SECRET
    method, target, tenant, at = "GET", TARGET, "alpha", now
    if case == "other tenant":
        tenant = "beta"
    elif case == "other target":
        target = "/v1/tenants/beta/stats?minutes=5"
    elif case == "other query":
        target = "/v1/tenants/alpha/stats?minutes=6"
    elif case == "other method":
        method = "POST"
    elif case == "other secret":
        secret = b"t" * 32
    elif case == "no secret here":
        secret = None
    elif case == "too old":
        at = now + 31
    elif case == "from the future":
        at = now - 31
    elif case == "malformed":
        value = "v1 abc def"
    elif case == "trailing newline":
        value += "\n"
    elif case == "upper-case mac":
        value = value.upper().replace("V1", "v1")
    with pytest.raises(AccessDenied) as refused:
        verify_peer_request(value, secret, method, target, tenant=tenant, now=at)
    assert refused.value.status == 401


@pytest.mark.parametrize("name", ["alpha\n", "alpha\r\n", "\nalpha", "alpha\x00", "Alpha"])
def test_names_match_whole_never_up_to_a_trailing_newline(name: str) -> None:
    """Every name check matches the whole string: ``re.match`` with ``$`` would accept
    ``"alpha\\n"`` (``$`` matches before a final newline)."""
    with pytest.raises(AccessConfigError, match="tenant names"):
        parse_access_config(
            {
                "audience": AUD,
                "issuers": [{"issuer": ISS, "jwks_file": "x"}],
                "mappings": [{"group": "/a", "tenants": [name]}],
            }
        )
    assert NAME_PATTERN.fullmatch(name) is None
    with pytest.raises(PolicyError):
        parse_tenant({"tenant": name, "subscriptions": []})
    with pytest.raises(PolicyError):
        parse_dataset({"id": name, "owner": "alpha", "source": "dcache://x", "prefixes": ["/d"]})
    with pytest.raises(PolicyError):
        parse_dataset({"id": "ds", "owner": name, "source": "dcache://x", "prefixes": ["/d"]})
    with pytest.raises(BridgeConfigError, match="name"):
        parse_bridge_config(
            {"frontends": [{"name": name, "url": "http://x", "token_file": "t", "roots": ["/"]}]},
            default_raw_topic="dcache.events",
        )


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_CLAIMS = ["exp", "iat", "nbf", "aud", "iss", "sub", "wlcg.groups", "wlcg.ver", "scope", "jti"]


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(_CLAIMS), _JSON, max_size=4),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku"]), _JSON, max_size=2
    ),
)
def test_any_signed_claims_or_header_end_in_a_principal_or_a_refusal(
    changes: dict[str, Any], header_changes: dict[str, Any]
) -> None:
    """Generated claim and header values of every JSON type, in a correctly signed token: the
    verdict is a principal or an ``AccessDenied`` (401/403), never another exception."""
    payload = {**claims(), **changes}
    header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1", **header_changes}
    try:
        tok = raw_jws(json.dumps(header), json.dumps(payload))
    except (TypeError, ValueError):
        return  # not JSON-serializable (a NaN key etc.): no token to send
    status = 200
    try:
        verify(tok)
    except AccessDenied as denied:
        status = denied.status
    assert status in (200, 401, 403)


@pytest.mark.parametrize(
    "issuer",
    [
        {"issuer": ISS, "jwks_file": "x", "algorithms": 5},
        {"issuer": ISS, "jwks_file": "x", "algorithms": "RS256"},
        {"issuer": ISS, "jwks_file": 5},
        {"issuer": ISS, "algorithms": ["HS256"], "hmac_secret": 12345},
    ],
)
def test_issuer_values_of_a_wrong_type_are_refused(issuer: dict[str, Any]) -> None:
    with pytest.raises(AccessConfigError):
        parse_access_config(
            {
                "audience": AUD,
                "issuers": [issuer],
                "mappings": [{"group": "/a", "tenants": ["a"]}],
            }
        )
