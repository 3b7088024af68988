"""The repeat filter the worker installs on its log handlers (aiokafka's reconnect loop logged
~35,000 ERROR lines per worker during a 10 s broker restart)."""

from __future__ import annotations

import logging

import pytest

from streamapp import logfilter
from streamapp.logfilter import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name} {record.getMessage()}")


@pytest.fixture
def setup() -> tuple[logging.Logger, Capture, Clock]:
    clock = Clock()
    handler = Capture()
    handler.addFilter(RepeatFilter(handler.handle, burst=3, interval_s=10, clock=clock))
    logger = logging.getLogger("test.logfilter.aiokafka")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, handler, clock


def test_a_storm_of_one_error_is_cut_to_the_burst_and_one_summary(
    setup: tuple[logging.Logger, Capture, Clock],
) -> None:
    logger, handler, clock = setup
    for n in range(3400):  # one second of aiokafka's reconnect loop
        logger.error("Unable connect to node with id %s: %r", 1, f"refused {n}")
    assert handler.lines == [
        f"ERROR test.logfilter.aiokafka Unable connect to node with id 1: 'refused {n}'"
        for n in range(3)
    ]
    clock.now += 10
    logger.info("broker back")
    assert handler.lines[3:] == [
        "ERROR test.logfilter.aiokafka 3397 similar messages suppressed in the last 10 s: "
        "Unable connect to node with id %s: %r",
        "INFO test.logfilter.aiokafka broker back",
    ]
    # a new interval: the message passes again
    logger.error("Unable connect to node with id %s: %r", 1, "again")
    assert handler.lines[-1].endswith("'again'")


def test_different_messages_levels_and_loggers_are_counted_apart(
    setup: tuple[logging.Logger, Capture, Clock],
) -> None:
    logger, handler, _clock = setup
    other = logging.getLogger("test.logfilter.aiokafka.other")
    for _ in range(5):
        logger.error("a %s", 1)
        logger.warning("a %s", 1)
        logger.error("b")
        other.error("a %s", 1)  # propagates to the same handler, another logger name
    assert len(handler.lines) == 4 * 3


def test_info_and_critical_are_never_limited(
    setup: tuple[logging.Logger, Capture, Clock],
) -> None:
    logger, handler, _clock = setup
    for _ in range(50):
        logger.info("Worker ready")
        logger.critical("output lost")
    assert len(handler.lines) == 100


def test_flush_reports_what_is_still_counted(
    setup: tuple[logging.Logger, Capture, Clock],
) -> None:
    logger, handler, clock = setup
    for _ in range(10):
        logger.error("x")
    clock.now += 2
    handler.filters[0].flush()  # type: ignore[union-attr]
    assert handler.lines[-1] == (
        "ERROR test.logfilter.aiokafka 7 similar messages suppressed in the last 2 s: x"
    )
    handler.filters[0].flush()  # type: ignore[union-attr]
    assert len(handler.lines) == 4  # nothing left to report


def test_install_adds_one_filter_per_handler_once() -> None:
    root = logging.Logger("root-under-test")
    first, second = Capture(), Capture()
    root.addHandler(first)
    root.addHandler(second)
    logfilter.install(root)
    logfilter.install(root)
    assert [len(h.filters) for h in (first, second)] == [1, 1]
    for _ in range(20):
        root.error("storm")
    assert len(first.lines) == len(second.lines) == 5
    logfilter.flush(root)
    assert first.lines[-1].endswith("15 similar messages suppressed in the last 0 s: storm")
