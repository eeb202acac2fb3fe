"""The scoring pipeline: user contexts in, recommendation lists out, events acked after.

It owns the :class:`~stream.model.scorer.Scorer` (created after start-up, in a thread) and the
:class:`~stream.processing.batcher.Batcher`. Every ``STREAMREC_MODEL_RELOAD_S`` it reads the model
directory's manifest; a new ``model_version`` is loaded and verified in a thread and then
takes over between batches, so no event waits or is dropped. Each list is stamped with the
version of the model that scored it; a directory that cannot be served yet (being copied,
a hash mismatch) is logged and retried while the current model keeps serving.

Publishing is injected, so the worker publishes to Kafka and the replay tool can collect
lists in memory through the same code; a batch's lists are handed over in one call with the
acks of every event behind them, which the worker runs only once the broker has confirmed
the lists and the batch's changelog records (:mod:`stream.kafka.delivery`): neither a crash nor a
broker that refuses skips a list (at-least-once; duplicates carry the same
``trigger_event_id``). The :class:`~stream.state.writer.ContextWriter` the pipeline is given
writes the batch's contexts as each batch is cut; if it fails, the batch is neither scored
nor acknowledged and the worker stops (:class:`~stream.errors.WorkerFault`).

With an experiment (``STREAMREC_EXPERIMENT``, :mod:`stream.experiments.arms`) the pipeline serves
one model per arm: each is loaded, verified, hot-reloaded and follows the catalogue like the
single model; a batch is scored per arm and each list names its arm. Each published list is
also written to :attr:`ScoringPipeline.latest_lists` (the lookup by user, and attribution's
"latest list", :mod:`stream.experiments.attribution`).

The pipeline keeps the live :class:`~stream.catalogue.items.Catalogue`; :meth:`ScoringPipeline.
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

from stream.catalogue.items import Catalogue
from stream.clock import now_ms
from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event, Recommendation
from stream.errors import ModelLoadError, WorkerFault
from stream.experiments.arms import Experiment, load_experiment
from stream.experiments.attribution import Attribution
from stream.kafka.delivery import AckFn
from stream.model.scorer import RankedList, Scorer
from stream.processing.batcher import Batch, Batcher, PendingUser
from stream.settings import Settings
from stream.state.context import UserContext
from stream.state.store import MemoryStore, Origin, Store
from stream.state.writer import ContextWriter
from stream.telemetry.background import BackgroundTasks
from stream.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Publishes a batch's lists, (user id, list as on the wire) pairs, and runs the acks of the
#: events behind them once they (and the batch's changelog records) are delivered.
PublishListsFn = Callable[[list[tuple[str, bytes]], Sequence[AckFn]], Awaitable[Any]]


@dataclass(frozen=True)
class ScoredBatch:
    """A batch's lists, each with the version of the model and the arm that scored it."""

    lists: list[RankedList]
    model_versions: list[str]
    arms: list[str | None]


@dataclass
class ServedModel:
    """One model the pipeline serves: the only one, or an experiment arm's."""

    arm: str | None  # None outside an experiment
    model_dir: str
    scorer: Scorer | None = None
    refused: str | None = None  # a version that failed to load (logged once)


