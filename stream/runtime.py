"""The worker's parts, built once per App, and what they say about the worker.

Topics, the context table, metrics, the scoring pipeline and the per-event step; readiness,
consumer lag and the stats the web views serve.

:func:`stream.agents.install` builds one :class:`Runtime` and hands it to the agent and the
web views. Its outputs (lists and dead letters) go to Kafka topics, or, for a unit test of
the agent, wherever an :class:`Outputs` of the test's own sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

import faust
from faust.tables.manager import TableManager
from faust.types import AgentT, EventT, TopicT

from stream.errors import ConfigError
from stream.metrics import Metrics
from stream.pipeline import ScoringPipeline
from stream.step import EventStep
from stream.transport import Consumer

if TYPE_CHECKING:  # the module builds the one App on import; the type is all we need
    from stream.app import App

log = logging.getLogger(__name__)


class Outputs(Protocol):
    """Where the worker's lists and dead letters go."""

    async def prepare(self) -> None:
        """Make the destinations ready (create topics); called once before the first event."""

    async def send_list(self, user_id: str, value: bytes) -> None:
        """Publish one recommendation list, keyed by its user."""

    async def send_dead_letter(self, value: bytes) -> None:
        """Publish one dead letter."""


class TopicOutputs:
    """Lists and dead letters to their Kafka topics (created with the worker's partitions)."""

    def __init__(self, recommendations: TopicT, dead_letters: TopicT) -> None:
        self.recommendations = recommendations
        self.dead_letters = dead_letters

    async def prepare(self) -> None:
        """Declare both topics."""
        await self.recommendations.maybe_declare()
        await self.dead_letters.maybe_declare()

    async def send_list(self, user_id: str, value: bytes) -> None:
        """Hand the list to the producer (flushed before every offset commit)."""
        await self.recommendations.send(key=user_id.encode(), value=value)

    async def send_dead_letter(self, value: bytes) -> None:
        """Hand the dead letter to the producer."""
        await self.dead_letters.send(value=value)


class ContextTable(faust.Table):
    """Faust's table, counting the changelog records it applies (recovery and standbys).

    A restart on a RocksDB store applies only what was written since its last flush; on the
    memory store it applies the whole changelog. ``changelog_records_applied`` shows which.
    """

    metrics: Metrics

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Apply the batch, then count it."""
        records = list(batch)
        super().apply_changelog_batch(records)
        self.metrics.inc("changelog_records_applied", len(records))


class Runtime:
    """Everything one worker process runs with, built on ``app`` (nothing starts here)."""

    def __init__(self, app: App, outputs: Outputs | None = None) -> None:
        settings = self.settings = app.streamrec
        self.app = app
        self.metrics = Metrics()
        self.events_topic = self._topic(settings.events_topic)
        self.outputs: Outputs = outputs or TopicOutputs(
            self._topic(settings.recommendations_topic), self._topic(settings.dlq_topic)
        )
        self.contexts = ContextTable(
            app,
            name="user-context",
            beacon=app.tables.beacon,
            partitions=settings.topic_partitions,
            key_type=str,
            value_type=bytes,  # UserContext.to_bytes(): compact, and the same in every store
            help="Most recent events and purchased items per user.",
        )
        self.contexts.metrics = self.metrics
        app.tables.add(self.contexts)
        self.pipeline = ScoringPipeline(settings, self.metrics, self.outputs.send_list)
        app.service(self.pipeline)  # type: ignore[arg-type]  # Faust starts instances too
        self.step = EventStep(
            settings, self.metrics, self.contexts, self.pipeline, self.outputs.send_dead_letter
        )
        #: The scoring agent, once :func:`stream.agents.install` registered it.
        self.agent: AgentT | None = None

    def _topic(self, name: str) -> TopicT:
        """A bytes-in, bytes-out topic; Faust creates it with our partition count if missing."""
        return self.app.topic(
            name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.topic_partitions,
            internal=True,
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
        """The model is loaded, this worker owns partitions and its context table is recovered."""
        return (
            self.pipeline.scorer is not None
            and bool(self.app.assignor.assigned_actives())
            and self.table_recovered()
        )

    def stats(self) -> dict[str, Any]:
        """The worker's figures: readiness, counters, summaries, model, providers, pending users.

        ``ready`` (:meth:`ready`) means the worker is consuming.
        """
        scorer = self.pipeline.scorer
        batcher = self.pipeline.batcher
        return {
            "ready": self.ready(),
            "assigned_partitions": len(self.app.assignor.assigned_actives()),
            **self.metrics.snapshot(),
            "model_version": scorer.model_version if scorer else None,
            "providers": scorer.providers if scorer else [],
            "ranker": scorer.ranker_role if scorer else None,
            "query_encoder": scorer.query_role if scorer else None,
            "pending_users": batcher.pending_users if batcher else 0,
            "table_users": len(self.contexts),
            "consumer_lag": self.consumer_lag(),
        }
