"""Write tokens reach no further than the owner's own areas (issue 11, item 7).

* Write tokens go to the dataset's owner, and to a tenant it is shared with only when the share
  grants write (``write_shared_with``); a read share never yields a write token.
* A dataset's ``output`` area may not overlap (inside, containing or equal, on component
  boundaries) a prefix or the output of a dataset another tenant owns on the same source:
  refused when a dataset update is applied or a seed is loaded, and again by the workers before
  they mint (a table may hold such a pair written before the rule).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain import tokens
from streamapp.domain.areas import area_conflicts, output_conflicts, overlaps
from streamapp.domain.authorize import Delivery, authorize
from streamapp.domain.datasets import Dataset, parse_dataset
from streamapp.domain.events import CanonicalEvent, EventType
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.domain.policy_fields import PolicyError
from streamapp.domain.updates import UpdateRefusedError, check_dataset_areas
from streamapp.seed import SeedError, build_index, load_seed

DCACHE = "dcache://dcache.desy.example"
S3 = "s3://minio.desy.example"
ROOT = Path(__file__).resolve().parents[2]
KEY = b"write-areas-root-key"
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
WRITE = ("UPLOAD", "READ_METADATA")


def ds(
    id: str,
    prefixes: list[str],
    *,
    owner: str,
    output: str | None = None,
    source: str = DCACHE,
    **extra: Any,
) -> Dataset:
    spec: dict[str, Any] = {"id": id, "owner": owner, "source": source, "prefixes": prefixes}
    if output is not None:
        spec["output"] = output
    return parse_dataset({**spec, **extra})


def writer(tenant: str, dataset: str = "exp") -> Any:
    return parse_tenant({"tenant": tenant, "subscriptions": [{"dataset": dataset, "write": True}]})


def index_of(*datasets: Dataset, tenants: tuple[str, ...] = ()) -> PolicyIndex:
    index = PolicyIndex()
    index.replace_all(datasets, [writer(t) for t in tenants])
    return index


def event(subject: str = "/data/exp/raw/f.nxs", kind: str = EventType.CREATED) -> CanonicalEvent:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": DCACHE,
        "type": str(kind),
        "subject": subject,
        "time": "2026-11-20T08:00:00.000Z",
        "datacontenttype": "application/json",
        "data": {"path": subject, "size": 10, "storage": "dcache"},
    }


def deliveries(index: PolicyIndex, subject: str = "/data/exp/raw/f.nxs") -> dict[str, Delivery]:
    return {d.tenant: d for d in authorize(event(subject), index).deliveries}


# --- the schema: write_shared_with -----------------------------------------------------------


def test_old_specs_stay_valid_and_share_for_reading_only() -> None:
    dataset = ds("exp", ["/data/exp"], owner="a", output="/data/exp/out", shared_with=["b"])
    assert dataset.write_shared_with == ()
    assert dataset.may_write("a")
    assert not dataset.may_write("b")
    assert dataset.to_json()["write_shared_with"] == []


def test_a_write_share_round_trips_and_grants_write() -> None:
    spec = {
        "id": "exp",
        "owner": "a",
        "source": DCACHE,
        "prefixes": ["/data/exp"],
        "output": "/data/exp/out",
        "shared_with": ["b", "c"],
        "write_shared_with": ["c", "a"],  # the owner writes anyway: dropped like in shared_with
    }
    dataset = parse_dataset(spec)
    assert dataset.write_shared_with == ("c",)
    assert dataset.may_write("c")
    assert not dataset.may_write("b")
    assert parse_dataset(dataset.to_json()) == dataset


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        pytest.param(
            {"shared_with": ["b"], "write_shared_with": ["c"]},
            "write_shared_with[0]",
            "'c' is not in shared_with",
            id="write-share-without-share",
        ),
        pytest.param(
            {"write_shared_with": ["b"]},
            "write_shared_with[0]",
            "'b' is not in shared_with",
            id="no-shares-at-all",
        ),
        pytest.param(
            {"shared_with": ["b"], "write_shared_with": "b"},
            "write_shared_with",
            "must be a list of names",
            id="not-a-list",
        ),
        pytest.param(
            {"shared_with": ["b"], "write_shared_with": ["B"]},
            "write_shared_with[0]",
            "is not a name",
            id="not-a-name",
        ),
        pytest.param(
            {"shared_with": ["b"], "write_shared_with": ["b\n"]},
            "write_shared_with[0]",
            "is not a name",
            id="trailing-newline",
        ),
    ],
)
def test_write_share_errors_name_the_field(extra: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        ds("exp", ["/data/exp"], owner="a", output="/data/exp/out", **extra)
    assert caught.value.field == field
    assert message in caught.value.message


def test_a_write_share_needs_an_output_area() -> None:
    with pytest.raises(PolicyError) as caught:
        ds("exp", ["/data/exp"], owner="a", shared_with=["b"], write_shared_with=["b"])
    assert caught.value.field == "write_shared_with"
    assert "output" in caught.value.message


# --- authorization: who gets write activities ------------------------------------------------

SHARED = ds(
    "exp",
    ["/data/exp"],
    owner="owner",
    output="/data/exp/out",
    shared_with=["reader", "partner"],
    write_shared_with=["partner"],
)


def test_only_the_owner_and_write_shares_are_granted_write() -> None:
    got = deliveries(index_of(SHARED, tenants=("owner", "reader", "partner")))
    assert set(got) == {"owner", "reader", "partner"}
    assert got["owner"].write == WRITE
    assert got["owner"].write_refused is None
    assert got["partner"].write == WRITE
    assert got["reader"].write == ()
    assert got["reader"].write_refused == "the dataset is shared with the tenant for reading only"


def test_no_write_without_output_or_without_asking() -> None:
    no_output = ds("exp", ["/data/exp"], owner="owner", shared_with=["reader"])
    got = deliveries(index_of(no_output, tenants=("owner", "reader")))
    assert got["owner"].write == got["reader"].write == ()
    assert got["owner"].write_refused is got["reader"].write_refused is None
    index = PolicyIndex()
    index.replace_all(
        [SHARED], [parse_tenant({"tenant": "reader", "subscriptions": [{"dataset": "exp"}]})]
    )
    reader = deliveries(index)["reader"]
    assert reader.write == ()
    assert reader.write_refused is None  # it asked for none: nothing to explain


def test_the_simulator_uses_the_same_rule_on_the_repo_seed() -> None:
    """tables/: the shares there are read shares; only owners get write activities."""
    index = build_index(load_seed(ROOT / "tables"))
    for dataset in index.datasets.values():
        assert dataset.write_shared_with == ()
        assert index.output_conflict(dataset.id) is None
    got = deliveries(index, "/data/petra3/p02.1/2026/11012345/raw/scan_00001.nxs")
    assert got["petra3-p02"].write == WRITE
    assert got["hereon-analysis"].write == ()


# --- the output rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("/data/exp", "/data/exp", True),
        ("/data/exp/out", "/data/exp", True),
        ("/data/exp", "/data/exp/out", True),
        ("/data/exp", "/data/exp-2", False),
        ("/data/exp-2/x", "/data/exp", False),
        ("/data/expx", "/data/exp", False),
        ("/data/a", "/data/b", False),
    ],
)
def test_overlap_is_on_component_boundaries(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


OTHER = ds("theirs", ["/data/theirs"], owner="other", output="/data/results/theirs")


@pytest.mark.parametrize(
    ("output", "needle"),
    [
        pytest.param("/data/theirs/sub", "prefix /data/theirs", id="inside-their-prefix"),
        pytest.param("/data", "prefix /data/theirs", id="containing-their-prefix"),
        pytest.param("/data/theirs", "prefix /data/theirs", id="equal-to-their-prefix"),
        pytest.param("/data/results", "the output /data/results/theirs", id="contains-output"),
        pytest.param("/data/results/theirs", "the output", id="equal-to-their-output"),
        pytest.param("/data/results/theirs/x", "the output", id="inside-their-output"),
    ],
)
def test_an_output_overlapping_another_tenants_areas_is_refused_at_apply(
    output: str, needle: str
) -> None:
    mine = ds("mine", ["/data/mine"], owner="me", output=output)
    conflicts = area_conflicts(mine, [OTHER])
    assert conflicts, output
    assert {c.field for c in conflicts} == {"output"}
    assert needle in conflicts[0].reason
    assert "dataset theirs (owner other)" in conflicts[0].reason
    with pytest.raises(UpdateRefusedError, match=r"^output: output .* of dataset theirs"):
        check_dataset_areas(mine, [OTHER])


@pytest.mark.parametrize(
    "output", ["/data/theirs-2", "/data/mine/out", "/data/results/mine", "/data/theirsx"]
)
def test_an_output_beside_another_tenants_areas_is_fine(output: str) -> None:
    mine = ds("mine", ["/data/mine"], owner="me", output=output)
    assert area_conflicts(mine, [OTHER]) == []
    check_dataset_areas(mine, [OTHER])


def test_a_prefix_over_another_tenants_existing_output_is_refused_too() -> None:
    """Order does not matter: A's output exists, B registers a prefix containing it."""
    a = ds("a-data", ["/data/a"], owner="a", output="/data/shared/out")
    b = ds("b-data", ["/data/shared"], owner="b")
    conflicts = area_conflicts(b, [a])
    assert [c.field for c in conflicts] == ["prefixes"]
    assert conflicts[0].reason == (
        "prefix /data/shared overlaps the output /data/shared/out of dataset a-data (owner a)"
    )
    with pytest.raises(UpdateRefusedError, match="prefixes: prefix /data/shared overlaps"):
        check_dataset_areas(b, [a])
    # and the other way round: a's output against b's prefix
    assert [c.field for c in area_conflicts(a, [b])] == ["output"]


