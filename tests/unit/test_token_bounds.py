"""Caveats the macaroon wire format cannot carry (or that a parser could read two ways) are
never a library exception; and dead-letter reasons stay bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymacaroons import Macaroon

from streamapp.domain.deadletter import MAX_REASON_CHARS, DeadLetterContext
from streamapp.domain.token_minting import MAX_CAVEAT_BYTES, Grant, attenuate, mint_with_root_key
from streamapp.domain.tokens import TokenError

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
READ = ("DOWNLOAD", "READ_METADATA")


def grant(path: str) -> Grant:
    return Grant(path, READ, NOW + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        pytest.param("/data/" + "x" * 70_000, "exceeds", id="beyond-the-packet-limit"),
        pytest.param("/data/" + "x" * MAX_CAVEAT_BYTES, "exceeds", id="beyond-our-bound"),
        pytest.param("/data/a\npath:/", "newline", id="newline"),
        pytest.param("/data/a\x00b", "NUL", id="nul"),
    ],
)
def test_unmintable_paths_are_token_errors(path: str, why: str) -> None:
    with pytest.raises(TokenError, match=why):
        mint_with_root_key(grant(path), key=b"k", identifier="i", location="l")
    base = Macaroon(location="l", identifier="i", key=b"k").serialize()
    with pytest.raises(TokenError, match=why):
        attenuate(base, grant(path), now=NOW)


def test_a_path_at_the_bound_is_minted() -> None:
    path = "/d/" + "x" * (MAX_CAVEAT_BYTES - len("path:/d/"))
    token = mint_with_root_key(grant(path), key=b"k", identifier="i", location="l")
    assert token.path == path


def test_dead_letter_reasons_are_bounded() -> None:
    context = DeadLetterContext(reason="x" * 100_000, stage="s", topic="t", partition=0, offset=1)
    reason = dict(context.headers())["streamapp.dlq.reason"].decode()
    assert len(reason) == MAX_REASON_CHARS
    assert reason.endswith("…")
    short = DeadLetterContext(reason="fine", stage="s", topic="t", partition=0, offset=1)
    assert dict(short.headers())["streamapp.dlq.reason"] == b"fine"
