"""The dCache storage-event envelope -> canonical events (``normalize``), and the bridge's pure
helpers: which inotify events become what, moves in either order, stable ids."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamapp.domain.inotify import (
    FILE_EVENTS,
    FileState,
    child_path,
    diff_tree,
    inotify_envelope,
    listed_child,
    resync_envelope,
)
from streamapp.domain.normalize import Normalized, Rejected, Skipped, normalize

SOURCE = "dcache://dcache.desy.example"
FRONTEND = "https://frontend.desy.example:3880"
OBSERVED = "2026-11-26T10:00:00Z"


def live(
    mask: list[str],
    name: str | None = "f.h5",
    *,
    cookie: str | None = None,
    state: FileState | None = None,
    sse_id: str = "7",
) -> dict[str, Any]:
    return inotify_envelope(
        frontend=FRONTEND,
        channel=f"{FRONTEND}/api/v1/events/channels/abc",
        sse_id=sse_id,
        watched="/data/run1",
        name=name,
        mask=mask,
        cookie=cookie,
        state=state,
        observed=OBSERVED,
    )


def outcome(envelope: dict[str, Any]) -> Normalized | Skipped | Rejected:
    # json, not orjson: it writes integers beyond 64 bits as a hostile producer would
    [result] = normalize(json.dumps(envelope).encode(), SOURCE)
    return result


def event(envelope: dict[str, Any]) -> dict[str, Any]:
    result = outcome(envelope)
    assert isinstance(result, Normalized), result
    return dict(result.event)


def test_close_write_is_a_creation_with_the_namespace_size_and_mtime() -> None:
    created = event(live(["IN_CLOSE_WRITE"], state=FileState(1234, 1_764_150_000_000)))
    assert created["type"] == "storage.object.created"
    assert created["subject"] == "/data/run1/f.h5"
    assert created["data"]["size"] == 1234
    assert created["data"]["operation"] == "inotify:IN_CLOSE_WRITE"
    assert created["time"] == "2025-11-26T09:40:00.000Z"  # the file's mtime, not when we saw it
    assert created["source"] == SOURCE


def test_create_is_skipped_because_the_data_is_not_there_yet() -> None:
    result = outcome(live(["IN_CREATE"]))
    assert isinstance(result, Skipped)
    assert "IN_CREATE" in result.reason


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (["IN_DELETE"], "storage.object.deleted"),
        (["IN_MOVED_FROM"], "storage.object.deleted"),
        (["IN_MOVED_TO"], "storage.object.created"),
        (["IN_CLOSE_WRITE"], "storage.object.created"),
        (["IN_ATTRIB"], None),
        (["IN_MODIFY"], None),
        (["IN_OPEN"], None),
        (["IN_CLOSE_NOWRITE"], None),
        (["IN_CREATE", "IN_ISDIR"], None),
        (["IN_DELETE", "IN_ISDIR"], None),
        (["IN_MOVED_TO", "IN_ISDIR"], None),
    ],
)
def test_each_inotify_event_maps_as_documented(mask: list[str], expected: str | None) -> None:
    result = outcome(live(mask))
    if expected is None:
        assert isinstance(result, Skipped), result
    else:
        assert isinstance(result, Normalized), result
        assert result.event["type"] == expected


def test_the_table_covers_every_file_event_the_bridge_subscribes_to() -> None:
    from streamapp.domain.inotify import WATCH_FLAGS  # noqa: PLC0415

    assert set(WATCH_FLAGS) <= set(FILE_EVENTS)


def test_a_move_is_a_delete_and_a_create_paired_by_cookie_in_either_order() -> None:
    gone = live(["IN_MOVED_FROM"], "old.h5", cookie="c00kie", state=FileState(5, 1000), sse_id="8")
    came = live(["IN_MOVED_TO"], "new.h5", cookie="c00kie", state=FileState(5, 1000), sse_id="9")
    for order in ([gone, came], [came, gone]):
        events = [event(e) for e in order]
        by_type = {e["type"]: e for e in events}
        assert by_type["storage.object.deleted"]["subject"] == "/data/run1/old.h5"
        assert by_type["storage.object.created"]["subject"] == "/data/run1/new.h5"
        assert {e["data"]["move"]["cookie"] for e in events} == {"c00kie"}
        assert {e["data"]["move"]["role"] for e in events} == {"from", "to"}


def test_a_replayed_event_keeps_its_id_and_distinct_events_never_share_one() -> None:
    state = FileState(42, 1_764_150_000_000)
    first = event(live(["IN_CLOSE_WRITE"], state=state, sse_id="10"))
    replayed = event(live(["IN_CLOSE_WRITE"], state=state, sse_id="10"))
    assert first["id"] == replayed["id"]
    # moved out and back: the same path, size and mtime, but a second creation
    back = event(live(["IN_MOVED_TO"], state=state, sse_id="14"))
    assert back["id"] != first["id"]
    deletion = event(live(["IN_DELETE"], state=state, sse_id="12"))
    assert deletion["id"] != first["id"]
    assert deletion["data"]["size"] is None


def test_a_change_found_by_listing_is_named_by_the_files_state() -> None:
    def listed(state: FileState, observed: str) -> dict[str, Any]:
        return event(
            resync_envelope(
                frontend=FRONTEND,
                path="/data/run1/f.h5",
                change="created",
                reason="EVENT_LOSS",
                state=state,
                observed=observed,
            )
        )

    state = FileState(42, 1_764_150_000_000)
    assert listed(state, OBSERVED)["id"] == listed(state, "2026-11-26T11:00:00Z")["id"]
    assert listed(state, OBSERVED)["id"] != listed(FileState(43, state.mtime), OBSERVED)["id"]


def test_without_a_known_state_the_sse_position_names_the_event() -> None:
    one = event(live(["IN_DELETE"], sse_id="20"))
    again = event(live(["IN_DELETE"], sse_id="20"))
    other = event(live(["IN_DELETE"], sse_id="21"))
    assert one["id"] == again["id"] != other["id"]


@pytest.mark.parametrize(
    ("change", "field", "value", "why"),
    [
        (None, "path", "relative/path", "path"),
        (None, "mask", [], "mask"),
        (None, "mask", ["IN_BOGUS"], "IN_BOGUS"),
        (None, "frontend", None, "frontend"),
        (None, "mtime", "yesterday", "mtime"),
        (None, "kind", "gossip", "kind"),
        ("moved", "change", "moved", "change"),
        (None, "observed", "not a time", "observed"),
        (None, "mtime", 10**20, "not milliseconds"),  # JSON readers make it a float
        (None, "mtime", -(10**20), "not milliseconds"),
        (None, "mtime", 10**17, "0001-9999"),
        (None, "mtime", -(10**17), "0001-9999"),
        (None, "mtime", 2**63 - 1, "0001-9999"),
        (None, "mtime", 253_402_300_800_000, "0001-9999"),  # 10000-01-01
        (None, "mtime", 1e20, "not milliseconds"),
        (None, "size", 2**64 - 1, "int64"),
        (None, "size", "9" * 5000, "int64"),
        (None, "path", "/data/..", "root '/'"),
        (None, "path", "/data/run1/" + "x" * 70_000, "4096-byte limit"),
        (None, "path", "/data/run1/a\nb", "U+000A"),
        ("x", "reason", {"a": 1}, "reason"),
    ],
)
def test_malformed_envelopes_are_rejected_with_the_reason(
    change: str | None, field: str, value: Any, why: str
) -> None:
    envelope = live(["IN_CLOSE_WRITE"])
    if change is not None:
        envelope = resync_envelope(
            frontend=FRONTEND,
            path="/data/run1/f.h5",
            change="created",
            reason="x",
            state=FileState(1, 1),
            observed=OBSERVED,
        )
    envelope[field] = value
    result = outcome(envelope)
    assert isinstance(result, Rejected), result
    assert why in result.reason


def test_times_at_the_ends_of_rfc3339s_range_are_kept() -> None:
    first = event(live(["IN_CLOSE_WRITE"], state=FileState(1, -62_135_596_800_000)))
    last = event(live(["IN_CLOSE_WRITE"], state=FileState(1, 253_402_300_799_999)))
    assert (first["time"], last["time"]) == ("0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z")


def test_paths_are_built_from_one_name_only() -> None:
    assert child_path("/data/run1", "f.h5") == "/data/run1/f.h5"
    assert child_path("/data/run1", None) == "/data/run1"
    for bad in ("../etc/passwd", "a/b", ".."):
        with pytest.raises(ValueError, match="single path component"):
            child_path("/data/run1", bad)


def test_a_listing_entry_must_be_one_non_empty_component() -> None:
    assert listed_child("/data/run1", "f.h5") == "/data/run1/f.h5"
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError, match=r"name|component"):
            listed_child("/data/run1", bad)


def test_a_listing_diff_finds_new_changed_and_vanished_files_under_its_root() -> None:
    known = {
        "/d/same.h5": FileState(1, 1),
        "/d/changed.h5": FileState(1, 1),
        "/d/gone.h5": FileState(1, 1),
        "/other/untouched.h5": FileState(1, 1),
    }
    listed = {
        "/d/same.h5": FileState(1, 1),
        "/d/changed.h5": FileState(2, 2),
        "/d/new.h5": FileState(3, 3),
    }
    diff = diff_tree(known, listed, "/d")
    assert [p for p, _ in diff.created] == ["/d/changed.h5", "/d/new.h5"]
    assert [p for p, _ in diff.deleted] == ["/d/gone.h5"]