def test_the_same_tenants_datasets_may_overlap() -> None:
    one = ds("one", ["/data/exp"], owner="me", output="/data/exp/out")
    two = ds("two", ["/data/exp/out"], owner="me", output="/data/exp")
    assert area_conflicts(one, [two]) == area_conflicts(two, [one]) == []


def test_other_sources_and_the_replaced_version_do_not_count() -> None:
    mine = ds("mine", ["/data/mine"], owner="me", output="/data/theirs/x")
    elsewhere = ds("theirs", ["/data/theirs"], owner="other", source=S3)
    assert area_conflicts(mine, [elsewhere]) == []
    # an update of a dataset is checked against the others, not against its old version
    old = ds("mine", ["/data/theirs"], owner="someone-before")
    assert area_conflicts(mine, [old]) == []


def test_a_read_share_does_not_make_an_overlap_acceptable() -> None:
    theirs = ds("theirs", ["/data/theirs"], owner="other", shared_with=["me"])
    mine = ds("mine", ["/data/mine"], owner="me", output="/data/theirs/out")
    assert area_conflicts(mine, [theirs])


# --- seeds -----------------------------------------------------------------------------------


def write_seed(directory: Path, name: str, text: str) -> None:
    path = directory / "datasets" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_load_seed_refuses_an_overlapping_output_naming_file_and_field(tmp_path: Path) -> None:
    write_seed(
        tmp_path,
        "a-data",
        'id = "a-data"\nowner = "a"\nsource = "dcache://x"\nprefixes = ["/data/a"]\n'
        'output = "/data/shared/out"\n',
    )
    write_seed(
        tmp_path,
        "b-data",
        'id = "b-data"\nowner = "b"\nsource = "dcache://x"\nprefixes = ["/data/shared"]\n',
    )
    with pytest.raises(SeedError) as caught:
        load_seed(tmp_path)
    [problem] = caught.value.problems
    assert problem.file.name == "b-data.toml"
    assert problem.field == "prefixes"
    assert "overlaps the output /data/shared/out of dataset a-data (owner a)" in problem.message


