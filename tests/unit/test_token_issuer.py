"""``TokenIssuer``'s caches never change what a token is: copies of one event for tenants
sharing an authority and a grant get the same bytes (computed once), a tenant with a base
macaroon of its own never gets a token made from another's secret, a file added later is
used once the lookup's few seconds have passed, and a token that cannot be minted says why
on every copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pymacaroons import Macaroon

from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain.authorize import authorize
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.domain.tokens import deserialize, format_instant, verify
from tests.factories import created_event

SOURCE = "dcache://unit"
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def event(subject: str) -> CanonicalEvent:
    return created_event(SOURCE, subject, "dcache", "2026-11-29T12:00:00Z")


def exp_index(subscriptions: dict[str, dict[str, object]], **dataset: object) -> PolicyIndex:
    """Dataset ``exp`` owned by the first tenant, shared with the others, each subscribed."""
    owner, *partners = subscriptions
    index = PolicyIndex()
    index.put_dataset(
        parse_dataset(
            {
                "id": "exp",
                "owner": owner,
                "source": SOURCE,
                "prefixes": ["/data/exp"],
                "shared_with": partners,
                **dataset,
            }
        )
    )
    for tenant, subscription in subscriptions.items():
        index.put_tenant(parse_tenant({"tenant": tenant, "subscriptions": [subscription]}))
    return index


def shared_index() -> PolicyIndex:
    return exp_index({tenant: {"dataset": "exp"} for tenant in ("alice", "bob", "carol")})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read_tokens(issuer: TokenIssuer, subject: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    found = {}
    for delivery in authorize(event(subject), shared_index()).deliveries:
        tokens = issuer.issue(delivery, event(subject), NOW)
        found[delivery.tenant] = (tokens.read.token if tokens.read else None, tokens.problems)
    return found


def base_macaroon(key: bytes, identifier: str, path: str) -> str:
    macaroon = Macaroon(location="unit", identifier=identifier, key=key)
    macaroon.add_first_party_caveat(f"path:{path}")
    return str(macaroon.serialize())


def test_tenants_sharing_an_authority_get_the_same_token_and_others_their_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    (tmp_path / "macaroons" / "tenants" / "carol.macaroon").write_text(
        base_macaroon(b"carols-own-key", "carol-base", "/data")
    )
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    first = read_tokens(issuer, "/data/exp/a.h5")

    fresh = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)  # nothing cached
    assert read_tokens(fresh, "/data/exp/a.h5") == first  # caches change no byte
    alice, bob, carol = (first[t][0] for t in ("alice", "bob", "carol"))
    assert alice is not None
    assert alice == bob
    assert carol is not None
    assert carol != alice
    assert deserialize(carol).identifier == "carol-base"  # carol's own base, never the root key
    assert deserialize(alice).identifier == "root-id"
    assert read_tokens(issuer, "/data/exp/b.h5")["bob"][0] != bob  # another file, another token


def test_a_base_macaroon_added_later_is_used_after_the_lookups_seconds(tmp_path: Path) -> None:
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    clock = Clock()
    issuer = TokenIssuer(SecretFiles(tmp_path, clock=clock), "root-id", "unit", "", 600)
    before = read_tokens(issuer, "/data/exp/a.h5")["bob"][0]
    assert before is not None
    assert deserialize(before).identifier == "root-id"
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    (tmp_path / "macaroons" / "tenants" / "bob.macaroon").write_text(
        base_macaroon(b"bobs-key", "bob-base", "/data")
    )
    clock.now = 4.0  # within the lookup's seconds: as before
    assert read_tokens(issuer, "/data/exp/a.h5")["bob"][0] == before
    clock.now = 5.5
    after = read_tokens(issuer, "/data/exp/a.h5")["bob"][0]
    assert after is not None
    assert deserialize(after).identifier == "bob-base"


def test_a_token_that_cannot_be_minted_says_why_on_every_copy(tmp_path: Path) -> None:
    """Bob's and carol's base macaroons do not reach /data/exp: no token, the reason on each
    of their copies, every time (failures are not cached as tokens)."""
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    for tenant in ("bob", "carol"):
        (tmp_path / "macaroons" / "tenants" / f"{tenant}.macaroon").write_text(
            base_macaroon(b"k", f"{tenant}-base", "/elsewhere")
        )
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    for _ in range(2):
        found = read_tokens(issuer, "/data/exp/a.h5")
        for tenant in ("bob", "carol"):
            token, problems = found[tenant]
            assert token is None
            assert any("outside the base macaroon's scope" in p for p in problems)
        assert found["alice"] == (None, ("no macaroon issuer configured for this dataset",))


def varied_index() -> PolicyIndex:
    """Alice owns and writes; bob and carol read alike; dave reads with a shorter lifetime;
    erin reads metadata only."""
    return exp_index(
        {
            "alice": {"dataset": "exp", "write": True},
            "bob": {"dataset": "exp"},
            "carol": {"dataset": "exp"},
            "dave": {"dataset": "exp", "token_lifetime": 60},
            "erin": {"dataset": "exp", "read": ["READ_METADATA"]},
        },
        output="/data/exp/processed",
    )


def test_copies_of_one_event_share_tokens_only_where_every_input_is_the_same(
    tmp_path: Path,
) -> None:
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    one = event("/data/exp/a.h5")
    copies = {
        d.tenant: issuer.issue(d, one, NOW) for d in authorize(one, varied_index()).deliveries
    }

    assert copies["bob"] is copies["carol"]  # the same inputs: one tokens object
    for tenant in ("alice", "dave", "erin"):
        assert copies[tenant] is not copies["bob"]
    alice, bob, dave, erin = (copies[t] for t in ("alice", "bob", "dave", "erin"))
    assert alice.write is not None
    assert bob.write is None
    assert bob.read is not None
    assert dave.read is not None
    assert erin.read is not None
    assert dave.read.expires < bob.read.expires  # its own, shorter lifetime
    assert erin.read.activities == ("READ_METADATA",)
    assert bob.read.activities != erin.read.activities
    # every copy is what a fresh issuer mints for it alone (no cache changes a byte)
    for delivery in authorize(one, varied_index()).deliveries:
        fresh = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
        assert fresh.issue(delivery, one, NOW) == copies[delivery.tenant]

    # the next event (even with the same subject) and another instant: recomputed
    again = event("/data/exp/a.h5")
    later = NOW.replace(second=1)
    bob_delivery = next(d for d in authorize(again, varied_index()).deliveries if d.tenant == "bob")
    assert issuer.issue(bob_delivery, again, NOW) is not copies["bob"]
    moved = issuer.issue(bob_delivery, again, later)
    assert moved.read is not None
    assert moved.read.expires > bob.read.expires


class CountingSecrets(SecretFiles):
    reads = 0

    def read(self, relative: str, *, fresh: bool = False) -> bytes | None:
        self.reads += 1
        return super().read(relative, fresh=fresh)


def test_more_tenant_dataset_pairs_than_a_small_cache_still_read_no_file_per_copy(
    tmp_path: Path,
) -> None:
    """With 5,000 (tenant, dataset) pairs a cache cleared at 4,096 entries made every lookup
    a miss (three file reads per copy); each file is looked up once."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    secrets = CountingSecrets(tmp_path, clock=Clock())
    issuer = TokenIssuer(secrets, "root-id", "unit", "", 600)
    index = PolicyIndex()
    for n in range(50):
        index.put_dataset(
            parse_dataset(
                {
                    "id": f"ds-{n}",
                    "owner": f"t-{n}-0",
                    "source": SOURCE,
                    "prefixes": [f"/data/ds-{n}"],
                    "shared_with": [f"t-{n}-{k}" for k in range(1, 100)],
                }
            )
        )
        for k in range(100):
            index.put_tenant(
                parse_tenant({"tenant": f"t-{n}-{k}", "subscriptions": [{"dataset": f"ds-{n}"}]})
            )
    events = [event(f"/data/ds-{n}/f.h5") for n in range(50)]
    decisions = [authorize(e, index) for e in events]
    assert sum(len(d.deliveries) for d in decisions) == 5000
    for e, decision in zip(events, decisions, strict=True):
        for delivery in decision.deliveries:
            issuer.issue(delivery, e, NOW)
    first_round = secrets.reads
    # no tenant has a file of its own (the directory listing says so): each dataset's file
    # and the root key, once
    assert first_round == 50 + 1
    for e, decision in zip(events, decisions, strict=True):
        for delivery in decision.deliveries:
            assert issuer.issue(delivery, e, NOW).read is not None
    assert secrets.reads == first_round