class ScoringPipeline(Service):
    """Batch-scores users and publishes one list per scored user."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        publish_lists: PublishListsFn,
        latest_lists: Store | None = None,
        tasks: BackgroundTasks | None = None,
        contexts: ContextWriter | None = None,
        **kwargs: Any,
    ):
        """``contexts``: the writer of the users' contexts, written as each batch is cut."""
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics
        self._publish_lists = publish_lists
        #: Where the pipeline's long-running tasks are started and watched.
        self.tasks = tasks or BackgroundTasks()
        #: Each user's newest published list (as on the wire), written as it is published.
        self.latest_lists: Store = MemoryStore() if latest_lists is None else latest_lists
        self.attribution = Attribution(metrics, settings.attribution_window_s)
        #: Written as each batch is cut, before it is scored (``None``: contexts not stored).
        self.contexts = contexts
        #: The experiment (read at start), or ``None``: then one model serves everyone.
        self.experiment: Experiment | None = None
        self.models: list[ServedModel] = [ServedModel(None, settings.model_dir)]
        self.batcher: Batcher | None = None
        self._ready = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        #: The live catalogue (the worker's follower, or a replay, applies changes to it).
        self.catalogue = Catalogue()
        self._following = asyncio.Lock()  # one item set build at a time, and none mid-swap

    @property
    def scorer(self) -> Scorer | None:
        """The first model's scorer (the only one outside an experiment), once loaded."""
        return self.models[0].scorer

    async def on_start(self) -> None:
        """Load the model(s) off the event loop, then start batching."""
        s = self.settings
        if s.experiment:
            self.experiment = load_experiment(s.experiment)
            self.models = [ServedModel(a.name, a.model_dir) for a in self.experiment.arms]
        loop = asyncio.get_running_loop()
        for model in self.models:
            load = functools.partial(
                self._load_following, s, model.model_dir, self.catalogue.copy()
            )
            model.scorer = await loop.run_in_executor(None, load)
        self.batcher = Batcher(
            self._score,
            self._publish,
            max_users=s.batch_max_users,
            max_wait_s=s.batch_max_wait_ms / 1000.0,
            max_events=s.batch_max_events,
            max_inflight=s.max_inflight_batches,
            metrics=self.metrics,
            on_cut=self._on_cut,
            tasks=self.tasks,
        )
        await self.batcher.start()
        if s.model_reload_s > 0:
            self._watcher = self.tasks.start("model watcher", self._watch_model(s.model_reload_s))
        self._ready.set()

    @staticmethod
    def _load_following(settings: Settings, model_dir: str, catalogue: Catalogue) -> Scorer:
        """A scorer for ``model_dir``, following ``catalogue`` (a copy; blocking)."""
        scorer = Scorer.from_settings(settings.with_overrides(model_dir=model_dir))
        if catalogue.records:
            scorer.follow(catalogue)
        return scorer

    async def follow_catalogue(self) -> int:
        """Have the scorer serve the catalogue as it is now; returns its extra items.

        The item tower embeds new texts in a thread; scoring goes on meanwhile with the
        previous item set.
        """
        await self.wait_ready()
        async with self._following:
            extra = 0
            for model in self.models:
                scorer = model.scorer
                assert scorer is not None
                if scorer.items.catalogue_version == self.catalogue.version:
                    extra = scorer.items.num_extra
                    continue
                loop = asyncio.get_running_loop()
                # a copy: the follower goes on applying changes while the thread builds
                items = await loop.run_in_executor(None, scorer.follow, self.catalogue.copy())
                self.metrics.inc("catalogue_item_sets")
                extra = items.num_extra
            return extra

    def _on_cut(self) -> None:
        if self.contexts is None:
            return
        try:
            self.contexts.write()
        except Exception as exc:  # nothing of the batch is acknowledged: the worker stops
            self.metrics.inc("context_writes_failed")
            fault = WorkerFault(f"writing the contexts of a batch failed: {exc!r}")
            self.tasks.fail("context writer", fault)
            raise fault from exc

    def _score(self, users: Sequence[PendingUser]) -> ScoredBatch:
        lists: list[RankedList] = [[] for _ in users]
        versions = [""] * len(users)
        arms: list[str | None] = [None] * len(users)
        for model, rows in self._by_model(users):
            scorer = model.scorer  # the model in force when this batch is scored
            assert scorer is not None
            ranked_lists = scorer.score([users[r].context for r in rows])
            for row, ranked in zip(rows, ranked_lists, strict=True):
                lists[row], versions[row], arms[row] = ranked, scorer.model_version, model.arm
        return ScoredBatch(lists, versions, arms)

    def model_for(self, user_id: str) -> ServedModel:
        """The model that scores ``user_id``: the only one, or the user's arm's."""
        if self.experiment is None:
            return self.models[0]
        arm = self.experiment.assign(user_id).name
        return next(m for m in self.models if m.arm == arm)

    def _by_model(self, users: Sequence[PendingUser]) -> list[tuple[ServedModel, list[int]]]:
        """The batch's rows each model scores: all of them, or each arm's users."""
        if self.experiment is None:
            return [(self.models[0], list(range(len(users))))]
        by_arm: dict[str | None, list[int]] = {}
        for row, user in enumerate(users):
            by_arm.setdefault(self.model_for(user.user_id).arm, []).append(row)
        return [(m, by_arm[m.arm]) for m in self.models if m.arm in by_arm]

    async def _watch_model(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except Exception:  # the watcher must outlive any surprise; the model keeps serving
                log.exception("checking the model directories for a new model failed")

    async def reload_if_changed(self) -> bool:
        """Switch each model (arm) whose directory's version changed; True if one did."""
        changed = False
        for model in self.models:
            changed = await self._reload_model(model) or changed
        return changed

    async def _reload_model(self, model: ServedModel) -> bool:
        assert model.scorer is not None
        loop = asyncio.get_running_loop()
        try:
            manifest = await loop.run_in_executor(
                None, functools.partial(load_manifest, model.model_dir, verify_hash=False)
            )
        except ModelLoadError:
            return False  # no complete manifest (an export is writing): look again later
        current = model.scorer.model_version
        if manifest.model_version == current:
            return False
        where = f" for arm {model.arm}" if model.arm else ""
        try:
            async with self._following:  # the new model takes over following the catalogue
                model.scorer = await loop.run_in_executor(
                    None,
                    functools.partial(
                        self._load_following,
                        self.settings,
                        model.model_dir,
                        self.catalogue.copy(),
                    ),
                )
        except ModelLoadError as exc:
            if model.refused != manifest.model_version:
                model.refused = manifest.model_version
                log.warning(
                    "model %s cannot be served yet%s (%s); still serving %s",
                    manifest.model_version,
                    where,
                    exc,
                    current,
                )
            return False
        self.metrics.inc("model_reloads")
        log.info("now serving model %s%s (was %s)", model.scorer.model_version, where, current)
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

    async def submit(
        self,
        user_id: str,
        context: UserContext,
        trigger: Event,
        ack: AckFn,
        origin: Origin | None = None,
    ) -> None:
        """Queue a user for scoring; ``ack`` runs once its list is delivered.

        ``origin``: the message of ``trigger`` (the user's list is stored from its partition).
        """
        assert self.batcher is not None, "submit() before the pipeline started"
        await self.batcher.add(user_id, context, trigger, ack, origin)

    def attribute(self, event: Event) -> None:
        """Count a new click or purchase for the arm of its user's latest list, if it earned it."""
        self.attribution.observe(self.latest_lists.get(event.user_id), event)

    def observe_click(self, event: Event) -> None:
        """Count a new click for every model's new-item feedback (:mod:`stream.model.feedback`)."""
        for model in self.models:
            if model.scorer is not None:
                model.scorer.observe(event)

    def _write_latest(self, latest: list[tuple[str, bytes, Any]]) -> None:
        try:
            self.latest_lists.write(latest)
        except Exception:  # the lists still go out; the lookup serves the previous ones
            log.exception("writing the latest lists of a batch failed")
            self.metrics.inc("latest_list_writes_failed")

    async def _publish(self, batch: Batch, outcome: ScoredBatch | BaseException) -> None:
        acks = [ack for user in batch.users for ack in user.acks]  # run once delivered
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
            await self._publish_lists([], acks)
        else:
            generated = now_ms()
            experiment = self.experiment.name if self.experiment else None
            lists, latest = [], []
            scored = zip(
                batch.users, outcome.lists, outcome.model_versions, outcome.arms, strict=True
            )
            for user, ranked, version, arm in scored:
                rec = Recommendation(
                    user_id=user.user_id,
                    items=ranked,
                    model_version=version,
                    trigger_event_id=user.trigger.event_id,
                    event_ts=user.trigger.ts,
                    generated_ts=generated,
                    experiment=experiment,
                    arm=arm,
                )
                value = rec.to_json()
                lists.append((user.user_id, value))
                latest.append((user.user_id, value, user.origin))
                first = self.latest_lists.get(user.user_id) is None
                self.attribution.published(rec, first)
                # from the producer's stamp on the event; clocks of other hosts may skew it
                self.metrics.observe("event_to_list_ms", max(0, generated - user.trigger.ts))
            self._write_latest(latest)
            await self._publish_lists(lists, acks)
            self.metrics.inc("lists_out", len(batch.users))
            self.metrics.observe("batch_cut_to_publish_ms", (time.monotonic() - batch.cut_at) * 1e3)
