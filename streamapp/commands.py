"""Operator commands: ``streamapp <command>`` (faust's CLI; ``streamapp worker`` runs a worker).

Each command is the offline form of a service code path: same domain functions, no broker.
"""

from __future__ import annotations

import sys
from typing import Any

from faust.cli import AppCommand, argument, option

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