def test_the_mint_histogram_counts_tokens_minted_not_copies(tmp_path: Path) -> None:
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    one = event("/data/exp/a.h5")
    deliveries = authorize(one, shared_index()).deliveries
    assert len(deliveries) == 3

    def minted() -> float:
        return REGISTRY.get_sample_value("streamapp_token_mint_seconds_count") or 0.0

    before = minted()
    for delivery in deliveries:
        issuer.issue(delivery, one, NOW)
    assert minted() - before == 1  # three copies, one read token, no write grant


def test_an_event_dict_changed_in_place_is_another_event(tmp_path: Path) -> None:
    """The per-event sharing is keyed by the event's identity, instant, subject and type: a
    caller that reuses one dict for another file gets that file's token."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    reused = event("/data/exp/a.h5")
    bob = next(d for d in authorize(reused, shared_index()).deliveries if d.tenant == "bob")
    first = issuer.issue(bob, reused, NOW).read
    reused["subject"] = "/data/exp/b.h5"
    second = issuer.issue(bob, reused, NOW).read
    assert first is not None
    assert second is not None
    assert first.path == "/data/exp/a.h5"
    assert second.path == "/data/exp/b.h5"
    assert second.token != first.token
    reused["type"] = "storage.object.deleted"  # no read token for a deleted file
    assert issuer.issue(bob, reused, NOW).read is None


def test_a_file_added_while_one_events_copies_are_sent_is_used_for_the_later_copies(
    tmp_path: Path,
) -> None:
    """An event's copies may be prepared minutes apart (the loop awaits the producer between
    them): each copy's authority is judged by the clock at that copy, not at the first one.
    (Found by the adversary review of the per-event sharing.)"""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    clock = Clock()
    issuer = TokenIssuer(SecretFiles(tmp_path, clock=clock), "root-id", "unit", "", 600)
    earlier = event("/data/exp/a.h5")
    for delivery in authorize(earlier, shared_index()).deliveries:
        issuer.issue(delivery, earlier, NOW)  # bob's authority (the root key) looked up at 0 s
    clock.now = 3.0
    one = event("/data/exp/b.h5")
    deliveries = {d.tenant: d for d in authorize(one, shared_index()).deliveries}
    issuer.issue(deliveries["alice"], one, NOW)
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    (tmp_path / "macaroons" / "tenants" / "bob.macaroon").write_text(
        base_macaroon(b"bobs-key", "bob-base", "/data/exp")
    )
    clock.now = 60.0
    bob = issuer.issue(deliveries["bob"], one, NOW)
    assert bob.read is not None
    assert deserialize(bob.read.token).identifier == "bob-base"


def test_pairs_beyond_any_pair_cache_read_no_file_per_copy(tmp_path: Path) -> None:
    """2,000 datasets each shared with 40 tenants: 80,000 (tenant, dataset) pairs, more than
    the pair cache of the previous design held (65,536), events in a cycle over them — every
    lookup was a miss, three file reads per copy (466 µs per event at 10,000 datasets x 10
    tenants in bench.authorize). Files are looked up per tenant and per dataset now."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    tenants = [f"t-{k}" for k in range(40)]
    for tenant in tenants[:5]:  # five tenants with base macaroons of their own
        (tmp_path / "macaroons" / "tenants" / f"{tenant}.macaroon").write_text(
            base_macaroon(f"{tenant}-key".encode(), f"{tenant}-base", "/data")
        )
    secrets = CountingSecrets(tmp_path, clock=Clock())
    issuer = TokenIssuer(secrets, "root-id", "unit", "", 600)
    index = PolicyIndex()
    for n in range(2000):
        index.put_dataset(
            parse_dataset(
                {
                    "id": f"ds-{n}",
                    "owner": tenants[0],
                    "source": SOURCE,
                    "prefixes": [f"/data/ds-{n}"],
                    "shared_with": tenants[1:],
                }
            )
        )
    for tenant in tenants:
        subscriptions = [{"dataset": f"ds-{n}"} for n in range(2000)]
        index.put_tenant(parse_tenant({"tenant": tenant, "subscriptions": subscriptions}))
    events = [event(f"/data/ds-{n}/f.h5") for n in range(2000)]
    decisions = [authorize(e, index) for e in events]
    assert sum(len(d.deliveries) for d in decisions) == 80_000
    for _ in range(2):
        for e, decision in zip(events, decisions, strict=True):
            issued = issuer.issue_event(decision.deliveries, e, NOW)
            for delivery, tokens in zip(decision.deliveries, issued, strict=True):
                assert tokens.read is not None
                own = delivery.tenant in tenants[:5]
                identifier = deserialize(tokens.read.token).identifier
                assert identifier == (f"{delivery.tenant}-base" if own else "root-id")
    # the five tenants' files, each dataset's file, the root key: once each
    assert secrets.reads == 5 + 2000 + 1


