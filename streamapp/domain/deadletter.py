"""Dead-letter records: the original key and bytes untouched, the context in Kafka headers.

Keeping the value byte-for-byte (as Kafka Connect's dead-letter queues do) means nothing is lost
to re-encoding and an operator can re-publish a fixed record as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

HEADER_PREFIX = "streamapp.dlq."
# A reason quotes input at times (a field's value): bounded, so a hostile record cannot make
# its dead letter's headers larger than the record, or exceed the broker's message size.
MAX_REASON_CHARS = 1000


class Consumed(Protocol):
    """Where a consumed record came from (a Kafka record, or what a stage kept of it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DeadLetterContext:
    reason: str
    stage: str
    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, stage: str, consumed: Consumed, reason: str) -> DeadLetterContext:
        """The context of ``consumed`` refused by ``stage`` (every stage builds it here)."""
        return cls(reason, stage, consumed.topic, consumed.partition, consumed.offset)

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_PREFIX + "reason", _bounded(self.reason).encode("utf-8", "backslashreplace")),
            (HEADER_PREFIX + "stage", self.stage.encode()),
            (HEADER_PREFIX + "topic", self.topic.encode()),
            (HEADER_PREFIX + "partition", str(self.partition).encode()),
            (HEADER_PREFIX + "offset", str(self.offset).encode()),
        ]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetterContext:
        found = {
            name.removeprefix(HEADER_PREFIX): value.decode("utf-8", "replace")
            for name, value in headers
            if name.startswith(HEADER_PREFIX)
        }
        return cls(
            reason=found.get("reason", ""),
            stage=found.get("stage", ""),
            topic=found.get("topic", ""),
            partition=int(found.get("partition", "-1")),
            offset=int(found.get("offset", "-1")),
        )


def _bounded(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "…"
