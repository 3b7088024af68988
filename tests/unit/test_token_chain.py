"""The minting fast path (streamapp/domain/token_chain.py) produces byte for byte what
pymacaroons produces for the same caveats, and what it mints is accepted by pymacaroons'
verifier and by our own for exactly the grant (and refused for another path, activity or
time)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon, Verifier

from streamapp.domain import token_chain, token_minting, tokens
from streamapp.domain.policy import ACTIVITIES
from streamapp.domain.token_chain import ChainError, prefix_of, root_prefix

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\x00"),
    min_size=1,
    max_size=40,
)
# Location and identifier are ASCII (root_prefix refuses others: pymacaroons sizes those two
# packets in characters, so its own output for non-ASCII ones is unreadable).
_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\n\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
_path = st.lists(_segment, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))
_activities = st.lists(st.sampled_from(sorted(ACTIVITIES)), min_size=1, max_size=4, unique=True)


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=64),
    identifier=_ascii,
    location=_ascii,
    caveats=st.lists(_text, max_size=5),
)
def test_chain_equals_pymacaroons(
    key: bytes, identifier: str, location: str, caveats: list[str]
) -> None:
    reference = Macaroon(location=location, identifier=identifier, key=key)
    for caveat in caveats:
        reference.add_first_party_caveat(caveat)
    assert root_prefix(key, identifier, location).token(*caveats) == reference.serialize()
    # and a prefix taken from a parsed macaroon extends the same way
    base = Macaroon(location=location, identifier=identifier, key=key)
    fast = prefix_of(Macaroon.deserialize(base.serialize())).token(*caveats)
    assert fast == reference.serialize()


def slow_mint(grant: token_minting.Grant, key: bytes, identity: str | None) -> str:
    """What mint_with_root_key returned before the fast path: pymacaroons all the way."""
    macaroon = Macaroon(location="loc", identifier="ident", key=key)
    if identity:
        macaroon.add_first_party_caveat(f"id:{identity}")
    macaroon.add_first_party_caveat(f"activity:{','.join(grant.activities)}")
    macaroon.add_first_party_caveat(f"before:{tokens.format_instant(grant.expires)}")
    if grant.path != "/":
        macaroon.add_first_party_caveat(f"path:{grant.path}")
    serialized: str = macaroon.serialize()
    return serialized


@settings(max_examples=300, deadline=None)
@given(
    path=_path,
    activities=_activities,
    minutes=st.integers(min_value=1, max_value=600),
    identity=st.one_of(st.none(), _segment),
)
def test_minted_tokens_equal_the_slow_path_and_verify_for_the_grant_only(
    path: str, activities: list[str], minutes: int, identity: str | None
) -> None:
    key = b"root-key-for-property-tests"
    grant = token_minting.Grant(path, tuple(activities), NOW + timedelta(minutes=minutes))
    minted = token_minting.mint_with_root_key(
        grant, key=key, identifier="ident", location="loc", identity=identity
    )
    assert minted.token == slow_mint(grant, key, identity)

    # pymacaroons' verifier accepts it with exactly these caveats satisfied
    verifier = Verifier()
    expected = {
        f"activity:{','.join(activities)}",
        f"before:{tokens.format_instant(grant.expires)}",
    }
    if path != "/":
        expected.add(f"path:{path}")
    if identity:
        expected.add(f"id:{identity}")
    for caveat in expected:
        verifier.satisfy_exact(caveat)
    assert verifier.verify(Macaroon.deserialize(minted.token), key)

    at = NOW + timedelta(minutes=minutes - 0.5)
    activity = activities[0]
    assert tokens.verify(minted.token, key=key, path=path, activity=activity, at=at).valid
    elsewhere = path + "-other" if path != "/" else None
    if elsewhere is not None:
        assert not tokens.verify(
            minted.token, key=key, path=elsewhere, activity=activity, at=at
        ).valid
    others = sorted(set(ACTIVITIES) - set(activities) - {"READ_METADATA"})
    if others and set(activities) != {"READ_METADATA"}:
        assert not tokens.verify(minted.token, key=key, path=path, activity=others[0], at=at).valid
    late = grant.expires + timedelta(seconds=1)
    assert not tokens.verify(minted.token, key=key, path=path, activity=activity, at=late).valid


def pymacaroons_attenuation(
    base_token: str, activities: Sequence[str], expires: datetime, relative: str
) -> str:
    """pymacaroons' own attenuation of ``base_token`` with the grant's caveats, in our order."""
    reference = Macaroon.deserialize(base_token)
    reference.add_first_party_caveat(f"activity:{','.join(activities)}")
    reference.add_first_party_caveat(f"before:{tokens.format_instant(expires)}")
    if relative != "/":
        reference.add_first_party_caveat(f"path:{relative}")
    return str(reference.serialize())


@settings(max_examples=200, deadline=None)
@given(path=_path, activities=_activities, minutes=st.integers(min_value=1, max_value=600))
def test_attenuated_tokens_equal_pymacaroons_attenuation(
    path: str, activities: list[str], minutes: int
) -> None:
    key = b"storage-root-key"
    base = Macaroon(location="dcache", identifier="base-id", key=key)
    base.add_first_party_caveat("activity:" + ",".join(sorted(ACTIVITIES)))
    base.add_first_party_caveat("root:/data")
    base_token = base.serialize()
    grant = token_minting.Grant("/data" + path, tuple(activities), NOW + timedelta(minutes=minutes))
    minted = token_minting.attenuate(base_token, grant, now=NOW)

    assert minted.token == pymacaroons_attenuation(base_token, activities, grant.expires, path)
    at = NOW + timedelta(seconds=30)
    assert tokens.verify(
        minted.token, key=key, path="/data" + path, activity=activities[0], at=at
    ).valid
    assert not tokens.verify(
        minted.token, key=key, path="/other" + path, activity=activities[0], at=at
    ).valid


def test_non_ascii_location_or_identifier_is_refused() -> None:
    with pytest.raises(ChainError, match="location is not ASCII"):
        root_prefix(b"k", "id", "lö")
    with pytest.raises(ChainError, match="identifier is not ASCII"):
        root_prefix(b"k", "ïd", "loc")


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32) | st.binary(max_size=100), data=st.binary(max_size=300)
)
def test_the_signature_hmac_is_hmac_sha256(key: bytes, data: bytes) -> None:
    assert token_chain._signature_hmac(key, data) == hmac.digest(key, data, "sha256")


@settings(max_examples=500, deadline=None)
@given(path=st.text(alphabet="/.a", max_size=12) | st.text(max_size=20))
def test_a_segment_is_named_exactly_when_the_resolved_path_has_one(path: str) -> None:
    """As dCache resolves a ``path:`` caveat: ``..`` stops at the root, so ``/data/..`` is the
    whole storage (the adversary review found ``/..`` minted with the root key)."""
    assert token_minting._names_a_segment(path) == bool(tokens.chroot([], path))


@pytest.mark.parametrize("path", ["/..", "/data/..", "/a/b/../..", "//./..//", "/.././.."])
def test_a_path_resolving_to_the_root_is_never_minted_with_the_root_key(path: str) -> None:
    grant = token_minting.Grant(path, ("DOWNLOAD",), NOW + timedelta(minutes=5))
    with pytest.raises(tokens.TokenError, match="never minted with the root key"):
        token_minting.mint_with_root_key(grant, key=b"k", identifier="id", location="loc")


@settings(max_examples=300, deadline=None)
@given(
    caveat=st.binary(max_size=200) | st.binary(min_size=65_520, max_size=65_530),
    earlier=st.lists(st.binary(max_size=50), max_size=3),
    key=st.binary(min_size=1, max_size=40),
)
def test_the_one_caveat_token_is_token_of_one_caveat(
    caveat: bytes, earlier: list[bytes], key: bytes
) -> None:
    prefix = root_prefix(key, "id", "loc")
    for data in earlier:  # a prefix with caveats of its own (the chain through before:)
        prefix = prefix.extended(data.decode("utf-8", "replace"))
    try:
        expected: str | ChainError = prefix.token_of(caveat)
    except ChainError as exc:
        expected = exc
    if isinstance(expected, ChainError):
        with pytest.raises(ChainError):
            prefix.token_of_one(caveat)
    else:
        assert prefix.token_of_one(caveat) == expected


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(timezones=st.just(UTC)))
def test_the_before_caveat_is_format_instant(moment: datetime) -> None:
    prefix = root_prefix(b"k", "id", "loc")
    token = token_minting._extend_chain(prefix, "/a", moment)
    caveats = [c.caveat_id for c in tokens.deserialize(token).caveats]
    assert caveats == [f"before:{tokens.format_instant(moment)}", "path:/a"]


@settings(max_examples=200, deadline=None)
@given(
    paths=st.lists(_path, min_size=1, max_size=6),
    tenths=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=6),
)
def test_tokens_sharing_an_expiry_are_each_what_pymacaroons_makes(
    paths: list[str], tenths: list[int]
) -> None:
    """The chain through ``before:`` is cached per expiry: tokens minted in any order for a
    few expiries (shared and not) are each byte for byte pymacaroons' token of their caveats."""
    key = b"root-key-for-property-tests"
    for index, path in enumerate(paths):
        expires = NOW + timedelta(minutes=5, milliseconds=100 * tenths[index % len(tenths)])
        grant = token_minting.Grant(path, ("DOWNLOAD",), expires)
        minted = token_minting.mint_with_root_key(
            grant, key=key, identifier="ident", location="loc"
        )
        assert minted.token == slow_mint(grant, key, None)


