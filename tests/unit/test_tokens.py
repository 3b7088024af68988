"""Delegated macaroons: minting, dCache caveat semantics, attenuation, and the property that a
token is never wider than the grant behind it (docs/formats.md §5, dCache's
MacaroonContext and ContextExtractingCaveatVerifier)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon

from streamapp.domain.policy import ACTIVITIES
from streamapp.domain.token_minting import Grant, MintedToken, attenuate, mint_with_root_key
from streamapp.domain.tokens import TokenError, Verdict, format_instant, inspect, verify

KEY = b"storage-root-key-for-tests"
NOW = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
LOCATION = "dcache.desy.example"
IDENTIFIER = "streamapp-test"
FILE = "/data/a/file"
READ = ("DOWNLOAD", "READ_METADATA")

# --- helpers --------------------------------------------------------------------------------


def minted(
    path: str = FILE,
    activities: tuple[str, ...] = READ,
    expires: datetime = NOW + timedelta(minutes=10),
    identity: str | None = None,
) -> MintedToken:
    return mint_with_root_key(
        Grant(path, activities, expires),
        key=KEY,
        identifier=IDENTIFIER,
        location=LOCATION,
        identity=identity,
    )


def macaroon_with(*caveats: str, key: bytes = KEY) -> str:
    """A macaroon as the storage would mint it, with ``caveats`` in order."""
    macaroon = Macaroon(location=LOCATION, identifier=IDENTIFIER, key=key)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    serialized: str = macaroon.serialize()
    return serialized


def check(
    token: str,
    path: str,
    activity: str = "DOWNLOAD",
    at: datetime = NOW,
    *,
    key: bytes = KEY,
    client_ip: str | None = None,
) -> Verdict:
    return verify(token, key=key, path=path, activity=activity, at=at, client_ip=client_ip)


def segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def within(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it, on path components."""
    want = segments(prefix)
    return segments(path)[: len(want)] == want


def instant(moment: datetime) -> str:
    return format_instant(moment)


# --- minting with the root key ----------------------------------------------------------------


def test_minted_token_carries_exactly_the_grant_caveats() -> None:
    token = minted(identity="streamapp")
    assert inspect(token.token)["caveats"] == [
        "id:streamapp",
        "activity:DOWNLOAD,READ_METADATA",
        "before:2026-11-20T08:10:00.000Z",
        f"path:{FILE}",  # last: the chain through before: is shared by one expiry's tokens
    ]
    assert (token.path, token.activities, token.expires) == (
        FILE,
        READ,
        NOW + timedelta(minutes=10),
    )


def test_a_grant_without_activities_mints_nothing() -> None:
    with pytest.raises(TokenError, match="without activities"):
        minted(activities=())


def test_a_grant_on_the_root_is_never_minted_with_the_root_key() -> None:
    """Without a path caveat the token would reach the whole storage (no event or output
    area is ``/``; this is defence in depth, found by an adversarial review)."""
    for path in ("/", "//", "/./"):
        with pytest.raises(TokenError, match="root '/'"):
            minted(path=path)


@pytest.mark.parametrize("activity", [*READ])
@pytest.mark.parametrize(
    "at",
    [
        pytest.param(NOW, id="now"),
        pytest.param(NOW + timedelta(minutes=10), id="at-expiry-instant"),
    ],
)
def test_minted_token_is_valid_for_the_grant(activity: str, at: datetime) -> None:
    verdict = check(minted().token, FILE, activity, at)
    assert verdict.valid, verdict.reason
    assert verdict.reason is None
    assert verdict.scope == {
        "path": FILE,
        "activities": ["DOWNLOAD", "READ_METADATA"],
        "expires": "2026-11-20T08:10:00.000Z",
    }


def test_minted_token_allows_below_the_granted_path_by_components() -> None:
    # dCache's path caveat confines to a subtree: a component prefix, never a string prefix.
    assert check(minted().token, f"{FILE}/x").valid


