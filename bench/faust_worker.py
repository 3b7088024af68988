"""``python -m bench.faust_worker [faust options] worker ...``: the streamapp worker with
patches applied, to isolate the ingest agent and to measure candidate code changes before
anyone edits ``streamapp/``.

``BENCH_PATCHES`` is a comma-separated list of:

- ``ingest-only``: drop every agent but ``ingest`` before the worker starts (the authorization
  agent reads every event ingest writes and would share the worker's one core with it);
- ``quiet-root``: once the worker has started, set the root logger back to the ``-l`` level.
  With ``-l warn`` (faust's default) faust's terminal spinner sets the root logger to DEBUG and
  adds a DEBUG handler (``faust.worker.Worker._setup_spinner_handler``), so every
  ``log.debug(...)`` in faust, mode and aiokafka builds a LogRecord (stack walk included) for
  nothing; ``-l info`` disables the spinner and does not have the problem;
- ``inline-await``: the ingest agent awaits ``ingest_record(...)`` directly instead of through
  ``finish_even_if_cancelled`` (a Task and a shield per event). Measurement only: that guard is
  load-bearing (faust's stream acknowledges the current event even when the agent is cancelled
  mid-record), so this shows what the guard costs, not a change to make as is;
- ``report``: log the agents and the effective level of the hot loggers at start-up.

With no patch this is exactly ``python -m streamapp``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable

from streamapp.app import app

HOT_LOGGERS = ("aiokafka.producer.producer", "faust.topics", "mode", "")
PATCHES = frozenset(p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p)
KNOWN = frozenset({"ingest-only", "quiet-root", "inline-await", "report"})
INGEST_AGENT = "streamapp.agents.ingest.ingest"
log = logging.getLogger("bench.faust_worker")


def _report(when: str) -> None:
    levels = {
        name or "root": logging.getLevelName(logging.getLogger(name).getEffectiveLevel())
        for name in HOT_LOGGERS
    }
    log.warning("%s: agents %s, effective levels %s", when, sorted(app.agents), levels)


@app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
async def _runtime_patches() -> None:
    """Runs when the app starts, after the worker has configured logging."""
    if "report" in PATCHES:
        _report("before")
    if "quiet-root" in PATCHES:
        root = logging.getLogger()
        root.setLevel(max((h.level for h in root.handlers if h.level), default=logging.WARNING))
    if "report" in PATCHES:
        _report("after")


def _patch_inline_await() -> None:
    from streamapp.agents import ingest  # noqa: PLC0415 - imported only when patching

    if not hasattr(ingest, "finish_even_if_cancelled"):
        raise SystemExit("inline-await: streamapp.agents.ingest has no finish_even_if_cancelled")

    async def inline(work: Awaitable[None]) -> None:
        await work

    ingest.finish_even_if_cancelled = inline


def main() -> None:
    unknown = PATCHES - KNOWN
    if unknown:
        raise SystemExit(f"unknown BENCH_PATCHES: {sorted(unknown)}")
    if "ingest-only" in PATCHES:
        app.discover()  # import every agent module now; faust's own discovery then adds nothing
        if INGEST_AGENT not in app.agents:
            raise SystemExit(f"ingest-only: no agent {INGEST_AGENT} (agents: {sorted(app.agents)})")
        for name in [name for name in app.agents if name != INGEST_AGENT]:
            del app.agents[name]
    if "inline-await" in PATCHES:
        _patch_inline_await()
    app.main()


if __name__ == "__main__":
    main()
