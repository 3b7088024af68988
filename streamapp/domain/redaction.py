"""What may be kept of what an endpoint (or an exception) produced, and of a tenant event.

Anything an endpoint answers reaches records and dead-letter headers only as an ``excerpt``
(bounded, control characters and secrets removed); a tenant event is dead-lettered only without
its tokens (``strip_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

# --- what an endpoint answers, as it may be kept ----------------------------------------------

EXCERPT_CHARS: Final = 256
_REDACTED: Final = "[redacted]"
_SECRET_PATTERNS: Final = (
    # an Authorization header or its value, however quoted
    re.compile(
        r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|macaroon)\s+)?[^\s\"',;}\]]*"
    ),
    re.compile(r"(?i)\b(?:basic|bearer|macaroon)\s+[A-Za-z0-9+/=._~-]+"),
    # an OpenWhisk credential (uuid:key)
    re.compile(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:\S+"),
    # a long base64 run: a macaroon, a JWT part or a key; real messages have none
    re.compile(r"[A-Za-z0-9+/_=-]{64,}"),
)


def excerpt(text: Any, *, secrets: Iterable[str | None] = (), limit: int = EXCERPT_CHARS) -> str:
    """What may be kept of text an endpoint (or an exception) produced: at most ``limit``
    characters, only printable ones (no newlines, escapes, bidi overrides, unassigned…), no
    ``secrets`` (the call's tokens, say), nothing that looks like a credential or a token."""
    raw = text if isinstance(text, str) else str(text)
    window = raw[: limit * 8]  # bounded work on a huge answer; later text is cut anyway
    for secret in secrets:
        if secret and len(secret) >= 4:
            window = window.replace(secret, _REDACTED)
    # control, format (bidi overrides, zero-width), surrogate, private or unassigned: a space
    cleaned = "".join(c if c.isprintable() else " " for c in window)
    cleaned = " ".join(cleaned.split())
    for pattern in _SECRET_PATTERNS:
        cleaned = pattern.sub(_REDACTED, cleaned)
    if len(cleaned) > limit or len(raw) > len(window):
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


# --- dead letters without tokens ---------------------------------------------------------------

TOKEN_FIELDS: Final = ("readtoken", "writetoken")
_TOKEN_TEXT: Final = re.compile(rb'("(?:readtoken|writetoken)"\s*:\s*)"(?:[^"\\]|\\.)*"')


def strip_tokens(value: bytes | None) -> tuple[bytes | None, bool]:
    """A tenant event without its tokens (``readtoken``, ``writetoken``), and whether any were
    removed: JSON objects lose the attributes (and are re-encoded); anything else has token
    values blanked where they appear as ``"readtoken": "…"``."""
    if not value:
        return value, False
    stripped = value
    try:
        decoded = orjson.loads(value)
    except (orjson.JSONDecodeError, RecursionError):
        decoded = None
    if isinstance(decoded, dict) and any(k in decoded for k in TOKEN_FIELDS):
        try:
            stripped = orjson.dumps({k: v for k, v in decoded.items() if k not in TOKEN_FIELDS})
        except (TypeError, RecursionError):
            stripped = value
    stripped = _TOKEN_TEXT.sub(rb'\1"[stripped]"', stripped)
    return stripped, stripped != value
