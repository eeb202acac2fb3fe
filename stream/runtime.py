"""The worker's parts, built once per App, and what they say about the worker.

Topics, the context and latest-list tables, metrics, the scoring pipeline and the per-event
step; readiness, consumer lag and the stats the web views serve.

:func:`stream.agents.install` builds one :class:`Runtime` and hands it to the agent and the
web views. Its outputs (lists and dead letters) go to Kafka topics, or, for a unit test of
the agent, wherever an :class:`Outputs` of the test's own sends them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import faust
from faust import Topic
from faust.streams import _current_event
from faust.tables.manager import TableManager
from faust.types import TP, AgentT, EventT, TopicT

from stream.attribution import TALLIES
from stream.catalogue_follower import CatalogueFollower
from stream.errors import ConfigError
from stream.metrics import Metrics, process_figures
from stream.pipeline import ScoringPipeline
from stream.step import EventStep
from stream.store import Origin
from stream.transport import Consumer, Producer, Records

if TYPE_CHECKING:  # the module builds the one App on import; the type is all we need
    from stream.app import App

log = logging.getLogger(__name__)


class Outputs(Protocol):
    """Where the worker's lists and dead letters go."""

    async def prepare(self) -> None:
        """Make the destinations ready (create topics); called once before the first event."""

    async def publish_lists(self, lists: list[tuple[str, bytes]]) -> None:
        """Publish a batch's recommendation lists, each keyed by its user."""

    async def send_dead_letter(self, value: bytes) -> None:
        """Publish one dead letter."""


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
    followed.

    A batch's lists go out with the changelog records of its contexts and latest lists, one
    producer batch per topic partition; all are flushed before Faust commits the batch's
    offsets.
    """

    def __init__(
        self,
        app: faust.App,
        recommendations: TopicT,
        dead_letters: TopicT,
        tables: Sequence[BatchTable],
        catalogue: TopicT | None,
    ) -> None:
        self.app = app
        self.recommendations = recommendations
        self.dead_letters = dead_letters
        self.tables = tables
        self.catalogue = catalogue

    async def prepare(self) -> None:
        """Declare the topics; learn the recommendation topic's partitions."""
        await self.recommendations.maybe_declare()
        await self.dead_letters.maybe_declare()
        if self.catalogue is not None:
            await self.catalogue.maybe_declare()
        await self._producer().await_topic(self.recommendations.get_topic_name())

    def _producer(self) -> Producer:
        return cast(Producer, self.app.producer)

    async def publish_lists(self, lists: list[tuple[str, bytes]]) -> None:
        """Hand the lists, and the tables' changelog records before them, to the producer."""
        producer = self._producer()
        records: dict[tuple[str, int], Records] = {}
        for table in self.tables:
            records.update(table.take_changelog())  # each table has its own changelog topic
        topic = self.recommendations.get_topic_name()
        for user_id, value in lists:
            key = user_id.encode()
            records.setdefault((topic, producer.partition_for(topic, key)), []).append((key, value))
        await producer.send_batches(records, self._delivered)

    def _delivered(self, tp: TP, offset: int) -> None:
        for table in self.tables:
            table.on_changelog_delivered(tp, offset)

    async def send_dead_letter(self, value: bytes) -> None:
        """Hand the dead letter to the producer."""
        await self.dead_letters.send(value=value)


class Runtime:
    """Everything one worker process runs with, built on ``app`` (nothing starts here)."""

    def __init__(self, app: App, outputs: Outputs | None = None) -> None:
        settings = self.settings = app.streamrec
        self.app = app
        self.metrics = Metrics()
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
        )
        self.pipeline = ScoringPipeline(
            settings, self.metrics, self.outputs.publish_lists, self.latest_lists
        )
        app.service(self.pipeline)  # type: ignore[arg-type]  # Faust starts instances too
        self.step = EventStep(
            settings, self.metrics, self.contexts, self.pipeline, self.outputs.send_dead_letter
        )
        self.catalogue = CatalogueFollower(settings, self.metrics, self.pipeline, self.step)
        app.service(self.catalogue)  # type: ignore[arg-type]
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

    def consumer_lag(self) -> int:
        """Input events on this worker's partitions not read yet (see :meth:`Consumer.lag`)."""
        actives = self.app.assignor.assigned_actives()
        mine = [tp for tp in actives if tp.topic == self.settings.events_topic]
        consumer = self.app.consumer
        return consumer.lag(mine) if isinstance(consumer, Consumer) else 0

    def ready(self) -> bool:
        """Whether the worker serves: model, partitions, table recovered and catalogue read."""
        return (
            self.pipeline.scorer is not None
            and bool(self.app.assignor.assigned_actives())
            and self.table_recovered()
            and self.catalogue.caught_up.is_set()
        )

    def catalogue_stats(self) -> dict[str, Any]:
        """Items the catalogue holds and what the current model scores of them."""
        catalogue = self.pipeline.catalogue
        scorer = self.pipeline.scorer
        items = scorer.items if scorer else None
        return {
            "read": self.catalogue.caught_up.is_set(),
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
            "process": process_figures(),
        }
