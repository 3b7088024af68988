"""Path globs: the segment-wise matcher agrees with the regular-expression reading of the same
glob on every generated case, and refuses patterns beyond its bounds. (How fast the worst
patterns match is measured in bench/globs.py, not here.)"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.domain.globs import (
    CLIENT_MAX_GLOB_LENGTH,
    CLIENT_MAX_GLOBS,
    CLIENT_MAX_TOTAL_WILDCARDS,
    CLIENT_MAX_WILDCARDS,
    GlobError,
    PathGlob,
    client_globs,
)


def reference_regex(pattern: str) -> str:
    """The previous implementation (a regex per glob): the oracle for small inputs only,
    since it backtracks exponentially on adversarial ones."""
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(r"(?:[^/]+(?:/[^/]+)*)?" if last else r"(?:[^/]+/)*")
            continue
        body = "".join(
            "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment
        )
        parts.append(body if last else body + "/")
    return "".join(parts)


_segment_pattern = st.one_of(
    st.just("**"),
    st.text(alphabet="ab*?.", min_size=1, max_size=5).filter(
        lambda s: "**" not in s and s not in (".", "..")
    ),
)
_pattern = st.lists(_segment_pattern, min_size=1, max_size=5).map("/".join)
# Normalized relative paths (no empty segments), or the root itself.
_path = st.one_of(
    st.just(""),
    st.lists(st.text(alphabet="ab.", min_size=1, max_size=6), min_size=1, max_size=6).map("/".join),
)


@settings(max_examples=3000, deadline=None)
@given(_pattern, _path)
def test_segment_matcher_agrees_with_the_regex_reading(pattern: str, path: str) -> None:
    expected = re.fullmatch(reference_regex(pattern), path) is not None
    assert PathGlob(pattern).matches(path) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        pytest.param("*a*b", "xaxb", True, id="stars-around-pieces"),
        pytest.param("*a*b", "xbxa", False, id="pieces-in-order"),
        pytest.param("a*a", "a", False, id="pieces-do-not-overlap"),
        pytest.param("a*a", "aa", True, id="star-matches-empty"),
        pytest.param("?b*", "ab/c", False, id="star-stays-in-segment"),
        pytest.param("**/x.h5", "x.h5", True, id="inner-double-star-none"),
        pytest.param("**/x.h5", "a/b/x.h5", True, id="inner-double-star-many"),
        pytest.param("a/**/b/**", "a/b/b/c", True, id="two-double-stars"),
        pytest.param("a/**", "a", False, id="trailing-double-star-needs-a-segment"),
        pytest.param("*", "", True, id="star-matches-the-root"),
        pytest.param("**/*", "", True, id="inner-double-star-takes-nothing-at-the-root"),
        pytest.param("a/**", "", False, id="literal-never-the-root"),
        pytest.param("a//b", "a/b", True, id="empty-pattern-segments-dropped"),
        pytest.param("a/*/b", "a//b", False, id="empty-path-segments-dropped"),
        pytest.param("?", "é", True, id="question-is-one-character"),
        pytest.param("a?c", "a/c", False, id="question-not-a-slash"),
        pytest.param("**/*a*a*a*a*a*b", "x/" + "a" * 250, False, id="adversarial-no-match"),
        pytest.param("**/*a*a*a*a*a*b", "x/" + "a" * 249 + "b", True, id="adversarial-match"),
    ],
)
def test_path_glob_cases(pattern: str, path: str, matches: bool) -> None:
    assert PathGlob(pattern).matches(path) is matches


def test_adversarial_pair_is_refused_by_the_old_regex_reading_too() -> None:
    """The adversarial case is a real one: the regex reading gives the same answer (on a
    short name, where backtracking is still affordable)."""
    pattern, path = "**/*a*a*a*b", "x/" + "a" * 30
    assert re.fullmatch(reference_regex(pattern), path) is None
    assert not PathGlob(pattern).matches(path)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        pytest.param("a" * (CLIENT_MAX_GLOB_LENGTH + 1), "characters long", id="too-long"),
        pytest.param("*" * (CLIENT_MAX_WILDCARDS + 1), "wildcards", id="too-many-wildcards"),
        pytest.param(",".join(["a"] * (CLIENT_MAX_GLOBS + 1)), "globs; at most", id="too-many"),
        pytest.param("raw/../x", "'..' is not allowed", id="dotdot"),
        pytest.param("a\x00b", "NUL", id="nul"),
        pytest.param(",".join(["a*b*c*d*"] * 5), "20 wildcards in all", id="too-many-in-all"),
    ],
)
def test_client_globs_are_bounded(value: str, why: str) -> None:
    with pytest.raises(GlobError, match=re.escape(why)):
        client_globs(value)


def test_client_globs_within_bounds() -> None:
    globs = client_globs("raw/*.h5,,**/*.nxs")
    assert [g.pattern for g in globs] == ["raw/*.h5", "**/*.nxs"]
    assert globs[1].matches("a/b.nxs")


def test_policy_globs_have_wider_bounds() -> None:
    assert PathGlob("*a" * 30).matches("a" * 30)
    with pytest.raises(GlobError, match="wildcards"):
        PathGlob("*a" * 33)


def test_client_wildcards_are_counted_across_the_request() -> None:
    per_glob = CLIENT_MAX_TOTAL_WILDCARDS // 2
    assert len(client_globs(",".join(["*" * 1 + "a?" * (per_glob - 1)] * 2))) == 2
