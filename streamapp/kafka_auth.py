"""How every Kafka client of streamapp authenticates: faust's own, the sink's, the SSE view's and
the outcome mirror's aiokafka consumers, the health check's admin client, the commands' clients
and the ACL agent's admin client (confluent-kafka). All from the one settings object.

SASL is on when ``STREAMAPP_KAFKA_SASL_USERNAME`` is set; the password comes from
``STREAMAPP_KAFKA_SASL_PASSWORD_FILE`` (first line; re-read on every client start) or
``STREAMAPP_KAFKA_SASL_PASSWORD``. The password is never logged, never in an exception message,
never in a repr (``Settings`` hides it; faust's ``SASLCredentials`` repr names the user only).
"""

from __future__ import annotations

import ssl
from typing import Any, Final

import faust

from streamapp.settings import Settings

MECHANISMS: Final = frozenset({"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"})
PROTOCOLS: Final = frozenset({"PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"})


class KafkaAuthError(RuntimeError):
    """The Kafka credentials are configured in a way that cannot work (the secret never shown)."""


def sasl_enabled(settings: Settings) -> bool:
    return bool(settings.kafka_sasl_username)


def _protocol(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol or (
        "SASL_PLAINTEXT" if sasl_enabled(settings) else "PLAINTEXT"
    )
    if protocol not in PROTOCOLS:
        raise KafkaAuthError(
            f"STREAMAPP_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
            f"{', '.join(sorted(PROTOCOLS))}"
        )
    if protocol != "PLAINTEXT" and not sasl_enabled(settings):
        raise KafkaAuthError(f"{protocol} needs STREAMAPP_KAFKA_SASL_USERNAME")
    return protocol


def _password(settings: Settings) -> str:
    if settings.kafka_sasl_password_file is not None:
        try:
            text = settings.kafka_sasl_password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise KafkaAuthError(
                f"cannot read the Kafka password file {settings.kafka_sasl_password_file}: "
                f"{exc.strerror}"
            ) from None
        password = text.splitlines()[0].strip() if text.strip() else ""
    else:
        password = settings.kafka_sasl_password
    if not password:
        raise KafkaAuthError(
            "STREAMAPP_KAFKA_SASL_USERNAME is set but no password is configured "
            "(STREAMAPP_KAFKA_SASL_PASSWORD_FILE or STREAMAPP_KAFKA_SASL_PASSWORD)"
        )
    return password


def _mechanism(settings: Settings) -> str:
    if settings.kafka_sasl_mechanism not in MECHANISMS:
        raise KafkaAuthError(
            f"STREAMAPP_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r} is not one of "
            f"{', '.join(sorted(MECHANISMS))}"
        )
    return settings.kafka_sasl_mechanism


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if _protocol(settings) != "SASL_SSL":
        return None
    cafile = None if settings.kafka_ssl_cafile is None else str(settings.kafka_ssl_cafile)
    return ssl.create_default_context(cafile=cafile)  # hostname checked, TLS ≥ 1.2


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """``broker_credentials`` of the faust app: None without SASL."""
    if _protocol(settings) == "PLAINTEXT":
        return None
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=_password(settings),
        mechanism=_mechanism(settings),
        ssl_context=ssl_context(settings),
    )


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's consumers, producers and admin client."""
    protocol = _protocol(settings)
    if protocol == "PLAINTEXT":
        return {}
    return {
        "security_protocol": protocol,
        "sasl_mechanism": _mechanism(settings),
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": _password(settings),
        "ssl_context": ssl_context(settings),
    }


def confluent_config(settings: Settings) -> dict[str, str]:
    """librdkafka configuration of the admin client (bootstrap servers included)."""
    config = {"bootstrap.servers": settings.bootstrap_servers}
    protocol = _protocol(settings)
    config["security.protocol"] = protocol.lower()
    if protocol != "PLAINTEXT":
        config["sasl.mechanism"] = _mechanism(settings)
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = _password(settings)
    if protocol == "SASL_SSL" and settings.kafka_ssl_cafile is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return config
