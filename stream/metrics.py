"""In-process counters and summaries of a streamrec worker.

Counters are monotonically increasing totals (``events_in``, ``dlq{reason}``...); summaries
keep count, sum and max of an observed value (batch size, inference time). The worker
serves a snapshot on its web endpoint and logs one periodically.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """Count, sum and maximum of an observed quantity."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def as_dict(self) -> dict[str, float]:
        """Count, sum, mean and max."""
        mean = self.total / self.count if self.count else 0.0
        return {"count": self.count, "sum": self.total, "mean": mean, "max": self.max}


@dataclass
class Metrics:
    """All figures of one process."""

    counters: Counter[str] = field(default_factory=Counter)
    summaries: dict[str, Summary] = field(default_factory=dict)

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter."""
        self.counters[name] += n

    def observe(self, name: str, value: float) -> None:
        """Record a value in a summary."""
        summary = self.summaries.get(name)
        if summary is None:
            summary = self.summaries[name] = Summary()
        summary.observe(value)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view of every counter and summary."""
        return {
            "counters": dict(sorted(self.counters.items())),
            "summaries": {k: v.as_dict() for k, v in sorted(self.summaries.items())},
        }
