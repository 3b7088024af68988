"""``streamapp tenants credentials create|rotate|delete TENANT``: a tenant's SCRAM-SHA-512
credential on the broker, through the admin API (AlterUserScramCredentials, KIP-554).

The secret is generated here, sent to the broker (which keeps only the salted SCRAM keys) and
handed to the operator once: printed, or written to a new file with mode 0600 (created, with
O_EXCL, before the broker is changed). It is never stored on a topic or logged.

Only a tenant's own principal can be given a credential: the tenant's applied policy must name
it (``kafka_principals``), no other tenant's may, and it is none of the platform's principals
(``domain/kafka_acls.credential_refusal``). So the command can never replace the password of the
workers, the operator or the broker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streamapp.clients.kafka_admin import KafkaAdmin, KafkaAdminError, new_scram_password
from streamapp.domain.kafka_acls import credential_refusal
from streamapp.domain.policy import KAFKA_PRINCIPAL_PATTERN, TenantPolicy, parse_tenant
from streamapp.domain.policy_fields import NAME_PATTERN, PolicyError

ACTIONS: Final = ("create", "rotate", "delete")


class CredentialError(RuntimeError):
    """The command cannot do what was asked (the message never holds a secret)."""


@dataclass(frozen=True, slots=True)
class Issued:
    user: str
    password: str

    def render(self) -> str:
        """What the tenant needs, in the form examples/tenant_consumer.py reads."""
        return (
            f"# SCRAM-SHA-512 credential of Kafka principal User:{self.user}\n"
            f"username={self.user}\npassword={self.password}\n"
        )


def check_names(tenant: str, user: str) -> None:
    if not NAME_PATTERN.fullmatch(tenant):
        raise CredentialError(f"{tenant!r} is not a tenant name")
    if not KAFKA_PRINCIPAL_PATTERN.fullmatch(f"User:{user}"):
        raise CredentialError(f"{user!r} is not a usable Kafka user name")


class SecretFile:
    """A new file, 0600 from its creation on (an existing file is never overwritten), created
    before anything changes on the broker. ``write`` makes the secret durable at once; from
    then on the file is kept whatever happens, since it may hold the only copy of a password
    the broker already has."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd, self.written = path, fd, False

    def write(self, text: str) -> None:
        os.write(self._fd, text.encode())
        os.fsync(self._fd)
        self.written = True


@contextlib.contextmanager
def secret_file(path: Path | None) -> Iterator[SecretFile | None]:
    """The ``--output`` file (None: print instead); removed again if the command fails before
    writing to it."""
    if path is None:
        yield None
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CredentialError(f"{path} exists: choose a new file") from None
    except OSError as exc:
        raise CredentialError(f"cannot create {path}: {exc.strerror}") from None
    file = SecretFile(path, fd)
    try:
        yield file
    except BaseException:
        if not file.written:
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class AppliedTenants:
    """The tenants table as the workers applied it: live policies, and tenants deleted."""

    policies: dict[str, TenantPolicy]
    removed: frozenset[str]


def applied_tenants(entries: Mapping[str, Any]) -> AppliedTenants:
    """The tenant policies the workers applied (tenants changelog entries). An entry that does
    not parse any more makes the command refuse to act (fail closed): the workers keep such a
    tenant's previous policy, which the changelog no longer shows."""
    tenants: dict[str, TenantPolicy] = {}
    removed: set[str] = set()
    for name, entry in entries.items():
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise CredentialError(f"tenant {name!r}: unreadable table entry")
        if entry.get("deleted") or entry.get("spec") is None:
            removed.add(name)
            continue
        try:
            tenants[name] = parse_tenant(entry["spec"])
        except PolicyError as exc:
            raise CredentialError(
                f"tenant {name!r}: its applied policy no longer parses ({exc}); fix it first"
            ) from None
    return AppliedTenants(tenants, frozenset(removed))


async def run(
    admin: KafkaAdmin,
    action: str,
    tenant: str,
    user: str,
    *,
    tenants: Mapping[str, TenantPolicy],
    reserved: frozenset[str],
    removed: frozenset[str] = frozenset(),
) -> Issued | None:
    """Create, rotate or delete ``user``'s credential; the new credential, or None (delete).
    Refused before any broker call unless ``User:<user>`` is ``tenant``'s own principal."""
    check_names(tenant, user)
    refusal = credential_refusal(action, tenant, f"User:{user}", tenants, reserved, removed=removed)
    if refusal is not None:
        raise CredentialError(refusal)
    try:
        exists = await admin.scram_user_exists(user)
        if action == "create" and exists:
            raise CredentialError(f"User:{user} already has a credential: use rotate")
        if action in ("rotate", "delete") and not exists:
            raise CredentialError(f"User:{user} has no credential: use create")
        if action == "delete":
            await admin.delete_scram_user(user)
            return None
        issued = Issued(user, new_scram_password())
        await admin.upsert_scram_user(user, issued.password)
    except KafkaAdminError as exc:
        raise CredentialError(str(exc)) from None
    return issued