def test_an_events_copies_issued_together_are_those_issued_one_by_one(tmp_path: Path) -> None:
    """``issue_event`` (the agent's path) gives each copy what ``issue`` gives it alone — the
    same tokens, own base macaroons kept apart, refusals said — in the deliveries' order."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    (tmp_path / "macaroons" / "tenants" / "carol.macaroon").write_text(
        base_macaroon(b"carols-own-key", "carol-base", "/data")
    )
    (tmp_path / "macaroons" / "tenants" / "dave.macaroon").write_text(
        base_macaroon(b"daves-key", "dave-base", "/elsewhere")  # reaches nothing here
    )
    for subject in ("/data/exp/a.h5", "/data/exp/processed/b.h5"):
        one = event(subject)
        deliveries = authorize(one, varied_index()).deliveries
        assert len(deliveries) == 5
        together = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600).issue_event(
            deliveries, one, NOW
        )
        alone = [
            TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600).issue(d, one, NOW)
            for d in deliveries
        ]
        assert together == alone
        by_tenant = dict(zip((d.tenant for d in deliveries), together, strict=True))
        carol_read = by_tenant["carol"].read
        assert carol_read is not None
        assert deserialize(carol_read.token).identifier == "carol-base"
        assert by_tenant["dave"].read is None
        assert any("outside the base macaroon's scope" in p for p in by_tenant["dave"].problems)
    deleted = event("/data/exp/a.h5")
    deleted["type"] = "storage.object.deleted"
    deliveries = authorize(deleted, varied_index()).deliveries
    issued = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600).issue_event(
        deliveries, deleted, NOW
    )
    assert all(t.read is None and t.write is None for t in issued)
    assert len(issued) == len(deliveries)


def test_files_added_later_are_used_after_the_lookups_seconds_when_issued_together(
    tmp_path: Path,
) -> None:
    """A tenant's own base macaroon and a dataset's, added after the first lookup, are used
    once the lookup's few seconds have passed (and not before): per-file entries keep the
    bound the pair cache kept."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    clock = Clock()
    issuer = TokenIssuer(SecretFiles(tmp_path, clock=clock), "root-id", "unit", "", 600)

    def identifiers(subject: str) -> dict[str, str]:
        one = event(subject)
        deliveries = authorize(one, shared_index()).deliveries
        issued = issuer.issue_event(deliveries, one, NOW)
        return {
            d.tenant: deserialize(t.read.token).identifier if t.read else ""
            for d, t in zip(deliveries, issued, strict=True)
        }

    assert set(identifiers("/data/exp/a.h5").values()) == {"root-id"}
    (tmp_path / "macaroons" / "tenants").mkdir(parents=True)
    (tmp_path / "macaroons" / "tenants" / "bob.macaroon").write_text(
        base_macaroon(b"bobs-key", "bob-base", "/data")
    )
    (tmp_path / "macaroons" / "datasets").mkdir(parents=True)
    (tmp_path / "macaroons" / "datasets" / "exp.macaroon").write_text(
        base_macaroon(b"exp-key", "exp-base", "/data/exp")
    )
    clock.now = 4.9
    assert set(identifiers("/data/exp/b.h5").values()) == {"root-id"}
    clock.now = 5.0
    assert identifiers("/data/exp/c.h5") == {
        "alice": "exp-base",
        "bob": "bob-base",
        "carol": "exp-base",
    }
    (tmp_path / "macaroons" / "datasets" / "exp.macaroon").unlink()  # removed: the root key
    clock.now = 10.0
    assert identifiers("/data/exp/d.h5") == {
        "alice": "root-id",
        "bob": "bob-base",
        "carol": "root-id",
    }
    (tmp_path / "macaroons" / "tenants" / "bob.macaroon").unlink()  # bob's own: removed
    clock.now = 14.9  # within the seconds of the last lookup (at 10 s): as before
    assert identifiers("/data/exp/e.h5")["bob"] == "bob-base"
    clock.now = 15.0
    assert identifiers("/data/exp/f.h5") == {
        "alice": "root-id",
        "bob": "root-id",
        "carol": "root-id",
    }
    (tmp_path / "macaroons" / "tenants").rmdir()  # no directory at all: the root key
    clock.now = 20.0
    assert set(identifiers("/data/exp/g.h5").values()) == {"root-id"}


