"""Who may see a storage event. Deny by default.

An event belongs to at most one dataset: the longest path prefix on its source. The entitled
tenants are the dataset's owner and the tenants it is shared with; of those, only the ones whose
policy subscribes to the dataset and whose filters match receive it. Tenants whose policy
subscribes without being entitled are reported as denied, so a simulator run explains itself.

Each delivery carries the write activities it is granted: only the owner, or a tenant the
dataset is shared with *for writing* (``write_shared_with``), gets the ones its subscription
asks for, and only while the dataset's output area overlaps no other tenant's areas
(``domain/areas.py``). Read shares never grant write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamapp.domain.datasets import Dataset
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.index import Ownership, PolicyIndex
from streamapp.domain.policy import Filters, Subscription
from streamapp.domain.token_minting import MintedToken
from streamapp.domain.tokens import format_instant


@dataclass(frozen=True, slots=True)
class Delivery:
    tenant: str
    dataset: Dataset
    subscription: Subscription
    write: tuple[str, ...] = ()  # write activities granted on the output area: none by default
    write_refused: str | None = None  # why the subscription's write was not granted
    read_refused: str | None = None  # why no read token may be minted for the event's path


@dataclass(frozen=True, slots=True)
class Denial:
    tenant: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    ownership: Ownership | None
    deliveries: tuple[Delivery, ...]
    denied: tuple[Denial, ...]


def authorize(event: CanonicalEvent, index: PolicyIndex) -> Decision:
    source, subject = event["source"], event["subject"]
    ownership = index.owner_of(source, subject)
    if ownership is None:
        return Decision(None, (), ())
    dataset = ownership.dataset
    # Datasets a token for the event's path would reach too (it covers the whole subtree)
    within = [
        index.datasets[i]
        for i in index.areas_within(source, subject)
        if i != dataset.id and i in index.datasets
    ]
    deliveries: list[Delivery] = []
    denied: list[Denial] = []
    for tenant in dataset.entitled:
        policy = index.tenants.get(tenant)
        subscription = policy.by_dataset.get(dataset.id) if policy is not None else None
        if subscription is None:
            reason = "no tenant policy" if policy is None else "not subscribed to the dataset"
            denied.append(Denial(tenant, reason))
            continue
        mismatch = filter_mismatch(subscription.filters, event, ownership.relative)
        if mismatch is not None:
            denied.append(Denial(tenant, mismatch))
            continue
        write, refused = write_grant(tenant, dataset, subscription, index)
        read_refused = None
        for other in within:
            if tenant not in other.entitled_set:
                read_refused = (
                    "a read token for this path would also reach another tenant's data below it"
                )
                break
        deliveries.append(Delivery(tenant, dataset, subscription, write, refused, read_refused))
    subscribers = index.subscribers(dataset.id)
    if not subscribers <= dataset.entitled_set:  # usually every subscriber is entitled
        denied.extend(
            Denial(tenant, "dataset is not shared with the tenant")
            for tenant in sorted(subscribers - dataset.entitled_set)
        )
    return Decision(ownership, tuple(deliveries), tuple(denied))


def write_grant(
    tenant: str, dataset: Dataset, subscription: Subscription, index: PolicyIndex
) -> tuple[tuple[str, ...], str | None]:
    """The write activities ``tenant`` is granted on ``dataset``'s output area, and why the
    ones its subscription asks for are withheld (None when nothing is withheld)."""
    if not subscription.write or dataset.output is None:
        return (), None
    if not dataset.may_write(tenant):
        return (), "the dataset is shared with the tenant for reading only"
    conflict = index.output_conflict(dataset.id)
    if conflict is not None:
        return (), f"the output area is refused: {conflict}"
    return subscription.write, None


def filter_mismatch(filters: Filters, event: CanonicalEvent, relative: str) -> str | None:
    """Why ``event`` fails ``filters`` (None when it passes). Globs see the path relative to
    the dataset root; a size bound is failed by an event whose size is unknown."""
    if filters.types and event["type"] not in filters.types:
        return f"type {event['type']} not selected"
    if filters.paths:
        for glob in filters.paths:
            if glob.matches(relative):
                break
        else:
            return "path matches no glob"
    size = event["data"].get("size")
    if filters.min_size is not None and (size is None or size < filters.min_size):
        return "size below min_size" if size is not None else "size unknown (size bound set)"
    if filters.max_size is not None and (size is None or size > filters.max_size):
        return "size above max_size" if size is not None else "size unknown (size bound set)"
    return None


def authorized_event(
    event: CanonicalEvent,
    delivery: Delivery,
    read: MintedToken | None,
    write: MintedToken | None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The event as the tenant receives it: CloudEvents extension attributes (lower-case
    alphanumerics only) name the tenant, the dataset and carry the delegated tokens."""
    out: dict[str, Any] = {**event, "tenant": delivery.tenant, "dataset": delivery.dataset.id}
    expiries = []
    if read is not None:
        out["readtoken"] = read.token
        expiries.append(read.expires)
    if write is not None:
        out["writetoken"] = write.token
        out["writepath"] = write.path
        expiries.append(write.expires)
    if expiries:
        out["tokenexpires"] = format_instant(min(expiries))
    if problems:
        out["tokenerror"] = "; ".join(problems)
    return out
