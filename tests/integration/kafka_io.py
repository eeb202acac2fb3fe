"""Kafka helpers for integration tests (no mocks): produce messages, read topics until done.

Reading goes through the product's one reader (:class:`stream.tools.cluster.lists.TopicReader`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from stream.contracts.records import Event
from stream.tools.cluster.lists import TopicReader

MAX_REQUEST_BYTES = 4 << 20  # room for the hostile corpus's 1.2 MB messages

Received = dict[str, list[tuple[bytes | None, bytes]]]


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    async def run() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, max_request_size=MAX_REQUEST_BYTES
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in messages]
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    return asyncio.run(run())


def produce_events(bootstrap: str, topic: str, events: Iterable[Event]) -> int:
    """Produce events as a producer should: keyed by their user id."""
    return produce(bootstrap, topic, (event.to_message() for event in events))


def consume_until(
    bootstrap: str, topics: list[str], done: Callable[[Received], bool], timeout: float = 90.0
) -> Received:
    """Read ``topics`` from the start until ``done(received)`` or ``timeout`` seconds."""
    received: Received = {t: [] for t in topics}

    async def run() -> None:
        async with TopicReader(bootstrap, topics) as reader:
            await reader.follow(
                lambda r: received[r.topic].append((r.key, r.value)),
                lambda: done(received),
                timeout_s=timeout,
                poll_ms=500,
            )

    asyncio.run(run())
    return received
