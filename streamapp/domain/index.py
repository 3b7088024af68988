"""The in-memory policy index every worker keeps: datasets in a trie over path segments, and
tenant policies by tenant. Built from the tables, updated entry by entry; lookups cost
O(path depth), whatever the number of datasets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamapp.domain.policy import Dataset, TenantPolicy


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    dataset: str | None = None
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Ownership:
    dataset: Dataset
    prefix: str  # the prefix that matched: the dataset root for relative globs
    relative: str  # the path below that prefix


class PrefixConflictError(ValueError):
    """Two datasets on the same source may not claim the same prefix."""


class PolicyIndex:
    def __init__(self) -> None:
        self._datasets: dict[str, Dataset] = {}
        self._tenants: dict[str, TenantPolicy] = {}
        self._roots: dict[str, _Node] = {}  # one trie per storage source
        self._subscribers: dict[str, set[str]] = defaultdict(set)

    # --- reading ---------------------------------------------------------------------------

    @property
    def datasets(self) -> dict[str, Dataset]:
        return self._datasets

    @property
    def tenants(self) -> dict[str, TenantPolicy]:
        return self._tenants

    def subscribers(self, dataset_id: str) -> set[str]:
        return self._subscribers.get(dataset_id, set())

    def owner_of(self, source: str, path: str) -> Ownership | None:
        """The dataset owning ``path`` on ``source``: the longest prefix on component
        boundaries (``/data/exp`` does not own ``/data/exp-2/x``)."""
        node = self._roots.get(source)
        if node is None or not path.startswith("/"):
            return None
        best: _Node | None = None
        depth = 0
        segments = path[1:].split("/")
        if any(segment in ("", ".", "..") for segment in segments) or "\x00" in path:
            return None  # only normalized paths can be owned: "/a/../b" must not match "/a"
        for index, segment in enumerate(segments):
            child = node.children.get(segment)
            if child is None:
                break
            node = child
            if node.dataset is not None:
                best, depth = node, index + 1
        if best is None or best.dataset is None or best.prefix is None:
            return None
        return Ownership(self._datasets[best.dataset], best.prefix, "/".join(segments[depth:]))

    def conflicts(self, dataset: Dataset) -> list[tuple[str, str]]:
        """(prefix, other dataset id) pairs where ``dataset`` would claim a taken prefix."""
        found = []
        for prefix in dataset.prefixes:
            node = self._node(dataset.source, prefix, create=False)
            if node is not None and node.dataset not in (None, dataset.id):
                found.append((prefix, str(node.dataset)))
        return found

    # --- writing ---------------------------------------------------------------------------

    def put_dataset(self, dataset: Dataset) -> None:
        conflicts = self.conflicts(dataset)
        if conflicts:
            prefix, other = conflicts[0]
            raise PrefixConflictError(f"prefix {prefix} is already owned by dataset {other}")
        self.remove_dataset(dataset.id)
        self._datasets[dataset.id] = dataset
        for prefix in dataset.prefixes:
            node = self._node(dataset.source, prefix, create=True)
            assert node is not None
            node.dataset, node.prefix = dataset.id, prefix

    def remove_dataset(self, dataset_id: str) -> None:
        old = self._datasets.pop(dataset_id, None)
        if old is None:
            return
        for prefix in old.prefixes:
            node = self._node(old.source, prefix, create=False)
            if node is not None and node.dataset == dataset_id:
                node.dataset = node.prefix = None
        # empty branches are left in place: they cost memory only, never correctness

    def put_tenant(self, policy: TenantPolicy) -> None:
        self.remove_tenant(policy.tenant)
        self._tenants[policy.tenant] = policy
        for subscription in policy.subscriptions:
            self._subscribers[subscription.dataset].add(policy.tenant)

    def remove_tenant(self, tenant: str) -> None:
        old = self._tenants.pop(tenant, None)
        if old is None:
            return
        for subscription in old.subscriptions:
            self._subscribers[subscription.dataset].discard(tenant)

    def replace_all(self, datasets: Iterable[Dataset], tenants: Iterable[TenantPolicy]) -> None:
        fresh = PolicyIndex()
        for dataset in datasets:
            fresh.put_dataset(dataset)
        for policy in tenants:
            fresh.put_tenant(policy)
        self._datasets, self._tenants = fresh._datasets, fresh._tenants
        self._roots, self._subscribers = fresh._roots, fresh._subscribers

    def _node(self, source: str, prefix: str, *, create: bool) -> _Node | None:
        node = self._roots.get(source)
        if node is None:
            if not create:
                return None
            node = self._roots[source] = _Node()
        for segment in prefix[1:].split("/"):
            child = node.children.get(segment)
            if child is None:
                if not create:
                    return None
                child = node.children[segment] = _Node()
            node = child
        return node
