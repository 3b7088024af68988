"""Path globs matched segment by segment, in time linear in the path (no backtracking).

``*`` matches within one segment, ``?`` one character of a segment, ``**`` any number of whole
segments (including none), except that a trailing ``/**`` takes at least one (``raw/**`` is
what is inside ``raw``); the empty path (the dataset root itself) is matched by ``*`` and
``**``. Everything else is literal. Policies use these globs, and so does
the SSE view's client-supplied ``paths=``: a regular expression built from a glob
(``[^/]*a[^/]*a…b``) backtracks exponentially on a long file name, which let one request
freeze a worker's event loop. Here each segment is matched by cutting its pattern at the
stars and finding the pieces left to right (the leftmost place of each piece is always the
right one, so nothing is retried), and ``**`` the same way one level up: the segment patterns
between two ``**`` form a block, and each block's leftmost place in the path is the right one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Bounds on a glob a client sends with a request (a policy's globs are signed by an admin
# and get the wider policy bounds). Matching is linear either way; these keep the work per
# event and the size of a request's state small.
CLIENT_MAX_GLOB_LENGTH: Final = 256
CLIENT_MAX_WILDCARDS: Final = 16
CLIENT_MAX_GLOBS: Final = 8
# ...and across all the globs of one request: the patterns with pieces (``a*``, ``?b``) are
# what costs a call per path segment, so their total is what bounds a request's work.
CLIENT_MAX_TOTAL_WILDCARDS: Final = 16
POLICY_MAX_GLOB_LENGTH: Final = 1024
POLICY_MAX_WILDCARDS: Final = 32


class GlobError(ValueError):
    """A pattern that is not a valid glob, or exceeds the bounds it is held to."""


_DOUBLE_STAR: Final = "**"


@dataclass(frozen=True, slots=True)
class _Piece:
    """A run of a segment pattern between stars: literal characters and ``?``."""

    text: str
    regex: re.Pattern[str] | None  # None: no ``?`` in it, plain string search suffices

    @classmethod
    def of(cls, text: str) -> _Piece:
        if "?" not in text:
            return cls(text, None)
        # A fixed-length pattern (no quantifiers): a search costs at most len(value) * len(text).
        body = "".join("." if ch == "?" else re.escape(ch) for ch in text)
        return cls(text, re.compile(body, re.DOTALL))

    def at(self, value: str, position: int) -> bool:
        if self.regex is None:
            return value.startswith(self.text, position)
        return self.regex.match(value, position) is not None

    def find(self, value: str, start: int, end: int) -> int:
        """Leftmost place at or after ``start`` where the piece fits before ``end``; -1 if none."""
        if self.regex is None:
            return value.find(self.text, start, end)
        found = self.regex.search(value, start, end)
        return -1 if found is None else found.start()


@dataclass(frozen=True, slots=True)
class _SegmentPattern:
    pieces: tuple[_Piece, ...]  # split at ``*``: one piece means no star

    @classmethod
    def of(cls, segment: str) -> _SegmentPattern:
        return cls(tuple(_Piece.of(text) for text in segment.split("*")))

    def matches(self, value: str) -> bool:
        pieces = self.pieces
        first = pieces[0]
        if len(pieces) == 1:
            return len(value) == len(first.text) and first.at(value, 0)
        last = pieces[-1]
        tail = len(value) - len(last.text)
        if tail < len(first.text) or not first.at(value, 0) or not last.at(value, tail):
            return False
        position = len(first.text)
        for piece in pieces[1:-1]:
            found = piece.find(value, position, tail)
            if found < 0:
                return False
            position = found + len(piece.text)
        return True


SegmentMatcher = Callable[[str], bool]


def _any_segment(_value: str) -> bool:
    return True


def segment_matcher(segment: str) -> SegmentMatcher:
    """The cheapest test for one segment pattern (most are literal, ``*`` or ``*.ext``)."""
    if segment == "*":
        return _any_segment
    if "*" not in segment and "?" not in segment:
        return segment.__eq__
    return _SegmentPattern.of(segment).matches


class PathGlob:
    """A glob over ``/``-separated paths relative to a dataset root (see the module doc)."""

    __slots__ = ("_blocks", "_searches", "_segments", "pattern")

    def __init__(
        self,
        pattern: str,
        *,
        max_length: int = POLICY_MAX_GLOB_LENGTH,
        max_wildcards: int = POLICY_MAX_WILDCARDS,
    ) -> None:
        if len(pattern) > max_length:
            raise GlobError(f"glob is {len(pattern)} characters long; at most {max_length}")
        wildcards = pattern.count("*") + pattern.count("?")
        if wildcards > max_wildcards:
            raise GlobError(f"glob has {wildcards} wildcards; at most {max_wildcards}")
        if "\x00" in pattern:
            raise GlobError("glob contains a NUL character")
        segments = [s for s in pattern.split("/") if s not in ("", ".")]
        if not segments:
            raise GlobError("empty glob")
        if ".." in segments:
            raise GlobError("'..' is not allowed in a glob")
        for segment in segments:
            if segment != _DOUBLE_STAR and _DOUBLE_STAR in segment:
                raise GlobError(f"'**' must be a whole segment: {segment!r}")
        self.pattern = pattern
        self._segments: tuple[SegmentMatcher | None, ...] = tuple(
            None if s == _DOUBLE_STAR else segment_matcher(s) for s in segments
        )
        blocks: list[list[SegmentMatcher]] = [[]]
        for compiled in self._segments:
            if compiled is None:
                blocks.append([])
            else:
                blocks[-1].append(compiled)
        self._blocks = tuple(tuple(block) for block in blocks)
        texts: list[list[str]] = [[]]
        for segment in segments:
            if segment == _DOUBLE_STAR:
                texts.append([])
            else:
                texts[-1].append(segment)
        self._searches = tuple(_Block(tuple(t)) for t in texts[1:-1])

    def matches(self, relative_path: str) -> bool:
        """Whether the whole of ``relative_path`` (no leading ``/``; empty segments are
        dropped, as a normalized path has none) matches the glob."""
        if not relative_path:
            return self._matches_root()
        values = [value for value in relative_path.split("/") if value]
        return self._matches_segments(values)

    def _matches_root(self) -> bool:
        """The dataset root itself (empty relative path): every segment but the last must be
        a ``**`` taking nothing, and the last a ``**`` or a pattern matching the empty name."""
        *inner, last = self._segments
        return all(m is None for m in inner) and (last is None or last(""))

    def _matches_segments(self, values: list[str]) -> bool:
        """``**`` is a gap of any length between fixed blocks of segment patterns, so each
        block's leftmost place is the right one (as for the pieces between stars)."""
        blocks = self._blocks
        count = len(values)
        first = blocks[0]
        if len(blocks) == 1:
            return count == len(first) and _block_at(first, values, 0)
        if count < len(first) or not _block_at(first, values, 0):
            return False
        position = len(first)
        last = blocks[-1]
        if last:
            end = count - len(last)
            if end < position or not _block_at(last, values, end):
                return False
        else:  # a trailing ``**`` takes one segment at least
            end = count - 1
        for block in self._searches:
            position = block.find(values, position, end)
            if position < 0:
                return False
        return position <= end

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathGlob) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"PathGlob({self.pattern!r})"


