"""The sink's pure decisions (streamapp/domain/sink_rules.py): retries, dead letters, finals,
and back-pressure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamapp.domain.invocations import Outcome
from streamapp.domain.sink_rules import (
    Attempts,
    DeadLetter,
    Final,
    Retry,
    RetryPolicy,
    Step,
    next_step,
    should_pause,
)
from streamapp.settings import Settings, SettingsError

POLICY = RetryPolicy(max_attempts=3, retry_failed=1)


@pytest.mark.parametrize(
    ("outcome", "before", "step", "after"),
    [
        (Outcome.SUCCESS, Attempts(), Final(), Attempts()),
        (Outcome.SUCCESS, Attempts(2, 1), Final(), Attempts(2, 1)),
        (Outcome.THROTTLED, Attempts(), Retry(None), Attempts()),
        (Outcome.THROTTLED, Attempts(2, 1), Retry(None), Attempts(2, 1)),
        (Outcome.RETRYABLE, Attempts(), Retry(1), Attempts(1, 0)),
        (Outcome.RETRYABLE, Attempts(1, 0), Retry(2), Attempts(2, 0)),
        (Outcome.RETRYABLE, Attempts(2, 0), DeadLetter(), Attempts(3, 0)),
        (Outcome.ACTION_FAILED, Attempts(), Retry(1), Attempts(0, 1)),
        (Outcome.ACTION_FAILED, Attempts(0, 1), Final(), Attempts(0, 2)),
        (Outcome.REJECTED, Attempts(), DeadLetter(), Attempts()),
        (Outcome.REJECTED, Attempts(1, 1), DeadLetter(), Attempts(1, 1)),
    ],
)
def test_next_step(outcome: Outcome, before: Attempts, step: Step, after: Attempts) -> None:
    assert next_step(outcome, before, POLICY) == (step, after)


def test_one_attempt_only_dead_letters_the_first_retryable_failure() -> None:
    assert next_step(Outcome.RETRYABLE, Attempts(), RetryPolicy(1, 0)) == (
        DeadLetter(),
        Attempts(1, 0),
    )


def test_no_retry_of_a_failed_action_by_default() -> None:
    assert next_step(Outcome.ACTION_FAILED, Attempts(), RetryPolicy(3, 0))[0] == Final()


@given(
    st.lists(st.sampled_from(list(Outcome)), max_size=60),
    st.integers(1, 6),
    st.integers(0, 4),
)
def test_every_sequence_ends_within_its_budgets(
    outcomes: list[Outcome], max_attempts: int, retry_failed: int
) -> None:
    """Whatever the calls answer, a retry never goes past either budget, the budgets are
    independent, throttling never ends the event, and only REJECTED or a spent RETRYABLE
    budget dead-letters."""
    policy = RetryPolicy(max_attempts, retry_failed)
    attempts = Attempts()
    for outcome in outcomes:
        step, attempts = next_step(outcome, attempts, policy)
        assert attempts.failures <= max_attempts
        assert attempts.action_failures <= retry_failed + 1
        if isinstance(step, DeadLetter):
            assert outcome is Outcome.REJECTED or (
                outcome is Outcome.RETRYABLE and attempts.failures == max_attempts
            )
            return
        if isinstance(step, Final):
            assert outcome in (Outcome.SUCCESS, Outcome.ACTION_FAILED)
            return
        if outcome is Outcome.THROTTLED:
            assert step == Retry(None)
        else:
            assert step.backoff_tries is not None
            assert step.backoff_tries >= 1


@pytest.mark.parametrize(
    ("unfinished", "limit", "paused", "expected"),
    [
        (0, 10, False, False),
        (9, 10, False, False),
        (10, 10, False, True),  # at the limit: pause
        (11, 10, True, True),
        (6, 10, True, True),  # above half: stays paused
        (5, 10, True, False),  # at half: resume
        (6, 10, False, False),  # between half and the limit, not paused: stays running
        (1, 1, False, True),
        (0, 1, True, False),
    ],
)
def test_should_pause(unfinished: int, limit: int, paused: bool, expected: bool) -> None:
    assert should_pause(unfinished, limit, paused) is expected


@given(st.lists(st.integers(0, 40), max_size=80), st.integers(1, 30))
def test_back_pressure_pauses_at_the_limit_and_resumes_at_half(
    series: list[int], limit: int
) -> None:
    paused = False
    for unfinished in series:
        now = should_pause(unfinished, limit, paused)
        if unfinished >= limit:
            assert now
        if unfinished <= limit // 2:
            assert not now
        if not paused and now:
            assert unfinished >= limit  # only the limit starts a pause
        if paused and not now:
            assert unfinished <= limit // 2  # only half of it ends one
        paused = now


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_pending_limit_below_one_is_refused(value: str) -> None:
    """With a limit of 0 every tenant partition would pause and never resume."""
    with pytest.raises(SettingsError, match="STREAMAPP_SINK_MAX_PENDING"):
        Settings.from_env({"STREAMAPP_SINK_MAX_PENDING": value})


def test_a_pending_limit_of_one_is_accepted() -> None:
    assert Settings.from_env({"STREAMAPP_SINK_MAX_PENDING": "1"}).sink_max_pending == 1
