"""Repeated warnings and errors, aggregated: the first few through, then one summary line.

While the broker restarts, aiokafka's reconnect loop logs the same few errors thousands of
times a second (measured: ~35,000 ERROR lines per worker in a 10 s restart). The worker
installs :class:`RepeatFilter` on the root logger's handlers: per (logger, level, message
template) at most ``burst`` records pass in each ``interval``; the rest are counted and, once
the interval is over, reported as one line ``N similar messages suppressed in the last S s:
<template>`` (written with the next record any logger emits, or by :meth:`flush`).

Only WARNING and ERROR are limited: INFO and DEBUG are the operator's choice of level, and
CRITICAL always passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[str, int, str]
SUMMARY_ATTRIBUTE = "streamapp_suppressed_summary"


@dataclass
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None


class RepeatFilter(logging.Filter):
    """A handler filter; one instance per handler (its summaries go to that handler)."""

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        burst: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._emit = emit
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[Key, _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY_ATTRIBUTE, False):
            return True
        now = self._clock()
        summaries = self._expired(now)
        passes = True
        if logging.WARNING <= record.levelno < logging.CRITICAL:
            key = (record.name, record.levelno, str(record.msg))
            with self._lock:
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = _Window(started=now)
                if window.passed < self.burst:
                    window.passed += 1
                else:
                    window.suppressed += 1
                    window.last = record
                    passes = False
        for summary in summaries:
            self._emit(summary)
        return passes

    def flush(self) -> None:
        """Report every window with suppressed records now (e.g. at shutdown)."""
        for summary in self._expired(None):
            self._emit(summary)

    def _expired(self, now: float | None) -> list[logging.LogRecord]:
        """Close the windows older than the interval (all if ``now`` is None): summaries."""
        out = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now is not None and now - window.started < self.interval_s:
                    continue
                del self._windows[key]
                if window.suppressed and window.last is not None:
                    elapsed = (now if now is not None else self._clock()) - window.started
                    out.append(_summary(window.last, window.suppressed, elapsed))
        return out


def _summary(last: logging.LogRecord, count: int, elapsed_s: float) -> logging.LogRecord:
    record = logging.LogRecord(
        name=last.name,
        level=last.levelno,
        pathname=last.pathname,
        lineno=last.lineno,
        msg="%d similar messages suppressed in the last %.0f s: %s",
        args=(count, elapsed_s, str(last.msg)[:300]),
        exc_info=None,
    )
    setattr(record, SUMMARY_ATTRIBUTE, True)
    return record


def install(logger: logging.Logger, *, burst: int = 5, interval_s: float = 10.0) -> None:
    """Add a :class:`RepeatFilter` to each handler of ``logger`` (the root logger) once."""
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter(handler.handle, burst=burst, interval_s=interval_s))


def flush(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        for f in handler.filters:
            if isinstance(f, RepeatFilter):
                f.flush()
