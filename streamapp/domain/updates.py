"""Signed policy and ownership updates: JWS (EdDSA or ES256) over a small claim set.

An update is accepted only if its signature verifies with a configured admin public key, its
claims are well formed, its spec validates, and its version is newer than the one held (so an
old signed message replayed later is refused). The specs carry no secrets: unknown fields are
refused by the validators.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from streamapp.domain.areas import area_conflicts
from streamapp.domain.datasets import Dataset, parse_dataset
from streamapp.domain.policy import parse_tenant
from streamapp.domain.policy_fields import PolicyError

KINDS: Final = ("dataset", "tenant")
OPS: Final = ("upsert", "delete")
ISSUER: Final = "streamapp-admin"
MAX_UPDATE_BYTES: Final = 1_000_000  # a Kafka message (1 MiB by default) must hold it

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class UpdateRefusedError(Exception):
    """The update is refused; the message is the reason written to the audit topic."""


class UpdateAlreadyAppliedError(UpdateRefusedError):
    """The update the held entry came from, delivered again (replayed after a rebalance, or
    sent twice): nothing to apply, and not a refusal either."""


@dataclass(frozen=True, slots=True)
class Update:
    kind: Literal["dataset", "tenant"]
    op: Literal["upsert", "delete"]
    name: str
    version: int
    spec: Mapping[str, Any] | None
    kid: str

    @property
    def table_key(self) -> str:
        return self.name

    def entry(self) -> dict[str, Any]:
        """The table value this update leaves behind (a tombstone for deletes, so replays of
        older upserts stay refused)."""
        return {
            "version": self.version,
            "deleted": self.op == "delete",
            "spec": dict(self.spec) if self.spec is not None else None,
            "kid": self.kid,
        }


# --- keys ------------------------------------------------------------------------------------


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def algorithm_for(key: PublicKey | PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise UpdateRefusedError(f"unsupported EC curve {key.curve.name}")


class KeyRing:
    """Admin public keys by key id. Only Ed25519 and P-256 keys are accepted."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys = {key_id(key): key for key in keys}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)


def public_key_from_pem(data: bytes, origin: str) -> PublicKey:
    """An admin public key from PEM bytes (``origin`` names them in errors): Ed25519 or P-256."""
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ValueError(f"{origin}: only Ed25519 or P-256 public keys are accepted")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{origin}: EC keys must be P-256 (ES256)")
    return key


def private_key_from_pem(data: bytes, origin: str) -> PrivateKey:
    """An admin signing key from PEM bytes: Ed25519 or P-256."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{origin}: only Ed25519 or P-256 private keys can sign updates")
    return key


def new_private_key_pem() -> tuple[bytes, bytes]:
    """A fresh Ed25519 admin key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = ed25519.Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


# --- signing and verifying -------------------------------------------------------------------


def sign_update(
    kind: str,
    op: str,
    name: str,
    *,
    version: int,
    spec: Mapping[str, Any] | None,
    private_key: PrivateKey,
    issued_at: int,
) -> str:
    public = private_key.public_key()
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "iat": issued_at,
        "kind": kind,
        "op": op,
        "name": name,
        "version": version,
    }
    if spec is not None:
        claims["spec"] = dict(spec)
    return jwt.encode(
        claims,
        private_key,
        algorithm=algorithm_for(private_key),
        headers={"kid": key_id(public)},
    )


def verify_update(message: bytes, keys: KeyRing, *, expected_kind: str | None = None) -> Update:
    """Verify signature and claims; validate the spec. Raises ``UpdateRefusedError``."""
    if len(message) > MAX_UPDATE_BYTES:
        raise UpdateRefusedError(f"update of {len(message)} bytes exceeds {MAX_UPDATE_BYTES}")
    try:
        token = message.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UpdateRefusedError("not a JWS: message is not ASCII") from None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise UpdateRefusedError("not a JWS (unsigned or malformed)") from None
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise UpdateRefusedError("JWS header has no key id (kid)")
    key = keys.get(kid)
    if key is None:
        raise UpdateRefusedError(f"unknown signing key {kid!r}")
    algorithm = algorithm_for(key)
    if header.get("alg") != algorithm:
        raise UpdateRefusedError(f"algorithm {header.get('alg')!r} does not match key {kid}")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=ISSUER,
            options={"require": ["iat", "iss"], "verify_aud": False},
        )
    except jwt.InvalidSignatureError:
        raise UpdateRefusedError("bad signature") from None
    except jwt.PyJWTError as exc:
        raise UpdateRefusedError(f"invalid JWS: {exc}") from None
    return _update_from_claims(claims, kid, expected_kind)


def _update_from_claims(claims: Mapping[str, Any], kid: str, expected_kind: str | None) -> Update:
    kind, op, name, version = (claims.get(k) for k in ("kind", "op", "name", "version"))
    if kind not in KINDS:
        raise UpdateRefusedError(f"unknown kind {kind!r}")
    if expected_kind is not None and kind != expected_kind:
        raise UpdateRefusedError(f"a {kind} update on the {expected_kind} update topic")
    if op not in OPS:
        raise UpdateRefusedError(f"unknown op {op!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UpdateRefusedError("version must be a positive integer")
    if not isinstance(name, str) or not name:
        raise UpdateRefusedError("name is missing")
    spec = claims.get("spec")
    if op == "upsert":
        try:
            parsed_name = parse_dataset(spec).id if kind == "dataset" else parse_tenant(spec).tenant
        except PolicyError as exc:
            raise UpdateRefusedError(f"invalid {kind} spec: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a validator's bug refuses the update, no more
            raise UpdateRefusedError(
                f"invalid {kind} spec: internal error: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        if parsed_name != name:
            raise UpdateRefusedError(f"spec names {parsed_name!r}, the update names {name!r}")
    elif spec is not None:
        raise UpdateRefusedError("a delete carries no spec")
    return Update(kind, op, name, version, spec, kid)


def check_dataset_areas(dataset: Dataset, current: Iterable[Dataset]) -> None:
    """Refuse a dataset whose output area overlaps another tenant's dataset or output area,
    or whose prefixes overlap another tenant's output area (``domain/areas.py``), given the
    datasets the table holds now."""
    conflicts = area_conflicts(dataset, current)
    if conflicts:
        raise UpdateRefusedError(f"{conflicts[0].field}: {conflicts[0].reason}")


def check_newer(update: Update, held: Mapping[str, Any] | None) -> None:
    """Refuse an update whose version is not newer than the entry held (tombstones included)."""
    if held is None:
        if update.op == "delete":
            raise UpdateRefusedError(f"{update.kind} {update.name!r} does not exist")
        return
    held_version = held.get("version", 0)
    if update.version == held_version and update.entry() == dict(held):
        raise UpdateAlreadyAppliedError(f"already applied: version {held_version} is held")
    if update.version <= held_version:
        raise UpdateRefusedError(
            f"stale: version {update.version} is not newer than the held version {held_version}"
        )
