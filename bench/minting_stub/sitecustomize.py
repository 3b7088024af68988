"""Loaded only by the workers of ``bench.pipeline minting-share`` (on their ``PYTHONPATH``):
``TokenIssuer.issue`` and ``issue_event`` replaced by stubs that serve each (tenant, dataset)
the tokens of its first event. The copies keep their sizes and every other step; what the
worker's CPU per record loses against a run with minting is what minting costs
(docs/benchmarks.md: a sampling profiler undercounted it)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from streamapp import delegation
from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent

_real_issue_event = delegation.TokenIssuer.issue_event
_kept: dict[tuple[str, str], delegation.DelegatedTokens] = {}


def _first_tokens(
    self: delegation.TokenIssuer, delivery: Delivery, event: CanonicalEvent, now: datetime
) -> delegation.DelegatedTokens:
    key = (delivery.tenant, delivery.dataset.id)
    tokens = _kept.get(key)
    if tokens is None:
        # the real issue_event (issue calls issue_event, which is stubbed here too)
        tokens = _kept[key] = _real_issue_event(self, (delivery,), event, now)[0]
    return tokens


def _first_tokens_of_copies(
    self: delegation.TokenIssuer,
    deliveries: Sequence[Delivery],
    event: CanonicalEvent,
    now: datetime,
) -> list[delegation.DelegatedTokens]:
    kept = _kept
    # The served tokens never go stale: without this the agent's ``still_current`` check
    # fails 5 s after the real issuer last ran, and every copy is issued again alone
    # (``issue``): more work in the stubbed runs, and copies counted twice in the
    # interleaved ones (found by the review of this benchmark).
    self._current_until = float("inf")
    try:  # one lookup per copy, as cheap as a stub gets
        return [kept[(d.tenant, d.dataset.id)] for d in deliveries]
    except KeyError:  # a (tenant, dataset)'s first event
        return [_first_tokens(self, d, event, now) for d in deliveries]


# Interleaved (``BENCH_MINTING_TOGGLE_S`` set): one worker alternates between minting and the
# stub every that many seconds, and a thread writes, at each switch, the process's CPU time and
# the copies issued so far (``BENCH_MINTING_SLICES``, one line per switch). Both modes then share
# the process, its caches and the machine's moments: the comparison of separate runs differed
# by more than what it measures (docs/benchmarks.md).
_TOGGLE_S = float(os.environ.get("BENCH_MINTING_TOGGLE_S") or 0)
_copies = 0


def _interleaved(
    self: delegation.TokenIssuer, delivery: Delivery, event: CanonicalEvent, now: datetime
) -> delegation.DelegatedTokens:
    # not counted: the agent calls ``issue`` only for copies ``issue_event`` counted already
    if int(time.monotonic() / _TOGGLE_S) % 2:  # odd slices: the stub
        return _first_tokens(self, delivery, event, now)
    return _real_issue_event(self, (delivery,), event, now)[0]


def _interleaved_event(
    self: delegation.TokenIssuer,
    deliveries: Sequence[Delivery],
    event: CanonicalEvent,
    now: datetime,
) -> list[delegation.DelegatedTokens]:
    global _copies  # noqa: PLW0603 - one counter read by the slice thread
    _copies += len(deliveries)
    if int(time.monotonic() / _TOGGLE_S) % 2:  # odd slices: the stub
        return _first_tokens_of_copies(self, deliveries, event, now)
    return _real_issue_event(self, deliveries, event, now)


def _write_slices(path: str) -> None:
    with open(path, "a", buffering=1) as out:
        while True:
            slice_index = int(time.monotonic() / _TOGGLE_S)
            time.sleep(max(0.0, (slice_index + 1) * _TOGGLE_S - time.monotonic()))
            # the slice that just ended: its parity (1: stubbed), CPU so far, copies so far
            out.write(f"{slice_index} {slice_index % 2} {time.process_time():.6f} {_copies}\n")


if _TOGGLE_S > 0:
    delegation.TokenIssuer.issue = _interleaved  # type: ignore[method-assign]
    delegation.TokenIssuer.issue_event = _interleaved_event  # type: ignore[method-assign]
    threading.Thread(
        target=_write_slices, args=(os.environ["BENCH_MINTING_SLICES"],), daemon=True
    ).start()
else:
    delegation.TokenIssuer.issue = _first_tokens  # type: ignore[method-assign]
    delegation.TokenIssuer.issue_event = _first_tokens_of_copies  # type: ignore[method-assign]
