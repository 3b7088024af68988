"""``GET /metrics``: the Prometheus text exposition of this worker's metrics."""

from __future__ import annotations

from typing import Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamapp.app import app


@app.page("/metrics")
class Metrics(web.View):
    async def get(self, request: web.Request) -> Any:
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
