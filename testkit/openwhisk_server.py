"""An OpenWhisk REST test server. It STANDS IN FOR APACHE OPENWHISK, which cannot run on this
machine (no Docker engine, no Kubernetes): it is not OpenWhisk and runs no actions.

It follows the documented invoke API (apache/openwhisk ``docs/rest_api.md``, ``docs/reference.md``,
``core/controller/.../Actions.scala``; summarised in ``docs/formats.md`` §6):

- ``POST /api/v1/namespaces/{ns}/actions/[{pkg}/]{action}?blocking=…&result=…&timeout=…``
  with HTTP Basic auth ``uuid:key``; the JSON body is the parameters (at most 1 MB: else 413).
- ``_`` as the namespace means the credentials' own (as in OpenWhisk).
- 401 for missing/invalid credentials, 403 for a key of another namespace, 404 for an unknown
  action, 400 for a body that is not a JSON object.
- Non-blocking: 202 ``{"activationId": …}``. Blocking: 200 with the activation record
  (``namespace, name, activationId, start, end, duration, response{status, success, result},
  logs, annotations``), or only the result with ``result=true``; 502 with the activation
  record when the action failed (its result holds ``error``); 202 if it outlasts the timeout.
- 429 with OpenWhisk's own messages ("Too many requests in the last minute (count: n,
  allowed: m)." / "Too many concurrent requests in flight (count: n, allowed: m).") when a
  namespace limit (per minute / concurrent) is exceeded, or when the fault schedule says so.
- Every response carries ``x-openwhisk-activation-id``.

On top, for tests: per-namespace latency, a fault schedule (statuses, hangs, connection resets),
an outage switch (the listening socket closes: connection refused), a log of every request
and every activation, and ``received``: every request as it arrived, with the credential it
carried, authenticated or not (to prove that a key was never sent here). Used by unit and
integration tests, the benchmark and the demo; run it alone with
``python -m testkit.openwhisk_server --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

ACTIVATION_HEADER = "x-openwhisk-activation-id"
MAX_BODY = 1_048_576

ActionFunction = Callable[[dict[str, Any]], dict[str, Any]]


def _default_action(params: dict[str, Any]) -> dict[str, Any]:
    event = params.get("event") if isinstance(params.get("event"), dict) else {}
    return {"ok": True, "path": event.get("subject") if isinstance(event, dict) else None}


@dataclass
class Action:
    """A registered action: what it returns (a result holding ``error`` is a failure)."""

    function: ActionFunction = _default_action
    latency_s: float = 0.0


@dataclass
class Fault:
    """One scheduled misbehaviour, used up by ``count`` matching requests (None: until removed).

    ``status``: answer with it (429 uses OpenWhisk's rate message, 502 a failed activation);
    ``hang``: hold the request until ``release()``; ``reset``: close the connection unanswered.
    ``namespace``: only requests to this namespace (None: all); ``body``: answer with it
    verbatim (bytes, with ``status`` or 500) instead of OpenWhisk's error object."""

    status: int | None = None
    count: int | None = 1
    namespace: str | None = None
    hang: bool = False
    reset: bool = False
    message: str | None = None
    body: bytes | None = None


@dataclass
class Request:
    """One request as the server saw it (after authentication, when that succeeded)."""

    at: float
    namespace: str
    action: str
    status: int
    activation_id: str


@dataclass
class Activation:
    """One action run (202 or 200 or 502): what tests count."""

    at: float  # monotonic
    wall: float  # time.time(), to compare with other processes' clocks
    namespace: str
    action: str
    activation_id: str
    params: dict[str, Any]
    blocking: bool
    success: bool


@dataclass
class Namespace:
    key: str  # "uuid:key"
    per_minute: int | None = None  # invocations per minute, None: unlimited
    concurrent: int | None = None  # in flight, None: unlimited
    latency_s: float = 0.0
    _recent: deque[float] = field(default_factory=deque)
    _in_flight: int = 0


@dataclass
class _Call:
    """One authenticated invocation being answered."""

    request: web.Request
    activation_id: str
    namespace: Namespace
    ns_name: str  # the namespace's name ("_" resolved)
    qualified: str  # "ns/[pkg/]name"

    @property
    def headers(self) -> dict[str, str]:
        return {ACTIVATION_HEADER: self.activation_id}


class OpenWhiskTestServer:
    def __init__(self, namespaces: Mapping[str, Namespace], host: str = "127.0.0.1") -> None:
        self.namespaces = dict(namespaces)
        self.actions: dict[str, Action] = {}
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.activations: list[Activation] = []
        self.received: list[tuple[str, str | None]] = []  # (path, "uuid:key" sent or None)
        self.host = host
        self.port = 0
        self._released = asyncio.Event()
        self._app = web.Application()
        self._runner: web.AppRunner | None = None

    # --- test controls -------------------------------------------------------------------------

    def action(self, qualified: str, action: Action | None = None) -> None:
        """Register ``/ns/[pkg/]name``."""
        self.actions[qualified.strip("/")] = action or Action()

    def schedule(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.release()

    def release(self) -> None:
        """Let every hanging request go (they then answer normally)."""
        self._released.set()
        self._released = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._app = web.Application(client_max_size=MAX_BODY * 2)
        self._app.router.add_post(
            "/api/v1/namespaces/{namespace}/actions/{action:.+}", self._invoke
        )
        await self.up(port)

    async def up(self, port: int | None = None) -> None:
        """(Re)open the server on the same port."""
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port if port is not None else self.port)
        await site.start()
        if not self.port:
            # aiohttp exposes the bound port only through the asyncio server
            server: Any = site._server
            self.port = server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """An outage: new connections are refused and open ones are closed."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def close(self) -> None:
        self.release()
        await self.down()

    def succeeded(self, namespace: str | None = None) -> list[Activation]:
        return [
            a
            for a in self.activations
            if a.success and (namespace is None or a.namespace == namespace)
        ]

    # --- the API -------------------------------------------------------------------------------

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        """``POST …/actions/…``: authenticate, apply a scheduled fault, check, then activate."""
        activation_id = uuid.uuid4().hex
        self.received.append((request.path, _credential(request)))
        call = self._authorize(request, activation_id)
        if isinstance(call, web.Response):
            return call
        fault = self._next_fault(call.ns_name)
        if fault is not None:
            faulted = await self._apply_fault(call, fault)
            if faulted is not None:
                return faulted
        action = self.actions.get(call.qualified)
        if action is None:
            return self._fail(call, 404, "The requested resource does not exist.")
        params = await self._read_params(call)
        if isinstance(params, web.Response):
            return params
        throttled = self._throttle(call.namespace)
        if throttled is not None:
            return self._fail(call, 429, throttled)
        return await self._activate(call, action, params, fault)

    def _authorize(self, request: web.Request, activation_id: str) -> _Call | web.Response:
        """The call, or 401 (credentials of no namespace) / 403 (of another namespace)."""
        namespace = self._authenticate(request)
        if namespace is None:
            return _error(401, "The supplied authentication is invalid.", activation_id)
        ns_name = request.match_info["namespace"]
        if ns_name == "_":  # OpenWhisk's "the namespace of these credentials"
            ns_name = next(n for n, ns in self.namespaces.items() if ns is namespace)
        if self.namespaces.get(ns_name) is not namespace:
            return _error(
                403,
                f"The supplied authentication is not authorized to access '{ns_name}'.",
                activation_id,
            )
        qualified = f"{ns_name}/{request.match_info['action']}"
        return _Call(request, activation_id, namespace, ns_name, qualified)

    async def _apply_fault(self, call: _Call, fault: Fault) -> web.StreamResponse | None:
        """The answer a scheduled fault gives, or None to go on (after a hang; a 502 fault
        fails the activation itself, in ``_activate``)."""
        if fault.reset:
            self._record(call, 0)
            assert call.request.transport is not None
            call.request.transport.close()
            return web.Response(status=500)
        if fault.hang:
            await self._released.wait()
            return None
        if fault.body is not None:
            self._record(call, fault.status or 500)
            return web.Response(
                body=fault.body,
                status=fault.status or 500,
                headers=call.headers,
                content_type="application/json",
            )
        if fault.status == 429:
            return self._fail(call, 429, fault.message or _rate_message(1, 1))
        if fault.status is not None and fault.status != 502:
            return self._fail(call, fault.status, fault.message or "Internal server error.")
        return None

    async def _read_params(self, call: _Call) -> dict[str, Any] | web.Response:
        """The parameters (the JSON object body), or 413 (over ``MAX_BODY``) / 400."""
        body = await call.request.read()
        if len(body) > MAX_BODY:
            return self._fail(call, 413, "The request content was malformed: too large.")
        try:
            params = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            return self._fail(call, 400, "The request content was malformed.")
        return params

    async def _activate(
        self, call: _Call, action: Action, params: dict[str, Any], fault: Fault | None
    ) -> web.Response:
        """Run the action (counted against the namespace's limits) and answer: 202
        (non-blocking), 200 (the record, or the result alone) or 502 (a failed action)."""
        blocking = call.request.query.get("blocking") == "true"
        namespace = call.namespace
        namespace._recent.append(time.monotonic())
        namespace._in_flight += 1
        try:
            start = time.time()
            await asyncio.sleep(namespace.latency_s + action.latency_s)
            result = action.function(params)
            if fault is not None and fault.status == 502:
                result = {"error": fault.message or "scheduled action failure"}
            end = time.time()
        finally:
            namespace._in_flight -= 1
        success = "error" not in result
        self.activations.append(
            Activation(
                time.monotonic(),
                time.time(),
                call.ns_name,
                call.qualified,
                call.activation_id,
                params,
                blocking,
                success,
            )
        )
        if not blocking:
            return self._answer(call, 202, {"activationId": call.activation_id})
        record = _activation_record(call, result, start, end, success)
        if not success:
            return self._answer(call, 502, record)
        return self._answer(
            call, 200, result if call.request.query.get("result") == "true" else record
        )

    def _record(self, call: _Call, status: int) -> None:
        """Log the request with the status it got (0: the connection was reset)."""
        self.requests.append(
            Request(time.monotonic(), call.ns_name, call.qualified, status, call.activation_id)
        )

    def _answer(self, call: _Call, status: int, body: Any) -> web.Response:
        self._record(call, status)
        return web.json_response(body, status=status, headers=call.headers, dumps=_dumps)

    def _fail(self, call: _Call, status: int, message: str) -> web.Response:
        """OpenWhisk's error object: ``{"error": message, "code": activation id}``."""
        return self._answer(call, status, {"error": message, "code": call.activation_id})

    def _authenticate(self, request: web.Request) -> Namespace | None:
        pair = _credential(request)
        if pair is None:
            return None
        for namespace in self.namespaces.values():
            if namespace.key == pair:
                return namespace
        return None

    def _next_fault(self, namespace: str) -> Fault | None:
        for fault in self.faults:
            if fault.namespace not in (None, namespace):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    @staticmethod
    def _throttle(namespace: Namespace) -> str | None:
        now = time.monotonic()
        recent = namespace._recent
        while recent and recent[0] < now - 60:
            recent.popleft()
        if namespace.per_minute is not None and len(recent) >= namespace.per_minute:
            return _rate_message(len(recent), namespace.per_minute)
        if namespace.concurrent is not None and namespace._in_flight >= namespace.concurrent:
            return (
                "Too many concurrent requests in flight "
                f"(count: {namespace._in_flight}, allowed: {namespace.concurrent})."
            )
        return None


def _credential(request: web.Request) -> str | None:
    """The ``uuid:key`` of a Basic Authorization header, or None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _activation_record(
    call: _Call, result: dict[str, Any], start: float, end: float, success: bool
) -> dict[str, Any]:
    """The activation record of a blocking invocation (times in epoch milliseconds)."""
    return {
        "namespace": call.ns_name,
        "name": call.request.match_info["action"].rsplit("/", 1)[-1],
        "version": "0.0.1",
        "subject": call.namespace.key.split(":", 1)[0],
        "activationId": call.activation_id,
        "start": int(start * 1000),
        "end": int(end * 1000),
        "duration": int((end - start) * 1000),
        "response": {
            "status": "success" if success else "application error",
            "statusCode": 0 if success else 1,
            "success": success,
            "result": result,
        },
        "logs": [],
        "annotations": [{"key": "kind", "value": "python:3.11"}],
        "publish": False,
    }


def _rate_message(count: int, allowed: int) -> str:
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error(status: int, message: str, activation_id: str) -> web.Response:
    return web.json_response(
        {"error": message, "code": activation_id},
        status=status,
        headers={ACTIVATION_HEADER: activation_id},
        dumps=_dumps,
    )


def _namespaces(items: list[str], latency_s: float) -> dict[str, Namespace]:
    namespaces = {}
    for item in items:
        name, _, key = item.partition("=")
        if key.startswith("@"):  # keep the key off the command line: read it from a file
            key = Path(key[1:]).read_text().strip()
        namespaces[name] = Namespace(key=key, latency_s=latency_s)
    return namespaces


async def _serve(args: argparse.Namespace, namespaces: dict[str, Namespace]) -> None:
    server = OpenWhiskTestServer(namespaces, host=args.host)
    for action in args.action:
        server.action(action)
    await server.start(args.port)
    print(f"OpenWhisk test server (a stand-in, not OpenWhisk) on {server.url}", flush=True)
    seen = 0
    try:
        while True:
            await asyncio.sleep(0.2)
            for activation in server.activations[seen:]:
                event = activation.params.get("event", {})
                print(
                    f"invoked /{activation.action} activation={activation.activation_id} "
                    f"tenant={activation.params.get('streamapp', {}).get('tenant')} "
                    f"path={event.get('subject')} blocking={activation.blocking}",
                    flush=True,
                )
            seen = len(server.activations)
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3233)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per activation")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS=UUID:KEY",
        help="repeatable; NS=@FILE reads the key from FILE",
    )
    parser.add_argument(
        "--action", action="append", default=[], metavar="/NS/[PKG/]NAME", help="repeatable"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, _namespaces(args.namespace, args.latency)))


if __name__ == "__main__":
    main()
