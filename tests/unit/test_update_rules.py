"""The verdict on a verified policy update against the held tables (domain/update_rules.py),
without a worker: each refusal the update agent writes to the audit topic, and acceptance."""

from __future__ import annotations

from typing import Any

import pytest

from streamapp.domain.allowed_hosts import AllowedHosts
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.domain.update_rules import UpdateRules, check_update
from streamapp.domain.updates import Update, UpdateRefusedError

SOURCE = "dcache://dcache.desy.example"
RULES = UpdateRules(
    AllowedHosts.parse("openwhisk.desy.example"),
    frozenset({"User:streamapp", "User:admin"}),
    lambda tenant: f"tenant.{tenant}.events",
)


def dataset(name: str, prefix: str, owner: str = "alpha") -> dict[str, Any]:
    return {"id": name, "owner": owner, "source": SOURCE, "prefixes": [prefix]}


def tenant(name: str, **extra: Any) -> dict[str, Any]:
    return {"tenant": name, "subscriptions": [{"dataset": "exp"}], **extra}


def update(kind: str, name: str, spec: dict[str, Any] | None, version: int = 2) -> Update:
    op = "upsert" if spec is not None else "delete"
    return Update(kind, op, name, version, spec, "kid")  # type: ignore[arg-type]


@pytest.fixture
def index() -> PolicyIndex:
    held = PolicyIndex()
    held.put_dataset(parse_dataset(dataset("exp", "/data/exp")))
    held.put_tenant(parse_tenant(tenant("alpha", kafka_principals=["User:alpha"])))
    return held


TRIGGER = {"name": "t", "action": "/ns/act", "credentials": "ow"}


@pytest.mark.parametrize(
    ("candidate", "held", "reason"),
    [
        pytest.param(
            update("dataset", "exp", dataset("exp", "/data/exp"), version=1),
            {"version": 1},
            "stale: version 1 is not newer than the held version 1",
            id="stale",
        ),
        pytest.param(
            update("dataset", "gone", None),
            None,
            "dataset 'gone' does not exist",
            id="delete-of-nothing",
        ),
        pytest.param(
            update("dataset", "other", dataset("other", "/data/exp")),
            None,
            "prefix /data/exp is already owned by dataset exp",
            id="prefix-owned",
        ),
        pytest.param(  # (another tenant's principal: refused by parse_tenant's namespace rule)
            update("tenant", "admin", tenant("admin", kafka_principals=["User:admin"])),
            None,
            "invalid tenant spec: kafka_principals[0]: User:admin is reserved",
            id="reserved-principal",
        ),
        pytest.param(
            update("tenant", "al_pha", tenant("al_pha")),
            None,
            "al_pha",
            id="topic-collision",
        ),
        pytest.param(
            update(
                "tenant",
                "beta",
                tenant("beta", triggers=[{**TRIGGER, "api_host": "https://evil.example"}]),
            ),
            None,
            "invalid tenant spec: triggers[0].api_host: https://evil.example is not among",
            id="host-not-allowed",
        ),
    ],
)
def test_refused(
    index: PolicyIndex, candidate: Update, held: dict[str, Any] | None, reason: str
) -> None:
    with pytest.raises(UpdateRefusedError) as refused:
        check_update(candidate, held, index, ["alpha", "al.pha"], RULES)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    "candidate",
    [
        update("dataset", "other", dataset("other", "/data/other")),
        update("dataset", "exp", dataset("exp", "/data/exp")),  # a newer version of itself
        update("dataset", "exp", None),  # a delete of a held entry
        update(
            "tenant",
            "beta",
            tenant(
                "beta",
                kafka_principals=["User:beta"],
                triggers=[{**TRIGGER, "api_host": "https://openwhisk.desy.example"}],
            ),
        ),
    ],
)
def test_accepted(index: PolicyIndex, candidate: Update) -> None:
    held = {"version": 1} if candidate.name == "exp" else None
    check_update(candidate, held, index, ["alpha"], RULES)