@settings(max_examples=200, deadline=None)
@given(microseconds=st.lists(st.integers(min_value=0, max_value=999_999), min_size=1, max_size=5))
def test_expiries_are_whole_tenths_never_later_than_asked_and_tokens_stay_exact(
    tmp_path_factory: pytest.TempPathFactory, microseconds: list[int]
) -> None:
    """The issuer rounds an expiry down to a tenth of a second (tokens of one tenth share the
    chain through ``before:``): never later than the lifetime asked, less than a tenth
    earlier, and each token is what pymacaroons makes of its caveats and verifies for its
    file only."""
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "macaroon-root.key").write_bytes(b"unit-root-key\n")
    issuer = TokenIssuer(SecretFiles(secrets), "root-id", "unit", "", 600)
    for n, micro in enumerate(microseconds):
        now = NOW.replace(microsecond=micro)
        one = event(f"/data/exp/f{n}.h5")
        deliveries = authorize(one, varied_index()).deliveries
        for delivery, tokens_ in zip(
            deliveries, issuer.issue_event(deliveries, one, now), strict=True
        ):
            for token in (tokens_.read, tokens_.write):
                if token is None:
                    continue
                asked = now + timedelta(seconds=delivery.subscription.token_lifetime_s)
                assert token.expires <= asked
                assert token.expires.microsecond % 100_000 == 0
                if token is tokens_.read:  # a write token may be an earlier one, reused
                    assert asked - token.expires < timedelta(milliseconds=100)
                reference = Macaroon(location="unit", identifier="root-id", key=b"unit-root-key")
                reference.add_first_party_caveat(f"activity:{','.join(token.activities)}")
                reference.add_first_party_caveat(f"before:{format_instant(token.expires)}")
                reference.add_first_party_caveat(f"path:{token.path}")
                assert token.token == reference.serialize()
            read = tokens_.read
            assert read is not None
            at = now + timedelta(seconds=0.5)
            key = b"unit-root-key"
            activity = read.activities[0]
            assert verify(read.token, key=key, path=read.path, activity=activity, at=at).valid
            other = read.path + ".other"
            assert not verify(read.token, key=key, path=other, activity=activity, at=at).valid
            late = read.expires + timedelta(milliseconds=1)
            assert not verify(read.token, key=key, path=read.path, activity=activity, at=late).valid


