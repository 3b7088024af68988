"""Event commands: ``normalize`` and ``authorize`` (offline: the same domain functions the
agents run, no broker), ``feed`` and ``watch`` (raw records to a topic, records of topics
printed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from faust.cli import AppCommand, argument, option

from streamapp import kafka_tools
from streamapp.app import app, settings
from streamapp.cli_io import InputError, fail, numbered_lines, write_json_line
from streamapp.domain import authorize as authorizing
from streamapp.domain import normalize as normalizing
from streamapp.domain.events import CanonicalEvent, EventFormatError, parse_canonical
from streamapp.domain.normalize import Normalized, Rejected, Skipped
from streamapp.seed import SeedError, build_index, load_seed

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
        fail("authorize", f"{len(exc.problems)} problem(s) in {tables_dir}:\n{exc}")
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
        fail("authorize", str(exc))


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
