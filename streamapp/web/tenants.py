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
import logging
import socket
import struct
import time
from typing import Any

import orjson
from aiohttp import web as aioweb
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import web
from faust.exceptions import SameNode

from streamapp.app import app, settings
from streamapp.domain.policy import PathGlob
from streamapp.tables import STATS_WINDOW_S, policy_index, tenant_stats
from streamapp.topics import tenant_events
from streamapp.web.auth import json_response, problem, require_tenant

log = logging.getLogger(__name__)
MAX_BATCH = 200


@app.page("/v1/tenants/{tenant}/policy")
class TenantPolicy(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        policy = policy_index.tenants.get(tenant)
        if policy is None:
            return problem(404, "Not Found", f"no policy for tenant {tenant!r}")
        # credentials appear by name only; the keys never leave the workers' secrets
        return json_response(policy.canonical())


@app.page("/v1/tenants/{tenant}/datasets")
class TenantDatasets(web.View):
    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        datasets = sorted(
            (d.to_json() for d in policy_index.datasets.values() if tenant in d.entitled),
            key=lambda d: str(d["id"]),
        )
        return json_response({"tenant": tenant, "datasets": datasets})


@app.page("/v1/tenants/{tenant}/stats")
class TenantStats(web.View):
    """Deliveries per minute over the last ``minutes`` (1 to 60, default 15), newest first.

    The windowed table is partitioned by tenant: any worker can be asked, and the one owning the
    tenant's partition answers (faust's router forwards the GET, token included)."""

    async def get(self, request: Any, tenant: str) -> Any:
        require_tenant(request, tenant)
        try:
            minutes = int(request.query.get("minutes", "15"))
        except ValueError:
            minutes = 0
        if not 1 <= minutes <= 60:
            return problem(400, "Bad Request", "minutes must be an integer from 1 to 60")
        table: Any = tenant_stats.table
        # the router hashes the key with the producer's metadata of the changelog topic, which
        # a worker that never wrote to it lacks
        producer: Any = app.producer
        await producer._ensure_producer().partitions_for(table.changelog_topic.get_topic_name())
        try:
            return await app.router.route_req(table.name, tenant, self.web, request)
        except SameNode:
            pass
        now = time.time()
        per_minute = []
        for back in range(minutes):
            moment = now - STATS_WINDOW_S * back
            start = moment - moment % STATS_WINDOW_S
            # faust reads arbitrary windows only through this (public ones are event-relative)
            count = table._windowed_timestamp(tenant, moment)
            per_minute.append({"minute": _utc(start), "deliveries": int(count or 0)})
        return json_response(
            {
                "tenant": tenant,
                "window_seconds": STATS_WINDOW_S,
                "served_by": str(app.conf.canonical_url),
                "per_minute": per_minute,
            }
        )


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def parse_position(text: str | None) -> dict[int, int] | str:
    """``p:o,p:o`` -> {partition: offset}; ``beginning``/``end`` as they are."""
    if not text or text in ("end", "beginning"):
        return text or "end"
    position: dict[int, int] = {}
    for item in text.split(","):
        partition, sep, offset = item.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"not a stream position: {text!r}")
        position[int(partition)] = int(offset)
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
            globs = [PathGlob(g) for g in request.query.get("paths", "").split(",") if g]
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
        topic = await tenant_events(tenant)
        name = topic.get_topic_name()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, name)
            tps = [TopicPartition(name, p) for p in partitions]
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
            for tp, records in sorted(batches.items()):
                for record in records:
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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")
