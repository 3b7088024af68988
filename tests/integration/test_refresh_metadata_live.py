"""``private_access.refresh_metadata`` on the real broker: it asks for the one topic it is
given. A consumer that tracks no topic (a web request's, before it assigns partitions) asked
aiokafka for fresh metadata, and aiokafka asks for every topic of the cluster when its client
tracks none: with thousands of tenant topics, decoding that answer stopped the worker's loop
for ~150 ms on every such request."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer

from streamapp.private_access import refresh_metadata
from testkit.helpers import create_topics


async def test_a_refresh_fetches_the_topic_asked_for_and_not_the_cluster(bootstrap: str) -> None:
    run = uuid.uuid4().hex[:10]
    wanted, other = f"refresh-{run}.wanted", f"refresh-{run}.other"
    await create_topics(bootstrap, [wanted, other], 2)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(wanted) is None  # a fresh client knows no topic
        await refresh_metadata(consumer, wanted)
        assert consumer.partitions_for_topic(wanted) == {0, 1}
        assert other not in consumer._client.cluster.topics()
        # what aiokafka itself does for a client tracking nothing: every topic
        consumer._client._topics.clear()
        await consumer._client.force_metadata_update()
        assert {wanted, other} <= consumer._client.cluster.topics()
    finally:
        await consumer.stop()


async def test_a_refresh_of_a_tracked_topic_still_asks_the_broker(bootstrap: str) -> None:
    """A topic already tracked but unknown (created after the last refresh) is fetched again:
    ``add_topic`` alone would have returned at once."""
    topic = f"refresh-{uuid.uuid4().hex[:10]}.late"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        consumer._client._topics.add(topic)
        await create_topics(bootstrap, [topic], 3)
        assert consumer.partitions_for_topic(topic) is None
        await refresh_metadata(consumer, topic)
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        await consumer.stop()
