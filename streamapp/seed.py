"""Declarative seed data (``tables/``): one TOML file per dataset and per tenant.

Loading validates every file and reports every problem with its file and field; planning
compares the files with what the tables hold and yields only real changes (idempotent apply).
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamapp.domain.areas import area_conflicts
from streamapp.domain.datasets import Dataset, parse_dataset
from streamapp.domain.index import PolicyIndex, PrefixConflictError
from streamapp.domain.policy import TenantPolicy, parse_tenant
from streamapp.domain.policy_fields import PolicyError
from streamapp.domain.topic_names import colliding_tenant, collision_reason

Kind = Literal["dataset", "tenant"]
SUBDIRS: Mapping[Kind, str] = {"dataset": "datasets", "tenant": "tenants"}


@dataclass(frozen=True, slots=True)
class SeedEntry:
    kind: Kind
    name: str
    spec: dict[str, Any]
    file: Path


@dataclass(frozen=True, slots=True)
class SeedProblem:
    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class SeedError(Exception):
    def __init__(self, problems: list[SeedProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_seed(directory: Path) -> list[SeedEntry]:
    """Every dataset and tenant file under ``directory``; ``SeedError`` lists all problems."""
    if not directory.is_dir():
        raise SeedError([SeedProblem(directory, "-", "not a directory")])
    if not any((directory / subdir).is_dir() for subdir in SUBDIRS.values()):
        # e.g. tables/datasets given for tables/: an empty seed would prune everything
        raise SeedError(
            [SeedProblem(directory, "-", "has neither a datasets/ nor a tenants/ directory")]
        )
    entries: list[SeedEntry] = []
    problems: list[SeedProblem] = []
    for kind, subdir in SUBDIRS.items():
        for file in sorted((directory / subdir).glob("*.toml")):
            entry = _load_file(kind, file, problems)
            if entry is not None:
                entries.append(entry)
    _check_unique(entries, problems)
    _check_prefixes(entries, problems)
    _check_areas(entries, problems)
    _check_topic_names(entries, problems)
    if problems:
        raise SeedError(problems)
    return entries


def _load_file(kind: Kind, file: Path, problems: list[SeedProblem]) -> SeedEntry | None:
    try:
        spec = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(SeedProblem(file, "-", f"cannot read: {exc}"))
        return None
    except tomllib.TOMLDecodeError as exc:
        problems.append(SeedProblem(file, "-", f"not valid TOML: {exc}"))
        return None
    try:
        name = parse_dataset(spec).id if kind == "dataset" else parse_tenant(spec).tenant
    except PolicyError as exc:
        problems.append(SeedProblem(file, exc.field, exc.message))
        return None
    if file.stem != name:
        problems.append(
            SeedProblem(file, "id" if kind == "dataset" else "tenant", f"file must be {name}.toml")
        )
        return None
    return SeedEntry(kind, name, spec, file)


def _check_unique(entries: list[SeedEntry], problems: list[SeedProblem]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for entry in entries:
        key = (entry.kind, entry.name)
        if key in seen:
            problems.append(SeedProblem(entry.file, "-", f"duplicate of {seen[key]}"))
        seen[key] = entry.file


def _check_prefixes(entries: list[SeedEntry], problems: list[SeedProblem]) -> None:
    index = PolicyIndex()
    for entry in entries:
        if entry.kind == "dataset":
            try:
                index.put_dataset(parse_dataset(entry.spec))
            except PrefixConflictError as exc:
                problems.append(SeedProblem(entry.file, "prefixes", str(exc)))


def _check_areas(entries: list[SeedEntry], problems: list[SeedProblem]) -> None:
    """No output area may overlap another tenant's dataset or output (``domain/areas.py``);
    each overlapping pair is reported once, on the later file."""
    earlier: list[Dataset] = []
    for entry in entries:
        if entry.kind != "dataset":
            continue
        dataset = parse_dataset(entry.spec)
        problems.extend(
            SeedProblem(entry.file, conflict.field, conflict.reason)
            for conflict in area_conflicts(dataset, earlier)
        )
        earlier.append(dataset)


def _check_topic_names(entries: list[SeedEntry], problems: list[SeedProblem]) -> None:
    """No two tenants whose topics Kafka cannot tell apart (``domain/topic_names.py``): each
    colliding pair is reported once, on the later file. A tenant's topic is its name inside a
    fixed pattern, so comparing the names is comparing the topics."""
    earlier: list[str] = []
    for entry in entries:
        if entry.kind != "tenant":
            continue
        other = colliding_tenant(entry.name, earlier)
        if other is not None:
            problems.append(SeedProblem(entry.file, "tenant", collision_reason(entry.name, other)))
        earlier.append(entry.name)


def build_index(entries: Iterable[SeedEntry]) -> PolicyIndex:
    datasets: list[Dataset] = []
    tenants: list[TenantPolicy] = []
    for entry in entries:
        if entry.kind == "dataset":
            datasets.append(parse_dataset(entry.spec))
        else:
            tenants.append(parse_tenant(entry.spec))
    index = PolicyIndex()
    index.replace_all(datasets, tenants)
    return index


# --- planning --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    name: str
    op: Literal["upsert", "delete"]
    why: Literal["new", "changed", "absent", "deleted-in-table"]
    spec: dict[str, Any] | None
    version: int
    file: Path | None = None

    def describe(self) -> str:
        sign = {"new": "+", "changed": "~", "absent": "-", "deleted-in-table": "+"}[self.why]
        return f"{sign} {self.kind} {self.name} ({self.why}, v{self.version})"


@dataclass(frozen=True, slots=True)
class Plan:
    changes: list[Change]
    unchanged: list[tuple[Kind, str]]
    absent: list[tuple[Kind, str]]  # in the tables, not in the files (deleted only with prune)


def canonical(kind: Kind, spec: Mapping[str, Any]) -> Any:
    """The comparable form of a spec: parsed, so formatting and defaults do not count."""
    if kind == "dataset":
        return parse_dataset(spec).to_json()
    return parse_tenant(spec).canonical()


def next_version(held: Mapping[str, Any] | None, now_ms: int | None = None) -> int:
    """Newer than what is held, and time-based so two quick applies never reuse a version."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    return max(int(held.get("version", 0)) + 1 if held else 1, stamp)


