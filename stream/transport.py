"""Faust's aiokafka transport, adjusted for what we measured on the embedded broker.

Registered under the ``streamrec`` URL scheme through Faust's ``faust.transports`` entry
point; ``STREAMREC_BROKER`` keeps ``kafka://``. Two changes, both harmless on Apache Kafka:

* **Fetch wait.** Faust hard-codes ``fetch_max_wait_ms=1500`` for worker consumers. Kafka
  answers a fetch as soon as data is there; Tansu holds it for the whole wait, which added
  ~0.6 s to every event's latency. We use ``STREAMREC_FETCH_MAX_WAIT_MS``.
* **End offsets.** Tansu reports a partition's end offset as the base offset of its last
  record batch + 1, so a changelog whose last batch held several records looked shorter than
  it is and table recovery stopped early, dropping the newest context. Before recovery uses
  them, :func:`verified_end_offsets` reads from ``end - 1`` and moves each end past the last
  record actually there.
* **Partitions never committed.** After table recovery Faust seeks every partition to its
  committed offset, but aiokafka's ``seek_to_committed`` leaves a partition whose committed
  offset is none (or 0) wherever the fetcher got to. The fetcher runs during recovery, so a
  worker that started on events its group had never committed (the first worker of a group,
  or one killed before its first commit) skipped them. :meth:`ConsumerThread.seek_to_committed`
  places such partitions explicitly: at 0, or by ``consumer_auto_offset_reset`` when none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)

SCHEME = "streamrec"


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with our fetch wait applied to the consumer it builds."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        from stream.app import settings  # the worker's one settings object

        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(settings.fetch_max_wait_ms)  # read at consumer start
        return consumer

    async def seek_to_committed(self) -> Mapping[TopicPartition, int]:
        """Faust's seek, with input partitions that have no commit (or commit 0) placed too."""
        committed = await super().seek_to_committed()
        consumer = self._ensure_consumer()
        changelogs = self.app.tables.changelog_topics  # Faust positions these itself
        unplaced = [tp for tp, at in committed.items() if not at and tp.topic not in changelogs]
        for tp in unplaced:
            if committed[tp] == 0:
                consumer.seek(tp, 0)
        never = [tp for tp in unplaced if committed[tp] is None]
        if never and self.app.conf.consumer_auto_offset_reset == "latest":
            await self.call_thread(consumer.seek_to_end, *never)
        elif never:
            await self.call_thread(consumer.seek_to_beginning, *never)
        if unplaced:
            log.debug("placed partitions with no commit: %s", sorted(map(tuple, unplaced)))
        return committed

    async def _highwaters(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return reported
        conf = self.app.conf
        transport = cast(driver.Transport, self.transport)
        return await verified_end_offsets(
            reported,
            bootstrap_servers=driver.server_list(transport.url, transport.default_port),
            **driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer using :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """Faust's aiokafka transport using :class:`Consumer`."""

    Consumer = Consumer


def broker_url(kafka_url: str) -> str:
    """``kafka://h:p[;h:p]`` as the URL that selects this transport."""
    return SCHEME + "://" + kafka_url.removeprefix("kafka://")


async def verified_end_offsets(
    reported: Mapping[TopicPartition, int], *, timeout_s: float = 10.0, **client: Any
) -> dict[TopicPartition, int]:
    """End offsets no shorter than the records a group-less probe can read past them.

    Each non-empty partition is read from ``reported - 1`` until a poll returns nothing; its
    end becomes ``max(reported, last offset read + 1)``. A partition whose tail cannot be read
    (compacted, or a transaction marker on Kafka) keeps the reported end.
    """
    ends = dict(reported)
    suspects = [tp for tp, end in reported.items() if end > 0]
    if not suspects:
        return ends
    probe = aiokafka.AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50, **client
    )
    await probe.start()
    try:
        probe.assign(suspects)
        for tp in suspects:
            probe.seek(tp, reported[tp] - 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await probe.getmany(timeout_ms=300)
            if not any(batch.values()):
                break
            for tp, records in batch.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
    finally:
        await probe.stop()
    for tp in suspects:
        if ends[tp] != reported[tp]:
            log.info(
                "broker reported end offset %d for %s[%d]; records run to %d: using %d",
                reported[tp],
                tp.topic,
                tp.partition,
                ends[tp] - 1,
                ends[tp],
            )
    return ends