MINTED_REFUSALS = [
    pytest.param(FILE + "2", "DOWNLOAD", NOW, KEY, "outside", id="sibling-file2"),
    pytest.param("/data/a/file.txt.bak", "DOWNLOAD", NOW, KEY, "outside", id="sibling-suffix"),
    pytest.param("/data/a/fil", "DOWNLOAD", NOW, KEY, "outside", id="string-prefix-of-grant"),
    pytest.param("/data/a", "DOWNLOAD", NOW, KEY, "outside", id="parent-dir"),
    pytest.param("/data/b/file", "DOWNLOAD", NOW, KEY, "outside", id="other-dir"),
    pytest.param("/", "READ_METADATA", NOW, KEY, "outside", id="root"),
    pytest.param(FILE, "UPLOAD", NOW, KEY, "UPLOAD not allowed", id="upload"),
    pytest.param(FILE, "DELETE", NOW, KEY, "DELETE not allowed", id="delete"),
    pytest.param(FILE, "LIST", NOW, KEY, "LIST not allowed", id="list"),
    pytest.param(FILE, "FROBNICATE", NOW, KEY, "unknown activity", id="unknown-activity"),
    pytest.param(
        FILE,
        "DOWNLOAD",
        NOW + timedelta(minutes=10, milliseconds=1),
        KEY,
        "expired at 2026-11-20T08:10:00.000Z",
        id="one-ms-after-expiry",
    ),
    pytest.param(FILE, "DOWNLOAD", NOW, b"another-key", "signature", id="wrong-secret"),
    pytest.param(FILE, "DOWNLOAD", NOW, KEY + b"\n", "signature", id="secret-with-newline"),
]


@pytest.mark.parametrize(("path", "activity", "at", "key", "why"), MINTED_REFUSALS)
def test_minted_token_is_invalid_outside_the_grant(
    path: str, activity: str, at: datetime, key: bytes, why: str
) -> None:
    verdict = check(minted().token, path, activity, at, key=key)
    assert not verdict.valid
    assert verdict.reason is not None
    assert why in verdict.reason


def test_dotdot_in_the_requested_path_does_not_escape_the_grant() -> None:
    verdict = check(minted().token, "/data/a/file/../file2")
    assert not verdict.valid


def test_unknown_caveat_appended_by_a_holder_invalidates_the_token() -> None:
    macaroon = Macaroon.deserialize(minted().token).copy()
    macaroon.add_first_party_caveat("foo:bar")
    verdict = check(macaroon.serialize(), FILE)
    assert not verdict.valid
    assert verdict.reason == "unknown caveat 'foo'"


def test_a_token_with_a_dropped_caveat_fails_the_signature_check() -> None:
    macaroon = Macaroon.deserialize(minted().token)
    macaroon.caveats = [c for c in macaroon.caveats if not c.caveat_id.startswith("path:")]
    verdict = check(macaroon.serialize(), "/etc/passwd")
    assert not verdict.valid
    assert verdict.reason == "signature does not match the secret"


def test_a_token_with_a_forged_signature_is_invalid() -> None:
    macaroon = Macaroon.deserialize(minted().token)
    macaroon.signature = "00" * 32
    verdict = check(macaroon.serialize(), FILE)
    assert not verdict.valid
    assert verdict.reason == "signature does not match the secret"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not a macaroon", id="garbage"),
        pytest.param("eA", id="base64-junk"),
    ],
)
def test_unparseable_tokens_are_invalid(token: str) -> None:
    verdict = check(token, FILE)
    assert not verdict.valid
    assert verdict.reason is not None
    assert "not a macaroon" in verdict.reason


def truncations() -> list[str]:
    token = minted().token
    return [token[:16], token[:-20]]


@pytest.mark.parametrize("token", truncations(), ids=["header-only", "short-signature"])
def test_truncated_tokens_never_verify(token: str) -> None:
    assert not check(token, FILE).valid


def test_third_party_caveats_are_refused() -> None:
    macaroon = Macaroon(location=LOCATION, identifier=IDENTIFIER, key=KEY)
    macaroon.add_third_party_caveat("https://auth.example", b"third-party-key", "tp-id")
    verdict = check(macaroon.serialize(), FILE)
    assert not verdict.valid
    assert verdict.reason == "third-party caveats are not supported"


