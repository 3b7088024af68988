"""Where a dataset's write tokens may reach. Pure, no I/O.

A write token is scoped to its dataset's ``output`` area. That area must not overlap, on the
same source, any area of a dataset owned by another tenant: neither its prefixes (the data the
other tenant owns, wherever the longest prefix would put an event) nor its output (where the
other tenant's results go). Overlap is on path-component boundaries and in either direction:
inside, containing or equal (``/data/exp`` overlaps ``/data/exp/x`` and ``/data``, not
``/data/exp-2``). The rule is symmetric and pairwise, so the order in which datasets arrive does
not matter: a prefix registered later over another tenant's existing output is refused as much
as an output into an existing prefix. Datasets of the same owner may overlap freely.

Checked when a dataset update is applied (``area_conflicts`` against the table's datasets) and
again by the workers before a write token is minted (``PolicyIndex.output_conflict``), since a
table may hold entries written before the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from streamapp.domain.datasets import Dataset


def within(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it, on component boundaries (both normalized)."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """Two normalized absolute paths cover some common path: one is inside (or is) the other."""
    return within(a, b) or within(b, a)


@dataclass(frozen=True, slots=True)
class AreaConflict:
    field: Literal["output", "prefixes"]  # the field of the checked dataset at fault
    other: str  # the other dataset's id
    reason: str


def area_conflicts(dataset: Dataset, others: Iterable[Dataset]) -> list[AreaConflict]:
    """Every overlap between ``dataset``'s areas and another tenant's that would let a write
    token reach into the other tenant's data or results: ``dataset``'s output against the
    other's prefixes and output, and ``dataset``'s prefixes against the other's output. Entries
    of the same id (the version being replaced) and of the same owner are not conflicts."""
    found: list[AreaConflict] = []
    for other in others:
        if other.id == dataset.id or other.owner == dataset.owner:
            continue
        if other.source != dataset.source:
            continue
        whose = f"dataset {other.id} (owner {other.owner})"
        if dataset.output is not None:
            found.extend(
                AreaConflict(
                    "output",
                    other.id,
                    f"output {dataset.output} overlaps prefix {prefix} of {whose}",
                )
                for prefix in other.prefixes
                if overlaps(dataset.output, prefix)
            )
            if other.output is not None and overlaps(dataset.output, other.output):
                found.append(
                    AreaConflict(
                        "output",
                        other.id,
                        f"output {dataset.output} overlaps the output {other.output} of {whose}",
                    )
                )
        if other.output is not None:
            found.extend(
                AreaConflict(
                    "prefixes",
                    other.id,
                    f"prefix {prefix} overlaps the output {other.output} of {whose}",
                )
                for prefix in dataset.prefixes
                if overlaps(prefix, other.output)
            )
    return found


def output_conflicts(dataset: Dataset, others: Iterable[Dataset]) -> list[AreaConflict]:
    """The conflicts that make ``dataset``'s own write tokens unsafe: its output overlapping
    another tenant's prefixes or output."""
    return [c for c in area_conflicts(dataset, others) if c.field == "output"]
