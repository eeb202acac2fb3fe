"""The worker's parts, built once per App, and what they say about the worker.

Topics, the context and latest-list tables, metrics, the scoring pipeline and the per-event
step, their watched background tasks; readiness, liveness, consumer lag and the stats the
web views serve.

:func:`stream.agents.install` builds one :class:`Runtime` and hands it to the agent and the
web views. Its outputs (lists and dead letters) go to Kafka topics, or, for a unit test of
the agent, wherever an :class:`Outputs` of the test's own sends them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import faust
from faust import Topic
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.types import TP, AgentT, EventT, TopicT

from stream.catalogue.follower import CatalogueFollower
from stream.errors import ConfigError
from stream.experiments.attribution import TALLIES
from stream.kafka.delivery import AckFn, Deliveries, Records, RecordsByPartition
from stream.kafka.transport import Consumer, Producer
from stream.processing.pipeline import ScoringPipeline
from stream.processing.step import EventStep
from stream.state.store import Origin
from stream.state.writer import ContextWriter
from stream.telemetry.background import BackgroundTasks
from stream.telemetry.metrics import Metrics, process_figures

if TYPE_CHECKING:  # the module builds the one App on import; the type is all we need
    from stream.app import App

log = logging.getLogger(__name__)

#: Seconds between a background task's death (``/live/`` answers 503) and the worker's stop.
STOP_GRACE_S = 1.0


class Outputs(Protocol):
    """Where the worker's lists and dead letters go."""

    async def prepare(self) -> None:
        """Make the destinations ready (create topics); called once before the first event."""

    async def publish_lists(self, lists: list[tuple[str, bytes]], acks: Sequence[AckFn]) -> None:
        """Publish a batch's lists, each keyed by its user; run ``acks`` once delivered."""

    async def send_dead_letter(self, value: bytes, ack: AckFn) -> None:
        """Publish one dead letter; run ``ack`` once delivered."""


