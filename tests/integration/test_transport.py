"""The transport against the embedded broker: verified end offsets, pauses mirrored in aiokafka."""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from stream.kafka.transport import mirror_pause, verified_end_offsets
from stream.tools.cluster.topics import ensure_topics


def test_end_offsets_cover_a_multi_record_last_batch(broker):
    bootstrap = broker.bootstrap_servers
    tp = TopicPartition("end-offsets-probe", 0)

    async def run():
        await ensure_topics(bootstrap, [tp.topic], 1)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        for _ in range(5):
            await producer.send_and_wait(tp.topic, b"single", partition=0)
        batch = producer.create_batch()
        for _ in range(7):
            batch.append(key=None, value=b"x", timestamp=None)
        await producer.send_batch(batch, tp.topic, partition=0)
        await producer.flush()
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        reported = await consumer.end_offsets([tp])
        await consumer.stop()
        return reported, await verified_end_offsets(reported, bootstrap_servers=bootstrap)

    reported, verified = asyncio.run(run())
    assert verified[tp] == 12  # 5 single records + one batch of 7
    assert verified[tp] >= reported[tp]


def test_faust_partitions_pause_and_resume_aiokafka_itself(broker):
    """Faust's ``TP`` tuples reach aiokafka's own paused set (it rejects anything but its own)."""
    bootstrap = broker.bootstrap_servers
    topic = "pause-probe"

    async def run():
        await ensure_topics(bootstrap, [topic], 2)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
            held_back = {TP(topic, 0), TP(topic, 1), TP("not-assigned", 0)}
            mirror_pause(consumer, "pause", held_back)
            paused = consumer.paused()
            mirror_pause(consumer, "resume", {TP(topic, 0)})
            resumed = consumer.paused()
            await consumer.getmany(timeout_ms=200)  # settles the assignment before stop()
            return paused, resumed
        finally:
            await consumer.stop()

    paused, after_resume = asyncio.run(run())
    assert paused == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    assert after_resume == {TopicPartition(topic, 1)}
