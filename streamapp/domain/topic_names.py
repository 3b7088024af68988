"""Tenant topic names that Kafka would confuse.

Kafka's metric names cannot tell ``.`` from ``_``, so it refuses to create a topic whose name
equals an existing one's once every ``.`` is read as ``_`` (CreateTopics error 17,
InvalidTopicException "collides with existing topics"). Tenant names may hold both characters
(``co.ll`` and ``co_ll`` are valid names), so two tenants could share one topic name in Kafka's
eyes: the second tenant's topic could never be created. Such a tenant is refused when its
policy is applied (``agents/policy_updates.py``, ``seed.py``), never found out by the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def collision_key(topic: str) -> str:
    """The name Kafka compares topic names by: ``.`` and ``_`` are one character to it."""
    return topic.replace(".", "_")


def colliding_tenant(
    tenant: str, others: Iterable[str], topic_of: Callable[[str], str] = lambda name: name
) -> str | None:
    """The first of ``others`` (tenants held already) whose topic collides with ``tenant``'s
    (``topic_of`` maps a tenant to its topic name), or None. A tenant does not collide with
    itself."""
    mine = topic_of(tenant)
    key = collision_key(mine)
    for other in others:
        if other == tenant:
            continue
        if collision_key(topic_of(other)) == key:
            return other
    return None


def collision_reason(
    tenant: str, other: str, topic_of: Callable[[str], str] = lambda name: name
) -> str:
    return (
        f"tenant {tenant}'s topic {topic_of(tenant)!r} collides with tenant {other}'s "
        f"{topic_of(other)!r}: Kafka does not tell '.' from '_' in topic names"
    )
