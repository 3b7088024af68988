"""``tables diff|apply|keygen``: the seed data in ``tables/`` as signed policy updates."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from faust.cli import AppCommand, argument, option

from streamapp import kafka_tools, seed
from streamapp.admin_keys import generate_admin_keypair, load_private_key, sign_update
from streamapp.app import app, settings
from streamapp.cli_io import fail
from streamapp.domain.topic_names import colliding_tenant, collision_reason
from streamapp.seed import SeedError, load_seed
from streamapp.tables import TABLES


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
            fail("tables keygen", str(exc))
        print(
            f"private key (keep secret): {private}\npublic key (workers: "
            f"STREAMAPP_ADMIN_PUBLIC_KEYS): {public}"
        )
        return
    try:
        entries = load_seed(Path(directory))
    except SeedError as exc:
        fail("tables", f"{len(exc.problems)} problem(s) in {directory}:\n{exc}")
    current = await _table_state()
    held_tenants = [name for kind, name in current if kind == "tenant"]
    for entry in entries:
        other = entry.kind == "tenant" and colliding_tenant(
            entry.name, held_tenants, settings.tenant_topic
        )
        if other:  # the workers would refuse it (audited); say so before publishing
            fail("tables", collision_reason(entry.name, other, settings.tenant_topic))
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
        fail("tables apply", f"cannot load admin key {key_file}: {exc}")
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
