"""Policy updates: verify signed update messages and write accepted ones to the tables.

Every message, accepted or refused, is appended to the audit topic with its verdict in headers
and its original bytes untouched. Decisions: ``streamapp.domain.updates``.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.admin_keys import admin_keyring
from streamapp.agents.outputs import exit_if_undelivered, finish_even_if_cancelled
from streamapp.app import app, settings
from streamapp.domain.index import PrefixConflictError
from streamapp.domain.policy import parse_dataset, parse_tenant
from streamapp.domain.topic_names import colliding_tenant, collision_reason
from streamapp.domain.triggers import disallowed_hosts
from streamapp.domain.updates import (
    KeyRing,
    Update,
    UpdateRefusedError,
    check_dataset_areas,
    check_newer,
    verify_update,
)
from streamapp.metrics import POLICY_UPDATES
from streamapp.tables import TABLES, apply_entry, policy_index
from streamapp.topics import dataset_updates, tenant_updates, updates_audit

log = logging.getLogger(__name__)


def admin_keys() -> KeyRing:
    return admin_keyring(settings.admin_public_keys)


def decide(message: bytes, topic: str) -> Update:
    kind = "dataset" if topic == settings.dataset_updates_topic else "tenant"
    update = verify_update(message, admin_keys(), expected_kind=kind)
    check_newer(update, TABLES[update.kind].get(update.name))
    if update.kind == "dataset" and update.op == "upsert":
        assert update.spec is not None
        dataset = parse_dataset(update.spec)
        conflicts = policy_index.conflicts(dataset)
        if conflicts:
            prefix, other = conflicts[0]
            raise UpdateRefusedError(f"prefix {prefix} is already owned by dataset {other}")
        check_dataset_areas(dataset, policy_index.datasets.values())
    if update.kind == "tenant" and update.op == "upsert":
        assert update.spec is not None
        # the workers' allow-list (checked again before every call); credentials need no check
        # here: a policy can only name its own tenant's (plain names, resolved per tenant)
        allowed = settings.openwhisk_allowed_hosts
        policy = parse_tenant(update.spec)
        # a Kafka principal reads one tenant's stream: never the workers', never another's
        for index, principal in enumerate(policy.kafka_principals):
            owner = principal_owner(principal, policy.tenant)
            if owner is not None:
                raise UpdateRefusedError(
                    f"invalid tenant spec: kafka_principals[{index}]: {principal} {owner}"
                )
        # two tenants whose topics Kafka cannot tell apart ('.' is '_' to it): the second
        # one's topic could never be created (tombstoned tenants' topics remain too)
        collision = colliding_tenant(
            policy.tenant, list(TABLES["tenant"].keys()), settings.tenant_topic
        )
        if collision is not None:
            raise UpdateRefusedError(
                collision_reason(policy.tenant, collision, settings.tenant_topic)
            )
        for index, host in disallowed_hosts(policy.triggers, allowed):
            raise UpdateRefusedError(
                f"invalid tenant spec: triggers[{index}].api_host: {host} is not among the "
                f"allowed OpenWhisk hosts ({allowed})"
            )
    return update


def principal_owner(principal: str, tenant: str) -> str | None:
    """Why ``tenant`` may not claim ``principal`` (reserved, or another tenant's), or None."""
    if principal in settings.kafka_reserved_principals:
        return "is reserved for the workers or the operator"
    for other in policy_index.tenants.values():
        if other.tenant != tenant and principal in other.kafka_principals:
            return f"is already tenant {other.tenant}'s"
    return None


@app.agent(dataset_updates, concurrency=1)
async def apply_dataset_updates(stream: Any) -> None:
    await _apply_updates(stream)


@app.agent(tenant_updates, concurrency=1)
async def apply_tenant_updates(stream: Any) -> None:
    await _apply_updates(stream)


async def _apply_updates(stream: Any) -> None:
    async for event in stream.events():
        await finish_even_if_cancelled(_apply_update(event.message))


async def _apply_update(message: Any) -> None:
    """Verify one update, write it to its table if accepted, and audit the verdict."""
    raw = message.value if isinstance(message.value, bytes) else b""
    try:
        update = decide(raw, message.topic)
    except Exception as exc:  # one update must never stop the agent: it is refused
        if isinstance(exc, UpdateRefusedError | PrefixConflictError):
            reason = str(exc)
        else:
            log.exception("update %s[%s]@%s", message.topic, message.partition, message.offset)
            reason = f"internal error: {type(exc).__name__}"
        verdict = [("streamapp.update.verdict", b"refused"), _reason(reason)]
        POLICY_UPDATES.labels("refused").inc()
        log.warning(
            "update refused (%s[%s]@%s): %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
    else:
        entry = update.entry()
        TABLES[update.kind][update.name] = entry
        apply_entry(update.kind, update.name, entry)
        verdict = [
            ("streamapp.update.verdict", b"accepted"),
            ("streamapp.update.kind", update.kind.encode()),
            ("streamapp.update.name", update.name.encode()),
            ("streamapp.update.version", str(update.version).encode()),
            ("streamapp.update.op", update.op.encode()),
        ]
        POLICY_UPDATES.labels("accepted").inc()
        log.info(
            "update accepted: %s %s %s v%d", update.op, update.kind, update.name, update.version
        )
    origin = [
        ("streamapp.update.topic", str(message.topic).encode()),
        ("streamapp.update.partition", str(message.partition).encode()),
        ("streamapp.update.offset", str(message.offset).encode()),
    ]
    future = await updates_audit.send(key=message.key, value=raw, headers=verdict + origin)
    # durable before the update's offset is committed (faust flushes the producer first)
    exit_if_undelivered("policy-updates", future)


def _reason(text: str) -> tuple[str, bytes]:
    return ("streamapp.update.reason", text.encode("utf-8", "backslashreplace"))
