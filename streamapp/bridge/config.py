"""The bridge's configuration (TOML): which frontends, which trees, where to write.

```toml
raw_topic = "dcache.events"                 # default: STREAMAPP_DCACHE_EVENTS_TOPIC
state_topic = "streamapp.dcache.state"      # compacted; the bridge's place

[[frontends]]
name = "xfel"                               # metrics label and state key: [a-z0-9_-]
url = "https://dcache-frontend.example.org:3880"
token_file = "/run/secrets/dcache-xfel.token"  # OIDC access token or macaroon; re-read on change
roots = ["/pnfs/xfel.eu/exfel/raw"]         # watched recursively
max_watches = 10000                         # directories; beyond: an error, that subtree unwatched
channel_timeout = 3600                      # seconds a disconnected channel survives in dCache
emit_existing = false                       # first start: record what exists, do not emit it
competing_backoff = 300                     # seconds to stay away after COMPETING_CLIENT
root_retry = 10                             # seconds between looks for a root not (yet) there
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamapp.domain.paths import PathError, normalize_absolute_path

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class BridgeConfigError(ValueError):
    """The bridge configuration cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    name: str
    url: str
    token_file: Path
    roots: tuple[str, ...]
    max_watches: int = 10_000
    channel_timeout_s: int = 3600
    emit_existing: bool = False
    competing_backoff_s: float = 300.0
    root_retry_s: float = 10.0


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    raw_topic: str
    state_topic: str
    frontends: tuple[FrontendConfig, ...]


def parse_bridge_config(obj: Any, *, default_raw_topic: str) -> BridgeConfig:
    if not isinstance(obj, Mapping):
        raise BridgeConfigError("bridge config: must be a table")
    frontends = []
    for i, item in enumerate(obj.get("frontends") or []):
        where = f"frontends[{i}]"
        if not isinstance(item, Mapping):
            raise BridgeConfigError(f"{where}: must be a table")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise BridgeConfigError(f"{where}.name: lower-case letters, digits, - and _")
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BridgeConfigError(f"{where}.url: the frontend's http(s) base URL")
        token_file = item.get("token_file")
        if not isinstance(token_file, str) or not token_file:
            raise BridgeConfigError(f"{where}.token_file: the bearer token's file is required")
        roots = item.get("roots")
        if not isinstance(roots, list) or not roots:
            raise BridgeConfigError(f"{where}.roots: at least one directory to watch")
        try:
            normalized = tuple(normalize_absolute_path(r) for r in roots)
        except (PathError, TypeError, AttributeError) as exc:
            raise BridgeConfigError(f"{where}.roots: {exc}") from None
        frontends.append(
            FrontendConfig(
                name=name,
                url=url.rstrip("/"),
                token_file=Path(token_file),
                roots=normalized,
                max_watches=_positive(item, "max_watches", 10_000, where),
                channel_timeout_s=_positive(item, "channel_timeout", 3600, where),
                emit_existing=bool(item.get("emit_existing", False)),
                competing_backoff_s=float(_positive(item, "competing_backoff", 300, where)),
                root_retry_s=float(_positive(item, "root_retry", 10, where)),
            )
        )
    if not frontends:
        raise BridgeConfigError("frontends: at least one frontend is required")
    if len({f.name for f in frontends}) != len(frontends):
        raise BridgeConfigError("frontends: names must be unique")
    return BridgeConfig(
        raw_topic=str(obj.get("raw_topic") or default_raw_topic),
        state_topic=str(obj.get("state_topic") or "streamapp.dcache.state"),
        frontends=tuple(frontends),
    )


def _positive(item: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BridgeConfigError(f"{where}.{key}: a positive integer")
    return value