class BatchTable(faust.Table):
    """Faust's table, written once per scoring batch, counting the changelog records it applies.

    The worker keeps two, both keyed by user id and co-partitioned with the events topic:
    contexts (``user-context``) and each user's latest list (``latest-list``).
    :meth:`write` stores a batch's values and keeps their changelog records until
    :meth:`take_changelog`, so they go out in the same producer batches as the lists (Faust's
    own ``table[key] = value`` sends one record at a time, each dearer than Faust's whole
    per-event floor). A restart on a RocksDB store applies only what was written since its
    last flush; on the memory store it applies the whole changelog.
    ``changelog_records_applied`` shows which.
    """

    metrics: Metrics

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changelog: dict[tuple[str, int], Records] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        """The value stored for ``key`` (``default`` if none), read without Faust's sensors.

        Faust's own read tells the monitor of every key read (a Prometheus label lookup
        each), about a tenth of the worker's CPU when a context is read per event; the
        ``faust_table_*`` read counts therefore leave out the worker's reads.
        """
        try:
            return self.data[key]
        except KeyError:
            return default

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Apply the batch, then count it."""
        records = list(batch)
        super().apply_changelog_batch(records)
        self.metrics.inc("changelog_records_applied", len(records))

    def write(self, writes: Sequence[tuple[str, bytes, Origin]]) -> None:
        """Store each user's context; keep its changelog record for :meth:`take_changelog`.

        Each write is made as from the message of the user's newest change (the store and
        the changelog partition are the message's), as Faust's own writes in stream
        iteration are.
        """
        topic = cast(Topic, self.changelog_topic)
        name = topic.get_topic_name()
        for user_id, value, origin in writes:
            token = _current_event.set(weakref.ref(origin.handle))
            try:
                self.data[user_id] = value
            finally:
                _current_event.reset(token)
            key, _ = topic.prepare_key(user_id, self.key_serializer, None, None)
            record, _ = topic.prepare_value(value, self.value_serializer, None, None)
            self._changelog.setdefault((name, origin.partition), []).append((key, record))

    def on_changelog_delivered(self, tp: TP, offset: int) -> None:
        """Remember a delivered changelog offset (a RocksDB store's restart reads on from it)."""
        if tp.topic == self.changelog_topic.get_topic_name():
            self.data.set_persisted_offset(tp, offset)

    def take_changelog(self) -> dict[tuple[str, int], Records]:
        """The changelog records written since the last call, by topic partition."""
        records, self._changelog = self._changelog, {}
        return records


class TopicOutputs:
    """Lists and dead letters to their Kafka topics (created with the worker's partitions).

    :meth:`prepare` also creates the catalogue topic (compacted) if it is missing and
    followed, and starts the delivery confirmer (:mod:`stream.kafka.delivery`) as a watched task.

    A batch's lists go out with the changelog records of its contexts and latest lists, one
    producer batch per topic partition; the batch's events are acknowledged once the broker
    has confirmed all of them. A dead letter is a delivery of its own, acknowledged likewise.
    """

    def __init__(
        self,
        app: faust.App,
        recommendations: TopicT,
        dead_letters: TopicT,
        tables: Sequence[BatchTable],
        catalogue: TopicT | None,
        metrics: Metrics,
        tasks: BackgroundTasks,
    ) -> None:
        self.app = app
        self.recommendations = recommendations
        self.dead_letters = dead_letters
        self.tables = tables
        self.catalogue_topic = catalogue
        self.tasks = tasks
        timeout_s = cast("App", app).streamrec.delivery_timeout_s
        self.deliveries = Deliveries(self._send, metrics, timeout_s=timeout_s)
        self._dead_letter_partitions = 1
        self._dead_letters_sent = 0

    async def prepare(self) -> None:
        """Declare the topics, learn their partitions, start confirming deliveries."""
        await self.recommendations.maybe_declare()
        await self.dead_letters.maybe_declare()
        if self.catalogue_topic is not None:
            await self.catalogue_topic.maybe_declare()
        producer = self._producer()
        await producer.await_topic(self.recommendations.get_topic_name())
        self._dead_letter_partitions = await producer.await_topic(
            self.dead_letters.get_topic_name()
        )
        self.tasks.start("delivery confirmer", self.deliveries.run())

    def _producer(self) -> Producer:
        return cast(Producer, self.app.producer)

    async def _send(self, records: RecordsByPartition) -> list[asyncio.Future[Any]]:
        return await self._producer().send_batches(records, self._delivered)

    async def publish_lists(self, lists: list[tuple[str, bytes]], acks: Sequence[AckFn]) -> None:
        """Deliver the lists with the tables' changelog records; ``acks`` run once delivered."""
        producer = self._producer()
        records: dict[tuple[str, int], Records] = {}
        for table in self.tables:
            records.update(table.take_changelog())  # each table has its own changelog topic
        topic = self.recommendations.get_topic_name()
        for user_id, value in lists:
            key = user_id.encode()
            records.setdefault((topic, producer.partition_for(topic, key)), []).append((key, value))
        await self.deliveries.submit(records, acks)

    def _delivered(self, tp: TP, offset: int) -> None:
        for table in self.tables:
            table.on_changelog_delivered(tp, offset)

    async def send_dead_letter(self, value: bytes, ack: AckFn) -> None:
        """Deliver one dead letter (partitions taken in turn); ``ack`` runs once delivered."""
        partition = self._dead_letters_sent % self._dead_letter_partitions
        self._dead_letters_sent += 1
        topic = self.dead_letters.get_topic_name()
        await self.deliveries.submit({(topic, partition): [(None, value)]}, [ack])


class Runtime:
    """Everything one worker process runs with, built on ``app`` (nothing starts here)."""

    def __init__(self, app: App, outputs: Outputs | None = None) -> None:
        settings = self.settings = app.streamrec
        self.app = app
        self.metrics = Metrics()
        #: The worker's long-running tasks; one that dies stops the worker.
        self.tasks = BackgroundTasks(self.stop_worker)
        self._stopping: asyncio.Future[None] | None = None
        self.events_topic = self._topic(settings.events_topic)
        self.contexts = self._table(
            "user-context", "Most recent events and purchased items per user."
        )  # values: UserContext.to_bytes(), compact and the same in every store
        self.latest_lists = self._table(
            "latest-list", "Each user's newest list, as published (the lookup by user)."
        )
        self.outputs: Outputs = outputs or TopicOutputs(
            app,
            self._topic(settings.recommendations_topic),
            self._topic(settings.dlq_topic),
            (self.contexts, self.latest_lists),
            self._topic(settings.catalogue_topic, compacting=True)
            if settings.catalogue_topic
            else None,
            self.metrics,
            self.tasks,
        )
        writer = ContextWriter(self.contexts, settings.context_cache_users)
        self.pipeline = ScoringPipeline(
            settings,
            self.metrics,
            self.outputs.publish_lists,
            self.latest_lists,
            self.tasks,
            contexts=writer,
        )
        app.service(self.pipeline)  # type: ignore[arg-type]  # Faust starts instances too
        self.step = EventStep(
            settings, self.metrics, writer, self.pipeline, self.outputs.send_dead_letter
        )
        self.catalogue_follower = CatalogueFollower(
            settings, self.metrics, self.pipeline, self.step, self.tasks
        )
        app.service(self.catalogue_follower)  # type: ignore[arg-type]
        #: The scoring agent, once :func:`stream.agents.install` registered it.
        self.agent: AgentT | None = None

    def _table(self, name: str, help_text: str) -> BatchTable:
        """A bytes-valued table by user id, co-partitioned with the events topic."""
        table = BatchTable(
            self.app,
            name=name,
            beacon=self.app.tables.beacon,
            partitions=self.settings.topic_partitions,
            key_type=str,
            value_type=bytes,
            help=help_text,
        )
        table.metrics = self.metrics
        self.app.tables.add(table)
        return table

    def _topic(self, name: str, *, compacting: bool = False) -> TopicT:
        """A bytes-in, bytes-out topic; Faust creates it with our partition count if missing."""
        return self.app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.topic_partitions,
            internal=True,
            compacting=compacting,
        )

    def stop_worker(self, task: str, error: BaseException) -> None:
        """Stop the worker (exit 1) because ``task`` died with ``error``; say so in one line."""
        log.critical(
            "streamrec: %s died (%s: %s); stopping the worker (exit 1): its unacknowledged "
            "events are read again after the restart",
            task,
            type(error).__name__,
            error,
        )
        if self._stopping is None:  # probes see /live/ 503 during the grace, then it stops
            self._stopping = asyncio.ensure_future(self._crash_after_grace(error))

    async def _crash_after_grace(self, error: BaseException) -> None:
        await asyncio.sleep(STOP_GRACE_S)
        await self.app.crash(error)

    def live(self) -> bool:
        """Whether every background task the worker needs is running."""
        return self.tasks.alive

    def partitions_mismatch(self) -> ConfigError | None:
        """Why the events topic cannot be served with this table, or ``None`` if it can."""
        s = self.settings
        found = self.app.consumer.topic_partitions(s.events_topic)
        if found is None or found == s.topic_partitions:
            return None
        return ConfigError(
            f"topic {s.events_topic!r} has {found} partitions but "
            f"STREAMREC_TOPIC_PARTITIONS={s.topic_partitions}: the context table must be "
            "co-partitioned with it. Set STREAMREC_TOPIC_PARTITIONS to the topic's count "
            "(or recreate the topic), then restart."
        )

    def table_recovered(self) -> bool:
        """Whether the context table has finished replaying its changelog."""
        app = self.app
        recovery = cast(TableManager, app.tables).recovery
        return recovery.completed.is_set() and not app.in_recovery and not app.rebalancing

    def _my_partitions(self) -> list[TP]:
        actives = self.app.assignor.assigned_actives()
        return [tp for tp in actives if tp.topic == self.settings.events_topic]

    def consumer_lag(self) -> int:
        """Input events on this worker's partitions past the committed offset.

        Offsets are committed only up to events whose output is delivered, so this also
        counts events read and waiting for delivery (see :meth:`Consumer.committed_lag`).
        """
        consumer = self.app.consumer
        if not isinstance(consumer, Consumer):
            return 0
        return consumer.committed_lag(self._my_partitions())

    def read_lag(self) -> int:
        """Input events on this worker's partitions not read yet (see :meth:`Consumer.lag`)."""
        consumer = self.app.consumer
        return consumer.lag(self._my_partitions()) if isinstance(consumer, Consumer) else 0

    def pending_deliveries(self) -> int:
        """Deliveries handed to the producer and not confirmed yet."""
        outputs = self.outputs
        return outputs.deliveries.pending if isinstance(outputs, TopicOutputs) else 0

    def ready(self) -> bool:
        """Whether the worker serves: model, partitions, table recovered and catalogue read."""
        return (
            self.live()
            and self.pipeline.scorer is not None
            and bool(self.app.assignor.assigned_actives())
            and self.table_recovered()
            and self.catalogue_follower.caught_up.is_set()
        )

    def catalogue_stats(self) -> dict[str, Any]:
        """Items the catalogue holds and what the current model scores of them."""
        catalogue = self.pipeline.catalogue
        scorer = self.pipeline.scorer
        items = scorer.items if scorer else None
        return {
            "read": self.catalogue_follower.caught_up.is_set(),
            "items": len(catalogue),
            "available": catalogue.available(),
            "extra_items": items.num_extra if items else 0,
            "blocked_items": len(items.blocked) - 1 if items else 0,
        }

    def experiment_stats(self) -> dict[str, Any] | None:
        """The experiment's arms: model served and live tallies (``None`` without one)."""
        experiment = self.pipeline.experiment
        if experiment is None:
            return None
        counters = self.metrics.counters
        arms = {}
        for arm, model in zip(experiment.arms, self.pipeline.models, strict=True):
            tallies = {t: counters.get(f"arm_{t}.{arm.name}", 0) for t in TALLIES}
            lists = tallies["lists"]
            arms[arm.name] = {
                "share": arm.share,
                "model_dir": arm.model_dir,
                "model_version": model.scorer.model_version if model.scorer else None,
                **tallies,
                "click_rate": tallies["clicks"] / lists if lists else 0.0,
                "purchase_rate": tallies["purchases"] / lists if lists else 0.0,
            }
        return {
            "name": experiment.name,
            "attribution_window_s": self.settings.attribution_window_s,
            "arms": arms,
        }

    def stats(self) -> dict[str, Any]:
        """The worker's figures: readiness, counters, summaries, model, providers, pending users.

        ``ready`` (:meth:`ready`) means the worker is consuming.
        """
        scorer = self.pipeline.scorer
        batcher = self.pipeline.batcher
        return {
            "ready": self.ready(),
            "assigned_partitions": len(self.app.assignor.assigned_actives()),
            "partitions": sorted(
                tp.partition
                for tp in self.app.assignor.assigned_actives()
                if tp.topic == self.settings.events_topic
            ),
            **self.metrics.snapshot(),
            "model_version": scorer.model_version if scorer else None,
            "providers": scorer.providers if scorer else [],
            "ranker": scorer.ranker_role if scorer else None,
            "query_encoder": scorer.query_role if scorer else None,
            "pending_users": batcher.pending_users if batcher else 0,
            "table_users": len(self.contexts),
            "catalogue": self.catalogue_stats(),
            "experiment": self.experiment_stats(),
            "consumer_lag": self.consumer_lag(),
            "read_lag": self.read_lag(),
            "pending_deliveries": self.pending_deliveries(),
            "dead_tasks": dict(self.tasks.dead),
            "process": process_figures(),
        }
