"""The console script's default event loop (uvloop) and how to choose another."""

from __future__ import annotations

from streamapp.__main__ import with_default_loop


def test_uvloop_is_added_before_the_command() -> None:
    assert with_default_loop(["streamapp", "worker", "-l", "info"], {}) == [
        "streamapp",
        "-L",
        "uvloop",
        "worker",
        "-l",
        "info",
    ]


def test_an_explicit_loop_wins() -> None:
    argv = ["streamapp", "-L", "aio", "worker"]
    assert with_default_loop(argv, {}) == argv
    argv = ["streamapp", "--loop=aio", "worker"]
    assert with_default_loop(argv, {}) == argv
    assert with_default_loop(["streamapp", "worker"], {"STREAMAPP_LOOP": "aio"}) == [
        "streamapp",
        "-L",
        "aio",
        "worker",
    ]