def test_an_expiry_in_a_repeated_hour_gets_its_own_before_caveat() -> None:
    """01:30 before and after New York's fall-back are equal as datetimes (they differ only
    in ``fold``) but an hour apart: the cached chain through ``before:`` must not give the
    earlier one the later's caveat (a token an hour too long; adversary review)."""
    new_york = ZoneInfo("America/New_York")
    early = datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=0)  # 05:30Z
    late = datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=1)  # 06:30Z
    key = b"root-key-for-property-tests"
    for first, second in ((late, early), (early, late)):
        for expires in (first, datetime(2030, 1, 1, tzinfo=UTC), second):
            grant = token_minting.Grant("/data/a", ("DOWNLOAD",), expires)
            minted = token_minting.mint_with_root_key(
                grant, key=key, identifier="ident", location="loc"
            )
            assert minted.token == slow_mint(grant, key, None)
            before = tokens.format_instant(expires)
            assert before == expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            assert f"before:{before}" in tokens.first_party_caveats(
                tokens.deserialize(minted.token)
            )


@settings(max_examples=200, deadline=None)
@given(
    path=_path,
    granted=_activities,
    bases=st.lists(
        st.tuples(
            st.lists(_segment, max_size=2),  # the base's path: caveat, below /data
            st.none() | _activities,  # the activities it lists (None: no activity caveat)
        ),
        min_size=2,
        max_size=4,
    ),
)
def test_bases_of_one_event_each_give_their_own_attenuation(
    path: str, granted: list[str], bases: list[tuple[list[str], list[str] | None]]
) -> None:
    """The copies of an event with a base macaroon per tenant are attenuated one after the
    other for the same path (what is cached across them — the path's place below each base's
    scope, the listed activities, the chains by identity — must never carry one base's
    answer to another): each token is pymacaroons' own attenuation of its base, with the
    activities both allow, and a path outside a base's scope is refused."""
    key = b"storage-root-key"
    full = "/data" + path
    expires = NOW + timedelta(minutes=5)
    for number, (scope_segments, listed) in enumerate(bases):
        base = Macaroon(location="dcache", identifier=f"tenant-{number}", key=key)
        if listed is not None:
            base.add_first_party_caveat("activity:" + ",".join(listed))
        base.add_first_party_caveat("root:/data")
        if scope_segments:
            base.add_first_party_caveat("path:/" + "/".join(scope_segments))
        base_token = base.serialize()
        expected = tuple(a for a in granted if listed is None or a in listed)
        scope = "/" + "/".join(scope_segments)
        inside = path == scope or path.startswith(scope.rstrip("/") + "/")
        if not inside or not expected:
            with pytest.raises(tokens.TokenError):
                token_minting.attenuate_to(base_token, full, tuple(granted), expires, now=NOW)
            continue
        minted = token_minting.attenuate_to(base_token, full, tuple(granted), expires, now=NOW)
        assert minted.activities == expected
        relative = path[len(scope.rstrip("/")) :] or "/"
        assert minted.token == pymacaroons_attenuation(base_token, expected, expires, relative)
        at = NOW + timedelta(seconds=30)
        assert tokens.verify(minted.token, key=key, path=full, activity=expected[0], at=at).valid


