"""``streamapp normalize`` on hostile lines: one rejection per line, exit 0, no traceback.

Run as the real console script (one process for every line); the line reader is also tested
directly for its bound on over-long lines.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from streamapp import cli_io
from tests.factories import dcache_transfer

SCRIPT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "streamapp"

HOSTILE_LINES = [
    (
        json.dumps(
            {
                "envelope": "dcache-storage-event/1",
                "kind": "inotify",
                "frontend": "https://dcache.example.org:3880",
                "path": "/data/a.h5",
                "mask": ["IN_CLOSE_WRITE"],
                "mtime": 10**17,
                "observed": "2026-11-26T10:00:00Z",
            }
        ).encode(),
        "0001-9999",
    ),
    (b'{"msgType": "transfer", "x": ' + b"[" * 300 + b"]" * 300 + b"}", "nested deeper"),
    (json.dumps(dcache_transfer(fileSize="9" * 5000)).encode(), "int64"),
    (json.dumps(dcache_transfer(billingPath="/data/..")).encode(), "root '/'"),
    (json.dumps(dcache_transfer(date="0001-01-01T00:00:00+01:00")).encode(), "0001-9999"),
    (b"\xff\xfe\x00{", "UTF-8"),
    (b'{"msgType": "' + b"x" * 2_000_000 + b'"}', "exceeds"),
]


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")
def test_hostile_lines_are_rejected_one_by_one_and_the_command_succeeds() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAPP_")}
    stdin = b"\n".join(line for line, _ in HOSTILE_LINES) + b"\n"
    command = [str(SCRIPT), "normalize", "-"]
    done = subprocess.run(
        command, input=stdin, capture_output=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    outputs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["line"] for o in outputs] == list(range(1, len(HOSTILE_LINES) + 1))
    for output, (_, why) in zip(outputs, HOSTILE_LINES, strict=True):
        assert why in output["rejected"], output


def test_an_over_long_line_is_cut_and_the_next_line_still_read() -> None:
    stream = io.BytesIO(b"a" * 100 + b"\nshort\n" + b"b" * 50)
    assert list(cli_io._lines(stream, 10)) == [(1, b"a" * 11), (2, b"short"), (3, b"b" * 11)]
