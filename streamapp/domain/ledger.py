"""Which offset of a source partition may be committed while records finish out of order.

A record's offset is committed only once its outcome is durable, and Kafka commits are
positional: the committable offset is the lowest one still in flight (or one past the highest
seen when nothing is). faust's own out-of-order acks can commit past a record in flight
(faust #606); this ledger is why the sink does its own bookkeeping.
"""

from __future__ import annotations


class PartitionLedger:
    def __init__(self) -> None:
        self._in_flight: set[int] = set()
        self._next: int | None = None  # one past the highest offset received
        self.committed: int | None = None  # the last offset handed to the broker

    def received(self, offset: int) -> None:
        self._in_flight.add(offset)
        if self._next is None or offset >= self._next:
            self._next = offset + 1

    def finished(self, offset: int) -> None:
        self._in_flight.discard(offset)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def unfinished_from(self) -> int | None:
        """The lowest offset not yet finished (records from here on are lag), if any seen."""
        if self._next is None:
            return self.committed
        return min(self._in_flight) if self._in_flight else self._next

    def committable(self) -> int | None:
        """The offset to commit now, or None if it would not move the committed position."""
        if self._next is None:
            return None
        offset = min(self._in_flight) if self._in_flight else self._next
        if self.committed is not None and offset <= self.committed:
            return None
        return offset