class _Block:
    """The segment patterns between two ``**``, found in a path by a shift-and automaton:
    one pass over the path segments, a bit per pattern position, so a block of n patterns
    costs one step per path segment, not n. A segment's bits come from a dict for literal
    patterns, a constant for ``*``, and calls only for the patterns with pieces whose state
    is alive — each distinct pattern asked once per distinct segment text."""

    __slots__ = ("_accept", "_always", "_length", "_literals", "_patterned", "_patterned_bits")

    def __init__(self, segments: tuple[str, ...]) -> None:
        self._length = len(segments)
        self._accept = 1 << (len(segments) - 1) if segments else 0
        self._literals: dict[str, int] = {}
        self._always = 0
        patterned: dict[str, int] = {}
        for index, segment in enumerate(segments):
            bit = 1 << index
            if segment == "*":
                self._always |= bit
            elif "*" not in segment and "?" not in segment:
                self._literals[segment] = self._literals.get(segment, 0) | bit
            else:
                patterned[segment] = patterned.get(segment, 0) | bit
        self._patterned = tuple((segment_matcher(text), bits) for text, bits in patterned.items())
        self._patterned_bits = sum(patterned.values())

    def find(self, values: list[str], start: int, end: int) -> int:
        """The index just after the block's leftmost place in ``values[start:end]``; -1 if
        it has none. (All places have the same length, so the leftmost to end is the
        leftmost to start.)"""
        literals, always, patterned, accept = (
            self._literals,
            self._always,
            self._patterned,
            self._accept,
        )
        patterned_bits = self._patterned_bits
        if not self._length:  # ``**/**``: nothing between them
            return start
        known: dict[str, int] = {}
        state = 0
        for index in range(start, end):
            value = values[index]
            alive = (state << 1) | 1
            bits = known.get(value)
            if bits is None:
                bits = literals.get(value, 0) | always
                for matcher, pattern_bits in patterned:
                    if pattern_bits & alive and matcher(value):
                        bits |= pattern_bits
                if patterned_bits & alive == patterned_bits:
                    known[value] = bits  # complete: every patterned bit was decided
            state = alive & bits
            if state & accept:
                return index + 1
        return -1


def _block_at(block: tuple[SegmentMatcher, ...], values: list[str], start: int) -> bool:
    for matcher in block:
        if not matcher(values[start]):
            return False
        start += 1
    return True


def client_globs(value: str) -> list[PathGlob]:
    """The comma-separated globs of a request's ``paths=``, held to the client bounds."""
    patterns = [p for p in value.split(",") if p]
    if len(patterns) > CLIENT_MAX_GLOBS:
        raise GlobError(f"{len(patterns)} globs; at most {CLIENT_MAX_GLOBS}")
    total = sum(p.count("*") + p.count("?") for p in patterns)
    if total > CLIENT_MAX_TOTAL_WILDCARDS:
        raise GlobError(
            f"{total} wildcards in all; at most {CLIENT_MAX_TOTAL_WILDCARDS} across the globs"
        )
    return [
        PathGlob(p, max_length=CLIENT_MAX_GLOB_LENGTH, max_wildcards=CLIENT_MAX_WILDCARDS)
        for p in patterns
    ]
