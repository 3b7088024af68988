"""streamapp/private_access.py reads private members of faust and aiokafka: each must still
exist on the installed (pinned) versions, or this fails before a view silently breaks."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from streamapp.private_access import MEMBERS


def owner_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    found: type = getattr(importlib.import_module(module), name)
    return found


def defines(cls: type, member: str) -> bool:
    """A class attribute, or an instance attribute assigned in the class's own code."""
    if hasattr(cls, member):
        return True
    assigned = re.compile(rf"self\.{re.escape(member)}\s*(:[^=\n]+)?=")
    return any(
        assigned.search(inspect.getsource(klass))
        for klass in cls.__mro__
        if klass.__module__.split(".")[0] in ("faust", "aiokafka", "mode")
    )


@pytest.mark.parametrize(("owner", "member"), MEMBERS, ids=[f"{o}.{m}" for o, m in MEMBERS])
def test_private_member_still_exists(owner: str, member: str) -> None:
    assert defines(owner_class(owner), member), f"{owner}.{member} is gone: re-check the view"


def test_a_missing_member_is_noticed() -> None:
    assert not defines(owner_class("aiokafka.AIOKafkaConsumer"), "_no_such_member")
