"""The faust worker streamapp runs: no terminal spinner, repeated errors aggregated, and a hard
deadline on shutdown.

At ``-l warn`` faust installs a spinner that sets the root logger to DEBUG so it can spin on
every record: each ``log.debug()`` in faust and aiokafka then builds a record only to drop it.
Measured: 10-15 % of ingest throughput (docs/benchmarks.md, ``log-info``/``quiet-root``).

While the broker is away aiokafka logs the same errors thousands of times a second: the root
handlers get a :class:`streamapp.logfilter.RepeatFilter` (the first few through, then "N
similar messages suppressed").

Shutdown: on SIGTERM/SIGINT faust stops the agents, commits what they finished and stops the
consumer and producer — which can wait on the broker for minutes (a producer flush during an
outage; faust's producer request timeout is 1,200 s). A watchdog thread started with the
signal ends the process ``STREAMAPP_SHUTDOWN_GRACE`` seconds later whatever faust is doing
(exit status 75). Nothing is lost by that: an offset is committed only after the record's
outputs are on the broker, so what was not committed is consumed again by the next owner
(docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import faust

from streamapp import logfilter
from streamapp.settings import current

EXIT_SHUTDOWN_DEADLINE = 75  # EX_TEMPFAIL: stopped by the deadline, not by faust

log = logging.getLogger(__name__)


def shutdown_grace_s() -> float:
    """``STREAMAPP_SHUTDOWN_GRACE`` (settings.py; 30 s by default, non-positive means that)."""
    return current().shutdown_grace_s


class Worker(faust.Worker):
    _deadline: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        logfilter.install(logger)

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if self._deadline is None:
            grace = shutdown_grace_s()
            self._deadline = threading.Timer(grace, _deadline_passed, args=(grace, time.time()))
            self._deadline.daemon = True
            self._deadline.start()
            log.info("shutting down: %s; at most %.0f s", signal.name, grace)
        super()._schedule_shutdown(signal)


def _deadline_passed(grace_s: float, since: float) -> None:
    log.critical(
        "shutdown did not finish within %.0f s of the signal (at %.3f); exiting now: committed "
        "offsets stand, records not committed are consumed again by the next owner",
        grace_s,
        since,
    )
    logfilter.flush(logging.getLogger())
    logging.shutdown()
    os._exit(EXIT_SHUTDOWN_DEADLINE)
