"""Operator commands: ``streamapp <command>`` (faust's CLI; ``streamapp worker`` runs a worker).

Each command is the offline form of a service code path: same domain functions, no broker.
"""

from __future__ import annotations

import sys
from typing import Any

from faust.cli import AppCommand, argument, option

from streamapp import kafka_tools
from streamapp.app import app, settings
from streamapp.cli_io import InputError, numbered_lines, write_json_line
from streamapp.domain import normalize as normalizing
from streamapp.domain.normalize import Normalized, Rejected, Skipped

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
        for number, raw in numbered_lines(file):
            for outcome in normalizing.normalize(raw, chosen, max_bytes=settings.max_record_bytes):
                write_json_line({"line": number, **_outcome_member(outcome)})
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
