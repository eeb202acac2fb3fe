"""Progress of long commands: one line per stage, with the time spent and an estimate of the rest.

A command that runs for minutes (the model build, ``evaluate``, ``backtest``, ``bench``) names
its stages up front with the seconds each took on the reference box (2 cores, no GPU). As
each stage starts and ends, a line goes to stderr::

    backtest [2/3] train model_no_text: started; 14m so far, about 21m left
    backtest [2/3] train model_no_text: done in 4m31s; 18m so far, about 16m left

The estimate scales the stages still to run by how fast the finished ones ran against their
reference (a machine twice as slow reads twice the time left); a stage over in a tenth of its
reference found its work done (a cached model) and says nothing of the machine's speed. Work
inside a stage that has its own bar (tqdm: fine-tuning, epochs, the replay's events) keeps it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO


def duration(seconds: float) -> str:
    """``1h02m``, ``21m``, ``4m31s`` or ``12s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes >= 10:
        return f"{minutes}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Stages:
    """The stages of one command run, each with its reference seconds; prints as they pass."""

    def __init__(
        self,
        command: str,
        plan: Sequence[tuple[str, float]],
        *,
        out: TextIO | None = None,
        clock=time.monotonic,
    ) -> None:
        """``plan``: every stage's name and its seconds on the reference box, in order."""
        self.command = command
        self.plan = list(plan)
        self._out = out
        self._clock = clock
        self._start = clock()
        self._done_reference = 0.0  # reference seconds of the stages finished
        self._done_actual = 0.0  # and what they took here

    def _left(self, index: int, running_for: float = 0.0) -> float:
        """Seconds left from stage ``index`` on (that one running for ``running_for``)."""
        speed = self._done_actual / self._done_reference if self._done_reference else 1.0
        reference = sum(seconds for _, seconds in self.plan[index:])
        return max(0.0, reference * speed - running_for)

    def _say(self, index: int, what: str, left: float) -> None:
        name = self.plan[index][0]
        so_far = duration(self._clock() - self._start)
        line = (
            f"{self.command} [{index + 1}/{len(self.plan)}] {name}: {what}; "
            f"{so_far} so far, about {duration(left)} left"
        )
        print(line, file=self._out or sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage of the plan (by name), saying when it starts and how long it took."""
        index = next(i for i, (planned, _) in enumerate(self.plan) if planned == name)
        self._say(index, "started", self._left(index))
        began = self._clock()
        yield
        took = self._clock() - began
        reference = self.plan[index][1]
        if took >= reference / 10:  # far quicker: work found done (a cached model), not speed
            self._done_reference += reference
            self._done_actual += took
        self._say(index, f"done in {duration(took)}", self._left(index + 1))