def test_load_seed_accepts_overlaps_within_one_tenant(tmp_path: Path) -> None:
    write_seed(
        tmp_path,
        "a-data",
        'id = "a-data"\nowner = "a"\nsource = "dcache://x"\nprefixes = ["/data/a"]\n'
        'output = "/data/shared/out"\n',
    )
    write_seed(
        tmp_path,
        "a-more",
        'id = "a-more"\nowner = "a"\nsource = "dcache://x"\nprefixes = ["/data/shared"]\n'
        'output = "/data/a/results"\n',
    )
    assert len(load_seed(tmp_path)) == 2


# --- the workers: no write token into another tenant's area, whatever the table holds -------


def test_the_worker_refuses_write_when_the_table_already_holds_an_overlap() -> None:
    """A pair written before the rule (PolicyIndex takes what the table holds): the owner of
    the overlapping output gets no write activities, and the reason names the other dataset."""
    exp = ds("exp", ["/data/exp"], owner="owner", output="/data/victim/incoming")
    victim = ds("victim", ["/data/victim"], owner="victim")
    index = index_of(exp, victim, tenants=("owner",))
    assert index.output_conflict("exp") == (
        "output /data/victim/incoming overlaps prefix /data/victim of dataset victim (owner victim)"
    )
    assert index.output_conflict("victim") is None
    owner = deliveries(index)["owner"]
    assert owner.write == ()
    assert owner.write_refused is not None
    assert "dataset victim (owner victim)" in owner.write_refused
    # the victim's dataset goes away: the output is clear again (the cache follows the table)
    index.remove_dataset("victim")
    assert deliveries(index)["owner"].write == WRITE
    # a later dataset overlapping the earlier output blocks it again (symmetry)
    index.put_dataset(ds("late", ["/data/victim/incoming/x"], owner="victim"))
    assert deliveries(index)["owner"].write == ()
    index.put_dataset(ds("late", ["/data/elsewhere"], owner="victim"))
    assert deliveries(index)["owner"].write == WRITE
    index.put_dataset(ds("late", ["/data/late"], owner="victim", output="/data/victim"))
    assert "the output /data/victim of dataset late" in str(
        deliveries(index)["owner"].write_refused
    )


