"""The one settings object: every field has its ``STREAMAPP_*`` variable, read in exactly one
group, and an empty environment gives the documented defaults."""

from __future__ import annotations

import dataclasses

import pytest

from streamapp.settings import Settings, SettingsError


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_field_is_read_from_the_environment() -> None:
    changed = {
        "STREAMAPP_APP_ID": "other-app",
        "STREAMAPP_WEB_PORT": "7001",
        "STREAMAPP_SINK_MAX_ATTEMPTS": "3",
        "STREAMAPP_KAFKA_SASL_USERNAME": "worker-1",
        "STREAMAPP_SHUTDOWN_GRACE": "12",
        "STREAMAPP_SSE_MAX_STREAMS": "5",
    }
    settings = Settings.from_env(changed)
    assert (settings.app_id, settings.web_port, settings.sink_max_attempts) == (
        "other-app",
        7001,
        3,
    )
    assert settings.kafka_sasl_username == "worker-1"
    assert (settings.shutdown_grace_s, settings.sse_max_streams) == (12.0, 5)


def test_no_field_is_left_to_its_default_by_omission() -> None:
    """Each field comes from one of the groups ``from_env`` combines (a field added to
    ``Settings`` but to no group would silently ignore its variable)."""
    from streamapp import settings as module  # noqa: PLC0415

    defaults = Settings()
    read = [
        key
        for group in (
            module._broker_and_topics,
            module._web_and_tokens,
            module._sink,
            module._kafka_security,
        )
        for key in group({}, defaults)
    ]
    assert sorted(read) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len(read) == len(set(read))


def test_a_pending_limit_below_one_is_refused() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"STREAMAPP_SINK_MAX_PENDING": "0"})


def test_the_produce_batch_size_is_read_and_bounded() -> None:
    assert (
        Settings.from_env({"STREAMAPP_PRODUCER_MAX_BATCH_BYTES": "65536"}).producer_max_batch_bytes
        == 65536
    )
    for refused in ("0", "1023", "1000001", "lots"):
        with pytest.raises(SettingsError):
            Settings.from_env({"STREAMAPP_PRODUCER_MAX_BATCH_BYTES": refused})
