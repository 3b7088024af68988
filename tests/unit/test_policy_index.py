"""Dataset ownership (the prefix trie), tenant policies and their validation, and authorize():
deny by default, owner and shared tenants only, filters on type, path globs and size."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.domain.authorize import Decision, Denial, authorize, filter_mismatch
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.events import CanonicalEvent, EventType
from streamapp.domain.globs import PathGlob
from streamapp.domain.index import PolicyIndex, PrefixConflictError
from streamapp.domain.policy import DEFAULT_READ, DEFAULT_WRITE, parse_tenant
from streamapp.domain.policy_fields import PolicyError

DCACHE = "dcache://dcache.desy.example"
S3 = "s3://minio.desy.example"


def dataset(
    id: str = "exp",
    prefixes: list[str] | None = None,
    *,
    owner: str = "owner",
    source: str = DCACHE,
    **extra: Any,
) -> Any:
    return parse_dataset(
        {
            "id": id,
            "owner": owner,
            "source": source,
            "prefixes": ["/data/exp"] if prefixes is None else prefixes,
            **extra,
        }
    )


def index_of(*datasets: Any, tenants: tuple[dict[str, Any], ...] = ()) -> PolicyIndex:
    index = PolicyIndex()
    index.replace_all(datasets, [parse_tenant(t) for t in tenants])
    return index


def event(
    subject: str,
    kind: str = EventType.CREATED,
    size: int | None = 1000,
    source: str = DCACHE,
) -> CanonicalEvent:
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": source,
        "type": str(kind),
        "subject": subject,
        "time": "2026-11-20T08:00:00.000Z",
        "datacontenttype": "application/json",
        "data": {"path": subject, "size": size, "storage": "dcache"},
    }


def owner_id(index: PolicyIndex, path: str, source: str = DCACHE) -> str | None:
    ownership = index.owner_of(source, path)
    return None if ownership is None else ownership.dataset.id


# --- ownership: the prefix trie --------------------------------------------------------------

OWNERSHIP = [
    pytest.param("/data/exp", "exp", "", id="the-prefix-itself"),
    pytest.param("/data/exp/a", "exp", "a", id="direct-child"),
    pytest.param("/data/exp/a/b", "exp", "a/b", id="deep-child"),
    pytest.param("/data/exp-2/x", None, None, id="dash-sibling"),
    pytest.param("/data/expx", None, None, id="string-extension"),
    pytest.param("/data/ex", None, None, id="string-prefix"),
    pytest.param("/data", None, None, id="parent"),
    pytest.param("/", None, None, id="root"),
    pytest.param("/elsewhere/data/exp/x", None, None, id="prefix-elsewhere"),
    pytest.param("/data/exp/../other/x", None, None, id="dotdot"),
    pytest.param("/data/exp/..", None, None, id="trailing-dotdot"),
    pytest.param("/data/exp//x", None, None, id="double-slash"),
    pytest.param("/data/exp/./x", None, None, id="dot-segment"),
    pytest.param("/data/exp/", None, None, id="trailing-slash"),
    pytest.param("//data/exp/x", None, None, id="leading-double-slash"),
    pytest.param("data/exp/x", None, None, id="relative"),
    pytest.param("/data/exp/x\x00y", None, None, id="nul"),
    pytest.param("", None, None, id="empty"),
]


@pytest.mark.parametrize(("path", "owner", "relative"), OWNERSHIP)
def test_owner_of_matches_on_component_boundaries(
    path: str, owner: str | None, relative: str | None
) -> None:
    index = index_of(dataset("exp", ["/data/exp"]), dataset("other", ["/other"]))
    ownership = index.owner_of(DCACHE, path)
    if owner is None:
        assert ownership is None
    else:
        assert ownership is not None
        assert (ownership.dataset.id, ownership.prefix, ownership.relative) == (
            owner,
            "/data/exp",
            relative,
        )


def test_dotdot_into_another_dataset_owns_nothing() -> None:
    index = index_of(dataset("exp", ["/data/exp"]), dataset("other", ["/data/other"]))
    assert owner_id(index, "/data/exp/../other/x") is None
    assert owner_id(index, "/data/other/x") == "other"


def test_nested_datasets_longest_prefix_wins_until_removed() -> None:
    outer = dataset("outer", ["/data/bt"])
    inner = dataset("inner", ["/data/bt/raw/calibration"], owner="detector")
    index = index_of(outer, inner)
    assert owner_id(index, "/data/bt/raw/calibration/c.h5") == "inner"
    assert owner_id(index, "/data/bt/raw/calibration") == "inner"
    assert owner_id(index, "/data/bt/raw/calibrationx") == "outer"
    assert owner_id(index, "/data/bt/raw/scan.nxs") == "outer"
    ownership = index.owner_of(DCACHE, "/data/bt/raw/calibration/sub/c.h5")
    assert ownership is not None
    assert (ownership.prefix, ownership.relative) == ("/data/bt/raw/calibration", "sub/c.h5")
    index.remove_dataset("inner")
    ownership = index.owner_of(DCACHE, "/data/bt/raw/calibration/c.h5")
    assert ownership is not None
    assert (ownership.dataset.id, ownership.relative) == ("outer", "raw/calibration/c.h5")
    assert "inner" not in index.datasets


def test_removing_the_outer_dataset_keeps_the_inner_one() -> None:
    index = index_of(dataset("outer", ["/data/bt"]), dataset("inner", ["/data/bt/raw"]))
    index.remove_dataset("outer")
    assert owner_id(index, "/data/bt/raw/x") == "inner"
    assert owner_id(index, "/data/bt/other/x") is None


def test_same_prefix_on_two_sources_is_independent() -> None:
    index = index_of(
        dataset("on-dcache", ["/data/exp"], source=DCACHE),
        dataset("on-s3", ["/data/exp"], source=S3),
    )
    assert owner_id(index, "/data/exp/f", DCACHE) == "on-dcache"
    assert owner_id(index, "/data/exp/f", S3) == "on-s3"
    assert owner_id(index, "/data/exp/f", "s3://elsewhere.example") is None
    index.remove_dataset("on-s3")
    assert owner_id(index, "/data/exp/f", S3) is None
    assert owner_id(index, "/data/exp/f", DCACHE) == "on-dcache"


def test_a_prefix_conflict_on_the_same_source_is_refused() -> None:
    index = index_of(dataset("first", ["/data/exp"]))
    second = dataset("second", ["/data/new", "/data/exp"])
    assert index.conflicts(second) == [("/data/exp", "first")]
    with pytest.raises(
        PrefixConflictError, match="prefix /data/exp is already owned by dataset first"
    ):
        index.put_dataset(second)
    # nothing of the refused dataset was applied
    assert owner_id(index, "/data/exp/f") == "first"
    assert owner_id(index, "/data/new/f") is None
    assert "second" not in index.datasets


def test_an_updated_dataset_releases_its_old_prefixes() -> None:
    index = index_of(dataset("exp", ["/data/old"]))
    index.put_dataset(dataset("exp", ["/data/new"]))
    assert owner_id(index, "/data/old/f") is None
    assert owner_id(index, "/data/new/f") == "exp"
    index.put_dataset(dataset("other", ["/data/old"]))  # the released prefix is free again
    assert owner_id(index, "/data/old/f") == "other"


def test_a_dataset_may_reclaim_its_own_prefix() -> None:
    index = index_of(dataset("exp", ["/data/exp"]))
    index.put_dataset(dataset("exp", ["/data/exp"], shared_with=["guest"]))
    ownership = index.owner_of(DCACHE, "/data/exp/f")
    assert ownership is not None
    assert ownership.dataset.shared_with == ("guest",)


def test_unicode_segments() -> None:
    index = index_of(dataset("uni", ["/data/ünï/データ"]))
    ownership = index.owner_of(DCACHE, "/data/ünï/データ/scan 1/é.h5")
    assert ownership is not None
    assert (ownership.dataset.id, ownership.relative) == ("uni", "scan 1/é.h5")
    assert owner_id(index, "/data/ünï/データx/f") is None
    assert owner_id(index, "/data/uni/データ/f") is None


def test_ten_thousand_datasets_are_still_looked_up_correctly() -> None:
    datasets = [dataset(f"ds-{i}", [f"/data/g{i % 97}/ds{i}"]) for i in range(10_000)]
    datasets += [dataset(f"inner-{i}", [f"/data/g{i % 97}/ds{i}/raw"]) for i in range(0, 10_000, 7)]
    index = index_of(*datasets)
    assert len(index.datasets) == 10_000 + len(range(0, 10_000, 7))
    for i in (0, 1, 6, 7, 96, 97, 4999, 9998, 9999):
        expected_raw = f"inner-{i}" if i % 7 == 0 else f"ds-{i}"
        assert owner_id(index, f"/data/g{i % 97}/ds{i}/raw/f") == expected_raw
        assert owner_id(index, f"/data/g{i % 97}/ds{i}/proc/f") == f"ds-{i}"
        assert owner_id(index, f"/data/g{i % 97}/ds{i}0x/f") is None
        assert owner_id(index, f"/data/g{(i + 1) % 97}/ds{i}/f") is None


def test_subscribers_follow_tenant_updates() -> None:
    index = index_of(
        dataset("exp"),
        tenants=({"tenant": "a", "subscriptions": [{"dataset": "exp"}]},),
    )
    assert index.subscribers("exp") == {"a"}
    index.put_tenant(parse_tenant({"tenant": "a", "subscriptions": [{"dataset": "other"}]}))
    assert index.subscribers("exp") == set()
    assert index.subscribers("other") == {"a"}
    index.remove_tenant("a")
    assert index.subscribers("other") == set()
    assert "a" not in index.tenants


# --- authorize(): who receives an event ------------------------------------------------------

SHARED = dataset("exp", ["/data/exp"], owner="owner", shared_with=["guest", "owner"])


def sub(tenant: str, dataset_id: str = "exp", **filters: Any) -> dict[str, Any]:
    return {"tenant": tenant, "subscriptions": [{"dataset": dataset_id, **filters}]}


def decide(*tenants: dict[str, Any], path: str = "/data/exp/raw/f.nxs", **kw: Any) -> Decision:
    return authorize(event(path, **kw), index_of(SHARED, tenants=tenants))


def test_owner_and_shared_tenants_with_policies_receive_the_event() -> None:
    decision = decide(sub("guest"), sub("owner"))
    assert [(d.tenant, d.dataset.id) for d in decision.deliveries] == [
        ("owner", "exp"),
        ("guest", "exp"),
    ]
    assert decision.denied == ()
    assert decision.ownership is not None
    assert decision.ownership.relative == "raw/f.nxs"
    assert decision.deliveries[1].subscription.read == DEFAULT_READ


def test_owner_without_a_policy_is_denied() -> None:
    decision = decide(sub("guest"))
    assert [d.tenant for d in decision.deliveries] == ["guest"]
    assert decision.denied == (Denial("owner", "no tenant policy"),)


def test_owner_with_a_policy_for_other_datasets_is_denied() -> None:
    decision = decide(sub("owner", "elsewhere"), sub("guest"))
    assert decision.denied == (Denial("owner", "not subscribed to the dataset"),)


def test_subscribed_but_not_shared_tenants_are_denied() -> None:
    decision = decide(sub("owner"), sub("mallory"), sub("eve"))
    assert [d.tenant for d in decision.deliveries] == ["owner"]
    assert decision.denied == (
        Denial("guest", "no tenant policy"),
        Denial("eve", "dataset is not shared with the tenant"),
        Denial("mallory", "dataset is not shared with the tenant"),
    )


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/data/other/f", id="no-dataset"),
        pytest.param("/data/exp-2/f", id="sibling-prefix"),
    ],
)
def test_an_event_in_no_dataset_has_no_owner_and_no_deliveries(path: str) -> None:
    assert decide(sub("owner"), sub("mallory"), path=path) == Decision(None, (), ())


def test_an_event_from_another_source_is_not_owned() -> None:
    assert decide(sub("owner"), source=S3) == Decision(None, (), ())


GLOB_RAW_NXS = ["raw/**/*.nxs"]

# (filters, relative path below /data/exp, type, size, reason or None)
FILTERS = [
    pytest.param({}, "anything/at/all", EventType.DELETED, None, None, id="no-filters"),
    pytest.param(
        {"types": ["storage.object.created"]},
        "f",
        EventType.CREATED,
        1,
        None,
        id="type-selected",
    ),
    pytest.param(
        {"types": ["storage.object.created"]},
        "f",
        EventType.READ,
        1,
        "type storage.object.read not selected",
        id="type-not-selected",
    ),
    pytest.param(
        {"paths": GLOB_RAW_NXS}, "raw/a/b/c.nxs", EventType.CREATED, 1, None, id="glob-deep"
    ),
    pytest.param(
        {"paths": GLOB_RAW_NXS}, "raw/c.nxs", EventType.CREATED, 1, None, id="glob-zero-dirs"
    ),
    pytest.param(
        {"paths": GLOB_RAW_NXS},
        "proc/c.nxs",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="glob-other-dir",
    ),
    pytest.param(
        {"paths": GLOB_RAW_NXS},
        "raw/c.nxs.bak",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="glob-suffix",
    ),
    pytest.param(
        {"paths": GLOB_RAW_NXS},
        "xraw/c.nxs",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="glob-anchored-start",
    ),
    pytest.param(
        {"paths": ["raw/*.h5"]},
        "raw/a/b.h5",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="star-does-not-cross-slash",
    ),
    pytest.param({"paths": ["raw/*.h5"]}, "raw/b.h5", EventType.CREATED, 1, None, id="star"),
    pytest.param(
        {"paths": ["raw/scan_?.h5"]}, "raw/scan_7.h5", EventType.CREATED, 1, None, id="qm"
    ),
    pytest.param(
        {"paths": ["raw/scan_?.h5"]},
        "raw/scan_17.h5",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="qm-one-char",
    ),
    pytest.param(
        {"paths": ["raw?x"]},
        "raw/x",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="qm-not-slash",
    ),
    pytest.param(
        {"paths": ["raw/[ab].h5"]},
        "raw/a.h5",
        EventType.CREATED,
        1,
        "path matches no glob",
        id="brackets-are-literal",
    ),
    pytest.param({"paths": ["raw/[ab].h5"]}, "raw/[ab].h5", EventType.CREATED, 1, None, id="lit"),
    pytest.param(
        {"paths": ["proc/**", "raw/*.nxs"]}, "raw/x.nxs", EventType.CREATED, 1, None, id="any-glob"
    ),
    pytest.param({"min_size": 10, "max_size": 20}, "f", EventType.CREATED, 10, None, id="min-edge"),
    pytest.param({"min_size": 10, "max_size": 20}, "f", EventType.CREATED, 20, None, id="max-edge"),
    pytest.param(
        {"min_size": 10}, "f", EventType.CREATED, 9, "size below min_size", id="below-min"
    ),
    pytest.param(
        {"max_size": 20}, "f", EventType.CREATED, 21, "size above max_size", id="above-max"
    ),
    pytest.param(
        {"max_size": 20},
        "f",
        EventType.DELETED,
        None,
        "size unknown (size bound set)",
        id="unknown-size-max",
    ),
    pytest.param(
        {"min_size": 0},
        "f",
        EventType.DELETED,
        None,
        "size unknown (size bound set)",
        id="unknown-size-min-0",
    ),
]


@pytest.mark.parametrize(("filters", "relative", "kind", "size", "reason"), FILTERS)
def test_filters(
    filters: dict[str, Any], relative: str, kind: str, size: int | None, reason: str | None
) -> None:
    decision = decide(sub("owner", **filters), path=f"/data/exp/{relative}", kind=kind, size=size)
    if reason is None:
        assert [d.tenant for d in decision.deliveries] == ["owner"]
    else:
        assert decision.deliveries == ()
        assert Denial("owner", reason) in decision.denied


def test_globs_see_the_path_relative_to_the_matched_prefix() -> None:
    policy = parse_tenant(sub("owner", paths=["raw/*.nxs"]))
    filters = policy.subscriptions[0].filters
    assert filter_mismatch(filters, event("/data/exp/raw/a.nxs"), "raw/a.nxs") is None
    assert filter_mismatch(filters, event("/data/exp/raw/a.nxs"), "data/exp/raw/a.nxs") == (
        "path matches no glob"
    )


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        pytest.param("**", "a/b/c", True, id="double-star-everything"),
        pytest.param("**", "", True, id="double-star-nothing"),
        pytest.param("raw/**", "raw/a/b", True, id="trailing-double-star"),
        pytest.param("raw/**", "rawx/a", False, id="trailing-double-star-boundary"),
        pytest.param("/raw/./*.h5", "raw/a.h5", True, id="leading-slash-and-dot-ignored"),
        pytest.param("a.b", "aXb", False, id="dot-is-literal"),
        pytest.param("a+b(c)", "a+b(c)", True, id="regex-chars-literal"),
    ],
)
def test_path_glob(pattern: str, path: str, matches: bool) -> None:
    assert PathGlob(pattern).matches(path) is matches


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        pytest.param("raw/../x", "'..' is not allowed", id="dotdot"),
        pytest.param("raw/a**", "'**' must be a whole segment", id="partial-double-star"),
        pytest.param("/", "empty glob", id="empty"),
    ],
)
def test_bad_globs_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        PathGlob(pattern)


# --- parsing policies: errors name the field --------------------------------------------------

GOOD_DATASET: dict[str, Any] = {
    "id": "exp",
    "owner": "owner",
    "source": DCACHE,
    "prefixes": ["/data/exp"],
}

DATASET_ERRORS = [
    pytest.param({"colour": "blue"}, "colour", "unknown field", id="unknown-field"),
    pytest.param({"id": "Exp"}, "id", "is not a name", id="upper-case-id"),
    pytest.param({"id": "a" * 64}, "id", "is not a name", id="long-id"),
    pytest.param({"id": "-exp"}, "id", "is not a name", id="leading-dash"),
    pytest.param({"owner": "a/b"}, "owner", "is not a name", id="slash-owner"),
    pytest.param({"source": ""}, "source", "source URI", id="empty-source"),
    pytest.param({"source": "dcache://a b"}, "source", "source URI", id="space-in-source"),
    pytest.param({"prefixes": []}, "prefixes", "non-empty list", id="no-prefixes"),
    pytest.param({"prefixes": "/data"}, "prefixes", "non-empty list", id="prefixes-string"),
    pytest.param({"prefixes": ["/"]}, "prefixes[0]", "root '/'", id="root-prefix"),
    pytest.param({"prefixes": ["/data/.."]}, "prefixes[0]", "root '/'", id="resolves-to-root"),
    pytest.param({"prefixes": ["/a", "rel"]}, "prefixes[1]", "not absolute", id="relative"),
    pytest.param({"prefixes": ["/../etc"]}, "prefixes[0]", "escapes", id="escapes"),
    pytest.param({"prefixes": ["/a\x00b"]}, "prefixes[0]", "NUL", id="nul"),
    pytest.param({"prefixes": [7]}, "prefixes[0]", "absolute path", id="not-a-string"),
    pytest.param({"output": "/"}, "output", "root '/'", id="root-output"),
    pytest.param({"shared_with": "guest"}, "shared_with", "list of names", id="shared-string"),
    pytest.param({"shared_with": ["ok", "Bad"]}, "shared_with[1]", "not a name", id="bad-share"),
]


@pytest.mark.parametrize(("override", "field", "message"), DATASET_ERRORS)
def test_dataset_errors_name_the_field(override: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_dataset({**GOOD_DATASET, **override})
    assert caught.value.field == field
    assert message in caught.value.message


def test_dataset_paths_are_normalized_and_deduplicated() -> None:
    parsed = parse_dataset(
        {
            **GOOD_DATASET,
            "prefixes": ["//data/exp/", "/data/./exp", "/data/x/../exp2"],
            "output": "/data/exp/proc/",
            "shared_with": ["owner", "guest", "guest"],
        }
    )
    assert parsed.prefixes == ("/data/exp", "/data/exp2")
    assert parsed.output == "/data/exp/proc"
    assert parsed.shared_with == ("guest",)
    assert parsed.entitled == ("owner", "guest")


TENANT_ERRORS = [
    pytest.param({"colour": 1}, "colour", "unknown field", id="unknown-field"),
    pytest.param({"tenant": "Bad Name"}, "tenant", "not a name", id="bad-name"),
    pytest.param({"token_lifetime": 0}, "token_lifetime", "below 1", id="zero-lifetime"),
    pytest.param({"subscriptions": {}}, "subscriptions", "must be a list", id="subs-not-list"),
    pytest.param({"subscriptions": ["exp"]}, "subscriptions[0]", "object", id="sub-not-object"),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "read": ["DELETE"]}]},
        "subscriptions[0].read",
        "DELETE cannot be delegated",
        id="read-delete",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "read": ["UPLOAD"]}]},
        "subscriptions[0].read",
        "UPLOAD cannot be delegated",
        id="read-upload",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "write": ["DELETE"]}]},
        "subscriptions[0].write",
        "DELETE cannot be delegated",
        id="write-delete",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "write": ["MANAGE"]}]},
        "subscriptions[0].write",
        "MANAGE cannot be delegated",
        id="write-manage",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "read": ["FROB"]}]},
        "subscriptions[0].read",
        "unknown activity 'FROB'",
        id="unknown-activity",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "read": "DOWNLOAD"}]},
        "subscriptions[0].read",
        "true, false, or a list",
        id="read-string",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp"}, {"dataset": "x", "colour": 1}]},
        "subscriptions[1].colour",
        "unknown field",
        id="unknown-subscription-field",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "types": ["created"]}]},
        "subscriptions[0].types[0]",
        "unknown event type 'created'",
        id="unknown-type",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "paths": ["raw/../x"]}]},
        "subscriptions[0].paths[0]",
        "'..'",
        id="glob-dotdot",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "paths": "raw/**"}]},
        "subscriptions[0].paths",
        "list of globs",
        id="paths-string",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "min_size": 10, "max_size": 5}]},
        "subscriptions[0].max_size",
        "smaller than min_size",
        id="min-above-max",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "min_size": -1}]},
        "subscriptions[0].min_size",
        "below 0",
        id="negative-min",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "max_size": True}]},
        "subscriptions[0].max_size",
        "not an integer",
        id="bool-max",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp", "token_lifetime": 0}]},
        "subscriptions[0].token_lifetime",
        "below 1",
        id="zero-sub-lifetime",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "exp"}, {"dataset": "exp"}]},
        "subscriptions[1].dataset",
        "appears twice",
        id="duplicate-subscription",
    ),
    pytest.param(
        {"subscriptions": [{"dataset": "/data/exp"}]},
        "subscriptions[0].dataset",
        "not a name",
        id="dataset-not-a-name",
    ),
]


@pytest.mark.parametrize(("override", "field", "message"), TENANT_ERRORS)
def test_tenant_errors_name_the_field(override: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_tenant({"tenant": "t", **override})
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_tenant_defaults_and_overrides() -> None:
    policy = parse_tenant(
        {
            "tenant": "t",
            "token_lifetime": 900,
            "subscriptions": [
                {"dataset": "a"},
                {"dataset": "b", "read": False, "write": True, "token_lifetime": 60},
                {"dataset": "c", "read": ["DOWNLOAD", "DOWNLOAD"], "write": ["LIST"]},
            ],
        }
    )
    a, b, c = policy.subscriptions
    assert (a.read, a.write, a.token_lifetime_s) == (DEFAULT_READ, (), 900)
    assert (b.read, b.write, b.token_lifetime_s) == ((), DEFAULT_WRITE, 60)
    assert (c.read, c.write) == (("DOWNLOAD",), ("LIST",))
    assert set(policy.by_dataset) == {"a", "b", "c"}


# --- property: the trie agrees with a brute-force longest-prefix search ----------------------

SMALL_SEGMENT = st.sampled_from(["a", "b", "ab", "é", "a-2"])
PREFIX = st.lists(SMALL_SEGMENT, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
LOOKUP = st.lists(
    st.one_of(SMALL_SEGMENT, st.sampled_from(["", ".", ".."])), min_size=1, max_size=5
).map(lambda s: "/" + "/".join(s))


def reference_owner(
    claimed: list[tuple[str, str, str]], source: str, path: str
) -> tuple[str, str] | None:
    """(dataset id, relative path) by brute force over (id, source, prefix) claims."""
    parts = path[1:].split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    best: tuple[int, str] | None = None
    for dataset_id, claim_source, prefix in claimed:
        want = prefix[1:].split("/")
        matches = claim_source == source and parts[: len(want)] == want
        if matches and (best is None or len(want) > best[0]):
            best = (len(want), dataset_id)
    if best is None:
        return None
    return best[1], "/".join(parts[best[0] :])


@settings(max_examples=200, deadline=None)
@given(
    claims=st.lists(
        st.tuples(st.sampled_from([DCACHE, S3]), st.lists(PREFIX, min_size=1, max_size=2)),
        max_size=8,
    ),
    removed=st.sets(st.integers(0, 7), max_size=3),
    lookups=st.lists(st.tuples(st.sampled_from([DCACHE, S3]), LOOKUP), min_size=1, max_size=10),
)
def test_owner_of_agrees_with_brute_force(
    claims: list[tuple[str, list[str]]],
    removed: set[int],
    lookups: list[tuple[str, str]],
) -> None:
    index = PolicyIndex()
    accepted: dict[str, tuple[str, tuple[str, ...]]] = {}
    for number, (source, prefixes) in enumerate(claims):
        candidate = dataset(f"ds-{number}", prefixes, source=source)
        try:
            index.put_dataset(candidate)
        except PrefixConflictError:
            continue
        accepted[candidate.id] = (source, candidate.prefixes)
    for number in removed:
        index.remove_dataset(f"ds-{number}")
        accepted.pop(f"ds-{number}", None)
    claimed = [(i, src, p) for i, (src, prefixes) in accepted.items() for p in prefixes]
    for source, path in lookups:
        ownership = index.owner_of(source, path)
        found = None if ownership is None else (ownership.dataset.id, ownership.relative)
        assert found == reference_owner(claimed, source, path), (source, path)
