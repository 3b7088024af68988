"""The JSON types a WLCG Common JWT profile token's header and claims must have, checked on the
unverified token (``access.authenticate``) before pyjwt or we look at any claim."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

# A JWT's NumericDate claims: seconds since the epoch, a JSON number (never a bool or a string)
_MAX_NUMERIC_DATE: Final = 2**53


def _numeric_date(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= _MAX_NUMERIC_DATE
    )


def malformed_reason(header: Mapping[str, Any], claims: Any) -> str | None:
    """Why the token's header or claims have a type no valid token has (None if they do not).

    Checked before anything compares or converts them, so a hostile type (``iat: "yesterday"``,
    a bool, NaN, a list for ``iss``) is a 401 with this reason, never an exception of ours or
    pyjwt's."""
    if not isinstance(header.get("alg"), str):
        return "header alg is not a string"
    if "kid" in header and not isinstance(header["kid"], str):
        return "header kid is not a string"
    if not isinstance(claims, Mapping):
        return "the claims are not a JSON object"
    for name in ("exp", "iat", "nbf"):
        if name in claims and not _numeric_date(claims[name]):
            return f"{name} is not a NumericDate"
    for name in ("iss", "sub"):
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            return f"{name} is not a non-empty string"
    aud = claims.get("aud")
    if "aud" in claims and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        return "aud is neither a string nor a list of strings"
    for name in ("scope", "wlcg.ver", "jti"):
        if name in claims and not isinstance(claims[name], str):
            return f"{name} is not a string"
    groups = claims.get("wlcg.groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return "wlcg.groups is not a list of strings"
    return None
