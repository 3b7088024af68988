"""Operator views: ``GET /health``, ``GET /openapi.json``, ``POST /v1/admin/updates`` and a
tenant's recent invocations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from faust import web

from streamapp.admin_keys import admin_keyring
from streamapp.app import app, settings
from streamapp.domain.updates import UpdateRefusedError, verify_update
from streamapp.kafka_auth import aiokafka_options
from streamapp.observed import acl_agent_status, recent_invocations
from streamapp.tables import policy_index
from streamapp.topics import dataset_updates, tenant_updates
from streamapp.web.auth import PRINCIPAL, json_response, problem, require_tenant
from streamapp.web.openapi import OPENAPI

log = logging.getLogger(__name__)

_STARTED = time.monotonic()


HEALTH_CACHE_S = 2.0


async def _broker_reachable() -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=3000,
        **aiokafka_options(settings),
    )
    try:
        await admin.start()
        await admin.describe_cluster()
    except Exception:  # noqa: BLE001 - any failure means "not reachable" here
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


class BrokerCheck:
    """The broker check behind the public ``/health``: one Kafka admin connection (up to 3 s)
    per ``ttl_s`` at most, whatever the request rate. Concurrent requests share the check in
    flight; a request that goes away does not cancel it for the others."""

    def __init__(
        self, probe: Callable[[], Awaitable[bool]] = _broker_reachable, ttl_s: float = 2.0
    ) -> None:
        self._probe, self._ttl_s = probe, ttl_s
        self._checked_at = -math.inf
        self._result = False
        self._running: asyncio.Future[bool] | None = None

    async def reachable(self) -> bool:
        if time.monotonic() - self._checked_at < self._ttl_s:
            return self._result
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._running)

    async def _check(self) -> bool:
        try:
            result = bool(await self._probe())
        except Exception:  # noqa: BLE001 - a probe that fails says "not reachable"
            result = False
        self._result, self._checked_at, self._running = result, time.monotonic(), None
        return result


broker_check = BrokerCheck(ttl_s=HEALTH_CACHE_S)


@app.page("/health")
class Health(web.View):
    """200 when the broker answers and the tables are recovered; 503 otherwise. Public: the
    broker's answer is at most ``HEALTH_CACHE_S`` old (``BrokerCheck``)."""

    async def get(self, request: Any) -> Any:
        broker = await broker_check.reachable()
        # faust's TableManager has the recovery service; its type stub does not say so
        recovered = bool(getattr(app.tables, "recovery").completed.is_set())  # noqa: B009
        # faust sets this at a rebalance's start and clears it once the new assignment is
        # recovered and its partitions resumed ("Worker ready"): the worker is serving then
        rebalancing = bool(app.rebalancing)
        acls = acl_agent_status.view()
        # a dead ACL agent would leave revoked tenants reading: the worker is not healthy
        healthy = broker and recovered and acls["state"] != "stopped"
        body = {
            "status": "ok" if healthy else "unavailable",
            "broker": broker,
            "tables_recovered": recovered,
            "rebalancing": rebalancing,
            "kafka_acls": acls,
            "datasets": len(policy_index.datasets),
            "tenants": len(policy_index.tenants),
            "uptime_s": round(time.monotonic() - _STARTED, 1),
        }
        return json_response(body, 200 if healthy else 503)


@app.page("/openapi.json")
class OpenAPI(web.View):
    async def get(self, request: Any) -> Any:
        return json_response(OPENAPI)


MAX_INVOCATIONS = 200


@app.page("/v1/tenants/{tenant}/invocations")
class TenantInvocations(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_INVOCATIONS:
            return problem(
                400, "Bad Request", f"limit must be an integer from 1 to {MAX_INVOCATIONS}"
            )
        return json_response({"tenant": tenant, "invocations": recent_invocations(tenant)[:limit]})


@app.page("/v1/admin/updates")
class AdminUpdates(web.View):
    """Append a signed policy or ownership update (a JWS) to its topic. Checked here first
    (401/403/422 with the reason); the workers verify it again when they apply it."""

    async def post(self, request: Any) -> Any:
        if not request[PRINCIPAL].admin:
            return problem(403, "Forbidden", "admin role required")
        body = await request.read()
        try:
            update = verify_update(body, admin_keyring(settings.admin_public_keys))
        except UpdateRefusedError as exc:
            return problem(422, "Unprocessable Content", f"update refused: {exc}")
        except Exception as exc:  # whatever the body makes us raise: a 4xx, never a 500
            log.exception("admin update refused by an unexpected error")
            reason = f"internal error: {type(exc).__name__}"
            return problem(422, "Unprocessable Content", f"update refused: {reason}")
        topic = dataset_updates if update.kind == "dataset" else tenant_updates
        future = await topic.send(key=update.name.encode(), value=body.strip())
        metadata = await future
        return json_response(
            {
                "kind": update.kind,
                "name": update.name,
                "version": update.version,
                "topic": metadata.topic,
                "partition": metadata.partition,
                "offset": metadata.offset,
            },
            202,
        )
