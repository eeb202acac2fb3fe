"""The scoring pipeline: user contexts in, recommendation lists out, events acked after.

It owns the :class:`~stream.scorer.Scorer` (created after start-up, in a thread, once per
process) and the :class:`~stream.batcher.Batcher`. Sending is injected, so the worker
publishes to Kafka and the replay tool can collect lists in memory through the same code.
Each event's ack runs only after the list reflecting it was handed to the producer; Faust
flushes the producer before it commits offsets, so a crash never skips a list
(at-least-once; duplicates carry the same ``trigger_event_id``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service

from stream.batcher import Batch, Batcher
from stream.context import UserContext
from stream.metrics import Metrics
from stream.records import Event, Recommendation
from stream.scorer import RankedList, Scorer
from stream.settings import Settings

log = logging.getLogger(__name__)

SendFn = Callable[[str, bytes], Awaitable[Any]]
AckFn = Callable[[], Awaitable[Any]]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class ScoringPipeline(Service):
    """Batch-scores users and publishes one list per scored user."""

    def __init__(self, settings: Settings, metrics: Metrics, send_list: SendFn, **kwargs: Any):
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self._send_list = send_list
        self.scorer: Scorer | None = None
        self.batcher: Batcher | None = None
        self._ready = asyncio.Event()

    async def on_start(self) -> None:
        """Load the model off the event loop, then start batching."""
        s = self.settings
        load = functools.partial(Scorer.from_settings, s)
        self.scorer = await asyncio.get_running_loop().run_in_executor(None, load)
        self.batcher = Batcher(
            self.scorer.score,
            self._publish,
            max_users=s.batch_max_users,
            max_wait_s=s.batch_max_wait_ms / 1000.0,
            max_events=s.batch_max_events,
            max_inflight=s.max_inflight_batches,
            metrics=self.metrics,
        )
        await self.batcher.start()
        self._ready.set()

    async def on_stop(self) -> None:
        """Publish what is pending; anything not acked is redelivered on restart."""
        if self.batcher is not None:
            try:
                await self.batcher.stop()
            except Exception:
                log.exception("could not publish pending lists at shutdown; they will be redone")

    async def wait_ready(self) -> Scorer:
        """Wait until the model is loaded and the batcher runs."""
        await self._ready.wait()
        assert self.scorer is not None
        return self.scorer

    async def submit(self, user_id: str, context: UserContext, trigger: Event, ack: AckFn) -> None:
        """Queue a user for scoring; ``ack`` runs once its list is published."""
        assert self.batcher is not None, "submit() before the pipeline started"
        await self.batcher.add(user_id, context, trigger, ack)

    async def _publish(self, batch: Batch, outcome: list[RankedList] | BaseException) -> None:
        assert self.scorer is not None
        if isinstance(outcome, BaseException):
            # The contexts are stored; the users' next events rescore them. Acking keeps
            # the partition's commits moving instead of replaying it forever.
            log.error(
                "scoring %d users failed (%s: %s); their events are acked without a list",
                len(batch.users),
                type(outcome).__name__,
                outcome,
            )
            self.metrics.inc("users_failed", len(batch.users))
        else:
            generated = now_ms()
            version = self.scorer.model_version
            for user, ranked in zip(batch.users, outcome, strict=True):
                rec = Recommendation(
                    user_id=user.user_id,
                    items=ranked,
                    model_version=version,
                    trigger_event_id=user.trigger.event_id,
                    event_ts=user.trigger.ts,
                    generated_ts=generated,
                )
                await self._send_list(user.user_id, rec.to_json())
            self.metrics.inc("lists_out", len(batch.users))
            self.metrics.observe("batch_cut_to_publish_ms", (time.monotonic() - batch.cut_at) * 1e3)
        for user in batch.users:
            for ack in user.tokens:
                await ack()
