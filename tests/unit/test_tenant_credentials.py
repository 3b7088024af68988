"""``streamapp tenants credentials``: refused before any broker call unless the principal is the
tenant's own, and a ``--output`` file is claimed before the broker is changed.

The admin client here is an in-memory stand-in recording the calls the command makes (the live
test on the secured broker, tests/integration/test_kafka_tenant_acls.py, uses the real one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from streamapp.clients.kafka_admin import KafkaAdmin
from streamapp.domain.policy import parse_tenant
from streamapp.settings import Settings
from streamapp.tenant_credentials import CredentialError, applied_tenants, run, secret_file

RESERVED = Settings.from_env({}).kafka_reserved_principals
TENANTS = {
    "a": parse_tenant({"tenant": "a", "kafka_principals": ["User:a@alice"]}),
    "b": parse_tenant({"tenant": "b", "kafka_principals": ["User:b"]}),
}


class RecordingAdmin:
    def __init__(self, users: set[str]) -> None:
        self.users = set(users)
        self.calls: list[tuple[str, str]] = []

    async def scram_user_exists(self, user: str) -> bool:
        self.calls.append(("exists", user))
        return user in self.users

    async def upsert_scram_user(self, user: str, password: str) -> None:
        self.calls.append(("upsert", user))
        self.users.add(user)

    async def delete_scram_user(self, user: str) -> None:
        self.calls.append(("delete", user))
        self.users.discard(user)


def admin(users: set[str]) -> tuple[RecordingAdmin, KafkaAdmin]:
    recording = RecordingAdmin(users)
    return recording, cast("KafkaAdmin", recording)


@pytest.mark.parametrize(
    ("action", "user"),
    [("rotate", "operator"), ("delete", "streamapp"), ("create", "controller"), ("rotate", "b")],
)
async def test_platform_and_other_tenants_users_are_never_touched(action: str, user: str) -> None:
    recording, client = admin({"operator", "streamapp", "controller", "b"})
    with pytest.raises(CredentialError):
        await run(client, action, "a", user, tenants=TENANTS, reserved=RESERVED)
    assert recording.calls == []  # refused before the broker was asked anything


async def test_own_principal_is_created_rotated_deleted() -> None:
    recording, client = admin(set())
    issued = await run(client, "create", "a", "a@alice", tenants=TENANTS, reserved=RESERVED)
    assert issued is not None
    assert issued.user == "a@alice"
    assert len(issued.password) >= 40
    rotated = await run(client, "rotate", "a", "a@alice", tenants=TENANTS, reserved=RESERVED)
    assert rotated is not None
    assert rotated.password != issued.password
    assert await run(client, "delete", "a", "a@alice", tenants=TENANTS, reserved=RESERVED) is None
    assert [c[0] for c in recording.calls] == [
        "exists",
        "upsert",
        "exists",
        "upsert",
        "exists",
        "delete",
    ]


async def test_create_refuses_an_existing_credential() -> None:
    recording, client = admin({"a@alice"})
    with pytest.raises(CredentialError, match="use rotate"):
        await run(client, "create", "a", "a@alice", tenants=TENANTS, reserved=RESERVED)
    assert ("upsert", "a@alice") not in recording.calls


def test_output_file_is_claimed_first_and_removed_on_failure(tmp_path: Path) -> None:
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    with pytest.raises(CredentialError, match="exists"), secret_file(existing):
        raise AssertionError("the body must not run when the file exists")
    assert existing.read_text() == "keep me"

    fresh = tmp_path / "fresh"
    modes: list[int] = []

    def fail_after_claiming() -> None:
        with secret_file(fresh):
            modes.append(fresh.stat().st_mode & 0o777)
            raise CredentialError("the broker refused")

    with pytest.raises(CredentialError, match="refused"):
        fail_after_claiming()
    assert modes == [0o600]
    assert not fresh.exists()

    with secret_file(fresh) as file:
        assert file is not None
        file.write("username=a@alice\n")
    assert fresh.read_text() == "username=a@alice\n"
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_a_written_secret_is_kept_whatever_fails_after(tmp_path: Path) -> None:
    """Once the broker holds the new password, the file may hold its only copy."""
    path = tmp_path / "issued"

    def fail_after_writing() -> None:
        with secret_file(path) as file:
            assert file is not None
            file.write("password=only-copy\n")
            raise BrokenPipeError("stderr went away")

    with pytest.raises(BrokenPipeError):
        fail_after_writing()
    assert path.read_text() == "password=only-copy\n"


def test_applied_tenants_skip_deleted_ones_and_refuse_an_unparseable_one() -> None:
    entries: dict[str, Any] = {
        "a": {
            "version": 1,
            "deleted": False,
            "spec": {"tenant": "a", "kafka_principals": ["User:a@alice"]},
        },
        "gone": {"version": 2, "deleted": True, "spec": None},
        "tomb": None,
    }
    applied = applied_tenants(entries)
    assert set(applied.policies) == {"a"}
    assert applied.policies["a"].kafka_principals == ("User:a@alice",)
    assert applied.removed == {"gone"}
    # the workers keep such a tenant's previous policy, which the changelog no longer shows
    odd = {**entries, "odd": {"version": 3, "deleted": False, "spec": {"tenant": "odd", "x": 1}}}
    with pytest.raises(CredentialError, match="odd"):
        applied_tenants(odd)
