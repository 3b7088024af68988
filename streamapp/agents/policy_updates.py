"""Policy updates: verify signed update messages and write accepted ones to the tables.

Every message, accepted or refused, is appended to the audit topic with its verdict in headers
and its original bytes untouched. Decisions: ``streamapp.domain.updates``.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.admin_keys import admin_keyring
from streamapp.app import app, settings
from streamapp.domain.index import PrefixConflictError
from streamapp.domain.update_rules import UpdateRules, check_update
from streamapp.domain.updates import (
    KeyRing,
    Update,
    UpdateAlreadyAppliedError,
    UpdateRefusedError,
    verify_update,
)
from streamapp.metrics import POLICY_UPDATES
from streamapp.outputs import exit_if_undelivered, finish_even_if_cancelled
from streamapp.tables import TABLES, apply_entry, policy_index
from streamapp.topics import dataset_updates, tenant_updates, updates_audit

log = logging.getLogger(__name__)


def admin_keys() -> KeyRing:
    return admin_keyring(settings.admin_public_keys)


def decide(message: bytes, topic: str) -> Update:
    """The verified update if it may be applied; raises ``UpdateRefusedError`` otherwise."""
    kind = "dataset" if topic == settings.dataset_updates_topic else "tenant"
    update = verify_update(message, admin_keys(), expected_kind=kind)
    check_update(
        update,
        TABLES[update.kind].get(update.name),
        policy_index,
        TABLES["tenant"].keys(),
        UpdateRules(
            settings.openwhisk_allowed_hosts,
            settings.kafka_reserved_principals,
            settings.tenant_topic,
        ),
    )
    return update


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
    except UpdateAlreadyAppliedError as exc:
        verdict = [("streamapp.update.verdict", b"duplicate"), _reason(str(exc))]
        POLICY_UPDATES.labels("duplicate").inc()
        log.info("update %s[%s]@%s: %s", message.topic, message.partition, message.offset, exc)
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