# --- caveat semantics on hand-built macaroons ------------------------------------------------

# (caveats, requested path, activity, client ip, valid?, reason fragment or effective path)
CAVEAT_CASES = [
    pytest.param(
        ["path:/Users/alice", "path:shared"],
        "/Users/alice/shared/f",
        "DOWNLOAD",
        None,
        True,
        "/Users/alice/shared",
        id="relative-path-resolves-under-first",
    ),
    pytest.param(
        ["path:/Users/alice", "path:shared"],
        "/Users/alice/other",
        "DOWNLOAD",
        None,
        False,
        "outside /Users/alice/shared",
        id="relative-path-confines",
    ),
    pytest.param(
        ["path:/Users/alice", "path:/x"],
        "/Users/alice/x/f",
        "DOWNLOAD",
        None,
        True,
        "/Users/alice/x",
        id="absolute-second-path-is-chrooted",
    ),
    pytest.param(
        ["path:/Users/alice", "path:/x"],
        "/x/f",
        "DOWNLOAD",
        None,
        False,
        "outside /Users/alice/x",
        id="absolute-second-path-does-not-reach-root",
    ),
    pytest.param(
        ["path:/Users/alice", "path:../../etc"],
        "/etc/passwd",
        "DOWNLOAD",
        None,
        False,
        "outside /Users/alice/etc",
        id="dotdot-cannot-climb",
    ),
    pytest.param(
        ["path:/Users/alice", "path:.."],
        "/Users/bob",
        "READ_METADATA",
        None,
        False,
        "outside /Users/alice",
        id="bare-dotdot-stays-put",
    ),
    pytest.param(
        ["root:/data", "path:/a"],
        "/data/a/f",
        "DOWNLOAD",
        None,
        True,
        "/data/a",
        id="root-then-path",
    ),
    pytest.param(
        ["root:/data", "path:/a"],
        "/a/f",
        "DOWNLOAD",
        None,
        False,
        "outside /data/a",
        id="path-after-root-is-relative-to-root",
    ),
    pytest.param(
        ["root:/data", "path:../../etc"],
        "/etc",
        "DOWNLOAD",
        None,
        False,
        "outside /data/etc",
        id="path-cannot-climb-above-root",
    ),
    pytest.param(
        ["root:/data", "root:/x"],
        "/data/x/f",
        "DOWNLOAD",
        None,
        True,
        "/data/x",
        id="second-root-is-chrooted",
    ),
    pytest.param(
        ["path:/data/a", "root:/data"],
        "/data/a/f",
        "DOWNLOAD",
        None,
        True,
        "/data/a",
        id="root-compatible-with-path",
    ),
    pytest.param(
        ["path:/data", "root:/data/a/b"],
        "/data/a/b/f",
        "DOWNLOAD",
        None,
        True,
        "/data/a/b",
        id="root-deeper-than-path",
    ),
    pytest.param(
        ["path:/data", "root:/data/a/b"],
        "/data/c",
        "DOWNLOAD",
        None,
        False,
        "outside /data/a/b",
        id="root-deeper-than-path-confines",
    ),
    pytest.param(
        ["path:/data/a", "root:/other"],
        "/other/data/a",
        "DOWNLOAD",
        None,
        False,
        "root extends outside of path",
        id="root-outside-path",
    ),
    pytest.param(
        ["path:/data/a", "root:/data/b"],
        "/data/b",
        "DOWNLOAD",
        None,
        False,
        "root extends outside of path",
        id="root-sibling-of-path",
    ),
    pytest.param(
        ["activity:DOWNLOAD,UPLOAD", "activity:DOWNLOAD"],
        "/f",
        "UPLOAD",
        None,
        False,
        "activity UPLOAD not allowed",
        id="activities-intersect-upload-dropped",
    ),
    pytest.param(
        ["activity:DOWNLOAD,UPLOAD", "activity:DOWNLOAD"],
        "/f",
        "DOWNLOAD",
        None,
        True,
        "/",
        id="activities-intersect-download-kept",
    ),
    pytest.param(
        ["activity:DOWNLOAD"],
        "/f",
        "READ_METADATA",
        None,
        True,
        "/",
        id="read-metadata-implied",
    ),
    pytest.param(
        ["activity:DOWNLOAD"],
        "/f",
        "LIST",
        None,
        False,
        "activity LIST not allowed",
        id="activity-not-listed",
    ),
    pytest.param(
        ["activity:UPLOAD", "activity:DOWNLOAD"],
        "/f",
        "READ_METADATA",
        None,
        False,
        "activity READ_METADATA not allowed",
        id="empty-intersection-allows-nothing",
    ),
    pytest.param(
        ["activity:DOWNLOAD", "activity:DELETE,DOWNLOAD"],
        "/f",
        "DELETE",
        None,
        False,
        "activity DELETE not allowed",
        id="appended-activity-cannot-widen",
    ),
    pytest.param(
        ["activity:FROBNICATE"],
        "/f",
        "DOWNLOAD",
        None,
        False,
        "unknown activity 'FROBNICATE'",
        id="unknown-activity",
    ),
    pytest.param(["max-upload:0"], "/f", "UPLOAD", None, False, "positive", id="max-upload-0"),
    pytest.param(["max-upload:-5"], "/f", "UPLOAD", None, False, "positive", id="max-upload-neg"),
    pytest.param(["max-upload:lots"], "/f", "UPLOAD", None, False, "bad max-upload", id="mu-nan"),
    pytest.param(["max-upload:1024"], "/f", "UPLOAD", None, True, "/", id="max-upload-ok"),
    pytest.param(["ip:192.0.2.0/24"], "/f", "DOWNLOAD", "192.0.2.7", True, "/", id="ip-in-net"),
    pytest.param(
        ["ip:192.0.2.0/24,2001:db8::/32"],
        "/f",
        "DOWNLOAD",
        "2001:db8::1",
        True,
        "/",
        id="ip-v6-in-list",
    ),
    pytest.param(
        ["ip:192.0.2.0/24"],
        "/f",
        "DOWNLOAD",
        "198.51.100.7",
        False,
        "client address 198.51.100.7 not allowed",
        id="ip-outside-net",
    ),
    pytest.param(
        ["ip:192.0.2.0/24,198.51.100.0/24", "ip:198.51.100.0/24"],
        "/f",
        "DOWNLOAD",
        "192.0.2.7",
        False,
        "client address 192.0.2.7 not allowed",
        id="ip-caveats-intersect",
    ),
    pytest.param(
        ["ip:192.0.2.0/24,198.51.100.0/24", "ip:198.51.100.0/24"],
        "/f",
        "DOWNLOAD",
        "198.51.100.9",
        True,
        "/",
        id="ip-in-intersection",
    ),
    pytest.param(["ip:not-an-ip"], "/f", "DOWNLOAD", None, False, "bad ip", id="ip-malformed"),
    pytest.param(
        ["id:alice", "iid:AbC123", "home:/Users/alice"],
        "/f",
        "DOWNLOAD",
        None,
        True,
        "/",
        id="context-caveats-accepted",
    ),
    pytest.param(["id:"], "/f", "DOWNLOAD", None, False, "empty id", id="empty-id"),
    pytest.param(["foo:bar"], "/f", "DOWNLOAD", None, False, "unknown caveat 'foo'", id="unknown"),
    pytest.param(["nocolon"], "/f", "DOWNLOAD", None, False, "not key:value", id="not-key-value"),
    pytest.param(
        ["before:2026-11-21T00:00:00"], "/f", "DOWNLOAD", None, False, "no zone", id="naive-before"
    ),
    pytest.param(
        ["before:tomorrow"], "/f", "DOWNLOAD", None, False, "bad ISO 8601", id="bad-before"
    ),
]


