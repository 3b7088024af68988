"""Timing guard for path globs (issue #11): the worst glob/path pairs we could construct,
matched against 250-character paths, must each take well under a millisecond.

Also times the previous regex reading of the same globs on short names, to show what the
segment matcher replaced (it backtracks exponentially: capped at a name length that still
finishes). Pure code, no broker.

    .venv/bin/python -m bench.globs [--repeat N]

Exits non-zero if any pair's median exceeds the guard (default 1 ms).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

from streamapp.domain.globs import (
    CLIENT_MAX_GLOB_LENGTH,
    CLIENT_MAX_TOTAL_WILDCARDS,
    CLIENT_MAX_WILDCARDS,
    POLICY_MAX_WILDCARDS,
    PathGlob,
    client_globs,
)

NAME = 250


def adversarial_pairs() -> list[tuple[str, str, str]]:
    """(label, glob, path): each built to make a backtracking matcher retry every split."""
    many_a = "a" * NAME
    client_stars = "*a" * (CLIENT_MAX_WILDCARDS - 1) + "*b"
    policy_stars = "*a" * (POLICY_MAX_WILDCARDS - 1) + "*b"
    question_pieces = "*" + "a?" * 7 + "*" + "a?" * 7 + "b"
    deep = "/".join(["a"] * (NAME // 2))  # 125 segments, 249 characters
    # The longest paths ingest lets through: 256 segments (4,096 bytes at most), repeated
    # or all different (so no answer can be reused).
    deepest = "/".join(["a"] * 256)
    distinct = "/".join(f"a{n:02x}" for n in range(256))
    policy_pieces = "**/" + "/".join(f"a{n:x}*" for n in range(POLICY_MAX_WILDCARDS - 4)) + "/b/**"
    client_pieces = "**/" + "/".join(f"a{n:x}*" for n in range(CLIENT_MAX_WILDCARDS - 4)) + "/b/**"
    return [
        ("stars a…b vs ax250 (issue's example)", "**/*a*a*a*a*b", f"x/{many_a}"),
        (f"client bound: {CLIENT_MAX_WILDCARDS} stars", client_stars, many_a),
        (f"policy bound: {POLICY_MAX_WILDCARDS} stars", policy_stars, many_a),
        ("pieces with ? vs ax250", question_pieces, many_a),
        ("** between pieces vs 125 segments", "**/a*/**/a*/**/a*/**/b", deep),
        ("8 inner ** vs 125 segments", "/".join(["**", "a"] * 8) + "/b", deep),
        ("block of 8 failing at its end", "**/" + "a/" * 7 + "b/**", deep),
        ("block of 15 * failing at its end", "**/" + "*/" * 14 + "b/**", deep),
        ("block of 62 literals failing at its end", "**/" + "a/" * 61 + "b/**", deep),
        ("block of 62, 16 of them *", "**/" + "a/*/" * 15 + "a/b/**", deep),
        ("block of 124 literals vs 256 segments", "**/" + "a/" * 124 + "b/**", deepest),
        (
            f"policy: {POLICY_MAX_WILDCARDS - 4} pieces a<n>* vs 256 distinct",
            policy_pieces,
            distinct,
        ),
        (
            f"client: {CLIENT_MAX_WILDCARDS - 4} pieces a<n>* vs 256 distinct",
            client_pieces,
            distinct,
        ),
        (
            f"policy: {POLICY_MAX_WILDCARDS - 4} x (a*) vs 256 distinct",
            "**/" + "a*/" * (POLICY_MAX_WILDCARDS - 4) + "b/**",
            distinct,
        ),
        ("matching: stars a…b vs ax249 b", "**/*a*a*a*a*b", f"x/{many_a[:-1]}b"),
    ]


def worst_requests() -> list[str]:
    """``paths=`` values at the client bounds, built to cost the most per event: the wildcard
    budget spent on middle blocks (``**/…/**``, 4 each) and pieces (``a<n>*``), the rest of
    each glob's length on literal segments."""
    requests = []
    for globs in (1, 2, 4):
        per_glob = CLIENT_MAX_TOTAL_WILDCARDS // globs - 4
        patterns = []
        for number in range(globs):
            head = "**/" + "".join(f"a{number:x}{n:x}*/" for n in range(per_glob))
            literals = (CLIENT_MAX_GLOB_LENGTH - len(head) - len("b/**")) // 2
            patterns.append(head + "a/" * literals + "b/**")
        requests.append(",".join(patterns))
    return requests


def time_match(glob: PathGlob, path: str, repeat: int) -> float:
    """Median seconds per match over ``repeat`` rounds of 20 matches each."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(20):
            glob.matches(path)
        rounds.append((time.perf_counter() - started) / 20)
    return statistics.median(rounds)


def old_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(
        "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in pattern
    )
    return re.compile(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--guard-ms", type=float, default=1.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    worst = 0.0
    for label, pattern, path in adversarial_pairs():
        glob = PathGlob(pattern)
        seconds = time_match(glob, path, args.repeat)
        worst = max(worst, seconds)
        print(f"{seconds * 1e6:9.1f} µs  match={glob.matches(path)!s:5}  {label}")
    # A whole SSE request at its bounds: the most globs, all wildcards spent on pieces, each
    # glob's literal block as long as the length bound allows; per event, every glob is tried.
    path = "/".join(f"a{n:02x}" for n in range(256))
    for value in worst_requests():
        request = client_globs(value)
        rounds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for _ in range(5):
                any(glob.matches(path) for glob in request)
            rounds.append((time.perf_counter() - started) / 5)
        per_event = statistics.median(rounds)
        worst = max(worst, per_event)
        print(f"{per_event * 1e6:9.1f} µs  one event vs a whole request of {len(request)} globs")

    print(f"worst median {worst * 1e6:.1f} µs (guard {args.guard_ms} ms)")
    print("\nprevious regex reading, '*a*a*a*a*b' against axn (exponential):")
    regex = old_regex("*a*a*a*a*a*a*b")
    for n in (16, 24, 32, 40):
        started = time.perf_counter()
        regex.fullmatch("a" * n)
        print(f"  n={n:3}: {(time.perf_counter() - started) * 1e3:10.1f} ms")
    sys.stdout.flush()
    return 0 if worst * 1e3 < args.guard_ms else 1


if __name__ == "__main__":
    sys.exit(main())