def test_a_lowered_lifetime_cap_is_another_write_grant(tmp_path: Path) -> None:
    """A write token minted under a longer cap is not handed out once the cap is lower."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 3600)
    index = exp_index(
        {"alice": {"dataset": "exp", "write": True, "token_lifetime": 3600}},
        output="/data/exp/processed",
    )
    first_event = event("/data/exp/a.h5")
    (alice,) = authorize(first_event, index).deliveries
    first = issuer.issue(alice, first_event, NOW).write
    assert first is not None
    assert first.expires == NOW + timedelta(seconds=3600)
    issuer.max_lifetime_s = 60
    later = NOW + timedelta(seconds=1)
    again = issuer.issue(alice, event("/data/exp/b.h5"), later).write
    assert again is not None
    assert again.expires == later + timedelta(seconds=60)


def test_a_lifetime_is_counted_in_utc_across_a_zones_repeated_hour(tmp_path: Path) -> None:
    """``now`` given in a zone just before its fall-back: the lifetime is 600 s of real time,
    not of the zone's wall clock (which would give 70 minutes; adversary review)."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    issuer = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 3600)
    now = datetime(2026, 11, 1, 1, 55, tzinfo=ZoneInfo("America/New_York"))  # 05:55Z
    one = event("/data/exp/a.h5")
    for tokens_ in issuer.issue_event(authorize(one, shared_index()).deliveries, one, now):
        assert tokens_.read is not None
        assert tokens_.read.expires == datetime(2026, 11, 1, 6, 5, tzinfo=UTC)
        assert "before:2026-11-01T06:05:00.000Z" in (
            c.caveat_id for c in deserialize(tokens_.read.token).caveats
        )