def test_a_grant_path_with_dot_dot_is_never_attenuated() -> None:
    """Compared segment by segment, ``/data/exp/run/../../other`` lies below a base confined
    to /data/exp, and the storage would resolve the token's ``path:run/../../other`` to
    /data/exp/other — not the grant's file. Refused, as for root-key tokens."""
    key = b"storage-root-key"
    base = Macaroon(location="dcache", identifier="base-id", key=key)
    base.add_first_party_caveat("root:/data")
    base.add_first_party_caveat("path:/exp")
    expires = NOW + timedelta(minutes=5)
    with pytest.raises(tokens.TokenError, match=r"'\.\.' segment"):
        token_minting.attenuate_to(
            base.serialize(), "/data/exp/run/../../other", ("DOWNLOAD",), expires, now=NOW
        )
    # a name that merely contains two dots is a name
    minted = token_minting.attenuate_to(
        base.serialize(), "/data/exp/run/a..b", ("DOWNLOAD",), expires, now=NOW
    )
    assert tokens.verify(
        minted.token, key=key, path="/data/exp/run/a..b", activity="DOWNLOAD", at=NOW
    ).valid


@pytest.mark.parametrize("restricted", [False, True])
def test_an_unknown_activity_is_never_put_into_a_token(restricted: bool) -> None:
    """A base without an activity caveat allows every activity; a name dCache does not know
    must still not reach the token (a grant comes from a checked policy: defence in depth)."""
    base = Macaroon(location="dcache", identifier="base-id", key=b"storage-root-key")
    if restricted:
        base.add_first_party_caveat("activity:DOWNLOAD,EVERYTHING_ELSE")
    expires = NOW + timedelta(minutes=5)
    with pytest.raises(tokens.TokenError):
        token_minting.attenuate_to(
            base.serialize(), "/data/f", ("DOWNLOAD", "EVERYTHING"), expires, now=NOW
        )
    with pytest.raises(tokens.TokenError, match="unknown activity"):
        token_minting.root_key_token(
            "/data/f", ("EVERYTHING",), expires, key=b"k", identifier="i", location="l"
        )
