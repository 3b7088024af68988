"""A tenant's own views: its policy, its datasets, and its event stream (Server-Sent Events).

Every view first checks that the caller may read the tenant (``web.auth.require_tenant``): a
client of tenant B asking for A gets a 403 and not a byte of A's data.

The stream reads the tenant's Kafka topic directly, so it is durable and resumable: each SSE
``id`` is the position *after* that event in every partition (``p:offset`` pairs). A client
that reconnects with ``Last-Event-ID`` (or ``?from=``) continues exactly there — no gap, no
duplicate — for as long as Kafka retains the topic (unlike dCache's in-memory buffer).
``?from=beginning`` replays everything retained; the default is ``end`` (new events only).
Optional ``types`` and ``paths`` (comma-separated) can only narrow what the tenant receives.
A slow client is not buffered for: the next fetch waits until the socket has drained, each
stream's Kafka fetches are capped (256 KiB per partition, 1 MiB per fetch), a client that takes
nothing for ``STREAMAPP_SSE_WRITE_TIMEOUT`` is dropped, and a worker serves at most
``STREAMAPP_SSE_MAX_STREAMS`` streams at once (503 + Retry-After beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import struct
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web as aioweb
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import web
from yarl import URL

from streamapp.app import app, settings
from streamapp.domain.access import PEER_HEADER, sign_peer_request
from streamapp.domain.globs import PathGlob, client_globs
from streamapp.kafka_auth import aiokafka_options
from streamapp.private_access import producer_partitions_for, refresh_metadata, windowed_value
from streamapp.tables import STATS_WINDOW_S, policy_index, tenant_stats
from streamapp.topics import tenant_events
from streamapp.web.auth import FORWARDED, json_response, peer_secret, problem, require_tenant

log = logging.getLogger(__name__)

YIELD_EVERY = 32  # records filtered between two passes of the event loop
MAX_BATCH = 200


@app.page("/v1/tenants/{tenant}/policy")
class TenantPolicy(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        policy = policy_index.tenants.get(tenant)
        if policy is None:
            return problem(404, "Not Found", f"no policy for tenant {tenant!r}")
        # credentials appear by name only; the keys never leave the workers' secrets
        try:
            return json_response(policy.canonical())
        except TypeError:  # held from before params were bounded (e.g. an int over 64 bits)
            body = json.dumps(policy.canonical(), default=str).encode()
            return aioweb.Response(body=body, content_type="application/json")


@app.page("/v1/tenants/{tenant}/datasets")
class TenantDatasets(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        datasets = sorted(
            (d.seen_by(tenant) for d in policy_index.datasets.values() if tenant in d.entitled),
            key=lambda d: str(d["id"]),
        )
        return json_response({"tenant": tenant, "datasets": datasets})


@app.page("/v1/tenants/{tenant}/stats")
class TenantStats(web.View):
    """Deliveries per minute over the last ``minutes`` (1 to 60, default 15), newest first.

    The windowed table is partitioned by tenant: any worker can be asked, and the one owning the
    tenant's partition answers. The asked worker checks the caller, then forwards the GET with
    its own peer credential (``domain.access.sign_peer_request``), never the caller's token;
    without a peer secret it answers 503 for a tenant another worker holds."""

    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        minutes = _minutes(request.query.get("minutes", "15"))
        if minutes is None:
            return problem(400, "Bad Request", "minutes must be an integer from 1 to 60")
        table: Any = tenant_stats.table
        if not request.get(FORWARDED):  # a forwarded request is answered here, never routed on
            owner = await _owner(table, tenant)
            if owner is not None:
                return await _forward(owner, tenant, minutes)
        now = time.time()
        per_minute = []
        for back in range(minutes):
            moment = now - STATS_WINDOW_S * back
            start = moment - moment % STATS_WINDOW_S
            count = windowed_value(table, tenant, moment)
            per_minute.append({"minute": _utc(start), "deliveries": int(count or 0)})
        return json_response(
            {
                "tenant": tenant,
                "window_seconds": STATS_WINDOW_S,
                "served_by": str(app.conf.canonical_url),
                "per_minute": per_minute,
            }
        )


def _minutes(text: str) -> int | None:
    """1..60 from plain ASCII digits (no sign, space, ``_`` or other scripts' digits)."""
    if not text.isascii() or not text.isdigit() or len(text) > 2:
        return None
    value = int(text)
    return value if 1 <= value <= 60 else None


async def _owner(table: Any, tenant: str) -> URL | None:
    """The canonical URL of the worker holding ``tenant``'s stats, None if it is this one."""
    # the router hashes the key with the producer's metadata of the changelog topic, which a
    # worker that never wrote to it lacks
    producer: Any = app.producer
    await producer_partitions_for(producer, table.changelog_topic.get_topic_name())
    try:
        owner: URL = app.router.key_store(table.name, tenant)
    except KeyError:
        return None  # no assignment known (yet): what this worker has
    here = URL(str(app.conf.canonical_url))
    if (owner.host, owner.port) == (here.host, here.port):
        return None
    return owner


async def _forward(owner: URL, tenant: str, minutes: int) -> Any:
    secret = peer_secret(settings)
    if secret is None:
        return problem(
            503,
            "Service Unavailable",
            f"the stats of {tenant!r} are held by another worker, and forwarding needs the "
            "workers' shared peer secret (<STREAMAPP_SECRETS_DIR>/peer.key), which this worker "
            "lacks",
        )
    target = f"/v1/tenants/{tenant}/stats?minutes={minutes}"
    url = URL(f"{owner.scheme or 'http'}://{owner.host}:{owner.port}{target}", encoded=True)
    headers = {PEER_HEADER: sign_peer_request(secret, "GET", target, tenant, time.time())}
    client: Any = app.http_client
    try:
        async with client.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False
        ) as response:
            body = await response.read()
            if response.status != 200:
                log.warning("stats of %s: %s answered %d", tenant, owner, response.status)
                return problem(
                    502, "Bad Gateway", f"the worker holding the stats of {tenant!r} refused"
                )
            return aioweb.Response(body=body, status=200, content_type="application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("stats of %s: %s unreachable: %r", tenant, owner, exc)
        return problem(
            503, "Service Unavailable", f"the worker holding the stats of {tenant!r} did not answer"
        )


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


MAX_POSITION_PARTITIONS = 1024
_POSITION_ITEM = re.compile(r"(?P<partition>[0-9]{1,10}):(?P<offset>[0-9]{1,19})")


def parse_position(text: str | None) -> dict[int, int] | str:
    """``p:o,p:o`` -> {partition: offset}; ``beginning``/``end`` as they are. ValueError for
    anything else, including partitions and offsets beyond Kafka's int32/int64."""
    if not text or text in ("end", "beginning"):
        return text or "end"
    items = text.split(",", MAX_POSITION_PARTITIONS)
    if len(items) > MAX_POSITION_PARTITIONS:
        raise ValueError(f"a stream position has at most {MAX_POSITION_PARTITIONS} partitions")
    position: dict[int, int] = {}
    for item in items:
        found = _POSITION_ITEM.fullmatch(item)
        if found is None or int(found["partition"]) >= 2**31 or int(found["offset"]) >= 2**63:
            raise ValueError(f"not a stream position: {text[:100]!r}")
        position[int(found["partition"])] = int(found["offset"])
    return position


def format_position(position: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(position.items()))


@app.page("/v1/tenants/{tenant}/events")
class TenantEvents(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        try:
            start = parse_position(
                request.headers.get("Last-Event-ID") or request.query.get("from")
            )
            types = {t for t in request.query.get("types", "").split(",") if t}
            globs = client_globs(request.query.get("paths", ""))
        except ValueError as exc:
            return problem(400, "Bad Request", str(exc))
        if _open_streams[0] >= settings.sse_max_streams:
            return problem(
                503, "Service Unavailable", "too many open streams", **{"Retry-After": "5"}
            )
        _open_streams[0] += 1
        try:
            return await self._serve(request, tenant, start, types, globs)
        finally:
            _open_streams[0] -= 1

    async def _serve(
        self,
        request: Any,
        tenant: str,
        start: dict[int, int] | str,
        types: set[str],
        globs: list[PathGlob],
    ) -> Any:
        try:
            topic = await tenant_events(tenant)
        except Exception as exc:  # noqa: BLE001 - e.g. Kafka refused to create it: say so
            log.error("SSE: tenant %s's topic is unavailable: %r", tenant, exc)
            return problem(
                503,
                "Service Unavailable",
                f"tenant {tenant}'s event topic is unavailable ({type(exc).__name__})",
            )
        name = topic.get_topic_name()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            **aiokafka_options(settings),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=1024 * 1024,
        )
        await consumer.start()
        try:
            position = await _assign(consumer, name, start)
            response = aioweb.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            await response.write(f"retry: 2000\nid: {format_position(position)}\n\n".encode())
            await self._stream(consumer, response, position, types, globs)
        except (ConnectionResetError, asyncio.CancelledError):
            log.debug("SSE client of %s went away", tenant)
        except TimeoutError:
            log.info(
                "SSE client of %s took nothing for %.0f s: dropped",
                tenant,
                settings.sse_write_timeout_s,
            )
            _reset(request.transport)
        finally:
            await consumer.stop()
        return response

    @staticmethod
    async def _stream(
        consumer: AIOKafkaConsumer,
        response: aioweb.StreamResponse,
        position: dict[int, int],
        types: set[str],
        globs: list[PathGlob],
    ) -> None:
        beat = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_BATCH)
            chunks = []
            handled = 0
            for tp, records in sorted(batches.items()):
                for record in records:
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        # a batch's filtering is bounded work, but not nothing: let the
                        # worker's agents and other requests run between slices of it
                        await asyncio.sleep(0)
                    position[tp.partition] = record.offset + 1
                    try:
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if types and event.get("type") not in types:
                        continue
                    subject = str(event.get("subject", ""))
                    if globs and not any(g.matches(subject.lstrip("/")) for g in globs):
                        continue
                    chunks.append(
                        b"id: "
                        + format_position(position).encode()
                        + b"\nevent: "
                        + str(event.get("type", "message")).encode()
                        + b"\ndata: "
                        + record.value.replace(b"\n", b"")
                        + b"\n\n"
                    )
            if chunks:
                await _write(response, b"".join(chunks))
                beat = time.monotonic()
            elif time.monotonic() - beat >= settings.sse_heartbeat_s:
                await _write(response, f": heartbeat\nid: {format_position(position)}\n\n".encode())
                beat = time.monotonic()


async def _write(response: aioweb.StreamResponse, data: bytes) -> None:
    """Waits while the client is slow (the socket's buffer is full), but not for ever."""
    await asyncio.wait_for(response.write(data), settings.sse_write_timeout_s)


def _reset(transport: asyncio.Transport | None) -> None:
    """Close at once, discarding what the kernel still holds for the stalled client (a graceful
    close would keep up to the socket's send buffer, megabytes, until the client reads it)."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


_open_streams = [0]  # streams this worker serves now


async def _assign(
    consumer: AIOKafkaConsumer, topic: str, start: dict[int, int] | str
) -> dict[int, int]:
    """Assign every partition of ``topic``, each at the stream position ``start`` names (its
    offset there, else 0; or its beginning or end); returns partition -> the offset reached."""
    tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
    consumer.assign(tps)
    position: dict[int, int] = {}
    for tp in tps:
        if isinstance(start, dict):
            consumer.seek(tp, start.get(tp.partition, 0))
        elif start == "beginning":
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)
        position[tp.partition] = await consumer.position(tp)
    return position


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await refresh_metadata(consumer, topic)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")
