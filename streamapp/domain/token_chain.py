"""Macaroons (v1 binary form) built by extending a prepared chain: the fast path of minting.

A macaroon's signature is an HMAC chain: ``sig0 = HMAC(HMAC("macaroons-key-generator", key),
identifier)``, then ``sig_i = HMAC(sig_{i-1}, caveat_i)`` for each first-party caveat; its v1
serialization is a run of packets (four hex digits of length, ``name value\\n``) — location,
identifier, one ``cid`` per caveat, then the signature — encoded as unpadded URL-safe base64.
So everything up to a grant's own caveats can be computed once per base (a root key with its
identity caveat, or a base macaroon from the storage) and each token costs only the HMACs of
its own caveats. The output is byte for byte what pymacaroons produces for the same caveats
(tests/unit/test_token_chain.py checks it against pymacaroons itself).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

from pymacaroons import Macaroon
from pymacaroons.exceptions import MacaroonException
from pymacaroons.macaroon import MACAROON_V1
from pymacaroons.serializers.binary_serializer import BinarySerializer

_KEY_GENERATOR: Final = b"macaroons-key-generator"
_MAX_PACKET: Final = 0xFFFF
_SIGNATURE_PACKET: Final = 4 + len(b"signature ") + 32 + 1
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


class ChainError(ValueError):
    """A caveat that the v1 form cannot carry, or a macaroon we cannot extend."""


@dataclass(frozen=True, slots=True, eq=False)
class TokenPrefix:
    """A macaroon up to its signature: its packets so far and the signature after them.

    Compared and hashed by identity: prefixes are keys of the minting caches, made once per
    chain and kept by them, and a generated ``__hash__`` over the packets was two Python
    calls per token (an equal prefix made again only gets entries of its own)."""

    packets: bytes
    signature: bytes  # the raw 32-byte HMAC-SHA256

    def extended(self, caveat: str) -> TokenPrefix:
        """This prefix with one more first-party caveat."""
        data = caveat.encode("utf-8")
        return TokenPrefix(
            self.packets + _packet(b"cid", data), hmac.digest(self.signature, data, "sha256")
        )

    def token(self, *caveats: str) -> str:
        """The serialized macaroon: this prefix, ``caveats``, and the final signature."""
        return self.token_of(*(caveat.encode("utf-8") for caveat in caveats))

    def token_of(self, *caveats: bytes) -> str:
        """``token`` of caveats already encoded as UTF-8 (the minting hot path). The one-shot
        ``hmac.digest`` and a single join: a token per event costs a few microseconds."""
        parts = [self.packets]
        signature = self.signature
        for index, data in enumerate(caveats):
            parts.append(_packet(b"cid", data))
            if index == 0:  # keyed by this prefix's signature: its pads are prepared once
                inner, outer = _pads(signature)
                inner = inner.copy()
                inner.update(data)
                outer = outer.copy()
                outer.update(inner.digest())
                signature = outer.digest()
            else:
                signature = _signature_hmac(signature, data)
        parts.append(_packet(b"signature", signature))
        encoded = binascii.b2a_base64(b"".join(parts), newline=False).translate(_URLSAFE)
        return encoded.rstrip(b"=").decode("ascii")

    def token_of_one(self, caveat: bytes) -> str:
        """``token_of(caveat)`` written out (a read token's ``path:``, once per event): the same
        bytes with a third of the Python calls — in a busy worker every call runs cold, and
        minting was a sixth of its CPU at ten tenants per event."""
        if len(caveat) > _MAX_CAVEAT_DATA:
            return self.token_of(caveat)  # token_of says the packet is too long
        inner, outer = _pads(self.signature)
        inner = inner.copy()
        inner.update(caveat)
        outer = outer.copy()
        outer.update(inner.digest())
        raw = b"%b%04xcid %b\n%b%b\n" % (
            self.packets,
            len(caveat) + _CID_FRAME,
            caveat,
            _SIGNATURE_HEAD,
            outer.digest(),
        )
        encoded = binascii.b2a_base64(raw, newline=False).translate(_URLSAFE)
        return encoded.rstrip(b"=").decode("ascii")


_CID_FRAME: Final = 4 + len(b"cid") + 1 + 1  # length digits, name, space, newline
_MAX_CAVEAT_DATA: Final = 0xFFFF - _CID_FRAME
_SIGNATURE_HEAD: Final = b"%04xsignature " % _SIGNATURE_PACKET
_INNER_PAD: Final = int.from_bytes(b"\x36" * 64, "big")
_OUTER_PAD: Final = int.from_bytes(b"\x5c" * 64, "big")
# each byte XOR 0x36 / 0x5c as a translation table: a key's pads in one C call each
_INNER_TABLE: Final = bytes(b ^ 0x36 for b in range(256))
_OUTER_TABLE: Final = bytes(b ^ 0x5C for b in range(256))
_SIGNATURE_BYTES: Final = 32


def _signature_hmac(signature: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 keyed by a 32-byte signature (RFC 2104 written out: a key shorter than the
    block is zero-padded), the same bytes as ``hmac.digest``, which sets up OpenSSL's HMAC per
    call and cost about half again as much (tests/unit/test_token_chain.py compares them)."""
    if len(signature) != _SIGNATURE_BYTES:
        return hmac.digest(signature, data, "sha256")
    padded = signature + bytes(64 - _SIGNATURE_BYTES)
    inner = hashlib.sha256(padded.translate(_INNER_TABLE))
    inner.update(data)
    return hashlib.sha256(padded.translate(_OUTER_TABLE) + inner.digest()).digest()


@functools.lru_cache(maxsize=4096)
def _pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC's inner and outer key pads (RFC 2104) for ``key``:
    the first caveat of every token of a chain is keyed by the same signature, and an HMAC from
    prepared pads costs half of ``hmac.digest`` (OpenSSL's per-call set-up)."""
    if len(key) > 64:  # RFC 2104: a longer key is hashed first (a signature never is)
        key = hashlib.sha256(key).digest()
    padded = int.from_bytes(key.ljust(64, b"\0"), "big")
    return (
        hashlib.sha256((padded ^ _INNER_PAD).to_bytes(64, "big")),
        hashlib.sha256((padded ^ _OUTER_PAD).to_bytes(64, "big")),
    )


def root_prefix(key: bytes, identifier: str, location: str) -> TokenPrefix:
    """A new macaroon's start, as ``Macaroon(location, identifier, key)`` makes it.

    Location and identifier must be ASCII: pymacaroons sizes their packets in characters,
    not bytes, so a non-ASCII one serializes into a macaroon no parser reads back."""
    _require_ascii(location, "location")
    _require_ascii(identifier, "identifier")
    derived = hmac.digest(_KEY_GENERATOR, key, hashlib.sha256)
    identifier_bytes = identifier.encode("utf-8")
    return TokenPrefix(
        _packet(b"location", location.encode("utf-8")) + _packet(b"identifier", identifier_bytes),
        hmac.digest(derived, identifier_bytes, hashlib.sha256),
    )


def prefix_of(macaroon: Macaroon) -> TokenPrefix:
    """The prefix of a parsed (v1, first-party only) macaroon, to extend without its key."""
    if macaroon.version != MACAROON_V1:
        raise ChainError("only v1 macaroons are extended on the fast path")
    if any(not caveat.first_party() for caveat in macaroon.caveats):
        raise ChainError("third-party caveats are not supported")
    _require_ascii(macaroon.location, "location")
    _require_ascii(macaroon.identifier, "identifier")
    try:
        raw = BinarySerializer().serialize_raw(macaroon)
    except (MacaroonException, ValueError, UnicodeError) as exc:
        raise ChainError(f"macaroon cannot be serialized: {type(exc).__name__}") from None
    return TokenPrefix(raw[:-_SIGNATURE_PACKET], binascii.unhexlify(macaroon.signature_bytes))


def _packet(name: bytes, data: bytes) -> bytes:
    size = 4 + len(name) + 1 + len(data) + 1
    if size > _MAX_PACKET:
        raise ChainError(f"a {name.decode()} packet of {size} bytes exceeds {_MAX_PACKET}")
    return b"%04x%b %b\n" % (size, name, data)


def _require_ascii(value: str, what: str) -> None:
    if not value.isascii():
        raise ChainError(f"the macaroon {what} is not ASCII")
