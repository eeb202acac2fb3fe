"""The worker's long-running tasks, watched: one that dies stops the worker, saying which.

The batcher's deadline and publish loops, the delivery confirmer, the catalogue follower and the
model watcher run for the worker's whole life; each is started through :meth:`BackgroundTasks.start`
(Faust's stats timer reports its failures through :meth:`BackgroundTasks.fail`). A task that raises,
or returns, when nobody cancelled it has died: it is recorded in :attr:`BackgroundTasks.dead`
(``/live/`` then answers 503) and the ``on_death`` callback runs, which in a worker logs one
critical line naming the task and its error and stops the worker with exit code 1
(:meth:`stream.serving.runtime.Runtime.stop_worker`), so Kubernetes or the process supervisor
restarts it and the unacknowledged events are read again. A task is never silently restarted: each
keeps state (a consumer's position, batches in flight) that a fresh copy would not have.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

#: What runs when a task dies: its name and what it raised.
OnDeath = Callable[[str, BaseException], None]


class BackgroundTasks:
    """Starts named tasks and reports the first one that dies."""

    def __init__(self, on_death: OnDeath | None = None) -> None:
        self.on_death = on_death
        #: Tasks that died, by name: ``"ErrorType: message"``.
        self.dead: dict[str, str] = {}

    @property
    def alive(self) -> bool:
        """Whether every task started is still running (or was stopped on purpose)."""
        return not self.dead

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as the task ``name``; its death is reported."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(functools.partial(self._ended, name))
        return task

    def fail(self, name: str, error: BaseException) -> None:
        """Report that ``name`` failed with ``error`` (a task, or work done inline)."""
        first = not self.dead
        self.dead.setdefault(name, f"{type(error).__name__}: {error}")
        if self.on_death is None:
            log.critical("%s died (%s: %s)", name, type(error).__name__, error)
        elif first:
            self.on_death(name, error)

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        self.fail(name, error if error is not None else RuntimeError("returned unexpectedly"))
