"""The in-memory policy index every worker keeps: datasets in a trie over path segments, and
tenant policies by tenant. Built from the tables, updated entry by entry; lookups cost
O(path depth), whatever the number of datasets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamapp.domain.areas import output_conflicts
from streamapp.domain.datasets import Dataset
from streamapp.domain.policy import TenantPolicy


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    dataset: str | None = None
    prefix: str | None = None
    outputs: set[str] = field(default_factory=set)  # datasets whose output area is this path


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
        self._output_conflicts: dict[str, str | None] = {}  # cleared by any dataset change

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
        if "" in segments or "." in segments or ".." in segments or "\x00" in path:
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

    def areas_within(self, source: str, path: str) -> set[str]:
        """Ids of the datasets with a prefix or output area at ``path`` or below it: what a
        token for ``path`` would reach besides the file (a ``path:`` caveat covers the whole
        subtree, and an S3 key can be the prefix of other keys). Usually none: a file's path
        is rarely a node of the trie."""
        node = self._roots.get(source)
        if node is None or not path.startswith("/"):
            return set()
        for segment in path[1:].split("/"):
            node = node.children.get(segment)
            if node is None:
                return set()
        found: set[str] = set(node.outputs)
        pending = [node]
        while pending:
            current = pending.pop()
            found.update(current.outputs)
            if current.dataset is not None:
                found.add(current.dataset)
            pending.extend(current.children.values())
        return found

    def output_conflict(self, dataset_id: str) -> str | None:
        """Why write tokens into ``dataset_id``'s output area must not be minted: the area
        overlaps a dataset or output area of another tenant (``domain/areas.py``); None when
        it is clear or there is none. The trie narrows the candidates to the datasets whose
        prefix or output lies on the output's path or below it."""
        if dataset_id in self._output_conflicts:
            return self._output_conflicts[dataset_id]
        dataset = self._datasets.get(dataset_id)
        reason = None
        if dataset is not None and dataset.output is not None:
            nearby = [self._datasets[i] for i in self._near(dataset.source, dataset.output)]
            found = output_conflicts(dataset, nearby)
            reason = found[0].reason if found else None
        self._output_conflicts[dataset_id] = reason
        return reason

    def _near(self, source: str, path: str) -> set[str]:
        """Ids of the datasets with a prefix or output at ``path``, above it or below it."""
        node = self._roots.get(source)
        found: set[str] = set()
        if node is None:
            return found
        for segment in path[1:].split("/"):
            node = node.children.get(segment)
            if node is None:
                return found
            found.update(node.outputs)
            if node.dataset is not None:
                found.add(node.dataset)
        below = list(node.children.values())
        while below:
            child = below.pop()
            found.update(child.outputs)
            if child.dataset is not None:
                found.add(child.dataset)
            below.extend(child.children.values())
        return found

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
        if dataset.output is not None:
            node = self._node(dataset.source, dataset.output, create=True)
            assert node is not None
            node.outputs.add(dataset.id)
        self._output_conflicts.clear()

    def remove_dataset(self, dataset_id: str) -> None:
        old = self._datasets.pop(dataset_id, None)
        if old is None:
            return
        for prefix in old.prefixes:
            node = self._node(old.source, prefix, create=False)
            if node is not None and node.dataset == dataset_id:
                node.dataset = node.prefix = None
        if old.output is not None:
            node = self._node(old.source, old.output, create=False)
            if node is not None:
                node.outputs.discard(dataset_id)
        self._output_conflicts.clear()
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
        self._output_conflicts = fresh._output_conflicts

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
