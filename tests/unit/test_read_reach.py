"""A read token's ``path:`` caveat covers the whole subtree below the path, and in S3 a key
can be the prefix of other keys: an event whose path lies above another tenant's dataset or
output area gets no read token (found by an adversarial review: alpha's token for the object
``exp/b`` opened beta's nested dataset ``exp/b/private``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.domain import token_minting, tokens
from streamapp.domain.authorize import authorize
from streamapp.domain.datasets import parse_dataset
from streamapp.domain.events import CanonicalEvent
from streamapp.domain.index import PolicyIndex
from streamapp.domain.policy import parse_tenant
from streamapp.domain.sink_rules import outgrown
from tests.factories import created_event

SOURCE = "s3://unit"
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
KEY = b"read-reach-root-key"


def event(subject: str) -> CanonicalEvent:
    return created_event(SOURCE, subject, "s3", "2026-11-28T12:00:00Z")


def index(shared_with_alpha: bool = False) -> PolicyIndex:
    built = PolicyIndex()
    built.put_dataset(
        parse_dataset(
            {"id": "alpha-exp", "owner": "alpha", "source": SOURCE, "prefixes": ["/bucket/exp"]}
        )
    )
    built.put_dataset(
        parse_dataset(
            {
                "id": "beta-private",
                "owner": "beta",
                "source": SOURCE,
                "prefixes": ["/bucket/exp/b/private"],
                "shared_with": ["alpha"] if shared_with_alpha else [],
            }
        )
    )
    for tenant, dataset in (("alpha", "alpha-exp"), ("beta", "beta-private")):
        built.put_tenant(parse_tenant({"tenant": tenant, "subscriptions": [{"dataset": dataset}]}))
    return built


def issue(policy_index: PolicyIndex, subject: str, tmp_path: Path) -> dict[str, object]:
    (tmp_path / "macaroon-root.key").write_bytes(KEY)
    issuer = TokenIssuer(SecretFiles(tmp_path), "id", "loc", "", 600)
    (delivery,) = authorize(event(subject), policy_index).deliveries
    tokens_ = issuer.issue(delivery, event(subject), NOW)
    return {"read": tokens_.read, "problems": tokens_.problems, "tenant": delivery.tenant}


def test_no_read_token_for_a_path_above_another_tenants_dataset(tmp_path: Path) -> None:
    found = issue(index(), "/bucket/exp/b", tmp_path)
    assert found["tenant"] == "alpha"
    assert found["read"] is None
    assert any("another tenant's data" in p for p in found["problems"])  # type: ignore[attr-defined]


def test_a_sibling_path_still_gets_its_token(tmp_path: Path) -> None:
    found = issue(index(), "/bucket/exp/c", tmp_path)
    read = found["read"]
    assert isinstance(read, token_minting.MintedToken)
    at = NOW.replace(minute=1)
    assert tokens.verify(
        read.token, key=KEY, path="/bucket/exp/c", activity="DOWNLOAD", at=at
    ).valid


def test_a_tenant_entitled_to_the_dataset_below_keeps_its_token(tmp_path: Path) -> None:
    found = issue(index(shared_with_alpha=True), "/bucket/exp/b", tmp_path)
    assert isinstance(found["read"], token_minting.MintedToken)


def test_the_path_of_another_tenants_output_area_is_covered_too(tmp_path: Path) -> None:
    built = index()
    built.put_dataset(
        parse_dataset(
            {
                "id": "gamma",
                "owner": "gamma",
                "source": SOURCE,
                "prefixes": ["/bucket/gamma"],
                "output": "/bucket/exp/out/gamma",
            }
        )
    )
    assert issue(built, "/bucket/exp/out", tmp_path)["read"] is None


def test_the_sink_mints_again_when_the_event_carries_a_token_the_grant_withholds_now() -> None:
    """An event authorized while a write share stood keeps its write token on the topic; the
    sink must not forward it once the share is revoked (it re-authorizes at call time)."""
    built = index()
    (delivery,) = authorize(event("/bucket/exp/c"), built).deliveries
    assert not delivery.write
    assert outgrown({"readtoken": "r", "writetoken": "w"}, delivery)
    assert not outgrown({"readtoken": "r"}, delivery)
    (above,) = authorize(event("/bucket/exp/b"), built).deliveries
    assert outgrown({"readtoken": "r"}, above)