@pytest.mark.parametrize(
    ("caveats", "path", "activity", "client_ip", "valid", "detail"), CAVEAT_CASES
)
def test_caveat_semantics(
    caveats: list[str],
    path: str,
    activity: str,
    client_ip: str | None,
    valid: bool,
    detail: str,
) -> None:
    verdict = check(macaroon_with(*caveats), path, activity, client_ip=client_ip)
    assert verdict.valid is valid, verdict.reason
    if valid:
        assert verdict.scope["path"] == detail
    else:
        assert verdict.reason is not None
        assert detail in verdict.reason


def test_ip_caveat_is_not_checked_without_a_client_address() -> None:
    assert check(macaroon_with("ip:192.0.2.0/24"), "/f").valid


def test_a_malformed_client_address_is_an_invalid_verdict() -> None:
    verdict = check(macaroon_with("ip:192.0.2.0/24"), "/f", client_ip="not-an-address")
    assert not verdict.valid


def test_earliest_before_caveat_wins() -> None:
    token = macaroon_with(
        f"before:{instant(NOW + timedelta(hours=2))}",
        f"before:{instant(NOW + timedelta(hours=1))}",
        f"before:{instant(NOW + timedelta(hours=3))}",
    )
    inside = check(token, "/f", at=NOW + timedelta(minutes=59))
    assert inside.valid
    assert inside.scope["expires"] == "2026-11-20T09:00:00.000Z"
    late = check(token, "/f", at=NOW + timedelta(minutes=90))
    assert not late.valid
    assert late.reason == "expired at 2026-11-20T09:00:00.000Z"


