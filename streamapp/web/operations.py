"""Operator views: ``GET /health``, ``GET /openapi.json``, ``POST /v1/admin/updates`` and a
tenant's recent invocations."""

from __future__ import annotations

import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from faust import web

from streamapp.agents.invoke import recent_invocations
from streamapp.agents.policy_updates import admin_keys
from streamapp.app import app, settings
from streamapp.domain.updates import UpdateRefusedError, verify_update
from streamapp.kafka_auth import aiokafka_options
from streamapp.tables import policy_index
from streamapp.topics import dataset_updates, tenant_updates
from streamapp.web.auth import PRINCIPAL, json_response, problem, require_tenant
from streamapp.web.openapi import OPENAPI

_STARTED = time.monotonic()


@app.page("/health")
class Health(web.View):
    """200 when the broker answers and the tables are recovered; 503 otherwise."""

    async def get(self, request: Any) -> Any:
        broker = True
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            request_timeout_ms=3000,
            **aiokafka_options(settings),
        )
        try:
            await admin.start()
            await admin.describe_cluster()
        except Exception:  # noqa: BLE001 - any failure means "not reachable" here
            broker = False
        finally:
            await admin.close()
        # faust's TableManager has the recovery service; its type stub does not say so
        recovered = bool(getattr(app.tables, "recovery").completed.is_set())  # noqa: B009
        healthy = broker and recovered
        body = {
            "status": "ok" if healthy else "unavailable",
            "broker": broker,
            "tables_recovered": recovered,
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
            update = verify_update(body, admin_keys())
        except UpdateRefusedError as exc:
            return problem(422, "Unprocessable Content", f"update refused: {exc}")
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
