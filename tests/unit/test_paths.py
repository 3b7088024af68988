"""``domain.paths.normalize_absolute_path``'s shortcut for paths already in normal form."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamapp.domain.paths import PathError, normalize_absolute_path, resolve_segments


@given(st.text(alphabet="/.a\x00é", max_size=12).map(lambda tail: "/" + tail))
def test_the_already_normal_shortcut_gives_what_resolving_gives(path: str) -> None:
    """``normalize_absolute_path`` returns a path it finds normal as it is: the same result as
    resolving it segment by segment, and the same refusals."""
    try:
        resolved: str | None = "/" + "/".join(resolve_segments(path[1:], what="path"))
    except PathError:
        resolved = None
    try:
        normalized: str | None = normalize_absolute_path(path)
    except PathError:
        normalized = None
    assert normalized == resolved
