"""The ACL agent: keeps the broker's ACLs equal to what the tenant policies allow.

Runs in every worker (``STREAMAPP_KAFKA_ACLS=true``) but acts on one at a time: the leader of
faust's own leader election (``app.is_leader()``: the member of the app's consumer group that
the group coordinator assigned the single partition of ``<app_id>-__assignor-__leader``). It
reconciles when the policy index changes (a signed update applied here or seen on a changelog)
and every ``STREAMAPP_KAFKA_ACL_INTERVAL`` seconds (drift). Decisions: ``domain/kafka_acls.py``;
this service only moves data between the table and the broker's admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust

from streamapp.app import app, settings
from streamapp.clients.kafka_admin import KafkaAdmin, KafkaAdminError
from streamapp.domain.kafka_acls import AclEntry, AclScope, desired_acls, plan, principal_conflicts
from streamapp.kafka_auth import KafkaAuthError, confluent_config
from streamapp.metrics import (
    ACL_CHANGES,
    ACL_DRIFT_CORRECTIONS,
    ACL_RECONCILE_SECONDS,
    ACL_RECONCILIATIONS,
    ACL_STUCK,
    KAFKA_ACLS,
)
from streamapp.observed import acl_agent_status
from streamapp.tables import index_listeners, policy_index

log = logging.getLogger(__name__)


def acl_scope() -> AclScope:
    """The settings the decision needs: topic names, protected topics, reserved principals."""
    protected = {
        *settings.raw_topics,
        settings.normalized_topic,
        settings.deadletter_topic,
        settings.dataset_updates_topic,
        settings.tenant_updates_topic,
        settings.updates_audit_topic,
        settings.invocations_topic,
        settings.deliveries_topic,
        settings.dcache_events_topic,
    }
    return AclScope(
        tenant_topic=settings.tenant_topic,
        reserved_principals=settings.kafka_reserved_principals,
        protected_topics=frozenset(protected),
        protected_prefixes=("__", f"{settings.app_id}-"),
    )


class AclReconciler(faust.Service):
    """Reconciles on policy changes and periodically, on the leader only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._acl_changed = asyncio.Event()
        self._acl_previous: frozenset[AclEntry] | None = None  # desired set last applied
        self._acl_admin: KafkaAdmin | None = None
        self._acl_task: asyncio.Task[None] | None = None
        self._acl_reported: set[str] = set()

    async def on_start(self) -> None:
        index_listeners.append(self._acl_changed.set)
        self._acl_changed.set()
        self._acl_task = asyncio.create_task(self._run(), name="kafka-acls")
        self._acl_task.add_done_callback(lambda _task: acl_agent_status.stopped())
        acl_agent_status.started()
        log.info("ACL agent started (acts while this worker is the leader)")

    async def on_stop(self) -> None:
        if self._acl_changed.set in index_listeners:
            index_listeners.remove(self._acl_changed.set)
        if self._acl_task is not None:
            self._acl_task.cancel()
            await asyncio.gather(self._acl_task, return_exceptions=True)

    async def _run(self) -> None:
        """Never ends while the worker runs: whatever one pass raises is logged, counted and
        shown on /health, and the next pass comes at the next change or interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acl_changed.wait(), settings.kafka_acl_interval_s)
            self._acl_changed.clear()
            if not app.is_leader():
                self._acl_previous = None  # a later term starts afresh (drift counted then)
                acl_agent_status.standby()
                continue
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the agent must outlive any one pass
                ACL_RECONCILIATIONS.labels("failed").inc()
                acl_agent_status.failed(f"{type(exc).__name__}: {str(exc)[:200]}")
                log.exception("ACL reconciliation failed unexpectedly (retried)")

    def _admin_client(self) -> KafkaAdmin:
        if self._acl_admin is None:
            self._acl_admin = KafkaAdmin(confluent_config(settings))
        return self._acl_admin

    async def reconcile(self) -> None:
        """One pass: describe, plan, delete what is not allowed, create what is missing."""
        started = time.perf_counter()
        scope = acl_scope()
        try:
            desired = desired_acls(policy_index.tenants, policy_index.datasets, scope)
            self._report_conflicts(scope)
            admin = self._admin_client()
            actual = await admin.describe_acls()
            steps = plan(desired, actual, scope, self._acl_previous, policy_index.tenants)
            # deletions first: a revocation must not wait for anything else
            await admin.delete_acls(steps.delete)
            await admin.create_acls(steps.create)
        except (KafkaAdminError, KafkaAuthError) as exc:
            ACL_RECONCILIATIONS.labels("failed").inc()
            acl_agent_status.failed(str(exc))
            log.error(
                "ACL reconciliation failed (retried in %ss): %s", settings.kafka_acl_interval_s, exc
            )
            if isinstance(exc, KafkaAuthError):
                self._acl_admin = None
            return
        self._acl_previous = desired
        acl_agent_status.reconciled(len(desired), len(steps.stuck))
        ACL_RECONCILIATIONS.labels("ok").inc()
        ACL_RECONCILE_SECONDS.observe(time.perf_counter() - started)
        ACL_CHANGES.labels("created").inc(len(steps.create))
        ACL_CHANGES.labels("deleted").inc(len(steps.delete))
        ACL_DRIFT_CORRECTIONS.inc(len(steps.drift))
        KAFKA_ACLS.set(len(desired))
        for acl in sorted(steps.drift):
            log.warning("ACL drift removed (not granted by any policy): %s", acl)
        ACL_STUCK.set(len(steps.stuck))
        for acl in sorted(steps.stuck):
            log.error("ACL not granted by any policy, not addressable by this client: %s", acl)
        if not steps.empty:
            log.info(
                "ACLs reconciled: %d created, %d deleted (%d drift), %d managed",
                len(steps.create),
                len(steps.delete),
                len(steps.drift),
                len(desired),
            )

    def _report_conflicts(self, scope: AclScope) -> None:
        for principal, reason in principal_conflicts(policy_index.tenants, scope).items():
            if principal not in self._acl_reported:
                self._acl_reported.add(principal)
                log.error("Kafka principal gets no ACL: %s", reason)


if settings.kafka_acls_enabled:
    app.service(AclReconciler)
