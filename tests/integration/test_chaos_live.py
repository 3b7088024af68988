"""The chaos run's short schedule (bench/chaos.py) as a test (issue #12): workers added, one
SIGKILLed, two SIGTERMed (one under load, one while the broker is down), a broker outage through
``scripts/kafka stop``/``start``, OpenWhisk answering 503 and then slowly — while raw records
arrive at 80/s. Nothing may be lost: not a raw record, a delivery or an invocation; every
SIGTERM ends within the shutdown grace period; the broker is left running."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from bench import chaos

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
async def test_short_chaos_schedule_loses_nothing(bootstrap: str, tmp_path: Path) -> None:
    report = await chaos.run(chaos.SHORT, tmp_path)
    print(report["verdict"])

    assert report["records"]["fed"] == chaos.SHORT.records
    assert report["workers"]["membership_changes"] >= 4
    actions = [fault["action"] for fault in report["faults"]]
    assert {"up", "term", "kill", "broker-stop", "broker-start", "ow-errors"} <= set(actions)

    assert report["lost"] == {
        "raw_records": 0,
        "events": 0,
        "dead_letters": 0,
        "deliveries": 0,
        "invocations": 0,
    }, report["verdict"]
    assert not any(report["unexpected"].values()), report["unexpected"]
    expected = report["expected"]
    assert expected["dead_letters"] > 0
    assert expected["skips"] > 0
    assert expected["invocations"] > 0
    assert report["seen"]["invocations"] == expected["invocations"]
    assert report["seen"]["sink_dead_letters"] == 0  # 503s and slowness were retried, not dropped

    # every replay belongs to a fault and says why; none before the first fault
    for fault in report["faults"]:
        if fault["replays"]:
            assert fault["action"] != "start", fault
            assert fault["why"]

    # SIGTERM: exits within the grace period, under load and with the broker away
    terms = [s for s in report["shutdowns"] if s["signal"] == "SIGTERM"]
    assert len(terms) >= 4  # two in the schedule, the survivors at the end
    for shutdown in terms:
        assert shutdown["exit_s"] <= report["shutdown_grace_s"] + 2, shutdown
        assert shutdown["status"] in {0, 75}, shutdown  # 75: the worker's own deadline

    # the broker outage did not flood the logs (aiokafka's reconnect loop, aggregated)
    lines = report["worker_log_lines"]
    assert all(counts["ERROR"] < 1000 for counts in lines.values()), lines
    assert any(counts["suppressed_summaries"] for counts in lines.values()), lines

    assert not report["crashes"], report["crashes"]  # no worker exited unasked
    assert report["groups_stable_at_end"]
    assert report["ok"], report["verdict"]
    status = await asyncio.to_thread(
        subprocess.run, [str(chaos.KAFKA), "status"], capture_output=True, check=False
    )
    assert status.returncode == 0, "the broker must be left running for the tests after this"