def plan(
    entries: Iterable[SeedEntry],
    current: Mapping[tuple[str, str], Mapping[str, Any]],
    *,
    prune: bool,
    now_ms: int | None = None,
) -> Plan:
    changes: list[Change] = []
    unchanged: list[tuple[Kind, str]] = []
    wanted: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry.kind, entry.name)
        wanted.add(key)
        held = current.get(key)
        live = held is not None and not held.get("deleted") and held.get("spec") is not None
        if live and held is not None:
            try:
                same = canonical(entry.kind, held["spec"]) == canonical(entry.kind, entry.spec)
            except PolicyError:
                same = False
            if same:
                unchanged.append((entry.kind, entry.name))
                continue
        why: Literal["new", "changed", "deleted-in-table"] = (
            "changed" if live else ("deleted-in-table" if held is not None else "new")
        )
        changes.append(
            Change(
                entry.kind,
                entry.name,
                "upsert",
                why,
                entry.spec,
                next_version(held, now_ms),
                entry.file,
            )
        )
    absent: list[tuple[Kind, str]] = []
    for (kind, name), held in sorted(current.items()):
        if (kind, name) in wanted or held.get("deleted"):
            continue
        absent.append((kind, name))  # type: ignore[arg-type]
        if prune:
            changes.append(
                Change(kind, name, "delete", "absent", None, next_version(held, now_ms))  # type: ignore[arg-type]
            )
    return Plan(changes, unchanged, absent)