def test_an_expiry_step_of_a_millisecond_renews_to_a_new_token(tmp_path: Path) -> None:
    """The sink's issuer keeps the caveat's millisecond: a token renewed a few milliseconds
    after the one on the tenant's topic is a new token (the authorization stage's tenths would
    give the same bytes within a tenth). A step that does not divide a second is refused."""
    (tmp_path / "macaroon-root.key").write_bytes(b"unit-root-key")
    one = event("/data/exp/a.h5")
    (alice, *_) = authorize(one, shared_index()).deliveries
    stage = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600)
    sink = TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600, expiry_step_us=1000)
    minted = NOW.replace(microsecond=10_000)
    renewed_at = NOW.replace(microsecond=13_000)
    on_topic = stage.issue(alice, one, minted).read
    assert on_topic is not None
    assert stage.issue(alice, event("/data/exp/a.h5"), renewed_at).read == on_topic
    renewed = sink.issue(alice, event("/data/exp/a.h5"), renewed_at).read
    assert renewed is not None
    assert renewed.token != on_topic.token
    assert renewed.expires == renewed_at + timedelta(seconds=600)
    for step in (0, 3, 7000, 2_000_000):
        with pytest.raises(ValueError, match="must divide a second"):
            TokenIssuer(SecretFiles(tmp_path), "root-id", "unit", "", 600, expiry_step_us=step)
