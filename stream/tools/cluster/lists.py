"""Reading the worker's output back: the one reader the replay, bench, demo and tests share.

:class:`TopicReader` follows topics (the recommendations topic, and the dead-letter topic in
tests) with a group-less consumer from their start, or from their end, and hands each record
to a callback until told to stop. A new topic read from its start needs no timestamp-based
offset lookups, which the embedded broker answers wrongly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from stream.contracts.records import Recommendation

OnRecord = Callable[[ConsumerRecord], object]


class TopicReader:
    """A group-less consumer of ``topics``, from their start (or end, with ``from_end``)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        from_end: bool = False,
        fetch_max_wait_ms: int = 50,
        **client_options: Any,
    ) -> None:
        """Open nothing yet; ``client_options`` go to aiokafka (SSL/SASL settings)."""
        self.from_end = from_end
        self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="latest" if from_end else "earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
            enable_auto_commit=False,
            **client_options,
        )

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        if self.from_end:
            await self.consumer.seek_to_end()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.consumer.stop()

    async def follow(
        self,
        on_record: OnRecord,
        done: Callable[[], bool],
        *,
        timeout_s: float = math.inf,
        poll_ms: int = 100,
    ) -> None:
        """Hand every record to ``on_record`` until ``done()`` or ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            for records in (await self.consumer.getmany(timeout_ms=poll_ms)).values():
                for record in records:
                    on_record(record)


async def follow_lists(
    bootstrap_servers: str,
    topic: str,
    on_list: Callable[[Recommendation], object],
    stop: asyncio.Event,
    *,
    from_end: bool = False,
    fetch_max_wait_ms: int = 50,
) -> None:
    """Decode every list on ``topic`` and hand it to ``on_list`` until ``stop`` is set."""
    async with TopicReader(
        bootstrap_servers, [topic], from_end=from_end, fetch_max_wait_ms=fetch_max_wait_ms
    ) as reader:
        await reader.follow(
            lambda record: on_list(Recommendation.from_json(record.value)), stop.is_set
        )
