"""``dcache-events``: the dCache storage-events bridge (docs/dcache-events.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
import tomllib
from pathlib import Path

import prometheus_client
from faust.cli import AppCommand, option

from streamapp.app import app, settings
from streamapp.bridge.config import BridgeConfigError, parse_bridge_config
from streamapp.bridge.dcache_events import run_bridges
from streamapp.cli_io import fail
from streamapp.kafka_auth import aiokafka_options


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
        fail("dcache-events", "--config or STREAMAPP_DCACHE_CONFIG is required")
    try:
        config = parse_bridge_config(
            tomllib.loads(Path(path).read_text()), default_raw_topic=settings.dcache_events_topic
        )
    except (OSError, tomllib.TOMLDecodeError, BridgeConfigError) as exc:
        fail("dcache-events", f"{path}: {exc}")
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
