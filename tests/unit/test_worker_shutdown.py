"""The worker's shutdown deadline (streamapp/worker.py) hooks mode's signal handling: these
fail if mode stops routing SIGTERM/SIGINT through the method the deadline overrides."""

from __future__ import annotations

import inspect
import signal
import threading

import mode
import pytest

from streamapp import worker
from streamapp.settings import Settings, SettingsError


def test_sigterm_and_sigint_go_through_schedule_shutdown() -> None:
    for handler in (mode.Worker._on_sigterm, mode.Worker._on_sigint):
        assert "self._schedule_shutdown(" in inspect.getsource(handler)
    assert "_schedule_shutdown" in vars(worker.Worker)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 30.0), ("12.5", 12.5), ("0", 30.0), ("-3", 30.0)],
)
def test_grace_from_the_environment(value: str, expected: float) -> None:
    assert Settings.from_env({"STREAMAPP_SHUTDOWN_GRACE": value}).shutdown_grace_s == expected


def test_a_grace_that_is_not_a_number_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="STREAMAPP_SHUTDOWN_GRACE='soon' is not a number"):
        Settings.from_env({"STREAMAPP_SHUTDOWN_GRACE": "soon"})


def test_the_signal_arms_one_deadline_that_exits_with_75(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    scheduled: list[signal.Signals] = []
    monkeypatch.setattr("streamapp.worker.current", lambda: Settings(shutdown_grace_s=0.2))
    monkeypatch.setattr("streamapp.worker.os._exit", fake_exit)
    monkeypatch.setattr("streamapp.worker.logging.shutdown", lambda: None)
    monkeypatch.setattr(
        mode.Worker, "_schedule_shutdown", lambda self, signum: scheduled.append(signum)
    )
    instance = worker.Worker.__new__(worker.Worker)  # no app, no loop: only the hook
    instance._deadline = None
    instance._schedule_shutdown(signal.SIGTERM)
    first = instance._deadline
    instance._schedule_shutdown(signal.SIGTERM)  # a second signal does not re-arm it
    assert instance._deadline is first
    assert scheduled == [signal.SIGTERM, signal.SIGTERM]  # faust's own shutdown still runs
    assert exited.wait(5)
    assert codes == [worker.EXIT_SHUTDOWN_DEADLINE] == [75]
