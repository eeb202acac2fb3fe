"""Faust wiring: topics, the user-context table, the scoring agent and the worker's views.

Per event: validate (bad ones go to the dead-letter topic), update the user's context in the
changelog-backed table, hand the user to the scoring pipeline. Table writes happen here, in
stream iteration (one event at a time); only the scoring is batched.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any, cast

import faust
import orjson
from faust import Stream
from faust.tables.manager import TableManager
from faust.types import EventT, StreamT, TopicT
from faust.types.tuples import Message
from faust.web import Request, Response, View

from stream.app import app, settings
from stream.context import ContextLimits, UserContext, update_context
from stream.errors import ConfigError, InvalidEvent, ModelLoadError
from stream.manifest import load_manifest
from stream.metrics import Metrics
from stream.pipeline import ScoringPipeline, now_ms
from stream.prometheus import install as install_prometheus
from stream.records import Limits, dead_letter, parse_event

log = logging.getLogger(__name__)

metrics = Metrics()
limits = Limits(settings.max_event_bytes, settings.max_id_chars, settings.max_query_chars)
context_limits = ContextLimits.from_settings(settings)


def _topic(name: str) -> TopicT:
    """A bytes-in, bytes-out topic; Faust creates it with our partition count if missing."""
    return app.topic(
        name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        internal=True,
    )


events_topic = _topic(settings.events_topic)
recommendations_topic = _topic(settings.recommendations_topic)
dead_letters_topic = _topic(settings.dlq_topic)


class ContextTable(faust.Table):
    """Faust's table, counting the changelog records it applies (recovery and standbys).

    A restart on a RocksDB store applies only what was written since its last flush; on the
    memory store it applies the whole changelog. ``changelog_records_applied`` shows which.
    """

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Apply the batch, then count it."""
        records = list(batch)
        super().apply_changelog_batch(records)
        metrics.inc("changelog_records_applied", len(records))


contexts = ContextTable(
    app,
    name="user-context",
    beacon=app.tables.beacon,
    partitions=settings.topic_partitions,
    key_type=str,
    value_type=bytes,  # UserContext.to_bytes(): compact, and the same in every store
    help="Most recent events and purchased items per user.",
)
app.tables.add(contexts)


async def _send_list(user_id: str, value: bytes) -> None:
    await recommendations_topic.send(key=user_id.encode(), value=value)


pipeline = ScoringPipeline(settings, metrics, _send_list)
app.service(pipeline)  # type: ignore[arg-type]  # Faust starts instances as well as classes


