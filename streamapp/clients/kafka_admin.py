"""The Kafka admin calls aiokafka's admin client lacks: ACLs and SCRAM credentials.

confluent-kafka's ``AdminClient`` (librdkafka) implements DescribeAcls, CreateAcls, DeleteAcls
and AlterUserScramCredentials (KIP-554); aiokafka 0.14's ``AIOKafkaAdminClient`` has neither
ACL nor SCRAM methods. Calls are blocking futures of librdkafka's own thread: awaited here with
``asyncio.wrap_future``. Errors become ``KafkaAdminError`` with the broker's error name, never a
password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from streamapp.domain.kafka_acls import AclEntry

LIBRDKAFKA_LOG: Final = logging.getLogger("streamapp.librdkafka")
LIBRDKAFKA_LOG.setLevel(logging.ERROR)
SCRAM_ITERATIONS: Final = 8192  # RFC 7677 asks for at least 4096
REQUEST_TIMEOUT_S: Final = 10.0


class KafkaAdminError(RuntimeError):
    """An admin request failed; ``code`` is Kafka's error name (CLUSTER_AUTHORIZATION_FAILED)."""

    def __init__(self, what: str, code: str, detail: str = "") -> None:
        super().__init__(f"{what}: {code}{f' ({detail})' if detail else ''}")
        self.code = code


def _error(what: str, exc: BaseException) -> KafkaAdminError:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        return KafkaAdminError(what, err.name(), err.str())
    return KafkaAdminError(what, type(exc).__name__, str(exc)[:200])


def to_binding(acl: AclEntry) -> AclBinding:
    return AclBinding(
        ResourceType[acl.resource_type],
        acl.resource_name,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        acl.host,
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def from_binding(binding: AclBinding) -> AclEntry:
    return AclEntry(
        principal=binding.principal,
        resource_type=_enum_name(binding.restype),
        resource_name=binding.name,
        pattern_type=_enum_name(binding.resource_pattern_type),
        operation=_enum_name(binding.operation),
        permission=_enum_name(binding.permission_type),
        host=binding.host,
    )


def _exact_filter(acl: AclEntry) -> AclBindingFilter:
    return AclBindingFilter(
        ResourceType[acl.resource_type],
        acl.resource_name,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        acl.host,
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def new_scram_password() -> str:
    """A fresh tenant secret: 32 random bytes, URL-safe text (no SCRAM-special characters)."""
    return secrets.token_urlsafe(32)


class KafkaAdmin:
    """One librdkafka admin client (its own thread); ``close`` is a no-op kept for symmetry."""

    def __init__(self, config: Mapping[str, str]) -> None:
        # librdkafka's own log lines through Python logging; its warnings (e.g. "unknown
        # resource type" on every describe while such an ACL exists) would repeat at each
        # reconciliation, and the callers report what they see themselves
        options: dict[str, Any] = {**config, "logger": LIBRDKAFKA_LOG}
        self._client = AdminClient(options)

    async def _await(self, what: str, future: concurrent.futures.Future[Any]) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), REQUEST_TIMEOUT_S + 5)
        except TimeoutError:
            raise KafkaAdminError(what, "TIMED_OUT") from None
        except Exception as exc:  # noqa: BLE001 - librdkafka raises KafkaException and others
            raise _error(what, exc) from None

    async def describe_acls(self) -> frozenset[AclEntry]:
        """Every ACL of the cluster."""
        anything: Any = None  # a filter field left open
        match_all = AclBindingFilter(
            ResourceType.ANY,
            anything,
            ResourcePatternType.ANY,
            anything,
            anything,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        future = self._client.describe_acls(match_all, request_timeout=REQUEST_TIMEOUT_S)
        bindings = await self._await("describe ACLs", future)
        return frozenset(from_binding(b) for b in bindings)

    async def create_acls(self, acls: Iterable[AclEntry]) -> None:
        try:
            bindings = [to_binding(acl) for acl in sorted(acls)]
        except (KeyError, ValueError, TypeError) as exc:
            raise KafkaAdminError("create ACLs", "UNSUPPORTED_ACL", str(exc)[:200]) from None
        if not bindings:
            return
        futures = self._client.create_acls(bindings, request_timeout=REQUEST_TIMEOUT_S)
        for future in futures.values():
            await self._await("create ACLs", future)

    async def delete_acls(self, acls: Iterable[AclEntry]) -> int:
        """Delete exactly these bindings (each filter matches one); the number deleted."""
        try:
            filters = [_exact_filter(acl) for acl in sorted(acls)]
        except (KeyError, ValueError, TypeError) as exc:  # a type this client cannot name
            raise KafkaAdminError("delete ACLs", "UNSUPPORTED_ACL", str(exc)[:200]) from None
        if not filters:
            return 0
        futures = self._client.delete_acls(filters, request_timeout=REQUEST_TIMEOUT_S)
        deleted = 0
        for future in futures.values():
            deleted += len(await self._await("delete ACLs", future))
        return deleted

    async def upsert_scram_user(self, user: str, password: str) -> None:
        upsertion = UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            password.encode(),
        )
        futures = self._client.alter_user_scram_credentials(
            [upsertion], request_timeout=REQUEST_TIMEOUT_S
        )
        for future in futures.values():
            await self._await(f"set the SCRAM credential of {user!r}", future)

    async def delete_scram_user(self, user: str) -> None:
        deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
        futures = self._client.alter_user_scram_credentials(
            [deletion], request_timeout=REQUEST_TIMEOUT_S
        )
        for future in futures.values():
            await self._await(f"delete the SCRAM credential of {user!r}", future)

    async def scram_user_exists(self, user: str) -> bool:
        futures: dict[str, concurrent.futures.Future[Any]] = cast(
            "dict[str, concurrent.futures.Future[Any]]",
            self._client.describe_user_scram_credentials([user], request_timeout=REQUEST_TIMEOUT_S),
        )
        try:
            for future in futures.values():
                await self._await(f"describe the SCRAM credential of {user!r}", future)
        except KafkaAdminError as exc:
            if exc.code == "RESOURCE_NOT_FOUND":
                return False
            raise
        return True

    def close(self) -> None:
        """librdkafka closes the client when it is garbage collected."""
