"""The operator's allow-list of OpenWhisk API hosts (``STREAMAPP_OPENWHISK_ALLOWED_HOSTS``).

A trigger's ``api_host`` must be in it: checked when a policy is applied (``disallowed_hosts``)
and again before every call (``AllowedHosts.allows``), so a policy cannot point a worker and
its credentials at a host of its choosing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from streamapp.domain.triggers import Trigger

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allow-list entry: ``host[:port]`` (either scheme; without a port, the scheme's
    default) or an origin ``http(s)://host[:port]`` (that scheme only)."""

    host: str
    port: int | None = None
    scheme: str | None = None

    def __str__(self) -> str:
        where = f"[{self.host}]" if ":" in self.host else self.host
        where += f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{where}" if self.scheme else where


def _host(name: str | None) -> str:
    return (name or "").lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """The OpenWhisk API hosts triggers may call (``STREAMAPP_OPENWHISK_ALLOWED_HOSTS``).
    Hosts are compared literally (no DNS): list names whose DNS you control. Empty: none."""

    rules: tuple[HostRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        """Comma-separated entries; ``ValueError`` names a bad one."""
        rules = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                parts = urlsplit(item if "://" in item else "//" + item)
                port = parts.port
            except ValueError:
                raise ValueError(f"{item!r}: bad port or host") from None
            if (
                ("://" in item and parts.scheme not in _DEFAULT_PORTS)
                or not _host(parts.hostname)
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or "@" in parts.netloc
                or "*" in item
            ):
                raise ValueError(f"{item!r} is not host[:port] or http(s)://host[:port]")
            rules.append(HostRule(_host(parts.hostname), port, parts.scheme or None))
        return cls(tuple(rules))

    def allows(self, api_host: str) -> bool:
        try:  # a URL urlsplit cannot read is allowed nowhere
            parts = urlsplit(api_host)
            scheme = parts.scheme.lower()
            if scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
                return False
            port = parts.port or _DEFAULT_PORTS[scheme]
            host = _host(parts.hostname)
        except ValueError:
            return False
        for rule in self.rules:
            if rule.scheme not in (None, scheme) or rule.host != host:
                continue
            if (rule.port if rule.port is not None else _DEFAULT_PORTS[scheme]) == port:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(str(rule) for rule in self.rules) or "(none)"


def disallowed_hosts(triggers: Sequence[Trigger], allowed: AllowedHosts) -> list[tuple[int, str]]:
    """(index, api_host) of every trigger whose host is not allowed: a policy naming one is
    refused when applied."""
    return [(i, t.api_host) for i, t in enumerate(triggers) if not allowed.allows(t.api_host)]
