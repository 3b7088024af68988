"""One invoke call of a trigger's OpenWhisk action: what it sends, the key that keeps it to one
success per event, whether the event's tokens last through it, and how its answer is judged
(``judge``: success, failed action, throttled, retryable or rejected) and retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

from streamapp.domain.instants import parse_aware
from streamapp.domain.redaction import excerpt
from streamapp.domain.triggers import Trigger

MAX_PARAMETER_BYTES: Final = 1_048_576  # OpenWhisk's limit on the invocation body

# --- the invocation body ------------------------------------------------------------------------

_TOKEN_ATTRIBUTES = ("readtoken", "writetoken", "writepath", "tokenexpires", "tokenerror")


def invocation_params(event: Mapping[str, Any], trigger: Trigger, tenant: str) -> dict[str, Any]:
    """The JSON body of the invoke call: references and tokens, never file contents.

    ``event`` is the CloudEvent without the token attributes; ``read``/``write`` hold the tokens
    and the URLs they open (when the trigger names the storage's base URL)."""
    plain = {k: v for k, v in event.items() if k not in _TOKEN_ATTRIBUTES}
    path = str(event.get("subject", ""))
    read: dict[str, Any] = {"path": path, "token": event.get("readtoken")}
    write: dict[str, Any] = {"path": event.get("writepath"), "token": event.get("writetoken")}
    if trigger.storage_url is not None:
        read["url"] = trigger.storage_url + quote(path)
        if write["path"]:
            write["url"] = trigger.storage_url + quote(str(write["path"]))
    return {
        **trigger.params,
        "event": plain,
        "read": read,
        "write": write,
        "streamapp": {
            "tenant": tenant,
            "trigger": trigger.name,
            "tokenexpires": event.get("tokenexpires"),
            "tokenerror": event.get("tokenerror"),
        },
    }


TOKEN_MARGIN_S: Final = 30  # time for the action to start and open the file


def tokens_expire_during_call(expires: Any, now: datetime, timeout_s: int) -> bool:
    """Would the event's tokens expire before a call made ``now`` could use them? Then they
    are minted again from the same grant (an event held back by an outage or throttling)."""
    if not isinstance(expires, str):
        return False  # no tokens (e.g. a deletion): nothing to renew
    try:
        moment = parse_aware(expires)
    except ValueError:
        return True
    return moment <= now + timedelta(seconds=timeout_s + TOKEN_MARGIN_S)


def idempotency_key(tenant: str, event_id: str, trigger: str) -> str:
    """One action per event per trigger: the key of the success record that prevents a second."""
    return f"{tenant}/{trigger}/{event_id}"


# --- judging one attempt -----------------------------------------------------------------------


class Outcome(StrEnum):
    SUCCESS = "success"  # accepted (202) or ran and succeeded (200)
    ACTION_FAILED = "action_failed"  # the action ran and failed: 502, or a result holding error
    THROTTLED = "throttled"  # 429: wait and try again, never dropped
    RETRYABLE = "retryable"  # 5xx, 408, 409, timeouts, connection errors: bounded retries
    REJECTED = "rejected"  # other 4xx: retrying cannot help; dead-letter at once


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    activation_id: str | None = None


def judge(status: int, body: Any, blocking: bool) -> Verdict:
    """Classify one HTTP answer of the invoke call (``body`` decoded JSON, or None)."""
    activation = body.get("activationId") if isinstance(body, Mapping) else None
    activation_id = activation if isinstance(activation, str) else None
    error = body.get("error") if isinstance(body, Mapping) else None
    if status == 202:
        return Verdict(Outcome.SUCCESS, "accepted", activation_id)
    if status == 200:
        if not blocking:
            return Verdict(Outcome.SUCCESS, "accepted", activation_id)
        response = body.get("response") if isinstance(body, Mapping) else None
        if isinstance(response, Mapping):
            result = response.get("result")
            if response.get("success") is False or (
                isinstance(result, Mapping) and "error" in result
            ):
                return Verdict(
                    Outcome.ACTION_FAILED,
                    excerpt(f"action failed: {response.get('status')}"),
                    activation_id,
                )
        elif isinstance(body, Mapping) and "error" in body:  # result=true answers the result only
            return Verdict(
                Outcome.ACTION_FAILED, "action failed: result holds error", activation_id
            )
        return Verdict(Outcome.SUCCESS, "completed", activation_id)
    if status == 502:
        return Verdict(
            Outcome.ACTION_FAILED, excerpt(f"action failed (502): {error!r}"), activation_id
        )
    if status == 429:
        return Verdict(Outcome.THROTTLED, excerpt(f"throttled: {error}"), activation_id)
    if status in (408, 409) or status >= 500:
        return Verdict(Outcome.RETRYABLE, excerpt(f"HTTP {status}: {error}"), activation_id)
    if 300 <= status < 400:  # never followed: a redirect could lead anywhere
        return Verdict(Outcome.REJECTED, f"HTTP {status}: redirect not followed", activation_id)
    return Verdict(Outcome.REJECTED, excerpt(f"HTTP {status}: {error}"), activation_id)


_THROTTLE: Final = re.compile(
    r"Too many (?P<kind>requests in the last minute|concurrent requests in flight)"
    r"\s*\(count:\s*(?P<count>\d+),\s*allowed:\s*(?P<allowed>\d+)\)"
)


@dataclass(frozen=True, slots=True)
class Throttle:
    kind: str  # "rate" | "concurrency" | "unknown"
    allowed: int | None = None


def parse_throttle(message: str) -> Throttle:
    """OpenWhisk's 429 messages name the limit hit and its value."""
    match = _THROTTLE.search(message or "")
    if match is None:
        return Throttle("unknown")
    kind = "rate" if match["kind"].startswith("requests") else "concurrency"
    return Throttle(kind, int(match["allowed"]))
