"""Every worker reads the whole catalogue topic and keeps scoring over what it says.

The catalogue topic (log-compacted on Kafka, keyed by item id) is its own changelog: each
worker reads all of its partitions from the start, outside the consumer group, so every
worker holds every item and a restarted one recovers the catalogue by reading it again. A
worker is not ready until it has read up to the end offsets it found at start-up. Records
are validated against the catalogue contract (invalid ones go to the dead-letter topic with
their reason), applied in the order read, and each fetched batch of changes becomes one new
item set (:meth:`stream.processing.pipeline.ScoringPipeline.follow_catalogue`), built off the event
loop while the previous one keeps scoring.

The follower runs as a watched task (:mod:`stream.telemetry.background`): a fetch or an item set
that fails is logged and tried again; anything else it raises, the catch-up at start-up included,
stops the worker with a line naming it, instead of leaving it never ready.

``STREAMREC_CATALOGUE_TOPIC=""`` turns following off: the worker serves the model's trained
items as exported. ``catalogue_freshness_ms`` observes, for records read after start-up, the
time from the record's ``ts`` to the item set that holds it: from then on every list can
contain the item.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiokafka
from aiokafka import TopicPartition
from mode import Service

from stream.clock import now_ms
from stream.contracts.records import CatalogueRecord, Limits, parse_catalogue
from stream.errors import InvalidEvent
from stream.kafka.delivery import no_ack
from stream.kafka.security import kafka_client_options
from stream.kafka.transport import verified_end_offsets
from stream.settings import Settings
from stream.state.store import Origin
from stream.telemetry.background import BackgroundTasks
from stream.telemetry.metrics import Metrics

if TYPE_CHECKING:  # the follower drives what it is handed; processing sits above it
    from stream.processing.pipeline import ScoringPipeline
    from stream.processing.step import EventStep

log = logging.getLogger(__name__)

#: Longest one fetch of the catalogue waits for records.
POLL_MS = 200
#: How often the follower looks for the catalogue topic until it exists.
TOPIC_POLL_S = 0.5
#: Wait before trying again after the broker or a fetch failed.
RETRY_S = 1.0


class CatalogueFollower(Service):
    """Reads the catalogue topic into the pipeline's catalogue, then keeps following it."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        pipeline: ScoringPipeline,
        step: EventStep,
        tasks: BackgroundTasks | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = tasks or BackgroundTasks()
        self.settings = settings
        self.metrics = metrics
        self.pipeline = pipeline
        self.step = step  # its dead-lettering: counted, logged, published as for events
        self.limits = Limits.from_settings(settings)
        #: Set once the records present at start-up are applied (part of readiness).
        self.caught_up = asyncio.Event()
        self._consumer: aiokafka.AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        """Start reading in the background (the worker starts meanwhile, not ready yet)."""
        if not self.settings.catalogue_topic:  # turned off: the trained items, as exported
            self.caught_up.set()
            return
        self._task = self.tasks.start("catalogue follower", self._follow())

    async def on_stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _open(
        self, topic: str, options: dict[str, Any]
    ) -> tuple[aiokafka.AIOKafkaConsumer, list[TopicPartition], dict[TopicPartition, int]]:
        """A consumer at the start of every partition, and the end offsets found now."""
        consumer = self._consumer = aiokafka.AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            **options,
        )
        await consumer.start()
        partitions = await self._partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        reported = await consumer.end_offsets(partitions)
        return consumer, partitions, await verified_end_offsets(reported, **options)

    async def _follow(self) -> None:
        topic = self.settings.catalogue_topic
        options = kafka_client_options(self.settings)
        while True:  # a broker out of reach at start-up: the worker stays not ready, and says so
            try:
                consumer, partitions, ends = await self._open(topic, options)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read catalogue topic %r yet (%s); retrying", topic, exc)
                if self._consumer is not None:
                    await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(RETRY_S)
        log.info("reading catalogue topic %r (%d records)", topic, sum(ends.values()))
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
                await self._apply(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a surprise must not stop the catalogue for good
                log.exception("following the catalogue topic failed; retrying")
                await asyncio.sleep(RETRY_S)
                continue
            if not self.caught_up.is_set() and all(
                await asyncio.gather(*(self._reached(consumer, tp, ends[tp]) for tp in partitions))
            ):
                await self.pipeline.follow_catalogue()
                self.caught_up.set()
                log.info(
                    "catalogue read: %d items (%d available)",
                    len(self.pipeline.catalogue),
                    self.pipeline.catalogue.available(),
                )

    @staticmethod
    async def _reached(consumer: aiokafka.AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return await consumer.position(tp) >= end

    async def _partitions(
        self, consumer: aiokafka.AIOKafkaConsumer, topic: str
    ) -> list[TopicPartition]:
        """The topic's partitions, waiting for the topic to exist (the worker creates it)."""
        warned = False
        while True:
            found = await consumer.topics()
            if topic in found:
                numbers = consumer.partitions_for_topic(topic) or set()
                if numbers:
                    return [TopicPartition(topic, p) for p in sorted(numbers)]
            if not warned:
                log.info("waiting for catalogue topic %r to exist", topic)
                warned = True
            await asyncio.sleep(TOPIC_POLL_S)

    async def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        changes: list[CatalogueRecord | str] = []
        for tp, records in batch.items():
            for record in records:
                try:
                    changes.append(parse_catalogue(record.value, record.key, self.limits))
                except InvalidEvent as exc:
                    origin = Origin(tp.topic, tp.partition, record.offset)
                    await self.step.dead_letter(
                        record.value,
                        origin,
                        exc.reason,
                        exc.detail,
                        counter="catalogue_invalid",
                        ack=no_ack,
                    )
        if not changes:
            return
        self.pipeline.catalogue.apply(changes)
        self.metrics.inc("catalogue_records_in", len(changes))
        if not self.caught_up.is_set():
            return  # one item set once the start-up records are read
        await self.pipeline.follow_catalogue()
        installed = now_ms()
        for change in changes:
            if isinstance(change, CatalogueRecord):
                self.metrics.observe("catalogue_freshness_ms", max(0, installed - change.ts))