def test_before_with_an_offset_is_compared_as_an_instant() -> None:
    token = macaroon_with("before:2026-11-20T10:00:00+02:00")  # 08:00Z
    assert check(token, "/f", at=NOW).valid
    assert not check(token, "/f", at=NOW + timedelta(milliseconds=1)).valid


def test_verdict_json_has_validity_reason_and_scope() -> None:
    verdict = check(macaroon_with("activity:DOWNLOAD", "path:/d"), "/e")
    assert verdict.to_json() == {
        "valid": False,
        "reason": "path /e outside /d",
        "path": "/d",
        "activities": ["DOWNLOAD", "READ_METADATA"],
        "expires": None,
    }


# --- attenuation of a base macaroon ----------------------------------------------------------

BASE_EXPIRY = NOW + timedelta(days=1)
BASE = macaroon_with(
    "activity:DOWNLOAD,UPLOAD,READ_METADATA", "path:/data/exp", "before:" + instant(BASE_EXPIRY)
)
TARGET = "/data/exp/run/f.h5"


def attenuated(
    path: str = TARGET,
    activities: tuple[str, ...] = READ,
    expires: datetime = NOW + timedelta(minutes=10),
    base: str = BASE,
) -> MintedToken:
    return attenuate(base, Grant(path, activities, expires), now=NOW)


def test_attenuated_read_grant_verifies_for_its_file() -> None:
    token = attenuated()
    for activity in READ:
        verdict = check(token.token, TARGET, activity)
        assert verdict.valid, verdict.reason
    assert verdict.scope["path"] == TARGET
    assert token.activities == READ
    assert token.path == TARGET


ATTENUATED_REFUSALS = [
    pytest.param(TARGET, "UPLOAD", NOW, "UPLOAD not allowed", id="upload-not-granted"),
    pytest.param(TARGET, "DELETE", NOW, "DELETE not allowed", id="delete-never-allowed"),
    pytest.param("/data/exp/run/g.h5", "DOWNLOAD", NOW, "outside", id="sibling-file"),
    pytest.param("/data/exp/run", "DOWNLOAD", NOW, "outside", id="parent-dir"),
    pytest.param("/data/other/f", "DOWNLOAD", NOW, "outside", id="outside-base"),
    pytest.param(
        TARGET,
        "DOWNLOAD",
        NOW + timedelta(minutes=10, milliseconds=1),
        "expired",
        id="after-grant-expiry",
    ),
]


@pytest.mark.parametrize(("path", "activity", "at", "why"), ATTENUATED_REFUSALS)
def test_attenuated_token_is_invalid_outside_the_grant(
    path: str, activity: str, at: datetime, why: str
) -> None:
    verdict = check(attenuated().token, path, activity, at)
    assert not verdict.valid
    assert verdict.reason is not None
    assert why in verdict.reason


