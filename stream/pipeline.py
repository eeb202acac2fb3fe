"""The scoring pipeline: user contexts in, recommendation lists out, events acked after.

It owns the :class:`~stream.scorer.Scorer` (created after start-up, in a thread) and the
:class:`~stream.batcher.Batcher`. Every ``STREAMREC_MODEL_RELOAD_S`` it reads the model
directory's manifest; a new ``model_version`` is loaded and verified in a thread and then
takes over between batches, so no event waits or is dropped. Each list is stamped with the
version of the model that scored it; a directory that cannot be served yet (being copied,
a hash mismatch) is logged and retried while the current model keeps serving.

Publishing is injected, so the worker publishes to Kafka and the replay tool can collect
lists in memory through the same code; a batch's lists are handed over in one call. Each
event's ack runs only after the list reflecting it was handed to the producer; Faust flushes
the producer before it commits offsets, so a crash never skips a list (at-least-once;
duplicates carry the same ``trigger_event_id``). :attr:`ScoringPipeline.before_scoring`
runs as each batch is cut (the per-event step writes the batch's contexts then).

The pipeline keeps the live :class:`~stream.catalogue.Catalogue`; :meth:`ScoringPipeline.
follow_catalogue` has the scorer build the new item set off the event loop after a change,
and a reloaded model follows the catalogue before it takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mode import Service

from stream.batcher import Batch, Batcher
from stream.catalogue import Catalogue
from stream.context import UserContext
from stream.errors import ModelLoadError
from stream.manifest import load_manifest
from stream.metrics import Metrics
from stream.records import Event, Recommendation
from stream.scorer import RankedList, Scorer
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Publishes a batch's lists: (user id, list as on the wire) pairs.
PublishFn = Callable[[list[tuple[str, bytes]]], Awaitable[Any]]
AckFn = Callable[[], Awaitable[Any]]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ScoredBatch:
    """A batch's lists and the version of the model that scored them."""

    model_version: str
    lists: list[RankedList]


class ScoringPipeline(Service):
    """Batch-scores users and publishes one list per scored user."""

    def __init__(
        self, settings: Settings, metrics: Metrics, publish_lists: PublishFn, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self._publish_lists = publish_lists
        #: Runs as each batch is cut, before it is scored.
        self.before_scoring: Callable[[], None] | None = None
        self.scorer: Scorer | None = None
        self.batcher: Batcher | None = None
        self._ready = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._refused: str | None = None  # a version that failed to load (logged once)
        #: The live catalogue (the worker's follower, or a replay, applies changes to it).
        self.catalogue = Catalogue()
        self._following = asyncio.Lock()  # one item set build at a time, and none mid-swap

    async def on_start(self) -> None:
        """Load the model off the event loop, then start batching."""
        s = self.settings
        load = functools.partial(self._load_following, s, self.catalogue.copy())
        self.scorer = await asyncio.get_running_loop().run_in_executor(None, load)
        self.batcher = Batcher(
            self._score,
            self._publish,
            max_users=s.batch_max_users,
            max_wait_s=s.batch_max_wait_ms / 1000.0,
            max_events=s.batch_max_events,
            max_inflight=s.max_inflight_batches,
            metrics=self.metrics,
            on_cut=self._on_cut,
        )
        await self.batcher.start()
        if s.model_reload_s > 0:
            self._watcher = asyncio.create_task(self._watch_model(s.model_reload_s))
        self._ready.set()

    @staticmethod
    def _load_following(settings: Settings, catalogue: Catalogue) -> Scorer:
        """A scorer for ``settings``, following ``catalogue`` (a copy; blocking)."""
        scorer = Scorer.from_settings(settings)
        if catalogue.records:
            scorer.follow(catalogue)
        return scorer

    async def follow_catalogue(self) -> int:
        """Have the scorer serve the catalogue as it is now; returns its extra items.

        The item tower embeds new texts in a thread; scoring goes on meanwhile with the
        previous item set.
        """
        scorer = await self.wait_ready()
        async with self._following:
            scorer = self.scorer or scorer
            if scorer.items.catalogue_version == self.catalogue.version:
                return scorer.items.num_extra
            loop = asyncio.get_running_loop()
            # a copy: the follower goes on applying changes while the thread builds
            items = await loop.run_in_executor(None, scorer.follow, self.catalogue.copy())
            self.metrics.inc("catalogue_item_sets")
            return items.num_extra

    def _on_cut(self) -> None:
        if self.before_scoring is None:
            return
        try:
            self.before_scoring()
        except Exception:  # the batch is still scored and published; the failure is loud
            log.exception("writing the contexts of a batch failed")
            self.metrics.inc("context_writes_failed")

    def _score(self, contexts: Sequence[UserContext]) -> ScoredBatch:
        scorer = self.scorer  # the model in force when this batch is scored
        assert scorer is not None
        return ScoredBatch(scorer.model_version, scorer.score(contexts))

    async def _watch_model(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except Exception:  # the watcher must outlive any surprise; the model keeps serving
                log.exception("checking %s for a new model failed", self.settings.model_dir)

    async def reload_if_changed(self) -> bool:
        """Switch to the model directory's model if its version changed; True if it did."""
        assert self.scorer is not None
        loop = asyncio.get_running_loop()
        model_dir = self.settings.model_dir
        try:
            manifest = await loop.run_in_executor(
                None, functools.partial(load_manifest, model_dir, verify_hash=False)
            )
        except ModelLoadError:
            return False  # no complete manifest (an export is writing): look again later
        current = self.scorer.model_version
        if manifest.model_version == current:
            return False
        try:
            async with self._following:  # the new model takes over following the catalogue
                scorer = await loop.run_in_executor(
                    None,
                    functools.partial(self._load_following, self.settings, self.catalogue.copy()),
                )
                self.scorer = scorer
        except ModelLoadError as exc:
            if self._refused != manifest.model_version:
                self._refused = manifest.model_version
                log.warning(
                    "model %s cannot be served yet (%s); still serving %s",
                    manifest.model_version,
                    exc,
                    current,
                )
            return False
        self.metrics.inc("model_reloads")
        log.info("now serving model %s (was %s)", scorer.model_version, current)
        return True

    async def on_stop(self) -> None:
        """Publish what is pending; anything not acked is redelivered on restart."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
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

    async def _publish(self, batch: Batch, outcome: ScoredBatch | BaseException) -> None:
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
            # no lists, but what goes out with every batch (its contexts' changelog) still does
            await self._publish_lists([])
        else:
            generated = now_ms()
            version = outcome.model_version
            lists = []
            for user, ranked in zip(batch.users, outcome.lists, strict=True):
                rec = Recommendation(
                    user_id=user.user_id,
                    items=ranked,
                    model_version=version,
                    trigger_event_id=user.trigger.event_id,
                    event_ts=user.trigger.ts,
                    generated_ts=generated,
                )
                lists.append((user.user_id, rec.to_json()))
                # from the producer's stamp on the event; clocks of other hosts may skew it
                self.metrics.observe("event_to_list_ms", max(0, generated - user.trigger.ts))
            await self._publish_lists(lists)
            self.metrics.inc("lists_out", len(batch.users))
            self.metrics.observe("batch_cut_to_publish_ms", (time.monotonic() - batch.cut_at) * 1e3)
        for user in batch.users:
            for ack in user.tokens:
                await ack()
