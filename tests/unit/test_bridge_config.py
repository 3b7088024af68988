"""The bridge's TOML configuration: defaults, and a clear error naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamapp.bridge.config import BridgeConfigError, parse_bridge_config

GOOD = {
    "frontends": [
        {
            "name": "desy",
            "url": "https://frontend.example:3880/",
            "token_file": "/run/secrets/t",
            "roots": ["/data/petra3/", "/data/flash"],
        }
    ]
}


def test_defaults_and_normalized_roots() -> None:
    config = parse_bridge_config(GOOD, default_raw_topic="dcache.events")
    assert config.raw_topic == "dcache.events"
    assert config.state_topic == "streamapp.dcache.state"
    [frontend] = config.frontends
    assert frontend.url == "https://frontend.example:3880"
    assert frontend.roots == ("/data/petra3", "/data/flash")
    assert frontend.token_file == Path("/run/secrets/t")
    assert frontend.max_watches == 10_000
    assert frontend.emit_existing is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"url": "ftp://x"}, "url"),
        ({"token_file": ""}, "token_file"),
        ({"roots": []}, "roots"),
        ({"roots": ["relative/dir"]}, "roots"),
        ({"max_watches": 0}, "max_watches"),
        ({"channel_timeout": "long"}, "channel_timeout"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    bad = {"frontends": [{**GOOD["frontends"][0], **change}]}
    with pytest.raises(BridgeConfigError, match=field):
        parse_bridge_config(bad, default_raw_topic="x")


def test_frontends_are_required_and_unique() -> None:
    with pytest.raises(BridgeConfigError, match="frontends"):
        parse_bridge_config({}, default_raw_topic="x")
    twice = {"frontends": GOOD["frontends"] * 2}
    with pytest.raises(BridgeConfigError, match="unique"):
        parse_bridge_config(twice, default_raw_topic="x")
