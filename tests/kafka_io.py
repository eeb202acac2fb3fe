"""Plain aiokafka producer/consumer helpers for integration tests (no mocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

MAX_REQUEST_BYTES = 4 << 20  # room for the hostile corpus's 1.2 MB messages


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


def consume_until(
    bootstrap: str,
    topics: list[str],
    done: Callable[[dict[str, list[tuple[bytes | None, bytes]]]], bool],
    timeout: float = 90.0,
) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """Read ``topics`` from the start until ``done(received)`` or ``timeout`` seconds."""

    async def run() -> dict[str, list[tuple[bytes | None, bytes]]]:
        consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50
        )
        await consumer.start()
        received: dict[str, list[tuple[bytes | None, bytes]]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not done(received):
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    received[tp.topic].extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return received

    return asyncio.run(run())
