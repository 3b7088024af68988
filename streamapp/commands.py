"""Operator commands: ``streamapp <command>`` (faust's CLI; ``streamapp worker`` runs a worker).

Each command is the offline form of a service code path: same domain functions, no broker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson
import prometheus_client
from aiokafka.errors import KafkaError
from faust.cli import AppCommand, argument, option

from streamapp import kafka_tools, seed, tenant_credentials
from streamapp.admin_keys import generate_admin_keypair, load_private_key, sign_update
from streamapp.app import app, settings
from streamapp.bridge.config import BridgeConfigError, parse_bridge_config
from streamapp.bridge.dcache_events import run_bridges
from streamapp.cli_io import InputError, numbered_lines, write_json_line
from streamapp.clients.kafka_admin import KafkaAdmin
from streamapp.delegation import strip_trailing_newline
from streamapp.domain import authorize as authorizing
from streamapp.domain import normalize as normalizing
from streamapp.domain import tokens
from streamapp.domain.events import CanonicalEvent, EventFormatError, parse_canonical
from streamapp.domain.kafka_acls import default_principal
from streamapp.domain.normalize import Normalized, Rejected, Skipped
from streamapp.domain.topic_names import colliding_tenant, collision_reason
from streamapp.kafka_auth import KafkaAuthError, aiokafka_options, confluent_config
from streamapp.seed import SeedError, build_index, load_seed
from streamapp.tables import TABLES

CLI_SOURCE = "urn:streamapp:cli"


@app.command(
    argument("file", default="-", required=False),
    option("--source", default=None, help="CloudEvents source URI of the storage system."),
    option("--topic", default=None, help="Take the source configured for this raw topic."),
)
async def normalize(self: AppCommand, file: str, source: str | None, topic: str | None) -> None:
    """Normalize raw storage records (one per line) into canonical events as JSON lines."""
    chosen = source or (settings.source_for(topic) if topic else CLI_SOURCE)
    try:
        for number, raw in numbered_lines(file, max_bytes=settings.max_record_bytes):
            for outcome in normalizing.normalize(raw, chosen, max_bytes=settings.max_record_bytes):
                try:
                    write_json_line({"line": number, **_outcome_member(outcome)})
                except orjson.JSONEncodeError as exc:  # the contract: a line per outcome
                    write_json_line({"line": number, "rejected": f"not writable as JSON: {exc}"})
    except InputError as exc:
        print(f"streamapp normalize: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.stdout.flush()


def _outcome_member(outcome: Normalized | Skipped | Rejected) -> dict[str, Any]:
    if isinstance(outcome, Normalized):
        return {"event": outcome.event}
    if isinstance(outcome, Skipped):
        return {"skipped": outcome.reason}
    return {"rejected": outcome.reason}


@app.command(
    argument("file", default="-", required=False),
    option("--topic", required=True, help="Raw topic to publish the records to."),
)
async def feed(self: AppCommand, file: str, topic: str) -> None:
    """Publish raw records (one per line, as-is) to a raw topic: demos and replays."""
    try:
        count = await kafka_tools.feed_lines(
            settings.bootstrap_servers, topic, numbered_lines(file)
        )
    except InputError as exc:
        print(f"streamapp feed: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"fed {count} records to {topic}", file=sys.stderr)


@app.command(
    argument("topics", nargs=-1, required=True),
    option("--count", type=int, default=0, help="Stop after this many records (0: never)."),
    option("--idle", type=float, default=0.0, help="Stop after this many idle seconds."),
    option("--json/--no-json", "as_json", default=False, help="Print raw JSON lines."),
)
async def watch(
    self: AppCommand, topics: tuple[str, ...], count: int, idle: float, as_json: bool
) -> None:
    """Print records of topics from the beginning: canonical events, tenant streams and
    dead letters (reason and origin from their headers)."""
    await kafka_tools.watch(
        settings.bootstrap_servers,
        list(topics),
        count=count,
        idle_seconds=idle,
        render=kafka_tools.render_json if as_json else kafka_tools.render_human,
    )


# --- tables: seed data -----------------------------------------------------------------------


@app.command(
    argument("action", type=click.Choice(["apply", "diff", "keygen"])),
    argument("directory"),
    option("--key", "key_file", default="var/keys/admin.key", help="Admin private key (apply)."),
    option("--prune/--no-prune", default=False, help="Delete entries absent from DIR (apply)."),
)
async def tables(self: AppCommand, action: str, directory: str, key_file: str, prune: bool) -> None:
    """Seed data: `tables diff DIR`, `tables apply DIR [--key K] [--prune]`,
    `tables keygen KEYDIR` (a development admin key pair)."""
    if action == "keygen":
        try:
            private, public = generate_admin_keypair(Path(directory))
        except FileExistsError as exc:
            _fail("tables keygen", str(exc))
        print(
            f"private key (keep secret): {private}\npublic key (workers: "
            f"STREAMAPP_ADMIN_PUBLIC_KEYS): {public}"
        )
        return
    try:
        entries = load_seed(Path(directory))
    except SeedError as exc:
        _fail("tables", f"{len(exc.problems)} problem(s) in {directory}:\n{exc}")
    current = await _table_state()
    held_tenants = [name for kind, name in current if kind == "tenant"]
    for entry in entries:
        other = entry.kind == "tenant" and colliding_tenant(
            entry.name, held_tenants, settings.tenant_topic
        )
        if other:  # the workers would refuse it (audited); say so before publishing
            _fail("tables", collision_reason(entry.name, other, settings.tenant_topic))
    changes = seed.plan(entries, current, prune=prune)
    for change in changes.changes:
        print(change.describe())
    for kind, name in changes.absent:
        if not prune:
            print(f"- {kind} {name} (absent from {directory}; --prune deletes it)")
    print(f"{len(changes.changes)} to send, {len(changes.unchanged)} unchanged", file=sys.stderr)
    if action == "diff" or not changes.changes:
        return
    try:
        private_key = load_private_key(Path(key_file))
    except (OSError, ValueError) as exc:
        _fail("tables apply", f"cannot load admin key {key_file}: {exc}")
    topics = {"dataset": settings.dataset_updates_topic, "tenant": settings.tenant_updates_topic}
    messages = [
        (
            topics[change.kind],
            change.name.encode(),
            sign_update(
                change.kind,
                change.op,
                change.name,
                version=change.version,
                spec=change.spec,
                private_key=private_key,
            ).encode(),
        )
        for change in changes.changes
    ]
    bar = ProgressBar(len(messages))
    sent = await kafka_tools.publish(settings.bootstrap_servers, messages, on_sent=bar.advance)
    bar.close()
    print(f"published {sent} signed update(s)", file=sys.stderr)


async def _table_state() -> dict[tuple[str, str], Any]:
    state: dict[tuple[str, str], Any] = {}
    for kind, table in TABLES.items():
        entries = await kafka_tools.read_compacted(
            settings.bootstrap_servers, table.changelog_topic.get_topic_name()
        )
        state.update({(kind, name): entry for name, entry in entries.items() if entry})
    return state


class ProgressBar:
    """A text progress bar on stderr (redrawn in place on a terminal, summarized otherwise)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total, self.width, self.done = total, width, 0
        self.live = sys.stderr.isatty()

    def advance(self) -> None:
        self.done += 1
        if self.live:
            filled = self.width * self.done // max(self.total, 1)
            bar = "#" * filled + "-" * (self.width - filled)
            print(f"\r[{bar}] {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=sys.stderr)


def _fail(command: str, message: str, code: int = 2) -> NoReturn:
    print(f"streamapp {command}: {message}", file=sys.stderr)
    raise SystemExit(code)


# --- authorize: the policy simulator ---------------------------------------------------------


@app.command(
    argument("events", default="-", required=False),
    option("--tables", "tables_dir", required=True, help="Seed data directory (tables/)."),
)
async def authorize(self: AppCommand, events: str, tables_dir: str) -> None:
    """Simulate authorization of canonical events (JSON lines) against seed data."""
    try:
        index = build_index(load_seed(Path(tables_dir)))
    except SeedError as exc:
        _fail("authorize", f"{len(exc.problems)} problem(s) in {tables_dir}:\n{exc}")
    try:
        for number, raw in numbered_lines(events):
            for event in _events_of_line(number, raw):
                decision = authorizing.authorize(event, index)
                write_json_line(
                    {
                        "line": number,
                        "id": event["id"],
                        "deliveries": [_simulated(d) for d in decision.deliveries],
                        "denied": [
                            {"tenant": d.tenant, "reason": d.reason} for d in decision.denied
                        ],
                    }
                )
    except InputError as exc:
        _fail("authorize", str(exc))


def _simulated(delivery: authorizing.Delivery) -> dict[str, Any]:
    """A delivery as the simulator prints it: the write activities it would be granted on the
    output area (none for read shares), and why a subscription's write is withheld."""
    out: dict[str, Any] = {
        "tenant": delivery.tenant,
        "dataset": delivery.dataset.id,
        "write": list(delivery.write),
    }
    if delivery.write_refused is not None:
        out["write_refused"] = delivery.write_refused
    if delivery.read_refused is not None:
        out["read_refused"] = delivery.read_refused
    return out


def _events_of_line(number: int, raw: bytes) -> list[CanonicalEvent]:
    """A line of `streamapp normalize` output, or a bare canonical event."""
    try:
        value = orjson.loads(raw)
        if isinstance(value, dict) and "line" in value and "specversion" not in value:
            if "event" not in value:
                return []  # a skipped or rejected record: nothing to authorize
            value = value["event"]
        return [parse_canonical(value)]
    except (orjson.JSONDecodeError, EventFormatError) as exc:
        print(f"streamapp authorize: line {number}: not a canonical event: {exc}", file=sys.stderr)
        return []


# --- token: inspect and verify delegated macaroons -------------------------------------------


@app.command(
    argument("action", type=click.Choice(["inspect", "verify"])),
    argument("token"),
    option("--secret-file", default=None, help="Root key of the macaroon (verify)."),
    option("--path", "path", default=None, help="Namespace path to access (verify)."),
    option("--activity", default=None, help="Activity, e.g. DOWNLOAD (verify)."),
    option("--at", "at", default=None, help="ISO 8601 instant to verify at (default: now)."),
    option("--ip", "ip", default=None, help="Client address, checked against ip: caveats."),
)
async def token(  # noqa: PLR0917 - faust passes CLI options positionally
    self: AppCommand,
    action: str,
    token: str,
    secret_file: str | None,
    path: str | None,
    activity: str | None,
    at: str | None,
    ip: str | None,
) -> None:
    """Delegated macaroons: `token inspect TOKEN`, `token verify TOKEN --secret-file F --path P
    --activity A [--at ISO8601]`. TOKEN may be `-` (stdin)."""
    text = sys.stdin.read().strip() if token == "-" else token.strip()  # noqa: S105
    if action == "inspect":
        try:
            write_json_line(tokens.inspect(text))
        except tokens.TokenError as exc:
            write_json_line({"error": str(exc)})
            raise SystemExit(1) from None
        return
    if not (secret_file and path and activity):
        _fail("token verify", "--secret-file, --path and --activity are required")
    try:
        key = strip_trailing_newline(Path(secret_file).read_bytes())
    except OSError as exc:
        _fail("token verify", f"cannot read {secret_file}: {exc.strerror}")
    try:
        moment = tokens.parse_instant(at) if at else datetime.now(UTC)
    except tokens.TokenError as exc:
        _fail("token verify", str(exc))
    verdict = tokens.verify(text, key=key, path=path, activity=activity, at=moment, client_ip=ip)
    write_json_line(verdict.to_json())
    if not verdict.valid:
        raise SystemExit(1)


@app.command(
    option(
        "--config",
        "config_file",
        default=None,
        help="Bridge configuration (TOML); default $STREAMAPP_DCACHE_CONFIG.",
    ),
    option("--metrics-port", type=int, default=0, help="Serve /metrics on this port (0: off)."),
)
async def dcache_events(self: AppCommand, config_file: str | None, metrics_port: int) -> None:
    """Bridge dCache storage events (inotify over SSE) to the raw topic: recursive watches,
    resumable, resynchronised by listing after any gap (docs/dcache-events.md)."""
    path = config_file or (str(settings.dcache_config) if settings.dcache_config else None)
    if not path:
        _fail("dcache-events", "--config or STREAMAPP_DCACHE_CONFIG is required")
    try:
        config = parse_bridge_config(
            tomllib.loads(Path(path).read_text()), default_raw_topic=settings.dcache_events_topic
        )
    except (OSError, tomllib.TOMLDecodeError, BridgeConfigError) as exc:
        _fail("dcache-events", f"{path}: {exc}")
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(message)s", force=True
    )
    if metrics_port:
        prometheus_client.start_http_server(metrics_port, addr=settings.web_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_bridges(config, settings.bootstrap_servers, stop, aiokafka_options(settings))


# --- tenants: Kafka credentials ---------------------------------------------------------------


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
        _fail(f"tenants {area} {action}", str(exc))
    except (KafkaError, TimeoutError) as exc:  # reading the applied policies
        _fail(f"tenants {area} {action}", f"cannot read the tenant policies: {exc!r}")