ATTENUATE_ERRORS = [
    pytest.param(
        {"path": "/data/other/f"}, "outside the base macaroon's scope", id="outside-base-scope"
    ),
    pytest.param({"path": "/data/expx/f"}, "outside", id="string-prefix-of-base"),
    pytest.param({"path": "/data"}, "outside", id="wider-than-base"),
    pytest.param({"activities": ("DELETE",)}, "allows none", id="activity-not-in-base"),
    pytest.param(
        {"base": macaroon_with("path:/data/exp", "before:" + instant(NOW))},
        "expired",
        id="expired-base",
    ),
    pytest.param(
        {"base": macaroon_with("path:/data/exp", "before:" + instant(NOW - timedelta(hours=1)))},
        "expired",
        id="long-expired-base",
    ),
    pytest.param({"base": macaroon_with("foo:bar")}, "unknown caveat", id="base-unknown-caveat"),
    pytest.param({"base": "garbage"}, "not a macaroon", id="base-garbage"),
]


@pytest.mark.parametrize(("override", "why"), ATTENUATE_ERRORS)
def test_attenuation_refuses_grants_wider_than_the_base(
    override: dict[str, object], why: str
) -> None:
    path = str(override.get("path", TARGET))
    activities = override.get("activities", READ)
    base = str(override.get("base", BASE))
    assert isinstance(activities, tuple)
    with pytest.raises(TokenError, match=why):
        attenuated(path=path, activities=activities, base=base)


def test_attenuation_drops_activities_the_base_does_not_allow() -> None:
    token = attenuated(activities=("DOWNLOAD", "DELETE"))
    assert token.activities == ("DOWNLOAD",)
    assert not check(token.token, TARGET, "DELETE").valid
    assert check(token.token, TARGET, "DOWNLOAD").valid


def test_attenuation_leaves_the_base_token_unchanged() -> None:
    base_caveats = inspect(BASE)["caveats"]
    attenuated()
    attenuated(path="/data/exp/other")
    assert inspect(BASE)["caveats"] == base_caveats
    assert len(base_caveats) == 3


@pytest.mark.parametrize(
    ("grant_expiry", "effective"),
    [
        pytest.param(NOW + timedelta(minutes=10), NOW + timedelta(minutes=10), id="grant-first"),
        pytest.param(NOW + timedelta(days=3), BASE_EXPIRY, id="base-first"),
    ],
)
def test_attenuated_expiry_is_the_earlier_of_base_and_grant(
    grant_expiry: datetime, effective: datetime
) -> None:
    token = attenuated(expires=grant_expiry)
    assert token.expires == effective
    assert check(token.token, TARGET, at=effective).valid
    assert not check(token.token, TARGET, at=effective + timedelta(milliseconds=1)).valid


def test_attenuation_below_a_root_caveat_keeps_the_namespace_path() -> None:
    base = macaroon_with("root:/data", "path:/exp", "activity:DOWNLOAD")
    token = attenuated(base=base)
    assert check(token.token, TARGET).valid
    assert not check(token.token, "/data/exp/run/g.h5").valid
    assert inspect(token.token)["caveats"][-1] == "path:/run/f.h5"


def test_no_token_when_the_base_lists_none_of_the_granted_activities() -> None:
    """READ_METADATA is implied by UPLOAD, but dCache refuses an activity caveat naming it on
    top of ``activity:UPLOAD`` ("attempt to enlarge activity set"): no token, not a dud."""
    base = macaroon_with("activity:UPLOAD", "path:/data/exp")
    with pytest.raises(TokenError, match="none of the granted activities"):
        attenuated(base=base)


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_lists_location_identifier_and_caveats_in_order() -> None:
    details = inspect(macaroon_with("activity:DOWNLOAD", "path:/d"))
    assert details["location"] == LOCATION
    assert details["identifier"] == IDENTIFIER
    assert details["caveats"] == ["activity:DOWNLOAD", "path:/d"]
    assert len(details["signature"]) == 64


