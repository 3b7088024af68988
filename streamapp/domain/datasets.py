"""Dataset ownership: which storage paths a dataset covers, who owns it, whom it is shared with.

A dataset arrives as a JSON-like mapping (seed file, signed update, table value) and is
validated once here into a frozen ``Dataset``; a ``PolicyError`` names the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamapp.domain.paths import (
    PathError,
    check_object_path,
    normalize_absolute_path,
)
from streamapp.domain.policy_fields import (
    PolicyError,
    read_name,
    read_names,
    refuse_unknown_fields,
)


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str
    owner: str
    source: str
    prefixes: tuple[str, ...]
    output: str | None = None
    shared_with: tuple[str, ...] = ()
    write_shared_with: tuple[str, ...] = ()  # of shared_with: may also write into output
    # ``entitled`` computed once: every event of the dataset asks for it
    _entitled: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _entitled_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entitled = tuple(dict.fromkeys((self.owner, *self.shared_with)))
        object.__setattr__(self, "_entitled", entitled)
        object.__setattr__(self, "_entitled_set", frozenset(entitled))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "source": self.source,
            "prefixes": list(self.prefixes),
            "output": self.output,
            "shared_with": list(self.shared_with),
            "write_shared_with": list(self.write_shared_with),
        }

    @property
    def entitled(self) -> tuple[str, ...]:
        """The owner first, then the tenants it shares the dataset with."""
        return self._entitled

    @property
    def entitled_set(self) -> frozenset[str]:
        """``entitled`` as a set, for membership."""
        return self._entitled_set

    def may_write(self, tenant: str) -> bool:
        """Write tokens go to the owner, and to a shared tenant only by a write share."""
        return tenant == self.owner or tenant in self.write_shared_with

    def seen_by(self, tenant: str) -> dict[str, Any]:
        """The dataset as ``tenant`` may see it: the owner sees whom it shares with; a tenant
        it is shared with sees its own access, not the other tenants' names."""
        if tenant == self.owner:
            return self.to_json()
        view = self.to_json()
        del view["shared_with"], view["write_shared_with"]
        view["access"] = "read-write" if self.may_write(tenant) else "read"
        return view


_DATASET_FIELDS = {
    "id",
    "owner",
    "source",
    "prefixes",
    "output",
    "shared_with",
    "write_shared_with",
}


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(where, "must be an absolute path string")
    try:
        normal = normalize_absolute_path(value)
        if normal == "/":
            raise PolicyError(where, "the root '/' cannot be a dataset prefix or output area")
        return check_object_path(normal)  # the bounds every event path is held to
    except PathError as exc:
        raise PolicyError(where, str(exc)) from None


def parse_dataset(obj: Any) -> Dataset:
    if not isinstance(obj, Mapping):
        raise PolicyError("dataset", "must be an object")
    refuse_unknown_fields(obj, _DATASET_FIELDS, "")
    source = obj.get("source")
    if not isinstance(source, str) or not source or any(c.isspace() for c in source):
        raise PolicyError("source", "must be the storage's CloudEvents source URI")
    prefixes = obj.get("prefixes")
    if not isinstance(prefixes, list) or not prefixes:
        raise PolicyError("prefixes", "must be a non-empty list of absolute paths")
    normal = tuple(
        dict.fromkeys(_path(prefix, f"prefixes[{i}]") for i, prefix in enumerate(prefixes))
    )
    output = obj.get("output")
    owner = read_name(obj.get("owner"), "owner")
    shared = tuple(t for t in read_names(obj.get("shared_with"), "shared_with") if t != owner)
    write_shared = read_names(obj.get("write_shared_with"), "write_shared_with")
    for i, tenant in enumerate(write_shared):
        if tenant != owner and tenant not in shared:
            raise PolicyError(f"write_shared_with[{i}]", f"{tenant!r} is not in shared_with")
    write_shared = tuple(t for t in write_shared if t != owner)
    if write_shared and output is None:
        raise PolicyError("write_shared_with", "needs an output area to write into")
    return Dataset(
        id=read_name(obj.get("id"), "id"),
        owner=owner,
        source=source,
        prefixes=normal,
        output=None if output is None else _path(output, "output"),
        shared_with=shared,
        write_shared_with=write_shared,
    )
