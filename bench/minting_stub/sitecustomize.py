"""Loaded only by the workers of ``bench.pipeline minting-share`` (on their ``PYTHONPATH``):
``TokenIssuer.issue`` replaced by a stub that serves each (tenant, dataset) the tokens of its
first event. The copies keep their sizes and every other step; what the worker's CPU per record
loses against a run with minting is what minting costs (docs/benchmarks.md: a sampling
profiler undercounted it)."""

from __future__ import annotations

from datetime import datetime

from streamapp import delegation
from streamapp.domain.authorize import Delivery
from streamapp.domain.events import CanonicalEvent

_real_issue = delegation.TokenIssuer.issue
_kept: dict[tuple[str, str], delegation.DelegatedTokens] = {}


def _first_tokens(
    self: delegation.TokenIssuer, delivery: Delivery, event: CanonicalEvent, now: datetime
) -> delegation.DelegatedTokens:
    key = (delivery.tenant, delivery.dataset.id)
    tokens = _kept.get(key)
    if tokens is None:
        tokens = _kept[key] = _real_issue(self, delivery, event, now)
    return tokens


delegation.TokenIssuer.issue = _first_tokens  # type: ignore[method-assign]
