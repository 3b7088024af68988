"""The sink's decisions, pure: what follows an invocation's outcome, and when a tenant's
partitions pause for back-pressure. The sink (sink/service.py) only carries them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamapp.domain.authorize import Delivery
from streamapp.domain.invocations import Outcome


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int  # calls that end RETRYABLE before the event is dead-lettered (>= 1)
    retry_failed: int  # extra calls after the action itself failed (the trigger's retry_failed)


@dataclass(frozen=True, slots=True)
class Attempts:
    """What went wrong so far for one (event, trigger): each count has its own budget."""

    failures: int = 0  # RETRYABLE outcomes (unreachable, 5xx, timeouts)
    action_failures: int = 0  # ACTION_FAILED outcomes (the action ran and failed)


@dataclass(frozen=True, slots=True)
class Retry:
    """Call again; after a back-off computed from ``backoff_tries`` failures, or at once when
    None (a throttled call: the tenant's lane itself waits the throttle out)."""

    backoff_tries: int | None


@dataclass(frozen=True, slots=True)
class Final:
    """The last call: its outcome is recorded as final (success, or the action's failure)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The last call, and the event goes to the dead letters (retrying cannot help, or the
    retry budget is spent); the dead letter is written before the final record."""


Step = Retry | Final | DeadLetter


def next_step(outcome: Outcome, attempts: Attempts, policy: RetryPolicy) -> tuple[Step, Attempts]:
    """What follows a call that ended with ``outcome``, and the counts including this call."""
    if outcome is Outcome.SUCCESS:
        return Final(), attempts
    if outcome is Outcome.THROTTLED:  # never dropped: throttling is the tenant's rate, not a fault
        return Retry(None), attempts
    if outcome is Outcome.ACTION_FAILED:
        counted = Attempts(attempts.failures, attempts.action_failures + 1)
        if counted.action_failures <= policy.retry_failed:
            return Retry(counted.action_failures), counted
        return Final(), counted
    if outcome is Outcome.RETRYABLE:
        counted = Attempts(attempts.failures + 1, attempts.action_failures)
        if counted.failures < policy.max_attempts:
            return Retry(counted.failures), counted
        return DeadLetter(), counted
    return DeadLetter(), attempts  # REJECTED: another call would be refused the same way


def should_pause(unfinished: int, limit: int, paused: bool) -> bool:
    """Whether a tenant's partition should be paused: at ``limit`` unfinished invocations it
    pauses, and it resumes only at half of it (a gap, so it does not flap at the limit)."""
    if unfinished >= limit:
        return True
    if unfinished <= limit // 2:
        return False
    return paused


def outgrown(event: dict[str, Any], delivery: Delivery) -> bool:
    """Whether ``event`` carries a token that ``delivery`` (the grant as it is now) withholds."""
    if "writetoken" in event and (not delivery.write or delivery.write_refused is not None):
        return True
    return "readtoken" in event and (
        not delivery.subscription.read or delivery.read_refused is not None
    )
