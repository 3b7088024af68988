"""The one settings object: read from ``STREAMAPP_*`` environment variables, in this module only.

Faust reads its own ``F_``/``FAUST_`` variables; everything streamapp decides is here, typed and
frozen, so a setting is looked up in one place and a test can build its own ``Settings``.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streamapp.domain.allowed_hosts import AllowedHosts
from streamapp.domain.policy import KAFKA_PRINCIPAL_PATTERN

ENV_PREFIX = "STREAMAPP_"
# The platform's own principals in the documented layout (scripts/kafka --secured, compose):
# no tenant may claim them, the ACL agent never touches their ACLs, and no tenant credential
# command creates, rotates or deletes them. STREAMAPP_KAFKA_ACL_UNMANAGED_PRINCIPALS adds more.
PLATFORM_PRINCIPALS = (
    "User:ANONYMOUS",
    "User:admin",
    "User:broker",
    "User:controller",
    "User:kafka",
    "User:operator",
    "User:streamapp",
)


OPENWHISK_ENV_PREFIX: Final = "STREAMAPP_OPENWHISK_"


class SettingsError(ValueError):
    """A ``STREAMAPP_*`` variable holds a value that cannot be used."""


def parse_topic_sources(text: str) -> dict[str, str]:
    """Parse ``topic=source-uri,topic2=source-uri2`` into an ordered mapping.

    A bare ``topic`` gets the source ``urn:streamapp:topic:<topic>`` so an unconfigured topic
    still yields a stable, distinct CloudEvents ``source``.
    """
    sources: dict[str, str] = {}
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            continue
        topic, sep, source = entry.partition("=")
        topic, source = topic.strip(), source.strip()
        if not topic:
            raise SettingsError(f"raw topic entry {entry!r} has no topic name")
        if sep and not source:
            raise SettingsError(f"raw topic {topic!r} has an empty source after '='")
        sources[topic] = source or default_source_for(topic)
    if not sources:
        raise SettingsError("no raw topics configured")
    return sources


def default_source_for(topic: str) -> str:
    return f"urn:streamapp:topic:{topic}"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name}={raw!r} is not a number") from None


def _tenant_pattern(pattern: str) -> str:
    if pattern.count("{tenant}") != 1:
        raise SettingsError(
            f"{ENV_PREFIX}TENANT_TOPIC_PATTERN={pattern!r} must hold {{tenant}} exactly once"
        )
    if pattern == "{tenant}":
        # every topic name would look like a tenant's: the ACL agent could not tell them apart
        raise SettingsError(
            f"{ENV_PREFIX}TENANT_TOPIC_PATTERN needs a fixed part besides {{tenant}}"
        )
    return pattern


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(ENV_PREFIX + name)
    return default if raw is None or raw == "" else raw


def _positive_or(value: float, default: float) -> float:
    return value if value > 0 else default


def _at_least(value: float, minimum: float, name: str) -> float:
    if not value >= minimum:  # NaN too
        raise SettingsError(f"{ENV_PREFIX}{name}={value} is below {minimum}")
    return value


def _batch_bytes(env: Mapping[str, str], default: int) -> int:
    """A produce batch must hold one record and fit the producer's 1 MB request limit (which
    aiokafka checks per message, not per request: docs/benchmarks.md, "Produce batches")."""
    value = _int(env, "PRODUCER_MAX_BATCH_BYTES", default)
    if not 1024 <= value <= 1_000_000:
        raise SettingsError(
            f"{ENV_PREFIX}PRODUCER_MAX_BATCH_BYTES={value} is not within 1024..1000000"
        )
    return value


def _principals(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    found = tuple(p.strip() for p in _str(env, name, "").split(",") if p.strip())
    for principal in found:
        if not KAFKA_PRINCIPAL_PATTERN.fullmatch(principal):
            raise SettingsError(
                f"{ENV_PREFIX}{name}: {principal!r} is not a Kafka principal 'User:<name>'"
            )
    return found


def _allowed_hosts(env: Mapping[str, str]) -> AllowedHosts:
    try:
        return AllowedHosts.parse(env.get(ENV_PREFIX + "OPENWHISK_ALLOWED_HOSTS", ""))
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}OPENWHISK_ALLOWED_HOSTS: {exc}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker or a command needs to know, immutable once read."""

    app_id: str = "streamapp"
    broker: str = "kafka://127.0.0.1:19092"
    # raw topic name -> CloudEvents ``source`` of the storage system publishing on it
    raw_topics: Mapping[str, str] = field(
        default_factory=lambda: {
            "dcache.billing": "dcache://dcache.example.org",
            "dcache.events": "dcache://dcache.example.org",  # the storage-events bridge
            "s3.events": "s3://s3.example.org",
        }
    )
    normalized_topic: str = "storage.events"
    deadletter_topic: str = "streamapp.deadletter"
    topic_partitions: int = 4
    data_dir: Path = Path("var/data")
    store: str = "rocksdb://"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    # how other workers reach this one's web server (routed table views); default from host/port
    canonical_url: str = ""
    # a produce request waits up to this long for more records (throughput vs latency:
    # docs/benchmarks.md "Latency"); the agents take one record at a time, so a short linger
    # sends many tiny requests. The batch-wise ingest sends a fetch's outputs without waiting
    # for it once the fetch is processed (ingest_batches.py)
    producer_linger_s: float = 0.05
    # the most bytes one produce batch (one partition's records in a request) may hold. A full
    # batch makes the next send wait until the sender has drained it: with aiokafka's 16 KiB
    # (~12 tenant copies) the worker spent about half its produce CPU on that (docs/benchmarks.md
    # "Produce batches"). Below the broker's 1 MiB message.max.bytes.
    producer_max_batch_bytes: int = 262_144
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    # Largest raw record accepted; anything bigger is dead-lettered, not parsed.
    max_record_bytes: int = 1_048_576
    # policies and ownership
    dataset_updates_topic: str = "streamapp.updates.datasets"
    tenant_updates_topic: str = "streamapp.updates.tenants"
    updates_audit_topic: str = "streamapp.updates.audit"
    tenant_topic_pattern: str = "tenant.{tenant}.events"
    admin_public_keys: tuple[Path, ...] = (Path("var/keys/admin.pub.pem"),)
    # delegated tokens: base macaroons and the optional root key live here (never on a topic)
    secrets_dir: Path = Path("var/secrets")
    macaroon_identifier: str = "streamapp"
    macaroon_location: str = "streamapp"
    macaroon_identity: str = ""
    token_max_lifetime_s: int = 3600
    # the invocation sink (OpenWhisk); credentials by name under <secrets_dir>/openwhisk/
    sink_enabled: bool = True
    invocations_topic: str = "streamapp.invocations"
    sink_group: str = ""  # default: <app_id>-sink
    # per event and trigger for 5xx/timeouts/refused connections (429s do not count): with the
    # back-off below, about 10 minutes of an unreachable endpoint before a dead letter
    sink_max_attempts: int = 20
    sink_retry_base_s: float = 0.5
    sink_retry_cap_s: float = 60.0
    sink_throttle_base_s: float = 1.0
    sink_throttle_cap_s: float = 60.0
    sink_max_pending: int = 500  # unfinished records per tenant before its topic is paused
    sink_discovery_interval_s: float = 5.0  # how soon a new tenant topic is subscribed
    sink_commit_interval_s: float = 1.0
    sink_revoke_grace_s: float = 10.0
    sink_outcome_ttl_s: int = 7 * 24 * 3600  # keep it ≥ the invocations topic's retention
    # the OpenWhisk API hosts triggers may call (host[:port] or http(s)://host[:port], comma-
    # separated); empty: none, so no trigger runs until the operator lists its hosts
    openwhisk_allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)
    # web views: JWT issuers and group -> tenant mapping (TOML); None: /v1/ refused
    access_config: Path | None = None
    sse_heartbeat_s: float = 15.0
    # the dCache storage-events bridge appends its envelopes here (a raw topic)
    dcache_events_topic: str = "dcache.events"
    # a client that takes no data for this long is dropped (it resumes with Last-Event-ID);
    # with the per-stream fetch limits this bounds what one stream can hold in memory
    sse_write_timeout_s: float = 60.0
    sse_max_streams: int = 200  # per worker; more get 503 with Retry-After
    # Kafka authentication of every client of the worker and the commands (docs/kafka-security.md):
    # SASL when a user name is set; the password from the variable or, better, a 0600 file.
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_sasl_password_file: Path | None = None
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_security_protocol: str = ""  # default: SASL_PLAINTEXT with a user, else PLAINTEXT
    kafka_ssl_cafile: Path | None = None  # SASL_SSL: the CA bundle the broker's cert is checked by
    # the ACL agent: broker ACLs kept equal to what the tenant policies allow (one worker at a time)
    kafka_acls_enabled: bool = False
    kafka_acl_interval_s: float = 30.0  # periodic reconciliation (drift), besides policy changes
    # principals whose ACLs the agent never touches and no tenant may claim (besides this
    # worker's own principal and PLATFORM_PRINCIPALS); other services that read tenant topics
    # with ACLs of their own belong here
    kafka_acl_unmanaged_principals: tuple[str, ...] = ()
    event_loop: str = "uvloop"  # or "aio" (asyncio's own); __main__.py installs it
    # a worker exits this long after SIGTERM even if faust has not stopped (worker.py)
    shutdown_grace_s: float = 30.0
    # raw topics consumed fetch-wise by streamapp/ingest_batches.py (the default: about half
    # the CPU per record, docs/benchmarks.md); false: by faust's ingest agent
    ingest_batch: bool = True
    dcache_config: Path | None = None  # the bridge's TOML (streamapp dcache-events)
    # OpenWhisk credentials given as STREAMAPP_OPENWHISK_<TENANT>__<NAME> (clients/openwhisk.py)
    openwhisk_env_credentials: Mapping[str, str] = field(
        default_factory=dict, repr=False, hash=False, compare=False
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            **_broker_and_topics(env, defaults),
            **_web_and_tokens(env, defaults),
            **_sink(env, defaults),
            **_kafka_security(env, defaults),
        )

    @property
    def kafka_principal(self) -> str:
        """This worker's own Kafka principal (``User:ANONYMOUS`` without SASL)."""
        return f"User:{self.kafka_sasl_username or 'ANONYMOUS'}"

    @property
    def kafka_reserved_principals(self) -> frozenset[str]:
        """Principals no tenant may claim and whose ACLs the ACL agent leaves alone."""
        return frozenset(
            {self.kafka_principal, *PLATFORM_PRINCIPALS, *self.kafka_acl_unmanaged_principals}
        )

    def tenant_topic(self, tenant: str) -> str:
        return self.tenant_topic_pattern.format(tenant=tenant)

    def tenant_topic_regex(self) -> str:
        """A regular expression matching every tenant topic; group ``tenant`` is the tenant."""
        before, _, after = self.tenant_topic_pattern.partition("{tenant}")
        return f"^{re.escape(before)}(?P<tenant>[a-z0-9][a-z0-9._-]{{0,62}}){re.escape(after)}$"

    @property
    def web_url(self) -> str:
        """This worker's web server as the others reach it (faust's ``canonical_url``)."""
        if self.canonical_url:
            return self.canonical_url
        host = socket.gethostname() if self.web_host in ("0.0.0.0", "::") else self.web_host  # noqa: S104
        return f"http://{host}:{self.web_port}"

    @property
    def deliveries_topic(self) -> str:
        return f"{self.app_id}-deliveries"

    @property
    def sink_group_id(self) -> str:
        return self.sink_group or f"{self.app_id}-sink"

    def source_for(self, topic: str) -> str:
        return self.raw_topics.get(topic) or default_source_for(topic)

    @property
    def bootstrap_servers(self) -> str:
        """The broker list without faust's ``kafka://`` scheme, for plain aiokafka clients."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";") if part.strip())


def _ingest_batch(env: Mapping[str, str]) -> bool:
    return _str(env, "INGEST_BATCH", "true").lower() in ("1", "true", "yes")


def _broker_and_topics(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """``STREAMAPP_*`` of the broker, topics, state and process."""
    raw = env.get(ENV_PREFIX + "RAW_TOPICS")
    return {
        "app_id": _str(env, "APP_ID", defaults.app_id),
        "broker": _str(env, "BROKER", defaults.broker),
        "raw_topics": parse_topic_sources(raw) if raw else defaults.raw_topics,
        "normalized_topic": _str(env, "NORMALIZED_TOPIC", defaults.normalized_topic),
        "deadletter_topic": _str(env, "DEADLETTER_TOPIC", defaults.deadletter_topic),
        "topic_partitions": _int(env, "TOPIC_PARTITIONS", defaults.topic_partitions),
        "data_dir": Path(_str(env, "DATA_DIR", str(defaults.data_dir))),
        "store": _str(env, "STORE", defaults.store),
        "producer_linger_s": _float(env, "PRODUCER_LINGER", defaults.producer_linger_s),
        "producer_max_batch_bytes": _batch_bytes(env, defaults.producer_max_batch_bytes),
        "session_timeout_s": _float(env, "SESSION_TIMEOUT", defaults.session_timeout_s),
        "heartbeat_interval_s": _float(env, "HEARTBEAT_INTERVAL", defaults.heartbeat_interval_s),
        "max_record_bytes": _int(env, "MAX_RECORD_BYTES", defaults.max_record_bytes),
        "dataset_updates_topic": _str(env, "DATASET_UPDATES_TOPIC", defaults.dataset_updates_topic),
        "tenant_updates_topic": _str(env, "TENANT_UPDATES_TOPIC", defaults.tenant_updates_topic),
        "updates_audit_topic": _str(env, "UPDATES_AUDIT_TOPIC", defaults.updates_audit_topic),
        "tenant_topic_pattern": _tenant_pattern(
            _str(env, "TENANT_TOPIC_PATTERN", defaults.tenant_topic_pattern)
        ),
        "dcache_events_topic": _str(env, "DCACHE_EVENTS_TOPIC", defaults.dcache_events_topic),
        "dcache_config": Path(env[ENV_PREFIX + "DCACHE_CONFIG"])
        if env.get(ENV_PREFIX + "DCACHE_CONFIG")
        else None,
        "event_loop": _str(env, "LOOP", defaults.event_loop) or defaults.event_loop,
        "ingest_batch": _ingest_batch(env),
        "shutdown_grace_s": _positive_or(
            _float(env, "SHUTDOWN_GRACE", defaults.shutdown_grace_s), defaults.shutdown_grace_s
        ),
    }


def _web_and_tokens(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """``STREAMAPP_*`` of web views, access and delegated tokens."""
    return {
        "web_port": _int(env, "WEB_PORT", defaults.web_port),
        "web_host": _str(env, "WEB_HOST", defaults.web_host),
        "canonical_url": _str(env, "CANONICAL_URL", defaults.canonical_url),
        "admin_public_keys": tuple(
            Path(p) for p in _str(env, "ADMIN_PUBLIC_KEYS", "").split(os.pathsep) if p.strip()
        )
        or defaults.admin_public_keys,
        "secrets_dir": Path(_str(env, "SECRETS_DIR", str(defaults.secrets_dir))),
        "macaroon_identifier": _str(env, "MACAROON_IDENTIFIER", defaults.macaroon_identifier),
        "macaroon_location": _str(env, "MACAROON_LOCATION", defaults.macaroon_location),
        "macaroon_identity": _str(env, "MACAROON_IDENTITY", defaults.macaroon_identity),
        "token_max_lifetime_s": _int(env, "TOKEN_MAX_LIFETIME", defaults.token_max_lifetime_s),
        "access_config": Path(env[ENV_PREFIX + "ACCESS_CONFIG"])
        if env.get(ENV_PREFIX + "ACCESS_CONFIG")
        else None,
        "sse_heartbeat_s": _float(env, "SSE_HEARTBEAT", defaults.sse_heartbeat_s),
        "sse_write_timeout_s": _float(env, "SSE_WRITE_TIMEOUT", defaults.sse_write_timeout_s),
        "sse_max_streams": _int(env, "SSE_MAX_STREAMS", defaults.sse_max_streams),
    }


def _sink(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """``STREAMAPP_*`` of the invocation sink and OpenWhisk."""
    return {
        "sink_enabled": _str(env, "SINK_ENABLED", "true").lower() not in ("0", "false", "no"),
        "invocations_topic": _str(env, "INVOCATIONS_TOPIC", defaults.invocations_topic),
        "sink_group": _str(env, "SINK_GROUP", defaults.sink_group),
        "sink_max_attempts": _int(env, "SINK_MAX_ATTEMPTS", defaults.sink_max_attempts),
        "sink_retry_base_s": _float(env, "SINK_RETRY_BASE", defaults.sink_retry_base_s),
        "sink_retry_cap_s": _float(env, "SINK_RETRY_CAP", defaults.sink_retry_cap_s),
        "sink_throttle_base_s": _float(env, "SINK_THROTTLE_BASE", defaults.sink_throttle_base_s),
        "sink_throttle_cap_s": _float(env, "SINK_THROTTLE_CAP", defaults.sink_throttle_cap_s),
        # 0 would pause every tenant partition for good (resume is at half of it)
        "sink_max_pending": int(
            _at_least(
                _int(env, "SINK_MAX_PENDING", defaults.sink_max_pending), 1, "SINK_MAX_PENDING"
            )
        ),
        "sink_discovery_interval_s": _float(
            env, "SINK_DISCOVERY_INTERVAL", defaults.sink_discovery_interval_s
        ),
        "sink_commit_interval_s": _float(
            env, "SINK_COMMIT_INTERVAL", defaults.sink_commit_interval_s
        ),
        "sink_revoke_grace_s": _float(env, "SINK_REVOKE_GRACE", defaults.sink_revoke_grace_s),
        "sink_outcome_ttl_s": _int(env, "SINK_OUTCOME_TTL", defaults.sink_outcome_ttl_s),
        "openwhisk_allowed_hosts": _allowed_hosts(env),
        "openwhisk_env_credentials": {
            name: value for name, value in env.items() if name.startswith(OPENWHISK_ENV_PREFIX)
        },
    }


def _kafka_security(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """``STREAMAPP_*`` of the workers' own Kafka credentials and the ACL agent."""
    return {
        "kafka_sasl_username": _str(env, "KAFKA_SASL_USERNAME", ""),
        "kafka_sasl_password": env.get(ENV_PREFIX + "KAFKA_SASL_PASSWORD", ""),
        "kafka_sasl_password_file": Path(env[ENV_PREFIX + "KAFKA_SASL_PASSWORD_FILE"])
        if env.get(ENV_PREFIX + "KAFKA_SASL_PASSWORD_FILE")
        else None,
        "kafka_sasl_mechanism": _str(env, "KAFKA_SASL_MECHANISM", defaults.kafka_sasl_mechanism),
        "kafka_security_protocol": _str(env, "KAFKA_SECURITY_PROTOCOL", "").upper(),
        "kafka_ssl_cafile": Path(env[ENV_PREFIX + "KAFKA_SSL_CAFILE"])
        if env.get(ENV_PREFIX + "KAFKA_SSL_CAFILE")
        else None,
        "kafka_acls_enabled": _str(env, "KAFKA_ACLS", "false").lower() in ("1", "true", "yes"),
        "kafka_acl_interval_s": _at_least(
            _float(env, "KAFKA_ACL_INTERVAL", defaults.kafka_acl_interval_s),
            1.0,
            "KAFKA_ACL_INTERVAL",
        ),
        "kafka_acl_unmanaged_principals": _principals(env, "KAFKA_ACL_UNMANAGED_PRINCIPALS"),
    }


@functools.cache
def current() -> Settings:
    """This process's settings: the environment is read once, here; everything else receives
    this object (or takes it from ``streamapp.app``)."""
    return Settings.from_env()
