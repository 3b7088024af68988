"""The faust worker streamapp runs, without faust's terminal spinner.

At ``-l warn`` faust installs a spinner that sets the root logger to DEBUG so it can spin on
every record: each ``log.debug()`` in faust and aiokafka then builds a record only to drop it.
Measured: 10-15 % of ingest throughput (docs/benchmarks.md, ``log-info``/``quiet-root``).
"""

from __future__ import annotations

import logging

import faust


class Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
