"""The worker's invocation sink, built from the app's settings, tables and topics and started
as a faust service (only when ``STREAMAPP_SINK_ENABLED``)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

from streamapp.app import app, settings
from streamapp.clients.openwhisk import Credentials, OpenWhiskClient
from streamapp.delegation import SecretFiles, TokenIssuer
from streamapp.kafka_auth import aiokafka_options
from streamapp.sink.outcomes import FinalOutcomes
from streamapp.sink.parts import SinkParts
from streamapp.sink.service import InvocationSink
from streamapp.tables import policy_index
from streamapp.topics import dead_letters, invocations, tenant_events


def sink_consumer() -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        **aiokafka_options(settings),
        group_id=settings.sink_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # metadata for the subscribed topics only (a pattern would fetch every topic's:
        # measured at ~half the worker's CPU on a broker with thousands of topics)
        metadata_max_age_ms=30_000,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        max_poll_records=1000,
    )


async def _send_invocation(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> Any:
    return await invocations.send(key=key, value=value, headers=headers)


async def _send_dead_letter(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> Any:
    return await dead_letters.send(key=key, value=value, headers=headers)


async def _declare_topics() -> None:
    await invocations.maybe_declare()
    await dead_letters.maybe_declare()


def worker_sink_parts() -> SinkParts:
    return SinkParts(
        settings=settings,
        index=policy_index,
        client=OpenWhiskClient(
            Credentials(settings.secrets_dir, env=settings.openwhisk_env_credentials),
            settings.openwhisk_allowed_hosts,
        ),
        issuer=TokenIssuer(
            secrets=SecretFiles(settings.secrets_dir),
            identifier=settings.macaroon_identifier,
            location=settings.macaroon_location,
            identity=settings.macaroon_identity,
            max_lifetime_s=settings.token_max_lifetime_s,
            expiry_step_us=1000,  # a renewed token is a new one (TokenIssuer.expiry_step_us)
        ),
        outcomes=FinalOutcomes(
            settings.data_dir / "sink-outcomes",
            settings.bootstrap_servers,
            settings.invocations_topic,
            settings.sink_outcome_ttl_s,
            client_options=aiokafka_options(settings),
        ),
        consumer_factory=sink_consumer,
        send_invocation=_send_invocation,
        send_dead_letter=_send_dead_letter,
        ensure_tenant_topic=tenant_events,
        declare_topics=_declare_topics,
    )


if settings.sink_enabled:

    @app.service
    class WorkerInvocationSink(InvocationSink):
        """The sink with this worker's parts (faust builds services without arguments)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(worker_sink_parts(), **kwargs)
