"""The OpenWhisk client against the OpenWhisk test server over loopback HTTP.

The server (``testkit.openwhisk_server``) stands in for Apache OpenWhisk, which
cannot run on this machine; it follows the documented REST API (docs/formats.md §6).
These tests pin both: the server's answers are OpenWhisk's, and the client reads them right.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from streamapp.clients.openwhisk import (
    ACTIVATION_HEADER,
    Credentials,
    CredentialsMissingError,
    HostNotAllowedError,
    OpenWhiskClient,
    OpenWhiskUnreachableError,
    PayloadTooLargeError,
)
from streamapp.domain.allowed_hosts import AllowedHosts
from streamapp.domain.invocations import Outcome, judge
from streamapp.domain.triggers import ActionRef
from testkit.openwhisk_server import Action, Fault, Namespace, OpenWhiskTestServer

KEY = (  # the shape of OpenWhisk's guest key
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:"
    "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)
ACTION = ActionRef.parse("/p02/reduction/summary")


@pytest.fixture
async def server() -> AsyncIterator[OpenWhiskTestServer]:
    server = OpenWhiskTestServer({"p02": Namespace(KEY), "other": Namespace("u2:k2")})
    server.action("/p02/reduction/summary")
    server.action("/p02/fails", Action(lambda params: {"error": "bad input"}))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def client(tmp_path: Path, server: OpenWhiskTestServer) -> AsyncIterator[OpenWhiskClient]:
    (tmp_path / "openwhisk" / "p02").mkdir(parents=True)
    (tmp_path / "openwhisk" / "p02" / "p02-ow").write_text(KEY + "\n")
    # tenant p02's credential "other-ow" from the environment
    env = {"STREAMAPP_OPENWHISK_P02__OTHER_HOW": "u2:k2"}
    client = OpenWhiskClient(Credentials(tmp_path, env=env), AllowedHosts.parse(server.url))
    yield client
    await client.close()


async def test_non_blocking_is_202_with_an_activation_id(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    answer = await client.invoke(
        server.url,
        ACTION,
        "p02-ow",
        {"event": {"subject": "/f"}},
        tenant="p02",
        blocking=False,
        timeout_s=5,
    )
    assert answer.status == 202
    assert answer.activation_id == answer.body["activationId"]
    assert judge(answer.status, answer.body, False).outcome is Outcome.SUCCESS
    (activation,) = server.activations
    assert activation.activation_id == answer.activation_id
    assert activation.params == {"event": {"subject": "/f"}}


async def test_blocking_returns_the_activation_record(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    answer = await client.invoke(
        server.url,
        ACTION,
        "p02-ow",
        {"event": {"subject": "/f"}},
        tenant="p02",
        blocking=True,
        timeout_s=5,
    )
    assert answer.status == 200
    record = answer.body
    assert {
        "namespace",
        "name",
        "activationId",
        "start",
        "end",
        "duration",
        "response",
        "logs",
        "annotations",
    } <= set(record)
    assert record["response"] == {
        "status": "success",
        "statusCode": 0,
        "success": True,
        "result": {"ok": True, "path": "/f"},
    }
    assert judge(answer.status, record, True).outcome is Outcome.SUCCESS


async def test_a_failing_action_is_502_with_its_record(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    answer = await client.invoke(
        server.url,
        ActionRef.parse("/p02/fails"),
        "p02-ow",
        {},
        tenant="p02",
        blocking=True,
        timeout_s=5,
    )
    assert answer.status == 502
    assert answer.body["response"]["result"] == {"error": "bad input"}
    assert judge(answer.status, answer.body, True).outcome is Outcome.ACTION_FAILED


async def test_authentication_and_not_found(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}{ACTION.path}", json={}) as response:
            assert response.status == 401
            assert response.headers[ACTIVATION_HEADER]
            assert (await response.json())["error"] == "The supplied authentication is invalid."
        other = "Basic " + base64.b64encode(b"u2:k2").decode()
        async with session.post(
            f"{server.url}{ACTION.path}", json={}, headers={"Authorization": other}
        ) as response:
            assert response.status == 403
    answer = await client.invoke(
        server.url,
        ActionRef.parse("/p02/nope"),
        "p02-ow",
        {},
        tenant="p02",
        blocking=False,
        timeout_s=5,
    )
    assert answer.status == 404
    assert judge(answer.status, answer.body, False).outcome is Outcome.REJECTED
    assert not server.activations


async def test_namespace_limits_answer_429_with_openwhisk_messages(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    server.namespaces["p02"].per_minute = 2
    statuses = []
    for _ in range(3):
        answer = await client.invoke(
            server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
        )
        statuses.append(answer.status)
    assert statuses == [202, 202, 429]
    assert answer.body["error"] == "Too many requests in the last minute (count: 2, allowed: 2)."
    server.namespaces["p02"].per_minute = None
    server.namespaces["p02"].concurrent = 1
    server.namespaces["p02"].latency_s = 0.3
    first, second = await asyncio.gather(
        client.invoke(server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=True, timeout_s=5),
        client.invoke(server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=True, timeout_s=5),
    )
    assert sorted([first.status, second.status]) == [200, 429]
    throttled = first if first.status == 429 else second
    assert (
        throttled.body["error"] == "Too many concurrent requests in flight (count: 1, allowed: 1)."
    )


async def test_outage_reset_and_scheduled_faults(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    await server.down()
    with pytest.raises(OpenWhiskUnreachableError):
        await client.invoke(
            server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
        )
    await server.up()
    server.schedule(Fault(reset=True), Fault(status=503, count=2))
    with pytest.raises(OpenWhiskUnreachableError):
        await client.invoke(
            server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
        )
    statuses = [
        (
            await client.invoke(
                server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
            )
        ).status
        for _ in range(3)
    ]
    assert statuses == [503, 503, 202]
    assert len(server.activations) == 1


async def test_oversized_bodies_and_missing_credentials_are_never_sent(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    with pytest.raises(PayloadTooLargeError):
        await client.invoke(
            server.url,
            ACTION,
            "p02-ow",
            {"blob": "x" * 1_100_000},
            tenant="p02",
            blocking=False,
            timeout_s=5,
        )
    with pytest.raises(CredentialsMissingError) as error:
        await client.invoke(
            server.url, ACTION, "nobody", {}, tenant="p02", blocking=False, timeout_s=5
        )
    assert str(error.value) == "unknown credential 'nobody' of tenant 'p02'"  # no path in it
    assert not server.requests


async def test_credentials_from_env_and_never_in_logs(
    client: OpenWhiskClient, server: OpenWhiskTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await client.invoke(
        server.url,
        ActionRef.parse("/other/x"),
        "other-ow",
        {},
        tenant="p02",
        blocking=False,
        timeout_s=5,
    )
    assert answer.status == 404  # authenticated as "other"; it has no such action
    await server.down()
    with pytest.raises(OpenWhiskUnreachableError) as error:
        await client.invoke(
            server.url, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
        )
    secret = KEY.split(":")[1]
    assert secret not in str(error.value)
    assert secret not in caplog.text
    assert base64.b64encode(KEY.encode()).decode() not in caplog.text


async def test_credentials_resolve_only_inside_the_tenants_namespace(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    """Tenant "other" naming p02's credential "p02-ow" gets "unknown credential": its name is
    looked up under other's namespace only, and nothing is sent."""
    with pytest.raises(CredentialsMissingError) as error:
        await client.invoke(
            server.url, ACTION, "p02-ow", {}, tenant="other", blocking=False, timeout_s=5
        )
    assert str(error.value) == "unknown credential 'p02-ow' of tenant 'other'"
    for name in ("../p02/p02-ow", "p02/p02-ow", "p02-ow\n"):  # never valid names in a policy
        with pytest.raises(CredentialsMissingError):
            await client.invoke(
                server.url, ACTION, name, {}, tenant="other", blocking=False, timeout_s=5
            )
    assert not server.received


