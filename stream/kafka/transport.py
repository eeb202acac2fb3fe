"""Faust's aiokafka transport, adjusted for what we measured on the embedded broker.

Registered under the ``streamrec`` URL scheme through Faust's ``faust.transports`` entry
point; ``STREAMREC_BROKER`` keeps ``kafka://``. The worker's settings are reached through
the App (``app.streamrec``, see :mod:`stream.app`), never imported. Five changes, the
consumer lags the worker reports (records not read, :meth:`Consumer.lag`; records past the
committed offset, :meth:`Consumer.committed_lag`), a producer that hands whole record
batches to aiokafka and returns their delivery futures (:meth:`Producer.send_batches`, for a
batch's lists and changelog records), and whole fetches of the events topic (below the
list). The first two changes only matter on the embedded broker; the last three close
Faust + aiokafka races, found by the kill -9 test, that left a restarted worker idle or
skipping events on any broker:

* **Fetch wait.** Faust hard-codes ``fetch_max_wait_ms=1500`` for worker consumers. Kafka
  answers a fetch as soon as data is there; Tansu holds it for the whole wait, which added
  ~0.6 s to every event's latency. We use ``STREAMREC_FETCH_MAX_WAIT_MS``.
* **End offsets.** Tansu reports a partition's end offset as the base offset of its last
  record batch + 1, so a changelog whose last batch held several records looked shorter than
  it is and table recovery stopped early, dropping the newest context. Before recovery uses
  them, :func:`verified_end_offsets` reads from ``end - 1`` and moves each end past the last
  record actually there.
* **Pauses.** Faust pauses a partition only in its own bookkeeping: aiokafka went on
  fetching and handing out records of partitions held back during table recovery, which
  moved their positions. :class:`Consumer` pauses and resumes aiokafka too
  (:func:`mirror_pause`: aiokafka wants its own ``TopicPartition``, not Faust's ``TP``).
* **Partitions never committed.** After table recovery Faust seeks every partition to its
  committed offset, but aiokafka's ``seek_to_committed`` leaves a partition whose committed
  offset is none (or 0) wherever the fetcher got to. The fetcher runs during recovery, so a
  worker that started on events its group had never committed (the first worker of a group,
  or one killed before its first commit) skipped them. :meth:`ConsumerThread.seek_to_committed`
  places such partitions explicitly: at 0, or by ``consumer_auto_offset_reset`` when none.
* **Seeks while records are delivered.** Faust seeks to the committed offsets after table
  recovery while its fetch loop runs. Records fetched before the seek and delivered after
  it set the read offsets past the committed ones, and the records re-fetched from there
  were dropped as already read: a range of events skipped, then committed past.
  :meth:`Consumer.perform_seek` stops the flow and waits for the loop to hand its batch back
  before it seeks.

**Whole fetches.** Faust's per-message path (its drain loop's tasks, the stream iterator, the
monitor's sensors) cost several times the worker's own work per event. For the events topic
the consumer makes each partition's records of one fetch one :class:`FetchMessage`, which
Faust's drain loop, conductor and stream carry as they carry one message; the agent takes its
records one by one (:meth:`Consumer.take`, :meth:`Consumer.ack_taken`). Gaps and records
already read are handled as the drain loop does for single messages (``Consumer._place``).
This rests on Faust internals (``_wait_next_records``, ``_to_message``, the drain loop's read
offsets): ``faust-streaming`` is pinned exactly, and the worker's contract test fails if the
agent stops receiving whole fetches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, cast

import aiokafka
from aiokafka import TopicPartition
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

from stream.kafka.delivery import RecordsByPartition

log = logging.getLogger(__name__)

SCHEME = "streamrec"


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, with our fetch wait applied to the consumer it builds."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = getattr(self.app, "streamrec", None)  # stream.app.App carries them
        if settings is not None:  # read at consumer start
            consumer._fetch_max_wait_ms = int(settings.fetch_max_wait_ms)
        return consumer

    async def seek_to_committed(self) -> Mapping[TopicPartition, int]:
        """Faust's seek, with input partitions that have no commit (or commit 0) placed too."""
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # Faust positions these itself
        unplaced = [tp for tp, at in committed.items() if not at and tp.topic not in changelogs]
        if unplaced:  # in the consumer's own thread and loop, as every aiokafka call
            await self.call_thread(self._place, unplaced, committed)
            log.info("partitions with no commit placed: %s", sorted(map(tuple, unplaced)))
        return committed

    async def _place(
        self, partitions: list[TopicPartition], committed: Mapping[TopicPartition, int | None]
    ) -> None:
        consumer = self._ensure_consumer()
        latest = self.app.conf.consumer_auto_offset_reset == "latest"
        for tp in partitions:
            if committed[tp] is None and latest:
                await consumer.seek_to_end(tp)
            else:  # 0, or the earliest record (an offset retention removed resets to it)
                consumer.seek(tp, 0)

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


