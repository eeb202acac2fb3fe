"""Micro-batching of scoring: coalesce users, flush by size or deadline, score off the loop.

The batcher knows nothing of Kafka: the worker and the replay tool both drive it. A user
with several new events is scored once per batch (the newest context and trigger win; every
event's ack rides along). A batch flushes when ``max_users`` users or ``max_events``
events are pending, or ``max_wait_s`` after its first pending user; ``on_cut`` runs as a
batch is cut, before it is scored (the worker writes the batch's contexts then). Scoring runs
in a thread pool; at most ``max_inflight`` batches are being scored or published at once, and
:meth:`Batcher.add` waits while that bound is reached (backpressure, not unbounded memory).
Batches are published in the order they were cut, so a user's newer list never precedes an
older one. Both loops run as watched tasks (:mod:`stream.telemetry.background`): a publish that
raises stops the worker instead of leaving its events unacknowledged for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stream.contracts.records import Event
from stream.state.context import UserContext
from stream.telemetry.background import BackgroundTasks
from stream.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Scores a batch's users; whatever it returns is handed to the publish function.
ScoreFn = Callable[[Sequence["PendingUser"]], Any]


@dataclass
class PendingUser:
    """A user waiting to be scored, with every event folded into this score.

    ``origin`` is where the newest of them was read (the worker stores the user's list from
    that message's partition).
    """

    user_id: str
    context: UserContext
    trigger: Event
    acks: list[Any] = field(default_factory=list)
    origin: Any = None


@dataclass
class Batch:
    """Users cut together for one scoring call, and its outcome once published."""

    users: list[PendingUser]
    cut_at: float
    future: asyncio.Future[Any] | None = None
    inference_s: float = 0.0


PublishBatchFn = Callable[[Batch, Any], Awaitable[None]]  # the score's result, or its exception


class Batcher:
    """Coalescing, deadline-driven micro-batcher with bounded in-flight batches."""

    def __init__(
        self,
        score: ScoreFn,
        publish: PublishBatchFn,
        *,
        max_users: int,
        max_wait_s: float,
        max_events: int,
        max_inflight: int,
        metrics: Metrics | None = None,
        on_cut: Callable[[], None] | None = None,
        tasks: BackgroundTasks | None = None,
    ) -> None:
        self._score = score
        self._publish = publish
        self._on_cut = on_cut
        self.tasks = tasks or BackgroundTasks()
        self.max_users = max_users
        self.max_wait_s = max_wait_s
        self.max_events = max_events
        self.max_inflight = max_inflight
        self.metrics = metrics or Metrics()
        self._pending: dict[str, PendingUser] = {}
        self._pending_events = 0
        self._deadline = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the deadline timer and the in-order publisher."""
        self._wakeup = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.max_inflight)
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(self.max_inflight, thread_name_prefix="streamrec-score")
        self._tasks = [
            self.tasks.start("batcher deadline loop", self._deadline_loop()),
            self.tasks.start("batcher publish loop", self._publish_loop()),
        ]

    async def stop(self) -> None:
        """Publish everything pending, then stop the background tasks and the pool."""
        await self.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def pending_users(self) -> int:
        """Users waiting for the next batch."""
        return len(self._pending)

    async def add(
        self, user_id: str, context: UserContext, trigger: Event, ack: Any, origin: Any = None
    ) -> None:
        """Queue ``user_id`` for scoring with its newest context; may wait (backpressure)."""
        entry = self._pending.get(user_id)
        if entry is None:
            if not self._pending:
                self._deadline = time.monotonic() + self.max_wait_s
                self._wakeup.set()
            entry = self._pending[user_id] = PendingUser(user_id, context, trigger, origin=origin)
        else:
            entry.context, entry.trigger, entry.origin = context, trigger, origin
            self.metrics.inc("events_coalesced")
        entry.acks.append(ack)
        self._pending_events += 1
        if len(self._pending) >= self.max_users or self._pending_events >= self.max_events:
            await self.flush()

    async def flush(self) -> None:
        """Cut a batch of everything pending and hand it to the scoring pool."""
        async with self._flush_lock:
            if not self._pending:
                return
            if self._on_cut is not None:  # before anything of the batch can be published and
                self._on_cut()  # acked; if it raises, the users stay pending, unacknowledged
            users = list(self._pending.values())
            self._pending = {}
            self._pending_events = 0
            self._wakeup.clear()
            batch = Batch(users=users, cut_at=time.monotonic())
            await self._slots.acquire()  # blocks the caller while max_inflight are busy
            loop = asyncio.get_running_loop()
            batch.future = loop.run_in_executor(self._executor, self._timed_score, batch)
            self._queue.put_nowait(batch)
            self.metrics.observe("batch_users", len(users))

    async def drain(self) -> None:
        """Flush and wait until every cut batch is published."""
        await self.flush()
        await self._queue.join()

    def _timed_score(self, batch: Batch) -> Any:
        started = time.perf_counter()
        try:
            return self._score(batch.users)
        finally:
            batch.inference_s = time.perf_counter() - started

    async def _deadline_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            delay = self._deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            await self.flush()

    async def _publish_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                assert batch.future is not None
                outcome: Any
                try:
                    outcome = await batch.future
                    self.metrics.observe("inference_ms", batch.inference_s * 1000.0)
                except Exception as exc:  # scoring failed: the publisher decides what to do
                    outcome = exc
                    self.metrics.inc("batches_failed")
                # a publish that raises ends this task: its events stay unacknowledged and
                # the worker stops (the task is watched), to read them again after a restart
                await self._publish(batch, outcome)
            finally:
                self._slots.release()
                self._queue.task_done()
