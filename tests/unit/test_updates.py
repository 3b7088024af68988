"""Signed policy and ownership updates: only a configured admin key's EdDSA/ES256 signature over
well-formed claims with a valid spec is accepted, and never an older version than the one held."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from streamapp.admin_keys import (
    generate_admin_keypair,
    keyring_from_paths,
    load_private_key,
    sign_update,
)
from streamapp.domain.updates import (
    ISSUER,
    MAX_UPDATE_BYTES,
    KeyRing,
    PrivateKey,
    Update,
    UpdateAlreadyAppliedError,
    UpdateRefusedError,
    algorithm_for,
    check_newer,
    key_id,
    verify_update,
)

ED_KEY = ed25519.Ed25519PrivateKey.generate()
ES_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = ed25519.Ed25519PrivateKey.generate()  # a key no worker trusts
KEYS = KeyRing([ED_KEY.public_key(), ES_KEY.public_key()])
ED_KID = key_id(ED_KEY.public_key())
ES_KID = key_id(ES_KEY.public_key())

DATASET = {
    "id": "petra3-p06-11012346",
    "owner": "petra3-p06",
    "source": "dcache://dcache.desy.example",
    "prefixes": ["/data/petra3/p06/2026/11012346"],
}
TENANT = {"tenant": "petra3-p06", "subscriptions": [{"dataset": "petra3-p06-11012346"}]}
SPECS: dict[str, dict[str, Any]] = {"dataset": DATASET, "tenant": TENANT}
NAMES = {"dataset": "petra3-p06-11012346", "tenant": "petra3-p06"}


def signed(
    kind: str = "dataset",
    op: str = "upsert",
    name: str | None = None,
    *,
    version: int = 1,
    spec: Any = "default",
    key: PrivateKey = ED_KEY,
) -> bytes:
    return sign_update(
        kind,
        op,
        NAMES.get(kind, "x") if name is None else name,
        version=version,
        spec=SPECS.get(kind) if spec == "default" else spec,
        private_key=key,
        issued_at=1_780_000_000,
    ).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> bytes:
    """A compact JWS built without pyjwt, so it can be anything an attacker sends."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}".encode()


def claims(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "iat": 1_780_000_000,
        "kind": "dataset",
        "op": "upsert",
        "name": NAMES["dataset"],
        "version": 1,
        "spec": DATASET,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def refused(message: bytes, **kwargs: Any) -> str:
    with pytest.raises(UpdateRefusedError) as caught:
        verify_update(message, KEYS, **kwargs)
    return str(caught.value)


def public_pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kid", "alg"),
    [
        pytest.param(ED_KEY, ED_KID, "EdDSA", id="ed25519"),
        pytest.param(ES_KEY, ES_KID, "ES256", id="p256"),
    ],
)
@pytest.mark.parametrize("kind", ["dataset", "tenant"])
def test_a_good_signed_upsert_is_accepted(key: PrivateKey, kid: str, alg: str, kind: str) -> None:
    message = signed(kind, version=7, key=key)
    assert jwt.get_unverified_header(message.decode())["alg"] == alg
    update = verify_update(message, KEYS, expected_kind=kind)
    assert update == Update(kind, "upsert", NAMES[kind], 7, SPECS[kind], kid)  # type: ignore[arg-type]
    assert update.entry() == {"version": 7, "deleted": False, "spec": SPECS[kind], "kid": kid}


def test_a_signed_delete_is_accepted_and_leaves_a_tombstone() -> None:
    update = verify_update(signed(op="delete", spec=None, version=3), KEYS)
    assert (update.op, update.spec) == ("delete", None)
    assert update.entry() == {"version": 3, "deleted": True, "spec": None, "kid": ED_KID}


def test_surrounding_whitespace_is_tolerated() -> None:
    assert verify_update(b"  " + signed() + b"\r\n", KEYS).version == 1


# --- refused ---------------------------------------------------------------------------------


