"""Helpers shared by the tests, the benchmarks and the demo (one copy instead of one per file):
a free loopback port, topics created on the broker, polling until a condition holds, and a
WLCG-profile bearer token."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.hazmat.primitives.asymmetric import ec

TOPIC_ALREADY_EXISTS = 36  # Kafka's error code (aiokafka.errors.TopicAlreadyExistsError)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def create_topics(
    bootstrap: str,
    names: Sequence[str],
    partitions: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    *,
    exist_ok: bool = False,
) -> None:
    """Create ``names`` with ``partitions`` partitions each and replication factor 1;
    ``configs``: topic configs by topic name (a topic not in it gets the broker's defaults).

    Raises RuntimeError when the broker refuses any of them (a topic that already exists
    too, unless ``exist_ok``)."""
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=dict(configs.get(name, {})),
                )
                for name in names
            ]
        )
    finally:
        await admin.close()
    ignored = {0, TOPIC_ALREADY_EXISTS} if exist_ok else {0}
    # (topic, error code[, error message]) per topic
    errors = [error for error in response.topic_errors if error[1] not in ignored]
    if errors:
        raise RuntimeError(f"could not create topics: {errors}")


async def wait_until(
    condition: Callable[[], bool],
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole wait
    what: str,
    describe: Callable[[], str] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``condition`` every ``interval`` seconds until it holds; after ``timeout`` seconds
    an AssertionError "timed out waiting for ``what``", with ``describe()`` appended (what
    was seen instead) when given."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out waiting for {what}{seen}")
        await asyncio.sleep(interval)


def wlcg_token(
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    audience: str,
    groups: list[str],
    *,
    kid: str = "k1",
    lifetime_s: int = 600,
    **overrides: Any,
) -> str:
    """An ES256 bearer token of the WLCG profile (``iss``, ``sub``, ``aud``, ``exp``, ``iat``,
    ``wlcg.ver``, ``wlcg.groups``) signed with ``key`` under key id ``kid``, valid from now for
    ``lifetime_s`` seconds; ``overrides`` replace or add claims (hostile ones too)."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "someone",
        "aud": audience,
        "exp": now + lifetime_s,
        "iat": now,
        "wlcg.ver": "1.0",
        "wlcg.groups": groups,
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
