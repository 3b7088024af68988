"""``token inspect|verify``: delegated macaroons, checked as dCache would check them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from faust.cli import AppCommand, argument, option

from streamapp.app import app
from streamapp.cli_io import fail, write_json_line
from streamapp.delegation import strip_trailing_newline
from streamapp.domain import tokens


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
        fail("token verify", "--secret-file, --path and --activity are required")
    try:
        key = strip_trailing_newline(Path(secret_file).read_bytes())
    except OSError as exc:
        fail("token verify", f"cannot read {secret_file}: {exc.strerror}")
    try:
        moment = tokens.parse_instant(at) if at else datetime.now(UTC)
    except tokens.TokenError as exc:
        fail("token verify", str(exc))
    verdict = tokens.verify(text, key=key, path=path, activity=activity, at=moment, client_ip=ip)
    write_json_line(verdict.to_json())
    if not verdict.valid:
        raise SystemExit(1)
