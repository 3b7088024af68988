"""A tenant reads its own event stream straight from Kafka (SASL/SCRAM-SHA-512, aiokafka).

    python examples/tenant_consumer.py --bootstrap 127.0.0.1:19095 \\
        --tenant petra3-p02 --credentials p02.credential [--group monitor] [--tls-ca ca.pem]

The credential file is what `streamapp tenants credentials create` wrote (``username=`` and
``password=`` lines, mode 0600). The consumer group is ``<tenant>:<group>``: the broker lets a
tenant use only groups with its own prefix. Offsets are committed after each batch is handled, so
a restart resumes where the group left off (at least once: deduplicate on the event ``id``).
Nothing else is readable with this credential: any other topic or group is refused by the
broker with an authorization error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError


def read_credential(path: Path) -> tuple[str, str]:
    fields = dict(
        line.split("=", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    return fields["username"], fields["password"]


def handle(event: dict[str, object]) -> None:
    """Your processing. The event carries dCache macaroons (readtoken/writetoken) for its file."""
    print(event.get("type"), event.get("subject"), event.get("dataset"))


async def consume(args: argparse.Namespace) -> None:
    user, password = read_credential(Path(args.credentials))
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    consumer = AIOKafkaConsumer(
        args.topic_pattern.format(tenant=args.tenant),
        bootstrap_servers=args.bootstrap,
        security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
        ssl_context=tls,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=user,
        sasl_plain_password=password,
        group_id=f"{args.tenant}:{args.group}",  # the tenant's prefix: '<tenant>:'
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # first run only; afterwards the group's offsets
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                for record in records:
                    handle(json.loads(record.value))
            if batches:
                await consumer.commit()  # after handling: a restart resumes here
    except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:
        raise SystemExit(f"refused by the broker (access revoked or wrong group?): {exc}") from None
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="the tenants' listener host:port")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--credentials", required=True, help="file with username=/password=")
    parser.add_argument("--group", default="consumer", help="group name after '<tenant>:'")
    parser.add_argument("--topic-pattern", default="tenant.{tenant}.events")
    parser.add_argument("--tls-ca", default=None, help="CA bundle: connect with SASL_SSL")
    asyncio.run(consume(parser.parse_args()))


if __name__ == "__main__":
    main()