def flip_signature_char(message: bytes) -> bytes:
    head, payload, signature = message.decode().split(".")
    middle = len(signature) // 2  # not the last char: its low bits may be padding
    replacement = "A" if signature[middle] != "A" else "B"
    tampered = signature[:middle] + replacement + signature[middle + 1 :]
    return f"{head}.{payload}.{tampered}".encode()


def hs256_with_public_pem(kid: str, pem: bytes) -> bytes:
    """The key-confusion attack: HMAC 'signed' with the public key's PEM as the secret."""
    return by_hand(
        {"alg": "HS256", "typ": "JWT", "kid": kid},
        claims(),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )


REFUSALS = [
    pytest.param(
        jwt.encode(claims(), "", algorithm="none", headers={"kid": ED_KID}).encode(),
        "algorithm 'none' does not match key",
        id="alg-none-pyjwt",
    ),
    pytest.param(
        by_hand({"alg": "none", "kid": ES_KID}, claims()),
        "algorithm 'none' does not match key",
        id="alg-none-by-hand",
    ),
    pytest.param(by_hand({"alg": "none"}, claims()), "no key id", id="alg-none-without-kid"),
    pytest.param(
        hs256_with_public_pem(ED_KID, public_pem(ED_KEY)),
        "algorithm 'HS256' does not match key",
        id="hs256-key-confusion-ed25519",
    ),
    pytest.param(
        hs256_with_public_pem(ES_KID, public_pem(ES_KEY)),
        "algorithm 'HS256' does not match key",
        id="hs256-key-confusion-p256",
    ),
    pytest.param(
        jwt.encode(claims(), ES_KEY, algorithm="ES256", headers={"kid": ED_KID}).encode(),
        "algorithm 'ES256' does not match key",
        id="es256-under-ed25519-kid",
    ),
    pytest.param(flip_signature_char(signed()), "bad signature", id="flipped-signature-ed25519"),
    pytest.param(
        flip_signature_char(signed(key=ES_KEY)), "bad signature", id="flipped-signature-p256"
    ),
    pytest.param(
        jwt.encode(claims(), STRANGER, algorithm="EdDSA", headers={"kid": ED_KID}).encode(),
        "bad signature",
        id="stranger-key-claiming-a-trusted-kid",
    ),
    pytest.param(signed(key=STRANGER), "unknown signing key", id="unknown-kid"),
    pytest.param(
        jwt.encode(claims(), ED_KEY, algorithm="EdDSA").encode(), "no key id", id="missing-kid"
    ),
    pytest.param(
        by_hand({"alg": "EdDSA", "kid": 42}, claims(), ED_KEY.sign),
        "not a JWS",
        id="kid-not-a-string",
    ),
    pytest.param(b"not.a.jws", "not a JWS", id="garbage"),
    pytest.param(b"", "not a JWS", id="empty"),
    pytest.param("spec: café".encode(), "not ASCII", id="non-ascii"),
    pytest.param(b"\xff\xfe", "not ASCII", id="non-utf8"),
    pytest.param(
        b"a" * (MAX_UPDATE_BYTES + 1),
        f"update of {MAX_UPDATE_BYTES + 1} bytes exceeds {MAX_UPDATE_BYTES}",
        id="oversized",
    ),
    pytest.param(
        jwt.encode(
            claims(iss="someone-else"), ED_KEY, algorithm="EdDSA", headers={"kid": ED_KID}
        ).encode(),
        "invalid JWS",
        id="wrong-issuer",
    ),
    pytest.param(
        jwt.encode(claims(iat=None), ED_KEY, algorithm="EdDSA", headers={"kid": ED_KID}).encode(),
        "invalid JWS",
        id="missing-iat",
    ),
    pytest.param(
        jwt.encode(claims(exp=1), ED_KEY, algorithm="EdDSA", headers={"kid": ED_KID}).encode(),
        "invalid JWS",
        id="expired-exp-claim",
    ),
    pytest.param(signed(kind="policy"), "unknown kind 'policy'", id="unknown-kind"),
    pytest.param(signed(op="merge"), "unknown op 'merge'", id="unknown-op"),
    pytest.param(signed(version=0), "version must be a positive integer", id="version-0"),
    pytest.param(
        jwt.encode(
            claims(version=True), ED_KEY, algorithm="EdDSA", headers={"kid": ED_KID}
        ).encode(),
        "version must be a positive integer",
        id="version-bool",
    ),
    pytest.param(
        jwt.encode(
            claims(version="5"), ED_KEY, algorithm="EdDSA", headers={"kid": ED_KID}
        ).encode(),
        "version must be a positive integer",
        id="version-string",
    ),
    pytest.param(signed(name=""), "name is missing", id="empty-name"),
    pytest.param(
        signed(spec={**DATASET, "colour": "blue"}),
        "invalid dataset spec: colour: unknown field",
        id="unknown-spec-field",
    ),
    pytest.param(
        signed(spec={**DATASET, "prefixes": ["/"]}),
        "invalid dataset spec: prefixes[0]:",
        id="root-prefix",
    ),
    pytest.param(
        signed("tenant", spec={**TENANT, "subscriptions": [{"dataset": "x", "read": ["DELETE"]}]}),
        "invalid tenant spec: subscriptions[0].read: DELETE cannot be delegated",
        id="tenant-read-delete",
    ),
    pytest.param(
        signed(spec=None), "invalid dataset spec: dataset: must be an object", id="no-spec"
    ),
    pytest.param(
        signed(name="another-dataset"),
        "spec names 'petra3-p06-11012346', the update names 'another-dataset'",
        id="spec-name-mismatch",
    ),
    pytest.param(
        signed("tenant", name="mallory"),
        "spec names 'petra3-p06', the update names 'mallory'",
        id="tenant-name-mismatch",
    ),
    pytest.param(
        signed(op="delete", spec=DATASET), "a delete carries no spec", id="delete-with-spec"
    ),
]