@pytest.mark.parametrize("token", ["", "garbage", "!!!!", "eA"])
def test_inspect_of_garbage_raises_token_error(token: str) -> None:
    with pytest.raises(TokenError, match="not a macaroon"):
        inspect(token)


@pytest.mark.parametrize("token", truncations(), ids=["header-only", "short-signature"])
def test_inspect_refuses_a_truncated_token(token: str) -> None:
    with pytest.raises(TokenError, match="not a macaroon"):
        inspect(token)


# --- properties: a token is never wider than the grant behind it -----------------------------

SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=6,
).filter(lambda s: s not in (".", ".."))
GRANTABLE = ("DOWNLOAD", "READ_METADATA", "UPLOAD", "LIST")
ACTIVITY_SETS = st.lists(st.sampled_from(GRANTABLE), min_size=1, max_size=4, unique=True).map(tuple)
REQUESTED_ACTIVITY = st.sampled_from(sorted({*GRANTABLE, "DELETE", "MANAGE", "STAGE"}))
PATH = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))


@st.composite
def near(draw: st.DrawFn, granted: str) -> str:
    """A path related to ``granted``: itself, below, its parent, a sibling, a string
    extension of its last segment, or unrelated."""
    parts = segments(granted)
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return granted
    if choice == 1:
        return "/" + "/".join([*parts, *draw(st.lists(SEGMENT, min_size=1, max_size=2))])
    if choice == 2:
        return "/" + "/".join(parts[:-1])
    if choice == 3:
        return "/" + "/".join([*parts[:-1], draw(SEGMENT)])
    if choice == 4:
        return "/" + "/".join([*parts[:-1], parts[-1] + draw(SEGMENT)])
    return draw(PATH)


@settings(max_examples=200, deadline=None)
@given(
    granted=PATH,
    activities=ACTIVITY_SETS,
    lifetime_ms=st.integers(1, 7 * 24 * 3600 * 1000),
    data=st.data(),
)
def test_root_key_token_is_exactly_as_wide_as_its_grant(
    granted: str, activities: tuple[str, ...], lifetime_ms: int, data: st.DataObject
) -> None:
    expires = NOW + timedelta(milliseconds=lifetime_ms)
    token = minted(granted, activities, expires)
    path = data.draw(near(granted), label="path")
    activity = data.draw(REQUESTED_ACTIVITY, label="activity")
    at = NOW + timedelta(milliseconds=data.draw(st.integers(-1000, lifetime_ms + 1000)))
    verdict = check(token.token, path, activity, at)
    allowed = within(path, granted) and activity in {*activities, "READ_METADATA"}
    assert verdict.valid is (allowed and at <= expires), (verdict, path, activity, at)


@st.composite
def base_macaroons(draw: st.DrawFn) -> tuple[str, str, frozenset[str] | None]:
    """(token, confined namespace path, activities or None) of a storage-minted base."""
    scope = draw(st.lists(SEGMENT, min_size=1, max_size=3))
    caveats: list[str] = []
    split = draw(st.integers(0, len(scope)))
    if split:  # express part of the scope as root:
        caveats.append("root:/" + "/".join(scope[:split]))
    if split < len(scope):
        caveats.append("path:/" + "/".join(scope[split:]))
    activities = draw(st.none() | ACTIVITY_SETS.map(frozenset))
    if activities is not None:
        caveats.append("activity:" + ",".join(sorted(activities)))
    hours = draw(st.integers(1, 48))
    caveats.append("before:" + instant(NOW + timedelta(hours=hours)))
    # root/path order carries meaning; the order of the other caveats does not
    fixed = [c for c in caveats if c.startswith(("root:", "path:"))]
    rest = draw(st.permutations([c for c in caveats if not c.startswith(("root:", "path:"))]))
    return macaroon_with(*fixed, *rest), "/" + "/".join(scope), activities


