"""The faust application, built from the one settings object. Agents, commands and views
register themselves by autodiscovery; this module stays thin."""

from __future__ import annotations

import faust

from streamapp import faust_fixes, faust_speedups, kafka_auth
from streamapp.settings import current
from streamapp.web.auth import access_middleware

faust_fixes.apply()
faust_speedups.apply()

settings = current()

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    # SASL (SCRAM) when STREAMAPP_KAFKA_SASL_USERNAME is set: docs/kafka-security.md
    broker_credentials=kafka_auth.faust_credentials(settings),
    store=settings.store,
    datadir=str(settings.data_dir),
    topic_partitions=settings.topic_partitions,
    autodiscover=["streamapp.agents", "streamapp.commands", "streamapp.web"],
    origin="streamapp",
    web_host=settings.web_host,
    web_port=settings.web_port,
    canonical_url=settings.web_url,
    # The built-in /table endpoints would serve table contents to anyone: never on.
    web_tables_enabled=False,
    # JWT authentication of every /v1/ view (streamapp/web/auth.py)
    web_application_options={"middlewares": [access_middleware]},
    producer_linger=settings.producer_linger_s,
    producer_max_batch_size=settings.producer_max_batch_bytes,
    producer_acks=-1,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=settings.heartbeat_interval_s,
    consumer_auto_offset_reset="earliest",
    Worker="streamapp.worker:Worker",
)
