"""The field rules dataset and tenant policies share: names, lists of names, integers, and no
unknown fields. Each reader names the field it refuses (``PolicyError.field``), so a seed file
or a signed update that is wrong says where.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class PolicyError(ValueError):
    """A dataset or tenant policy that cannot be used; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def read_name(value: Any, where: str) -> str:
    """A dataset or tenant name (``NAME_PATTERN``)."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise PolicyError(
            where, f"{value!r} is not a name (lower-case letters, digits, '.', '_', '-'; ≤ 63)"
        )
    return value


def read_names(value: Any, where: str) -> tuple[str, ...]:
    """A list of names, first occurrences kept in order; None is the empty list."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError(where, "must be a list of names")
    names = tuple(read_name(item, f"{where}[{i}]") for i, item in enumerate(value))
    return tuple(dict.fromkeys(names))


def read_int(value: Any, where: str, *, minimum: int = 0) -> int:
    """An integer of at least ``minimum`` (a bool is not one, though Python says it is)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(where, f"{value!r} is not an integer")
    if value < minimum:
        raise PolicyError(where, f"{value} is below {minimum}")
    return value


def refuse_unknown_fields(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """A misspelt field is an error, never silently a default."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise PolicyError(f"{prefix}{unknown[0]}", "unknown field")