class FetchMessage(ConsumerMessage):
    """What one fetch read from one partition of a batched topic, as one item for its stream.

    Faust hands a stream one message at a time, and its per-message machinery (a task pair
    per message in the consumer's drain loop, the stream's iterator, the monitor's sensors)
    cost more than the worker's own work on an event. For the events topic the consumer
    hands the agent each partition's fetched records as one of these instead. It stands at
    its last record's offset (the drain loop's read offset after it), commits nothing itself
    (``acked``), and is not tracked; its ``records`` are Faust's own messages, each tracked
    and acknowledged on its own by whoever processes it (:meth:`Consumer.take`,
    :meth:`Consumer.ack_taken`), so Faust's commit logic sees every offset as it always did.
    """

    __slots__ = ("records",)

    def __init__(self, tp: TP, records: list[ConsumerMessage], generation_id: int) -> None:
        last = records[-1]
        super().__init__(
            tp.topic,
            tp.partition,
            last.offset,
            last.timestamp,
            last.timestamp_type,
            None,
            None,
            b"",
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        self.records = records
        self.tracked = True  # its records are, one by one, as they are taken
        self.acked = True  # and acknowledged one by one: the fetch itself commits nothing


class _Fetched:
    """A partition's fetched records, standing in Faust's record map as a single record."""

    __slots__ = ("records",)

    def __init__(self, records: list[Any]) -> None:
        self.records = records


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, with the changes this module lists.

    :class:`ConsumerThread`, aiokafka pauses, quiet seeks, and each fetch of an events
    partition as one item (:class:`FetchMessage`).
    """

    #: Longest wait for the fetch loop to hand back its batch before a seek.
    seek_quiesce_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches_out = 0
        self._no_batch_out = asyncio.Event()
        self._no_batch_out.set()
        #: Partitions whose Faust read offset is, since a seek, the next offset to read rather
        #: than the last one read; each leaves on its first record.
        self._seeked: dict[TP, int] = {}
        settings = getattr(self.app, "streamrec", None)  # stream.app.App carries them
        #: Topics whose fetched records reach their stream as one :class:`FetchMessage` per
        #: partition and fetch: the events topic (changelogs and the rest keep Faust's path).
        self.batched_topics: frozenset[str] = (
            frozenset({settings.events_topic})
            if settings is not None and settings.take_fetches
            else frozenset()
        )

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(
        self, timeout: float
    ) -> tuple[Mapping[TP, list[Any]] | None, set[TP] | None]:
        """Faust's fetch, each batched partition's records made one record of the map."""
        records, active = await super()._wait_next_records(timeout)
        if records and self.batched_topics:
            batched = self.batched_topics
            records = {
                tp: [_Fetched(items)] if tp.topic in batched and items else items
                for tp, items in records.items()
            }
        return records, active

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        """Faust's message for a record; a :class:`FetchMessage` for a batched partition's."""
        if isinstance(record, _Fetched):
            to_message = super()._to_message
            messages = [to_message(tp, one) for one in record.records]
            return FetchMessage(tp, messages, self.app.consumer_generation_id)
        return super()._to_message(tp, record)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's fetch, counted while its records are being handed to streams."""
        self._batches_out += 1
        self._no_batch_out.clear()
        try:
            async for tp, message in super().getmany(timeout):
                if isinstance(message, FetchMessage) and not await self._place(tp, message):
                    continue
                if self._seeked:
                    self._seeked.pop(tp, None)
                yield tp, message
        finally:
            self._batches_out -= 1
            if not self._batches_out:
                self._no_batch_out.set()

    async def _place(self, tp: TP, fetch: FetchMessage) -> bool:
        """Ready ``fetch`` for Faust's drain loop, which sees it as one message at its offset.

        As the loop does for each message: records before the read offset are dropped
        (fetched before a seek), and offsets missing between the records read (transaction
        markers, compaction) are recorded as gaps, which commits pass over. The read offset
        is then placed just before the fetch's last record, so the loop finds no gap of its
        own and moves it onto that record. Returns whether any record is left to process.
        """
        read = self._read_offset.get(tp)
        records = fetch.records
        if read is not None:
            seeked = self._seeked.get(tp) == read  # the next offset to read, not the last read
            previous = read - 1 if seeked else read
            records = [record for record in records if record.offset > previous]
            if not records:
                return False
            if self.app.topics.acks_enabled_for(tp.topic):
                for record in records:
                    if record.offset - previous > 1:
                        await self._add_gap(tp, previous + 1, record.offset - 1)
                    previous = record.offset
            fetch.records = records
        self._read_offset[tp] = records[-1].offset - 1
        return True

    def take(self, record: ConsumerMessage) -> bool:
        """Track a record of a :class:`FetchMessage` as being processed, if it still may be.

        False for a record fetched before the latest rebalance: it is left for its
        partition's owner to read again, never processed here. A tracked record is one a
        rebalance waits for (Faust's ``wait_empty``), as it waits for a streamed message.
        """
        if record.generation_id != self.app.consumer_generation_id:
            return False
        record.tracked = True
        self._unacked_messages.add(record)
        return True

    def ack_taken(self, record: ConsumerMessage) -> None:
        """Acknowledge a taken record: its offset commits once every one before it has.

        One taken before a rebalance that came before its ack is forgotten instead of
        acknowledged, and read again (at least once, never skipped).
        """
        if record.generation_id == self.app.consumer_generation_id:
            self.ack(record)
        else:
            self._unacked_messages.discard(record)

    async def perform_seek(self) -> None:
        """Faust's seek to committed offsets, made while no fetched batch is being delivered.

        Faust seeks after table recovery with the flow running. A batch fetched before the
        seek but delivered after it moved the read offsets past the committed ones again, and
        the records re-fetched from the committed offset were then dropped as already read.
        The flow is stopped (which makes the fetch loop hand back its batch), the seek made,
        and the flow resumed.
        """
        running = self.flow_active
        if running:
            self.stop_flow()
            try:
                await asyncio.wait_for(self._no_batch_out.wait(), self.seek_quiesce_s)
            except asyncio.TimeoutError:
                log.warning("fetch loop still busy after %.0f s: seeking", self.seek_quiesce_s)
        try:
            await super().perform_seek()
            self._seeked = {tp: at for tp, at in self._read_offset.items() if at is not None}
        finally:
            if running:
                self.resume_flow()

    async def seek(self, partition: TP, offset: int) -> None:
        """Faust's seek, remembered for :meth:`lag`."""
        await super().seek(partition, offset)
        if offset:
            self._seeked[ensure_TP(partition)] = offset

    def committed_lag(self, partitions: Iterable[TP]) -> int:
        """Records on ``partitions`` past the group's committed offset, read or not.

        Events are acknowledged, and so committed, only once their output is delivered:
        a partition whose deliveries stall keeps this growing even when :meth:`lag` is 0.
        """
        lag = 0
        for tp in partitions:
            highwater = self._highwater_of(tp)
            if highwater is not None:
                lag += max(0, highwater - (self._committed_offset.get(tp) or 0))
        return lag

    def _highwater_of(self, tp: TP) -> int | None:
        try:
            return self.highwater(tp)  # None until a fetch of it was answered
        except AssertionError:  # revoked a moment ago (aiokafka asserts the assignment)
            return None

    def lag(self, partitions: Iterable[TP]) -> int:
        """Records on ``partitions`` not read yet: broker high watermark − next offset to read.

        Faust keeps the last offset read per partition, except right after a seek, when it
        holds the offset to read next; both count right here.
        """
        lag = 0
        for tp in partitions:
            highwater = self._highwater_of(tp)
            if highwater is None:
                continue
            read = self._read_offset.get(tp)
            if read is None:
                following = 0
            elif self._seeked.get(tp) == read:
                following = read
            else:
                following = read + 1
            lag += max(0, highwater - following)
        return lag

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        """Faust's pause, and aiokafka's: no fetching of partitions Faust holds back."""
        tpset = set(tps)
        super().pause_partitions(tpset)
        self._in_consumer_thread("pause", tpset)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        """Faust's resume, and aiokafka's."""
        tpset = set(tps)
        super().resume_partitions(tpset)
        self._in_consumer_thread("resume", tpset)

    def _in_consumer_thread(self, method: str, tps: set[TP]) -> None:
        thread = cast(ConsumerThread, self._thread)
        loop = getattr(thread, "thread_loop", None)
        if loop is None or thread._consumer is None:
            return

        def apply() -> None:
            if thread._consumer is not None:
                mirror_pause(thread._consumer, method, tps)

        loop.call_soon_threadsafe(apply)


def mirror_pause(consumer: aiokafka.AIOKafkaConsumer, method: str, tps: Iterable[TP]) -> None:
    """Pause or resume, in aiokafka, those of Faust's ``tps`` it is assigned.

    aiokafka accepts only its own ``TopicPartition`` (Faust's ``TP`` is an equal tuple of
    another type, which it rejects with a ``TypeError``).
    """
    assigned = consumer.assignment()
    mine = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    mine = [tp for tp in mine if tp in assigned]
    if mine:
        getattr(consumer, method)(*mine)


class Producer(driver.Producer):
    """Faust's aiokafka producer, plus batches handed to aiokafka whole.

    ``topic.send()`` costs, per record, Faust's message futures and callbacks and aiokafka's
    own future: more than Faust's whole per-event floor. :meth:`send_batches` appends many
    records to one aiokafka batch per topic partition instead, and returns aiokafka's
    delivery futures: :class:`stream.kafka.delivery.Deliveries` acknowledges events only once they
    resolve. The request timeout (how long aiokafka tries before a batch fails) is
    ``STREAMREC_PRODUCER_REQUEST_TIMEOUT_S``, not Faust's 20 minutes.
    """

    async def send_batches(
        self,
        records: RecordsByPartition,
        on_delivered: Callable[[TP, int], None] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Hand ``records`` to aiokafka: one batch (or as few as fit) per topic partition.

        Returns one future per batch, resolved when the broker confirms it (or failed).
        ``on_delivered(tp, offset)`` runs with each delivered batch's last offset (a table
        keeps it as its persisted changelog offset, as Faust's own sends do).

        Raises:
            KafkaError: aiokafka refused the hand-off (no metadata or buffer space in time).
        """
        producer = self._ensure_producer()
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), items in records.items():
            tp = TP(topic, partition)
            if len(items) == 1:  # one record (a dead letter): into aiokafka's open batch
                futures.append(await self._send_one(producer, tp, *items[0], on_delivered))
                continue
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if batch.record_count():
                        futures.append(await self._send(producer, batch, tp, on_delivered))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        # larger than a batch may be: aiokafka sends it on its own
                        futures.append(await self._send_one(producer, tp, key, value, on_delivered))
                        batch = producer.create_batch()
            if batch.record_count():
                futures.append(await self._send(producer, batch, tp, on_delivered))
        return futures

    async def _send(
        self,
        producer: aiokafka.AIOKafkaProducer,
        batch: Any,
        tp: TP,
        on_delivered: Callable[[TP, int], None] | None,
    ) -> asyncio.Future[Any]:
        count = batch.record_count()
        delivery = await producer.send_batch(batch, tp.topic, partition=tp.partition)
        return _confirmed(delivery, tp, count, on_delivered)

    @staticmethod
    async def _send_one(
        producer: aiokafka.AIOKafkaProducer,
        tp: TP,
        key: bytes | None,
        value: bytes,
        on_delivered: Callable[[TP, int], None] | None,
    ) -> asyncio.Future[Any]:
        """One record through aiokafka's own batching (its open batch for ``tp``)."""
        delivery = await producer.send(tp.topic, value, key=key, partition=tp.partition)
        return _confirmed(delivery, tp, 1, on_delivered)

    def partition_for(self, topic: str, key: bytes) -> int:
        """The partition aiokafka's partitioner (murmur2, as Kafka's clients) gives ``key``."""
        return self.key_partition(topic, key).partition

    async def await_topic(self, topic: str) -> int:
        """Wait until the producer knows ``topic``'s partitions; returns how many it has."""
        return len(await self._ensure_producer().partitions_for(topic))


def _confirmed(
    delivery: asyncio.Future[Any],
    tp: TP,
    count: int,
    on_delivered: Callable[[TP, int], None] | None,
) -> asyncio.Future[Any]:
    """``delivery``, with ``on_delivered`` told the batch's last offset once it succeeds."""
    if on_delivered is not None:

        def check(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                on_delivered(tp, done.result().offset + count - 1)

        delivery.add_done_callback(check)
    return delivery


class Transport(driver.Transport):
    """Faust's aiokafka transport using :class:`Consumer` and :class:`Producer`."""

    Consumer = Consumer
    Producer = Producer


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
