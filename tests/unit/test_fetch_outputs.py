"""``outputs.FetchOutputs`` without a broker: its key -> partition rule is aiokafka's default
partitioner's (and so the Java client's), and it only takes producers it can write through
exactly as ``send`` would. On a real broker: tests/integration/test_fetch_outputs_live.py."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streamapp.outputs import FetchOutputs, key_partition


@given(key=st.binary(min_size=0, max_size=300), partitions=st.integers(1, 200))
def test_a_key_lands_where_the_default_partitioner_puts_it(key: bytes, partitions: int) -> None:
    everything = list(set(range(partitions)))  # aiokafka lists the metadata's set
    assert key_partition(key, partitions) == DefaultPartitioner()(key, everything, everything)


def test_a_known_java_client_partition() -> None:
    """Kafka's own test vector (org.apache.kafka.common.utils.UtilsTest#testMurmur2):
    murmur2("21") = -973932308, so of 100 partitions the Java client picks 12."""
    assert key_partition(b"21", 100) == (-973932308 & 0x7FFFFFFF) % 100


async def test_only_producers_it_can_write_through_exactly_are_usable() -> None:
    def producer(**options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options)

    assert FetchOutputs.usable(producer())
    assert not FetchOutputs.usable(producer(key_serializer=str.encode))
    assert not FetchOutputs.usable(producer(value_serializer=str.encode))
    assert not FetchOutputs.usable(producer(partitioner=lambda key, every, available: 0))
    assert not FetchOutputs.usable(producer(transactional_id="t"))
    assert not FetchOutputs.usable(object())
