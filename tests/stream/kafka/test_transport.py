"""The transport's changes to Faust's aiokafka driver, against the real embedded broker (and,
for the fetch handed over whole, Faust's real consumer without one)."""

import asyncio

from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.app import App
from stream.kafka.transport import Consumer, FetchMessage
from stream.settings import Settings


def _fetch(app, tp: TP, offsets: list[int]) -> FetchMessage:
    generation = app.consumer_generation_id
    records = [
        ConsumerMessage(
            tp.topic,
            tp.partition,
            at,
            0.0,
            0,
            None,
            b"u",
            b"{}",
            None,
            tp=tp,
            generation_id=generation,
        )
        for at in offsets
    ]
    return FetchMessage(tp, records, generation)


def test_a_fetch_is_placed_records_acked_one_by_one_and_a_stale_one_never(tmp_path):
    """Faust's drain loop sees a fetch as one message at its last offset; gaps between its
    records are recorded, records already read dropped, and each record commits on its own."""
    settings = Settings(app_id="fetch-unit", data_dir=str(tmp_path), web_enabled=False)
    app = App(settings)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    assert consumer.batched_topics == {settings.events_topic}
    tp = TP(settings.events_topic, 0)
    app.topics._acking_topics.add(tp.topic)  # as the agent's subscription does
    consumer._read_offset[tp] = 9  # the last offset read

    fetch = _fetch(app, tp, [8, 9, 12, 13, 15])
    assert asyncio.run(consumer._place(tp, fetch))
    assert [r.offset for r in fetch.records] == [12, 13, 15]  # 8 and 9 were read already
    assert fetch.offset == 15 and consumer._read_offset[tp] == 14  # the loop moves it to 15
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(10, 12), (14, 15)]
    assert fetch.acked and fetch.tracked  # the fetch itself commits nothing

    first, second, third = fetch.records
    assert consumer.take(first) and consumer.take(second)
    assert first in consumer.unacked
    consumer.ack_taken(second)
    consumer.ack_taken(first)
    assert sorted(consumer._acked[tp]) == [12, 13] and first not in consumer.unacked

    app.consumer_generation_id += 1  # a rebalance: the fetch's last record is left alone
    assert not consumer.take(third)
    consumer.ack_taken(third)
    assert 15 not in consumer._acked[tp]
    consumer._read_offset[tp] = 15
    assert not asyncio.run(consumer._place(tp, _fetch(app, tp, [14, 15])))  # all read already


def test_fetches_stay_one_message_at_a_time_when_switched_off(tmp_path):
    settings = Settings(
        app_id="fetch-off", data_dir=str(tmp_path), web_enabled=False, take_fetches=False
    )
    assert App(settings).consumer.batched_topics == frozenset()