async def test_hosts_outside_the_allow_list_are_never_called(
    client: OpenWhiskClient, server: OpenWhiskTestServer
) -> None:
    other_port = f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else 1}"
    for host in ("http://169.254.169.254", other_port, "http://localhost:" + str(server.port)):
        with pytest.raises(HostNotAllowedError, match="api_host not allowed"):
            await client.invoke(
                host, ACTION, "p02-ow", {}, tenant="p02", blocking=False, timeout_s=5
            )
    assert not server.received


async def test_redirects_are_not_followed_and_echoed_keys_are_blanked(
    tmp_path: Path, server: OpenWhiskTestServer
) -> None:
    """An allowed host answering 307 to elsewhere: the answer is the 307 (rejected), the other
    place is never asked. An endpoint echoing the Authorization header back: blanked."""
    elsewhere = OpenWhiskTestServer({"p02": Namespace(KEY)})
    elsewhere.action("/p02/reduction/summary")
    await elsewhere.start()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{elsewhere.url}{request.path_qs}")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": f"who is {request.headers['Authorization']}? {KEY}"}, status=400
        )

    app = web.Application()
    app.router.add_post("/redirect/api/v1/namespaces/{rest:.*}", redirect)
    app.router.add_post("/echo/api/v1/namespaces/{rest:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    (tmp_path / "openwhisk" / "p02").mkdir(parents=True)
    (tmp_path / "openwhisk" / "p02" / "p02-ow").write_text(KEY + "\n")
    client = OpenWhiskClient(Credentials(tmp_path, env={}), AllowedHosts.parse(f"127.0.0.1:{port}"))
    try:
        answer = await client.invoke(
            f"http://127.0.0.1:{port}/redirect",
            ACTION,
            "p02-ow",
            {},
            tenant="p02",
            blocking=False,
            timeout_s=5,
        )
        assert answer.status == 307
        verdict = judge(answer.status, answer.body, False)
        assert verdict.outcome is Outcome.REJECTED
        assert verdict.reason == "HTTP 307: redirect not followed"
        assert not elsewhere.received
        answer = await client.invoke(
            f"http://127.0.0.1:{port}/echo",
            ACTION,
            "p02-ow",
            {},
            tenant="p02",
            blocking=False,
            timeout_s=5,
        )
        text = str(answer.body)
        assert KEY not in text
        assert base64.b64encode(KEY.encode()).decode() not in text
        assert "[redacted]" in text
    finally:
        await client.close()
        await runner.cleanup()
        await elsewhere.close()
