"""The console script's event loop: uvloop by default, another when asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamapp.__main__ import chosen_loop
from streamapp.settings import Settings


@pytest.mark.parametrize(
    ("argv", "env", "loop"),
    [
        (["streamapp", "worker", "-l", "info"], {}, "uvloop"),
        (["streamapp", "-L", "aio", "worker"], {}, "aio"),
        (["streamapp", "--loop=aio", "worker"], {}, "aio"),
        (["streamapp", "--loop", "aio", "worker"], {}, "aio"),
        (["streamapp", "worker"], {"STREAMAPP_LOOP": "aio"}, "aio"),
        (["streamapp", "worker", "-L", "aio"], {}, "uvloop"),  # a command's option, not ours
    ],
)
def test_the_loop_chosen(argv: list[str], env: dict[str, str], loop: str) -> None:
    assert chosen_loop(argv, Settings.from_env(env).event_loop) == loop


def test_the_worker_process_runs_on_uvloop() -> None:
    """faust 0.15's ``-L`` is recorded but never used: the policy is installed by us."""
    probe = (
        "import asyncio, sys; from streamapp.__main__ import install_loop, chosen_loop;"
        "install_loop(chosen_loop(['streamapp', 'worker'], 'uvloop'));"
        "from streamapp.app import app;"
        "from mode.utils.loops import get_event_loop;"
        "print(type(get_event_loop()).__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip().startswith("uvloop")
