"""``tenants credentials create|rotate|delete``: a tenant's SCRAM credential on the broker."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from aiokafka.errors import KafkaError
from faust.cli import AppCommand, argument, option

from streamapp import kafka_tools, tenant_credentials
from streamapp.app import app, settings
from streamapp.cli_io import fail
from streamapp.clients.kafka_admin import KafkaAdmin
from streamapp.domain.kafka_acls import default_principal
from streamapp.kafka_auth import KafkaAuthError, confluent_config
from streamapp.tables import TABLES


@app.command(
    argument("area", type=click.Choice(["credentials"])),
    argument("action", type=click.Choice(tenant_credentials.ACTIONS)),
    argument("tenant"),
    option(
        "--user",
        default=None,
        help="SCRAM user name; its principal User:<user> must be in the tenant's "
        "kafka_principals (default: the policy's only principal, else the tenant's name).",
    ),
    option(
        "--output",
        default=None,
        help="Write the credential to this new file (mode 0600) instead of printing it.",
    ),
)
async def tenants(  # noqa: PLR0917 - faust passes CLI options positionally
    self: AppCommand, area: str, action: str, tenant: str, user: str | None, output: str | None
) -> None:
    """Create, rotate or delete a tenant's SCRAM-SHA-512 credential on the broker (operator
    credentials from STREAMAPP_KAFKA_SASL_*); the secret is shown once, never stored. Only a
    principal the tenant's applied policy names, never one of the platform's."""
    try:
        with tenant_credentials.secret_file(Path(output) if output else None) as file:
            held = await kafka_tools.read_compacted(
                settings.bootstrap_servers, TABLES["tenant"].changelog_topic.get_topic_name()
            )
            applied = tenant_credentials.applied_tenants(held)
            name = user or default_principal(tenant, applied.policies).removeprefix("User:")
            admin = KafkaAdmin(confluent_config(settings))
            issued = await tenant_credentials.run(
                admin,
                action,
                tenant,
                name,
                tenants=applied.policies,
                reserved=settings.kafka_reserved_principals,
                removed=applied.removed,
            )
            if issued is None:
                print(f"deleted the credential of User:{name}", file=sys.stderr)
            elif file is not None:
                file.write(issued.render())
                print(f"{action}d User:{issued.user}: written to {output} (0600)", file=sys.stderr)
            else:
                sys.stdout.write(issued.render())
                print(f"{action}d User:{issued.user}: shown once, store it now", file=sys.stderr)
            if action != "create":
                print(
                    "the old password stops working for new connections now, and on open "
                    "tenants' connections at their next re-authentication "
                    "(connections.max.reauth.ms, docs/kafka-security.md)",
                    file=sys.stderr,
                )
    except (tenant_credentials.CredentialError, KafkaAuthError) as exc:
        fail(f"tenants {area} {action}", str(exc))
    except (KafkaError, TimeoutError) as exc:  # reading the applied policies
        fail(f"tenants {area} {action}", f"cannot read the tenant policies: {exc!r}")