def issuer(tmp_path: Path) -> TokenIssuer:
    (tmp_path / "macaroon-root.key").write_bytes(KEY + b"\n")
    return TokenIssuer(
        secrets=SecretFiles(tmp_path),
        identifier="streamapp-test",
        location="dcache.desy.example",
        identity="",
        max_lifetime_s=3600,
    )


def test_minted_tokens_follow_the_grant(tmp_path: Path) -> None:
    mint = issuer(tmp_path)
    index = index_of(SHARED, tenants=("owner", "reader", "partner"))
    the_event = event()
    got = deliveries(index)
    for tenant in ("owner", "partner"):
        minted = mint.issue(got[tenant], the_event, NOW)
        assert minted.problems == ()
        assert minted.read is not None
        assert minted.write is not None
        assert minted.write.path == "/data/exp/out"
        assert tokens.verify(
            minted.write.token, key=KEY, path="/data/exp/out/r.h5", activity="UPLOAD", at=NOW
        ).valid
        assert not tokens.verify(
            minted.write.token, key=KEY, path="/data/exp/raw/f.nxs", activity="UPLOAD", at=NOW
        ).valid
    reader = mint.issue(got["reader"], the_event, NOW)
    assert reader.read is not None
    assert reader.write is None
    assert reader.problems == (
        "no write token: the dataset is shared with the tenant for reading only",
    )


def test_no_write_token_is_minted_into_another_tenants_dataset(tmp_path: Path) -> None:
    exp = ds("exp", ["/data/exp"], owner="owner", output="/data/victim")
    victim = ds("victim", ["/data/victim"], owner="victim")
    index = index_of(exp, victim, tenants=("owner",))
    minted = issuer(tmp_path).issue(deliveries(index)["owner"], event(), NOW)
    assert minted.read is not None  # reading its own file is unaffected
    assert minted.write is None
    assert len(minted.problems) == 1
    assert minted.problems[0].startswith("no write token: the output area is refused: output")


def test_a_delivery_built_by_hand_gets_no_write_by_default(tmp_path: Path) -> None:
    """Write activities come only from authorize(): a bare Delivery grants none."""
    subscription = writer("owner").subscriptions[0]
    minted = issuer(tmp_path).issue(Delivery("owner", SHARED, subscription), event(), NOW)
    assert minted.write is None
    assert minted.read is not None


# --- the index's check agrees with the pairwise rule -----------------------------------------

SEGMENTS = st.sampled_from(["a", "b", "ab", "a-2"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))