@settings(max_examples=200, deadline=None)
@given(
    base=base_macaroons(),
    below=st.lists(SEGMENT, min_size=0, max_size=2),
    activities=ACTIVITY_SETS,
    lifetime_ms=st.integers(1, 72 * 3600 * 1000),
    data=st.data(),
)
def test_attenuated_token_is_never_wider_than_base_or_grant(
    base: tuple[str, str, frozenset[str] | None],
    below: list[str],
    activities: tuple[str, ...],
    lifetime_ms: int,
    data: st.DataObject,
) -> None:
    token, scope_path, base_activities = base
    granted = "/".join([scope_path, *below])
    grant = Grant(granted, activities, NOW + timedelta(milliseconds=lifetime_ms))
    # only activities the base lists can be named again (dCache refuses enlarging caveats)
    allowed = GRANTABLE if base_activities is None else set(base_activities)
    if not set(activities) & set(allowed):
        with pytest.raises(TokenError, match="allows none of the granted activities"):
            attenuate(token, grant, now=NOW)
        return
    result = attenuate(token, grant, now=NOW)
    assert set(result.activities) <= set(activities)
    path = data.draw(near(granted), label="path")
    activity = data.draw(REQUESTED_ACTIVITY, label="activity")
    at = NOW + timedelta(milliseconds=data.draw(st.integers(0, 80 * 3600 * 1000)))
    verdict = check(result.token, path, activity, at)
    if verdict.valid:
        assert check(token, path, activity, at).valid
        assert within(path, granted)
        assert activity in {*result.activities, "READ_METADATA"}
        assert at <= result.expires


@settings(max_examples=100, deadline=None)
@given(base=base_macaroons(), outside=PATH)
def test_attenuation_outside_the_base_scope_is_refused(
    base: tuple[str, str, frozenset[str] | None], outside: str
) -> None:
    token, scope_path, _ = base
    assume(not within(outside, scope_path))
    with pytest.raises(TokenError, match="outside the base macaroon's scope"):
        attenuate(token, Grant(outside, READ, NOW + timedelta(minutes=5)), now=NOW)


# around the minted token's one-hour lifetime, where a widened expiry would show
INTERESTING_SECONDS = st.sampled_from([-60, 0, 1800, 3599, 3600, 3601, 5400, 7200])
APPENDED_CAVEAT = st.one_of(
    st.lists(st.sampled_from(sorted(ACTIVITIES)), max_size=3).map(
        lambda a: "activity:" + ",".join(a)
    ),
    st.lists(st.one_of(SEGMENT, st.just("..")), max_size=3).map(lambda s: "path:/" + "/".join(s)),
    st.lists(st.one_of(SEGMENT, st.just("..")), max_size=3).map(lambda s: "path:" + "/".join(s)),
    st.lists(SEGMENT, max_size=2).map(lambda s: "root:/" + "/".join(s)),
    st.one_of(INTERESTING_SECONDS, st.integers(-3600, 3 * 3600)).map(
        lambda s: "before:" + instant(NOW + timedelta(seconds=s))
    ),
    st.sampled_from(["ip:192.0.2.0/24", "max-upload:10", "id:holder", "iid:x", "home:/h"]),
)


@settings(max_examples=200, deadline=None)
@given(
    granted=PATH,
    activities=ACTIVITY_SETS,
    appended=st.lists(APPENDED_CAVEAT, min_size=1, max_size=4),
    data=st.data(),
)
def test_caveats_appended_by_a_holder_never_widen_a_token(
    granted: str, activities: tuple[str, ...], appended: list[str], data: st.DataObject
) -> None:
    original = minted(granted, activities, NOW + timedelta(hours=1)).token
    macaroon = Macaroon.deserialize(original)
    for caveat in appended:
        macaroon.add_first_party_caveat(caveat)
    path = data.draw(near(granted), label="path")
    activity = data.draw(REQUESTED_ACTIVITY, label="activity")
    at = NOW + timedelta(seconds=data.draw(INTERESTING_SECONDS | st.integers(-10, 2 * 3600)))
    if check(macaroon.serialize(), path, activity, at).valid:
        assert check(original, path, activity, at).valid
