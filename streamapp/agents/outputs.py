"""What every producing agent needs: wait until a batch's outputs are on the broker, and never
leave half a batch when a worker is stopped."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Sequence
from typing import Any

log = logging.getLogger(__name__)

EXIT_OUTPUT_LOST = 70  # EX_SOFTWARE: the supervisor restarts us and we re-consume the input


async def wait_delivered(stage: str, pending: Sequence[Awaitable[Any]]) -> None:
    """Wait for every output; if one cannot be written, exit before the input is acknowledged
    (exiting hard skips faust's commit-on-stop, so the input is consumed again after restart)."""
    results = await asyncio.gather(*pending, return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        log.critical(
            "%s: %d of %d outputs could not be written (first: %r); exiting without "
            "acknowledging the input",
            stage,
            len(failures),
            len(results),
            failures[0],
        )
        logging.shutdown()
        os._exit(EXIT_OUTPUT_LOST)


async def finish_even_if_cancelled(work: Awaitable[None]) -> None:
    """Run ``work`` to the end even if the agent is cancelled (graceful stop): the stream
    acknowledges the batch when we return or raise, so half a batch must never be left."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
