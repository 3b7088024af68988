"""Seed data (tables/): loading reports every problem with its file and field; planning sends
only real changes, with versions newer than the ones held (idempotent apply)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamapp.seed import (
    Change,
    SeedEntry,
    SeedError,
    build_index,
    load_seed,
    next_version,
    plan,
)

TABLES = Path(__file__).resolve().parents[2] / "tables"
NOW_MS = 1_780_000_000_000


def repo_entries() -> list[SeedEntry]:
    return load_seed(TABLES)


def held_state(entries: list[SeedEntry], version: int = 1) -> dict[tuple[str, str], Any]:
    """What the tables hold after applying ``entries``."""
    return {
        (e.kind, e.name): {"version": version, "deleted": False, "spec": e.spec, "kid": "k"}
        for e in entries
    }


def write(directory: Path, relative: str, text: str) -> Path:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- loading ---------------------------------------------------------------------------------


def test_every_repo_seed_file_loads() -> None:
    entries = repo_entries()
    files = sorted(TABLES.glob("datasets/*.toml")) + sorted(TABLES.glob("tenants/*.toml"))
    assert [e.file for e in entries] == files
    assert all(e.file.stem == e.name for e in entries)
    assert {e.kind for e in entries if e.file.parent.name == "datasets"} == {"dataset"}
    assert {e.kind for e in entries if e.file.parent.name == "tenants"} == {"tenant"}
    names = {(e.kind, e.name) for e in entries}
    assert ("dataset", "petra3-p02.1-calibration") in names
    assert ("tenant", "mallory") in names


def test_repo_seed_builds_an_index_with_the_nested_calibration_dataset() -> None:
    index = build_index(repo_entries())
    owner = index.owner_of(
        "dcache://dcache.desy.example", "/data/petra3/p02.1/2026/11012345/raw/calibration/c.h5"
    )
    assert owner is not None
    assert owner.dataset.id == "petra3-p02.1-calibration"
    assert index.subscribers("petra3-p06-11012346") == {"petra3-p06", "mallory"}


def test_a_broken_seed_directory_reports_every_problem(tmp_path: Path) -> None:
    write(tmp_path, "datasets/broken.toml", 'id = "broken\n')
    write(
        tmp_path,
        "datasets/unknown.toml",
        'id = "unknown"\nowner = "o"\nsource = "s3://x"\nprefixes = ["/u"]\ncolour = "blue"\n',
    )
    write(
        tmp_path,
        "datasets/wrong-name.toml",
        'id = "right-name"\nowner = "o"\nsource = "s3://x"\nprefixes = ["/w"]\n',
    )
    write(
        tmp_path,
        "datasets/aa.toml",
        'id = "aa"\nowner = "o"\nsource = "s3://x"\nprefixes = ["/x"]\n',
    )
    write(
        tmp_path,
        "datasets/bb.toml",
        'id = "bb"\nowner = "o"\nsource = "s3://x"\nprefixes = ["/y", "/x/"]\n',
    )
    write(
        tmp_path,
        "tenants/reader.toml",
        'tenant = "reader"\n[[subscriptions]]\ndataset = "aa"\nread = ["DELETE"]\n',
    )
    write(tmp_path, "tenants/someone.toml", 'tenant = "someone-else"\n')
    write(tmp_path, "tenants/fine.toml", 'tenant = "fine"\n')
    with pytest.raises(SeedError) as caught:
        load_seed(tmp_path)
    found = {(p.file.relative_to(tmp_path).as_posix(), p.field) for p in caught.value.problems}
    assert found == {
        ("datasets/broken.toml", "-"),
        ("datasets/unknown.toml", "colour"),
        ("datasets/wrong-name.toml", "id"),
        ("datasets/bb.toml", "prefixes"),
        ("tenants/reader.toml", "subscriptions[0].read"),
        ("tenants/someone.toml", "tenant"),
    }
    messages = {p.file.name: p.message for p in caught.value.problems}
    assert "not valid TOML" in messages["broken.toml"]
    assert messages["unknown.toml"] == "unknown field"
    assert messages["wrong-name.toml"] == "file must be right-name.toml"
    assert messages["bb.toml"] == "prefix /x is already owned by dataset aa"
    assert "DELETE cannot be delegated" in messages["reader.toml"]
    assert messages["someone.toml"] == "file must be someone-else.toml"
    text = str(caught.value)
    assert f"{tmp_path / 'datasets/bb.toml'}: prefixes: prefix /x is already owned" in text
    assert len(text.splitlines()) == 6


def test_the_same_prefix_on_two_sources_is_no_conflict(tmp_path: Path) -> None:
    write(
        tmp_path,
        "datasets/aa.toml",
        'id = "aa"\nowner = "o"\nsource = "s3://x"\nprefixes = ["/x"]\n',
    )
    write(
        tmp_path,
        "datasets/bb.toml",
        'id = "bb"\nowner = "o"\nsource = "s3://y"\nprefixes = ["/x"]\n',
    )
    assert [e.name for e in load_seed(tmp_path)] == ["aa", "bb"]


def test_load_seed_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="not a directory"):
        load_seed(tmp_path / "nope")


def test_a_directory_without_seed_subdirectories_is_refused() -> None:
    with pytest.raises(SeedError):
        load_seed(TABLES / "datasets")


def test_non_toml_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "tenants/t.toml", 'tenant = "t"\n')
    write(tmp_path, "tenants/notes.md", "not = [valid")
    assert [(e.kind, e.name) for e in load_seed(tmp_path)] == [("tenant", "t")]


# --- planning --------------------------------------------------------------------------------


def test_everything_is_new_when_the_tables_are_empty() -> None:
    entries = repo_entries()
    result = plan(entries, {}, prune=False, now_ms=NOW_MS)
    assert [(c.kind, c.name) for c in result.changes] == [(e.kind, e.name) for e in entries]
    assert {(c.op, c.why, c.version) for c in result.changes} == {("upsert", "new", NOW_MS)}
    assert all(
        c.spec == e.spec and c.file == e.file for c, e in zip(result.changes, entries, strict=True)
    )
    assert (result.unchanged, result.absent) == ([], [])


def test_applying_the_plan_makes_the_next_plan_empty() -> None:
    entries = repo_entries()
    first = plan(entries, {}, prune=True, now_ms=NOW_MS)
    state: dict[tuple[str, str], dict[str, Any]] = {
        (c.kind, c.name): {"version": c.version, "deleted": False, "spec": c.spec, "kid": "k"}
        for c in first.changes
    }
    second = plan(entries, state, prune=True, now_ms=NOW_MS + 1)
    assert second.changes == []
    assert second.absent == []
    assert sorted(second.unchanged) == sorted((e.kind, e.name) for e in entries)


def test_dataset_formatting_does_not_count_as_a_change() -> None:
    entries = repo_entries()
    state = held_state(entries)
    key = ("dataset", "petra3-p02.1-11012345")
    spec = dict(state[key]["spec"])
    spec["prefixes"] = ["//data/petra3/p02.1/2026/11012345/"]
    spec["shared_with"] = ["hereon-analysis", "hereon-analysis", "petra3-p02"]
    state[key] = {**state[key], "spec": spec}
    assert plan(entries, state, prune=False, now_ms=NOW_MS).changes == []


def test_tenant_defaults_do_not_count_as_a_change() -> None:
    entries = repo_entries()
    state = held_state(entries)
    key = ("tenant", "mallory")
    state[key] = {
        **state[key],
        "spec": {
            "tenant": "mallory",
            "token_lifetime": 600,
            "subscriptions": [{"dataset": "petra3-p06-11012346", "read": True, "write": False}],
        },
    }
    assert plan(entries, state, prune=False, now_ms=NOW_MS).changes == []


@pytest.mark.parametrize(
    ("held_version", "expected"),
    [
        pytest.param(5, NOW_MS, id="old-version-time-based"),
        pytest.param(NOW_MS + 1000, NOW_MS + 1001, id="held-from-the-future"),
    ],
)
def test_a_changed_field_is_one_newer_upsert(held_version: int, expected: int) -> None:
    entries = repo_entries()
    state = held_state(entries, version=held_version)
    key = ("tenant", "hereon-analysis")
    spec = dict(state[key]["spec"])
    spec["subscriptions"] = [{**spec["subscriptions"][0], "max_size": 1}]
    state[key] = {**state[key], "spec": spec}
    result = plan(entries, state, prune=True, now_ms=NOW_MS)
    assert len(result.changes) == 1
    change = result.changes[0]
    assert (change.kind, change.name, change.op, change.why) == (
        "tenant",
        "hereon-analysis",
        "upsert",
        "changed",
    )
    assert change.spec is not None
    assert change.spec["subscriptions"][0]["max_size"] == 500_000_000  # the file's value
    assert change.version == expected
    assert change.version > held_version
    assert change.describe() == f"~ tenant hereon-analysis (changed, v{expected})"
    assert len(result.unchanged) == len(entries) - 1


def test_an_invalid_held_spec_is_replaced() -> None:
    entries = repo_entries()
    state = held_state(entries)
    state[("dataset", "xfel-spb-2026-bucket")]["spec"] = {"id": "xfel-spb-2026-bucket"}
    result = plan(entries, state, prune=False, now_ms=NOW_MS)
    assert [(c.name, c.why) for c in result.changes] == [("xfel-spb-2026-bucket", "changed")]


def test_a_tombstoned_entry_in_the_files_is_recreated() -> None:
    entries = repo_entries()
    state = held_state(entries, version=9)
    state[("tenant", "xfel-da")] = {"version": 9, "deleted": True, "spec": None, "kid": "k"}
    result = plan(entries, state, prune=True, now_ms=5)
    assert [(c.name, c.op, c.why, c.version) for c in result.changes] == [
        ("xfel-da", "upsert", "deleted-in-table", 10)
    ]


@pytest.mark.parametrize("prune", [False, True])
def test_entries_absent_from_the_files_are_deleted_only_with_prune(prune: bool) -> None:
    entries = repo_entries()
    state = held_state(entries)
    state[("tenant", "ghost")] = {"version": NOW_MS + 7, "deleted": False, "spec": {}, "kid": "k"}
    state[("dataset", "gone-already")] = {"version": 3, "deleted": True, "spec": None, "kid": "k"}
    result = plan(entries, state, prune=prune, now_ms=NOW_MS)
    assert result.absent == [("tenant", "ghost")]
    expected = [Change("tenant", "ghost", "delete", "absent", None, NOW_MS + 8)] if prune else []
    assert result.changes == expected
    if prune:
        assert result.changes[0].describe() == f"- tenant ghost (absent, v{NOW_MS + 8})"


@pytest.mark.parametrize(
    ("held", "now_ms", "expected"),
    [
        pytest.param(None, 1000, 1000, id="nothing-held"),
        pytest.param({"version": 5}, 1000, 1000, id="time-beats-old-version"),
        pytest.param({"version": 5000}, 1000, 5001, id="held-beats-time"),
        pytest.param({"version": 1000}, 1000, 1001, id="equal-is-not-newer"),
        pytest.param({}, 0, 1, id="empty-held"),
    ],
)
def test_next_version(held: dict[str, Any] | None, now_ms: int, expected: int) -> None:
    assert next_version(held, now_ms) == expected


def test_next_version_is_time_based_by_default() -> None:
    before = int(time.time() * 1000)
    version = next_version({"version": 3})
    after = int(time.time() * 1000)
    assert before <= version <= after
    assert next_version({"version": after + 10}) == after + 11