@pytest.mark.parametrize(("message", "why"), REFUSALS)
def test_bad_updates_are_refused(message: bytes, why: str) -> None:
    assert why in refused(message)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("tenant", "dataset", id="tenant-on-dataset-topic"),
        pytest.param("dataset", "tenant", id="dataset-on-tenant-topic"),
    ],
)
def test_an_update_on_the_wrong_topic_is_refused(kind: str, expected: str) -> None:
    assert refused(signed(kind), expected_kind=expected) == (
        f"a {kind} update on the {expected} update topic"
    )


def test_an_update_of_exactly_the_size_limit_is_judged_on_content() -> None:
    reason = refused(b"a" * MAX_UPDATE_BYTES)
    assert "exceeds" not in reason
    assert "not a JWS" in reason


# --- versions: stale and replayed updates ----------------------------------------------------


def test_first_upsert_needs_no_held_entry() -> None:
    check_newer(verify_update(signed(), KEYS), None)  # does not raise


def test_delete_of_a_missing_entry_is_refused() -> None:
    update = verify_update(signed(op="delete", spec=None), KEYS)
    with pytest.raises(UpdateRefusedError, match="dataset 'petra3-p06-11012346' does not exist"):
        check_newer(update, None)


@pytest.mark.parametrize("version", [pytest.param(5, id="equal"), pytest.param(4, id="lower")])
def test_stale_versions_are_refused(version: int) -> None:
    held = verify_update(signed(version=5), KEYS).entry()
    update = verify_update(signed(version=version, spec={**DATASET, "shared_with": []}), KEYS)
    with pytest.raises(
        UpdateRefusedError,
        match=f"stale: version {version} is not newer than the held version 5",
    ):
        check_newer(update, held)


def test_the_held_update_delivered_again_is_a_duplicate_not_a_refusal() -> None:
    """A replay after a rebalance (at least once) or a second send of the same update."""
    held = verify_update(signed(version=5), KEYS).entry()
    with pytest.raises(UpdateAlreadyAppliedError, match="already applied: version 5 is held"):
        check_newer(verify_update(signed(version=5), KEYS), held)
    tombstone = verify_update(signed(op="delete", spec=None, version=7), KEYS).entry()
    with pytest.raises(UpdateAlreadyAppliedError):
        check_newer(verify_update(signed(op="delete", spec=None, version=7), KEYS), tombstone)
    # the same version with anything else different stays a stale refusal
    with pytest.raises(UpdateRefusedError, match="stale") as refused:
        check_newer(verify_update(signed(op="delete", spec=None, version=5), KEYS), held)
    assert not isinstance(refused.value, UpdateAlreadyAppliedError)


