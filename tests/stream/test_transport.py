import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.topics import ensure_topics
from stream.transport import verified_end_offsets


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
