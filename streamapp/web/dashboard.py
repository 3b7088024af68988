"""The operator dashboard: ``GET /ui`` (a static page, plain HTML and JS, no build step) and
``GET /v1/admin/overview`` (admin only), which the page polls with the operator's token.

The page asks for a bearer token once (or takes it from the URL fragment, which never reaches
a server) and keeps it in the tab's sessionStorage; it never displays it. Rates are computed in
the browser from successive overviews. Ingest and delivery figures are this worker's (each
replica serves its own); invocation outcomes come from the invocations topic, which every
worker reads whole.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web as aioweb
from faust import web
from prometheus_client import REGISTRY

from streamapp import observed
from streamapp.app import app
from streamapp.metrics import fold
from streamapp.observed import recent_invocations
from streamapp.tables import policy_index
from streamapp.web.auth import PRINCIPAL, problem

PAGE = Path(__file__).with_name("dashboard.html")


def _samples(name: str) -> list[tuple[dict[str, str], float]]:
    fold()  # the counts the hot path added since the last read
    return [
        (dict(sample.labels), float(sample.value))
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == name
    ]


def overview() -> dict[str, Any]:
    ingest: dict[str, dict[str, float]] = {}
    for labels, value in _samples("streamapp_ingest_records_total"):
        ingest.setdefault(labels["topic"], {})[labels["outcome"]] = value
    invocations: dict[str, dict[str, int]] = {}
    recent: list[dict[str, Any]] = []
    for tenant in sorted(policy_index.tenants):
        records = recent_invocations(tenant)
        recent += records[:10]
        counts: dict[str, int] = {}
        for record in records:
            if record.get("final") or record.get("outcome") == "success":
                counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
        if counts:
            invocations[tenant] = counts
    dead = sum(v.get("rejected", 0) for v in ingest.values()) + sum(
        value
        for labels, value in _samples("streamapp_invocations_total")
        if labels.get("outcome") == "dead_lettered"
    )
    recent.sort(key=lambda r: str(r.get("time")), reverse=True)
    return {
        "worker": socket.gethostname(),
        "time": time.time(),
        "ingest": ingest,
        "deliveries": dict(observed.deliveries_by_tenant),
        "dead_letters": dead,
        "invocations": invocations,
        "recent_deliveries": observed.recent_delivery_rows(20),
        "recent_invocations": [
            {k: r.get(k) for k in ("time", "tenant", "trigger", "subject", "outcome", "status")}
            for r in recent[:20]
        ],
        "tenants": len(policy_index.tenants),
        "datasets": len(policy_index.datasets),
    }


@app.page("/ui")
class Dashboard(web.View):
    async def get(self, request: Any) -> Any:
        return aioweb.Response(
            body=PAGE.read_bytes(),
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # the page runs only its own inline script and talks only to this worker
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                "Referrer-Policy": "no-referrer",
            },
        )


@app.page("/v1/admin/overview")
class Overview(web.View):
    async def get(self, request: Any) -> Any:
        if not request[PRINCIPAL].admin:
            return problem(403, "Forbidden", "admin role required")
        return aioweb.Response(body=orjson.dumps(overview()), content_type="application/json")