@st.composite
def tables(draw: st.DrawFn) -> list[Dataset]:
    datasets: list[Dataset] = []
    claimed: set[tuple[str, str]] = set()
    for n in range(draw(st.integers(1, 6))):
        source = draw(st.sampled_from([DCACHE, S3]))
        prefixes = draw(st.lists(PATHS, min_size=1, max_size=2, unique=True))
        if any((source, p) in claimed for p in prefixes):
            continue  # two datasets may never claim one prefix
        claimed.update((source, p) for p in prefixes)
        datasets.append(
            ds(
                f"d{n}",
                prefixes,
                owner=draw(st.sampled_from(["t1", "t2", "t3"])),
                output=draw(st.none() | PATHS),
                source=source,
            )
        )
    return datasets


@settings(max_examples=300, deadline=None)
@given(tables())
def test_index_output_conflict_agrees_with_the_pairwise_rule(datasets: list[Dataset]) -> None:
    index = index_of(*datasets)
    for dataset in datasets:
        expected = output_conflicts(dataset, datasets)
        found = index.output_conflict(dataset.id)
        assert (found is not None) == bool(expected), (dataset, datasets)
        if found is not None:
            assert found in {c.reason for c in expected}


def test_a_shared_tenant_sees_its_own_access_not_the_other_tenants() -> None:
    dataset = parse_dataset(
        {
            "id": "exp",
            "owner": "alice",
            "source": "dcache://unit",
            "prefixes": ["/data/exp"],
            "output": "/data/exp/out",
            "shared_with": ["bob", "carol"],
            "write_shared_with": ["carol"],
        }
    )
    assert dataset.seen_by("alice")["shared_with"] == ["bob", "carol"]
    bob = dataset.seen_by("bob")
    assert "shared_with" not in bob
    assert "write_shared_with" not in bob
    assert "carol" not in str(bob)
    assert bob["access"] == "read"
    assert dataset.seen_by("carol")["access"] == "read-write"


def test_a_write_token_is_reused_while_half_its_lifetime_remains(tmp_path: Path) -> None:
    """Issue 13: a write token names the output area, not the event: the same one serves the
    following events of the same grant while at least half of its lifetime remains."""
    mint = issuer(tmp_path)
    got = deliveries(index_of(SHARED, tenants=("owner", "reader", "partner")))["owner"]
    first = mint.issue(got, event(), NOW).write
    assert first is not None
    lifetime = first.expires - NOW
    for elapsed in (timedelta(seconds=1), lifetime / 2):
        again = mint.issue(got, event(), NOW + elapsed).write
        assert again is first  # the same token: never wider, at least half its life left
        assert tokens.verify(
            again.token, key=KEY, path="/data/exp/out/r.h5", activity="UPLOAD", at=NOW + elapsed
        ).valid
    later = mint.issue(got, event(), NOW + lifetime / 2 + timedelta(seconds=1)).write
    assert later is not None
    assert later.token != first.token
    assert later.expires > first.expires
    # another tenant's grant, or the same grant from a rotated root key: another token
    partner = mint.issue(
        deliveries(index_of(SHARED, tenants=("owner", "reader", "partner")))["partner"],
        event(),
        NOW,
    ).write
    assert partner is not None
    assert partner is not first
    (tmp_path / "macaroon-root.key").write_bytes(b"rotated-root-key\n")
    rotated = TokenIssuer(
        secrets=SecretFiles(tmp_path),
        identifier="streamapp-test",
        location="dcache.desy.example",
        identity="",
        max_lifetime_s=3600,
    )
    rotated._write_tokens.update(mint._write_tokens)  # what the old key minted is remembered
    fresh = rotated.issue(got, event(), NOW + timedelta(seconds=1)).write
    assert fresh is not None
    assert fresh.token != first.token
    assert not tokens.verify(
        fresh.token, key=KEY, path="/data/exp/out/r.h5", activity="UPLOAD", at=NOW
    ).valid


def test_a_narrower_write_grant_is_never_served_an_earlier_wider_token(tmp_path: Path) -> None:
    mint = issuer(tmp_path)
    got = deliveries(index_of(SHARED, tenants=("owner", "reader", "partner")))["owner"]
    wide = mint.issue(got, event(), NOW).write
    narrower = dataclasses.replace(got, write=got.write[:1])
    narrow = mint.issue(narrower, event(), NOW + timedelta(seconds=1)).write
    assert wide is not None
    assert narrow is not None
    assert narrow.activities == got.write[:1]
    assert narrow.token != wide.token
