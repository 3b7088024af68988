"""``streamapp tenants credentials create|rotate|delete TENANT``: a tenant's SCRAM-SHA-512
credential on the broker, through the admin API (AlterUserScramCredentials, KIP-554).

The secret is generated here, sent to the broker (which keeps only the salted SCRAM keys) and
handed to the operator once: printed, or written to a new file with mode 0600. It is never
stored on a topic or logged. The tenant reads its stream once its policy names the principal
(``kafka_principals = ["User:<user>"]``): the ACL agent grants what the policy allows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamapp.clients.kafka_admin import KafkaAdmin, KafkaAdminError, new_scram_password
from streamapp.domain.policy import KAFKA_PRINCIPAL_PATTERN, NAME_PATTERN

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


def write_secret_file(path: Path, text: str) -> None:
    """A new file, 0600 from its creation on; an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CredentialError(f"{path} exists: choose a new file") from None
    except OSError as exc:
        raise CredentialError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


async def run(admin: KafkaAdmin, action: str, tenant: str, user: str) -> Issued | None:
    """Create, rotate or delete ``user``'s credential; the new credential, or None (delete)."""
    check_names(tenant, user)
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