@app.on_worker_init.connect
def _check_model(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Refuse to start on a model directory that cannot be served, saying why."""
    try:
        manifest = load_manifest(settings.model_dir)
    except ModelLoadError as exc:
        msg = f"streamrec: cannot start the worker: {exc}"
        raise SystemExit(msg) from None
    log.info("serving model %s from %s", manifest.model_version, settings.model_dir)


async def _dead_letter(message: Message, reason: str, detail: str) -> None:
    metrics.inc("events_invalid")
    metrics.inc(f"dlq_reason.{reason}")
    count = metrics.counters[f"dlq_reason.{reason}"]
    if count == 1 or count % 1000 == 0:  # no payloads in logs, and no log floods
        log.warning(
            "dead-lettered %s[%d]@%d: %s (%d so far for this reason)",
            message.topic,
            message.partition,
            message.offset,
            reason,
            count,
        )
    await dead_letters_topic.send(
        value=dead_letter(
            message.value,
            reason=reason,
            detail=detail,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            ts=now_ms(),
        )
    )


async def _handle(manual: StreamT, event: EventT) -> None:
    message = event.message
    try:
        # a missing key fails the key check: unkeyed messages would split a user's context
        ev = parse_event(message.value, message.key or b"", limits)
    except InvalidEvent as exc:
        await _dead_letter(message, exc.reason, exc.detail)
        await manual.ack(event)
        return
    context, changed = update_context(contexts, ev, context_limits)
    if not changed:
        metrics.inc("events_duplicate")
    metrics.inc(f"events_type.{ev.type}")
    await pipeline.submit(ev.user_id, context, ev, functools.partial(manual.ack, event))


async def _partitions_match() -> bool:
    """Crash the worker if the events topic's partitions differ from the table's."""
    found = app.consumer.topic_partitions(settings.events_topic)
    if found is None or found == settings.topic_partitions:
        return True
    exc = ConfigError(
        f"topic {settings.events_topic!r} has {found} partitions but "
        f"STREAMREC_TOPIC_PARTITIONS={settings.topic_partitions}: the context table must be "
        "co-partitioned with it. Set STREAMREC_TOPIC_PARTITIONS to the topic's count "
        "(or recreate the topic), then restart."
    )
    log.critical("%s", exc)
    await app.crash(exc)
    return False


@app.agent(events_topic, name="score-events")
async def score_events(stream: StreamT) -> None:
    """Validate, remember and queue each event for scoring; ack once its list is out."""
    await recommendations_topic.maybe_declare()
    await dead_letters_topic.maybe_declare()
    await pipeline.wait_ready()
    manual = cast(Stream, stream).noack()  # acks are ours: after the list is out
    checked = False
    async for event in manual.events():
        if not checked:
            checked = True
            if not await _partitions_match():
                return
        metrics.inc("events_in")
        try:
            await _handle(manual, event)
        except Exception as exc:  # a bug must not stop the worker; the event is kept
            log.exception("unexpected error on %s", event.message.tp)
            await _dead_letter(event.message, "internal_error", f"{type(exc).__name__}: {exc}")
            await manual.ack(event)


def table_recovered() -> bool:
    """Whether the context table has finished replaying its changelog."""
    recovery = cast(TableManager, app.tables).recovery
    return recovery.completed.is_set() and not app.in_recovery and not app.rebalancing


def consumer_lag() -> int:
    """Input events on this worker's partitions not yet read (broker high watermark − next read).

    Faust keeps the last read offset per partition privately; this is the figure an operator
    watches during a broker outage or a slow model (it grows, then drains).
    """
    consumer = app.consumer
    read = getattr(consumer, "_read_offset", {})
    lag = 0
    for tp in app.assignor.assigned_actives():
        if tp.topic != settings.events_topic:
            continue
        try:
            highwater = consumer.highwater(tp)  # None until a fetch of it was answered
        except AssertionError:  # revoked a moment ago (aiokafka asserts the assignment)
            highwater = None
        if highwater is not None:
            last = read.get(tp)
            lag += max(0, highwater - (last + 1 if last is not None else 0))
    return lag


def worker_ready() -> bool:
    """The model is loaded, this worker owns partitions and its context table is recovered."""
    return (
        pipeline.scorer is not None and bool(app.assignor.assigned_actives()) and table_recovered()
    )


def stats() -> dict[str, Any]:
    """The worker's figures: readiness, counters, summaries, model, providers, pending users.

    ``ready`` (:func:`worker_ready`) means the worker is consuming.
    """
    scorer = pipeline.scorer
    return {
        "ready": worker_ready(),
        "assigned_partitions": len(app.assignor.assigned_actives()),
        **metrics.snapshot(),
        "model_version": scorer.model_version if scorer else None,
        "providers": scorer.providers if scorer else [],
        "ranker": scorer.ranker_role if scorer else None,
        "query_encoder": scorer.query_role if scorer else None,
        "pending_users": pipeline.batcher.pending_users if pipeline.batcher else 0,
        "table_users": len(contexts),
        "consumer_lag": consumer_lag(),
    }


@app.page("/stats/")
class StatsView(View):
    """Counters and summaries as JSON."""

    async def get(self, request: Request) -> Response:
        """Return :func:`stats`."""
        return self.json(stats())


install_prometheus(app, metrics, stats)


@app.page("/ready/")
class ReadyView(View):
    """Readiness probe: 200 once :func:`worker_ready`, else 503."""

    async def get(self, request: Request) -> Response:
        """``{"ready": bool}``."""
        ready = worker_ready()
        return self.json({"ready": ready}, status=200 if ready else 503)


@app.page("/live/")
class LiveView(View):
    """Liveness probe: answered by the worker's event loop, so a stuck loop fails it."""

    async def get(self, request: Request) -> Response:
        """``{"live": true}``."""
        return self.json({"live": True})


@app.page("/context/{user_id}/")
@app.topic_route(topic=events_topic, match_info="user_id")
async def context_view(web: Any, request: Request, user_id: str) -> Response:
    """What the worker remembers of one user (routed to the worker owning its partition)."""
    if not table_recovered():
        return web.json({"user_id": user_id, "error": "table recovering, retry"}, status=503)
    context = UserContext.from_bytes(contexts.get(user_id))
    if context is None:
        return web.json({"user_id": user_id, "found": False}, status=404)
    return web.json({"user_id": user_id, "found": True, **context.to_dict()})


@app.timer(interval=10.0)
async def log_stats() -> None:
    """Log the counters every 10 s."""
    log.info(
        "stats lag=%d %s", consumer_lag(), orjson.dumps(metrics.snapshot()["counters"]).decode()
    )
