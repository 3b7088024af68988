"""What every producing agent needs for at-least-once output.

faust acknowledges an input once the agent moves on to the next one, and before it commits
offsets it flushes the producer: every output sent while handling an input is on the broker
before that input's offset is committed. What remains is an output the broker refuses for good
(after aiokafka's retries): ``exit_if_undelivered`` stops the worker at once, before the commit
that would cover its input, so the input is consumed again after a restart."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)

EXIT_OUTPUT_LOST = 70  # EX_SOFTWARE: the supervisor restarts us and we re-consume the input


def exit_if_undelivered(stage: str, future: Any) -> None:
    """Watch one output: if it cannot be written, exit before its input is committed."""

    def check(done: Any) -> None:
        if done.cancelled() or done.exception() is None:
            return
        log.critical(
            "%s: an output could not be written (%r); exiting without committing its input",
            stage,
            done.exception(),
        )
        logging.shutdown()
        os._exit(EXIT_OUTPUT_LOST)

    future.add_done_callback(check)


async def finish_even_if_cancelled(work: Awaitable[None]) -> None:
    """Run ``work`` to the end even if the agent is cancelled (graceful stop): the stream
    acknowledges the batch when we return or raise, so half a batch must never be left."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