def test_a_newer_version_is_accepted() -> None:
    held = verify_update(signed(version=5), KEYS).entry()
    check_newer(verify_update(signed(version=6), KEYS), held)  # does not raise


def test_replay_of_an_old_signed_upsert_is_refused() -> None:
    old = signed(version=1, spec={**DATASET, "shared_with": ["mallory"]})
    new = signed(version=2)
    held = verify_update(new, KEYS).entry()
    with pytest.raises(UpdateRefusedError, match="stale"):
        check_newer(verify_update(old, KEYS), held)


def test_a_tombstone_still_blocks_older_upserts() -> None:
    tombstone = verify_update(signed(op="delete", spec=None, version=7), KEYS).entry()
    assert tombstone["deleted"] is True
    with pytest.raises(UpdateRefusedError, match="stale: version 6"):
        check_newer(verify_update(signed(version=6), KEYS), tombstone)
    check_newer(verify_update(signed(version=8), KEYS), tombstone)  # re-creation is newer


# --- keys ------------------------------------------------------------------------------------


def write_pem(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_key_ring_loads_a_directory_of_pem_files(tmp_path: Path) -> None:
    write_pem(tmp_path / "ed.pem", ED_KEY)
    write_pem(tmp_path / "es.pem", ES_KEY)
    (tmp_path / "README.txt").write_text("not a key")
    ring = keyring_from_paths([tmp_path])
    assert len(ring) == 2
    assert ring.get(ED_KID) is not None
    assert ring.get(ES_KID) is not None
    assert ring.get(key_id(STRANGER.public_key())) is None
    assert verify_update(signed(key=ES_KEY), ring).kid == ES_KID


def test_key_ring_loads_a_single_file(tmp_path: Path) -> None:
    ring = keyring_from_paths([write_pem(tmp_path / "admin.pub", ED_KEY)])
    assert len(ring) == 1
    assert ring.get(ED_KID) is not None


@pytest.mark.parametrize(
    ("key", "why"),
    [
        pytest.param(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "only Ed25519 or P-256 public keys are accepted",
            id="rsa",
        ),
        pytest.param(ec.generate_private_key(ec.SECP384R1()), "must be P-256", id="p384"),
    ],
)
def test_key_ring_refuses_other_key_types(tmp_path: Path, key: Any, why: str) -> None:
    write_pem(tmp_path / "ok.pem", ED_KEY)
    bad = write_pem(tmp_path / "weak.pem", key)
    with pytest.raises(ValueError, match=why) as caught:
        keyring_from_paths([tmp_path])
    assert str(bad) in str(caught.value)


def test_algorithm_for_refuses_other_curves() -> None:
    with pytest.raises(UpdateRefusedError, match="unsupported EC curve"):
        algorithm_for(ec.generate_private_key(ec.SECP384R1()))


def test_generated_admin_key_pair_is_private_and_signs_verifiable_updates(tmp_path: Path) -> None:
    private_path, public_path = generate_admin_keypair(tmp_path / "keys")
    assert (private_path.name, public_path.name) == ("admin.key", "admin.pub.pem")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    ring = keyring_from_paths([public_path])
    key = load_private_key(private_path)
    update = verify_update(signed(key=key), ring)
    assert update.kid == key_id(key.public_key())


def test_generate_admin_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    private_path, public_path = generate_admin_keypair(tmp_path)
    before = (private_path.read_bytes(), public_path.read_bytes())
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_admin_keypair(tmp_path)
    assert (private_path.read_bytes(), public_path.read_bytes()) == before


def test_load_private_key_refuses_rsa(tmp_path: Path) -> None:
    path = tmp_path / "rsa.key"
    path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="only Ed25519 or P-256 private keys"):
        load_private_key(path)
