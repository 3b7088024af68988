"""The OpenAPI 3.1 description of the worker's HTTP interface (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any, Final

_PROBLEM: Final = {"$ref": "#/components/responses/Problem"}
_TENANT: Final = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"},
}
_AUTH_ERRORS: Final = {"401": _PROBLEM, "403": _PROBLEM}
_TENANT_ERRORS: Final = {**_AUTH_ERRORS, "404": _PROBLEM}  # 404: not a tenant name


def _json_ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "streamapp",
        "version": "1",
        "description": "Authorized per-tenant storage event streams and their OpenWhisk "
        "invocations. /v1/ needs a bearer JWT (WLCG Common JWT profile).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "responses": {
            "Problem": {
                "description": "RFC 9457 problem details",
                "content": {
                    "application/problem+json": {
                        "schema": {
                            "type": "object",
                            "required": ["title", "status", "detail"],
                            "properties": {
                                "type": {"type": "string"},
                                "title": {"type": "string"},
                                "status": {"type": "integer"},
                                "detail": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    },
    "paths": {
        "/health": {
            "get": {
                "summary": "Broker reachable and tables recovered",
                "responses": {"200": _json_ok("healthy"), "503": _json_ok("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json_ok("OpenAPI")}}
        },
        "/v1/tenants/{tenant}/policy": {
            "get": {
                "summary": "The tenant's policy (credentials by name only)",
                "security": [{"bearer": []}],
                "parameters": [_TENANT],
                "responses": {"200": _json_ok("policy"), **_TENANT_ERRORS},
            }
        },
        "/v1/tenants/{tenant}/datasets": {
            "get": {
                "summary": "Datasets the tenant owns or that are shared with it",
                "security": [{"bearer": []}],
                "parameters": [_TENANT],
                "responses": {"200": _json_ok("datasets"), **_TENANT_ERRORS},
            }
        },
        "/v1/tenants/{tenant}/invocations": {
            "get": {
                "summary": "The tenant's latest invocation records, newest first",
                "security": [{"bearer": []}],
                "parameters": [
                    _TENANT,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                ],
                "responses": {"200": _json_ok("invocations"), "400": _PROBLEM, **_TENANT_ERRORS},
            }
        },
        "/v1/tenants/{tenant}/stats": {
            "get": {
                "summary": "Deliveries per minute (newest first), answered by the worker owning "
                "the tenant's partition of the windowed table",
                "security": [{"bearer": []}],
                "parameters": [
                    _TENANT,
                    {
                        "name": "minutes",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 60},
                    },
                ],
                "responses": {
                    "200": _json_ok(
                        "per-minute counts",
                        {
                            "type": "object",
                            "required": ["tenant", "window_seconds", "per_minute"],
                            "properties": {
                                "tenant": {"type": "string"},
                                "window_seconds": {"type": "integer"},
                                "served_by": {"type": "string"},
                                "per_minute": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["minute", "deliveries"],
                                        "properties": {
                                            "minute": {"type": "string", "format": "date-time"},
                                            "deliveries": {"type": "integer", "minimum": 0},
                                        },
                                    },
                                },
                            },
                        },
                    ),
                    "400": _PROBLEM,
                    # 502/503: the worker holding the tenant refused or did not answer, or
                    # this worker lacks the peer secret to ask it (docs/access.md)
                    "502": _PROBLEM,
                    "503": _PROBLEM,
                    **_TENANT_ERRORS,
                },
            }
        },
        "/v1/tenants/{tenant}/events": {
            "get": {
                "summary": "Server-Sent Events of the tenant's authorized events, resumable",
                "description": "Each event's id is the stream position after it (p:offset,…); "
                "reconnect with Last-Event-ID (or ?from=) to continue without gap or "
                "duplicate. from=beginning|end|<position>; types and paths (globs) narrow. "
                "paths: at most 8 comma-separated globs, each at most 256 characters and 16 "
                "wildcards, 16 wildcards in all (400 otherwise).",
                "security": [{"bearer": []}],
                "parameters": [
                    _TENANT,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    {"name": "from", "in": "query", "schema": {"type": "string"}},
                    {"name": "types", "in": "query", "schema": {"type": "string"}},
                    {"name": "paths", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "event stream", "content": {"text/event-stream": {}}},
                    "400": _PROBLEM,
                    "503": _PROBLEM,
                    **_TENANT_ERRORS,
                },
            }
        },
        "/v1/admin/overview": {
            "get": {
                "summary": "The dashboard's figures (admin only)",
                "security": [{"bearer": []}],
                "responses": {"200": _json_ok("overview"), **_AUTH_ERRORS},
            }
        },
        "/ui": {
            "get": {
                "summary": "The operators' dashboard (plain HTML; asks for a token itself)",
                "responses": {"200": {"description": "page", "content": {"text/html": {}}}},
            }
        },
        "/v1/admin/updates": {
            "post": {
                "summary": "Append a signed (JWS) policy or ownership update; admin only",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/jose": {
                            "schema": {
                                "type": "string",
                                "description": "JWS compact serialization",
                                "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
                            }
                        }
                    },
                },
                "responses": {"202": _json_ok("appended"), "422": _PROBLEM, **_AUTH_ERRORS},
            }
        },
    },
}
